"""The interactive dashboard: a Textual app that draws the snapshots a feed hands it.

Live, the feed is the sampler thread, which posts each snapshot as a `SnapshotArrived` message (post_message
is thread-safe); in replay, the app steps through recorded frames itself. Either way the app only draws
snapshots: it never reads /proc or a file. Drawing cost is kept down by touching only the widgets whose data
changed since the previous frame.

Keys are the BINDINGS below; the help screen (?, dashboard/help.py) and the footer are generated from them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.measure import Measurement
from rich.text import Text
from textual import events, on
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Footer, Input, Static

from mqinspect.dashboard.filtering import Kept, RowFilter, filter_summary
from mqinspect.dashboard.help import HelpScreen, key_rows
from mqinspect.dashboard.layout import (
    FOLDED,
    FOLDING_GIVES_SEGMENTS_ROWS,
    LAYOUT_CSS,
    LEGEND_FOLDED,
    LOWER_TABS,
    SHORT,
    TALL,
    VERTICAL_BREAKPOINTS,
    compact_key,
    send_path_rows,
    tab_line,
)
from mqinspect.dashboard.row_table import RowTable
from mqinspect.dashboard.sorting import TableSort, default_sorts, marked_titles
from mqinspect.render.cells import unavailable_text
from mqinspect.render.layout import WIDEN
from mqinspect.render.top import (
    HEAT_KEY,
    PROCESS_COLUMNS,
    PROCESS_TABLE_COLUMNS,
    SEGMENT_COLUMNS,
    SEGMENT_TABLE_COLUMNS,
    SENDPATH_COLUMNS,
    SOURCES,
    consumers_panel,
    detail_view,
    faults_panel,
    memory_panel,
    no_match_text,
    partitions_panel,
    probe_problem,
    probes_line,
    process_cells,
    segment_cells,
    segment_notes,
    sendpaths_panel,
    status_line,
)
from mqinspect.sampling.snapshot import (
    PROBE_FAULTS,
    PROBE_PAGECACHE,
    PROBE_SENDPATH,
    PROBE_WRITEBACK,
    ProcessView,
    SegmentView,
    SendPathRow,
    TopSnapshot,
)
from mqinspect.sampling.stream import MIN_INTERVAL_S

PANEL_IDS = ("segments", "memory", "faults", "sendpaths", "processes", "consumers")
SORT_NEXT = "Sort the focused table by the next column"
SORT_PREVIOUS = "Sort the focused table by the previous column"
INTERVAL_HELP = "Sampling interval, from the next tick: "
FOCUS_HELP = "Focus the panel of that number"
PANEL_NAMES = {
    "segments": "Segments",
    "memory": "Memory",
    "faults": "Faults",
    "sendpaths": "Send paths",
    "processes": "Processes",
}
AUTO_HEIGHT = {"segment-notes", "segment-key"}  # the Statics whose height follows their content
REPLAY_ACTIONS = {"seek"}
LIVE_ACTIONS = {"change_interval"}
# the intervals + and - step through (btop's keys); --interval may start between two of them
INTERVAL_STEPS_S = (MIN_INTERVAL_S, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)


class Feed(Protocol):
    """Where live snapshots come from. `attach` starts delivering to `app.receive_from_thread`."""

    interval_s: float

    def attach(self, app: DashboardApp) -> None: ...

    def set_interval(self, interval_s: float) -> None:
        """Sample every `interval_s` from the next tick on."""

    def focus(self, path: str | None, name: str | None) -> None: ...

    def draw_only(self, paths: frozenset[str]) -> None:
        """The segments whose rows are on screen: their heat strips are measured every interval."""

    def detach(self) -> None: ...


class SnapshotArrived(Message):
    """A snapshot from the sampler thread."""

    def __init__(self, snapshot: TopSnapshot):
        super().__init__()
        self.snapshot = snapshot


class FeedFailed(Message):
    """The sampler thread stopped with an error: the app exits and the runner reports it."""

    def __init__(self, error: BaseException):
        super().__init__()
        self.error = error


@dataclass
class ViewState:
    """What the user chose: the sort of each table, the filter, pause."""

    sorts: dict[str, TableSort] = field(default_factory=default_sorts)
    row_filter: RowFilter = field(default_factory=RowFilter)
    paused: bool = False

    @property
    def filter_text(self) -> str:
        return self.row_filter.text


class RenderedOnce:
    """A renderable's segments as rendered once at `width`, for a panel that needs its height (the lines a
    short panel cuts off) and then paints it: Textual rendered it twice, laying out its tables each time (a
    third of the dashboard's drawing). At any other width (a resize, a layout's measure) the renderable
    itself is rendered."""

    def __init__(self, renderable: Any, console: Console, options: ConsoleOptions):
        self.renderable = renderable
        self.width = options.max_width
        self.segments = list(console.render(renderable, options))
        self.height = sum(text.count("\n") for text, _style, _control in self.segments)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        if options.max_width == self.width:
            yield from self.segments
        else:
            yield from console.render(self.renderable, options)

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement.get(console, options, self.renderable)


class Panel(Static, can_focus=True):
    """A focusable panel drawn from a rich renderable; its border title names it, and its bottom border says
    how many lines a short panel cuts off (btop's and htop's habit: nothing disappears unsaid)."""

    def update(self, content: Any = "", *, layout: bool = True) -> None:
        width = self.content_size.width
        if width > 0 and not isinstance(content, str | Text):  # Text and markup are Textual's Content
            options = self.app.console_options.update_width(width).update(highlight=False)
            content = RenderedOnce(content, self.app.console, options)
        super().update(content, layout=layout)
        self._note_lines_cut_off(content)

    def on_resize(self) -> None:
        self._note_lines_cut_off()

    def _note_lines_cut_off(self, content: Any = None) -> None:
        room = self.content_size.height
        if room <= 0:  # not laid out (or folded away): the resize that shows it counts again
            return
        if isinstance(content, RenderedOnce) and content.width == self.content_size.width:
            height = content.height
        else:
            height = self.get_content_height(self.size, self.app.size, self.content_size.width)
        cut = height - room
        note = f"+{cut} more line{'s' if cut > 1 else ''} ↓" if cut > 0 else ""
        if note != str(self.border_subtitle or ""):  # setting it repaints the panel
            self.border_subtitle = note


class SegmentScreen(ModalScreen[None]):
    """The drill-down of one segment: its page map and its fault and page-cache events, kept current."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,enter", "close", "Close the segment map"),
        Binding("space", "app.toggle_pause", "Pause"),
        Binding("q,ctrl+c", "app.quit", "Quit"),  # a modal screen does not pass keys on to the app's bindings
    ]
    DEFAULT_CSS = """
    SegmentScreen { align: center middle; }
    SegmentScreen > Static { width: 95%; height: auto; max-height: 95%; border: round $accent; padding: 0 1; }
    """

    def __init__(self, path: str, name: str):
        super().__init__()
        self.segment_path = path
        self.segment_name = name

    def compose(self) -> ComposeResult:
        yield Static(id="detail")

    def draw(self, snapshot: TopSnapshot | None) -> None:
        body = self.query_one("#detail", Static)
        body.border_title = f"segment {self.segment_name} (esc closes)"
        if snapshot is None:
            body.update(unavailable_text("no frame yet"))
            return
        segment = next((s for s in snapshot.store.segments if s.path == self.segment_path), None)
        body.update(detail_view(snapshot, segment))

    def action_close(self) -> None:
        self.dismiss(None)


