"""One probe traced inside a combined program (probes/ebpf/combined.py) with the dashboard's other probes, as
the dashboard runs it: `CombinedTraceSession(probe)` is a TraceSession whose snapshots are that probe's alone.

With MQINSPECT_COMBINED=1 the probe tests' TraceSession is this one (conftest.py), so every test of a probe
against its ground truth (perf stat, fincore, cachestat, strace, /proc) runs through the combined program:

    MQINSPECT_COMBINED=1 .venv/bin/python -m pytest tests/probes/ebpf
"""

from __future__ import annotations

from typing import Any

from mqinspect.sampling.snapshot import DASHBOARD_PROBES
from probes.ebpf.combined import CombinedProbe
from probes.ebpf.registry import PROBES
from probes.ebpf.session import TraceSession


def companions_of(probe: Any) -> list[Any]:
    """`probe` and the dashboard's other probes, in the registry's order, with its scope (pids, store)."""
    chosen = []
    for entry in PROBES:
        if entry.name == probe.name:
            chosen.append(probe)
        elif entry.name in DASHBOARD_PROBES:
            chosen.append(entry.probe_class()(probe.pids, store=probe.store))
    return chosen


class OneOfCombined:
    """The Probe a CombinedTraceSession runs: the combined probe, whose snapshots are `probe`'s alone."""

    def __init__(self, probe: Any):
        self.inner = probe
        self.combined = CombinedProbe(companions_of(probe))
        self.name = probe.name
        self.program = self.combined.program

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def parameters(self) -> Any:
        return self.combined.parameters()

    def sets(self) -> Any:
        return self.combined.sets()

    def start(self, program: Any) -> None:
        self.combined.start(program)

    def collect(self, program: Any, interval_s: float) -> Any:
        snapshots = self.combined.collect(program, interval_s)
        if self.name in self.combined.dropped:
            raise AssertionError(self.combined.dropped[self.name])
        return snapshots[self.name]

    def combine(self, summary: Any, snapshot: Any) -> Any:
        return self.inner.combine(summary, snapshot)


class CombinedTraceSession(TraceSession):
    def __init__(self, probe: Any, **kwargs: Any):
        super().__init__(OneOfCombined(probe), **kwargs)

    @property
    def attached_tracepoints(self) -> tuple[str, ...]:
        view = self.probe.combined.views.get(self.probe.name)
        return view.attached if view and self._program else ()

    @property
    def skipped_tracepoints(self) -> tuple[str, ...]:
        view = self.probe.combined.views.get(self.probe.name)
        return view.skipped if view and self._program else ()
