"""store.kafka.writer writes partitions a Kafka reader reads back: kafka-python agrees batch for batch in
every codec, and the indexes, rolls, transactions, snapshots and checkpoints are those a broker keeps."""

from __future__ import annotations

from pathlib import Path

import pytest

from store.kafka import layout
from store.kafka.batches import LogReader, scan_log
from store.kafka.compression import CODEC_NAMES
from store.kafka.files import read_kafka_file
from store.kafka.records import decode_control_record, decode_records
from store.kafka.writer import LogDirWriter, PartitionWriter, ProducerRecord

T0 = 1_700_000_000_000


def _records(count: int, batch: int) -> list[ProducerRecord]:
    """Keys, null keys, null values, empty values and headers (with a null header value)."""
    return [
        ProducerRecord(
            key=None if i % 3 == 0 else f"key-{batch}-{i}".encode(),
            value=None if i % 5 == 4 else (f"value {batch} {i} " * (i % 7)).encode(),
            headers=(("trace", f"{batch}.{i}".encode()), ("empty", None)) if i % 2 else (),
            timestamp=T0 + batch * 10 + i,
        )
        for i in range(count)
    ]


@pytest.mark.parametrize("compression", CODEC_NAMES)
def test_kafka_python_reads_back_every_batch(tmp_path: Path, compression: str, kafka_python_agrees):
    with PartitionWriter(tmp_path / "orders-0", segment_bytes=64 * 1024) as writer:
        for batch in range(40):
            writer.append(_records(1 + batch % 9, batch), compression=compression)
    logs = sorted((tmp_path / "orders-0").glob("*.log"))
    assert sum(kafka_python_agrees(log) for log in logs) == sum(1 + batch % 9 for batch in range(40))


def test_idempotent_and_transactional_batches_with_markers(tmp_path: Path, kafka_python_agrees):
    directory = tmp_path / "payments-0"
    with PartitionWriter(directory) as writer:
        writer.append(_records(3, 0), producer_id=11, producer_epoch=2, compression="zstd")
        writer.append(_records(2, 1), producer_id=12, transactional=True)
        commit = writer.end_transaction(12, commit=True, coordinator_epoch=4)
        writer.append(_records(2, 2), producer_id=12, transactional=True, compression="lz4")
        abort = writer.end_transaction(12, commit=False, coordinator_epoch=4)
        writer.append(_records(1, 3), producer_id=11, producer_epoch=2)
    log = directory / "00000000000000000000.log"
    assert kafka_python_agrees(log) == 3 + 2 + 1 + 2 + 1 + 1
    batches = scan_log(log).entries
    assert [batch.base_sequence for batch in batches if batch.producer_id == 11] == [0, 3]
    markers = [decode_control_record(decode_records(b).records[0]) for b in batches if b.is_control]
    assert [(m.type_name, m.coordinator_epoch, m.offset) for m in markers] == [
        ("COMMIT", 4, commit.base_offset),
        ("ABORT", 4, abort.base_offset),
    ]
    (aborted,) = read_kafka_file(directory / "00000000000000000000.txnindex").value.entries
    assert (aborted.producer_id, aborted.first_offset, aborted.last_offset) == (12, 6, abort.base_offset)
    snapshot = read_kafka_file(directory / "00000000000000000010.snapshot")
    assert snapshot.findings == () and snapshot.value.crc_valid
    assert {entry.producer_id: entry.last_offset for entry in snapshot.value.entries} == {11: 9, 12: 8}


def test_an_index_entry_every_4096_bytes_on_batch_boundaries_and_rolls_by_size(tmp_path: Path):
    directory = tmp_path / "events-0"
    with PartitionWriter(directory, segment_bytes=50_000) as writer:
        written = [writer.append(_records(4, batch)) for batch in range(600)]
    files = layout.list_partition(directory)
    assert len(files.segments) > 2
    assert all(path.stat().st_size <= 50_000 for path in directory.glob("*.log"))
    by_segment: dict[Path, list] = {}
    for batch in written:
        by_segment.setdefault(batch.segment, []).append(batch)
    for segment in files.segments:
        batches = by_segment[segment.log]
        assert batches[0].base_offset == segment.base_offset  # the name is the base offset
        expected, since = [], 0
        for batch in batches:  # LogSegment.append: the entry comes after more than 4096 bytes
            if since > 4096:
                expected.append((batch.last_offset, batch.position))
                since = 0
            since += batch.size_bytes
        entries = read_kafka_file(segment.index).value.entries
        assert [(entry.offset, entry.position) for entry in entries] == expected
        times = read_kafka_file(segment.timeindex).value.entries
        assert [entry.timestamp for entry in times] == sorted({entry.timestamp for entry in times})
        assert times[-1].offset == batches[-1].last_offset  # the entry forced at the roll or close


