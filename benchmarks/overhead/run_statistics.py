"""The kernel's own measure of BPF programs: their run statistics (run_cnt, run_time_ns), turned on for a run
and read per program. Used by probe_overhead.py, store_probe_cost.py and sendpath_cost.py.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

BPF_STATS_SYSCTL = Path("/proc/sys/kernel/bpf_stats_enabled")
BPF_STATS_RUN_TIME = 0  # enum bpf_stats_type


@contextlib.contextmanager
def bpf_run_statistics() -> Iterator[bool]:
    """The kernel's run statistics on: it then times every program run (run_time_ns, run_cnt in bpftool),
    the in-kernel cost per event without the noise of wall time. They add two clock reads per run, so only
    the runs made for that figure have them.

    Held as a BPF_ENABLE_STATS descriptor (libbpf's bpf_enable_stats) where possible: the kernel counts
    it apart from the kernel.bpf_stats_enabled sysctl, so another program that sets the sysctl and resets
    it to 0 in the middle of the run does not switch them off, and the kernel drops it when this process
    ends however it ends. Otherwise the sysctl, a system setting: said on stderr, restored afterwards."""
    descriptor = run_statistics_descriptor()
    if descriptor is not None:
        print("note: BPF run statistics on for one run (a BPF_ENABLE_STATS descriptor)", file=sys.stderr)
        try:
            yield True
        finally:
            os.close(descriptor)
        return
    try:
        previous = BPF_STATS_SYSCTL.read_text().strip()
        BPF_STATS_SYSCTL.write_text("1")
    except OSError as error:
        print(f"note: BPF run statistics unavailable ({error}); in-kernel costs not shown", file=sys.stderr)
        yield False
        return
    restored = f"restored to {previous} afterwards"
    print(f"note: kernel.bpf_stats_enabled set to 1 for the run, {restored}", file=sys.stderr)
    try:
        yield True
    finally:
        BPF_STATS_SYSCTL.write_text(previous)


def run_statistics_descriptor() -> int | None:
    """A descriptor that keeps the run statistics on while it is open; None without libbpf or privileges."""
    library = ctypes.util.find_library("bpf")
    if library is None:
        return None
    try:
        enable_stats = ctypes.CDLL(library, use_errno=True).bpf_enable_stats
    except (OSError, AttributeError):
        return None
    enable_stats.argtypes = [ctypes.c_int]
    enable_stats.restype = ctypes.c_int
    descriptor = enable_stats(BPF_STATS_RUN_TIME)
    return descriptor if descriptor >= 0 else None


ProgramTimes = dict[int, tuple[str, int, int]]  # program id -> (name, run_cnt, run_time_ns)


def program_times(belongs: Callable[[str], bool]) -> ProgramTimes:
    """The loaded programs whose name `belongs`, by id, from bpftool (empty if bpftool fails)."""
    try:
        listing = subprocess.run(["bpftool", "prog", "show", "--json"], capture_output=True, timeout=30)
        programs = json.loads(listing.stdout or b"[]")
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return {}
    return {
        program["id"]: (program["name"], program.get("run_cnt", 0), program.get("run_time_ns", 0))
        for program in programs
        if belongs(program.get("name", ""))
    }


def runs_between(before: ProgramTimes, after: ProgramTimes, ours: set[int]) -> dict[str, tuple[int, int]]:
    """Runs and nanoseconds per program name of `ours` between two readings."""
    gained: dict[str, tuple[int, int]] = {}
    for program_id in ours & before.keys() & after.keys():
        name, runs, nanoseconds = after[program_id]
        runs -= before[program_id][1]
        nanoseconds -= before[program_id][2]
        previous = gained.get(name, (0, 0))
        gained[name] = (previous[0] + runs, previous[1] + nanoseconds)
    return gained