class DashboardApp(App[None]):
    """`mqinspect top` (live, from a feed) and `mqinspect replay` (from recorded frames)."""

    TITLE = "mqinspect top"
    CSS = (
        """
    #status, #probes { height: 1; padding: 0 1; text-wrap: nowrap; text-overflow: ellipsis; }
    #status.paused { background: $error 30%; }
    Panel, RowTable { border: round $panel; padding: 0 1; }
    Panel:focus, RowTable:focus { border: round $accent; }
    #consumers { height: 12; display: none; }
    #consumers.shown { display: block; }
    Screen.consumers-shown #processes { min-height: 9; }  /* the Consumers panel takes from the segments */
    #filter { dock: bottom; display: none; }
    #filter.visible { display: block; }
    #filter-summary { dock: bottom; height: 1; padding: 0 1; display: none; }
    #filter-summary.visible { display: block; }
    """
        + LAYOUT_CSS
    )
    VERTICAL_BREAKPOINTS = VERTICAL_BREAKPOINTS
    # The footer shows the descriptions, the help (?) the tooltips: keys with the same one share a row.
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit"),
        Binding("ctrl+c", "quit", "Quit", show=False),
        Binding("space", "toggle_pause", "Pause", tooltip="Pause or resume"),
        Binding("s", "move_sort(1)", "Sort", tooltip=SORT_NEXT),
        Binding(
            "greater_than_sign", "move_sort(1)", "Sort by the next column", show=False, tooltip=SORT_NEXT
        ),
        Binding(
            "less_than_sign",
            "move_sort(-1)",
            "Sort by the previous column",
            show=False,
            tooltip=SORT_PREVIOUS,
        ),
        Binding("r", "reverse_sort", "Reverse sort", tooltip="Reverse the focused table's sort"),
        Binding(
            "plus", "change_interval(1)", "Longer interval", show=False, tooltip=INTERVAL_HELP + "longer"
        ),
        Binding(
            "minus", "change_interval(-1)", "Shorter interval", show=False, tooltip=INTERVAL_HELP + "shorter"
        ),
        Binding("slash", "start_filter", "Filter", tooltip="Filter every panel (name, pid, command)"),
        Binding("escape", "clear_filter", "Clear filter", show=False, tooltip="Clear the filter"),
        Binding("enter", "drill_down", "Segment map", show=False, tooltip="Page map of the selected segment"),
        Binding("tab", "focus_next", "Next panel", show=False),
        Binding("shift+tab", "focus_previous", "Previous panel", show=False),
        Binding("1", "focus_panel('segments')", "Segments", show=False, tooltip=FOCUS_HELP),
        Binding("2", "focus_panel('memory')", "Memory", show=False, tooltip=FOCUS_HELP),
        Binding("3", "focus_panel('faults')", "Faults", show=False, tooltip=FOCUS_HELP),
        Binding("4", "focus_panel('sendpaths')", "Send paths", show=False, tooltip=FOCUS_HELP),
        Binding("5", "focus_panel('processes')", "Processes", show=False, tooltip=FOCUS_HELP),
        Binding("6", "focus_panel('consumers')", "Consumers", show=False, tooltip=FOCUS_HELP),
        Binding("question_mark", "toggle_help", "Help", tooltip="This help and the focused panel's legend"),
        Binding("comma", "seek(-1)", "Frame back"),
        Binding("full_stop", "seek(1)", "Frame forward"),
        Binding("left_square_bracket", "seek(-10)", "10 frames back", show=False),
        Binding("right_square_bracket", "seek(10)", "10 frames forward", show=False),
    ]

    def __init__(
        self,
        *,
        feed: Feed | None = None,
        frames: Sequence[TopSnapshot] = (),
        clock: Callable[[], float] = time.time,
    ):
        super().__init__()
        self.feed = feed
        self.frames = tuple(frames)
        self.replay = bool(frames)
        self.clock = clock
        self.state = ViewState()
        self.snapshot: TopSnapshot | None = None  # the frame on screen
        self.held: TopSnapshot | None = None  # the newest frame that arrived while paused
        self.held_count = 0
        self.frame_index = 0
        self.interval_s = feed.interval_s if feed is not None else None  # the interval set with + and -
        self.failure: BaseException | None = None
        self._drawn: dict[str, Any] = {}
        self._row_cells: dict[str, dict[str, tuple[Any, list]]] = {}  # table -> key -> (row, its cells)
        # table -> the keys and (row, cells) of the rows as last filled, in their order
        self._row_keys: dict[str, tuple[list[str], list[tuple[Any, list]]]] = {}
        self._visible_segments: tuple[Any, Any, tuple[SegmentView, ...]] = (None, None, ())
        self.lower_tab = "processes"  # of Send paths and Processes, the one a short screen shows
        self._replay_timer = None

    # --- layout

    def compose(self) -> ComposeResult:
        yield Static(id="status")
        yield Static(id="probes")
        with Vertical():
            yield RowTable(SEGMENT_TABLE_COLUMNS, id="segments")
            yield Static(id="segment-notes")
            yield Static(id="segment-key")
            with Horizontal(id="middle"):
                yield Panel(id="memory")
                yield Panel(id="faults")
            yield Static(id="lower-tabs")
            yield Panel(id="sendpaths")
            yield Panel(id="consumers")  # shown once a frame has a store's consumers
            yield RowTable(PROCESS_TABLE_COLUMNS, id="processes")
        yield Input(id="filter", placeholder="filter panels by segment name, pid or command (enter applies)")
        yield Static(id="filter-summary")
        yield Footer()

    def on_mount(self) -> None:
        self._set_titles()
        self.query_one("#segment-notes", Static).update(
            Text("\n".join((HEAT_KEY, f"source: {SOURCES['segments']}")), style="dim")
        )
        self.query_one("#segment-key", Static).update(compact_key([]))
        self.show_lower_tab(self.lower_tab)
        self.query_one("#segments", RowTable).focus()
        self._draw_status()
        if self.replay:
            self._replay_timer = self.set_interval(self._frame_interval(), self._advance_replay)
            self.show(self.frames[0])
        elif self.feed is not None:
            self.feed.attach(self)

    def on_unmount(self) -> None:
        if self.feed is not None:
            self.feed.detach()

    # --- frames in

    def receive_from_thread(self, snapshot: TopSnapshot) -> None:
        """Called by a feed on its own thread."""
        self.post_message(SnapshotArrived(snapshot))

    def fail_from_thread(self, error: BaseException) -> None:
        self.post_message(FeedFailed(error))

    @on(SnapshotArrived)
    def _on_snapshot(self, message: SnapshotArrived) -> None:
        self.receive(message.snapshot)

    @on(FeedFailed)
    def _on_feed_failed(self, message: FeedFailed) -> None:
        self.failure = message.error
        self.exit()

    def receive(self, snapshot: TopSnapshot) -> None:
        """A new frame: shown at once, or held while paused (the status line counts what is held)."""
        if self._shutting_down():
            return
        if self.state.paused:
            self.held = snapshot
            self.held_count += 1
            self._draw_status()
            return
        self.show(snapshot)

    def show(self, snapshot: TopSnapshot) -> None:
        self.snapshot = snapshot
        with self.batch_update():
            self._draw_status()
            self._draw_panels(snapshot)
            if isinstance(self.screen, SegmentScreen):
                self.screen.draw(snapshot)

    def _shutting_down(self) -> bool:
        """Whether the app is shutting down: its widgets go before the replay timer stops and before the feed
        detaches (on_unmount comes last), so a frame that arrives now has nothing to be drawn into."""
        return not self.is_running

    # --- drawing

    def _draw_status(self) -> None:
        status = self.query_one("#status", Static)
        mode = f" replay {self.frame_index + 1}/{len(self.frames)}" if self.replay else ""
        now = None if self.replay or self.snapshot is None else self.clock()
        status.update(
            status_line(
                self.snapshot,
                paused=self.state.paused,
                held=self.held_count,
                now_s=now,
                mode=mode,
                set_interval_s=self.interval_s,
            ),
            layout=False,
        )
        status.set_class(self.state.paused, "paused")

    def _draw_panels(self, snapshot: TopSnapshot) -> None:
        self._draw_if_changed("probes", snapshot.probes, lambda: probes_line(snapshot.probes))
        segments = self.visible_segments()
        processes = self.visible_processes()
        self._fill_if_changed("segments", segments, self._segment_cells, "path")
        self._fill_if_changed("processes", processes, process_cells, "pid")
        self._draw_empty_tables(snapshot)
        self._draw_filter_summary(snapshot)
        memory_key = (snapshot.memory, snapshot.writeback, snapshot.probe(PROBE_WRITEBACK))
        self._draw_if_changed("memory", memory_key, lambda: memory_panel(snapshot, titled=False))
        faulting = self.visible_faulting()
        hit = tuple((s.name, s.faults, s.major_faults) for s in segments if s.faults)
        filtered = self.state.filter_text
        width = self.query_one("#faults").content_size.width or None
        faults_key = (faulting, hit, len(segments), snapshot.probe(PROBE_FAULTS), filtered, width)
        self._draw_if_changed(
            "faults",
            faults_key,
            lambda: faults_panel(
                snapshot, faulting, titled=False, segments=segments, filter_text=filtered, width=width
            ),
        )
        self._draw_send_paths(snapshot)
        self._draw_segment_problems(snapshot)
        self._draw_consumers(snapshot)
        self._fold_segment_legend()

    def _draw_consumers(self, snapshot: TopSnapshot) -> None:
        """The Consumers panel, for frames that have a store's consumers (recordings before them do not)."""
        shown = snapshot.consumers is not None
        if shown != self.query_one("#consumers").has_class("shown"):
            self.query_one("#consumers").set_class(shown, "shown")
            self.show_lower_tab(self.lower_tab if shown or self.lower_tab != "consumers" else "processes")
        self.query_one("#processes").screen.set_class(shown, "consumers-shown")
        if not shown:
            return
        # a Kafka log dir's partitions: as many as the panel has lines (200 partitions' table, laid out
        # every frame one of them grew, was most of the dashboard's CPU; the panel showed its first lines)
        room = self.query_one("#consumers").content_size.height or None  # not laid out yet: all
        partitions = snapshot.store.partitions
        gaps = tuple(partition.unavailable for partition in partitions if partition.unavailable)
        key = (snapshot.consumers, snapshot.probe(PROBE_SENDPATH), partitions[:room], len(partitions), gaps)
        self._draw_if_changed("consumers", key, lambda: _consumers_and_partitions(snapshot, room))

    def _draw_send_paths(self, snapshot: TopSnapshot) -> None:
        """The rows the filter keeps, in the table's sort, under its marked headers. The panel's height
        follows its rows, so it is laid out again when their number changes; on a short screen it lists what
        its slot holds."""
        view = snapshot.sendpaths
        short = self.screen.has_class(SHORT)
        room = send_path_rows(self.query_one("#sendpaths"), short)
        probe = snapshot.probe(PROBE_SENDPATH)
        sending = self.visible_sendpaths()
        headers = tuple(marked_titles(SENDPATH_COLUMNS, self.state.sorts["sendpaths"]))
        filtered = self.state.filter_text
        self._draw_if_changed(
            "sendpaths",
            (sending, headers, view, probe, filtered, room, short),
            lambda: sendpaths_panel(
                snapshot,
                sending,
                titled=False,
                headers=headers,
                filter_text=filtered,
                max_rows=room,
                short=short,
                hidden_hint=WIDEN,
            ),
            layout_key=(min(len(sending), room), probe),
        )

    def _draw_if_changed(
        self, widget_id: str, key: Any, render: Callable[[], Any], layout_key: Any = None
    ) -> None:
        """Redraw a panel whose data changed. Most panels have fixed heights (CSS), so a new frame repaints
        the panel without laying out the screen again: that layout was most of a frame's cost. A panel
        whose height follows its content is laid out again when its `layout_key` (its number of rows)
        changes."""
        if self._drawn.get(widget_id) == key:
            return
        self._drawn[widget_id] = key
        shape = self._drawn.get(f"{widget_id}:layout")
        self._drawn[f"{widget_id}:layout"] = layout_key
        layout = widget_id in AUTO_HEIGHT or (layout_key is not None and layout_key != shape)
        self.query_one(f"#{widget_id}", Static).update(render(), layout=layout)

    def _fill_if_changed(
        self, table_id: str, rows: Sequence[Any], cells: Callable[[Any], list], key_field: str
    ) -> None:
        """Hand a table its rows when they changed; the table redraws only the rows that differ. A row equal
        to the one drawn under its key keeps its cells: with eBPF one segment's counters change every
        interval, and building every row's cells again was a sixth of the dashboard's CPU (64 segments).
        A changed row out of view keeps the cells it had until it scrolls into view (RowsShown): with 1,000
        segments, rows measured by turns off screen were most of a frame's drawing."""
        last_rows = self._drawn.get(table_id)
        if last_rows == rows:
            return
        self._drawn[table_id] = rows
        table = self.query_one(f"#{table_id}", RowTable)
        in_view = table.rows_in_view()
        drawn = self._row_cells.get(table_id, {})
        last_keys, last_entries = self._row_keys.get(table_id, ((), ()))
        same_place = len(last_keys) if last_rows is not None else 0
        keys, entries = [], []
        for index, row in enumerate(rows):
            if index < same_place and last_rows[index] is row:  # the very row drawn at this place last frame
                keys.append(last_keys[index])
                entries.append(last_entries[index])
                continue
            key = str(getattr(row, key_field))
            previous = drawn.get(key)
            if previous is not None and (previous[0] is row or index not in in_view or previous[0] == row):
                entries.append(previous)  # the same row, or one out of view: drawn when it comes into view
            else:
                entries.append((row, cells(row)))
            keys.append(key)
        self._row_cells[table_id] = dict(zip(keys, entries, strict=True))
        self._row_keys[table_id] = (keys, entries)
        table.set_rows(keys, [entry[1] for entry in entries])

    def _draw_segment_problems(self, snapshot: TopSnapshot) -> None:
        problems = [p for name in (PROBE_FAULTS, PROBE_PAGECACHE) if (p := probe_problem(snapshot, name))]
        if not snapshot.store.segments:
            problems.insert(0, unavailable_text(snapshot.store.unavailable.get("segments")))
        marked = any(segment.consumer_positions_bytes for segment in snapshot.store.segments)
        notes = Text("\n".join(segment_notes(snapshot, marked)), style="dim")
        for problem in problems:
            notes.append("\n").append_text(problem)
        drawn_for = (tuple(str(p) for p in problems), marked, snapshot.store.log_format)
        self._draw_if_changed("segment-notes", drawn_for, lambda: notes)
        self._draw_if_changed(
            "segment-key", (tuple(str(p) for p in problems),), lambda: compact_key(problems)
        )

    def _draw_empty_tables(self, snapshot: TopSnapshot) -> None:
        """An empty table says why: the filter kept none of its rows, or nothing was measured."""
        row_filter = self.state.row_filter
        segments, processes = snapshot.store.segments, snapshot.processes
        reasons = {
            "segments": no_match_text(row_filter.text, len(segments), "segment", "segments")
            if segments
            else None,  # the notes under the table say why there are none
            "processes": no_match_text(row_filter.text, len(processes), "process", "processes")
            if processes
            else unavailable_text(snapshot.unavailable.get("processes")),
        }
        for table_id, reason in reasons.items():
            self.query_one(f"#{table_id}", RowTable).set_empty_text(reason)

    def _draw_filter_summary(self, snapshot: TopSnapshot) -> None:
        row_filter = self.state.row_filter
        line = self.query_one("#filter-summary", Static)
        line.set_class(row_filter.active, "visible")
        if not row_filter.active:
            return
        kept = (
            Kept(len(self.visible_processes()), len(snapshot.processes), "process", "processes"),
            Kept(len(self.visible_segments()), len(snapshot.store.segments), "segment", "segments"),
            Kept(len(self.visible_sendpaths()), len(snapshot.sendpaths.processes), "send path", "send paths"),
        )
        self._draw_if_changed("filter-summary", kept, lambda: filter_summary(row_filter, kept))

    def _set_titles(self) -> None:
        sorts = self.state.sorts
        shown = f" · filter '{self.state.filter_text}'" if self.state.filter_text else ""
        titles = {
            "segments": f"1 Segments · {sorts['segments'].label()}{shown} · enter: page map",
            "memory": "2 Memory",
            "faults": f"3 Faults · {sorts['faults'].label()}{shown}",
            "sendpaths": f"4 Send paths · {sorts['sendpaths'].label()}{shown}",
            "processes": f"5 Processes · {sorts['processes'].label()}{shown}",
            "consumers": "6 Consumers",
        }
        for widget_id, title in titles.items():
            self.query_one(f"#{widget_id}").border_title = title
        for table_id, columns in (("segments", SEGMENT_COLUMNS), ("processes", PROCESS_COLUMNS)):
            self.query_one(f"#{table_id}", RowTable).set_titles(marked_titles(columns, sorts[table_id]))

    def redraw(self) -> None:
        self._set_titles()
        if self.snapshot is not None:
            self.show(self.snapshot)

    # --- what the tables show

    def visible_segments(self) -> tuple[SegmentView, ...]:
        """The filter's segments in the table's sort (kept for the frame: asked for several times)."""
        if self.snapshot is None:
            return ()
        snapshot, choice, rows = self._visible_segments
        if snapshot is not self.snapshot or choice != (self.state.row_filter, self.state.sorts["segments"]):
            choice = (self.state.row_filter, self.state.sorts["segments"])
            rows = choice[1].apply(choice[0].segments(self.snapshot.store.segments))
            self._visible_segments = (self.snapshot, choice, rows)
        return rows

    def visible_processes(self) -> tuple[ProcessView, ...]:
        if self.snapshot is None:
            return ()
        return self.state.sorts["processes"].apply(self.state.row_filter.processes(self.snapshot.processes))

    def visible_faulting(self) -> tuple[ProcessView, ...]:
        """The Faults panel's processes: the filter's, in the Faults panel's own order."""
        if self.snapshot is None:
            return ()
        return self.state.sorts["faults"].apply(self.state.row_filter.processes(self.snapshot.processes))

    def visible_sendpaths(self) -> tuple[SendPathRow, ...]:
        if self.snapshot is None:
            return ()
        rows = self.state.row_filter.sendpaths(self.snapshot.sendpaths.processes)
        return self.state.sorts["sendpaths"].apply(rows)

    # --- actions

    def action_toggle_pause(self) -> None:
        self.state.paused = not self.state.paused
        if not self.state.paused and self.held is not None:
            held, self.held, self.held_count = self.held, None, 0
            self.show(held)
        self._draw_status()

    def action_move_sort(self, step: int) -> None:
        """Sort the focused table by its next (1) or previous (-1) column."""
        table = self._sortable_focus()
        if table is not None:
            self.state.sorts[table] = self.state.sorts[table].moved(step)
            self.redraw()

    def action_reverse_sort(self) -> None:
        table = self._sortable_focus()
        if table is not None:
            self.state.sorts[table] = self.state.sorts[table].flipped()
            self.redraw()

    def _sortable_focus(self) -> str | None:
        """The focused panel if it can be sorted; otherwise says so (no other table changes behind it)."""
        focused = self._focused_id()
        if focused in self.state.sorts:
            return focused
        self.notify(f"{PANEL_NAMES.get(focused or '', 'this panel')} has no rows to sort", timeout=3)
        return None

    def action_change_interval(self, step: int) -> None:
        """The next longer (1) or shorter (-1) interval; the sampler takes it at its next tick."""
        if self.feed is None or self.interval_s is None:
            return
        self.interval_s = next_interval(self.interval_s, step)
        self.feed.set_interval(self.interval_s)
        self._draw_status()

    def action_start_filter(self) -> None:
        field = self.query_one("#filter", Input)
        field.value = self.state.filter_text
        field.add_class("visible")
        field.focus()

    @on(Input.Submitted, "#filter")
    def _apply_filter(self, message: Input.Submitted) -> None:
        self.apply_filter(message.value)

    def apply_filter(self, text: str) -> None:
        self.state.row_filter = RowFilter(text.strip())
        field = self.query_one("#filter", Input)
        field.remove_class("visible")
        self.query_one("#segments", RowTable).focus()
        self.redraw()

    def action_clear_filter(self) -> None:
        self.apply_filter("")

    def action_drill_down(self) -> None:
        key = self.query_one("#segments", RowTable).cursor_key
        if key is None:
            return
        segment = next((s for s in self.visible_segments() if s.path == key), None)
        if segment is not None:
            self.open_segment(segment)

    @on(RowTable.RowSelected, "#segments")
    def _segment_selected(self, message: RowTable.RowSelected) -> None:
        segment = next((s for s in self.visible_segments() if s.path == message.key), None)
        if segment is not None:
            self.open_segment(segment)

    @on(RowTable.RowsShown)
    def _rows_shown(self, message: RowTable.RowsShown) -> None:
        """Rows scrolled into view get the cells of the frame on screen, and the sampler measures the
        segments' heat strips of the rows in view."""
        table_id = message.table.id or ""
        if self.snapshot is not None and table_id in self._drawn:
            del self._drawn[table_id]
            if table_id == "segments":
                self._fill_if_changed("segments", self.visible_segments(), self._segment_cells, "path")
            elif table_id == "processes":
                self._fill_if_changed("processes", self.visible_processes(), process_cells, "pid")
        if table_id == "segments":
            self._fold_segment_legend()
            if self.feed is not None:
                self.feed.draw_only(message.keys)

    def on_resize(self) -> None:
        self.call_after_refresh(self._fold_segment_legend)

    def _fold_segment_legend(self) -> None:
        """A tall screen's full heat key and sources stay under Segments while every row fits beside them;
        otherwise the one-line key takes their place (layout.py). While folded, the rows that would fit
        unfolded are counted without all the room folding gave (at most that: Processes may take some), so
        the room folding makes never unfolds it again."""
        table = self.query_one("#segments", RowTable)
        rows_fitting = len(table.rows_in_view())
        if not rows_fitting:  # not laid out yet: its first layout counts again
            return
        screen = table.screen
        if screen.has_class(LEGEND_FOLDED):
            rows_fitting -= (
                self._lines_the_folded_legend_saves(table.size.width) + FOLDING_GIVES_SEGMENTS_ROWS
            )
        screen.set_class(screen.has_class(TALL) and table.row_count > rows_fitting, LEGEND_FOLDED)

    def _lines_the_folded_legend_saves(self, width: int) -> int:
        """The full legend's lines less the one-line key's (with the same problem lines) at `width`."""
        key = (self._drawn.get("segment-notes"), self._drawn.get("segment-key"), width)
        if self._drawn.get("legend-saves:key") != key:
            lines = [
                self.query_one(f"#{widget_id}", Static).get_content_height(self.size, self.size, width - 2)
                for widget_id in ("segment-notes", "segment-key")
            ]
            self._drawn["legend-saves:key"], self._drawn["legend-saves"] = key, lines[0] - lines[1]
        return self._drawn["legend-saves"]

    def _segment_cells(self, segment: SegmentView) -> list:
        assert self.snapshot is not None
        return segment_cells(segment, self.snapshot.page_size_bytes)

    def open_segment(self, segment: SegmentView) -> None:
        if isinstance(self.screen, SegmentScreen):
            return
        if self.feed is not None:
            self.feed.focus(segment.path, segment.name)
        screen = SegmentScreen(segment.path, segment.name)
        self.push_screen(screen, callback=self._segment_closed)
        screen.call_after_refresh(screen.draw, self.snapshot)

    def _segment_closed(self, _result: None) -> None:
        if self.feed is not None:
            self.feed.focus(None, None)

    def show_lower_tab(self, panel_id: str) -> None:
        """On a short screen, show this one of Send paths, Processes and Consumers (the others fold to their
        tabs; Consumers has one only when the frames have a store's consumers)."""
        self.lower_tab = panel_id
        for other in LOWER_TABS:
            self.query_one(f"#{other}").set_class(other != panel_id, FOLDED)
        self.query_one("#lower-tabs", Static).update(tab_line(panel_id, self._lower_tabs()))

    def _lower_tabs(self) -> tuple[str, ...]:
        return tuple(
            tab for tab in LOWER_TABS if tab != "consumers" or self.query_one("#consumers").has_class("shown")
        )

    @on(events.DescendantFocus)
    def _unfold_focused(self, event: events.DescendantFocus) -> None:
        """4, 5, a click or tab onto a folded lower panel shows it."""
        if event.widget.id in LOWER_TABS and event.widget.id != self.lower_tab:
            self.show_lower_tab(event.widget.id)

    def action_focus_panel(self, panel_id: str) -> None:
        self.query_one(f"#{panel_id}").focus()

    def action_toggle_help(self) -> None:
        """The product's help: keys of this mode, then the legend of the focused panel."""
        if isinstance(self.screen, HelpScreen):
            self.screen.dismiss(None)
            return
        sections = [
            ("Keys", key_rows(self, self.BINDINGS)),
            ("In a table", key_rows(self, RowTable.BINDINGS)),
        ]
        self.push_screen(HelpScreen(sections, self._focused_id() or "segments"))

    def action_seek(self, frames: int) -> None:
        self.state.paused = True  # stepping through frames stops the playback
        self.show_frame(self.frame_index + frames)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in REPLAY_ACTIONS:
            return self.replay
        if action in LIVE_ACTIONS:
            return not self.replay
        return True

    def _focused_id(self) -> str | None:
        return self.focused.id if self.focused is not None else None

    # --- replay

    def _frame_interval(self) -> float:
        return max(self.frames[0].interval_s, 0.05) if self.frames else 1.0

    def _advance_replay(self) -> None:
        if self._shutting_down() or self.state.paused or self.frame_index >= len(self.frames) - 1:
            return
        self.show_frame(self.frame_index + 1)

    def show_frame(self, index: int) -> None:
        self.frame_index = max(0, min(index, len(self.frames) - 1))
        self.show(self.frames[self.frame_index])


def next_interval(current_s: float, step: int) -> float:
    """The next step of INTERVAL_STEPS_S above (step 1) or below (step -1) the current interval; the ends
    stay where they are."""
    if step > 0:
        return next((s for s in INTERVAL_STEPS_S if s > current_s + 1e-9), INTERVAL_STEPS_S[-1])
    return next((s for s in reversed(INTERVAL_STEPS_S) if s < current_s - 1e-9), INTERVAL_STEPS_S[0])


def _next(options: dict[str, Any], current: str) -> str:
    names = list(options)
    return names[(names.index(current) + 1) % len(names)]


def _consumers_and_partitions(snapshot: TopSnapshot, max_partitions: int | None = None) -> RenderableType:
    """The Consumers panel; for a Kafka log directory, its partitions' offsets first (what lag is against),
    up to `max_partitions` of them."""
    panel = consumers_panel(snapshot, titled=False)
    if not snapshot.store.partitions:
        return panel
    return Group(partitions_panel(snapshot, max_rows=max_partitions), Text(""), panel)
