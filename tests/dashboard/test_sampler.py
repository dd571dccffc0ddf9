"""The sampler against real files and processes: residency per chunk against what the test put in the page
cache (and fincore), positions against where the builder put the records, the processes holding the store,
the eBPF sessions' life cycle (fake sessions) and, with BPF, faults attributed to the segment a child touches.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import fadvise_out, fincore_pages, read_pages

from mqinspect.sampling.probe_set import ProbeSet
from mqinspect.sampling.process_reader import FOUND_IN_FDS, FOUND_IN_MAPS, store_holders
from mqinspect.sampling.sampler import Sampler, SamplerSettings, SamplerThread
from mqinspect.sampling.snapshot import ProbeState
from mqinspect.sampling.store_reader import LOG_WALK_WINDOW_BYTES, StoreReader
from store import codec
from store.inspection.rocketmq.reading import FIRST_READ_BYTES
from store.safe_read import PreadFile

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "store"))
from store_builder import StoreBuilder, segment_name, write_at, zero_range

SEGMENT = 256 * 1024  # 64 pages


@pytest.fixture
def built(tmp_path: Path):
    builder = StoreBuilder(tmp_path / "store", segment_size=SEGMENT, cq_entries_per_file=100, index=False)
    for number in range(900):  # four segments: the last one, being written, is not in the residency test
        builder.add("TopicA", body=bytes([65 + number % 26]) * 1000, keys=f"k{number}")
    return builder.build()


def test_residency_per_chunk_matches_what_was_cached(built):
    first, second, third = built.segments[:3]
    for path in (first, second, third):
        fadvise_out(path)
    read_pages(first, 0, 64)
    read_pages(third, 0, 32)  # the first half only
    view = StoreReader(built.root, strip_chunks=8).read({})
    rows = {Path(row.path): row for row in view.segments}
    assert rows[first].cached_pages == fincore_pages(first) == 64
    assert rows[second].cached_pages == fincore_pages(second) == 0
    assert rows[third].cached_pages == fincore_pages(third) == 32
    assert rows[first].chunks.cached_pages == (8,) * 8
    assert rows[second].chunks.cached_pages == (0,) * 8
    assert rows[third].chunks.cached_pages == (8,) * 4 + (0,) * 4
    assert rows[third].chunks.dirty_pages == (0,) * 8 and rows[third].residency_source == "cachestat"


def build_records(root: Path, count: int):
    """The same store as `built`, with `count` messages: building again over it rewrites the same files in
    place (same inodes), as a broker that goes on appending would."""
    builder = StoreBuilder(root, segment_size=SEGMENT, cq_entries_per_file=100, index=False)
    for number in range(count):
        builder.add("TopicA", body=bytes([65 + number % 26]) * 1000, keys=f"k{number}")
    return builder.build()


def preallocate_next(built) -> Path:
    """The next CommitLog segment as a broker's allocation service leaves it: full-size, sparse, all zeros."""
    path = built.commitlog / segment_name(int(built.segments[-1].name) + SEGMENT)
    with open(path, "wb") as file:
        file.truncate(SEGMENT)
    return path


def commitlog_rows(view) -> dict[Path, object]:
    return {Path(row.path): row for row in view.segments if row.kind == "commitlog"}


