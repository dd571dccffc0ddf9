"""The baseline the probes are measured against, beside no probes at all: the floor of any tracepoint tracer.

The floor: this process attaches one EMPTY BPF program (`return 0`, named mqi_floor_N) per tracepoint any
probe attaches to, the same way (bcc attach_tracepoint), so every tracepoint carries one program, as with the
probes' combined program (probes/ebpf/combined.py: one function per tracepoint doing every probe's work).
Whatever a program does, the kernel pays per run for the tracepoint's dispatch (perf_trace_* filling the event
record, trace_call_bpf running the program; for syscalls:* events the traced syscall path of every process):
the floor is what any tracepoint-based tracer of these events costs. The floor's programs are compiled and
loaded once per benchmark run, attached just before each floor run's timed loop and detached after it.

The counting floor (`counting`, used for the run statistics only): the same programs, each counting its run
under the running process in one hash map (one lookup_or_try_init and one atomic add: the least a tracer that
breaks events down per process does per event). Its ns per run above an empty program's is what one map
operation costs inside these workloads' events (their caches cold from the workload's own memory traffic),
which bounds what a target on the probes' programs' time can ask (report.print_floor_ratio).

The dispatch: what one empty program run costs, measured on its own (task:task_rename fired by
prctl(PR_SET_NAME), rounds with and without one program), so that runs counted can be turned into time.
"""

from __future__ import annotations

import contextlib
import ctypes
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from benchmarks.overhead.run_statistics import program_times
from probes.ebpf.loader import FUNCTION_PREFIX, TRACEFS
from probes.ebpf.registry import PROBES
from probes.ebpf.tracepoints import tracepoint_format_path

# The floor's programs: named apart from the probes' (mqi_...), and short (the kernel keeps 15 characters).
FLOOR_PREFIX = f"{FUNCTION_PREFIX}floor_"
COUNTING_PREFIX = f"{FLOOR_PREFIX}c"  # the counting floor's
# Closing a tracepoint's last perf event waits for RCU grace periods (measured here: about 90 ms per
# tracepoint, 6 s for the floor's 89 one after another); closed from threads, the waits overlap.
FLOOR_DETACH_THREADS = 8


def is_floor_program(name: str) -> bool:
    return name.startswith(FLOOR_PREFIX)


def is_session_program(name: str) -> bool:
    """mqinspect's own programs: all named mqi_*, the floor's excepted."""
    return name.startswith(FUNCTION_PREFIX) and not is_floor_program(name)


class FloorUnavailable(Exception):
    """Why the floor cannot be measured on this machine, in one line."""


@dataclass(frozen=True)
class FloorProgram:
    probe: str  # the probes attached to the tracepoint, comma-separated
    tracepoint: str
    function: str  # FLOOR_PREFIX + a number


