"""The Textual dashboard driven by Pilot, with a fake feed (no sampler thread) and a frozen clock: pause,
sort, filter, drill-down, help, and replay's pause and seek. Assertions are on widget state, not pixels."""

from __future__ import annotations

import asyncio
import io

from fakes import T0, FakeFeed, frame
from rich.console import Console
from textual.widgets import HelpPanel, Static
from textual.widgets._key_panel import BindingsTable

from mqinspect.dashboard.app import DashboardApp, SegmentScreen
from mqinspect.dashboard.row_table import COLUMN_GAP, RowTable

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
            await pilot.press("r", "5", "s")  # processes: minor faults per second, highest first
            assert column(app, "processes", 1) == ["broker", "producer", "consumer"]
            assert "sort minflt/s" in str(app.query_one("#processes").border_title)

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


def test_help_lists_the_bindings():
    async def test():
        app = new_app()
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("question_mark")
            await pilot.pause()
            assert app.screen.query(HelpPanel)
            listed = plain(app.screen.query_one(BindingsTable).render_bindings_table())
            for description in ("Pause", "Sort", "Filter", "Reverse sort", "Quit", "Help"):
                assert description in listed
            assert "Frame back" not in listed  # replay's keys are not offered live
            await pilot.press("question_mark")
            assert not app.screen.query(HelpPanel)

    run(test)


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
        frames = [frame(n) for n in range(1, 13)]
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
