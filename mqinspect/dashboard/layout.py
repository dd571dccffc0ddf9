"""How the dashboard's panels share the screen, by priority, as btop and htop do on a small terminal.

The screen's height picks one of three layouts (Textual's vertical breakpoints put the class on the Screen):

- tall (50 rows and more): every panel, the full heat key and sources under Segments while every segment
  row fits beside them; when not (a big store), they fold to the medium layout's one-line key (LEGEND_FOLDED),
  and Memory and Faults give Segments a row, Processes one more with Consumers shown (it keeps 5: the demo's
  broker and its four consumers). At 200x60 the demo's store then shows 10 segment rows (was 3).
- medium (32-49 rows): every panel; under Segments a one-line key (the legend and sources are in `?` help).
- short (under 32 rows: 80x24, 100x30): Segments and Memory first, Faults beside Memory with the top process
  on its first line; Send paths, Processes and (when the store has consumers) Consumers share the last slot
  as tabs (4, 5 and 6 switch), a tab line saying which is shown.

No panel is ever drawn at zero rows: each has a min-height that holds its title, its header and a row.
"""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget

from mqinspect.render.top import SENDPATH_ROWS

SHORT = "-short"
TALL = "-tall"
VERTICAL_BREAKPOINTS = [(0, SHORT), (32, "-medium"), (50, TALL)]
LOWER_TABS = {"sendpaths": "4 Send paths", "processes": "5 Processes", "consumers": "6 Consumers"}
FOLDED = "folded"  # the class of the lower tab not shown on a short screen
LEGEND_FOLDED = "legend-folded"  # the Screen's class: a tall screen shows the one-line key under Segments
# The rows a folded legend gives Segments besides its own lines (CSS below): one of Memory and Faults', one of
# Processes' (with Consumers shown).
FOLDING_GIVES_SEGMENTS_ROWS = 2

# Heights: a bordered panel needs 2 rows of border; a RowTable 1 more for its header.
LAYOUT_CSS = """
#segments { height: 2fr; min-height: 5; }
#segment-notes { height: auto; padding: 0 1; color: $text-muted; }
#segment-key { display: none; height: auto; padding: 0 1; color: $text-muted; }
#segment-key, #lower-tabs { text-wrap: nowrap; text-overflow: ellipsis; }
#middle { height: 15; min-height: 5; }
#memory, #faults { width: 1fr; height: 100%; }
#sendpaths { height: auto; max-height: 12; min-height: 4; }
#processes { height: 1fr; min-height: 5; }
#lower-tabs { display: none; height: 1; padding: 0 1; }
Screen.-short #segment-notes, Screen.-medium #segment-notes { display: none; }
Screen.-short #segment-key, Screen.-medium #segment-key { display: block; }
Screen.-tall.legend-folded #segment-notes { display: none; }
Screen.-tall.legend-folded #segment-key { display: block; }
Screen.-tall.legend-folded #middle { height: 14; }
Screen.-tall.legend-folded.consumers-shown #processes { min-height: 8; }
Screen.-medium #middle { height: 12; }
Screen.-short #segments { height: 1fr; }
Screen.-short #middle { height: 7; }
Screen.-short #lower-tabs { display: block; }
Screen.-short #sendpaths { height: 1fr; max-height: 100%; min-height: 7; }
Screen.-short #consumers { height: 1fr; min-height: 5; }
Screen.-short.consumers-shown #processes { min-height: 5; }
Screen.-short .folded { display: none; }
Screen.-short #consumers.folded { display: none; }
"""

COMPACT_KEY = (
    "heat █▓▒░ cached share · · none · green clean, red dirty, magenta writeback · W wrote · F flushed · "
    "faults, +cache per interval · ? legend and sources"
)


def send_path_rows(panel: Widget, short: bool) -> int:
    """How many send-path rows to list: all SENDPATH_ROWS where the panel grows with them; on a short screen,
    what its slot holds beside the header, the columns a narrow panel leaves out, a '+N more' line and the
    one-line source."""
    if not short or panel.content_size.height <= 0:
        return SENDPATH_ROWS
    return max(1, min(SENDPATH_ROWS, panel.content_size.height - 4))


def one_line(text: Text | str, style: str = "") -> Text:
    """A line that ends in "…" rather than wrap: the compact layouts have one row for it."""
    line = text.copy() if isinstance(text, Text) else Text(text, style=style)
    line.no_wrap, line.overflow = True, "ellipsis"
    return line


def compact_key(problems: list[Text]) -> Text:
    """The one-line heat key, then one line per probe problem (what is unavailable and the fix)."""
    lines = [one_line(COMPACT_KEY, "dim"), *(one_line(problem) for problem in problems)]
    return Text("\n", no_wrap=True, overflow="ellipsis").join(lines)


def tab_line(shown: str, tabs: tuple[str, ...] = tuple(LOWER_TABS)) -> Text:
    """'▶ 4 Send paths │ 5 Processes  (4, 5 switch)': which of the lower panels `tabs` is shown."""
    line = Text(no_wrap=True, overflow="ellipsis")
    for index, panel_id in enumerate(tabs):
        title = LOWER_TABS[panel_id]
        if index:
            line.append(" │ ", style="dim")
        line.append(
            f"▶ {title}" if panel_id == shown else f"  {title}",
            style="bold reverse" if panel_id == shown else "",
        )
    keys = ", ".join(LOWER_TABS[panel_id].split()[0] for panel_id in tabs)
    return line.append(f"  ({keys} switch; a taller terminal shows them all)", style="dim")
