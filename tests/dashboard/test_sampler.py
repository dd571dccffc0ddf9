"""The sampler against real files and processes: residency per chunk against what the test put in the page
cache (and fincore), positions against where the builder put the records, the processes holding the store,
the eBPF sessions' life cycle (fake sessions) and, with BPF, faults attributed to the segment a child touches.
"""

from __future__ import annotations

import mmap
import os
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from support import fincore_pages

from mqinspect.dashboard.probes import ProbeSet
from mqinspect.dashboard.process_reader import FOUND_IN_FDS, FOUND_IN_MAPS, store_holders
from mqinspect.dashboard.sampler import Sampler, SamplerSettings, SamplerThread
from mqinspect.dashboard.snapshot import ProbeState
from mqinspect.dashboard.store_reader import StoreReader
from probes.errors import CapabilityMissing

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "store"))
from store_builder import StoreBuilder

SEGMENT = 256 * 1024  # 64 pages


@pytest.fixture
def built(tmp_path: Path):
    builder = StoreBuilder(tmp_path / "store", segment_size=SEGMENT, cq_entries_per_file=100, index=False)
    for number in range(900):  # four segments: the last one, being written, is not in the residency test
        builder.add("TopicA", body=bytes([65 + number % 26]) * 1000, keys=f"k{number}")
    return builder.build()


def evict(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def read_pages(path: Path, first: int, count: int) -> None:
    """Bring exactly these pages into the page cache: pread with readahead off."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        for page in range(first, first + count):
            os.pread(fd, 1, page * mmap.PAGESIZE)
    finally:
        os.close(fd)


def test_residency_per_chunk_matches_what_was_cached(built):
    first, second, third = built.segments[:3]
    for path in (first, second, third):
        evict(path)
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


def test_positions_come_from_the_files_and_the_checkpoint(built):
    newest = built.segments[-1]
    start = int(newest.name)
    flushed = built.max_physical_offset - 1000
    (built.root / "checkpoint").write_bytes(struct.pack(">qqqqq", 5, 5, 0, flushed, 0).ljust(4096, b"\0"))
    view = StoreReader(built.root).read({})
    rows = {Path(row.path): row for row in view.segments}
    assert rows[newest].newest and rows[newest].wrote_position_bytes == built.max_physical_offset - start
    assert rows[newest].flushed_position_bytes == flushed - start
    older = rows[built.segments[0]]
    assert (
        older.wrote_position_bytes is None and "newest segment" in older.unavailable["wrote_position_bytes"]
    )
    assert older.flushed_position_bytes is None
    assert view.checkpoint_flush_time_ms == 5


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
        ends.append(reader._end_of_data(str(path), {}))
    assert ends == [0, 1000, 1001, 70_000, 70_000, SEGMENT - 3, SEGMENT]
    path.write_bytes(bytes([7]) * 500 + bytes(SEGMENT - 500))  # recovered: cut back
    os.utime(path, ns=(1, 1))
    assert reader._end_of_data(str(path), {}) == 500


def test_flushed_is_unavailable_when_the_checkpoint_cannot_say(built):
    view = StoreReader(built.root).read({})
    newest = next(row for row in view.segments if row.newest and row.kind == "commitlog")
    assert newest.flushed_position_bytes is None
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


class FakeSession:
    def __init__(self, probe, *, fail_open=None, fail_read=False, opened=None):
        self.probe = probe
        self.fail_open = fail_open
        self.fail_read = fail_read
        self.closed = False
        self.attached_tracepoints = ("tp:x",)
        self.opened = opened

    def open(self):
        if self.opened is not None:
            self.opened.wait(5)
        if self.fail_open:
            raise self.fail_open

    def snapshot(self):
        if self.fail_read:
            raise RuntimeError("map read failed")
        return object()

    def close(self):
        self.closed = True


class FakeProbe:
    def __init__(self, name):
        self.name = name

    def subject(self):
        return "page faults of pid 7"


def probe_set(**session_kwargs):
    sessions = []

    def factory(probe):
        session = FakeSession(probe, **session_kwargs.get(probe.name, {}))
        sessions.append(session)
        return session

    probes = ProbeSet(
        (), None, session_factory=factory, probe_factory=lambda name, pids, store: FakeProbe(name)
    )
    return probes, sessions


def test_a_probe_that_cannot_load_is_unavailable_with_its_fix_and_the_others_run():
    probes, sessions = probe_set(faults={"fail_open": CapabilityMissing("no bcc", fix="apt-get install bcc")})
    probes.start(background=False)
    statuses = {status.name: status for status in probes.statuses()}
    assert statuses["faults"].state == ProbeState.UNAVAILABLE
    assert (statuses["faults"].reason, statuses["faults"].fix) == ("no bcc", "apt-get install bcc")
    assert statuses["writeback"].state == ProbeState.RUNNING and statuses["writeback"].subject
    assert set(probes.collect()) == {"pagecache", "writeback", "sendpath"}
    probes.close()
    assert all(session.closed for session in sessions if session.probe.name != "faults")


def test_a_probe_that_fails_while_reading_is_closed_and_reported():
    probes, sessions = probe_set(sendpath={"fail_read": True})
    probes.start(background=False)
    assert "sendpath" not in probes.collect()
    status = next(s for s in probes.statuses() if s.name == "sendpath")
    assert status.state == ProbeState.UNAVAILABLE and "map read failed" in status.reason
    assert next(s for s in sessions if s.probe.name == "sendpath").closed
    probes.close()


def test_closing_during_a_compile_leaves_nothing_attached():
    compiling = threading.Event()
    probes, sessions = probe_set(faults={"opened": compiling})
    probes.start()  # the faults "compile" waits for the event
    closer = threading.Thread(target=probes.close)
    closer.start()
    compiling.set()
    closer.join(5)
    assert not closer.is_alive()
    assert sessions and all(session.closed for session in sessions)
    assert [s.state for s in probes.statuses()].count(ProbeState.RUNNING) <= 1


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
    time.sleep(0.3)
    failing.stop(5)
    assert closed and any(isinstance(error, OSError) for error in errors)


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
