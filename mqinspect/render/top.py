"""Draws a TopSnapshot with rich: the whole dashboard for `mqinspect top --once` (and --svg), and the pieces
(cells, strips, panels) the Textual app puts in its widgets. Renderers only draw the snapshot.

Every panel names where its numbers come from; a number that was not measured reads "unavailable: reason;
fix: ..." or "-", never 0.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from mqinspect.render.cells import (
    NONE,
    UNAVAILABLE,
    byte_rate_text,
    bytes_text,
    chunk_cell,
    count_text,
    heat_strip,
    interval_rate_text,
    pages_text,
    percent_text,
    rate_text,
    unavailable_text,
)
from mqinspect.render.layout import WIDE_HINT, PriorityTable, columns_by_priority
from mqinspect.render.mem import threshold_gauge
from mqinspect.render.trace_cache import HIT_COLUMNS, hit_ratio_text
from mqinspect.render.units import human_bytes, per_second
from mqinspect.sampling.hits import PAGECACHE_NOT_RUNNING
from mqinspect.sampling.snapshot import (
    PROBE_FAULTS,
    PROBE_PAGECACHE,
    PROBE_SENDPATH,
    PROBE_WRITEBACK,
    ChunkState,
    ConnectedConsumerView,
    ConsumersView,
    GroupQueueView,
    ProbeState,
    ProbeStatus,
    ProcessView,
    SegmentDetail,
    SegmentView,
    SendPathRow,
    TopSnapshot,
)
from probes.procfs import WritebackState

SPARK_GLYPHS = "▁▂▃▄▅▆▇█"
WROTE_MARK = "W"
FLUSHED_MARK = "F"
CONSUMER_MARK = "C"  # a consumer group's committed position (W and F are drawn over it)
READER_MARK = "R"  # where a connected consumer's latest send reached

SOURCES = {
    "segments": "cachestat(2) per chunk (mincore(2) where refused) · wrote: end of the CommitLog's last "
    "record (its records' sizes followed with pread; a ConsumeQueue's last entry), a full segment's size, 0 "
    "ahead of the log · flushed: checkpoint masterFlushedOffset · locked: /proc/PID/smaps (mappings with "
    "VmFlags lo)",
    "segment_events": "faults probe (exceptions:page_fault_user, filemap:mm_filemap_fault) · pagecache probe "
    "(filemap:mm_filemap_add_to_page_cache, mm_filemap_delete_from_page_cache; hits, misses: "
    "mm_filemap_get_pages)",
    "memory": "/proc/meminfo · /proc/vmstat · /proc/sys/vm/dirty_* · /proc/pressure/{memory,io}",
    "throttling": "writeback probe: writeback:balance_dirty_pages, writeback:writeback_dirty_folio",
    "faults": "/proc/PID/stat minflt/majflt · per segment: faults probe",
    "sendpaths": "sendpath probe: syscalls:sys_{enter,exit}_{read,write,sendfile64,splice,sendmsg,...}; "
    "rates over the probe's interval",
    "processes": "/proc/PID/stat · /proc/PID/io (rchar/wchar: read, pread, write, sendfile calls on files "
    "and sockets; not recv, send, sendmsg, splice) · tcp in/out: sock_diag tcp_info of the process's sockets "
    "(received; sent and acknowledged), whatever call moved them · /proc/PID/status · found in "
    "/proc/PID/maps, /proc/PID/fd · hits, misses: pagecache probe (filemap:mm_filemap_get_pages), the "
    "store's files",
    "kafka_segments": "cachestat(2) per chunk (mincore(2) where refused) · wrote: a .log's size (Kafka "
    "appends with write(2) and never preallocates a segment), the newest segment's index up to its last "
    "entry · flushed: does not apply to Kafka (a broker keeps no flushed byte position in its files) · "
    "locked: /proc/PID/smaps (mappings with VmFlags lo)",
    "partitions": "each partition's .log segments; log end: the offset after the newest segment's last batch "
    "(read from its last .index entry to its end)",
    "kafka_consumers": "groups: the log dir's __consumer_offsets partitions (latest commit per group and "
    "partition; a tombstone deletes it) · lag = log end offset - committed, in offsets and in bytes of the "
    "partition's .log segments from the batch holding the committed offset (found through the .index) to "
    "the log's end · connected: sendpath probe, per socket: read at = bytes into the partition's log the "
    "latest send reached · cached: cachestat of the segments each consumer was sent from",
    "consumers": "groups: config/consumerOffset.json (as the broker last persisted it) placed through each "
    "queue's ConsumeQueue entry; lag = the queue's end - committed, in messages and in CommitLog bytes up "
    "to the end of the queue's last record · connected: sendpath probe, per socket: read at = CommitLog "
    "offset the latest send reached (mm_filemap_get_pages' page range; mmap+write: the mapping's offset), "
    "cold = pages the sends or their reads added to the page cache (mm_filemap_add_to_page_cache, readahead "
    "included) · cached: cachestat of the segments each consumer was sent from",
}
HEAT_KEY = (
    "heat: one cell per chunk · █▓▒░ cached share · green clean, red dirty, magenta under writeback · "
    "· absent · W wrote (= committed: data in the file) · F flushed · cached: share of the pages, floored · "
    "faults, major, +cache: counted over the last interval · hits, misses: pages read (read, pread, "
    "sendfile; not mmap) found in the cache / brought in by the read, hit%: hits of both"
)
CONSUMER_KEY = (
    "C on a heat strip: a consumer group's committed position, the next message it reads (in the CommitLog "
    "and in its ConsumeQueue) · R: where a connected consumer's latest send reached · W and F are drawn over "
    "them"
)
KAFKA_CONSUMER_KEY = (
    "C on a heat strip: a consumer group's committed position (the batch holding the next offset it reads) "
    "· R: where a connected consumer's latest send reached · W is drawn over them"
)
SEGMENT_COLUMNS = (
    "segment",
    "heat",
    "cached",
    "dirty",
    "writeback",
    "locked",
    "wrote",
    "faults",
    "major",
    "+cache",
    *HIT_COLUMNS,
)
PROCESS_COLUMNS = (
    "pid",
    "command",
    "found",
    "minflt/s",
    "majflt/s",
    "tcp in/s",
    "tcp out/s",
    "rchar/s",
    "wchar/s",
    "rss",
    "locked",
    *HIT_COLUMNS,
)
# Which columns stay when the width runs short (render.layout): 0 always, higher numbers go first. The
# segment's name, heat, cached and dirty are what an operator reads first (htop keeps PID and CPU%).
SEGMENT_PRIORITIES = {
    "segment": 0,
    "heat": 0,
    "cached": 0,
    "dirty": 0,
    "wrote": 1,
    "faults": 2,
    "+cache": 3,
    "writeback": 4,
    "major": 5,
    "locked": 6,
}
PROCESS_PRIORITIES = {
    "pid": 0,
    "command": 0,
    "minflt/s": 1,
    "rss": 2,
    "majflt/s": 3,
    "tcp out/s": 4,
    "tcp in/s": 5,
    "wchar/s": 6,
    "rchar/s": 7,
    "found": 8,
    "locked": 9,
}
SEGMENT_TABLE_COLUMNS = columns_by_priority(
    SEGMENT_COLUMNS,
    SEGMENT_PRIORITIES,
    left=("segment", "heat"),
    # a ConsumeQueue's name is long: it gives way before cached and dirty do (the dashboard keeps its ends)
    segment={"flexible": True, "min_width": 22},
)
PROCESS_TABLE_COLUMNS = columns_by_priority(
    PROCESS_COLUMNS,
    PROCESS_PRIORITIES,
    left=("command", "found"),
    command={"flexible": True, "min_width": 8, "overflow": "ellipsis"},
)


# --- small formatting


def is_kafka(snapshot: TopSnapshot) -> bool:
    return snapshot.store.log_format == "kafka"


def segment_notes(snapshot: TopSnapshot, marked: bool) -> tuple[str, ...]:
    """The heat strip's key (with the consumer marks' when a strip has one) and the segments' source, in
    the words of the store's format."""
    kafka = is_kafka(snapshot)
    consumer_key = (KAFKA_CONSUMER_KEY if kafka else CONSUMER_KEY,) if marked else ()
    return (HEAT_KEY, *consumer_key, f"source: {SOURCES['kafka_segments' if kafka else 'segments']}")


