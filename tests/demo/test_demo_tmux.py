"""The real thing: `mqinspect demo` in a tmux terminal. The dashboard's panels show the live demo with real
numbers (CommitLog segments, the broker's faults while warm-up pre-faults the next segment, bytes on several
send paths), `q` quits with exit status 0, and no child process or BPF program of the demo is left behind.
/proc and bpftool are the ground truth beside the screen."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from demo_processes import alive
from support import loaded_programs, programs_held_by, skip_or_fail

REPO = Path(__file__).resolve().parents[2]
CONSUMERS = ("demo-read_write", "demo-mmap_write", "demo-sendfile", "demo-splice")
SCREEN_TIMEOUT_S = 120.0  # the demo compiles its probes first: 60 s was outlasted at a load of 9
QUIT_TIMEOUT_S = 40.0

pytestmark = [pytest.mark.requires_root, pytest.mark.requires_bpf]


SOCKET = f"mqinspect-demo-test-{os.getpid()}"  # a tmux server of our own: other tests' servers keep out


def tmux(*arguments: str, check: bool = True) -> str:
    # The server's environment, which the pane inherits, is given explicitly: under pytest the C-level
    # environment holds COLUMNS=80 and LINES=24 (set behind os.environ's back), and Textual sizes itself by
    # them rather than by the pane.
    environment = {name: value for name, value in os.environ.items() if name not in ("COLUMNS", "LINES")}
    return subprocess.run(
        ["tmux", "-L", SOCKET, "-f", "/dev/null", *arguments],
        capture_output=True,
        text=True,
        check=check,
        env=environment,
    ).stdout


def capture(session: str) -> str:
    return tmux("capture-pane", "-p", "-t", session)


def cells(line: str) -> list[str]:
    """A table row's cells: the panel borders dropped, split on runs of spaces."""
    return line.replace("│", " ").split()


def minor_faults(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[7])


@dataclass
class Seen:
    """What the screen has shown so far."""

    pids: dict[str, int] = field(default_factory=dict)  # command -> pid, from the processes panel
    segments: set[str] = field(default_factory=set)
    warming_segments: set[str] = field(default_factory=set)  # unwritten segments taking faults (warm-up)
    broker_fault_rates: list[float] = field(default_factory=list)
    paths_with_bytes: set[str] = field(default_factory=set)  # the broker's send paths with bytes in a frame

    def read(self, screen: str) -> None:
        for line in screen.splitlines():
            row = cells(line)
            if row and re.fullmatch(r"commitlog/\d{20}", row[0]):
                self.segments.add(row[0])
                # columns end: ... locked, wrote, faults, major, +cache. Faults on a segment nothing was
                # written to yet (wrote 0B: the one allocated ahead) are warm-up's pre-faulting.
                faults = row[-3].replace(",", "")
                if len(row) >= 10 and row[-4] == "0B" and faults.isdigit() and int(faults) > 0:
                    self.warming_segments.add(row[0])
            process = re.match(r"(\d+)\s+(demo-\S+)\s+--pid\b", " ".join(row))
            if process:
                self.pids[process.group(2)] = int(process.group(1))
            # send paths: pid, command, total, the 4 paths, other, copies/B
            if len(row) == 9 and row[1] == "demo-broker":
                for name, value in zip(
                    ("read+write", "mmap+write", "sendfile", "splice"), row[3:7], strict=True
                ):
                    if value != "0B":
                        self.paths_with_bytes.add(name)
        rate = re.search(r"\d+ demo-broker\s+\S+\s+([\d,.]+)/s minor", screen)
        if rate:
            self.broker_fault_rates.append(float(rate.group(1).replace(",", "")))

    @property
    def complete(self) -> bool:
        return (
            set(self.pids) >= {"demo-broker", *CONSUMERS}
            and bool(self.warming_segments)
            and any(self.broker_fault_rates)
            and len(self.paths_with_bytes) == 4
        )


@contextmanager
def demo_in_tmux(tmp_path: Path, width: int, height: int) -> Iterator[tuple[str, Path]]:
    """`mqinspect demo` in a tmux pane of this size; yields the session and the file its exit status goes to.
    The tmux server is killed on the way out, whatever happened."""
    if shutil.which("tmux") is None:
        skip_or_fail("needs tmux (apt-get install tmux)")
    session = "demo"
    rc_file = tmp_path / "rc"
    command = (
        f"cd {REPO} && NO_COLOR=1 .venv/bin/mqinspect demo --dir {tmp_path / 'demo'}; echo $? > {rc_file}"
    )
    tmux("new-session", "-d", "-s", session, "-x", str(width), "-y", str(height), command)
    try:
        yield session, rc_file
    finally:
        tmux("kill-server", check=False)


