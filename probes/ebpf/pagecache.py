"""The pagecache probe: pages entering the page cache (misses) and leaving it (evictions), and readahead,
per process, per file (or store segment) and, with --store, per page range.

Kernel side: programs/pagecache.bpf.c (its header explains each tracepoint). This module turns the program's
maps into one `PagecacheSnapshot` per interval:

- mqi_totals (cumulative) -> the interval's totals, as differences from the previous read;
- mqi_processes, mqi_files (drained) -> rows per process and per file;
- mqi_folios (drained, --store only) -> page ranges of each segment, each folio's pages spread over them.
The drained maps are kept in two halves (programs/halves.h, scope.HalvedMaps): the handlers write one while
the other is emptied, so the rows lose no event at an interval's end (a new segment's warm-up across it did).

With --store the store's files are followed from their creation (programs/store_files.h, scope.StoreFollower):
a segment the CommitLog rolls into mid-interval has its warm-up counted in that interval. Files are counted
per generation, so a segment retention deleted and the next one, made with its freed inode number within the
same interval, are two rows; a file the kernel counted in a store directory that is not one of the store's
files (a temporary file) is left out, rows and totals of the files in view alike.

What the counts mean (all in pages of PAGE_SIZE_BYTES, or in folios: one folio is 2^order pages):
  added_pages           pages the traced processes brought into the page cache: cache misses of reads and
                        faults (through readahead, which also brings in the pages after them) and pages
                        created by writes. added_folios: the insertions (large folios hold many pages).
  deleted_pages         pages removed from the page cache, of the files in view, by any process: reclaim
                        (kswapd, or an allocating process in direct reclaim), fadvise DONTNEED, truncation.
                        Removals are not filtered by --pid: the process that removes a page is rarely the
                        one that read it. With --pid the files in view are those the traced processes added
                        pages to or read during the session; with --store the store's files; else every file.
  deleted_pages_all_files  the same, for every file.
  sync_readahead_requests   reads that missed the cache and started readahead.
  async_readahead_requests  reads that reached the readahead mark of the last window, so the next window
                        is read ahead of them.
  readahead_windows / readahead_window_pages  windows readahead decided to read and their pages (the
                        requests' windows, mmap read-around, fadvise/madvise WILLNEED). An upper bound of
                        what it read: pages past the end of the file or already cached are in the window
                        but not read. None where the kernel lacks the readahead tracepoints (Linux < 6.18).
  hit_pages, miss_pages, hit_ratio_percent  the read path's page-cache lookups (read, pread, readv, sendfile,
                        splice: filemap:mm_filemap_get_pages) by the traced processes of the files in view: a
                        miss is a page the read asked for and had to bring in itself, a hit any other page it
                        looked up (a page readahead asked for earlier is a hit). Reads through mmap are not
                        counted (a load from a mapped page makes no event). None where the kernel lacks the
                        tracepoint (NO_LOOKUPS); hit_ratio_percent None when nothing was looked up.
  lost_records          records the maps could not hold this interval: the per-process and per-file rows
                        miss them (the totals do not).
  late_store_files      the store's new files the kernel did not see created (another filesystem, moved into
                        the store, its map full), counted from the end of the interval they appeared in, and
                        late_store_files_reason: why.
Page ranges (--store): each segment's pages are bucketed by 1/64 of its size.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from probes.ebpf import registry
from probes.ebpf.inodes import FileId, FileNames, default_chunk_pages, page_range_bounds
from probes.ebpf.loader import LoadedProgram, Parameters, program_spec
from probes.ebpf.scope import (
    CREATION_FUNCTIONS,
    FOLLOWING_FUNCTIONS,
    CumulativeTotals,
    HalvedMaps,
    ScopedProbe,
    ScopeLimits,
    SnapshotHeader,
    handler_defines,
    scalar,
)
from probes.ebpf.tally import Tally, add_counts, merge_rows, merged_late_store_files, summed_snapshot

_FUNCTIONS = {
    "filemap:mm_filemap_add_to_page_cache": "mqi_pc_added",
    "filemap:mm_filemap_delete_from_page_cache": "mqi_pc_deleted",
    "readahead:page_cache_sync_ra": "mqi_ra_sync",
    "readahead:page_cache_async_ra": "mqi_ra_async",
    "readahead:page_cache_ra_order": "mqi_ra_order",
    "readahead:page_cache_ra_unbounded": "mqi_ra_unbound",
    "filemap:mm_filemap_get_pages": "mqi_pc_lookup",
    **CREATION_FUNCTIONS,
    **FOLLOWING_FUNCTIONS,
}
# Optional tracepoints whose handler is compiled only where the kernel has them: bcc cannot build the
# argument struct of a tracepoint that does not exist.
_HANDLER_DEFINES = {
    "readahead:page_cache_sync_ra": "HAVE_RA_SYNC",
    "readahead:page_cache_async_ra": "HAVE_RA_ASYNC",
    "readahead:page_cache_ra_order": "HAVE_RA_ORDER",
    "readahead:page_cache_ra_unbounded": "HAVE_RA_UNBOUNDED",
    "filemap:mm_filemap_get_pages": "HAVE_GET_PAGES",
}
LOOKUP_TRACEPOINT = "filemap:mm_filemap_get_pages"
READAHEAD_TRACEPOINTS = frozenset(_HANDLER_DEFINES) - {LOOKUP_TRACEPOINT}
NO_LOOKUPS = (
    "not counted: this kernel has no filemap:mm_filemap_get_pages tracepoint (the read path's page-cache "
    "lookups); fix: a newer kernel"
)


# --- the program -------------------------------------------------------------------------------------------

PROGRAM = program_spec(registry.PAGECACHE, _FUNCTIONS)


@dataclass(frozen=True)
class MapLimits(ScopeLimits):
    """Entries each map may hold. The drained maps hold one interval's processes, files and folios."""

    folios: int = 131072


