"""Snapshots without the app, for `mqinspect top --once|--count`, non-terminal output and the demo's report;
and the options every way of running the sampler shares.

TopOptions(...)                  what `mqinspect top` was asked to watch, and how often
validate(options)                BadInput for options no sampler could run with
make_sampler(options)            a Sampler for them (the dashboard's live feed drives one too)
sample_once(options)             one TopSnapshot, rates over one interval
stream_snapshots(options, count) snapshots one interval apart, recorded if asked
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mqinspect.errors import BadInput
from mqinspect.sampling.recording import SnapshotRecorder
from mqinspect.sampling.sampler import Sampler, SamplerSettings
from mqinspect.sampling.snapshot import TopSnapshot
from probes.procfs import PROC_ROOT

MIN_INTERVAL_S = 0.1


@dataclass(frozen=True)
class TopOptions:
    store_dir: Path | None = None
    pids: tuple[int, ...] = ()
    interval_s: float = 1.0
    ebpf: bool = True
    record_path: Path | None = None


def validate(options: TopOptions) -> None:
    """BadInput for options no sampler could run with: a bad interval, a pid that is not running."""
    if options.interval_s < MIN_INTERVAL_S:
        raise BadInput(f"--interval {options.interval_s}: the shortest interval is {MIN_INTERVAL_S} s")
    for pid in options.pids:
        if pid <= 0 or not (PROC_ROOT / str(pid)).is_dir():
            raise BadInput(f"--pid {pid}: no such process")


def make_sampler(options: TopOptions) -> Sampler:
    validate(options)
    settings = SamplerSettings(options.store_dir, tuple(options.pids), options.interval_s, options.ebpf)
    return Sampler(settings)


def sample_once(options: TopOptions) -> TopSnapshot:
    """One snapshot, its rates over one interval. eBPF probes are compiled first, then detached."""
    return next(stream_snapshots(options, 1))


def stream_snapshots(options: TopOptions, count: int | None) -> Iterator[TopSnapshot]:
    """`count` snapshots (None: until the caller stops), one interval apart; recorded if asked. The probes
    are compiled before the first interval starts, and detached when the iterator is closed."""
    sampler = make_sampler(options)
    recorder = SnapshotRecorder(options.record_path) if options.record_path else None
    try:
        sampler.open(background=False)
        started, taken = time.monotonic(), 0
        while count is None or taken < count:
            time.sleep(max(0.0, started + (taken + 1) * options.interval_s - time.monotonic()))
            taken += 1
            snapshot = sampler.sample()
            if recorder is not None:
                recorder.write(snapshot)
            yield snapshot
    finally:
        sampler.close()
        if recorder is not None:
            recorder.close()
