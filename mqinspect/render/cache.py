"""Draws `mqinspect cache` results as they arrive: a fixed-width table, a streamed JSON document, CSV rows.

Every writer consumes an iterator of CacheRow (a measured file) and ResidencyError (a path that could not
be measured), as `probes.residency.report` builds them, and draws each item before asking for the next, so
a large tree shows its first files while the rest are still being measured. `totals` is called once the
items are exhausted.

A value that was not measured is drawn as "unavailable" (table), null (JSON) or an empty cell (CSV), and
the reason is given with it: a note line under the table row, `notes` ({field: reason}) in JSON and CSV.

The JSON document (schema "mqinspect.cache/v1"), written piece by piece but valid as a whole:

    {
      "schema": "mqinspect.cache/v1",
      "page_size_bytes": 4096,
      "action": null | "evict" | "touch" | "lock",
      "process": null | {"pid", "comm", "skipped": [{"path", "reason"}], "notes": {...}},
      "files": [
        {"path", "size_bytes", "pages", "cached_pages", "dirty_pages", "writeback_pages",
         "evicted_pages", "recently_evicted_pages", "source", "trusted", "notes",
         "chunks": [{"first_page", "end_page", "cached_pages", "dirty_pages",
                     "cached_fraction", "dirty_fraction", "writeback_pages"}],  (only with --chunks)
         "page_map": [[first_page, end_page], ...],                  (only with --map)
         "process": {"deleted", "mapped", "open_fds", "mappings", "mapped_bytes", "rss_bytes",
                     "private_dirty_bytes", "shared_dirty_bytes", "locked_bytes"},  (only with --pid)
         "evict" | "touch" | "lock": {...}},                          (only with that action)
        ...
      ],
      "errors": [{"path", "reason", "errno"}],
      "totals": {"files", "errors", "size_bytes", "pages", "cached_pages", "cached_percent",
                 "dirty_pages", "writeback_pages", "evicted_pages", "recently_evicted_pages",
                 "notes", and the action's summed counts under its name}
    }

`page_map` is run-length encoded: the runs of resident pages as half-open [first_page, end_page) pairs in
file pages; every page outside a run is not in the page cache. A 1 GiB segment is 262,144 pages, so one
character per page would be a quarter-megabyte string, while its runs are usually a handful of pairs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

from rich.console import Console
from rich.text import Text

from mqinspect.jsonable import to_jsonable
from mqinspect.render.cells import HEAT_LEGEND, NONE, UNAVAILABLE, heat_strip
from mqinspect.render.machine import write_csv
from mqinspect.render.units import human_bytes, residency_percent, share_percent
from mqinspect.render.words import counted
from probes.residency.mincore import PAGE_SIZE
from probes.residency.report import ACTION_COUNTS, COUNTED_FIELDS, CacheItem, CacheRow, CacheTotals
from probes.residency.scan import FileResidency, ResidencyChunk, ResidencyError

if TYPE_CHECKING:  # drawn only for --pid; a scan of paths does not import the module
    from probes.process_files import ProcessFile, ProcessFiles

SCHEMA = "mqinspect.cache/v1"
# Measured here (kernel 6.18): 63 pages evicted by MADV_PAGEOUT, then POSIX_FADV_DONTNEED: evicted 63 -> 0.
EVICTED_AFTER_DONTNEED = (
    "pages dropped by --evict (POSIX_FADV_DONTNEED) are removed, not evicted: cachestat counts as evicted "
    "only pages the kernel reclaimed (each leaves a shadow entry); DONTNEED leaves none and clears those in "
    "the range, so EVICTED counts none of the dropped pages and loses earlier evictions (it can fall to 0)"
)
EVICTED_FIELDS = ("evicted_pages", "recently_evicted_pages")
PROCESS_MEMORY_FIELDS = ("rss_bytes", "private_dirty_bytes", "shared_dirty_bytes", "locked_bytes")


# --------------------------------------------------------------------------------------- shared pieces


def row_notes(row: CacheRow, *, chunks_shown: bool, map_shown: bool) -> dict[str, str]:
    """{field: why it is unavailable} for one row, plus why the source is not cachestat."""
    residency = row.residency
    notes: dict[str, str] = {}
    if residency.source_reason:
        notes["source"] = f"{residency.source}, because {residency.source_reason}"
    hidden = {"chunks"} if not chunks_shown else set()
    hidden |= {"page_map"} if not map_shown else set()
    notes.update((name, reason) for name, reason in residency.unmeasured.items() if name not in hidden)
    if row.process_file:
        notes.update(row.process_file.unavailable)
    if row.action:
        notes.update(row.action.unmeasured)
    return notes


def resident_runs(page_map: bytes, first_page: int = 0) -> list[tuple[int, int]]:
    """Runs of resident pages of a mincore map as half-open (first_page, end_page) pairs."""
    runs = []
    start = page_map.find(1)
    while start != -1:
        end = page_map.find(0, start)
        if end == -1:
            end = len(page_map)
        runs.append((first_page + start, first_page + end))
        start = page_map.find(1, end)
    return runs


def page_map_chart(page_map: bytes, cells: int) -> str:
    """vmtouch -v's chart: one character per run of pages, 'O' all resident, 'o' some, ' ' none."""
    pages = len(page_map)
    cells = max(min(cells, pages), 0)
    chars = []
    for cell in range(cells):
        first, end = cell * pages // cells, (cell + 1) * pages // cells
        resident = page_map.count(1, first, end)
        chars.append("O" if resident == end - first else "o" if resident else " ")
    return f"[{''.join(chars)}]"


