"""The writeback probe. Without root: one interval assembled from canned maps (per-CPU dirty state and
throttling merged, device names, inodes without a device), the summary. With BPF: a child writes a fresh
file and fsyncs it while the probe traces it, and dirtied and written pages are held against the file's size
and the kernel's counters; a writer over lowered dirty limits is throttled; SIGTERM. --print-bpf, exit 3 as
nobody and doctor's load test of every probe: test_trace_cli.py and test_loader.py."""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import mmap
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from canned_program import CannedProgram
from store_roll import SEGMENT_BYTES, rolling_store, trace_a_roll
from support import fadvise_out, ready_child, trace_following

from probes.ebpf.inodes import FileId
from probes.ebpf.session import TraceSession
from probes.ebpf.writeback import (
    DirtyState,
    ThrottledProcess,
    WritebackProbe,
    WritebackSnapshot,
    combine_snapshots,
)
from probes.residency.cachestat import CacheStat, cachestat

PAGE = mmap.PAGESIZE
MIB = 1 << 20
REPO = Path(__file__).resolve().parents[3]
TRACE = [sys.executable, "-m", "mqinspect", "trace"]
VM = Path("/proc/sys/vm")


def _within(measured: int, reference: int, fraction: float = 0.02) -> bool:
    return abs(measured - reference) <= max(1, fraction * reference)


# --- one interval from canned maps -------------------------------------------------------------------------


def _totals(**values) -> SimpleNamespace:
    names = ("dirtied_folios", "dirtied_pages", "unsized_folios", "written_pages", "written_pages_all")
    return SimpleNamespace(lost_records=0, **{name: values.get(name, 0) for name in names})


def _file(dirtied=0, written=0, tgid=0) -> SimpleNamespace:
    return SimpleNamespace(
        dirtied_pages=dirtied, dirtied_folios=dirtied, unsized_folios=0, written_pages=written, last_tgid=tgid
    )


def _throttle(pauses, pause_ms, max_pause_ms, dirty) -> SimpleNamespace:
    return SimpleNamespace(
        checks=pauses + 1,
        pauses=pauses,
        pause_ms=pause_ms,
        max_pause_ms=max_pause_ms,
        dirty=dirty,
        setpoint=1792,
        limit=2048,
        wb_dirty=dirty,
        task_ratelimit=100,
        dirty_ratelimit=200,
        comm=b"writer\0",
    )


def _dirty_state(samples, last_ns, dirty, max_dirty) -> SimpleNamespace:
    values = dict(nr_dirty=dirty, nr_writeback=1, background_thresh=1024, dirty_thresh=2048, dirty_limit=2048)
    maxima = {f"max_{name}": value for name, value in values.items()}
    return SimpleNamespace(
        samples=samples, last_ns=last_ns, **values, **{**maxima, "max_nr_dirty": max_dirty}
    )


def _store(root: Path) -> Path:
    (root / "commitlog").mkdir(parents=True)
    (root / "commitlog" / f"{0:020d}").write_bytes(b"\0" * 16 * PAGE)
    return root