def test_after_a_roll_wrote_is_on_the_segment_being_written_not_the_preallocated_one(built):
    preallocated = preallocate_next(built)
    writing = built.segments[-1]
    flushed = built.records[300].end  # in the second segment
    (built.root / "checkpoint").write_bytes(struct.pack(">qqqqq", 5, 5, 0, flushed, 0).ljust(4096, b"\0"))
    rows = commitlog_rows(StoreReader(built.root).read({}))
    assert rows[preallocated].newest and not rows[writing].newest  # the newest by name is the empty one
    assert rows[writing].wrote_position_bytes == built.max_physical_offset - int(writing.name)
    assert [rows[path].wrote_position_bytes for path in built.segments[:-1]] == [SEGMENT] * 3  # full
    assert rows[preallocated].wrote_position_bytes == 0
    assert [path for path, row in rows.items() if row.holds_write_position] == [writing]
    flushed_in = built.records[300].segment
    assert rows[flushed_in].flushed_position_bytes == flushed - int(flushed_in.name)
    assert rows[built.segments[0]].flushed_position_bytes == SEGMENT
    assert rows[writing].flushed_position_bytes == rows[preallocated].flushed_position_bytes == 0
    assert [path for path, row in rows.items() if row.holds_flushed_position] == [flushed_in]
    assert all("wrote_position_bytes" not in row.unavailable for row in rows.values())
    queue_files = [row for row in StoreReader(built.root).read({}).segments if row.kind == "consumequeue"]
    assert [row.wrote_position_bytes for row in queue_files] == [2000] * len(queue_files)  # 100 entries each
    assert [row.holds_write_position for row in queue_files] == [False] * (len(queue_files) - 1) + [True]


def test_wrote_follows_the_log_as_it_grows_rolls_and_is_cut_back(built):
    preallocated = preallocate_next(built)
    reader = StoreReader(built.root)
    assert commitlog_rows(reader.read({}))[built.segments[-1]].holds_write_position
    grown = build_records(built.root, 950)  # appended in place, in the same segment
    rows = commitlog_rows(reader.read({}))
    assert rows[grown.segments[-1]].wrote_position_bytes == grown.max_physical_offset - int(
        grown.segments[-1].name
    )
    rolled = build_records(built.root, 1100)  # into the preallocated segment
    assert rolled.segments[-1] == preallocated
    rows = commitlog_rows(reader.read({}))
    assert (
        rows[built.segments[-1]].wrote_position_bytes == SEGMENT
        and not rows[built.segments[-1]].holds_write_position
    )
    assert rows[preallocated].wrote_position_bytes == rolled.max_physical_offset - int(preallocated.name)
    assert rows[preallocated].holds_write_position
    cut = rolled.records[1050]  # recovery cut the log after this record: the rest of the segment is zeros
    zero_range(preallocated, cut.position + cut.size_bytes, SEGMENT)
    rows = commitlog_rows(reader.read({}))
    assert rows[preallocated].wrote_position_bytes == cut.position + cut.size_bytes


def test_a_log_that_ends_exactly_at_a_segment_end_writes_on_in_the_next_file(built):
    writing = built.segments[-1]
    end = built.max_physical_offset - int(writing.name)
    write_at(writing, end, struct.pack(">iI", SEGMENT - end, codec.BLANK_MAGIC_CODE))  # the segment is full
    rows = commitlog_rows(StoreReader(built.root).read({}))
    assert (
        rows[writing].wrote_position_bytes == SEGMENT and rows[writing].holds_write_position
    )  # no next file
    preallocated = preallocate_next(built)
    rows = commitlog_rows(StoreReader(built.root).read({}))
    assert rows[writing].wrote_position_bytes == SEGMENT and not rows[writing].holds_write_position
    assert rows[preallocated].wrote_position_bytes == 0 and rows[preallocated].holds_write_position


def test_following_the_log_reads_only_what_was_appended_and_no_hole(built, monkeypatch):
    preallocated = preallocate_next(built)
    reader = StoreReader(built.root)
    reader.read({})
    grown = build_records(built.root, 910)  # ten more records, about 11 KB
    reads = []
    original = PreadFile.read
    monkeypatch.setattr(
        PreadFile, "read", lambda self, *a: reads.append((self.path, *a)) or original(self, *a)
    )
    rows = commitlog_rows(reader.read({}))
    writing = built.segments[-1]
    assert rows[writing].wrote_position_bytes == grown.max_physical_offset - int(writing.name)
    read_from = {path for path, _offset, _length in reads if path.parent == built.commitlog}
    assert read_from == {built.segments[-1]}  # not the full segments, and never the preallocated hole
    read_bytes = sum(length for path, _offset, length in reads if path == built.segments[-1])
    assert read_bytes <= FIRST_READ_BYTES + LOG_WALK_WINDOW_BYTES < SEGMENT / 2  # the last record onwards
    assert preallocated not in read_from