def _count(value: int | None) -> str:
    return UNAVAILABLE if value is None else str(value)


def _percent(part: int | None, whole: int) -> str:
    if part is None:
        return UNAVAILABLE
    return residency_percent(part, whole, decimals=1) or NONE


def _percent_total(totals: CacheTotals) -> str:
    if totals.pages == 0:
        return NONE
    return share_percent(totals.cached_percent, decimals=1) or UNAVAILABLE


# --------------------------------------------------------------------------------------- table


@dataclass(frozen=True)
class _Column:
    title: str
    width: int
    cell: Callable[[CacheRow], str]
    total: Callable[[CacheTotals], str] = lambda _totals: ""


def _residency_columns() -> list[_Column]:
    def counted(name: str) -> _Column:
        title = {"cached_pages": "CACHED", "recently_evicted_pages": "RECENT_EVICTED"}.get(
            name, name.removesuffix("_pages").upper()
        )
        return _Column(
            title,
            max(len(title), len(UNAVAILABLE)),
            lambda row: _count(getattr(row.residency, name)),
            lambda totals: _count(getattr(totals, name)),
        )

    width = len(UNAVAILABLE)
    return [
        _Column(
            "SIZE",
            width,
            lambda row: human_bytes(row.residency.size_bytes),
            lambda t: human_bytes(t.size_bytes),
        ),
        _Column("PAGES", width, lambda row: str(row.residency.pages), lambda t: str(t.pages)),
        counted("cached_pages"),
        _Column(
            "CACHED%",
            width,
            lambda row: _percent(row.residency.cached_pages, row.residency.pages),
            lambda t: _percent_total(t),
        ),
        *(counted(name) for name in COUNTED_FIELDS[1:]),
    ]


def _process_columns() -> list[_Column]:
    def via(row: CacheRow) -> str:
        process_file = row.process_file
        return "+".join(
            kind for kind, used in (("mmap", process_file.mapped), ("fd", process_file.open)) if used
        )

    titles = {
        "rss_bytes": "RSS",
        "private_dirty_bytes": "PRIV_DIRTY",
        "shared_dirty_bytes": "SHR_DIRTY",
        "locked_bytes": "MLOCKED",
    }
    width = len(UNAVAILABLE)
    return [
        _Column("VIA", len("mmap+fd"), via),
        *(
            _Column(title, width, lambda row, name=name: human_bytes(getattr(row.process_file, name)))
            for name, title in titles.items()
        ),
    ]


