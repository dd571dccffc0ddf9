"""What the programs that follow the store's files (programs/store_files.h: faults, pagecache, writeback) cost
per run while they follow a store that rolls: the kernel's own run statistics (run_cnt, run_time_ns) per
program, for one probe at a time, then for the three in one combined program (probes/ebpf/combined.py), as
the dashboard runs them, against the sums of the three separately.

The workload is a child process that owns a store on the real disk (a temporary directory under /var/tmp)
and, per round, rolls its CommitLog the way the broker does (MappedFile.create, then warm(TOUCH): a write
fault, a page-cache insertion and a dirtied folio per page or folio), then maps the segment before it and
reads a byte per page (read faults, most served by fault-around). Each probe runs as `trace PROBE --pid
CHILD --store DIR` would, in this process, with the run statistics on (a BPF_ENABLE_STATS descriptor, as
benchmarks/overhead/run_statistics.py takes it), and the child runs all its rounds inside one interval.

Two kinds of segment: "new" ones are created during the session (a roll: a probe that learns new files only
at an interval's end sees none of their events in the file filter, and so does little per event), "existing"
ones are all created before it (and warmed during it): in view for any version, the same work per event.

    .venv/bin/python benchmarks/store_probe_cost.py                  # about 40 s on 2 cores
    .venv/bin/python benchmarks/store_probe_cost.py --rounds 8 --segment-mib 128

To compare with another checkout, run this script with that checkout's code first on the path:
`PYTHONPATH=/path/to/checkout .venv/bin/python benchmarks/store_probe_cost.py` (its probes must take the same
constructor arguments). The run times include the two clock reads the statistics add per run. Needs root
(or CAP_BPF+CAP_PERFMON), bcc and kernel headers. Exits 0 (it measures, it does not assert).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path += [str(REPO), str(REPO / "tests")]  # appended: a PYTHONPATH checkout given first comes first

from support import programs_held_by  # noqa: E402

from benchmarks.overhead.run_statistics import bpf_run_statistics, program_times, runs_between  # noqa: E402
from probes.ebpf.combined import CombinedProbe  # noqa: E402
from probes.ebpf.loader import FUNCTION_PREFIX  # noqa: E402
from probes.ebpf.registry import PROBES  # noqa: E402
from probes.ebpf.session import TraceSession  # noqa: E402

# The probes that follow the store's files (programs/store_files.h), by name.
STORE_PROBES = {entry.name: entry.probe_class() for entry in PROBES if entry.probe_class().filters_files}
COMBINED = "combined"  # the three in one program (probes/ebpf/combined.py), as the dashboard runs them
SCRATCH = Path("/var/tmp")  # the real disk (ext4 here), not a tmpfs

# Runs in the child: makes commitlog/ and its first segment, says "ready", then on a line rolls ROUNDS times
# (the next segment made and warmed by touching, the one before mapped and read a byte per page) and says
# "done".
WORKLOAD = r"""
import mmap, sys
from pathlib import Path
from store.config import WarmupMode
from store.mapped_file import MappedFile
commitlog, size, rounds, existing = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
commitlog.mkdir(parents=True)
def segment(number):
    return MappedFile.create(commitlog / f"{number * size:020d}", size)

made = [segment(number) for number in range(rounds + 1 if existing else 1)]
segments = [made.pop(0)]
segments[0].warm(WarmupMode.TOUCH)
print("ready", flush=True)
sys.stdin.readline()
for number in range(1, rounds + 1):
    segments.append(made.pop(0) if existing else segment(number))
    segments[-1].warm(WarmupMode.TOUCH)
    with open(segments[-2].path, "rb") as previous:
        mapped = mmap.mmap(previous.fileno(), size, prot=mmap.PROT_READ)
        sum(mapped[offset] for offset in range(0, size, mmap.PAGESIZE))
        mapped.close()
