"""The stderr notes of a tracing session: warnings about an interval, and the traced processes' exits.

A warning that holds interval after interval (folios cached before the session, records that did not fit
the maps, a writer throttled) is printed once, not every interval: `SessionNotes` prints a note when its
key was not among the previous interval's notes, so it is said when it starts, and again if it comes back
after an interval without it. The numbers of each interval are in its table and its JSONL line.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TextIO


@dataclass(frozen=True)
class Note:
    """One warning: `key` names the condition (the same key in two intervals is the same warning, whatever
    its numbers), `text` says it."""

    key: str
    text: str


def exit_notes(exited: Sequence[int], still_traced: Sequence[int], keeps_going: str | None) -> list[Note]:
    """What the exit of traced processes means for the session. `keeps_going` is why the session outlives
    its processes (--follow, --store), None when it ends once all of them have exited."""
    notes = []
    for pid in exited:
        if still_traced:
            outcome = f"still tracing {_pids(still_traced)}"
        elif keeps_going:
            outcome = f"the session goes on ({keeps_going}); Ctrl-C to end"
        else:
            outcome = "no traced process is left, so the session ends"
        notes.append(Note(f"exited:{pid}", f"pid {pid} exited; {outcome}"))
    return notes


def _pids(pids: Sequence[int]) -> str:
    return ("pid " if len(pids) == 1 else "pids ") + ", ".join(map(str, pids))


class SessionNotes:
    """Prints each interval's notes to `stream` ("mqinspect: ..."), a lasting one once (see the module doc).
    A plain string is a note keyed by its own text."""

    def __init__(self, stream: TextIO | None = None):
        self._stream = stream
        self._previous: set[str] = set()

    def interval(self, notes: Iterable[Note | str]) -> None:
        current = set()
        for note in notes:
            key, text = (note, note) if isinstance(note, str) else (note.key, note.text)
            current.add(key)
            if key not in self._previous:
                print(f"mqinspect: {text}", file=self._stream or sys.stderr, flush=True)
        self._previous = current
