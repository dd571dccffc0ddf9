"""What one run of probe_overhead.py measures: its command line."""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.overhead.workloads import WORKLOADS


@dataclass(frozen=True)
class Settings:
    repetitions: int
    append_messages: int
    fault_pass_mib: int
    fault_backing: str  # "file" (ext4, MADV_RANDOM) or "shmem" (anonymous MAP_SHARED)
    fault_passes: int
    per_probe: bool
    run_statistics: bool  # one more floor run and probed run, timing every program run (not compared)
    profile: bool  # perf samples of each loop thread: what its CPU went to (loop_profile.py)
    directory: Path
    workloads: tuple[str, ...]


def parse_args(argv: Sequence[str], description: str) -> Settings:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--quick", action="store_true", help="3 repetitions, smaller workloads (about 4 min for the three)"
    )
    parser.add_argument("--repetitions", "-k", type=int, default=None, help="runs per side (default 5)")
    parser.add_argument("--messages", type=int, default=None, help="append: messages (default 600,000)")
    parser.add_argument("--fault-mib", type=int, default=None, help="faults: MiB per pass (default 512)")
    parser.add_argument("--fault-passes", type=int, default=None, help="faults: passes (default 2)")
    parser.add_argument(
        "--fault-backing",
        choices=["file", "shmem"],
        default="file",
        help="faults: a sparse file on --dir (each fault also adds and dirties a page-cache folio) or "
        "anonymous shared memory (the fault exception alone)",
    )
    parser.add_argument("--per-probe", action="store_true", help="also run each probe alone once")
    parser.add_argument(
        "--no-run-statistics",
        action="store_true",
        help="skip the extra runs with the kernel's BPF run statistics on (in-kernel ns per program run)",
    )
    parser.add_argument(
        "--no-profile",
        action="store_true",
        help="skip the perf samples of each run's loop thread (what its kernel time went to)",
    )
    parser.add_argument(
        "--workloads",
        default=",".join(WORKLOADS),
        help=f"comma-separated, of: {', '.join(WORKLOADS)}",
    )
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()), help="parent directory")
    args = parser.parse_args(argv)
    return Settings(
        repetitions=args.repetitions or (3 if args.quick else 5),
        append_messages=args.messages or (300_000 if args.quick else 600_000),
        fault_pass_mib=args.fault_mib or (256 if args.quick else 512),
        fault_passes=args.fault_passes or 2,
        fault_backing=args.fault_backing,
        per_probe=args.per_probe,
        run_statistics=not args.no_run_statistics,
        profile=not args.no_profile,
        directory=args.dir.resolve(),
        workloads=tuple(name for name in args.workloads.split(",") if name),
    )
