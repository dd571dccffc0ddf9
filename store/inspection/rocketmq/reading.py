"""Reading a RocketMQ store's CommitLog read-only: opening a store (held to RocketMQ's load rules) or one
segment file, walking records to the end of the log and saying why it ends there, and reading the record at
any physical offset.

Everything opens files with pread only (through store.safe_read and store.commitlog_scan, never mmap), so a
file that shrinks ends a read early and never raises SIGBUS.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from store import codec
from store.commitlog_scan import (
    ChainedRecords,
    ScanFailure,
    ScannedRecord,
    SegmentEnd,
    SegmentEndReason,
    scan_commitlog,
)
from store.errors import CorruptRecord, StoreError, StoreLayoutError
from store.layout import (
    LayoutProblem,
    SegmentFile,
    SegmentQueue,
    StoreLayout,
    discover_store,
    file_name_to_offset,
)
from store.safe_read import PreadFile

# The nearest record start to a bad offset is found by walking its segment from the start; beyond this
# distance that walk costs more than the answer is worth.
NEAREST_RECORD_SEARCH_LIMIT_BYTES = 64 << 20
# One pread this long covers most records whole, so a random record read usually costs one syscall.
FIRST_READ_BYTES = 4096


class NoRecordAt(StoreError):
    """No message record starts at the physical offset asked for."""


def open_layout(root: Path) -> StoreLayout:
    """The store's files, with the CommitLog held to RocketMQ's load rules."""
    layout = discover_store(Path(root))
    layout.commitlog.require_valid()
    return layout


def loadable_commitlog(layout: StoreLayout) -> SegmentQueue:
    """The CommitLog as RocketMQ loads it: without a zero-length last file (which it deletes)."""
    queue = layout.commitlog
    return dataclasses.replace(queue, segments=queue.loadable_segments)


def single_segment_queue(path: Path) -> SegmentQueue:
    """One CommitLog segment file as a queue of its own: the start offset from its name, the segment size
    from the file (a scaled-down store's segments are not 1 GiB)."""
    path = Path(path)
    if len(path.parts) >= 4 and path.parts[-4] == "consumequeue":
        raise StoreLayoutError(f"{path}: not a CommitLog segment (use `store cq` for ConsumeQueue files)")
    start = file_name_to_offset(path.name)
    stat = path.stat()
    if stat.st_size < codec.END_FILE_MIN_BLANK_LENGTH:
        raise StoreLayoutError(f"{path}: {stat.st_size} bytes, too short to be a CommitLog segment")
    segment = SegmentFile(path, start, stat.st_size, stat.st_mtime)
    return SegmentQueue(path.parent, (segment,), stat.st_size)


def commitlog_of(target: Path) -> SegmentQueue:
    """A store directory's CommitLog, or a single segment file's."""
    target = Path(target)
    if target.is_file():
        return single_segment_queue(target)
    return loadable_commitlog(open_layout(target))


def queue_of_one(queue: SegmentQueue, segment: SegmentFile) -> SegmentQueue:
    """`queue` cut down to one of its segments, so that a walk stops at that segment's end."""
    return dataclasses.replace(queue, segments=(segment,), problems=())


def commitlog_min_offset(layout: StoreLayout) -> int:
    """The CommitLog's first offset as RocketMQ loads it: entries below it point at deleted segments."""
    segments = layout.commitlog.loadable_segments
    return segments[0].file_from_offset if segments else 0


@dataclass(frozen=True)
class ProblemView:
    """A file that breaks one of RocketMQ's load rules, as the stat and segments snapshots list it."""

    path: Path
    reason: str
    fatal: bool


def layout_problems(layout: StoreLayout, *, include_commitlog: bool) -> list[LayoutProblem]:
    """Every load-rule problem of the store: the CommitLog's (if asked), each ConsumeQueue's, the rest."""
    problems = list(layout.commitlog.problems) if include_commitlog else []
    for cq in layout.consume_queues:
        problems += cq.queue.problems
    return problems + list(layout.problems)


def problem_views(layout: StoreLayout, *, include_commitlog: bool) -> tuple[ProblemView, ...]:
    """`layout_problems` as snapshot rows."""
    return tuple(
        ProblemView(problem.path, problem.reason, problem.fatal)
        for problem in layout_problems(layout, include_commitlog=include_commitlog)
    )


class LogEndReason(StrEnum):
    ZEROS = "zeros"  # nothing written after the last record: the clean end
    BLANK = "blank"  # the last segment ends with its END_OF_FILE blank: the next record opens a new segment
    FILE_END = "file-end"  # fewer than 8 bytes left in the last segment
    SHRUNK = "shrunk"  # the segment became shorter while we read it (its owner truncated it)
    CORRUPT = "corrupt"  # a record that does not decode: recovery would truncate the log here
    NO_SEGMENTS = "no-segments"


@dataclass(frozen=True)
class LogEnd:
    """Where and why a walk of the CommitLog stopped."""

    physical_offset: int
    reason: LogEndReason
    segment: Path | None
    detail: str | None = None


def log_end_of(event: SegmentEnd | ScanFailure) -> LogEnd:
    """The LogEnd a scan's last event says: a segment's end, or the record that failed to decode."""
    if isinstance(event, ScanFailure):
        error = event.error
        detail = f"{error.reason} (field {error.field})" if error.field else error.reason
        return LogEnd(
            event.physical_offset, LogEndReason.CORRUPT, Path(error.path) if error.path else None, detail
        )
    return LogEnd(event.physical_offset, LogEndReason(event.reason.value), event.segment)


@dataclass(frozen=True)
class Walk:
    """What walking the CommitLog from some offset found."""

    records: int
    blanks: tuple[SegmentEnd, ...]
    end: LogEnd
    last_record: tuple[int, int] | None = None  # (physical offset, size) of the last record walked


def walk_commitlog(
    queue: SegmentQueue,
    start: int,
    *,
    check_crc: bool,
    on_record: Callable[[ScannedRecord], None] | None = None,
    headers_only: bool = False,
    window_bytes: int | None = None,
) -> Walk:
    """Walk the records from `start` to the end of the log (see scan_commitlog for the options), calling
    `on_record` with each record decoded; the count, the blanks met and where and why the walk ended."""
    records, blanks, end, last = 0, [], None, None
    events = scan_commitlog(
        queue, start, check_crc=check_crc, headers_only=headers_only, window_bytes=window_bytes
    )
    for event in events:
        if isinstance(event, ScannedRecord):
            records += 1
            last = (event.physical_offset, event.record.total_size)
            if on_record:
                on_record(event)
        elif isinstance(event, ChainedRecords):
            records += event.count
            last = (event.last_offset, event.last_size)
        elif isinstance(event, SegmentEnd) and event.reason is SegmentEndReason.BLANK:
            blanks.append(event)
            end = event
        else:
            end = event
    log_end = LogEnd(start, LogEndReason.NO_SEGMENTS, None) if end is None else log_end_of(end)
    return Walk(records, tuple(blanks), log_end, last)


def _segment_has_records(segment: SegmentFile) -> bool:
    """Whether a record (or blank) starts the segment: its first 8 bytes are not all zero. A segment whose
    start is a hole (preallocated sparse) is not read, so its first page is not brought into the cache."""
    with PreadFile(segment.path) as file:
        if file.data_end(0) == 0:
            return False
        return any(file.read(0, codec.END_FILE_MIN_BLANK_LENGTH))


@dataclass(frozen=True)
class LogTail:
    """Where the CommitLog ends, and the last record before that end: a later search resumes after it."""

    end: LogEnd
    last_record: tuple[int, int] | None  # (physical offset, size) of that record; None if none was walked


def find_log_end(queue: SegmentQueue, dispatched: tuple[int, int] | None = None) -> LogEnd:
    """The end of the last valid record (CRC checked, as recovery does): RocketMQ's max offset.

    The walk starts at the last segment that holds anything, so a segment preallocated ahead of the log
    (all zeros) does not hide the end in the segment before it. It costs one full read of that segment,
    unless `dispatched` gives (physical offset, size) of the newest record a ConsumeQueue points at: when
    that record decodes with its CRC, the walk starts right after it and reads only the undispatched tail.
    (A corrupt record before it is then not seen: `verify` reads everything.)
    """
    return find_log_tail(queue, (dispatched,) if dispatched else ()).end


def find_log_tail(
    queue: SegmentQueue,
    known_records: Sequence[tuple[int, int]] = (),
    *,
    headers_only: bool = False,
    window_bytes: int | None = None,
) -> LogTail:
    """`find_log_end`, resuming after the furthest of `known_records` ((physical offset, size) pairs: a
    ConsumeQueue's newest entry, the `last_record` of an earlier search) that is still a whole record of that
    size with a valid CRC. A caller that follows a live log passes the previous LogTail's last_record, so
    each search reads only what was appended since.

    `headers_only` follows the records' TOTALSIZE chain without decoding them (CRCs are then not checked
    past the resumed record): the end of what the writer appended, at a cost a dashboard can pay every
    second on a busy broker. `window_bytes` caps each read (see `scan_commitlog`).
    """
    if not queue.segments:
        return LogTail(LogEnd(0, LogEndReason.NO_SEGMENTS, None), None)
    start = next(
        (segment for segment in reversed(queue.segments) if _segment_has_records(segment)), queue.segments[0]
    )
    begin, last = start.file_from_offset, None
    for known in sorted(known_records, reverse=True):
        if known[0] + known[1] <= start.file_from_offset:
            break
        resume = after_whole_record(queue, known)
        if resume is not None:
            begin, last = resume, known
            break
    walk = walk_commitlog(queue, begin, check_crc=True, headers_only=headers_only, window_bytes=window_bytes)
    return LogTail(walk.end, walk.last_record or last)


def position_in_segment(segment: SegmentFile, log_end_offset: int) -> int:
    """How far `log_end_offset` (a log's end, in the stream's bytes) reaches into `segment`: the segment's
    size when the log goes on past it (RocketMQ's wrote position of a full file), 0 when the log ends before
    it (a segment preallocated ahead of the writer)."""
    return min(max(log_end_offset - segment.file_from_offset, 0), segment.size_bytes)


def after_whole_record(queue: SegmentQueue, record_place: tuple[int, int]) -> int | None:
    """Where the record at `record_place` (physical offset, size) ends, if it is a whole, valid record of
    that size (CRC checked); else None."""
    offset, size = record_place
    with RecordReader(queue) as reader:
        try:
            record = reader.record_at(offset, check_crc=True, size_hint=size)
        except (StoreError, OSError):
            return None
    if not isinstance(record, codec.MessageRecord) or record.total_size != size:
        return None
    return offset + size


class RecordReader:
    """Records at arbitrary physical offsets, read with pread; one descriptor per segment touched."""

    def __init__(self, queue: SegmentQueue):
        self.queue = queue
        self._starts = [segment.file_from_offset for segment in queue.segments]
        self._files: dict[Path, PreadFile] = {}

    def segment_for(self, offset: int) -> SegmentFile | None:
        at = bisect.bisect_right(self._starts, offset) - 1
        if at < 0:
            return None
        segment = self.queue.segments[at]
        size = self.queue.file_size or segment.size_bytes
        return segment if offset < segment.file_from_offset + size else None

    def record_at(
        self, offset: int, *, check_crc: bool = False, size_hint: int = 0
    ) -> codec.MessageRecord | codec.BlankRecord:
        """The record starting at `offset`. NoRecordAt when no segment holds it; CorruptRecord (naming the
        file and offset) when what is there does not decode, UnwrittenSpace when it is zeros."""
        segment = self.segment_for(offset)
        if segment is None:
            raise NoRecordAt(f"offset {offset} is in no CommitLog segment{self.coverage_text()}")
        position = offset - segment.file_from_offset
        left = (self.queue.file_size or segment.size_bytes) - position
        file = self._file(segment)
        data = file.read(position, min(left, max(size_hint, FIRST_READ_BYTES)))
        if len(data) >= codec.END_FILE_MIN_BLANK_LENGTH:
            total, magic = codec.peek_total_size_and_magic(data)
            if magic == codec.BLANK_MAGIC_CODE:
                # Only the blank's 8 bytes are written; the rest of the file is whatever was there.
                return codec.BlankRecord(total)
            if len(data) < total <= min(left, codec.DEFAULT_MAX_RECORD_SIZE):
                data = file.read(position, total)
        return codec.decode_record(
            data, 0, path=str(segment.path), base_offset=offset, check_crc=check_crc, read_body=True
        )

    def coverage_text(self) -> str:
        if not self.queue.segments:
            return " (the CommitLog has no segments)"
        first = self.queue.segments[0].file_from_offset
        last = self.queue.segments[-1].file_from_offset + (self.queue.file_size or 0)
        return f" (segments cover {first}..{last})"

    def _file(self, segment: SegmentFile) -> PreadFile:
        file = self._files.get(segment.path)
        if file is None:
            file = self._files[segment.path] = PreadFile(segment.path)
        return file

    def close(self) -> None:
        for file in self._files.values():
            file.close()
        self._files.clear()

    def __enter__(self) -> RecordReader:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def require_record_start(reader: RecordReader, offset: int) -> None:
    """Accept `offset` if a record or blank decodes there, or if walking its segment lands on it (a corrupt
    record, or the end of the log); otherwise NoRecordAt naming the nearest record starts."""
    segment = reader.segment_for(offset)
    if segment is None:
        raise NoRecordAt(f"offset {offset} is in no CommitLog segment{reader.coverage_text()}")
    try:
        reader.record_at(offset)
        return
    except CorruptRecord:
        pass
    reached = offset - segment.file_from_offset
    if reached > NEAREST_RECORD_SEARCH_LIMIT_BYTES:
        raise NoRecordAt(
            f"offset {offset} is not a record start ({segment.path.name}); the nearest one was not searched "
            f"for: it is {reached} bytes into its segment, beyond the {NEAREST_RECORD_SEARCH_LIMIT_BYTES}-"
            "byte search limit"
        )
    before, after, log_end = _record_starts_around(reader.queue, segment, offset)
    if after == offset:
        return
    if after is None:
        raise NoRecordAt(
            f"offset {offset} is past the end of the log at {log_end} ({segment.path.name}): "
            "no record starts there"
        )
    nearest = " and ".join(str(start) for start in (before, after) if start is not None)
    raise NoRecordAt(f"offset {offset} is not a record start; the nearest record starts: {nearest}")


def _record_starts_around(
    queue: SegmentQueue, segment: SegmentFile, offset: int
) -> tuple[int | None, int | None, int]:
    """Walking `segment` from its start: the last record start before `offset`, the first boundary (record,
    blank or end of the walk) at or after it (None if the walk ended before it), and where the walk ended."""
    before, walked_to = None, segment.file_from_offset
    for event in scan_commitlog(queue_of_one(queue, segment), segment.file_from_offset, check_crc=False):
        walked_to = event.physical_offset
        if walked_to >= offset:
            return before, walked_to, walked_to
        if not isinstance(event, ScannedRecord):
            break
        before = walked_to
    return before, None, walked_to
