"""Recovery as RocketMQ 5.x does it (`DefaultMessageStore.recover`, `CommitLog.recoverNormally/Abnormally`),
made to rebuild everything a crash or a cut can leave missing.

`plan_recovery` decides, reading only (pread), where the valid log ends and what the cut removes; it is what
`mqinspect store recover --dry-run` shows. `MessageStore` applies the same plan to the opened store.

The CommitLog is read (CRC checked) from a *scan start*: the newest segment whose first record is valid and
lies at or before everything that must be rebuilt. The first record that fails its checks ends the log:
everything after it is cut, and the bytes the cut removes are zeroed on disk (CommitLog tail, ConsumeQueue
entries), so that no reader of the files and no later recovery ever sees them again.

What must be rebuilt, each consumer of the log with its own position (never one maximum over all):
- each ConsumeQueue: its entries are checked against the records of the scanned range, one by one (position,
  size and tagsCode, queue offset by queue offset). The queue keeps the entries before its first missing or
  wrong one and is re-dispatched from the record that entry should have named. When that record lies before
  the scan start (a queue whose tail was lost), the scan starts earlier and runs again;
- the index: its files are trusted only when they are known whole: after a clean shutdown all of them; after
  a crash (`abort` present) only the full files the checkpoint's index time covers (the one being written is
  flushed only when full, so a crash may have torn it). Files holding entries at or past the cut are not
  trusted either. The untrusted files are dropped, and the index is rebuilt from the record the newest
  trusted file ends with (or from the start of the log);
- the scan start is never later than RocketMQ's own: after a clean shutdown the newest segment whose first
  record is dispatched; after a crash the newest segment older than the checkpoint's min timestamp.
Re-dispatch starts at the earliest of these positions; the consume queues and the index skip what they hold.
"""

from __future__ import annotations

import bisect
import dataclasses
import os
from array import array
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import ClassVar

from store import codec
from store.checkpoint import CheckpointValues, read_checkpoint
from store.commitlog_scan import ScanFailure, ScannedRecord, SegmentEndReason, scan_commitlog
from store.config import StoreConfig
from store.consume_queue_format import (
    ConsumeQueueEntry,
    QueueEntryReader,
    enters_consume_queue,
    entry_matches,
    recovered_queue_end,
)
from store.errors import CorruptRecord, StoreError
from store.index_file import IndexFile
from store.layout import ConsumeQueueDir, SegmentFile, StoreLayout
from store.safe_read import PreadFile

QueueKey = tuple[str, int]
# The dry run steps back at most this far in a queue whose newest entries name no whole record (a torn log
# end the queue got ahead of); further back, it reads from where recovery does.
TAIL_STEP_BACK_ENTRIES = 64


class RecoveryMode(StrEnum):
    NORMAL = "normal"
    ABNORMAL = "abnormal"


class ScanScope(StrEnum):
    """How much of the log a plan read (with CRC) to find where the log ends."""

    # every record from where recovery itself starts reading: what `MessageStore` applies
    FROM_RECOVERY_START = "from-recovery-start"
    # only from where every queue is known to hold its entries (see `_dispatched_tail_start`; that record
    # whole, CRC checked) to the end: the dry run's view, read in time that grows with the number of queues
    # and the unflushed tail, not with the segments; every queue's tail is checked, but a damaged record or
    # entry before that point is not seen (recovery would cut there), which is what `store verify` reads
    # everything for
    DISPATCHED_TAIL = "dispatched-tail"


@dataclass(frozen=True)
class QueueEnd:
    """Where one ConsumeQueue ends after recovery, before re-dispatch appends to it."""

    topic: str
    queue_id: int
    end_queue_offset: int  # one past the last entry kept
    entries_on_disk: int  # one past the last valid entry before recovery (ConsumeQueue.recover's rule)


@dataclass(frozen=True)
class QueueTruncation:
    """A ConsumeQueue whose entries from `end_queue_offset` on are dropped (and zeroed on disk)."""

    topic: str
    queue_id: int
    entries_dropped: int
    end_queue_offset: int
    reason: str


