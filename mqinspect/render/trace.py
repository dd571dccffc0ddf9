"""Draws tracing sessions: the startup line, one block per interval, the summary, and stderr notes.

Only draws: every number comes from a probe's frozen snapshot. Each probe of the registry
(probes/ebpf/registry.py) has a `TraceView` here (how its snapshots look in a table, and what deserves a line
on stderr), in VIEWS under its name.

A note is a warning about one interval; `SessionNotes` prints it once while its condition lasts (the same
`Note.key` interval after interval), and again only after an interval without it.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from mqinspect.render.stream_lines import Field
from mqinspect.render.trace_cache import (
    late_store_files_notes,
    pagecache_notes,
    pagecache_table,
    writeback_notes,
    writeback_table,
)
from mqinspect.render.trace_io import sendpath_notes, sendpath_table, syscalls_notes, syscalls_table
from mqinspect.render.trace_lines import LINE_FIELDS
from mqinspect.render.trace_notes import Note
from mqinspect.render.words import counted, more
from probes.ebpf import registry
from probes.ebpf.faults import FaultsSnapshot, FileFaults

TOP_PROCESSES = 10
TOP_FILES = 10
TOP_RANGES = 4
NAME_WIDTH = 34


@dataclass(frozen=True)
class TraceView:
    """How one probe's snapshots are drawn: `table(snapshot, title)`, `notes(snapshot)` for stderr, and the
    `fields` of its one line per interval in a stream (render/trace_lines.py)."""

    table: Callable[[Any, str], RenderableType]
    notes: Callable[[Any], list[Note]]
    fields: Sequence[Field[Any]] = ()


MAX_FOLLOWED_SHOWN = 8  # pids of followed processes named in a summary's title; the rest counted


def startup_line(
    subject: str,
    interval_s: float,
    count: int | None,
    duration_s: float | None,
    *,
    until_exit: int = 0,
    command: str | None = None,
) -> str:
    """What is traced, how often and how to stop, for stderr before the first interval:
    "Tracing page faults of pid 123, per file, every 1 s, until it exits. Ctrl-C to end early."
    `until_exit` is how many traced processes end the session by exiting (0: none do); `command`, the one
    started for the session (`trace ... -- COMMAND`), whose exit ends it."""
    stop = (
        f", {counted(count, 'interval')}" if count else f", for {_seconds(duration_s)}" if duration_s else ""
    )
    if command:
        stop += f", with the processes it starts, until {command} exits"
    elif until_exit:
        stop += ", until it exits" if until_exit == 1 else ", until they all exit"
    ending = "Ctrl-C to end early." if stop else "Ctrl-C to end."
    return f"Tracing {subject}, every {_seconds(interval_s)}{stop}. {ending}"


def interval_title(snapshot: Any) -> str:
    ended = time.strftime("%H:%M:%S", time.localtime(snapshot.end_time_unix_s))
    return f"{ended}  interval {snapshot.interval_s:.2f} s"


# The annotations of the snapshot fields a CSV row carries: numbers and words, and the pid lists.
_CSV_TYPES = frozenset({"int", "float", "str", "bool", "None", "tuple[int, ...]"})


def snapshot_csv_row(snapshot: Any) -> dict[str, Any]:
    """A snapshot's CSV row: its flat fields (kind, interval_s, the totals, pids), under their own names,
    which carry their units; the per-process and per-file breakdowns are the JSONL stream's."""
    return {
        field.name: getattr(snapshot, field.name)
        for field in dataclasses.fields(snapshot)
        if {part.strip() for part in str(field.type).split("|")} <= _CSV_TYPES
    }


def summary_title(snapshot: Any) -> str:
    """ "Summary: 2.00 s traced", and the processes followed (`trace ... -- COMMAND`) when there were any."""
    title = f"Summary: {snapshot.interval_s:.2f} s traced"
    followed = getattr(snapshot, "followed_pids", ())
    if followed:
        shown = ", ".join(map(str, followed[:MAX_FOLLOWED_SHOWN]))
        if len(followed) > MAX_FOLLOWED_SHOWN:
            shown += f" and {more(len(followed) - MAX_FOLLOWED_SHOWN, 'process')}"
        pids = "pid" if len(followed) == 1 else "pids"
        title += f", with {counted(len(followed), 'process')} it started followed ({pids} {shown})"
    return title


def _seconds(value: float | None) -> str:
    return f"{value:g} s"


def _count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _file_name(name: str, width: int = NAME_WIDTH) -> str:
    """A file or segment name that fits the column: ConsumeQueue segments as cq/TOPIC/QUEUE/OFFSET, and
    long paths cut at the start (their end, the file name, says more)."""
    if name.startswith("consumequeue/"):
        name = "cq/" + name.removeprefix("consumequeue/")
    return name if len(name) <= width else "…" + name[-(width - 1) :]


def _pages(first: int, last: int) -> str:
    return f"  page {first}" if first == last else f"  pages {first}-{last}"


# --- faults ------------------------------------------------------------------------------------------------


