"""`perf stat -e page-faults -p PID` around a block: the kernel's own count of a process's page faults, the
ground truth of the faults probe's tests (test_faults.py, test_combined.py)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def perf_stat_page_faults(pid: int, output: Path) -> Iterator[list[int]]:
    """`perf stat -e page-faults -p PID` over the block; the count is appended to the yielded list."""
    perf = subprocess.Popen(["perf", "stat", "-x,", "-e", "page-faults", "-p", str(pid), "-o", str(output)])
    counted: list[int] = []
    try:
        _wait_for_perf_events(perf.pid)
        yield counted
    finally:
        perf.send_signal(signal.SIGINT)
        perf.wait(timeout=10)
    line = next(line for line in output.read_text().splitlines() if ",page-faults," in line)
    counted.append(int(line.split(",")[0]))


def _wait_for_perf_events(perf_pid: int, timeout_s: float = 10.0) -> None:
    """perf has attached once it holds a perf_event file descriptor."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            fds = Path(f"/proc/{perf_pid}/fd")
            if any("perf_event" in os.readlink(fd) for fd in fds.iterdir()):
                return
        time.sleep(0.01)
    raise AssertionError("perf stat did not attach")