@dataclass(frozen=True)
class RecoveryPlan:
    mode: RecoveryMode
    start_offset: int  # where the CommitLog scan starts (the first record of the chosen segment)
    process_offset: int  # the end of the last valid record: the log is cut here
    stop_reason: str  # why the scan ended there
    records_checked: int
    dispatch_from_offset: int  # records from here on are (re-)dispatched to the consume queues and index
    commitlog_max_wrote_offset: int  # how far the files hold written bytes today
    truncated_bytes: int  # written bytes after the end of the log: what the cut removes
    segments_to_delete: list[Path] = field(default_factory=list)
    queue_truncations: list[QueueTruncation] = field(default_factory=list)
    index_files_to_drop: list[Path] = field(default_factory=list)
    corruption: str | None = None  # set when the scan ended on a record that failed its checks
    queue_ends: tuple[QueueEnd, ...] = ()
    index_rebuild_from_offset: int | None = None  # the index is (re)built from this record on; None: no index
    index_drop_reason: str | None = None
    scans: int = 1  # how often the log was read: more than once when a lost queue tail lay before the start
    scope: ScanScope = ScanScope.FROM_RECOVERY_START
    recovery_start_offset: int | None = None  # where recovery's scan starts (start_offset unless scope says)

    # How the plan read the log, not what it decided: a dry run reads less (see ScanScope) and decides the
    # same as the recovery applied afterwards when nothing before its start is damaged.
    READING_FIELDS: ClassVar[tuple[str, ...]] = ("start_offset", "records_checked", "scans", "scope")

    def decisions(self) -> dict[str, object]:
        """Every field but READING_FIELDS: what recovery does to the store."""
        return {
            name: getattr(self, name)
            for name in (f.name for f in dataclasses.fields(self))
            if name not in self.READING_FIELDS
        }


def plan_recovery(
    layout: StoreLayout,
    config: StoreConfig | None = None,
    *,
    check_crc: bool = True,
    scope: ScanScope = ScanScope.FROM_RECOVERY_START,
) -> RecoveryPlan:
    """What recovery would do to this store, decided without changing anything.

    `config` gives the index geometry and whether the store keeps an index (RocketMQ's defaults if None).
    With `scope` DISPATCHED_TAIL the log is read only from where every queue is known complete (see
    `_dispatched_tail_start`), as far as nothing needs earlier records re-dispatched: a lost queue tail
    still makes it read from where that queue needs (as recovery does); an index rebuilt from an earlier
    record is named, not read up to."""
    config = config or StoreConfig()
    segments = layout.commitlog.require_valid().loadable_segments
    mode = RecoveryMode.ABNORMAL if layout.abort_file else RecoveryMode.NORMAL
    checkpoint = read_checkpoint(layout.checkpoint) if layout.checkpoint else None
    log_min = segments[0].file_from_offset if segments else 0
    with ExitStack() as readers:
        queues = {
            (cq.topic, cq.queue_id): readers.enter_context(_QueueEntries(cq)) for cq in layout.consume_queues
        }
        index = _IndexTrust(layout, config, mode, checkpoint) if config.message_index_enable else None
        floor = _floor(segments, mode, checkpoint, queues.values())
        tail_from = (
            _dispatched_tail_start(layout, queues.values(), mode, checkpoint)
            if scope is ScanScope.DISPATCHED_TAIL
            else None
        )
        scan, scans, needed_from, recovery_start = _scan_from_what_needs_it(
            layout, floor, index, queues, readers, check_crc, tail_from
        )
        truncations, ends = scan.queue_verdicts()
    written_end = _written_end(segments)
    end = scan.process_offset
    return RecoveryPlan(
        mode=mode,
        start_offset=scan.start,
        process_offset=end,
        stop_reason=scan.stop_reason,
        records_checked=scan.records_checked,
        # Before the start only when the dispatched tail was read: the index's own record start.
        dispatch_from_offset=needed_from
        if needed_from < scan.start
        else scan.first_record_at_or_after(needed_from),
        commitlog_max_wrote_offset=written_end,
        truncated_bytes=max(0, written_end - end),
        segments_to_delete=[s.path for s in segments if s.file_from_offset > end],
        queue_truncations=truncations,
        index_files_to_drop=[] if index is None else index.dropped(end),
        corruption=scan.corruption,
        queue_ends=ends,
        index_rebuild_from_offset=None if index is None else index.rebuild_from(end, log_min),
        index_drop_reason=None if index is None else index.drop_reason(end),
        scans=scans,
        scope=ScanScope.DISPATCHED_TAIL if scan.start > recovery_start else ScanScope.FROM_RECOVERY_START,
        recovery_start_offset=recovery_start,
    )


