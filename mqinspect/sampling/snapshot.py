"""The dashboard's data: one immutable TopSnapshot per interval, produced by the sampler and only drawn by the
renderers (Textual, rich, JSON). A snapshot is self-contained (it carries the short fault-rate history the
sparklines need), so a recorded frame replays exactly as it was first shown.

Every number that could not be measured is None, with the reason in the `unavailable` mapping next to it
(field name -> "reason; fix: ..."). Keys carry their unit, as in `mqinspect mem` and `store segments`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from probes.ebpf import registry
from probes.memory import MemorySample

SCHEMA = "mqinspect.top/v1"

# The probes the dashboard runs (their names as the registry gives them), in the order it starts them.
PROBE_FAULTS = registry.FAULTS.name
PROBE_PAGECACHE = registry.PAGECACHE.name
PROBE_WRITEBACK = registry.WRITEBACK.name
PROBE_SENDPATH = registry.SENDPATH.name
DASHBOARD_PROBES = (PROBE_FAULTS, PROBE_PAGECACHE, PROBE_WRITEBACK, PROBE_SENDPATH)


class ProbeState:
    STARTING = "starting"
    RUNNING = "running"
    UNAVAILABLE = "unavailable"
    DISABLED = "disabled"
    WAITING = "waiting"  # for a process to trace


@dataclass(frozen=True)
class ProbeStatus:
    """One eBPF probe: starting (compiling), running, unavailable (reason and fix) or disabled (--no-ebpf)."""

    name: str
    state: str
    reason: str | None = None
    fix: str | None = None
    tracepoints: tuple[str, ...] = ()  # attached while running
    subject: str | None = None  # what it traces: "page faults of pid 123, per segment of the store ..."


@dataclass(frozen=True)
class ChunkState:
    """Pages [first_page, end_page) of a segment: cached, dirty and under writeback (cachestat), or cached
    only (mincore: dirty and writeback None)."""

    first_page: int
    end_page: int
    cached_pages: int
    dirty_pages: int | None
    writeback_pages: int | None


@dataclass(frozen=True)
class ChunkMap:
    """A segment's pages in runs, as parallel columns (compact in JSON: a recording holds one per segment per
    interval). Run i covers pages [start_pages[i], start_pages[i + 1]), the last one up to end_page.
    dirty_pages and writeback_pages are None where the source (mincore) cannot see them."""

    start_pages: tuple[int, ...]
    end_page: int
    cached_pages: tuple[int, ...]
    dirty_pages: tuple[int, ...] | None
    writeback_pages: tuple[int, ...] | None

    @classmethod
    def of(cls, chunks: tuple[ChunkState, ...]) -> ChunkMap:
        has_dirty = all(chunk.dirty_pages is not None for chunk in chunks)
        has_writeback = all(chunk.writeback_pages is not None for chunk in chunks)
        return cls(
            start_pages=tuple(chunk.first_page for chunk in chunks),
            end_page=chunks[-1].end_page if chunks else 0,
            cached_pages=tuple(chunk.cached_pages for chunk in chunks),
            dirty_pages=tuple(chunk.dirty_pages or 0 for chunk in chunks) if has_dirty else None,
            writeback_pages=tuple(chunk.writeback_pages or 0 for chunk in chunks) if has_writeback else None,
        )

    def states(self) -> tuple[ChunkState, ...]:
        ends = (*self.start_pages[1:], self.end_page) if self.start_pages else ()  # an empty file: none
        return tuple(
            ChunkState(
                first,
                end,
                self.cached_pages[index],
                None if self.dirty_pages is None else self.dirty_pages[index],
                None if self.writeback_pages is None else self.writeback_pages[index],
            )
            for index, (first, end) in enumerate(zip(self.start_pages, ends, strict=True))
        )


@dataclass(frozen=True)
class PageRangeEvents:
    """eBPF events on pages [first_page, last_page] of one segment over the interval."""

    first_page: int
    last_page: int
    faults: int | None
    major_faults: int | None
    added_pages: int | None  # entered the page cache (pagecache probe)
    deleted_pages: int | None  # left the page cache


@dataclass(frozen=True)
class SegmentView:
    """One CommitLog or ConsumeQueue segment: residency (cachestat/mincore), positions, locks, and events.

    wrote_position_bytes: how far the queue's data reaches into this segment: the end of the CommitLog's last
    record (a ConsumeQueue's last entry) in the segment that holds it, the segment's size when the data goes
    on past it, 0 when the data ends before it (a segment preallocated ahead of the writer);
    committed_position_bytes: equal to wrote when the store's config says no transient pool is used;
    flushed_position_bytes: the checkpoint's masterFlushedOffset, the same way.
    holds_write_position / holds_flushed_position: the one segment of its queue where that position lies.
    Positions that cannot be known from outside the broker are None, with the reason in `unavailable`.
    """

    kind: str  # commitlog or consumequeue
    name: str  # "commitlog/00000000000000000000", "consumequeue/TopicA/0/00000000000000000000"
    path: str
    start_offset_bytes: int
    size_bytes: int
    newest: bool  # the queue's newest file by name (the CommitLog's may be preallocated ahead of the writer)
    pages: int | None
    cached_pages: int | None
    dirty_pages: int | None
    writeback_pages: int | None
    locked_bytes: int | None
    residency_source: str | None  # cachestat or mincore
    chunks: ChunkMap | None
    wrote_position_bytes: int | None
    committed_position_bytes: int | None
    flushed_position_bytes: int | None
    faults: int | None  # over the interval, from the faults probe
    major_faults: int | None
    added_pages: int | None  # pages entering the page cache over the interval, from the pagecache probe
    deleted_pages: int | None
    dirtied_pages: int | None  # from the writeback probe
    written_pages: int | None
    page_ranges: tuple[PageRangeEvents, ...] = ()
    unavailable: dict[str, str] = field(default_factory=dict)
    holds_write_position: bool = False  # the segment being written
    holds_flushed_position: bool = False
    # The read path's page-cache lookups of the segment over the interval (pagecache probe; not mmap reads)
    hit_pages: int | None = None
    miss_pages: int | None = None
    hit_ratio_percent: float | None = None
    # Where consumer groups' committed positions lie in this segment (bytes into it), from sampling.consumers.
    consumer_positions_bytes: tuple[int, ...] = ()
    # Where connected consumers' latest sends reached in this segment (bytes into it).
    reader_positions_bytes: tuple[int, ...] = ()
    # None: pages, cached, dirty, writeback and chunks were measured in this snapshot's interval. Else when
    # they were (a dashboard on a big store measures rows off screen by turns, store_reader.TURN_INTERVALS).
    residency_time_unix_s: float | None = None
    # A Kafka log directory's file: its partition directory's name ("orders-0"); None for RocketMQ's.
    partition: str | None = None


@dataclass(frozen=True)
class SegmentDetail:
    """The drill-down of one segment: a fine map of `cells` page runs (cachestat per run)."""

    path: str
    name: str
    page_size_bytes: int
    cells: ChunkMap | None
    source: str | None
    unavailable: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PartitionView:
    """One partition of a Kafka log directory: its segments' offsets, as its files show them.

    log_end_offset: the offset after the last record of its newest segment (read from that segment's last
    offset index entry to its end); log_size_bytes: its .log segments' sizes, the bytes from its first
    batch on disk to the end of its log."""

    name: str  # the partition directory's name: "orders-0"
    topic: str
    partition: int
    segments: int  # .log segments
    log_start_offset: int | None  # the first segment's base offset
    log_end_offset: int | None
    log_size_bytes: int
    unavailable: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class StoreView:
    """The store's segments and the positions known from its files."""

    root: str | None
    checkpoint_flush_time_ms: int | None  # physicMsgTimestamp: store time of the last flushed message
    segments: tuple[SegmentView, ...]
    unavailable: dict[str, str] = field(default_factory=dict)
    log_format: str = "rocketmq"  # the format of the store's files: rocketmq or kafka
    partitions: tuple[PartitionView, ...] = ()  # a Kafka log directory's partitions


@dataclass(frozen=True)
class ThrottledWriter:
    """A process balance_dirty_pages() paused over the interval (writeback probe)."""

    pid: int
    comm: str | None
    pauses: int
    pause_ms_total: int
    pause_ms_max: int
    dirty_pages_at_max_pause: int
    limit_pages_at_max_pause: int


@dataclass(frozen=True)
class WritebackEvents:
    """Writeback over the interval from the writeback probe (None when it is not running)."""

    dirtied_pages: int | None
    written_pages: int | None
    written_pages_all_files: int | None
    throttled: tuple[ThrottledWriter, ...]
    unavailable: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SendPathRow:
    """One process's traffic to sockets per send path over the interval (sendpath probe)."""

    pid: int
    comm: str | None
    main_path: str | None
    bytes_to_sockets: int
    read_write_bytes: int
    mmap_write_bytes: int
    sendfile_bytes: int
    splice_bytes: int
    syscalls: int
    cpu_copies_per_socket_byte: float | None
    # Socket writes that are no send path (None in recordings made before they were told apart).
    other_socket_write_bytes: int | None = None
    unresolved_socket_write_bytes: int | None = None


@dataclass(frozen=True)
class SendPathsView:
    interval_s: float | None
    bytes_to_sockets: int | None
    cpu_copies_per_socket_byte: float | None
    processes: tuple[SendPathRow, ...]
    unavailable: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ProcessView:
    """A broker, producer or consumer: given with --pid, or found holding the store's files.

    Rates are over the interval from /proc/PID/stat and /proc/PID/io; rss and locked from /proc/PID/status.
    rchar/wchar count read(2)/write(2)-family calls (pread, readv, sendfile too), on files and sockets, but
    not recv/send/sendmsg or splice; tcp_*: the TCP bytes of the sockets the process holds (sock_diag
    tcp_info: received, and sent and acknowledged by the peer), whatever call moved them.
    minor_fault_rate_history holds the last rates (oldest first) for the sparkline.
    """

    pid: int
    comm: str | None
    found_by: str  # "--pid", "maps" (maps a store file), "fd" (holds one open), "lock" (the store's lock)
    minor_faults_per_s: float | None
    major_faults_per_s: float | None
    rchar_bytes_per_s: float | None
    wchar_bytes_per_s: float | None
    rss_bytes: int | None
    locked_bytes: int | None
    traced_faults: int | None  # faults probe, this interval
    traced_major_faults: int | None
    minor_fault_rate_history: tuple[float | None, ...] = ()
    unavailable: dict[str, str] = field(default_factory=dict)
    tcp_received_bytes_per_s: float | None = None
    tcp_acked_bytes_per_s: float | None = None
    # The read path's page-cache lookups of the store's files over the interval (pagecache probe)
    hit_pages: int | None = None
    miss_pages: int | None = None
    hit_ratio_percent: float | None = None


@dataclass(frozen=True, kw_only=True)
class TopSnapshot:
    """Everything the dashboard shows for one interval."""

    schema: str = SCHEMA
    sequence: int
    time_unix_s: float
    interval_s: float
    page_size_bytes: int
    store: StoreView
    memory: MemorySample | None
    writeback: WritebackEvents
    sendpaths: SendPathsView
    processes: tuple[ProcessView, ...]
    probes: tuple[ProbeStatus, ...]
    detail: SegmentDetail | None = None
    unavailable: dict[str, str] = field(default_factory=dict)
    consumers: ConsumersView | None = None  # None: no store (or a recording made before consumers were read)

    def probe(self, name: str) -> ProbeStatus | None:
        return next((status for status in self.probes if status.name == name), None)


@dataclass(frozen=True)
class GroupQueueView:
    """One consumer group on one queue: its committed offset (config/consumerOffset.json: the next queue
    offset it will consume) against the queue's end (its ConsumeQueue).

    lag_messages = max_offset - committed_offset, as RocketMQ's consumer progress counts it.
    committed_physical_offset_bytes: the CommitLog offset of the next message the group reads (the
    ConsumeQueue entry at the committed offset); the queue's end when the group has read everything.
    queue_end_physical_offset_bytes: where the queue's last record ends in the CommitLog.
    lag_bytes = queue end - committed physical offset: the CommitLog bytes the group has yet to read through
    on this queue, other queues' records interleaved with its own included.
    """

    group: str
    topic: str
    queue_id: int
    committed_offset: int
    max_offset: int | None
    lag_messages: int | None
    committed_physical_offset_bytes: int | None
    queue_end_physical_offset_bytes: int | None
    lag_bytes: int | None
    segment: str | None  # the CommitLog segment that holds the committed position
    unavailable: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ConnectedConsumerView:
    """One socket a process sent store bytes to over the interval (sendpath probe, per descriptor): a
    connected consumer as the broker's side of its connection shows it.

    segments: the store segments the bytes came from (most bytes first), with the share of each that is in
    the page cache now (cachestat).
    read_position_bytes: the CommitLog offset the latest send reached (the end of the last page it read from
    the newest segment sent from: mm_filemap_get_pages for sendfile, splice and read+write, the mapping's
    file offset for mmap+write).
    cold_pages: pages the sends (or the reads that filled their buffers) added to the page cache during the
    calls: read from disk for this consumer, with the readahead those reads started.
    Either is None, with the reason in `unavailable`, where the probe could not tell.
    """

    pid: int
    comm: str | None
    peer: str  # "TCP 127.0.0.1:10911 → 127.0.0.1:40112"
    main_path: str | None  # the send path that carried the most bytes
    bytes_sent: int  # over the interval, by the send paths
    read_write_bytes: int
    mmap_write_bytes: int
    sendfile_bytes: int
    splice_bytes: int
    segments: tuple[str, ...]
    segment_cached_pages: tuple[int | None, ...]  # per segment, now
    segment_pages: tuple[int | None, ...]
    read_position_bytes: int | None
    cold_pages: int | None
    unavailable: dict[str, str] = field(default_factory=dict)
    read_segment: str | None = None  # the segment that holds read_position_bytes


@dataclass(frozen=True)
class ConsumersView:
    """Consumer groups' committed positions and the consumers connected to the store's holder."""

    offsets_file: str | None
    groups: tuple[GroupQueueView, ...]
    connected: tuple[ConnectedConsumerView, ...]
    interval_s: float | None = None  # the sendpath probe's interval, for the connected consumers' rates
    unavailable: dict[str, str] = field(default_factory=dict)
