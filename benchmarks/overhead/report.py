"""What probe_overhead.py prints: the run's header, each workload's comparison and verdict, the notes on what
the figures mean, and the check that nothing it loaded is left behind.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from benchmarks.overhead.baseline import (
    FLOOR_PREFIX,
    EmptyProgramFloor,
    is_floor_program,
    is_session_program,
)
from benchmarks.overhead.comparison import (
    Comparison,
    ComputedCost,
    Run,
    Side,
    TimeSplit,
    balanced_order,
    computed_cost,
    measure_once,
    median_seconds,
    profiled_s,
    program_run_totals,
    ranges_overlap,
)
from benchmarks.overhead.loop_profile import KERNEL_PARTS, ZEROING
from benchmarks.overhead.sessions import PROBE_NAMES
from benchmarks.overhead.settings import Settings
from benchmarks.overhead.workloads import (
    REPO,
    TARGET_FLOOR_RATIO,
    TARGET_SLOWDOWN,
    WORKLOAD_TITLES,
    WORKLOAD_UNITS,
)
from probes.ebpf.registry import probe_entry
from probes.ebpf.scope import filesystem_type

MIN_EVENTS_FOR_A_COST = 1000


def verdict(passed: bool) -> str:
    return "PASS" if passed else "MISS"


def spread(runs: list[Run]) -> str:
    seconds = [run.result.seconds for run in runs]
    return f"{min(seconds):.3f}-{max(seconds):.3f}"


def print_comparison(comparison: Comparison, floor: EmptyProgramFloor | None) -> None:
    print_sides(comparison)
    print_time_split(comparison)
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
        f"  the combined session's own CPU ({len(PROBE_NAMES)} probes) while the workload ran (user space + "
        f"syscalls, not BPF): {sessions_cpu_s:.2f} s = "
        f"{100 * sessions_cpu_s / comparison.seconds_with:.0f}% of one CPU"
    )
    print_program_times(comparison.costs)
    computed = computed_cost(comparison, floor)
    print_computed(computed)
    print_floor_ratio(comparison.workload, computed)
    print_verdict(comparison, floor, computed)


def print_sides(comparison: Comparison) -> None:
    unit = WORKLOAD_UNITS[comparison.workload]
    base = comparison.without
    title = WORKLOAD_TITLES[comparison.workload].format(backing=comparison.fault_backing)
    print(f"\n{title}: {base[0].result.units:,} {unit.split('/')[0]} per run, {len(base)} runs per side")
    print(f"  {'':<22} {'median s':>9} {'min-max s':>13} {unit:>14}")
    for label, runs in side_runs(comparison):
        rate = statistics.median(run.result.rate for run in runs)
        print(f"  {label:<22} {median_seconds(runs):>9.3f} {spread(runs):>13} {rate:>14,.0f}")


def seconds_or_unavailable(seconds: float | None, width: int = 0) -> str:
    return f"{'unavailable' if seconds is None else f'{seconds:.3f}':>{width}}"


def print_time_split(comparison: Comparison) -> None:
    """Where each side's loop thread spent its wall time (the medians of its clocks and of its CPU by part of
    the kernel), and how far those moved between the runs without probes: the noise the probed side's
    figures sit in."""
    kernel_parts = [part for part, _ in KERNEL_PARTS]
    print(f"  where the loop thread's time went (medians, s): {'wall':>6} {'user':>6} {'system':>6} "
          f"{'run queue':>9} {'blocked':>7}  other threads' CPU")  # fmt: skip
    print(f"    {'of its CPU (perf samples):':<44} {' | '.join(kernel_parts)}")
    for label, runs in side_runs(comparison):
        split = TimeSplit.of(runs)
        print(
            f"    {label:<44} {split.wall_s:>6.3f} {seconds_or_unavailable(split.user_s, 6)} "
            f"{seconds_or_unavailable(split.system_s, 6)} {seconds_or_unavailable(split.run_queue_s, 9)} "
            f"{seconds_or_unavailable(split.blocked_s, 7)}  "
            f"{seconds_or_unavailable(split.other_threads_cpu_s)}"
        )
        kernel = " | ".join(seconds_or_unavailable(split.kernel[part], len(part)) for part in kernel_parts)
        print(f"    {'':<44} {kernel}")
    print(f"    without probes, over {len(comparison.without)} runs: {noise_text(comparison.without)}")


def noise_text(runs: list[Run]) -> str:
    """The range of the loop thread's system time, and of its time zeroing new pages, over `runs`."""
    ranges = {
        "system time": [run.result.loop.system_s if run.result.loop else None for run in runs],
        ZEROING: [profiled_s(run, ZEROING) for run in runs],
    }
    return ", ".join(
        f"{name} {min(values):.3f}-{max(values):.3f} s" if None not in values else f"{name} unavailable"
        for name, values in ranges.items()
    )


def side_runs(comparison: Comparison) -> list[tuple[str, list[Run]]]:
    sides = [
        (Side.NONE.value, comparison.without),
        ("floor (empty programs)", comparison.floor),
        (Side.PROBES.value, comparison.with_probes),
    ]
    return [(label, runs) for label, runs in sides if runs]


def signed_seconds(seconds: float | None) -> str:
    return "unavailable" if seconds is None else f"{seconds:+.3f} s"


