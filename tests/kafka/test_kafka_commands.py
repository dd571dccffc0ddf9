"""`mqinspect store stat|segments|dump|verify|query` on Kafka log directories: the format found from a log
dir, a partition directory or a .log file; stat and dump agreeing with the Kafka 4.0 fixture and with
kafka-python on writer-made partitions (several segments, every codec, transactions); verify clean on both and
each bad input a finding with its file and position; segments' residency equal to fincore's."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from crc32c import crc32c
from kafka.record import MemoryRecords

from mqinspect.errors import ExitStatus
from store.inspection import formats
from store.inspection.kafka.dump import KafkaDumpStream
from store.inspection.kafka.store_format import KAFKA
from store.inspection.log_format import StoreChanged
from store.kafka.batches import scan_log
from store.kafka.compression import CODEC_NAMES
from store.kafka.writer import LogDirWriter, ProducerRecord
from tests.support import fadvise_out, fincore_pages, mqinspect_as_nobody, one_error_line, run_mqinspect

T0 = 1_700_000_000_000
LOG0 = "00000000000000000000.log"


@pytest.fixture
def fixture_copy(kafka_fixture: Path, tmp_path: Path) -> Path:
    """The Kafka 4.0 fixture copied: nothing may write to the shared one."""
    copy = tmp_path / "kraft-logs"
    shutil.copytree(kafka_fixture, copy)
    return copy


def _records(count: int, batch: int) -> list[ProducerRecord]:
    return [
        ProducerRecord(
            key=None if i % 3 == 0 else f"key-{batch}-{i}".encode(),
            value=None if i % 5 == 4 else (f"value {batch} {i} " * (1 + i % 7)).encode(),
            headers=(("trace", f"{batch}.{i}".encode()), ("empty", None)) if i % 2 else (),
            timestamp=T0 + batch * 10 + i,
        )
        for i in range(count)
    ]


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    """A log dir of two topics: orders-0 rolled into several segments in every codec, with binary values;
    payments-0 with idempotent and transactional batches, a commit and an abort."""
    root = tmp_path / "logs"
    with LogDirWriter(root, segment_bytes=4096, index_interval_bytes=512) as writer:
        orders = writer.partition("orders", 0)
        for batch in range(60):
            orders.append(_records(1 + batch % 9, batch), compression=CODEC_NAMES[batch % len(CODEC_NAMES)])
        orders.append([ProducerRecord(b"\x00\xffbin", bytes(range(256)), timestamp=T0 + 999)])
        payments = writer.partition("payments", 0)
        payments.append(_records(3, 0), producer_id=11, producer_epoch=2, compression="zstd")
        payments.append(_records(2, 1), producer_id=12, transactional=True)
        payments.end_transaction(12, commit=True, coordinator_epoch=4)
        payments.append(_records(2, 2), producer_id=12, transactional=True, compression="lz4")
        payments.end_transaction(12, commit=False, coordinator_epoch=4)
    return root


def _json(*args) -> dict:
    result = run_mqinspect(*args, "--format", "json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def _jsonl(*args, exit_code: int = 0) -> list[dict]:
    result = run_mqinspect(*args, "--format", "jsonl")
    assert result.exit_code == exit_code, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


# --- finding it --------------------------------------------------------------------------------------------


def test_a_log_dir_a_partition_and_a_log_file_are_kafka(fixture_copy: Path):
    partition = fixture_copy / "foo-0"
    for path in (fixture_copy, partition, partition / LOG0):
        assert formats.detect_format(path) is KAFKA, path
    assert [(f.label, f.kind) for f in formats.store_files(partition)] == [
        ("foo-0/00000000000000000000.log", "log"),
        ("foo-0/00000000000000000000.index", "offset_index"),
        ("foo-0/00000000000000000000.timeindex", "time_index"),
        ("foo-0/00000000000000000001.snapshot", "snapshot"),
    ]
    assert [f.label for f in formats.store_files(partition / LOG0)] == [
        "foo-0/00000000000000000000.log",
        "foo-0/00000000000000000000.index",
        "foo-0/00000000000000000000.timeindex",
    ]
    assert len(formats.store_files(fixture_copy)) == 8
    (fixture_copy / "meta.properties").unlink()  # a log dir known by its partitions alone
    assert formats.detect_format(fixture_copy) is KAFKA
    assert KAFKA.file_kind("foo-0/00000000000000000000.timeindex") == "time_index"
    assert KAFKA.file_kind("00000000000000000007.txnindex") == "txn_index"
    assert KAFKA.file_kind("commitlog/00000000000000000000") is None
    directories = formats.store_directories(fixture_copy)
    assert set(directories.files_in) >= {fixture_copy / "foo-0", fixture_copy / "__cluster_metadata-0"}
    assert directories.directories_in == (fixture_copy,)


@pytest.mark.parametrize("command", ["stat", "segments", "dump", "verify", "query"])
def test_a_directory_of_neither_format_is_one_line_naming_both(tmp_path: Path, command: str):
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "orders-0").mkdir()  # a topic-N name, but no segment file in it
    result = run_mqinspect("store", command, tmp_path, *(["--offset", 0] if command == "query" else []))
    assert result.exit_code == ExitStatus.BAD_INPUT
    line = one_error_line(result)
    assert "not a RocketMQ store (no commitlog/ directory)" in line
    assert "not a Kafka log directory (looked for meta.properties" in line


def test_listing_a_kafka_log_dir_s_files_loads_no_decoder(kafka_fixture: Path):
    code = (
        "import sys; import store.inspection.formats as formats; formats.store_files(sys.argv[1]); "
        "print(sorted(m for m in sys.modules if m.startswith(('store.', 'crc32c', 'cramjam'))))"
    )
    shown = subprocess.run([sys.executable, "-c", code, str(kafka_fixture)], capture_output=True, text=True)
    loaded = set(json.loads(shown.stdout.replace("'", '"')))
    assert "store.inspection.kafka.store_format" in loaded
    assert not loaded & {"store.kafka.batches", "store.kafka.records", "crc32c", "cramjam"}


# --- the fixture -------------------------------------------------------------------------------------------


def test_stat_of_the_fixture(fixture_copy: Path):
    stat = _json("store", "stat", fixture_copy)
    assert (stat["format"], stat["target"], stat["clean_shutdown"]) == ("kafka", "log_dir", True)
    assert (stat["cluster_id"], stat["node_id"]) == ("rwd2jqiwRaCycLq7mKVHXA", 1)
    metadata, foo = stat["partitions"]
    assert (metadata["topic"], metadata["base_offsets"], metadata["log_start_offset"]) == (
        "__cluster_metadata", [0], 0,
    )  # fmt: skip
    assert (metadata["log_end_offset"], metadata["size_bytes"]) == (129, 9333)  # offsets 0-128
    assert (foo["log_end_offset"], foo["recovery_point"], foo["high_watermark"]) == (1, 1, 1)
    assert foo["leader_epochs"] == [{"epoch": 0, "start_offset": 0}]
    assert [(p["producer_id"], p["last_offset"]) for p in foo["producers"]] == [(0, 0)]
    (fixture_copy / ".kafka_cleanshutdown").unlink()
    assert _json("store", "stat", fixture_copy)["clean_shutdown"] is False
    table = run_mqinspect("store", "stat", fixture_copy, columns=80)
    assert table.exit_code == 0 and "Kafka log directory" in table.stdout and "not clean" in table.stdout


def test_verify_of_the_fixture_is_clean(fixture_copy: Path):
    result = run_mqinspect("store", "verify", fixture_copy)
    assert result.exit_code == 0, result.stdout
    assert "OK: no problems found" in result.stdout
    report = _json("store", "verify", fixture_copy)
    assert (report["batches_checked"], report["records_checked"], report["findings"]) == (124, 130, [])


def test_dump_of_the_fixture_agrees_with_kafka_python(fixture_copy: Path):
    events = _jsonl("store", "dump", fixture_copy / "__cluster_metadata-0", "--deep", "--values", "hex")
    assert events[0]["kind"] == "dump" and events[0]["format"] == "kafka"
    assert events[-1] == {"kind": "end", "batch_count": 123, "record_count": 129, "log_bytes_read": 9333,
                          "stopped": "end", "next_offset": None, "finding_count": 0}  # fmt: skip
    records = [event for event in events if event["kind"] == "record"]
    assert [record["offset"] for record in records] == list(range(129))
    theirs = MemoryRecords((fixture_copy / "__cluster_metadata-0" / LOG0).read_bytes())
    expected = []
    while (batch := theirs.next_batch()) is not None:
        expected += [(r.offset, r.timestamp, r.key and r.key.hex(), r.value and r.value.hex()) for r in batch]
    assert [(r["offset"], r["timestamp_ms"], r["key"], r["value"]) for r in records] == expected
    assert records[0]["control_type"] == "LEADER_CHANGE" and records[0]["leader_id"] == 1
    assert records[1]["metadata_type"] == "BeginTransactionRecord"
    lines = run_mqinspect("store", "dump", fixture_copy / "foo-0", "--deep").stdout.splitlines()
    assert lines[2].startswith("baseOffset: 0 lastOffset: 0 count: 1 baseSequence: 0 lastSequence: 0 ")
    assert "position: 0 CreateTime: 1726045973899 size: 80 magic: 2 compresscodec: none" in lines[2]
    assert lines[2].endswith("isvalid: true")
    assert lines[3].startswith("| offset: 0 CreateTime: 1726045973899 keySize: -1 valueSize: 12")
    assert lines[3].endswith("payload: Hello World!")


# --- writer-made partitions --------------------------------------------------------------------------------


def _theirs(directory: Path) -> list[tuple]:
    records = []
    for log in sorted(directory.glob("*.log")):
        batches = MemoryRecords(log.read_bytes())
        while (batch := batches.next_batch()) is not None:
            for r in batch:
                headers = [[key, value and value.hex()] for key, value in r.headers]
                records.append(
                    (r.offset, r.timestamp, r.key and r.key.hex(), r.value and r.value.hex(), headers)
                )
    return records


def test_dump_deep_agrees_with_kafka_python_in_every_codec_across_segments(log_dir: Path):
    orders = log_dir / "orders-0"
    assert len(list(orders.glob("*.log"))) >= 3
    events = _jsonl("store", "dump", log_dir, "--deep", "--values", "hex")
    segments = [event["label"] for event in events if event["kind"] == "segment"]
    assert segments[-1] == "payments-0/00000000000000000000.log" and len(segments) >= 4
    mine = [
        (e["offset"], e["timestamp_ms"], e["key"], e["value"], e["headers"])
        for e in events
        if e["kind"] == "record"
    ]
    assert mine == _theirs(orders) + _theirs(log_dir / "payments-0")  # control records included
    batches = [e for e in events if e["kind"] == "batch"]
    assert {batch["compression"] for batch in batches} == set(CODEC_NAMES)
    markers = [(e["control_type"], e["coordinator_epoch"]) for e in events if e.get("control_type")]
    assert markers == [("COMMIT", 4), ("ABORT", 4)]
    text = run_mqinspect("store", "dump", orders, "--deep").stdout
    assert "key-1-1" in text and "payload (hex): " in text  # the binary value in hex, the rest as text


def test_stat_and_verify_of_writer_made_partitions(log_dir: Path):
    assert run_mqinspect("store", "verify", log_dir).exit_code == 0
    stat = _json("store", "stat", log_dir)
    orders, payments = stat["partitions"]
    records = sum(1 + batch % 9 for batch in range(60)) + 1
    assert (orders["log_end_offset"], orders["high_watermark"], orders["recovery_point"]) == (records,) * 3
    assert orders["segment_count"] == len(list((log_dir / "orders-0").glob("*.log")))
    assert payments["log_end_offset"] == 3 + 2 + 1 + 2 + 1
    assert {p["producer_id"] for p in payments["producers"]} == {11, 12}


def test_dump_from_an_offset_and_a_time_starts_where_the_indexes_say(log_dir: Path):
    orders = log_dir / "orders-0"
    bases = sorted(int(log.stem) for log in orders.glob("*.log"))
    wanted = bases[3] - 1  # the last offset of the third segment: past its first index entry
    events = _jsonl("store", "dump", orders, "--from-offset", wanted, "--deep", "--count", 1)
    segment = next(event for event in events if event["kind"] == "segment")
    assert segment["base_offset"] == bases[2] and segment["start_position"] > 0  # through the .index
    batch = next(event for event in events if event["kind"] == "batch")
    assert batch["base_offset"] <= wanted <= batch["last_offset"]
    assert next(e["offset"] for e in events if e["kind"] == "record") == wanted
    assert events[-1]["stopped"] == "count" and events[-1]["next_offset"] == batch["last_offset"] + 1
    by_time = _jsonl("store", "dump", orders, "--from-time", T0 + 305, "--count", 1)
    batch = next(event for event in by_time if event["kind"] == "batch")
    assert batch["max_timestamp_ms"] >= T0 + 305 and batch["base_offset"] > 0
    query = _json("store", "query", orders, "--offset", wanted)
    assert query["hits"][0]["record"]["offset"] == wanted
    query = _json("store", "query", orders, "--time", T0 + 305)
    assert query["hits"][0]["record"]["timestamp_ms"] >= T0 + 305


def test_max_bytes_reads_nothing_past_the_budget(log_dir: Path):
    log = log_dir / "orders-0" / LOG0
    assert log.stat().st_size > 3000
    events = _jsonl("store", "dump", log, "--max-bytes", 2000)
    dumped_end = sum(e["size_bytes"] for e in events if e["kind"] == "batch")
    assert dumped_end <= 2000 and events[-1]["stopped"] == "budget"
    # garbage from byte 2000 on, inside the batch the budget cut: a dump that read it would report it
    raw = bytearray(log.read_bytes())
    raw[2000:2064] = b"\xff" * 64
    log.write_bytes(bytes(raw))
    again = _jsonl("store", "dump", log, "--max-bytes", 2000)
    assert again[-1]["stopped"] == "budget" and again[-1]["finding_count"] == 0
    assert again[-1]["log_bytes_read"] <= 2000 and again[-1]["next_offset"] > 0
    assert run_mqinspect("store", "verify", log).exit_code == ExitStatus.FINDINGS


def test_dump_hands_over_the_first_batches_before_the_log_is_read(tmp_path: Path):
    with LogDirWriter(tmp_path / "logs", segment_bytes=1 << 20) as writer:
        partition = writer.partition("big", 0)
        for batch in range(2000):
            partition.append([ProducerRecord(None, b"x" * 1000, timestamp=T0 + batch)])
    stream = KafkaDumpStream(tmp_path / "logs" / "big-0")
    first = next(stream.batches())
    total = sum(log.stat().st_size for log in (tmp_path / "logs" / "big-0").glob("*.log"))
    assert first and stream.log_bytes_read < total / 2


def test_options_of_the_other_format_are_one_line(log_dir: Path, rust_store: Path):
    for args in (
        ("dump", log_dir, "--from", 0),
        ("dump", log_dir, "--body"),
        ("query", log_dir, "--key", "k"),
    ):
        result = run_mqinspect("store", *args)
        assert result.exit_code == ExitStatus.BAD_INPUT
        assert "not for a Kafka log directory" in one_error_line(result)
    for args in (("dump", rust_store, "--deep"), ("query", rust_store, "--time", "0")):
        result = run_mqinspect("store", *args)
        assert result.exit_code == ExitStatus.BAD_INPUT
        assert "not for a RocketMQ-format store" in one_error_line(result)


# --- bad input ---------------------------------------------------------------------------------------------


def _patch(path: Path, position: int, data: bytes, *, fix_crc_of: int | None = None) -> None:
    raw = bytearray(path.read_bytes())
    raw[position : position + len(data)] = data
    if fix_crc_of is not None:  # the batch's CRC made to match, so what follows the CRC check is reached
        (length,) = struct.unpack_from(">i", raw, fix_crc_of + 8)
        struct.pack_into(
            ">I", raw, fix_crc_of + 17, crc32c(bytes(raw[fix_crc_of + 21 : fix_crc_of + 12 + length]))
        )
    path.write_bytes(bytes(raw))


def _second_batch(log: Path) -> int:
    return 12 + struct.unpack_from(">i", log.read_bytes(), 8)[0]


def _damage(log_dir: Path, case: str) -> tuple[Path, int, str]:
    """Damage one file; return it, the position a finding must name and the finding's kind."""
    partition = log_dir / "payments-0"
    log = partition / LOG0
    second = _second_batch(log)
    size = log.stat().st_size
    if case == "truncated header":
        log.write_bytes(log.read_bytes() + b"\x00" * 10)
        return log, size, "truncated-header"
    if case == "length past the end":
        last = scan_log(log).entries[-1].position
        log.write_bytes(log.read_bytes()[:-7])
        return log, last, "length-past-end"
    if case == "crc mismatch":
        _patch(log, second + 70, b"\x55")
        return log, second, "crc-mismatch"
    if case == "not decompressible":  # the first batch is zstd
        _patch(log, 61 + 4, b"\x00\x00\x00\x00", fix_crc_of=0)
        return log, 0, "decompression-failed"
    if case == "unknown magic":
        _patch(log, second + 16, b"\x07")
        return log, second, "unknown-magic"
    if case == "unknown codec":
        _patch(log, second + 22, b"\x06", fix_crc_of=second)
        return log, second, "unknown-codec"
    if case == "trailing garbage":
        log.write_bytes(log.read_bytes() + b"garbage!" * 4)
        return log, size, None
    if case == "index size":
        index = log_dir / "orders-0" / "00000000000000000000.index"
        index.write_bytes(index.read_bytes() + b"\x01\x02\x03")
        return index, index.stat().st_size - 3, "index-size"
    if case == "index entry off a batch":
        index = log_dir / "orders-0" / "00000000000000000000.index"
        _patch(index, 4, struct.pack(">i", struct.unpack_from(">i", index.read_bytes(), 4)[0] + 1))
        return index, 0, "index-entry"
    if case == "time index backwards":
        timeindex = log_dir / "orders-0" / "00000000000000000000.timeindex"
        assert timeindex.stat().st_size >= 24
        _patch(timeindex, 12, struct.pack(">q", T0 - 1))
        return timeindex, 12, "time-index-entry"
    if case == "snapshot crc":
        snapshot = next(partition.glob("*.snapshot"))
        _patch(snapshot, 12, b"\x99")
        return snapshot, 2, "snapshot-crc"
    if case == "checkpoint":
        checkpoint = log_dir / "replication-offset-checkpoint"
        checkpoint.write_text("0\n2\norders 0 x\n")
        return checkpoint, None, "bad-checkpoint"
    assert case == "no log"
    for log_file in partition.glob("*.log"):
        log_file.unlink()
    return partition, 0, "no-log"


