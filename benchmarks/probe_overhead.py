"""What attaching mqinspect's eBPF probes costs a workload, against the physical floor of any tracepoint
tracer: the store append benchmark and a page-fault-heavy loop, each timed with no probes, with the floor,
and with every probe attached system-wide, in the same run.

Targets (issue): at most 3% slowdown on the append benchmark, at most 10% on the page-fault-heavy workload;
also the measured cost per event, in ns; and (issue 16) on the fault loop, the probes' computed slowdown at
most 1.25x the floor's (one empty program per tracepoint).

The workloads (benchmarks/overhead/workloads.py): append (the store's batch puts, segments warmed),
append-cold (the same without warm-up) and faults (one write fault per page of fresh MAP_SHARED mappings).

Three sides per workload, K runs each:
- no probes;
- all probes: every registered probe in ONE combined program (probes/ebpf/combined.py, as the dashboard
  runs its four: one function per tracepoint doing every probe's work), in a session process of its own
  (benchmarks/overhead/combined_trace.py, started by sessions.py); the workload is released only once it
  has printed its startup line (the program is attached then); afterwards it gets SIGINT and its summary
  lines give the event counts (--per-probe runs each probe alone as `mqinspect trace <probe>`);
- the floor (benchmarks/overhead/baseline.py): one EMPTY BPF program per tracepoint the probes attach to,
  attached the same way: what any tracepoint-based tracer of these events costs, whatever its programs do.
  What the probes add above it (probes - floor) is mqinspect's own work: the programs' bodies and the
  session's user space.

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
which moves by tens of percent between runs on this VM (benchmarks/overhead/comparison.py). The verdict
(benchmarks/overhead/report.py) needs both: the wall time within the target (or within its noise) and the
computed slowdown within it. When the floor alone computes above the target, the report says the target is
out of reach for any tracepoint-based tracer of these events here.

Where the wall time went, per run and per side (the verdict line quotes the probed side's difference): the
workload's loop thread's own clocks (workloads.LoopClocks: user and system CPU by getrusage, run-queue wait by
schedstat, the rest blocked off a CPU) and, by perf samples of that thread over the timed loop alone
(loop_profile.py; --no-profile skips them), its CPU by part of the kernel: zeroing new pages, tracepoints and
BPF, the rest of the page faults. The cold append's +114% of the last stop was this VM zeroing new
page-cache folios at a rate that changes from run to run on every side (the loop thread's system time 0.09-0.8
s per loop, no probes too), plus the run queue on two shared CPUs; the probes' programs run 15 ms per loop.

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

import contextlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.overhead.baseline import (  # noqa: E402
    EmptyProgramFloor,
    floor_or_none,
    is_floor_program,
    is_session_program,
)
from benchmarks.overhead.comparison import compare  # noqa: E402
from benchmarks.overhead.report import (  # noqa: E402
    loaded_programs,
    print_cleanup_check,
    print_comparison,
    print_header,
    print_notes,
    print_order,
    print_per_probe,
)
from benchmarks.overhead.settings import Settings, parse_args  # noqa: E402


def main(argv: Sequence[str]) -> int:
    settings = parse_args(argv, __doc__.split("\n\n")[0])
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
    sys.exit(main(sys.argv[1:]))
