"""Bad input is a finding with the file and byte position, never a traceback: truncated batches, lengths
past the end, CRC mismatches, payloads that do not decompress, unknown magics and codecs, bad records,
index files of a length no entry size divides, snapshots with a bad CRC, checkpoints that do not parse;
and a byte budget is never read past."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from crc32c import crc32c

from store.kafka import batches as batches_module
from store.kafka.batches import LogReader, scan_log
from store.kafka.checkpoints import decode_offset_checkpoint, read_text_file
from store.kafka.cluster_metadata import decode_metadata_record
from store.kafka.consumer_offsets import GroupMetadata, OffsetCommit, OtherGroupRecord, decode_group_record
from store.kafka.files import read_kafka_file
from store.kafka.findings import Finding, FindingKind, KafkaDecodeError
from store.kafka.records import decode_records
from store.kafka.writer import PartitionWriter, ProducerRecord
from store.safe_read import PreadFile

T0 = 1_700_000_000_000


def _segment(tmp_path: Path, *, compression: str = "none", batches: int = 4) -> tuple[Path, list]:
    with PartitionWriter(tmp_path / "t-0") as writer:
        written = [
            writer.append(
                [ProducerRecord(f"k{b}.{i}".encode(), b"v" * (20 + i), timestamp=T0 + i) for i in range(5)],
                compression=compression,
            )
            for b in range(batches)
        ]
    return tmp_path / "t-0" / "00000000000000000000.log", written


def _patch(log: Path, position: int, data: bytes, *, fix_crc_of: int | None = None) -> None:
    raw = bytearray(log.read_bytes())
    raw[position : position + len(data)] = data
    if fix_crc_of is not None:  # a corruption the CRC does not catch: the batch's CRC is made to match
        (length,) = struct.unpack_from(">i", raw, fix_crc_of + 8)
        end = fix_crc_of + 12 + length
        struct.pack_into(">I", raw, fix_crc_of + 17, crc32c(bytes(raw[fix_crc_of + 21 : end])))
    log.write_bytes(bytes(raw))


def test_a_partial_last_header_is_a_truncated_header(tmp_path: Path):
    log, _ = _segment(tmp_path)
    end = log.stat().st_size
    log.write_bytes(log.read_bytes() + log.read_bytes()[:10])
    scan = scan_log(log)
    assert len(scan.entries) == 4
    assert [(f.kind, f.position) for f in scan.findings] == [(FindingKind.TRUNCATED_HEADER, end)]
    assert (scan.stopped, scan.end_position) == ("finding", end)


def test_a_batch_cut_short_is_a_length_past_the_end(tmp_path: Path):
    log, written = _segment(tmp_path)
    log.write_bytes(log.read_bytes()[: written[-1].position + 70])
    scan = scan_log(log)
    assert len(scan.entries) == 3
    (finding,) = scan.findings
    assert (finding.path, finding.position, finding.kind) == (
        log,
        written[-1].position,
        FindingKind.LENGTH_PAST_END,
    )
    assert "past the end" in finding.message


def test_a_crc_mismatch_is_reported_and_reading_goes_on(tmp_path: Path):
    log, written = _segment(tmp_path)
    _patch(log, written[1].position + 70, b"X")
    scan = scan_log(log)
    assert [entry.crc_valid for entry in scan.entries] == [True, False, True, True]
    assert [(f.kind, f.position) for f in scan.findings] == [(FindingKind.CRC_MISMATCH, written[1].position)]
    assert scan.stopped == "end"


def test_a_payload_that_does_not_decompress(tmp_path: Path):
    log, written = _segment(tmp_path, compression="zstd")
    _patch(log, written[2].position + 61, b"\0\0\0\0\0\0", fix_crc_of=written[2].position)
    scan = scan_log(log)
    assert scan.findings == ()  # the header is sound: only decoding the records finds it
    decoded = decode_records(scan.entries[2], log)
    assert decoded.records == ()
    assert [(f.kind, f.position) for f in decoded.findings] == [
        (FindingKind.DECOMPRESSION_FAILED, written[2].position)
    ]


def test_an_unknown_magic_ends_the_scan_with_its_position(tmp_path: Path):
    log, written = _segment(tmp_path)
    _patch(log, written[2].position + 16, b"\x07")
    scan = scan_log(log)
    assert len(scan.entries) == 2
    assert [(f.kind, f.position) for f in scan.findings] == [(FindingKind.UNKNOWN_MAGIC, written[2].position)]


def test_an_unknown_codec_is_a_finding_when_scanned_and_when_decoded(tmp_path: Path):
    log, written = _segment(tmp_path)
    _patch(log, written[0].position + 21, b"\x00\x06", fix_crc_of=written[0].position)
    scan = scan_log(log)
    assert [(f.kind, f.position) for f in scan.findings] == [(FindingKind.UNKNOWN_CODEC, 0)]
    assert scan.entries[0].compression == "unknown codec 6"
    assert [f.kind for f in decode_records(scan.entries[0], log).findings] == [FindingKind.UNKNOWN_CODEC]


def test_a_record_whose_length_overruns_its_batch(tmp_path: Path):
    log, written = _segment(tmp_path)
    _patch(log, written[3].position + 61, b"\x7e", fix_crc_of=written[3].position)  # length 63 of ~30 bytes
    decoded = decode_records(scan_log(log).entries[3], log)
    assert decoded.records == ()
    assert [(f.kind, f.position) for f in decoded.findings] == [
        (FindingKind.BAD_RECORD, written[3].position + 61)
    ]


def test_a_batch_length_smaller_than_a_header(tmp_path: Path):
    log, written = _segment(tmp_path)
    _patch(log, written[1].position + 8, struct.pack(">i", 20))
    scan = scan_log(log)
    assert [(f.kind, f.position) for f in scan.findings] == [(FindingKind.BAD_LENGTH, written[1].position)]


def test_zeros_after_the_data_are_a_finding_not_a_batch(tmp_path: Path):
    log, _ = _segment(tmp_path)
    end = log.stat().st_size
    log.write_bytes(log.read_bytes() + bytes(4096))  # a preallocated segment's unwritten tail
    scan = scan_log(log)
    assert len(scan.entries) == 4 and [(f.kind, f.position) for f in scan.findings] == [
        (FindingKind.BAD_LENGTH, end)
    ]


@pytest.mark.parametrize(("start", "budget"), [(0, 1), (0, 200), (0, 500), (37, 1000), (0, 10**9)])
def test_a_budget_is_never_read_past(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, start: int, budget: int
):
    log, written = _segment(tmp_path, batches=30)
    reads = []
    original = PreadFile.read

    def recording_read(self, offset: int, length: int) -> bytes:
        reads.append((offset, length))
        return original(self, offset, length)

    monkeypatch.setattr(PreadFile, "read", recording_read)
    start = written[1].position if start else 0
    reader = LogReader(log, start=start, max_bytes=budget, window_bytes=256)
    entries = [item for item in reader if not isinstance(item, Finding)]
    assert all(offset >= start and offset + length <= start + budget for offset, length in reads)
    whole = [
        batch
        for batch in written
        if batch.position >= start and batch.position + batch.size_bytes <= start + budget
    ]
    assert [entry.position for entry in entries] == [batch.position for batch in whole]
    assert reader.stopped == ("end" if start + budget >= log.stat().st_size else "budget")
    assert reader.bytes_read == sum(length for _, length in reads)
    assert batches_module.DEFAULT_WINDOW_BYTES == 4 << 20


def test_an_index_whose_length_is_not_a_multiple_of_its_entry(tmp_path: Path):
    index = tmp_path / "00000000000000000100.index"
    index.write_bytes(struct.pack(">ii", 5, 4200) + struct.pack(">ii", 9, 8400) + b"\1\2\3")
    read = read_kafka_file(index)
    assert [(entry.offset, entry.position) for entry in read.value.entries] == [(105, 4200), (109, 8400)]
    assert [(f.kind, f.position, f.path) for f in read.findings] == [(FindingKind.INDEX_SIZE, 16, index)]
    timeindex = tmp_path / "00000000000000000100.timeindex"
    timeindex.write_bytes(
        struct.pack(">qi", T0, 3) + bytes(12 * 3) + b"\0"
    )  # a preallocated tail, and one more
    read = read_kafka_file(timeindex)
    assert [(entry.timestamp, entry.offset) for entry in read.value.entries] == [(T0, 103)]
    assert [(f.kind, f.position) for f in read.findings] == [(FindingKind.INDEX_SIZE, 48)]


def test_a_snapshot_with_a_bad_crc_or_a_wrong_count(tmp_path: Path):
    with PartitionWriter(tmp_path / "t-0") as writer:
        writer.append([ProducerRecord(b"k", b"v")], producer_id=3)
    (snapshot,) = (tmp_path / "t-0").glob("*.snapshot")
    data = bytearray(snapshot.read_bytes())
    assert read_kafka_file(snapshot).findings == ()
    data[20] ^= 0xFF
    snapshot.write_bytes(bytes(data))
    read = read_kafka_file(snapshot)
    assert read.value is not None and not read.value.crc_valid
    assert [(f.kind, f.position) for f in read.findings] == [(FindingKind.SNAPSHOT_CRC, 2)]
    snapshot.write_bytes(bytes(data[:-3]))
    assert [f.kind for f in read_kafka_file(snapshot).findings] == [FindingKind.BAD_SNAPSHOT]


def test_a_checkpoint_whose_count_is_wrong_names_the_line(tmp_path: Path):
    checkpoint = tmp_path / "recovery-point-offset-checkpoint"
    checkpoint.write_bytes(b"0\n2\nfoo 0 1\n")
    read = read_text_file(checkpoint, decode_offset_checkpoint)
    assert read.value is None
    assert [(f.kind, f.position) for f in read.findings] == [(FindingKind.BAD_CHECKPOINT, 2)]
    checkpoint.write_bytes(b"0\n1\nfoo zero 1\n")
    assert [(f.kind, f.position) for f in read_kafka_file(checkpoint).findings] == [
        (FindingKind.BAD_CHECKPOINT, 4)
    ]
    (tmp_path / "meta.properties").write_bytes(b"\xff\xfe")
    assert [f.kind for f in read_kafka_file(tmp_path / "meta.properties").findings] == [
        FindingKind.BAD_CHECKPOINT
    ]


# --- __consumer_offsets and __cluster_metadata, encoded by hand from the schemas --------------------------


def _string(text: str) -> bytes:
    return struct.pack(">h", len(text)) + text.encode()


def _compact(text: str) -> bytes:
    return bytes((len(text) + 1,)) + text.encode()


def test_consumer_offsets_records_decode_to_group_topic_partition_and_offset():
    key = struct.pack(">h", 1) + _string("billing") + _string("orders") + struct.pack(">i", 7)
    v3 = struct.pack(">hqi", 3, 4242, 5) + _string("meta") + struct.pack(">q", T0)
    assert decode_group_record(key, v3) == OffsetCommit("billing", "orders", 7, False, 4242, 5, "meta", T0)
    v1 = struct.pack(">hq", 1, 17) + _string("") + struct.pack(">qq", T0, T0 + 1000)
    assert decode_group_record(key, v1).expire_timestamp == T0 + 1000
    v4 = struct.pack(">hqi", 4, 99, -1) + _compact("m") + struct.pack(">q", T0) + b"\0"  # flexible
    assert decode_group_record(key, v4) == OffsetCommit("billing", "orders", 7, False, 99, -1, "m", T0)
    assert decode_group_record(key, None) == OffsetCommit("billing", "orders", 7, deleted=True)
    group_key = struct.pack(">h", 2) + _string("billing")
    member = (
        _string("member-1")
        + struct.pack(">h", -1)
        + _string("client")
        + _string("/10.0.0.1")
        + struct.pack(">ii", 300000, 45000)
        + struct.pack(">i", 2)
        + b"\1\2"
        + struct.pack(">i", -1)
    )
    group_value = (
        struct.pack(">h", 3)
        + _string("consumer")
        + struct.pack(">i", 12)
        + _string("range")
        + _string("member-1")
        + struct.pack(">q", T0)
        + struct.pack(">i", 1)
        + member
    )
    assert decode_group_record(group_key, group_value) == GroupMetadata(
        "billing", False, "consumer", 12, "range", "member-1", T0, ("member-1",)
    )
    assert decode_group_record(struct.pack(">h", 3) + _string("g2"), b"") == OtherGroupRecord(
        3, "ConsumerGroupMetadata", "g2"
    )
    assert decode_group_record(struct.pack(">h", 77), b"").name == "unknown key version 77"
    with pytest.raises(KafkaDecodeError):
        decode_group_record(key, struct.pack(">h", 9))
    with pytest.raises(KafkaDecodeError):
        decode_group_record(key[:-2], v3)


def test_metadata_records_of_an_unknown_type_are_named_not_fatal():
    assert decode_metadata_record(b"\x01\x02\x00rest").type_name == "TopicRecord"
    unknown = decode_metadata_record(b"\x01\x63\x00")
    assert (unknown.api_key, unknown.type_name) == (99, "unknown type 99")
    for bad in (None, b"", b"\x00\x02\x00", b"\x01\xff"):
        with pytest.raises(KafkaDecodeError):
            decode_metadata_record(bad)


def test_a_damaged_snappy_length_is_a_finding_not_an_allocation(tmp_path: Path):
    """A raw snappy block declaring 4 GiB made cramjam allocate it (and abort the process when that
    failed): the declared length is checked against what the block can hold first."""
    from store.kafka.compression import SNAPPY, decompress

    with pytest.raises(KafkaDecodeError) as error:
        decompress(SNAPPY, b"\xf0\xff\xff\xff\x0f" + bytes(20), magic=2)
    assert error.value.kind == FindingKind.DECOMPRESSION_FAILED
    assert "declares 4294967280 bytes" in str(error.value)