def _source(key: str) -> Text:
    return Text(f"source: {SOURCES[key]}", style="dim cyan")


def no_match_text(filter_text: str, total: int, one: str, many: str) -> Text:
    """What a panel says when the filter keeps none of its rows (not "unavailable": they were measured)."""
    rows = f"{total} {one if total == 1 else many}"
    return Text(f"filter '{filter_text}' matches none of the {rows}", style="yellow")


def clock_text(time_unix_s: float) -> str:
    return datetime.fromtimestamp(time_unix_s, UTC).strftime("%H:%M:%S UTC")


# --- header


def status_line(
    snapshot: TopSnapshot | None,
    *,
    paused: bool = False,
    held: int = 0,
    now_s: float | None = None,
    mode: str = "",
    set_interval_s: float | None = None,
) -> Text:
    """The top line: mode, PAUSED badge, store, frame time and age, interval (and the one set with + or -
    while the frames still come at another)."""
    line = Text()
    if paused:
        line.append(" PAUSED ", style="bold reverse red")
        line.append(f" ({held} newer frames held) " if held else " ")
    line.append(f"mqinspect top{mode}", style="bold")
    if snapshot is None:
        return line.append("  waiting for the first interval…")
    age = f", {max(0.0, now_s - snapshot.time_unix_s):.0f} s ago" if now_s is not None else ""
    line.append(f"  frame {snapshot.sequence} at {clock_text(snapshot.time_unix_s)}{age}")
    line.append(f"  interval {snapshot.interval_s:.2f} s")
    if set_interval_s is not None and abs(snapshot.interval_s - set_interval_s) > 0.1 * set_interval_s:
        line.append(f" (set to {set_interval_s:g} s)", style="bold yellow")
    line.append(f"  store {snapshot.store.root or NONE}")  # last: a long path is what an 80-column line cuts
    return line


