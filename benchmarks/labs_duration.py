"""How long the two labs take with their default sizes, against the issue's target of under a minute each.

Each lab runs as the user runs it (`mqinspect lab warmup`, `mqinspect lab sendpath`, JSON output), timed by
wall clock from the parent; the lab's own figures are summarised beside the time, so a fast run that measured
nothing would show.

    .venv/bin/python benchmarks/labs_duration.py            # about 20 s on 2 cores

Needs root for the eBPF columns (the labs still run without it). Always exits 0: it measures, it does not
assert.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MQINSPECT = REPO / ".venv" / "bin" / "mqinspect"
TARGET_S = 60.0


def run_lab(name: str) -> tuple[float, dict | None, str]:
    began = time.perf_counter()
    done = subprocess.run([str(MQINSPECT), "lab", name, "--format", "json"], capture_output=True, text=True)
    elapsed = time.perf_counter() - began
    if done.returncode != 0:
        return elapsed, None, done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "no output"
    return elapsed, json.loads(done.stdout), ""


def warmup_summary(report: dict) -> str:
    modes = ", ".join(mode["mode"] for mode in report["modes"])
    return f"modes {modes}; eBPF {'unavailable' if report.get('ebpf_unavailable') else 'on'}"


def sendpath_summary(report: dict) -> str:
    paths = ", ".join(path["path"] for path in report["paths"])
    return f"paths {paths}; copies {'unavailable' if report.get('copies_unavailable') else 'measured'}"


SUMMARIES = {"warmup": warmup_summary, "sendpath": sendpath_summary}


def main() -> int:
    print(f"labs_duration: Linux {platform.release()}, {os.cpu_count()} CPUs, euid {os.geteuid()}")
    print(f"reproduce: cd {REPO} && .venv/bin/python benchmarks/labs_duration.py")
    print(f"1-minute load average before: {os.getloadavg()[0]:.2f}")
    for name, summarise in SUMMARIES.items():
        elapsed, report, error = run_lab(name)
        verdict = "PASS" if elapsed < TARGET_S and report is not None else "MISS"
        detail = summarise(report) if report is not None else f"failed: {error}"
        print(f"  lab {name:<9} {elapsed:6.1f} s  (target < {TARGET_S:.0f} s) -> {verdict}   {detail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
