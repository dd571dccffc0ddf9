"""Every file of a log directory written by a real Kafka 4.0 broker (shared/fixtures/kafka-4.0-kraft-logs)
reads as Kafka wrote it, and kafka-python agrees on every batch."""

from __future__ import annotations

from pathlib import Path

from store.kafka import layout
from store.kafka.batches import RecordBatch, scan_log
from store.kafka.checkpoints import (
    CleanShutdown,
    EpochEntry,
    LeaderEpochCheckpoint,
    OffsetCheckpoint,
    OffsetCheckpointEntry,
    PartitionMetadata,
)
from store.kafka.cluster_metadata import decode_metadata_record
from store.kafka.files import read_kafka_file
from store.kafka.indexes import OffsetIndexEntry, TimeIndexEntry
from store.kafka.records import decode_control_record, decode_records

METADATA = "__cluster_metadata-0"
SEGMENT = "00000000000000000000"


def test_the_metadata_log_has_123_batches_and_129_records_at_offsets_0_to_128(kafka_fixture: Path):
    log = kafka_fixture / METADATA / f"{SEGMENT}.log"
    scan = scan_log(log)
    assert (len(scan.entries), scan.findings, scan.stopped, scan.end_position) == (123, (), "end", 9333)
    assert all(isinstance(batch, RecordBatch) and batch.crc_valid for batch in scan.entries)
    offsets = [record.offset for batch in scan.entries for record in decode_records(batch, log).records]
    assert offsets == list(range(129))
    positions = [batch.position for batch in scan.entries]
    assert positions == sorted(positions) and positions[0] == 0


def test_kafka_python_agrees_on_every_batch_of_the_fixture(kafka_fixture: Path, kafka_python_agrees):
    assert kafka_python_agrees(kafka_fixture / METADATA / f"{SEGMENT}.log") == 129
    assert kafka_python_agrees(kafka_fixture / "foo-0" / f"{SEGMENT}.log") == 1


def test_foo_holds_one_record_hello_world(kafka_fixture: Path):
    log = kafka_fixture / "foo-0" / f"{SEGMENT}.log"
    (batch,) = scan_log(log).entries
    (record,) = decode_records(batch, log).records
    assert (record.offset, record.key, record.value, record.headers) == (0, None, b"Hello World!", ())
    assert (batch.producer_id, batch.producer_epoch, batch.base_sequence, record.sequence) == (0, 0, 0, 0)
    assert (batch.compression, batch.timestamp_type, record.timestamp) == (
        "none",
        "CreateTime",
        1726045973899,
    )


def test_the_first_metadata_batch_is_a_leader_change_control_record(kafka_fixture: Path):
    log = kafka_fixture / METADATA / f"{SEGMENT}.log"
    first = scan_log(log, max_bytes=91).entries[0]
    assert first.is_control
    control = decode_control_record(decode_records(first, log).records[0])
    assert (control.type_name, control.leader_id, control.voters, control.granting_voters) == (
        "LEADER_CHANGE",
        1,
        (1,),
        (1,),
    )


def test_every_metadata_record_is_named_by_its_type(kafka_fixture: Path):
    log = kafka_fixture / METADATA / f"{SEGMENT}.log"
    names = {}
    for batch in scan_log(log).entries:
        if batch.is_control:
            continue
        for record in decode_records(batch, log).records:
            metadata = decode_metadata_record(record.value)
            names[metadata.type_name] = names.get(metadata.type_name, 0) + 1
    assert names["NoOpRecord"] == 115
    assert {"RegisterBrokerRecord", "TopicRecord", "PartitionRecord", "FeatureLevelRecord"} <= set(names)
    assert not [name for name in names if name.startswith("unknown")]


def test_indexes_point_at_batch_starts_and_carry_their_last_offset(kafka_fixture: Path):
    directory = kafka_fixture / METADATA
    index = read_kafka_file(directory / f"{SEGMENT}.index")
    assert index.findings == ()
    assert index.value.entries == (OffsetIndexEntry(57, 4154), OffsetIndexEntry(114, 8258))
    batches = {batch.position: batch for batch in scan_log(directory / f"{SEGMENT}.log").entries}
    assert [batches[entry.position].last_offset for entry in index.value.entries] == [57, 114]
    timeindex = read_kafka_file(directory / f"{SEGMENT}.timeindex")
    assert [entry.offset for entry in timeindex.value.entries] == [57, 114, 128]
    assert timeindex.value.entries[0] == TimeIndexEntry(1726045967500, 57)
    assert read_kafka_file(kafka_fixture / "foo-0" / f"{SEGMENT}.index").value.entries == ()


def test_producer_snapshots_check_their_crc(kafka_fixture: Path):
    empty = read_kafka_file(kafka_fixture / METADATA / "00000000000000000129.snapshot")
    assert (empty.findings, empty.value.offset, empty.value.crc_valid, empty.value.entries) == (
        (),
        129,
        True,
        (),
    )
    one = read_kafka_file(kafka_fixture / "foo-0" / "00000000000000000001.snapshot")
    assert one.findings == () and one.value.crc_valid
    (producer,) = one.value.entries
    assert (producer.producer_id, producer.last_sequence, producer.last_offset, producer.timestamp) == (
        0,
        0,
        0,
        1726045973899,
    )
    assert producer.current_txn_first_offset == -1