BAD_INPUTS = [
    "truncated header", "length past the end", "crc mismatch", "not decompressible", "unknown magic",
    "unknown codec", "trailing garbage", "index size", "index entry off a batch", "time index backwards",
    "snapshot crc", "checkpoint", "no log",
]  # fmt: skip


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_each_bad_input_is_a_finding_with_file_and_position(log_dir: Path, case: str):
    path, position, kind = _damage(log_dir, case)
    result = run_mqinspect("store", "verify", log_dir, "--format", "json")
    assert result.exit_code == ExitStatus.FINDINGS, result.stdout
    findings = [(f["path"], f["position"], f["kind"]) for f in json.loads(result.stdout)["findings"]]
    assert any(f[0] == str(path) and kind in (None, f[2]) and position in (None, f[1]) for f in findings), (
        findings
    )
    table = run_mqinspect("store", "verify", log_dir, columns=80)
    assert table.exit_code == ExitStatus.FINDINGS and "Traceback" not in table.stdout + table.stderr


def test_dump_reports_a_damaged_batch_and_exits_1(log_dir: Path):
    log, position, _ = _damage(log_dir, "crc mismatch")
    result = run_mqinspect("store", "dump", log)
    assert result.exit_code == ExitStatus.FINDINGS
    assert f"position {position}" in result.stdout and "isvalid: false" in result.stdout