# --- snapshots ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CachePageRange:
    """Pages [first_page, last_page] of one file (a page number is file offset / page size)."""

    first_page: int
    last_page: int
    added_pages: int
    deleted_pages: int


@dataclass(frozen=True)
class FileCacheActivity:
    """One file: `name` is its store segment ("commitlog/000…"), its path, or "inode N on M:m"."""

    name: str
    path: str | None
    segment_kind: str | None
    device: str
    inode: int
    size_pages: int | None
    added_pages: int
    added_folios: int
    deleted_pages: int
    deleted_folios: int
    sync_readahead_requests: int | None
    async_readahead_requests: int | None
    readahead_windows: int | None
    readahead_window_pages: int | None
    chunk_pages: int | None  # pages per page range; None without --store (no page ranges)
    page_ranges: tuple[CachePageRange, ...]
    # The read path's page-cache lookups (hit_ratio_fields); None: not counted (NO_LOOKUPS).
    hit_pages: int | None = None
    miss_pages: int | None = None
    hit_ratio_percent: float | None = None

    @property
    def segment_name(self) -> str | None:
        """The store's name of the file: two segments that had the same inode number one after the other
        (retention deleted one, a roll made the other) stay two rows."""
        return self.name if self.segment_kind else None


@dataclass(frozen=True)
class ProcessCacheActivity:
    """One process: the pages it added (a traced process) and removed from files in view (any process)."""

    pid: int
    comm: str | None
    added_pages: int
    added_folios: int
    deleted_pages: int
    deleted_folios: int
    sync_readahead_requests: int | None
    async_readahead_requests: int | None
    readahead_window_pages: int | None
    hit_pages: int | None = None  # of the files in view, as FileCacheActivity's
    miss_pages: int | None = None
    hit_ratio_percent: float | None = None


@dataclass(frozen=True)
class PagecacheSnapshot(SnapshotHeader):
    """Page-cache activity over one interval (kind "interval") or the whole session (kind "summary")."""

    added_pages: int
    added_folios: int
    deleted_pages: int
    deleted_folios: int
    deleted_pages_all_files: int
    sync_readahead_requests: int | None  # None: this kernel has no readahead tracepoints
    async_readahead_requests: int | None
    readahead_windows: int | None
    readahead_window_pages: int | None
    lost_records: int
    processes: tuple[ProcessCacheActivity, ...]
    files: tuple[FileCacheActivity, ...]
    exited_pids: tuple[int, ...] = ()
    followed_pids: tuple[int, ...] = ()  # processes started by traced ones, followed (scope.h)
    late_store_files: tuple[str, ...] = ()  # the store's new files counted only from the interval's end
    late_store_files_reason: str | None = None
    hit_pages: int | None = None  # of the files in view, as FileCacheActivity's
    miss_pages: int | None = None
    hit_ratio_percent: float | None = None


