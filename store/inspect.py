"""Read-only inspection of any RocketMQ-format store: the snapshots behind `mqinspect store ...`.

Everything here opens files with pread only (never mmap) and never writes, so it is safe on a store that a
broker is writing, rolling or truncating at the same moment: a file that shrinks ends a read early, a file
that vanishes raises `StoreChanged`, and neither can raise SIGBUS. Every public function returns a frozen
dataclass snapshot; the CLI renders it and reads nothing itself.

Offsets: a *physical offset* is a byte position in the whole CommitLog (what segment names encode), a
*queue offset* is an entry number in a ConsumeQueue, a *position* is a byte position inside one file.
Times are epoch milliseconds (`*_ms`) with a UTC ISO-8601 twin (`*_iso`); 0 means "never" to RocketMQ, so
a timestamp <= 0 has no ISO time.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import math
import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any, ParamSpec, TypeVar

from store import codec
from store.checkpoint import (
    StoreRunState,
    abort_file_state,
    probe_store_lock,
    read_checkpoint,
    store_run_state,
)
from store.commitlog_scan import (
    ChainedRecords,
    ScanFailure,
    ScannedRecord,
    SegmentEnd,
    SegmentEndReason,
    scan_commitlog,
)
from store.config import CQ_STORE_UNIT_SIZE
from store.consume_queue_format import (
    ConsumeQueueEntry,
    QueueEntryReader,
    enters_consume_queue,
    entry_matches,
    expected_tags_code,
    iter_entries,
    iter_segment_entries,
    queue_bounds,
    recovered_queue_end,
)
from store.errors import CorruptRecord, StoreError, StoreLayoutError
from store.index_file import IndexFile, IndexService, index_keys
from store.java_checksums import index_key_hash, masked_crc32
from store.layout import (
    ConsumeQueueDir,
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
# verify keeps this many findings per check; the rest are only counted, so a log cut short early does not
# print one line per ConsumeQueue entry after the cut.
FINDINGS_SHOWN_PER_CHECK = 50
DEFAULT_INDEX_CHECKS = 100_000
LATEST_TIME_MS = 2**63 - 1

P = ParamSpec("P")
R = TypeVar("R")


# ==========================================================================================================
# Errors (all StoreError: the CLI reports them as bad input, exit 2)
# ==========================================================================================================


class UnknownQueue(StoreError):
    """The store has no consume queue for the topic and queue asked for."""


class NoRecordAt(StoreError):
    """No message record starts at the physical offset asked for."""


class BadMessageId(StoreError):
    """A message id that is not an offsetMsgId (32 or 56 hex digits)."""


class NoTopicToSearch(StoreError):
    """A key query without --topic on a store whose consume queues name no topic."""


class StoreChanged(StoreError):
    """A file vanished between listing the store and reading it: its owner deleted, rolled or replaced it."""


def _vanishing_files_are_store_changes(function: Callable[P, R]) -> Callable[P, R]:
    """Turn "No such file" for a file we listed a moment ago into StoreChanged: on a live store that is
    retention or a roll, not a user error, and running again sees the new state."""

    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return function(*args, **kwargs)
        except FileNotFoundError as error:
            raise StoreChanged(
                f"{error.filename}: vanished while being read (the store changed; run again)"
            ) from error

    return wrapper


# ==========================================================================================================
# Small conversions shared by the snapshots
# ==========================================================================================================


def iso_time_ms(timestamp_ms: int | None) -> str | None:
    """UTC ISO-8601 with milliseconds; None for None, 0 or negative (RocketMQ's "never") and for values no
    calendar can show (a damaged field must not crash a listing)."""
    if timestamp_ms is None or timestamp_ms <= 0:
        return None
    try:
        moment = datetime.fromtimestamp(timestamp_ms // 1000, tz=UTC) + timedelta(
            milliseconds=timestamp_ms % 1000
        )
    except (OverflowError, OSError, ValueError):
        return None
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _mtime_ms(mtime_s: float) -> int:
    return int(mtime_s * 1000)


def host_text(host: codec.HostAddress) -> str:
    """ip:port, with IPv6 addresses in brackets."""
    return f"[{host.host}]:{host.port}" if ":" in host.host else f"{host.host}:{host.port}"


def body_text(body: bytes | memoryview) -> Mapping[str, str]:
    """A body for JSON and tables: {"utf8": text} when it is valid UTF-8, else {"hex": lowercase hex}."""
    raw = bytes(body)
    try:
        return MappingProxyType({"utf8": raw.decode("utf-8")})
    except UnicodeDecodeError:
        return MappingProxyType({"hex": raw.hex()})


# ==========================================================================================================
# Opening a store, or one CommitLog segment
# ==========================================================================================================


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


def _commitlog_of(target: Path) -> SegmentQueue:
    """A store directory's CommitLog, or a single segment file's."""
    target = Path(target)
    if target.is_file():
        return single_segment_queue(target)
    return loadable_commitlog(open_layout(target))


def _only(queue: SegmentQueue, segment: SegmentFile) -> SegmentQueue:
    return dataclasses.replace(queue, segments=(segment,), problems=())


# ==========================================================================================================
# Reading records: by walking, and at random offsets
# ==========================================================================================================


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


def _log_end(event: SegmentEnd | ScanFailure) -> LogEnd:
    if isinstance(event, ScanFailure):
        error = event.error
        detail = f"{error.reason} (field {error.field})" if error.field else error.reason
        return LogEnd(
            event.physical_offset, LogEndReason.CORRUPT, Path(error.path) if error.path else None, detail
        )
    return LogEnd(event.physical_offset, LogEndReason(event.reason.value), event.segment)


@dataclass(frozen=True)
class _Walk:
    """What walking the CommitLog from some offset found."""

    records: int
    blanks: tuple[SegmentEnd, ...]
    end: LogEnd
    last_record: tuple[int, int] | None = None  # (physical offset, size) of the last record walked


def _walk(
    queue: SegmentQueue,
    start: int,
    *,
    check_crc: bool,
    on_record: Callable[[ScannedRecord], None] | None = None,
    headers_only: bool = False,
    window_bytes: int | None = None,
) -> _Walk:
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
    log_end = LogEnd(start, LogEndReason.NO_SEGMENTS, None) if end is None else _log_end(end)
    return _Walk(records, tuple(blanks), log_end, last)


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
        resume = _after_whole_record(queue, known)
        if resume is not None:
            begin, last = resume, known
            break
    walk = _walk(queue, begin, check_crc=True, headers_only=headers_only, window_bytes=window_bytes)
    return LogTail(walk.end, walk.last_record or last)


def position_in_segment(segment: SegmentFile, log_end_offset: int) -> int:
    """How far `log_end_offset` (a log's end, in the stream's bytes) reaches into `segment`: the segment's
    size when the log goes on past it (RocketMQ's wrote position of a full file), 0 when the log ends before
    it (a segment preallocated ahead of the writer)."""
    return min(max(log_end_offset - segment.file_from_offset, 0), segment.size_bytes)


def _after_whole_record(queue: SegmentQueue, record_place: tuple[int, int]) -> int | None:
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


def _require_record_start(reader: RecordReader, offset: int) -> None:
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
    for event in scan_commitlog(_only(queue, segment), segment.file_from_offset, check_crc=False):
        walked_to = event.physical_offset
        if walked_to >= offset:
            return before, walked_to, walked_to
        if not isinstance(event, ScannedRecord):
            break
        before = walked_to
    return before, None, walked_to


# ==========================================================================================================
# Record snapshots
# ==========================================================================================================


@dataclass(frozen=True, kw_only=True)
class RecordView:
    """One CommitLog message as `dump` and `query` show it. `body` is None unless asked for."""

    kind: str = "message"
    physical_offset: int
    size_bytes: int
    segment: Path | None
    topic: str
    queue_id: int
    queue_offset: int
    store_timestamp_ms: int
    store_time_iso: str | None
    born_timestamp_ms: int
    born_time_iso: str | None
    born_host: str
    store_host: str
    sysflag: int
    flag: int
    reconsume_times: int
    prepared_transaction_offset: int
    message_version: int
    tags: str | None
    keys: str | None
    properties: Mapping[str, str]
    body_crc: int
    body_size_bytes: int
    body_compressed: bool
    offset_msg_id: str | None
    body: Mapping[str, str] | None = None


@dataclass(frozen=True, kw_only=True)
class BlankView:
    """The END_OF_FILE blank: the rest of its segment is filler; the log goes on at `next_physical_offset`."""

    kind: str = "blank"
    physical_offset: int
    size_bytes: int
    segment: Path | None
    next_physical_offset: int


def record_view(
    physical_offset: int, record: codec.MessageRecord, segment: Path | None, *, include_body: bool
) -> RecordView:
    body = b"" if record.body is None else record.body
    return RecordView(
        physical_offset=physical_offset,
        size_bytes=record.total_size,
        segment=segment,
        topic=record.topic,
        queue_id=record.queue_id,
        queue_offset=record.queue_offset,
        store_timestamp_ms=record.store_timestamp_ms,
        store_time_iso=iso_time_ms(record.store_timestamp_ms),
        born_timestamp_ms=record.born_timestamp_ms,
        born_time_iso=iso_time_ms(record.born_timestamp_ms),
        born_host=host_text(record.born_host),
        store_host=host_text(record.store_host),
        sysflag=record.sysflag,
        flag=record.flag,
        reconsume_times=record.reconsume_times,
        prepared_transaction_offset=record.prepared_transaction_offset,
        message_version=int(record.version),
        tags=record.tags,
        keys=record.keys,
        properties=MappingProxyType(dict(record.properties)),
        body_crc=record.body_crc,
        body_size_bytes=len(body),
        body_compressed=bool(record.sysflag & codec.COMPRESSED_FLAG),
        offset_msg_id=_offset_msg_id(record.store_host, physical_offset),
        body=body_text(body) if include_body else None,
    )


def _offset_msg_id(store_host: codec.HostAddress, physical_offset: int) -> str | None:
    """None when the store host's port does not fit the id: BODYCRC covers only the body, so a damaged
    header field can pass every check."""
    try:
        return codec.offset_msg_id(store_host, physical_offset)
    except ValueError:
        return None


def _blank_view(blank: SegmentEnd) -> BlankView:
    size = blank.blank_bytes or 0
    return BlankView(
        physical_offset=blank.physical_offset,
        size_bytes=size,
        segment=blank.segment,
        next_physical_offset=blank.physical_offset + size,
    )


# ==========================================================================================================
# stat
# ==========================================================================================================


@dataclass(frozen=True, kw_only=True)
class CommitLogSummary:
    segment_count: int
    segment_size_bytes: int | None
    total_size_bytes: int
    first_segment: str | None
    last_segment: str | None
    min_physical_offset: int
    max_physical_offset: int  # end of the last valid record (CRC checked)
    end: LogEnd


@dataclass(frozen=True)
class QueueSummary:
    topic: str
    queue_id: int
    segment_count: int
    min_queue_offset: int
    max_queue_offset: int  # the next queue offset to be written
    message_count: int
    dispatched_to_physical_offset: int | None  # offset + size of the last entry


@dataclass(frozen=True)
class CheckpointSummary:
    path: Path
    file_size_bytes: int
    physic_msg_timestamp_ms: int
    physic_msg_time_iso: str | None
    logics_msg_timestamp_ms: int
    logics_msg_time_iso: str | None
    index_msg_timestamp_ms: int
    index_msg_time_iso: str | None
    master_flushed_offset: int | None  # None: the file ends before the field (written before 5.0.0)
    confirm_phy_offset: int | None  # None: the file ends before the field (written before 5.1.1)
    recovery_from_timestamp_ms: int  # StoreCheckpoint.getMinTimestamp: min(physic, logics) - 3 s
    recovery_from_time_iso: str | None


@dataclass(frozen=True)
class RunStateSummary:
    state: StoreRunState
    lock_held: bool
    lock_holder_pid: int | None
    abort_file_present: bool
    abort_file_pid: int | None
    abort_file_pid_alive: bool | None


@dataclass(frozen=True)
class IndexSummary:
    file_count: int
    entry_count: int
    unreadable: tuple[str, ...]


@dataclass(frozen=True)
class DispatchSummary:
    commitlog_max_physical_offset: int
    consume_queue_max_physical_offset: int | None  # None: no consume queue has an entry
    dispatch_behind_bytes: int  # negative: consume queues point past the end of the log


@dataclass(frozen=True)
class ProblemView:
    path: Path
    reason: str
    fatal: bool


@dataclass(frozen=True, kw_only=True)
class StoreStat:
    schema: str = "mqinspect.store.stat/v1"
    root: Path
    commitlog: CommitLogSummary
    topic_count: int
    queue_count: int
    consume_queues: tuple[QueueSummary, ...]
    checkpoint: CheckpointSummary | None
    checkpoint_problem: str | None
    run_state: RunStateSummary
    index: IndexSummary
    config_files: tuple[str, ...]
    dispatch: DispatchSummary
    layout_problems: tuple[ProblemView, ...]


@_vanishing_files_are_store_changes
def store_stat(root: Path) -> StoreStat:
    """Everything about a store at a glance. Costs one full read of the last written CommitLog segment."""
    layout = open_layout(root)
    queues = tuple(_queue_summary(cq, _commitlog_min_offset(layout)) for cq in layout.consume_queues)
    commitlog = _commitlog_summary(loadable_commitlog(layout), _newest_dispatched_record(layout, queues))
    checkpoint, checkpoint_problem = _checkpoint_summary(layout)
    return StoreStat(
        root=layout.root,
        commitlog=commitlog,
        topic_count=len(layout.topics),
        queue_count=len(queues),
        consume_queues=queues,
        checkpoint=checkpoint,
        checkpoint_problem=checkpoint_problem,
        run_state=_run_state_summary(layout.root),
        index=_index_summary(layout),
        config_files=_config_files(layout),
        dispatch=_dispatch_summary(commitlog, queues),
        layout_problems=_problem_views(layout, include_commitlog=True),
    )


def _commitlog_summary(queue: SegmentQueue, dispatched: tuple[int, int] | None) -> CommitLogSummary:
    segments = queue.segments
    end = find_log_end(queue, dispatched)
    return CommitLogSummary(
        segment_count=len(segments),
        segment_size_bytes=queue.file_size,
        total_size_bytes=sum(segment.size_bytes for segment in segments),
        first_segment=segments[0].path.name if segments else None,
        last_segment=segments[-1].path.name if segments else None,
        min_physical_offset=segments[0].file_from_offset if segments else 0,
        max_physical_offset=end.physical_offset,
        end=end,
    )


def _queue_summary(cq: ConsumeQueueDir, commitlog_min_offset: int) -> QueueSummary:
    minimum, maximum = queue_bounds(cq.queue, commitlog_min_offset)
    last = next(iter_entries(cq.queue, maximum - 1), None) if maximum > minimum else None
    return QueueSummary(
        topic=cq.topic,
        queue_id=cq.queue_id,
        segment_count=len(cq.queue.segments),
        min_queue_offset=minimum,
        max_queue_offset=maximum,
        message_count=maximum - minimum,
        dispatched_to_physical_offset=last.physical_offset + last.size_bytes if last else None,
    )


def _newest_dispatched_record(layout: StoreLayout, queues: Sequence[QueueSummary]) -> tuple[int, int] | None:
    """(physical offset, size) of the newest record any ConsumeQueue points at."""
    newest = max(
        (queue for queue in queues if queue.dispatched_to_physical_offset is not None),
        key=lambda queue: queue.dispatched_to_physical_offset,
        default=None,
    )
    if newest is None:
        return None
    cq = layout.consume_queue(newest.topic, newest.queue_id)
    entry = next(iter_entries(cq.queue, newest.max_queue_offset - 1), None) if cq else None
    return (entry.physical_offset, entry.size_bytes) if entry else None


def _checkpoint_summary(layout: StoreLayout) -> tuple[CheckpointSummary | None, str | None]:
    if layout.checkpoint is None:
        return None, f"{layout.root / 'checkpoint'}: missing"
    try:
        values = read_checkpoint(layout.checkpoint)
    except CorruptRecord as error:
        return None, str(error)
    return (
        CheckpointSummary(
            path=layout.checkpoint,
            file_size_bytes=values.file_size,
            physic_msg_timestamp_ms=values.physic_msg_timestamp,
            physic_msg_time_iso=iso_time_ms(values.physic_msg_timestamp),
            logics_msg_timestamp_ms=values.logics_msg_timestamp,
            logics_msg_time_iso=iso_time_ms(values.logics_msg_timestamp),
            index_msg_timestamp_ms=values.index_msg_timestamp,
            index_msg_time_iso=iso_time_ms(values.index_msg_timestamp),
            master_flushed_offset=values.master_flushed_offset,
            confirm_phy_offset=values.confirm_phy_offset,
            recovery_from_timestamp_ms=values.min_timestamp(),
            recovery_from_time_iso=iso_time_ms(values.min_timestamp()),
        ),
        None,
    )


def _run_state_summary(root: Path) -> RunStateSummary:
    lock = probe_store_lock(root)
    abort = abort_file_state(root)
    return RunStateSummary(
        state=store_run_state(root),
        lock_held=lock.locked,
        lock_holder_pid=lock.holder_pid,
        abort_file_present=abort.present,
        abort_file_pid=abort.pid,
        abort_file_pid_alive=abort.pid_alive,
    )


def _index_summary(layout: StoreLayout) -> IndexSummary:
    entries, unreadable = 0, []
    for path in layout.index_files:
        try:
            with IndexFile.open(path) as index_file:
                entries += index_file.header.entry_count
        except StoreError as error:
            unreadable.append(str(error))
    return IndexSummary(len(layout.index_files), entries, tuple(unreadable))


def _config_files(layout: StoreLayout) -> tuple[str, ...]:
    if layout.config_dir is None:
        return ()
    with os.scandir(layout.config_dir) as listing:
        return tuple(sorted(entry.name for entry in listing if entry.is_file()))


def _dispatch_summary(commitlog: CommitLogSummary, queues: tuple[QueueSummary, ...]) -> DispatchSummary:
    ends = [q.dispatched_to_physical_offset for q in queues if q.dispatched_to_physical_offset is not None]
    dispatched = max(ends) if ends else None
    # With no entry at all, nothing of the log has been dispatched yet.
    behind_from = dispatched if dispatched is not None else commitlog.min_physical_offset
    return DispatchSummary(
        commitlog_max_physical_offset=commitlog.max_physical_offset,
        consume_queue_max_physical_offset=dispatched,
        dispatch_behind_bytes=commitlog.max_physical_offset - behind_from,
    )


def _layout_problems(layout: StoreLayout, *, include_commitlog: bool) -> list[LayoutProblem]:
    problems = list(layout.commitlog.problems) if include_commitlog else []
    for cq in layout.consume_queues:
        problems += cq.queue.problems
    return problems + list(layout.problems)


def _problem_views(layout: StoreLayout, *, include_commitlog: bool) -> tuple[ProblemView, ...]:
    return tuple(
        ProblemView(problem.path, problem.reason, problem.fatal)
        for problem in _layout_problems(layout, include_commitlog=include_commitlog)
    )


# ==========================================================================================================
# segments
# ==========================================================================================================


class SegmentKind(StrEnum):
    COMMITLOG = "commitlog"
    CONSUMEQUEUE = "consumequeue"
    INDEX = "index"


class WrittenMeasuredBy(StrEnum):
    TAIL_BLANK = "tail-blank"  # the last non-zero bytes are a blank that fills the segment: it is full
    RECORD_WALK = "record-walk"  # every record from the segment's start was walked (CRC not checked)
    # the walk started after the newest record a ConsumeQueue points at (found in this segment, CRC checked)
    WALK_AFTER_DISPATCHED = "walk-after-dispatched"


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


def store_file_paths(root: Path) -> tuple[Path, ...]:
    """The files `list_segments` lists, known from names and sizes alone (nothing is read)."""
    return discover_store(Path(root)).segment_paths


@_vanishing_files_are_store_changes
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
    dispatched = _newest_dispatched_in(layout)
    rows = [_commitlog_row(commitlog, segment, dispatched) for segment in commitlog.segments]
    for cq in layout.consume_queues:
        rows += [_consume_queue_row(cq, segment) for segment in cq.queue.segments]
    rows += [_index_row(path) for path in layout.index_files]
    return SegmentListing(
        root=layout.root,
        commitlog_segment_size_bytes=commitlog.file_size,
        rows=tuple(rows),
        layout_problems=_problem_views(layout, include_commitlog=True),
    )


def _file_columns(segment: SegmentFile) -> dict:
    return {
        "name": segment.path.name,
        "path": segment.path,
        "start_offset_bytes": segment.file_from_offset,
        "size_bytes": segment.size_bytes,
        "mtime_ms": _mtime_ms(segment.mtime_s),
        "mtime_iso": iso_time_ms(_mtime_ms(segment.mtime_s)),
    }


def _commitlog_row(
    queue: SegmentQueue, segment: SegmentFile, dispatched: tuple[int, int] | None
) -> SegmentRow:
    columns = _file_columns(segment)
    if segment.size_bytes < codec.END_FILE_MIN_BLANK_LENGTH:
        return SegmentRow(kind=SegmentKind.COMMITLOG, **columns, written_bytes=0, problem="empty file")
    # Measured against the file's own size: in a store that breaks the size rule this file may differ.
    own_queue = dataclasses.replace(_only(queue, segment), file_size=segment.size_bytes)
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
    resume = _after_whole_record(own_queue, dispatched) if dispatched else None
    from_dispatched = resume is not None and resume > segment.file_from_offset
    end = _walk(own_queue, resume if from_dispatched else segment.file_from_offset, check_crc=False).end
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


def _newest_dispatched_in(layout: StoreLayout) -> tuple[int, int] | None:
    """(physical offset, size) of the newest record any ConsumeQueue points at; None when none does, or
    when the queues cannot be read as a loadable store's."""
    try:
        queues = [_queue_summary(cq, _commitlog_min_offset(layout)) for cq in layout.consume_queues]
        return _newest_dispatched_record(layout, queues)
    except (StoreError, OSError):
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


def _consume_queue_row(cq: ConsumeQueueDir, segment: SegmentFile) -> SegmentRow:
    entries = sum(1 for entry in iter_segment_entries(segment) if not entry.is_pre_blank)
    return SegmentRow(
        kind=SegmentKind.CONSUMEQUEUE,
        topic=cq.topic,
        queue_id=cq.queue_id,
        first_queue_offset=segment.file_from_offset // CQ_STORE_UNIT_SIZE,
        entry_count=entries,
        **_file_columns(segment),
    )


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
        mtime_ms=_mtime_ms(stat.st_mtime),
        mtime_iso=iso_time_ms(_mtime_ms(stat.st_mtime)),
        entry_count=entries,
        problem=problem,
    )


# ==========================================================================================================
# dump
# ==========================================================================================================


@dataclass(frozen=True, kw_only=True)
class CommitLogDump:
    schema: str = "mqinspect.store.dump/v1"
    source: Path
    from_physical_offset: int
    crc_checked: bool
    count_limit: int
    message_count: int
    events: tuple[RecordView | BlankView, ...]
    end: LogEnd | None  # None: stopped at count_limit before the end
    next_physical_offset: int | None  # where to continue (--from) when stopped at count_limit


@_vanishing_files_are_store_changes
def dump_records(
    target: Path, from_offset: int | None, count: int, *, include_body: bool, check_crc: bool
) -> CommitLogDump:
    """Records of a store (or of one segment file) from a physical offset: messages, the blanks that end
    segments, and why the walk ended. `from_offset` must be a record start (or the end of the log); by
    default it is the CommitLog's min offset."""
    queue = _commitlog_of(target)
    if from_offset is not None:
        start = from_offset
    else:
        start = queue.segments[0].file_from_offset if queue.segments else 0
    events: list[RecordView | BlankView] = []
    messages, end, next_offset = 0, None, None
    with RecordReader(queue) as reader:
        if queue.segments:
            _require_record_start(reader, start)
        for event in scan_commitlog(queue, start, check_crc=check_crc):
            if isinstance(event, ScannedRecord):
                if messages == count:
                    next_offset = event.physical_offset
                    break
                messages += 1
                segment = reader.segment_for(event.physical_offset)
                events.append(
                    record_view(event.physical_offset, event.record, segment and segment.path,
                                include_body=include_body)
                )  # fmt: skip
            elif isinstance(event, SegmentEnd) and event.reason is SegmentEndReason.BLANK:
                events.append(_blank_view(event))
            if not isinstance(event, ScannedRecord):
                end = _log_end(event)  # a blank is the end only if no segment follows it
    if next_offset is not None:
        end = None
    elif end is None:
        end = LogEnd(start, LogEndReason.NO_SEGMENTS, None)
    return CommitLogDump(
        source=Path(target),
        from_physical_offset=start,
        crc_checked=check_crc,
        count_limit=count,
        message_count=messages,
        events=tuple(events),
        end=end,
        next_physical_offset=next_offset,
    )


def _segment_path(queue: SegmentQueue, offset: int) -> Path | None:
    at = bisect.bisect_right([s.file_from_offset for s in queue.segments], offset) - 1
    return queue.segments[at].path if at >= 0 else None


def _position_in_segment(event: SegmentEnd) -> int:
    """Where in its file an event lies; from the file's name, which holds even when a misplaced segment
    breaks the "start is a multiple of the size" rule."""
    return event.physical_offset - file_name_to_offset(event.segment.name)


# ==========================================================================================================
# verify
# ==========================================================================================================


class Check(StrEnum):
    LAYOUT = "layout"
    COMMITLOG_RECORD = "commitlog-record"
    COMMITLOG_PHYSICAL_OFFSET = "commitlog-physical-offset"
    COMMITLOG_BLANK = "commitlog-blank"
    DATA_AFTER_END = "data-after-end"
    CQ_ENTRY = "cq-entry"
    CQ_BEYOND_LOG = "cq-beyond-log"
    CQ_UNREACHABLE = "cq-unreachable"  # a record its ConsumeQueue does not lead to
    INDEX_FILE = "index-file"
    INDEX_ENTRY = "index-entry"
    INDEX_BEYOND_LOG = "index-beyond-log"
    INDEX_UNREACHABLE = "index-unreachable"  # a key of a record that a query through the index does not find
    CHECKPOINT = "checkpoint"


class OffsetKind(StrEnum):
    PHYSICAL_OFFSET = "physical_offset"  # byte offset in the whole CommitLog
    FILE_POSITION = "file_position"  # byte offset inside `file`
    QUEUE_OFFSET = "queue_offset"  # entry number in the consume queue
    INDEX_ENTRY = "index_entry"  # entry number in the index file


@dataclass(frozen=True)
class Finding:
    check: Check
    file: Path | None
    offset: int | None  # the first one, when `count` > 1
    offset_kind: OffsetKind | None
    message: str
    count: int = 1  # entries this finding stands for (entries past the end of the log are reported together)


@dataclass(frozen=True)
class VerifyCounts:
    commitlog_segments: int
    commitlog_records: int
    commitlog_blanks: int
    commitlog_bytes_walked: int
    consume_queues: int
    consume_queue_entries_checked: int
    consume_queue_entries_below_min_offset: int  # their CommitLog segment was deleted by retention: fine
    index_files: int
    index_entries: int
    index_entries_checked: int
    index_entries_below_min_offset: int
    checkpoint_checked: bool
    records_checked_through_queues: int  # records looked up through their ConsumeQueue entry
    keyed_records_checked_through_index: int  # records whose every key was looked up through the index
    records_not_yet_dispatched: int  # a running store's tail its broker has not dispatched yet: not checked


@dataclass(frozen=True, kw_only=True)
class VerifyReport:
    schema: str = "mqinspect.store.verify/v1"
    root: Path
    ok: bool
    min_physical_offset: int
    max_physical_offset: int
    end: LogEnd
    counts: VerifyCounts
    index_check_limit: int | None  # None: every index entry was checked
    index_sampled: bool  # True: only every Nth entry was checked, to stay within the limit
    findings: tuple[Finding, ...]
    findings_not_shown: Mapping[str, int]  # per check, beyond FINDINGS_SHOWN_PER_CHECK


class _Findings:
    def __init__(self, shown_per_check: int = FINDINGS_SHOWN_PER_CHECK):
        self.shown: list[Finding] = []
        self.not_shown: Counter[str] = Counter()
        self._per_check: Counter[str] = Counter()
        self._limit = shown_per_check

    def add(
        self,
        check: Check,
        message: str,
        file: Path | None = None,
        offset: int | None = None,
        offset_kind: OffsetKind | None = None,
        count: int = 1,
    ) -> None:
        self._per_check[check] += 1
        if self._per_check[check] > self._limit:
            self.not_shown[check.value] += 1
        else:
            self.shown.append(Finding(check, file, offset, offset_kind, message, count))

    @property
    def count(self) -> int:
        return len(self.shown) + sum(self.not_shown.values())


@dataclass
class _Tally:
    """Counters the checks fill in; frozen into VerifyCounts at the end."""

    commitlog_records: int = 0
    commitlog_blanks: int = 0
    cq_checked: int = 0
    cq_below_min: int = 0
    index_entries: int = 0
    index_checked: int = 0
    index_below_min: int = 0
    index_sampled: bool = False
    index_stride: int = 1


@_vanishing_files_are_store_changes
def verify_store(root: Path, *, index_check_limit: int | None = DEFAULT_INDEX_CHECKS) -> VerifyReport:
    """Check everything a broker relies on and report every problem with its file and offset.

    - layout: names, sizes and gaps of every segment directory (RocketMQ refuses to load otherwise);
    - the CommitLog walk, CRC checked, stopping at the first bad record as recovery does; then whether any
      data lies after that end (recovery would delete it);
    - every record is reachable through its ConsumeQueue (the entry at its queue offset names it, within the
      entries the store keeps at start-up), and every ConsumeQueue entry against the record it points at
      (topic, queue, queue offset, size, tagsCode), none past the end of the log;
    - every key of every record (UNIQ_KEY and KEYS) within the index's window (from the oldest index file's
      first record) is found by a query through the index, and index entries match the records they point
      at; both up to `index_check_limit` (an even sample beyond it);
    - the checkpoint is present and readable.
    A running store's tail that its broker has not dispatched yet is not held against it (counted instead).
    """
    layout = discover_store(Path(root))
    findings, tally = _Findings(), _Tally()
    for problem in _layout_problems(layout, include_commitlog=True):
        findings.add(Check.LAYOUT, problem.reason, problem.path)
    queue = loadable_commitlog(layout)
    minimum = queue.segments[0].file_from_offset if queue.segments else 0
    index_files = _open_index_files(layout, findings)
    try:
        tally.index_entries = sum(index_file.header.entry_count for index_file in index_files)
        limit = index_check_limit
        tally.index_stride = (
            1 if not limit or tally.index_entries <= limit else math.ceil(tally.index_entries / limit)
        )
        tally.index_sampled = tally.index_stride > 1
        with _Reachability(layout, index_files, tally, minimum) as reachability:
            end = _verify_commitlog(queue, findings, tally, reachability.check)
            reachability.report(findings)
        _check_data_after_end(queue, end, findings)
        with RecordReader(queue) as reader:
            for cq in layout.consume_queues:
                _verify_consume_queue(cq, reader, minimum, end.physical_offset, findings, tally)
            _verify_index(index_files, reader, minimum, end.physical_offset, findings, tally)
    finally:
        for index_file in index_files:
            index_file.close()
    _verify_checkpoint(layout, findings)
    counts = VerifyCounts(
        commitlog_segments=len(queue.segments),
        commitlog_records=tally.commitlog_records,
        commitlog_blanks=tally.commitlog_blanks,
        commitlog_bytes_walked=end.physical_offset - minimum,
        consume_queues=len(layout.consume_queues),
        consume_queue_entries_checked=tally.cq_checked,
        consume_queue_entries_below_min_offset=tally.cq_below_min,
        index_files=len(layout.index_files),
        index_entries=tally.index_entries,
        index_entries_checked=tally.index_checked,
        index_entries_below_min_offset=tally.index_below_min,
        checkpoint_checked=layout.checkpoint is not None,
        records_checked_through_queues=reachability.through_queues,
        keyed_records_checked_through_index=reachability.through_index,
        records_not_yet_dispatched=reachability.not_yet_dispatched,
    )
    return VerifyReport(
        root=layout.root,
        ok=findings.count == 0,
        min_physical_offset=minimum,
        max_physical_offset=end.physical_offset,
        end=end,
        counts=counts,
        index_check_limit=index_check_limit,
        index_sampled=tally.index_sampled,
        findings=tuple(findings.shown),
        findings_not_shown=MappingProxyType(dict(findings.not_shown)),
    )


def _open_index_files(layout: StoreLayout, findings: _Findings) -> list[IndexFile]:
    files = []
    for path in layout.index_files:
        try:
            files.append(IndexFile.open(path))
        except StoreError as error:
            findings.add(Check.INDEX_FILE, str(error), path)
    return files


@dataclass
class _Unreached:
    """Records one queue (or the index) does not lead to: reported as one finding with a count."""

    first_physical_offset: int = 0
    first_detail: str = ""
    file: Path | None = None
    offset: int | None = None
    count: int = 0

    def note(self, physical_offset: int, detail: str, file: Path | None, offset: int | None) -> None:
        if not self.count:
            self.first_physical_offset, self.first_detail, self.file, self.offset = (
                physical_offset, detail, file, offset,
            )  # fmt: skip
        self.count += 1


class _Reachability:
    """Each record of the walk looked up the way a consumer and a query find it: through the entry at its
    queue offset in its ConsumeQueue, and each of its keys through the index's hash chains."""

    def __init__(self, layout: StoreLayout, index_files: list[IndexFile], tally: _Tally, log_min: int):
        self._layout = layout
        self._log_min = log_min
        self._readers: dict[tuple[str, int], QueueEntryReader | None] = {}
        self._queue_misses: dict[tuple[str, int], _Unreached] = {}
        self._index_misses = _Unreached()
        # From the oldest index file's first record on, every key must be indexed: a file that holds nothing
        # yet (begin 0, or the previous file's end) still says where its keys would start.
        self._index_files = index_files
        self._index_window_start = index_files[0].begin_phy_offset if index_files else None
        self._stride = tally.index_stride
        self._keyed_seen = 0
        run_state = store_run_state(layout.root)
        self._crashed = run_state is StoreRunState.CRASHED
        self._queue_frontier, self._index_frontier = (
            self._frontiers(layout, index_files) if run_state is StoreRunState.RUNNING else (None, None)
        )
        self.through_queues = 0
        self.through_index = 0
        self.not_yet_dispatched = 0

    @staticmethod
    def _frontiers(layout: StoreLayout, index_files: list[IndexFile]) -> tuple[int, int | None]:
        """On a running store, where what its broker has dispatched ends: in the ConsumeQueues (the largest
        end any of them points to) and in the index (the record it ends with)."""
        ends = []
        for cq in layout.consume_queues:
            with QueueEntryReader(cq.queue, recovered_queue_end(cq.queue)) as reader:
                ends.append(reader.last_record_end())
        return max(ends, default=0), index_files[-1].end_phy_offset if index_files else None

    def check(self, event: ScannedRecord) -> None:
        record, offset = event.record, event.physical_offset
        if self._queue_frontier is not None and offset >= self._queue_frontier:
            self.not_yet_dispatched += 1
            return
        if enters_consume_queue(record.sysflag):
            self._check_queue(record, offset)
        if self._in_index_window(offset):
            self._check_index(record, offset)

    def _in_index_window(self, offset: int) -> bool:
        """From the oldest index file's first record on (older ones were indexed by files retention deleted),
        and on a running store up to the last record indexed."""
        if self._index_window_start is None or offset < self._index_window_start:
            return False
        return self._index_frontier is None or offset <= self._index_frontier

    def _check_queue(self, record: codec.MessageRecord, offset: int) -> None:
        self.through_queues += 1
        key = (record.topic, record.queue_id)
        if key not in self._readers:
            cq = self._layout.consume_queue(*key)
            self._readers[key] = QueueEntryReader(cq.queue, recovered_queue_end(cq.queue)) if cq else None
        reader = self._readers[key]
        if reader is None:
            self._queue_misses.setdefault(key, _Unreached()).note(
                offset, "no ConsumeQueue for this queue", None, record.queue_offset
            )
            return
        entry = reader.entry(record.queue_offset)
        if entry_matches(entry, record, offset):
            return
        detail = self._queue_miss(entry, record.queue_offset, reader.end)
        if detail is not None:
            file = _segment_path_for_queue_offset(reader.queue, record.queue_offset)
            self._queue_misses.setdefault(key, _Unreached()).note(offset, detail, file, record.queue_offset)

    def _queue_miss(self, entry: ConsumeQueueEntry | None, queue_offset: int, end: int) -> str | None:
        """Why the entry at a record's queue offset does not lead to it; None for a wrong entry the entry
        checks report (they say what it names instead), so one damage is one finding."""
        if entry is None:
            return f"entry {queue_offset} is missing (the queue ends at {end})"
        if not entry.names_a_record:
            return f"entry {queue_offset} is not an entry ({entry.physical_offset}, {entry.size_bytes} B)"
        if entry.physical_offset < self._log_min:
            return f"entry {queue_offset} names {entry.physical_offset}, below the start of the log"
        return None

    def _check_index(self, record: codec.MessageRecord, offset: int) -> None:
        keys = index_keys(record.uniq_key, record.keys, record.sysflag)
        if not keys:
            return
        self._keyed_seen += 1
        if (self._keyed_seen - 1) % self._stride:
            return
        self.through_index += 1
        for key in keys:
            key_hash = index_key_hash(IndexService.build_key(record.topic, key))
            holders = [f for f in self._index_files if f.begin_phy_offset <= offset <= f.end_phy_offset]
            if not any(index_file.holds_key(key_hash, offset) for index_file in holders):
                where = holders[-1].path if holders else self._index_files[-1].path
                self._index_misses.note(offset, f"key {key!r} of topic {record.topic}", where, offset)
                return

    def report(self, findings: _Findings) -> None:
        hint = "; recovery rebuilds them" if self._crashed else ""
        for (topic, queue_id), miss in sorted(self._queue_misses.items()):
            records = "1 record is" if miss.count == 1 else f"{miss.count} records are"
            findings.add(
                Check.CQ_UNREACHABLE,
                f"{topic}/{queue_id}: {records} not reachable through the ConsumeQueue, the first at "
                f"{miss.first_physical_offset} (queue offset {miss.offset}): {miss.first_detail}{hint}",
                miss.file or self._layout.root / "consumequeue" / topic / str(queue_id),
                miss.offset,
                OffsetKind.QUEUE_OFFSET,
                miss.count,
            )
        miss = self._index_misses
        if miss.count:
            records = "1 record has" if miss.count == 1 else f"{miss.count} records have"
            findings.add(
                Check.INDEX_UNREACHABLE,
                f"{records} a key a query through the index does not find, the first at "
                f"{miss.first_physical_offset}: {miss.first_detail}{hint}",
                miss.file,
                miss.offset,
                OffsetKind.PHYSICAL_OFFSET,
                miss.count,
            )

    def __enter__(self) -> _Reachability:
        return self

    def __exit__(self, *exc_info) -> None:
        for reader in self._readers.values():
            if reader is not None:
                reader.close()


def _segment_path_for_queue_offset(queue: SegmentQueue, queue_offset: int) -> Path | None:
    segment = queue.segment_for(queue_offset * CQ_STORE_UNIT_SIZE)
    return segment.path if segment else (queue.segments[-1].path if queue.segments else None)


def _verify_commitlog(
    queue: SegmentQueue, findings: _Findings, tally: _Tally, on_record: Callable[[ScannedRecord], None]
) -> LogEnd:
    if not queue.segments:
        return LogEnd(0, LogEndReason.NO_SEGMENTS, None)

    def check_record(event: ScannedRecord) -> None:
        on_record(event)
        stored = event.record.physical_offset
        if stored != event.physical_offset:
            findings.add(
                Check.COMMITLOG_PHYSICAL_OFFSET,
                f"the record's PHYSICALOFFSET field says {stored}, but it lies at {event.physical_offset} "
                "(a misnamed or moved segment?)",
                _segment_path(queue, event.physical_offset),
                event.physical_offset,
                OffsetKind.PHYSICAL_OFFSET,
            )

    walk = _walk(queue, queue.segments[0].file_from_offset, check_crc=True, on_record=check_record)
    tally.commitlog_records, tally.commitlog_blanks = walk.records, len(walk.blanks)
    for blank in walk.blanks:
        left = queue.file_size - _position_in_segment(blank)
        if blank.blank_bytes != left:
            findings.add(
                Check.COMMITLOG_BLANK,
                f"the END_OF_FILE blank claims {blank.blank_bytes} bytes, but {left} are left in the segment",
                blank.segment,
                blank.physical_offset,
                OffsetKind.PHYSICAL_OFFSET,
            )
    end = walk.end
    if end.reason is LogEndReason.CORRUPT:
        findings.add(
            Check.COMMITLOG_RECORD,
            f"{end.detail}; the log ends here, as recovery would truncate it",
            end.segment,
            end.physical_offset,
            OffsetKind.PHYSICAL_OFFSET,
        )
    elif end.reason is LogEndReason.SHRUNK:
        findings.add(
            Check.COMMITLOG_RECORD,
            "the segment became shorter while it was read (truncated by its owner); the walk stopped here",
            end.segment,
            end.physical_offset,
            OffsetKind.PHYSICAL_OFFSET,
        )
    return end


def _check_data_after_end(queue: SegmentQueue, end: LogEnd, findings: _Findings) -> None:
    """Non-zero bytes past the end of the log: records recovery would truncate, or whole files it would
    delete. They are what a corrupt record or a hole (pages that never reached the disk) cost."""
    if end.reason in (LogEndReason.NO_SEGMENTS, LogEndReason.SHRUNK) or not queue.file_size:
        return
    for segment in queue.segments:
        if segment.file_from_offset + queue.file_size <= end.physical_offset:
            continue
        holds_end = segment.file_from_offset <= end.physical_offset
        after = end.physical_offset - segment.file_from_offset if holds_end else 0
        # A final blank's 8 bytes, or the bad record's head, sit at the end itself: only what follows counts.
        ignored = codec.END_FILE_MIN_BLANK_LENGTH if holds_end and end.reason is not LogEndReason.ZEROS else 0
        with PreadFile(segment.path) as file:
            data_end = file.end_of_nonzero_data()
        if data_end > after + ignored:
            fate = "truncate them" if holds_end else "delete this file"
            findings.add(
                Check.DATA_AFTER_END,
                f"{data_end - after} bytes up to position {data_end} hold data after the end of the log at "
                f"{end.physical_offset} ({end.reason.value}); recovery would {fate}",
                segment.path,
                after,
                OffsetKind.FILE_POSITION,
            )


@dataclass
class _PastTheEnd:
    """Entries of one queue or index file that point past the end of the log. They are reported as one
    finding with a count: after a log cut short they all follow from that one cut."""

    first_number: int | None = None  # queue offset or index entry number
    first_physical_offset: int = 0
    count: int = 0

    def note(self, number: int, physical_offset: int) -> None:
        if self.first_number is None:
            self.first_number, self.first_physical_offset = number, physical_offset
        self.count += 1

    def describe(self, what: str, log_end: int) -> str:
        entries = "1 entry" if self.count == 1 else f"{self.count} entries"
        return (
            f"{what}: {entries} point past the end of the log at {log_end}, the first at "
            f"{self.first_physical_offset}"
        )


def _verify_consume_queue(
    cq: ConsumeQueueDir,
    reader: RecordReader,
    minimum: int,
    log_end: int,
    findings: _Findings,
    tally: _Tally,
) -> None:
    past_the_end = _PastTheEnd()
    for entry in iter_entries(cq.queue):
        if entry.physical_offset < minimum:
            tally.cq_below_min += 1
            continue
        tally.cq_checked += 1
        if entry.physical_offset + entry.size_bytes > log_end:
            past_the_end.note(entry.queue_offset, entry.physical_offset)
            continue
        mismatch = _cq_entry_mismatch(cq, entry, reader)
        if mismatch:
            where = _cq_segment_path(cq, entry.queue_offset)
            findings.add(Check.CQ_ENTRY, mismatch, where, entry.queue_offset, OffsetKind.QUEUE_OFFSET)
    if past_the_end.count:
        findings.add(
            Check.CQ_BEYOND_LOG,
            past_the_end.describe(f"{cq.topic}/{cq.queue_id} from queue offset {past_the_end.first_number}",
                                  log_end),
            _cq_segment_path(cq, past_the_end.first_number),
            past_the_end.first_number,
            OffsetKind.QUEUE_OFFSET,
            past_the_end.count,
        )  # fmt: skip


def _cq_segment_path(cq: ConsumeQueueDir, queue_offset: int) -> Path | None:
    segment = cq.queue.segment_for(queue_offset * CQ_STORE_UNIT_SIZE)
    return segment.path if segment else None


def _cq_entry_mismatch(cq: ConsumeQueueDir, entry: ConsumeQueueEntry, reader: RecordReader) -> str | None:
    label = f"{cq.topic}/{cq.queue_id} entry {entry.queue_offset} -> {entry.physical_offset}"
    try:
        record = reader.record_at(entry.physical_offset, size_hint=entry.size_bytes)
    except (CorruptRecord, NoRecordAt) as error:
        return f"{label}: no record starts there ({error})"
    if isinstance(record, codec.BlankRecord):
        return f"{label}: points at an END_OF_FILE blank, not a message"
    expected = {
        "topic": (cq.topic, record.topic),
        "queue id": (cq.queue_id, record.queue_id),
        "queue offset": (entry.queue_offset, record.queue_offset),
        "size": (entry.size_bytes, record.total_size),
    }
    tags_code = expected_tags_code(record)
    if tags_code is not None:
        expected["tagsCode"] = (entry.tags_code, tags_code)
    wrong = [f"{name} {want!r} vs {got!r}" for name, (want, got) in expected.items() if want != got]
    return f"{label}: entry and record disagree: {', '.join(wrong)} (entry vs record)" if wrong else None


def _verify_index(
    files: list[IndexFile],
    reader: RecordReader,
    minimum: int,
    log_end: int,
    findings: _Findings,
    tally: _Tally,
) -> None:
    for index_file in files:
        past_the_end = _PastTheEnd()
        for number in range(1, index_file.header.index_count, tally.index_stride):
            _verify_index_entry(index_file, number, reader, (minimum, log_end), findings, tally, past_the_end)
        if past_the_end.count:
            findings.add(
                Check.INDEX_BEYOND_LOG,
                past_the_end.describe(f"from entry {past_the_end.first_number}", log_end),
                index_file.path,
                past_the_end.first_number,
                OffsetKind.INDEX_ENTRY,
                past_the_end.count,
            )


def _verify_index_entry(
    index_file: IndexFile,
    number: int,
    reader: RecordReader,
    log_range: tuple[int, int],
    findings: _Findings,
    tally: _Tally,
    past_the_end: _PastTheEnd,
) -> None:
    minimum, log_end = log_range
    try:
        entry = index_file.entry(number)
    except CorruptRecord as error:
        findings.add(Check.INDEX_FILE, str(error), index_file.path, number, OffsetKind.INDEX_ENTRY)
        return
    if entry.phy_offset < minimum:
        tally.index_below_min += 1
        return
    tally.index_checked += 1

    def report(check: Check, message: str) -> None:
        findings.add(check, f"entry {number} -> {entry.phy_offset}: {message}", index_file.path, number,
                     OffsetKind.INDEX_ENTRY)  # fmt: skip

    if entry.phy_offset >= log_end:
        past_the_end.note(number, entry.phy_offset)
        return
    try:
        record = reader.record_at(entry.phy_offset)
    except (CorruptRecord, NoRecordAt) as error:
        report(Check.INDEX_ENTRY, f"no record starts there ({error})")
        return
    if isinstance(record, codec.BlankRecord):
        report(Check.INDEX_ENTRY, "points at an END_OF_FILE blank, not a message")
        return
    keys = index_keys(record.uniq_key, record.keys)
    hashes = {index_key_hash(IndexService.build_key(record.topic, key)) for key in keys}
    if entry.key_hash not in hashes:
        report(
            Check.INDEX_ENTRY,
            f"key hash {entry.key_hash} is the hash of none of the record's keys "
            f"({record.topic}: {', '.join(keys) or 'no keys'})",
        )


def _verify_checkpoint(layout: StoreLayout, findings: _Findings) -> None:
    if layout.checkpoint is None:
        findings.add(Check.CHECKPOINT, "missing: recovery has no timestamps to start from", layout.root)
        return
    try:
        read_checkpoint(layout.checkpoint)
    except CorruptRecord as error:
        findings.add(
            Check.CHECKPOINT, error.reason, layout.checkpoint, error.offset, OffsetKind.FILE_POSITION
        )


# ==========================================================================================================
# query
# ==========================================================================================================


class QueryBy(StrEnum):
    KEY = "key"
    OFFSET = "offset"
    MSG_ID = "msg_id"


@dataclass(frozen=True)
class UnreadableHit:
    physical_offset: int
    problem: str


@dataclass(frozen=True, kw_only=True)
class QueryResult:
    schema: str = "mqinspect.store.query/v1"
    root: Path
    by: QueryBy
    key: str | None = None
    topics_searched: tuple[str, ...] = ()
    begin_timestamp_ms: int | None = None
    end_timestamp_ms: int | None = None
    max_hits: int | None = None
    index_hits: int = 0  # offsets the index returned: key *hash* matches
    hash_collisions_filtered: int = 0  # index hits whose record does not carry the key
    unreadable_hits: tuple[UnreadableHit, ...] = ()
    msg_id: str | None = None
    msg_id_store_host: str | None = None
    store_host_matches: bool | None = None
    notes: tuple[str, ...] = ()
    hits: tuple[RecordView, ...] = ()


@_vanishing_files_are_store_changes
def query_by_key(
    root: Path,
    key: str,
    *,
    topic: str | None,
    begin_ms: int | None,
    end_ms: int | None,
    max_hits: int,
    include_body: bool,
) -> QueryResult:
    """Messages with `key` (a KEYS token or UNIQ_KEY) through the index, newest file first, as
    `IndexService.queryOffset`. The index compares hashes only, so every hit is decoded and kept only if
    the record really carries the key; the others are counted as hash collisions. Without a topic, every
    topic that has a consume queue is searched (the index key is "topic#key")."""
    layout = open_layout(root)
    topics = (topic,) if topic else layout.topics
    if not topics:
        raise NoTopicToSearch(f"{layout.root}: no consume queue names a topic to search; pass --topic")
    begin, end = begin_ms or 0, LATEST_TIME_MS if end_ms is None else end_ms
    hits, unreadable, collisions, index_hits, seen = [], [], 0, 0, set()
    queue = loadable_commitlog(layout)
    with IndexService(layout.root / "index") as service, RecordReader(queue) as reader:
        service.load(read_only=True)
        for searched_topic in topics:
            offsets = service.query(searched_topic, key, max_hits, begin, end, max_msgs_num_batch=max_hits)
            for offset in offsets:
                if offset in seen:  # a message whose KEYS repeat the key is indexed once per repeat
                    continue
                seen.add(offset)
                index_hits += 1
                verdict = _key_hit(reader, offset, searched_topic, key)
                if isinstance(verdict, UnreadableHit):
                    unreadable.append(verdict)
                elif verdict is None:
                    collisions += 1
                else:
                    segment = reader.segment_for(offset)
                    hits.append(
                        record_view(
                            offset, verdict, segment.path if segment else None, include_body=include_body
                        )
                    )
    return QueryResult(
        root=layout.root,
        by=QueryBy.KEY,
        key=key,
        topics_searched=tuple(topics),
        begin_timestamp_ms=begin_ms,
        end_timestamp_ms=end_ms,
        max_hits=max_hits,
        index_hits=index_hits,
        hash_collisions_filtered=collisions,
        unreadable_hits=tuple(unreadable),
        notes=() if layout.index_files else ("the store has no index files",),
        hits=tuple(hits),
    )


def _key_hit(
    reader: RecordReader, offset: int, topic: str, key: str
) -> codec.MessageRecord | UnreadableHit | None:
    """The record if it carries `key` in `topic`, None for a hash collision, UnreadableHit if there is no
    message at the offset (deleted by retention, truncated, or a damaged index)."""
    try:
        record = reader.record_at(offset)
    except (CorruptRecord, NoRecordAt) as error:
        return UnreadableHit(offset, str(error))
    if isinstance(record, codec.BlankRecord):
        return UnreadableHit(offset, "an END_OF_FILE blank, not a message")
    carries_key = key in record.key_list or record.uniq_key == key
    return record if record.topic == topic and carries_key else None


@_vanishing_files_are_store_changes
def query_by_offset(root: Path, offset: int, *, include_body: bool) -> QueryResult:
    """The message at a physical offset. NoRecordAt names the nearest record starts if none starts there."""
    layout = open_layout(root)
    view, notes = _message_at(loadable_commitlog(layout), offset, include_body)
    return QueryResult(root=layout.root, by=QueryBy.OFFSET, notes=notes, hits=(view,))


@_vanishing_files_are_store_changes
def query_by_msg_id(root: Path, msg_id: str, *, include_body: bool) -> QueryResult:
    """The message an offsetMsgId names (store host + physical offset). The host is compared, not required
    to match: a store copied to another machine keeps the ids its old host gave out."""
    try:
        parsed = codec.parse_offset_msg_id(msg_id.strip())
    except ValueError as error:
        raise BadMessageId(str(error)) from None
    layout = open_layout(root)
    view, notes = _message_at(loadable_commitlog(layout), parsed.physical_offset, include_body)
    id_host = host_text(codec.HostAddress(parsed.host, parsed.port))
    matches = id_host == view.store_host
    if not matches:
        notes += (
            f"the id names store host {id_host}, but the record at {view.physical_offset} was stored by "
            f"{view.store_host}",
        )
    return QueryResult(
        root=layout.root,
        by=QueryBy.MSG_ID,
        msg_id=msg_id.strip(),
        msg_id_store_host=id_host,
        store_host_matches=matches,
        notes=notes,
        hits=(view,),
    )


def _message_at(queue: SegmentQueue, offset: int, include_body: bool) -> tuple[RecordView, tuple[str, ...]]:
    """The message at `offset` and notes about it. A body CRC mismatch is a note, not an error: asking for
    one record is how one looks at a damaged one."""
    with RecordReader(queue) as reader:
        _require_record_start(reader, offset)
        try:
            record = reader.record_at(offset)
        except codec.UnwrittenSpace:
            raise NoRecordAt(f"offset {offset} is the end of the log: no message is there yet") from None
        if isinstance(record, codec.BlankRecord):
            raise NoRecordAt(
                f"offset {offset} holds an END_OF_FILE blank (the rest of its segment is filler), "
                "not a message"
            )
        segment = reader.segment_for(offset)
    notes: tuple[str, ...] = ()
    body = record.body or b""
    if body and masked_crc32(body) != record.body_crc:
        notes = (
            f"body CRC {masked_crc32(body)} does not match BODYCRC {record.body_crc}: the body is damaged",
        )
    return record_view(offset, record, segment.path if segment else None, include_body=include_body), notes


# ==========================================================================================================
# cq
# ==========================================================================================================


@dataclass(frozen=True)
class ConsumeQueueView:
    topic: str
    queue_id: int
    min_offset: int
    max_offset: int
    from_offset: int
    entries: list[ConsumeQueueEntry]
    schema: str = "mqinspect.store.cq/v1"


@_vanishing_files_are_store_changes
def consume_queue_view(
    layout: StoreLayout, topic: str, queue_id: int, from_offset: int | None, count: int
) -> ConsumeQueueView:
    cq = layout.consume_queue(topic, queue_id)
    if cq is None:
        raise UnknownQueue(_unknown_queue_message(layout, topic, queue_id))
    cq.queue.require_valid()
    minimum, maximum = queue_bounds(cq.queue, _commitlog_min_offset(layout))
    start = minimum if from_offset is None else from_offset
    entries = []
    for entry in iter_entries(cq.queue, start):
        if len(entries) >= count:
            break
        entries.append(entry)
    return ConsumeQueueView(topic, queue_id, minimum, maximum, start, entries)


def _commitlog_min_offset(layout: StoreLayout) -> int:
    segments = layout.commitlog.loadable_segments
    return segments[0].file_from_offset if segments else 0


def _unknown_queue_message(layout: StoreLayout, topic: str, queue_id: int) -> str:
    queues = [cq.queue_id for cq in layout.consume_queues if cq.topic == topic]
    if queues:
        return f"topic {topic!r} has no queue {queue_id}; its queues: {', '.join(map(str, queues))}"
    known = ", ".join(layout.topics) or "none"
    return f"no consume queue for topic {topic!r} in {layout.root}; topics: {known}"
