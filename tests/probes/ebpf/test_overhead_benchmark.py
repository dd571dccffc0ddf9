"""benchmarks/probe_overhead.py in its parts (benchmarks/overhead/): a workload child runs as a module of its
own, the sides are ordered so that each sits as often early as late, the floor and the sessions cover the
registry's probes, and nothing in it is named like the product's TraceSession. The measurement itself is the
benchmark's (about 9 minutes); these are the seconds-long checks of its parts."""

from __future__ import annotations

import mmap
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO))

from support import skip_or_fail  # noqa: E402

from benchmarks.overhead import baseline, comparison, loop_profile, report, sessions, workloads  # noqa: E402
from benchmarks.overhead.comparison import Side, balanced_order  # noqa: E402
from benchmarks.overhead.settings import parse_args  # noqa: E402
from benchmarks.overhead.workloads import Workload, child_parameters  # noqa: E402
from probes.ebpf.loader import TRACEFS  # noqa: E402
from probes.ebpf.registry import PROBES  # noqa: E402
from probes.ebpf.tracepoints import tracepoint_format_path  # noqa: E402


def test_a_workload_child_runs_its_timed_loop_as_a_module_of_its_own(tmp_path: Path):
    settings = parse_args(
        ["--fault-mib", "1", "--fault-passes", "2", "--fault-backing", "shmem", "--dir", str(tmp_path)], "x"
    )
    child = Workload("faults", child_parameters("faults", settings))
    try:
        child.prepare()
        result = child.run()
    finally:
        child.finish()
    assert child.process.returncode == 0
    pages = 2 * (1 << 20) // workloads.PAGE_SIZE
    assert result.units == pages
    assert result.page_faults >= pages  # one write fault per page of a fresh shared mapping, by getrusage


@pytest.mark.parametrize("repetitions", [2, 3, 4, 5])
def test_every_side_sits_as_often_early_as_late(repetitions: int):
    sides = (Side.NONE, Side.FLOOR, Side.PROBES)
    order = balanced_order(sides, repetitions)
    assert Counter(order) == dict.fromkeys(sides, repetitions)
    positions = {side: 0 for side in sides}
    for index, side in enumerate(order):
        positions[side] += index % len(sides)
    if repetitions > 1:
        assert len(set(positions.values())) == 1


def test_the_sessions_and_the_floor_cover_every_registered_probe():
    assert tuple(entry.name for entry in PROBES) == sessions.PROBE_NAMES
    assert Side.PROBES.value == f"all {len(PROBES)} probes"
    groups, skipped = baseline.floor_layout()
    (programs,) = groups  # one BPF object
    tracepoints = {
        attachment.tracepoint: None
        for entry in PROBES
        for attachment in entry.probe_class().program.attachments
    }
    present = [tp for tp in tracepoints if tracepoint_format_path(TRACEFS, tp).exists()]
    # one empty program per tracepoint, as the probes' combined program has one function per tracepoint
    assert [program.tracepoint for program in programs] == present
    assert len(skipped) == len(tracepoints) - len(present)
    faults_probes = next(p.probe for p in programs if p.tracepoint == "filemap:mm_filemap_add_to_page_cache")
    assert faults_probes == "faults,pagecache,writeback,sendpath"


def test_nothing_in_the_benchmark_takes_the_products_session_name():
    for module in (baseline, comparison, report, sessions, workloads):
        assert not hasattr(module, "TraceSession"), module.__name__


def test_the_counting_floor_counts_on_the_floor_s_tracepoints_under_names_of_its_own():
    (empty,), _skipped = baseline.floor_layout()
    (counting,), _skipped = baseline.floor_layout(baseline.COUNTING_PREFIX)
    assert [p.tracepoint for p in counting] == [p.tracepoint for p in empty]
    assert all(p.function.startswith(baseline.COUNTING_PREFIX) for p in counting)
    assert all(baseline.is_floor_program(p.function) for p in counting)  # unloaded and told apart as floor
    text = baseline.counting_functions(counting)
    assert text.count("lookup_or_try_init") == len(counting) and text.count("BPF_HASH") == 1


