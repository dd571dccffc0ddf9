"""The Textual dashboard driven by Pilot, with a fake feed (no sampler thread) and a frozen clock: pause,
sort, filter, drill-down, help, and replay's pause and seek. Assertions are on widget state, not pixels."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import re

from fakes import T0, FakeFeed, frame
from rich.console import Console
from textual.widgets import Static

from mqinspect.dashboard.app import PANEL_IDS, DashboardApp, SegmentScreen
from mqinspect.dashboard.help import HelpScreen
from mqinspect.dashboard.row_table import COLUMN_GAP, RowTable
from mqinspect.render.cells import HEAT_GLYPHS
from mqinspect.render.legends import LEGENDS
from mqinspect.render.top import (
    FLUSHED_MARK,
    PROCESS_COLUMNS,
    SEGMENT_COLUMNS,
    SENDPATH_COLUMNS,
    WROTE_MARK,
    top_view,
)
from mqinspect.sampling.snapshot import SendPathRow

SIZE = (160, 50)


def run(test) -> None:
    asyncio.run(test())


def new_app(**kwargs) -> DashboardApp:
    return DashboardApp(feed=FakeFeed(), clock=lambda: T0 + 10, **kwargs)


def plain(renderable) -> str:
    console = Console(width=160, file=io.StringIO(), color_system=None)
    console.print(renderable)
    return console.file.getvalue()


def text_of(app: DashboardApp, widget_id: str) -> str:
    return plain(app.screen.query_one(f"#{widget_id}", Static).content)


def column(app: DashboardApp, table_id: str, index: int) -> list[str]:
    table = app.query_one(f"#{table_id}", RowTable)
    return [table.row_plain(row)[index] for row in range(table.row_count)]


def test_frames_from_the_feed_fill_every_panel():
    async def test():
        app = new_app()
        async with app.run_test(size=SIZE) as pilot:
            assert app.feed.attached
            app.receive(frame(1))
            await pilot.pause()
            assert column(app, "segments", 0)[3] == "commitlog/00000000000003145728"
            assert column(app, "processes", 1) == ["broker", "consumer", "producer"]
            assert "frame 1" in text_of(app, "status") and "9 s ago" in text_of(app, "status")
            assert "throttled writers: 1" in text_of(app, "memory")
            assert "mmap+write" in text_of(app, "sendpaths")

    run(test)


def test_a_new_frame_rebuilds_only_the_rows_that_changed():
    async def test():
        app = new_app()
        async with app.run_test(size=SIZE) as pilot:
            app.receive(frame(1))
            await pilot.pause()
            table = app.query_one("#segments", RowTable)
            before = list(table.cells)
            app.receive(frame(2))  # only the newest segment's residency and faults moved
            await pilot.pause()
            strips_kept = [now[1] is then[1] for now, then in zip(table.cells, before, strict=True)]
            assert strips_kept == [True, True, True, False]
            assert column(app, "segments", 7)[3] == "9"  # faults of the newest segment, frame 2

    run(test)


def test_pause_stops_updates_and_says_so():
    async def test():
        app = new_app()
        async with app.run_test(size=SIZE) as pilot:
            app.receive(frame(1))
            await pilot.press("space")
            app.receive(frame(2))
            app.receive(frame(3))
            await pilot.pause()
            status = text_of(app, "status")
            assert "PAUSED" in status and "2 newer frames held" in status
            assert app.query_one("#status").has_class("paused")
            assert app.snapshot.sequence == 1 and "frame 1" in status
            await pilot.press("space")
            assert app.snapshot.sequence == 3
            assert "PAUSED" not in text_of(app, "status")

    run(test)


def test_sort_changes_the_order_of_the_rows():
    async def test():
        app = new_app()
        async with app.run_test(size=SIZE) as pilot:
            app.receive(frame(1))
            await pilot.pause()
            await pilot.press("s")  # segments focused: by cached share, most cached first
            assert column(app, "segments", 0)[:2] == [
                "commitlog/00000000000000000000",
                "commitlog/00000000000002097152",
            ]
            await pilot.press("r")
            assert column(app, "segments", 0)[0] == "commitlog/00000000000001048576"
            await pilot.press("5", "s", "s", "s")  # processes: minor faults per second, highest first
            assert column(app, "processes", 1) == ["broker", "producer", "consumer"]
            assert "sort minflt/s ▼" in str(app.query_one("#processes").border_title)

    run(test)


def test_filter_keeps_the_matching_rows_and_escape_clears_it():
    async def test():
        app = new_app()
        async with app.run_test(size=SIZE) as pilot:
            app.receive(frame(1))
            await pilot.pause()
            await pilot.press("slash", *"2097", "enter")
            assert column(app, "segments", 0) == ["commitlog/00000000000002097152"]
            assert app.query_one("#processes", RowTable).row_count == 0
            await pilot.press("slash", *"cons", "enter")
            assert column(app, "processes", 1) == ["consumer"]
            await pilot.press("escape")
            assert app.query_one("#segments", RowTable).row_count == 4

    run(test)


def test_enter_opens_the_selected_segment_and_asks_the_feed_for_its_map():
    async def test():
        app = new_app()
        async with app.run_test(size=SIZE) as pilot:
            app.receive(frame(1))
            await pilot.pause()
            await pilot.press("down", "down", "enter")
            assert isinstance(app.screen, SegmentScreen)
            path = "/store/commitlog/00000000000002097152"
            assert app.screen.segment_path == path and app.feed.focused == [path]
            app.receive(frame(2, detail_for=path))
            await pilot.pause()
            detail = text_of(app, "detail")
            assert "page map: 8 cells" in detail and "faults 40" in detail
            await pilot.press("escape")
            assert not isinstance(app.screen, SegmentScreen) and app.feed.focused == [path, None]
            await pilot.press("enter", "q")  # quitting works from the segment map too
        assert app.return_code == 0

    run(test)


def help_text(app: DashboardApp) -> str:
    assert isinstance(app.screen, HelpScreen)
    return plain(app.screen.query_one("#help", Static).content)


def test_help_is_the_products_own_keys_then_the_focused_panels_legend():
    async def test():
        app = new_app()
        async with app.run_test(size=SIZE) as pilot:
            app.receive(frame(1))
            await pilot.pause()
            await pilot.press("question_mark")
            listed = help_text(app)
            for keys, what in (("q ^c", "Quit"), ("s >", "next column"), ("<", "previous column"), ("+", "")):
                assert re.search(rf"^{re.escape(keys)}\s+.*{what}", listed, re.MULTILINE), keys
            assert "Copy selected text" not in listed and "Scroll Left" not in listed  # Textual's, not ours
            assert "Frame back" not in listed  # replay's keys are not offered live
            assert "Segments: columns and figures" in listed and "masterFlushedOffset" in listed
            await pilot.press("question_mark")
            assert not isinstance(app.screen, HelpScreen)
            await pilot.press("4", "question_mark")  # the legend follows the focused panel
            listed = help_text(app)
            assert "Send paths: columns and figures" in listed and "copies/B" in listed
            assert "source: sendpath probe" in listed
            await pilot.press("escape", "q")
        assert app.return_code == 0

    run(test)


def test_every_column_of_every_panel_has_a_legend_with_a_source():
    drawn = {"segments": SEGMENT_COLUMNS, "sendpaths": SENDPATH_COLUMNS, "processes": PROCESS_COLUMNS}
    for panel, columns in drawn.items():
        legend = {entry.name: entry for entry in LEGENDS[panel].columns}
        assert set(columns) <= set(legend), panel
        assert all(legend[column].source for column in columns), panel
    assert set(LEGENDS) == set(PANEL_IDS)
    glyphs = {entry.name for entry in LEGENDS["segments"].glyphs}
    assert {glyph for _floor, glyph in HEAT_GLYPHS} | {WROTE_MARK, FLUSHED_MARK, "▲", "▼"} <= glyphs


def test_panels_are_switched_with_number_keys_and_q_quits():
    async def test():
        app = new_app()
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("2")
            assert app.focused.id == "memory"
            await pilot.press("5")
            assert app.focused.id == "processes"
            await pilot.press("q")
        assert app.return_code == 0 and not app.feed.attached

    run(test)


def test_replay_pauses_and_seeks():
    async def test():
        # an hour per frame: playback does not move on by itself while the test runs, however slow the machine
        frames = [dataclasses.replace(frame(n), interval_s=3600.0) for n in range(1, 13)]
        app = DashboardApp(frames=frames)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            assert app.snapshot.sequence == 1
            await pilot.press("space")  # pause the playback
            await pilot.press("full_stop", "full_stop")
            assert app.snapshot.sequence == 3
            await pilot.press("right_square_bracket")
            assert app.snapshot.sequence == 12  # clamped to the last frame
            await pilot.press("comma")
            assert app.snapshot.sequence == 11 and "replay 11/12" in text_of(app, "status")

    run(test)


def test_no_color_draws_every_panel_without_failing(monkeypatch):
    """NO_COLOR makes Textual pass every drawn segment through its monochrome filter, which needs a style on
    each one: a plain cell once crashed the whole dashboard under NO_COLOR=1."""
    monkeypatch.setenv("NO_COLOR", "1")

    async def test():
        app = new_app()
        async with app.run_test(size=SIZE) as pilot:
            app.receive(frame(1))
            await pilot.pause()
            await pilot.press("enter")  # the segment map too
            await pilot.pause()
            assert isinstance(app.screen, SegmentScreen)

    run(test)


def test_on_an_80x24_terminal_the_write_position_is_on_the_segment_being_written():
    async def test():
        app = new_app()
        async with app.run_test(size=(80, 24)) as pilot:
            app.receive(frame(1))
            await pilot.pause()
            table = app.query_one("#segments", RowTable)
            rows = [table.row_plain(row) for row in range(table.row_count)]
            marked = [row[0] for row in rows if "W" in row[1]]
            assert marked == ["commitlog/00000000000003145728"]  # the one that holds the write position
            assert [row[6] for row in rows] == ["1MiB", "1MiB", "1MiB", "164KiB"]  # full ones: their size
            # the W mark is on screen without scrolling: inside the 80 columns less the panel's border
            assert table.widths[0] + COLUMN_GAP + rows[3][1].index("W") < 80 - 4

    run(test)


# --- keys: sort and reverse per focused table, < >, + -, the filter on every panel


def two_senders(sequence: int = 1):
    """A frame whose probe lists the smaller sender first: the panel's order must come from a column."""
    snapshot = frame(sequence)
    small = SendPathRow(300, "broker", "read+write", 1 << 10, 1 << 10, 0, 0, 0, 4, 2.0)
    view = dataclasses.replace(snapshot.sendpaths, processes=(small, *snapshot.sendpaths.processes))
    return dataclasses.replace(snapshot, sendpaths=view)


