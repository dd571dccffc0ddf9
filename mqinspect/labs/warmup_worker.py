"""The worker of `mqinspect lab warmup`: one warm-up mode on one fresh segment, in a process of its own.

A fresh process has a fresh address space and fault counters that only this experiment moves. The lab
(mqinspect/labs/warmup.py) starts `python -m mqinspect.labs.warmup_worker ...` and talks to it in lines:
the worker writes one JSON object per step on stdout and waits for a line on stdin before the next step,
so the lab can read its eBPF counters, cachestat and /proc/PID/status while the worker stands still:

    {"event": "ready", "pid": N}            segment created (and mapped, except for map_populate)
    {"event": "warmed", ...}                warm-up done: its time, getrusage fault deltas, problems
    {"event": "appended", ...}              append pass done: its time and fault deltas
    {"event": "latencies", ...}             the per-append latencies of the pass, in ns
    {"event": "done"}                       segment unmapped and deleted
    {"event": "error", "error": "..."}      anything that went wrong, then exit status 1

End of input on stdin at any wait makes the worker delete its segment and exit: the lab went away.

`--perf-control CTL:ACK` (FIFOs of `perf stat --control fifo:CTL,ACK -D -1`) enables perf's counters for
exactly one phase (`--perf-phase`), so perf's page-fault counts can be held against the worker's own.
"""

from __future__ import annotations

import argparse
import array
import json
import mmap
import os
import resource
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from store import _libc
from store.config import WarmupMode
from store.mapped_file import MappedFile

MODES = ("none", "rocketmq", "populate_write", "map_populate", "mlock")
PHASES = ("warmup", "append")


class LabGone(Exception):
    """stdin closed: the lab that started this worker is gone or gave up on it."""


def _send(event: str, **fields: object) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def _wait_for_go() -> None:
    if not sys.stdin.readline():
        raise LabGone


def _own_faults() -> tuple[int, int]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_minflt, usage.ru_majflt


class PerfControl:
    """The worker's end of `perf stat --control fifo:CTL,ACK`: enable and disable perf's counters."""

    def __init__(self, spec: str):
        control, acknowledge = spec.split(":", 1)
        self._control = os.open(control, os.O_WRONLY)
        self._acknowledge = os.open(acknowledge, os.O_RDONLY)

    def command(self, word: str) -> None:
        os.write(self._control, word.encode() + b"\n")
        os.read(self._acknowledge, 16)  # perf answers "ack" once the counters changed state


@contextmanager
def _phase(name: str, counted_phase: str | None, perf: PerfControl | None) -> Iterator[dict]:
    """Times the block and takes the worker's own fault counts around it (perf's too, for its phase)."""
    counted = perf is not None and counted_phase == name
    if counted:
        perf.command("enable")
    figures: dict = {}
    minor, major = _own_faults()
    started = time.perf_counter_ns()
    yield figures
    elapsed = time.perf_counter_ns() - started
    after_minor, after_major = _own_faults()
    if counted:
        perf.command("disable")
    figures.update(elapsed_ns=elapsed, minor_faults=after_minor - minor, major_faults=after_major - major)


