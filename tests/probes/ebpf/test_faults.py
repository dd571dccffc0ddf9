"""The faults probe. Without root: file identities, /proc/PID/maps resolution and its refresh, store segment
names, and one interval assembled from canned maps and a canned /proc. With BPF: a child process touches
pages of a file while the probe traces it, and the counts are held against perf stat (all faults) and the
child's /proc/PID/stat majflt (major faults)."""

from __future__ import annotations

import contextlib
import mmap
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
from canned_program import CannedProgram
from perf_stat import perf_stat_page_faults
from store_roll import SEGMENT_BYTES, trace_a_roll
from support import fincore_pages

from probes.ebpf.faults import (
    GROUP_PAGES,
    GROUP_SHIFT,
    OTHER_TGIDS,
    TOTAL_FIELDS,
    FaultsProbe,
    FaultsSnapshot,
    FileFaults,
    PageRange,
    combine_snapshots,
    merged_spans,
)
from probes.ebpf.inodes import (
    PAGE_SHIFT,
    UNKNOWN_SIZE_CHUNK_PAGES,
    AddressSpaces,
    FileId,
    label_from_maps,
    parse_address_space,
    read_address_space,
    store_files,
)
from probes.ebpf.session import TraceSession
from probes.process_files import parse_maps
from probes.procfs import ProcessGone
from store import _libc
from store.errors import NotAStore

PAGE = mmap.PAGESIZE


# --- file identities and /proc/PID/maps -------------------------------------------------------------------


def test_kernel_dev_t_and_stat_name_the_same_file(tmp_path: Path):
    path = tmp_path / "f"
    path.write_bytes(b"x" * PAGE)
    stat = path.stat()
    file = FileId.from_stat(stat)
    assert FileId.from_kernel(file.kernel_dev, stat.st_ino) == file
    assert file.kernel_dev == os.major(stat.st_dev) << 20 | os.minor(stat.st_dev)


def test_our_own_mapping_resolves_to_the_file_and_page(tmp_path: Path):
    path = tmp_path / "mapped"
    path.write_bytes(b"\0" * 8 * PAGE)
    with path.open("r+b") as handle, mmap.mmap(handle.fileno(), 4 * PAGE, offset=2 * PAGE) as mapped:
        address = _address_of(mapped)
        where = AddressSpaces().resolve(os.getpid(), address + 3 * PAGE + 17)
    assert where.file == FileId.from_stat(path.stat())
    assert where.mapping.path == str(path)
    assert where.mapping.file_page(address + 3 * PAGE + 17) == 5  # offset 2 pages, then 3 more


def _address_of(mapped: mmap.mmap) -> int:
    import ctypes

    return ctypes.addressof(ctypes.c_char.from_buffer(mapped))


MAPS = """\
55d0c0a00000-55d0c0a21000 rw-p 00000000 00:00 0                          [heap]
7f0000000000-7f0000400000 rw-s 00100000 fd:01 1234               /store/commitlog/00000000000000000000
7f0000400000-7f0000401000 r--p 00000000 08:03 99                         /tmp/a file with spaces (deleted)
7f0000500000-7f0000600000 rw-p 00000000 00:00 0
"""


def test_maps_lines_parse_into_sorted_mappings():
    space = parse_address_space(7, "".join(reversed(MAPS.splitlines(keepends=True))))
    heap, commitlog, spaced, anonymous = space.mappings
    assert heap.file is None and heap.path == "[heap]"
    assert commitlog.file == FileId(0xFD, 0x01, 1234) and commitlog.offset == 0x100000
    assert commitlog.file_page(0x7F0000000000 + 5 * PAGE + 1) == (0x100000 >> PAGE_SHIFT) + 5
    assert not commitlog.deleted and commitlog.shown_path == commitlog.path
    assert anonymous.file is None and anonymous.path is None
    assert space.find(0x7F00003FFFFF) is commitlog
    assert space.find(0x7F0000400000) is spaced
    assert space.find(0x7F0000401000) is None  # between mappings
    assert space.find(0x1000) is None


