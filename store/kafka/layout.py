"""How a Kafka log directory is laid out, from names alone (LogFileUtils, LogManager, UnifiedLog).

<log.dir>/meta.properties, .kafka_cleanshutdown, the broker checkpoints (BROKER_CHECKPOINTS), .lock
<log.dir>/<topic>-<partition>/                    a partition ("-delete", "-future", "-stray" suffixed
                                                  directories are being deleted, moved or are strays)
    <20-digit base offset>.log|.index|.timeindex|.txnindex   a segment's files
    <20-digit offset>.snapshot                    producer state as of that offset
    leader-epoch-checkpoint, partition.metadata
A segment file may carry a second suffix: .deleted (waiting for async deletion), .cleaned (the log
cleaner's output before the swap), .swap (being swapped in).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

OFFSET_DIGITS = 20  # filenamePrefixFromOffset: NumberFormat with 20 minimum integer digits
SEGMENT_KINDS = ("log", "index", "timeindex", "txnindex")
FILE_KINDS = (*SEGMENT_KINDS, "snapshot")
STATE_SUFFIXES = ("deleted", "cleaned", "swap")
META_PROPERTIES = "meta.properties"
CLEAN_SHUTDOWN = ".kafka_cleanshutdown"
LEADER_EPOCH_CHECKPOINT = "leader-epoch-checkpoint"
PARTITION_METADATA = "partition.metadata"
QUORUM_STATE = "quorum-state"  # the KRaft metadata partition's voting state
BROKER_CHECKPOINTS = (
    "recovery-point-offset-checkpoint",
    "replication-offset-checkpoint",  # the high watermarks
    "log-start-offset-checkpoint",
    "cleaner-offset-checkpoint",
)
PARTITION_DIR_SUFFIXES = ("delete", "future", "stray")

_FILE_NAME = re.compile(r"^(\d{20})\.(log|index|timeindex|txnindex|snapshot)(?:\.(deleted|cleaned|swap))?$")
_PARTITION_DIR = re.compile(r"^(.+)-(\d+)(?:\.([0-9a-f]{32}|[A-Za-z0-9_-]{22})-(delete|future|stray))?$")


@dataclass(frozen=True, slots=True)
class LogFileName:
    """What a segment or snapshot file's name says."""

    offset: int  # a segment's base offset; a snapshot's offset
    kind: str  # log, index, timeindex, txnindex, snapshot
    state: str | None = None  # deleted, cleaned, swap


@dataclass(frozen=True, slots=True)
class PartitionName:
    topic: str
    partition: int
    state: str | None = None  # delete, future, stray


def file_name(offset: int, kind: str, state: str | None = None) -> str:
    return f"{offset:0{OFFSET_DIGITS}d}.{kind}" + (f".{state}" if state else "")


def parse_file_name(name: str) -> LogFileName | None:
    match = _FILE_NAME.match(name)
    if match is None:
        return None
    return LogFileName(int(match[1]), match[2], match[3])


def parse_partition_dir(name: str) -> PartitionName | None:
    """`topic-N` (or a -delete/-future/-stray directory); None for any other name."""
    match = _PARTITION_DIR.match(name)
    if match is None:
        return None
    return PartitionName(match[1], int(match[2]), match[4])


@dataclass(frozen=True, slots=True)
class SegmentFiles:
    """One segment's files by kind (None when absent), keyed by its base offset."""

    base_offset: int
    log: Path | None = None
    index: Path | None = None
    timeindex: Path | None = None
    txnindex: Path | None = None
    states: tuple[str, ...] = ()  # the state suffixes any of its files carry


@dataclass(frozen=True, slots=True)
class PartitionFiles:
    """A partition directory's files, from names alone (nothing is read)."""

    directory: Path
    name: PartitionName | None
    segments: tuple[SegmentFiles, ...]  # in base-offset order
    snapshots: tuple[Path, ...]  # in offset order
    leader_epoch_checkpoint: Path | None
    partition_metadata: Path | None
    others: tuple[Path, ...] = field(default=())  # files Kafka does not name this way (quorum-state, ...)


def list_partition(directory: Path) -> PartitionFiles:
    directory = Path(directory)
    segments: dict[tuple[int, str | None], dict] = {}
    snapshots, others = [], []
    for path in sorted(directory.iterdir()):
        parsed = parse_file_name(path.name)
        if parsed is None:
            if path.name not in (LEADER_EPOCH_CHECKPOINT, PARTITION_METADATA):
                others.append(path)
        elif parsed.kind == "snapshot":
            snapshots.append((parsed.offset, path))
        else:
            files = segments.setdefault((parsed.offset, parsed.state), {})
            files[parsed.kind] = path
    ordered = sorted(segments.items(), key=lambda item: (item[0][0], item[0][1] or ""))
    return PartitionFiles(
        directory,
        parse_partition_dir(directory.name),
        tuple(
            SegmentFiles(base, **files, states=(state,) if state else ()) for (base, state), files in ordered
        ),
        tuple(path for _, path in sorted(snapshots)),
        _present(directory / LEADER_EPOCH_CHECKPOINT),
        _present(directory / PARTITION_METADATA),
        tuple(others),
    )


def _present(path: Path) -> Path | None:
    return path if path.exists() else None


def is_log_dir(path: Path) -> bool:
    """A `log.dirs` entry: it has meta.properties."""
    return (Path(path) / META_PROPERTIES).is_file()


def is_partition_dir(path: Path) -> bool:
    """A `topic-N` directory holding at least one segment file."""
    path = Path(path)
    if not path.is_dir() or parse_partition_dir(path.name) is None:
        return False
    return any(parse_file_name(child.name) for child in path.iterdir())


def partition_dirs(log_dir: Path) -> tuple[Path, ...]:
    """The partition directories of a log dir, by topic then partition number."""
    found = []
    for child in Path(log_dir).iterdir():
        name = parse_partition_dir(child.name)
        if name is not None and child.is_dir():
            found.append(((name.topic, name.partition, name.state or ""), child))
    return tuple(path for _, path in sorted(found))
