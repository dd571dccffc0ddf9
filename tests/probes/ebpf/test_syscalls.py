"""The syscalls probe. Without root: histogram bucket bounds and percentiles, advice and flag names, one
interval assembled from canned map contents (targets named through this process's descriptors and maps,
--store), the summary's merged histograms (--print-bpf of every probe: test_trace_cli.py). With BPF: a child
warms up and flushes a mapped file a known number of times while the probe and `strace -c -f -p` watch it; the
counts are exact, agree with strace, and every call took time."""

from __future__ import annotations

import contextlib
import ctypes
import io
import mmap
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from rich.console import Console
from support import strace_counts, trace_following
from typer.testing import CliRunner

from mqinspect.render.trace import VIEWS
from probes.ebpf.session import TraceSession
from probes.ebpf.syscalls import (
    SYSCALLS,
    SyscallsProbe,
    _snapshot,
    bucket_bounds_ns,
    combine_snapshots,
    detail_name,
    percentile_bound_ns,
)
from probes.ebpf.tally import Tally

REPO = Path(__file__).resolve().parents[3]
PAGE = mmap.PAGESIZE
GONE_MAPPING = 0x7E0000000000  # an address no mapping of this process has
TRACE_SYSCALLS = [sys.executable, "-m", "mqinspect", "trace", "syscalls"]
runner = CliRunner()


# --- histograms and names ---------------------------------------------------------------------------------


def test_buckets_are_bpf_log2l_slots():
    assert bucket_bounds_ns(0) == (0, 0)
    assert bucket_bounds_ns(1) == (1, 1)
    assert bucket_bounds_ns(10) == (512, 1023)


def test_percentiles_are_the_upper_bound_of_the_bucket_holding_that_call():
    buckets = {1: 1, 10: 98, 20: 1}  # 1 ns, 98 calls in [512, 1023] ns, one in [2^19, 2^20 - 1] ns
    assert percentile_bound_ns(buckets, 0.50) == 1023
    assert percentile_bound_ns(buckets, 0.99) == 1023
    assert percentile_bound_ns(buckets, 1.0) == (1 << 20) - 1
    assert percentile_bound_ns({}, 0.5) is None


@pytest.mark.parametrize(
    ("syscall", "detail", "name"),
    [
        ("madvise", 3, "MADV_WILLNEED"),
        ("madvise", 23, "MADV_POPULATE_WRITE"),
        ("fadvise64", 4, "POSIX_FADV_DONTNEED"),
        ("msync", 4, "MS_SYNC"),
        ("msync", 5, "MS_ASYNC|MS_SYNC"),
        ("mlock2", 1, "MLOCK_ONFAULT"),
        ("mmap", 0x8001, "MAP_SHARED|MAP_POPULATE"),
        ("mmap", 0x03, "MAP_SHARED_VALIDATE"),
        ("mmap", 0x22, "MAP_PRIVATE|MAP_ANONYMOUS"),
        ("fsync", 0, None),
        ("mlock2", 0, None),
    ],
)
def test_advice_and_flags_are_named(syscall, detail, name):
    assert detail_name(syscall, detail) == name


def _tally(calls: int, total_ns: int, buckets: dict[int, int]) -> Tally:
    return Tally({"calls": calls, "total_ns": total_ns, **{("slot", slot): n for slot, n in buckets.items()}})


def _one_process(tallies: dict[str, Tally]):
    return _snapshot(
        kind="interval",
        interval_s=1.0,
        pids=(7,),
        store=None,
        lost_records=0,
        processes={7: ("broker", tallies)},
        targets=(),
        exited_pids=(),
    )


def test_the_summary_merges_histograms_bucket_by_bucket():
    first = _one_process({"fsync": _tally(99, 99 * 1000, {10: 99})})
    second = _one_process({"fsync": _tally(1, 5_000_000, {23: 1}), "msync": _tally(2, 4000, {11: 2})})
    summary = combine_snapshots(combine_snapshots(None, first), second)
    assert summary.kind == "summary" and summary.syscalls == 102 and summary.mode_switches == 204
    (process,) = summary.processes
    fsync = next(row for row in process.per_syscall if row.syscall == "fsync")
    assert (fsync.calls, fsync.total_ns) == (100, 99 * 1000 + 5_000_000)
    assert (fsync.p50_ns_at_most, fsync.p99_ns_at_most, fsync.max_ns_at_most) == (1023, 1023, (1 << 23) - 1)
    assert [(bucket.low_ns, bucket.calls) for bucket in fsync.buckets] == [(512, 99), (1 << 22, 1)]


# --- one interval from canned map contents -----------------------------------------------------------------


class CannedProgram:
    def __init__(self, maps: dict[str, list]):
        self.maps = maps
        self.attached = ()
        self.deleted: list[tuple[str, tuple]] = []

    def read(self, name):
        return list(self.maps.get(name, []))

    def drain(self, name):
        return self.maps.pop(name, [])

    def delete(self, name, key):
        self.deleted.append((name, key))