def test_an_interval_merges_cpus_and_places_files_without_a_device(tmp_path: Path):
    root = _store(tmp_path / "store")
    segment = FileId.from_stat((root / "commitlog" / f"{0:020d}").stat())
    probe = WritebackProbe(store=root, proc_root=tmp_path / "no-proc")
    program = CannedProgram({})
    probe.start(program)
    assert ("mqi_inode_devs", (segment.inode,), (segment.kernel_dev,)) in program.put_values

    program.maps = {
        "mqi_totals": [(0, _totals(dirtied_pages=100, written_pages=90, written_pages_all=300))],
        "mqi_files_0": [  # the dirtying gave no device: the store's inode places it
            (SimpleNamespace(ino=segment.inode, dev=0, generation=1), _file(dirtied=100)),
            (SimpleNamespace(ino=segment.inode, dev=segment.kernel_dev, generation=1), _file(written=90)),
        ],
        "mqi_throttles_0": [
            (SimpleNamespace(tgid=7, cpu=0), _throttle(3, 30, 20, dirty=2100)),
            (SimpleNamespace(tgid=7, cpu=1), _throttle(2, 12, 8, dirty=1900)),
        ],
        "mqi_dirty_state_0": [
            (SimpleNamespace(value=0), _dirty_state(5, last_ns=200, dirty=900, max_dirty=2500)),
            (SimpleNamespace(value=1), _dirty_state(4, last_ns=300, dirty=700, max_dirty=1500)),
        ],
        "mqi_flushes_0": [
            (
                SimpleNamespace(bdi=b"254:0" + b"\0" * 27, reason=0),
                SimpleNamespace(works=4, written_pages=80),
            ),
            (
                SimpleNamespace(bdi=b"254:0" + b"\0" * 27, reason=42),
                SimpleNamespace(works=1, written_pages=0),
            ),
        ],
    }
    snapshot = probe.collect(program, 1.0)
    (commitlog,) = snapshot.files
    assert commitlog.name == "commitlog/00000000000000000000" and commitlog.device == segment.device
    assert (commitlog.dirtied_pages, commitlog.written_pages) == (100, 90)
    assert (snapshot.written_pages, snapshot.written_pages_all_files) == (90, 300)
    (throttled,) = snapshot.throttled
    assert (throttled.pid, throttled.comm, throttled.pauses, throttled.pause_ms_total) == (7, "writer", 5, 42)
    assert (throttled.pause_ms_max, throttled.dirty_pages_at_max_pause) == (20, 2100)  # the longest's state
    state = snapshot.dirty_state
    assert (state.samples, state.dirty_pages_last, state.dirty_pages_max) == (9, 700, 2500)
    assert [(row.device, row.reason, row.written_pages) for row in snapshot.flusher] == [
        ("254:0", "background", 80),
        ("254:0", "reason 42", 0),
    ]
    assert snapshot.flusher_written_pages == 80
    assert snapshot.vmstat_dirtied_pages is None  # no /proc to read: unknown, not 0


def _interval(state: DirtyState | None, pause_ms_max: int) -> WritebackSnapshot:
    throttled = ThrottledProcess(
        7, "w", 3, 2, pause_ms_max + 4, pause_ms_max, pause_ms_max * 10, 1, 2, 3, 4, 5
    )
    return WritebackSnapshot(
        "interval", 1.0, 0.0, (7,), None, 10, 1, 0, 8, 9, 5, 11, 12, None, state, (throttled,), (), (), (), 0
    )


def test_the_summary_keeps_the_last_dirty_state_and_the_max():
    early = DirtyState(3, 100, 900, 0, 10, 1, 1, 2, 2, 2, 2)
    late = DirtyState(2, 50, 600, 5, 5, 1, 1, 2, 2, 2, 2)
    summary = combine_snapshots(None, _interval(early, pause_ms_max=40))
    summary = combine_snapshots(summary, _interval(None, pause_ms_max=10))
    summary = combine_snapshots(summary, _interval(late, pause_ms_max=90))
    assert summary.kind == "summary" and summary.dirtied_pages == 30 and summary.vmstat_dirtied_pages == 33
    assert summary.proc_dirtied_pages is None
    state = summary.dirty_state
    assert (state.samples, state.dirty_pages_last, state.dirty_pages_max, state.writeback_pages_max) == (
        5,
        50,
        900,
        10,
    )
    (throttled,) = summary.throttled
    assert (throttled.pauses, throttled.pause_ms_total, throttled.pause_ms_max) == (6, 152, 90)
    assert throttled.dirty_pages_at_max_pause == 900


# --- with BPF ----------------------------------------------------------------------------------------------

# Runs in the child: opens the file, says "ready", then on a line writes the given MiB in 1 MiB writes (and
# fsyncs the file when asked), says "done", and waits for a line before it exits. "fresh" and "fsync" write
# a new file; "rewrite" first fills and flushes REWRITTEN_MIB, then writes over them again and again: cached
# pages are dirtied at memory speed, faster than any disk writes them back.
REWRITTEN_MIB = 64
WORKLOAD = rf"""
import os, sys
path, mib, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
chunk = os.urandom(1 << 20)
fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_TRUNC, 0o644)
span = {REWRITTEN_MIB} if mode == "rewrite" else mib
if mode == "rewrite":
    for number in range(span):
        os.pwrite(fd, chunk, number << 20)
    os.fsync(fd)
print("ready", flush=True)
sys.stdin.readline()
for number in range(mib):
    os.pwrite(fd, chunk, (number % span) << 20)
if mode == "fsync":
    os.fsync(fd)
print("done", flush=True)
sys.stdin.readline()
"""