# --- where the scan starts -------------------------------------------------------------------------------


def _scan_from_what_needs_it(
    layout: StoreLayout,
    floor: int,
    index: _IndexTrust | None,
    queues: dict[QueueKey, _QueueEntries],
    readers: ExitStack,
    check_crc: bool,
    tail_from: int | None = None,
) -> tuple[_Scan, int, int, int]:
    """Scan from the newest segment start at or before the floor and everything the consumers need; when a
    scan shows that something needs records before its start, scan again from there. Returns the last scan,
    how many were made, the earliest record something needs (the end of the log if nothing does), and
    where recovery's first scan starts.

    `tail_from` (a whole record after that start) starts the first scan there instead; then only the queues'
    needs make it read earlier (the index's need is a record start it names: see plan_recovery)."""
    segments = layout.commitlog.loadable_segments
    log_min = segments[0].file_from_offset if segments else 0
    target = floor if index is None else min(floor, index.rebuild_from(None, log_min))
    recovery_start = min(floor, _choose_start(segments, lambda first: first.physical_offset <= target))
    start = recovery_start if tail_from is None else max(recovery_start, tail_from)
    scans = 0
    while True:
        scan = _Scan(start, log_min, queues, readers)
        scan.run(layout, check_crc)
        scans += 1
        needs = [check.need for check in scan.checks.values() if check.need is not None]
        queues_need = min(needs, default=scan.process_offset)
        if index is not None:
            needs.append(index.rebuild_from(scan.process_offset, log_min))
        needed_from = min(needs, default=scan.process_offset)
        rescan_for = needed_from if tail_from is None else queues_need
        if rescan_for >= start or start <= log_min:
            return scan, scans, needed_from, recovery_start
        # a queue lost entries whose records lie before the scan start: read from there
        start = min(floor, _choose_start(segments, lambda first, at=rescan_for: first.physical_offset <= at))


def _floor(
    segments: tuple[SegmentFile, ...],
    mode: RecoveryMode,
    checkpoint: CheckpointValues | None,
    queues: Iterable[_QueueEntries],
) -> int:
    """RocketMQ's own scan start: after a crash the newest segment older than the checkpoint's min timestamp
    (min(physic, logics) - 3 s); otherwise the newest segment whose first record is dispatched (at or below
    the largest end any consume queue points to)."""
    if mode is RecoveryMode.ABNORMAL:
        if checkpoint is None:
            return segments[0].file_from_offset if segments else 0
        oldest = checkpoint.min_timestamp()
        return _choose_start(segments, lambda first: first.store_timestamp_ms <= oldest)
    dispatched_until = max((queue.last_entry_end() for queue in queues), default=0)
    return _choose_start(segments, lambda first: first.physical_offset <= dispatched_until)


def _dispatched_tail_start(
    layout: StoreLayout,
    queues: Iterable[_QueueEntries],
    mode: RecoveryMode,
    checkpoint: CheckpointValues | None,
) -> int | None:
    """Where a read that checks every queue's tail starts: a whole record (CRC checked) before which every
    queue holds the entries of its records, so that every record recovery would dispatch to a queue lies in
    the read. The later of:
    - the oldest of the queues' newest entries that name a whole record: no queue misses a record before
      its own newest entry (entries past a torn end are stepped over, up to TAIL_STEP_BACK_ENTRIES a queue);
    - where all queues are known complete, which lifts the start past a queue whose last record is old:
      after a clean shutdown the newest of those entries (the dispatcher writes the queues in log order and
      the shutdown flushed them); after a crash the newest record a queue names whose store time the
      checkpoint's min timestamp covers (the log and every queue were flushed up to it).
    None when a queue has no such entry: the read then starts where recovery's does."""
    with _SegmentRecords(layout.commitlog.loadable_segments) as reader:
        newest = {}
        for queue in queues:
            if queue.end <= queue.first:
                continue  # an empty queue: nothing of it to check
            whole = queue.newest_whole_record(reader)
            if whole is None:
                return None
            newest[queue] = whole
        if not newest:
            return None
        if mode is RecoveryMode.NORMAL:
            return max(newest.values())
        covered = _newest_covered_record(reader, newest, checkpoint) if checkpoint else None
        return max(min(newest.values()), covered or 0)


