"""The store side of a dashboard snapshot: each segment's page-cache residency (cachestat, mincore where it is
refused), the positions its files show, its locked bytes, and the eBPF events on it.

Positions are found where the data ends, not in the newest file by name (a broker preallocates the next
CommitLog segment ahead of the writer): the CommitLog's end is the end of its last record (store.inspection's
find_log_tail), a ConsumeQueue's the end of its last entry. Each segment then shows how far that end reaches
into it: its whole size when the log goes on past it, 0 when the log ends before it.

Cost matters: this runs every interval over every segment. A segment whose pages are all cached and clean,
or all absent, is measured with one cachestat call and its chunk map follows exactly from the totals; only a
mixed segment is measured chunk by chunk. The CommitLog's end is searched from the last record found the
interval before, following the records' sizes only (what was appended since, never the whole segment), a
ConsumeQueue's only when its newest file's size or mtime moved (writes through a mapping update mtime when
they dirty a clean page), a mixed segment's chunks only when its cachestat totals moved, and locked bytes,
which need every process's maps, every LOCK_REFRESH_INTERVALS intervals.
"""

from __future__ import annotations

import bisect
import copy
import functools
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mqinspect.sampling.hits import hit_fields
from mqinspect.sampling.snapshot import (
    PROBE_FAULTS,
    PROBE_PAGECACHE,
    PROBE_WRITEBACK,
    ChunkMap,
    ChunkState,
    PageRangeEvents,
    SegmentDetail,
    SegmentView,
    StoreView,
)
from probes.file_locks import locked_bytes_by_file
from probes.residency.scan import ResidencyUnavailable, chunk_bounds, file_residency, path_totals
from store.checkpoint import read_checkpoint
from store.config import CQ_STORE_UNIT_SIZE
from store.consume_queue_format import decode_entry
from store.errors import StoreError
from store.inspection.rocketmq.reading import LogEndReason, LogTail, find_log_tail, position_in_segment
from store.layout import SegmentFile, SegmentQueue, StoreLayout, discover_store
from store.safe_read import PreadFile

PAGE_BYTES = 4096
STRIP_CHUNKS = 32
DETAIL_CELLS = 512
LOCK_REFRESH_INTERVALS = 10
CHUNK_REFRESH_INTERVALS = 10
# With a dashboard's drawn rows given, every file is measured at least once in this many intervals.
TURN_INTERVALS = 30
LAYOUT_REFRESH_INTERVALS = 60
# A directory whose mtime is this close to a listing's start may change again within the same tick of the
# filesystem's clock, leaving its mtime as the listing saw it: such a listing is made again.
SETTLED_AFTER_NS = 2_000_000_000
# Up to this many files, every file's totals are measured every interval whatever is drawn (1.6 ms for 66
# files): measuring by turns is for big stores.
MEASURE_ALL_UP_TO = 200
EVENT_PROBES = (PROBE_FAULTS, PROBE_PAGECACHE, PROBE_WRITEBACK)
STRIP_NOT_DRAWN = (
    "the heat strip is measured while its row is on screen, and this file's pages changed since its last one"
)
FLUSHED_UNKNOWN = (
    "the broker keeps its flushed offset in memory; this checkpoint has no masterFlushedOffset "
    "(only the flush time, physicMsgTimestamp)"
)
NO_EBPF_EVENTS = "the {probe} probe is not running"
# The first search for the CommitLog's end tries the newest records this many ConsumeQueues point at.
DISPATCHED_HINTS = 16
# Reads while following the CommitLog stop after this many bytes (and at a hole): the search never pulls
# more than this into the page cache past the end of the log.
LOG_WALK_WINDOW_BYTES = 64 << 10


# A queue's rows: (kind, name prefix, queue, [(segment, path, row name)]); the prefix keys its positions.
Entry = tuple[str, str, SegmentQueue, list]


@dataclass(frozen=True)
class _Position:
    identity: tuple[int, int, int, int]  # inode, size, mtime_ns, device
    end_bytes: int


@dataclass(frozen=True)
class _QueuePositions:
    """Where one queue's data ends and (CommitLog) where it is flushed to, in the queue's stream of bytes;
    None with the reason in `unavailable` ({SegmentView field: reason}) when it cannot be known."""

    wrote_offset: int | None
    flushed_offset: int | None
    unavailable: dict[str, str]
    wrote_in: SegmentFile | None = None  # the segment that holds each offset
    flushed_in: SegmentFile | None = None

    @classmethod
    def of(cls, queue: SegmentQueue, wrote: int | None, flushed: int | None, unavailable: dict[str, str]):
        return cls(wrote, flushed, unavailable, _holder(queue, wrote), _holder(queue, flushed))


def _segment_entries(layout: StoreLayout) -> list[tuple[str, str, SegmentQueue]]:
    """(kind, name prefix, queue) for the CommitLog and every ConsumeQueue; names match the eBPF probes'."""
    entries = [("commitlog", "commitlog", layout.commitlog)]
    for cq in layout.consume_queues:
        entries.append(("consumequeue", f"consumequeue/{cq.topic}/{cq.queue_id}", cq.queue))
    return entries