def sendpath_pids(app: DashboardApp) -> list[str]:
    lines = text_of(app, "sendpaths").splitlines()
    return [line.split()[0] for line in lines if line.split() and line.split()[0].isdigit()]


def run_shown(check, snapshot=None) -> None:
    """Runs `check(app, pilot)` once the app has drawn `snapshot` (default: frame 1)."""

    async def test():
        app = new_app()
        async with app.run_test(size=SIZE) as pilot:
            app.receive(snapshot or frame(1))
            await pilot.pause()
            await check(app, pilot)

    run(test)


def test_sort_and_reverse_change_the_focused_table_only():
    async def check(app, pilot):
        segments = column(app, "segments", 0)
        processes = column(app, "processes", 1)
        await pilot.press("5", "r")  # processes by pid, reversed
        assert column(app, "processes", 1) == processes[::-1]
        assert column(app, "segments", 0) == segments
        await pilot.press("2", "s", "r")  # Memory has no rows: nothing else changes behind it
        assert column(app, "processes", 1) == processes[::-1]
        assert column(app, "segments", 0) == segments
        assert "Memory has no rows to sort" in [n.message for n in app._notifications]
        await pilot.press("3", "r")  # Faults: by minor faults, lowest first once reversed
        faulting = [line.split()[1] for line in text_of(app, "faults").splitlines()[:3]]
        assert faulting == ["consumer", "producer", "broker"]
        assert column(app, "processes", 1) == processes[::-1]
        await pilot.press("4", "r")
        assert sendpath_pids(app) == ["300", "400"]
        assert "sort total ▲" in str(app.query_one("#sendpaths").border_title)
        assert "sort segment ▲" in str(app.query_one("#segments").border_title)

    run_shown(check, two_senders())


