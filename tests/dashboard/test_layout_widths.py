"""Every table at 80, 120 and 200 columns: no header cut, no column at zero width, no number cut from its
unit.

Ground truth for a cell is the text its renderer made for it (the cell functions of `top`), or the same table
drawn with --wide (every column whole); a narrower table draws each column it keeps exactly so, and names the
columns it left out ("+N columns: a, b (...)")."""

from __future__ import annotations

import asyncio
import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from fakes import T0, FakeFeed, chunks, frame
from rich.console import Console
from support import run_mqinspect
from textual.geometry import Region

from mqinspect.dashboard.app import DashboardApp
from mqinspect.render.layout import shorten
from mqinspect.render.top import (
    PROCESS_COLUMNS,
    SEGMENT_COLUMNS,
    SENDPATH_ROWS,
    faults_panel,
    memory_panel,
    process_cells,
    segment_cells,
    top_view,
)

WIDTHS = (80, 120, 200)
SCREENS = ((80, 24), (120, 40), (200, 60))
PAGE = 4096
_EDGE = r"(?:^|(?<=[\s│┃]))"
_END = r"(?=$|[\s│┃▲▼])"  # a header may carry the sort mark


def whole(text: str, line: str) -> bool:
    """`text` stands in `line` whole: nothing but a space, a border or the line's end on either side."""
    return re.search(_EDGE + re.escape(text) + _END, line) is not None


def hidden_columns(text: str) -> tuple[int, list[str]]:
    """How many columns a table says it left out, and those it names: '+2 columns: locked, major (...)'; a
    list that did not fit ends in '…'."""
    found = re.search(r"\+(\d+) columns?(?:: (.+?))? \((?:--wide|widen)", " ".join(text.split()))
    if not found:
        return 0, []
    return int(found.group(1)), [name for name in (found.group(2) or "").split(", ") if name not in ("", "…")]


def assert_table_whole(lines: list[str], titles, rows: dict[str, list[str]], what: str) -> None:
    """The header line holds every title not left out, whole, and the titles missing from it are as many as
    the table says it left out; each row's line (found by its first cell) holds each kept column's cell,
    whole."""
    text = "\n".join(lines)
    count, named = hidden_columns(text)
    header = max(lines, key=lambda line: sum(whole(title, line) for title in titles))
    assert whole(titles[0], header), f"{what}: no header line with its first title whole:\n{text}"
    kept = [i for i, title in enumerate(titles) if title not in named and whole(title, header)]
    assert len(kept) >= 2, f"{what}: almost every column was left out:\n{text}"
    missing = [title for i, title in enumerate(titles) if i not in kept]
    assert len(missing) == count, f"{what}: {missing} missing, the table says {count}:\n{text}"
    for key, cells in rows.items():
        line = next((line for line in lines if whole(key, line)), None)
        assert line is not None, f"{what}: row {key!r} is not on screen whole:\n{text}"
        for index in kept:
            assert whole(cells[index], line), f"{what}: {titles[index]} {cells[index]!r} is cut:\n{line}"


def segment_rows() -> dict[str, list[str]]:
    return {s.name: [c.plain for c in segment_cells(s, PAGE)] for s in frame(1).store.segments}


def process_rows() -> dict[str, list[str]]:
    return {str(p.pid): [c.plain for c in process_cells(p)] for p in frame(1).processes}


