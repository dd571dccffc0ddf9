"""`store segments` for Kafka: one row per file of `KAFKA.store_files` (each segment's .log, .index,
.timeindex and .txnindex, then the producer snapshots), with its size, the offsets it covers and its entries.

A closed segment's log ends where the next segment's base offset starts (its name says so); the last one's
end is read from its last offset index entry on. Index files are read whole (they are small: Kafka caps them
at 10 MiB); nothing else is. The CLI measures residency before this reads anything and adds it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from store.inspection.kafka.reading import log_tail
from store.inspection.kafka.target import kafka_store_files, kafka_target, segments_to_read
from store.inspection.log_format import vanishing_files_are_store_changes
from store.inspection.rocketmq.record_views import iso_time_ms, mtime_ms
from store.kafka.files import read_kafka_file
from store.kafka.layout import parse_file_name

SCHEMA = "mqinspect.store.kafka.segments/v1"


@dataclass(frozen=True)
class KafkaSegmentRow:
    path: Path
    label: str  # "foo-0/00000000000000000000.log"
    kind: str  # log, offset_index, time_index, txn_index, snapshot
    size_bytes: int
    base_offset: int  # from the name (a snapshot's: the offset its state is as of)
    end_offset: int | None  # a log's next offset: the next segment's base offset, or read (the last one)
    entries: int | None  # index entries (before an active index's preallocated zeros), snapshot producers
    mtime_iso: str | None
    problem: str | None  # what reading it found wrong, first finding


@dataclass(frozen=True)
class KafkaSegmentListing:
    schema: str
    format: str  # "kafka"
    root: Path
    rows: tuple[KafkaSegmentRow, ...]
    residency: Any = None  # probes.residency.segments.SegmentsResidency, added by the CLI


@vanishing_files_are_store_changes
def list_segments(root: Path) -> KafkaSegmentListing:
    root = Path(root)
    ends = _log_ends(root)
    rows = tuple(_row(file.path, file.label, file.kind, ends) for file in kafka_store_files(root))
    return KafkaSegmentListing(SCHEMA, "kafka", root, rows)


def _log_ends(root: Path) -> dict[Path, tuple[int | None, str | None]]:
    """Each live .log's end offset (and what reading its tail found wrong, if anything)."""
    ends: dict[Path, tuple[int | None, str | None]] = {}
    for directory in kafka_target(root).partitions:
        segments = [segment for segment in segments_to_read(directory) if segment.log is not None]
        for number, segment in enumerate(segments):
            if number + 1 < len(segments):
                ends[segment.log] = (segments[number + 1].base_offset, None)
            else:
                tail = log_tail(segment)
                problem = str(tail.findings[0]) if tail.findings else None
                end = tail.next_offset if tail.next_offset is not None else segment.base_offset
                ends[segment.log] = (end, problem)
    return ends


def _row(path: Path, label: str, kind: str, ends: dict) -> KafkaSegmentRow:
    stat = os.stat(path)
    parsed = parse_file_name(path.name)
    entries = problem = end = None
    if kind == "log":
        end, problem = ends.get(path, (None, None))
    else:
        read = read_kafka_file(path)
        if read is not None:
            problem = str(read.findings[0]) if read.findings else None
            if read.value is not None:
                entries = len(read.value.entries)
    return KafkaSegmentRow(
        path,
        label,
        kind,
        stat.st_size,
        parsed.offset if parsed else 0,
        end,
        entries,
        iso_time_ms(mtime_ms(stat.st_mtime)),
        problem,
    )
