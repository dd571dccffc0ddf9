"""`mqinspect top` on Kafka log directories: segments per topic-partition with residency equal to fincore's,
each partition's log end offset, and consumer groups' positions and lag from `__consumer_offsets` against
the offsets the test committed (written with the writer and store.kafka's encoder); the Kafka 4.0 fixture,
which has no `__consumer_offsets`; a partition directory and a single segment; a directory of neither format.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import fadvise_out, fincore_pages, one_error_line, read_pages, ready_child, run_mqinspect

from mqinspect.render.top import top_view
from mqinspect.sampling.sampler import Sampler, SamplerSettings
from mqinspect.sampling.snapshot import ChunkMap
from mqinspect.sampling.stream import TopOptions, sample_once
from store.inspection.kafka.committed import CommittedOffsets
from store.kafka.consumer_offsets import encode_offset_commit
from store.kafka.writer import LogDirWriter, ProducerRecord

KAFKA_FIXTURE = Path("/work/shared/fixtures/kafka-4.0-kraft-logs")
T0 = 1_700_000_000_000
RECORD = b"v" * 200


def _commit(writer, group: str, topic: str, partition: int, offset: int | None, **options):
    key, value = encode_offset_commit(group, topic, partition, offset, commit_timestamp=T0)
    return writer.append([ProducerRecord(key, value, timestamp=T0)], **options)


def _log_dir(root: Path) -> dict:
    """orders-0 and orders-1 (two segments each: 100 batches of 5 records), and __consumer_offsets-0 with
    commits: the latest per group and partition wins, a tombstone deletes, an aborted transaction's commit
    does not count and a committed one does. Returns where each batch of orders-0 starts, by base offset."""
    positions = {}
    with LogDirWriter(root, segment_bytes=64 << 10) as log_dir:
        for number in (0, 1):
            partition = log_dir.partition("orders", number)
            for _ in range(100):
                written = partition.append([ProducerRecord(b"k", RECORD, timestamp=T0) for _ in range(5)])
                if number == 0:
                    positions[written.base_offset] = (written.segment, written.position)
        offsets = log_dir.partition("__consumer_offsets", 0)
        _commit(offsets, "billing", "orders", 0, 100)
        _commit(offsets, "billing", "orders", 0, 250)  # the latest wins
        _commit(offsets, "billing", "orders", 1, 500)  # read everything
        _commit(offsets, "audit", "orders", 0, 7)
        _commit(offsets, "audit", "orders", 0, None)  # a tombstone: audit has no offset any more
        _commit(offsets, "txn", "orders", 1, 40, producer_id=9, transactional=True)
        offsets.end_transaction(9, commit=False)  # aborted: not a commit
        _commit(offsets, "txn", "orders", 1, 45, producer_id=9, transactional=True)
        offsets.end_transaction(9, commit=True)
    return positions


def _top_json(path: Path) -> dict:
    result = run_mqinspect("top", path, "--once", "--no-ebpf", "--interval", "0.1", "--format", "json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_top_shows_each_partitions_segments_end_and_the_groups_lag_from_consumer_offsets(tmp_path: Path):
    root = tmp_path / "kafka-logs"
    positions = _log_dir(root)
    snapshot = _top_json(root)
    store = snapshot["store"]
    assert store["log_format"] == "kafka"
    partitions = {partition["name"]: partition for partition in store["partitions"]}
    assert set(partitions) == {"__consumer_offsets-0", "orders-0", "orders-1"}
    orders_logs = sorted((root / "orders-0").glob("*.log"))
    assert len(orders_logs) == 2  # it rolled
    size = sum(log.stat().st_size for log in orders_logs)
    assert partitions["orders-0"] | {"unavailable": {}} == {
        "name": "orders-0",
        "topic": "orders",
        "partition": 0,
        "segments": 2,
        "log_start_offset": 0,
        "log_end_offset": 500,
        "log_size_bytes": size,
        "unavailable": {},
    }
    rows = {segment["name"]: segment for segment in store["segments"]}
    second = f"orders-0/{orders_logs[1].name}"
    assert rows[second]["partition"] == "orders-0" and rows[second]["kind"] == "log"
    assert (
        rows[second]["holds_write_position"]
        and rows[second]["wrote_position_bytes"] == orders_logs[1].stat().st_size
    )
    assert (
        rows[second]["start_offset_bytes"] == orders_logs[0].stat().st_size
    )  # the partition's log, end to end
    assert "does not apply to Kafka" in rows[second]["unavailable"]["flushed_position_bytes"]
    assert f"orders-0/{orders_logs[0].name.replace('.log', '.index')}" in rows  # its indexes have rows too

    consumers = snapshot["consumers"]
    groups = {(row["group"], row["topic"], row["queue_id"]): row for row in consumers["groups"]}
    assert set(groups) == {("billing", "orders", 0), ("billing", "orders", 1), ("txn", "orders", 1)}
    billing = groups[("billing", "orders", 0)]
    segment, position = positions[250]
    first_size = orders_logs[0].stat().st_size
    committed_at = position + (first_size if segment == orders_logs[1] else 0)
    assert billing | {"unavailable": {}} == {
        "group": "billing",
        "topic": "orders",
        "queue_id": 0,
        "committed_offset": 250,
        "max_offset": 500,
        "lag_messages": 250,
        "committed_physical_offset_bytes": committed_at,
        "queue_end_physical_offset_bytes": size,
        "lag_bytes": size - committed_at,
        "segment": f"orders-0/{segment.name}",
        "unavailable": {},
    }
    assert groups[("billing", "orders", 1)]["lag_messages"] == 0
    assert groups[("billing", "orders", 1)]["lag_bytes"] == 0
    assert groups[("txn", "orders", 1)]["committed_offset"] == 45  # the committed transaction's, not 40
    # the group's position is marked on the segment that holds it, bytes into that segment
    assert rows[f"orders-0/{segment.name}"]["consumer_positions_bytes"] == [position]


def test_residency_of_each_segment_equals_fincores(tmp_path: Path):
    root = tmp_path / "kafka-logs"
    _log_dir(root)
    logs = sorted(root.glob("*/*.log"))
    for log in logs:
        fadvise_out(log)
    read_pages(logs[1], 2, 3)
    files = [path for path in root.glob("*/*") if path.suffix in (".log", ".index", ".timeindex")]
    before = {str(path): fincore_pages(path) for path in files}  # top reads a few pages after measuring
    store = _top_json(root)["store"]
    cached = {segment["path"]: segment["cached_pages"] for segment in store["segments"]}
    assert {path: cached[path] for path in before} == before
    assert cached[str(logs[1])] == 3


def test_the_kafka_fixture_without_consumer_offsets_says_so(tmp_path: Path):
    snapshot = _top_json(KAFKA_FIXTURE)
    partitions = {
        p["name"]: (p["log_start_offset"], p["log_end_offset"]) for p in snapshot["store"]["partitions"]
    }
    assert partitions == {"__cluster_metadata-0": (0, 129), "foo-0": (0, 1)}
    names = [segment["name"] for segment in snapshot["store"]["segments"]]
    assert "foo-0/00000000000000000000.log" in names and "foo-0/00000000000000000000.index" in names
    consumers = snapshot["consumers"]
    assert consumers["groups"] == []
    assert consumers["unavailable"]["groups"] == f"no __consumer_offsets in this log dir ({KAFKA_FIXTURE})"
    table = run_mqinspect("top", KAFKA_FIXTURE, "--once", "--no-ebpf", "--interval", "0.1", columns=80)
    assert table.exit_code == 0, table.output  # foo-0's empty .index is drawn too
    assert "no __consumer_offsets in this log dir" in table.stdout
    assert "Partitions" in table.stdout and "does not apply to Kafka" in table.stdout


def test_a_partition_directory_shows_its_groups_and_a_segment_its_own_files(tmp_path: Path):
    root = tmp_path / "kafka-logs"
    _log_dir(root)
    snapshot = _top_json(root / "orders-1")
    assert [p["name"] for p in snapshot["store"]["partitions"]] == ["orders-1"]
    assert {row["group"] for row in snapshot["consumers"]["groups"]} == {"billing", "txn"}
    first = sorted((root / "orders-1").glob("*.log"))[0]
    snapshot = _top_json(first)
    assert {segment["name"].rsplit(".", 1)[1] for segment in snapshot["store"]["segments"]} == {
        "log",
        "index",
        "timeindex",
    }
    assert "single segment" in snapshot["consumers"]["unavailable"]["groups"]


def test_a_directory_of_neither_format_is_one_line_naming_both(tmp_path: Path):
    result = run_mqinspect("top", tmp_path, "--once", "--no-ebpf")
    assert result.exit_code == 2
    line = one_error_line(result)
    assert "not a RocketMQ store" in line and "not a Kafka log directory" in line


def test_consumer_offsets_are_read_on_from_where_the_last_read_stopped(tmp_path: Path):
    root = tmp_path / "kafka-logs"
    log_dir = LogDirWriter(root)
    offsets = log_dir.partition("__consumer_offsets", 3)
    _commit(offsets, "g", "t", 0, 10)
    offsets.flush()
    committed = CommittedOffsets()
    commits, findings = committed.read(root)
    assert {key: commit.offset for key, commit in commits.items()} == {("g", "t", 0): 10} and findings == ()
    _commit(offsets, "g", "t", 0, 20)
    _commit(offsets, "g", "t", 1, 5)
    offsets.flush()
    commits, _findings = committed.read(root)
    assert {key: commit.offset for key, commit in commits.items()} == {("g", "t", 0): 20, ("g", "t", 1): 5}
    offsets.roll()  # a new segment: the first is kept as read, the new one read from its start
    _commit(offsets, "g", "t", 1, None)
    offsets.flush()
    commits, _findings = committed.read(root)
    assert {key: commit.offset for key, commit in commits.items()} == {("g", "t", 0): 20}
    log_dir.close()


def test_an_empty_files_chunk_map_has_no_chunks_and_is_drawn():
    empty = ChunkMap.of(())
    assert empty.states() == ()
    snapshot = sample_once(TopOptions(KAFKA_FIXTURE, interval_s=0.1, ebpf=False))
    (index,) = [s for s in snapshot.store.segments if s.name == "foo-0/00000000000000000000.index"]
    assert index.size_bytes == 0 and index.chunks == empty
    top_view(snapshot)  # drawn without error


def test_a_log_dir_being_written_rolled_and_deleted_is_followed_interval_by_interval(tmp_path: Path):
    root = tmp_path / "kafka-logs"
    log_dir = LogDirWriter(root, segment_bytes=4 << 10)  # a roll every 14 batches
    orders = log_dir.partition("orders", 0)
    offsets = log_dir.partition("__consumer_offsets", 0)
    sampler = Sampler(SamplerSettings(root, (), 0.1, False))
    sampler.open(background=False)
    try:
        for round_number in range(1, 6):
            for _ in range(10):
                written = orders.append([ProducerRecord(b"k", RECORD, timestamp=T0)])
            _commit(offsets, "g", "orders", 0, orders.next_offset - 3)
            offsets.flush()
            if round_number == 4:  # retention: the oldest segment renamed .deleted, removed a round later
                first = sorted((root / "orders-0").glob("*.log"))[0]
                deleted = [
                    p.rename(p.with_name(p.name + ".deleted")) for p in first.parent.glob(first.stem + ".*")
                ]
            if round_number == 5:
                for path in deleted:
                    path.unlink()
            snapshot = sampler.sample()
            rows = {segment.name: segment for segment in snapshot.store.segments}
            if round_number == 4:
                row = rows[f"orders-0/{first.name}.deleted"]
                assert (
                    row.wrote_position_bytes is None
                    and ".deleted file" in row.unavailable["wrote_position_bytes"]
                )
            if round_number == 5:
                assert not any(name.endswith(".deleted") for name in rows)
            (partition,) = [p for p in snapshot.store.partitions if p.name == "orders-0"]
            logs = sorted((root / "orders-0").glob("*.log"))
            assert partition.log_end_offset == orders.next_offset
            assert partition.log_start_offset == int(logs[0].stem)
            assert partition.log_size_bytes == sum(log.stat().st_size for log in logs)
            (group,) = snapshot.consumers.groups
            assert (group.committed_offset, group.lag_messages) == (orders.next_offset - 3, 3)
            assert group.lag_bytes == 3 * written.size_bytes  # every batch is the same size
        assert len(orders.segments) >= 3
    finally:
        sampler.close()
        log_dir.close()


# Maps the segment (so the dashboard finds it as the log dir's holder), then on "go" reads one byte of
# `count` pages `stride` pages apart through the mapping (one fault each: past the kernel's fault-around)
# and says "done".
MAPPED_READER = r"""
import mmap, os, sys
path, first, count, stride = sys.argv[1], *map(int, sys.argv[2:])
fd = os.open(path, os.O_RDONLY)
mapping = mmap.mmap(fd, 0, prot=mmap.PROT_READ)
print("ready", flush=True)
sys.stdin.readline()
for page in range(first, first + count * stride, stride):
    mapping[page * mmap.PAGESIZE]
