"""The command of `mqinspect trace PROBE -- COMMAND ARGS`, started the way perf stat starts its workload.

The command is forked first and held before exec until the probe is attached (`start()`), so its pid is known
to the probe's filter and its first instruction is traced; without `start()` (a bad option, no privileges,
a failed compile) it exits unstarted. Its stdout goes to mqinspect's stderr: stdout carries only the trace
(tables, JSON Lines, CSV), which the command's own output would corrupt; stdin and stderr are its own.

`finish()` ends it when the session ended first (--count, --duration, a signal: SIGTERM, as perf stat
--timeout does), reaps it, and gives its exit status: its own code, or 128 + the signal that killed it, as a
shell reports it.
"""

from __future__ import annotations

import errno
import os
import shlex
import shutil
import signal
import sys

from mqinspect.errors import BadInput
from probes.ebpf.scope import has_ended
from probes.procfs import ProcessGone, read_process_faults

GO = b"g"
NOT_STARTED_STATUS = 127  # the shell's "command not found or not run"


class Workload:
    """`-- COMMAND ARGS` forked and held before exec: `start()` lets it run, `finish()` gives its status."""

    def __init__(self, argv: list[str]):
        executable = shutil.which(argv[0])
        if executable is None:
            raise BadInput(f"-- {argv[0]}: no such command (not a path, not on PATH)")
        self.argv = argv
        self.name = shlex.join(argv).replace("\n", "\\n")  # said on one line of stderr
        go_read, self._go = os.pipe()
        self._failure, failure_write = os.pipe()  # closed by exec (O_CLOEXEC): EOF says it ran
        self.pid = os.fork()
        if self.pid == 0:  # the child: wait for go, then become the command
            os.close(self._go)
            os.close(self._failure)
            _exec_when_told(go_read, failure_write, executable, argv)
        os.close(go_read)
        os.close(failure_write)
        self.started = False
        self.status: int | None = None

    def __enter__(self) -> Workload:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.finish()

    def start(self) -> None:
        """Let the command run (the probe is attached); BadInput if it could not be executed."""
        os.write(self._go, GO)
        self.started = True
        os.close(self._go)
        self._go = -1
        failed = os.read(self._failure, 16)
        os.close(self._failure)
        self._failure = -1
        if failed:
            self.finish()
            raise BadInput(f"-- {self.argv[0]}: {os.strerror(int(failed))}")

    def running(self) -> bool:
        """Whether the command has not exited (a zombie has: reaping it is finish()'s)."""
        if self.status is not None:
            return False
        try:
            return not has_ended(read_process_faults(self.pid))
        except ProcessGone:
            return False

    def finish(self) -> int:
        """Its exit status, once it has ended: ended with SIGTERM first if it is still running. Idempotent."""
        for descriptor in (self._go, self._failure):
            if descriptor >= 0:
                os.close(descriptor)  # an unstarted child reads EOF and exits without running the command
        self._go = self._failure = -1
        if self.status is None:
            if self.started and self.running():
                print(f"mqinspect: the session ended before {self.name}: sent it SIGTERM", file=sys.stderr)
                os.kill(self.pid, signal.SIGTERM)
            _, wait_status = os.waitpid(self.pid, 0)
            self.status = os.waitstatus_to_exitcode(wait_status)
            if self.status < 0:
                self.status = 128 - self.status  # killed by a signal: as a shell reports it
        return self.status


def _exec_when_told(go: int, failure: int, executable: str, argv: list[str]) -> None:
    """In the forked child: exec the command once the parent says go; exit unstarted otherwise."""
    try:
        if os.read(go, 1) != GO:
            os._exit(NOT_STARTED_STATUS)
        os.close(go)
        os.dup2(2, 1)  # the command's stdout to stderr: mqinspect's stdout is the trace
        os.execv(executable, argv)
    except OSError as error:
        os.write(failure, str(error.errno or errno.ENOEXEC).encode())
    finally:
        os._exit(NOT_STARTED_STATUS)
