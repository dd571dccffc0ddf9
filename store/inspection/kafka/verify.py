"""`store verify` for Kafka: every file of a log dir (or partition, or segment) checked, every problem a
finding with its file and byte position.

Per segment: each batch's CRC (CRC-32C for v2, CRC-32 for v0/v1) and codec, its records decoded (offsets
increasing inside the batch, the last one the header's, the count the header's), batch offsets increasing
from one batch to the next and from one segment to the next, the first batch not below the base offset the
file name gives, trailing bytes that are no batch (a torn write, garbage) at their position; the `.index`
(size a multiple of 8, offsets and positions increasing, each position a batch's start and its offset inside
that batch), the `.timeindex` (size a multiple of 12, timestamps and offsets never decreasing, each entry's
offset inside a batch and its timestamp the largest up to that batch, as the broker appends them), the
`.txnindex`. Per partition: a `.log` at all, the producer snapshots' CRCs, leader-epoch-checkpoint and
partition.metadata. Per log dir: meta.properties, .kafka_cleanshutdown and the broker's checkpoints.

Offsets inside a batch are checked increasing, not contiguous: the log cleaner keeps a compacted batch's
base and last offsets and drops records between them.
"""

from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass, field
from pathlib import Path

from store.inspection.kafka.reading import first_offset, max_timestamp
from store.inspection.kafka.target import TargetKind, kafka_target, segments_to_read
from store.inspection.log_format import vanishing_files_are_store_changes
from store.kafka.batches import LogEntry, LogReader
from store.kafka.files import TEXT_FILES, read_kafka_file
from store.kafka.findings import Finding
from store.kafka.indexes import OFFSET_ENTRY, TIME_ENTRY
from store.kafka.layout import SegmentFiles, list_partition
from store.kafka.records import decode_records, record_findings

SCHEMA = "mqinspect.store.kafka.verify/v1"


class CheckKind:
    """Finding kinds of the checks across entries and files (FindingKind has the others)."""

    NO_LOG = "no-log"  # a partition directory without a .log
    BELOW_BASE_OFFSET = "below-base-offset"  # a batch whose offsets are below the file name's
    OFFSET_ORDER = "offset-order"  # a batch not after the previous one
    INDEX_ENTRY = "index-entry"  # an .index entry off a batch boundary, past the log, out of order
    TIME_INDEX_ENTRY = "time-index-entry"  # a .timeindex entry out of order or not as the batches say


@dataclass(frozen=True)
class KafkaVerifyReport:
    schema: str
    format: str  # "kafka"
    root: Path
    files_checked: int
    batches_checked: int
    records_checked: int
    findings: tuple[Finding, ...]

    @property
    def ok(self) -> bool:
        return not self.findings


@dataclass
class _Tally:
    files: int = 0
    batches: int = 0
    records: int = 0
    findings: list[Finding] = field(default_factory=list)

    def read(self, path: Path) -> object | None:
        """A checkpoint, index, snapshot or properties file decoded, its findings kept."""
        self.files += 1
        read = read_kafka_file(path)
        if read is None:
            return None
        self.findings += read.findings
        return read.value


@vanishing_files_are_store_changes
def verify_kafka(root: Path) -> KafkaVerifyReport:
    target = kafka_target(Path(root))
    tally = _Tally()
    if target.kind == TargetKind.LOG_DIR:  # a partition or segment named alone: its own files only
        for name in TEXT_FILES:
            if (target.log_dir / name).is_file() and name in _LOG_DIR_FILES:
                tally.read(target.log_dir / name)
    for directory in target.partitions:
        _verify_partition(directory, target.segment, tally)
    return KafkaVerifyReport(
        SCHEMA,
        "kafka",
        target.path,
        tally.files,
        tally.batches,
        tally.records,
        tuple(tally.findings),
    )


_PARTITION_FILES = ("leader-epoch-checkpoint", "partition.metadata", "quorum-state")
_LOG_DIR_FILES = frozenset(TEXT_FILES) - frozenset(_PARTITION_FILES)


def _verify_partition(directory: Path, only_log: Path | None, tally: _Tally) -> None:
    listing = list_partition(directory)
    segments = segments_to_read(directory, only_log)
    if only_log is None:
        if not any(segment.log is not None for segment in segments):
            tally.findings.append(
                Finding(directory, 0, CheckKind.NO_LOG, "a partition directory without a .log segment")
            )
        for path in (*listing.snapshots, *(directory / name for name in _PARTITION_FILES)):
            if path.is_file():
                tally.read(path)
    previous_last: int | None = None
    for number, segment in enumerate(segments):
        next_base = segments[number + 1].base_offset if number + 1 < len(segments) else None
        previous_last = _verify_segment(segment, next_base, previous_last, tally)


