"""Tables for the store inspection snapshots (`mqinspect store ...`).

Renderers only draw the snapshots `store.inspection` produced; they never read a file. Every value from a
store (topics, keys, bodies) goes into a `Text`, so square brackets in it are not taken for Rich markup.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from mqinspect.render.cells import (
    HEAT_LEGEND,
    NONE,
    UNAVAILABLE,
    bytes_text,
    heat_strip,
    pages_text,
    percent_text,
)
from mqinspect.render.layout import LAST, Column, PriorityTable, columns_by_priority
from mqinspect.render.words import counted
from store.inspection.rocketmq.cq import ConsumeQueueView
from store.inspection.rocketmq.query import QueryBy, QueryResult
from store.inspection.rocketmq.reading import LogEnd, ProblemView
from store.inspection.rocketmq.record_views import BlankView, RecordView
from store.inspection.rocketmq.segments import EntriesMeasuredBy, SegmentListing, SegmentRow
from store.inspection.rocketmq.store_stat import StoreStat
from store.inspection.rocketmq.verify import VerifyReport
from store.layout import SegmentKind

# A text column (a file, a topic) folds to this width before a number column is dropped.
FLEXIBLE_MIN_WIDTH = 20


def _text(value: Any, none: str = NONE) -> Text:
    return Text(none if value is None else str(value))


def _time(timestamp_ms: int | None, iso: str | None) -> Text:
    if timestamp_ms is None:
        return Text(UNAVAILABLE)
    if timestamp_ms <= 0:
        return Text(f"{timestamp_ms} (never)")
    return Text(f"{timestamp_ms} ({iso or 'not a calendar time'})")


def log_end_text(end: LogEnd) -> str:
    """ "end of log at 282: zeros", with the reason a corrupt record gave."""
    detail = f" ({end.detail})" if end.detail else ""
    return f"end of log at {end.physical_offset}: {end.reason.value}{detail}"


def _key_value_table(title: str, rows: list[tuple[str, Any]]) -> Table:
    table = Table(title=title, title_justify="left", show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for name, value in rows:
        table.add_row(name, value if isinstance(value, Text) else _text(value))
    return table


def _problems_table(problems: tuple[ProblemView, ...]) -> Table:
    table = Table(title="layout problems", title_justify="left")
    table.add_column("file", overflow="fold")
    table.add_column("problem", overflow="fold")
    table.add_column("RocketMQ refuses to load")
    for problem in problems:
        table.add_row(_text(problem.path), _text(problem.reason), "yes" if problem.fatal else "no")
    return table


# --- stat -------------------------------------------------------------------------------------------------


def stat_view(stat: StoreStat) -> RenderableType:
    parts: list[RenderableType] = [_stat_summary(stat), _queues_table(stat), _checkpoint_table(stat)]
    if stat.layout_problems:
        parts.append(_problems_table(stat.layout_problems))
    return Group(*parts)


def _stat_summary(stat: StoreStat) -> Table:
    log, run, index, dispatch = stat.commitlog, stat.run_state, stat.index, stat.dispatch
    size = f" x {log.segment_size_bytes} B" if log.segment_size_bytes else ""
    lock = (
        f"held by pid {run.lock_holder_pid}" if run.lock_holder_pid else ("held" if run.lock_held else "free")
    )
    abort = "absent"
    if run.abort_file_present:
        alive = {True: ", alive", False: ", not running", None: ""}[run.abort_file_pid_alive]
        abort = f"present (pid {run.abort_file_pid}{alive})" if run.abort_file_pid else "present"
    dispatched = dispatch.consume_queue_max_physical_offset
    rows = [
        ("store", stat.root),
        ("state", f"{run.state.value} (lock {lock}, abort file {abort})"),
        ("commitlog segments", f"{log.segment_count}{size} = {log.total_size_bytes} B"),
        ("first / last segment", f"{log.first_segment or NONE} / {log.last_segment or NONE}"),
        ("min / max offset", f"{log.min_physical_offset} / {log.max_physical_offset}"),
        ("log end", log_end_text(log.end)),
        ("topics / queues", f"{stat.topic_count} / {stat.queue_count}"),
        (
            "dispatch",
            f"consume queues reach {NONE if dispatched is None else dispatched}, "
            f"{dispatch.dispatch_behind_bytes} B behind the log",
        ),
        ("index", f"{counted(index.file_count, 'file')}, {counted(index.entry_count, 'entry')}"),
        ("config files", ", ".join(stat.config_files) or NONE),
    ]
    rows += [("unreadable index file", problem) for problem in index.unreadable]
    return _key_value_table("store", rows)


QUEUE_COLUMNS = columns_by_priority(
    ("topic", "queue", "files", "min offset", "max offset", "messages", "dispatched to"),
    {"topic": 0, "queue": 0, "messages": 1, "max offset": 2, "min offset": 3, "dispatched to": 4, "files": 5},
    left=("topic",),
    topic={"flexible": True, "min_width": FLEXIBLE_MIN_WIDTH},
)


def _queues_table(stat: StoreStat) -> PriorityTable:
    table = PriorityTable(QUEUE_COLUMNS, table_options={"title": "consume queues", "title_justify": "left"})
    for queue in stat.consume_queues:
        table.add_row(
            _text(queue.topic),
            _text(queue.queue_id),
            _text(queue.segment_count),
            _text(queue.min_queue_offset),
            _text(queue.max_queue_offset),
            _text(queue.message_count),
            _text(queue.dispatched_to_physical_offset),
        )
    return table


def _checkpoint_table(stat: StoreStat) -> Table:
    checkpoint = stat.checkpoint
    if checkpoint is None:
        return _key_value_table("checkpoint", [("problem", stat.checkpoint_problem)])
    return _key_value_table(
        f"checkpoint ({checkpoint.file_size_bytes} B)",
        [
            ("physicMsgTimestamp", _time(checkpoint.physic_msg_timestamp_ms, checkpoint.physic_msg_time_iso)),
            ("logicsMsgTimestamp", _time(checkpoint.logics_msg_timestamp_ms, checkpoint.logics_msg_time_iso)),
            ("indexMsgTimestamp", _time(checkpoint.index_msg_timestamp_ms, checkpoint.index_msg_time_iso)),
            ("masterFlushedOffset", _text(checkpoint.master_flushed_offset, UNAVAILABLE)),
            ("confirmPhyOffset", _text(checkpoint.confirm_phy_offset, UNAVAILABLE)),
            (
                "recovery starts from",
                _time(checkpoint.recovery_from_timestamp_ms, checkpoint.recovery_from_time_iso),
            ),
        ],
    )


# --- segments ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Column:
    header: str
    cell: Callable[[SegmentRow], Any]
    justify: str = "left"
    priority: int = LAST  # render.layout: 0 always drawn, higher dropped first on a narrow terminal
    flexible: bool = False  # text that may fold to FLEXIBLE_MIN_WIDTH

    @property
    def layout(self) -> Column:
        return Column(self.header, self.priority, self.justify, self.flexible, FLEXIBLE_MIN_WIDTH)


def _segment_file(row: SegmentRow) -> str:
    if row.kind is SegmentKind.CONSUMEQUEUE:
        return f"{row.topic}/{row.queue_id}/{row.name}"
    return row.name


def _written(row: SegmentRow) -> str | None:
    if row.kind is not SegmentKind.COMMITLOG:
        return None
    if row.full:
        return f"full (blank at {row.blank_position})"
    if row.written_bytes is None:
        return None
    reason = row.end_reason.value if row.end_reason else ""
    return f"{row.written_bytes} ({reason})" if reason and reason != "zeros" else str(row.written_bytes)


# A later column (residency, say) is one more entry here and one more field in SegmentRow.
SEGMENT_COLUMNS = (
    _Column("kind", lambda row: row.kind.value, priority=0),
    _Column("file", _segment_file, priority=0, flexible=True),
    _Column("start offset", lambda row: row.start_offset_bytes, "right", priority=4),
    _Column("size (B)", lambda row: row.size_bytes, "right", priority=7),
    _Column("written (B)", _written, "right", priority=3),
    _Column("entries", lambda row: row.entry_count, "right", priority=5),
    _Column("modified (UTC)", lambda row: row.mtime_iso and row.mtime_iso[:19].replace("T", " "), priority=8),
    _Column("problem", lambda row: row.problem, priority=1, flexible=True),
)
RESIDENCY_PRIORITIES = {"cached": 1, "dirty": 2, "heat": 2, "locked": 6}


def segments_table(listing: SegmentListing) -> RenderableType:
    size = listing.commitlog_segment_size_bytes
    residency = residency_by_path(listing)
    columns = [column.layout for column in SEGMENT_COLUMNS]
    if residency is not None:
        columns += columns_by_priority(RESIDENCY_HEADERS, RESIDENCY_PRIORITIES, left=("heat",))
    table = PriorityTable(
        columns,
        table_options={
            "title": f"segments of {listing.root} (commitlog segment size {size if size else NONE} B)",
            "title_justify": "left",
        },
    )
    for row in listing.rows:
        cells = [_text(column.cell(row)) for column in SEGMENT_COLUMNS]
        if residency is not None:
            cells += residency_cells(residency.get(str(row.path)), listing.residency.page_size_bytes)
        table.add_row(*cells)
    captions = [residency_caption(listing.residency)] if residency is not None else []
    if any(row.entries_measured_by is EntriesMeasuredBy.FULL_FILE_ENDS for row in listing.rows):
        captions.append(FULL_FILE_ENTRIES_NOTE)
    if captions:
        table.table_options["caption"] = "\n".join(captions)
    if listing.layout_problems:
        return Group(table, _problems_table(listing.layout_problems))
    return table


RESIDENCY_HEADERS = ("cached", "dirty", "locked", "heat")
FULL_FILE_ENTRIES_NOTE = (
    "entries: each queue's last file counted entry by entry; an earlier file whose first and last entries "
    "are valid is full and counts its slots (store verify reads every entry)"
)


def residency_by_path(listing: SegmentListing) -> dict | None:
    if listing.residency is None:
        return None
    return {segment.path: segment for segment in listing.residency.segments}


def residency_cells(segment, page_size: int) -> list[Text]:
    if segment is None or segment.pages is None:
        return [Text(UNAVAILABLE, style="yellow")] * 3 + [Text("")]
    cached = percent_text(segment.cached_pages, segment.pages)
    dirty = pages_text(segment.dirty_pages, page_size)
    locked = bytes_text(segment.locked_bytes)
    return [Text(cached), Text(dirty), Text(locked), heat_strip(segment.chunks)]


def residency_caption(residency) -> str:
    notes = sorted({note for segment in residency.segments for note in segment.notes.values()})
    sources = sorted({segment.source for segment in residency.segments if segment.source})
    lines = [
        f"cached/dirty: {', '.join(sources) or UNAVAILABLE} (cached: share of the file's pages, floored); "
        "locked: /proc/PID/smaps (mappings with VmFlags lo) over "
        f"{residency.locked_processes_scanned} processes",
        HEAT_LEGEND,
        *notes,
    ]
    return "\n".join(lines)


# --- records (dump, query) --------------------------------------------------------------------------------


def record_card(record: RecordView) -> Table:
    """A message's every field, one per row: `query`'s form, and `dump --verbose`'s."""
    properties = ", ".join(f"{name}={value}" for name, value in record.properties.items())
    rows: list[tuple[str, Any]] = [
        ("topic / queue", f"{record.topic} / {record.queue_id}"),
        ("queue offset", record.queue_offset),
        ("store time", _time(record.store_timestamp_ms, record.store_time_iso)),
        ("born time", _time(record.born_timestamp_ms, record.born_time_iso)),
        ("store / born host", f"{record.store_host} / {record.born_host}"),
        ("sysflag / flag", f"0x{record.sysflag:x} / {record.flag}"),
        ("tags", record.tags),
        ("keys", record.keys),
        ("properties", properties or NONE),
        ("body", _body_summary(record)),
        ("offsetMsgId", record.offset_msg_id),
    ]
    if record.body is not None:
        encoding, content = next(iter(record.body.items()))
        rows.append((f"body ({encoding})", content))
    return _key_value_table(f"message @ {record.physical_offset} ({record.size_bytes} B)", rows)


