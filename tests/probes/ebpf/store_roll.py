"""A store whose CommitLog rolls while a probe traces it, for the pagecache, writeback and faults tests.

A child process owns the store. Before the session it creates the first CommitLog segment and warms it; at
`roll()` it creates the next one and warms it with the store library (MappedFile.create, then
warm(POPULATE): what the allocation service runs for the next segment at a roll), and says how many pages it
warmed. At `retire_and_roll()` it first deletes the oldest segment (as retention does: its pages leave the
page cache), then rolls, and says whether the new segment got the deleted one's inode number (ext4 may hand a
freed number out again at once).
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from probes.ebpf.session import TraceSession

SEGMENT_BYTES = 8 << 20  # 2,048 pages: 32 pages per page range

CHILD = r"""
import os, sys
from pathlib import Path
from store.config import WarmupMode
from store.mapped_file import MappedFile

commitlog, size = Path(sys.argv[1]), int(sys.argv[2])
commitlog.mkdir(parents=True)
segments = [MappedFile.create(commitlog / f"{0:020d}", size)]
segments[0].warm(WarmupMode.POPULATE)
print("ready", flush=True)
for line in sys.stdin:
    step, offset = line.split()
    path = commitlog / f"{int(offset):020d}"
    if step == "roll":
        segments.append(MappedFile.create(path, size))
        print("rolled", segments[-1].warm(WarmupMode.POPULATE).pages, flush=True)
    elif step == "retire-and-roll":
        oldest = segments.pop(0)
        number = os.stat(oldest.path).st_ino
        oldest.destroy(0.0)
        segments.append(MappedFile.create(path, size))
        reused = int(os.stat(path).st_ino == number)
        print("rolled", segments[-1].warm(WarmupMode.POPULATE).pages, reused, flush=True)
"""


@dataclass
class RollingStore:
    """The store's root, and the child that owns it (and rolls its CommitLog on request)."""

    root: Path
    process: subprocess.Popen

    @property
    def pid(self) -> int:
        return self.process.pid

    def segment(self, number: int) -> Path:
        """The path of the CommitLog segment `number` (0 is the first)."""
        return self.root / "commitlog" / f"{number * SEGMENT_BYTES:020d}"

    def roll(self, number: int) -> int:
        """Create segment `number` and warm it; the pages warmed."""
        return int(self._ask("roll", number)[0])

    def retire_and_roll(self, number: int) -> bool:
        """Delete the oldest segment, then create segment `number` and warm it; whether the new segment has
        the deleted one's inode number."""
        return self._ask("retire-and-roll", number)[1] == "1"

    def _ask(self, step: str, number: int) -> list[str]:
        self.process.stdin.write(f"{step} {number * SEGMENT_BYTES}\n")
        self.process.stdin.flush()
        word, *answer = self.process.stdout.readline().split()
        assert word == "rolled", (word, answer)
        return answer


@dataclass(frozen=True)
class TracedRoll:
    """A probe's snapshots around a roll: `before` of an interval before it, `during` of the interval the
    new segment (`segment`, `warmed_pages` warmed by the store's child `pid`) was created and warmed in;
    `measured` is what the test's `measure(segment)` gave just before the snapshot `during`."""

    before: Any
    during: Any
    segment: Path
    warmed_pages: int
    pid: int
    measured: Any


def trace_a_roll(
    root: Path, probe_class: Callable[..., Any], measure: Callable[[Path], Any] = lambda _segment: None
) -> TracedRoll:
    """A store at `root` whose CommitLog rolls into its second segment in the middle of a session of the
    probe `probe_class(store=root)` (which follows the store's files, every process traced)."""
    with rolling_store(root) as store, TraceSession(probe_class(store=store.root)) as session:
        before = session.snapshot()
        warmed = store.roll(1)
        measured = measure(store.segment(1))
        during = session.snapshot()
    return TracedRoll(before, during, store.segment(1), warmed, store.pid, measured)


@contextlib.contextmanager
def rolling_store(root: Path) -> Iterator[RollingStore]:
    """A store at `root` with its first segment made, owned by a child until the block ends."""
    process = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(root / "commitlog"), str(SEGMENT_BYTES)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout.readline().strip() == "ready"
        yield RollingStore(root, process)
    finally:
        with contextlib.suppress(BrokenPipeError):
            process.stdin.close()
        process.wait(timeout=30)
