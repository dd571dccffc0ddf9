"""The dashboard's probes as one combined program (mqinspect/sampling/probe_set.py), with fake sessions: a
probe this kernel cannot run is left out and the others run; a probe whose reading fails is reported and the
others go on; closing during the compile leaves nothing attached. The real combined program against ground
truth: tests/probes/ebpf/test_combined.py."""

from __future__ import annotations

import threading

from fakes import FakeProbe, FakeSession

from mqinspect.sampling.probe_set import ProbeSet
from mqinspect.sampling.snapshot import DASHBOARD_PROBES, ProbeState
from probes.ebpf.loader import Attachment, ProgramSpec
from probes.errors import CapabilityMissing


class SpecProbe(FakeProbe):
    """A fake probe with a program that attaches to one tracepoint: present, or absent from this kernel."""

    def __init__(self, name: str, tracepoint: str = "sched:sched_switch"):
        super().__init__(name)
        self.program = ProgramSpec(f"{name}.bpf.c", (Attachment(tracepoint, f"mqi_{name}"),))


class FakeCombined:
    """What ProbeSet needs of a CombinedProbe; `failing` names a probe whose reading fails."""

    def __init__(self, probes, failing: str | None = None):
        self.probes = {probe.name: probe for probe in probes}
        self.views: dict = {}
        self.dropped: dict[str, str] = {}
        self.failing = failing

    def attach(self) -> None:
        for name in self.probes:
            self.views[name] = type("View", (), {"attached": ("tp:x",)})()

    def collect(self) -> dict:
        if self.failing in self.probes:
            self.dropped[self.failing] = "reading the probe failed: map read failed"
        return {name: object() for name in self.probes if name not in self.dropped}

    def failed_probe(self, _error) -> None:
        return None


class FakeCombinedSession(FakeSession):
    """A session of a FakeCombined: opens (or fails, or waits) as FakeSession does, then attaches it."""

    def open(self):
        super().open()
        self.probe.attach()

    def snapshot(self):
        return self.probe.collect()


def probe_set(present=lambda name: True, failing=None, **session_kwargs):
    sessions = []

    def factory(combined):
        session = FakeCombinedSession(combined, **session_kwargs)
        sessions.append(session)
        return session

    probes = ProbeSet(
        (),
        None,
        session_factory=factory,
        probe_factory=lambda name, pids, store: SpecProbe(
            name, "sched:sched_switch" if present(name) else "no:such"
        ),
        combine=lambda chosen: FakeCombined(chosen, failing),
    )
    return probes, sessions


def test_a_probe_whose_tracepoint_this_kernel_lacks_is_unavailable_and_the_others_run_in_one_program():
    probes, sessions = probe_set(present=lambda name: name != "faults")
    probes.start(background=False)
    statuses = {status.name: status for status in probes.statuses()}
    assert statuses["faults"].state == ProbeState.UNAVAILABLE
    assert statuses["faults"].reason == "this kernel lacks the tracepoint(s) no:such that faults needs"
    assert statuses["writeback"].state == ProbeState.RUNNING and statuses["writeback"].subject
    (session,) = sessions  # one program for the three
    assert list(session.probe.probes) == ["pagecache", "writeback", "sendpath"]
    assert set(probes.collect()) == {"pagecache", "writeback", "sendpath"}
    probes.close()
    assert session.closed


def test_what_stops_every_probe_is_said_for_each():
    probes, _sessions = probe_set(fail_open=CapabilityMissing("no bcc", fix="apt-get install bcc"))
    probes.start(background=False)
    for status in probes.statuses():
        assert (status.state, status.reason, status.fix) == (
            ProbeState.UNAVAILABLE,
            "no bcc",
            "apt-get install bcc",
        )
    assert probes.collect() == {}


def test_a_probe_that_fails_while_reading_is_reported_and_the_others_go_on():
    probes, sessions = probe_set(failing="sendpath")
    probes.start(background=False)
    assert set(probes.collect()) == {"faults", "pagecache", "writeback"}
    status = next(s for s in probes.statuses() if s.name == "sendpath")
    assert status.state == ProbeState.UNAVAILABLE and "map read failed" in status.reason
    assert set(probes.collect()) == {"faults", "pagecache", "writeback"}
    assert not sessions[0].closed  # the others' program stays
    probes.close()
    assert sessions[0].closed


def test_closing_during_a_compile_leaves_nothing_attached():
    compiling = threading.Event()
    probes, sessions = probe_set(opened=compiling)
    probes.start()  # the "compile" waits for the event
    closer = threading.Thread(target=probes.close)
    closer.start()
    compiling.set()
    closer.join(5)
    assert not closer.is_alive()
    assert all(session.closed for session in sessions)  # none, if the close came before the compile
    assert probes.collect() == {}  # nothing left to read
    assert [s.name for s in probes.statuses()] == list(DASHBOARD_PROBES)