def _body_summary(record: RecordView) -> str:
    compressed = ", compressed" if record.body_compressed else ""
    return f"{record.body_size_bytes} B, CRC {record.body_crc}{compressed}"


def blank_line(blank: BlankView) -> Text:
    """ "blank @ OFFSET: N B of filler to the end of SEGMENT; the log goes on at NEXT"."""
    return Text(
        f"blank @ {blank.physical_offset}: {blank.size_bytes} B of filler to the end of "
        f"{blank.segment.name if blank.segment else 'the segment'}; the log goes on at "
        f"{blank.next_physical_offset}"
    )


def query_view(result: QueryResult) -> RenderableType:
    parts: list[RenderableType] = [Text(_query_headline(result))]
    parts += [Text(f"note: {note}") for note in result.notes]
    parts += [
        Text(f"unreadable hit @ {hit.physical_offset}: {hit.problem}") for hit in result.unreadable_hits
    ]
    parts += [record_card(record) for record in result.hits]
    return Group(*parts)


def _query_headline(result: QueryResult) -> str:
    if result.by is QueryBy.KEY:
        topics = ", ".join(result.topics_searched)
        return (
            f"key {result.key!r} in {topics}: {counted(len(result.hits), 'hit')} "
            f"({counted(result.index_hits, 'index hit')}, "
            f"{counted(result.hash_collisions_filtered, 'hash collision')} filtered out, "
            f"{len(result.unreadable_hits)} unreadable)"
        )
    if result.by is QueryBy.MSG_ID:
        return f"message id {result.msg_id} (store host {result.msg_id_store_host})"
    return "message at the given offset"


