"""What a path given to a Kafka command is (`kafka_target`): a log dir, a partition directory or one segment
file, and how a partition's file is labelled in tables and traced events."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from store.kafka.layout import is_log_dir, is_partition_dir, parse_file_name, partition_dirs


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