class StoreReader:
    """Reads one store each interval into a StoreView. Keeps only caches, never a file open."""

    def __init__(
        self,
        root: Path,
        *,
        strip_chunks: int = STRIP_CHUNKS,
        clock: Callable[[], float] = time.time,
        measure_all_up_to: int = MEASURE_ALL_UP_TO,
    ):
        self.root = Path(root)
        self.strip_chunks = strip_chunks
        self.measure_all_up_to = measure_all_up_to
        self._clock = clock
        self._positions: dict[str, _Position] = {}
        self._log_tail: LogTail | None = None
        self._chunk_maps: dict[str, tuple[tuple, int, ChunkMap | None]] = {}
        self._locks: dict[str, int | None] = {}
        self._lock_note: str | None = None
        self._intervals = 0
        self._layout: StoreLayout | None = None
        self._rows: _Rows | None = None  # _rows_of's, for the layout it was made for
        # the last interval's rows, with the rows and shared inputs they were made from
        self._last_rows: tuple[_Rows, tuple, list[SegmentView]] | None = None
        self._just_measured: set[str] = set()  # rows whose measurement time the next interval sets
        self._kept_for: StoreLayout | None = None  # the layout whose files the caches were last cut to
        self._listed_at = 0  # the interval the layout was listed in
        self._directories: list[tuple[str, int | None]] = []  # those holding segments, with their mtimes
        self._watched_always = 0  # how many of them (the first) a dashboard looks at every interval
        self._settled = False  # no directory had changed just before the listing
        self._views: dict[str, _Measured] = {}  # path -> the row and its inputs as last built
        self._queue_positions: dict[str, _QueuePositions] = {}  # a ConsumeQueue's, by name prefix
        self._last_positions: dict[str, _QueuePositions] = {}  # each queue's, the interval before
        self._locks_version = 0  # counts the changes of self._locks
        self._turn = 0  # where the round of off-screen measurements goes on
        self._check_store()

    def _check_store(self) -> None:
        """NotAStore now, as bad input, rather than in the first interval."""
        discover_store(self.root)

    def segment_paths(self) -> list[str]:
        """The paths of every segment the store has now (a listing, no measurement)."""
        return list(self._rows_of(self._current_layout(None)).paths)

    def read(self, events: Mapping[str, Any], drawn: frozenset[str] | None = None) -> StoreView:
        """One interval's view. `drawn`: the paths of the rows a dashboard draws (None: every row is used, as
        by --once, the streams and recordings). With it, heat strips are measured for drawn rows only (an
        undrawn row keeps its strip while cachestat's counts stay the same, else has none, saying why), and a
        store of more than `measure_all_up_to` files is measured by turns: drawn rows, the segment being
        written and those with events every interval, every other file at least once in TURN_INTERVALS
        intervals (its row says when it was measured)."""
        try:
            layout = self._current_layout(drawn)
        except (StoreError, OSError) as error:
            return self._unreadable(error)
        rows_of = self._rows_of(layout)
        entries, paths = rows_of.entries, rows_of.paths
        self._refresh_locks(paths, drawn, layout)
        flushed, flush_time_ms, checkpoint_note = self._checkpoint(layout)
        by_path = _events_by_path(events)
        # a store this small has every total measured every interval (strips still for drawn rows only)
        due = None if len(paths) <= self.measure_all_up_to else self._due(rows_of, drawn, by_path, layout)
        turn = _Turn(
            due,
            drawn,
            self._clock(),
            frozenset(path for _probe, path in by_path),
            (*(probe in events for probe in EVENT_PROBES), events.get(PROBE_PAGECACHE) is not None),
        )
        # rows neither due nor with events, already marked as measured earlier: taken as they are. With the
        # same rows and shared inputs as the interval before, its list of rows is taken whole and only the
        # rows that may differ are looked at (1,500 rows, a few dozen of them due)
        busy = None if due is None else due | turn.evented
        shared = (self._locks_version, turn.running)
        last = self._last_rows
        reuse = busy is not None and last is not None and last[0] is rows_of and last[1] == shared
        segments: list[SegmentView] = list(last[2]) if reuse and last is not None else []
        unmoved: dict[int, Any] = {}  # queues whose rows are looked at only where busy or just measured
        looked_at: list[tuple[str, SegmentView]] = []
        for number, (kind, prefix, queue, rows) in enumerate(entries):
            positions = self._queue_positions.get(prefix)
            if (  # a ConsumeQueue whose end is not looked for this interval: the same as before, unmoved
                due is None
                or positions is None
                or rows[-1][1] in due
                or self._last_positions.get(prefix) is not positions
            ):
                kind, prefix, queue, rows = entries[number] = self._current_entry(entries[number])
                positions = self._queue_positions_of(kind, prefix, queue, flushed, checkpoint_note, due)
                moved = self._moved(prefix, queue, positions)
            else:
                moved = frozenset()
            if reuse and moved == frozenset():
                unmoved[number] = positions
                continue
            first = rows_of.starts[number]
            for offset, (segment, path, name) in enumerate(rows):
                view = self._row(
                    kind, name, queue, segment, path, positions, by_path, events, turn, moved, busy
                )
                looked_at.append((path, view))
                if reuse:
                    segments[first + offset] = view
                else:
                    segments.append(view)
        if reuse:
            for path in busy | self._just_measured:  # type: ignore[operator]
                place = rows_of.places.get(path)
                if place is None or place[0] not in unmoved:
                    continue
                number, offset = place
                kind, _prefix, queue, rows = entries[number]
                segment, _path, name = rows[offset]
                view = self._row(
                    kind,
                    name,
                    queue,
                    segment,
                    path,
                    unmoved[number],
                    by_path,
                    events,
                    turn,
                    frozenset(),
                    busy,
                )
                looked_at.append((path, view))
                segments[rows_of.starts[number] + offset] = view
        self._just_measured = {path for path, view in looked_at if view.residency_time_unix_s is None}
        self._last_rows = (rows_of, shared, segments)
        if self._kept_for is not layout:  # what the previous listing's files left behind
            newest = {rows[-1][1] for *_rest, rows in entries}
            self._positions = {path: known for path, known in self._positions.items() if path in newest}
            listed = set(paths)
            self._views = {path: view for path, view in self._views.items() if path in listed}
            self._kept_for = layout
        self._intervals += 1
        return self._view(layout, flush_time_ms, tuple(segments))

    # --- what a format's reader gives (a Kafka log dir's: sampling.kafka_store)

    def _unreadable(self, error: Exception) -> StoreView:
        return StoreView(str(self.root), None, (), {"segments": f"the store cannot be read: {error}"})

    def _view(self, layout: Any, flush_time_ms: int | None, segments: tuple[SegmentView, ...]) -> StoreView:
        return StoreView(str(layout.root), flush_time_ms, segments)

    def _entries(self, layout: Any) -> list[Entry]:
        """(kind, name prefix, queue, [(segment, path, row name)]) for each queue with segments; the name
        prefix keys the queue's positions."""
        return [
            (kind, prefix, queue, [(s, str(s.path), f"{prefix}/{s.path.name}") for s in queue.segments])
            for kind, prefix, queue in _segment_entries(layout)
            if queue.segments
        ]

    def _list_store(self) -> tuple[Any, list[Path], int]:
        """A listing of the store's files (its layout), the directories whose mtimes say when to list again,
        and how many of them (the first ones) a dashboard looks at every interval (the others by turns)."""
        layout = discover_store(self.root)
        directories = [self.root / "commitlog", self.root / "consumequeue", self.root]  # root: checkpoint
        directories += list(dict.fromkeys(cq.queue.directory.parent for cq in layout.consume_queues))
        directories += [cq.queue.directory for cq in layout.consume_queues]
        return layout, directories, 3

    def _always_due(self, entries: list[Entry]) -> set[str]:
        """The files measured every interval, whatever is drawn: the files being written (the CommitLog's
        newest segment and the one holding its end)."""
        due = set()
        commitlog = next((queue for kind, _prefix, queue, _rows in entries if kind == "commitlog"), None)
        if commitlog is not None:
            due.add(str(commitlog.segments[-1].path))
            holder = self._log_tail.end.physical_offset if self._log_tail else None
            if holder is not None and (segment := _segment_at(commitlog, holder)) is not None:
                due.add(str(segment.path))
        return due

    def _current_entry(self, entry: Entry) -> Entry:
        """The queue's entry as its files are now, before its positions are looked for: a listing's (a
        RocketMQ store's files have their size from their creation; a Kafka reader's newest grow)."""
        return entry

    def _rows_of(self, layout: StoreLayout) -> _Rows:
        """The rows of each queue with segments, made once per listing of the layout."""
        if self._rows is not None and self._rows.layout is layout:
            return self._rows
        self._rows = _Rows.of(layout, self._entries(layout))
        return self._rows

    def _current_layout(self, drawn: frozenset[str] | None) -> StoreLayout:
        """The store's files (listing 1,500 files took 70 ms), listed again when the mtime of a directory
        that holds them moved (a file created, deleted or renamed in it), and every LAYOUT_REFRESH_INTERVALS
        (a file whose size changed; rows measured meanwhile take their size from the file itself). When every
        row is used (streams, --once, recordings) every directory is looked at every interval; for a
        dashboard commitlog/, consumequeue/ and the root every interval, the topics' and queues' directories
        by turns (all in TURN_INTERVALS intervals). A listing made while a directory had just changed (within
        a tick of its filesystem's clock: its mtime could stay the same through a later change) is made
        again."""
        if (
            self._layout is None
            or not self._settled
            or self._intervals - self._listed_at >= LAYOUT_REFRESH_INTERVALS
            or self._directories_moved(every_one=drawn is None)
        ):
            started_ns = time.time_ns()
            layout, directories, self._watched_always = self._list_store()
            self._layout, self._listed_at = layout, self._intervals
            self._queue_positions = {}  # they name the segments of the previous listing
            self._directories = [(str(path), _mtime_ns(path)) for path in directories]
            self._settled = all(
                mtime is None or mtime < started_ns - SETTLED_AFTER_NS for _path, mtime in self._directories
            )
        return self._layout

    def _directories_moved(self, *, every_one: bool) -> bool:
        if every_one:
            return any(_mtime_ns(path) != mtime for path, mtime in self._directories)
        always, by_turns = (
            self._directories[: self._watched_always],
            self._directories[self._watched_always :],
        )
        share = -(-len(by_turns) // TURN_INTERVALS)
        start = (self._intervals * share) % len(by_turns) if by_turns else 0
        return any(_mtime_ns(path) != mtime for path, mtime in always + by_turns[start : start + share])

    def _due(self, rows_of, drawn, by_path, layout) -> frozenset[str] | None:
        """The files measured this interval (None: all of them): the drawn rows, those with events (their
        pages moved), those being written (`_always_due`), and a turn of the others."""
        if drawn is None:
            return None
        paths = rows_of.paths
        due = set(drawn)
        due.update(path for _probe, path in by_path)
        due.update(self._always_due(rows_of.entries))
        if layout is not self._kept_for:  # a new listing: its files never measured are due
            due.update(path for path in paths if path not in self._views)
        share = -(-len(paths) // TURN_INTERVALS)
        if paths:
            start = self._turn % len(paths)
            due.update(paths[start : start + share])
            due.update(paths[: max(0, start + share - len(paths))])
            self._turn = start + share
        return frozenset(due)

    def _moved(self, prefix: str, queue: SegmentQueue, positions: _QueuePositions) -> frozenset[str] | None:
        """The queue's segments whose positions may differ from the previous interval's: those between the
        old and the new end (and flushed offset); None (all of them) when a reason came or went."""
        before, self._last_positions[prefix] = self._last_positions.get(prefix), positions
        if before is positions:
            return frozenset()
        if before is None or before.unavailable != positions.unavailable:
            return None
        moved = set()
        for old, new in (
            (before.wrote_offset, positions.wrote_offset),
            (before.flushed_offset, positions.flushed_offset),
        ):
            if old == new:
                continue
            if old is None or new is None:
                return None
            low, high = min(old, new), max(old, new)
            moved.update(
                str(s.path)
                for s in queue.segments
                if s.file_from_offset <= high and low <= s.file_from_offset + s.size_bytes
            )
        return frozenset(moved)

    def _queue_positions_of(self, kind, prefix, queue, flushed, checkpoint_note, due) -> _QueuePositions:
        if kind == "commitlog":
            return self._commitlog_positions(queue, flushed, checkpoint_note)
        known = self._queue_positions.get(prefix)
        newest = queue.segments[-1]
        if due is not None and known is not None and str(newest.path) not in due:
            return known  # a ConsumeQueue's end is looked for when its newest file's turn comes
        positions = self._queue_positions[prefix] = self._consume_queue_positions(queue)
        return positions

    # --- one segment

    def _row(self, kind, name, queue, segment, path, positions, by_path, events, turn, moved, busy):
        """The row of one segment: as it was when neither due nor with events, unmoved, measured earlier and
        sharing the interval's inputs; else built (again) by _segment_row."""
        known = self._views.get(path)
        if (
            busy is not None
            and known is not None
            and path not in busy
            and moved is not None
            and path not in moved
            and known.shared == (self._locks_version, turn.running)
            and known.view.residency_time_unix_s is not None
        ):
            return known.view
        return self._segment_row(kind, name, queue, segment, positions, by_path, events, turn, moved)

    def _segment_row(
        self, kind, name, queue, segment, positions, by_path, events, turn, moved
    ) -> SegmentView:
        """The segment's row: built again when it is measured this interval or what it shows may have
        changed (its positions, locked bytes, events); otherwise the row of the interval it was measured in,
        which says when that was."""
        path = str(segment.path)
        known = self._views.get(path)
        unchanged = (
            known is not None
            and path not in turn.evented
            and moved is not None
            and path not in moved
            and known.shared == (self._locks_version, turn.running)
        )
        if unchanged and turn.due is not None and path not in turn.due:
            if known.view.residency_time_unix_s is None:  # the first interval after its measurement
                view = _measured_at(known.view, known.measured_unix_s)
                known = self._views[path] = _Measured(
                    view, known.measured_unix_s, known.residency, known.shared
                )
            return known.view
        shared = (self._locks_version, turn.running)
        if turn.due is None or path in turn.due or known is None:
            residency_unavailable: dict[str, str] = {}
            residency = self._residency(path, residency_unavailable, turn.strip_wanted(path))
            measured = (residency_unavailable, residency)
            if unchanged and measured == known.residency:  # measured again, the same: the same row
                view = (
                    known.view if known.view.residency_time_unix_s is None else _measured_at(known.view, None)
                )
                self._views[path] = _Measured(view, turn.now_unix_s, known.residency, shared)
                return view
            measured_unix_s, measured_time = turn.now_unix_s, None
        else:
            measured, measured_unix_s, measured_time = (
                known.residency,
                known.measured_unix_s,
                known.measured_unix_s,
            )
        view = self._segment(kind, name, queue, segment, positions, by_path, events, measured)
        if measured_time is not None:
            view = _measured_at(view, measured_time)
        self._views[path] = _Measured(view, measured_unix_s, measured, shared)
        return view

    def _segment(self, kind, name, queue, segment, positions, by_path, events, measured) -> SegmentView:
        path = str(segment.path)
        unavailable: dict[str, str] = dict(positions.unavailable)
        residency_unavailable, residency = measured
        unavailable.update(residency_unavailable)
        wrote = _position_in(segment, positions.wrote_offset)
        locked = self._locks.get(path)
        if locked is None:
            unavailable["locked_bytes"] = self._lock_note or "the file was not matched to any mapping"
        faults, major, ranges = _fault_events(by_path.get((PROBE_FAULTS, path)), PROBE_FAULTS in events)
        added, deleted, cache_ranges = _cache_events(
            by_path.get((PROBE_PAGECACHE, path)), PROBE_PAGECACHE in events
        )
        dirtied, written = _writeback_events(by_path.get((PROBE_WRITEBACK, path)), PROBE_WRITEBACK in events)
        hits, hit_gaps = hit_fields(
            events.get(PROBE_PAGECACHE),
            by_path.get((PROBE_PAGECACHE, path)),
            NO_EBPF_EVENTS.format(probe=PROBE_PAGECACHE),
        )
        unavailable.update(hit_gaps)
        for probe, field_names in (
            (PROBE_FAULTS, ("faults", "major_faults")),
            (PROBE_PAGECACHE, ("added_pages", "deleted_pages")),
            (PROBE_WRITEBACK, ("dirtied_pages", "written_pages")),
        ):
            if probe not in events:
                unavailable.update(dict.fromkeys(field_names, NO_EBPF_EVENTS.format(probe=probe)))
        return SegmentView(
            kind=kind,
            name=name,
            path=path,
            start_offset_bytes=segment.file_from_offset,
            size_bytes=segment.size_bytes,
            newest=segment is queue.segments[-1],
            **residency,
            locked_bytes=locked,
            wrote_position_bytes=wrote,
            committed_position_bytes=wrote,
            flushed_position_bytes=_position_in(segment, positions.flushed_offset),
            faults=faults,
            major_faults=major,
            added_pages=added,
            deleted_pages=deleted,
            dirtied_pages=dirtied,
            written_pages=written,
            page_ranges=_merge_ranges(ranges, cache_ranges),
            unavailable=unavailable,
            holds_write_position=segment is positions.wrote_in,
            holds_flushed_position=segment is positions.flushed_in,
            **hits,
        )

    def _residency(self, path: str, unavailable: dict[str, str], strip: bool = True) -> dict[str, Any]:
        try:
            totals = path_totals(path)
        except ResidencyUnavailable as error:
            unavailable["cached_pages"] = error.error.reason
            return dict.fromkeys(
                ("pages", "cached_pages", "dirty_pages", "writeback_pages", "residency_source", "chunks")
            )
        unavailable.update(totals.unmeasured)
        if totals.untrusted_reason:
            unavailable["cached_pages"] = totals.untrusted_reason
        return {
            "pages": totals.pages,
            "cached_pages": totals.cached_pages,
            "dirty_pages": totals.dirty_pages,
            "writeback_pages": totals.writeback_pages,
            "residency_source": totals.source,
            "chunks": self._chunks(path, totals, unavailable, strip),
        }

    def _chunks(self, path: str, totals, unavailable: dict[str, str], strip: bool = True) -> ChunkMap | None:
        cached, pages = totals.cached_pages, totals.pages
        if cached is None:
            return None
        if pages == 0:
            return ChunkMap.of(())
        quiet = not totals.dirty_pages and not totals.writeback_pages
        if quiet and (cached == 0 or cached >= pages):
            # Uniform: every chunk is what the whole file is, so the totals say it exactly.
            return _uniform_chunks(
                pages, self.strip_chunks, bool(cached), totals.dirty_pages, totals.writeback_pages
            )
        return self._mixed_chunks(path, totals, unavailable, strip)

    def _mixed_chunks(self, path: str, totals, unavailable: dict[str, str], strip: bool) -> ChunkMap | None:
        """A mixed segment's chunks, measured again only when its cachestat totals moved (or every
        CHUNK_REFRESH_INTERVALS): unchanged cached, dirty, writeback and eviction counts mean no page came
        or went, short of an exact swap of pages within one interval, which the next refresh corrects.
        A row not drawn (`strip` False) keeps its strip while the counts stay the same, and has none once
        they moved (measuring 32 runs of each of 1,000 files every second is what a dashboard cannot pay)."""
        signature = (
            totals.size_bytes,
            totals.cached_pages,
            totals.dirty_pages,
            totals.writeback_pages,
            totals.evicted_pages,
            totals.recently_evicted_pages,
        )
        known = self._chunk_maps.get(path)
        same = known is not None and known[0] == signature
        if same and (not strip or self._intervals - known[1] < CHUNK_REFRESH_INTERVALS):
            return known[2]
        if not strip:
            unavailable["chunks"] = STRIP_NOT_DRAWN
            return None
        chunks = _measured_chunks(path, self.strip_chunks, unavailable)
        self._chunk_maps[path] = (signature, self._intervals, chunks)
        return chunks

    # --- where each queue's data ends

    def _commitlog_positions(
        self, queue: SegmentQueue, flushed: int | None, checkpoint_note: str | None
    ) -> _QueuePositions:
        unavailable = {}
        if flushed is None:
            unavailable["flushed_position_bytes"] = checkpoint_note or FLUSHED_UNKNOWN
        wrote, reason = self._commitlog_end(queue)
        if wrote is None:
            unavailable["wrote_position_bytes"] = unavailable["committed_position_bytes"] = reason
        return _QueuePositions.of(queue, wrote, flushed, unavailable)

    def _commitlog_end(self, queue: SegmentQueue) -> tuple[int | None, str]:
        """The end of the CommitLog's last record, searched from the last record found before; the first
        time (or after the log changed under the search), from the newest record a ConsumeQueue points at
        (what the broker dispatched): the walk reads only the tail not dispatched yet, not the whole last
        segment (0.7 s for the headers of a 1 GiB segment)."""
        if self._log_tail is None:
            known = self._dispatched_records()
        else:  # a log without records (all zeros, or none valid) ends at once: no hints to read again
            known = (self._log_tail.last_record,) if self._log_tail.last_record else ()
        try:
            tail = find_log_tail(queue, known, headers_only=True, window_bytes=LOG_WALK_WINDOW_BYTES)
        except (StoreError, OSError) as error:  # a segment deleted or cut while we read: next interval
            self._log_tail = None
            return None, f"the CommitLog changed while its end was searched: {error}"
        self._log_tail = tail
        end = tail.end.physical_offset
        if tail.end.reason is LogEndReason.BLANK:  # the last segment is full: its blank fills it to the end
            holder = _segment_at(queue, end)
            end = holder.file_from_offset + holder.size_bytes if holder else end
        return end, ""

    def _dispatched_records(self) -> tuple[tuple[int, int], ...]:
        """(physical offset, size) of the CommitLog record each ConsumeQueue's last entry points at, where
        one can be read: find_log_tail resumes after the furthest whole one (CRC checked). The queues' ends
        found here are the ones their rows use (`_end_of_data` keeps them)."""
        records = []
        for cq in self._layout.consume_queues if self._layout else ():
            if not cq.queue.segments:
                continue
            newest = str(cq.queue.segments[-1].path)
            end, _reason = self._end_of_data(newest)
            if not end:
                continue
            last = -(-end // CQ_STORE_UNIT_SIZE) * CQ_STORE_UNIT_SIZE - CQ_STORE_UNIT_SIZE
            try:
                with PreadFile(Path(newest)) as file:
                    entry = decode_entry(file.read(last, CQ_STORE_UNIT_SIZE), path=newest)
            except (StoreError, OSError):  # cut or deleted meanwhile: that queue gives no hint
                continue
            if entry.names_a_record:
                records.append((entry.physical_offset, entry.size_bytes))
        # the furthest few: each one tried that is no whole record (a queue torn or cut) costs a read
        return tuple(sorted(set(records), reverse=True)[:DISPATCHED_HINTS])

    def _consume_queue_positions(self, queue: SegmentQueue) -> _QueuePositions:
        """A ConsumeQueue is written in order and gets no file before it needs one, so its data ends in its
        newest file: at the end of its last non-zero entry (a zero tags code ends an entry with zeros)."""
        unavailable = {"flushed_position_bytes": "the checkpoint records flushes of the CommitLog only"}
        newest = queue.segments[-1]
        end, reason = self._end_of_data(str(newest.path))
        if end is None:
            unavailable["wrote_position_bytes"] = unavailable["committed_position_bytes"] = reason
            return _QueuePositions.of(queue, None, None, unavailable)
        whole_entries = -(-end // CQ_STORE_UNIT_SIZE) * CQ_STORE_UNIT_SIZE
        wrote = newest.file_from_offset + min(whole_entries, newest.size_bytes)
        return _QueuePositions.of(queue, wrote, None, unavailable)

    def _end_of_data(self, path: str) -> tuple[int | None, str]:
        """One past the last non-zero byte of a file that only grows (a ConsumeQueue's newest file).

        Searched forward (`_grown_end`), from the previous end once one is known (the data only grows), a
        few page reads: the first look is from the file's start, not back from its end, which read the zeros
        of 500 preallocated ConsumeQueue files (4.7 s). Every 20-byte entry has a non-zero size, so a
        page of zeros inside the data cannot occur, short of a torn write, where RocketMQ's recovery stops
        too.
        """
        try:
            status = os.stat(path)
            identity = (status.st_ino, status.st_size, status.st_mtime_ns, status.st_dev)
            known = self._positions.get(path)
            if known is not None and known.identity == identity:
                return known.end_bytes, ""
            with PreadFile(Path(path)) as file:
                same_file = known is not None and known.identity[0::3] == identity[0::3]
                end = _grown_end(file, known.end_bytes if same_file else 0)
        except OSError as error:
            return None, f"{path}: {error.strerror or error}"
        self._positions[path] = _Position(identity, end)
        return end, ""

    # --- store-wide

    def _refresh_locks(self, paths: list[str], drawn: frozenset[str] | None, layout: object) -> None:
        """Locked bytes of every file (every process's smaps), every LOCK_REFRESH_INTERVALS, or every
        TURN_INTERVALS for a dashboard (30 ms each time on a busy machine; a broker locks its segments when it
        maps them), and when a file is new (only a new listing of the layout can have one). `layout`: the
        listing `paths` come from (a StoreLayout, or a Kafka reader's listing): only its identity is used."""
        every = LOCK_REFRESH_INTERVALS if drawn is None else TURN_INTERVALS
        known = layout is self._kept_for or all(path in self._locks for path in paths)
        if self._intervals % every and known:
            return
        locks = locked_bytes_by_file(paths)
        found = {path: locks.files[path].locked_bytes if path in locks.files else None for path in paths}
        note = locks.notes.get("locked_bytes")
        if (found, note) != (self._locks, self._lock_note):
            self._locks, self._lock_note = found, note
            self._locks_version += 1

    def _checkpoint(self, layout: StoreLayout) -> tuple[int | None, int | None, str | None]:
        if layout.checkpoint is None:
            return None, None, f"{layout.root / 'checkpoint'}: missing"
        try:
            values = read_checkpoint(layout.checkpoint)
        except (StoreError, OSError) as error:
            return None, None, f"checkpoint unreadable: {error}"
        flushed = values.master_flushed_offset or None  # 0 is what a broker that never set it wrote
        return flushed, values.physic_msg_timestamp or None, None if flushed else FLUSHED_UNKNOWN

    def detail(self, path: str, name: str, page_size_bytes: int) -> SegmentDetail:
        """The drill-down map of one segment: DETAIL_CELLS runs, each with its own cachestat call."""
        unavailable: dict[str, str] = {}
        try:
            residency = file_residency(path, chunks=DETAIL_CELLS)
        except ResidencyUnavailable as error:
            return SegmentDetail(path, name, page_size_bytes, None, None, {"cells": error.error.reason})
        unavailable.update(residency.unmeasured)
        return SegmentDetail(
            path, name, page_size_bytes, _chunk_states(residency.chunks), residency.source, unavailable
        )


@dataclass(frozen=True)
class _Rows:
    """The rows of one listing of the layout: (kind, name prefix, queue, [(segment, path, row name)]) per
    queue with segments, every row's path in order, where each queue's rows start in that order, and each
    path's (queue number, row number)."""

    layout: StoreLayout
    entries: list[Entry]
    paths: list[str]
    starts: list[int]
    places: dict[str, tuple[int, int]]

    @classmethod
    def of(cls, layout: StoreLayout, entries: list[Entry]) -> _Rows:
        paths, starts, places = [], [], {}
        for number, (*_rest, rows) in enumerate(entries):
            starts.append(len(paths))
            for offset, (_segment, path, _name) in enumerate(rows):
                paths.append(path)
                places[path] = (number, offset)
        return cls(layout, entries, paths, starts, places)


@dataclass(frozen=True)
class _Turn:
    """What one interval measures: `due` the files (None: all), `drawn` those whose rows are on screen;
    and what every row of the interval shares."""

    due: frozenset[str] | None
    drawn: frozenset[str] | None
    now_unix_s: float
    evented: frozenset[str]  # the files with events this interval
    running: tuple[bool, ...]  # which probes gave events

    def strip_wanted(self, path: str) -> bool:
        return self.drawn is None or path in self.drawn


@dataclass(frozen=True)
class _Measured:
    """A segment's row as last built, what it was built from, and its residency's measurement."""

    view: SegmentView
    measured_unix_s: float
    residency: tuple[dict[str, str], dict[str, Any]]
    shared: tuple  # what rows of one interval share: the locks' version, which probes ran


def _measured_at(view: SegmentView, time_unix_s: float | None) -> SegmentView:
    """The row with its residency's measurement time (None: this interval's). A shallow copy: replace()
    runs the whole constructor, and a big store's dashboard marks a few hundred rows each interval."""
    marked = copy.copy(view)
    object.__setattr__(marked, "residency_time_unix_s", time_unix_s)  # a copy no one else holds yet
    return marked


def _mtime_ns(path: Path) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def _grown_end(file: PreadFile, known_end: int) -> int:
    """The end of the non-zero data, searched forward from `known_end` (where it was before).

    Pages after the old end are probed at doubling distances until one is all zeros, then the boundary is
    found by bisection: O(log n) page reads instead of reading the data the writer appended. A page of
    zeros inside a record could stop the search early; message records start every few hundred bytes with
    a non-zero size, so only a body holding 4 KiB of zeros could do that. If the file shrank (a truncated or
    recovered segment), the exact backward search is used instead.
    """
    size = file.size()
    if known_end > size or (known_end and _page_is_zero(file, known_end - 1, 1) is not False):
        return file.end_of_nonzero_data()  # shrunk, or rewritten under us: start over
    low, step = known_end, PAGE_BYTES
    while low + step < size and not _page_is_zero(file, low + step):
        low, step = low + step, step * 2
    high = min(low + step, size)  # data ends in [low, high]
    while high - low > PAGE_BYTES:
        middle = (low + high) // 2
        if _page_is_zero(file, middle):
            high = middle
        else:
            low = middle
    tail = file.read(low, high - low).rstrip(b"\0")
    return low + len(tail) if tail else low


def _page_is_zero(file: PreadFile, offset: int, length: int = 0) -> bool | None:
    """Whether the page (or `length` bytes) at offset holds only zeros; None if nothing is there to read."""
    data = file.read(offset, length or PAGE_BYTES)
    return None if not data else not data.strip(b"\0")


@functools.lru_cache(maxsize=256)
def _uniform_chunks(
    pages: int, strip_chunks: int, cached: bool, dirty: int | None, writeback: int | None
) -> ChunkMap:
    """The chunk map of a file all cached (or all absent) and clean: the same for every such file of a
    size, so it is made once (1,000 files of a size each had their own, 32 chunks each interval)."""
    return ChunkMap.of(
        tuple(
            ChunkState(a, b, b - a if cached else 0, _zero_if(dirty), _zero_if(writeback))
            for a, b in chunk_bounds(0, pages, strip_chunks)
        )
    )


def _zero_if(count: int | None) -> int | None:
    return None if count is None else 0


def _chunk_states(chunks) -> ChunkMap | None:
    if chunks is None:
        return None
    return ChunkMap.of(
        tuple(
            ChunkState(
                chunk.first_page, chunk.end_page, chunk.cached_pages, chunk.dirty_pages, chunk.writeback_pages
            )
            for chunk in chunks
        )
    )


def _measured_chunks(path: str, chunks: int, unavailable: dict[str, str]) -> ChunkMap | None:
    try:
        residency = file_residency(path, chunks=chunks)
    except ResidencyUnavailable as error:
        unavailable["chunks"] = error.error.reason
        return None
    if residency.chunks is None:
        unavailable["chunks"] = residency.unmeasured.get("chunks", "no chunk map")
    return _chunk_states(residency.chunks)


def _position_in(segment: SegmentFile, offset: int | None) -> int | None:
    return None if offset is None else position_in_segment(segment, offset)


def _segment_at(queue: SegmentQueue, offset: int) -> SegmentFile | None:
    """The segment holding `offset`: bisected by start (a queue's segments are in offset order; 1,000 of
    them were walked several times an interval)."""
    place = bisect.bisect_right(queue.segments, offset, key=_file_from_offset) - 1
    segment = queue.segments[place] if place >= 0 else None
    if segment is not None and offset < segment.file_from_offset + segment.size_bytes:
        return segment
    return None


def _file_from_offset(segment: SegmentFile) -> int:
    return segment.file_from_offset


def _holder(queue: SegmentQueue, offset: int | None) -> SegmentFile | None:
    """The segment `offset` lies in; an offset at the very end of the queue's last file lies in that file
    (the data filled it, and the file it goes on in has not been created yet)."""
    if offset is None:
        return None
    holder = _segment_at(queue, offset)
    if holder is None and queue.segments:
        last = queue.segments[-1]
        holder = last if offset == last.file_from_offset + last.size_bytes else None
    return holder


# --- eBPF events per segment


def _events_by_path(events: Mapping[str, Any]) -> dict[tuple[str, str], Any]:
    rows = {}
    for probe in (PROBE_FAULTS, PROBE_PAGECACHE, PROBE_WRITEBACK):
        snapshot = events.get(probe)
        for file in getattr(snapshot, "files", ()) or ():
            if file.path:
                rows[(probe, file.path)] = file
    return rows


def _fault_events(file, running: bool) -> tuple[int | None, int | None, tuple]:
    if not running:
        return None, None, ()
    if file is None:
        return 0, 0, ()  # the probe ran and saw no fault on this segment
    return file.faults, file.major_faults, file.page_ranges


def _cache_events(file, running: bool) -> tuple[int | None, int | None, tuple]:
    if not running:
        return None, None, ()
    if file is None:
        return 0, 0, ()
    return file.added_pages, file.deleted_pages, file.page_ranges


def _writeback_events(file, running: bool) -> tuple[int | None, int | None]:
    if not running:
        return None, None
    if file is None:
        return 0, 0
    return file.dirtied_pages, file.written_pages


def _merge_ranges(fault_ranges, cache_ranges) -> tuple[PageRangeEvents, ...]:
    """Fault and page-cache ranges of one segment by first page (the probes bucket pages alike: 1/64)."""
    merged: dict[tuple[int, int], dict[str, int | None]] = {}
    for page_range in fault_ranges:
        entry = merged.setdefault((page_range.first_page, page_range.last_page), {})
        entry.update(faults=page_range.faults, major_faults=page_range.major_faults)
    for page_range in cache_ranges:
        entry = merged.setdefault((page_range.first_page, page_range.last_page), {})
        entry.update(added_pages=page_range.added_pages, deleted_pages=page_range.deleted_pages)
    return tuple(
        PageRangeEvents(
            first,
            last,
            counts.get("faults"),
            counts.get("major_faults"),
            counts.get("added_pages"),
            counts.get("deleted_pages"),
        )
        for (first, last), counts in sorted(merged.items())
    )