# --- verify -----------------------------------------------------------------------------------------------


def verify_view(report: VerifyReport) -> RenderableType:
    counts = report.counts
    hidden = sum(report.findings_not_shown.values())
    total = len(report.findings) + hidden
    verdict = Text(
        "OK: no problems found" if report.ok else f"{counted(total, 'problem')} found", style="bold"
    )
    index_scope = (
        f"{counts.index_entries_checked} of {counts.index_entries} (an even sample, limit "
        f"{report.index_check_limit})"
        if report.index_sampled
        else f"{counts.index_entries_checked} of {counts.index_entries}"
    )
    checked = _key_value_table(
        f"checked {report.root}",
        [
            (
                "commitlog",
                ", ".join(
                    [
                        counted(counts.commitlog_segments, "segment"),
                        counted(counts.commitlog_records, "record"),
                        counted(counts.commitlog_blanks, "blank"),
                        f"{counts.commitlog_bytes_walked} B walked (CRC checked)",
                    ]
                ),
            ),
            ("log", f"min offset {report.min_physical_offset}, {log_end_text(report.end)}"),
            (
                "consume queues",
                f"{counted(counts.consume_queues, 'queue')}, "
                f"{counts.consume_queue_entries_checked} entries checked, "
                f"{counts.consume_queue_entries_below_min_offset} below the min offset (expired); "
                f"{counted(counts.records_checked_through_queues, 'record')} reached through them",
            ),
            (
                "index",
                f"{counted(counts.index_files, 'file')}, entries checked {index_scope}, "
                f"{counts.index_entries_below_min_offset} below the min offset (expired); "
                f"{counted(counts.keyed_records_checked_through_index, 'keyed record')} found by key",
            ),
            ("checkpoint", "checked" if counts.checkpoint_checked else "missing"),
        ]
        + (
            [
                (
                    "not dispatched yet",
                    f"{counted(counts.records_not_yet_dispatched, 'record')} (the store is running)",
                )
            ]
            if counts.records_not_yet_dispatched
            else []
        ),
    )
    parts: list[RenderableType] = [verdict, checked]
    if report.findings:
        parts.append(_findings_table(report))
    if hidden:
        more = ", ".join(f"{check}: {count}" for check, count in sorted(report.findings_not_shown.items()))
        parts.append(Text(f"... and {hidden} more not shown ({more}); --format json has the same limit"))
    return Group(*parts)


