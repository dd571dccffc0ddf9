"""How each of the dashboard's tables can be sorted: one sort per table, by one of the columns it shows.

`s` and `>` move the focused table's sort to the next sortable column, `<` to the previous one, `r`
reverses it (cachetop and htop keys). Each table keeps its own column and direction; a panel with no rows to
order (Memory) has none. A row whose value was not measured sorts last whichever the direction:
"unavailable" is not the smallest number.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from mqinspect.render.top import PROCESS_COLUMNS, SEGMENT_COLUMNS, SENDPATH_COLUMNS, not_a_path
from mqinspect.sampling.snapshot import SegmentView

DESCENDING_MARK = "▼"
ASCENDING_MARK = "▲"


@dataclass(frozen=True)
class SortColumn:
    """A column a table can be ordered by: its header, the value of a row (None: not measured), and whether
    the biggest come first unless reversed (quantities do; names and pids start from the smallest)."""

    title: str
    value: Callable[[Any], Any]
    biggest_first: bool = True


def _cached_share(segment: SegmentView) -> float | None:
    if segment.cached_pages is None or not segment.pages:
        return None
    return segment.cached_pages / segment.pages


SEGMENT_SORTS = (
    SortColumn("segment", lambda s: (s.kind, s.name), biggest_first=False),  # store order
    SortColumn("cached", _cached_share),
    SortColumn("dirty", lambda s: s.dirty_pages),
    SortColumn("writeback", lambda s: s.writeback_pages),
    SortColumn("locked", lambda s: s.locked_bytes),
    SortColumn("wrote", lambda s: s.wrote_position_bytes),
    SortColumn("faults", lambda s: s.faults),
    SortColumn("major", lambda s: s.major_faults),
    SortColumn("+cache", lambda s: s.added_pages),
)
PROCESS_SORTS = (
    SortColumn("pid", lambda p: p.pid, biggest_first=False),
    SortColumn("command", lambda p: p.comm, biggest_first=False),
    SortColumn("found", lambda p: p.found_by, biggest_first=False),
    SortColumn("minflt/s", lambda p: p.minor_faults_per_s),
    SortColumn("majflt/s", lambda p: p.major_faults_per_s),
    SortColumn("tcp in/s", lambda p: p.tcp_received_bytes_per_s),
    SortColumn("tcp out/s", lambda p: p.tcp_acked_bytes_per_s),
    SortColumn("rchar/s", lambda p: p.rchar_bytes_per_s),
    SortColumn("wchar/s", lambda p: p.wchar_bytes_per_s),
    SortColumn("rss", lambda p: p.rss_bytes),
    SortColumn("locked", lambda p: p.locked_bytes),
)
# The Faults panel lists processes by their fault rates (the top faulting process first).
FAULT_SORTS = (
    SortColumn("minflt/s", lambda p: p.minor_faults_per_s),
    SortColumn("majflt/s", lambda p: p.major_faults_per_s),
    SortColumn("traced", lambda p: p.traced_faults),
    SortColumn("pid", lambda p: p.pid, biggest_first=False),
    SortColumn("command", lambda p: p.comm, biggest_first=False),
)
SENDPATH_SORTS = (
    SortColumn("total", lambda r: r.bytes_to_sockets),
    SortColumn("pid", lambda r: r.pid, biggest_first=False),
    SortColumn("command", lambda r: r.comm, biggest_first=False),
    SortColumn("read+write", lambda r: r.read_write_bytes),
    SortColumn("mmap+write", lambda r: r.mmap_write_bytes),
    SortColumn("sendfile", lambda r: r.sendfile_bytes),
    SortColumn("splice", lambda r: r.splice_bytes),
    SortColumn("other", not_a_path),
    SortColumn("copies/B", lambda r: r.cpu_copies_per_socket_byte),
)
TABLE_SORTS: dict[str, tuple[SortColumn, ...]] = {
    "segments": SEGMENT_SORTS,
    "faults": FAULT_SORTS,
    "sendpaths": SENDPATH_SORTS,
    "processes": PROCESS_SORTS,
}
# the tables' columns, to check that every sort is by a column the table shows
SHOWN_COLUMNS = {"segments": SEGMENT_COLUMNS, "sendpaths": SENDPATH_COLUMNS, "processes": PROCESS_COLUMNS}


@dataclass(frozen=True)
class TableSort:
    """The sort of one table: the index of its column in TABLE_SORTS[table], and whether it is reversed."""

    table: str
    index: int = 0
    reversed: bool = False

    @property
    def column(self) -> SortColumn:
        return TABLE_SORTS[self.table][self.index]

    @property
    def title(self) -> str:
        return self.column.title

    @property
    def descending(self) -> bool:
        return self.column.biggest_first != self.reversed

    @property
    def mark(self) -> str:
        return DESCENDING_MARK if self.descending else ASCENDING_MARK

    def moved(self, step: int) -> TableSort:
        """The next (step 1) or previous (step -1) column, in its own default direction."""
        return TableSort(self.table, (self.index + step) % len(TABLE_SORTS[self.table]))

    def flipped(self) -> TableSort:
        return replace(self, reversed=not self.reversed)

    def apply(self, rows: Sequence[Any]) -> tuple[Any, ...]:
        valued = [(value, row) for value, row in zip(map(self.column.value, rows), rows, strict=True)]
        known = [pair for pair in valued if pair[0] is not None]
        known.sort(key=_first, reverse=self.descending)  # stable, as sorted() was: ties keep their order
        return (*(row for _value, row in known), *(row for value, row in valued if value is None))

    def label(self) -> str:
        """'sort cached ▼' for a panel's title."""
        return f"sort {self.title} {self.mark}"


def _first(pair: tuple[Any, Any]) -> Any:
    return pair[0]


def default_sorts() -> dict[str, TableSort]:
    return {table: TableSort(table) for table in TABLE_SORTS}


def marked_titles(titles: Sequence[str], sort: TableSort) -> list[str]:
    """The column headers with the sorted one marked by its direction (htop, btop)."""
    return [f"{title}{sort.mark}" if title == sort.title else title for title in titles]
