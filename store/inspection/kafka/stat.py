"""`store stat` for Kafka: each partition's segments and base offsets, its log start and end offsets, the
recovery point and high watermark the broker checkpointed, its leader epochs and producers (from the newest
producer snapshot), and whether the broker shut down cleanly.

The log end offset is found by reading the last segment from its last offset index entry; nothing else of
the logs is read. Files that do not decode are findings in the snapshot, not errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from store.inspection.kafka.reading import broker_checkpoints, log_tail, partition_key
from store.inspection.kafka.target import kafka_target, segments_to_read
from store.inspection.log_format import vanishing_files_are_store_changes
from store.kafka.checkpoints import EpochEntry
from store.kafka.files import read_kafka_file
from store.kafka.findings import Finding
from store.kafka.layout import CLEAN_SHUTDOWN, META_PROPERTIES, list_partition
from store.kafka.snapshots import ProducerEntry

SCHEMA = "mqinspect.store.kafka.stat/v1"


@dataclass(frozen=True)
class KafkaPartitionStat:
    topic: str | None
    partition: int | None
    directory: Path
    topic_id: str | None  # partition.metadata
    segment_count: int
    base_offsets: tuple[int, ...]
    size_bytes: int  # the .log files' bytes
    log_start_offset: int | None  # log-start-offset-checkpoint, else the first segment's base offset
    log_end_offset: int | None  # the next offset after the last segment's last batch
    recovery_point: int | None  # recovery-point-offset-checkpoint (None: not checkpointed)
    high_watermark: int | None  # replication-offset-checkpoint (None: not checkpointed)
    leader_epochs: tuple[EpochEntry, ...]  # leader-epoch-checkpoint: epoch and its start offset
    producer_snapshot_offset: int | None  # the newest .snapshot's offset
    producers: tuple[ProducerEntry, ...]
    findings: tuple[Finding, ...]


@dataclass(frozen=True)
class KafkaStoreStat:
    schema: str
    format: str  # "kafka"
    root: Path
    target: str  # log_dir, partition or segment
    cluster_id: str | None
    node_id: int | None
    clean_shutdown: bool | None  # .kafka_cleanshutdown present; None: no log dir to say so
    partitions: tuple[KafkaPartitionStat, ...]
    findings: tuple[Finding, ...]  # of the log dir's own files


@vanishing_files_are_store_changes
def kafka_stat(root: Path) -> KafkaStoreStat:
    target = kafka_target(Path(root))
    checkpoints = broker_checkpoints(target.log_dir)
    findings = list(checkpoints.findings)
    cluster_id = node_id = None
    clean_shutdown = None
    if target.log_dir is not None:
        meta = (
            read_kafka_file(target.log_dir / META_PROPERTIES)
            if (target.log_dir / META_PROPERTIES).is_file()
            else None
        )
        if meta is not None:
            findings += meta.findings
            if meta.value is not None:
                cluster_id, node_id = meta.value.cluster_id, meta.value.node_id
        clean_shutdown = (target.log_dir / CLEAN_SHUTDOWN).is_file()
    partitions = tuple(
        _partition_stat(directory, checkpoints, target.segment) for directory in target.partitions
    )
    return KafkaStoreStat(
        SCHEMA,
        "kafka",
        target.path,
        target.kind,
        cluster_id,
        node_id,
        clean_shutdown,
        partitions,
        tuple(findings),
    )


def _partition_stat(directory: Path, checkpoints, only_log: Path | None) -> KafkaPartitionStat:
    listing = list_partition(directory)
    segments = tuple(segment for segment in segments_to_read(directory, only_log) if segment.log is not None)
    key = partition_key(directory)
    findings: list[Finding] = []
    topic_id = _read_value(listing.partition_metadata, findings)
    epochs = _read_value(listing.leader_epoch_checkpoint, findings)
    snapshot = _read_value(listing.snapshots[-1], findings) if listing.snapshots else None
    log_end = None
    if segments:
        tail = log_tail(segments[-1])
        findings += tail.findings
        log_end = tail.next_offset if tail.next_offset is not None else segments[-1].base_offset
    checkpointed_start = checkpoints.offset("log-start-offset-checkpoint", key)
    first_base = segments[0].base_offset if segments else None
    return KafkaPartitionStat(
        key[0] if key else None,
        key[1] if key else None,
        directory,
        topic_id.topic_id if topic_id is not None else None,
        len(segments),
        tuple(segment.base_offset for segment in segments),
        sum(segment.log.stat().st_size for segment in segments),
        checkpointed_start if checkpointed_start is not None and only_log is None else first_base,
        log_end,
        checkpoints.offset("recovery-point-offset-checkpoint", key),
        checkpoints.offset("replication-offset-checkpoint", key),
        epochs.entries if epochs is not None else (),
        snapshot.offset if snapshot is not None else None,
        snapshot.entries if snapshot is not None else (),
        tuple(findings),
    )


def _read_value(path: Path | None, findings: list[Finding]):
    """The decoded file at `path` (None when absent or undecodable), its findings added to `findings`."""
    if path is None:
        return None
    read = read_kafka_file(path)
    if read is None:
        return None
    findings += read.findings
    return read.value