def hit_ratio_fields(lookup_pages: int | None, missed_pages: int | None) -> dict[str, Any]:
    """hit_pages, miss_pages and hit_ratio_percent of `lookup_pages` pages the read path looked up, of which
    `missed_pages` it had to read in itself; all None when lookups were not counted, the ratio None when there
    was no lookup. Hits are lookups less misses (never below 0: a read whose lookup fell in the previous
    interval and its misses in this one)."""
    if lookup_pages is None or missed_pages is None:
        return dict.fromkeys(("hit_pages", "miss_pages", "hit_ratio_percent"))
    hits = max(lookup_pages - missed_pages, 0)
    return {"hit_pages": hits, "miss_pages": missed_pages, **_ratio(hits, missed_pages)}


def _ratio(hits: int | None, misses: int | None) -> dict[str, float | None]:
    looked_up = (hits or 0) + (misses or 0)
    return {"hit_ratio_percent": 100.0 * (hits or 0) / looked_up if looked_up else None}


def with_hit_ratio(row: Any) -> Any:
    """`row` (a snapshot or one of its rows) with hit_ratio_percent recomputed from its hits and misses, as
    after summing intervals."""
    if row.hit_pages is None:
        return row
    return dataclasses.replace(row, **_ratio(row.hit_pages, row.miss_pages))


# --- counting ----------------------------------------------------------------------------------------------

_TOTAL_FIELDS = (
    "added_folios",
    "added_pages",
    "deleted_folios",
    "deleted_pages",
    "deleted_pages_all",
    "sync_readahead",
    "async_readahead",
    "readahead_windows",
    "readahead_pages",
    "lost_records",
    "lookup_pages",
    "lookup_missed_pages",
)


_LOOKUP_FIELDS = ("lookup_pages", "lookup_missed_pages")
_FileKey = tuple[FileId, int]  # a file and the generation the kernel counted it under (store_files.h)