def time_split_text(comparison: Comparison) -> str:
    """The probed side's wall time above the side without probes, split by the loop thread's clocks and its
    CPU's parts of the kernel, with the probes' own in-kernel time (the run statistics) beside it."""
    probed, plain = TimeSplit.of(comparison.with_probes), TimeSplit.of(comparison.without)
    clocks, kernel = probed.minus(plain)
    shown = ", ".join(
        f"{name} {signed_seconds(extra)}"
        for name, extra in sorted(clocks.items(), key=lambda item: -(item[1] or 0.0))
    )
    text = f"wall {probed.wall_s - plain.wall_s:+.3f} s against no probes: loop thread {shown} (medians)"
    if any(extra is not None for extra in kernel.values()):
        parts = ", ".join(f"{name} {signed_seconds(extra)}" for name, extra in kernel.items())
        text += f"; its CPU by perf samples: {parts}"
    if probed.cpu_less_zeroing_s is not None and plain.cpu_less_zeroing_s:
        steady = probed.cpu_less_zeroing_s / plain.cpu_less_zeroing_s - 1
        text += (
            f"; its CPU less the zeroing {plain.cpu_less_zeroing_s:.3f} -> {probed.cpu_less_zeroing_s:.3f} s "
            f"({100 * steady:+.1f}%)"
        )
    program_ns = sum(ns for run in comparison.costs for _count, ns in run.program_runs.values())
    if comparison.costs and program_ns:
        text += f"; the probes' programs ran {program_ns / len(comparison.costs) / 1e6:.1f} ms per loop"
    session_cpu_s = statistics.median(run.sessions_cpu_s for run in comparison.with_probes)
    return f"{text}; the session's own CPU {session_cpu_s:.2f} s (it shares the CPUs: the run queue)"


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
    print(f"    {Side.PROBES.value}: {probe_runs:,.0f} runs + {bodies_ms:,.1f} ms inside their programs "
          f"above an empty program's = {100 * computed.slowdown:+.2f}%")  # fmt: skip


def print_floor_ratio(workload: str, computed: ComputedCost | None) -> None:
    """The probes' computed slowdown against the floor's (one empty program per tracepoint), with the
    target where the workload has one (issue 16: the fault loop, at most 1.25x): against the floor's own
    loop, and against the floor on the probes' loop's events (the same runs, so other processes' events,
    which differ between the two loops, do not enter: the verdict's)."""
    if computed is None or computed.floor_slowdown <= 0:
        print("  computed slowdown, all probes / the floor: unavailable (no computed figures)")
        return
    target = TARGET_FLOOR_RATIO.get(workload)
    measured = computed.slowdown / computed.floor_slowdown
    same = computed.slowdown / computed.floor_on_the_probes_events
    judged = f" (target <= {target:.2f}x): {verdict(same <= target)}" if target is not None else ""
    print(
        f"  computed slowdown, all probes / the floor: {100 * computed.slowdown:+.2f}% / "
        f"{100 * computed.floor_slowdown:+.2f}% = {measured:.2f}x against the floor's loop; "
        f"/ {100 * computed.floor_on_the_probes_events:+.2f}% = {same:.2f}x against the floor on the probes' "
        f"own events{judged}"
    )
    if target is not None and same > target:
        print_ratio_bound(computed, target)


def print_ratio_bound(computed: ComputedCost, target: float) -> None:
    """What bounds a missed ratio target: the time it leaves inside the programs per run, against what one map
    operation costs there (the counting floor, measured in the same workload)."""
    allowed = (target - 1) * computed.dispatch_ns
    spent = f"the probes' programs spend {computed.bodies_ns_per_run:,.0f} ns per run above an empty one"
    line = f"  bounded: {target:.2f}x leaves {allowed:,.0f} ns per program run inside the programs; {spent}"
    ratio = computed.counting_ratio
    if ratio is None:
        print(f"{line} (one map operation's cost: unavailable, no counting floor run)")
        return
    print(f"{line}; one map operation per run (the counting floor: a lookup_or_try_init of the process's "
          f"counter and an atomic add) costs {computed.counting_ns:,.0f} ns here, which alone computes to "
          f"{ratio:.2f}x the floor")  # fmt: skip


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
    split = time_split_text(comparison)
    line = f"  verdict: target <= {100 * target:.0f}%: {verdict(passed)} ({figures}; {split})"
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


def overlap_note(faster: list[Run], slower: list[Run]) -> str:
    """Said after a difference that does not stand out of the spread, so it is not read as more than the
    machine's noise allows."""
    return "; the two sides' ranges overlap (within the noise)" if ranges_overlap(faster, slower) else ""


def print_events(comparison: Comparison) -> None:
    print(f"  events per run with probes (medians): {'workload process':>16} {'all processes':>14}   counted")
    for probe in PROBE_NAMES:
        counters = " + ".join(probe_entry(probe).process_events)
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
    for probe in PROBE_NAMES:
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
        f"files under {settings.directory} ({filesystem_type(settings.directory) or 'unknown filesystem'})"
    )


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
        "\n\nThe probes: all five in ONE combined program (probes/ebpf/combined.py), as the dashboard runs"
        "\n  its four: one function per tracepoint that does every attached probe's work, so an event runs"
        "\n  one program whichever probes handle it (separately, a page fault ran seven)."
        "\n\nThe floor: one empty BPF program (return 0) per tracepoint the probes attach to, loaded by this"
        "\n  script and attached with bcc's attach_tracepoint as the session attaches its own, so each"
        "\n  tracepoint runs one program per event, as with the combined program. It costs what the kernel"
        "\n  pays per event whatever the program does: the tracepoint's perf_trace_* handler filling the"
        "\n  event record, trace_call_bpf running the program, and for syscalls:* events the traced syscall"
        "\n  path of every process. Any tracer attached to these tracepoints pays it. probes - floor is"
        "\n  mqinspect's own work: the programs' bodies (map lookups and updates, helper calls) and the"
        "\n  session's user space, which shares the 2 CPUs with the workload."
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