def test_a_deleted_files_mapping_is_parsed_as_the_process_files_parser_does():
    """One maps parser (probes/process_files.py): the path without " (deleted)" and the file marked deleted,
    here as in `mqinspect cache --pid`; shown and named as maps shows it."""
    (entry,) = (entry for entry in parse_maps(MAPS) if entry.inode == 99)
    spaced = parse_address_space(7, MAPS).find(0x7F0000400000)
    assert (spaced.path, spaced.deleted) == (entry.path, entry.deleted) == ("/tmp/a file with spaces", True)
    assert spaced.shown_path == "/tmp/a file with spaces (deleted)"
    label = label_from_maps(parse_address_space(7, MAPS), FileId(8, 3, 99))
    assert (label.name, label.path, label.size_bytes) == (spaced.shown_path, spaced.shown_path, None)


def test_maps_are_read_again_once_per_interval_when_an_address_is_outside_them(tmp_path: Path):
    proc = tmp_path / "proc"
    (proc / "7").mkdir(parents=True)
    maps = proc / "7" / "maps"
    maps.write_text(MAPS.splitlines()[0] + "\n")
    spaces = AddressSpaces(proc)
    assert spaces.resolve(7, 0x55D0C0A00010).mapping.path == "[heap]"
    maps.write_text(MAPS)  # the process mapped the CommitLog
    spaces.new_interval()
    assert spaces.resolve(7, 0x7F0000000010).file == FileId(0xFD, 1, 1234)
    maps.write_text("")
    assert spaces.resolve(7, 0x7F0000500010).mapping.path is None  # read once this interval: not again
    assert spaces.resolve(7, 0x10).mapping is None
    with pytest.raises(ProcessGone):
        read_address_space(8, proc)


def test_the_maps_of_a_process_that_exited_unread_are_tried_once_per_interval(tmp_path: Path, monkeypatch):
    reads = []

    def gone(pid: int, proc_root: Path) -> None:
        reads.append(pid)
        raise ProcessGone(pid, proc_root)

    monkeypatch.setattr("probes.ebpf.inodes.read_address_space", gone)
    spaces = AddressSpaces(tmp_path)
    for group in range(1000):  # a short-lived process's fault records, drained after it exited
        assert spaces.resolve(9, group << 16).mapping is None
        assert spaces.snapshot(9, fresh=True) is None
    assert reads == [9]
    spaces.new_interval()
    spaces.resolve(9, 0)
    assert reads == [9, 9]


def test_merged_spans_join_overlapping_and_touching_windows():
    assert merged_spans([(8, 23), (0, 15), (30, 31), (24, 24)]) == [(0, 24), (30, 31)]
    assert merged_spans([]) == []


# --- store segments ------------------------------------------------------------------------------------


def _store(root: Path, commitlog_pages: int = 4096) -> Path:
    (root / "commitlog").mkdir(parents=True)
    with (root / "commitlog" / f"{0:020d}").open("wb") as segment:
        segment.truncate(commitlog_pages * PAGE)
    queue = root / "consumequeue" / "TopicA" / "3"
    queue.mkdir(parents=True)
    (queue / f"{0:020d}").write_bytes(b"\0" * 20 * 300)
    (root / "index").mkdir()
    (root / "index" / "20261122031500000").write_bytes(b"\0" * PAGE)
    return root


def test_store_files_are_named_by_segment(tmp_path: Path):
    root = _store(tmp_path / "store")
    named = {label.name: label for label in store_files(root).values()}
    assert set(named) == {
        "commitlog/00000000000000000000",
        "consumequeue/TopicA/3/00000000000000000000",
        "index/20261122031500000",
    }
    commitlog = named["commitlog/00000000000000000000"]
    assert commitlog.segment_kind == "commitlog" and commitlog.size_pages == 4096
    assert commitlog.file == FileId.from_stat((root / "commitlog" / f"{0:020d}").stat())


def test_a_directory_that_is_not_a_store_is_refused(tmp_path: Path):
    with pytest.raises(NotAStore):
        FaultsProbe(store=tmp_path)


def test_a_pid_that_does_not_exist_is_refused():
    with pytest.raises(ProcessGone):
        FaultsProbe([2**22 + 1])  # above the largest pid_max


# --- one interval from canned maps and a canned /proc --------------------------------------------------


def _totals(**counts) -> SimpleNamespace:
    """The totals map's one entry as the program fills it: its fields are the ones the probe reads."""
    return SimpleNamespace(**{name: counts.get(name, 0) for name in TOTAL_FIELDS})


