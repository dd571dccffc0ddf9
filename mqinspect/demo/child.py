"""What every demo child process shares: dying with the demo, stopping on SIGTERM, and talking to the demo.

A child talks to the demo through its stdout, one JSON object per line (`{"event": "ready", ...}` once it
serves or consumes, `{"event": "summary", ...}` as it stops), and logs to stderr, which the demo sends to
a file so that nothing of a child reaches the dashboard's terminal.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import logging
import math
import os
import signal
import sys
import time
from typing import Any, Protocol

from mqinspect.demo.report import BrokerSummary
from mqinspect.demo.settings import DemoSettings, settings_from_json
from mqinspect.jsonable import to_jsonable
from store import _libc

PR_SET_PDEATHSIG = 1  # linux/prctl.h
PR_SET_NAME = 15
COMM_BYTES = 15  # TASK_COMM_LEN less the terminating NUL
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_STOP_POLL_S = 0.05
BROKER_TICK_S = 0.5  # how often a demo broker does its housekeeping (retention, warm-ups, checkpoints)


class Broker(Protocol):
    """A demo broker once started (broker.py's RocketMQ one, kafka_broker.py's Kafka one)."""

    port: int  # where its consumers connect

    def tick(self) -> None: ...

    def stop(self) -> BrokerSummary: ...


def _prctl(option: int, argument: int | bytes) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, argument, 0, 0, 0) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"prctl({option}): {os.strerror(error)}")


def child_parser(module: str, description: str | None) -> argparse.ArgumentParser:
    """The arguments every demo child takes (--parent-pid, --settings); the caller adds its own."""
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=description)
    parser.add_argument("--parent-pid", type=int, required=True)
    parser.add_argument("--settings", type=settings_from_json, default=DemoSettings())
    return parser


def start_child(args: argparse.Namespace, name: str) -> StopRequest:
    """Tie the child to the demo, name it, log to stderr; the returned StopRequest says when to stop."""
    die_with_parent(args.parent_pid)
    name_process(name)
    stop = StopRequest(args.settings.stop_grace_s)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    return stop


def name_process(name: str) -> None:
    """Set the command name (/proc/PID/comm) that top, ps and the dashboard show: "demo-broker" says more
    than "python". Threads started afterwards inherit it."""
    _prctl(PR_SET_NAME, name.encode()[:COMM_BYTES])


def die_with_parent(parent_pid: int) -> None:
    """Have the kernel send SIGTERM when the demo dies, even by SIGKILL (prctl PR_SET_PDEATHSIG).

    The signal follows the death of the parent *thread* that forked us: the demo forks from its main
    thread, which lives as long as the demo. When a dying demo has several threads we are handed from one
    to the next and get the signal once per thread (StopRequest takes repeats). If the demo died before the
    prctl took effect, our parent is already someone else (init or a subreaper) and nobody will ever stop
    us, so we leave at once."""
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent_pid:
        os._exit(1)


class StopRequest:
    """Set by SIGTERM or SIGINT; call it to ask whether a stop was requested.

    The handler only sets a flag, ignores further stop signals and arms an alarm: it takes no lock, so a
    second signal arriving while it runs, or one arriving while the main thread holds a lock, cannot
    deadlock it (an Event or a Timer started here can). A stop that takes longer than `grace_s` ends the
    process by SIGALRM's default action, so a child stuck in a system call never outlives the demo (the
    demo would SIGKILL it, but the demo may be gone)."""

    def __init__(self, grace_s: float):
        self.requested = False
        self._grace_s = max(1, math.ceil(grace_s))
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._on_signal)

    def _on_signal(self, _signum: int, _frame: object) -> None:
        if self.requested:
            return
        self.requested = True
        # Repeats are ignored from now on: Python puts back the default action (death) of every signal it
        # handles as it finalizes, so a repeat then would end a child that stopped cleanly. The kernel drops
        # them first, so that none can arrive for a signal Python already ignores (it would log that one as
        # "ignored due to race condition" when signal.signal runs the handlers of those that arrived).
        for signum in STOP_SIGNALS:
            _libc.ignore_signal(signum)
        for signum in STOP_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)  # and Python's finalization keeps them ignored
        signal.alarm(self._grace_s)

    def __call__(self) -> bool:
        return self.requested

    def sleep(self, seconds: float) -> bool:
        """Sleep up to `seconds`, less once a stop is requested; True if it was."""
        deadline = time.monotonic() + seconds
        while not self.requested and (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, _STOP_POLL_S))
        return self.requested


def announce(event: str, payload: Any = None) -> None:
    """One line for the demo: the event name and, if given, a snapshot dataclass as JSON."""
    message = {"event": event}
    if payload is not None:
        message["data"] = to_jsonable(payload)
    try:
        sys.stdout.write(json.dumps(message, separators=(",", ":")) + "\n")
        sys.stdout.flush()
    except BrokenPipeError:  # the demo is gone: nobody to tell, and nothing to flush at exit either
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - replaces the dead stream for shutdown


def run_broker(broker: Broker, stop: StopRequest) -> int:
    """A started broker's life: `ready` with its port, a tick every BROKER_TICK_S until a stop is requested,
    then stopped and its `summary` announced. The exit status."""
    announce("ready", {"port": broker.port})
    while not stop.sleep(BROKER_TICK_S):
        broker.tick()
    announce("summary", broker.stop())
    return 0
