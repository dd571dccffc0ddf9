"""What attaching mqinspect's eBPF probes costs a workload: the store append benchmark and a page-fault-heavy
loop, each timed with no probes and with all five probes attached system-wide, in the same run.

Targets (issue): at most 3% slowdown on the append benchmark, at most 10% on the page-fault-heavy workload;
also the measured cost per event, in ns.

- append: a child process starts a MessageStore (ASYNC flush, POPULATE warm-up, 256 MiB CommitLog segments,
  dispatcher and index running) in a temporary directory on the real disk, then times N puts of 1 KiB
  messages through the batch API (put_messages, 256 per batch). Segment rolls, with the next segment
  preallocated and warmed in the background, happen inside the timed loop as they do in the broker.
- faults: a child maps fresh sparse files on the real disk (MAP_SHARED) and writes one byte per page, one new
  mapping per pass: every page is a write fault that adds a page-cache folio and dirties it.

Each workload runs K times without and K times with the probes, in ABBA order (so a linear drift of the
machine lands on both sides equally); the medians are compared. With probes, five `mqinspect trace <probe>
--interval 1 --format jsonl` sessions are started and the workload is released only once every session has
printed its startup line (the programs are attached then); afterwards the sessions get SIGINT and their
summary lines give the event counts.

    .venv/bin/python benchmarks/probe_overhead.py               # about 2.5 minutes on 2 cores
    .venv/bin/python benchmarks/probe_overhead.py --quick       # about 1 minute
    .venv/bin/python benchmarks/probe_overhead.py --per-probe   # plus each probe alone (about +1.5 min)

Needs root (or CAP_BPF+CAP_PERFMON). Always exits 0: it measures, it does not assert.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import itertools
import json
import mmap
import os
import platform
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
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MQINSPECT = REPO / ".venv" / "bin" / "mqinspect"
PROBES = ("faults", "pagecache", "writeback", "sendpath", "syscalls")
TARGET_SLOWDOWN = {"append": 0.03, "append-cold": 0.10, "faults": 0.10}
PAGE_SIZE = mmap.PAGESIZE
MiB = 1 << 20

SESSION_START_TIMEOUT_S = 90.0  # five bcc compilations share two cores
SESSION_STOP_TIMEOUT_S = 20.0  # the summary of a system-wide faults session walks every file it saw
CHILD_TIMEOUT_S = 300.0
MIN_EVENTS_FOR_A_COST = 1000


# ---- settings ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    repetitions: int
    append_messages: int
    fault_pass_mib: int
    fault_backing: str  # "file" (ext4, MADV_RANDOM) or "shmem" (anonymous MAP_SHARED)
    fault_passes: int
    per_probe: bool
    directory: Path
    workloads: tuple[str, ...]

    def child_parameters(self, workload: str) -> dict:
        if workload.startswith("append"):
            warmup = "none" if workload == "append-cold" else "populate"
            return {"dir": str(self.directory), "messages": self.append_messages, "warmup": warmup}
        return {
            "dir": str(self.directory),
            "pass_mib": self.fault_pass_mib,
            "passes": self.fault_passes,
            "backing": self.fault_backing,
        }


def parse_args(argv: Sequence[str]) -> Settings:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 repetitions, smaller workloads (about 1 min)")
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
        wait_for_word("go")
        faults_before = page_faults_so_far()
        started = time.perf_counter()
        units = timed_loop(state)
        seconds = time.perf_counter() - started
        reply({"seconds": seconds, "units": units, "page_faults": page_faults_so_far() - faults_before})
        wait_for_word("exit")


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


# ---- the programs' own run time ----------------------------------------------------------------------------

BPF_STATS_SYSCTL = Path("/proc/sys/kernel/bpf_stats_enabled")


@contextlib.contextmanager
def bpf_run_statistics() -> Iterator[bool]:
    """kernel.bpf_stats_enabled on while measuring: the kernel then times every program run (run_time_ns,
    run_cnt in bpftool), the in-kernel cost per event without the noise of wall time. It adds two clock
    reads per run to the probed side, and is a system setting: said on stderr, restored afterwards."""
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


ProgramTimes = dict[int, tuple[str, int, int]]  # program id -> (name, run_cnt, run_time_ns)


def mqi_program_times() -> ProgramTimes:
    try:
        listing = subprocess.run(["bpftool", "prog", "show", "--json"], capture_output=True, timeout=30)
        programs = json.loads(listing.stdout or b"[]")
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return {}
    return {
        program["id"]: (program["name"], program.get("run_cnt", 0), program.get("run_time_ns", 0))
        for program in programs
        if program.get("name", "").startswith("mqi_")
    }


def runs_between(before: ProgramTimes, after: ProgramTimes, ours: set[int]) -> dict[str, tuple[int, int]]:
    """Runs and nanoseconds per program name of `ours` (the sessions' programs) between two readings."""
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
    events: dict[str, ProbeEvents] = field(default_factory=dict)  # probe -> events; empty without probes
    sessions_cpu_s: float = 0.0  # CPU the trace sessions used in user space and syscalls while it ran
    program_runs: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (runs, ns) in the loop


def measure_once(workload: str, settings: Settings, probes: Sequence[str], scratch: Path) -> Run:
    child = Workload(workload, settings.child_parameters(workload))
    try:
        if not probes:
            return Run(child.run())
        loaded_before = set(mqi_program_times())
        with probes_attached(probes, scratch) as sessions:
            cpu_before = sum(session.cpu_seconds() for session in sessions)
            times_before = mqi_program_times()
            result = child.run()
            times_after = mqi_program_times()
            sessions_cpu_s = sum(session.cpu_seconds() for session in sessions) - cpu_before
        ours = set(times_before) - loaded_before  # loaded by these sessions (others may run their own)
        events = {session.probe: session.events(child.pid) for session in sessions}
        return Run(result, events, sessions_cpu_s, runs_between(times_before, times_after, ours))
    finally:
        child.finish()


def abba_sides(repetitions: int) -> Iterator[bool]:
    """True = with probes. ABBA ABBA ...: each side sits as often early as late in every group of four."""
    for number in range(2 * repetitions):
        yield number % 4 in (1, 2)


@dataclass(frozen=True)
class Comparison:
    workload: str
    fault_backing: str
    without: list[Run]
    with_probes: list[Run]

    @property
    def seconds_without(self) -> float:
        return statistics.median(run.result.seconds for run in self.without)

    @property
    def seconds_with(self) -> float:
        return statistics.median(run.result.seconds for run in self.with_probes)

    @property
    def slowdown(self) -> float:
        return self.seconds_with / self.seconds_without - 1

    @property
    def paired_slowdown(self) -> float:
        """The median over the adjacent (A, B) pairs of the ABBA order: a load that comes and goes between
        pairs (other processes on two cores) moves both runs of a pair, and drops out of their ratio."""
        ratios = [
            probed.result.seconds / plain.result.seconds
            for plain, probed in zip(self.without, self.with_probes, strict=True)
        ]
        return statistics.median(ratios) - 1

    def median_events(self, probe: str, where: str) -> float:
        return statistics.median(getattr(run.events[probe], where) for run in self.with_probes)

    def workload_events(self) -> float:
        return sum(self.median_events(probe, "workload") for probe in self.with_probes[0].events)

    def ns_per_event(self) -> float | None:
        events = self.workload_events()
        return (self.seconds_with - self.seconds_without) * 1e9 / events if events else None


def compare(workload: str, settings: Settings, scratch: Path) -> Comparison:
    measure_once(workload, settings, (), scratch)  # discarded: page cache, imports and disk warm
    without: list[Run] = []
    with_probes: list[Run] = []
    for attached in abba_sides(settings.repetitions):
        run = measure_once(workload, settings, PROBES if attached else (), scratch)
        (with_probes if attached else without).append(run)
        side = "with probes" if attached else "no probes  "
        print(f"    {workload:<7} {side} {run.result.seconds:7.3f} s  {run.result.rate:>12,.0f} "
              f"{WORKLOAD_UNITS[workload]}", flush=True)  # fmt: skip
    return Comparison(workload, settings.fault_backing, without, with_probes)


# ---- report -----------------------------------------------------------------------------------------------


def verdict(passed: bool) -> str:
    return "PASS" if passed else "MISS"


def spread(runs: list[Run]) -> str:
    seconds = [run.result.seconds for run in runs]
    return f"{min(seconds):.3f}-{max(seconds):.3f}"


def print_comparison(comparison: Comparison) -> None:
    workload = comparison.workload
    unit = WORKLOAD_UNITS[workload]
    base = comparison.without
    probed = comparison.with_probes
    rate_without = statistics.median(run.result.rate for run in base)
    rate_with = statistics.median(run.result.rate for run in probed)
    target = TARGET_SLOWDOWN[workload]
    title = WORKLOAD_TITLES[workload].format(backing=comparison.fault_backing)
    print(f"\n{title}: {base[0].result.units:,} {unit.split('/')[0]} per run, {len(base)} runs per side")
    print(f"  {'':<14} {'median s':>9} {'min-max s':>13} {unit:>14}")
    print(f"  {'no probes':<14} {comparison.seconds_without:>9.3f} {spread(base):>13} {rate_without:>14,.0f}")
    print(f"  {'all 5 probes':<14} {comparison.seconds_with:>9.3f} {spread(probed):>13} {rate_with:>14,.0f}")
    print(
        f"  ratio with/without (time) {comparison.seconds_with / comparison.seconds_without:.4f}: "
        f"slowdown {100 * comparison.slowdown:+.2f}%  -> {verdict(comparison.slowdown <= target)} "
        f"(target <= {100 * target:.0f}%){overlap_note(comparison)}"
    )
    paired = comparison.paired_slowdown
    print(f"  paired slowdown (median over the {len(base)} adjacent ABBA pairs): {100 * paired:+.2f}%")
    print_events(comparison)
    sessions_cpu_s = statistics.median(run.sessions_cpu_s for run in probed)
    print(
        f"  the five sessions' own CPU while the workload ran (user space + syscalls, not BPF): "
        f"{sessions_cpu_s:.2f} s = {100 * sessions_cpu_s / comparison.seconds_with:.0f}% of one CPU"
    )
    print_program_times(probed)


def print_program_times(runs: list[Run]) -> None:
    """What the kernel measured of each program's runs over the timed loops (every process's events)."""
    totals: dict[str, list[int]] = {}
    for run in runs:
        for name, (count, nanoseconds) in run.program_runs.items():
            totals.setdefault(name, [0, 0])
            totals[name][0] += count
            totals[name][1] += nanoseconds
    if not totals:
        print("  in-kernel cost per program run: unavailable (kernel.bpf_stats_enabled could not be set)")
        return
    faults = sum(run.result.page_faults for run in runs)
    busy_ns = sum(nanoseconds for _count, nanoseconds in totals.values())
    per_fault = f"{busy_ns / faults:,.0f} ns of BPF per page fault of the workload" if faults else ""
    print(f"  in-kernel cost, kernel.bpf_stats_enabled over the {len(runs)} probed loops: "
          f"{busy_ns / 1e6:,.1f} ms of BPF in all; {per_fault}")  # fmt: skip
    busiest = sorted(totals.items(), key=lambda item: -item[1][1])
    for name, (count, nanoseconds) in busiest[:8]:
        if count:
            print(f"    {name:<18} {count:>11,} runs {nanoseconds / count:>7,.0f} ns/run")


def overlap_note(comparison: Comparison) -> str:
    """Whether the difference stands out of the run-to-run spread, so a PASS or a MISS is not read as more
    than the machine's noise allows."""
    fastest_with = min(run.result.seconds for run in comparison.with_probes)
    slowest_without = max(run.result.seconds for run in comparison.without)
    return "" if fastest_with > slowest_without else "; the two sides' ranges overlap (within the noise)"


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
        run = measure_once(workload, settings, (probe,), scratch)
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


def loaded_mqi_programs() -> list[str]:
    """bpftool's lines for programs named mqi_* (all of mqinspect's are): none may outlive a session."""
    try:
        listing = subprocess.run(["bpftool", "prog", "list"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as error:
        return [f"(bpftool failed: {error})"]
    return [line.strip() for line in listing.stdout.splitlines() if " name mqi_" in line]


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
        f"runs: {settings.repetitions} without and {settings.repetitions} with all probes per workload, ABBA "
        f"order, after one discarded warm-up run; append {settings.append_messages:,} messages; faults "
        f"{settings.fault_passes} x {settings.fault_pass_mib} MiB ({settings.fault_backing})"
    )
    print(f"1-minute load average before: {os.getloadavg()[0]:.2f} (other processes add noise on 2 cores)")
    print(f"mqi_* BPF programs loaded before the run (other users' sessions): {len(loaded_mqi_programs())}")


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
    )


def print_cleanup_check(before: int) -> None:
    remaining = loaded_mqi_programs()
    print(f"\nBPF programs named mqi_* still loaded (bpftool prog list): {len(remaining)}", end="")
    if not remaining:
        print(" - none: every session detached")
        return
    print(f" (before the run: {before}; every session this script started has exited, so these belong to "
          "other processes)")  # fmt: skip
    for line in remaining[:10]:
        print(f"  {line}")


def main(argv: Sequence[str]) -> int:
    settings = parse_args(argv)
    began = time.perf_counter()
    print_header(settings, argv)
    programs_before = len(loaded_mqi_programs())
    if os.geteuid() != 0:
        print("not root: attaching BPF programs needs root (or CAP_BPF+CAP_PERFMON); nothing measured")
        return 0
    scratch = Path(tempfile.mkdtemp(prefix="probe-overhead-sessions-", dir=settings.directory))
    statistics_on = contextlib.ExitStack()
    try:
        statistics_on.enter_context(bpf_run_statistics())
        comparisons = []
        for workload in settings.workloads:
            print(f"\n  measuring {workload} ...", flush=True)
            comparisons.append(compare(workload, settings, scratch))
        for comparison in comparisons:
            print_comparison(comparison)
            if settings.per_probe:
                print_per_probe(comparison.workload, settings, scratch, comparison)
        print_notes()
    except (RuntimeError, OSError) as error:
        print(f"\nmeasurement failed: {error}")
    finally:
        statistics_on.close()
        shutil.rmtree(scratch, ignore_errors=True)
        print_cleanup_check(programs_before)
    elapsed = time.perf_counter() - began
    print(f"1-minute load average after: {os.getloadavg()[0]:.2f}; {elapsed:.0f} s in all")
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        run_child(sys.argv[2], json.loads(sys.argv[3]))
        sys.exit(0)
    sys.exit(main(sys.argv[1:]))
