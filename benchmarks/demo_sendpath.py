"""The demo's broker traced by the sendpath probe for a long session, each send path held against the bytes
its consumer received: the issue's check that the paths stay right while the CommitLog rolls.

The demo's workload (mqinspect.demo: a broker process with 64 MiB segments rolling every ~6 s, retention,
one consumer process per send path) runs for --duration seconds. The probe traces the broker with --store
from before the consumers start, one interval a second as `mqinspect trace sendpath --pid BROKER --store
DIR` does; the consumers are stopped before the last interval, so every byte a consumer counted was sent
while traced. Then, per path: the probe's bytes, the consumer's bytes_received (the records it got: the
pull server's protocol headers are not in it), and their difference; and over the session: the CommitLog
segments created, the intervals in which read+write carried nothing while the other paths did (the
issue's symptom after a roll), the other and unresolved socket writes, and the records the maps lost.

    .venv/bin/python benchmarks/demo_sendpath.py                  # 10 minutes, the issue's check
    .venv/bin/python benchmarks/demo_sendpath.py --duration 60    # a shorter look
    .venv/bin/python benchmarks/demo_sendpath.py --json

Needs root (or CAP_BPF+CAP_PERFMON), bcc and kernel headers. Exits 0 when every path is within --tolerance
of its consumer's bytes, 1 otherwise, 3 when the probe cannot run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mqinspect.demo.settings import DemoSettings  # noqa: E402
from mqinspect.demo.workload import DemoWorkload  # noqa: E402
from probes.ebpf.sendpath import PATHS, SendpathProbe, SendpathSnapshot  # noqa: E402
from probes.ebpf.session import TraceSession  # noqa: E402
from probes.errors import CapabilityMissing  # noqa: E402

CONSUMER_PATH = dict(zip(PATHS, ("read_write", "mmap_write", "sendfile", "splice"), strict=True))
PROGRESS_EVERY_S = 30.0


@dataclass(frozen=True)
class PathCheck:
    path: str
    probe_bytes: int
    consumer_bytes: int
    server_bytes: int  # the pull server's own count (PullServer.counters)
    difference_percent: float | None
    within_tolerance: bool


@dataclass(frozen=True)
class SessionFacts:
    duration_s: float
    intervals: int
    segments_created: int
    intervals_read_write_empty: int  # read+write 0 while the other paths carried bytes
    other_socket_write_bytes: int
    unresolved_socket_write_bytes: int
    lost_records: int
    cpu_copies_per_socket_byte: float | None


def run(
    duration_s: float, interval_s: float, directory: Path, tolerance: float
) -> tuple[list[PathCheck], SessionFacts]:
    workload = DemoWorkload(DemoSettings(), directory)
    try:
        workload.start_broker()
        (broker,) = workload.pids
        commitlog = workload.store_dir / "commitlog"
        seen = set(os.listdir(commitlog))
        first_segments = set(seen)
        with TraceSession(SendpathProbe([broker], store=workload.store_dir)) as session:
            workload.start_consumers()
            started = time.monotonic()
            intervals = empty = 0
            next_progress = started + PROGRESS_EVERY_S
            for snapshot in session.intervals(interval_s, duration_s=duration_s):
                intervals += 1
                empty += _read_write_empty(snapshot)
                seen |= set(os.listdir(commitlog))
                if time.monotonic() >= next_progress:
                    next_progress += PROGRESS_EVERY_S
                    print(
                        f"demo_sendpath: {time.monotonic() - started:.0f} s, {_paths(session.summary)}",
                        file=sys.stderr,
                    )
            workload.stop_consumers()
            last = session.snapshot()  # the broker still runs: its last sends, and its mappings read fresh
            intervals += 1
            empty += _read_write_empty(last)
            summary = session.summary
        outcome = workload.stop()
    finally:
        workload.close()
    assert summary is not None and outcome.broker is not None
    received = {consumer.path.value: consumer.bytes_received for consumer in outcome.consumers}
    served = {item.path.value: item.bytes_sent for item in outcome.broker.served}
    (process,) = [row for row in summary.processes if row.pid == broker]
    checks = [
        _check(
            path, moved, received.get(CONSUMER_PATH[path], 0), served.get(CONSUMER_PATH[path], 0), tolerance
        )
        for path, moved in process.paths.by_path().items()
    ]
    facts = SessionFacts(
        duration_s=round(time.monotonic() - started, 1),
        intervals=intervals,
        segments_created=len(seen - first_segments),
        intervals_read_write_empty=empty,
        other_socket_write_bytes=process.other_socket_write_bytes,
        unresolved_socket_write_bytes=process.unresolved_socket_write_bytes,
        lost_records=summary.lost_records,
        cpu_copies_per_socket_byte=process.cpu_copies_per_socket_byte,
    )
    return checks, facts


def _read_write_empty(snapshot: SendpathSnapshot) -> int:
    paths = snapshot.paths
    return int(paths.read_write_bytes == 0 and paths.sendfile_bytes + paths.splice_bytes > 0)


def _paths(summary: SendpathSnapshot | None) -> str:
    if summary is None:
        return "no interval yet"
    return ", ".join(f"{path} {moved:,} B" for path, moved in summary.paths.by_path().items())


def _check(path: str, moved: int, received: int, served: int, tolerance: float) -> PathCheck:
    difference = None if not received else round(100 * (moved - received) / received, 4)
    within = difference is not None and abs(difference) <= 100 * tolerance
    return PathCheck(path, moved, received, served, difference, within)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds traced (default 600)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds per interval (default 1)")
    parser.add_argument("--tolerance", type=float, default=0.01, help="allowed difference (default 0.01)")
    parser.add_argument("--dir", type=Path, default=None, help="work directory (default: a temporary one)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mqinspect-demo-sendpath-") as scratch:
        directory = args.dir or Path(scratch) / "demo"
        try:
            checks, facts = run(args.duration, args.interval, directory, args.tolerance)
        except CapabilityMissing as error:
            print(f"demo_sendpath: {error}; fix: {error.fix}", file=sys.stderr)
            return 3
    if args.json:
        print(json.dumps({"paths": [asdict(check) for check in checks], "session": asdict(facts)}, indent=2))
    else:
        print(f"{'path':<11} {'probe bytes':>15} {'consumer bytes':>15} {'server bytes':>15} {'diff %':>8}")
        for check in checks:
            shown = "-" if check.difference_percent is None else f"{check.difference_percent:+.4f}"
            print(
                f"{check.path:<11} {check.probe_bytes:>15,} {check.consumer_bytes:>15,} "
                f"{check.server_bytes:>15,} {shown:>8}"
            )
        for name, value in asdict(facts).items():
            print(f"{name}: {value:,}" if isinstance(value, int) else f"{name}: {value}")
    return 0 if all(check.within_tolerance for check in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