print("done", flush=True)
sys.stdin.readline()
"""


@pytest.mark.requires_bpf
def test_the_dashboard_finds_a_segments_holder_and_counts_its_faults_on_that_segment(tmp_path: Path):
    root = tmp_path / "kafka-logs"
    with LogDirWriter(root) as log_dir:
        partition = log_dir.partition("orders", 2)
        for _ in range(700):
            partition.append([ProducerRecord(b"k", b"v" * 4000)])
    segment = root / "orders-2" / f"{0:020d}.log"
    fadvise_out(segment)
    touched = list(range(32, 32 + 8 * 64, 64))
    with ready_child(MAPPED_READER, segment, 32, 8, 64) as child:
        sampler = Sampler(SamplerSettings(root, (), 0.5, ebpf=True))  # no --pid: the holder is found
        sampler.open(background=False)
        try:
            assert sampler.processes.watched() == (child.pid,)
            sampler.sample()  # the interval before the reads
            print("go", file=child.stdin, flush=True)
            assert child.stdout.readline() == "done\n"
            snapshot = sampler.sample()
        finally:
            sampler.close()
    row = next(s for s in snapshot.store.segments if s.name == "orders-2/00000000000000000000.log")
    assert row.faults == len(touched) and row.major_faults >= 1
    ranges = [r for r in row.page_ranges if r.faults]
    for page in touched:
        assert any(r.first_page <= page <= r.last_page for r in ranges), (page, ranges)
    (process,) = [p for p in snapshot.processes if p.pid == child.pid]
    assert process.found_by == "maps" and process.traced_faults >= len(touched)


def test_a_recording_of_a_kafka_log_dir_replays_key_for_key(tmp_path: Path):
    root = tmp_path / "kafka-logs"
    _log_dir(root)
    recording = tmp_path / "top.jsonl"
    recorded = run_mqinspect(
        "top", root, "--once", "--no-ebpf", "--interval", "0.1", "--format", "json", "--record", recording
    )
    assert recorded.exit_code == 0, recorded.output
    replayed = run_mqinspect("replay", recording, "--format", "jsonl")
    assert replayed.exit_code == 0, replayed.output
    assert json.loads(replayed.stdout) == json.loads(recording.read_text()) == json.loads(recorded.stdout)
