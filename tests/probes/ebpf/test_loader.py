"""The loader and the session runner: integer-only parameters, the program as printed, missing capabilities
as one CapabilityMissing, the session's timing and signal handling (with a fake program), and, with BPF,
that every registered probe loads (doctor's load test, probes/ebpf/smoke.py) and that closing leaves no
program of ours behind."""

from __future__ import annotations

import os
import signal
import sys
import time
import tracemalloc
from dataclasses import dataclass, field

import pytest
from support import loaded_programs, programs_held_by, programs_held_by_anyone

from probes.ebpf import loader
from probes.ebpf.faults import PROGRAM, FaultsProbe
from probes.ebpf.loader import (
    FUNCTION_PREFIX,
    TRACEFS,
    Attachment,
    IntSetMap,
    ParameterError,
    Parameters,
    ProgramSpec,
    load_program,
    render_program,
)
from probes.ebpf.registry import PROBES
from probes.ebpf.session import ENDED_BY_COUNT, ENDED_BY_SIGNAL, ENDED_BY_UNTIL, TraceSession, program_text
from probes.ebpf.smoke import load_all_probes
from probes.ebpf.tracepoints import tracepoint_format_path
from probes.errors import CapabilityMissing

# --- parameters can only be integers ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", ['1); bpf_trace_printk("x"); (1', "123", 1.5, None, True, b"1", [1]], ids=repr
)
def test_a_define_must_be_an_int(value):
    with pytest.raises(ParameterError):
        Parameters.of(FILTER_TGIDS=value)


@pytest.mark.parametrize("name", ["lower", "X); evil(", "X=1 -DY", "", "1ABC", "X Y"])
def test_a_define_name_must_be_an_upper_case_identifier(name):
    with pytest.raises(ParameterError):
        Parameters(((name, 1),))


def test_defines_render_as_integer_cflags_only():
    parameters = Parameters.of(MAX_PAGES=65536, FILTER=0, NEGATIVE=-1)
    assert parameters.cflags() == ["-DMAX_PAGES=65536", "-DFILTER=0", "-DNEGATIVE=-1"]


@pytest.mark.parametrize("member", [("123",), (1.0,), (None,), (True,), ("1); x",)], ids=repr)
def test_a_set_member_must_be_integers(member):
    with pytest.raises(ParameterError):
        IntSetMap("mqi_tgids", (member,))


def test_sets_and_functions_must_be_ours():
    with pytest.raises(ParameterError):
        IntSetMap("tgids; drop", ((1,),))
    with pytest.raises(ParameterError):
        Attachment("exceptions:page_fault_user", "handler")


def test_a_pid_must_be_an_int_before_anything_else():
    with pytest.raises(ParameterError):
        FaultsProbe(['1); bpf_trace_printk("x"); (1'])  # type: ignore[list-item]


def test_the_printed_program_is_the_source_file_under_a_header_of_defines_and_map_contents():
    probe = FaultsProbe([os.getpid()])
    text = program_text(probe)
    header, source = text.split("\n\n", 1)
    assert source == PROGRAM.source_text()
    for flag in probe.parameters().cflags():
        assert f"//   {flag}" in header
    assert "-DFILTER_TGIDS=1" in header
    assert f"// map mqi_tgids is filled with: {os.getpid()}" in header
    assert all(line.startswith("//") for line in header.splitlines())


def test_render_shows_struct_keys_as_tuples():
    spec = ProgramSpec("faults.bpf.c", ())
    text = render_program(spec, Parameters.of(A=1), [IntSetMap("mqi_inodes", ((12, 8388609, 0),))])
    assert "// map mqi_inodes is filled with: (12, 8388609, 0)" in text


# --- missing capabilities are one CapabilityMissing pointing to doctor ------------------------------------


def test_no_privileges_is_capability_missing(monkeypatch):
    monkeypatch.setattr(loader, "can_trace", lambda _caps: False)
    with pytest.raises(CapabilityMissing) as raised:
        load_program(PROGRAM, FaultsProbe().parameters())
    assert "doctor" in raised.value.fix


def test_missing_bcc_is_capability_missing(monkeypatch):
    monkeypatch.setattr(loader, "can_trace", lambda _caps: True)
    monkeypatch.setitem(sys.modules, "bcc", None)  # makes `import bcc` fail
    with pytest.raises(CapabilityMissing) as raised:
        load_program(PROGRAM, FaultsProbe().parameters())
    assert "bcc" in str(raised.value) and "doctor" in raised.value.fix