def _fault_page_record(tgid: int, page: int, faults: int, write_faults: int = 0) -> tuple:
    """An mqi_fault_pages entry as bcc returns it: one record per GROUP_PAGES pages, a counter per page."""
    key = SimpleNamespace(tgid=tgid, group=page >> GROUP_SHIFT)
    return key, SimpleNamespace(faults=_one_page(page, faults), write_faults=_one_page(page, write_faults))


def _file_page_record(tgid: int, file: FileId, index: int, **counts: int) -> tuple:
    key = SimpleNamespace(tgid=tgid, dev=file.kernel_dev, ino=file.inode, group=index >> GROUP_SHIFT)
    names = ("faults", "write_faults", "major_faults", "populate_faults", "populate_major_faults")
    return key, SimpleNamespace(**{name: _one_page(index, counts.get(name, 0)) for name in names})


def _one_page(page: int, count: int) -> list[int]:
    counters = [0] * GROUP_PAGES
    counters[page % GROUP_PAGES] = count
    return counters


def _stat_line(pid: int, minflt: int, majflt: int, state: str = "S") -> str:
    return f"{pid} (broker) {state} 1 1 1 0 -1 4194304 {minflt} 0 {majflt} 0 10 5 0 0 20 0 1 0 100 0 0\n"


def _store_and_broker(tmp_path: Path, minflt: int = 0, majflt: int = 0) -> tuple[Path, FileId, Path]:
    """A store, its first CommitLog segment, and a /proc root holding process 7 ("broker")."""
    root = _store(tmp_path / "store")
    segment = FileId.from_stat((root / "commitlog" / f"{0:020d}").stat())
    proc = tmp_path / "proc"
    (proc / "7").mkdir(parents=True)
    (proc / "7" / "stat").write_text(_stat_line(7, minflt, majflt))
    (proc / "7" / "comm").write_text("broker\n")
    return root, segment, proc


def test_an_interval_is_assembled_per_process_file_and_page_range(tmp_path: Path):
    root, segment, proc = _store_and_broker(tmp_path, 1000, 10)
    base = 0x7F0000000000
    (proc / "7" / "maps").write_text(
        f"{base:x}-{base + 4096 * PAGE:x} rw-s 00000000 {segment.major:02x}:{segment.minor:02x} "
        f"{segment.inode} {root}/commitlog/{0:020d}\n"
        "55d0c0a00000-55d0c0a21000 rw-p 00000000 00:00 0 [heap]\n"
    )
    probe = FaultsProbe([7], store=root, proc_root=proc)
    assert probe.parameters().cflags()[:2] == ["-DFILTER_TGIDS=1", "-DFILTER_INODES=1"]
    program = CannedProgram({})
    probe.start(program)
    assert ("mqi_totals", (OTHER_TGIDS,)) in program.put_keys

    (proc / "7" / "stat").write_text(_stat_line(7, 1000 + 130, 10 + 70))
    rolled = root / "commitlog" / f"{4096 * PAGE:020d}"  # the CommitLog rolls to a new segment
    rolled.write_bytes(b"")
    page = base >> PAGE_SHIFT
    program.maps = {
        "mqi_totals": [
            (
                SimpleNamespace(value=7),
                _totals(user_faults=200, write_faults=120, file_faults=150, major_faults=70),
            )
        ],
        "mqi_fault_pages": [
            _fault_page_record(7, page + 10, faults=120, write_faults=120),
            _fault_page_record(7, page + 100, faults=30),
            _fault_page_record(7, 0x55D0C0A00, faults=40),
            _fault_page_record(7, 0x1, faults=10),
        ],
        "mqi_file_pages": [
            _file_page_record(7, segment, 10, major_faults=70),
        ],
        "mqi_fault_around": [
            (SimpleNamespace(tgid=7, dev=segment.kernel_dev, ino=segment.inode, index=96, last_index=111), 1),
            (
                SimpleNamespace(tgid=7, dev=segment.kernel_dev, ino=segment.inode, index=104, last_index=135),
                2,
            ),
        ],
    }
    snapshot = probe.collect(program, 1.0)
    new_inode = FileId.from_stat(rolled.stat())
    assert ("mqi_inodes", (new_inode.inode, new_inode.kernel_dev, 0)) in program.put_keys

    assert (snapshot.faults, snapshot.major_faults, snapshot.minor_faults) == (200, 70, 130)
    assert (snapshot.anonymous_faults, snapshot.unresolved_faults) == (40, 10)
    assert (snapshot.proc_minor_faults, snapshot.proc_major_faults) == (130, 70)
    assert snapshot.fault_around_pages == 40  # windows 96-111 and 104-135 overlap: 96-135
    (process,) = snapshot.processes
    assert (process.pid, process.comm, process.faults, process.major_faults) == (7, "broker", 200, 70)
    (commitlog,) = snapshot.files
    assert commitlog.name == "commitlog/00000000000000000000" and commitlog.chunk_pages == 64
    assert (commitlog.faults, commitlog.major_faults, commitlog.write_faults) == (150, 70, 120)
    first, second, third = commitlog.page_ranges
    assert (first.first_page, first.last_page, first.faults, first.major_faults) == (0, 63, 120, 70)
    assert (second.first_page, second.last_page, second.faults, second.fault_around_pages) == (
        64,
        127,
        30,
        32,
    )
    assert (third.first_page, third.fault_around_pages) == (128, 8)

    (proc / "7" / "stat").write_text(_stat_line(7, 1000 + 131, 80, state="Z"))  # exited, not yet reaped
    program.maps = {"mqi_totals": [(SimpleNamespace(value=7), _totals(user_faults=201))]}
    later = probe.collect(program, 1.0)
    assert later.exited_pids == (7,) and later.faults == 1 and later.proc_minor_faults == 1
    assert ("mqi_tgids", (7,)) in program.deleted  # a new process with the same pid will not be traced


