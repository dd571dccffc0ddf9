"""A Scrape drawn as metric families: what Prometheus reads from `mqinspect export`.

Names follow Prometheus's naming practice: the `mqinspect_` prefix, base units in the name (`_bytes`,
`_seconds`), `_total` on counters, `_info` on info series. Labels: `store` (the directory given on the
command line), `kind` (commitlog, consumequeue, index; Kafka's log, offset_index, time_index), `topic` with
`queue` for a RocketMQ ConsumeQueue (`partition` for Kafka, as its JMX exporter names it), `segment` only
with --per-segment. No pid label: series outlive the processes that write the store.

Each source of families is one function of a Scrape (`FAMILY_SOURCES`); a figure a Scrape could not measure
is left out of its family and appears in `mqinspect_unavailable_info` with the reason, never as 0.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.metrics_core import Metric

from mqinspect import __version__
from mqinspect.export.measure import Scrape, StoreMeasurement

Row = tuple[dict[str, str], float | None]


def _labelled(family: Metric, names: list[str], rows: list[Row]) -> Metric:
    for labels, value in rows:
        family.add_metric([labels.get(name, "") for name in names], value)
    return family


def _label_names(rows: list[Row]) -> list[str]:
    """Every label any row has, in first-seen order; a row without one has it empty (Prometheus: absent)."""
    return list(dict.fromkeys(name for labels, _value in rows for name in labels))


def gauge(name: str, documentation: str, rows: Iterable[Row], unit: str = "") -> Iterator[Metric]:
    """A gauge family of the rows that have a value; nothing when none has (the gap says why)."""
    measured = [(labels, value) for labels, value in rows if value is not None]
    if measured:
        names = _label_names(measured)
        yield _labelled(GaugeMetricFamily(name, documentation, labels=names, unit=unit), names, measured)


def counter(name: str, documentation: str, rows: Iterable[Row], unit: str = "") -> Iterator[Metric]:
    """A counter family (`name` without `_total`, which the exposition adds) of the rows that have a value."""
    measured = [(labels, value) for labels, value in rows if value is not None]
    if measured:
        names = _label_names(measured)
        yield _labelled(CounterMetricFamily(name, documentation, labels=names, unit=unit), names, measured)


# --- the exporter itself


def exporter_families(scrape: Scrape) -> Iterator[Metric]:
    yield from gauge(
        "mqinspect_up",
        "1 when the store was found and its files listed in this scrape, 0 when not (mqinspect_unavailable)",
        (({"store": store.store}, int(store.up)) for store in scrape.stores),
    )
    yield from gauge(
        "mqinspect_scrape_duration_seconds",
        "Seconds this scrape took to measure every store and the kernel",
        [({}, scrape.duration_s)],
        unit="seconds",
    )
    build = InfoMetricFamily("mqinspect_build", "The mqinspect that answers", labels=())
    build.add_metric([], {"version": __version__, "python_version": platform.python_version()})
    yield build


def unavailable_families(scrape: Scrape) -> Iterator[Metric]:
    gaps = [gap for store in scrape.stores for gap in store.gaps] + list(scrape.kernel.gaps)
    gaps += scrape.ebpf.gaps if scrape.ebpf else ()
    family = InfoMetricFamily(
        "mqinspect_unavailable",
        "A family (metric) left out of this scrape, for a store or the kernel (store empty), and why",
        labels=("store", "metric"),
    )
    for gap in gaps:
        family.add_metric([gap.store or "", gap.metric], {"reason": gap.reason})
    if gaps:
        yield family


# --- the store's files in the page cache


def residency_families(scrape: Scrape) -> Iterator[Metric]:
    def rows(field: str) -> list[Row]:
        return [
            ({"store": store.store, **dict(group.labels)}, getattr(group, field))
            for store in scrape.stores
            for group in store.residency
        ]

    where = "by kind and topic-queue (and segment with --per-segment)"
    yield from gauge("mqinspect_store_files", f"Number of the store's files, {where}", rows("files"))
    yield from gauge(
        "mqinspect_store_size_bytes", f"Size of the store's files, {where}", rows("size_bytes"), "bytes"
    )
    for field, meaning in (
        ("cached", "in the page cache (cachestat; mincore where refused)"),
        ("dirty", "dirty in the page cache, not yet written back (cachestat)"),
        ("writeback", "under writeback to the disk (cachestat)"),
        ("locked", "mlocked by any process that maps them (/proc/PID/smaps)"),
    ):
        yield from gauge(
            f"mqinspect_store_{field}_bytes",
            f"Bytes of the store's files {meaning}, {where}",
            rows(f"{field}_bytes"),
            "bytes",
        )


# --- the store's offsets and lags


def position_families(scrape: Scrape) -> Iterator[Metric]:
    def commitlog_rows(field: str) -> list[Row]:
        return [
            ({"store": store.store}, getattr(store.commitlog, field))
            for store in scrape.stores
            if store.commitlog is not None
        ]

    for field, name, documentation in _COMMITLOG_FAMILIES:
        unit = "seconds" if name.endswith("_seconds") else "bytes"
        yield from gauge(name, documentation, commitlog_rows(field), unit)
    for field, name, documentation in _QUEUE_FAMILIES:
        unit = "bytes" if name.endswith("_bytes") else ""
        yield from gauge(name, documentation, _queue_rows(scrape.stores, field), unit)


def _queue_rows(stores: Iterable[StoreMeasurement], field: str) -> list[Row]:
    return [
        ({"store": store.store, "topic": queue.topic, "queue": queue.queue}, getattr(queue, field))
        for store in stores
        for queue in store.queues
    ]


_COMMITLOG_FAMILIES = (
    ("min_offset_bytes", "mqinspect_commitlog_min_offset_bytes", "Physical offset the CommitLog starts at"),
    (
        "max_offset_bytes",
        "mqinspect_commitlog_max_offset_bytes",
        "Physical offset where the CommitLog's last valid record ends (RocketMQ's max offset)",
    ),
    (
        "dispatched_offset_bytes",
        "mqinspect_commitlog_dispatched_offset_bytes",
        "Physical offset where the newest record any ConsumeQueue points at ends",
    ),
    (
        "dispatch_lag_bytes",
        "mqinspect_commitlog_dispatch_lag_bytes",
        "Bytes of the CommitLog written but not yet dispatched to a ConsumeQueue",
    ),
    (
        "flushed_offset_bytes",
        "mqinspect_commitlog_flushed_offset_bytes",
        "Physical offset the CommitLog is flushed to (the checkpoint's masterFlushedOffset)",
    ),
    (
        "flush_lag_bytes",
        "mqinspect_commitlog_flush_lag_bytes",
        "Bytes of the CommitLog written but not yet flushed (max offset - flushed offset)",
    ),
    (
        "flushed_message_time_s",
        "mqinspect_commitlog_flushed_message_timestamp_seconds",
        "Store time of the last message flushed (the checkpoint's physicMsgTimestamp), Unix seconds",
    ),
)
_QUEUE_FAMILIES = (
    ("min_offset", "mqinspect_queue_min_offset", "First queue offset (message number) still in the queue"),
    ("max_offset", "mqinspect_queue_max_offset", "Next queue offset (message number) to be written"),
    (
        "dispatched_offset_bytes",
        "mqinspect_queue_dispatched_offset_bytes",
        "Physical offset where the record of the queue's newest entry ends",
    ),
)


# --- the kernel's dirty memory and writeback


def kernel_families(scrape: Scrape) -> Iterator[Metric]:
    kernel = scrape.kernel
    for name, value, documentation in (
        ("dirty", kernel.dirty_bytes, "Dirty page-cache bytes, system-wide (vmstat nr_dirty)"),
        ("writeback", kernel.writeback_bytes, "Bytes under writeback, system-wide (vmstat nr_writeback)"),
        (
            "dirty_background_threshold",
            kernel.dirty_background_threshold_bytes,
            "Dirty bytes above which the flusher threads write back (vmstat nr_dirty_background_threshold)",
        ),
        (
            "dirty_threshold",
            kernel.dirty_threshold_bytes,
            "The dirty limit: writers are throttled as dirty + writeback nears it (nr_dirty_threshold)",
        ),
    ):
        yield from gauge(f"mqinspect_kernel_{name}_bytes", documentation, [({}, value)], "bytes")
    yield from counter(
        "mqinspect_kernel_dirtied_bytes",
        "Bytes dirtied since boot (vmstat nr_dirtied)",
        [({}, kernel.dirtied_bytes)],
        "bytes",
    )
    yield from counter(
        "mqinspect_kernel_written_bytes",
        "Bytes written back since boot (vmstat nr_written)",
        [({}, kernel.written_bytes)],
        "bytes",
    )
    for resource, stalled, what in (
        ("io", kernel.io_stalled_s, "waiting on I/O, dirty-throttle pauses included"),
        ("memory", kernel.memory_stalled_s, "waiting on memory (reclaim, refaults)"),
    ):
        yield from counter(
            f"mqinspect_kernel_{resource}_pressure_stalled_seconds",
            f"Seconds tasks stalled {what} (PSI total; some: at least one task, full: all at once)",
            [({"line": line}, seconds) for line, seconds in stalled.items()],
            "seconds",
        )


# --- with --ebpf: the probes' counters (mqinspect.export.ebpf says what each counts)


def ebpf_families(scrape: Scrape) -> Iterator[Metric]:
    if scrape.ebpf is None:
        return
    from mqinspect.export.ebpf import COUNTER_HELP, RUNNING  # only with --ebpf: it imports the probes

    totals = scrape.ebpf.totals
    for name, documentation in COUNTER_HELP.items():
        unit = next((unit for unit in ("bytes", "seconds") if name.endswith(f"_{unit}")), "")
        rows = [(dict(labels), value) for labels, value in totals.get(name, {}).items()]
        yield from counter(name, documentation, rows, unit)
    yield from gauge(
        RUNNING,
        "1 while the probe traces the store's holders, 0 while it waits for one, compiles or is unavailable "
        "(mqinspect_unavailable_info says why)",
        [
            ({"store": store, "probe": probe}, int(running))
            for (store, probe), running in scrape.ebpf.running.items()
        ],
    )


FamilySource = Callable[[Scrape], Iterable[Metric]]
FAMILY_SOURCES: tuple[FamilySource, ...] = (
    exporter_families,
    residency_families,
    position_families,
    kernel_families,
    ebpf_families,
    unavailable_families,
)


def scrape_families(scrape: Scrape) -> Iterator[Metric]:
    for source in FAMILY_SOURCES:
        yield from source(scrape)