def test_missing_kernel_headers_is_capability_missing(monkeypatch):
    monkeypatch.setattr(loader, "can_trace", lambda _caps: True)
    monkeypatch.setattr(loader, "_import_bcc", lambda: object())
    monkeypatch.setattr(loader, "_require_kernel_headers", _raise_headers_missing)
    with pytest.raises(CapabilityMissing, match="kernel headers"):
        load_program(PROGRAM, FaultsProbe().parameters())


def _raise_headers_missing():
    raise CapabilityMissing("no kernel headers at /lib/modules/x/build: bcc cannot compile BPF programs")


# --- the session, with a fake program ----------------------------------------------------------------------


class FakeProgram:
    def __init__(self):
        self.closed = False
        self.attached = ("fake:event",)
        self.skipped = ()

    def close(self):
        self.closed = True


@dataclass
class CountingProbe:
    """A probe whose snapshots are the interval lengths it was asked for."""

    name: str = "counting"
    program: ProgramSpec = PROGRAM
    started: bool = False
    on_collect: object = None
    collected: list[float] = field(default_factory=list)

    def parameters(self):
        return Parameters.of(X=1)

    def sets(self):
        return ()

    def subject(self):
        return "nothing"

    def start(self, program):
        self.started = True

    def collect(self, program, interval_s):
        if self.on_collect:
            self.on_collect()
        self.collected.append(interval_s)
        return interval_s

    def combine(self, summary, snapshot):
        return (summary or 0.0) + snapshot


class FakeClock:
    def __init__(self):
        self.now = 100.0
        self.actions: dict[float, object] = {}

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        """Time passes up to the first pending action, which then happens (it may raise, as signals do)."""
        due = [at for at in self.actions if at <= self.now + seconds]
        if not due:
            self.now += seconds
            return
        self.now = min(due)
        self.actions.pop(self.now)()


def _session(probe, clock, programs):
    def fake_loader(spec, parameters, sets):
        programs.append(FakeProgram())
        return programs[-1]

    return TraceSession(probe, clock=clock, sleep=clock.sleep, loader=fake_loader)


def test_count_intervals_then_the_program_is_closed_and_handlers_restored():
    clock, programs, probe = FakeClock(), [], CountingProbe()
    before = signal.getsignal(signal.SIGTERM)
    with _session(probe, clock, programs) as session:
        assert signal.getsignal(signal.SIGTERM) != before
        snapshots = list(session.intervals(1.0, count=3))
    assert snapshots == [1.0, 1.0, 1.0] and session.summary == 3.0 and session.ended_by == ENDED_BY_COUNT
    assert probe.started and programs[0].closed
    assert signal.getsignal(signal.SIGTERM) == before


def test_a_session_ends_after_the_interval_in_which_until_turned_true():
    """What ends `trace --pid P` when P exits: the interval that saw it is still yielded, then no more."""
    clock, programs, probe = FakeClock(), [], CountingProbe()
    with _session(probe, clock, programs) as session:
        snapshots = list(session.intervals(1.0, until=lambda: len(probe.collected) == 2))
    assert snapshots == [1.0, 1.0] and session.summary == 2.0
    assert session.ended_by == ENDED_BY_UNTIL and programs[0].closed


def test_duration_ends_with_a_short_last_interval():
    clock, programs, probe = FakeClock(), [], CountingProbe()
    with _session(probe, clock, programs) as session:
        snapshots = list(session.intervals(1.0, duration_s=2.5))
    assert snapshots == pytest.approx([1.0, 1.0, 0.5])


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_while_waiting_ends_the_session_with_the_partial_interval(signum):
    clock, programs, probe = FakeClock(), [], CountingProbe()
    clock.actions[101.5] = lambda: os.kill(os.getpid(), signum)
    with _session(probe, clock, programs) as session:
        snapshots = list(session.intervals(1.0))
    assert snapshots == pytest.approx([1.0, 0.5])
    assert session.summary == pytest.approx(1.5)
    assert session.ended_by == ENDED_BY_SIGNAL  # the CLI's exit status 130
    assert programs[0].closed


def test_a_signal_while_collecting_does_not_cut_the_interval_short():
    clock, programs = FakeClock(), []
    probe = CountingProbe(on_collect=lambda: os.kill(os.getpid(), signal.SIGTERM))
    with _session(probe, clock, programs) as session:
        snapshots = list(session.intervals(1.0, count=5))
    assert snapshots[0] == 1.0 and len(snapshots) <= 2  # the interval completes, then the session ends
    assert programs[0].closed


