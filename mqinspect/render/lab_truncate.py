"""Draws `mqinspect lab truncate`: per way how the sender ended, the bytes delivered and how long the
truncating process waited, beside what the textbook says; then one sentence per way, contradictions first.

Only draws: every number comes from the TruncateLabReport. A figure that was not measured reads "unavailable".
"""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from mqinspect.labs.stats import Spread
from mqinspect.labs.truncate import TruncateLabReport, WayResult
from mqinspect.labs.truncate_model import Ending
from mqinspect.render.cells import UNAVAILABLE

KiB, MiB = 1 << 10, 1 << 20
_EXPECTED = {
    Ending.SIGNAL: "SIGBUS",
    Ending.CLEAN_STOP: "clean stop",
    Ending.SHORT_COUNT: "short count",
}


def truncate_view(report: TruncateLabReport) -> RenderableType:
    return Group(
        _heading(report), Text(""), ways_table(report), Text(""), *_verdicts(report), *_notes(report)
    )


def _heading(report: TruncateLabReport) -> Text:
    runs = f"{report.repeat} run{'s' if report.repeat != 1 else ''} per way"
    limit = UNAVAILABLE if report.lease_break_time_s is None else f"{report.lease_break_time_s:g} s"
    return Text.assemble(
        ("A file truncated under its sender", "bold"),
        f": {_size(report.file_size_bytes)} served in {_size(report.chunk_bytes)} calls, truncated to "
        f"{_size(report.truncate_to_bytes)} by another process; {runs} (medians); kernel "
        f"{report.kernel_release}; lease-break-time {limit}; {report.elapsed_s:.1f} s.",
    )


def ways_table(report: TruncateLabReport) -> Table:
    table = Table(header_style="bold", box=None, pad_edge=False, padding=(0, 1))
    table.add_column("way", no_wrap=True)  # the longest label is 30 characters: the rest fit 80 columns
    table.add_column("ended", ratio=1)
    table.add_column("delivered", justify="right", no_wrap=True)
    table.add_column("truncate\nwaited", justify="right", no_wrap=True)
    table.add_column("textbook", ratio=1)
    for way in report.ways:
        style = "yellow" if way.agrees is False else ("red" if way.ending is Ending.FAILED else "")
        table.add_row(
            way.label,
            Text(_ended(way), style=style),
            _spread(way.delivered_bytes, _size),
            _waited(way),
            _EXPECTED.get(way.expected_ending, way.expected_ending.value),
        )
    return table


def _ended(way: WayResult) -> str:
    if way.ending is Ending.MIXED:
        return "mixed: " + ", ".join(ending.value for ending in way.endings)
    if way.ending is Ending.ERRNO and way.runs:
        return next(run.errno_name for run in way.runs if run.errno_name) or way.ended
    return {Ending.SHORT_COUNT: "short count", Ending.CLEAN_STOP: "clean stop"}.get(way.ending, way.ended)


def _waited(way: WayResult) -> str:
    if any(run.truncator_blocked for run in way.runs):
        return "blocked"
    return _spread(way.truncator_wait_s, _duration)


def _spread(value: Spread | None, show) -> str:
    return UNAVAILABLE if value is None else show(value.median)


def _size(size: float) -> str:
    if size >= MiB:
        return f"{size / MiB:.1f} MiB"
    if size >= KiB:
        return f"{size / KiB:.0f} KiB"
    return f"{size:.0f} B"


def _duration(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _verdicts(report: TruncateLabReport) -> list[RenderableType]:
    lines: list[RenderableType] = [Text("Textbook and this machine", style="bold")]
    ordered = sorted(report.ways, key=lambda way: way.contradiction is None)
    for way in ordered:
        line = Text(f"{way.label}: ", style="bold")
        line.append(way.verdict if way.contradiction is None else way.contradiction.split(": ", 1)[1])
        if way.contradiction:
            line.stylize("yellow", len(way.label) + 2)
        lines.append(line)
    return lines


def _notes(report: TruncateLabReport) -> list[Text]:
    notes = [
        f"ended: {report.ended_source}; delivered: {report.delivered_source}; truncate waited: "
        f"{report.wait_source}."
    ]
    for way in report.ways:
        for run in way.runs:
            if run.error or way.ending is Ending.MIXED:
                notes.append(f"{way.label}, run {run.run}: {run.ending.value}: {run.detail}")
    return [Text(""), *(Text(note, style="dim") for note in notes)]