# --- residency ---------------------------------------------------------------------------------------------


def test_segments_residency_is_fincore_s(log_dir: Path):
    logs = sorted((log_dir / "orders-0").glob("*.log"))
    for path in logs:
        fadvise_out(path)
    logs[1].read_bytes()  # one segment's pages in the cache, the others out
    before = {path: fincore_pages(path) for path in logs}  # segments reads the last log after measuring
    listing = _json("store", "segments", log_dir / "orders-0")
    assert listing["format"] == "kafka"
    rows = {row["label"]: row for row in listing["rows"]}
    assert rows[f"orders-0/{logs[1].name}"]["end_offset"] == int(logs[2].stem)
    residency = {segment["path"]: segment for segment in listing["residency"]["segments"]}
    for path in logs:
        assert residency[str(path)]["cached_pages"] == before[path], path
    assert residency[str(logs[1])]["cached_pages"] > 0
    table = run_mqinspect("store", "segments", log_dir / "orders-0", columns=80)
    assert table.exit_code == 0 and "offset_index" in table.stdout


# --- a live log --------------------------------------------------------------------------------------------


def test_a_segment_deleted_while_dumped_is_a_store_change(tmp_path: Path):
    with LogDirWriter(tmp_path / "logs", segment_bytes=1 << 20) as writer:
        partition = writer.partition("big", 0)
        for batch in range(2500):
            partition.append([ProducerRecord(None, b"x" * 1000, timestamp=T0 + batch)])
    logs = sorted((tmp_path / "logs" / "big-0").glob("*.log"))
    stream = KafkaDumpStream(tmp_path / "logs" / "big-0")
    runs = stream.batches()
    next(runs)
    logs[-1].unlink()  # retention deleting a segment the dump has not reached
    with pytest.raises(StoreChanged, match="vanished while being read"):
        for _ in runs:
            pass


