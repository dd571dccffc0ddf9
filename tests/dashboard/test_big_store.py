"""A dashboard on a big store (issue 16, item 6): rows out of view are measured by turns and say when they
were, heat strips are measured for the rows on screen and follow the page cache (against fincore), rows
scrolled into view are hinted to the sampler and drawn from the frame on screen, a 1,000-segment store
renders at 80x24 and 200x60, and a printed frame lists the busiest segments and says how many it left out.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import sys
from pathlib import Path

import pytest
from fakes import PAGE, T0, FakeFeed, frame, process, segment
from rich.console import Console
from support import fadvise_out, fincore_pages, read_pages

from mqinspect.dashboard.app import DashboardApp
from mqinspect.render.top import PRINTED_SEGMENT_ROWS, segments_table
from mqinspect.sampling.snapshot import ConsumersView, SendPathRow, StoreView
from mqinspect.sampling.store_reader import STRIP_NOT_DRAWN, TURN_INTERVALS, StoreReader

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "store"))
from store_builder import StoreBuilder

SEGMENT = 256 * 1024  # 64 pages


@pytest.fixture
def built(tmp_path: Path):
    builder = StoreBuilder(tmp_path / "store", segment_size=SEGMENT, cq_entries_per_file=100, index=False)
    for number in range(900):
        builder.add("TopicA", body=bytes([65 + number % 26]) * 1000, keys=f"k{number}")
    return builder.build()


class Clock:
    def __init__(self):
        self.now = T0

    def __call__(self) -> float:
        return self.now


def rows_of(view) -> dict[str, object]:
    return {row.path: row for row in view.segments}


def test_rows_out_of_view_are_measured_by_turns_and_say_when(built):
    clock = Clock()
    reader = StoreReader(built.root, strip_chunks=8, clock=clock, measure_all_up_to=0)
    drawn = frozenset({str(built.segments[0])})
    first = rows_of(reader.read({}, drawn))
    assert all(row.residency_time_unix_s is None for row in first.values())  # all measured at first
    measured_at = dict.fromkeys(first, T0)
    for interval in range(1, TURN_INTERVALS + 1):
        clock.now = T0 + interval
        rows = rows_of(reader.read({}, drawn))
        for path, row in rows.items():
            if row.residency_time_unix_s is None:
                measured_at[path] = clock.now
            else:  # a row measured earlier says when, and it was then
                assert row.residency_time_unix_s == measured_at[path] < clock.now
        assert rows[str(built.segments[0])].residency_time_unix_s is None  # drawn: every interval
    # every file was measured again within the turn
    assert all(time > T0 for time in measured_at.values()), measured_at
    # without a hint (top --once, streams, recordings) every row is measured every interval
    assert all(row.residency_time_unix_s is None for row in reader.read({}).segments)


def test_a_drawn_rows_strip_follows_the_page_cache_and_an_undrawn_changed_row_has_none(built):
    first, second = built.segments[:2]
    for path in (first, second):
        fadvise_out(path)
    read_pages(first, 0, 64)
    reader = StoreReader(built.root, strip_chunks=8, measure_all_up_to=0)
    drawn = frozenset({str(first), str(second)})
    rows = rows_of(reader.read({}, drawn))
    assert (
        rows[str(first)].chunks.cached_pages == (8,) * 8 and rows[str(second)].chunks.cached_pages == (0,) * 8
    )
    # the first goes out of view and its pages change: measured by its turn, it has a count but no strip
    fadvise_out(first)
    read_pages(first, 0, 16)
    read_pages(second, 32, 32)
    for _ in range(TURN_INTERVALS):
        row = rows_of(reader.read({}, frozenset({str(second)})))[str(first)]
        if row.residency_time_unix_s is None:
            break
    assert row.residency_time_unix_s is None and row.cached_pages == fincore_pages(first) == 16
    assert row.chunks is None and row.unavailable["chunks"] == STRIP_NOT_DRAWN
    drawn_row = rows_of(reader.read({}, frozenset({str(second)})))[str(second)]  # on screen: follows
    assert drawn_row.cached_pages == fincore_pages(second) == 32
    assert drawn_row.chunks.cached_pages == (0,) * 4 + (8,) * 4
    # scrolled into view: its strip is measured in the next interval
    back = rows_of(reader.read({}, frozenset({str(first)})))[str(first)]
    assert back.chunks.cached_pages == (8, 8) + (0,) * 6 and back.residency_time_unix_s is None


def test_an_undrawn_row_whose_pages_did_not_change_keeps_its_strip(built):
    third = built.segments[2]
    fadvise_out(third)
    read_pages(third, 0, 24)
    reader = StoreReader(built.root, strip_chunks=8, measure_all_up_to=0)
    strip = rows_of(reader.read({}, frozenset({str(third)})))[str(third)].chunks
    assert strip.cached_pages == (8, 8, 8) + (0,) * 5
    for _ in range(TURN_INTERVALS + 1):  # out of view, measured again by its turn: cachestat says the same
        row = rows_of(reader.read({}, frozenset()))[str(third)]
        assert row.chunks == strip and row.cached_pages == fincore_pages(third) == 24


def test_a_small_stores_totals_are_measured_every_interval_whatever_is_drawn(built):
    first = built.segments[0]
    fadvise_out(first)
    reader = StoreReader(built.root, strip_chunks=8)  # a few files: under MEASURE_ALL_UP_TO
    reader.read({}, frozenset())
    read_pages(first, 0, 8)
    row = rows_of(reader.read({}, frozenset()))[str(first)]
    assert row.residency_time_unix_s is None and row.cached_pages == fincore_pages(first) == 8
    assert row.chunks is None and row.unavailable["chunks"] == STRIP_NOT_DRAWN  # not drawn, pages moved
    assert all(row.residency_time_unix_s is None for row in reader.read({}, frozenset()).segments)


def big_frame(sequence: int, count: int = 1000, changed: dict[int, int] | None = None):
    segments = tuple(
        segment(index, (changed or {}).get(index, 256 if index % 3 else 64), newest=index == count - 1)
        for index in range(count)
    )
    snapshot = frame(sequence)
    return dataclasses.replace(snapshot, store=StoreView("/store", None, segments))


def run_app(size, steps):
    """The app on a `size` terminal with a FakeFeed: each step is a frame to show or keys to press; returns
    the screen's lines after the last step and the feed."""

    async def run():
        feed = FakeFeed()
        app = DashboardApp(feed=feed, clock=lambda: T0 + 2)
        async with app.run_test(size=size) as pilot:
            for step in steps:
                if isinstance(step, tuple):
                    await pilot.press(*step)
                else:
                    app.receive(step)
                await pilot.pause()
                await pilot.pause()
            lines = ["".join(s.text for s in strip) for strip in app.screen._compositor.render_strips()]
            return lines, feed, str(app.query_one("#segments").border_subtitle or "")

    return asyncio.run(run())


