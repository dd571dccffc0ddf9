"""The dashboard's own help (?): its keys, generated from the bindings that work in this mode (live or
replay), then the legend of the panel that had the focus (render/legends.py): every column, glyph and unit
with its source. Textual's generic key panel listed keys the dashboard does not use (copy, scroll left).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import ClassVar

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from mqinspect.render.legends import LEGENDS, legend_view

KEY_NAMES = {"enter": "enter"}  # Textual draws enter as ⏎, which few terminals' users would search for


def key_rows(app: App, bindings: Iterable[BindingType]) -> list[tuple[str, str]]:
    """(keys, what they do) for the `bindings` whose action works now, in the order they are listed. A
    binding's tooltip, when it has one, is the longer description; keys that do the same share a row."""
    rows: dict[str, list[str]] = {}  # what the keys do -> the keys
    for binding in bindings:
        if not isinstance(binding, Binding):
            continue
        name, _, _ = binding.action.partition("(")
        if app.check_action(name.removeprefix("app."), ()) is False:
            continue
        keys = rows.setdefault(binding.tooltip or binding.description, [])
        for key in binding.key.split(","):
            keys.append(KEY_NAMES.get(key) or app.get_key_display(replace(binding, key=key)))
    return [(" ".join(keys), description) for description, keys in rows.items()]


def keys_view(title: str, rows: Sequence[tuple[str, str]], columns: int = 2) -> RenderableType:
    """The keys in `columns` pairs of columns (key, description), filled down each pair first."""
    table = Table(box=None, pad_edge=False, show_header=False, padding=(0, 2, 0, 0))
    for _ in range(columns):
        table.add_column(style="bold cyan", no_wrap=True)
        table.add_column(overflow="fold")
    per_column = -(-len(rows) // columns)
    for line in range(per_column):
        cells: list[str] = []
        for column in range(columns):
            index = column * per_column + line
            cells += rows[index] if index < len(rows) else ("", "")
        table.add_row(*cells)
    return Group(Text(title, style="bold"), table)


class HelpScreen(ModalScreen[None]):
    """The keys, then the legend of one panel. esc or ? closes it; q quits."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,question_mark", "close", "Close the help"),
        Binding("q,ctrl+c", "app.quit", "Quit"),  # a modal screen does not pass keys on to the app's bindings
    ]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll { width: 100%; max-width: 120; height: 100%; border: round $accent; }
    HelpScreen Static { padding: 0 1; }
    """

    def __init__(self, key_sections: Sequence[tuple[str, Sequence[tuple[str, str]]]], panel_id: str):
        super().__init__()
        self.key_sections = key_sections
        self.panel_id = panel_id if panel_id in LEGENDS else "segments"

    def compose(self) -> ComposeResult:
        scroll = VerticalScroll()
        scroll.border_title = f"help · {LEGENDS[self.panel_id].title} panel · esc closes · ↑↓ scroll"
        with scroll:
            yield Static(self.content(), id="help")

    def on_mount(self) -> None:
        self.query_one(VerticalScroll).focus()

    def content(self) -> RenderableType:
        sections: list[RenderableType] = [keys_view(title, rows) for title, rows in self.key_sections]
        sections.append(Text("1-5 or tab focus a panel; ? then shows that panel's legend", style="dim"))
        sections.append(Text(""))
        sections.append(legend_view(self.panel_id))
        return Group(*sections)

    def action_close(self) -> None:
        self.dismiss(None)