def test_stat_dump_and_verify_follow_a_partition_being_written_and_rolled(tmp_path: Path):
    root = tmp_path / "logs"
    writer = LogDirWriter(root, segment_bytes=8192, index_interval_bytes=1024)
    partition = writer.partition("live", 0)
    written = 0
    for round_number in range(4):
        for batch in range(30):
            partition.append(_records(3, round_number * 100 + batch), compression="gzip")
            written += 3
        partition.flush()
        stat = _json("store", "stat", root)
        (live,) = stat["partitions"]
        assert live["log_end_offset"] == written and live["segment_count"] == len(partition.segments)
        assert stat["clean_shutdown"] is False  # still running: no .kafka_cleanshutdown yet
        events = _jsonl("store", "dump", root / "live-0", "--deep")
        assert [e["offset"] for e in events if e["kind"] == "record"] == list(range(written))
    writer.close()
    assert run_mqinspect("store", "verify", root).exit_code == 0
    assert _json("store", "stat", root)["clean_shutdown"] is True


def test_the_tables_fit_an_80_column_terminal(log_dir: Path):
    for command in ("stat", "segments", "verify"):
        result = run_mqinspect("store", command, log_dir, columns=80)
        assert result.exit_code == 0, result.stderr
        assert max(len(line) for line in result.stdout.splitlines()) <= 80, (command, result.stdout)