def test_a_missed_ratio_target_says_what_one_map_operation_per_run_computes_to(capsys):
    computed = comparison.ComputedCost(
        seconds_without=1.0,
        dispatch_ns=200.0,
        floor_runs=1000.0,
        probe_runs=1000.0,
        bodies_ns=300_000.0,  # 300 ns per run above an empty program
        counting_ns=70.0,
    )
    assert computed.counting_ratio == pytest.approx(1.35)
    report.print_floor_ratio("faults", computed)
    out = capsys.readouterr().out
    assert "= 2.50x against the floor on the probes' own events (target <= 1.25x): MISS" in out
    assert "1.25x leaves 50 ns per program run inside the programs" in out
    assert "spend 300 ns per run above an empty one" in out
    assert "costs 70 ns here, which alone computes to 1.35x the floor" in out


@pytest.mark.requires_bpf
def test_the_counting_floor_loads():
    counting = baseline.build_floor(counting=True)
    try:
        assert len(counting.program_ids) == len(counting.programs) > 0
    finally:
        counting.close()


def test_the_loop_clocks_put_a_sleep_off_a_cpu_and_agree_with_schedstat_on_cpu_time():
    """The split the cold append's verdict quotes: a thread that sleeps is blocked for its sleep (nanosleep
    does not return early), not on a CPU nor waiting for one, and its CPU time is the kernel's own count
    (schedstat's run time). Within one scheduler tick: the kernel brings a running thread's schedstat
    figures up to date at its ticks and switches."""
    tick_s = 0.01  # HZ=100 at the least
    on_cpu_before = int(Path("/proc/thread-self/schedstat").read_text().split()[0])
    before = workloads.LoopClocks.now()
    started = time.perf_counter()
    time.sleep(0.2)
    sum(range(200_000))
    wall_s = time.perf_counter() - started
    spent = workloads.LoopClocks.now().since(before)
    on_cpu_s = (int(Path("/proc/thread-self/schedstat").read_text().split()[0]) - on_cpu_before) / 1e9
    assert spent.run_queue_s is not None and spent.run_queue_s >= 0
    assert spent.blocked_s(wall_s) >= 0.2 - tick_s
    assert spent.user_s + spent.system_s == pytest.approx(on_cpu_s, abs=tick_s)
    assert spent.user_s + spent.system_s < 0.2 - tick_s  # the sleep is not CPU time
    parts = spent.user_s + spent.system_s + spent.run_queue_s + spent.blocked_s(wall_s)
    assert parts == pytest.approx(wall_s)  # by construction, while nothing is negative


def fake_run(
    seconds: float, user_s: float, system_s: float, run_queue_s: float, zeroing_share: float | None = None
) -> comparison.Run:
    clocks = workloads.LoopClocks(user_s, system_s, run_queue_s, 0.1, 0)
    profile = None
    if zeroing_share is not None:
        zeroing = round(1000 * zeroing_share)
        profile = loop_profile.LoopProfile({loop_profile.ZEROING: zeroing, loop_profile.USER: 1000 - zeroing})
    return comparison.Run(workloads.WorkloadResult(seconds, 1000, 100, clocks), profile=profile)


def test_the_verdict_says_where_the_probed_side_s_extra_wall_time_went(capsys):
    compared = comparison.Comparison(
        "append-cold",
        "file",
        without=[fake_run(1.0, 0.5, 0.1, 0.1), fake_run(1.2, 0.5, 0.3, 0.1)],
        with_probes=[fake_run(2.0, 0.5, 0.9, 0.4), fake_run(2.2, 0.5, 1.1, 0.4)],
        floor=[],
        costs=[comparison.Run(fake_run(2.0, 0.5, 0.9, 0.4).result, program_runs={"mqi_x": (10, 15_000_000)})],
    )
    report.print_time_split(compared)
    report.print_verdict(compared, None, None)
    out = capsys.readouterr().out
    assert "without probes, over 2 runs: system time 0.100-0.300 s, zeroing new pages unavailable" in out
    # medians: wall 1.1 -> 2.1, system 0.2 -> 1.0, run queue 0.1 -> 0.4, blocked 0.3 -> 0.2, user 0.5 -> 0.5
    assert (
        "wall +1.000 s against no probes: loop thread system +0.800 s, run queue +0.300 s, user +0.000 s, "
        "blocked -0.100 s (medians); the probes' programs ran 15.0 ms per loop"
    ) in out
    assert "verdict: target <= 10%: MISS" in out


