"""`mqinspect export` of Kafka log directories: each partition's series are labelled `topic` and `partition`
(as Kafka's JMX exporter names them, so PromQL joins the two), with its files counted and its residency equal
to fincore's; the Kafka 4.0 fixture's partitions likewise."""

from __future__ import annotations

from pathlib import Path

import pytest
from exporter import sample_values
from support import fincore_pages, run_mqinspect

from store.kafka.writer import LogDirWriter, ProducerRecord

KAFKA_FIXTURE = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "kafka-4.0-kraft-logs"


def _scrape(*paths: Path) -> str:
    result = run_mqinspect("export", *paths, "--once")
    assert result.exit_code == 0, result.stderr
    return result.stdout


def _by_partition(exposition: str, family: str) -> dict[tuple[str, str, str], float]:
    values: dict[tuple[str, str, str], float] = {}
    for labels, value in sample_values(exposition, family).items():
        named = dict(labels)
        key = (named["topic"], named["partition"], named["kind"])
        values[key] = values.get(key, 0) + value
    return values


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    """orders-0 and orders-1 rolled into several segments, payments-0 in one."""
    root = tmp_path / "logs"
    with LogDirWriter(root, segment_bytes=4096, index_interval_bytes=512) as writer:
        for partition, batches in ((0, 45), (1, 20)):
            orders = writer.partition("orders", partition)
            for batch in range(batches):
                orders.append([ProducerRecord(b"k", bytes(200), timestamp=1_700_000_000_000 + batch)])
        writer.partition("payments", 0).append([ProducerRecord(None, b"paid", timestamp=1_700_000_000_000)])
    return root


def test_a_log_dir_is_labelled_by_topic_and_partition_with_fincore_residency(log_dir: Path):
    exposition = _scrape(log_dir)
    files = _by_partition(exposition, "mqinspect_store_files")
    cached = _by_partition(exposition, "mqinspect_store_cached_bytes")
    expected_files: dict[tuple[str, str, str], int] = {}
    resident: dict[tuple[str, str, str], int] = {}
    kinds = {".log": "log", ".index": "offset_index", ".timeindex": "time_index"}
    for directory in log_dir.iterdir():
        if not directory.is_dir():
            continue
        topic, _, partition = directory.name.rpartition("-")
        for path in directory.iterdir():
            kind = kinds.get(path.suffix)
            if kind is not None:
                key = (topic, partition, kind)
                expected_files[key] = expected_files.get(key, 0) + 1
                resident[key] = resident.get(key, 0) + fincore_pages(path) * 4096
    assert {key: files[key] for key in expected_files} == expected_files
    assert expected_files[("orders", "0", "log")] > expected_files[("orders", "1", "log")] > 1
    assert {key: cached[key] for key in resident} == resident
    assert {topic for topic, _partition, _kind in files} == {"orders", "payments"}
    assert all(not dict(labels).get("queue") for labels in sample_values(exposition, "mqinspect_store_files"))


def test_the_kafka_fixture_and_one_of_its_partitions_are_labelled_alike():
    if not KAFKA_FIXTURE.is_dir():
        pytest.fail(f"the shared fixture is missing: {KAFKA_FIXTURE}")
    whole = _by_partition(_scrape(KAFKA_FIXTURE), "mqinspect_store_files")
    assert {(topic, partition) for topic, partition, _kind in whole} == {
        ("foo", "0"),
        ("__cluster_metadata", "0"),
    }
    one = _by_partition(_scrape(KAFKA_FIXTURE / "foo-0"), "mqinspect_store_files")
    assert one == {key: value for key, value in whole.items() if key[0] == "foo"}
