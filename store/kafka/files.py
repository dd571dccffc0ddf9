"""Any file of a Kafka log directory but a `.log`, read by what its name says it is (as DumpLogSegments
dispatches on the suffix): `read_kafka_file(path)` gives a FileRead of the file's dataclass, or None when
the name is not one of Kafka's. `.log` segments are read batch by batch with `store.kafka.batches.LogReader`.
"""

from __future__ import annotations

from pathlib import Path

from store.kafka import checkpoints, layout
from store.kafka.findings import FileRead
from store.kafka.indexes import read_offset_index, read_time_index, read_txn_index
from store.kafka.snapshots import read_producer_snapshot

TEXT_FILES = {
    layout.META_PROPERTIES: checkpoints.decode_meta_properties,
    layout.CLEAN_SHUTDOWN: checkpoints.decode_clean_shutdown,
    layout.LEADER_EPOCH_CHECKPOINT: checkpoints.decode_leader_epoch_checkpoint,
    layout.PARTITION_METADATA: checkpoints.decode_partition_metadata,
    layout.QUORUM_STATE: checkpoints.decode_quorum_state,
    **{name: checkpoints.decode_offset_checkpoint for name in layout.BROKER_CHECKPOINTS},
}


def read_kafka_file(path: Path) -> FileRead | None:
    """The decoded contents of an index, snapshot, checkpoint or properties file; None for a `.log` (read
    it with LogReader) and for a name Kafka does not give its files."""
    path = Path(path)
    if path.name in TEXT_FILES:
        return checkpoints.read_text_file(path, TEXT_FILES[path.name])
    parsed = layout.parse_file_name(path.name)
    if parsed is None or parsed.kind == "log":
        return None
    if parsed.kind == "index":
        return read_offset_index(path, parsed.offset)
    if parsed.kind == "timeindex":
        return read_time_index(path, parsed.offset)
    if parsed.kind == "txnindex":
        return read_txn_index(path)
    return read_producer_snapshot(path, parsed.offset)