def test_a_record_of_pages_that_spans_two_page_ranges_or_two_mappings_is_split_by_page(tmp_path: Path):
    root, segment, proc = _store_and_broker(tmp_path)
    base = 0x7F0000000000  # maps the segment from its page 8: a record of 16 addresses covers pages 8-23
    (proc / "7" / "maps").write_text(
        f"{base:x}-{base + 100 * PAGE:x} rw-s {8 * PAGE:08x} {segment.major:02x}:{segment.minor:02x} "
        f"{segment.inode} {root}/commitlog/{0:020d}\n"
        f"{base + 100 * PAGE:x}-{base + 200 * PAGE:x} rw-p 00000000 00:00 0\n"
    )
    probe = FaultsProbe([7], store=root, chunk_pages=16, proc_root=proc)
    program = CannedProgram({})
    probe.start(program)
    page = base >> PAGE_SHIFT
    faults_per_page = [1] * GROUP_PAGES
    program.maps = {
        "mqi_totals": [(SimpleNamespace(value=7), _totals(user_faults=2 * GROUP_PAGES))],
        "mqi_fault_pages": [
            (SimpleNamespace(tgid=7, group=page >> GROUP_SHIFT), _per_page(faults_per_page)),
            # pages 96-111 of the address space: 4 in the segment (file pages 104-107), 12 anonymous
            (SimpleNamespace(tgid=7, group=(page + 96) >> GROUP_SHIFT), _per_page(faults_per_page)),
        ],
        "mqi_file_pages": [],
        "mqi_fault_around": [],
    }
    snapshot = probe.collect(program, 1.0)
    assert snapshot.anonymous_faults == 12
    (commitlog,) = snapshot.files
    assert [(r.first_page, r.last_page, r.faults) for r in commitlog.page_ranges] == [
        (0, 15, 8),  # file pages 8-15
        (16, 31, 8),  # 16-23
        (96, 111, 4),  # 104-107
    ]


def _per_page(faults: list[int]) -> SimpleNamespace:
    return SimpleNamespace(faults=faults, write_faults=[0] * GROUP_PAGES)


