"""What the sendpath probe's BPF programs cost per run, from the kernel's own run statistics (run_cnt and
run_time_ns of each program this process loaded, read from /proc/self/fdinfo), without wall-time noise.

Two kinds of work, each measured on its own while one session traces one process:
- untraced: `dd bs=1` from /dev/zero to /dev/null in a process the session does not trace. Every process's
  read and write calls still run the enter and exit programs (the syscall tracepoints are global): this is
  what the probe costs the rest of the machine per call;
- traced: tests/ebpf/sendpath_workload.py sending a file over loopback by each send path (read+write,
  mmap+write, sendfile, splice) in 4 KiB steps, with the traced sender's calls.

Other processes on the machine run the same programs while a phase runs (as untraced callers), so the traced
phases' figures are averages over both kinds; the untraced phase shows the untraced cost alone.

    .venv/bin/python benchmarks/sendpath_cost.py              # about 30 s
    .venv/bin/python benchmarks/sendpath_cost.py --json

Needs root (or CAP_BPF+CAP_PERFMON), bcc and kernel headers. Exits 0 (it measures, it does not assert).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.overhead.run_statistics import run_statistics_descriptor  # noqa: E402
from probes.ebpf.sendpath import SendpathProbe  # noqa: E402
from probes.ebpf.session import TraceSession  # noqa: E402

WORKLOAD = REPO / "tests" / "ebpf" / "sendpath_workload.py"
PATHS = ("read+write", "mmap+write", "sendfile", "splice")
FILE_BYTES = 16 << 20
CHUNK_BYTES = 4096
DD_CALLS = 400_000

Times = dict[str, tuple[int, int]]  # function name -> (run_cnt, run_time_ns)


def program_times(session: TraceSession) -> Times:
    """Run count and time of each of the session's programs, summed by function name."""
    times: dict[str, tuple[int, int]] = {}
    # The session's own bcc object: other sessions on the machine have programs of these names.
    for name, function in session._program._bpf.funcs.items():
        info = Path(f"/proc/self/fdinfo/{function.fd}").read_text()
        fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
        runs, nanoseconds = int(fields.get("run_cnt", 0)), int(fields.get("run_time_ns", 0))
        before = times.get(name.decode(), (0, 0))
        times[name.decode()] = (before[0] + runs, before[1] + nanoseconds)
    return times


def gained(before: Times, after: Times) -> Times:
    return {name: (after[name][0] - before[name][0], after[name][1] - before[name][1]) for name in after}


@contextlib.contextmanager
def paused_sender(path: str, data: Path) -> Iterator[subprocess.Popen]:
    process = subprocess.Popen(
        [sys.executable, str(WORKLOAD), path, str(data), "--chunk-bytes", str(CHUNK_BYTES)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)


def traced_phase(path: str, data: Path) -> Times:
    with paused_sender(path, data) as process:
        _word, sender_pid, _receiver = process.stdout.readline().split()
        with TraceSession(SendpathProbe([int(sender_pid)])) as session:
            before = program_times(session)
            os.kill(int(sender_pid), signal.SIGUSR1)
            process.stdout.readline()  # "received N": the transfer is over
            process.wait(timeout=60)
            session.snapshot()
            return gained(before, program_times(session))


def untraced_phase() -> Times:
    with TraceSession(SendpathProbe([os.getpid()])) as session:  # traces this process, which stays idle
        before = program_times(session)
        subprocess.run(
            ["dd", "if=/dev/zero", "of=/dev/null", "bs=1", f"count={DD_CALLS}"],
            check=True,
            capture_output=True,
        )
        return gained(before, program_times(session))


def per_run(times: Times) -> dict[str, dict[str, float]]:
    return {
        name: {"runs": runs, "ns_per_run": round(nanoseconds / runs, 1)}
        for name, (runs, nanoseconds) in sorted(times.items())
        if runs
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args()
    descriptor = run_statistics_descriptor()
    if descriptor is None:
        print(
            "sendpath_cost: the kernel's BPF run statistics cannot be enabled here (libbpf, root)",
            file=sys.stderr,
        )
        return 3
    results: dict[str, dict[str, dict[str, float]]] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="mqinspect-sendpath-cost-") as scratch:
            data = Path(scratch) / "data.bin"
            data.write_bytes(os.urandom(FILE_BYTES))
            results["untraced dd bs=1"] = per_run(untraced_phase())
            for path in PATHS:
                results[f"traced {path}"] = per_run(traced_phase(path, data))
    finally:
        os.close(descriptor)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for phase, functions in results.items():
        print(phase)
        for name, figures in functions.items():
            print(f"  {name:<16} {figures['runs']:>10,} runs  {figures['ns_per_run']:>8.1f} ns/run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