def _newest_covered_record(
    reader: _SegmentRecords, newest: dict[_QueueEntries, int], checkpoint: CheckpointValues
) -> int | None:
    """The newest whole record a queue names whose store time is at or before the checkpoint's min timestamp
    (each queue's records are in store-time order: a binary search over its entries). Queues are searched
    newest first, and only while their newest record lies past what an earlier one found."""
    covered_until = checkpoint.min_timestamp()
    found: int | None = None
    for queue, newest_offset in sorted(newest.items(), key=lambda item: item[1], reverse=True):
        if found is not None and newest_offset <= found:
            break
        candidate = queue.newest_record_stored_by(reader, covered_until)
        if candidate is not None and (found is None or candidate > found):
            found = candidate
    return found


def _choose_start(segments: tuple[SegmentFile, ...], qualifies: Callable[[codec.MessageRecord], bool]) -> int:
    """Newest segment first, the first whose first record is valid and qualifies; the oldest otherwise."""
    if not segments:
        return 0
    for segment in reversed(segments[1:]):
        first = _first_record(segment)
        if first is not None and first.store_timestamp_ms != 0 and qualifies(first):
            return segment.file_from_offset
    return segments[0].file_from_offset


def _first_record(segment: SegmentFile) -> codec.MessageRecord | None:
    with PreadFile(segment.path) as file:
        head = file.read(0, 8)
        if len(head) < 8:
            return None
        total, _magic = codec.peek_total_size_and_magic(head)
        if total <= 0 or total > min(segment.size_bytes, codec.DEFAULT_MAX_RECORD_SIZE):
            return None
        try:
            record = codec.decode_record(file.read(0, total), check_crc=True, read_body=False)
        except CorruptRecord:
            return None
    return record if isinstance(record, codec.MessageRecord) else None


class _SegmentRecords(ExitStack):
    """Records at physical offsets of the loadable segments, checked whole with pread (each segment opened
    once, closed with the stack)."""

    def __init__(self, segments: tuple[SegmentFile, ...]):
        super().__init__()
        self.segments = segments
        self._starts = [segment.file_from_offset for segment in segments]
        self._files: dict[int, PreadFile] = {}

    def whole_record(self, offset: int, size: int) -> codec.MessageRecord | None:
        """The message record of `size` bytes at `offset` if it is whole (CRC checked), else None."""
        at = bisect.bisect_right(self._starts, offset) - 1
        if at < 0 or not 0 < size <= codec.DEFAULT_MAX_RECORD_SIZE:
            return None
        segment = self.segments[at]
        position = offset - segment.file_from_offset
        if position + size > segment.size_bytes:
            return None
        file = self._files.get(at)
        if file is None:
            file = self._files[at] = self.enter_context(PreadFile(segment.path))
        try:
            record = codec.decode_record(file.read(position, size), check_crc=True, read_body=False)
        except CorruptRecord:
            return None
        return record if isinstance(record, codec.MessageRecord) and record.total_size == size else None

    def is_whole_record(self, offset: int, size: int) -> bool:
        return self.whole_record(offset, size) is not None


def _written_end(segments: tuple[SegmentFile, ...]) -> int:
    """Where written bytes end today: past the last non-zero byte of the newest segment holding any (the
    newest file may be one preallocated ahead, still empty)."""
    for segment in reversed(segments):
        with PreadFile(segment.path) as file:
            data_end = file.end_of_nonzero_data()
        if data_end:
            return segment.file_from_offset + data_end
    return segments[0].file_from_offset if segments else 0


# --- the scan and the consume-queue checks ---------------------------------------------------------------