@contextlib.contextmanager
def writing_child(path: Path, mib: int, mode: str) -> Iterator[subprocess.Popen]:
    with ready_child(WORKLOAD, path, mib, mode, stop_timeout_s=60) as child:
        yield child


def _run(child: subprocess.Popen) -> None:
    child.stdin.write("go\n")
    child.stdin.flush()
    assert child.stdout.readline().strip() == "done"


@pytest.mark.requires_bpf
def test_a_fresh_files_pages_are_dirtied_then_written_by_fsync(tmp_path: Path):
    path = tmp_path / "written.bin"
    mib = 32
    with writing_child(path, mib, "fsync") as child, TraceSession(WritebackProbe([child.pid])) as session:
        _run(child)
        snapshot = session.snapshot()
    pages = mib * MIB // PAGE
    (file,) = (row for row in snapshot.files if row.inode == path.stat().st_ino)
    (process,) = snapshot.processes
    print(
        f"file: dirtied {file.dirtied_pages} pages in {file.dirtied_folios} folios, written "
        f"{file.written_pages}; "
        f"process dirtied {process.dirtied_pages}, /proc/PID/io {process.proc_dirtied_pages}; "
        f"vmstat dirtied {snapshot.vmstat_dirtied_pages} written {snapshot.vmstat_written_pages}"
    )
    assert _within(file.dirtied_pages, pages) and file.unsized_folios == 0
    assert file.dirtied_folios < file.dirtied_pages  # large folios, counted whole
    assert _within(file.written_pages, pages)
    assert _within(process.dirtied_pages, process.proc_dirtied_pages)  # the kernel's own count
    assert snapshot.vmstat_written_pages >= file.written_pages * 0.98


@pytest.mark.requires_bpf
def test_a_segment_rolled_and_warmed_mid_session_has_its_dirtied_pages_counted(tmp_path: Path):
    roll = trace_a_roll(tmp_path / "store", WritebackProbe, measure=_cachestat)
    before, after = roll.measured, _cachestat(roll.segment)  # around the snapshot
    (row,) = (row for row in roll.during.files if row.path == str(roll.segment))
    print(
        f"rolled segment: dirtied {row.dirtied_pages} pages in {row.dirtied_folios} folios, written "
        f"{row.written_pages}; cachestat cached {after.cached_pages}, dirty {before.dirty_pages} then "
        f"{after.dirty_pages}, writeback {before.writeback_pages} then {after.writeback_pages}"
    )
    assert not any(row.path == str(roll.segment) for row in roll.before.files)
    assert row.name == f"commitlog/{SEGMENT_BYTES:020d}"
    # Every folio dirtied was sized: its size stays remembered while others are inserted (writeback.bpf.c)
    assert row.unsized_folios == 0
    # Every page of the new file was made dirty once by the warm-up: at the snapshot, those still dirty and
    # those sent to the disk are all of them (a page being written may be in either). The disk may take some
    # while the snapshot is made (other tests write too): cachestat brackets it.
    low = after.dirty_pages + row.written_pages
    high = before.dirty_pages + before.writeback_pages + row.written_pages
    assert low <= row.dirtied_pages <= high
    assert row.dirtied_pages == after.cached_pages == roll.warmed_pages
    assert roll.during.late_store_files == ()


# --- the folio sizes: a folio keeps its size while other folios are inserted where it is remembered -------

_U64 = (1 << 64) - 1


def _folio_hash(inode: int, index: int) -> int:
    """writeback.bpf.c's folio_hash(), for the test to pick pages the kernel remembers in the same place."""
    mixed = (inode * 0x9E3779B97F4A7C15 + index) & _U64
    mixed = ((mixed ^ (mixed >> 30)) * 0xBF58476D1CE4E5B9) & _U64
    mixed = ((mixed ^ (mixed >> 27)) * 0x94D049BB133111EB) & _U64
    return mixed ^ (mixed >> 31)


def _pages_in_the_same_slot(inode: int, other_inode: int, wanted: int) -> list[int]:
    """Pages of the file `other_inode` whose folios the size table puts where page 0 of `inode` is (the same
    slot of the table's 2^18, so the same set of its 2^15 8-way sets)."""
    mask = (1 << (WritebackProbe.map_limits().folios - 1).bit_length()) - 1
    target = _folio_hash(inode, 0) & mask
    found = (index for index in itertools.count() if _folio_hash(other_inode, index) & mask == target)
    return list(itertools.islice(found, wanted))