# The column title of each count an action reports (probes.residency.report.ACTION_COUNTS).
ACTION_TITLES = {
    "pages_evicted": "DROPPED",
    "pages_stayed_resident": "STAYED",
    "pages_brought_in": "BROUGHT_IN",
    "locked_pages": "LOCKED",
}


def _action_columns(action: str) -> list[_Column]:
    return [
        _Column(
            title,
            max(len(title), len(UNAVAILABLE)),
            lambda row, name=name: _count(row.action.pages.get(name)),
            lambda totals, name=name: _count(totals.action.pages.get(name)) if totals.action else "",
        )
        for name, title in ((name, ACTION_TITLES[name]) for name in ACTION_COUNTS[action])
    ]


class CacheTable:
    """The fixed-width line format (like fincore's): every line can be printed as soon as it is known."""

    def __init__(self, *, heat_width: int, process_mode: bool, action: str | None):
        self.columns = _residency_columns()
        if process_mode:
            self.columns += _process_columns()
        if action:
            self.columns += _action_columns(action)
        self.heat_width = max(heat_width, len(UNAVAILABLE))

    def _line(self, cells: Iterable[str], heat: Text, file_cell: Text, style: str = "") -> Text:
        line = Text(style=style)
        for column, cell in zip(self.columns, cells, strict=True):
            line.append(cell.rjust(column.width) + "  ")
        line.append_text(heat)
        line.append("  ")
        line.append_text(file_cell)
        return line

    def header(self) -> Text:
        return self._line(
            (column.title for column in self.columns),
            Text("HEAT".ljust(self.heat_width)),
            Text("FILE"),
            style="bold",
        )

    def row(self, row: CacheRow) -> Text:
        name = Text(row.residency.path)
        if row.process_file and row.process_file.deleted:
            name.append(" (deleted)", style="red")
        return self._line(
            (column.cell(row) for column in self.columns),
            heat_strip(row.residency.chunks, width=self.heat_width),
            name,
        )

    def totals(self, totals: CacheTotals) -> Text:
        errors = f", {counted(totals.errors, 'error')}" if totals.errors else ""
        return self._line(
            (column.total(totals) for column in self.columns),
            Text(" " * self.heat_width),
            Text(f"total: {counted(totals.files, 'file')}{errors}"),
            style="bold",
        )


def note_lines(notes: dict[str, str], indent: str = "    ") -> list[Text]:
    """One line per distinct reason, naming the fields it explains."""
    fields_by_reason: dict[str, list[str]] = {}
    for name, reason in notes.items():
        fields_by_reason.setdefault(reason, []).append(name)
    return [
        Text(f"{indent}note: {', '.join(names)}: {reason}", style="yellow")
        for reason, names in fields_by_reason.items()
    ]


def map_line(residency: FileResidency, console_width: int, indent: str = "    ") -> Text | None:
    """The vmtouch -v style chart of a row's page map, fitted to the console width."""
    if residency.page_map is None:
        return None
    counts = f" {residency.page_map.count(1)}/{len(residency.page_map)}"
    cells = max(console_width - len(indent) - 2 - len(counts), 10)
    return Text(f"{indent}{page_map_chart(residency.page_map, cells)}{counts}", style="cyan")


def error_line(error: ResidencyError) -> Text:
    return Text(f"error: {error.path}: {error.reason}", style="red")


def process_lines(process: ProcessFiles) -> list[Text]:
    mapped = sum(file.mapped for file in process.files)
    opened = sum(file.open for file in process.files)
    name = f" ({process.comm})" if process.comm else ""
    lines = [
        Text(
            f"process {process.pid}{name}: {len(process.files)} files, {mapped} mapped, {opened} open",
            style="bold",
        )
    ]
    lines += note_lines(process.unavailable, indent="")
    if process.skipped:
        skipped = ", ".join(f"{item.path} ({item.reason})" for item in process.skipped)
        lines.append(Text(f"skipped, not regular files: {skipped}", style="dim"))
    return lines


