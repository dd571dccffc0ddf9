"""Recovery as RocketMQ 5.x does it (`DefaultMessageStore.recover`, `CommitLog.recoverNormally/Abnormally`).

`plan_recovery` decides, reading only (pread), where the valid log ends and what the cut removes; it is what
`mqinspect store recover --dry-run` shows. `MessageStore` applies the same plan to the opened store.

- Normal (no `abort` file): start at the newest segment whose first record is valid and already dispatched
  (offset <= the consume queues' max), re-dispatch only what the queues lack.
- Abnormal (`abort` present): start at the newest segment whose first record is older than the checkpoint's
  min timestamp (min(physic, logics) - 3 s) and re-dispatch everything from there; duplicates are skipped by
  the consume queues and the index. Index files newer than the checkpoint are dropped first.
In both, CRCs are checked, and the first record that fails ends the log: everything after it is truncated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from store import codec
from store.checkpoint import CheckpointValues, read_checkpoint
from store.commitlog_scan import ScanFailure, ScannedRecord, SegmentEnd, SegmentEndReason, scan_commitlog
from store.consume_queue_format import iter_entries
from store.errors import CorruptRecord
from store.index_file import IndexHeader
from store.layout import SegmentFile, StoreLayout
from store.safe_read import PreadFile


class RecoveryMode(StrEnum):
    NORMAL = "normal"
    ABNORMAL = "abnormal"


@dataclass(frozen=True)
class QueueTruncation:
    topic: str
    queue_id: int
    entries_dropped: int


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


def plan_recovery(layout: StoreLayout, *, check_crc: bool = True) -> RecoveryPlan:
    """What recovery would do to this store, decided without changing anything."""
    commitlog = layout.commitlog.require_valid()
    mode = RecoveryMode.ABNORMAL if layout.abort_file else RecoveryMode.NORMAL
    checkpoint = read_checkpoint(layout.checkpoint) if layout.checkpoint else None
    dispatched_until = max_dispatched_offset(layout)
    start = _choose_start(commitlog.loadable_segments, mode, checkpoint, dispatched_until)
    process_offset, stop_reason, checked, corruption = _scan_to_end(layout, start, check_crc)
    segments = commitlog.loadable_segments
    written_end = _written_end(segments)
    return RecoveryPlan(
        mode=mode,
        start_offset=start,
        process_offset=process_offset,
        stop_reason=stop_reason,
        records_checked=checked,
        dispatch_from_offset=start
        if mode is RecoveryMode.ABNORMAL
        else min(dispatched_until, process_offset),
        commitlog_max_wrote_offset=written_end,
        truncated_bytes=max(0, written_end - process_offset),
        segments_to_delete=[s.path for s in segments if s.file_from_offset > process_offset],
        queue_truncations=_queue_truncations(layout, process_offset),
        index_files_to_drop=_stale_index_files(layout, checkpoint) if mode is RecoveryMode.ABNORMAL else [],
        corruption=corruption,
    )


def max_dispatched_offset(layout: StoreLayout) -> int:
    """dispatchFromPhyOffset: the largest `offset + size` any consume queue entry points to (0 if none)."""
    ends = [0]
    for cq in layout.consume_queues:
        last = None
        for last in iter_entries(cq.queue):  # noqa: B007 - only the last entry matters
            pass
        if last is not None:
            ends.append(last.physical_offset + last.size_bytes)
    return max(ends)


def _choose_start(
    segments: tuple[SegmentFile, ...],
    mode: RecoveryMode,
    checkpoint: CheckpointValues | None,
    dispatched_until: int,
) -> int:
    """Newest segment first, the first whose first record qualifies; the oldest segment otherwise."""
    if not segments:
        return 0
    for segment in reversed(segments):
        first = _first_record(segment)
        if first is None or first.store_timestamp_ms == 0:
            continue
        if mode is RecoveryMode.NORMAL and first.physical_offset <= dispatched_until:
            return segment.file_from_offset
        if (
            mode is RecoveryMode.ABNORMAL
            and checkpoint
            and first.store_timestamp_ms <= checkpoint.min_timestamp()
        ):
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


def _scan_to_end(layout: StoreLayout, start: int, check_crc: bool) -> tuple[int, str, int, str | None]:
    process_offset, checked = start, 0
    for event in scan_commitlog(layout.commitlog, start, check_crc=check_crc, read_body=False):
        if isinstance(event, ScannedRecord):
            process_offset = event.physical_offset + event.record.total_size
            checked += 1
        elif isinstance(event, ScanFailure):
            return (
                process_offset,
                f"record at {event.physical_offset} fails: {event.error}",
                checked,
                str(event.error),
            )
        elif isinstance(event, SegmentEnd) and event.reason is not SegmentEndReason.BLANK:
            return (
                process_offset,
                f"{event.reason} at {event.physical_offset} in {event.segment.name}",
                checked,
                None,
            )
    return process_offset, "end of the last segment", checked, None


def _written_end(segments: tuple[SegmentFile, ...]) -> int:
    """Where written bytes end today: past the last segment's last non-zero byte."""
    if not segments:
        return 0
    last = segments[-1]
    with PreadFile(last.path) as file:
        return last.file_from_offset + file.end_of_nonzero_data()


def _queue_truncations(layout: StoreLayout, process_offset: int) -> list[QueueTruncation]:
    truncations = []
    for cq in layout.consume_queues:
        dropped = sum(1 for entry in iter_entries(cq.queue) if entry.physical_offset >= process_offset)
        if dropped:
            truncations.append(QueueTruncation(cq.topic, cq.queue_id, dropped))
    return truncations


def _stale_index_files(layout: StoreLayout, checkpoint: CheckpointValues | None) -> list[Path]:
    """After a crash, index files that end after the checkpoint's index timestamp are rebuilt, not trusted."""
    stale = []
    for path in layout.index_files:
        with PreadFile(path) as file:
            head = file.read(0, IndexHeader.SIZE)
        if len(head) < IndexHeader.SIZE:
            stale.append(path)
            continue
        end = IndexHeader.unpack(head).end_timestamp_ms
        if checkpoint is None or end > checkpoint.index_msg_timestamp:
            stale.append(path)
    return stale
