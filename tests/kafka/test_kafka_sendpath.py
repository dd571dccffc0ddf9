"""`mqinspect lab sendpath --store KAFKA_LOG_DIR`: a partition's segment served, read-only, by every send path
beside sendfile (Kafka's own: FileRecords.writeTo is FileChannel.transferTo); which segment a log dir, a
partition directory or a .log file gives; a log dir whose segments hold nothing is one line, exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import one_error_line, run_mqinspect

from mqinspect.errors import BadInput
from mqinspect.labs.sendpath import kafka_source, store_source
from store.kafka.writer import LogDirWriter, ProducerRecord

PAYLOAD = 256 << 10


def _log_dir(root: Path) -> Path:
    """orders-0 small, orders-1 the biggest (two segments: the newest holds 300 KB); returns that newest."""
    with LogDirWriter(root, segment_bytes=400_000) as log_dir:
        log_dir.partition("orders", 0).append([ProducerRecord(b"k", b"v" * 100)])
        big = log_dir.partition("orders", 1)
        for _ in range(175):
            big.append([ProducerRecord(b"k", b"v" * 4000)])
    logs = sorted((root / "orders-1").glob("*.log"))
    assert len(logs) == 2
    return logs[-1]


def test_the_source_is_the_newest_segment_of_the_biggest_partition_or_the_one_given(tmp_path: Path):
    root = tmp_path / "kafka-logs"
    newest = _log_dir(root)
    source, note = store_source(root, PAYLOAD)
    assert (source.path, source.log_format, source.label) == (newest, "kafka", f"orders-1/{newest.name}")
    assert (source.offset_bytes, source.length_bytes, source.temporary) == (0, PAYLOAD, False)
    assert note is None
    small, note = kafka_source(root / "orders-0", PAYLOAD)
    assert small.length_bytes == (root / "orders-0" / f"{0:020d}.log").stat().st_size
    assert "each run sends those" in note
    first = sorted((root / "orders-1").glob("*.log"))[0]
    assert kafka_source(first, PAYLOAD)[0].path == first


def test_a_log_dir_whose_segments_hold_nothing_is_bad_input(tmp_path: Path):
    root = tmp_path / "kafka-logs"
    LogDirWriter(root).partition("orders", 0).close()
    with pytest.raises(BadInput, match=r"no Kafka \.log segment holds batches"):
        store_source(root, PAYLOAD)
    result = run_mqinspect("lab", "sendpath", "--store", root, "--bytes", "64k", "-n", "1")
    assert result.exit_code == 2
    assert "no Kafka .log segment holds batches" in one_error_line(result)


def test_the_lab_serves_a_kafka_segment_by_every_path_beside_sendfile(tmp_path: Path):
    root = tmp_path / "kafka-logs"
    newest = _log_dir(root)
    before = newest.read_bytes()
    result = run_mqinspect(
        "lab", "sendpath", "--store", root, "--bytes", "256k", "-n", "1", "--paths",
        "read_write,mmap_write,sendfile,splice", "--format", "json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["source"]["log_format"] == "kafka"
    assert report["source"]["label"] == f"orders-1/{newest.name}"
    assert report["source"]["path"] == str(newest)
    paths = {row["path"]: row for row in report["paths"]}
    assert set(paths) == {"read_write", "mmap_write", "sendfile", "splice"}
    for row in paths.values():
        (run,) = row["runs"]
        assert run["bytes_received"] == PAYLOAD, row["path"]
    sendfile = paths["sendfile"]
    if report["copies_unavailable"] is None:  # with BPF: sendfile moves the segment without a user copy
        assert sendfile["sender_bytes_kernel_to_user"] == sendfile["sender_bytes_user_to_kernel"] == 0
        assert sendfile["sender_bytes_in_kernel"] == PAYLOAD
    assert newest.read_bytes() == before  # only read
    table = run_mqinspect("lab", "sendpath", "--store", root / "orders-1", "--bytes", "64k", "-n", "1",
                          "--paths", "sendfile", columns=200)  # fmt: skip
    assert table.exit_code == 0, table.output
    assert f"Kafka segment orders-1/{newest.name}, which a broker serves by sendfile" in table.stdout