def test_the_json_templates_write_what_json_line_writes(log_dir: Path):
    from mqinspect.jsonable import json_line
    from mqinspect.render.kafka import kafka_event_json

    kinds = set()
    for directory in ("orders-0", "payments-0"):
        for values in ("text", "hex"):
            for run in KafkaDumpStream(log_dir / directory, deep=True, values=values).batches():
                for event in run:
                    kinds.add(event.kind)
                    assert json.loads(kafka_event_json(event)) == json.loads(json_line(event)), event
    assert kinds == {"segment", "batch", "record"}
    document = run_mqinspect("store", "dump", log_dir, "--deep", "--format", "json")
    assert document.exit_code == 0
    parsed = json.loads(document.stdout)
    assert parsed["format"] == "kafka" and parsed["stopped"] == "end"
    assert [e for e in parsed["events"] if e["kind"] == "record"] == [
        e for e in _jsonl("store", "dump", log_dir, "--deep") if e["kind"] == "record"
    ]


def test_a_deleted_segment_named_on_the_command_line_is_read_and_left_out_of_its_partition(log_dir: Path):
    partition = log_dir / "orders-0"
    first = partition / LOG0
    deleted = first.with_name(first.name + ".deleted")  # retention renames before it deletes
    first.rename(deleted)
    events = _jsonl("store", "dump", deleted)
    assert next(e["base_offset"] for e in events if e["kind"] == "batch") == 0
    assert run_mqinspect("store", "verify", deleted).exit_code == 0
    stat = _json("store", "stat", log_dir)
    assert 0 not in stat["partitions"][0]["base_offsets"]


