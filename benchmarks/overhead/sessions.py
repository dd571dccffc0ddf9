"""The probes as probe_overhead.py runs them, attached to every process, and what each one counted: all of
them together as the dashboard runs them, in ONE combined program (probes/ebpf/combined.py) of one process
(`python -m benchmarks.overhead.combined_trace`); one probe alone (--per-probe) as `mqinspect trace PROBE`.

What a probe handled is read twice from its summary, with the fields its registry entry names
(probes/ebpf/registry.py): the workload's share from the summary's per-process rows (`process_events`), and
every process's from its totals (`total_events`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.overhead.workloads import REPO, wait_or_kill
from probes.ebpf.registry import PROBES, probe_entry

MQINSPECT = REPO / ".venv" / "bin" / "mqinspect"
PROBE_NAMES = tuple(entry.name for entry in PROBES)
SESSION_START_TIMEOUT_S = 180.0  # one compilation of every probe: 12 s idle, 75 s seen on a loaded machine
SESSION_STOP_TIMEOUT_S = 20.0  # the summary of a system-wide faults session walks every file it saw
SESSION_DRAIN_TIMEOUT_S = (
    30.0  # an interval every second; one system-wide interval of all five took 5 s at load 9
)


@dataclass(frozen=True)
class ProbeEvents:
    workload: int  # events in the workload's process: their cost lands on its wall time
    system: int  # events in every process, the workload's included


class TraceProcess:
    """One `mqinspect trace <probe>` process. Its output goes to files, not pipes: a system-wide session
    writes a lot per interval, and a full pipe would stall it while it holds its programs attached."""

    def __init__(self, probe: str, scratch: Path):
        self.probe = probe
        self.stdout_path = scratch / f"{probe}.jsonl"
        self.stderr_path = scratch / f"{probe}.stderr"
        command = [str(MQINSPECT), "trace", probe, "--interval", "1", "--format", "jsonl"]
        with open(self.stdout_path, "wb") as stdout, open(self.stderr_path, "wb") as stderr:
            self.process = subprocess.Popen(command, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL)
        self.interrupted = False

    def has_started(self) -> bool:
        """The startup line is printed once the programs are attached."""
        if any(line.startswith("Tracing ") for line in self._stderr_lines()):
            return True
        if self.process.poll() is not None:
            status = self.process.returncode
            raise RuntimeError(f"trace {self.probe} exited ({status}): {self.stderr_tail()}")
        return False

    def cpu_seconds(self) -> float:
        """User + system CPU the session has used: its per-interval collection competes with the workload
        for the two cores, a cost apart from the programs' in-kernel time."""
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime

    def interrupt(self) -> None:
        """SIGINT ends a session with its summary. Only once: a second one aborts it without a summary."""
        if self.process.poll() is None and not self.interrupted:
            self.interrupted = True
            self.process.send_signal(signal.SIGINT)

    def wait_stopped(self) -> None:
        """A session that does not end in time is killed: its programs go with its file descriptors."""
        wait_or_kill(self.process, SESSION_STOP_TIMEOUT_S)

    def events(self, workload_pid: int) -> dict[str, ProbeEvents]:
        """What each probe of the session counted, by probe."""
        summary = self._summary()
        if summary is None:
            raise RuntimeError(f"trace {self.probe} printed no summary: {self.stderr_tail()}")
        return {self.probe: probe_events(self.probe, summary, workload_pid)}

    def intervals_written(self) -> int:
        """Interval lines printed so far: each one follows a drain of the session's maps."""
        with open(self.stdout_path, "rb") as output:
            return sum(1 for line in output if line.startswith(b'{"kind":"interval"'))

    def _summary(self) -> dict | None:
        return next(iter(self._summaries()), None)

    def _summaries(self) -> list[dict]:
        with open(self.stdout_path, "rb") as output:
            return [json.loads(line) for line in output if line.startswith(b'{"kind":"summary"')]

    def _stderr_lines(self) -> list[str]:
        return self.stderr_path.read_text(errors="replace").splitlines()

    def stderr_tail(self) -> str:
        return " | ".join(self._stderr_lines()[-3:]) or "(no stderr)"


def probe_events(probe: str, summary: dict, workload_pid: int) -> ProbeEvents:
    rows = [row for row in summary["processes"] if row["pid"] == workload_pid]
    entry = probe_entry(probe)
    in_workload = sum(row[name] for row in rows for name in entry.process_events)
    in_system = sum(summary[name] for name in entry.total_events)
    return ProbeEvents(in_workload, in_system)


class CombinedTraceProcess(TraceProcess):
    """The probes in one combined program, in a process of its own (benchmarks/overhead/combined_trace.py):
    it writes what `mqinspect trace --format jsonl` would of the fields counted here, a line per probe."""

    def __init__(self, probes: Sequence[str], scratch: Path):
        self.probe = "+".join(probes)
        self.probes = tuple(probes)
        self.stdout_path = scratch / "combined.jsonl"
        self.stderr_path = scratch / "combined.stderr"
        command = [sys.executable, "-m", "benchmarks.overhead.combined_trace", *probes]
        with open(self.stdout_path, "wb") as stdout, open(self.stderr_path, "wb") as stderr:
            self.process = subprocess.Popen(
                command, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL, cwd=REPO
            )
        self.interrupted = False

    def events(self, workload_pid: int) -> dict[str, ProbeEvents]:
        summaries = {summary["probe"]: summary for summary in self._summaries()}
        if set(summaries) != set(self.probes):
            missing = ", ".join(sorted(set(self.probes) - set(summaries)))
            raise RuntimeError(f"the combined session printed no summary of {missing}: {self.stderr_tail()}")
        return {probe: probe_events(probe, summaries[probe], workload_pid) for probe in self.probes}


@contextlib.contextmanager
def probes_attached(probes: Sequence[str], scratch: Path) -> Iterator[list[TraceProcess]]:
    """Start the session (several probes: one combined session, as the dashboard's; one: `mqinspect trace`),
    wait until it is attached; stop it on the way out, whatever happened, so no program stays loaded."""
    sessions: list[TraceProcess] = []
    try:
        if len(probes) > 1:
            sessions.append(CombinedTraceProcess(probes, scratch))
        else:
            sessions += [TraceProcess(probe, scratch) for probe in probes]
        deadline = time.monotonic() + SESSION_START_TIMEOUT_S
        while not all(session.has_started() for session in sessions):
            if time.monotonic() > deadline:
                raise RuntimeError(f"trace sessions not attached within {SESSION_START_TIMEOUT_S:.0f} s")
            time.sleep(0.05)
        yield sessions
    finally:
        for session in sessions:  # all first, so that they build their summaries in parallel
            session.interrupt()
        for session in sessions:
            session.wait_stopped()
