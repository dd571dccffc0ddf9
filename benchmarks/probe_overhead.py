"""What attaching mqinspect's eBPF probes costs a workload, against the physical floor of any tracepoint
tracer: the store append benchmark and a page-fault-heavy loop, each timed with no probes, with the floor,
and with all five probes attached system-wide, in the same run.

Targets (issue): at most 3% slowdown on the append benchmark, at most 10% on the page-fault-heavy workload;
also the measured cost per event, in ns.

- append: a child process starts a MessageStore (ASYNC flush, POPULATE warm-up, 256 MiB CommitLog segments,
  dispatcher and index running) in a temporary directory on the real disk, then times N puts of 1 KiB
  messages through the batch API (put_messages, 256 per batch). Segment rolls, with the next segment
  preallocated and warmed in the background, happen inside the timed loop as they do in the broker.
- append-cold: the same without warm-up: the producer faults in every page of every new segment.
- faults: a child maps fresh sparse files on the real disk (MAP_SHARED) and writes one byte per page, one new
  mapping per pass: every page is a write fault that adds a page-cache folio and dirties it.

Three sides per workload, K runs each:
- no probes;
- all probes: five `mqinspect trace <probe> --interval 1 --format jsonl` sessions are started and the
  workload is released only once every session has printed its startup line (the programs are attached
  then); afterwards the sessions get SIGINT and their summary lines give the event counts;
- the floor: this process attaches one EMPTY BPF program (`return 0`, named mqi_floor_N) per attachment of
  each probe's ProgramSpec, to the same tracepoints and the same way (bcc attach_tracepoint), so every
  tracepoint carries as many programs as with the five sessions. Whatever a program does, the kernel pays
  per run for the tracepoint's dispatch (perf_trace_* filling the event record, trace_call_bpf running the
  program; for syscalls:* events the traced syscall path of every process): the floor is what any
  tracepoint-based tracer of these events costs. What the probes add above it (probes - floor) is
  mqinspect's own work: the programs' bodies and the sessions' user space. The floor's programs are compiled
  and loaded once per benchmark run, attached just before each floor run's timed loop and detached after it.

The sides run in a balanced order, one run of each side per group (N F P, F P N, P N F, then mirrored pairs
such as N F P / P F N), so that every side sits as often early as late and a linear drift of the machine lands
on all sides equally; the medians are compared, and the ratios within each group ("paired").

The timed runs are made without the kernel's BPF run statistics, which add two clock reads to every program
run (measured here: they make the floor cost +24% on the fault loop instead of nothing). The in-kernel ns per
program run come from one more run of the floor and of the probes per workload, with the statistics on, whose
times are not in the comparison (--no-run-statistics skips them).

Computed from counts, beside the timed sides: the dispatch cost of one empty program run is measured on its
own at the start (task:task_rename fired by prctl(PR_SET_NAME), rounds with and without one program); the
floor's and the probes' program runs per loop (the run statistics) times that cost, plus the time inside the
probes' programs above an empty program's, give the floor's and the probes' slowdowns without wall time,
which moves by tens of percent between runs on this VM. The verdict needs both: the wall time within the
target (or within its noise) and the computed slowdown within it. When the floor alone computes above the
target, the report says the target is out of reach for any tracepoint-based tracer of these events here.

Each workload child backs its memory before its clock starts (see back_guest_memory): in this VM, memory the
guest freed is handed back to the host and costs a host fault when touched again, and the probed side started
after five compilers had freed gigabytes; before this step that, not the probes, was most of its slowdown.

    .venv/bin/python benchmarks/probe_overhead.py               # about 9 minutes on 2 cores
    .venv/bin/python benchmarks/probe_overhead.py --quick       # about 4 minutes (60-90 s per workload)
    .venv/bin/python benchmarks/probe_overhead.py --per-probe   # plus each probe alone (about +2.5 min)

Needs root (or CAP_BPF+CAP_PERFMON); the floor also needs bcc and kernel headers (without them it says why and
the other two sides are still measured). Exits 0 (it measures, it does not assert), 130 when interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import functools
import gc
import importlib
import itertools
import json
import mmap
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from probes.ebpf.loader import FUNCTION_PREFIX, TRACEFS  # noqa: E402
from probes.ebpf.session import PROBE_MODULES  # noqa: E402
from probes.ebpf.tracepoints import tracepoint_format_path  # noqa: E402

MQINSPECT = REPO / ".venv" / "bin" / "mqinspect"
PROBES = ("faults", "pagecache", "writeback", "sendpath", "syscalls")
TARGET_SLOWDOWN = {"append": 0.03, "append-cold": 0.10, "faults": 0.10}
PAGE_SIZE = mmap.PAGESIZE
MiB = 1 << 20

SESSION_START_TIMEOUT_S = 90.0  # five bcc compilations share two cores
SESSION_STOP_TIMEOUT_S = 20.0  # the summary of a system-wide faults session walks every file it saw
SESSION_DRAIN_TIMEOUT_S = 10.0  # sessions print an interval every second
CHILD_TIMEOUT_S = 300.0
MIN_EVENTS_FOR_A_COST = 1000
# The floor's programs: named apart from the probes' (mqi_...), and short (the kernel keeps 15 characters).
FLOOR_PREFIX = f"{FUNCTION_PREFIX}floor_"
# Closing a tracepoint's last perf event waits for RCU grace periods (measured here: about 90 ms per
# tracepoint, 6 s for the floor's 89 one after another); closed from threads, the waits overlap.
FLOOR_DETACH_THREADS = 8


# ---- settings ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    repetitions: int
    append_messages: int
    fault_pass_mib: int
    fault_backing: str  # "file" (ext4, MADV_RANDOM) or "shmem" (anonymous MAP_SHARED)
    fault_passes: int
    per_probe: bool
    run_statistics: bool  # one more floor run and probed run, timing every program run (not compared)
    directory: Path
    workloads: tuple[str, ...]

    def child_parameters(self, workload: str) -> dict:
        if workload.startswith("append"):
            warmup = "none" if workload == "append-cold" else "populate"
            fresh_mib = self.append_messages * 1200 // MiB + 2 * APPEND_SEGMENT_BYTES // MiB
            return {
                "dir": str(self.directory),
                "messages": self.append_messages,
                "warmup": warmup,
                "fresh_memory_mib": fresh_mib,
            }
        return {
            "dir": str(self.directory),
            "pass_mib": self.fault_pass_mib,
            "passes": self.fault_passes,
            "backing": self.fault_backing,
            "fresh_memory_mib": self.fault_pass_mib * self.fault_passes,
        }


def parse_args(argv: Sequence[str]) -> Settings:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="3 repetitions, smaller workloads (about 4 min for the three)"
    )
    parser.add_argument("--repetitions", "-k", type=int, default=None, help="runs per side (default 5)")
    parser.add_argument("--messages", type=int, default=None, help="append: messages (default 600,000)")
    parser.add_argument("--fault-mib", type=int, default=None, help="faults: MiB per pass (default 512)")
    parser.add_argument("--fault-passes", type=int, default=None, help="faults: passes (default 2)")
    parser.add_argument(
        "--fault-backing",
        choices=["file", "shmem"],
        default="file",
        help="faults: a sparse file on --dir (each fault also adds and dirties a page-cache folio) or "
        "anonymous shared memory (the fault exception alone)",
    )
    parser.add_argument("--per-probe", action="store_true", help="also run each probe alone once")
    parser.add_argument(
        "--no-run-statistics",
        action="store_true",
        help="skip the extra runs with the kernel's BPF run statistics on (in-kernel ns per program run)",
    )
    parser.add_argument(
        "--workloads",
        default="append,append-cold,faults",
        help="comma-separated, of: append, append-cold, faults",
    )
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()), help="parent directory")
    args = parser.parse_args(argv)
    return Settings(
        repetitions=args.repetitions or (3 if args.quick else 5),
        append_messages=args.messages or (300_000 if args.quick else 600_000),
        fault_pass_mib=args.fault_mib or (256 if args.quick else 512),
        fault_passes=args.fault_passes or 2,
        fault_backing=args.fault_backing,
        per_probe=args.per_probe,
        run_statistics=not args.no_run_statistics,
        directory=args.dir.resolve(),
        workloads=tuple(name for name in args.workloads.split(",") if name),
    )


# ---- the workloads, each in a child process ---------------------------------------------------------------
#
# Protocol on the child's stdin/stdout, one JSON object or word per line: the child sets up (outside the
# timing and before any probe is attached, so set-up events are not counted), prints {"pid": ...}, waits for
# "go", runs and times its loop, prints its result, then waits for "exit" before tearing down, so that the
# teardown (store shutdown, unlinking dirty files) happens after the probes are detached.


def run_child(workload: str, parameters: dict) -> None:
    setup, timed_loop = CHILD_WORKLOADS[workload](parameters)
    with setup as state:
        gc.collect()
        reply({"pid": os.getpid()})
        wait_for_word("prepare")
        back_guest_memory(parameters["fresh_memory_mib"], parameters["dir"])
        reply({"ready": True})
        wait_for_word("go")
        faults_before = page_faults_so_far()
        started = time.perf_counter()
        units = timed_loop(state)
        seconds = time.perf_counter() - started
        reply({"seconds": seconds, "units": units, "page_faults": page_faults_so_far() - faults_before})
        wait_for_word("exit")


def back_guest_memory(mib: int, directory: str) -> None:
    """Fill and drop as much page cache as the loop takes fresh pages, on its filesystem, just before the
    clock starts.

    In a virtual machine the host backs guest memory lazily and takes back what the guest frees (this VM:
    virtio-balloon free page reporting of free 2 MiB blocks, and DAMON), so zeroing a page the host took
    back costs a host fault: measured here, the kernel's memset of new page-cache folios took 3-5x longer
    and a cold append ran 1.6x slower after the child had merely waited 12 s (as the probed side waits for
    five compilers) than right after its set-up. Without this step the comparison measured where the pages
    came from. The pages written here are page-cache folios of the sizes the loop's own will have, and single
    anonymous pages; freed, they go to the head of the free lists (reported ones to the tail), where the
    loop's allocations find them first. A forked process does it, so that the sessions' counts of the
    workload's process (the events table) do not include these faults and page-cache events."""
    helper = os.fork()
    if helper == 0:
        try:
            fill_and_free(mib, directory)
        finally:
            os._exit(0)
    os.waitpid(helper, 0)


