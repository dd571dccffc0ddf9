"""benchmarks/probe_overhead.py in its parts (benchmarks/overhead/): a workload child runs as a module of its
own, the sides are ordered so that each sits as often early as late, the floor and the sessions cover the
registry's probes, and nothing in it is named like the product's TraceSession. The measurement itself is the
benchmark's (about 9 minutes); these are the seconds-long checks of its parts."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO))

from benchmarks.overhead import baseline, comparison, report, sessions, workloads  # noqa: E402
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