def _commitlog_bytes_read(reader: StoreReader, commitlog: Path, monkeypatch) -> tuple[object, int]:
    reads = []
    original = PreadFile.read
    monkeypatch.setattr(
        PreadFile, "read", lambda self, *a: reads.append((self.path, *a)) or original(self, *a)
    )
    view = reader.read({})
    monkeypatch.setattr(PreadFile, "read", original)
    return view, sum(length for path, _offset, length in reads if path.parent == commitlog)


def test_the_first_search_for_the_log_s_end_reads_only_what_no_consume_queue_points_past(built, monkeypatch):
    """`top --once` on a big store: the first interval has no previous end to resume from, and walked the
    last segment from its start (the headers of a whole 1 GiB segment); it resumes after the newest record
    a ConsumeQueue points at, so its time does not grow with the bytes in the store."""
    writing = built.segments[-1]
    data_in_writing = built.max_physical_offset - int(writing.name)
    assert data_in_writing > 2 * (FIRST_READ_BYTES + LOG_WALK_WINDOW_BYTES)
    view, read_bytes = _commitlog_bytes_read(StoreReader(built.root), built.commitlog, monkeypatch)
    assert commitlog_rows(view)[writing].wrote_position_bytes == data_in_writing
    assert read_bytes <= FIRST_READ_BYTES + LOG_WALK_WINDOW_BYTES
    # the broker has not dispatched its last ten records yet: the walk goes on to the log's real end
    queue_file = max((built.root / "consumequeue" / "TopicA" / "0").iterdir())
    entries = built.records[-1].queue_offset % 100 + 1
    zero_range(queue_file, (entries - 10) * 20, entries * 20)
    view, read_bytes = _commitlog_bytes_read(StoreReader(built.root), built.commitlog, monkeypatch)
    assert commitlog_rows(view)[writing].wrote_position_bytes == data_in_writing
    assert read_bytes <= FIRST_READ_BYTES + LOG_WALK_WINDOW_BYTES
    # a last entry that names no whole record of its size (torn, or the log was cut before it): the last
    # segment is walked from its start, as before
    write_at(queue_file, (entries - 11) * 20 + 8, struct.pack(">i", 7))
    view, _read_bytes = _commitlog_bytes_read(StoreReader(built.root), built.commitlog, monkeypatch)
    assert commitlog_rows(view)[writing].wrote_position_bytes == data_in_writing


def test_the_end_of_data_is_followed_forward_as_the_log_grows(tmp_path):
    path = tmp_path / "segment"
    data = bytearray(SEGMENT)
    with open(path, "wb") as file:
        file.write(data)
    reader = StoreReader.__new__(StoreReader)
    reader._positions = {}
    ends = []
    for end in (0, 1000, 1001, 70_000, 70_000, SEGMENT - 3, SEGMENT):
        data[:end] = bytes([7]) * end
        data[end // 2 : end // 2 + 100] = bytes(100)  # zeros inside the data do not end it
        path.write_bytes(data)
        os.utime(path, ns=(end, end))  # a new mtime per write, as writes through a mapping give
        ends.append(reader._end_of_data(str(path))[0])
    assert ends == [0, 1000, 1001, 70_000, 70_000, SEGMENT - 3, SEGMENT]
    path.write_bytes(bytes([7]) * 500 + bytes(SEGMENT - 500))  # recovered: cut back
    os.utime(path, ns=(1, 1))
    assert reader._end_of_data(str(path))[0] == 500


def test_flushed_is_unavailable_when_the_checkpoint_cannot_say(built):
    view = StoreReader(built.root).read({})
    newest = next(row for row in view.segments if row.newest and row.kind == "commitlog")
    assert newest.flushed_position_bytes is None and newest.wrote_position_bytes is not None
    assert "masterFlushedOffset" in newest.unavailable["flushed_position_bytes"]


HOLDER = """
import mmap, os, sys, time
path, mode = sys.argv[1], sys.argv[2]
fd = os.open(path, os.O_RDONLY)
if mode == "map":
    area = mmap.mmap(fd, 0, prot=mmap.PROT_READ)
    os.close(fd)
    for _ in range(3):  # fault on every page, again and again
        for page in range(0, len(area), mmap.PAGESIZE):
            area[page]
        area.madvise(mmap.MADV_DONTNEED)
print("ready", flush=True)
time.sleep(30)
"""


def start_holder(path: Path, mode: str) -> subprocess.Popen:
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path), mode], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout.readline().strip() == "ready"
    return child


