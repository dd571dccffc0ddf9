"""The generic tracing session: one probe's BPF program compiled once, attached for the session, read every
interval into one frozen snapshot, and detached on every way out (normal end, Ctrl-C, SIGTERM, exceptions).

A probe plugs in by being an object with the `Probe` shape (see probes/ebpf/faults.py):

    name        short name ("faults"), as in `mqinspect trace NAME`
    program     its ProgramSpec: programs/NAME.bpf.c and the tracepoint each function attaches to
    parameters()  the integer -D defines;  sets()  the IntSetMaps filled after loading (pids, inodes)
    subject()   what is traced, for the startup line ("page faults of pid 123")
    start(program)                  baselines taken right after attaching
    collect(program, interval_s)    one frozen dataclass snapshot of the interval that just ended
    combine(summary, snapshot)      the running summary with one more interval folded in

and by its entry in probes/ebpf/registry.py (ScopedProbe, in probes/ebpf/scope.py, gives most of it).
Several probes in one session: probes/ebpf/combined.py's CombinedProbe is a Probe too, whose one program
has one function per tracepoint doing every probe's work, and whose snapshot is a dict of theirs by name.

Signals: while a session is open, SIGINT and SIGTERM end it the same way: the current sleep stops, the
partial interval is collected and yielded, and `intervals()` returns, so the caller can print the summary
(`ended_by` is then ENDED_BY_SIGNAL: the CLI exits 130). A second signal raises KeyboardInterrupt at once
(for a caller stuck writing to a full pipe). Cleanup runs with both signals blocked, so it cannot be cut
short; atexit is the last resort for a caller that never closes the session.

A session also ends when `until()` turns true after an interval (the CLI passes "every traced process has
exited", so `trace --pid P` ends with P, as strace -p and perf stat -p do).
"""

from __future__ import annotations

import atexit
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Generic, Protocol, TypeVar

from probes.ebpf.loader import IntSetMap, LoadedProgram, Parameters, ProgramSpec, load_program, render_program

SnapshotT = TypeVar("SnapshotT")

ENDING_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# Why `intervals()` returned.
ENDED_BY_COUNT = "count"
ENDED_BY_DURATION = "duration"
ENDED_BY_SIGNAL = "signal"
ENDED_BY_UNTIL = "until"


class Probe(Protocol[SnapshotT]):
    name: str
    program: ProgramSpec

    def parameters(self) -> Parameters: ...

    def sets(self) -> Sequence[IntSetMap]: ...

    def subject(self) -> str: ...

    def start(self, program: LoadedProgram) -> None: ...

    def collect(self, program: LoadedProgram, interval_s: float) -> SnapshotT: ...

    def combine(self, summary: SnapshotT | None, snapshot: SnapshotT) -> SnapshotT: ...


def program_text(probe: Probe[Any]) -> str:
    """What `--print-bpf` shows: the program with its defines and map contents, without loading anything."""
    return render_program(probe.program, probe.parameters(), probe.sets())


class SessionInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived while the session was waiting: the session ends, with its summary."""


class TraceSession(Generic[SnapshotT]):
    """Use as `with TraceSession(probe) as session:`, then `for snapshot in session.intervals(1.0): ...`."""

    def __init__(
        self,
        probe: Probe[SnapshotT],
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        loader: Callable[..., LoadedProgram] = load_program,
    ):
        self.probe = probe
        self._clock = clock
        self._sleep = sleep
        self._loader = loader
        self._program: LoadedProgram | None = None
        self._previous_handlers: dict[int, Any] = {}
        self._waiting = False  # a signal may interrupt only the wait between intervals
        self.stop_requested = False
        self.started_s: float | None = None
        self._last_read_s = 0.0
        self.summary: SnapshotT | None = None
        self.ended_by: str | None = None  # one of the ENDED_BY_* once intervals() has returned

    # --- opening and closing

    def __enter__(self) -> TraceSession[SnapshotT]:
        self.open()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def open(self) -> None:
        """Compile, load and attach the probe's program (one compile), then let the probe take baselines."""
        self._install_signal_handlers()
        atexit.register(self.close)
        self._waiting = True  # Ctrl-C during the compile ends the session before it starts
        try:
            self._program = self._loader(self.probe.program, self.probe.parameters(), self.probe.sets())
            self._waiting = False
            self.probe.start(self._program)
        except BaseException:
            self.close()
            raise
        finally:
            self._waiting = False
        self.started_s = self._last_read_s = self._clock()

    def close(self) -> None:
        """Detach and free the program, restore the signal handlers. Idempotent."""
        blocked = _block(ENDING_SIGNALS)
        try:
            program, self._program = self._program, None
            if program is not None:
                program.close()
            self._restore_signal_handlers()
            atexit.unregister(self.close)
        finally:
            _unblock(blocked)

    @property
    def attached_tracepoints(self) -> tuple[str, ...]:
        return self._program.attached if self._program else ()

    @property
    def skipped_tracepoints(self) -> tuple[str, ...]:
        return self._program.skipped if self._program else ()

    # --- reading

    def snapshot(self) -> SnapshotT:
        """The snapshot of the interval since the previous one (or since the start), folded into `summary`."""
        if self._program is None:
            raise RuntimeError("the session is not open")
        now = self._clock()
        snapshot = self.probe.collect(self._program, max(now - self._last_read_s, 0.0))
        self._last_read_s = now
        self.summary = self.probe.combine(self.summary, snapshot)
        return snapshot

    def intervals(
        self,
        interval_s: float,
        *,
        count: int | None = None,
        duration_s: float | None = None,
        until: Callable[[], bool] | None = None,
    ) -> Iterator[SnapshotT]:
        """A snapshot at the end of each interval, until `count` intervals, `duration_s` seconds, a signal, or
        `until()` is true after an interval (asked once its snapshot is taken). `ended_by` says which.

        Intervals are timed against the start, so rendering time does not make them drift. A signal ends the
        session with one last snapshot of the partial interval.
        """
        if interval_s <= 0:
            raise ValueError("the interval must be positive")
        start = self._last_read_s
        end = None if duration_s is None else start + duration_s
        taken = 0
        while not self.stop_requested and (count is None or taken < count):
            due = start + (taken + 1) * interval_s
            if end is not None:
                due = min(due, end)
            self._wait_until(due)
            if self.stop_requested:
                break
            taken += 1
            yield self.snapshot()
            if end is not None and due >= end:
                self.ended_by = ENDED_BY_DURATION
                return
            if until is not None and until():
                self.ended_by = ENDED_BY_UNTIL
                return
        if not self.stop_requested:
            self.ended_by = ENDED_BY_COUNT
            return
        self.ended_by = ENDED_BY_SIGNAL
        if self._clock() > self._last_read_s:
            yield self.snapshot()

    def _wait_until(self, due: float) -> None:
        self._waiting = True
        try:
            while not self.stop_requested and (left := due - self._clock()) > 0:
                self._sleep(left)
        except SessionInterrupted:
            pass
        finally:
            self._waiting = False

    # --- signals

    def _on_ending_signal(self, signum: int, _frame: object) -> None:
        already = self.stop_requested
        self.stop_requested = True
        if already or self._waiting:
            raise SessionInterrupted(signal.Signals(signum).name)

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # only the main thread may set handlers; its own Ctrl-C handling then applies
        for signum in ENDING_SIGNALS:
            self._previous_handlers[signum] = signal.signal(signum, self._on_ending_signal)

    def _restore_signal_handlers(self) -> None:
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers.clear()


def _block(signals: Sequence[int]) -> set[int] | None:
    if threading.current_thread() is not threading.main_thread():
        return None
    return set(signal.pthread_sigmask(signal.SIG_BLOCK, signals))


def _unblock(previous: set[int] | None) -> None:
    if previous is not None:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