def probes_line(statuses: Sequence[ProbeStatus]) -> Text:
    line = Text("eBPF: ", style="bold")
    for status in statuses:
        style = {"running": "green", "starting": "yellow", "waiting": "yellow"}.get(status.state, "red")
        label = "starting eBPF…" if status.state == ProbeState.STARTING else status.state
        line.append(f"{status.name} ", style="bold")
        line.append(label, style=style)
        line.append("  ")
    subjects = [status.subject for status in statuses if status.subject]
    if subjects:
        line.append(f"(tracing {_whom(subjects[0])})", style="dim")
    return line


def _whom(subject: str) -> str:
    """ "page faults of pids 7, 9, per segment of ..." -> "pids 7, 9": the probes all trace the same
    processes."""
    found = re.search(r"\b(every process|pids? \d+(?:, \d+)*)", subject)
    return found.group(1) if found else subject


def probe_problem(snapshot: TopSnapshot, name: str) -> Text | None:
    """'unavailable: reason; fix: ...' for a probe that is not running, else None."""
    status = snapshot.probe(name)
    if status is None or status.state == ProbeState.RUNNING:
        return None
    if status.state == ProbeState.STARTING:
        return Text(f"{name}: starting eBPF… (compiling the probe)", style="yellow")
    if status.state == ProbeState.WAITING:
        return Text(f"{name} probe waiting: {status.reason}; {status.fix}", style="yellow")
    return unavailable_text(f"{name} probe: {status.reason}", status.fix)


# --- segments


def segment_strip(segment: SegmentView) -> Text:
    """The segment's heat strip (render.cells), with its W and F position marks."""
    chunks = None if segment.chunks is None else segment.chunks.states()
    marks = {}
    for positions, glyph in (
        (segment.consumer_positions_bytes, CONSUMER_MARK),
        (segment.reader_positions_bytes, READER_MARK),
    ):
        for position in positions:
            index = _chunk_index(chunks or (), position, segment)
            if index is not None:
                marks[index] = glyph
    for position, mark in (
        (segment.flushed_position_bytes if segment.holds_flushed_position else None, FLUSHED_MARK),
        (segment.wrote_position_bytes if segment.holds_write_position else None, WROTE_MARK),
    ):
        index = _chunk_index(chunks or (), position, segment)
        if index is not None:
            marks[index] = mark
    return heat_strip(chunks, marks=marks)


def _chunk_index(chunks: Sequence[ChunkState], position: int | None, segment: SegmentView) -> int | None:
    if position is None or not chunks or not segment.size_bytes:
        return None
    page = position * (segment.pages or 0) // segment.size_bytes
    for index, chunk in enumerate(chunks):
        if chunk.first_page <= page < chunk.end_page:
            return index
    return len(chunks) - 1


def segment_cells(segment: SegmentView, page_size_bytes: int) -> list[Text]:
    """The cells of one segment row, in SEGMENT_COLUMNS order."""
    wrote = segment.wrote_position_bytes
    # measured in an earlier interval (a big store's rows off screen are measured by turns): drawn dim
    earlier = "dim" if segment.residency_time_unix_s is not None else ""
    strip = segment_strip(segment)
    if earlier:
        strip.stylize(earlier)
    return [
        Text(segment.name, style="bold" if segment.holds_write_position else ""),
        strip,
        Text(percent_text(segment.cached_pages, segment.pages), justify="right", style=earlier),
        Text(pages_text(segment.dirty_pages, page_size_bytes), justify="right", style=earlier),
        Text(pages_text(segment.writeback_pages, page_size_bytes), justify="right", style=earlier),
        Text(bytes_text(segment.locked_bytes), justify="right"),
        Text(bytes_text(wrote), justify="right"),
        Text(count_text(segment.faults), justify="right"),
        Text(count_text(segment.major_faults), justify="right"),
        Text(pages_text(segment.added_pages, page_size_bytes), justify="right"),
        *hit_cells(segment),
    ]


# A printed frame of a big store (1,000 segments) lists this many rows: rich took 7 s to lay out 1,500.
PRINTED_SEGMENT_ROWS = 100


def busiest_segments(segments: Sequence[SegmentView], rows: int) -> tuple[SegmentView, ...]:
    """`rows` of the segments, in store order: those holding a position, with dirty or writeback pages,
    events or consumers first, then the newest of each queue, then the newest others."""

    def rank(index_segment: tuple[int, SegmentView]) -> tuple[int, int]:
        index, segment = index_segment
        busy = (
            segment.holds_write_position
            or segment.holds_flushed_position
            or segment.dirty_pages
            or segment.writeback_pages
            or segment.faults
            or segment.added_pages
            or segment.consumer_positions_bytes
            or segment.reader_positions_bytes
        )
        return (0 if busy else 1 if segment.newest else 2, -index)

    chosen = sorted(enumerate(segments), key=rank)[:rows]
    return tuple(segment for _index, segment in sorted(chosen, key=lambda pair: pair[0]))


