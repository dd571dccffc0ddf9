"""A few SVG snapshots of the dashboard (pytest-textual-snapshot): fake frames, frozen clock, at the sizes
people have (80x24, 120x40, 200x60). Update them with `pytest tests/dashboard/test_snapshots.py
--snapshot-update` after a deliberate change."""

from __future__ import annotations

import pytest
from fakes import T0, FakeFeed, frame

from mqinspect.dashboard.app import DashboardApp
from mqinspect.sampling.snapshot import ProbeState, ProbeStatus

SIZES = {"80x24": (80, 24), "120x40": (120, 40), "200x60": (200, 60)}
SIZE = SIZES["120x40"]
each_size = pytest.mark.parametrize("size", SIZES.values(), ids=SIZES.keys())


def new_app() -> DashboardApp:
    return DashboardApp(feed=FakeFeed(), clock=lambda: T0 + 2)


@each_size
def test_dashboard(snap_compare, size):
    app = new_app()

    async def run_before(pilot) -> None:
        app.receive(frame(1))
        await pilot.pause()

    assert snap_compare(app, terminal_size=size, run_before=run_before)


def test_short_screen_shows_send_paths_on_4(snap_compare):
    """80x24: Send paths and Processes share the last slot; 4 shows Send paths, the tab line says so."""
    app = new_app()

    async def run_before(pilot) -> None:
        app.receive(frame(1))
        await pilot.press("4")
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZES["80x24"], run_before=run_before)


@each_size
def test_paused_without_ebpf(snap_compare, size):
    app = new_app()
    missing = tuple(
        ProbeStatus(
            name, ProbeState.UNAVAILABLE, "tracing needs root, or CAP_BPF and CAP_PERFMON", "run as root"
        )
        for name in ("faults", "pagecache", "writeback", "sendpath")
    )

    async def run_before(pilot) -> None:
        app.receive(frame(1, probes=missing))
        await pilot.press("space")
        app.receive(frame(2, probes=missing))
        await pilot.pause()

    assert snap_compare(app, terminal_size=size, run_before=run_before)


def test_segment_map(snap_compare):
    app = new_app()
    path = "/store/commitlog/00000000000002097152"

    async def run_before(pilot) -> None:
        app.receive(frame(1))
        await pilot.press("down", "down", "enter")
        app.receive(frame(2, detail_for=path))
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_help_at_80x24(snap_compare):
    app = new_app()

    async def run_before(pilot) -> None:
        app.receive(frame(1))
        await pilot.press("question_mark")
        await pilot.pause()

    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)
