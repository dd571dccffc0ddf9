"""System memory sampled over intervals: what `mqinspect mem` and the dashboard's memory panel show.

Each sample is a /proc snapshot plus the per-second rates since the previous one, so counters such as
pgpgout (write-back to disk) and pgfault read as rates over a known interval.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from probes.procfs import PROC_ROOT, SystemMemoryRates, SystemMemorySnapshot, rates, take_system_snapshot


@dataclass(frozen=True)
class MemorySample:
    interval_s: float
    snapshot: SystemMemorySnapshot
    rates: SystemMemoryRates


def sample_memory(
    interval_s: float,
    count: int | None = None,
    *,
    proc_root: Path = PROC_ROOT,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[MemorySample]:
    """A sample at the end of each interval; `count` None samples until the caller stops."""
    before = take_system_snapshot(proc_root)
    taken = 0
    while count is None or taken < count:
        sleep(interval_s)
        after = take_system_snapshot(proc_root)
        elapsed = max(after.monotonic_s - before.monotonic_s, 1e-9)
        yield MemorySample(elapsed, after, rates(before, after, elapsed))
        before = after
        taken += 1
