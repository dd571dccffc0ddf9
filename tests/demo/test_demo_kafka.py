"""`mqinspect demo --format kafka`: a Kafka log directory written by the demo's broker process (store.kafka's
writer, rolled by size, retention, consumer offsets in __consumer_offsets) and read by one consumer process
per send path. Checked against independent readers: kafka-python reads every batch the broker wrote,
`store verify` finds nothing wrong, the group offsets decoded from __consumer_offsets are the ones each
consumer says it committed; and the CLI's --no-ui report on the Kafka log dir."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

from kafka.record import MemoryRecords

from mqinspect.demo.settings import DemoSettings
from mqinspect.demo.workload import DemoWorkload
from store.config import MiB
from store.kafka.batches import RecordBatch, scan_log
from store.kafka.consumer_offsets import OffsetCommit, decode_group_record
from store.kafka.records import decode_records
from store.transfer import SendPath

REPO = Path(__file__).resolve().parents[2]
MQINSPECT = REPO / ".venv" / "bin" / "mqinspect"
# 4 MiB segments at about 11.6 MiB/s: a roll every 0.35 s, retention keeping three.
SMALL_KAFKA = DemoSettings(segment_size_bytes=4 * MiB, max_segments=3, stop_grace_s=4.0, log_format="kafka")
RUN_S = 4.0


def _kafka_python_batches(log: Path) -> list[tuple[int, int, int]]:
    """(base offset, last offset, records) of every batch, as kafka-python reads them."""
    batches, records = [], MemoryRecords(log.read_bytes())
    while (batch := records.next_batch()) is not None:
        assert batch.validate_crc()
        batches.append((batch.base_offset, batch.last_offset, sum(1 for _ in batch)))
    return batches


def _committed_offsets(partition: Path) -> dict[str, int]:
    """Each group's last committed offset, decoded from the __consumer_offsets partition's records."""
    committed = {}
    for log in sorted(partition.glob("*.log")):
        for entry in scan_log(log).entries:
            decoded = decode_records(entry, log)
            for key, value in zip(decoded.keys, decoded.values, strict=True):
                record = decode_group_record(key, value)
                assert isinstance(record, OffsetCommit) and record.topic == SMALL_KAFKA.topic
                committed[record.group] = record.offset
    return committed


def test_the_kafka_demo_writes_a_log_dir_that_kafka_python_and_verify_read(tmp_path: Path):
    with DemoWorkload(SMALL_KAFKA, tmp_path / "demo") as workload:
        log_dir = workload.store_dir
        assert log_dir.name == "kafka-logs" and (log_dir / "meta.properties").is_file()
        with socket.create_connection(("127.0.0.1", workload.broker_port)) as stray:
            stray.sendall(b"not a request\n")  # ends this connection only, not the broker
            assert stray.recv(16) == b""
        with socket.create_connection(("127.0.0.1", workload.broker_port)) as gone:
            gone.sendall(b'{"fetch": 0, "max_bytes": 4194304, "path": "sendfile"}\n')  # and goes away unread
        deadline = time.monotonic() + RUN_S
        while time.monotonic() < deadline:
            assert not workload.exited_children()
            time.sleep(0.2)
        outcome = workload.stop()
    assert outcome.clean_exit, outcome.children
    broker_log = (tmp_path / "demo" / "logs" / "broker.log").read_text()
    assert "a consumer connection ended" in broker_log and "Traceback" not in broker_log
    broker = outcome.broker
    assert broker.segments_deleted >= 1 and broker.segments_at_end <= SMALL_KAFKA.max_segments + 1
    assert broker.page_cache_busy_puts is None and broker.warmups == ()

    partition = log_dir / f"{SMALL_KAFKA.topic}-0"
    logs = sorted(partition.glob("*.log"))
    assert len(logs) == broker.segments_at_end and not list(partition.glob("*.deleted"))
    theirs = [batch for log in logs for batch in _kafka_python_batches(log)]
    ours = [
        (entry.base_offset, entry.last_offset, entry.record_count)
        for log in logs
        for entry in scan_log(log).entries
        if isinstance(entry, RecordBatch)
    ]
    assert theirs == ours
    assert ours[0][0] == broker.commitlog_min_offset and ours[-1][1] + 1 == broker.commitlog_max_offset
    assert sum(count for *_, count in ours) == broker.commitlog_max_offset - broker.commitlog_min_offset
    assert subprocess.run([MQINSPECT, "store", "verify", log_dir], capture_output=True).returncode == 0

    consumers = {consumer.path: consumer for consumer in outcome.consumers}
    assert set(consumers) == set(SMALL_KAFKA.paths)
    for consumer in consumers.values():
        assert consumer.error is None and consumer.messages > 0 and consumer.bytes_received > 0
    served = {row.path: row for row in broker.served}
    assert served[SendPath.SENDFILE].syscalls.get("sendfile", 0) > 0  # Kafka's own path, by its own calls
    assert served[SendPath.READ_WRITE].syscalls.get("pread64", 0) > 0
    committed = _committed_offsets(log_dir / "__consumer_offsets-0")
    assert committed == {c.group: c.committed_offset for c in consumers.values()}


def test_the_cli_s_no_ui_report_on_a_kafka_log_dir(tmp_path: Path):
    result = subprocess.run(
        [MQINSPECT, "demo", "--log-format", "kafka", "--format", "json", "--no-ui", "--duration", "3",
         "--dir", tmp_path / "demo"],
        capture_output=True, text=True, timeout=180, env={**os.environ, "NO_COLOR": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Kafka log directory" in result.stderr and "fetch server" in result.stderr
    report = json.loads(result.stdout)
    assert report["settings"]["log_format"] == "kafka"
    workload = report["workload"]
    assert workload["store_dir"] == str(tmp_path / "demo" / "kafka-logs")
    assert all(child["exit_code"] == 0 and child["reported"] for child in workload["children"])
    assert workload["broker"]["produced_messages"] > 0
    assert all(consumer["bytes_received"] > 0 for consumer in workload["consumers"])
    assert str(tmp_path / "demo" / "kafka-logs") in report["live"]["title"]
    assert [section["kind"] for section in report["labs"]] == ["sendpath_lab"]  # Kafka warms nothing

    table = subprocess.run(
        [MQINSPECT, "demo", "--format", "kafka", "--no-ui", "--duration", "3", "--dir", tmp_path / "again"],
        capture_output=True, text=True, timeout=180, env={**os.environ, "NO_COLOR": "1"},
    )  # fmt: skip
    assert table.returncode == 0, table.stderr
    assert "consumers (each its own process and group)" in table.stdout
    assert f"store: {tmp_path / 'again' / 'kafka-logs'} (kept)" in table.stdout


def test_two_log_formats_at_once_are_one_line_and_exit_2(tmp_path: Path):
    result = subprocess.run(
        [MQINSPECT, "demo", "--format", "kafka", "--log-format", "rocketmq", "--no-ui", "--dir", tmp_path],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "name two log formats" in result.stderr and result.stderr.count("\n") == 1
    assert not any(tmp_path.iterdir())