def test_a_log_dir_has_the_broker_files(tmp_path: Path):
    with LogDirWriter(tmp_path, cluster_id="rwd2jqiwRaCycLq7mKVHXA", node_id=3) as log_dir:
        log_dir.partition("a", 0).append(_records(5, 0))
        log_dir.partition("a", 1).append(_records(2, 0), compression="gzip")
    read = {path.name: read_kafka_file(path) for path in tmp_path.iterdir() if path.is_file()}
    assert not [finding for value in read.values() for finding in value.findings]
    assert read["meta.properties"].value.cluster_id == "rwd2jqiwRaCycLq7mKVHXA"
    assert read["meta.properties"].value.node_id == 3
    assert read["recovery-point-offset-checkpoint"].value.offsets() == {("a", 0): 5, ("a", 1): 2}
    assert read[".kafka_cleanshutdown"].value.broker_epoch == 1
    partition = layout.list_partition(tmp_path / "a-1")
    assert read_kafka_file(partition.partition_metadata).findings == ()
    assert read_kafka_file(partition.leader_epoch_checkpoint).value.entries[0].start_offset == 0


def test_log_append_time_batches_give_every_record_the_batch_time(tmp_path: Path, kafka_python_agrees):
    with PartitionWriter(tmp_path / "t-0") as writer:
        writer.append(_records(3, 0), timestamp_type="LogAppendTime")
    log = tmp_path / "t-0" / "00000000000000000000.log"
    assert kafka_python_agrees(log) == 3
    (batch,) = scan_log(log).entries
    assert batch.timestamp_type == "LogAppendTime"
    assert {record.timestamp for record in decode_records(batch).records} == {batch.max_timestamp}


def test_long_varints_large_values_and_far_timestamps(tmp_path: Path, kafka_python_agrees):
    """Varints of three bytes and more (values over 8 KiB, timestamp deltas over 8 s, many headers)."""
    records = [
        ProducerRecord(b"k" * 9000, b"v" * 200_000, tuple((f"h{i}", b"x" * 70) for i in range(70)), T0),
        ProducerRecord(None, b"", (), T0 + 10**7),
        ProducerRecord(b"", None, (), T0 - 10**9),
    ]
    with PartitionWriter(tmp_path / "big-0") as writer:
        for compression in CODEC_NAMES:
            writer.append(records, compression=compression)
    log = tmp_path / "big-0" / "00000000000000000000.log"
    assert kafka_python_agrees(log) == 15
    decoded = decode_records(scan_log(log).entries[0])
    assert (len(decoded), decoded.timestamps) == (3, (T0, T0 + 10**7, T0 - 10**9))
    assert len(decoded.values[0]) == 200_000 and len(decoded.headers[0]) == 70


def test_a_reader_resumes_where_the_last_one_stopped_while_the_writer_appends(tmp_path: Path):
    """The way a dashboard tails a live partition: each LogReader reads what was there when it started, and
    the next one starts at the previous one's position and reads only what came since."""
    directory = tmp_path / "live-0"
    log = directory / "00000000000000000000.log"
    seen: list[int] = []
    position = 0
    with PartitionWriter(directory) as writer:
        for round_number in range(5):
            for batch in range(3):
                writer.append(_records(2, round_number * 3 + batch), compression="lz4")
            reader = LogReader(log, start=position)
            for entry in reader:
                seen.extend(decode_records(entry).offsets)
            assert reader.stopped == "end" and reader.position == log.stat().st_size
            assert reader.bytes_read == log.stat().st_size - position  # nothing read twice
            position = reader.position
    assert seen == list(range(30))


def test_segment_files_with_state_suffixes_are_listed_apart(tmp_path: Path):
    directory = tmp_path / "t-0"
    with PartitionWriter(directory, segment_bytes=2000) as writer:
        for batch in range(10):
            writer.append(_records(3, batch))
    first = layout.list_partition(directory).segments[0]
    first.log.rename(first.log.with_name(first.log.name + ".deleted"))
    listed = layout.list_partition(directory).segments
    deleted = [segment for segment in listed if segment.states == ("deleted",)]
    assert [(segment.base_offset, segment.log.name) for segment in deleted] == [
        (0, "00000000000000000000.log.deleted")
    ]
    assert next(s for s in listed if s.base_offset == 0 and not s.states).log is None  # its indexes remain
