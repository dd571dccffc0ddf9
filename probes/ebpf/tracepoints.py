"""Tracepoints as tracefs shows them. Stable tracepoints only: no kprobes, no fentry.

Which tracepoints each probe attaches to, required or optional, is said in probes/ebpf/registry.py.
"""

from __future__ import annotations

from pathlib import Path

from probes.ebpf.registry import all_tracepoints


def tracepoint_format_path(tracefs: Path, tracepoint: str) -> Path:
    category, name = tracepoint.split(":", 1)
    return tracefs / "events" / category / name / "format"


def present_tracepoints(tracefs: Path) -> frozenset[str]:
    """Every tracepoint of every probe that this kernel offers under the mounted tracefs."""
    return frozenset(tp for tp in all_tracepoints() if tracepoint_format_path(tracefs, tp).exists())