class _QueueEntries:
    """A ConsumeQueue as recovery sees it: its entries up to ConsumeQueue.recover's end, read on demand."""

    def __init__(self, cq: ConsumeQueueDir | None):
        self.topic_and_queue: QueueKey | None = (cq.topic, cq.queue_id) if cq else None
        self.end = recovered_queue_end(cq.queue) if cq else 0
        self.reader = QueueEntryReader(cq.queue, self.end) if cq else None
        self.first = self.reader.first if self.reader else 0

    def entry(self, queue_offset: int) -> ConsumeQueueEntry | None:
        return self.reader.entry(queue_offset) if self.reader else None

    def last_entry_end(self) -> int:
        return self.reader.last_record_end() if self.reader else 0

    def newest_whole_record(self, records: _SegmentRecords) -> int | None:
        """Where the record the newest of the last TAIL_STEP_BACK_ENTRIES entries that names a whole record of
        its size (CRC checked) starts; None if none does."""
        for queue_offset in range(self.end - 1, max(self.first, self.end - TAIL_STEP_BACK_ENTRIES) - 1, -1):
            entry = self.entry(queue_offset)
            named = entry is not None and entry.names_a_record
            if named and records.is_whole_record(entry.physical_offset, entry.size_bytes):
                return entry.physical_offset
        return None

    def newest_record_stored_by(self, records: _SegmentRecords, timestamp_ms: int) -> int | None:
        """Where the record of the newest entry naming a whole record stored at or before `timestamp_ms`
        starts (binary search: the queue's records are in store-time order); None if no entry does."""
        low, high = self.first, self.end  # entries before `low` qualify (or none does); from `high` on not
        found = None
        while low < high:
            middle = (low + high) // 2
            entry = self.entry(middle)
            record = (
                records.whole_record(entry.physical_offset, entry.size_bytes)
                if entry is not None and entry.names_a_record
                else None
            )
            if record is not None and record.store_timestamp_ms <= timestamp_ms:
                found, low = entry.physical_offset, middle + 1
            else:
                high = middle
        return found

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()

    def __enter__(self) -> _QueueEntries:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class _QueueCheck:
    """One queue's entries against the records of the scanned range, in queue-offset order.

    The queue keeps its entries up to the first one that is missing, wrong, or points into the scanned range
    without a record of this queue there; `need` is where re-dispatch must start to rebuild the rest."""

    def __init__(self, entries: _QueueEntries, scan_start: int, log_min: int):
        self.entries = entries
        self.scan_start = scan_start
        self.log_min = log_min
        self.next: int | None = None  # the queue offset the next record of this queue must have
        self.keep_until: int | None = None  # set at the first failure: the queue is cut there
        self.need: int | None = None
        self.reason: str | None = None

    def check(self, record: codec.MessageRecord, physical_offset: int) -> None:
        if self.keep_until is not None:
            return
        queue_offset = record.queue_offset
        if self.next is None:
            self.next = self._first_entry_in_range(min(queue_offset, self.entries.end))
            if self.next < queue_offset:
                self._fail(
                    self.next,
                    self._before_range(self.next, physical_offset),
                    self._entries_before(queue_offset),
                )
                return
        if queue_offset < self.next:
            return  # a queue offset the log holds twice: the first record keeps it
        if queue_offset > self.next:
            reason = f"the log has no records for queue offsets {self.next}..{queue_offset - 1}"
            self._fail(self.next, physical_offset, reason)
            return
        entry = self.entries.entry(queue_offset)
        if not entry_matches(entry, record, physical_offset):
            found = (
                "missing" if entry is None else f"points at {entry.physical_offset} ({entry.size_bytes} B)"
            )
            self._fail(
                queue_offset,
                physical_offset,
                f"entry {queue_offset} for the record at {physical_offset}: {found}",
            )
            return
        self.next = queue_offset + 1

    def verdict(self, process_offset: int) -> tuple[int, str | None]:
        """Where the queue ends after the cut, and why entries were dropped (None if none were)."""
        if self.keep_until is None:
            self.keep_until = (
                self.next if self.next is not None else self._first_entry_in_range(self.entries.end)
            )
        if self.keep_until >= self.entries.end:
            return self.keep_until, None
        if self.reason is None:
            entry = self.entries.entry(self.keep_until)
            beyond = entry is not None and entry.physical_offset >= process_offset
            self.reason = (
                f"point at or past the end of the log at {process_offset}"
                if beyond
                else "point into the scanned log where no record of this queue lies"
            )
        return self.keep_until, self.reason

    def _fail(self, queue_offset: int, need: int, reason: str) -> None:
        self.keep_until, self.need, self.reason = queue_offset, need, reason

    def _first_entry_in_range(self, queue_offset: int) -> int:
        """Step back from `queue_offset` over the entries that point at or after the scan start."""
        while queue_offset > self.entries.first:
            entry = self.entries.entry(queue_offset - 1)
            if entry is None or not entry.names_a_record or entry.physical_offset < self.scan_start:
                break
            queue_offset -= 1
        return queue_offset

    def _before_range(self, queue_offset: int, first_in_range: int) -> int:
        """Where the records from `queue_offset` on begin, when they lie before the scan start: after the
        record the entry before names, else the start of the log. From the start of the log nothing lies
        earlier: re-dispatch begins at the first record in range."""
        if self.scan_start <= self.log_min:
            return first_in_range
        entry = self.entries.entry(queue_offset - 1)
        if entry is not None and entry.names_a_record:
            end = entry.physical_offset + entry.size_bytes
            if self.log_min <= end <= self.scan_start:
                return end
        return self.log_min

    def _entries_before(self, queue_offset: int) -> str:
        if self.next >= self.entries.end:
            return f"entries {self.next}..{queue_offset - 1} are missing"
        return (
            f"entries {self.next}..{queue_offset - 1} point into the scanned log, where their records are not"
        )