READ_THEN_DIRTY = r"""
import os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)  # one page, one single-page folio: no readahead
print("ready", flush=True)
sys.stdin.readline()
os.pread(fd, 1, 0)
print("read", flush=True)
sys.stdin.readline()
os.pwrite(fd, os.urandom(4096), 0)
print("dirtied", flush=True)
sys.stdin.readline()
"""


def _step(child: subprocess.Popen, said: str) -> None:
    child.stdin.write("go\n")
    child.stdin.flush()
    assert child.stdout.readline().strip() == said


@pytest.mark.requires_bpf
def test_a_folio_keeps_its_size_while_other_folios_are_inserted_in_its_place(tmp_path: Path):
    """Two folios of another file inserted where a folio's size is remembered, between its insertion and its
    dirtying: with one slot per place (before) the folio lost its size and counted as an unsized folio of one
    page; an 8-way set keeps it."""
    path, other = tmp_path / "segment", tmp_path / "other"
    path.write_bytes(b"\0" * PAGE)
    fadvise_out(path)
    with open(other, "wb") as handle:
        handle.truncate(1 << 40)  # sparse: a page read anywhere is a new folio
    colliding = _pages_in_the_same_slot(path.stat().st_ino, other.stat().st_ino, 2)
    with ready_child(READ_THEN_DIRTY, path) as child, TraceSession(WritebackProbe([child.pid])) as session:
        _step(child, "read")
        fd = os.open(other, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
            for index in colliding:
                os.pread(fd, 1, index * PAGE)
        finally:
            os.close(fd)
        _step(child, "dirtied")
        snapshot = session.snapshot()
    # The segment's own row: the child's row may also hold a folio of another file it dirtied on the way (seen
    # twice in full-suite runs: (2, 2, 1), an unsized folio of a file whose insertion came before tracing).
    (row,) = (row for row in snapshot.files if row.inode == path.stat().st_ino)
    assert (row.dirtied_folios, row.dirtied_pages, row.unsized_folios) == (1, 1, 0), snapshot.files


@pytest.mark.requires_bpf
def test_a_segment_made_with_a_retired_segments_inode_number_is_dirtied_under_its_own_name(tmp_path: Path):
    """Retention deletes the oldest segment and the CommitLog rolls within one interval: the new segment
    often takes the freed inode number. Its warm-up's dirtied pages are its own (keyed by inode alone, they
    were named as the deleted segment's, which the dashboard no longer lists: 6,720 of 16,384 pages of a
    64 MiB segment missing in a 10-minute demo). Rolls until one reuses the number (ext4 does not always:
    the freed inode may still be under writeback)."""
    with (
        rolling_store(tmp_path / "store") as store,
        TraceSession(WritebackProbe(store=store.root)) as session,
    ):
        for number in range(1, 9):
            session.snapshot()
            reused = store.retire_and_roll(number)
            snapshot = session.snapshot()
            if reused:
                break
        else:
            pytest.skip("ext4 gave none of 8 new segments the number of the one deleted just before")
        dirty = _cachestat(store.segment(number))
    rows = {row.name: row for row in snapshot.files}
    new = rows[f"commitlog/{number * SEGMENT_BYTES:020d}"]
    retired = rows.get(f"commitlog/{(number - 1) * SEGMENT_BYTES:020d}")
    print(f"roll {number} reused the number; new segment dirtied {new.dirtied_pages}, cachestat {dirty}")
    assert retired is None or retired.dirtied_pages == 0
    assert new.dirtied_pages == SEGMENT_BYTES // PAGE == dirty.cached_pages


def _cachestat(path: Path) -> CacheStat:
    with path.open("rb") as opened:
        return cachestat(opened.fileno())


DIRTY_SETTINGS = ("dirty_bytes", "dirty_ratio", "dirty_background_bytes", "dirty_background_ratio")
# Shared by every test run on the machine: runs at the same time take turns (the lock), and a run that died
# with the limits lowered left the settings it found (the saved file), which the next run puts back first.
DIRTY_LIMITS_LOCK = Path("/run/lock/mqinspect-test-dirty-limits.lock")
DIRTY_LIMITS_SAVED = Path("/run/lock/mqinspect-test-dirty-limits.json")


def _dirty_settings() -> dict[str, str]:
    return {name: (VM / name).read_text().strip() for name in DIRTY_SETTINGS}


def _restore_dirty_settings(settings: dict[str, str]) -> None:
    """Writing one of a *_bytes / *_ratio pair zeroes the other: write whichever of the two was in force."""
    for by_bytes, by_ratio in (
        ("dirty_bytes", "dirty_ratio"),
        ("dirty_background_bytes", "dirty_background_ratio"),
    ):
        in_force = by_bytes if settings[by_bytes] != "0" else by_ratio
        (VM / in_force).write_text(settings[in_force])


@pytest.fixture
def low_dirty_limits() -> Iterator[None]:
    """vm.dirty_bytes 8 MiB and dirty_background_bytes 4 MiB for the test, then the settings found before."""
    with DIRTY_LIMITS_LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if DIRTY_LIMITS_SAVED.exists():
            _restore_dirty_settings(json.loads(DIRTY_LIMITS_SAVED.read_text()))
        original = _dirty_settings()
        DIRTY_LIMITS_SAVED.write_text(json.dumps(original))
        try:
            (VM / "dirty_bytes").write_text(str(8 * MIB))
            (VM / "dirty_background_bytes").write_text(str(4 * MIB))
            yield
        finally:
            _restore_dirty_settings(original)
            DIRTY_LIMITS_SAVED.unlink()
        assert _dirty_settings() == original


@pytest.mark.requires_bpf
def test_a_writer_over_the_dirty_limit_is_throttled(tmp_path: Path, low_dirty_limits):
    path = tmp_path / "throttled.bin"
    with writing_child(path, 256, "rewrite") as child, TraceSession(WritebackProbe([child.pid])) as session:
        _run(child)
        snapshot = session.snapshot()
    (throttled,) = snapshot.throttled
    state = snapshot.dirty_state
    (file,) = (row for row in snapshot.files if row.inode == path.stat().st_ino)
    print(
        f"throttled: {throttled.pauses} pauses, {throttled.pause_ms_total} ms, longest "
        f"{throttled.pause_ms_max} ms at {throttled.dirty_pages_at_max_pause} dirty / limit "
        f"{throttled.limit_pages_at_max_pause}; dirty threshold {state.dirty_threshold_pages_max}, dirty max "
        f"{state.dirty_pages_max}; file: {file.dirtied_folios} folios dirtied again, {file.written_pages} "
        "pages written"
    )
    assert throttled.pid == child.pid and throttled.pauses > 0
    assert throttled.pause_ms_total > 0 and throttled.pause_ms_max > 0
    assert throttled.limit_pages_at_max_pause <= 8 * MIB // PAGE
    assert state.dirty_threshold_pages_max <= 8 * MIB // PAGE
    # The folios were cached before the session: each return from clean to dirty is counted, of unknown size
    # (unless reclaim evicted a folio and the write created it again during the session).
    assert file.dirtied_folios >= file.unsized_folios > REWRITTEN_MIB * MIB // PAGE // 512
    assert file.written_pages > 8 * MIB // PAGE


# --- the command -------------------------------------------------------------------------------------------


@pytest.mark.requires_bpf
def test_sigterm_mid_session_prints_the_summary_exits_130_and_unloads(tmp_path: Path):
    with writing_child(tmp_path / "w.bin", 8, "fsync") as child:
        traced = trace_following("writeback", child.pid)
        _run(child)
        lines, errors = traced.stop()
    assert traced.process.returncode == 130, errors  # --follow: SIGTERM, not the child's exit, ends it
    first, summary = lines[0], lines[-1]
    assert [line["kind"] for line in lines] == ["interval"] * (len(lines) - 1) + ["summary"]
    assert summary["dirtied_pages"] == sum(line["dirtied_pages"] for line in lines[:-1])
    assert _within(summary["dirtied_pages"], 8 * MIB // PAGE)
    for key in (
        "interval_s",
        "dirtied_pages",
        "written_pages",
        "dirty_state",
        "throttled",
        "files",
        "flusher",
    ):
        assert key in first
    assert errors.startswith(f"Tracing pages dirtied and writers throttled (pid {child.pid})")
    assert "mqi_wb_dirtied" in traced.held.values()
    assert traced.programs_gone()
