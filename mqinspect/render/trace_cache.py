"""Draws the pagecache and writeback probes' snapshots (their TraceViews are registered in render/trace.py).

Only draws: every number comes from a probe's frozen snapshot. Counts are pages unless a column says folios.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from mqinspect.render.trace_notes import Note
from mqinspect.render.units import share_percent
from mqinspect.render.words import more
from probes.ebpf.pagecache import NO_LOOKUPS, FileCacheActivity, PagecacheSnapshot, ProcessCacheActivity
from probes.ebpf.tally import add_optional
from probes.ebpf.writeback import (
    DirtyState,
    FileWriteback,
    FlusherWork,
    ProcessDirtying,
    ThrottledProcess,
    WritebackSnapshot,
)

TOP_PROCESSES = 10
TOP_FILES = 10
TOP_RANGES = 4
NAME_WIDTH = 34
BROKER_BUSY = '"[PC_SYNCHRONIZED] broker busy"'


def _count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _file_name(name: str, width: int = NAME_WIDTH) -> str:
    """A file or segment name that fits the column: ConsumeQueue segments as cq/TOPIC/QUEUE/OFFSET, and
    long paths cut at the start (their end, the file name, says more)."""
    if name.startswith("consumequeue/"):
        name = "cq/" + name.removeprefix("consumequeue/")
    return name if len(name) <= width else "…" + name[-(width - 1) :]


def _table(first_columns: Sequence[str], number_columns: Sequence[str]) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    for name in first_columns:
        table.add_column(name, no_wrap=True, overflow="ellipsis", max_width=NAME_WIDTH + 2)
    for name in number_columns:
        table.add_column(name, justify="right", no_wrap=True, min_width=HIT_WIDTHS.get(name, len(name)))
    return table


def hit_ratio_text(percent: float | None) -> str:
    """A hit ratio (0-100) with one decimal, never rounded up to 100% nor down to 0%; "-" with no lookup."""
    return share_percent(percent, 1) or "-"


def _hit_cells(row: Any) -> list[str]:
    """The hits, misses and hit% cells of a row of the pagecache probe."""
    return [_count(row.hit_pages), _count(row.miss_pages), hit_ratio_text(row.hit_ratio_percent)]


HIT_COLUMNS = ("hits", "misses", "hit%")
HIT_WIDTHS = {"hits": 7, "misses": 7, "hit%": 6}  # up to 999,999 pages and "100.0%" stay whole
HIT_COUNTING = (
    "hits and misses: pages the read path (read, pread, readv, sendfile, splice) looked up in the page cache "
    "(filemap:mm_filemap_get_pages); a miss is a page the same read had to bring in, a hit the rest, so a "
    "page readahead asked for earlier is a hit (even while its I/O is in flight). Not counted: reads through "
    "mmap (a load from a mapped page makes no event; their faults are in `trace faults`). A page another "
    "process is still reading in counts as a hit, and a read that asks for more than the file holds counts "
    "the pages past its end as hits."
)


def _more(hidden: int, noun: str) -> Text:
    return Text(f"… {more(hidden, noun)}", style="dim")


def _who(pids: Sequence[int]) -> str:
    if not pids:
        return "every process"
    return ("pid " if len(pids) == 1 else "pids ") + ", ".join(map(str, pids))


# --- pagecache ---------------------------------------------------------------------------------------------


def pagecache_table(snapshot: PagecacheSnapshot, title: str) -> RenderableType:
    parts: list[RenderableType] = [Text(title, style="bold"), _pagecache_headline(snapshot)]
    if snapshot.processes and (len(snapshot.processes) > 1 or not snapshot.pids):
        parts.append(_pagecache_processes(snapshot.processes))
    if snapshot.files:
        parts.append(_pagecache_files(snapshot.files))
    return Group(*parts, Text(""))


def _pagecache_headline(snapshot: PagecacheSnapshot) -> Text:
    lines = [
        f"added {_count(snapshot.added_pages)} pages ({_count(snapshot.added_folios)} folios) by "
        f"{_who(snapshot.pids)}",
        f"removed {_count(snapshot.deleted_pages)} pages ({_count(snapshot.deleted_folios)} folios) of "
        + _in_view(
            snapshot.store,
            snapshot.pids,
            "the files they added pages to or read",
            snapshot.deleted_pages_all_files,
        ),
    ]
    if snapshot.readahead_windows is None:
        lines.append("readahead: not traced (this kernel has no readahead tracepoints)")
    else:
        lines.append(
            f"readahead: {_count(snapshot.sync_readahead_requests)} sync and "
            f"{_count(snapshot.async_readahead_requests)} async requests, "
            f"{_count(snapshot.readahead_windows)} windows of {_count(snapshot.readahead_window_pages)} pages"
        )
    lines.append(_hits_line(snapshot))
    return Text("\n".join(lines))


def _hits_line(snapshot: PagecacheSnapshot) -> str:
    if snapshot.hit_pages is None:
        return f"read-path hits: {NO_LOOKUPS}"
    files = "the store's files" if snapshot.store else "their files" if snapshot.pids else "every file"
    hits, misses = _count(snapshot.hit_pages), _count(snapshot.miss_pages)
    return (
        f"read-path lookups of {files}: {hits} pages hit, {misses} missed "
        f"({hit_ratio_text(snapshot.hit_ratio_percent)} hits; mmap reads not counted)"
    )


def _in_view(store: str | None, pids: Sequence[int], pid_files: str, all_files: int) -> str:
    """Which files a count covers, and the count for every file when that is not the same."""
    if not store and not pids:
        return "every file"
    files = "the store's files" if store else pid_files
    return f"{files} ({_count(all_files)} of every file)"


def _pagecache_processes(processes: Sequence[ProcessCacheActivity]) -> Table:
    table = _table(("pid", "comm"), ("added", "removed", "ra req", "ra pages", *HIT_COLUMNS))
    for row in processes[:TOP_PROCESSES]:
        table.add_row(
            str(row.pid),
            row.comm or "?",
            *map(
                _count,
                (
                    row.added_pages,
                    row.deleted_pages,
                    add_optional(row.sync_readahead_requests, row.async_readahead_requests),
                    row.readahead_window_pages,
                ),
            ),
            *_hit_cells(row),
        )
    if len(processes) > TOP_PROCESSES:
        table.add_row("", _more(len(processes) - TOP_PROCESSES, "process"))
    return table


def _pagecache_files(files: Sequence[FileCacheActivity]) -> Table:
    table = _table(("file / pages",), ("added", "folios", "removed", "ra req", "ra pages", *HIT_COLUMNS))
    for row in files[:TOP_FILES]:
        table.add_row(
            Text(_file_name(row.name), style="cyan"),
            *map(
                _count,
                (
                    row.added_pages,
                    row.added_folios,
                    row.deleted_pages,
                    add_optional(row.sync_readahead_requests, row.async_readahead_requests),
                    row.readahead_window_pages,
                ),
            ),
            *_hit_cells(row),
        )
        busiest = sorted(row.page_ranges, key=lambda r: -(r.added_pages + r.deleted_pages))[:TOP_RANGES]
        for page_range in sorted(busiest, key=lambda r: r.first_page):
            table.add_row(
                f"  pages {page_range.first_page}-{page_range.last_page}",
                _count(page_range.added_pages),
                "",
                _count(page_range.deleted_pages),
            )
        if len(row.page_ranges) > TOP_RANGES:
            table.add_row(_more(len(row.page_ranges) - TOP_RANGES, "range"))
    if len(files) > TOP_FILES:
        table.add_row(_more(len(files) - TOP_FILES, "file"))
    return table


def late_store_files_notes(snapshot: Any) -> list[Note]:
    """The store's new files the probe counted only from the end of the interval they appeared in (not
    from their creation), and why: one note, in the interval it happened."""
    late = snapshot.late_store_files
    if not late:
        return []
    files = late[0] if len(late) == 1 else f"{late[0]} and {len(late) - 1} more"
    return [
        Note(
            "late_store_files:" + ",".join(late),
            f"{files}: counted from the end of this interval, not from creation (events before are not "
            f"shown): {snapshot.late_store_files_reason}",
        )
    ]


def pagecache_notes(snapshot: PagecacheSnapshot) -> list[Note]:
    notes = late_store_files_notes(snapshot)
    if snapshot.hit_pages is not None:
        notes.append(Note("hit_counting", HIT_COUNTING))  # lasting: said once, at the first interval
    if snapshot.lost_records:
        notes.append(
            Note(
                "lost_records",
                f"{snapshot.lost_records:,} records did not fit the BPF maps this interval: the per-process "
                "and per-file counts miss them (the totals do not); use a shorter --interval",
            )
        )
    return notes


# --- writeback ---------------------------------------------------------------------------------------------


def writeback_table(snapshot: WritebackSnapshot, title: str) -> RenderableType:
    parts: list[RenderableType] = [Text(title, style="bold"), _writeback_headline(snapshot)]
    if snapshot.throttled:
        parts.append(_throttled(snapshot.throttled))
    if snapshot.processes and (len(snapshot.processes) > 1 or not snapshot.pids):
        parts.append(_dirtiers(snapshot.processes))
    if snapshot.files:
        parts.append(_writeback_files(snapshot.files))
    if snapshot.flusher:
        parts.append(_flusher(snapshot.flusher))
    return Group(*parts, Text(""))


def _writeback_headline(snapshot: WritebackSnapshot) -> Text:
    io = (
        "" if snapshot.proc_dirtied_pages is None else f"/proc/PID/io {_count(snapshot.proc_dirtied_pages)}; "
    )
    lines = [
        f"dirtied {_count(snapshot.dirtied_pages)} pages ({_count(snapshot.dirtied_folios)} folios, "
        f"{_count(snapshot.unsized_folios)} of unknown size) by {_who(snapshot.pids)}",
        f"written {_count(snapshot.written_pages)} pages of "
        + _in_view(snapshot.store, snapshot.pids, "the files they dirtied", snapshot.written_pages_all_files)
        + f", by the flusher {_count(snapshot.flusher_written_pages)}",
        f"kernel counters: dirtied {io}/proc/vmstat {_count(snapshot.vmstat_dirtied_pages)} (every process), "
        f"written {_count(snapshot.vmstat_written_pages)}",
        *_dirty_state_lines(snapshot.dirty_state),
    ]
    return Text("\n".join(lines))


def _dirty_state_lines(state: DirtyState | None) -> list[str]:
    if state is None:
        return ["dirty state: no sample (the kernel computed no dirty limits this interval)"]
    return [
        f"dirty state, last / max of {state.samples:,} samples: dirty {_count(state.dirty_pages_last)} / "
        f"{_count(state.dirty_pages_max)}, writeback {_count(state.writeback_pages_last)} / "
        f"{_count(state.writeback_pages_max)}",
        f"thresholds: background {_count(state.background_threshold_pages_last)}, dirty "
        f"{_count(state.dirty_threshold_pages_last)}, limit {_count(state.dirty_limit_pages_last)}",
    ]


def _throttled(rows: Sequence[ThrottledProcess]) -> Table:
    table = _table(("throttled", "comm"), ("pauses", "total ms", "max ms", "dirty", "limit", "rounds"))
    for row in rows[:TOP_PROCESSES]:
        table.add_row(
            str(row.pid),
            row.comm or "?",
            *map(
                _count,
                (
                    row.pauses,
                    row.pause_ms_total,
                    row.pause_ms_max,
                    row.dirty_pages_at_max_pause,
                    row.limit_pages_at_max_pause,
                    row.throttle_checks,
                ),
            ),
        )
    if len(rows) > TOP_PROCESSES:
        table.add_row("", _more(len(rows) - TOP_PROCESSES, "process"))
    return table


def _dirtiers(rows: Sequence[ProcessDirtying]) -> Table:
    table = _table(("pid", "comm"), ("dirtied", "folios", "unsized", "/proc io"))
    for row in rows[:TOP_PROCESSES]:
        table.add_row(
            str(row.pid),
            row.comm or "?",
            *map(_count, (row.dirtied_pages, row.dirtied_folios, row.unsized_folios, row.proc_dirtied_pages)),
        )
    if len(rows) > TOP_PROCESSES:
        table.add_row("", _more(len(rows) - TOP_PROCESSES, "process"))
    return table


def _writeback_files(rows: Sequence[FileWriteback]) -> Table:
    table = _table(("file",), ("dirtied", "folios", "unsized", "written"))
    for row in rows[:TOP_FILES]:
        table.add_row(
            Text(_file_name(row.name), style="cyan"),
            *map(_count, (row.dirtied_pages, row.dirtied_folios, row.unsized_folios, row.written_pages)),
        )
    if len(rows) > TOP_FILES:
        table.add_row(_more(len(rows) - TOP_FILES, "file"))
    return table


def _flusher(rows: Sequence[FlusherWork]) -> Table:
    table = _table(("flusher device", "reason"), ("works", "written"))
    for row in rows:
        table.add_row(row.device, row.reason, _count(row.works), _count(row.written_pages))
    return table


def writeback_notes(snapshot: WritebackSnapshot) -> list[Note]:
    notes = late_store_files_notes(snapshot)
    for row in snapshot.throttled:
        if row.pauses:
            notes.append(
                Note(
                    f"throttled:{row.pid}",
                    f"pid {row.pid} ({row.comm or '?'}) was throttled by balance_dirty_pages(): {row.pauses} "
                    f"pauses, {row.pause_ms_total:,} ms (longest {row.pause_ms_max} ms, at "
                    f"{row.dirty_pages_at_max_pause:,} dirty pages against a limit of "
                    f"{row.limit_pages_at_max_pause:,}); writes stall here, the kernel's side of RocketMQ's "
                    f"{BROKER_BUSY}",
                )
            )
    if snapshot.unsized_folios:
        notes.append(
            Note(
                "unsized_folios",
                f"{snapshot.unsized_folios:,} dirtied folios were cached before the session (size unknown) "
                "and count as one page each: dirtied pages are a lower bound (the /proc counters are exact)",
            )
        )
    if snapshot.lost_records:
        notes.append(
            Note(
                "lost_records",
                f"{snapshot.lost_records:,} records did not fit the BPF maps this interval: the rows miss "
                "them (the totals do not); use a shorter --interval",
            )
        )
    return notes
