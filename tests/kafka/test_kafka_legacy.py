"""Legacy v0/v1 message sets (Kafka before 0.11), built with kafka-python's LegacyRecordBatchBuilder in
every codec they have, read as kafka-python reads them: CRC-32, wrapper messages with inner message sets
(v1 inner offsets relative to the wrapper's), and lz4 with the pre-0.10 header checksum (KAFKA-1493)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from kafka.codec import lz4_encode_old_kafka
from kafka.record.legacy_records import LegacyRecordBatchBuilder

from store.kafka.batches import LegacyMessage, scan_log
from store.kafka.compression import LZ4, decompress
from store.kafka.findings import FindingKind, KafkaDecodeError
from store.kafka.records import decode_records

T0 = 1_600_000_000_000
LEGACY_CODECS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3}


def _message_set(magic: int, codec: int, first_offset: int, count: int) -> bytes:
    builder = LegacyRecordBatchBuilder(magic=magic, compression_type=codec, batch_size=1 << 20)
    for i in range(count):
        # Inner offsets: absolute for v0, relative (0..n-1) for v1, as producers wrote them.
        offset = first_offset + i if magic == 0 or not codec else i
        key = None if i % 3 == 0 else f"k{i}".encode()
        value = None if i % 4 == 3 else f"value {i}".encode() * (i + 1)
        builder.append(offset, timestamp=T0 + i, key=key, value=value)
    data = bytearray(builder.build())
    if codec:
        struct.pack_into(
            ">q", data, 0, first_offset + count - 1
        )  # the broker's wrapper offset: the last inner
    return bytes(data)


@pytest.mark.parametrize("magic", [0, 1])
@pytest.mark.parametrize("compression", LEGACY_CODECS)
def test_kafka_python_agrees_on_legacy_message_sets(
    tmp_path: Path, magic: int, compression: str, kafka_python_agrees
):
    codec = LEGACY_CODECS[compression]
    log = tmp_path / "00000000000000000000.log"
    parts, offset = [], 0
    for count in (1, 5, 3):
        if codec:
            parts.append(_message_set(magic, codec, offset, count))
        else:
            parts += [_message_set(magic, 0, offset + i, 1) for i in range(count)]
            # an uncompressed set of one message per entry: each its own top-level message
        offset += count
    log.write_bytes(b"".join(parts))
    assert kafka_python_agrees(log) == 9
    entries = scan_log(log).entries
    assert all(isinstance(entry, LegacyMessage) and entry.magic == magic for entry in entries)
    offsets = [record.offset for entry in entries for record in decode_records(entry, log).records]
    assert offsets == list(range(9))
    if magic == 1:
        assert decode_records(entries[-1], log).records[0].timestamp == T0


def test_magic_0_lz4_with_the_old_header_checksum_is_accepted_as_kafka_does():
    data = b"inner message set " * 50
    broken = lz4_encode_old_kafka(data)  # the header checksum of Kafka 0.8/0.9 (KAFKA-1493)
    assert decompress(LZ4, broken, magic=0) == data
    with pytest.raises(KafkaDecodeError) as error:
        decompress(LZ4, broken, magic=1)  # only magic 0 gets the allowance, as in KafkaLZ4BlockInputStream
    assert error.value.kind == FindingKind.DECOMPRESSION_FAILED


def test_raw_and_xerial_snappy_both_decode():
    from kafka.codec import snappy_encode

    from store.kafka.compression import SNAPPY

    data = b"0123456789abcdef" * 5000  # several 32 KiB xerial blocks
    assert decompress(SNAPPY, snappy_encode(data, xerial_compatible=True), magic=2) == data
    assert decompress(SNAPPY, snappy_encode(data, xerial_compatible=False), magic=1) == data


@pytest.mark.parametrize("magic", [0, 1])
@pytest.mark.parametrize("compression", ["gzip", "snappy", "lz4"])
def test_kafka_python_reads_the_writers_legacy_wrappers(
    tmp_path: Path, magic: int, compression: str, kafka_python_agrees
):
    from store.kafka.writer import ProducerRecord, encode_legacy_message, encode_legacy_wrapper

    records = [ProducerRecord(None if i % 2 else b"k", b"v" * i, timestamp=T0 + i) for i in range(4)]
    log = tmp_path / "00000000000000000000.log"
    log.write_bytes(
        encode_legacy_message(magic, 0, b"plain", None, timestamp=T0)
        + encode_legacy_wrapper(magic, compression, 1, records)
    )
    assert kafka_python_agrees(log) == 5
