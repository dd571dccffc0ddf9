"""The probes named on the command line in one combined program (probes/ebpf/combined.py), as the dashboard
runs them, every process traced, for probe_overhead.py: says "Tracing ..." on stderr once attached, writes
a line per probe and interval, and at SIGINT one summary line per probe with the fields its registry entry
counts (`process_events` per process, `total_events`), as `mqinspect trace PROBE --format jsonl` would.

    .venv/bin/python -m benchmarks.overhead.combined_trace faults pagecache writeback sendpath syscalls
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

from probes.ebpf.combined import CombinedProbe
from probes.ebpf.registry import probe_entry
from probes.ebpf.session import TraceSession


def counted_fields(name: str, snapshot: Any, kind: str) -> dict[str, Any]:
    entry = probe_entry(name)
    return {
        "kind": kind,
        "probe": name,
        **{field: getattr(snapshot, field) for field in entry.total_events},
        "processes": [
            {"pid": row.pid, **{field: getattr(row, field) for field in entry.process_events}}
            for row in snapshot.processes
        ],
    }


def main(names: Sequence[str]) -> int:
    combined = CombinedProbe([probe_entry(name).probe_class()() for name in names])
    with TraceSession(combined) as session:
        print(f"Tracing {combined.subject()}", file=sys.stderr, flush=True)
        for snapshots in session.intervals(1.0):
            for name in snapshots:
                print(json.dumps({"kind": "interval", "probe": name}, separators=(",", ":")), flush=True)
        for name, summary in (session.summary or {}).items():
            line = counted_fields(name, summary, "summary")
            print(json.dumps(line, separators=(",", ":")), flush=True)
        for name, reason in combined.dropped.items():
            print(f"{name}: {reason}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