class PagecacheProbe(ScopedProbe):
    """`mqinspect trace pagecache`: see the module docstring. Construct, then run in a TraceSession."""

    name = registry.PAGECACHE.name
    program = PROGRAM
    map_limits = MapLimits
    filters_files = True

    def __init__(self, pids: Sequence[int] = (), **scope: Any):
        super().__init__(pids, **scope)
        self._names = FileNames(self._store_files, self._proc_root)
        self._totals = CumulativeTotals("mqi_totals", _TOTAL_FIELDS)
        self._drained = HalvedMaps(("mqi_processes", "mqi_files", "mqi_folios"))
        self._readahead_traced = True
        self._lookups_traced = True

    # --- what the session needs before loading

    def parameters(self) -> Parameters:
        return self.scope_parameters(
            RECORD_FOLIOS=int(bool(self.store)),  # page ranges for the store's segments only
            MAX_FOLIOS=self.limits.folios,
            **handler_defines(_HANDLER_DEFINES),
        )

    def subject(self) -> str:
        where = self.per_segment("per file")
        if not self.pids:
            return f"page-cache additions, removals and readahead of every process, {where}"
        return (
            f"page-cache additions and readahead of {self.processes.subject()} and removals (by any "
            f"process) of the files {'it' if len(self.pids) == 1 else 'they'} added pages to or read, {where}"
        )

    # --- the session's calls

    def start(self, program: LoadedProgram) -> None:
        self._readahead_traced = any(tp in program.attached for tp in READAHEAD_TRACEPOINTS)
        self._lookups_traced = LOOKUP_TRACEPOINT in program.attached
        self.processes.remember_comms()

    def collect(self, program: LoadedProgram, interval_s: float) -> PagecacheSnapshot:
        # End the interval of the rows and read the totals within a moment, so that both cover the same
        # interval; then empty the rows' half, once nothing writes it.
        self._drained.switch(program)
        totals = self._totals.since_last_read(program)
        drained = self._drained.drain(program)
        processes, files, folios = drained["mqi_processes"], drained["mqi_files"], drained["mqi_folios"]
        # Only now list the store: every file the maps counted exists by then, so it can be named.
        store_now, _new = self.follow_store(program)
        self._names.learn(store_now)
        labels = self._labels(files)
        outside = _counts_outside(files, labels)
        exited = self.processes.exited(program)

        self._names.new_interval()
        readahead = self._readahead_traced
        return PagecacheSnapshot(
            **self.interval_header(interval_s, program),
            added_pages=totals["added_pages"],
            added_folios=totals["added_folios"],
            deleted_pages=totals["deleted_pages"] - outside["deleted_pages"],
            deleted_folios=totals["deleted_folios"] - outside["deleted_folios"],
            deleted_pages_all_files=totals["deleted_pages_all"],
            sync_readahead_requests=totals["sync_readahead"] if readahead else None,
            async_readahead_requests=totals["async_readahead"] if readahead else None,
            readahead_windows=totals["readahead_windows"] if readahead else None,
            readahead_window_pages=totals["readahead_pages"] if readahead else None,
            lost_records=totals["lost_records"],
            processes=self._process_rows(processes),
            files=self._file_rows(files, labels, self._ranges_per_file(folios, labels)),
            exited_pids=exited,
            **self.late_store_files(),
            **self._hits({name: totals[name] - outside[name] for name in _LOOKUP_FIELDS}),
        )

    def combine(self, summary: PagecacheSnapshot | None, snapshot: PagecacheSnapshot) -> PagecacheSnapshot:
        return combine_snapshots(summary, snapshot)

    def _hits(self, counts: Any) -> dict[str, Any]:
        """The hit-ratio fields of a row or the totals (a map value or a dict of the totals' fields)."""
        if not self._lookups_traced:
            return hit_ratio_fields(None, None)
        if isinstance(counts, Mapping):
            return hit_ratio_fields(counts["lookup_pages"], counts["lookup_missed_pages"])
        return hit_ratio_fields(counts.lookup_pages, counts.lookup_missed_pages)

    # --- rows

    def _process_rows(self, records: Iterable[tuple[Any, Any]]) -> tuple[ProcessCacheActivity, ...]:
        readahead = self._readahead_traced
        rows = [
            ProcessCacheActivity(
                pid=scalar(key),
                comm=self.processes.comm(scalar(key), process.comm),
                added_pages=process.counts.added_pages,
                added_folios=process.counts.added_folios,
                deleted_pages=process.counts.deleted_pages,
                deleted_folios=process.counts.deleted_folios,
                sync_readahead_requests=process.counts.sync_readahead if readahead else None,
                async_readahead_requests=process.counts.async_readahead if readahead else None,
                readahead_window_pages=process.counts.readahead_pages if readahead else None,
                **self._hits(process.counts),
            )
            for key, process in records
        ]
        return tuple(sorted(rows, key=_process_order))

    def _labels(self, records: Sequence[tuple[Any, Any]]) -> dict[_FileKey, Any]:
        """Each counted file's name. With --store, the store's name of the file as of the generation the
        kernel counted it under, or None: created in a store directory but not a segment of the store (so
        not shown, and taken out of the totals of the files in view)."""
        labels: dict[_FileKey, Any] = {}
        for key, counts in records:
            file = FileId.from_kernel(key.dev, key.ino)
            if self.store:
                labels[(file, key.generation)] = self.store_label(file, key.generation)
            else:
                labels[(file, key.generation)] = self._names.label(file, counts.last_tgid)
        return labels

    def _file_rows(
        self,
        records: Iterable[tuple[Any, Any]],
        labels: Mapping[_FileKey, Any],
        ranges: Mapping[_FileKey, Mapping[int, Tally]],
    ) -> tuple[FileCacheActivity, ...]:
        readahead = self._readahead_traced
        rows = []
        for key, counts in records:
            file = FileId.from_kernel(key.dev, key.ino)
            label = labels[(file, key.generation)]
            if label is None:
                continue
            chunk = default_chunk_pages(label) if self.store else None
            page_ranges = ranges.get((file, key.generation), {})
            rows.append(
                FileCacheActivity(
                    name=label.name,
                    path=label.path,
                    segment_kind=label.segment_kind,
                    device=file.device,
                    inode=file.inode,
                    size_pages=label.size_pages,
                    added_pages=counts.added_pages,
                    added_folios=counts.added_folios,
                    deleted_pages=counts.deleted_pages,
                    deleted_folios=counts.deleted_folios,
                    sync_readahead_requests=counts.sync_readahead if readahead else None,
                    async_readahead_requests=counts.async_readahead if readahead else None,
                    readahead_windows=counts.readahead_windows if readahead else None,
                    readahead_window_pages=counts.readahead_pages if readahead else None,
                    chunk_pages=chunk,
                    page_ranges=_page_ranges(page_ranges, chunk, label.size_pages) if chunk else (),
                    **self._hits(counts),
                )
            )
        return tuple(sorted(rows, key=_file_order))

    # --- page ranges (--store)

    @staticmethod
    def _ranges_per_file(
        folios: Iterable[tuple[Any, Any]], labels: Mapping[_FileKey, Any]
    ) -> dict[_FileKey, dict[int, Tally]]:
        """Each recorded folio's pages, spread over the page ranges of its file it overlaps."""
        ranges: dict[_FileKey, dict[int, Tally]] = defaultdict(lambda: defaultdict(Tally))
        for key, counts in folios:
            file = (FileId.from_kernel(key.dev, key.ino), key.generation)
            label = labels.get(file)
            if label is None:  # not the store's (or its counts did not fit mqi_files: lost_records)
                continue
            chunk = default_chunk_pages(label)
            first, end = key.index, key.index + (1 << key.order)
            for bucket in range(first // chunk, (end - 1) // chunk + 1):
                overlap = min(end, (bucket + 1) * chunk) - max(first, bucket * chunk)
                tally = ranges[file][bucket]
                tally["added_pages"] += overlap * counts.added
                tally["deleted_pages"] += overlap * counts.deleted
        return ranges


def _counts_outside(records: Iterable[tuple[Any, Any]], labels: Mapping[_FileKey, Any]) -> Tally:
    """The removals and lookups the kernel counted for files in view that turn out not to be the store's:
    taken out of the totals of the files in view."""
    outside = Tally()
    for key, counts in records:
        if labels[(FileId.from_kernel(key.dev, key.ino), key.generation)] is None:
            outside.add_fields(counts, ("deleted_pages", "deleted_folios", *_LOOKUP_FIELDS))
    return outside


def _pages_moved(row: ProcessCacheActivity | FileCacheActivity) -> int:
    """Pages added, removed and found in the cache (a miss is an added page already): busiest rows first."""
    return row.added_pages + row.deleted_pages + (row.hit_pages or 0)


def _process_order(row: ProcessCacheActivity) -> tuple[int, int]:
    return -_pages_moved(row), row.pid


def _file_order(row: FileCacheActivity) -> tuple[int, str]:
    return -_pages_moved(row), row.name


def _page_ranges(
    buckets: Mapping[int, Tally], chunk: int, size_pages: int | None
) -> tuple[CachePageRange, ...]:
    ranges = []
    for bucket, tally in sorted(buckets.items()):
        first, last = page_range_bounds(bucket, chunk, size_pages)
        ranges.append(CachePageRange(first, last, tally["added_pages"], tally["deleted_pages"]))
    return tuple(ranges)


# --- the session summary -----------------------------------------------------------------------------------

_SUMMED = (
    "interval_s",
    "added_pages",
    "added_folios",
    "deleted_pages",
    "deleted_folios",
    "deleted_pages_all_files",
    "lost_records",
)
_SUMMED_OPTIONAL = (
    "sync_readahead_requests",
    "async_readahead_requests",
    "readahead_windows",
    "readahead_window_pages",
    "hit_pages",
    "miss_pages",
)


def combine_snapshots(summary: PagecacheSnapshot | None, snapshot: PagecacheSnapshot) -> PagecacheSnapshot:
    """The session so far: every count summed, processes merged by pid, files by inode, ranges by page."""
    if summary is None:
        return dataclasses.replace(snapshot, kind="summary")
    combined = summed_snapshot(
        summary,
        snapshot,
        _SUMMED,
        _SUMMED_OPTIONAL,
        processes=tuple(
            sorted(
                map(with_hit_ratio, merge_rows(summary.processes, snapshot.processes, ("pid",))),
                key=_process_order,
            )
        ),
        files=tuple(sorted(_merge_files(summary.files, snapshot.files), key=_file_order)),
        **merged_late_store_files(summary, snapshot),
    )
    return with_hit_ratio(combined)


def _merge_files(earlier: Sequence[FileCacheActivity], later: Sequence[FileCacheActivity]) -> list:
    return merge_rows(earlier, later, ("device", "inode", "segment_name"), _merge_file)


def _merge_file(a: FileCacheActivity, b: FileCacheActivity) -> FileCacheActivity:
    combined = add_counts(a, b, ("device", "inode", "size_pages", "chunk_pages"))
    ranges = merge_rows(a.page_ranges, b.page_ranges, ("first_page", "last_page"))
    combined = dataclasses.replace(combined, page_ranges=tuple(sorted(ranges, key=lambda r: r.first_page)))
    return with_hit_ratio(combined)
