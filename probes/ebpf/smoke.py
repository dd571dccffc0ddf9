"""Prove that BPF programs compile, load and attach here, by doing it once with a program that does nothing.

Each attempt runs in a child Python process: libbcc writes its own diagnostics to fd 2, and a compiler crash
must not take the caller down. Run as `python -m probes.ebpf.smoke tracepoint|fentry`.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass

from probes.ebpf.child import run_json_child

# Fixed texts: nothing from the user reaches them.
PROGRAMS = {
    "tracepoint": "TRACEPOINT_PROBE(syscalls, sys_enter_getppid) { return 0; }",
    "fentry": "KFUNC_PROBE(do_nanosleep) { return 0; }",
}


@dataclass(frozen=True)
class SmokeResult:
    loaded: bool
    seconds: float
    error: str | None


def run_smoke(kind: str, timeout_s: float = 60.0) -> SmokeResult:
    """Compile, load, attach and detach the `kind` program in a child process."""
    answer, error, seconds = run_json_child("probes.ebpf.smoke", kind, timeout_s)
    if answer is None:
        return SmokeResult(False, seconds, error)
    return SmokeResult(answer["loaded"], answer["seconds"], answer["error"])


def _attempt(kind: str) -> dict:
    started = time.monotonic()
    try:
        from bcc import BPF

        program = BPF(text=PROGRAMS[kind])
        program.cleanup()
        error = None
    except Exception as exc:  # bcc raises bare Exception for load failures
        error = f"{type(exc).__name__}: {exc}"
    return {"loaded": error is None, "seconds": round(time.monotonic() - started, 3), "error": error}


if __name__ == "__main__":
    print(json.dumps(_attempt(sys.argv[1])))