def test_the_summary_sums_intervals_and_merges_page_ranges():
    def interval(faults: int, ranges: tuple[PageRange, ...]) -> FaultsSnapshot:
        file = FileFaults("f", "/f", None, "8:1", 5, 128, 64, faults, faults, 0, 0, 0, 0, 0, ranges)
        return FaultsSnapshot(
            "interval", 1.0, time.time(), (1,), None, faults, faults, 0, 0, 0, faults, 0, 0, 0, 0, 0, 0, 0,
            0, 0, "/proc/PID/stat", faults, 0, (), (file,),
        )  # fmt: skip

    low = PageRange(0, 63, 5, 5, 0, 0, 0, 0)
    high = PageRange(64, 127, 7, 7, 0, 0, 0, 0)
    summary = combine_snapshots(None, interval(5, (low,)))
    summary = combine_snapshots(summary, interval(12, (low, high)))
    assert summary.kind == "summary" and summary.interval_s == 2.0 and summary.faults == 17
    assert summary.proc_minor_faults == 17
    (file,) = summary.files
    assert file.faults == 17 and file.size_pages == 128 and file.chunk_pages == 64
    assert [(r.first_page, r.faults) for r in file.page_ranges] == [(0, 10), (64, 7)]


# --- with BPF: a child touches pages while the probe traces it -------------------------------------------

# Runs in the child: map the file, say "ready", wait for a line, touch the pages, report its own fault counts
# (/proc/self/stat) over the touching, wait for a line, exit.
WORKLOAD = r"""
import mmap, os, sys
path, mode, first, last = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
page = mmap.PAGESIZE
fd = os.open(path, os.O_RDWR)
size = os.fstat(fd).st_size
if mode != "write":
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)

def faults():
    fields = open("/proc/self/stat").read().rsplit(")", 1)[1].split()
    return int(fields[7]), int(fields[9])

mapped = None if mode == "populate" else mmap.mmap(fd, size, mmap.MAP_SHARED)
if mode == "random":
    mapped.madvise(mmap.MADV_RANDOM)
print("ready", flush=True)
sys.stdin.readline()
before = faults()
if mode == "write":
    for offset in range(first * page, (last + 1) * page, page):
        mapped[offset] = 1
elif mode == "populate":
    mapped = mmap.mmap(fd, size, mmap.MAP_SHARED | mmap.MAP_POPULATE)
else:
    total = sum(mapped[offset] for offset in range(first * page, (last + 1) * page, page))
after = faults()
print("done", after[0] - before[0], after[1] - before[1], flush=True)
sys.stdin.readline()
"""


@dataclass
class PausedChild:
    process: subprocess.Popen

    @property
    def pid(self) -> int:
        return self.process.pid

    def run(self) -> tuple[int, int]:
        """Let the workload run; its own (minflt, majflt) increase over the touching."""
        self.process.stdin.write("go\n")
        self.process.stdin.flush()
        word, minor, major = self.process.stdout.readline().split()
        assert word == "done"
        return int(minor), int(major)