class EmptyProgramFloor:
    """One empty BPF program per tracepoint of the probes, in this process: compiled and loaded once,
    attached around each floor run's timed loop."""

    def __init__(self, objects: list[tuple[Any, list[FloorProgram]]], skipped: list[str]):
        self._objects = objects
        self.skipped = skipped  # "probe tracepoint" this kernel lacks
        self.program_ids: frozenset[int] = frozenset()  # the kernel's ids of these programs, for bpftool
        self.dispatch: DispatchCost | None = None  # what one empty program run costs; None if not measured
        self.counting: EmptyProgramFloor | None = None  # the counting floor, where it could be built

    @property
    def programs(self) -> list[FloorProgram]:
        return [program for _bpf, programs in self._objects for program in programs]

    @property
    def tracepoints(self) -> int:
        return len({program.tracepoint for program in self.programs})

    def describe(self) -> str:
        absent = f"; absent on this kernel, skipped: {', '.join(self.skipped)}" if self.skipped else ""
        return (
            f"{len(self.programs)} empty programs ({FLOOR_PREFIX}*) on the {len(PROBES)} probes' "
            f"{self.tracepoints} tracepoints, one per tracepoint{absent}"
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
        """Detach what is still attached and unload every program (the counting floor's too); idempotent."""
        if self.counting is not None:
            self.counting.close()
        objects, self._objects = self._objects, []
        for bpf, _programs in objects:
            bpf.cleanup()


def build_floor(counting: bool = False) -> EmptyProgramFloor:
    """Compile and load the floor's programs (`counting`: the counting floor's); FloorUnavailable (or bcc's
    exception) when that fails."""
    try:
        import bcc
    except Exception as error:  # ImportError, or OSError when libbcc itself is missing
        raise FloorUnavailable(f"bcc cannot be imported: {type(error).__name__}: {error}") from None
    if not (TRACEFS / "events").is_dir():
        raise FloorUnavailable(f"tracefs is not mounted at {TRACEFS}")
    groups, skipped = floor_layout(COUNTING_PREFIX if counting else FLOOR_PREFIX)
    ids_before = set(program_times(is_floor_program))
    floor = EmptyProgramFloor([], skipped)
    functions = counting_functions if counting else empty_functions
    try:
        for programs in groups:  # clang's diagnostics, if any, go to stderr
            floor.add(bcc.BPF(text=functions(programs).encode()), programs)
        floor.program_ids = frozenset(program_times(is_floor_program)) - ids_before
    except BaseException:
        floor.close()
        raise
    return floor


def floor_layout(prefix: str = FLOOR_PREFIX) -> tuple[list[list[FloorProgram]], list[str]]:
    """The floor's programs: one per tracepoint any registered probe attaches to (its class's `program`), in
    one BPF object, as the probes' combined program has one function per tracepoint
    (probes/ebpf/combined.py). A program's `probe` names the probes attached there."""
    probes_at: dict[str, list[str]] = {}
    for entry in PROBES:
        for attachment in entry.probe_class().program.attachments:
            probes_at.setdefault(attachment.tracepoint, []).append(entry.name)
    programs: list[FloorProgram] = []
    skipped: list[str] = []
    for number, (tracepoint, probes) in enumerate(probes_at.items()):
        if not tracepoint_format_path(TRACEFS, tracepoint).exists():
            skipped.append(f"{tracepoint} ({', '.join(probes)})")
            continue
        programs.append(FloorProgram(",".join(probes), tracepoint, f"{prefix}{number}"))
    return [programs], skipped


def empty_functions(programs: Sequence[FloorProgram]) -> str:
    """C text with one empty function per program; the names are ours (FLOOR_PREFIX + a number)."""
    return "".join(f"int {program.function}(void *ctx) {{ return 0; }}\n" for program in programs)


# The counting floor's map and body: the running process's counter, made on its first event.
COUNTING_MAP = "BPF_HASH(mqi_floor_counts, u32, u64, 16384);\n"
COUNTING_BODY = (
    "{ u32 tgid = bpf_get_current_pid_tgid() >> 32; u64 zero = 0; "
    "u64 *runs = mqi_floor_counts.lookup_or_try_init(&tgid, &zero); "
    "if (runs) __sync_fetch_and_add(runs, 1); return 0; }"
)


def counting_functions(programs: Sequence[FloorProgram]) -> str:
    """C text with one counting function per program (COUNTING_BODY), sharing one map."""
    functions = (f"int {program.function}(void *ctx) {COUNTING_BODY}\n" for program in programs)
    return COUNTING_MAP + "".join(functions)


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
        floor.counting = counting_floor_or_none()
        floor.dispatch = measured_dispatch()
        yield floor
    finally:
        floor.close()


def counting_floor_or_none() -> EmptyProgramFloor | None:
    """The counting floor; None, said on stdout, when it cannot be built."""
    try:
        counting = build_floor(counting=True)
    except Exception as error:  # bcc raises plain Exceptions
        print(f"counting floor: unavailable ({type(error).__name__}: {error})")
        return None
    print(f"counting floor: the same {len(counting.programs)} programs, each adding 1 to the running "
          "process's counter in one hash map, for the run statistics only")  # fmt: skip
    return counting


# ---- the dispatch: what the kernel pays per program run, whatever the program does ------------------------

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
