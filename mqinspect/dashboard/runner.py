"""Entry points of the interactive dashboard, for `mqinspect top`, `mqinspect replay` and `mqinspect demo`.

run_dashboard(TopOptions(...))   the interactive Textual app until the user quits (q)
replay_dashboard(path)           recorded snapshots through the same app, with pause and seek

Snapshots without the app (--once, --count, non-terminal output) come from mqinspect.sampling.stream.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from mqinspect.dashboard.app import DashboardApp
from mqinspect.sampling.recording import SnapshotRecorder, read_recording
from mqinspect.sampling.sampler import Sampler, SamplerThread
from mqinspect.sampling.stream import TopOptions, make_sampler


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

    def set_interval(self, interval_s: float) -> None:
        self.interval_s = interval_s
        if self._thread is not None:
            self._thread.set_interval(interval_s)

    def focus(self, path: str | None, name: str | None) -> None:
        self.sampler.focus(path, name)

    def draw_only(self, paths: frozenset[str]) -> None:
        self.sampler.draw_only(paths)

    def detach(self) -> None:
        if self._thread is not None:
            self._thread.stop()  # joins: the thread closes every eBPF session on its way out


def run_dashboard(options: TopOptions) -> None:
    """The interactive dashboard until the user quits (q, Ctrl-C or SIGTERM). No BPF program outlives it."""
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
    app = DashboardApp(frames=read_recording(path))
    with _sigterm_exits(app):
        app.run()


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
