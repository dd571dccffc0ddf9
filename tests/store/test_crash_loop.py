"""benchmarks/crash_loop.py at the suite's size: 15 SIGKILL rounds of a SYNC-flush producer (and 2 ASYNC), and
12 torn-tail trials. The 200-round run is the benchmark's default."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

CRASH_LOOP = Path(__file__).resolve().parents[2] / "benchmarks" / "crash_loop.py"


def run_crash_loop(work: Path, *options: str) -> dict:
    result = subprocess.run(
        [sys.executable, str(CRASH_LOOP), "--format", "json", "--dir", str(work), *options],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode in (0, 1) and result.stdout, result.stderr
    report = json.loads(result.stdout)
    problems = [*report["sync"]["problems"], *report["async"]["problems"], *report["trials"]["problems"]]
    assert result.returncode == 0 and not report["failed"], problems[:10]
    return report


def test_no_acknowledged_message_is_lost_or_served_corrupt_through_sigkills(tmp_path: Path):
    report = run_crash_loop(tmp_path, "--rounds", "15", "--async-rounds", "2", "--trials", "0")
    sync, asynchronous = report["sync"], report["async"]
    assert sync["rounds"] == 15 and sync["acknowledged"] > 0
    assert (sync["lost"], sync["corrupt_served"], sync["verify_failures"], sync["misplaced_appends"]) == (
        0,
        0,
        0,
        0,
    )
    assert asynchronous["rounds"] == 2 and asynchronous["corrupt_served"] == 0
    assert sync["dry_run_mismatches"] == asynchronous["dry_run_mismatches"] == 0
    assert asynchronous["verify_failures"] == 0 and asynchronous["misplaced_appends"] == 0


def test_torn_tails_are_named_cut_at_the_first_bad_record_and_never_served(tmp_path: Path):
    trials = run_crash_loop(tmp_path, "--rounds", "0", "--async-rounds", "0", "--trials", "12")["trials"]
    assert trials["trials"] == 12 and set(trials["kinds"].values()) == {3}
    assert trials["named_by_verify"] == 12 and trials["verify_clean_after"] == 12
    assert trials["cut_at_first_bad_record"] == 6 and trials["queues_rebuilt"] == 6
    assert trials["served_after_cut"] == 0