def quit_with_q(session: str, rc_file: Path) -> None:
    tmux("send-keys", "-t", session, "q")
    deadline = time.monotonic() + QUIT_TIMEOUT_S
    while not (rc_file.exists() and rc_file.read_text().strip()):
        assert time.monotonic() < deadline, f"q did not end the demo:\n{capture(session)}"
        time.sleep(0.2)


def test_the_dashboard_shows_the_demo_and_q_leaves_nothing_behind(tmp_path: Path):
    seen = Seen()
    with demo_in_tmux(tmp_path, 200, 60) as (session, rc_file):
        deadline = time.monotonic() + SCREEN_TIMEOUT_S
        faults_at_start = None
        while not seen.complete:
            assert time.monotonic() < deadline, f"the screen never showed it all: {seen}\n{capture(session)}"
            time.sleep(0.5)
            seen.read(capture(session))
            if faults_at_start is None and "demo-broker" in seen.pids:
                faults_at_start = minor_faults(seen.pids["demo-broker"])
        broker = seen.pids["demo-broker"]
        demo_pid = int(re.search(r"PPid:\s+(\d+)", Path(f"/proc/{broker}/status").read_text()).group(1))
        programs = programs_held_by(demo_pid)
        assert programs and programs <= set(loaded_programs()), "the demo's own eBPF probes are loaded"
        # Ground truth for the faults on screen: the broker's own count grew while we watched.
        assert minor_faults(broker) > faults_at_start
        quit_with_q(session, rc_file)
    assert rc_file.read_text().strip() == "0"
    assert not [name for name, pid in seen.pids.items() if alive(pid)]
    assert not alive(demo_pid)
    assert not programs & set(loaded_programs())


# What each panel's data rows look like on an 80x24 screen (a panel's box drawn around them).
SIZE_RE = r"(?:\d+(?:\.\d)?|<1)(?:B|KiB|MiB|GiB)"
PANEL_ROWS = {
    # name (its leading zeros may give way to "…"), heat, cached, dirty
    "1 Segments": rf"│ commitlog/…?\d+\s+\S+\s+(?:\d+%|<1%)\s+{SIZE_RE}(?!\w)",
    "2 Memory": r"\] \d+\.\d% of",  # the gauge: dirty + writeback against the limit
    "3 Faults": r"││\s+\d+ demo-\S+\s+\S*\s?[\d,.]+/s",  # pid, command, sparkline, minor faults per second
    "5 Processes": r"│\s+\d+\s+demo-\S+\s+[\d,.]+\s",  # pid, command, minflt/s
    "4 Send paths": rf"│ \d+\s+demo-\S+\s+{SIZE_RE}/s",  # pid, command, bytes per second by read+write
    "6 Consumers": r"│ demo-\S+\s+DemoTopic/\d+\s+[\d,]+\s+[\d,]+\s",  # group, queue, committed, lag msgs
}


def shown_panels(screen: str) -> set[str]:
    """The panels whose title and at least one data row are on the screen."""
    return {
        title for title, row in PANEL_ROWS.items() if title in screen and re.search(row, screen, re.MULTILINE)
    }


def test_at_80x24_every_panel_shows_its_title_and_a_data_row(tmp_path: Path):
    """Segments, Memory, Faults and Processes at once; Send paths on 4 and Consumers on 6 (they share the
    last slot)."""
    with demo_in_tmux(tmp_path, 80, 24) as (session, rc_file):
        seen: set[str] = set()
        deadline = time.monotonic() + SCREEN_TIMEOUT_S
        while seen != set(PANEL_ROWS):
            assert time.monotonic() < deadline, f"shown: {sorted(seen)}\n{capture(session)}"
            time.sleep(0.5)
            screen = capture(session)
            assert len(screen.splitlines()) <= 24 and max(map(len, screen.splitlines())) <= 80
            seen |= shown_panels(screen)
            if {"1 Segments", "2 Memory", "3 Faults", "5 Processes"} <= seen:
                tmux("send-keys", "-t", session, "6" if "4 Send paths" in seen else "4")
        quit_with_q(session, rc_file)
    assert rc_file.read_text().strip() == "0"
