"""`store segments`: one row per CommitLog, ConsumeQueue and index file of a RocketMQ store
(`SegmentListing`), reached through `store.inspection.formats`, which also gives the paths whose residency
the CLI measures."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from store import codec
from store.config import CQ_STORE_UNIT_SIZE
from store.consume_queue_format import (
    ConsumeQueueEntry,
    count_segment_entries,
    decode_entry,
    valid_prefix_length,
)
from store.errors import StoreError
from store.index_file import IndexFile
from store.inspection.log_format import vanishing_files_are_store_changes
from store.inspection.rocketmq.reading import (
    LogEndReason,
    ProblemView,
    after_whole_record,
    commitlog_min_offset,
    problem_views,
    queue_of_one,
    walk_commitlog,
)
from store.inspection.rocketmq.record_views import iso_time_ms, mtime_ms
from store.layout import (
    ConsumeQueueDir,
    SegmentFile,
    SegmentKind,
    SegmentQueue,
    StoreLayout,
    discover_store,
)
from store.safe_read import PreadFile


class WrittenMeasuredBy(StrEnum):
    TAIL_BLANK = "tail-blank"  # the last non-zero bytes are a blank that fills the segment: it is full
    RECORD_WALK = "record-walk"  # every record from the segment's start was walked (CRC not checked)
    # the walk started after the newest record a ConsumeQueue points at (found in this segment, CRC checked)
    WALK_AFTER_DISPATCHED = "walk-after-dispatched"


class EntriesMeasuredBy(StrEnum):
    ENTRY_WALK = "entry-walk"  # every entry from the file's start read, up to the first invalid one
    # a queue's earlier file whose first and last entries are valid (the first not a pre-blank): full, so its
    # entry count is its number of slots; the entries between are not read (`store verify` reads them all)
    FULL_FILE_ENDS = "full-file-ends"


@dataclass(frozen=True, kw_only=True)
class SegmentRow:
    """One file of the store. Columns that do not apply to a kind are None, so a new column is one more
    field (with a None default) and one more renderer column."""

    kind: SegmentKind
    name: str
    path: Path
    topic: str | None = None
    queue_id: int | None = None
    start_offset_bytes: int | None = None  # what the name encodes: a byte offset in the log or queue stream
    first_queue_offset: int | None = None
    size_bytes: int
    mtime_ms: int
    mtime_iso: str | None
    written_bytes: int | None = None  # commitlog: position where its records end
    full: bool | None = None  # commitlog: ends with the END_OF_FILE blank
    blank_position: int | None = None  # commitlog: position of that blank in the file
    end_reason: LogEndReason | None = None
    written_measured_by: WrittenMeasuredBy | None = None
    entry_count: int | None = None  # consume queue: valid entries; index: entries in use
    entries_measured_by: EntriesMeasuredBy | None = None  # consume queue: how entry_count was found
    problem: str | None = None


@dataclass(frozen=True, kw_only=True)
class SegmentListing:
    schema: str = "mqinspect.store.segments/v1"
    root: Path
    commitlog_segment_size_bytes: int | None
    rows: tuple[SegmentRow, ...]
    layout_problems: tuple[ProblemView, ...]
    # Page-cache residency of each file, added by the CLI from probes.residency.segments (SegmentsResidency):
    # this library never measures the page cache itself.
    residency: Any = None


@vanishing_files_are_store_changes
def list_segments(root: Path) -> SegmentListing:
    """One row per CommitLog, ConsumeQueue and index file. Works on a store that breaks the load rules too
    (that is when one wants the listing most); the broken rules are listed with it.

    A CommitLog segment's written bytes come from a blank found at its tail when it is full (a few small
    reads), else from walking its records: from the segment's start, or, when the newest record a
    ConsumeQueue points at lies in it and decodes with its CRC, from that record's end (the undispatched
    tail only, as `store stat` does).
    """
    layout = discover_store(Path(root))
    commitlog = layout.commitlog
    valid_entries: dict[Path, int] = {}
    queue_rows = []
    for cq in layout.consume_queues:
        last = cq.queue.segments[-1] if cq.queue.segments else None
        queue_rows += [
            _consume_queue_row(cq, segment, valid_entries, is_last=segment is last)
            for segment in cq.queue.segments
        ]
    dispatched = _newest_dispatched_in(layout, valid_entries)
    rows = [_commitlog_row(commitlog, segment, dispatched) for segment in commitlog.segments]
    rows += queue_rows
    rows += [_index_row(path) for path in layout.index_files]
    return SegmentListing(
        root=layout.root,
        commitlog_segment_size_bytes=commitlog.file_size,
        rows=tuple(rows),
        layout_problems=problem_views(layout, include_commitlog=True),
    )


def _file_columns(segment: SegmentFile) -> dict:
    return {
        "name": segment.path.name,
        "path": segment.path,
        "start_offset_bytes": segment.file_from_offset,
        "size_bytes": segment.size_bytes,
        "mtime_ms": mtime_ms(segment.mtime_s),
        "mtime_iso": iso_time_ms(mtime_ms(segment.mtime_s)),
    }


def _commitlog_row(
    queue: SegmentQueue, segment: SegmentFile, dispatched: tuple[int, int] | None
) -> SegmentRow:
    columns = _file_columns(segment)
    if segment.size_bytes < codec.END_FILE_MIN_BLANK_LENGTH:
        return SegmentRow(kind=SegmentKind.COMMITLOG, **columns, written_bytes=0, problem="empty file")
    # Measured against the file's own size: in a store that breaks the size rule this file may differ.
    own_queue = dataclasses.replace(queue_of_one(queue, segment), file_size=segment.size_bytes)
    is_last = segment is queue.segments[-1]
    blank_at = None if is_last else _tail_blank_position(segment)
    if blank_at is not None:
        return SegmentRow(
            kind=SegmentKind.COMMITLOG,
            **columns,
            written_bytes=blank_at,
            full=True,
            blank_position=blank_at,
            end_reason=LogEndReason.BLANK,
            written_measured_by=WrittenMeasuredBy.TAIL_BLANK,
        )
    resume = after_whole_record(own_queue, dispatched) if dispatched else None
    from_dispatched = resume is not None and resume > segment.file_from_offset
    end = walk_commitlog(
        own_queue, resume if from_dispatched else segment.file_from_offset, check_crc=False
    ).end
    position = end.physical_offset - segment.file_from_offset
    full = end.reason is LogEndReason.BLANK
    return SegmentRow(
        kind=SegmentKind.COMMITLOG,
        **columns,
        written_bytes=position,
        full=full,
        blank_position=position if full else None,
        end_reason=end.reason,
        written_measured_by=(
            WrittenMeasuredBy.WALK_AFTER_DISPATCHED if from_dispatched else WrittenMeasuredBy.RECORD_WALK
        ),
        problem=end.detail,
    )


def _newest_dispatched_in(layout: StoreLayout, valid_entries: dict[Path, int]) -> tuple[int, int] | None:
    """(physical offset, size) of the newest record any ConsumeQueue's last entry points at (at or after
    the CommitLog's first offset), each queue's files as long as their rows counted them (`valid_entries`:
    no file is counted twice); None when none does, or when the queues cannot be read as a loadable
    store's."""
    newest = None
    try:
        log_min = commitlog_min_offset(layout)
        for cq in layout.consume_queues:
            entry = _last_entry(cq.queue, valid_entries)
            if entry is None or not entry.names_a_record or entry.physical_offset < log_min:
                continue
            if newest is None or entry.physical_offset + entry.size_bytes > sum(newest):
                newest = (entry.physical_offset, entry.size_bytes)
    except (StoreError, OSError):
        return None
    return newest