def _verify_segment(
    segment: SegmentFiles, next_base: int | None, previous_last: int | None, tally: _Tally
) -> int | None:
    """Check one segment's files; returns the last offset its log holds (or `previous_last`)."""
    batches: list[LogEntry] = []
    if segment.log is not None:
        tally.files += 1
        previous_last = _verify_log(segment, next_base, previous_last, batches, tally)
    if segment.index is not None:
        contents = tally.read(segment.index)
        if contents is not None and segment.log is not None:
            _check_offset_index(segment.index, contents.entries, batches, tally)
    if segment.timeindex is not None:
        contents = tally.read(segment.timeindex)
        if contents is not None and segment.log is not None:
            _check_time_index(segment.timeindex, contents.entries, batches, tally)
    if segment.txnindex is not None:
        tally.read(segment.txnindex)
    return previous_last


def _verify_log(
    segment: SegmentFiles, next_base: int | None, previous_last: int | None, batches: list, tally: _Tally
) -> int | None:
    path = segment.log
    for item in LogReader(path):
        if isinstance(item, Finding):
            tally.findings.append(item)
            continue
        batches.append(item)
        tally.batches += 1
        first = first_offset(item)
        if first < segment.base_offset:
            message = f"offset {first} is below the segment's base offset {segment.base_offset} (its name)"
            tally.findings.append(Finding(path, item.position, CheckKind.BELOW_BASE_OFFSET, message))
        if next_base is not None and item.last_offset >= next_base:
            message = f"offset {item.last_offset} is at or past the next segment's base offset {next_base}"
            tally.findings.append(Finding(path, item.position, CheckKind.OFFSET_ORDER, message))
        if previous_last is not None and first <= previous_last:
            message = (
                f"batch at offset {first} does not follow the previous batch's last offset {previous_last}"
            )
            tally.findings.append(Finding(path, item.position, CheckKind.OFFSET_ORDER, message))
        previous_last = max(item.last_offset, previous_last if previous_last is not None else -1)
        if item.crc_valid:  # a batch whose CRC fails has its finding already; its records are not trusted
            decoded = decode_records(item, path)
            tally.records += len(decoded)
            tally.findings += record_findings(path, item, decoded)
    return previous_last


def _check_entries(
    path: Path, entries: tuple, entry_bytes: int, kind: str, problem_of, tally: _Tally
) -> None:
    """Each index entry through `problem_of(number, entry, previous)`: a finding at its byte position."""
    previous = None
    for number, entry in enumerate(entries):
        problem = problem_of(number, entry, previous)
        if problem:
            tally.findings.append(Finding(path, number * entry_bytes, kind, problem))
        previous = entry


def _check_offset_index(path: Path, entries: tuple, batches: list, tally: _Tally) -> None:
    by_position = {batch.position: batch for batch in batches}
    log_end = batches[-1].next_position if batches else 0

    def problem_of(number: int, entry, previous) -> str | None:
        batch = by_position.get(entry.position)
        if previous is not None and (entry.offset <= previous.offset or entry.position <= previous.position):
            return (
                f"entry {number} (offset {entry.offset}, position {entry.position}) does not follow "
                f"offset {previous.offset}, position {previous.position}"
            )
        if entry.position >= log_end:
            return (
                f"entry {number}: position {entry.position} is past the log's last batch (ends at {log_end})"
            )
        if batch is None:
            return f"entry {number}: position {entry.position} is not the start of a batch"
        if not (first_offset(batch) <= entry.offset <= batch.last_offset):
            return (
                f"entry {number}: offset {entry.offset} is not in the batch at position {entry.position} "
                f"(offsets {first_offset(batch)}-{batch.last_offset})"
            )
        return None

    _check_entries(path, entries, OFFSET_ENTRY.size, CheckKind.INDEX_ENTRY, problem_of, tally)


def _check_time_index(path: Path, entries: tuple, batches: list, tally: _Tally) -> None:
    """Each entry is (the largest timestamp so far, the offset of the batch that has it) when appended."""
    largest_so_far = list(itertools.accumulate((max_timestamp(batch) for batch in batches), max))
    last_offsets = [batch.last_offset for batch in batches]

    def problem_of(number: int, entry, previous) -> str | None:
        if previous is not None and (entry.timestamp < previous.timestamp or entry.offset < previous.offset):
            return (
                f"entry {number} (time {entry.timestamp}, offset {entry.offset}) goes back from time "
                f"{previous.timestamp}, offset {previous.offset}"
            )
        holder = bisect.bisect_left(last_offsets, entry.offset)
        if holder == len(batches) or first_offset(batches[holder]) > entry.offset:
            return f"entry {number}: offset {entry.offset} is in no batch of the log"
        if entry.timestamp != largest_so_far[holder]:
            return (
                f"entry {number}: time {entry.timestamp} at offset {entry.offset}, but the largest "
                f"timestamp up to that batch is {largest_so_far[holder]}"
            )
        return None

    _check_entries(path, entries, TIME_ENTRY.size, CheckKind.TIME_INDEX_ENTRY, problem_of, tally)