def test_the_sorted_column_is_marked_in_its_header():
    async def check(app, pilot):
        segments, processes = app.query_one("#segments", RowTable), app.query_one("#processes", RowTable)
        assert [t for t in segments.titles if t.endswith(("▲", "▼"))] == ["segment▲"]
        assert [t for t in processes.titles if t.endswith(("▲", "▼"))] == ["pid▲"]
        assert "total▼" in text_of(app, "sendpaths").split()
        await pilot.press("s")
        assert [t for t in segments.titles if t.endswith(("▲", "▼"))] == ["cached▼"]
        await pilot.press("r")
        assert [t for t in segments.titles if t.endswith(("▲", "▼"))] == ["cached▲"]
        await pilot.press("4", "greater_than_sign")
        header = text_of(app, "sendpaths").split()
        assert "pid▲" in header and "total" in header

    run_shown(check, two_senders())


def test_less_and_greater_move_the_sort_column_both_ways():
    async def check(app, pilot):
        await pilot.press("greater_than_sign", "greater_than_sign")  # segment -> cached -> dirty
        assert app.state.sorts["segments"].title == "dirty"
        await pilot.press("less_than_sign")
        assert app.state.sorts["segments"].title == "cached"
        await pilot.press("less_than_sign", "less_than_sign")  # wraps round to the last column
        assert app.state.sorts["segments"].title == "+cache"
        assert column(app, "segments", 0)[0] == "commitlog/00000000000002097152"  # 40 pages entered
        assert app.state.sorts["processes"].title == "pid"

    run_shown(check)


