"""Deterministic snapshots and a fake feed for the dashboard tests: fixed times, canned /proc memory, no
sampler thread. Frame n differs from frame n-1 in its sequence, a fault rate and one segment's residency."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from mqinspect.sampling.snapshot import (
    ChunkMap,
    ChunkState,
    PageRangeEvents,
    ProbeState,
    ProbeStatus,
    ProcessView,
    SegmentDetail,
    SegmentView,
    SendPathRow,
    SendPathsView,
    StoreView,
    ThrottledWriter,
    TopSnapshot,
    WritebackEvents,
)
from probes.ebpf.pagecache import hit_ratio_fields
from probes.memory import MemorySample
from probes.procfs import rates, take_system_snapshot

CANNED_PROC = Path(__file__).resolve().parents[1] / "probes" / "procfs_samples" / "kernel_5_4"
T0 = 1_795_000_000.0
PAGE = 4096
SEGMENT_PAGES = 256


def memory_sample() -> MemorySample:
    system = dataclasses.replace(take_system_snapshot(CANNED_PROC), monotonic_s=100.0)
    return MemorySample(1.0, system, rates(system, system, 1.0))


def chunks(cached_per_chunk: list[int], dirty: int = 0) -> ChunkMap:
    size = SEGMENT_PAGES // len(cached_per_chunk)
    return ChunkMap.of(
        tuple(
            ChunkState(i * size, (i + 1) * size, cached, dirty if i == 0 else 0, 0)
            for i, cached in enumerate(cached_per_chunk)
        )
    )


def segment(index: int, cached: int, *, newest: bool = False, faults: int | None = 0) -> SegmentView:
    per_chunk = [min(max(cached - i * 32, 0), 32) for i in range(8)]
    return SegmentView(
        kind="commitlog",
        name=f"commitlog/{index * SEGMENT_PAGES * PAGE:020d}",
        path=f"/store/commitlog/{index * SEGMENT_PAGES * PAGE:020d}",
        start_offset_bytes=index * SEGMENT_PAGES * PAGE,
        size_bytes=SEGMENT_PAGES * PAGE,
        newest=newest,
        pages=SEGMENT_PAGES,
        cached_pages=cached,
        dirty_pages=8 if newest else 0,
        writeback_pages=0,
        locked_bytes=0,
        residency_source="cachestat",
        chunks=chunks(per_chunk, dirty=8 if newest else 0),
        # the segments before the newest are full; the newest holds the write and flush positions
        wrote_position_bytes=cached * PAGE if newest else SEGMENT_PAGES * PAGE,
        committed_position_bytes=cached * PAGE if newest else SEGMENT_PAGES * PAGE,
        flushed_position_bytes=(cached - 16) * PAGE if newest else SEGMENT_PAGES * PAGE,
        faults=faults,
        major_faults=0 if faults is not None else None,
        added_pages=faults,
        deleted_pages=0 if faults is not None else None,
        dirtied_pages=8 if newest else 0,
        written_pages=0,
        page_ranges=(PageRangeEvents(0, 3, faults, 0, faults, 0),) if faults else (),
        holds_write_position=newest,
        holds_flushed_position=newest,
        **hit_ratio_fields(None if faults is None else 4 * faults, faults),
    )


def process(pid: int, comm: str, minor: float, rss_mib: int, tcp_in_mib_s: float = 0.0) -> ProcessView:
    return ProcessView(
        pid=pid,
        comm=comm,
        found_by="maps",
        minor_faults_per_s=minor,
        major_faults_per_s=0.0,
        rchar_bytes_per_s=1024.0,
        wchar_bytes_per_s=minor * 4096,
        rss_bytes=rss_mib << 20,
        locked_bytes=0,
        traced_faults=int(minor),
        traced_major_faults=0,
        minor_fault_rate_history=(minor / 2, minor, minor / 4, minor),
        tcp_received_bytes_per_s=tcp_in_mib_s * (1 << 20),
        tcp_acked_bytes_per_s=1024.0,
        **hit_ratio_fields(int(minor) * 3, int(minor) // 2),
    )


RUNNING = tuple(
    ProbeStatus(name, ProbeState.RUNNING, tracepoints=("t:p",))
    for name in ("faults", "pagecache", "writeback", "sendpath")
)


def frame(sequence: int = 1, *, probes: tuple[ProbeStatus, ...] = RUNNING, detail_for: str | None = None):
    traced = all(status.state == ProbeState.RUNNING for status in probes)
    segments = (
        segment(0, 256, faults=0 if traced else None),
        segment(1, 0, faults=0 if traced else None),
        segment(2, 128, faults=40 if traced else None),
        segment(3, 40 + sequence, newest=True, faults=7 + sequence if traced else None),
    )
    detail = None
    if detail_for is not None:
        detail = SegmentDetail(detail_for, "detail", PAGE, chunks([32] * 4 + [0] * 4), "cachestat")
    return TopSnapshot(
        sequence=sequence,
        time_unix_s=T0 + sequence,
        interval_s=1.0,
        page_size_bytes=PAGE,
        store=StoreView("/store", None, segments),
        memory=memory_sample(),
        writeback=WritebackEvents(64, 32, 40, (ThrottledWriter(300, "broker", 2, 30, 20, 900, 1000),)),
        sendpaths=SendPathsView(
            1.0,
            1 << 20,
            1.0,
            (SendPathRow(400, "consumer", "mmap+write", 1 << 20, 0, 1 << 20, 0, 0, 256, 1.0),),
        ),
        processes=(
            process(300, "broker", 100.0 + sequence, 512),
            process(400, "consumer", 5.0, 64, tcp_in_mib_s=11.7),
            process(500, "producer", 50.0, 128),
        ),
        probes=probes,
        detail=detail,
    )


class FakeFeed:
    """A feed that delivers nothing by itself: tests hand frames to the app; focus requests are kept."""

    def __init__(self, interval_s: float = 1.0) -> None:
        self.focused: list[str | None] = []
        self.drawn: list[frozenset[str]] = []  # the rows in view, as the app hinted them
        self.attached = False
        self.interval_s = interval_s

    def attach(self, app) -> None:
        self.attached = True

    def set_interval(self, interval_s: float) -> None:
        self.interval_s = interval_s

    def focus(self, path: str | None, name: str | None) -> None:
        self.focused.append(path)

    def draw_only(self, paths: frozenset[str]) -> None:
        self.drawn.append(paths)

    def detach(self) -> None:
        self.attached = False


# ---------------------------------------------------------------- probe sessions


class FakeSession:
    """A probe session that opens, reads and closes as told: fails to open (`fail_open`), fails to read
    (`fail_read`), or waits for `opened` before it opens."""

    def __init__(self, probe, *, fail_open=None, fail_read=False, opened=None):
        self.probe = probe
        self.fail_open = fail_open
        self.fail_read = fail_read
        self.closed = False
        self.attached_tracepoints = ("tp:x",)
        self.opened = opened

    def open(self):
        if self.opened is not None:
            self.opened.wait(5)
        if self.fail_open:
            raise self.fail_open

    def snapshot(self):
        if self.fail_read:
            raise RuntimeError("map read failed")
        return object()

    def close(self):
        self.closed = True


class FakeProbe:
    """A probe known by its name only."""

    def __init__(self, name):
        self.name = name

    def subject(self):
        return "page faults of pid 7"