@pytest.mark.parametrize("width", WIDTHS)
def test_top_once_keeps_every_column_it_draws_whole(width):
    console = Console(width=width, record=True, color_system=None, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(top_view(frame(1)))
    lines = console.export_text().splitlines()
    assert max(len(line.rstrip()) for line in lines) <= width
    segments = lines[: next(i for i, line in enumerate(lines) if line.startswith("Memory"))]
    processes = lines[next(i for i, line in enumerate(lines) if line.startswith("Processes")) :]
    assert_table_whole(segments, SEGMENT_COLUMNS, segment_rows(), f"top --once at {width}: segments")
    assert_table_whole(processes, PROCESS_COLUMNS, process_rows(), f"top --once at {width}: processes")
    if width >= 200:
        assert hidden_columns("\n".join(segments)) == (0, [])  # at 200 every segment column is there


def boxed_cells(line: str) -> list[str]:
    return [cell.strip() for cell in re.split(r"[│┃]", line)[1:-1]]


def boxed_table(text: str) -> tuple[list[str], list[list[str]]]:
    """The header and rows of a rich table drawn with a box: the cells between its vertical bars."""
    lines = [line for line in text.splitlines() if line.startswith(("┃", "│"))]
    return boxed_cells(lines[0]), [boxed_cells(line) for line in lines[1:]]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("widths") / "store"
    for args in (
        ("init", root, "--segment-size", "64k", "--cq-entries", "1000", "--index-slots", "64"),
        ("produce", root, "-t", "Orders", "-n", "600", "--size", "200", "--keys", "order-{n}", "--tags", "t"),
    ):
        done = run_mqinspect("store", *args)
        assert done.exit_code == 0, done.stderr
    return root


TABLE_COMMANDS = (
    ("store", "segments", "{store}"),
    ("store", "stat", "{store}"),
    ("store", "cq", "{store}", "-t", "Orders", "-n", "5"),
    ("store", "consume", "{store}", "-t", "Orders", "-n", "5", "--from", "0"),
)


@pytest.mark.parametrize("command", TABLE_COMMANDS, ids=lambda command: " ".join(command[:2]))
@pytest.mark.parametrize("width", WIDTHS)
def test_table_commands_keep_every_column_they_draw_whole(store, command, width):
    arguments = [argument.format(store=store) for argument in command]
    wide = run_mqinspect(*arguments, "--wide", columns=width)
    narrow = run_mqinspect(*arguments, columns=width)
    assert wide.exit_code == 0 and narrow.exit_code == 0, narrow.stderr
    titles, wide_rows = boxed_table(_last_table(wide.stdout))
    shown, rows = boxed_table(_last_table(narrow.stdout))
    count, hidden = hidden_columns(narrow.stdout)
    assert count == len(hidden) and shown == [title for title in titles if title not in hidden], (
        f"headers cut or lost:\n{narrow.stdout}"
    )
    assert all(title for title in shown), f"a column at zero width:\n{narrow.stdout}"
    assert max(len(line) for line in narrow.stdout.splitlines()) <= width
    kept = [titles.index(title) for title in shown]
    assert len(rows) == len(wide_rows)
    for row, wide_row in zip(rows, wide_rows, strict=True):
        for cell, whole_cell in zip(row, [wide_row[i] for i in kept], strict=True):
            assert same_or_shortened_text(cell, whole_cell), f"{cell!r} is cut:\n{narrow.stdout}"


def same_or_shortened_text(cell: str, whole_cell: str) -> bool:
    """Equal, or text (never a number) that ends in "…" where it was shortened to fit."""
    if cell == whole_cell:
        return True
    shortened = cell.endswith("…") and whole_cell.startswith(cell[:-1])
    return shortened and not re.fullmatch(r"[\d,.]+\S*", whole_cell)


def _last_table(text: str) -> str:
    """The last boxed table of an output (`store stat` draws a key-value table first)."""
    start = text.rindex("┏")
    return text[text.rindex("\n", 0, start) + 1 :]


# --- the dashboard

PANELS = ("segments", "memory", "faults", "sendpaths", "processes")


@dataclass
class Drawn:
    """The dashboard's screen as text, where each panel is on it, and what each says on its bottom border."""

    lines: list[str]
    regions: dict[str, Region]
    notes: dict[str, str]

    def panel(self, panel_id: str) -> list[str]:
        region = self.regions[panel_id]
        return [line[region.x : region.right] for line in self.lines[region.y : region.bottom]]


def draw(snapshot=None, size: tuple[int, int] = (80, 24), keys: tuple[str, ...] = ()) -> Drawn:
    """Frame 1, then `keys`, then `snapshot` (if given), on a `size` terminal."""

    async def run() -> Drawn:
        app = DashboardApp(feed=FakeFeed(), clock=lambda: T0 + 2)
        async with app.run_test(size=size) as pilot:
            app.receive(frame(1))  # then a panel that grows with its rows grows when they come
            await pilot.pause()
            await pilot.press(*keys)
            await pilot.pause()
            if snapshot is not None:
                app.receive(snapshot)
            await pilot.pause()
            await pilot.pause()
            lines = ["".join(s.text for s in strip) for strip in app.screen._compositor.render_strips()]
            regions = {panel: app.query_one(f"#{panel}").region for panel in PANELS}
            notes = {panel: str(app.query_one(f"#{panel}").border_subtitle or "") for panel in PANELS}
            return Drawn(lines, regions, notes)

    return asyncio.run(run())


@pytest.mark.parametrize("size", SCREENS, ids=lambda size: f"{size[0]}x{size[1]}")
def test_the_dashboard_keeps_every_column_and_panel_it_draws_whole(size):
    drawn = draw(size=size)
    lines, heights = drawn.lines, {panel: region.height for panel, region in drawn.regions.items()}
    screen = "\n".join(lines)
    segments = [line for line in lines if "Segments" in line or "commitlog/" in line or "heat" in line]
    segment_box = lines[: next(i for i, line in enumerate(lines) if "2 Memory" in line)]
    assert_table_whole(
        segment_box, SEGMENT_COLUMNS, _on_screen(segment_rows(), segments), f"{size}: segments"
    )
    assert not {"segment", "heat", "cached", "dirty"} & set(hidden_columns("\n".join(segment_box))[1])
    # Segments, Memory and Faults are always there, each with more than its borders
    for panel in ("segments", "memory", "faults"):
        assert heights[panel] >= 4, f"{size}: {panel} has {heights[panel]} rows:\n{screen}"
    for title in ("1 Segments", "2 Memory", "3 Faults", "4 Send paths", "5 Processes"):
        assert title in screen, f"{size}: {title!r} is nowhere on screen:\n{screen}"
    assert "[████" in screen and "] 96.9% of" in screen  # the memory gauge (it may wrap)
    assert re.search(r"300 broker\s+\S+ 101/s", screen)  # the top faulting process and its rate
    lower = [panel for panel in ("sendpaths", "processes") if heights[panel] > 0]
    assert lower, f"{size}: neither Send paths nor Processes is drawn:\n{screen}"
    for panel in lower:
        assert heights[panel] >= 4
    if "processes" in lower:
        assert_table_whole(drawn.panel("processes"), PROCESS_COLUMNS, process_rows(), f"{size}: processes")
    if size[1] >= 40:
        assert lower == ["sendpaths", "processes"]  # both at once from 40 rows up


def _on_screen(rows: dict[str, list[str]], lines: list[str]) -> dict[str, list[str]]:
    """The rows the panel has room for (a short panel scrolls, and says '+N more ↓')."""
    return {key: cells for key, cells in rows.items() if any(key in line for line in lines)}


def with_send_paths(count: int, first_pid: int = 400, comm: str = "consumer-{}"):
    """frame(1) with `count` processes sending to sockets."""
    snapshot = frame(1)
    row = snapshot.sendpaths.processes[0]
    rows = tuple(dataclasses.replace(row, pid=first_pid + i, comm=comm.format(i)) for i in range(count))
    return dataclasses.replace(snapshot, sendpaths=dataclasses.replace(snapshot.sendpaths, processes=rows))


@pytest.mark.parametrize(("rows", "size"), [(5, (180, 50)), (8, (180, 50)), (5, (120, 40))])
def test_send_paths_show_every_row_or_say_how_many_more(rows, size):
    """At 180x50 the fifth row came and went and the source line was always clipped (a fixed height)."""
    panel = "\n".join(draw(with_send_paths(rows), size).panel("sendpaths"))
    shown = re.findall(r"consumer-\d+", panel)
    assert shown == [f"consumer-{i}" for i in range(len(shown))]
    assert len(shown) == min(rows, SENDPATH_ROWS), panel
    if rows > SENDPATH_ROWS:
        assert f"+{rows - SENDPATH_ROWS} more" in panel, panel
    assert "source: sendpath probe" in panel and "interval" in panel.split("source:")[1], panel


@pytest.mark.parametrize(("first_pid", "comm"), [(400, "consumer-{}"), (1_000_000, "consumer-longer-{}")])
def test_on_a_short_screen_send_paths_list_what_their_tab_holds_and_say_how_many_more(first_pid, comm):
    """With 7-digit pids and long names the panel leaves out a column and says so, and still cuts no line."""
    drawn = draw(with_send_paths(8, first_pid, comm), (80, 24), keys=("4",))
    panel = drawn.panel("sendpaths")
    shown = re.findall(r"consumer-(?:longer-)?\d+", "\n".join(panel))
    assert shown and f"+{8 - len(shown)} more" in "\n".join(panel), panel
    assert any(line.startswith("│ source: sendpath probe") for line in panel), panel
    assert not drawn.notes["sendpaths"], panel  # no line cut off
    hidden = [line for line in panel if "column" in line]
    assert len(hidden) == (first_pid > 400) and all("(widen to see)" in line for line in hidden), panel


def test_a_short_segments_panel_says_how_many_rows_are_below():
    before, after = draw().notes["segments"], draw(keys=("end",)).notes["segments"]
    assert re.match(r"\+\d+ more ↓", before)  # 4 segments, room for fewer
    assert "↓" not in after and re.match(r"\+\d+ more ↑", after)


@pytest.mark.parametrize("size", SCREENS, ids=lambda size: f"{size[0]}x{size[1]}")
def test_a_panel_too_short_for_its_lines_says_how_many_it_cuts_off(size):
    """Memory and Faults have fixed heights: what does not fit was cut off unsaid. Ground truth: the panel's
    text drawn by rich at the panel's width."""
    drawn = draw(size=size)
    for panel, render in (("memory", memory_panel), ("faults", faults_panel)):
        region = drawn.regions[panel]
        width, room = region.width - 4, region.height - 2  # the border and the padding
        console = Console(width=width, record=True, color_system=None, file=open("/dev/null", "w"))  # noqa: SIM115
        console.print(render(frame(1), titled=False, **({"width": width} if panel == "faults" else {})))
        lines = len(console.export_text().splitlines())
        expected = f"+{lines - room} more line{'s' if lines - room > 1 else ''} ↓" if lines > room else ""
        assert drawn.notes[panel] == expected, f"{size} {panel}: {lines} lines in {room} rows"


def with_long_names_and_fine_strips():
    """frame(1) as the demo's store draws it: 32-chunk heat strips and a ConsumeQueue among the segments."""
    snapshot = frame(1)
    fine = chunks([4] * 32)
    queue = dataclasses.replace(
        snapshot.store.segments[0],
        kind="consumequeue",
        name="consumequeue/DemoTopic/0/00000000000000000000",
        path="/store/consumequeue/DemoTopic/0/00000000000000000000",
    )
    segments = tuple(dataclasses.replace(s, chunks=fine) for s in (*snapshot.store.segments, queue))
    return dataclasses.replace(snapshot, store=dataclasses.replace(snapshot.store, segments=segments))


def test_at_80_columns_a_long_segment_name_gives_way_to_heat_cached_and_dirty():
    """The demo at 80x24: the ConsumeQueue's 45-character name pushed cached and dirty off the screen."""
    box = draw(with_long_names_and_fine_strips()).panel("segments")
    header = next(line for line in box if whole("segment", line) and whole("heat", line))
    for title in ("heat", "cached", "dirty"):
        assert whole(title, header), "\n".join(box)
    rows = [line for line in box if "commitlog/" in line]
    row = re.compile(r"commitlog/…?\d+\s+[█▓▒░·FW]{32}\s+\d+%\s+\d+(?:\.\d)?[KMG]?i?B(?![\w/])")
    assert rows and all(row.search(line) for line in rows), "\n".join(box)


def test_at_80_columns_the_status_line_keeps_its_numbers_before_a_long_store_path():
    snapshot = frame(1)
    long_root = "/var/lib/rocketmq/broker-a/store-with-a-long-name"
    snapshot = dataclasses.replace(snapshot, store=dataclasses.replace(snapshot.store, root=long_root))
    status = draw(snapshot).lines[0]
    assert re.search(r"frame 1 at \d\d:\d\d:\d\d UTC, 1 s ago  interval 1\.00 s  store /var/…", status), (
        status
    )


def test_at_80x24_the_faults_panel_starts_with_the_process_that_faults_most():
    """Processes sort by pid; Faults' first line, all a short panel may show, is the top faulting one."""
    snapshot = frame(1)
    busiest = dataclasses.replace(snapshot.processes[2], minor_faults_per_s=9000.0)  # pid 500, the last
    panel = draw(dataclasses.replace(snapshot, processes=(*snapshot.processes[:2], busiest))).panel("faults")
    assert re.search(r"500 producer\s+\S+ 9,000/s", panel[1]), "\n".join(panel)


@pytest.mark.parametrize(
    ("name", "width", "short"),
    [
        ("commitlog/00000000000268435456", 30, "commitlog/00000000000268435456"),
        ("commitlog/00000000000268435456", 22, "commitlog/…00268435456"),
        ("commitlog/00000000000268435456", 20, "commitlog/…268435456"),
        ("consumequeue/DemoTopic/0/00000000000000000000", 40, "consumequeue/DemoTopic/0/…00000000000000"),
        ("consumequeue/DemoTopic/0/00000000000000000000", 22, "consumeque…oTopic/0/…0"),
    ],
)
def test_a_shortened_name_keeps_its_kind_and_its_significant_digits(name, width, short):
    assert shorten(name, width) == short and len(short) <= width


@pytest.mark.parametrize("width", WIDTHS)
def test_top_once_piped_keeps_segment_names_and_units(store, width):
    """`top --once` piped at 80 columns lost the segment names, cut its headers and a value's unit
    (`wrote 2.8`). Ground truth: the same frame's rows drawn with --wide, split on their two-space gaps."""
    arguments = ("top", store, "--once", "--no-ebpf", "--interval", "0.1")
    wide = run_mqinspect(*arguments, "--wide", columns=width)
    narrow = run_mqinspect(*arguments, columns=width)
    assert wide.exit_code == 0 and narrow.exit_code == 0, narrow.stderr
    wide_rows = [
        re.split(r"\s{2,}", line.strip())
        for line in wide.stdout.splitlines()
        if line.startswith("commitlog/")
    ]
    assert wide_rows and all(len(row) == len(SEGMENT_COLUMNS) for row in wide_rows), wide.stdout
    lines = narrow.stdout.splitlines()
    segments = lines[: next(i for i, line in enumerate(lines) if line.startswith("Memory"))]
    assert max(len(line) for line in lines) <= width
    assert_table_whole(
        segments, SEGMENT_COLUMNS, {row[0]: row for row in wide_rows}, f"top --once at {width}"
    )