def test_send_path_rows_are_ordered_by_their_total_which_a_column_shows():
    async def check(app, pilot):
        assert sendpath_pids(app) == ["400", "300"]  # 1MiB/s before 1KiB/s, whatever the probe's order
        rows = [line.split() for line in text_of(app, "sendpaths").splitlines()]
        assert [row[2] for row in rows if row and row[0] in ("400", "300")] == ["1MiB/s", "1KiB/s"]

    run_shown(check, two_senders())


def test_top_once_orders_send_paths_by_their_total_too():
    """Without the app (--once, --svg) the rows come in the probe's order, which counts reads as well."""
    lines = plain(top_view(two_senders())).splitlines()
    header = next(
        index for index, line in enumerate(lines) if line.split()[:3] == ["pid", "command", "total"]
    )
    assert [line.split()[0] for line in lines[header + 1 : header + 3]] == ["400", "300"]


def test_plus_and_minus_change_the_interval_the_feed_samples_at():
    async def check(app, pilot):
        await pilot.press("plus")
        assert app.feed.interval_s == 2.0
        assert "interval 1.00 s (set to 2 s)" in text_of(app, "status")
        app.receive(dataclasses.replace(frame(2), interval_s=2.0003))
        await pilot.pause()
        assert "set to" not in text_of(app, "status")
        await pilot.press("minus", "minus", "minus", "minus", "minus", "minus")
        assert app.feed.interval_s == 0.1  # the shortest interval the sampler takes

    run_shown(check)


def test_a_replay_offers_seeking_and_not_the_interval():
    async def test():
        app = DashboardApp(frames=[frame(n) for n in range(1, 4)])
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("plus")
            assert app.interval_s is None and "set to" not in text_of(app, "status")
            await pilot.press("question_mark")
            listed = help_text(app)
            assert "Frame back" in listed and "10 frames forward" in listed
            assert "Sampling interval" not in listed

    run(test)


def test_a_frame_due_while_the_app_shuts_down_is_not_drawn():
    """The replay timer (or the feed) can fire after the app's widgets are gone and before its timers stop:
    that frame is dropped, not drawn into widgets that are no longer there (NoMatches '#status')."""

    async def test(app, arrive):
        async with app.run_test(size=SIZE):
            close_all = app._close_all
            drawn = []

            async def close_all_then_a_frame():
                await close_all()
                drawn.append(app.snapshot)
                arrive(app)
                drawn.append(app.snapshot)

            app._close_all = close_all_then_a_frame
        assert len(drawn) == 2 and drawn[0] is drawn[1]

    run(lambda: test(DashboardApp(frames=[frame(n) for n in range(1, 4)]), DashboardApp._advance_replay))
    run(lambda: test(new_app(), lambda app: app.receive(frame(2))))
    paused = new_app()
    paused.state.paused = True  # a frame held while paused redraws the status line
    run(lambda: test(paused, lambda app: app.receive(frame(2))))


def test_the_filter_applies_to_every_panel_and_says_what_it_kept():
    async def check(app, pilot):
        await pilot.press("slash", *"consume", "enter")
        summary = text_of(app, "filter-summary")
        assert "filter: consume — 1 of 3 processes, 0 of 4 segments, 1 of 2 send paths" in summary
        assert column(app, "processes", 1) == ["consumer"]
        segments = app.query_one("#segments", RowTable)
        assert segments.row_count == 0
        assert segments.empty_text.plain == "filter 'consume' matches none of the 4 segments"
        faults = text_of(app, "faults")
        assert "consumer" in faults and "broker" not in faults and "producer" not in faults
        assert "faults per segment: filter 'consume' matches none of the 4 segments" in faults
        assert sendpath_pids(app) == ["400"]
        await pilot.press("slash", *"2097", "enter")  # a segment: no process, no sender
        faults = text_of(app, "faults")
        assert "filter '2097' matches none of the 3 processes" in faults
        assert "unavailable" not in faults
        assert "commitlog/00000000000002097152 40" in faults
        assert "filter '2097' matches none of the 2 processes" in text_of(app, "sendpaths")
        empty = app.query_one("#processes", RowTable).empty_text.plain
        assert empty == "filter '2097' matches none of the 3 processes"
        await pilot.press("escape")
        assert not app.query_one("#filter-summary").has_class("visible")
        assert sendpath_pids(app) == ["400", "300"]

    run_shown(check, two_senders())
