"""RowTable: a scrollable table of rich Text cells with a row cursor, drawn line by line from a cache per row.

Why not DataTable: any update of one DataTable cell re-renders every visible cell (its caches are keyed by
a table-wide update count), and a dashboard whose newest segment changes every second would pay for the
whole table each second. Here a frame in which one row changed renders and repaints that row only.

Keys: up/down (k/j), page up/down, home/end move the cursor; enter posts RowSelected; a click moves the
cursor to the clicked row, the wheel scrolls (ScrollView).

Narrower than its columns, the table draws those of highest priority whole (render.layout) and its bottom
border says which it left out; taller than its panel, the border says how many rows are below or above.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.console import Console
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from mqinspect.render.layout import WIDEN, Column, fit_widths, hidden_note, shorten

COLUMN_GAP = 2
HEADER_STYLE = Style(bold=True)
CURSOR_STYLE = Style(reverse=True)
_PLAIN = Style()
_RENDER_CONSOLE = Console(width=1000, color_system="truecolor", force_terminal=True, legacy_windows=False)


class TableMessage(Message):
    """A message about one table (its `control`, for @on selectors)."""

    def __init__(self, table: RowTable):
        super().__init__()
        self.table = table

    @property
    def control(self) -> RowTable:
        return self.table


class RowTable(ScrollView, can_focus=True):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up,k", "cursor(-1)", "Up", show=False),
        Binding("down,j", "cursor(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home", "cursor(-1000000)", "First row", show=False),
        Binding("end", "cursor(1000000)", "Last row", show=False),
        Binding("enter", "select", "Open", show=False),
    ]

    class RowsShown(TableMessage):
        """The rows in view changed (scrolled, resized, new rows): `keys` are those shown now."""

        def __init__(self, table: RowTable, keys: frozenset[str]):
            super().__init__(table)
            self.keys = keys

    class RowSelected(TableMessage):
        def __init__(self, table: RowTable, key: str):
            super().__init__(table)
            self.key = key

    def __init__(self, columns: Sequence[Column], *, id: str | None = None):
        """`columns`: titles, justification ("left" or "right") and priorities (render.layout)."""
        super().__init__(id=id)
        self.columns = tuple(columns)
        self.titles = [column.title for column in columns]
        self.justify = [column.justify for column in columns]
        self.widths = [len(title) for title in self.titles]
        self.shown = list(range(len(columns)))  # the columns that fit, in table order
        self.drawn_widths = list(self.widths)  # a flexible column may be drawn narrower than its cells
        self.keys: list[str] = []
        self.cells: list[list[Text]] = []
        self.cursor_row = 0
        self.empty_text: Text | None = None  # drawn in place of the rows when there are none
        self._strips: dict[int, Strip] = {}
        self._header: Strip | None = None
        self._subtitle = ""
        self._shown_keys: frozenset[str] | None = None

    # --- data

    @property
    def row_count(self) -> int:
        return len(self.keys)

    @property
    def cursor_key(self) -> str | None:
        return self.keys[self.cursor_row] if self.keys else None

    def row_plain(self, index: int) -> list[str]:
        return [cell.plain for cell in self.cells[index]]

    def set_rows(self, keys: Sequence[str], cells: Sequence[list[Text]]) -> None:
        """Show these rows; only those that differ from what is shown are rendered again (a row given as the
        very list drawn under its key is not even compared: with 1,500 segments comparing every cell was
        most of a frame). The cursor stays on the row with the same key when there still is one."""
        selected = self.cursor_key
        keys, cells = list(keys), list(cells)
        changed = [
            index
            for index, row in enumerate(cells)
            if index >= len(self.cells)
            or keys[index] != self.keys[index]
            or (row is not self.cells[index] and row != self.cells[index])
        ]
        widths = list(self.widths)
        for index in changed:
            for column, cell in enumerate(cells[index]):
                widths[column] = max(widths[column], cell.cell_len)
        if widths != self.widths:  # columns only grow, so a wider cell redraws the table once
            self.widths = widths
            self._redraw_all()
        for index in changed:
            self._strips.pop(index, None)
            self.refresh_line(index + 1)
        for index in range(len(cells), len(self.cells)):
            self._strips.pop(index, None)
            self.refresh_line(index + 1)
        self.keys, self.cells = keys, cells
        self._fit()
        self.virtual_size = Size(self._line_width(), len(keys) + 1)
        if selected in keys:
            self.move_cursor(keys.index(selected))
        else:
            self.move_cursor(min(self.cursor_row, max(len(keys) - 1, 0)))
        self._note_what_is_out_of_view()

    def rows_in_view(self) -> range:
        """The indices of the rows the panel shows now (none while it is not laid out)."""
        top = self.scroll_offset.y
        return range(top, top + max(self.scrollable_content_region.height - 1, 0))

    def visible_keys(self) -> frozenset[str]:
        """The keys of the rows the panel shows now."""
        shown = self.rows_in_view()
        return frozenset(self.keys[shown.start : shown.stop])

    # --- fitting the panel

    def on_resize(self) -> None:
        self._fit()
        self.virtual_size = Size(self._line_width(), len(self.keys) + 1)
        self._note_what_is_out_of_view()

    def _fit(self) -> None:
        """Draw the columns that fit the panel's width, by priority; never one cut or at zero width."""
        # room for the vertical scrollbar is kept whether it shows or not: rows coming and going must not
        # make a column come and go
        available = self.content_region.width - self.styles.scrollbar_size_vertical
        if available <= 0:  # not laid out yet: the first resize fits it
            return
        shown, drawn = fit_widths(self.columns, self.widths, available, _gaps)
        if (shown, drawn) != (self.shown, self.drawn_widths):
            self.shown, self.drawn_widths = shown, drawn
            self._redraw_all()

    def _line_width(self) -> int:
        return sum(self.drawn_widths[i] for i in self.shown) + _gaps(len(self.shown))

    def _redraw_all(self) -> None:
        self._strips, self._header = {}, None
        self.refresh()

    def _note_what_is_out_of_view(self) -> None:
        """The bottom border: '+N more ↓' rows below the panel (and above it), and the columns left out."""
        visible_rows = max(self.scrollable_content_region.height - 1, 0)
        above = self.scroll_offset.y
        below = max(len(self.keys) - above - visible_rows, 0)
        notes = [f"+{above} more ↑"] if above else []
        notes += [f"+{below} more ↓"] if below else []
        # the border's corners and the title's frame ("─ " and " ─") take 6 cells
        room = self.size.width - 6 - sum(len(note) + 3 for note in notes) if self.size.width else None
        notes += [hidden] if (hidden := hidden_note(self.columns, self.shown, WIDEN, room)) else []
        subtitle = " · ".join(notes)
        if subtitle != self._subtitle:  # setting a border title repaints the whole table
            self._subtitle = self.border_subtitle = subtitle
        shown = self.visible_keys()
        if shown != self._shown_keys:
            self._shown_keys = shown
            self.post_message(self.RowsShown(self, shown))

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        self._note_what_is_out_of_view()

    def set_titles(self, titles: Sequence[str]) -> None:
        """New column headers (the sorted column's mark moves); a wider header widens its column."""
        if list(titles) == self.titles:
            return
        self.titles = list(titles)
        widths = [max(width, len(title)) for width, title in zip(self.widths, self.titles, strict=True)]
        if widths != self.widths:
            self.widths = widths
            self._redraw_all()
            self._fit()  # a wider column may no longer fit beside the others
        self._header = None
        self.refresh_line(0)

    def set_empty_text(self, text: Text | None) -> None:
        """What the table says while it has no rows (why: nothing measured, or the filter kept none)."""
        if text != self.empty_text:
            self.empty_text = text
            self.refresh_line(1)

    # --- drawing

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        width = self.scrollable_content_region.width
        if y == 0:
            strip = self._header_strip()
        else:
            index = scroll_y + y - 1
            if index >= len(self.keys):
                if index == 0 and self.empty_text is not None:
                    return self._strip_of(self.empty_text).crop(0, width).extend_cell_length(width, _PLAIN)
                return Strip.blank(width, _PLAIN)
            strip = self._row_strip(index)
            if index == self.cursor_row and self.has_focus:
                strip = strip.apply_style(CURSOR_STYLE)
        return strip.crop(scroll_x, scroll_x + width).extend_cell_length(width, _PLAIN)

    def _header_strip(self) -> Strip:
        if self._header is None:
            self._header = self._strip([Text(title, style=HEADER_STYLE) for title in self.titles])
        return self._header

    def _row_strip(self, index: int) -> Strip:
        strip = self._strips.get(index)
        if strip is None:
            strip = self._strips[index] = self._strip(self.cells[index])
        return strip

    def _strip(self, cells: Sequence[Text]) -> Strip:
        line = Text(no_wrap=True, end="")
        for index in self.shown:
            cell, width, justify = cells[index], self.drawn_widths[index], self.justify[index]
            if cell.cell_len > width:  # a flexible column given less than its widest name
                cell = Text(shorten(cell.plain, width), style=cell.style)
            padding = " " * (width - cell.cell_len)
            if justify == "right":
                line.append(padding)
                line.append_text(cell)
            else:
                line.append_text(cell)
                line.append(padding)
            line.append(" " * COLUMN_GAP)
        return self._strip_of(line)

    @staticmethod
    def _strip_of(line: Text) -> Strip:
        # Every segment gets a style: Textual's NO_COLOR filter (MonochromeFilter) fails on a None style.
        segments = [
            Segment(segment.text, segment.style or _PLAIN)
            for segment in line.render(_RENDER_CONSOLE)
            if segment.text != "\n"
        ]
        return Strip(Segment.simplify(segments))

    # --- cursor

    def move_cursor(self, row: int) -> None:
        row = max(0, min(row, len(self.keys) - 1)) if self.keys else 0
        old, self.cursor_row = self.cursor_row, row
        self.refresh_line(old + 1)
        self.refresh_line(row + 1)
        self._scroll_to_cursor()

    def _scroll_to_cursor(self) -> None:
        visible_rows = max(self.scrollable_content_region.height - 1, 1)
        top = self.scroll_offset.y
        if self.cursor_row < top:
            self.scroll_to(y=self.cursor_row, animate=False)
        elif self.cursor_row >= top + visible_rows:
            self.scroll_to(y=self.cursor_row - visible_rows + 1, animate=False)

    def action_cursor(self, rows: int) -> None:
        self.move_cursor(self.cursor_row + rows)

    def action_page(self, pages: int) -> None:
        self.move_cursor(self.cursor_row + pages * max(self.scrollable_content_region.height - 1, 1))

    def action_select(self) -> None:
        if self.cursor_key is not None:
            self.post_message(self.RowSelected(self, self.cursor_key))

    def on_click(self, event: events.Click) -> None:
        row = self.scroll_offset.y + event.y - 1
        if event.y >= 1 and 0 <= row < len(self.keys):
            self.move_cursor(row)
            if event.chain == 2:  # double click opens, as enter does
                self.action_select()

    def on_focus(self) -> None:
        self.refresh_line(self.cursor_row + 1)

    def on_blur(self) -> None:
        self.refresh_line(self.cursor_row + 1)


def _gaps(columns: int) -> int:
    """The cells between `columns` columns (the gap after the last one is cut off)."""
    return COLUMN_GAP * max(columns - 1, 0)