class _Scan:
    """One CRC-checked read of the CommitLog from `start`, checking each record's ConsumeQueue entry."""

    def __init__(self, start: int, log_min: int, queues: dict[QueueKey, _QueueEntries], readers: ExitStack):
        self.start = start
        self.process_offset = start
        self.stop_reason = "end of the last segment"
        self.records_checked = 0
        self.corruption: str | None = None
        self._record_starts = array("q")
        self._log_min = log_min
        self._queues = queues
        self._readers = readers
        self.checks = {key: _QueueCheck(entries, start, log_min) for key, entries in queues.items()}

    def run(self, layout: StoreLayout, check_crc: bool) -> None:
        commitlog = layout.commitlog
        starts = {segment.file_from_offset for segment in commitlog.loadable_segments}
        for event in scan_commitlog(commitlog, self.start, check_crc=check_crc, read_body=False):
            if isinstance(event, ScannedRecord):
                self._record(event)
            elif isinstance(event, ScanFailure):
                self.stop_reason = f"record at {event.physical_offset} fails: {event.error}"
                self.corruption = str(event.error)
                return
            elif event.reason is SegmentEndReason.BLANK:
                # Past an END_OF_FILE blank the log goes on in the next segment, as RocketMQ's recovery
                # moves processOffset there: a cut right after it keeps the full segment and its blank.
                size = commitlog.file_size
                following = event.physical_offset - event.physical_offset % size + size
                if following in starts:
                    self.process_offset = following
            else:
                self.stop_reason = f"{event.reason} at {event.physical_offset} in {event.segment.name}"
                return

    def _record(self, event: ScannedRecord) -> None:
        record = event.record
        self._record_starts.append(event.physical_offset)
        self.process_offset = event.physical_offset + record.total_size
        self.records_checked += 1
        if enters_consume_queue(record.sysflag):
            self._check_for(record.topic, record.queue_id).check(record, event.physical_offset)

    def _check_for(self, topic: str, queue_id: int) -> _QueueCheck:
        check = self.checks.get((topic, queue_id))
        if check is None:  # a queue whose directory is gone (or was never written)
            entries = self._queues[(topic, queue_id)] = self._readers.enter_context(_QueueEntries(None))
            check = self.checks[(topic, queue_id)] = _QueueCheck(entries, self.start, self._log_min)
        return check

    def first_record_at_or_after(self, offset: int) -> int:
        """The start of the first scanned record at or after `offset` (the end of the log if none)."""
        at = bisect.bisect_left(self._record_starts, max(offset, self.start))
        return self._record_starts[at] if at < len(self._record_starts) else self.process_offset

    def queue_verdicts(self) -> tuple[list[QueueTruncation], tuple[QueueEnd, ...]]:
        truncations, ends = [], []
        for (topic, queue_id), check in sorted(self.checks.items()):
            if check.entries.topic_and_queue is None:
                continue  # no files: nothing to cut, the dispatcher creates the queue
            end, reason = check.verdict(self.process_offset)
            ends.append(QueueEnd(topic, queue_id, end, check.entries.end))
            if reason is not None:
                truncations.append(QueueTruncation(topic, queue_id, check.entries.end - end, end, reason))
        return truncations, tuple(ends)


