"""Doctor's proofs that BPF programs compile, load and attach here, by doing it once:

- `run_smoke("tracepoint" | "fentry")`: a program that does nothing, on a tracepoint or on an fentry hook;
- `load_all_probes()`: the program of every registered probe (probes/ebpf/registry.py), as `mqinspect trace
  NAME` compiles it for every process and file, attached to every tracepoint this kernel has, then detached.

Each attempt runs in a child Python process (`python -m probes.ebpf.smoke KIND`, KIND a smoke kind or a
probe's name): libbcc writes its own diagnostics to fd 2, and a compiler crash must not take the caller down.
"""

from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from probes.ebpf.child import run_json_child
from probes.ebpf.loader import load_program
from probes.ebpf.registry import PROBES, probe_entry

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


@dataclass(frozen=True)
class ProbeLoadResult:
    probe: str
    loaded: bool
    seconds: float
    error: str | None
    skipped_tracepoints: tuple[str, ...] = ()


def run_smoke(kind: str, timeout_s: float = 60.0) -> SmokeResult:
    """Compile, load, attach and detach the `kind` program in a child process."""
    answer, error, seconds = run_json_child("probes.ebpf.smoke", kind, timeout_s)
    if answer is None:
        return SmokeResult(False, seconds, error)
    return SmokeResult(answer["loaded"], answer["seconds"], answer["error"])


def load_all_probes(timeout_s: float = 60.0, parallel: int = 2) -> tuple[ProbeLoadResult, ...]:
    """Compile, load, attach and detach each registered probe's program, each in its own child process;
    `parallel` at a time, since each compile keeps one core busy for about a second."""
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        return tuple(pool.map(lambda entry: _load_in_child(entry.name, timeout_s), PROBES))


def _load_in_child(probe: str, timeout_s: float) -> ProbeLoadResult:
    answer, error, seconds = run_json_child("probes.ebpf.smoke", probe, timeout_s)
    if answer is None:
        return ProbeLoadResult(probe, False, seconds, error)
    return ProbeLoadResult(
        probe, answer["loaded"], answer["seconds"], answer["error"], tuple(answer["skipped_tracepoints"])
    )


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


def _attempt_probe(name: str) -> dict:
    started = time.monotonic()
    skipped: tuple[str, ...] = ()
    try:
        probe = probe_entry(name).probe_class()()
        program = load_program(probe.program, probe.parameters())
        skipped = program.skipped
        program.close()
        error = None
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
    return {
        "loaded": error is None,
        "seconds": round(time.monotonic() - started, 3),
        "error": error,
        "skipped_tracepoints": list(skipped),
    }


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: python -m probes.ebpf.smoke {'|'.join(PROGRAMS)}|PROBE")
    kind = sys.argv[1]
    print(json.dumps(_attempt(kind) if kind in PROGRAMS else _attempt_probe(kind)))
