"""What several Kafka commands read the same way: a partition's name, the broker's checkpoints of a log dir,
and where a segment's log ends (found from its last offset index entry, not by reading the whole file)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from store.kafka.batches import LogEntry, LogReader, RecordBatch
from store.kafka.checkpoints import OffsetCheckpoint
from store.kafka.files import read_kafka_file
from store.kafka.findings import FileRead, Finding
from store.kafka.indexes import position_for_offset
from store.kafka.layout import BROKER_CHECKPOINTS, SegmentFiles, parse_partition_dir


def partition_key(directory: Path) -> tuple[str, int] | None:
    """(topic, partition) of a `topic-N` directory, as the broker's checkpoints key it."""
    name = parse_partition_dir(directory.name)
    return None if name is None else (name.topic, name.partition)


@dataclass(frozen=True)
class BrokerCheckpoints:
    """The offsets the broker checkpoints per partition, each file's as read (None when absent)."""

    reads: dict[str, FileRead[OffsetCheckpoint] | None]

    def offset(self, name: str, key: tuple[str, int] | None) -> int | None:
        read = self.reads.get(name)
        if read is None or read.value is None or key is None:
            return None
        return read.value.offsets().get(key)

    @property
    def findings(self) -> tuple[Finding, ...]:
        return tuple(finding for read in self.reads.values() if read is not None for finding in read.findings)


def broker_checkpoints(log_dir: Path | None) -> BrokerCheckpoints:
    reads: dict[str, FileRead | None] = {}
    for name in BROKER_CHECKPOINTS:
        path = None if log_dir is None else log_dir / name
        reads[name] = read_kafka_file(path) if path is not None and path.is_file() else None
    return BrokerCheckpoints(reads)


@dataclass(frozen=True)
class LogTail:
    """How a segment's log ends: the next offset after its last entry (None when it holds none), the last
    entry's max timestamp, where reading stopped, and what stopped it."""

    next_offset: int | None
    max_timestamp: int | None
    end_position: int
    findings: tuple[Finding, ...]


def log_tail(segment: SegmentFiles, after: LogTail | None = None) -> LogTail:
    """The log read from its last offset index entry (one every 4 KiB of batches) to its end; with `after`
    (how the same log ended when read before: a segment's log only grows), from where that read stopped,
    which the batches up to there are not read again (nor the index, 2 MiB for a 1 GiB segment)."""
    start = 0
    if after is not None:
        start = after.end_position
    elif segment.index is not None:
        read = read_kafka_file(segment.index)
        if read is not None and read.value is not None and read.value.entries:
            start = position_for_offset(read.value.entries, read.value.entries[-1].offset)
    reader = LogReader(segment.log, start=start)
    last: LogEntry | None = None
    findings = []
    for item in reader:
        if isinstance(item, Finding):
            findings.append(item)
        else:
            last = item
    if last is None:
        if after is not None:  # nothing whole since: it ends as it did
            return LogTail(after.next_offset, after.max_timestamp, reader.position, tuple(findings))
        return LogTail(None, None, reader.position, tuple(findings))
    return LogTail(last.next_offset, max_timestamp(last), reader.position, tuple(findings))


def max_timestamp(entry: LogEntry) -> int:
    """A v2 batch's maxTimestamp, a legacy message's timestamp (-1: none)."""
    return entry.max_timestamp if isinstance(entry, RecordBatch) else entry.timestamp


def first_offset(entry: LogEntry) -> int:
    """A v2 batch's base offset, a legacy message's offset."""
    return entry.base_offset if isinstance(entry, RecordBatch) else entry.offset