def fill_and_free(mib: int, directory: str) -> None:
    block = bytes(MiB)
    with tempfile.TemporaryFile(dir=directory) as scratch:
        for _ in range(mib):
            scratch.write(block)
        scratch.flush()
    # closing it truncated the unwritten, dirty pages: no disk I/O. Then single pages, last so first reused:
    # the fault loop's 4 KiB folios come from them.
    size = mib * MiB
    with mmap.mmap(-1, size, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS) as memory:
        memory.madvise(mmap.MADV_NOHUGEPAGE)
        for offset in range(0, size, PAGE_SIZE):
            memory[offset] = 1


def page_faults_so_far() -> int:
    """The kernel's own count (minor + major: a write fault on a hole of a sparse file is a major one)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_minflt + usage.ru_majflt


def reply(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def wait_for_word(word: str) -> None:
    line = sys.stdin.readline()
    if line.strip() != word:
        raise SystemExit(f"child: expected {word!r} on stdin, got {line!r}")


APPEND_BODY_BYTES = 1024
APPEND_BATCH = 256
APPEND_BODY_POOL_BYTES = 4 * MiB  # distinct bodies, cycled, so that the CPU caches do not hold them all
APPEND_SEGMENT_BYTES = 256 * MiB


@contextlib.contextmanager
def append_store(parameters: dict) -> Iterator[tuple]:
    from store import codec
    from store.config import FlushDiskType, StoreConfig, WarmupMode
    from store.message_store import MessageStore

    root = Path(tempfile.mkdtemp(prefix="probe-overhead-append-", dir=parameters["dir"]))
    config = StoreConfig(
        mapped_file_size_commitlog=APPEND_SEGMENT_BYTES,
        warmup=WarmupMode(parameters["warmup"]),
        flush_disk_type=FlushDiskType.ASYNC,
    )
    born = time.time_ns() // 1_000_000
    messages = [
        codec.Message("ProbeOverhead", body=os.urandom(APPEND_BODY_BYTES), properties={"TAGS": "TagA"},
                      born_timestamp_ms=born)
        for _ in range(APPEND_BODY_POOL_BYTES // APPEND_BODY_BYTES)
    ]  # fmt: skip
    batches = [messages[start : start + APPEND_BATCH] for start in range(0, len(messages), APPEND_BATCH)]
    try:
        with MessageStore(root, config) as store:
            store.put_messages(batches[0])  # creates and warms the first segment before the clock starts
            store.wait_dispatched(store.commit_log.max_offset, 30)
            yield store, batches, parameters["messages"]
    finally:
        shutil.rmtree(root, ignore_errors=True)


def append_loop(state: tuple) -> int:
    store, batches, messages = state
    put_batch = store.put_messages
    next_batch = itertools.cycle(batches).__next__
    for _ in range(messages // APPEND_BATCH):
        put_batch(next_batch())
    return messages // APPEND_BATCH * APPEND_BATCH


@contextlib.contextmanager
def fault_mappings(parameters: dict) -> Iterator[tuple]:
    """One way to open a fresh mapping per pass; files are created (not mapped) before the clock starts."""
    size = parameters["pass_mib"] * MiB
    if parameters["backing"] == "shmem":
        yield [functools.partial(mmap.mmap, -1, size, mmap.MAP_SHARED)] * parameters["passes"], size
        return
    root = Path(tempfile.mkdtemp(prefix="probe-overhead-faults-", dir=parameters["dir"]))
    descriptors = []
    try:
        for number in range(parameters["passes"]):
            descriptor = os.open(root / f"pass-{number}", os.O_RDWR | os.O_CREAT, 0o600)
            descriptors.append(descriptor)
            os.ftruncate(descriptor, size)
        yield [functools.partial(map_without_readahead, descriptor, size) for descriptor in descriptors], size
    finally:
        for descriptor in descriptors:
            os.close(descriptor)
        shutil.rmtree(root, ignore_errors=True)  # drops the dirty pages unwritten


def map_without_readahead(descriptor: int, size: int) -> mmap.mmap:
    mapping = mmap.mmap(descriptor, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    # With readahead, ext4 fills the holes with large folios and one fault maps dozens of pages (measured:
    # 2,964 faults for 131,072 pages). MADV_RANDOM keeps 4 KiB folios: one fault, one page-cache insertion
    # and one dirtied folio per page, as RocketMQ's TOUCH warm-up of a new segment on a small-folio kernel.
    mapping.madvise(mmap.MADV_RANDOM)
    return mapping


def fault_loop(state: tuple) -> int:
    openers, size = state
    for open_mapping in openers:
        with open_mapping() as mapping:
            for offset in range(0, size, PAGE_SIZE):
                mapping[offset] = 1
    return len(openers) * (size // PAGE_SIZE)


CHILD_WORKLOADS: dict[str, Callable[[dict], tuple]] = {
    "append": lambda parameters: (append_store(parameters), append_loop),
    "append-cold": lambda parameters: (append_store(parameters), append_loop),
    "faults": lambda parameters: (fault_mappings(parameters), fault_loop),
}
WORKLOAD_UNITS = {"append": "msgs/s", "append-cold": "msgs/s", "faults": "pages/s"}
WORKLOAD_TITLES = {
    "append": "append (MessageStore.put_messages x256, 1 KiB, ASYNC flush, POPULATE warm-up)",
    "append-cold": "cold append (the same without warm-up: the producer faults in every new page)",
    "faults": "page-fault heavy (MAP_SHARED {backing}, 1 byte per 4 KiB page, a new mapping per pass)",
}


# ---- the parent's side of a workload ----------------------------------------------------------------------


@dataclass(frozen=True)
class WorkloadResult:
    seconds: float
    units: int
    page_faults: int  # the child's own ru_minflt + ru_majflt over the timed loop

    @property
    def rate(self) -> float:
        return self.units / self.seconds


class Workload:
    """A workload child between "set up" and "torn down"."""

    def __init__(self, name: str, parameters: dict):
        command = [sys.executable, str(Path(__file__).resolve()), "--child", name, json.dumps(parameters)]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.pid = self._read()["pid"]

    def prepare(self) -> None:
        """Have the child back the memory its loop will take (back_guest_memory), just before run()."""
        self._send("prepare")
        self._read()

    def run(self) -> WorkloadResult:
        self._send("go")
        result = self._read()
        return WorkloadResult(result["seconds"], result["units"], result["page_faults"])

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            self._send("exit")
        try:
            self.process.wait(timeout=CHILD_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def _send(self, word: str) -> None:
        self.process.stdin.write(word + "\n")
        self.process.stdin.flush()

    def _read(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"workload child exited with status {self.process.wait()}")
        return json.loads(line)


# ---- trace sessions ---------------------------------------------------------------------------------------

# What each probe handled, as two readings of its summary. The workload's share comes from the summary's
# per-process rows (whose columns differ from the totals'); the system-wide totals count every process.
WORKLOAD_EVENT_COUNTERS = {
    "faults": ("faults", "populate_faults"),
    "pagecache": ("added_folios", "deleted_folios"),
    "writeback": ("dirtied_folios",),
    "sendpath": ("syscalls",),
    "syscalls": ("calls",),
}
SYSTEM_EVENT_COUNTERS = {
    "faults": ("faults", "file_faults", "populate_faults", "fault_around_events"),
    "pagecache": ("added_folios", "deleted_folios"),
    "writeback": ("dirtied_folios",),
    "sendpath": ("syscalls",),
    "syscalls": ("syscalls",),
}


@dataclass(frozen=True)
class ProbeEvents:
    workload: int  # events in the workload's process: their cost lands on its wall time
    system: int  # events in every process, the workload's included


class TraceSession:
    """One `mqinspect trace <probe>` process. Its output goes to files, not pipes: a system-wide session
    writes a lot per interval, and a full pipe would stall it while it holds its programs attached."""

    def __init__(self, probe: str, scratch: Path):
        self.probe = probe
        self.stdout_path = scratch / f"{probe}.jsonl"
        self.stderr_path = scratch / f"{probe}.stderr"
        command = [str(MQINSPECT), "trace", probe, "--interval", "1", "--format", "jsonl"]
        with open(self.stdout_path, "wb") as stdout, open(self.stderr_path, "wb") as stderr:
            self.process = subprocess.Popen(command, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL)
        self.interrupted = False

    def has_started(self) -> bool:
        """The startup line is printed once the programs are attached."""
        if any(line.startswith("Tracing ") for line in self._stderr_lines()):
            return True
        if self.process.poll() is not None:
            status = self.process.returncode
            raise RuntimeError(f"trace {self.probe} exited ({status}): {self._stderr_tail()}")
        return False

    def cpu_seconds(self) -> float:
        """User + system CPU the session has used: its per-interval collection competes with the workload
        for the two cores, a cost apart from the programs' in-kernel time."""
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime

    def interrupt(self) -> None:
        """SIGINT ends a session with its summary. Only once: a second one aborts it without a summary."""
        if self.process.poll() is None and not self.interrupted:
            self.interrupted = True
            self.process.send_signal(signal.SIGINT)

    def wait_stopped(self) -> None:
        """A session that does not end in time is killed: its programs go with its file descriptors."""
        try:
            self.process.wait(timeout=SESSION_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def events(self, workload_pid: int) -> ProbeEvents:
        summary = self._summary()
        if summary is None:
            raise RuntimeError(f"trace {self.probe} printed no summary: {self._stderr_tail()}")
        rows = [row for row in summary["processes"] if row["pid"] == workload_pid]
        in_workload = sum(row[name] for row in rows for name in WORKLOAD_EVENT_COUNTERS[self.probe])
        in_system = sum(summary[name] for name in SYSTEM_EVENT_COUNTERS[self.probe])
        return ProbeEvents(in_workload, in_system)

    def intervals_written(self) -> int:
        """Interval lines printed so far: each one follows a drain of the session's maps."""
        with open(self.stdout_path, "rb") as output:
            return sum(1 for line in output if line.startswith(b'{"kind":"interval"'))

    def _summary(self) -> dict | None:
        with open(self.stdout_path, "rb") as output:
            for line in output:
                if line.startswith(b'{"kind":"summary"'):
                    return json.loads(line)
        return None

    def _stderr_lines(self) -> list[str]:
        return self.stderr_path.read_text(errors="replace").splitlines()

    def _stderr_tail(self) -> str:
        return " | ".join(self._stderr_lines()[-3:]) or "(no stderr)"


@contextlib.contextmanager
def probes_attached(probes: Sequence[str], scratch: Path) -> Iterator[list[TraceSession]]:
    """Start the sessions together (they compile in parallel), wait until every one is attached; stop every
    one on the way out, whatever happened, so no program stays loaded."""
    sessions: list[TraceSession] = []
    try:
        for probe in probes:
            sessions.append(TraceSession(probe, scratch))
        deadline = time.monotonic() + SESSION_START_TIMEOUT_S
        while not all(session.has_started() for session in sessions):
            if time.monotonic() > deadline:
                raise RuntimeError(f"trace sessions not attached within {SESSION_START_TIMEOUT_S:.0f} s")
            time.sleep(0.05)
        yield sessions
    finally:
        for session in sessions:  # all first, so that they build their summaries in parallel
            session.interrupt()
        for session in sessions:
            session.wait_stopped()


# ---- the floor: empty programs on the probes' tracepoints --------------------------------------------------


class FloorUnavailable(Exception):
    """Why the floor cannot be measured on this machine, in one line."""


@dataclass(frozen=True)
class FloorProgram:
    probe: str
    tracepoint: str
    function: str  # FLOOR_PREFIX + a number


class EmptyProgramFloor:
    """One empty BPF program per attachment of every probe, in this process: compiled and loaded once,
    attached around each floor run's timed loop. bcc keeps one attachment per tracepoint and BPF object
    (`tracepoint_fds`, keyed by name), so a tracepoint that carries several of the probes' programs (the
    page-cache insertion carries three) gets them from several objects: one per probe."""

    def __init__(self, objects: list[tuple[Any, list[FloorProgram]]], skipped: list[str]):
        self._objects = objects
        self.skipped = skipped  # "probe tracepoint" this kernel lacks
        self.program_ids: frozenset[int] = frozenset()  # the kernel's ids of these programs, for bpftool
        self.dispatch: DispatchCost | None = None  # what one empty program run costs; None if not measured

    @property
    def programs(self) -> list[FloorProgram]:
        return [program for _bpf, programs in self._objects for program in programs]

    @property
    def tracepoints(self) -> int:
        return len({program.tracepoint for program in self.programs})

    def describe(self) -> str:
        absent = f"; absent on this kernel, skipped: {', '.join(self.skipped)}" if self.skipped else ""
        return (
            f"{len(self.programs)} empty programs ({FLOOR_PREFIX}*) on the five probes' {self.tracepoints} "
            f"tracepoints, one per attachment{absent}"
        )

    def add(self, bpf: Any, programs: list[FloorProgram]) -> None:
        """A compiled BPF object and its programs, loaded at once: a refusal shows before the first run."""
        self._objects.append((bpf, programs))
        for program in programs:
            bpf.load_func(program.function.encode(), type(bpf).TRACEPOINT)

    @contextlib.contextmanager
    def attached(self) -> Iterator[None]:
        try:
            for bpf, programs in self._objects:
                for program in programs:
                    self._attach(bpf, program)
            yield
        finally:
            self._detach_all()

    @staticmethod
    def _attach(bpf: Any, program: FloorProgram) -> None:
        try:
            bpf.attach_tracepoint(tp=program.tracepoint.encode(), fn_name=program.function.encode())
        except Exception as error:  # bcc raises a plain Exception
            raise RuntimeError(f"floor: {program.function} on {program.tracepoint}: {error}") from error

    def _detach_all(self) -> None:
        attached = [
            (bpf, tracepoint) for bpf, _programs in self._objects for tracepoint in bpf.tracepoint_fds
        ]
        with ThreadPoolExecutor(FLOOR_DETACH_THREADS) as pool:
            list(pool.map(lambda pair: pair[0].detach_tracepoint(pair[1]), attached))

    def close(self) -> None:
        """Detach what is still attached and unload every program; idempotent."""
        objects, self._objects = self._objects, []
        for bpf, _programs in objects:
            bpf.cleanup()


def build_floor() -> EmptyProgramFloor:
    """Compile and load the floor's programs; FloorUnavailable (or bcc's exception) when that fails."""
    try:
        import bcc
    except Exception as error:  # ImportError, or OSError when libbcc itself is missing
        raise FloorUnavailable(f"bcc cannot be imported: {type(error).__name__}: {error}") from None
    if not (TRACEFS / "events").is_dir():
        raise FloorUnavailable(f"tracefs is not mounted at {TRACEFS}")
    groups, skipped = floor_layout()
    ids_before = set(program_times(is_floor_program))
    floor = EmptyProgramFloor([], skipped)
    try:
        for programs in groups:  # clang's diagnostics, if any, go to stderr
            floor.add(bcc.BPF(text=empty_functions(programs).encode()), programs)
        floor.program_ids = frozenset(program_times(is_floor_program)) - ids_before
    except BaseException:
        floor.close()
        raise
    return floor


def floor_layout() -> tuple[list[list[FloorProgram]], list[str]]:
    """The floor's programs, one per attachment of each probe's ProgramSpec (the probes' own module-level
    PROGRAM), grouped into BPF objects in which no tracepoint comes twice."""
    groups: list[list[FloorProgram]] = []
    skipped: list[str] = []
    numbers = itertools.count()
    for probe in PROBES:
        spec = importlib.import_module(PROBE_MODULES[probe]).PROGRAM
        probe_groups: list[list[FloorProgram]] = []
        for attachment in spec.attachments:
            if not tracepoint_format_path(TRACEFS, attachment.tracepoint).exists():
                skipped.append(f"{probe} {attachment.tracepoint}")
                continue
            program = FloorProgram(probe, attachment.tracepoint, f"{FLOOR_PREFIX}{next(numbers)}")
            group = next(
                (g for g in probe_groups if all(p.tracepoint != program.tracepoint for p in g)), None
            )
            if group is None:
                group = []
                probe_groups.append(group)
            group.append(program)
        groups += probe_groups
    return groups, skipped


def empty_functions(programs: Sequence[FloorProgram]) -> str:
    """C text with one empty function per program; the names are ours (FLOOR_PREFIX + a number)."""
    return "".join(f"int {program.function}(void *ctx) {{ return 0; }}\n" for program in programs)


@contextlib.contextmanager
def floor_or_none() -> Iterator[EmptyProgramFloor | None]:
    """The floor, unloaded on every way out; None, with the reason said, when it cannot be built."""
    started = time.perf_counter()
    reason = ""
    try:
        floor = build_floor()
    except Exception as error:  # bcc raises plain Exceptions; the probes' modules may fail to import
        reason = str(error) if isinstance(error, FloorUnavailable) else f"{type(error).__name__}: {error}"
    if reason:
        print(f"floor: unavailable ({reason}); measuring no probes against all probes only")
        yield None
        return
    print(f"floor: {floor.describe()}; compiled and loaded in {time.perf_counter() - started:.1f} s")
    try:
        floor.dispatch = measured_dispatch()
        yield floor
    finally:
        floor.close()


# ---- the dispatch: what the kernel pays per program run, whatever the program does -------------------------

# prctl(PR_SET_NAME) fires task:task_rename and does little else, so a loop of it times one tracepoint's
# dispatch (perf_trace_* filling the record, trace_call_bpf running the program) against a ~0.3 us call.
DISPATCH_TRACEPOINT = "task:task_rename"
DISPATCH_FUNCTION = f"{FLOOR_PREFIX}disp"
DISPATCH_ROUNDS = 15
DISPATCH_CALLS = 60_000
PR_SET_NAME = 15
PR_GET_NAME = 16


@dataclass(frozen=True)
class DispatchCost:
    """One empty program's run on a tracepoint, as the calls that fire it slow down: (with - without) per
    call, the median over rounds that alternate the two."""

    ns_per_run: float
    low_ns: float
    high_ns: float
    call_ns: float  # the call with nothing attached
    rounds: int
    calls: int

    def describe(self) -> str:
        return (
            f"{self.ns_per_run:,.0f} ns per run of one empty program ({DISPATCH_TRACEPOINT}, "
            f"prctl(PR_SET_NAME) {self.call_ns:,.0f} ns without it; {self.rounds} rounds of {self.calls:,} "
            f"calls, {self.low_ns:,.0f}-{self.high_ns:,.0f} ns)"
        )


def measured_dispatch() -> DispatchCost | None:
    """The dispatch cost per program run on this machine; None, said on stdout, when it cannot be measured."""
    try:
        cost = dispatch_cost()
    except Exception as error:  # bcc raises plain Exceptions
        print(f"dispatch cost: unavailable ({type(error).__name__}: {error}); no computed figures")
        return None
    print(f"dispatch cost: {cost.describe()}")
    return cost


def dispatch_cost() -> DispatchCost:
    import bcc

    if not tracepoint_format_path(TRACEFS, DISPATCH_TRACEPOINT).exists():
        raise FloorUnavailable(f"this kernel lacks {DISPATCH_TRACEPOINT}")
    bpf = bcc.BPF(text=f"int {DISPATCH_FUNCTION}(void *ctx) {{ return 0; }}\n".encode())
    try:
        bpf.load_func(DISPATCH_FUNCTION.encode(), bcc.BPF.TRACEPOINT)
        without: list[float] = []
        extra: list[float] = []
        with renaming_calls() as rename_ns:
            for _ in range(DISPATCH_ROUNDS):
                before = rename_ns(DISPATCH_CALLS)
                bpf.attach_tracepoint(tp=DISPATCH_TRACEPOINT.encode(), fn_name=DISPATCH_FUNCTION.encode())
                try:
                    rename_ns(DISPATCH_CALLS // 20)  # past the attachment's own after-effects
                    attached = rename_ns(DISPATCH_CALLS)
                finally:
                    bpf.detach_tracepoint(DISPATCH_TRACEPOINT.encode())
                without.append((before + rename_ns(DISPATCH_CALLS)) / 2)  # a drift lands on both sides
                extra.append(attached - without[-1])
    finally:
        bpf.cleanup()
    median_without = statistics.median(without)
    return DispatchCost(
        statistics.median(extra), min(extra), max(extra), median_without, DISPATCH_ROUNDS, DISPATCH_CALLS
    )


@contextlib.contextmanager
def renaming_calls() -> Iterator[Callable[[int], float]]:
    """A function that renames this thread `calls` times and returns the ns per call; the thread's name is
    given back afterwards."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    prctl.restype = ctypes.c_int
    original = ctypes.create_string_buffer(16)
    prctl(PR_GET_NAME, original, 0, 0, 0)
    names = (ctypes.create_string_buffer(b"mqi-dispatch-a"), ctypes.create_string_buffer(b"mqi-dispatch-b"))

    def rename_ns(calls: int) -> float:
        started = time.perf_counter_ns()
        for call in range(calls):
            prctl(PR_SET_NAME, names[call & 1], 0, 0, 0)
        return (time.perf_counter_ns() - started) / calls

    try:
        yield rename_ns
    finally:
        prctl(PR_SET_NAME, original, 0, 0, 0)


# ---- the programs' own run time ----------------------------------------------------------------------------

BPF_STATS_SYSCTL = Path("/proc/sys/kernel/bpf_stats_enabled")
BPF_STATS_RUN_TIME = 0  # enum bpf_stats_type


@contextlib.contextmanager
def bpf_run_statistics() -> Iterator[bool]:
    """The kernel's run statistics on: it then times every program run (run_time_ns, run_cnt in bpftool),
    the in-kernel cost per event without the noise of wall time. They add two clock reads per run, so only
    the runs made for that figure have them.

    Held as a BPF_ENABLE_STATS descriptor (libbpf's bpf_enable_stats) where possible: the kernel counts
    it apart from the kernel.bpf_stats_enabled sysctl, so another program that sets the sysctl and resets
    it to 0 in the middle of the run does not switch them off, and the kernel drops it when this process
    ends however it ends. Otherwise the sysctl, a system setting: said on stderr, restored afterwards."""
    descriptor = run_statistics_descriptor()
    if descriptor is not None:
        print("note: BPF run statistics on for one run (a BPF_ENABLE_STATS descriptor)", file=sys.stderr)
        try:
            yield True
        finally:
            os.close(descriptor)
        return
    try:
        previous = BPF_STATS_SYSCTL.read_text().strip()
        BPF_STATS_SYSCTL.write_text("1")
    except OSError as error:
        print(f"note: BPF run statistics unavailable ({error}); in-kernel costs not shown", file=sys.stderr)
        yield False
        return
    restored = f"restored to {previous} afterwards"
    print(f"note: kernel.bpf_stats_enabled set to 1 for the run, {restored}", file=sys.stderr)
    try:
        yield True
    finally:
        BPF_STATS_SYSCTL.write_text(previous)


def run_statistics_descriptor() -> int | None:
    """A descriptor that keeps the run statistics on while it is open; None without libbpf or privileges."""
    library = ctypes.util.find_library("bpf")
    if library is None:
        return None
    try:
        enable_stats = ctypes.CDLL(library, use_errno=True).bpf_enable_stats
    except (OSError, AttributeError):
        return None
    enable_stats.argtypes = [ctypes.c_int]
    enable_stats.restype = ctypes.c_int
    descriptor = enable_stats(BPF_STATS_RUN_TIME)
    return descriptor if descriptor >= 0 else None


ProgramTimes = dict[int, tuple[str, int, int]]  # program id -> (name, run_cnt, run_time_ns)


def is_floor_program(name: str) -> bool:
    return name.startswith(FLOOR_PREFIX)


def is_session_program(name: str) -> bool:
    """mqinspect's own programs: all named mqi_*, the floor's excepted."""
    return name.startswith(FUNCTION_PREFIX) and not is_floor_program(name)


def program_times(belongs: Callable[[str], bool]) -> ProgramTimes:
    """The loaded programs whose name `belongs`, by id, from bpftool (empty if bpftool fails)."""
    try:
        listing = subprocess.run(["bpftool", "prog", "show", "--json"], capture_output=True, timeout=30)
        programs = json.loads(listing.stdout or b"[]")
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return {}
    return {
        program["id"]: (program["name"], program.get("run_cnt", 0), program.get("run_time_ns", 0))
        for program in programs
        if belongs(program.get("name", ""))
    }


def runs_between(before: ProgramTimes, after: ProgramTimes, ours: set[int]) -> dict[str, tuple[int, int]]:
    """Runs and nanoseconds per program name of `ours` between two readings."""
    gained: dict[str, tuple[int, int]] = {}
    for program_id in ours & before.keys() & after.keys():
        name, runs, nanoseconds = after[program_id]
        runs -= before[program_id][1]
        nanoseconds -= before[program_id][2]
        previous = gained.get(name, (0, 0))
        gained[name] = (previous[0] + runs, previous[1] + nanoseconds)
    return gained


# ---- one measured run -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    result: WorkloadResult
    events: dict[str, ProbeEvents] = field(default_factory=dict)  # probe -> events; only with probes
    sessions_cpu_s: float = 0.0  # CPU the trace sessions used in user space and syscalls while it ran
    # name -> (runs, ns) in the timed loop: the sessions' programs with probes, the empty ones with the floor
    program_runs: dict[str, tuple[int, int]] = field(default_factory=dict)


def measure_once(
    workload: str,
    settings: Settings,
    scratch: Path,
    probes: Sequence[str] = (),
    floor: EmptyProgramFloor | None = None,
) -> Run:
    """One timed loop of a fresh child: with the `probes`' sessions, or with the `floor`, or bare."""
    child = Workload(workload, settings.child_parameters(workload))
    try:
        if probes:
            return run_with_sessions(child, probes, scratch)
        if floor is not None:
            return run_with_floor(child, floor)
        child.prepare()
        return Run(child.run())
    finally:
        child.finish()


def run_with_sessions(child: Workload, probes: Sequence[str], scratch: Path) -> Run:
    loaded_before = set(program_times(is_session_program))
    with probes_attached(probes, scratch) as sessions:
        child.prepare()
        wait_for_a_drain(sessions)
        cpu_before = sum(session.cpu_seconds() for session in sessions)
        times_before = program_times(is_session_program)
        result = child.run()
        times_after = program_times(is_session_program)
        sessions_cpu_s = sum(session.cpu_seconds() for session in sessions) - cpu_before
    ours = set(times_before) - loaded_before  # loaded by these sessions (others may run their own)
    events = {session.probe: session.events(child.pid) for session in sessions}
    return Run(result, events, sessions_cpu_s, runs_between(times_before, times_after, ours))


def wait_for_a_drain(sessions: Sequence[TraceSession]) -> None:
    """Until every session has drained its maps once more: the sessions trace every process, so the
    per-page records of the memory backing (back_guest_memory) would otherwise fill their maps at the start
    of the timed loop (a full map fails its inserts: cheaper or dearer than normal, not what is measured)."""
    written = [session.intervals_written() for session in sessions]
    deadline = time.monotonic() + SESSION_DRAIN_TIMEOUT_S
    while any(
        session.intervals_written() <= before for session, before in zip(sessions, written, strict=True)
    ):
        if time.monotonic() > deadline:
            raise RuntimeError(f"trace sessions printed no interval within {SESSION_DRAIN_TIMEOUT_S:.0f} s")
        time.sleep(0.02)


def run_with_floor(child: Workload, floor: EmptyProgramFloor) -> Run:
    with floor.attached():
        child.prepare()
        times_before = program_times(is_floor_program)
        result = child.run()
        times_after = program_times(is_floor_program)
    return Run(result, program_runs=runs_between(times_before, times_after, set(floor.program_ids)))


class Side(Enum):
    NONE = "no probes"
    FLOOR = "floor"
    PROBES = "all 5 probes"

    @property
    def letter(self) -> str:
        return {"no probes": "N", "floor": "F", "all 5 probes": "P"}[self.value]


def balanced_order(sides: Sequence[Side], repetitions: int) -> list[Side]:
    """`repetitions` groups, each one run of every side. A side's mean position is the same for all sides
    (a linear drift of the machine lands on each equally) when every side's positions within the groups
    add up to the same: mirrored pairs of groups (N F P, P F N) do that, and with three sides so do the
    three rotations (N F P, F P N, P N F), which cover an odd number of groups. With two sides this is
    ABBA. One group alone cannot be balanced."""
    rotations = [list(sides[start:]) + list(sides[:start]) for start in range(len(sides))]
    groups: list[list[Side]] = []
    remaining = repetitions
    if remaining % 2 and len(sides) == 3 and remaining >= 3:
        groups += rotations
        remaining -= 3
    for pair in range(remaining // 2):
        first = rotations[pair % len(rotations)]
        groups += [first, first[::-1]]
    if remaining % 2:
        groups.append(rotations[0])
    return [side for group in groups for side in group]


def median_seconds(runs: list[Run]) -> float:
    return statistics.median(run.result.seconds for run in runs)


@dataclass(frozen=True)
class Comparison:
    workload: str
    fault_backing: str
    without: list[Run]
    with_probes: list[Run]
    floor: list[Run]  # empty when the floor was unavailable; the i-th run of each side shares a group
    costs: list[Run] = field(default_factory=list)  # with the run statistics on: not timed against the rest
    floor_costs: list[Run] = field(default_factory=list)

    @property
    def seconds_without(self) -> float:
        return median_seconds(self.without)

    @property
    def seconds_with(self) -> float:
        return median_seconds(self.with_probes)

    @property
    def seconds_floor(self) -> float:
        return median_seconds(self.floor)

    @property
    def slowdown(self) -> float:
        return self.seconds_with / self.seconds_without - 1

    @property
    def floor_slowdown(self) -> float:
        return self.seconds_floor / self.seconds_without - 1

    @property
    def paired_slowdown(self) -> float:
        """The median over the groups of the balanced order: a load that comes and goes between groups
        (other processes on two cores) moves every run of a group, and drops out of their ratios."""
        return self._paired(self.with_probes)

    @property
    def above_floor(self) -> float:
        """(probes - floor) / no probes, the medians: what mqinspect's own work adds to the floor."""
        return (self.seconds_with - self.seconds_floor) / self.seconds_without

    @property
    def paired_floor_slowdown(self) -> float:
        return self._paired(self.floor)

    @property
    def paired_above_floor(self) -> float:
        """(probes - floor) / no probes, the median over the groups."""
        return statistics.median(
            (probed.result.seconds - floor.result.seconds) / plain.result.seconds
            for plain, floor, probed in zip(self.without, self.floor, self.with_probes, strict=True)
        )

    def _paired(self, runs: list[Run]) -> float:
        ratios = [
            side.result.seconds / plain.result.seconds for plain, side in zip(self.without, runs, strict=True)
        ]
        return statistics.median(ratios) - 1

    def median_page_faults(self, runs: list[Run]) -> float:
        return statistics.median(run.result.page_faults for run in runs)

    def median_events(self, probe: str, where: str) -> float:
        return statistics.median(getattr(run.events[probe], where) for run in self.with_probes)

    def workload_events(self) -> float:
        return sum(self.median_events(probe, "workload") for probe in self.with_probes[0].events)

    def ns_per_event(self) -> float | None:
        events = self.workload_events()
        return (self.seconds_with - self.seconds_without) * 1e9 / events if events else None


def compare(workload: str, settings: Settings, scratch: Path, floor: EmptyProgramFloor | None) -> Comparison:
    measure_once(workload, settings, scratch)  # discarded: page cache, imports and disk warm
    sides = (Side.NONE, Side.FLOOR, Side.PROBES) if floor is not None else (Side.NONE, Side.PROBES)
    runs: dict[Side, list[Run]] = {side: [] for side in Side}
    for side in balanced_order(sides, settings.repetitions):
        run = measure_once(
            workload,
            settings,
            scratch,
            probes=PROBES if side is Side.PROBES else (),
            floor=floor if side is Side.FLOOR else None,
        )
        runs[side].append(run)
        print_run(workload, side.value, run)
    with_statistics = (
        runs_with_statistics(workload, settings, scratch, floor) if settings.run_statistics else ([], [])
    )
    sides = (runs[Side.NONE], runs[Side.PROBES], runs[Side.FLOOR])
    return Comparison(workload, settings.fault_backing, *sides, *with_statistics)


def print_run(workload: str, side: str, run: Run) -> None:
    print(f"    {workload:<11} {side:<12} {run.result.seconds:7.3f} s  {run.result.rate:>12,.0f} "
          f"{WORKLOAD_UNITS[workload]}", flush=True)  # fmt: skip


def runs_with_statistics(
    workload: str, settings: Settings, scratch: Path, floor: EmptyProgramFloor | None
) -> tuple[list[Run], list[Run]]:
    """One probed run and one floor run with the kernel timing every program run: the in-kernel cost per
    program. Their wall times carry the statistics' clock reads, so they stay out of the comparison."""
    with bpf_run_statistics() as on:
        if not on:
            return [], []
        probed = measure_once(workload, settings, scratch, probes=PROBES)
        print_run(workload, "probes+stats", probed)
        if floor is None:
            return [probed], []
        floored = measure_once(workload, settings, scratch, floor=floor)
        print_run(workload, "floor+stats", floored)
        return [probed], [floored]


# ---- report -----------------------------------------------------------------------------------------------


def verdict(passed: bool) -> str:
    return "PASS" if passed else "MISS"


def spread(runs: list[Run]) -> str:
    seconds = [run.result.seconds for run in runs]
    return f"{min(seconds):.3f}-{max(seconds):.3f}"


def print_comparison(comparison: Comparison, floor: EmptyProgramFloor | None) -> None:
    print_sides(comparison)
    target = TARGET_SLOWDOWN[comparison.workload]
    print(
        f"  ratio with/without (time) {comparison.seconds_with / comparison.seconds_without:.4f}: "
        f"slowdown {100 * comparison.slowdown:+.2f}% (target <= {100 * target:.0f}%, verdict below)"
        f"{overlap_note(comparison.without, comparison.with_probes)}"
    )
    groups = len(comparison.without)
    print(f"  paired slowdown (median over the {groups} groups of the balanced order): "
          f"{100 * comparison.paired_slowdown:+.2f}%")  # fmt: skip
    if floor is not None and comparison.floor:
        print_floor(comparison, floor)
    print_events(comparison)
    sessions_cpu_s = statistics.median(run.sessions_cpu_s for run in comparison.with_probes)
    print(
        f"  the five sessions' own CPU while the workload ran (user space + syscalls, not BPF): "
        f"{sessions_cpu_s:.2f} s = {100 * sessions_cpu_s / comparison.seconds_with:.0f}% of one CPU"
    )
    print_program_times(comparison.costs)
    computed = computed_cost(comparison, floor)
    print_computed(computed)
    print_verdict(comparison, floor, computed)


def print_sides(comparison: Comparison) -> None:
    unit = WORKLOAD_UNITS[comparison.workload]
    base = comparison.without
    title = WORKLOAD_TITLES[comparison.workload].format(backing=comparison.fault_backing)
    print(f"\n{title}: {base[0].result.units:,} {unit.split('/')[0]} per run, {len(base)} runs per side")
    print(f"  {'':<22} {'median s':>9} {'min-max s':>13} {unit:>14}")
    sides = [
        ("no probes", base),
        ("floor (empty programs)", comparison.floor),
        ("all 5 probes", comparison.with_probes),
    ]
    for label, runs in sides:
        if runs:
            rate = statistics.median(run.result.rate for run in runs)
            print(f"  {label:<22} {median_seconds(runs):>9.3f} {spread(runs):>13} {rate:>14,.0f}")


def print_floor(comparison: Comparison, floor: EmptyProgramFloor) -> None:
    """The floor's cost, and what the probes cost above it, in % of the time without probes and in ns per
    page fault of the workload."""
    faults = comparison.median_page_faults(comparison.with_probes)
    floor_extra_s = comparison.seconds_floor - comparison.seconds_without
    print(
        f"  floor: {floor.describe()}:\n"
        f"    slowdown {100 * comparison.floor_slowdown:+.2f}% "
        f"(paired {100 * comparison.paired_floor_slowdown:+.2f}%)"
        f"{per_fault(floor_extra_s, faults)}{overlap_note(comparison.without, comparison.floor)}"
    )
    print_floor_program_runs(comparison.floor_costs)
    probes_extra_s = comparison.seconds_with - comparison.seconds_without
    ratio = (
        f"{probes_extra_s / floor_extra_s:.2f}"
        if floor_extra_s > 0
        else "n/a (the floor's median is not slower)"
    )
    print(f"  probes' extra time / floor's extra time (medians): {ratio}")
    print(
        f"  left after the floor (probes - floor): {100 * comparison.above_floor:+.2f}% "
        f"of the time without probes (paired {100 * comparison.paired_above_floor:+.2f}%)"
        f"{per_fault(comparison.above_floor * comparison.seconds_without, faults)}"
        f"{overlap_note(comparison.floor, comparison.with_probes)}"
    )


def per_fault(extra_s: float, faults: float) -> str:
    """`extra_s` per page fault of the workload's timed loop, when it has enough of them to carry a figure."""
    if faults < MIN_EVENTS_FOR_A_COST:
        return f", n/a per page fault (only {faults:,.0f} in the loop)"
    return f" = {extra_s * 1e9 / faults:,.0f} ns per workload page fault ({faults:,.0f} faults)"


def program_run_totals(runs: list[Run]) -> tuple[int, int]:
    """Program runs and nanoseconds inside the programs, summed over `runs` and their programs."""
    per_program = [counted for run in runs for counted in run.program_runs.values()]
    return sum(count for count, _ns in per_program), sum(ns for _count, ns in per_program)


def print_floor_program_runs(runs: list[Run]) -> None:
    """What the kernel counted of the empty programs over the floor's loops (every process's events)."""
    count, nanoseconds = program_run_totals(runs)
    if not count:
        print("    empty program runs: unavailable (no run with the run statistics: --no-run-statistics, or "
              "they could not be turned on, or bpftool failed)")  # fmt: skip
        return
    faults = sum(run.result.page_faults for run in runs)
    per_fault_runs = f" = {count / faults:,.1f} per workload page fault" if faults else ""
    print(f"    empty program runs per loop (all processes): {count / len(runs):,.0f}{per_fault_runs}; "
          f"{nanoseconds / count:,.0f} ns/run inside the programs (the kernel's run statistics; the "
          "dispatch around them is not in that figure)")  # fmt: skip


@dataclass(frozen=True)
class ComputedCost:
    """The slowdowns computed from counts instead of timed: runs per loop (the kernel's run statistics) times
    the dispatch cost per run (measured on its own), plus the time inside the programs above an empty one's.
    Here a workload's wall time moves by tens of percent from run to run (this VM's memory, two cores), and
    these figures do not. They are what the kernel does in the workload's stead; what no count shows
    (caches, locks, the sessions taking the other CPU) only the wall time has."""

    seconds_without: float
    dispatch_ns: float
    floor_runs: float  # empty program runs per loop, every process's events
    probe_runs: float  # the probes' program runs per loop
    bodies_ns: float  # the probes' time inside their programs per loop, less an empty program's

    @property
    def floor_slowdown(self) -> float:
        return self.floor_runs * self.dispatch_ns / 1e9 / self.seconds_without

    @property
    def slowdown(self) -> float:
        return (self.probe_runs * self.dispatch_ns + self.bodies_ns) / 1e9 / self.seconds_without


def computed_cost(comparison: Comparison, floor: EmptyProgramFloor | None) -> ComputedCost | None:
    """None without the dispatch cost, or without the runs with the run statistics."""
    if floor is None or floor.dispatch is None:
        return None
    floor_runs, floor_ns = program_run_totals(comparison.floor_costs)
    probe_runs, probe_ns = program_run_totals(comparison.costs)
    if not floor_runs or not probe_runs:
        return None
    empty_ns_per_run = floor_ns / floor_runs  # the statistics' own clock reads, mostly
    floor_loops, probe_loops = len(comparison.floor_costs), len(comparison.costs)
    return ComputedCost(
        seconds_without=comparison.seconds_without,
        dispatch_ns=floor.dispatch.ns_per_run,
        floor_runs=floor_runs / floor_loops,
        probe_runs=probe_runs / probe_loops,
        bodies_ns=max(0.0, (probe_ns - probe_runs * empty_ns_per_run) / probe_loops),
    )


def print_computed(computed: ComputedCost | None) -> None:
    if computed is None:
        print("  computed from counts: unavailable (needs the floor, its dispatch cost and the runs with the "
              "run statistics)")  # fmt: skip
        return
    dispatch, floor_runs, probe_runs = computed.dispatch_ns, computed.floor_runs, computed.probe_runs
    print(f"  computed from counts (runs per loop x {dispatch:,.0f} ns of dispatch per run, + time inside "
          "the programs; wall time does not enter):")  # fmt: skip
    print(f"    the floor: {floor_runs:,.0f} empty program runs = {100 * computed.floor_slowdown:+.2f}%")
    bodies_ms = computed.bodies_ns / 1e6
    print(f"    all 5 probes: {probe_runs:,.0f} runs + {bodies_ms:,.1f} ms inside their programs above an "
          f"empty program's = {100 * computed.slowdown:+.2f}%")  # fmt: skip


def print_verdict(
    comparison: Comparison, floor: EmptyProgramFloor | None, computed: ComputedCost | None
) -> None:
    """PASS when the wall time is within the target, or within the noise of it; and the computed slowdown
    too, when there is one (it does not move with the machine's noise, the wall time does)."""
    target = TARGET_SLOWDOWN[comparison.workload]
    within_noise = ranges_overlap(comparison.without, comparison.with_probes)
    wall_ok = comparison.slowdown <= target or within_noise
    passed = wall_ok and (computed is None or computed.slowdown <= target)
    wall = f"wall time {100 * comparison.slowdown:+.2f}%{' (within the noise)' if within_noise else ''}"
    figures = wall if computed is None else f"{wall}, computed {100 * computed.slowdown:+.2f}%"
    line = f"  verdict: target <= {100 * target:.0f}%: {verdict(passed)} ({figures})"
    if floor is None or not comparison.floor:
        print(f"{line}; floor: unavailable")
        return
    print(
        f"{line}; the floor alone (empty programs on the same {floor.tracepoints} tracepoints) costs "
        f"{100 * comparison.floor_slowdown:+.2f}% timed, mqinspect's own work above it "
        f"{100 * comparison.above_floor:+.2f}%"
    )
    if computed is not None and computed.floor_slowdown > target:
        print(
            f"  not reachable with tracepoints on this machine: their dispatch alone computes to "
            f"{100 * computed.floor_slowdown:+.2f}% on this workload, above the target, whatever the "
            "programs do"
        )


def print_program_times(runs: list[Run]) -> None:
    """What the kernel measured of each program's runs over the timed loops (every process's events)."""
    totals: dict[str, list[int]] = {}
    for run in runs:
        for name, (count, nanoseconds) in run.program_runs.items():
            totals.setdefault(name, [0, 0])
            totals[name][0] += count
            totals[name][1] += nanoseconds
    if not any(count for count, _nanoseconds in totals.values()):
        print("  in-kernel cost per program run: unavailable (no run with the run statistics: "
              "--no-run-statistics, or they could not be turned on, or bpftool failed)")  # fmt: skip
        return
    faults = sum(run.result.page_faults for run in runs)
    busy_ns = sum(nanoseconds for _count, nanoseconds in totals.values())
    per_fault = f"{busy_ns / faults:,.0f} ns of BPF per page fault of the workload" if faults else ""
    print(f"  in-kernel cost, the kernel's run statistics over {len(runs)} more probed loop(s): "
          f"{busy_ns / 1e6:,.1f} ms of BPF in all; {per_fault}")  # fmt: skip
    busiest = sorted(totals.items(), key=lambda item: -item[1][1])
    for name, (count, nanoseconds) in busiest[:8]:
        if count:
            print(f"    {name:<18} {count:>11,} runs {nanoseconds / count:>7,.0f} ns/run")


def ranges_overlap(faster: list[Run], slower: list[Run]) -> bool:
    """Whether the difference is within the run-to-run spread: the slower side's fastest run is no slower
    than the faster side's slowest."""
    return min(run.result.seconds for run in slower) <= max(run.result.seconds for run in faster)


def overlap_note(faster: list[Run], slower: list[Run]) -> str:
    """Said after a difference that does not stand out of the spread, so it is not read as more than the
    machine's noise allows."""
    return "; the two sides' ranges overlap (within the noise)" if ranges_overlap(faster, slower) else ""


def print_events(comparison: Comparison) -> None:
    print(f"  events per run with probes (medians): {'workload process':>16} {'all processes':>14}   counted")
    for probe in PROBES:
        counters = " + ".join(WORKLOAD_EVENT_COUNTERS[probe])
        print(
            f"    {probe:<10} {comparison.median_events(probe, 'workload'):>38,.0f} "
            f"{comparison.median_events(probe, 'system'):>14,.0f}   {counters}"
        )
    events = comparison.workload_events()
    faults = statistics.median(run.result.page_faults for run in comparison.with_probes)
    ns = comparison.ns_per_event()
    per_event = f"{ns:,.0f} ns" if ns is not None else "n/a (no events)"
    print(
        f"  cost per event: ({comparison.seconds_with:.3f} - {comparison.seconds_without:.3f}) s / "
        f"{events:,.0f} events = {per_event} per event in the workload's process "
        f"(its own page faults in the timed loop, by getrusage: {faults:,.0f})"
    )


def print_per_probe(workload: str, settings: Settings, scratch: Path, baseline: Comparison) -> None:
    """Each probe alone, one run each, against the median without probes: a rough split, one run is
    within the noise of small effects."""
    print(f"\n  {workload}, each probe alone (one run each, against the median without probes):")
    for probe in PROBES:
        run = measure_once(workload, settings, scratch, probes=(probe,))
        extra_s = run.result.seconds - baseline.seconds_without
        events = run.events[probe].workload
        # a few events cannot carry a per-event figure: the run-to-run noise divided by them is all it shows
        enough = events >= MIN_EVENTS_FOR_A_COST
        per_event = f"{extra_s * 1e9 / events:>8,.0f} ns/event" if enough else "n/a (too few events)"
        slowdown = extra_s / baseline.seconds_without
        print(
            f"    {probe:<10} {run.result.seconds:7.3f} s  {100 * slowdown:+6.2f}%"
            f"  {events:>10,} events in the workload  {per_event}"
        )


def loaded_programs(belongs: Callable[[str], bool]) -> list[str]:
    """bpftool's lines for the loaded programs whose name `belongs` (is_session_program: mqinspect's, none
    of which may outlive its session; is_floor_program: this script's empty ones)."""
    try:
        listing = subprocess.run(["bpftool", "prog", "list"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as error:
        return [f"(bpftool failed: {error})"]
    lines = (line.strip() for line in listing.stdout.splitlines())
    return [line for line in lines if (name := re.search(r" name (\S+)", line)) and belongs(name[1])]


def machine_line(settings: Settings) -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        names = (line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
        model = next(names, model)
    return (
        f"Linux {platform.release()}, {os.cpu_count()} CPUs ({model}), Python {platform.python_version()}, "
        f"files under {settings.directory} ({filesystem_of(settings.directory)})"
    )


def filesystem_of(path: Path) -> str:
    """The type of the filesystem holding `path`, from /proc/mounts (longest matching mount point)."""
    best, kind = "", "unknown"
    with contextlib.suppress(OSError), open("/proc/mounts") as mounts:
        for line in mounts:
            _device, mount_point, fs_type, *_ = line.split()
            if str(path).startswith(mount_point) and len(mount_point) > len(best):
                best, kind = mount_point, fs_type
    return kind


def reproduce_command(argv: Sequence[str]) -> str:
    python = Path(sys.executable)
    shown = python.relative_to(REPO) if python.is_relative_to(REPO) else python
    return f"cd {REPO} && {shlex.join([str(shown), 'benchmarks/probe_overhead.py', *argv])}"


def print_header(settings: Settings, argv: Sequence[str]) -> None:
    print(f"probe_overhead: {machine_line(settings)}")
    print(f"reproduce: {reproduce_command(argv)}")
    print(
        f"runs: {settings.repetitions} per side and workload, after one discarded warm-up run; append "
        f"{settings.append_messages:,} messages; faults {settings.fault_passes} x "
        f"{settings.fault_pass_mib} MiB ({settings.fault_backing})"
    )
    print(f"1-minute load average before: {os.getloadavg()[0]:.2f} (other processes add noise on 2 cores)")
    sessions = len(loaded_programs(is_session_program))
    floors = len(loaded_programs(is_floor_program))
    print(
        f"mqi_* BPF programs loaded before the run (other users' sessions): {sessions}; "
        f"{FLOOR_PREFIX}*: {floors}"
    )


def print_order(floor: EmptyProgramFloor | None, repetitions: int) -> None:
    sides = (Side.NONE, Side.FLOOR, Side.PROBES) if floor is not None else (Side.NONE, Side.PROBES)
    order = [side.letter for side in balanced_order(sides, repetitions)]
    groups = " | ".join(
        " ".join(order[start : start + len(sides)]) for start in range(0, len(order), len(sides))
    )
    legend = ", ".join(f"{side.letter} {side.value}" for side in sides)
    print(f"order of the runs per workload: {groups}  ({legend})")


def print_notes() -> None:
    print(
        "\nWhat counts as an event (each probe's summary; its per-process rows give the workload's share):"
        "\n  faults: faults (page_fault_user + page_fault_kernel exceptions) + populate_faults; the totals"
        "\n    add file_faults (mm_filemap_fault) and fault_around_events (mm_filemap_map_pages). The probe"
        "\n    also runs on mm_filemap_fault and mm_filemap_add_to_page_cache, not counted per process here."
        "\n  pagecache: added + deleted folios (mm_filemap_add_to/delete_from_page_cache), not readahead"
        "\n  writeback: dirtied folios (writeback_dirty_folio); it also runs on the page-cache add/delete"
        "\n    events and on writeback/ext4 completions, not counted here."
        "\n  sendpath / syscalls: syscalls of the traced kinds (sys_enter + sys_exit of read/write/... and of"
        "\n    mmap/msync/...). Attaching any syscalls:* tracepoint makes EVERY syscall of EVERY process take"
        "\n    the kernel's traced slow path, even kinds and processes that are not counted (the sendpath"
        "\n    author measured about +0.25 us per read/write of an untraced process)."
        "\n  So ns/event = extra wall time / counted events of the workload's process: an upper bound on one"
        "\n  program run, which also carries the uncounted runs and the syscall slow path (futex, GIL)."
        "\n\nThe floor: one empty BPF program (return 0) per attachment of each probe's ProgramSpec, loaded"
        "\n  by this script and attached with bcc's attach_tracepoint as the sessions attach theirs, so each"
        "\n  tracepoint runs as many programs per event as with the five probes (the page-cache insertion"
        "\n  three). It costs what the kernel pays per event and program whatever the program does: the"
        "\n  tracepoint's perf_trace_* handler filling the event record, trace_call_bpf running the program,"
        "\n  and for syscalls:* events the traced syscall path of every process. Any tracer attached to these"
        "\n  tracepoints pays it. probes - floor is mqinspect's own work: the programs' bodies (map lookups"
        "\n  and updates, helper calls) and the five sessions' user space, which shares the 2 CPUs with the"
        "\n  workload."
        "\n  The compared runs are made without the kernel's run statistics (two clock reads per program"
        "\n  run, which a tracer in production does not pay); the ns/run figures come from one more floor"
        "\n  run and one more probed run with them on."
        "\n  Per page fault figures divide by the workload's own faults, but the programs also run for the"
        "\n  events of every other process (the writeback thread, the store's flush and dispatch threads)."
    )


def print_cleanup_check(sessions_before: int, floor_before: int) -> None:
    remaining = loaded_programs(is_session_program)
    print(f"\nBPF programs named mqi_* still loaded (bpftool prog list): {len(remaining)}", end="")
    if not remaining:
        print(" - none: every session detached")
    else:
        print(f" (before the run: {sessions_before}; every session this script started has exited, so these "
              "belong to other processes)")  # fmt: skip
    floor_left = loaded_programs(is_floor_program)
    print(f"the floor's empty programs ({FLOOR_PREFIX}*) still loaded: {len(floor_left)}", end="")
    if not floor_left:
        print(" - none: the floor was unloaded")
    else:
        print(f" (before the run: {floor_before}; this script has unloaded its own, so these are another's)")
    for line in (remaining + floor_left)[:10]:
        print(f"  {line}")


def main(argv: Sequence[str]) -> int:
    settings = parse_args(argv)
    began = time.perf_counter()
    print_header(settings, argv)
    sessions_before = len(loaded_programs(is_session_program))
    floor_before = len(loaded_programs(is_floor_program))
    if os.geteuid() != 0:
        print("not root: attaching BPF programs needs root (or CAP_BPF+CAP_PERFMON); nothing measured")
        return 0
    scratch = Path(tempfile.mkdtemp(prefix="probe-overhead-sessions-", dir=settings.directory))
    status = 0
    resources = contextlib.ExitStack()  # closed last in, first out: the floor unloaded, then the sysctl
    try:
        if not settings.run_statistics:
            print("note: no runs with the BPF run statistics (--no-run-statistics)", file=sys.stderr)
        floor = resources.enter_context(floor_or_none())
        print_order(floor, settings.repetitions)
        measure_and_report(settings, scratch, floor)
    except (RuntimeError, OSError) as error:
        print(f"\nmeasurement failed: {error}")
    except KeyboardInterrupt:
        print("\ninterrupted: stopping the sessions and unloading the floor")
        status = 130
    finally:
        resources.close()
        shutil.rmtree(scratch, ignore_errors=True)
        print_cleanup_check(sessions_before, floor_before)
    elapsed = time.perf_counter() - began
    print(f"1-minute load average after: {os.getloadavg()[0]:.2f}; {elapsed:.0f} s in all")
    return status


def measure_and_report(settings: Settings, scratch: Path, floor: EmptyProgramFloor | None) -> None:
    comparisons = []
    for workload in settings.workloads:
        print(f"\n  measuring {workload} ...", flush=True)
        comparisons.append(compare(workload, settings, scratch, floor))
    for comparison in comparisons:
        print_comparison(comparison, floor)
        if settings.per_probe:
            print_per_probe(comparison.workload, settings, scratch, comparison)
    print_notes()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        with contextlib.suppress(
            KeyboardInterrupt
        ):  # a terminal's Ctrl-C reaches the child too: no traceback
            run_child(sys.argv[2], json.loads(sys.argv[3]))
            sys.exit(0)
        sys.exit(130)
    sys.exit(main(sys.argv[1:]))