def test_the_processes_holding_the_store_are_found_with_their_rates(built):
    mapper = start_holder(built.segments[0], "map")
    opener = start_holder(built.segments[1], "open")
    try:
        holders = store_holders([str(path) for path in built.segments])
        assert holders[mapper.pid] == FOUND_IN_MAPS and holders[opener.pid] == FOUND_IN_FDS
        sampler = Sampler(SamplerSettings(built.root, (), 0.1, ebpf=False))
        sampler.open()
        time.sleep(0.2)
        snapshot = sampler.sample()
        sampler.close()
        processes = {row.pid: row for row in snapshot.processes}
        assert {mapper.pid, opener.pid} <= set(processes)
        status = Path(f"/proc/{mapper.pid}/status").read_text()
        rss_kib = int(next(line for line in status.splitlines() if line.startswith("VmRSS")).split()[1])
        assert abs(processes[mapper.pid].rss_bytes - rss_kib * 1024) < 1 << 20  # it sleeps: RSS holds still
        assert processes[mapper.pid].minor_faults_per_s is not None
        assert processes[mapper.pid].minor_fault_rate_history == (processes[mapper.pid].minor_faults_per_s,)
    finally:
        for child in (mapper, opener):
            child.kill()
            child.wait()


def test_disabled_probes_say_why():
    probes = ProbeSet((), None, enabled=False)
    probes.start()
    assert {(s.state, s.reason) for s in probes.statuses()} == {
        (ProbeState.DISABLED, "eBPF disabled with --no-ebpf")
    }
    assert probes.collect() == {}


def test_the_sampler_thread_delivers_and_closes_on_stop_and_on_errors(built):
    delivered = []
    sampler = Sampler(SamplerSettings(built.root, (), 0.05, ebpf=False))
    thread = SamplerThread(sampler, 0.05, delivered.append)
    thread.start()
    deadline = time.monotonic() + 5
    while len(delivered) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    thread.stop(5)
    assert [snapshot.sequence for snapshot in delivered[:3]] == [1, 2, 3]
    errors = []
    broken = Sampler(SamplerSettings(built.root, (), 0.05, ebpf=False))
    closed = []
    broken.sample = lambda: (_ for _ in ()).throw(OSError("disk gone"))
    broken.close = lambda: closed.append(True)
    failing = SamplerThread(broken, 0.05, delivered.append, on_error=errors.append)
    failing.start()
    failing.stop(5)  # may stop before the first interval; then no error
    failing = SamplerThread(broken, 0.01, delivered.append, on_error=errors.append)
    failing.start()
    deadline = time.monotonic() + 10
    while not errors and time.monotonic() < deadline:  # the first failed sample, however loaded the machine
        time.sleep(0.01)
    failing.stop(5)
    assert closed and any(isinstance(error, OSError) for error in errors)


class CountingSampler:
    """A sampler that only counts: each snapshot is the time it was taken."""

    def __init__(self) -> None:
        self.closed = False

    def open(self) -> None:
        pass

    def sample(self) -> float:
        return time.monotonic()

    def close(self) -> None:
        self.closed = True


