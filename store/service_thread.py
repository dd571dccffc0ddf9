"""ServiceThread, as RocketMQ names it: a daemon thread that runs `run_once` until stopped.

`wakeup` cuts the current wait short (a put wakes the flush and dispatch threads). An error that escapes
`run_once` ends the thread; it is kept in `error`, and `on_failure` lets a service release its waiters.
"""

from __future__ import annotations

import threading


class ServiceThread:
    name = "ServiceThread"
    join_timeout_s = 10.0

    def __init__(self) -> None:
        self._stopped = threading.Event()
        self._wakeup = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        self.error: BaseException | None = None

    def start(self) -> None:
        self._thread.start()

    def wakeup(self) -> None:
        self._wakeup.set()

    def stop(self) -> None:
        self._stopped.set()
        self._wakeup.set()
        self._thread.join(timeout=self.join_timeout_s)

    def _wait(self, seconds: float) -> None:
        self._wakeup.wait(seconds)
        self._wakeup.clear()

    def _loop(self) -> None:
        try:
            while not self._stopped.is_set():
                self.run_once()
        except BaseException as error:
            self.error = error
            self.on_failure(error)

    def run_once(self) -> None:
        raise NotImplementedError

    def on_failure(self, error: BaseException) -> None:
        """Called once when `run_once` raised; services with waiters wake them here."""
