"""Public entry points of the dashboard, for `mqinspect top`, `mqinspect replay` and `mqinspect demo`.

run_dashboard(TopOptions(...))   the interactive Textual app until the user quits (q)
sample_once(TopOptions(...))     one TopSnapshot, rates over one interval
stream_snapshots(options, count) snapshots one interval apart, for --count and non-terminal output
replay_dashboard(path)           recorded snapshots through the same app, with pause and seek
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mqinspect.dashboard.recording import SnapshotRecorder, read_recording
from mqinspect.dashboard.sampler import Sampler, SamplerSettings, SamplerThread
from mqinspect.dashboard.snapshot import TopSnapshot
from mqinspect.errors import BadInput
from probes.procfs import PROC_ROOT

if TYPE_CHECKING:  # the Textual app is imported by the two functions that run it: printed frames need none
    from mqinspect.dashboard.app import DashboardApp

MIN_INTERVAL_S = 0.1


@dataclass(frozen=True)
class TopOptions:
    store_dir: Path | None = None
    pids: tuple[int, ...] = ()
    interval_s: float = 1.0
    ebpf: bool = True
    record_path: Path | None = None


def validate(options: TopOptions) -> None:
    """BadInput for options no sampler could run with: a bad interval, a pid that is not running."""
    if options.interval_s < MIN_INTERVAL_S:
        raise BadInput(f"--interval {options.interval_s}: the shortest interval is {MIN_INTERVAL_S} s")
    for pid in options.pids:
        if pid <= 0 or not (PROC_ROOT / str(pid)).is_dir():
            raise BadInput(f"--pid {pid}: no such process")


def make_sampler(options: TopOptions) -> Sampler:
    validate(options)
    settings = SamplerSettings(options.store_dir, tuple(options.pids), options.interval_s, options.ebpf)
    return Sampler(settings)


class LiveFeed:
    """The sampler thread as the app's feed: snapshots are posted to the app, and recorded if asked."""

    def __init__(self, sampler: Sampler, interval_s: float, recorder: SnapshotRecorder | None = None):
        self.sampler = sampler
        self.interval_s = interval_s
        self.recorder = recorder
        self._thread: SamplerThread | None = None

    def attach(self, app: DashboardApp) -> None:
        self._thread = SamplerThread(
            self.sampler,
            self.interval_s,
            app.receive_from_thread,
            record=self.recorder.write if self.recorder else None,
            on_error=app.fail_from_thread,
        )
        self._thread.start()

    def focus(self, path: str | None, name: str | None) -> None:
        self.sampler.focus(path, name)

    def detach(self) -> None:
        if self._thread is not None:
            self._thread.stop()  # joins: the thread closes every eBPF session on its way out


def run_dashboard(options: TopOptions) -> None:
    """The interactive dashboard until the user quits (q, Ctrl-C or SIGTERM). No BPF program outlives it."""
    from mqinspect.dashboard.app import DashboardApp

    sampler = make_sampler(options)
    recorder = SnapshotRecorder(options.record_path) if options.record_path else None
    feed = LiveFeed(sampler, options.interval_s, recorder)
    app = DashboardApp(feed=feed)
    try:
        with _terminal_apart_from_fd2(), _sigterm_exits(app):
            app.run()
    finally:
        feed.detach()
        sampler.close()
        if recorder is not None:
            recorder.close()
    if app.failure is not None:
        raise app.failure


def replay_dashboard(path: Path) -> None:
    """Recorded snapshots through the same dashboard: space pauses, ',' and '.' step, '[' and ']' jump 10."""
    from mqinspect.dashboard.app import DashboardApp

    app = DashboardApp(frames=read_recording(path))
    with _sigterm_exits(app):
        app.run()


def sample_once(options: TopOptions) -> TopSnapshot:
    """One snapshot, its rates over one interval. eBPF probes are compiled first, then detached."""
    return next(stream_snapshots(options, 1))


def stream_snapshots(options: TopOptions, count: int | None) -> Iterator[TopSnapshot]:
    """`count` snapshots (None: until the caller stops), one interval apart; recorded if asked. The probes
    are compiled before the first interval starts, and detached when the iterator is closed."""
    sampler = make_sampler(options)
    recorder = SnapshotRecorder(options.record_path) if options.record_path else None
    try:
        sampler.open(background=False)
        started, taken = time.monotonic(), 0
        while count is None or taken < count:
            time.sleep(max(0.0, started + (taken + 1) * options.interval_s - time.monotonic()))
            taken += 1
            snapshot = sampler.sample()
            if recorder is not None:
                recorder.write(snapshot)
            yield snapshot
    finally:
        sampler.close()
        if recorder is not None:
            recorder.close()


@contextlib.contextmanager
def _terminal_apart_from_fd2() -> Iterator[None]:
    """Give Textual its own descriptor for the terminal while it runs.

    Textual writes to sys.__stderr__ (fd 2), and bcc's compile sends fd 2 to a scratch file for a second or
    two to keep clang's diagnostics: frames drawn meanwhile would be lost. A duplicate of fd 2 is the same
    terminal but is not redirected.
    """
    original = sys.__stderr__
    if original is None:
        yield
        return
    terminal = os.fdopen(os.dup(original.fileno()), "w", encoding=original.encoding, errors="replace")
    sys.__stderr__ = terminal
    try:
        yield
    finally:
        sys.__stderr__ = original
        terminal.close()


@contextlib.contextmanager
def _sigterm_exits(app: DashboardApp) -> Iterator[None]:
    """SIGTERM quits the app like q, so the sampler closes the probes on the normal way out."""
    if not _in_main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda _signum, _frame: app.exit())
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()