def segments_table(snapshot: TopSnapshot, segments: Sequence[SegmentView] | None = None) -> RenderableType:
    store = snapshot.store
    if not store.segments:
        return Group(Text("Segments", style="bold"), unavailable_text(store.unavailable.get("segments")))
    table = PriorityTable(
        SEGMENT_TABLE_COLUMNS,
        table_options={
            "title": "Segments",
            "title_justify": "left",
            "title_style": "bold",
            "box": None,
            "pad_edge": False,
        },
    )
    shown = store.segments if segments is None else segments
    left_out = 0
    if segments is None and len(shown) > PRINTED_SEGMENT_ROWS:
        shown, left_out = busiest_segments(shown, PRINTED_SEGMENT_ROWS), len(shown) - PRINTED_SEGMENT_ROWS
    for segment in shown:
        table.add_row(*segment_cells(segment, snapshot.page_size_bytes))
    marked = any(segment.consumer_positions_bytes or segment.reader_positions_bytes for segment in shown)
    *keys, source = segment_notes(snapshot, marked)
    notes = [
        *(Text(key, style="dim") for key in keys),
        Text(source, style="dim cyan"),
        _source("segment_events"),
    ]
    if left_out:
        notes.insert(
            0, Text(f"+{left_out} more segments (quiet ones, oldest first; --format json lists every one)")
        )
    # why a residency column says unavailable, once per distinct reason (JSON has it per segment)
    reasons = dict.fromkeys(
        reason for segment in shown if (reason := segment.unavailable.get("cached_pages")) is not None
    )
    notes += [unavailable_text(f"residency: {reason}") for reason in reasons]
    locked_reasons = dict.fromkeys(
        segment.unavailable.get("locked_bytes") for segment in shown if segment.locked_bytes is None
    )
    notes += [unavailable_text(f"locked: {reason}") for reason in locked_reasons]
    notes += [
        problem for name in (PROBE_FAULTS, PROBE_PAGECACHE) if (problem := probe_problem(snapshot, name))
    ]
    return Group(table, *notes)


# --- memory


def _title(name: str, titled: bool) -> list[RenderableType]:
    return [Text(name, style="bold")] if titled else []


def memory_panel(snapshot: TopSnapshot, *, titled: bool = True) -> RenderableType:
    sample = snapshot.memory
    parts = _title("Memory", titled)
    if sample is None:
        return Group(*parts, unavailable_text("no interval has ended yet"))
    writeback = sample.snapshot.writeback
    page = writeback.page_size_bytes
    meminfo = sample.snapshot.meminfo
    parts.append(threshold_gauge(writeback))  # first: a short panel still shows it
    parts.append(
        Text(
            f"cached {bytes_text(meminfo.cached_bytes)}  dirty {pages_text(writeback.dirty_pages, page)}  "
            f"writeback {pages_text(writeback.writeback_pages, page)}  "
            f"background at {pages_text(writeback.background_threshold_pages, page)}  "
            f"limit {pages_text(writeback.throttle_threshold_pages, page)}"
        )
    )
    regime = writeback.regime
    parts.append(Text(f"regime: {regime or UNAVAILABLE}: {WritebackState.REGIMES.get(regime or '', '')}"))
    vm, pressure = sample.rates.vmstat, sample.rates.pressure
    parts.append(
        Text(
            f"written to disk {byte_rate_text(_kib_to_bytes(vm.pgpgout_kib_per_s))}  "
            f"read {byte_rate_text(_kib_to_bytes(vm.pgpgin_kib_per_s))}"
            f"  PSI memory some {_pct(pressure.memory_some_stalled_percent)} full "
            f"{_pct(pressure.memory_full_stalled_percent)}  io some {_pct(pressure.io_some_stalled_percent)}"
        )
    )
    parts.append(_source("memory"))
    parts.extend(_throttling(snapshot))
    return Group(*parts)


def _kib_to_bytes(kib: float | None) -> float | None:
    return None if kib is None else kib * 1024


def _pct(value: float | None) -> str:
    return NONE if value is None else f"{value:.1f}%"


def _throttling(snapshot: TopSnapshot) -> list[RenderableType]:
    problem = probe_problem(snapshot, PROBE_WRITEBACK)
    if problem is not None:
        return [Text("writer throttling (balance_dirty_pages): ", style="bold"), problem]
    events = snapshot.writeback

    def rate(pages: int | None) -> str:
        moved = None if pages is None else pages * snapshot.page_size_bytes
        return interval_rate_text(moved, snapshot.interval_s)

    head = Text(
        f"dirtied {rate(events.dirtied_pages)}  written back {rate(events.written_pages)} "
        f"(all files {rate(events.written_pages_all_files)})  throttled writers: {len(events.throttled)}"
    )
    lines: list[RenderableType] = [head]
    for writer in events.throttled[:3]:
        lines.append(
            Text(
                f"  {writer.pid} {writer.comm or NONE}: {writer.pauses} pauses this interval, "
                f"{writer.pause_ms_total} ms "
                f"(longest {writer.pause_ms_max} ms, dirty {writer.dirty_pages_at_max_pause} of limit "
                f"{writer.limit_pages_at_max_pause} pages)",
                style="red",
            )
        )
    lines.append(_source("throttling"))
    return lines


# --- faults