@pytest.mark.parametrize("size", [(80, 24), (200, 60)], ids=lambda size: f"{size[0]}x{size[1]}")
def test_a_thousand_segment_store_renders(size):
    lines, feed, note = run_app(size, [big_frame(1)])
    text = "\n".join(lines)
    assert "commitlog/00000000000000000000" in text and "1 Segments" in text
    shown = sum("commitlog/0" in line for line in lines)
    assert shown >= 1 and note.startswith(f"+{1000 - shown} more ↓")
    assert feed.drawn[-1] == frozenset(segment(index, 0).path for index in range(shown))


FULL_LEGEND = "heat: one cell per chunk"
ONE_LINE_KEY = "heat █▓▒░ cached share"


def demo_like(snapshot):
    """`snapshot` as the demo's broker makes it: a consumer group's C mark on a strip (the legend explains
    it), the Consumers panel, six processes, five of them sending."""
    first, *rest = snapshot.store.segments
    marked = (dataclasses.replace(first, consumer_positions_bytes=(PAGE,)), *rest)
    senders = tuple(
        SendPathRow(pid, f"demo-{pid}", "mmap+write", 1 << 20, 0, 1 << 20, 0, 0, 256, 1.0)
        for pid in range(401, 406)
    )
    return dataclasses.replace(
        snapshot,
        store=dataclasses.replace(snapshot.store, segments=marked),
        consumers=ConsumersView("/store/config/consumerOffset.json", (), ()),
        sendpaths=dataclasses.replace(snapshot.sendpaths, processes=senders),
        processes=tuple(process(pid, f"demo-{pid}", 5.0, 64) for pid in range(400, 406)),
    )


@pytest.mark.parametrize("consumers", [False, True], ids=["alone", "with consumers"])
def test_at_200x60_a_big_stores_legend_folds_and_ten_segment_rows_show(consumers):
    """The full heat key and sources (6 lines with the consumer marks' key) left 3 segment rows beside the
    demo's panels; folded to the one-line key, 10 rows show (the legend is in ? help)."""
    snapshot = demo_like(big_frame(1)) if consumers else big_frame(1)
    lines, _, note = run_app((200, 60), [snapshot])
    text = "\n".join(lines)
    assert sum("commitlog/0" in line for line in lines) >= 10, text
    assert ONE_LINE_KEY in text and FULL_LEGEND not in text
    assert note.startswith("+") and "more ↓" in note


def test_a_store_whose_rows_fit_only_beside_the_folded_legend_keeps_it_folded():
    """Judged with the full legend also while folded: a store one row too many for the full legend shows
    all its rows beside the one-line key, frame after frame (folding never unfolds it again)."""
    lines, _, _ = run_app((200, 60), [big_frame(1)])
    beside_the_key = sum("commitlog/0" in line for line in lines)
    count = beside_the_key - 1  # fits folded, not beside the full legend (3 lines more) and a Memory row
    lines, _, note = run_app((200, 60), [big_frame(1, count=count), big_frame(2, count=count)])
    text = "\n".join(lines)
    assert sum("commitlog/0" in line for line in lines) == count and "more ↓" not in note, text
    assert ONE_LINE_KEY in text and FULL_LEGEND not in text
    lines, _, _ = run_app((200, 60), [big_frame(1, count=4)])  # a few rows: the full legend
    assert FULL_LEGEND in "\n".join(lines)


def test_rows_scrolled_into_view_are_hinted_and_drawn_from_the_frame_on_screen():
    last = segment(999, 0).path
    lines, feed, note = run_app((80, 24), [big_frame(1), big_frame(2, changed={999: 200}), ("end",)])
    assert last in feed.drawn[-1] and segment(0, 0).path not in feed.drawn[-1]
    row = next(line for line in lines if segment(999, 0).name in line)
    assert " 78%" in row  # frame 2's 200 of 256 pages, not frame 1's (the row was out of view then)
    assert "↑" in note


def test_a_printed_frame_lists_the_busiest_segments_and_says_how_many_it_left_out():
    snapshot = big_frame(1, count=PRINTED_SEGMENT_ROWS + 50)
    console = Console(file=io.StringIO(), width=200, color_system=None)
    console.print(segments_table(snapshot))
    text = console.file.getvalue()
    assert "+50 more segments" in text
    listed = [line.split()[0] for line in text.splitlines() if line.startswith("commitlog/")]
    assert len(listed) == PRINTED_SEGMENT_ROWS and listed == sorted(listed)  # in store order
    assert snapshot.store.segments[-1].name in listed  # the one being written
    assert PAGE == 4096
