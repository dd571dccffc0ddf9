"""`mqinspect lab truncate`: each way of reading or sending a file while another process truncates it, in a
child process of its own, beside what the design documents say that way does (mqinspect.labs.truncate_model).

One run of one way:
  1. the lab writes a fresh file (16 MiB by default) and listens on a loopback TCP port;
  2. the truncating process (mqinspect.labs.truncate_worker truncator, one for the whole lab) waits;
  3. the sender starts (truncate_worker sender WAY): it opens (maps, leases) the file, connects, and on "go"
     serves the file over and over, a chunk per call; the lab's receiver thread counts what arrives;
  4. once the sender says its first chunk went out, the truncating process truncates the file to 4 KiB,
     timing its own truncate(2): what a read lease makes it wait for;
  5. the sender ends: its own report (an errno, a short count, a clean stop on the lease-break signal), or
     its exit status where a signal killed it, which is the point of the lab.
Every child is bounded: a sender sends for at most max_send_s, and a truncating process still blocked after
truncator_timeout_s is killed (a holder that never releases would keep it for lease-break-time, 45 s) and
reported as blocked. Runs go round-robin over the ways (run 1 of every way, then run 2...).

Everything is a frozen dataclass; TruncateLabReport is what `--format json` writes (schema SCHEMA).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mqinspect.errors import BadInput
from mqinspect.labs.stats import Spread, spread
from mqinspect.labs.truncate_model import (
    MODELS,
    Ending,
    Observed,
    TruncateWay,
    WayModel,
    agreement,
    describe_ending,
    finding,
)
from mqinspect.labs.worker_lines import LineReader, last_words
from store.lease import lease_break_time_s

SCHEMA = "mqinspect.lab.truncate/v1"
KiB, MiB = 1 << 10, 1 << 20
DEFAULT_FILE_BYTES = 16 * MiB
DEFAULT_REPEAT = 3
TRUNCATE_TO_BYTES = 4 * KiB
CHUNK_BYTES = 256 * KiB
MAX_SEND_S = 5.0  # a sender that never notices the truncation ends after this
TRUNCATOR_TIMEOUT_S = (
    10.0  # well under lease-break-time: a holder that never releases is reported, not waited
)
START_TIMEOUT_S = 30.0  # a child's start (Python and its imports) on a loaded machine
# Run by its path, not with -m: importing the mqinspect package first (its version lookup) would add a tenth
# of a second to every child's start, two children a run.
WORKER = Path(__file__).resolve().with_name("truncate_worker.py")
LOOPBACK = "127.0.0.1"
_REPO = Path(__file__).resolve().parents[2]
ENDED_SOURCE = (
    "the sender's own report of the call that stopped it, or its exit status where a signal killed it"
)
DELIVERED_SOURCE = "bytes the lab's receiver read from the sender's socket until it closed"
WAIT_SOURCE = "the truncating process's own CLOCK_MONOTONIC around truncate(2)"


# ---- settings and results ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabSettings:
    ways: tuple[TruncateWay, ...] = tuple(TruncateWay)
    repeat: int = DEFAULT_REPEAT
    file_size_bytes: int = DEFAULT_FILE_BYTES
    directory: Path | None = None  # where the lab's files go (a temporary directory inside it)
    chunk_bytes: int = CHUNK_BYTES
    max_send_s: float = MAX_SEND_S
    truncator_timeout_s: float = TRUNCATOR_TIMEOUT_S

    def __post_init__(self) -> None:
        if not self.ways:
            raise BadInput("no way to run", fix=f"--ways takes some of: {', '.join(TruncateWay)}")
        if self.repeat < 1:
            raise BadInput("--repeat must be at least 1")
        if self.file_size_bytes < 2 * self.chunk_bytes or self.file_size_bytes % TRUNCATE_TO_BYTES:
            raise BadInput(
                f"--file-size must be a multiple of {TRUNCATE_TO_BYTES} bytes and at least "
                f"{2 * self.chunk_bytes} bytes ({self.file_size_bytes} given)"
            )
        if self.directory is not None and not (
            self.directory.is_dir() and os.access(self.directory, os.W_OK)
        ):
            raise BadInput(
                f"{self.directory} is not a writable directory", fix="give --dir one you may write to"
            )


@dataclass(frozen=True)
class WayRun:
    """One run of one way. None: not measured (the run failed, or the figure does not apply)."""

    way: TruncateWay
    run: int
    ending: Ending
    signal: str | None  # the signal that killed the sender
    errno_name: str | None  # the errno that stopped it
    errno_text: str | None
    detail: str  # the sender's own account, or why the run failed
    delivered_bytes: int | None
    sender_sent_bytes: int | None  # what its calls returned (None when a signal killed it)
    truncator_wait_s: float | None  # None when it was still blocked when the lab gave up on it
    truncator_blocked: bool
    last_call_interrupted: bool | None  # leased ways: the call in progress at the signal returned short
    sender_exit_status: int | None
    file_size_after_bytes: int | None  # the file's size once the run was over: the truncation happened
    error: str | None


@dataclass(frozen=True)
class WayResult:
    way: TruncateWay
    label: str
    mechanism: str
    textbook: str
    expected_ending: Ending
    expected_signal: str | None
    ending: Ending  # MIXED when the runs disagree
    endings: tuple[Ending, ...]  # per run
    ended: str  # how it ended, for a table cell: SIGBUS, EFAULT (Bad address), a short count...
    delivered_bytes: Spread | None
    truncator_wait_s: Spread | None
    agrees: bool | None  # None: no run measured it
    contradiction: str | None  # one sentence, where this machine does otherwise than the textbook
    verdict: str  # one sentence either way
    runs: tuple[WayRun, ...]


@dataclass(frozen=True)
class TruncateLabReport:
    schema: str
    kernel_release: str
    lease_break_time_s: float | None
    file_size_bytes: int
    truncate_to_bytes: int
    chunk_bytes: int
    repeat: int
    directory: str
    ended_source: str
    delivered_source: str
    wait_source: str
    ways: tuple[WayResult, ...]
    contradictions: tuple[str, ...]
    started_unix_s: float
    elapsed_s: float


# ---- the children ---------------------------------------------------------------------------------------


class ChildFailed(Exception):
    """A child said something unexpected, ended early, or did not answer in time."""


class _Child:
    """One truncate_worker process, read one JSON line at a time with deadlines. A context manager that
    kills the child if it is still there at the end."""

    def __init__(self, role: str, arguments: Sequence[object]):
        self.role = role
        self.process = subprocess.Popen(
            [sys.executable, str(WORKER), role, *map(str, arguments)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=_REPO,
        )
        assert self.process.stdout is not None
        self._lines = LineReader(self.process.stdout.fileno())

    def __enter__(self) -> _Child:
        return self

    def __exit__(self, *_exc: object) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()

    def expect(self, event: str, timeout_s: float) -> dict:
        message = self.next_message(timeout_s)
        if message is None:
            raise ChildFailed(f"the {self.role} ended before '{event}': {last_words(self.process)}")
        if message.get("event") != event:
            raise ChildFailed(f"the {self.role} said {message!r} where '{event}' was due")
        return message

    def next_message(self, timeout_s: float) -> dict | None:
        """The next line as JSON; None at the end of its output. ChildFailed after `timeout_s`."""
        try:
            return self._lines.next_message(timeout_s)
        except TimeoutError:
            raise ChildFailed(f"the {self.role} said nothing within {timeout_s:g} s") from None

    def go(self) -> None:
        self.tell(b"go\n")

    def tell(self, line: bytes) -> None:
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(line)
            self.process.stdin.flush()
        except BrokenPipeError:
            raise ChildFailed(f"the {self.role} ended early: {last_words(self.process)}") from None

    def exit_status(self, timeout_s: float) -> int:
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise ChildFailed(f"the {self.role} did not end within {timeout_s:g} s") from None


class Truncator:
    """The truncating process, one for the whole lab; a fresh one after the lab had to kill one that a
    lease kept blocked. A context manager."""

    def __init__(self) -> None:
        self._child: _Child | None = None

    def __enter__(self) -> Truncator:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def ready(self) -> None:
        if self._child is None or self._child.process.poll() is not None:
            self.close()
            self._child = _Child("truncator", [])
            self._child.expect("ready", START_TIMEOUT_S)

    def truncate(self, path: Path, timeout_s: float) -> float | None:
        """Seconds truncate(2) took; None if it was still blocked after `timeout_s` (it is then killed: the
        kernel would hold it until lease-break-time, and killed, it truncates nothing)."""
        self.ready()
        assert self._child is not None
        self._child.tell(json.dumps({"path": str(path), "size_bytes": TRUNCATE_TO_BYTES}).encode() + b"\n")
        try:
            return self._child.expect("truncated", timeout_s)["waited_s"]
        except ChildFailed:
            self.close()
            return None

    def close(self) -> None:
        child, self._child = self._child, None
        if child is not None:
            child.__exit__()


class _Receiver:
    """The lab's end of the sender's connection: a thread that reads it to the end and counts."""

    def __init__(self, connection: socket.socket):
        self.connection = connection
        self.received = 0
        self._thread = threading.Thread(target=self._drain, name="truncate-lab-receiver", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        with contextlib.suppress(OSError):
            while chunk := self.connection.recv(MiB):
                self.received += len(chunk)

    def total(self, timeout_s: float) -> int | None:
        """Bytes received once the sender's end closed; None if it did not close within `timeout_s`."""
        self._thread.join(timeout_s)
        return None if self._thread.is_alive() else self.received

    def close(self) -> None:
        self.connection.close()