def _last_entry(queue: SegmentQueue, valid_entries: dict[Path, int]) -> ConsumeQueueEntry | None:
    """The last valid entry of the newest file that has one."""
    for segment in reversed(queue.segments):
        valid = valid_entries[segment.path]
        if valid:
            with PreadFile(segment.path) as file:
                data = file.read((valid - 1) * CQ_STORE_UNIT_SIZE, CQ_STORE_UNIT_SIZE)
            return decode_entry(data) if len(data) == CQ_STORE_UNIT_SIZE else None
    return None


def _tail_blank_position(segment: SegmentFile) -> int | None:
    """Position of a blank that ends the segment's data and claims exactly the rest of the file, or None.

    The blank's 8 bytes are the last non-zero bytes of a full segment (only they are written), so this is
    found from the end, skipping holes, without reading the records before it.
    """
    with PreadFile(segment.path) as file:
        end = file.end_of_nonzero_data()
        candidate = end - codec.END_FILE_MIN_BLANK_LENGTH
        if candidate < 0:
            return None
        head = file.read(candidate, codec.END_FILE_MIN_BLANK_LENGTH)
    if len(head) < codec.END_FILE_MIN_BLANK_LENGTH:
        return None
    total, magic = codec.peek_total_size_and_magic(head)
    return candidate if magic == codec.BLANK_MAGIC_CODE and candidate + total == segment.size_bytes else None