@contextlib.contextmanager
def paused_child(path: Path, mode: str, first: int, last: int) -> Iterator[PausedChild]:
    process = subprocess.Popen(
        [sys.executable, "-c", WORKLOAD, str(path), mode, str(first), str(last)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout.readline().strip() == "ready"
        yield PausedChild(process)
    finally:
        with contextlib.suppress(BrokenPipeError):
            process.stdin.close()
        process.wait(timeout=10)


def _process_row(snapshot: FaultsSnapshot, pid: int):
    return next(row for row in snapshot.processes if row.pid == pid)


def _within(measured: int, reference: int, fraction: float = 0.02) -> bool:
    return abs(measured - reference) <= max(1, fraction * reference)


@pytest.mark.requires_bpf
def test_write_faults_agree_with_perf_and_land_on_the_right_segment_pages(tmp_path: Path):
    root = _store(tmp_path / "store", commitlog_pages=4096)
    segment = root / "commitlog" / f"{0:020d}"
    first, last = 1000, 2999  # 2000 pages of a fresh, sparse segment
    with (
        paused_child(segment, "write", first, last) as child,
        TraceSession(FaultsProbe([child.pid], store=root)) as session,
    ):
        with perf_stat_page_faults(child.pid, tmp_path / "perf.out") as perf:
            child.run()
        snapshot = session.snapshot()
    (perf_faults,) = perf
    traced = _process_row(snapshot, child.pid).faults
    print(f"perf stat page-faults {perf_faults}, traced {traced}")
    assert _within(traced, perf_faults), (traced, perf_faults)

    # Large folios let one write fault map several pages, so faults may be fewer than pages (perf agrees).
    (commitlog,) = snapshot.files  # --store: only the store's files are broken down
    assert commitlog.name == "commitlog/00000000000000000000" and commitlog.chunk_pages == 64
    assert _within(commitlog.faults, traced)  # all but the odd anonymous fault of the loop itself
    assert commitlog.write_faults == commitlog.faults
    assert sum(page_range.faults for page_range in commitlog.page_ranges) == commitlog.faults
    touched_buckets = set(range(first // 64, last // 64 + 1))
    assert {page_range.first_page // 64 for page_range in commitlog.page_ranges} == touched_buckets
    assert all(page_range.faults > 0 for page_range in commitlog.page_ranges)


# Runs in the child: opens the file, says "ready", and on a line maps it (after the tracing began, so no
# picture of its mappings has it), writes (or reads) one byte per page of [first, last], says "done" with its
# own minflt and majflt over that, and exits half a second later: within the interval, before the probe
# reads anything of it.
EXITING_WORKLOAD = r"""
import mmap, os, sys, time
path, mode, first, last = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
page = mmap.PAGESIZE
fd = os.open(path, os.O_RDWR)

def faults():
    fields = open("/proc/self/stat").read().rsplit(")", 1)[1].split()
    return int(fields[7]), int(fields[9])

print("ready", flush=True)
sys.stdin.readline()
before = faults()
mapped = mmap.mmap(fd, os.fstat(fd).st_size, mmap.MAP_SHARED)
for offset in range(first * page, (last + 1) * page, page):
    if mode == "write":
        mapped[offset] = 1
    else:
        mapped[offset]
after = faults()
print("done", after[0] - before[0], after[1] - before[1], flush=True)
time.sleep(0.5)
"""


def _file_for(mode: str, path: Path, pages: int) -> Path:
    """ "write": a sparse file (each write fault runs filemap_fault and creates the page); "read": a file
    written a page at a time, so cached in single-page folios that fault-around maps 16 at a time, and
    written back: writeback locks a folio for a moment, and fault-around skips a locked one."""
    with path.open("wb") as data:
        if mode == "write":
            data.truncate(pages * PAGE)
        for _ in range(pages if mode == "read" else 0):
            data.write(os.urandom(PAGE))
        data.flush()
        os.fsync(data.fileno())
    return path


@contextlib.contextmanager
def _resident(path: Path, hold: bool) -> Iterator[None]:
    """With `hold`, the file's pages mlocked by this process for the block: reclaim (this VM's DAMON kdamond
    pages out clean pages) cannot take one from under a reader, whose touch would then fault once more (an
    exited reader counted 128 faults of its own where fault-around gives 126, and a range had 17)."""
    if not hold:
        yield
        return
    with path.open("rb") as data, mmap.mmap(data.fileno(), 0, prot=mmap.PROT_READ) as mapping:
        _libc.lock_mapping(mapping)
        try:
            yield
        finally:
            _libc.unlock_mapping(mapping)


@pytest.mark.requires_bpf
@pytest.mark.parametrize("mode", ["write", "read"])
def test_a_process_that_exits_within_the_interval_keeps_its_faults_on_the_file_and_pages(
    tmp_path: Path, mode: str
):
    path = _file_for(mode, tmp_path / "mapped.bin", 4096)
    first, last = 1000, 2999
    child = subprocess.Popen(
        [sys.executable, "-c", EXITING_WORKLOAD, str(path), mode, str(first), str(last)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout.readline().strip() == "ready"
    with _resident(path, hold=mode == "read"), TraceSession(FaultsProbe([child.pid])) as session:
        if mode == "read":  # what reclaim would do to the clean pages; held, they all stay
            with path.open("rb") as data:
                os.posix_fadvise(data.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
            assert fincore_pages(path) == 4096
        child.stdin.write("go\n")
        child.stdin.flush()
        _done, minor, major = child.stdout.readline().split()
        assert child.wait(timeout=10) == 0  # gone before the interval ends
        snapshot = session.snapshot()
    own = int(minor) + int(major)
    file = FileId.from_stat(path.stat())
    (row,) = (row for row in snapshot.files if (row.device, row.inode) == (file.device, file.inode))
    print(
        f"exited child ({mode}): its own faults {own}; traced {snapshot.faults}, on the file {row.faults} "
        f"(placed by the kernel {snapshot.kernel_placed_faults}, by maps {snapshot.maps_placed_faults}), "
        f"anonymous {snapshot.anonymous_faults}, unresolved {snapshot.unresolved_faults}"
    )
    assert snapshot.exited_pids == (child.pid,)
    assert abs(row.faults - own) <= max(2, own // 50)  # all but the loop's own few
    assert row.write_faults == (row.faults if mode == "write" else 0)
    # Gone, the process left no path to name the file by, so its size is unknown: ranges of 256 pages.
    chunk = UNKNOWN_SIZE_CHUNK_PAGES
    assert row.chunk_pages == chunk and sum(r.faults for r in row.page_ranges) == row.faults
    assert {r.first_page // chunk for r in row.page_ranges} == set(range(first // chunk, last // chunk + 1))
    if mode == "read":  # a fault every 16 pages, each placed on the page it read
        inner = [r.faults for r in row.page_ranges if first <= r.first_page and r.last_page <= last]
        assert inner and all(faults == chunk // 16 for faults in inner)
    assert snapshot.unresolved_faults <= max(2, own // 50)


@pytest.mark.requires_bpf
def test_a_segment_rolled_and_warmed_mid_session_has_its_warm_up_faults(tmp_path: Path):
    roll = trace_a_roll(tmp_path / "store", FaultsProbe)
    (row,) = (row for row in roll.during.files if row.path == str(roll.segment))
    (process,) = (row for row in roll.during.processes if row.pid == roll.pid)
    print(
        f"rolled segment: {row.populate_faults} populate faults over {len(row.page_ranges)} ranges; the "
        f"child's populate faults {process.populate_faults}"
    )
    assert not any(row.path == str(roll.segment) for row in roll.before.files)
    assert row.name == f"commitlog/{SEGMENT_BYTES:020d}" and row.faults == 0  # MADV_POPULATE: no exception
    assert 0 < row.populate_faults == process.populate_faults <= roll.warmed_pages
    assert sum(r.populate_faults for r in row.page_ranges) == row.populate_faults
    assert len(row.page_ranges) == 64  # every range of the segment was warmed
    assert roll.during.late_store_files == ()


@pytest.mark.requires_bpf
@pytest.mark.parametrize("mode", ["random", "sequential"])
def test_major_faults_of_an_evicted_file_match_the_kernels_majflt(tmp_path: Path, mode: str):
    path = tmp_path / "evicted.bin"
    with path.open("wb") as data:
        data.write(os.urandom(2000 * PAGE))
        data.flush()
        os.fsync(data.fileno())  # clean pages, so the child's POSIX_FADV_DONTNEED evicts them
    with paused_child(path, mode, 0, 1999) as child, TraceSession(FaultsProbe([child.pid])) as session:
        _own_minor, own_major = child.run()
        snapshot = session.snapshot()
    row = _process_row(snapshot, child.pid)
    print(f"{mode}: traced major {row.major_faults} minor {row.minor_faults}; majflt delta {own_major}")
    assert _within(row.major_faults, own_major)
    assert _within(row.major_faults, row.proc_major_faults)
    (evicted,) = (file for file in snapshot.files if file.path == str(path))
    assert _within(evicted.major_faults, own_major)
    if mode == "random":  # no readahead: every page is read by its own fault
        assert _within(own_major, 2000)
        assert [r.major_faults for r in evicted.page_ranges] == [
            r.last_page - r.first_page + 1 for r in evicted.page_ranges
        ]


@pytest.mark.requires_bpf
def test_map_populate_faults_are_counted_apart_from_exceptions(tmp_path: Path):
    path = tmp_path / "populated.bin"
    with path.open("wb") as data:
        data.write(os.urandom(2000 * PAGE))
        data.flush()
        os.fsync(data.fileno())
    with paused_child(path, "populate", 0, 1999) as child, TraceSession(FaultsProbe([child.pid])) as session:
        _own_minor, own_major = child.run()
        snapshot = session.snapshot()
    (populated,) = (file for file in snapshot.files if file.path == str(path))
    assert populated.faults == 0  # no CPU exception touched the file
    assert populated.populate_faults >= 1 and populated.populate_major_faults >= 1
    assert _within(_process_row(snapshot, child.pid).major_faults, own_major)