def test_an_exception_while_collecting_still_closes_the_program():
    clock, programs = FakeClock(), []

    def explode():
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError), _session(CountingProbe(on_collect=explode), clock, programs) as session:
        list(session.intervals(1.0, count=2))
    assert programs[0].closed


def test_closing_twice_is_harmless():
    clock, programs = FakeClock(), []
    session = _session(CountingProbe(), clock, programs)
    session.open()
    session.close()
    session.close()
    assert programs[0].closed


# --- with BPF -------------------------------------------------------------------------------------------


@pytest.mark.requires_bpf
def test_every_registered_probe_loads_in_a_child_and_leaves_nothing_loaded():
    before = set(loaded_programs())
    results = load_all_probes()
    assert [result.probe for result in results] == [entry.name for entry in PROBES]
    for entry, result in zip(PROBES, results, strict=True):
        assert result.loaded, result.error
        # skipped exactly the optional tracepoints this kernel lacks (its tracefs has no format file for them)
        lacking = {tp for tp in entry.optional if not tracepoint_format_path(TRACEFS, tp).exists()}
        assert set(result.skipped_tracepoints) == lacking
    # the children are gone, and what they loaded with them. A program of ours loaded since may belong to
    # another session running at the same time, which holds it while it runs; a left-behind one stays
    # loaded and held by nobody, on a second look too.
    assert not _left_behind(before) or not _left_behind(before, after_s=1.0)


def _left_behind(before: set[int], after_s: float = 0.0) -> set[int]:
    time.sleep(after_s)
    ours = {number for number, name in loaded_programs().items() if name.startswith(FUNCTION_PREFIX)}
    return (ours - before) - programs_held_by_anyone()


@pytest.mark.requires_bpf
def test_a_loaded_program_is_listed_by_bpftool_until_closed():
    program = load_program(PROGRAM, FaultsProbe().parameters())
    try:
        held = programs_held_by(os.getpid())
        functions = {a.function for a in PROGRAM.attachments if a.tracepoint in program.attached}
        assert len(held) == len(functions) >= 4  # a program per function, on one or more tracepoints
        assert held <= set(loaded_programs())
    finally:
        program.close()
    assert held.isdisjoint(loaded_programs())


# A hash map as large as the dashboard's folio maps, and a per-CPU one, to be emptied by LoadedProgram.drain.
_DRAINED_MAPS_TEXT = """
struct mqi_key { u64 first; u32 second; u32 pad; };
struct mqi_value { u64 counts[5]; };
BPF_HASH(mqi_big, struct mqi_key, struct mqi_value, 131072);
BPF_PERCPU_HASH(mqi_per_cpu, u32, u64, 16384);
"""


@pytest.mark.requires_bpf
def test_draining_takes_every_entry_once_with_arrays_for_what_the_map_holds_not_its_capacity():
    """bcc's batch drain allocates arrays for the map's max_entries at every call (8 MiB here, for a map
    holding seven entries); ours asks the kernel DRAIN_BATCH_ENTRIES at a time, going on from the bucket
    each call stopped at, so a map fuller than one batch is still emptied whole."""
    from bcc import BPF

    program = loader.LoadedProgram(BPF(text=_DRAINED_MAPS_TEXT), (), ())
    try:
        big, per_cpu = program.table("mqi_big"), program.table("mqi_per_cpu")
        for count in (0, 7, 2_000):  # 2,000: more than one batch call takes
            for number in range(count):
                big[big.Key(number, number * 7, 0)] = big.Leaf((number, 1, 2, 3, 4))
                per_cpu[per_cpu.Key(number)] = per_cpu.Leaf(*([number] * len(per_cpu.Leaf())))
            tracemalloc.start()
            try:
                drained = program.drain("mqi_big")
                peak_bytes = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            entries = sorted((key.first, key.second, tuple(value.counts)) for key, value in drained)
            assert entries == [(n, n * 7, (n, 1, 2, 3, 4)) for n in range(count)]
            per_cpu_entries = sorted((key, tuple(value)) for key, value in program.drain("mqi_per_cpu"))
            assert per_cpu_entries == [(n, (n,) * len(per_cpu.Leaf())) for n in range(count)]
            assert big.items() == [] and per_cpu.items() == []
            if count < 10:
                assert peak_bytes < 1 << 20, f"{peak_bytes:,} bytes allocated to drain {count} entries"
    finally:
        program.close()
