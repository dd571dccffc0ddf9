"""One measured run of a workload (bare, with the floor, or with every probe's session), the balanced order of
the sides, and what their runs compare to: the slowdowns timed, and computed from counts.
"""

from __future__ import annotations

import dataclasses
import functools
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from benchmarks.overhead.baseline import EmptyProgramFloor, is_floor_program, is_session_program
from benchmarks.overhead.loop_profile import KERNEL_PARTS, ZEROING, LoopProfile, thread_profiler
from benchmarks.overhead.run_statistics import bpf_run_statistics, program_times, runs_between
from benchmarks.overhead.sessions import (
    PROBE_NAMES,
    SESSION_DRAIN_TIMEOUT_S,
    ProbeEvents,
    TraceProcess,
    probes_attached,
)
from benchmarks.overhead.settings import Settings
from benchmarks.overhead.workloads import (
    TARGET_FLOOR_RATIO,
    WORKLOAD_UNITS,
    Workload,
    WorkloadResult,
    child_parameters,
)


@dataclass(frozen=True)
class Run:
    result: WorkloadResult
    events: dict[str, ProbeEvents] = field(default_factory=dict)  # probe -> events; only with probes
    sessions_cpu_s: float = 0.0  # CPU the trace sessions used in user space and syscalls while it ran
    # name -> (runs, ns) in the timed loop: the sessions' programs with probes, the empty ones with the floor
    program_runs: dict[str, tuple[int, int]] = field(default_factory=dict)
    profile: LoopProfile | None = None  # perf samples of the loop thread over the timed loop


def measure_once(
    workload: str,
    settings: Settings,
    scratch: Path,
    probes: Sequence[str] = (),
    floor: EmptyProgramFloor | None = None,
) -> Run:
    """One timed loop of a fresh child: with the `probes`' sessions, or with the `floor`, or bare; with the
    loop thread's perf samples when the settings ask for them."""
    child = Workload(workload, child_parameters(workload, settings))
    try:
        with thread_profiler(child.pid, settings.profile) as profiler:
            child.profiler = profiler
            if probes:
                run = run_with_sessions(child, probes, scratch)
            elif floor is not None:
                run = run_with_floor(child, floor)
            else:
                child.prepare()
                run = Run(child.run())
            return run if profiler is None else dataclasses.replace(run, profile=profiler.profile())
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
    events = {probe: counted for session in sessions for probe, counted in session.events(child.pid).items()}
    return Run(result, events, sessions_cpu_s, runs_between(times_before, times_after, ours))


def wait_for_a_drain(sessions: Sequence[TraceProcess]) -> None:
    """Until every session has drained its maps once more: the sessions trace every process, so the
    per-page records of the memory backing (back_guest_memory) would otherwise fill their maps at the start
    of the timed loop (a full map fails its inserts: cheaper or dearer than normal, not what is measured)."""
    written = [session.intervals_written() for session in sessions]
    deadline = time.monotonic() + SESSION_DRAIN_TIMEOUT_S
    while any(
        session.intervals_written() <= before for session, before in zip(sessions, written, strict=True)
    ):
        if time.monotonic() > deadline:
            said = "; ".join(session.stderr_tail() for session in sessions)
            raise RuntimeError(
                f"trace sessions printed no interval within {SESSION_DRAIN_TIMEOUT_S:.0f} s: {said}"
            )
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
    PROBES = f"all {len(PROBE_NAMES)} probes"

    @property
    def letter(self) -> str:
        return {"NONE": "N", "FLOOR": "F", "PROBES": "P"}[self.name]


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
    counting_costs: list[Run] = field(default_factory=list)  # the counting floor, with the run statistics

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
            probes=PROBE_NAMES if side is Side.PROBES else (),
            floor=floor if side is Side.FLOOR else None,
        )
        runs[side].append(run)
        print_run(workload, side.value, run)
    with_statistics = (
        runs_with_statistics(workload, settings, scratch, floor) if settings.run_statistics else ([], [], [])
    )
    sides = (runs[Side.NONE], runs[Side.PROBES], runs[Side.FLOOR])
    return Comparison(workload, settings.fault_backing, *sides, *with_statistics)