def write_cache_table(
    items: Iterable[CacheItem],
    totals: Callable[[], CacheTotals],
    console: Console,
    *,
    heat_width: int,
    show_map: bool,
    process: ProcessFiles | None = None,
    action: str | None = None,
) -> None:
    """The table, one line (plus its map and note lines) per item as it comes, then the totals line."""
    table = CacheTable(heat_width=heat_width, process_mode=process is not None, action=action)

    def emit(line: Text) -> None:
        console.print(line, soft_wrap=True)  # soft wrap: long paths run on instead of breaking the columns

    for line in process_lines(process) if process else []:
        emit(line)
    emit(table.header())
    for item in items:
        if isinstance(item, ResidencyError):
            emit(error_line(item))
            continue
        emit(table.row(item))
        chart = map_line(item.residency, console.width) if show_map else None
        for line in ([chart] if chart else []) + note_lines(
            row_notes(item, chunks_shown=True, map_shown=show_map)
        ):
            emit(line)
    summary = totals()
    emit(table.totals(summary))
    for line in note_lines(_totals_notes(summary)):
        emit(line)
    emit(Text(HEAT_LEGEND, style="dim"))


# --------------------------------------------------------------------------------------- JSON


def file_object(row: CacheRow, *, include_chunks: bool, include_map: bool) -> dict[str, Any]:
    """The JSON object of one file (see the module docstring)."""
    residency = row.residency
    document: dict[str, Any] = {
        "path": residency.path,
        "size_bytes": residency.size_bytes,
        "pages": residency.pages,
        **{name: getattr(residency, name) for name in COUNTED_FIELDS},
        "source": residency.source,
        "trusted": residency.trusted,
        "notes": row_notes(row, chunks_shown=include_chunks, map_shown=include_map),
    }
    if include_chunks:
        document["chunks"] = to_jsonable(residency.chunks)
    if include_map:
        document["page_map"] = (
            None if residency.page_map is None else resident_runs(residency.page_map, residency.first_page)
        )
    if row.process_file:
        document["process"] = _process_file_object(row.process_file)
    if row.action:
        document[row.action.name] = {**row.action.detail, **row.action.pages}
    return document


def _process_file_object(process_file: ProcessFile) -> dict[str, Any]:
    return {
        "deleted": process_file.deleted,
        "mapped": process_file.mapped,
        "open_fds": list(process_file.fds),
        "mappings": process_file.mappings,
        "mapped_bytes": process_file.mapped_bytes,
        **{name: getattr(process_file, name) for name in PROCESS_MEMORY_FIELDS},
    }


def totals_object(totals: CacheTotals) -> dict[str, Any]:
    document = {name: value for name, value in to_jsonable(totals).items() if name != "action"}
    document["notes"] = _totals_notes(totals)
    if totals.action:
        document[totals.action.name] = totals.action.pages
    return document


def _totals_notes(totals: CacheTotals) -> dict[str, str]:
    """The totals' notes, and after --evict why the evicted counts do not count what it dropped."""
    if totals.action is None or totals.action.name != "evict":
        return totals.notes
    return {**totals.notes, **dict.fromkeys(EVICTED_FIELDS, EVICTED_AFTER_DONTNEED)}


def process_object(process: ProcessFiles) -> dict[str, Any]:
    return {
        "pid": process.pid,
        "comm": process.comm,
        "skipped": to_jsonable(process.skipped),
        "notes": process.unavailable,
    }


def _dumps(value: Any) -> str:
    return json.dumps(to_jsonable(value), ensure_ascii=False)


def write_cache_json(
    items: Iterable[CacheItem],
    totals: Callable[[], CacheTotals],
    stream: TextIO,
    *,
    include_chunks: bool,
    include_map: bool,
    process: ProcessFiles | None = None,
    action: str | None = None,
) -> None:
    """The JSON document, written as it goes: the opening, one file object per line, then the rest."""
    head = {
        "schema": SCHEMA,
        "page_size_bytes": PAGE_SIZE,
        "action": action,
        "process": process_object(process) if process else None,
    }
    stream.write("{\n" + "".join(f"  {_dumps(key)}: {_dumps(value)},\n" for key, value in head.items()))
    stream.write('  "files": [')
    errors: list[ResidencyError] = []
    separator = "\n    "
    for item in items:
        if isinstance(item, ResidencyError):
            errors.append(item)  # the errors array comes after the files, so they wait
            continue
        stream.write(
            separator + _dumps(file_object(item, include_chunks=include_chunks, include_map=include_map))
        )
        stream.flush()
        separator = ",\n    "
    stream.write("\n  ],\n" if separator != "\n    " else "],\n")
    error_lines = ",\n".join(f"    {_dumps(error)}" for error in errors)
    stream.write(f'  "errors": [\n{error_lines}\n  ],\n' if errors else '  "errors": [],\n')
    stream.write(f'  "totals": {_dumps(totals_object(totals()))}\n}}\n')
    stream.flush()