# ---- one run -----------------------------------------------------------------------------------------------


@dataclass
class _RunState:
    """What one run has measured so far (a run that fails part of the way keeps what it had)."""

    truncator_wait_s: float | None = None
    truncator_blocked: bool = False
    ended: dict | None = None
    exit_status: int | None = None
    delivered: int | None = None


def write_file(path: Path, size: int) -> None:
    """A file of `size` bytes of a repeating pattern (real data: no holes for sendfile to skip)."""
    block = bytes(range(256)) * (MiB // 256)
    with open(path, "wb") as handle:
        for start in range(0, size, len(block)):
            handle.write(block[: size - start])


def run_way(
    way: TruncateWay, number: int, settings: LabSettings, directory: Path, truncator: Truncator
) -> WayRun:
    """One run of `way` on a fresh file in `directory`; a failure is a run whose ending is FAILED."""
    path = directory / f"{way.value}-{number}.bin"
    state, error = _RunState(), None
    try:
        write_file(path, settings.file_size_bytes)
        _run_sender(way, path, settings, truncator, state)
    except (ChildFailed, OSError) as failure:
        error = str(failure)
    finally:
        size_after = path.stat().st_size if path.exists() else None
        path.unlink(missing_ok=True)
    return _run_result(way, number, state, size_after, error)


def _run_sender(
    way: TruncateWay, path: Path, settings: LabSettings, truncator: Truncator, state: _RunState
) -> None:
    with contextlib.ExitStack() as stack:
        listener = stack.enter_context(socket.create_server((LOOPBACK, 0)))
        listener.settimeout(START_TIMEOUT_S)
        sender = stack.enter_context(
            _Child(
                "sender",
                [way.value, path, listener.getsockname()[1], settings.chunk_bytes, settings.max_send_s],
            )
        )
        try:
            connection, _peer = listener.accept()
        except TimeoutError:
            raise ChildFailed(f"the sender did not connect within {START_TIMEOUT_S:g} s") from None
        receiver = _Receiver(connection)
        stack.callback(receiver.close)
        truncator.ready()
        sender.expect("ready", START_TIMEOUT_S)
        sender.go()
        sender.expect("sending", settings.max_send_s + START_TIMEOUT_S)
        state.truncator_wait_s = truncator.truncate(path, settings.truncator_timeout_s)
        state.truncator_blocked = state.truncator_wait_s is None
        ended = sender.next_message(settings.max_send_s + START_TIMEOUT_S)
        state.ended = ended if ended is not None and ended.get("event") == "ended" else None
        state.exit_status = sender.exit_status(START_TIMEOUT_S)
        state.delivered = receiver.total(START_TIMEOUT_S)
        if state.ended is None and state.exit_status >= 0:
            raise ChildFailed(f"the sender ended without saying how: {last_words(sender.process)}")


def _run_result(
    way: TruncateWay, number: int, state: _RunState, size_after: int | None, error: str | None
) -> WayRun:
    ended = state.ended or {}
    ending, killed_by = _ending(state, error)
    errno_name = ended.get("errno_name")
    if error is not None:
        detail = error
    elif killed_by is not None:
        detail = f"killed by {killed_by} (exit status {state.exit_status})"
    else:
        detail = ended.get("detail", "")
    return WayRun(
        way=way,
        run=number,
        ending=ending,
        signal=killed_by,
        errno_name=errno_name,
        errno_text=os.strerror(getattr(errno, errno_name, 0)) if errno_name else None,
        detail=detail,
        delivered_bytes=state.delivered,
        sender_sent_bytes=ended.get("bytes_sent"),
        truncator_wait_s=state.truncator_wait_s,
        truncator_blocked=state.truncator_blocked,
        last_call_interrupted=ended.get("interrupted"),
        sender_exit_status=state.exit_status,
        file_size_after_bytes=size_after,
        error=error,
    )


def _ending(state: _RunState, error: str | None) -> tuple[Ending, str | None]:
    status = state.exit_status
    if status is not None and status < 0:
        return Ending.SIGNAL, signal.Signals(-status).name
    if error is not None or state.ended is None:
        return Ending.FAILED, None
    return Ending(state.ended["ending"]), None


# ---- the lab -----------------------------------------------------------------------------------------------


Say = Callable[[str], None]


def run_truncate_lab(settings: LabSettings, say: Say = lambda _message: None) -> TruncateLabReport:
    started_unix_s, started = time.time(), time.monotonic()
    parent = settings.directory or Path(tempfile.gettempdir())
    directory = Path(tempfile.mkdtemp(prefix="mqinspect-truncate-", dir=parent))
    runs: dict[TruncateWay, list[WayRun]] = {way: [] for way in settings.ways}
    try:
        with Truncator() as truncator:
            for number in range(1, settings.repeat + 1):
                for way in settings.ways:
                    run = run_way(way, number, settings, directory, truncator)
                    runs[way].append(run)
                    say(f"{MODELS[way].label} (run {number}/{settings.repeat}): {_progress(run)}")
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    kernel, limit = platform.release(), lease_break_time_s()
    ways = tuple(summarize_way(MODELS[way], runs[way], kernel, limit) for way in settings.ways)
    return TruncateLabReport(
        schema=SCHEMA,
        kernel_release=kernel,
        lease_break_time_s=limit,
        file_size_bytes=settings.file_size_bytes,
        truncate_to_bytes=TRUNCATE_TO_BYTES,
        chunk_bytes=settings.chunk_bytes,
        repeat=settings.repeat,
        directory=str(parent),
        ended_source=ENDED_SOURCE,
        delivered_source=DELIVERED_SOURCE,
        wait_source=WAIT_SOURCE,
        ways=ways,
        contradictions=tuple(way.contradiction for way in ways if way.contradiction),
        started_unix_s=round(started_unix_s, 3),
        elapsed_s=round(time.monotonic() - started, 3),
    )


def _progress(run: WayRun) -> str:
    if run.error:
        return f"failed: {run.error}"
    waited = "still blocked" if run.truncator_wait_s is None else f"{run.truncator_wait_s * 1000:.1f} ms"
    return f"{run.ending.value} ({run.detail}); truncation waited {waited}"


def summarize_way(
    model: WayModel, runs: Sequence[WayRun], kernel: str, lease_break_time: float | None
) -> WayResult:
    """One way over its runs: the ending (MIXED if they differ), medians, and the comparison."""
    endings = tuple(run.ending for run in runs)
    measured = [run for run in runs if run.ending is not Ending.FAILED]
    ending = endings[0] if len(set(endings)) == 1 else Ending.MIXED
    first = measured[0] if measured else None
    delivered = spread([run.delivered_bytes for run in measured])
    waits = spread([run.truncator_wait_s for run in measured])
    seen = Observed(
        ending=ending,
        signal=first.signal if first else None,
        errno_name=first.errno_name if first else None,
        errno_text=first.errno_text if first else None,
        delivered_bytes=delivered.median if delivered else None,
        truncator_wait_s=waits.median if waits else None,
        truncator_blocked=any(run.truncator_blocked for run in measured),
        lease_break_time_s=lease_break_time,
        kernel_release=kernel,
    )
    contradiction = finding(model, seen)
    return WayResult(
        way=model.way,
        label=model.label,
        mechanism=model.mechanism,
        textbook=model.textbook,
        expected_ending=model.expected,
        expected_signal=model.expected_signal,
        ending=ending,
        endings=endings,
        ended=describe_ending(seen) if first else "failed",
        delivered_bytes=delivered,
        truncator_wait_s=waits,
        agrees=None if not measured or ending is Ending.MIXED else contradiction is None,
        contradiction=contradiction,
        verdict=_verdict(model, seen, runs, contradiction),
        runs=tuple(runs),
    )


def _verdict(model: WayModel, seen: Observed, runs: Sequence[WayRun], contradiction: str | None) -> str:
    if contradiction:
        return contradiction
    if seen.ending is Ending.FAILED:
        return f"Not measured: {runs[-1].error}" if runs else "Not measured."
    if seen.ending is Ending.MIXED:
        counts = {ending: 0 for ending in (run.ending for run in runs)}
        for run in runs:
            counts[run.ending] += 1
        said = ", ".join(f"{count} x {ending.value}" for ending, count in counts.items())
        return f"The runs ended differently ({said}): see each run."
    return agreement(model, seen)
