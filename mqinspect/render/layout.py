"""Tables that fit the width they are given by dropping columns by priority, as htop and btop do.

A column is drawn whole or not at all: a number never loses its unit to a cut and no column is drawn at zero
width. Columns of priority 0 are always drawn; the others come in by priority (then from the left) while the
table still fits. Text columns (names, keys, bodies) may be `flexible`: they shrink to their `min_width` and
fold or end in "…" before any number goes.

The same rule serves the dashboard's RowTable (which knows its width in cells) and the rich tables of the
table commands (`PriorityTable`, which learns its width when rich renders it). `--wide` renders on a console
WIDE_WIDTH cells wide (`wide_console`), so every column fits and lines are as long as they need.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

ALWAYS = 0
LAST = 99  # a column given no priority comes in last (a column added later by someone who chose none)
WIDE_WIDTH = 10_000  # --wide: a console this wide fits every table of the project whole
WIDE_HINT = "--wide shows all"  # how to see the columns a table command left out
WIDEN = "widen to see"  # the same in the dashboard


@dataclass(frozen=True)
class Column:
    """A column: its title, its priority (0 always drawn, higher dropped first) and how it is drawn."""

    title: str
    priority: int = LAST
    justify: str = "right"
    flexible: bool = False  # text that may shrink to min_width (folded or ellipsized), never a number
    min_width: int = 0
    overflow: str = "fold"
    max_width: int | None = None  # a flexible column's widest (a message body need not take the line)


def columns_by_priority(
    titles: Sequence[str], priorities: Mapping[str, int], left: Sequence[str] = (), **options: Any
) -> tuple[Column, ...]:
    """Columns for these titles: priority from `priorities` (LAST if absent), left-justified if in `left`.
    `options` ({title: {field: value}}) sets the other fields of a column."""
    made = []
    for title in titles:
        column = Column(title, priorities.get(title, LAST), "left" if title in left else "right")
        made.append(replace(column, **options.get(title, {})))
    return tuple(made)


def fit_columns(
    columns: Sequence[Column], widths: Sequence[int], available: int, gap: Callable[[int], int]
) -> list[int]:
    """The indices, in table order, of the columns to draw in `available` cells. `widths` are the columns'
    natural widths; `gap(n)` is what n columns cost beyond their cells (padding, separators, edges). Only
    when the priority-0 columns alone overflow do the flexible ones shrink (the table does that)."""
    shown = [i for i, column in enumerate(columns) if column.priority <= ALWAYS]
    used = sum(widths[i] for i in shown)
    candidates = sorted((i for i in range(len(columns)) if i not in shown), key=lambda i: columns[i].priority)
    for index in candidates:
        if used + widths[index] + gap(len(shown) + 1) <= available:
            shown.append(index)
            used += widths[index]
    return sorted(shown)


def fit_widths(
    columns: Sequence[Column], widths: Sequence[int], available: int, gap: Callable[[int], int]
) -> tuple[list[int], list[int]]:
    """`fit_columns` for a table that draws its own cells (the dashboard's RowTable): when the priority-0
    columns overflow, the flexible ones among them give way first, down to their min_width (their cells are
    then drawn by `shorten`). Returns the columns to draw and the width of each."""
    drawn = list(widths)
    always = [i for i, column in enumerate(columns) if column.priority <= ALWAYS]
    excess = sum(drawn[i] for i in always) + gap(len(always)) - available
    for index in always:
        column = columns[index]
        if excess <= 0:
            break
        if column.flexible:
            cut = min(excess, drawn[index] - max(column.min_width, len(column.title)))
            if cut > 0:
                drawn[index] -= cut
                excess -= cut
    return fit_columns(columns, drawn, available, gap), drawn


def shorten(text: str, width: int) -> str:
    """A name in `width` cells, its ends kept: the leading zeros of a trailing number go first
    ("commitlog/…268435456"), then the middle ("consumequeue/Dem…000000000")."""
    if len(text) <= width:
        return text
    number = re.search(r"0+(?=\d+$)", text)
    if number is not None:
        zeros = min(number.end() - number.start(), len(text) - width + 1)
        text = f"{text[: number.start()]}…{text[number.start() + zeros :]}"
        if len(text) <= width:
            return text
    head = (width - 1) // 2
    return f"{text[:head]}…{text[len(text) - (width - 1 - head) :]}"


def hidden_note(columns: Sequence[Column], shown: Sequence[int], how: str, width: int | None = None) -> str:
    """'+3 columns: writeback, major, locked (--wide shows all)', or '' when every column is drawn. Within
    `width` cells the list ends in '…' where the names would not fit (a word is never cut)."""
    hidden = [column.title for i, column in enumerate(columns) if i not in shown]
    if not hidden:
        return ""
    count = f"+{len(hidden)} column{'s' if len(hidden) > 1 else ''}"
    for listed in range(len(hidden), -1, -1):
        names = ", ".join(hidden[:listed] + (["…"] if listed < len(hidden) else []))
        note = f"{count}: {names} ({how})"
        if width is None or len(note) <= width:
            return note
    return f"{count} ({how})"


@dataclass
class PriorityTable:
    """A rich table that drops its lowest-priority columns to fit the width rich gives it, and says which it
    dropped under the table. `table_options` are rich.table.Table's (title, box, padding, ...)."""

    columns: Sequence[Column]
    rows: list[list[Text]] = field(default_factory=list)
    table_options: dict[str, Any] = field(default_factory=dict)
    hidden_hint: str = WIDE_HINT

    def add_row(self, *cells: Text | str) -> None:
        self.rows.append([cell if isinstance(cell, Text) else Text(cell) for cell in cells])

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        shown = self.fit(options.max_width)
        yield self.table(shown)
        note = hidden_note(self.columns, shown, self.hidden_hint)
        if note:
            yield Text(note, style="dim")

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement.get(console, options, self.table(list(range(len(self.columns)))))

    def fit(self, available: int) -> list[int]:
        widths = [self._natural(i) for i in range(len(self.columns))]
        return fit_columns(self.columns, widths, available, self._gap)

    def table(self, shown: Sequence[int]) -> Table:
        table = Table(**self.table_options)
        for index in shown:
            column = self.columns[index]
            natural = self._natural(index)
            table.add_column(
                column.title,
                justify=column.justify,  # type: ignore[arg-type]
                no_wrap=not column.flexible,
                overflow=column.overflow if column.flexible else "ellipsis",  # type: ignore[arg-type]
                min_width=min(max(column.min_width, len(column.title)), natural)
                if column.flexible
                else natural,
                # A fixed column's width is known: rich then does not measure each of its cells again (a
                # fifth of drawing a table of 1,500 rows).
                width=None if column.flexible else natural,
            )
        for row in self.rows:
            table.add_row(*(self._cell(row, index) for index in shown))
        return table

    def _cell(self, row: list[Text], index: int) -> Text:
        """The cell as drawn: a flexible column's text ends in "…" at its max_width, wide or narrow."""
        column, cell = self.columns[index], row[index]
        if column.flexible and column.max_width is not None and cell.cell_len > column.max_width:
            cell = cell.copy()
            cell.truncate(column.max_width, overflow="ellipsis")
        return cell

    def _natural(self, index: int) -> int:
        column = self.columns[index]
        natural = max(len(column.title), *(row[index].cell_len for row in self.rows), 0)
        if column.flexible and column.max_width is not None:
            return max(min(natural, column.max_width), len(column.title))
        return natural

    def _gap(self, count: int) -> int:
        """What `count` columns cost beyond their cells in a rich Table with these options."""
        probe = Table(**{**self.table_options, "title": None, "caption": None})
        _top, right, _bottom, left = probe.padding
        cost = count * (left + right)
        if not probe.pad_edge:
            cost -= left + right
        if probe.box is not None:
            cost += max(count - 1, 0) + (2 if probe.show_edge else 0)
        return cost


def wide_console(console: Console) -> Console:
    """`--wide`: the console renders every table whole, however wide (lines are then longer than the
    terminal, as `ps -ww` prints them)."""
    console.width = WIDE_WIDTH
    return console
