"""What one scrape measures, as plain snapshots: each store's residency by kind and topic-queue, its offsets
and lags, and the kernel's dirty memory against its thresholds (`measure_scrape` -> `Scrape`).

Everything is read through the project's readers: the store's files and stat through
store.inspection.formats, residency and locked bytes through probes.residency.segments, /proc through
probes.procfs. A figure that cannot be measured is None, and a `Gap` says which family it leaves out and why;
the families drawn from a Scrape leave it out and say so in `mqinspect_unavailable`, never as 0.
"""

from __future__ import annotations

import mmap
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mqinspect.sampling.store_reader import FLUSHED_UNKNOWN
from probes.procfs import PROC_ROOT, read_pressure, read_vmstat, read_vmstat_counters
from probes.residency.segments import SegmentResidency, measure_segments
from store.errors import StoreError
from store.inspection.formats import detect_format
from store.inspection.log_format import LogFormat, StoreFile
from store.kafka.layout import parse_partition_dir

PAGE_SIZE_BYTES = mmap.PAGESIZE

# The residency families, by the SegmentResidency field each one sums (and the note naming its gap).
RESIDENCY_FAMILIES = {
    "cached_pages": "mqinspect_store_cached_bytes",
    "dirty_pages": "mqinspect_store_dirty_bytes",
    "writeback_pages": "mqinspect_store_writeback_bytes",
    "locked_bytes": "mqinspect_store_locked_bytes",
}
THROTTLE_PAUSES_UNMEASURED = (
    "the kernel counts no dirty-throttle pauses in /proc/vmstat or PSI: balance_dirty_pages() pauses are "
    "seen only by the writeback:balance_dirty_pages tracepoint (with --ebpf, "
    "mqinspect_store_dirty_throttle_pauses_total counts those of each store's writers); "
    "mqinspect_kernel_io_pressure_stalled_seconds_total includes them among every other wait on I/O"
)


@dataclass(frozen=True)
class Gap:
    """A family left out of a scrape (for one store, or the kernel's when `store` is None) and why."""

    metric: str
    reason: str
    store: str | None = None


@dataclass(frozen=True)
class ResidencyGroup:
    """The page-cache state of one group of a store's files: one kind, one topic-queue (or partition), one
    segment with --per-segment. `labels` are the group's labels besides the store's."""

    labels: tuple[tuple[str, str], ...]
    files: int
    size_bytes: int
    cached_bytes: int | None
    dirty_bytes: int | None
    writeback_bytes: int | None
    locked_bytes: int | None


@dataclass(frozen=True)
class CommitLogPositions:
    """Where the log ends, how far it is flushed and dispatched, in physical offsets (bytes)."""

    min_offset_bytes: int
    max_offset_bytes: int  # the end of the last valid record
    dispatched_offset_bytes: int | None  # where the newest ConsumeQueue entry's record ends
    dispatch_lag_bytes: int
    flushed_offset_bytes: int | None  # the checkpoint's masterFlushedOffset
    flush_lag_bytes: int | None
    flushed_message_time_s: float | None  # the checkpoint's physicMsgTimestamp: last flushed message's time


@dataclass(frozen=True)
class QueuePositions:
    """One ConsumeQueue's bounds (queue offsets, one per message) and where its newest entry's record ends."""

    topic: str
    queue: str
    min_offset: int
    max_offset: int
    dispatched_offset_bytes: int | None


@dataclass(frozen=True)
class StoreMeasurement:
    store: str
    format: str | None
    up: bool  # the store was found and its files listed
    residency: tuple[ResidencyGroup, ...]
    commitlog: CommitLogPositions | None
    queues: tuple[QueuePositions, ...]
    gaps: tuple[Gap, ...]


@dataclass(frozen=True)
class KernelMeasurement:
    """System-wide dirty memory against the writeback thresholds (bytes), and the counters around it."""

    dirty_bytes: int | None
    writeback_bytes: int | None
    dirty_background_threshold_bytes: int | None
    dirty_threshold_bytes: int | None
    dirtied_bytes: int | None  # since boot: vmstat nr_dirtied
    written_bytes: int | None  # since boot: vmstat nr_written
    io_stalled_s: dict[str, float]  # PSI io total by line ("some", "full")
    memory_stalled_s: dict[str, float]
    gaps: tuple[Gap, ...]


Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class EbpfMeasurement:
    """The counters' totals so far: {family: {labels: value}} (labels include the store), which probes
    run, and the families left out with why."""

    totals: dict[str, dict[Labels, float]]
    running: dict[tuple[str, str], bool]  # (store, probe) -> running
    gaps: tuple[Gap, ...]


@dataclass(frozen=True)
class Scrape:
    stores: tuple[StoreMeasurement, ...]
    kernel: KernelMeasurement
    duration_s: float
    ebpf: EbpfMeasurement | None = None  # with --ebpf: the probes' counters (mqinspect.export.ebpf)


