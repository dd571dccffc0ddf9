"""The compact stream form shared by `mem`, `top` and `trace`: one timestamped line per interval under a
header (repeated every screenful on a terminal, like vmstat and sar; once into a pipe or file), and the same
fields as CSV rows (`--format csv`).

A stream is described once, as its `Field`s: the CSV column (a key carrying its unit, the measured value) and
the line's column (a short header, the value with its unit). So `mem`'s and `top`'s lines and CSV rows never
disagree (a trace's CSV rows are its snapshots' flat fields: render/trace.snapshot_csv_row), and a line's
cell is never cut: a value wider than its column widens that line instead.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TextIO, TypeVar

from mqinspect.render.cells import UNAVAILABLE
from mqinspect.render.machine import write_csv

Item = TypeVar("Item")
TIME_KEY = "time_unix_s"
TIME_HEADER = "time"
TIME_WIDTH = len("HH:MM:SS")
SEPARATOR = "  "


@dataclass(frozen=True)
class Field(Generic[Item]):
    """One column: `key` names it in CSV (with its unit: "dirty_bytes"), `header` in the line ("dirty");
    `value(item)` is the measured value (None: not measured), `show(value)` the value with its unit."""

    key: str
    header: str
    value: Callable[[Item], Any]
    show: Callable[[Any], str] = str
    width: int = 10

    def cell(self, item: Item) -> str:
        value = self.value(item)
        return UNAVAILABLE if value is None else self.show(value)


def clock(time_unix_s: float) -> str:
    """The line's timestamp: local wall-clock time, as vmstat -t and sar print it."""
    return time.strftime("%H:%M:%S", time.localtime(time_unix_s))


class LineStream(Generic[Item]):
    """Writes one line per item to `stream`, after a header line: once, or again every `header_every` lines
    (a terminal's height, so that a header is always on screen). Within `width` columns (a terminal's) the
    fields kept are the first that fit (they come in priority order), and the ones left out are said once
    on stderr: a line never wraps and a cell is never cut."""

    def __init__(
        self,
        fields: Sequence[Field[Item]],
        stream: TextIO,
        *,
        header_every: int | None = None,
        width: int | None = None,
    ):
        self.fields = _fitting(fields, width)
        self.left_out = tuple(f.header for f in fields[len(self.fields) :])
        self.width = width
        self.stream = stream
        self.header_every = header_every
        self._since_header: int | None = None

    def header(self) -> str:
        cells = [TIME_HEADER.ljust(TIME_WIDTH), *(f.header.rjust(f.width) for f in self.fields)]
        return SEPARATOR.join(cells).rstrip()

    def line(self, item: Item, time_unix_s: float) -> str:
        cells = [clock(time_unix_s), *(f.cell(item).rjust(f.width) for f in self.fields)]
        return SEPARATOR.join(cells)

    def write(self, item: Item, time_unix_s: float) -> None:
        if self._since_header is None and self.left_out:
            print(
                f"mqinspect: {', '.join(self.left_out)} left out at {self.width} columns "
                "(a wider terminal, or --format csv, has them)",
                file=sys.stderr,
            )
        due = self._since_header is None or (
            self.header_every is not None and self._since_header >= self.header_every
        )
        if due:
            self.stream.write(self.header() + "\n")
            self._since_header = 0
        self.stream.write(self.line(item, time_unix_s) + "\n")
        self._since_header = (self._since_header or 0) + 1
        self.stream.flush()


def _fitting(fields: Sequence[Field[Item]], width: int | None) -> tuple[Field[Item], ...]:
    """The first of `fields` whose columns fit in `width` beside the time (all of them without a width)."""
    if width is None:
        return tuple(fields)
    used, kept = TIME_WIDTH, []
    for field in fields:
        used += len(SEPARATOR) + field.width
        if used > width:
            break
        kept.append(field)
    return tuple(kept)


def terminal_width(stream: TextIO) -> int | None:
    """The columns of the terminal `stream` writes to; None for a pipe or file (lines keep every field)."""
    return shutil.get_terminal_size((0, 0)).columns or None if stream.isatty() else None


def header_every(stream: TextIO, terminal_rows: int | None = None) -> int | None:
    """How many lines go between headers: a screenful less the header on a terminal (`terminal_rows` high;
    by default the terminal's own), else None: once, into a pipe or file."""
    if not stream.isatty():
        return None
    rows = terminal_rows or shutil.get_terminal_size((0, 0)).lines
    return max(1, rows - 1) if rows else None


def write_stream(
    fields: Sequence[Field[Item]], items: Iterable[tuple[Item, float]], stream: TextIO, *, as_csv: bool
) -> None:
    """Each (item, time) as it arrives: a CSV row, or a line under the header."""
    if as_csv:
        write_csv_stream(fields, items, stream)
        return
    lines = LineStream(fields, stream, header_every=header_every(stream), width=terminal_width(stream))
    for item, time_unix_s in items:
        lines.write(item, time_unix_s)


def _csv_row(fields: Sequence[Field[Item]], item: Item, time_unix_s: float) -> dict[str, Any]:
    """The CSV row of one item: its time, then each field's measured value under its key."""
    return {TIME_KEY: round(time_unix_s, 3), **{f.key: f.value(item) for f in fields}}


def write_csv_stream(
    fields: Sequence[Field[Item]], items: Iterable[tuple[Item, float]], stream: TextIO
) -> None:
    """A header, then one CSV row per (item, time) as each arrives (flushed: a reader of a pipe sees every
    interval when it ends)."""

    def records() -> Iterator[dict[str, Any]]:
        for item, time_unix_s in items:
            yield _csv_row(fields, item, time_unix_s)
            stream.flush()  # write_csv has written the row by the time it asks for the next one

    write_csv(records(), stream)