def test_without_root_a_readable_log_dir_is_inspected_and_an_unreadable_file_is_one_line(kafka_fixture: Path):
    directory = Path(tempfile.mkdtemp(prefix="mqinspect-kafka-", dir="/tmp"))  # tmp_path is private to root
    try:
        logs = directory / "kraft-logs"
        shutil.copytree(kafka_fixture, logs)
        for path in (directory, *directory.rglob("*")):
            path.chmod(0o755 if path.is_dir() else 0o644)
        verified = mqinspect_as_nobody("store", "verify", str(logs), "--format", "json")
        assert verified.returncode == 0, verified.stderr
        assert json.loads(verified.stdout)["batches_checked"] == 124
        (logs / "foo-0" / LOG0).chmod(0o600)  # a broker's file this user may not read
        refused = mqinspect_as_nobody("store", "dump", str(logs / "foo-0"))
        assert refused.returncode == ExitStatus.MISSING_CAPABILITY, refused.stderr
        line = [text for text in refused.stderr.splitlines() if text.startswith("mqinspect: error:")]
        assert len(line) == 1 and "Permission denied" in line[0] and "Traceback" not in refused.stderr
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_verify_of_a_partition_or_segment_checks_its_own_files(fixture_copy: Path):
    (fixture_copy / "replication-offset-checkpoint").write_text("0\n2\nfoo 0 x\n")  # the log dir's, broken
    assert run_mqinspect("store", "verify", fixture_copy).exit_code == ExitStatus.FINDINGS
    for path in (fixture_copy / "foo-0", fixture_copy / "foo-0" / LOG0):
        assert run_mqinspect("store", "verify", path).exit_code == 0, path