print("done", flush=True)
sys.stdin.readline()
"""


def measure(probe_name: str, rounds: int, segment_bytes: int, existing: bool) -> dict[str, tuple[int, int]]:
    """Runs and run time per program of one probe's session (COMBINED: of the store probes' combined
    program) over the workload."""
    with tempfile.TemporaryDirectory(dir=SCRATCH, prefix="mqinspect-cost-") as scratch:
        store = Path(scratch) / "store"
        child = subprocess.Popen(
            [
                sys.executable,
                "-c",
                WORKLOAD,
                str(store / "commitlog"),
                str(segment_bytes),
                str(rounds),
                str(int(existing)),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdout.readline().strip() == "ready"
            with TraceSession(session_probe(probe_name, child.pid, store)) as session:
                ours = programs_held_by(os.getpid())  # other sessions on the machine load mqi_* programs too
                before = program_times(lambda name: name.startswith(FUNCTION_PREFIX))
                child.stdin.write("go\n")
                child.stdin.flush()
                assert child.stdout.readline().strip() == "done"
                after = program_times(lambda name: name.startswith(FUNCTION_PREFIX))
                session.snapshot()
            return runs_between(before, after, ours)
        finally:
            child.stdin.close()
            child.wait(timeout=60)


def session_probe(name: str, pid: int, store: Path) -> Any:
    if name == COMBINED:
        return CombinedProbe([probe_class([pid], store=store) for probe_class in STORE_PROBES.values()])
    return STORE_PROBES[name]([pid], store=store)


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4, help="CommitLog rolls per probe and run (default 4)")
    parser.add_argument("--segment-mib", type=int, default=64, help="segment size in MiB (default 64)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per probe and kind; medians shown (3)")
    settings = parser.parse_args(argv)
    print(f"code: {sys.modules['probes.ebpf.session'].__file__}")
    print(
        f"workload: {settings.rounds} rolls of {settings.segment_mib} MiB segments (touch, then read); "
        f"median of {settings.repeat} runs"
    )
    with bpf_run_statistics() as enabled:
        if not enabled:
            print("the kernel's run statistics are unavailable: nothing to measure", file=sys.stderr)
            return 0
        for kind in ("existing", "new"):
            print(f"\n--- {kind} segments")
            totals = {}
            for name in (*STORE_PROBES, COMBINED):
                runs = [
                    measure(name, settings.rounds, settings.segment_mib << 20, kind == "existing")
                    for _ in range(settings.repeat)
                ]
                print(f"{name}:")
                totals[name] = print_medians(runs)
            print_combined_against_separate(totals)
    return 0


def print_combined_against_separate(totals: dict[str, tuple[float, float]]) -> None:
    """The combined program's runs and BPF time against the store probes' separate programs' sums."""
    runs = sum(totals[name][0] for name in STORE_PROBES)
    nanoseconds = sum(totals[name][1] for name in STORE_PROBES)
    combined_runs, combined_ns = totals[COMBINED]
    print(
        f"  {', '.join(STORE_PROBES)} separately: {runs:,.0f} runs, {nanoseconds / 1e6:,.1f} ms of BPF; "
        f"combined: {combined_runs:,.0f} runs, {combined_ns / 1e6:,.1f} ms "
        f"({combined_ns / nanoseconds:.2f}x the time)"
    )


def print_medians(runs: Sequence[dict[str, tuple[int, int]]]) -> tuple[float, float]:
    """Per program: the median of its runs and of its ns/run over the repeated measurements. Returns the
    sums of the medians: runs, and runs x ns/run."""
    programs = {program for measured in runs for program, (count, _ns) in measured.items() if count}
    rows = []
    for program in programs:
        counts = [measured.get(program, (0, 0)) for measured in runs]
        per_run = [nanoseconds / count for count, nanoseconds in counts if count]
        rows.append((program, statistics.median(count for count, _ns in counts), statistics.median(per_run)))
    for program, count, per_run in sorted(rows, key=lambda row: -row[1] * row[2]):
        print(f"    {program:<16} {count:>10,.0f} runs {per_run:>8.0f} ns/run")
    return sum(count for _program, count, _ns in rows), sum(
        count * per_run for _program, count, per_run in rows
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
