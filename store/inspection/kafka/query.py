"""`store query` for Kafka: the record at an offset (through the `.index`) or the first record at or after a
time (through the `.timeindex`, then the `.index`), in each partition of the target, as a broker's fetch and
ListOffsets find them: the index gives the position to start reading at, and the reading stops at the first
batch that holds the record.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from store.inspection.kafka.dump import BatchEvent, FindingEvent, KafkaDumpStream, RecordEvent, SegmentEvent
from store.inspection.kafka.target import kafka_target
from store.inspection.log_format import vanishing_files_are_store_changes

SCHEMA = "mqinspect.store.kafka.query/v1"


@dataclass(frozen=True)
class KafkaQueryHit:
    partition: str  # the partition directory's name
    segment: str | None  # the segment read, labelled
    start_position: int | None  # where the index said to start reading
    log_bytes_read: int
    batch: BatchEvent | None  # the batch holding the record
    record: RecordEvent | None  # None: no record at or after the offset or time
    findings: tuple[FindingEvent, ...]


@dataclass(frozen=True)
class KafkaQueryResult:
    schema: str
    format: str  # "kafka"
    root: Path
    by: str  # offset or time
    offset: int | None
    time_ms: int | None
    hits: tuple[KafkaQueryHit, ...]  # one per partition


@vanishing_files_are_store_changes
def query_kafka(
    root: Path, *, offset: int | None = None, time_ms: int | None = None, values: str = "text"
) -> KafkaQueryResult:
    target = kafka_target(Path(root))
    sources = (target.segment,) if target.segment is not None else target.partitions
    hits = tuple(_hit(source, offset, time_ms, values) for source in sources)
    return KafkaQueryResult(
        SCHEMA, "kafka", target.path, "offset" if offset is not None else "time", offset, time_ms, hits
    )


def _hit(source: Path, offset: int | None, time_ms: int | None, values: str) -> KafkaQueryHit:
    stream = KafkaDumpStream(
        source, from_offset=offset, from_time_ms=time_ms, deep=True, values=values, count=1
    )
    segment = batch = record = None
    findings: list[FindingEvent] = []
    for run in stream.batches():
        for event in run:
            if type(event) is SegmentEvent and record is None:
                segment = event
            elif type(event) is BatchEvent and record is None:
                batch = event
            elif type(event) is FindingEvent:
                findings.append(event)
            elif type(event) is RecordEvent and record is None and _matches(event, offset, time_ms):
                record = event
        if record is not None:
            break
    partition = source.parent.name if source.is_file() else source.name
    return KafkaQueryHit(
        partition,
        segment.label if segment else None,
        segment.start_position if segment else None,
        stream.log_bytes_read,
        batch if record is not None else None,
        record,
        tuple(findings),
    )


def _matches(record: RecordEvent, offset: int | None, time_ms: int | None) -> bool:
    if offset is not None:
        return record.offset >= offset
    return time_ms is None or record.timestamp_ms >= time_ms
