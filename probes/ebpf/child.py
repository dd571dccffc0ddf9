"""Run a BPF load test in a child Python process and read its one-line JSON answer.

A child keeps libbcc's own stderr output away from the caller, and a compiler crash or hang cannot take the
caller down: it becomes an answer with an error.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

_REPO = Path(__file__).resolve().parents[2]


def run_json_child(module: str, argument: str, timeout_s: float) -> tuple[dict | None, str | None, float]:
    """(answer, error, seconds): the last stdout line of `python -m module argument` parsed as JSON, or None
    and why not (a timeout, or the child's last stderr line)."""
    started = time.monotonic()
    try:
        child = subprocess.run(
            [sys.executable, "-m", module, argument],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            cwd=_REPO,
        )
    except subprocess.TimeoutExpired:
        return None, f"no answer within {timeout_s:.0f} s", time.monotonic() - started
    try:
        return json.loads(child.stdout.strip().splitlines()[-1]), None, time.monotonic() - started
    except (IndexError, json.JSONDecodeError):
        lines = [line.strip() for line in child.stderr.splitlines() if line.strip()]
        detail = lines[-1] if lines else f"exit status {child.returncode}"
        return None, detail, time.monotonic() - started