# --------------------------------------------------------------------------------------- CSV


def _chunk_percents(chunks: tuple[ResidencyChunk, ...] | None, counted: str) -> str | None:
    """Each chunk's share of `counted` pages, by the residency rule (floored; 100 only when all, 0 only when
    none: "<1" for a few), space-separated, without the % sign."""
    if chunks is None or any(getattr(chunk, counted) is None for chunk in chunks):
        return None
    shares = (residency_percent(getattr(chunk, counted), chunk.pages) or NONE for chunk in chunks)
    return " ".join(share.removesuffix("%") for share in shares)


def csv_record(
    item: CacheItem, *, include_chunks: bool, include_map: bool, process_mode: bool, action: str | None
) -> dict[str, Any]:
    """One flat CSV row; an error row has the path and `error`, and every other cell empty.

    With --chunks, `chunks_cached_percent` / `chunks_dirty_percent` hold each chunk's percentage,
    space-separated; with --map, `page_map` holds the resident runs as "first:end" pairs (end exclusive).
    """
    row = item if isinstance(item, CacheRow) else None
    residency = row.residency if row else None
    record: dict[str, Any] = {"path": residency.path if residency else item.path}
    record["size_bytes"] = residency.size_bytes if residency else None
    record["pages"] = residency.pages if residency else None
    record.update((name, getattr(residency, name) if residency else None) for name in COUNTED_FIELDS)
    record["source"] = residency.source if residency else None
    record["trusted"] = residency.trusted if residency else None
    notes = row_notes(row, chunks_shown=include_chunks, map_shown=include_map) if row else {}
    if row and row.action and row.action.name == "evict":
        notes.update(dict.fromkeys(EVICTED_FIELDS, EVICTED_AFTER_DONTNEED))
    record["notes"] = "; ".join(f"{name}: {reason}" for name, reason in notes.items()) or None
    record["error"] = item.reason if isinstance(item, ResidencyError) else None
    if include_chunks:
        record["chunks_cached_percent"] = _chunk_percents(residency.chunks, "cached_pages") if row else None
        record["chunks_dirty_percent"] = _chunk_percents(residency.chunks, "dirty_pages") if row else None
    if include_map:
        runs = resident_runs(residency.page_map) if row and residency.page_map is not None else None
        record["page_map"] = None if runs is None else " ".join(f"{first}:{end}" for first, end in runs)
    if process_mode:
        process_file = row.process_file if row else None
        record["deleted"] = process_file.deleted if process_file else None
        record["mapped"] = process_file.mapped if process_file else None
        record["open_fds"] = " ".join(map(str, process_file.fds)) if process_file else None
        record.update(
            (name, getattr(process_file, name) if process_file else None) for name in PROCESS_MEMORY_FIELDS
        )
    if action:
        pages = row.action.pages if row and row.action else {}
        record.update((name, pages.get(name)) for name in ACTION_COUNTS[action])
    return record


def write_cache_csv(
    items: Iterable[CacheItem],
    stream: TextIO,
    *,
    include_chunks: bool,
    include_map: bool,
    process_mode: bool = False,
    action: str | None = None,
) -> None:
    """A header and one row per file or error, each flushed before the next file is measured."""

    def records() -> Iterator[dict[str, Any]]:
        for item in items:
            yield csv_record(
                item,
                include_chunks=include_chunks,
                include_map=include_map,
                process_mode=process_mode,
                action=action,
            )
            stream.flush()  # write_csv has written the row by the time it asks for the next one

    write_csv(records(), stream)