PERF_SCRIPT = """
\tffffffff8160a1aa __pi_memset
\tffffffff8160a1ab zero_user_segments.constprop.0
\tffffffff82242576 exc_page_fault
\t            3b03 mmap_ass_subscript

\tffffffffc0001234 bpf_prog_6b4e46a02b3e7b87_mqi_page_fault_user
\tffffffff81234567 perf_trace_run_bpf_submit
\tffffffff82242576 exc_page_fault

\tffffffff816b02ee count_memcg_events
\tffffffff82242576 exc_page_fault

\tffffffff81000100 do_syscall_64

\t          4a3b22 _PyEval_EvalFrameDefault
\t          4a3b00 main
"""


def test_a_loop_thread_sample_goes_to_the_first_part_of_the_kernel_its_call_chain_passes():
    profile = loop_profile.parse_samples(PERF_SCRIPT)
    assert profile.samples == {
        loop_profile.ZEROING: 1,
        "tracepoints and BPF": 1,
        "page faults (the rest)": 1,
        loop_profile.OTHER_KERNEL: 1,
        loop_profile.USER: 1,
    }
    assert profile.seconds(loop_profile.ZEROING, cpu_s=1.0) == pytest.approx(0.2)


@pytest.mark.requires_root
def test_the_profiler_samples_only_the_enabled_stretch_of_one_thread(tmp_path: Path):
    """Ground truth: a thread that write-faults fresh pages only while enabled; before and after it only
    computes in user space. Counted, not timed: the samples' parts, not their seconds."""
    if not loop_profile.perf_available():
        skip_or_fail("perf is not installed (Debian: linux-perf)")
    with loop_profile.thread_profiler(threading.get_native_id(), wanted=True) as profiler:
        sum(range(3_000_000))  # disabled: not sampled
        profiler.enable()
        with mmap.mmap(-1, 256 << 20) as memory:
            for offset in range(0, len(memory), mmap.PAGESIZE):
                memory[offset] = 1
        profiler.disable()
        sum(range(3_000_000))
        profile = profiler.profile()
    assert profile is not None and profile.total > 0
    kernel = profile.total - profile.samples.get(loop_profile.USER, 0)
    assert profile.samples.get(loop_profile.ZEROING, 0) > 0
    assert kernel > profile.samples.get(loop_profile.USER, 0)  # the faults, not the sums around them


def test_the_verdict_sets_the_zeroing_of_new_pages_apart_from_the_rest_of_the_loop_thread_s_cpu(capsys):
    """The same bytes zeroed on both sides, at a rate the VM changes: the rest is what the probes move."""
    compared = comparison.Comparison(
        "append-cold",
        "file",
        without=[fake_run(1.0, 0.5, 0.5, 0.0, zeroing_share=0.5)],  # 0.5 s zeroing, 0.5 s the rest
        with_probes=[fake_run(2.0, 0.5, 1.5, 0.0, zeroing_share=0.725)],  # 1.45 s zeroing, 0.55 s the rest
        floor=[],
    )
    report.print_time_split(compared)
    report.print_verdict(compared, None, None)
    out = capsys.readouterr().out
    assert "without probes, over 1 runs: system time 0.500-0.500 s, zeroing new pages 0.500-0.500 s" in out
    assert "its CPU by perf samples: zeroing new pages +0.950 s, tracepoints and BPF +0.000 s" in out
    assert "its CPU less the zeroing 0.500 -> 0.550 s (+10.0%)" in out