def _consume_queue_row(
    cq: ConsumeQueueDir, segment: SegmentFile, valid_entries: dict[Path, int], *, is_last: bool
) -> SegmentRow:
    """A queue's last file (the one being written) has its valid entries counted; an earlier file that is
    full by its two ends counts its slots without reading the rest, so the listing costs the same at any
    queue length. The valid entries (pre-blanks included) go into `valid_entries` by path."""
    slots = segment.size_bytes // CQ_STORE_UNIT_SIZE
    if not is_last and _full_by_its_ends(segment, slots):
        entries, measured_by = slots, EntriesMeasuredBy.FULL_FILE_ENDS
        valid_entries[segment.path] = slots
    else:
        counted = count_segment_entries(segment)
        entries, measured_by = counted.records, EntriesMeasuredBy.ENTRY_WALK
        valid_entries[segment.path] = counted.valid
    return SegmentRow(
        kind=SegmentKind.CONSUMEQUEUE,
        topic=cq.topic,
        queue_id=cq.queue_id,
        first_queue_offset=segment.file_from_offset // CQ_STORE_UNIT_SIZE,
        entry_count=entries,
        entries_measured_by=measured_by,
        **_file_columns(segment),
    )


def _full_by_its_ends(segment: SegmentFile, slots: int) -> bool:
    """Whether the file's first entry names a record (valid, not a pre-blank) and its last slot is valid."""
    if not slots:
        return False
    with PreadFile(segment.path) as file:
        first = file.read(0, CQ_STORE_UNIT_SIZE)
        last = file.read((slots - 1) * CQ_STORE_UNIT_SIZE, CQ_STORE_UNIT_SIZE)
    if len(first) < CQ_STORE_UNIT_SIZE or len(last) < CQ_STORE_UNIT_SIZE:
        return False  # shorter than its size says: truncated under us
    return decode_entry(first).names_a_record and valid_prefix_length(last) == 1


def _index_row(path: Path) -> SegmentRow:
    stat = path.stat()
    entries, problem = None, None
    try:
        with IndexFile.open(path) as index_file:
            entries = index_file.header.entry_count
    except StoreError as error:
        problem = str(error)
    return SegmentRow(
        kind=SegmentKind.INDEX,
        name=path.name,
        path=path,
        size_bytes=stat.st_size,
        mtime_ms=mtime_ms(stat.st_mtime),
        mtime_iso=iso_time_ms(mtime_ms(stat.st_mtime)),
        entry_count=entries,
        problem=problem,
    )