def sparkline(values: Sequence[float | None], width: int = 30) -> Text:
    shown = list(values)[-width:]
    known = [value for value in shown if value is not None]
    top = max(known, default=0.0)
    line = Text()
    for value in shown:
        if value is None:
            line.append(" ")
        else:
            index = 0 if top <= 0 else min(len(SPARK_GLYPHS) - 1, int(value / top * (len(SPARK_GLYPHS) - 1)))
            line.append(SPARK_GLYPHS[index], style="cyan")
    return line


def faults_panel(
    snapshot: TopSnapshot,
    processes: Sequence[ProcessView] | None = None,
    *,
    titled: bool = True,
    segments: Sequence[SegmentView] | None = None,
    filter_text: str = "",
    width: int | None = None,
) -> RenderableType:
    """Fault rates of `processes` (default: all, those that fault most first; the dashboard passes the rows
    its filter keeps, in its sort) and the faults of `segments` (default: all); `filter_text` says so when
    the filter keeps none; `width` narrows the sparkline so a process's rate stays on its first line."""
    parts = _title("Faults", titled)
    rows = sorted(snapshot.processes, key=_fault_rate, reverse=True) if processes is None else processes
    if not rows and snapshot.processes:
        parts.append(no_match_text(filter_text, len(snapshot.processes), "process", "processes"))
    elif not rows:
        parts.append(unavailable_text(snapshot.unavailable.get("processes")))
    for process in rows[:8]:
        line = Text(f"{process.pid:>7} {(process.comm or NONE)[:15]:<15} ")
        line.append_text(sparkline(process.minor_fault_rate_history, _spark_width(width)))
        line.append(
            f" {rate_text(process.minor_faults_per_s)} minor, {rate_text(process.major_faults_per_s)} major"
        )
        if process.traced_faults is not None:
            line.append(
                f" · traced {rate_text(per_second(process.traced_faults, snapshot.interval_s))} "
                f"({rate_text(per_second(process.traced_major_faults or 0, snapshot.interval_s))} major)"
            )
        parts.append(line)
    parts.append(
        _segment_faults(snapshot, snapshot.store.segments if segments is None else segments, filter_text)
    )
    parts.append(_source("faults"))
    return Group(*parts)


def _fault_rate(process: ProcessView) -> float:
    """Faults per second, minor and major; a process whose rate was not measured sorts last."""
    rates = (process.minor_faults_per_s, process.major_faults_per_s)
    return -1.0 if all(rate is None for rate in rates) else sum(rate or 0.0 for rate in rates)


# pid (7), command (15) and the minor-fault rate ("12,345/s") stay on a process's first line
_FAULT_LINE_FIXED = 7 + 1 + 15 + 1 + 1 + 8


def _spark_width(width: int | None) -> int:
    """The sparkline's cells in a panel `width` wide (None: the full 30)."""
    return 30 if width is None else max(4, min(30, width - _FAULT_LINE_FIXED))


def _segment_faults(
    snapshot: TopSnapshot, segments: Sequence[SegmentView], filter_text: str
) -> RenderableType:
    problem = probe_problem(snapshot, PROBE_FAULTS)
    if problem is not None:
        return problem
    if not snapshot.store.segments:
        return Text(f"faults per segment: {snapshot.store.unavailable.get('segments', 'no segments')}")
    if not segments:
        total = len(snapshot.store.segments)
        return Text(f"faults per segment: {no_match_text(filter_text, total, 'segment', 'segments')}")
    hit = sorted((s for s in segments if s.faults), key=lambda s: -(s.faults or 0))
    if not hit:
        return Text("no faults on the store's segments this interval (faults probe)")
    return Text(
        "faults per segment this interval: "
        + ", ".join(f"{s.name} {s.faults:,} ({s.major_faults or 0:,} major)" for s in hit[:4])
    )


# --- send paths

# The bytes each process delivered to sockets, by send path, and "other": socket writes without evidence
# of a path (protocol headers, requests; the sendpath probe's other and unresolved socket writes). The five
# add up to all it delivered to sockets (bytes_to_sockets in the JSON).
# "total" is what they add up to, the quantity the rows are ordered by unless the user sorts them otherwise.
SENDPATH_COLUMNS = (
    "pid",
    "command",
    "total",
    "read+write",
    "mmap+write",
    "sendfile",
    "splice",
    "other",
    "copies/B",
)


def not_a_path(row: SendPathRow) -> int | None:
    """Socket writes of no send path; None in a recording made before they were told apart."""
    if row.other_socket_write_bytes is None:
        return None
    return row.other_socket_write_bytes + (row.unresolved_socket_write_bytes or 0)


SENDPATH_TABLE_COLUMNS = columns_by_priority(
    SENDPATH_COLUMNS,
    {
        "pid": 0,
        "command": 0,
        "total": 2,
        "read+write": 1,
        "mmap+write": 1,
        "sendfile": 1,
        "splice": 1,
        "other": 2,
        "copies/B": 3,
    },
    left=("command",),
    command={"flexible": True, "min_width": 8, "overflow": "ellipsis"},
)
SENDPATH_ROWS = 6


