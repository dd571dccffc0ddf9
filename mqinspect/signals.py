"""Ending signals handled like Ctrl-C, so that a command killed by `kill` or a closed terminal cleans up
(workers stopped, probes detached, temporary files removed) instead of dying on the spot."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator, Sequence


class Terminated(KeyboardInterrupt):
    """An ending signal other than Ctrl-C, raised as Ctrl-C's KeyboardInterrupt is (so the same cleanup runs):
    a command whose normal stop is SIGTERM (a service manager's) tells it apart by this type."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def signals_interrupt(signals: Sequence[int] = (signal.SIGTERM,)) -> Iterator[None]:
    """Inside, each of `signals` raises Terminated (a KeyboardInterrupt) in the main thread; the previous
    handlers come back on the way out. Off the main thread (where Python cannot set handlers) it does
    nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, _frame: object) -> None:
        raise Terminated(signum)

    previous = {signum: signal.signal(signum, interrupt) for signum in signals}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