# How a scrape lists a store's files: its format's listing, unless given another (--ebpf: the probes' own,
# just made while they were drained, so that the store is not listed twice per scrape).
FileLister = Callable[[LogFormat, Path], Sequence[StoreFile]]


def _format_listing(log_format: LogFormat, root: Path) -> Sequence[StoreFile]:
    return log_format.store_files(root)


def measure_scrape(
    roots: Sequence[Path], *, per_segment: bool = False, list_files: FileLister = _format_listing
) -> Scrape:
    started = time.perf_counter()
    stores = tuple(measure_store(root, per_segment=per_segment, list_files=list_files) for root in roots)
    kernel = measure_kernel()
    return Scrape(stores, kernel, time.perf_counter() - started)


# --- one store


def measure_store(
    root: Path, *, per_segment: bool = False, list_files: FileLister = _format_listing
) -> StoreMeasurement:
    store = str(root)
    try:
        log_format = detect_format(root)
        files = list_files(log_format, root)
    except (StoreError, OSError) as error:
        return StoreMeasurement(store, None, False, (), None, (), (Gap("mqinspect_up", str(error), store),))
    groups, residency_gaps = _residency(log_format, files, per_segment, store)
    position_reader = POSITION_READERS.get(log_format.name)
    if position_reader is None:
        commitlog, queues = None, ()
        position_gaps = [Gap("mqinspect_store_positions", f"not read for {log_format.title}s yet", store)]
    else:
        commitlog, queues, position_gaps = position_reader(log_format, root, store)
    return StoreMeasurement(
        store, log_format.name, True, groups, commitlog, queues, (*residency_gaps, *position_gaps)
    )


# What labels one file's group has, by format. Kafka (a partition's files) takes `topic` and `partition`,
# the label names Kafka's JMX exporter gives a partition, so that PromQL joins the two on (topic, partition).
def _rocketmq_group(file: StoreFile) -> tuple[tuple[str, str], ...]:
    if file.kind == "consumequeue":  # consumequeue/TOPIC/QUEUE/NAME
        return (("topic", file.path.parent.parent.name), ("queue", file.path.parent.name))
    return ()


def _kafka_group(file: StoreFile) -> tuple[tuple[str, str], ...]:
    partition = parse_partition_dir(file.path.parent.name)  # LOGDIR/TOPIC-N/NAME
    if partition is None:
        return ()
    return (("topic", partition.topic), ("partition", str(partition.partition)))


GROUP_LABELS: dict[str, Callable[[StoreFile], tuple[tuple[str, str], ...]]] = {
    "rocketmq": _rocketmq_group,
    "kafka": _kafka_group,
}


def _residency(
    log_format: LogFormat, files: Sequence[StoreFile], per_segment: bool, store: str
) -> tuple[tuple[ResidencyGroup, ...], list[Gap]]:
    group_of = GROUP_LABELS.get(log_format.name, lambda _file: ())
    measured = measure_segments([file.path for file in files]).segments
    grouped: dict[tuple[tuple[str, str], ...], list[tuple[int, SegmentResidency]]] = {}
    for file, residency in zip(files, measured, strict=True):
        size = _size_or_none(file.path)
        if size is None:
            continue  # deleted since it was listed (retention, a roll): no longer the store's
        labels = (("kind", file.kind), *group_of(file))
        if per_segment:
            labels += (("segment", file.path.name),)
        grouped.setdefault(labels, []).append((size, residency))
    gaps: dict[str, Gap] = {}
    groups = tuple(_group(labels, rows, gaps, store) for labels, rows in grouped.items())
    return groups, list(gaps.values())


def _group(labels, rows: list[tuple[int, SegmentResidency]], gaps: dict[str, Gap], store: str):
    sums = {}
    for field, family in RESIDENCY_FAMILIES.items():
        values = [getattr(residency, field) for _size, residency in rows]
        if any(value is None for value in values):
            reason = next(
                (residency.notes.get(field) or residency.notes.get("cached_pages") for _s, residency in rows),
                None,
            )
            gaps.setdefault(family, Gap(family, reason or "not measured", store))
            sums[field] = None
        else:
            sums[field] = sum(values) * (1 if field == "locked_bytes" else PAGE_SIZE_BYTES)
    return ResidencyGroup(
        labels=labels,
        files=len(rows),
        size_bytes=sum(size for size, _residency in rows),
        cached_bytes=sums["cached_pages"],
        dirty_bytes=sums["dirty_pages"],
        writeback_bytes=sums["writeback_pages"],
        locked_bytes=sums["locked_bytes"],
    )