def sendpaths_panel(
    snapshot: TopSnapshot,
    rows: Sequence[SendPathRow] | None = None,
    *,
    titled: bool = True,
    headers: Sequence[str] = SENDPATH_COLUMNS,
    filter_text: str = "",
    max_rows: int = SENDPATH_ROWS,
    short: bool = False,
    hidden_hint: str = WIDE_HINT,
) -> RenderableType:
    """The send-path table of `rows` (default: every process the probe saw, biggest total first), under
    `headers` (the dashboard marks the sorted column); `filter_text` says why rows may be missing. `short`:
    the source on one line that ends in "…" (a short screen; `?` help has it whole). `hidden_hint`: how to
    see the columns a narrow panel leaves out."""
    parts = _title("Send paths", titled)
    problem = probe_problem(snapshot, PROBE_SENDPATH)
    view = snapshot.sendpaths
    shown = sorted(view.processes, key=lambda row: -row.bytes_to_sockets) if rows is None else rows
    if problem is not None:
        parts.append(problem)
    elif not view.processes:
        parts.append(Text("no process sent bytes to a socket this interval"))
    elif not shown:
        parts.append(no_match_text(filter_text, len(view.processes), "process", "processes"))
    else:
        table_options = {"box": None, "pad_edge": False, "padding": (0, 1, 0, 0)}  # fits 80 columns
        marked = zip(SENDPATH_TABLE_COLUMNS, headers, strict=True)
        columns = [replace(column, title=header) for column, header in marked]
        table = PriorityTable(columns, table_options=table_options, hidden_hint=hidden_hint)
        for row in shown[:max_rows]:
            copies = row.cpu_copies_per_socket_byte
            table.add_row(
                str(row.pid),
                row.comm or NONE,
                interval_rate_text(row.bytes_to_sockets, view.interval_s),
                interval_rate_text(row.read_write_bytes, view.interval_s),
                interval_rate_text(row.mmap_write_bytes, view.interval_s),
                interval_rate_text(row.sendfile_bytes, view.interval_s),
                interval_rate_text(row.splice_bytes, view.interval_s),
                interval_rate_text(not_a_path(row), view.interval_s),
                NONE if copies is None else f"{copies:.2f}",
            )
        parts.append(table)
        if len(shown) > max_rows:
            parts.append(Text(f"+{len(shown) - max_rows} more (--format json lists all)", style="dim"))
    source = _source("sendpaths")
    if short:
        source.no_wrap, source.overflow = True, "ellipsis"
    parts.append(source)
    return Group(*parts)


# --- consumers

GROUP_COLUMNS = ("group", "queue", "committed", "lag msgs", "lag bytes", "at CommitLog offset")
KAFKA_GROUP_COLUMNS = (
    "group",
    "partition",
    "committed",
    "log end",
    "lag offsets",
    "lag bytes",
    "at log byte",
)
CONNECTED_COLUMNS = ("consumer", "path", "sent/s", "read at", "cold", "cached, read from")
# On a narrow terminal the segment's name gives way (ellipsis); the other cells keep their width.
_CONNECTED_MIN_WIDTHS = {"consumer": 15, "path": 10, "sent/s": 9, "read at": 11, "cold": 5}


def consumers_panel(snapshot: TopSnapshot, *, titled: bool = True) -> RenderableType:
    """Each group's committed position and lag, and the consumers connected this interval with their send
    path and the segments they read."""
    parts = _title("Consumers", titled)
    view = snapshot.consumers
    if view is None:
        return Group(*parts, unavailable_text("no store: consumer groups are read from its config/"))
    if view.groups:
        parts.append(_groups_table(view.groups, is_kafka(snapshot)))
    else:
        parts.append(unavailable_text(view.unavailable.get("groups")))
    if "offsets_file" in view.unavailable:
        parts.append(Text(view.unavailable["offsets_file"], style="yellow"))
    parts += _unavailable_notes(view.groups, ("lag_bytes", "lag_messages"))
    problem = probe_problem(snapshot, PROBE_SENDPATH)
    if problem is not None:
        parts.append(problem)
    elif view.connected:
        senders = dict.fromkeys(f"{row.pid} {row.comm or NONE}" for row in view.connected)
        parts.append(Text(f"connected consumers, sent by {', '.join(senders)} (sendpath probe):"))
        parts.append(_connected_table(view, snapshot.page_size_bytes))
        reasons = dict.fromkeys(
            f"{label}: {reason}"
            for row in view.connected
            for label, name in (("read at", "read_position_bytes"), ("cold", "cold_pages"))
            if (reason := row.unavailable.get(name))
        )
        parts += [unavailable_text(reason) for reason in list(reasons)[:2]]
    else:
        parts.append(Text("no consumer was sent store bytes this interval (sendpath probe)"))
    parts.append(_source("kafka_consumers" if is_kafka(snapshot) else "consumers"))
    return Group(*parts)