def faults_table(snapshot: FaultsSnapshot, title: str) -> RenderableType:
    parts: list[RenderableType] = [Text(title, style="bold"), _faults_headline(snapshot)]
    if len(snapshot.processes) > 1 or not snapshot.pids:
        parts.append(_faults_processes(snapshot))
    if snapshot.files:
        parts.append(_faults_files(snapshot.files))
    return Group(*parts, Text(""))


def _faults_headline(snapshot: FaultsSnapshot) -> Text:
    on_files = snapshot.kernel_placed_faults + snapshot.maps_placed_faults
    lines = [
        f"faults {_count(snapshot.faults)}: minor {_count(snapshot.minor_faults)}, "
        f"major {_count(snapshot.major_faults)}; on file pages {_count(on_files)} (placed by the kernel "
        f"{_count(snapshot.kernel_placed_faults)}, by /proc/PID/maps {_count(snapshot.maps_placed_faults)}), "
        f"anonymous {_count(snapshot.anonymous_faults)}, unresolved {_count(snapshot.unresolved_faults)}",
        f"populate {_count(snapshot.populate_faults)} (major {_count(snapshot.populate_major_faults)}), "
        f"fault-around {_count(snapshot.fault_around_pages)} pages",
    ]
    if snapshot.proc_source and snapshot.proc_minor_faults is not None:
        lines.append(
            f"kernel counters [{snapshot.proc_source}]: minor {_count(snapshot.proc_minor_faults)}, "
            f"major {_count(snapshot.proc_major_faults)}"
        )
    return Text("\n".join(lines))


def _number_columns(table: Table, names: Sequence[str]) -> None:
    for name in names:
        table.add_column(name, justify="right", no_wrap=True)


def _faults_processes(snapshot: FaultsSnapshot) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("pid", justify="right", no_wrap=True)
    table.add_column("comm", no_wrap=True, max_width=16, overflow="ellipsis")
    _number_columns(table, ("faults", "minor", "major", "populate", "around"))
    for row in snapshot.processes[:TOP_PROCESSES]:
        table.add_row(
            str(row.pid),
            row.comm or "?",
            *map(
                _count,
                (row.faults, row.minor_faults, row.major_faults, row.populate_faults, row.fault_around_pages),
            ),
        )
    hidden = len(snapshot.processes) - TOP_PROCESSES
    if hidden > 0:
        table.add_row("", f"… {more(hidden, 'process')}", *[""] * 5)
    return table


def _faults_files(files: Sequence[FileFaults]) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("file / pages", no_wrap=True)
    _number_columns(table, ("faults", "minor", "major", "populate", "around"))
    for row in files[:TOP_FILES]:
        table.add_row(
            Text(_file_name(row.name), style="cyan"),
            *map(
                _count,
                (row.faults, row.minor_faults, row.major_faults, row.populate_faults, row.fault_around_pages),
            ),
        )
        busiest = sorted(
            row.page_ranges, key=lambda r: -(r.faults + r.populate_faults + r.fault_around_pages)
        )[:TOP_RANGES]
        for page_range in sorted(busiest, key=lambda r: r.first_page):
            table.add_row(
                _pages(page_range.first_page, page_range.last_page),
                *map(
                    _count,
                    (
                        page_range.faults,
                        page_range.minor_faults,
                        page_range.major_faults,
                        page_range.populate_faults,
                        page_range.fault_around_pages,
                    ),
                ),
            )
        if len(row.page_ranges) > TOP_RANGES:
            table.add_row(Text(f"  … {more(len(row.page_ranges) - TOP_RANGES, 'range')}", style="dim"))
    if len(files) > TOP_FILES:
        table.add_row(Text(f"… {more(len(files) - TOP_FILES, 'file')}", style="dim"))
    return table


def faults_notes(snapshot: FaultsSnapshot) -> list[Note]:
    notes = late_store_files_notes(snapshot)
    if snapshot.lost_records:
        notes.append(
            Note(
                "lost_records",
                f"{snapshot.lost_records:,} fault records did not fit the BPF maps this interval: the "
                "per-file counts miss them (the totals do not); use a shorter --interval",
            )
        )
    return notes


# Each registered probe's view, by its name in probes/ebpf/registry.py.
VIEWS: dict[str, TraceView] = {
    registry.FAULTS.name: TraceView(faults_table, faults_notes, LINE_FIELDS[registry.FAULTS.name]),
    registry.PAGECACHE.name: TraceView(
        pagecache_table, pagecache_notes, LINE_FIELDS[registry.PAGECACHE.name]
    ),
    registry.WRITEBACK.name: TraceView(
        writeback_table, writeback_notes, LINE_FIELDS[registry.WRITEBACK.name]
    ),
    registry.SENDPATH.name: TraceView(sendpath_table, sendpath_notes, LINE_FIELDS[registry.SENDPATH.name]),
    registry.SYSCALLS.name: TraceView(syscalls_table, syscalls_notes, LINE_FIELDS[registry.SYSCALLS.name]),
}
