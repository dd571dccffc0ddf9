"""What the workload's loop thread spent its CPU on, sampled: `perf record` of that one thread (cpu-clock,
call chains, not its children), started with the child and enabled only for the timed loop through a control
fifo (--delay=-1), so the set-up and the memory backing are not in it. Each sample is put under the first
of KERNEL_PARTS its call chain passes through; the shares times the thread's CPU time (its own clocks,
workloads.LoopClocks) give seconds.

Measured with it (the cold append, issue 16 item 5): the loop thread's system time moves between 0.09 and
0.8 s from run to run on every side, probes or none, and what moves is the zeroing of new page-cache folios
(zero_user_segments: 5% of the samples in a fast run, 47-54% in a slow one), not the probes' programs (15 ms
per loop, the run statistics) nor lock waits.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SAMPLES_PER_S = 997
PERF_TIMEOUT_S = 60.0
ZEROING = "zeroing new pages"
# Where a kernel sample's call chain may pass, most specific first: the first one met names its part.
KERNEL_PARTS = (
    # the kernel zeroing a folio it just allocated (a new page-cache folio over a hole, a new anonymous page)
    (ZEROING, ("zero_user_segments", "folio_zero_", "clear_page", "clear_highpage")),
    # a tracepoint's handler and the BPF programs it runs: the floor's dispatch and the probes' bodies
    ("tracepoints and BPF", ("bpf_prog_", "trace_call_bpf", "bpf_trace_run", "perf_trace_")),
    ("page faults (the rest)", ("exc_page_fault",)),
)
OTHER_KERNEL = "other kernel"
USER = "user space"


@dataclass(frozen=True)
class LoopProfile:
    """Samples of the loop thread by part (KERNEL_PARTS' names, OTHER_KERNEL, USER)."""

    samples: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.samples.values())

    def seconds(self, part: str, cpu_s: float) -> float | None:
        """`part`'s share of the samples times the thread's CPU time `cpu_s`; None without samples."""
        return self.samples.get(part, 0) / self.total * cpu_s if self.total else None


KERNEL_ADDRESSES = 0xFFFF_8000_0000_0000  # x86_64: the kernel's half of the address space


def part_of(frames: list[tuple[int, str]]) -> str:
    """The part of one sample: its call chain, leaf first, as (address, symbol) pairs."""
    if not frames or frames[0][0] < KERNEL_ADDRESSES:
        return USER
    for part, prefixes in KERNEL_PARTS:
        if any(symbol.startswith(prefixes) for _address, symbol in frames):
            return part
    return OTHER_KERNEL


def parse_samples(script_output: str) -> LoopProfile:
    """`perf script -F ip,sym` of call-chain samples: a blank line before each sample, a frame a line
    ("<ip in hex> <symbol>")."""
    counted: Counter[str] = Counter()
    for block in script_output.split("\n\n"):
        frames = []
        for line in block.strip().splitlines():
            fields = line.split(None, 1)
            with contextlib.suppress(ValueError):
                frames.append((int(fields[0], 16), fields[1] if len(fields) > 1 else ""))
        if frames:
            counted[part_of(frames)] += 1
    return LoopProfile(dict(counted))


class ThreadProfiler:
    """One `perf record` of thread `tid`, disabled until `enable()`; `profile()` stops it and reads it."""

    def __init__(self, tid: int):
        self._directory = Path(tempfile.mkdtemp(prefix="probe-overhead-profile-"))
        self._data = self._directory / "perf.data"
        control, acknowledged = self._directory / "control", self._directory / "ack"
        os.mkfifo(control)
        os.mkfifo(acknowledged)
        command = [
            "perf", "record", "-q", "-e", "cpu-clock", "-F", str(SAMPLES_PER_S), "-g", "--no-inherit",
            "-t", str(tid), "--delay=-1", f"--control=fifo:{control},{acknowledged}", "-o", str(self._data),
        ]  # fmt: skip
        self._process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # O_RDWR: opening either end of a fifo so never waits for perf to open the other
        self._control = os.open(control, os.O_RDWR)
        self._acknowledged = os.open(acknowledged, os.O_RDWR)

    def enable(self) -> None:
        self._command(b"enable\n")

    def disable(self) -> None:
        self._command(b"disable\n")

    def _command(self, command: bytes) -> None:
        if self._process.poll() is not None:
            raise RuntimeError(f"perf record exited: {self._process.stderr.read().decode(errors='replace')}")
        os.write(self._control, command)
        os.read(self._acknowledged, 16)  # "ack\n" once perf has done it

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGINT)
        try:
            self._process.wait(timeout=PERF_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def profile(self) -> LoopProfile | None:
        """What perf sampled, once it has stopped; None when it wrote nothing readable."""
        self.stop()
        try:
            script = subprocess.run(
                ["perf", "script", "-i", str(self._data), "-F", "ip,sym"],
                capture_output=True,
                text=True,
                timeout=PERF_TIMEOUT_S,
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return parse_samples(script.stdout) if script.returncode == 0 else None

    def close(self) -> None:
        self.stop()
        os.close(self._control)
        os.close(self._acknowledged)
        self._process.stderr.close()
        shutil.rmtree(self._directory, ignore_errors=True)


def perf_available() -> bool:
    return shutil.which("perf") is not None


@contextlib.contextmanager
def thread_profiler(tid: int, wanted: bool) -> Iterator[ThreadProfiler | None]:
    """A profiler of `tid` when `wanted` and perf is installed, else None; closed on the way out."""
    if not wanted or not perf_available():
        yield None
        return
    profiler = ThreadProfiler(tid)
    try:
        yield profiler
    finally:
        profiler.close()