def _groups_table(rows: Sequence[GroupQueueView], kafka: bool = False) -> Table:
    table = Table(box=None, pad_edge=False, padding=(0, 1, 0, 0))
    for column in KAFKA_GROUP_COLUMNS if kafka else GROUP_COLUMNS:
        table.add_column(
            column, justify="left" if column in ("group", "queue", "partition") else "right", no_wrap=True
        )
    for row in rows:
        table.add_row(
            row.group,
            f"{row.topic}-{row.queue_id}" if kafka else f"{row.topic}/{row.queue_id}",
            count_text(row.committed_offset),
            *((count_text(row.max_offset),) if kafka else ()),
            count_text(row.lag_messages),
            bytes_text(row.lag_bytes),
            count_text(row.committed_physical_offset_bytes),
        )
    return table


PARTITION_COLUMNS = ("partition", "segments", "log start", "log end", "log size")


def partitions_panel(
    snapshot: TopSnapshot, *, titled: bool = True, max_rows: int | None = None
) -> RenderableType:
    """A Kafka log directory's partitions: their segments and offsets (the first `max_rows`, saying how many
    more there are)."""
    table = Table(box=None, pad_edge=False, padding=(0, 1, 0, 0))
    for column in PARTITION_COLUMNS:
        table.add_column(column, justify="left" if column == "partition" else "right", no_wrap=True)
    partitions = snapshot.store.partitions
    for partition in partitions[:max_rows]:
        table.add_row(
            partition.name,
            count_text(partition.segments),
            count_text(partition.log_start_offset),
            count_text(partition.log_end_offset),
            bytes_text(partition.log_size_bytes),
        )
    reasons = dict.fromkeys(
        f"{partition.name}: {reason}"
        for partition in snapshot.store.partitions
        for reason in partition.unavailable.values()
    )
    notes = [unavailable_text(reason) for reason in list(reasons)[:3]]
    if max_rows is not None and len(partitions) > max_rows:
        notes.insert(0, Text(f"+{len(partitions) - max_rows} more partitions", style="dim"))
    return Group(*_title("Partitions", titled), table, *notes, _source("partitions"))


def _unavailable_notes(rows: Sequence[GroupQueueView], names: Sequence[str]) -> list[Text]:
    """Why a lag cell reads "-", once per distinct reason."""
    reasons = dict.fromkeys(
        f"{row.group} on {row.topic}/{row.queue_id}: {reason}"
        for row in rows
        for name in names
        if (reason := row.unavailable.get(name))
    )
    return [unavailable_text(reason) for reason in list(reasons)[:3]]


def _connected_table(view: ConsumersView, page_size_bytes: int) -> Table:
    table = Table(box=None, pad_edge=False, padding=(0, 1, 0, 0))
    for column in CONNECTED_COLUMNS:
        table.add_column(
            column,
            justify="right" if column in ("sent/s", "read at", "cold") else "left",
            no_wrap=True,
            min_width=_CONNECTED_MIN_WIDTHS.get(column),
            overflow="ellipsis",
        )
    for row in view.connected[:6]:
        table.add_row(
            row.peer.rsplit(" → ", 1)[-1],  # the consumer's end; the broker's is the same for every row
            row.main_path or NONE,
            interval_rate_text(row.bytes_sent, view.interval_s),
            count_text(row.read_position_bytes),
            pages_text(row.cold_pages, page_size_bytes),
            _read_from(row),
        )
    return table


def _read_from(row: ConnectedConsumerView) -> str:
    """The cached share and the name of the segment it read most from: "100% commitlog/0000… +1 more"."""
    if not row.segments:
        return NONE
    cached = percent_text(row.segment_cached_pages[0], row.segment_pages[0])
    more = f" +{len(row.segments) - 1} more" if len(row.segments) > 1 else ""
    return f"{cached} {row.segments[0]}{more}"


# --- processes


def hit_cells(row: SegmentView | ProcessView) -> list[Text]:
    """The hits, misses and hit% cells (HIT_COLUMNS) of a segment or process row."""
    return [
        Text(count_text(row.hit_pages), justify="right"),
        Text(count_text(row.miss_pages), justify="right"),
        Text(hit_ratio_text(row.hit_ratio_percent), justify="right"),
    ]


def process_cells(process: ProcessView) -> list[Text]:
    """The cells of one process row, in PROCESS_COLUMNS order."""
    return [
        Text(str(process.pid), justify="right"),
        Text(process.comm or NONE),
        Text(process.found_by),
        Text(rate_text(process.minor_faults_per_s, ""), justify="right"),
        Text(rate_text(process.major_faults_per_s, ""), justify="right"),
        Text(byte_rate_text(process.tcp_received_bytes_per_s), justify="right"),
        Text(byte_rate_text(process.tcp_acked_bytes_per_s), justify="right"),
        Text(byte_rate_text(process.rchar_bytes_per_s), justify="right"),
        Text(byte_rate_text(process.wchar_bytes_per_s), justify="right"),
        Text(bytes_text(process.rss_bytes), justify="right"),
        Text(bytes_text(process.locked_bytes), justify="right"),
        *hit_cells(process),
    ]