def _calls(syscall: str, target: int, calls: int, total_ns: int, detail: int = 0, length: int = 0):
    key = SimpleNamespace(tgid=os.getpid(), syscall=SYSCALLS.index(syscall), detail=detail, target=target)
    return key, SimpleNamespace(calls=calls, errors=0, total_ns=total_ns, length_bytes=length)


def _latency(syscall: str, slot: int, calls: int):
    return SimpleNamespace(tgid=os.getpid(), syscall=SYSCALLS.index(syscall), slot=slot), calls


def _store(root: Path) -> Path:
    (root / "commitlog").mkdir(parents=True)
    (root / "commitlog" / f"{0:020d}").write_bytes(b"\0" * 4 * PAGE)
    (root / "consumequeue").mkdir()
    return root


def _address_of(mapped: mmap.mmap) -> int:
    return ctypes.addressof(ctypes.c_char.from_buffer(mapped))


def test_targets_are_named_by_descriptor_or_mapping_and_store_keeps_only_its_segments(tmp_path: Path):
    root = _store(tmp_path / "store")
    segment_path = root / "commitlog" / f"{0:020d}"
    other = tmp_path / "other.bin"
    other.write_bytes(b"\0" * PAGE)
    with segment_path.open("r+b") as segment, other.open("r+b") as unrelated:
        mapped = mmap.mmap(segment.fileno(), 4 * PAGE)
        address = _address_of(mapped)
        maps = {
            "mqi_calls": [
                _calls("madvise", address + PAGE, 2, 3000, detail=3, length=2 * PAGE),
                _calls("madvise", address, 1, 1000, detail=3, length=PAGE),  # same file and advice: joined
                _calls("fsync", segment.fileno(), 1, 2_000_000),
                _calls("fsync", unrelated.fileno(), 1, 1_000_000),
                _calls("mmap", 2**64 - 1, 1, 500, detail=0x22, length=PAGE),  # fd -1: anonymous
                _calls("munmap", 0x10, 1, 500, length=PAGE),  # an address no mapping covers
                _calls("msync", GONE_MAPPING + PAGE, 1, 700, detail=4, length=PAGE),
            ],
            # A mapping of the segment the process made and removed within the interval: not in its maps.
            "mqi_mappings": [
                (
                    SimpleNamespace(tgid=os.getpid(), address=GONE_MAPPING),
                    SimpleNamespace(length=4 * PAGE, fd=segment.fileno()),
                )
            ],
            "mqi_latency": [_latency("madvise", 10, 3), _latency("fsync", 21, 2), _latency("mmap", 9, 1)],
        }
        everything = SyscallsProbe([os.getpid()]).collect(CannedProgram(dict(maps)), 1.0)
        store_only = SyscallsProbe([os.getpid()], store=root).collect(CannedProgram(dict(maps)), 1.0)
        del address
        mapped.close()
    named = {(row.syscall, row.detail, row.target_kind, row.target): row.calls for row in everything.targets}
    assert named == {
        ("madvise", "MADV_WILLNEED", "file", str(segment_path)): 3,
        ("fsync", None, "file", str(segment_path)): 1,
        ("fsync", None, "file", str(other)): 1,
        ("mmap", "MAP_PRIVATE|MAP_ANONYMOUS", "anonymous", "anonymous memory"): 1,
        ("munmap", None, "unmapped", "unmapped address"): 1,
        ("msync", "MS_SYNC", "file", str(segment_path)): 1,
    }
    assert {(row.syscall, row.target) for row in store_only.targets} == {
        ("madvise", "commitlog/00000000000000000000"),
        ("fsync", "commitlog/00000000000000000000"),
        ("msync", "commitlog/00000000000000000000"),
    }
    assert store_only.syscalls == everything.syscalls == 8  # every call counts in the totals
    (process,) = everything.processes
    madvise = next(row for row in process.per_syscall if row.syscall == "madvise")
    assert (madvise.calls, madvise.total_ns, madvise.length_bytes, madvise.p99_ns_at_most) == (
        3,
        4000,
        3 * PAGE,
        1023,
    )


def test_the_table_draws_an_interval():
    snapshot = _one_process({"fsync": _tally(3, 3_000_000, {21: 3})})
    console = Console(width=80, record=True, file=io.StringIO())
    console.print(VIEWS["syscalls"].table(snapshot, "title"))
    text = console.export_text()
    assert "fsync" in text and "≤2.1ms" in text and "pid 7 broker: 3 calls, 3ms" in text


# --- with BPF: a child warms up and flushes a mapped file ------------------------------------------------