# --- the index -------------------------------------------------------------------------------------------


class _IndexTrust:
    """Which index files recovery keeps, and where the index must be rebuilt from."""

    def __init__(
        self,
        layout: StoreLayout,
        config: StoreConfig,
        mode: RecoveryMode,
        checkpoint: CheckpointValues | None,
    ):
        self.paths = list(layout.index_files)
        self.heads = [_index_head(path, config) for path in self.paths]  # (end phy offset, full, end ms)
        self.mode = mode
        self.index_time = checkpoint.index_msg_timestamp if checkpoint else None
        self._trusted_after_crash = len(self.paths)
        if mode is RecoveryMode.ABNORMAL:
            self._trusted_after_crash = next(
                (n for n, head in enumerate(self.heads) if not self._flushed_before_crash(head)),
                len(self.heads),
            )

    def _flushed_before_crash(self, head: tuple[int, bool, int] | None) -> bool:
        """A full file whose end time the checkpoint's indexMsgTimestamp covers was flushed whole."""
        if head is None or self.index_time is None:
            return False
        _end, full, end_ms = head
        return full and end_ms <= self.index_time

    def _trusted(self, process_offset: int | None) -> int:
        """How many files, oldest first, recovery keeps: readable ones, known whole, ending before the cut."""
        for number, head in enumerate(self.heads[: self._trusted_after_crash]):
            if head is None or (process_offset is not None and head[0] >= process_offset):
                return number
        return self._trusted_after_crash

    def rebuild_from(self, process_offset: int | None, log_min: int) -> int:
        """The record the newest trusted file ends with (re-dispatching it puts only its missing keys), or
        the start of the log when no file is trusted."""
        trusted = self._trusted(process_offset)
        return self.heads[trusted - 1][0] if trusted else log_min

    def dropped(self, process_offset: int) -> list[Path]:
        return self.paths[self._trusted(process_offset) :]

    def drop_reason(self, process_offset: int) -> str | None:
        trusted = self._trusted(process_offset)
        if trusted == len(self.paths):
            return None
        if trusted < self._trusted_after_crash:
            return f"holds entries at or past the end of the log at {process_offset}"
        return (
            f"not known whole after the crash: only full files flushed by the checkpoint's index time "
            f"({self.index_time}) are kept"
        )


def _index_head(path: Path, config: StoreConfig) -> tuple[int, bool, int] | None:
    """(endPhyOffset, full, endTimestamp) of an index file; None when it cannot be read as one."""
    try:
        with IndexFile.open(path, config=config) as file:
            return file.end_phy_offset, file.is_full(), file.end_timestamp
    except (StoreError, OSError):
        return None


# --- applying a cut ----------------------------------------------------------------------------------------

ERASE_CHUNK_BYTES = 1 << 20


def erase_after(path: Path, fd: int, position: int) -> int:
    """Zero a file from `position` to its last non-zero byte through `fd` (an open, writable descriptor of
    `path`), then fdatasync: what a cut removes must not reappear. Returns the bytes zeroed."""
    with PreadFile(path) as file:
        data_end = file.end_of_nonzero_data()
    if data_end <= position:
        return 0
    zeros = bytes(min(ERASE_CHUNK_BYTES, data_end - position))
    at = position
    while at < data_end:
        at += os.pwrite(fd, zeros[: data_end - at], at)
    os.fdatasync(fd)
    return data_end - position