def test_checkpoints_and_properties(kafka_fixture: Path):
    read = {path.name: read_kafka_file(path) for path in kafka_fixture.iterdir() if path.is_file()}
    assert read["recovery-point-offset-checkpoint"].value == OffsetCheckpoint(
        0, (OffsetCheckpointEntry("foo", 0, 1),)
    )
    assert read["replication-offset-checkpoint"].value.offsets() == {("foo", 0): 1}
    assert read["log-start-offset-checkpoint"].value == OffsetCheckpoint(0, ())
    assert read["cleaner-offset-checkpoint"].value == OffsetCheckpoint(0, ())  # an empty file
    assert read[".kafka_cleanshutdown"].value == CleanShutdown(0, 6)
    meta = read["meta.properties"].value
    assert (meta.version, meta.cluster_id, meta.node_id, meta.directory_id) == (
        1,
        "rwd2jqiwRaCycLq7mKVHXA",
        1,
        "AiSXPLrdRM-HREWplhnaNA",
    )
    assert read["README.md"] is None  # not one of Kafka's files
    assert not [finding for value in read.values() if value for finding in value.findings]


def test_partition_files(kafka_fixture: Path):
    metadata = read_kafka_file(kafka_fixture / METADATA / "leader-epoch-checkpoint")
    assert metadata.value == LeaderEpochCheckpoint(0, (EpochEntry(1, 0),))
    assert read_kafka_file(kafka_fixture / "foo-0" / "partition.metadata").value == PartitionMetadata(
        0, "v9meXjI1RVKB-NSvF0GXDA"
    )
    quorum = read_kafka_file(kafka_fixture / METADATA / "quorum-state").value
    assert (quorum.leader_id, quorum.leader_epoch, quorum.voters) == (1, 1, (1,))


def test_the_layout_is_read_from_names(kafka_fixture: Path):
    assert layout.is_log_dir(kafka_fixture)
    assert [path.name for path in layout.partition_dirs(kafka_fixture)] == [METADATA, "foo-0"]
    files = layout.list_partition(kafka_fixture / METADATA)
    assert files.name == layout.PartitionName("__cluster_metadata", 0)
    (segment,) = files.segments
    assert (segment.base_offset, segment.log.name, segment.index.name, segment.txnindex) == (
        0,
        f"{SEGMENT}.log",
        f"{SEGMENT}.index",
        None,
    )
    assert [path.name for path in files.snapshots] == ["00000000000000000129.snapshot"]
    assert [path.name for path in files.others] == ["quorum-state"]
    assert layout.is_partition_dir(kafka_fixture / "foo-0") and not layout.is_partition_dir(kafka_fixture)


def test_file_names_with_state_suffixes_and_partition_directory_names():
    assert layout.parse_file_name("00000000000000001234.log.deleted") == layout.LogFileName(
        1234, "log", "deleted"
    )
    assert layout.parse_file_name("00000000000000000000.index.swap") == layout.LogFileName(0, "index", "swap")
    assert layout.parse_file_name("00000000000000000007.timeindex.cleaned").state == "cleaned"
    assert layout.parse_file_name("00000000000000000129.snapshot") == layout.LogFileName(129, "snapshot")
    for foreign in ("0000000000000000001.log", "00000000000000000001.log.bak", "leader-epoch-checkpoint"):
        assert layout.parse_file_name(foreign) is None
    assert layout.file_name(1234, "timeindex") == "00000000000000001234.timeindex"
    assert layout.parse_partition_dir("my-topic-12") == layout.PartitionName("my-topic", 12)
    deleting = layout.parse_partition_dir("orders-3.0f5e2c1a9b8d4e7f8a6b5c4d3e2f1a0b-delete")
    assert deleting == layout.PartitionName("orders", 3, "delete")
    assert layout.parse_partition_dir("no_partition_number") is None


def test_index_lookups_find_where_to_start_reading(kafka_fixture: Path):
    from store.kafka.indexes import offset_for_time, position_for_offset

    directory = kafka_fixture / METADATA
    entries = read_kafka_file(directory / f"{SEGMENT}.index").value.entries
    assert [position_for_offset(entries, offset) for offset in (0, 56, 57, 100, 114, 500)] == [
        0,
        0,
        4154,
        4154,
        8258,
        8258,
    ]
    times = read_kafka_file(directory / f"{SEGMENT}.timeindex").value.entries
    assert offset_for_time(times, 0, 0) == 0
    assert offset_for_time(times, 1726045967500, 0) == 0  # an entry (T, O): records after T come after O
    assert offset_for_time(times, 1726045967501, 0) == 57
    batches = scan_log(directory / f"{SEGMENT}.log").entries
    for offset in range(129):  # reading from the looked-up position reaches the offset
        start = position_for_offset(entries, offset)
        assert any(b.position >= start and b.base_offset <= offset <= b.last_offset for b in batches)