ROUNDS = 5
# Runs in the child: map the file, say "ready", wait for SIGUSR1 (sigtimedwait: not a traced call), then
# ROUNDS times each call below, and leave with os._exit (no interpreter teardown: no munmap of its own).
# Each round also maps the file once more and unmaps it: calls on that mapping are named through the mmap
# the program saw, as the mapping is gone before the maps are read.
WORKLOAD = r"""
import ctypes, mmap, os, signal, sys
path, rounds = sys.argv[1], int(sys.argv[2])
libc = ctypes.CDLL(None, use_errno=True)
calls = {name: getattr(libc, name) for name in ("mlock", "mlock2", "munlock", "mincore")}
fd = os.open(path, os.O_RDWR)
size = os.fstat(fd).st_size
mapped = mmap.mmap(fd, size, mmap.MAP_SHARED)
address = ctypes.c_void_p(ctypes.addressof(ctypes.c_char.from_buffer(mapped)))
length = ctypes.c_size_t(size)
vector = (ctypes.c_ubyte * (size // mmap.PAGESIZE))()
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
print("ready", flush=True)
if signal.sigtimedwait({signal.SIGUSR1}, 120) is None:
    os._exit(1)
failed = 0
for round in range(rounds):
    mapped.madvise(mmap.MADV_WILLNEED)
    passing = mmap.mmap(fd, size, mmap.MAP_SHARED)  # a mapping gone before anyone reads the maps
    passing.madvise(mmap.MADV_WILLNEED)
    passing.close()
    failed += calls["mlock"](address, length) != 0
    failed += calls["munlock"](address, length) != 0
    failed += calls["mlock2"](address, length, 1) != 0  # MLOCK_ONFAULT
    failed += calls["munlock"](address, length) != 0
    failed += calls["mincore"](address, length, vector) != 0
    mapped[round] = 1  # a dirty page, so that the flushes below write
    mapped.flush()  # msync(MS_SYNC)
    os.fsync(fd)
    os.fdatasync(fd)
    os.posix_fadvise(fd, 0, size, os.POSIX_FADV_DONTNEED)
os._exit(1 if failed else 0)
"""
EXPECTED_PER_ROUND = {
    ("mmap", "MAP_SHARED"): 1,
    ("munmap", None): 1,
    ("madvise", "MADV_WILLNEED"): 2,
    ("mlock", None): 1,
    ("mlock2", "MLOCK_ONFAULT"): 1,
    ("munlock", None): 2,
    ("mincore", None): 1,
    ("msync", "MS_SYNC"): 1,
    ("fsync", None): 1,
    ("fdatasync", None): 1,
    ("fadvise64", "POSIX_FADV_DONTNEED"): 1,
}


@contextlib.contextmanager
def paused_child(path: Path) -> Iterator[subprocess.Popen]:
    child = subprocess.Popen(
        [sys.executable, "-c", WORKLOAD, str(path), str(ROUNDS)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout.readline().strip() == "ready"
        yield child
    finally:
        if child.poll() is None:
            child.kill()
        child.wait(timeout=10)


@pytest.mark.requires_bpf
def test_warm_up_and_flush_calls_are_counted_exactly_timed_and_agree_with_strace(tmp_path: Path):
    path = tmp_path / "segment.bin"
    path.write_bytes(os.urandom(256 * PAGE))
    with paused_child(path) as child, TraceSession(SyscallsProbe([child.pid])) as session:
        with strace_counts(child.pid, tmp_path / "strace.out") as straced:
            os.kill(child.pid, signal.SIGUSR1)
            assert child.wait(timeout=60) == 0
        snapshot = session.snapshot()
    on_file = {
        (row.syscall, row.detail): row.calls
        for row in snapshot.targets
        if row.target_kind == "file" and row.target == str(path)
    }
    print(f"calls on the file: {on_file}; strace: {straced}")
    assert on_file == {call: ROUNDS * count for call, count in EXPECTED_PER_ROUND.items()}

    (process,) = snapshot.processes
    traced = {row.syscall: (row.calls, row.errors) for row in process.per_syscall}
    assert traced == {name: straced[name] for name in SYSCALLS if name in straced}
    for row in process.per_syscall:
        assert row.total_ns > 0 and row.p50_ns_at_most > 0 and row.max_ns_at_most >= row.p99_ns_at_most
        assert sum(bucket.calls for bucket in row.buckets) == row.calls
    fsync = next(row for row in process.per_syscall if row.syscall == "fsync")
    print(
        f"fsync: mean {fsync.mean_ns} ns, p50 <= {fsync.p50_ns_at_most} ns, max <= {fsync.max_ns_at_most} ns"
    )
    assert snapshot.exited_pids == (child.pid,)


@pytest.mark.requires_bpf
def test_sigterm_mid_session_prints_the_summary_exits_130_and_unloads(tmp_path: Path):
    path = tmp_path / "segment.bin"
    path.write_bytes(os.urandom(64 * PAGE))
    with paused_child(path) as child:
        traced = trace_following("syscalls", child.pid)
        os.kill(child.pid, signal.SIGUSR1)
        assert child.wait(timeout=60) == 0
        lines, errors = traced.stop()
    assert traced.process.returncode == 130, errors  # --follow: SIGTERM, not the child's exit, ends it
    first, summary = lines[0], lines[-1]
    assert summary["kind"] == "summary" and summary["pids"] == [child.pid]
    fsync = next(row for row in summary["per_syscall"] if row["syscall"] == "fsync")
    assert fsync["calls"] == ROUNDS and fsync["p99_ns_at_most"] > 0
    for key in ("interval_s", "syscalls", "mode_switches", "total_ns", "per_syscall", "targets"):
        assert key in first
    assert errors.startswith(
        f"Tracing memory and flush syscalls of pid {child.pid}, per target, every 0.2 s."
    )
    assert traced.programs_gone()