def _create_file(path: Path, size: int) -> int:
    """The segment file with its blocks reserved, as MappedFile.create makes it, but not yet mapped."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        os.posix_fallocate(fd, 0, size)
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    return fd


def _segment_from_fd(path: Path, size: int, fd: int, extra_flags: int) -> MappedFile:
    mapping = mmap.mmap(fd, size, flags=mmap.MAP_SHARED | extra_flags)
    return MappedFile(path, size, fd, mapping, read_only=False)


def _lock_whole(segment: MappedFile) -> None:
    """mlock every page of the segment and nothing else: the mlock-alone mode."""
    reservation = segment.reserve(segment.file_size)
    assert reservation is not None
    with reservation as view:
        _libc.mlock(_libc.mapping_address(view), len(view))


def _populate_whole(segment: MappedFile) -> None:
    """madvise(MADV_POPULATE_WRITE) over the whole segment, and nothing else: the populate_write mode."""
    reservation = segment.reserve(segment.file_size)
    assert reservation is not None
    with reservation as view:
        _libc.madvise(_libc.mapping_address(view), len(view), _libc.MADV_POPULATE_WRITE)


def _warm(mode: str, path: Path, size: int, fd: int | None, segment: MappedFile | None) -> tuple:
    """Runs the mode's warm-up; (segment, locked, problems). map_populate maps the file here: the mmap call
    is its warm-up."""
    problems: list[str] = []
    locked = False
    if mode == "map_populate":
        assert fd is not None
        segment = _segment_from_fd(path, size, fd, mmap.MAP_POPULATE)
    assert segment is not None
    if mode == "rocketmq":
        result = segment.warm(WarmupMode.TOUCH)
        problems.extend(result.problems)
        locked = result.locked
    elif mode == "populate_write":
        try:
            _populate_whole(segment)
        except OSError as err:
            problems.append(f"MADV_POPULATE_WRITE failed: {err.strerror} (Linux >= 5.14 has it)")
    elif mode == "mlock":
        try:
            _lock_whole(segment)
            locked = True
        except OSError as err:
            problems.append(f"mlock failed: {err.strerror}. {_libc.memlock_limit_hint()}")
    return segment, locked, problems


def _append_pass(segment: MappedFile, record_size: int, latencies: array.array) -> None:
    """Appends records back to back over the whole segment, timing each append."""
    record = bytes(range(256)) * (record_size // 256) + bytes(record_size % 256)
    append = segment.append
    clock: Callable[[], int] = time.perf_counter_ns
    for index in range(len(latencies)):
        began = clock()
        append(record)
        latencies[index] = clock() - began


def run(arguments: argparse.Namespace) -> None:
    path = Path(arguments.path)
    size = arguments.size_bytes
    mode = arguments.mode
    perf = PerfControl(arguments.perf_control) if arguments.perf_control else None
    appends = size // arguments.record_bytes
    # Allocated and written now, so that the append pass takes no faults of its own for the latencies.
    latencies = array.array("q", bytes(8 * appends))
    fd: int | None = None
    segment: MappedFile | None = None
    try:
        if mode == "map_populate":
            fd = _create_file(path, size)
        elif mode == "mlock":
            segment = _segment_from_fd(path, size, _create_file(path, size), 0)
        else:
            segment = MappedFile.create(path, size)
        _send("ready", pid=os.getpid())
        _wait_for_go()

        with _phase("warmup", arguments.perf_phase, perf) as warm:
            segment, locked, problems = _warm(mode, path, size, fd, segment)
        fd = None  # the segment owns it now
        _send("warmed", locked=locked, problems=problems, **warm)
        _wait_for_go()

        with _phase("append", arguments.perf_phase, perf) as appended:
            _append_pass(segment, arguments.record_bytes, latencies)
        _send("appended", appends=appends, **appended)
        _wait_for_go()
        # Sent apart: building this long line faults on fresh heap, which must not count in the append pass.
        _send("latencies", latencies_ns=latencies.tolist())
        _wait_for_go()
    finally:
        if segment is not None:
            segment.destroy(0.0)
        if fd is not None:
            os.close(fd)
        path.unlink(missing_ok=True)
    _send("done")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mqinspect.labs.warmup_worker")
    parser.add_argument("--path", required=True, help="the segment file to create (must not exist)")
    parser.add_argument("--size-bytes", type=int, required=True)
    parser.add_argument("--mode", choices=MODES, required=True)
    parser.add_argument("--record-bytes", type=int, default=4096)
    parser.add_argument("--perf-control", help="CTL:ACK, the FIFOs of perf stat --control")
    parser.add_argument("--perf-phase", choices=PHASES, default="append")
    return parser


def main(argv: list[str] | None = None) -> int:
    arguments = _parser().parse_args(argv)
    # Ctrl-C in the terminal reaches the whole process group: the lab decides, and ends the worker by
    # closing its stdin, after which it deletes its segment.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if (
        arguments.size_bytes <= 0
        or arguments.record_bytes <= 0
        or arguments.record_bytes > arguments.size_bytes
    ):
        _send("error", error="the segment and record sizes must be positive, the record no larger")
        return 1
    try:
        run(arguments)
    except LabGone:
        return 1
    except Exception as error:  # the lab reports it as this mode's failure
        _send("error", error=f"{type(error).__name__}: {error}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