def _size_or_none(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return None


# --- a RocketMQ store's offsets


def _rocketmq_positions(log_format: LogFormat, root: Path, store: str):
    try:
        stat = log_format.stat(root)
    except (StoreError, OSError) as error:
        gap = Gap("mqinspect_commitlog_max_offset_bytes", f"the store could not be read: {error}", store)
        return None, (), [gap]
    gaps = []
    dispatched = stat.dispatch.consume_queue_max_physical_offset
    if dispatched is None:
        gaps.append(Gap("mqinspect_commitlog_dispatched_offset_bytes", "no ConsumeQueue has an entry", store))
    flushed = stat.checkpoint.master_flushed_offset if stat.checkpoint else None
    if not flushed:  # 0: what a broker that never set it writes
        reason = stat.checkpoint_problem or FLUSHED_UNKNOWN
        gaps += [Gap(family, reason, store) for family in _FLUSHED_FAMILIES]
        flushed = None
    flush_time_ms = stat.checkpoint.physic_msg_timestamp_ms if stat.checkpoint else 0
    if not flush_time_ms:
        reason = stat.checkpoint_problem or "the checkpoint records no flush yet (physicMsgTimestamp is 0)"
        gaps.append(Gap("mqinspect_commitlog_flushed_message_timestamp_seconds", reason, store))
    commitlog = CommitLogPositions(
        min_offset_bytes=stat.commitlog.min_physical_offset,
        max_offset_bytes=stat.commitlog.max_physical_offset,
        dispatched_offset_bytes=dispatched,
        dispatch_lag_bytes=stat.dispatch.dispatch_behind_bytes,
        flushed_offset_bytes=flushed,
        flush_lag_bytes=None if flushed is None else stat.commitlog.max_physical_offset - flushed,
        flushed_message_time_s=flush_time_ms / 1000 if flush_time_ms else None,
    )
    queues = tuple(
        QueuePositions(
            queue.topic,
            str(queue.queue_id),
            queue.min_queue_offset,
            queue.max_queue_offset,
            queue.dispatched_to_physical_offset,
        )
        for queue in stat.consume_queues
    )
    return commitlog, queues, gaps


_FLUSHED_FAMILIES = ("mqinspect_commitlog_flushed_offset_bytes", "mqinspect_commitlog_flush_lag_bytes")
POSITION_READERS = {"rocketmq": _rocketmq_positions}


# --- the kernel


def measure_kernel(proc_root: Path = PROC_ROOT) -> KernelMeasurement:
    vmstat = read_vmstat(proc_root)
    gaps = [Gap(f"mqinspect_kernel_{name}", reason) for name, reason in _kernel_gaps(vmstat.unavailable)]
    counters, missing = read_vmstat_counters(tuple(_COUNTER_FAMILIES), proc_root)
    gaps += [Gap(_COUNTER_FAMILIES[name], reason) for name, reason in missing.items()]
    pressure = read_pressure(proc_root)
    io_stalled, io_gaps = _stalled(pressure, "io")
    memory_stalled, memory_gaps = _stalled(pressure, "memory")
    gaps += [
        *io_gaps,
        *memory_gaps,
        Gap("mqinspect_kernel_dirty_throttle_pauses_total", THROTTLE_PAUSES_UNMEASURED),
    ]
    return KernelMeasurement(
        dirty_bytes=_bytes(vmstat.dirty_pages),
        writeback_bytes=_bytes(vmstat.writeback_pages),
        dirty_background_threshold_bytes=_bytes(vmstat.dirty_background_threshold_pages),
        dirty_threshold_bytes=_bytes(vmstat.dirty_threshold_pages),
        dirtied_bytes=_bytes(counters.get("nr_dirtied")),
        written_bytes=_bytes(counters.get("nr_written")),
        io_stalled_s=io_stalled,
        memory_stalled_s=memory_stalled,
        gaps=tuple(gaps),
    )


_KERNEL_FIELDS = {
    "dirty_pages": "dirty_bytes",
    "writeback_pages": "writeback_bytes",
    "dirty_background_threshold_pages": "dirty_background_threshold_bytes",
    "dirty_threshold_pages": "dirty_threshold_bytes",
}


def _kernel_gaps(unavailable: dict[str, str]) -> Iterable[tuple[str, str]]:
    return ((_KERNEL_FIELDS[name], reason) for name, reason in unavailable.items() if name in _KERNEL_FIELDS)


_COUNTER_FAMILIES = {
    "nr_dirtied": "mqinspect_kernel_dirtied_bytes_total",
    "nr_written": "mqinspect_kernel_written_bytes_total",
}


def _stalled(pressure, resource: str) -> tuple[dict[str, float], list[Gap]]:
    stalled, gaps = {}, []
    for line in ("some", "full"):
        value = getattr(pressure, f"{resource}_{line}")
        if value is None:
            reason = pressure.unavailable.get(f"{resource}_{line}", "not measured")
            gaps.append(Gap(f"mqinspect_kernel_{resource}_pressure_stalled_seconds_total", reason))
        else:
            stalled[line] = value.total_us / 1e6
    return stalled, gaps


def _bytes(pages: int | None) -> int | None:
    return None if pages is None else pages * PAGE_SIZE_BYTES
