"""The dashboard's filter (`/`): one text that every panel applies the same way, and the line that says what
it kept ("filter: consume — 2 of 9 processes, 0 of 14 segments, 1 of 2 send paths").

A segment matches by its name (kind/start offset), a process and a send-path row by "PID COMMAND"; the match
is a case-insensitive substring, as htop's and k9s's filters are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.text import Text

from mqinspect.sampling.snapshot import ProcessView, SegmentView, SendPathRow


@dataclass(frozen=True)
class RowFilter:
    text: str = ""

    @property
    def active(self) -> bool:
        return bool(self.text)

    def _keeps(self, described: str) -> bool:
        return self.text.lower() in described.lower()

    def segments(self, rows: Sequence[SegmentView]) -> list[SegmentView]:
        if not self.text:  # every row, without a look at each (1,000 segments each frame)
            return list(rows)
        return [row for row in rows if self._keeps(row.name)]

    def processes(self, rows: Sequence[ProcessView]) -> list[ProcessView]:
        return [row for row in rows if self._keeps(f"{row.pid} {row.comm or ''}")]

    def sendpaths(self, rows: Sequence[SendPathRow]) -> list[SendPathRow]:
        return [row for row in rows if self._keeps(f"{row.pid} {row.comm or ''}")]


@dataclass(frozen=True)
class Kept:
    """How many rows of one kind the filter kept, of how many."""

    shown: int
    total: int
    one: str
    many: str

    def __str__(self) -> str:
        return f"{self.shown} of {self.total} {self.one if self.total == 1 else self.many}"


def filter_summary(row_filter: RowFilter, kept: Sequence[Kept]) -> Text:
    """'filter: consume — 2 of 9 processes, 0 of 14 segments' (yellow when a kind has no row left)."""
    line = Text(f"filter: {row_filter.text} — ", style="bold")
    for index, counts in enumerate(kept):
        if index:
            line.append(", ")
        line.append(str(counts), style="yellow" if counts.total and not counts.shown else "")
    line.append("  (/ edits, esc clears)", style="dim")
    return line