def print_run(workload: str, side: str, run: Run) -> None:
    print(f"    {workload:<11} {side:<12} {run.result.seconds:7.3f} s  {run.result.rate:>12,.0f} "
          f"{WORKLOAD_UNITS[workload]}\n      {loop_clocks_text(run)}", flush=True)  # fmt: skip


def loop_clocks_text(run: Run) -> str:
    """The loop thread's time, as its clocks split it (workloads.LoopClocks), and its CPU by part of the
    kernel (perf samples)."""
    result, clocks = run.result, run.result.loop
    if clocks is None:
        return "loop thread: unavailable"
    blocked = clocks.blocked_s(result.seconds)
    waited = "unavailable" if clocks.run_queue_s is None else f"{clocks.run_queue_s:.3f}"
    off_cpu = "unavailable" if blocked is None else f"{blocked:.3f}"
    text = (
        f"loop thread: user {clocks.user_s:.3f} + system {clocks.system_s:.3f} s, run queue {waited} s, "
        f"blocked {off_cpu} s; other threads' CPU {clocks.other_threads_cpu_s:.3f} s; clock started "
        f"{result.waited_after_backing_s:.2f} s after the memory backing"
    )
    if run.profile is not None:
        parts = (f"{part} {profiled_s(run, part) or 0.0:.3f} s" for part, _ in KERNEL_PARTS)
        text += f"\n      of its CPU ({run.profile.total:,} perf samples): {', '.join(parts)}"
    return text


def runs_with_statistics(
    workload: str, settings: Settings, scratch: Path, floor: EmptyProgramFloor | None
) -> tuple[list[Run], list[Run], list[Run]]:
    """One probed run and one floor run with the kernel timing every program run: the in-kernel cost per
    program; for a workload with a target on the probes' ratio to the floor, one counting floor run too (what
    one map operation per run costs: baseline.py). Their wall times carry the statistics' clock reads, so they
    stay out of the comparison."""
    with bpf_run_statistics() as on:
        if not on:
            return [], [], []
        probed = measure_once(workload, settings, scratch, probes=PROBE_NAMES)
        print_run(workload, "probes+stats", probed)
        if floor is None:
            return [probed], [], []
        floored = measure_once(workload, settings, scratch, floor=floor)
        print_run(workload, "floor+stats", floored)
        if floor.counting is None or workload not in TARGET_FLOOR_RATIO:
            return [probed], [floored], []
        counted = measure_once(workload, settings, scratch, floor=floor.counting)
        print_run(workload, "counting+stats", counted)
        return [probed], [floored], [counted]


# ---- where the wall time went ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TimeSplit:
    """A side's medians of the loop thread's clocks (workloads.LoopClocks) and of its CPU by part of the
    kernel (the perf samples: loop_profile.py), each over the side's runs; None for what a run could not
    measure."""

    wall_s: float
    user_s: float | None
    system_s: float | None
    run_queue_s: float | None
    blocked_s: float | None
    other_threads_cpu_s: float | None
    kernel: dict[str, float | None]  # KERNEL_PARTS' names -> seconds of the loop thread's CPU
    cpu_less_zeroing_s: float | None  # the loop thread's CPU but the part zeroing new pages

    @classmethod
    def of(cls, runs: Sequence[Run]) -> TimeSplit:
        def median(part: Callable[[Run], float | None]) -> float | None:
            values = [part(run) for run in runs]
            return None if any(value is None for value in values) else statistics.median(values)

        def clock(name: str) -> Callable[[Run], float | None]:
            return lambda run: None if run.result.loop is None else getattr(run.result.loop, name)

        return cls(
            wall_s=statistics.median(run.result.seconds for run in runs),
            user_s=median(clock("user_s")),
            system_s=median(clock("system_s")),
            run_queue_s=median(clock("run_queue_s")),
            blocked_s=median(lambda run: blocked_s(run.result)),
            other_threads_cpu_s=median(clock("other_threads_cpu_s")),
            kernel={part: median(functools.partial(profiled_s, part=part)) for part, _ in KERNEL_PARTS},
            cpu_less_zeroing_s=median(cpu_less_zeroing_s),
        )

    def parts(self) -> dict[str, float | None]:
        """The loop thread's wall time by where it went."""
        return {
            "system": self.system_s,
            "run queue": self.run_queue_s,
            "blocked": self.blocked_s,
            "user": self.user_s,
        }

    def minus(self, other: TimeSplit) -> tuple[dict[str, float | None], dict[str, float | None]]:
        """Each part's difference to `other`'s, the clocks' and the kernel's (medians' differences: they need
        not add up to the wall's)."""
        return _differences(self.parts(), other.parts()), _differences(self.kernel, other.kernel)