def processes_table(snapshot: TopSnapshot, processes: Sequence[ProcessView] | None = None) -> RenderableType:
    rows = snapshot.processes if processes is None else processes
    if not rows:
        return Group(
            Text("Processes", style="bold"),
            unavailable_text(snapshot.unavailable.get("processes")),
            _source("processes"),
        )
    table = PriorityTable(
        PROCESS_TABLE_COLUMNS,
        table_options={
            "title": "Processes",
            "title_justify": "left",
            "title_style": "bold",
            "box": None,
            "pad_edge": False,
            "padding": (0, 1, 0, 0),
        },
    )
    for process in rows:
        table.add_row(*process_cells(process))
    notes = [_unavailable_fields(rows), _source("processes")]
    return Group(table, *(note for note in notes if note is not None))


def _unavailable_fields(rows: Sequence[ProcessView]) -> Text | None:
    reasons = {
        reason
        for row in rows
        for name, reason in row.unavailable.items()
        if name != "traced_faults" and reason != PAGECACHE_NOT_RUNNING  # the probes line says those
    }
    if not reasons:
        return None
    return Text("some fields unavailable: " + "; ".join(sorted(reasons)[:3]), style="yellow")


# --- drill-down


def detail_view(snapshot: TopSnapshot, segment: SegmentView | None, width: int = 64) -> RenderableType:
    """A segment's fine page map (cachestat per run of pages) and its fault and page-cache events."""
    detail = snapshot.detail
    if segment is None:
        return unavailable_text("the segment is no longer in the store")
    parts: list[RenderableType] = [
        Text(f"{segment.name}  {human_bytes(segment.size_bytes)}  {segment.path}", style="bold"),
        Text(
            f"cached {percent_text(segment.cached_pages, segment.pages)}  "
            f"dirty {pages_text(segment.dirty_pages, snapshot.page_size_bytes)}  "
            f"writeback {pages_text(segment.writeback_pages, snapshot.page_size_bytes)}  "
            f"locked {bytes_text(segment.locked_bytes)}  wrote {bytes_text(segment.wrote_position_bytes)}  "
            f"flushed {bytes_text(segment.flushed_position_bytes)}"
        ),
    ]
    parts.append(_page_map(detail, segment, width))
    parts.append(
        Text(
            f"this interval: faults {count_text(segment.faults)} (major {count_text(segment.major_faults)}), "
            f"entered cache {pages_text(segment.added_pages, snapshot.page_size_bytes)}, "
            f"left cache {pages_text(segment.deleted_pages, snapshot.page_size_bytes)}, "
            f"dirtied {pages_text(segment.dirtied_pages, snapshot.page_size_bytes)}, "
            f"written back {pages_text(segment.written_pages, snapshot.page_size_bytes)}, "
            f"read path: {count_text(segment.hit_pages)} pages hit, {count_text(segment.miss_pages)} missed "
            f"({hit_ratio_text(segment.hit_ratio_percent)})"
        )
    )
    parts.append(_range_table(segment))
    parts += [
        Text(f"{name}: {reason}", style="yellow") for name, reason in sorted(segment.unavailable.items())
    ]
    parts += [_source("segments"), _source("segment_events")]
    return Group(*parts)


def _page_map(detail: SegmentDetail | None, segment: SegmentView, width: int) -> RenderableType:
    if detail is None or detail.path != segment.path:
        return Text("page map: not in this frame yet (it is sampled from the next interval on)", style="dim")
    if detail.cells is None:
        return unavailable_text(detail.unavailable.get("cells"))
    cells = detail.cells.states()
    pages_per_cell = max((cells[0].end_page - cells[0].first_page) if cells else 1, 1)
    lines = [Text(f"page map: {len(cells)} cells of ~{pages_per_cell} pages ({detail.source})", style="bold")]
    for start in range(0, len(cells), width):
        row = Text(f"{cells[start].first_page:>9} ")
        for cell in cells[start : start + width]:
            glyph, style = chunk_cell(cell)
            row.append(glyph, style=style)
        lines.append(row)
    return Group(*lines)


def _range_table(segment: SegmentView) -> RenderableType:
    if not segment.page_ranges:
        return Text("no fault or page-cache events by page range this interval", style="dim")
    table = Table(title="events by page range", title_justify="left", box=None, pad_edge=False)
    for column in ("pages", "faults", "major", "entered", "left"):
        table.add_column(column, justify="right", no_wrap=True)
    for row in segment.page_ranges[:12]:
        table.add_row(
            f"{row.first_page}-{row.last_page}",
            count_text(row.faults),
            count_text(row.major_faults),
            count_text(row.added_pages),
            count_text(row.deleted_pages),
        )
    return table


# --- the whole dashboard


def top_view(snapshot: TopSnapshot) -> RenderableType:
    """Every panel of one snapshot, for `--once`, non-terminal output and --svg."""
    return Group(
        status_line(snapshot),
        probes_line(snapshot.probes),
        Text(""),
        *((partitions_panel(snapshot), Text("")) if snapshot.store.partitions else ()),
        segments_table(snapshot),
        Text(""),
        memory_panel(snapshot),
        Text(""),
        faults_panel(snapshot),
        Text(""),
        sendpaths_panel(snapshot),
        Text(""),
        *((consumers_panel(snapshot), Text("")) if snapshot.consumers is not None else ()),
        processes_table(snapshot),
    )