def _findings_table(report: VerifyReport) -> Table:
    table = Table(title="findings", title_justify="left")
    table.add_column("check", no_wrap=True)
    table.add_column("file", overflow="fold")
    table.add_column("offset", justify="right")
    table.add_column("problem", overflow="fold")
    for finding in report.findings:
        offset = NONE if finding.offset is None else f"{finding.offset_kind.value} {finding.offset}"
        if finding.count > 1:
            offset += f" (+{finding.count - 1})"
        table.add_row(_text(finding.check.value), _text(finding.file), _text(offset), _text(finding.message))
    return table


# --- cq ---------------------------------------------------------------------------------------------------


CONSUME_QUEUE_COLUMNS = columns_by_priority(
    ("queue offset", "physical offset", "size (B)", "tags code"),
    {"queue offset": 0, "physical offset": 0, "size (B)": 1, "tags code": 2},
)


def consume_queue_table(view: ConsumeQueueView) -> PriorityTable:
    offsets = f"offsets {view.min_offset}..{view.max_offset}"
    table = PriorityTable(
        CONSUME_QUEUE_COLUMNS,
        table_options={
            "title": f"consume queue {view.topic}/{view.queue_id}: {offsets} (max is the next offset to be "
            "written)",
            "title_justify": "left",
        },
    )
    for entry in view.entries:
        table.add_row(
            str(entry.queue_offset), str(entry.physical_offset), str(entry.size_bytes), str(entry.tags_code)
        )
    return table
