"""The dashboard's eBPF probes: faults, pagecache, writeback and sendpath, compiled into ONE program (one
function per tracepoint doing every probe's work: probes/ebpf/combined.py), read every interval, and closed on
every way out.

Compiling takes several seconds here, so `start()` compiles on a thread of its own: the /proc and residency
panels run from the first interval, and each eBPF panel says "starting" until the program is attached. A
probe that cannot run is reported unavailable with the reason and the fix, and the others carry on: one
whose required tracepoints this kernel lacks is left out of the program; one whose part of the program fails
to compile (the compiler's error is in its part) is left out and the rest compiled again; one whose reading
fails is no longer read. What stops them all (no root, no bcc, no headers) is said for each. Without BPF
privileges that is said at once, also while there is no process to trace yet: "waiting" is only for probes
that could run.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from mqinspect.sampling.snapshot import DASHBOARD_PROBES, ProbeState, ProbeStatus
from probes.ebpf.combined import CombinedProbe, missing_required
from probes.ebpf.loader import require_bpf_privileges
from probes.ebpf.registry import probe_entry
from probes.ebpf.session import TraceSession, program_text
from probes.errors import CapabilityMissing, ProbeError
from store.errors import StoreError

DOCTOR_FIX = "run `mqinspect doctor` to see what is missing and how to fix it"
NO_EBPF_REASON = "eBPF disabled with --no-ebpf"
NO_EBPF_FIX = "run without --no-ebpf (as root, or with CAP_BPF and CAP_PERFMON)"
NO_PROCESS_REASON = "no process holds the store's files yet: the probes trace the processes that do"
NO_PROCESS_FIX = "start the broker (tracing starts within 10 intervals), or give --pid"


class DrainedProbe(CombinedProbe):
    """The combined probe as the dashboard and the exporter read it: each interval's snapshots, without a
    running summary of the session, which neither shows (the exporter keeps totals of its own) and which
    cost every interval a fold of every probe's rows into the session's, growing with every file ever
    counted (~0.6 ms per interval with the big broker's 1,000 segments)."""

    def combine(self, _summary: dict[str, Any] | None, snapshot: dict[str, Any]) -> dict[str, Any]:
        return snapshot


def build_probe(name: str, pids: tuple[int, ...], store: Path | None) -> Any:
    """The registered probe `name` for these pids (none: every process) and store (its segments are named)."""
    return probe_entry(name).probe_class()(pids, store=store)


def dashboard_program_text(pids: tuple[int, ...], store: Path | None) -> str:
    """What `top --print-bpf` shows: the one program the dashboard's probes are compiled into, with its
    defines and map contents, for these pids (none: every process; the dashboard itself traces the store's
    holders once it has found them: their pids go into mqi_tgids) and store. Loads nothing."""
    return program_text(CombinedProbe([build_probe(name, pids, store) for name in DASHBOARD_PROBES]))


class ProbeSet:
    """The four sessions of one dashboard. Thread-safe: opened on a starter thread, read by the sampler."""

    def __init__(
        self,
        pids: tuple[int, ...],
        store: Path | None,
        *,
        enabled: bool = True,
        every_process_when_no_pids: bool = True,
        session_factory: Callable[[Any], TraceSession] = TraceSession,
        probe_factory: Callable[[str, tuple[int, ...], Path | None], Any] = build_probe,
        combine: Callable[[list[Any]], Any] = DrainedProbe,
    ):
        self._pids = pids
        self._store = store
        self._every_process_when_no_pids = every_process_when_no_pids
        self._session_factory = session_factory
        self._probe_factory = probe_factory
        self._combine = combine
        self._lock = threading.Lock()
        self._session: TraceSession | None = None
        self._closing = threading.Event()
        self._starter: threading.Thread | None = None
        state = ProbeState.STARTING if enabled else ProbeState.DISABLED
        reason, fix = (None, None) if enabled else (NO_EBPF_REASON, NO_EBPF_FIX)
        self._statuses = {name: ProbeStatus(name, state, reason, fix) for name in DASHBOARD_PROBES}
        self._waiting_for = (NO_PROCESS_REASON, NO_PROCESS_FIX)
        self.enabled = enabled

    def trace_pids(self, pids: tuple[int, ...]) -> None:
        """Trace these processes (before `start`). None: every process, or wait for some."""
        self._pids = pids

    def retarget(self, pids: tuple[int, ...]) -> None:
        """Trace `pids` from now on: the sessions are closed and compiled again for them, on the starter
        thread. Deferred (the caller asks again later) while a compile is still running."""
        if not self.enabled or pids == self._pids or (self._starter is not None and self._starter.is_alive()):
            return
        with self._lock:
            session, self._session = self._session, None
            self._statuses = {name: ProbeStatus(name, ProbeState.STARTING) for name in DASHBOARD_PROBES}
        if session is not None:
            session.close()
        self._pids = pids
        self.start()

    def waiting_for(self, reason: str, fix: str) -> None:
        """Why there is no process to trace yet, and what to do: shown while the probes wait for one."""
        self._waiting_for = (reason, fix)
        with self._lock:
            for name, status in self._statuses.items():
                if status.state == ProbeState.WAITING:
                    self._statuses[name] = ProbeStatus(name, ProbeState.WAITING, reason, fix)

    def statuses(self) -> tuple[ProbeStatus, ...]:
        with self._lock:
            return tuple(self._statuses[name] for name in DASHBOARD_PROBES)

    def start(self, *, background: bool = True) -> None:
        """Compile and attach every probe on a starter thread; with `background` False, wait for it.

        Always a thread of its own: TraceSession installs SIGINT/SIGTERM handlers when opened on the main
        thread, and those would swallow the Ctrl-C that ends a dashboard stream.
        """
        if not self.enabled:
            return
        if not self._pids and not self._every_process_when_no_pids:
            self._wait_for_a_process()
            return
        self._starter = threading.Thread(target=self._open_all, name="mqinspect-ebpf-start", daemon=True)
        self._starter.start()
        if not background:
            self._starter.join()

    def _wait_for_a_process(self) -> None:
        """No process to trace yet: waiting if the probes could run once there is one, else why not."""
        try:
            require_bpf_privileges()
        except CapabilityMissing as missing:
            state, reason, fix = ProbeState.UNAVAILABLE, str(missing), missing.fix
        else:
            state, (reason, fix) = ProbeState.WAITING, self._waiting_for
        with self._lock:
            self._statuses = {name: ProbeStatus(name, state, reason, fix) for name in DASHBOARD_PROBES}

    def _open_all(self) -> None:
        probes = {name: probe for name in DASHBOARD_PROBES if (probe := self._build(name)) is not None}
        while probes and not self._closing.is_set():
            combined = None
            try:
                combined = self._combine(list(probes.values()))
                session = self._session_factory(combined)
                session.open()
            except CapabilityMissing as missing:
                self._set_all(probes, str(missing), missing.fix)
                return
            except ProbeError as error:
                failed = combined.failed_probe(error) if combined is not None else None
                if failed is None or len(probes) == 1:
                    self._set_all(probes, str(error), DOCTOR_FIX)
                    return
                self._set(ProbeStatus(failed, ProbeState.UNAVAILABLE, str(error), DOCTOR_FIX))
                del probes[failed]
                continue
            except (StoreError, OSError, ValueError) as error:
                self._set_all(probes, str(error), DOCTOR_FIX)
                return
            self._running(session, combined)
            return

    def _build(self, name: str) -> Any | None:
        """The probe `name`, or None (reported unavailable) when it cannot be made or this kernel lacks a
        tracepoint it needs."""
        try:
            probe = self._probe_factory(name, self._pids, self._store)
            lacking = missing_required(probe.program)
        except (ProbeError, StoreError, OSError, ValueError) as error:
            self._set(ProbeStatus(name, ProbeState.UNAVAILABLE, str(error), DOCTOR_FIX))
            return None
        if lacking:
            reason = f"this kernel lacks the tracepoint(s) {', '.join(lacking)} that {name} needs"
            self._set(ProbeStatus(name, ProbeState.UNAVAILABLE, reason, DOCTOR_FIX))
            return None
        return probe

    def _running(self, session: TraceSession, combined: Any) -> None:
        with self._lock:
            if self._closing.is_set():  # closed while compiling: never leave a program attached
                session.close()
                return
            self._session = session
            for name, probe in combined.probes.items():
                self._statuses[name] = ProbeStatus(
                    name,
                    ProbeState.RUNNING,
                    tracepoints=tuple(combined.views[name].attached),
                    subject=probe.subject(),
                )

    def _set_all(self, probes: Iterable[str], reason: str, fix: str | None) -> None:
        for name in probes:
            self._set(ProbeStatus(name, ProbeState.UNAVAILABLE, reason, fix))

    def _set(self, status: ProbeStatus) -> None:
        with self._lock:
            self._statuses[status.name] = status

    def collect(self) -> dict[str, Any]:
        """Each running probe's snapshot of the interval since its previous one. A probe that fails while
        reading is reported unavailable and no longer read; the others are unaffected."""
        with self._lock:
            session = self._session
        if session is None:
            return {}
        try:
            snapshots = session.snapshot()
        except (ProbeError, OSError, RuntimeError, ValueError, KeyError) as error:
            self._drop(f"reading the probes failed: {error}")
            return {}
        with self._lock:
            for name, reason in session.probe.dropped.items():
                if self._statuses[name].state == ProbeState.RUNNING:
                    self._statuses[name] = ProbeStatus(name, ProbeState.UNAVAILABLE, reason, DOCTOR_FIX)
        return snapshots

    def _drop(self, reason: str) -> None:
        with self._lock:
            session, self._session = self._session, None
            for name, status in self._statuses.items():
                if status.state == ProbeState.RUNNING:
                    self._statuses[name] = ProbeStatus(name, ProbeState.UNAVAILABLE, reason, DOCTOR_FIX)
        if session is not None:
            session.close()

    def close(self) -> None:
        """Detach the program. Waits for a compile in progress, then closes what it attached. Idempotent."""
        self._closing.set()
        if self._starter is not None and self._starter is not threading.current_thread():
            self._starter.join()
        with self._lock:
            session, self._session = self._session, None
        if session is not None:
            session.close()