def _differences(mine: dict[str, float | None], theirs: dict[str, float | None]) -> dict[str, float | None]:
    return {
        name: None if value is None or theirs[name] is None else value - theirs[name]
        for name, value in mine.items()
    }


def blocked_s(result: WorkloadResult) -> float | None:
    return None if result.loop is None else result.loop.blocked_s(result.seconds)


def cpu_less_zeroing_s(run: Run) -> float | None:
    """The loop thread's CPU time less what it spent zeroing new pages: the same bytes on every side, at a
    rate this VM changes from run to run (loop_profile.py)."""
    zeroing = profiled_s(run, ZEROING)
    if zeroing is None or run.result.loop is None:
        return None
    return run.result.loop.user_s + run.result.loop.system_s - zeroing


def profiled_s(run: Run, part: str) -> float | None:
    """The loop thread's CPU seconds in `part` of the kernel: its share of the samples times the CPU time."""
    loop = run.result.loop
    if run.profile is None or loop is None:
        return None
    return run.profile.seconds(part, loop.user_s + loop.system_s)


# ---- computed from counts, and within the noise ----------------------------------------------------------


def program_run_totals(runs: list[Run]) -> tuple[int, int]:
    """Program runs and nanoseconds inside the programs, summed over `runs` and their programs."""
    per_program = [counted for run in runs for counted in run.program_runs.values()]
    return sum(count for count, _ns in per_program), sum(ns for _count, ns in per_program)


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
    counting_ns: float | None = None  # a counting floor program's ns per run above an empty one's

    @property
    def bodies_ns_per_run(self) -> float:
        return self.bodies_ns / self.probe_runs if self.probe_runs else 0.0

    @property
    def counting_ratio(self) -> float | None:
        """The ratio to the floor of programs that each made one map operation per run (the counting floor's),
        on the same runs: the least a tracer that counts each event under its process computes to."""
        if self.counting_ns is None:
            return None
        return (self.dispatch_ns + self.counting_ns) / self.dispatch_ns

    @property
    def floor_slowdown(self) -> float:
        return self.floor_runs * self.dispatch_ns / 1e9 / self.seconds_without

    @property
    def slowdown(self) -> float:
        return (self.probe_runs * self.dispatch_ns + self.bodies_ns) / 1e9 / self.seconds_without

    @property
    def floor_on_the_probes_events(self) -> float:
        """The floor's slowdown over the events of the probes' own loop: one empty program per tracepoint
        runs exactly as often as the combined program's one function per tracepoint, so this is the floor
        without the other processes' events, which differ between the two loops on a shared machine."""
        return self.probe_runs * self.dispatch_ns / 1e9 / self.seconds_without


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
    counting_runs, counting_ns = program_run_totals(comparison.counting_costs)
    return ComputedCost(
        seconds_without=comparison.seconds_without,
        dispatch_ns=floor.dispatch.ns_per_run,
        floor_runs=floor_runs / floor_loops,
        probe_runs=probe_runs / probe_loops,
        bodies_ns=max(0.0, (probe_ns - probe_runs * empty_ns_per_run) / probe_loops),
        counting_ns=max(0.0, counting_ns / counting_runs - empty_ns_per_run) if counting_runs else None,
    )


def ranges_overlap(faster: list[Run], slower: list[Run]) -> bool:
    """Whether the difference is within the run-to-run spread: the slower side's fastest run is no slower
    than the faster side's slowest."""
    return min(run.result.seconds for run in slower) <= max(run.result.seconds for run in faster)
