"""What a path given to a Kafka command is (`kafka_target`): a log dir, a partition directory or one segment
file, and how a partition's file is labelled in tables and traced events."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from store.inspection.log_format import StoreFile
from store.kafka.layout import (
    SegmentFiles,
    is_log_dir,
    is_partition_dir,
    list_partition,
    parse_file_name,
    partition_dirs,
)

# A file's kind in store_files, by its suffix (StoreFile.kind: what trace and residency name it by)
FILE_KIND_NAMES = {
    "log": "log",
    "index": "offset_index",
    "timeindex": "time_index",
    "txnindex": "txn_index",
    "snapshot": "snapshot",
}


class TargetKind:
    LOG_DIR = "log_dir"
    PARTITION = "partition"
    SEGMENT = "segment"


@dataclass(frozen=True)
class KafkaTarget:
    """What a path given to a command is: a log dir, a partition directory or one segment file."""

    path: Path
    kind: str
    log_dir: Path | None  # where the broker's checkpoints are (the partition's parent when it has them)
    partitions: tuple[Path, ...]  # partition directories, by topic then partition
    segment: Path | None = None  # the one .log of a SEGMENT target


def kafka_target(path: Path) -> KafkaTarget:
    """The target at `path`, which KAFKA recognises."""
    path = Path(path)
    if path.is_file():
        parent = path.parent
        return KafkaTarget(path, TargetKind.SEGMENT, _log_dir_above(parent), (parent,), path)
    if is_partition_dir(path) and not is_log_dir(path):
        return KafkaTarget(path, TargetKind.PARTITION, _log_dir_above(path), (path,))
    return KafkaTarget(path, TargetKind.LOG_DIR, path, partition_dirs(path))


def _log_dir_above(partition: Path) -> Path | None:
    return partition.parent if is_log_dir(partition.parent) else None


def is_segment_log(path: Path) -> bool:
    parsed = parse_file_name(path.name)
    return parsed is not None and parsed.kind == "log" and path.is_file()


def has_partitions(path: Path) -> bool:
    return any(is_partition_dir(child) for child in partition_dirs(path))


def file_label(path: Path) -> str:
    """How tables and traced events name a partition's file: "foo-0/00000000000000000000.log"."""
    return f"{path.parent.name}/{path.name}"


def kafka_store_files(root: Path) -> tuple[StoreFile, ...]:
    """Each partition's segments by base offset (.log, .index, .timeindex, .txnindex), then its producer
    snapshots; partitions by topic, then number. A segment target: its .log and that segment's indexes."""
    target = kafka_target(root)
    files: list[StoreFile] = []
    for directory in target.partitions:
        listing = list_partition(directory)
        for segment in listing.segments:
            paths = (segment.log, segment.index, segment.timeindex, segment.txnindex)
            if target.segment is not None and target.segment not in paths:
                continue
            files += [_store_file(path) for path in paths if path is not None]
        if target.segment is None:
            files += [_store_file(path) for path in listing.snapshots]
    return tuple(files)


def _store_file(path: Path) -> StoreFile:
    parsed = parse_file_name(path.name)
    kind = FILE_KIND_NAMES[parsed.kind] if parsed is not None else "other"
    return StoreFile(path, file_label(path), kind)


def segments_to_read(directory: Path, only_log: Path | None = None) -> list[SegmentFiles]:
    """A partition's live segments (none of .deleted, .cleaned, .swap) in base-offset order; with `only_log`,
    the one segment of that .log, whatever its state (a .log.deleted file named on the command line)."""
    segments = list_partition(directory).segments
    if only_log is not None:
        return [segment for segment in segments if segment.log == only_log]
    return [segment for segment in segments if not segment.states]