def wait_for(condition, deadline_s: float = 10.0) -> bool:
    deadline = time.monotonic() + deadline_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


def test_the_sampler_thread_takes_a_new_interval_at_its_next_tick():
    """+ and - in the dashboard: a 1-hour interval set to 20 ms delivers at once, not an hour later; set back
    to an hour, it delivers no more; stop() still ends the wait."""
    delivered: list[float] = []
    sampler = CountingSampler()
    thread = SamplerThread(sampler, 3600.0, delivered.append)
    thread.start()
    thread.set_interval(0.02)
    assert wait_for(lambda: len(delivered) >= 3)
    thread.set_interval(3600.0)
    before = len(delivered)
    time.sleep(0.3)
    assert len(delivered) <= before + 1  # only a snapshot already being taken; the next is an hour away
    thread.stop(5)
    assert sampler.closed and not thread._thread.is_alive()


def bpf_programs_held(pid: int) -> set[int]:
    held = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            if os.readlink(fd) == "anon_inode:bpf-prog":
                held.add(fd.name)
        except OSError:
            continue
    return held


@pytest.mark.requires_bpf
def test_faults_on_a_segment_are_attributed_to_it_and_the_probes_are_detached(built):
    target = built.segments[0]
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER.replace("range(3)", "range(10**6)"), str(target), "map"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        before = bpf_programs_held(os.getpid())
        sampler = Sampler(SamplerSettings(built.root, (child.pid,), 0.5, ebpf=True))
        sampler.open(background=False)
        assert {s.state for s in sampler.probes.statuses()} == {ProbeState.RUNNING}
        assert bpf_programs_held(os.getpid()) - before
        time.sleep(0.5)
        snapshot = sampler.sample()
        sampler.close()
        assert bpf_programs_held(os.getpid()) == before
        segment = next(row for row in snapshot.store.segments if Path(row.path) == target)
        others = [row.faults for row in snapshot.store.segments if Path(row.path) != target]
        assert segment.faults and segment.faults >= 64  # every page of the mapping, at least once
        assert set(others) == {0}
        process = next(row for row in snapshot.processes if row.pid == child.pid)
        assert process.traced_faults and process.traced_faults >= segment.faults
    finally:
        child.kill()
        child.wait()


def _age(root: Path) -> None:
    """Every directory of the store last changed an hour ago, as a broker's that appends without creating
    files."""
    for directory in [root, *(path for path in root.rglob("*") if path.is_dir())]:
        stat = directory.stat()
        os.utime(directory, ns=(stat.st_atime_ns, stat.st_mtime_ns - 3600 * 10**9))


def test_streams_list_the_store_again_only_when_one_of_its_directories_changed(built, monkeypatch):
    """`top 1 10`, --once and recordings use every row, and listed the store every interval; they list it
    when a directory's mtime moved, and see a new segment, queue file or queue at the next interval."""
    import mqinspect.sampling.store_reader as store_reader

    listings = []
    real = store_reader.discover_store
    monkeypatch.setattr(store_reader, "discover_store", lambda root: listings.append(root) or real(root))
    _age(built.root)
    reader = StoreReader(built.root)
    listings.clear()
    for _ in range(3):
        reader.read({})
    assert len(listings) == 1
    queue = built.root / "consumequeue" / "TopicA" / "0"
    changes = {
        "a segment": built.commitlog / segment_name(int(built.segments[-1].name) + SEGMENT),
        "a queue file": queue / segment_name(int(max(queue.iterdir()).name) + 2000),
        "a queue": built.root / "consumequeue" / "TopicA" / "5" / segment_name(0),
        "a topic": built.root / "consumequeue" / "TopicB" / "0" / segment_name(0),
    }
    for what, path in changes.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\0" * 4096)
        names = {row.path for row in reader.read({}).segments}
        assert str(path) in names, what
        _age(built.root)
        reader.read({})  # listed once more: the change was too recent to trust the mtimes it left
    listings.clear()
    reader.read({})
    assert listings == []
