"""`top` on a big Kafka log dir (more files than a dashboard measures each interval): StoreReader's turns
on Kafka's files. Each partition's active segment is measured every interval (against fincore) and the
rest by turns, each row saying when it was measured, correct when its turn comes (fincore); a new segment
shows within one interval and a deleted one goes; a growing log's tail is read on from where it stopped;
the JSON keys of a frame are those of before.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from support import fadvise_out, fincore_pages, read_pages, run_mqinspect

from mqinspect.sampling.kafka_store import KafkaStoreReader
from mqinspect.sampling.store_reader import TURN_INTERVALS
from store.inspection.kafka.reading import log_tail
from store.kafka.layout import SegmentFiles
from store.kafka.writer import LogDirWriter, ProducerRecord

T0 = 1_700_000_000.0
RECORD = b"v" * 1000
PARTITIONS = 3


class Clock:
    def __init__(self):
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def log_dir(tmp_path: Path):
    """orders-0..2 of three segments each (16 KiB segments, 1 KiB batches), left open for more appends;
    every directory's mtime set 10 s back, as a broker's that has not rolled lately (a listing made just
    after a directory changed is made again every interval, which would hide what is tested here)."""
    writer = LogDirWriter(tmp_path / "kafka-logs", segment_bytes=16 << 10)
    for number in range(PARTITIONS):
        partition = writer.partition("orders", number)
        for _ in range(40):
            partition.append([ProducerRecord(b"k", RECORD)])
        partition.flush()
    _settle(writer.root)
    yield writer
    writer.close()


def _settle(root: Path) -> None:
    past = time.time() - 10
    for directory in (root, *root.iterdir()):
        if directory.is_dir():
            os.utime(directory, (past, past))


def _rows(view) -> dict[str, object]:
    return {row.path: row for row in view.segments}


def _logs(root: Path, number: int) -> list[Path]:
    return sorted((root / f"orders-{number}").glob("*.log"))


def test_the_active_segment_is_measured_every_interval_and_the_rest_by_turns(log_dir):
    root, clock = log_dir.root, Clock()
    reader = KafkaStoreReader(root, strip_chunks=4, clock=clock, measure_all_up_to=0)
    first = _rows(reader.read({}, frozenset()))
    assert all(row.residency_time_unix_s is None for row in first.values())  # all measured at first
    active, old = _logs(root, 0)[-1], _logs(root, 0)[0]
    measured_at = dict.fromkeys(first, T0)
    share = -(-len(first) // TURN_INTERVALS)
    for interval in range(1, TURN_INTERVALS + 1):
        clock.now = T0 + interval
        fadvise_out(active)
        read_pages(active, 0, 1 + interval % 3)
        rows = _rows(reader.read({}, frozenset()))  # no row drawn
        measured = {path for path, row in rows.items() if row.residency_time_unix_s is None}
        assert str(active) in measured and rows[str(active)].cached_pages == fincore_pages(active)
        assert rows[str(active)].cached_pages == 1 + interval % 3
        # the active segments' .log of each partition, and a turn of the others (each index file of an
        # active segment too when written, and none is here)
        assert len(measured - {str(_logs(root, n)[-1]) for n in range(PARTITIONS)}) <= share
        for path, row in rows.items():
            if path in measured:
                measured_at[path] = clock.now
            else:  # a row measured earlier says when, and it was then
                assert row.residency_time_unix_s == measured_at[path] < clock.now
    assert all(time > T0 for time in measured_at.values()), measured_at  # every file in its turn
    # the old segment's pages change while it is not due: its row shows the last measurement, then
    # fincore's count once its turn comes
    fadvise_out(old)
    before = _rows(reader.read({}, frozenset()))[str(old)]
    read_pages(old, 1, 2)
    for _ in range(TURN_INTERVALS + 1):
        clock.now += 1
        row = _rows(reader.read({}, frozenset()))[str(old)]
        if row.residency_time_unix_s is None:
            break
        assert row.cached_pages == before.cached_pages
    assert row.residency_time_unix_s is None and row.cached_pages == fincore_pages(old) == 2
    # without a hint (top --once, streams, recordings) every row is measured every interval
    assert all(row.residency_time_unix_s is None for row in reader.read({}).segments)


def test_a_new_segment_shows_within_one_interval_and_a_deleted_one_goes(log_dir):
    root = log_dir.root
    reader = KafkaStoreReader(root, strip_chunks=4, measure_all_up_to=0)
    orders = log_dir.partition("orders", 1)
    for _ in range(2):
        reader.read({}, frozenset())
    orders.roll()
    orders.append([ProducerRecord(b"k", RECORD)])
    view = reader.read({}, frozenset())
    rows = {row.name: row for row in view.segments}
    newest = _logs(root, 1)[-1]
    assert int(newest.stem) == orders.next_offset - 1
    for suffix in (".log", ".index", ".timeindex"):
        assert f"orders-1/{newest.stem}{suffix}" in rows
    row = rows[f"orders-1/{newest.name}"]
    assert row.holds_write_position and row.wrote_position_bytes == row.size_bytes == newest.stat().st_size
    assert row.cached_pages == fincore_pages(newest)
    (partition,) = [p for p in view.partitions if p.name == "orders-1"]
    assert (partition.segments, partition.log_end_offset) == (len(_logs(root, 1)), orders.next_offset)
    # the next append shows in the same row (the active .log's size and end every interval)
    orders.append([ProducerRecord(b"k", RECORD)])
    row = _rows(reader.read({}, frozenset()))[str(newest)]
    assert row.wrote_position_bytes == row.size_bytes == newest.stat().st_size
    deleted = orders.delete_oldest_segment()
    view = reader.read({}, frozenset())
    assert not any(row.name.startswith(f"orders-1/{deleted.stem}") for row in view.segments)
    (partition,) = [p for p in view.partitions if p.name == "orders-1"]
    assert partition.log_start_offset == int(_logs(root, 1)[0].stem) and partition.log_start_offset > 0
    assert partition.log_size_bytes == sum(log.stat().st_size for log in _logs(root, 1))


def test_a_growing_logs_tail_is_read_on_from_where_it_stopped(log_dir):
    orders = log_dir.partition("orders", 2)
    log = _logs(log_dir.root, 2)[-1]
    segment = SegmentFiles(int(log.stem), log=log, index=log.with_suffix(".index"))
    before = log_tail(segment)
    for _ in range(3):
        orders.append([ProducerRecord(b"k", RECORD)])
    resumed, whole = log_tail(segment, before), log_tail(segment)
    assert resumed == whole and whole.next_offset == orders.next_offset
    assert log_tail(segment, whole) == whole  # nothing new: as it was
    half = whole.end_position - 100  # a batch cut short at the end (being written): a finding there
    with open(log, "r+b") as file:
        file.truncate(half)
    cut = log_tail(segment, before)
    assert cut.next_offset == orders.next_offset - 1 and cut.findings and cut.end_position < half


def test_a_frames_json_keys_are_those_of_before(log_dir):
    result = run_mqinspect(
        "top", log_dir.root, "--once", "--no-ebpf", "--interval", "0.1", "--format", "json"
    )
    assert result.exit_code == 0, result.output
    store = json.loads(result.stdout)["store"]
    assert set(store) == STORE_KEYS
    assert {key for row in store["segments"] for key in row} == SEGMENT_KEYS
    assert {key for row in store["partitions"] for key in row} == PARTITION_KEYS


# as 3d9c4d4 wrote them (top --once --format json on this log dir)
STORE_KEYS = {"root", "checkpoint_flush_time_ms", "segments", "unavailable", "log_format", "partitions"}
PARTITION_KEYS = {
    "name",
    "topic",
    "partition",
    "segments",
    "log_start_offset",
    "log_end_offset",
    "log_size_bytes",
    "unavailable",
}
SEGMENT_KEYS = {
    "added_pages",
    "cached_pages",
    "chunks",
    "committed_position_bytes",
    "consumer_positions_bytes",
    "deleted_pages",
    "dirtied_pages",
    "dirty_pages",
    "faults",
    "flushed_position_bytes",
    "hit_pages",
    "hit_ratio_percent",
    "holds_flushed_position",
    "holds_write_position",
    "kind",
    "locked_bytes",
    "major_faults",
    "miss_pages",
    "name",
    "newest",
    "page_ranges",
    "pages",
    "partition",
    "path",
    "reader_positions_bytes",
    "residency_source",
    "residency_time_unix_s",
    "size_bytes",
    "start_offset_bytes",
    "unavailable",
    "writeback_pages",
    "written_pages",
    "wrote_position_bytes",
}
