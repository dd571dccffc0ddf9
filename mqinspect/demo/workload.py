"""DemoWorkload: the demo's store and its child processes, from start to a clean end.

Design (RocketMQ's): one "broker" process owns the store, as a broker does: the MessageStore with warm-up on,
a producer thread at a steady rate that rolls through small segments, retention, and the PullServer. One
consumer process per send path pulls from it over loopback, so every process has its own pid and the
probes can tell the writer (page faults of warm-up and writes, dirty pages) from the sender (bytes per send
path) from the receivers. A producer in a process of its own would need a send protocol the store does not
have; RocketMQ's producers talk to the broker, which does the writing, so the writing happens in the broker
either way.

Cleanup: children are stopped by SIGTERM and, after a grace period, SIGKILL, on every way out (`stop` from
a finally block: normal end, Ctrl-C, SIGTERM of the demo, errors). Children run in their own session, so a
Ctrl-C at the terminal reaches only the demo, which stops them in order; and each child asks the kernel for
SIGTERM if the demo dies without stopping them (PR_SET_PDEATHSIG). The work directory is removed unless the
caller gave it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from mqinspect.demo.report import BrokerSummary, ChildExit, ConsumerSummary, WorkloadOutcome
from mqinspect.demo.settings import DemoSettings, settings_to_json
from mqinspect.errors import MqinspectError
from probes.errors import ProbeError
from probes.procfs import read_process_faults

KILL_AFTER_GRACE_S = 2.0  # the child ends itself `stop_grace_s` after SIGTERM; SIGKILL a little later
LOG_TAIL_BYTES = 2000


class DemoFailed(MqinspectError):
    """A child process of the demo could not start, or died."""


@dataclass
class _Child:
    """One child process and what it has said on its stdout."""

    role: str
    process: subprocess.Popen
    log_path: Path
    ready: threading.Event = field(default_factory=threading.Event)
    messages: dict[str, Any] = field(default_factory=dict)
    killed: bool = False
    reader: threading.Thread | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def read_messages(self, stream: IO[str]) -> None:
        for line in stream:
            try:
                message = json.loads(line)
            except ValueError:
                continue  # not ours: a stray print; the log has the child's diagnostics
            if isinstance(message, dict) and "event" in message:
                self.messages[message["event"]] = message.get("data")
                if message["event"] == "ready":
                    self.ready.set()

    def log_tail(self) -> str:
        try:
            with open(self.log_path, "rb") as log:
                log.seek(max(0, log.seek(0, os.SEEK_END) - LOG_TAIL_BYTES))
                return log.read().decode(errors="replace").strip()
        except OSError as error:
            return f"(no log: {error})"


class DemoWorkload:
    """`with DemoWorkload(settings) as workload:` starts the broker and consumers; leaving the block stops
    them and removes the work directory (unless `directory` was given). `stop()` returns what they did."""

    def __init__(self, settings: DemoSettings | None = None, directory: Path | None = None):
        self.settings = settings or DemoSettings()
        self.keep_directory = directory is not None
        self._directory = directory.resolve() if directory is not None else None  # children may cd elsewhere
        self._children: list[_Child] = []
        self._started_at: float | None = None
        self._outcome: WorkloadOutcome | None = None

    # ---- where things are ----------------------------------------------------------------------------

    @property
    def directory(self) -> Path:
        if self._directory is None:
            raise RuntimeError("the demo workload is not started")
        return self._directory

    @property
    def is_kafka(self) -> bool:
        return self.settings.log_format == "kafka"

    @property
    def store_dir(self) -> Path:
        """The RocketMQ store, or the Kafka log directory (`log.dirs`), the broker writes."""
        return self.directory / ("kafka-logs" if self.is_kafka else "store")

    @property
    def log_dir(self) -> Path:
        return self.directory / "logs"

    @property
    def pids(self) -> tuple[int, ...]:
        return tuple(child.pid for child in self._children)

    def roles(self) -> dict[int, str]:
        return {child.pid: child.role for child in self._children}

    @property
    def broker_port(self) -> int:
        return int(self._children[0].messages["ready"]["port"])

    # ---- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> DemoWorkload:
        """Start the broker, then the consumers (each once the one before it is ready)."""
        return self.start_broker().start_consumers()

    def start_broker(self) -> DemoWorkload:
        """Start the broker alone (a tracer can attach to it before any consumer pulls); then
        start_consumers(). Leaving the `with` block or close() stops it."""
        if self._directory is None:
            for stale in remove_stale_work_directories():
                print(f"mqinspect demo: removed {stale}, left by a demo that did not end", file=sys.stderr)
            self._directory = Path(tempfile.mkdtemp(prefix=WORK_DIRECTORY_PREFIX))
            (self._directory / OWNER_FILE).write_text(_process_identity(os.getpid()) or "")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._started_at = time.monotonic()
        try:
            if self.is_kafka:
                broker = self._spawn(
                    "broker", "mqinspect.demo.kafka_broker", "--log-dir", str(self.store_dir)
                )
            else:
                broker = self._spawn("broker", "mqinspect.demo.broker", "--store", str(self.store_dir))
            self._wait_ready(broker)
        except BaseException:
            self.close()
            raise
        return self

    def start_consumers(self) -> DemoWorkload:
        """Start one consumer per send path of the settings, pulling from the running broker."""
        try:
            port = str(self.broker_port)
            module = "mqinspect.demo.kafka_consumer" if self.is_kafka else "mqinspect.demo.consumer"
            consumers = [
                self._spawn(f"consumer:{path.value}", module, "--port", port, "--path", path.value)
                for path in self.settings.paths
            ]
            for consumer in consumers:
                self._wait_ready(consumer)
        except BaseException:
            self.close()
            raise
        return self

    def _spawn(self, role: str, module: str, *arguments: str) -> _Child:
        log_path = self.log_dir / f"{role.replace(':', '-')}.log"
        command = [
            sys.executable,
            "-m",
            module,
            *arguments,
            "--parent-pid",
            str(os.getpid()),
            "--settings",
            settings_to_json(self.settings),
        ]
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                start_new_session=True,  # a Ctrl-C at the terminal is the demo's to handle, not theirs
            )
        child = _Child(role, process, log_path)
        assert process.stdout is not None
        child.reader = threading.Thread(
            target=child.read_messages, args=(process.stdout,), name=f"demo-{role}", daemon=True
        )
        child.reader.start()
        self._children.append(child)
        return child

    def _wait_ready(self, child: _Child) -> None:
        deadline = time.monotonic() + self.settings.ready_timeout_s
        while not child.ready.wait(0.1):
            if child.process.poll() is not None:
                raise DemoFailed(
                    f"the demo's {child.role} (pid {child.pid}) exited with status "
                    f"{child.process.returncode} before it was ready: {_last_line(child.log_tail())}",
                    fix=f"see {child.log_path}"
                    if self.keep_directory
                    else "run again with --dir DIR to keep logs",
                )
            if time.monotonic() > deadline:
                raise DemoFailed(
                    f"the demo's {child.role} (pid {child.pid}) was not ready within "
                    f"{self.settings.ready_timeout_s:g} s",
                    fix="the machine may be overloaded; try again",
                )

    def exited_children(self) -> list[tuple[str, int, int]]:
        """(role, pid, exit status) of the children that ended on their own."""
        return [
            (child.role, child.pid, child.process.returncode)
            for child in self._children
            if child.process.poll() is not None
        ]

    def stop(self) -> WorkloadOutcome:
        """Stop the consumers, then the broker (its store shuts down cleanly); idempotent."""
        if self._outcome is not None:
            return self._outcome
        with _signals_held():
            self._terminate(self._consumers())
            self._terminate([child for child in self._children if child.role == "broker"])
        self._outcome = self._gather()
        return self._outcome

    def stop_consumers(self) -> None:
        """Stop the consumers alone; the broker goes on serving until stop()."""
        with _signals_held():
            self._terminate(self._consumers())

    def _consumers(self) -> list[_Child]:
        return [child for child in self._children if child.role != "broker"]

    def _terminate(self, children: list[_Child]) -> None:
        for child in children:
            _signal(child.process, signal.SIGTERM)
        deadline = time.monotonic() + self.settings.stop_grace_s + KILL_AFTER_GRACE_S
        for child in children:
            try:
                child.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.killed = True
                _signal(child.process, signal.SIGKILL)
                child.process.wait()
        for child in children:
            if child.reader is not None:
                child.reader.join(1.0)

    def _gather(self) -> WorkloadOutcome:
        broker: BrokerSummary | None = None
        consumers: list[ConsumerSummary] = []
        exits = []
        for child in self._children:
            summary = child.messages.get("summary")
            if summary is not None and child.role == "broker":
                broker = BrokerSummary.from_jsonable(summary)
            elif summary is not None:
                consumers.append(ConsumerSummary.from_jsonable(summary))
            failed = child.process.returncode != 0 or child.killed
            exits.append(
                ChildExit(
                    child.role,
                    child.pid,
                    child.process.returncode,
                    child.killed,
                    summary is not None,
                    child.log_tail() if failed else None,
                )
            )
        ran = time.monotonic() - self._started_at if self._started_at is not None else 0.0
        return WorkloadOutcome(
            store_dir=self.store_dir,
            store_kept=self.keep_directory,
            ran_s=ran,
            broker=broker,
            consumers=tuple(consumers),
            children=tuple(exits),
        )

    def close(self) -> WorkloadOutcome | None:
        """Stop the children and remove the work directory unless it was given."""
        outcome = None
        try:
            if self._children:
                outcome = self.stop()
        finally:
            if not self.keep_directory and self._directory is not None:
                shutil.rmtree(self._directory, ignore_errors=True)
        return outcome

    def __enter__(self) -> DemoWorkload:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# A demo killed with SIGKILL cannot remove its work directory (a store of up to ~600 MiB). Each directory
# names its owner, by pid and start time (a pid alone may belong to a new process by now), so that the next
# demo can tell a directory whose owner is gone from one of a demo that is still running.
WORK_DIRECTORY_PREFIX = "mqinspect-demo-"
OWNER_FILE = "owner"


def remove_stale_work_directories(parent: Path | None = None) -> list[Path]:
    """Remove this user's work directories of demos that are no longer running; returns those removed. A
    directory without an owner file is not known to be a demo's, and is left alone; so are other users'."""
    removed = []
    for directory in Path(parent or tempfile.gettempdir()).glob(f"{WORK_DIRECTORY_PREFIX}*"):
        try:
            if directory.stat().st_uid != os.geteuid():
                continue
            owner = (directory / OWNER_FILE).read_text().strip()
        except OSError:
            continue
        pid = owner.split(" ", 1)[0]
        if owner and pid.isdigit() and _process_identity(int(pid)) != owner:
            shutil.rmtree(directory, ignore_errors=True)
            if not directory.exists():
                removed.append(directory)
    return removed


def _process_identity(pid: int) -> str | None:
    """The process as "PID START_TICKS" (when it started, after boot); None once it is gone."""
    try:
        started = read_process_faults(pid).start_ticks
    except ProbeError:  # gone, or hidden
        return None
    return None if started is None else f"{pid} {started}"


def _signal(process: subprocess.Popen, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signum)  # does nothing once the child is reaped: no stray signal to a new pid


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "(its log is empty)"


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Ctrl-C or SIGTERM during the stop wait until the children are stopped: a second Ctrl-C must not
    leave them behind. (Only the main thread can hold signals for the process's handlers.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
