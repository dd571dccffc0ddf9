"""The pagecache probe: pages entering the page cache (misses) and leaving it (evictions), and readahead,
per process, per file (or store segment) and, with --store, per page range.

Kernel side: programs/pagecache.bpf.c (its header explains each tracepoint). This module turns the program's
maps into one `PagecacheSnapshot` per interval:

- mqi_totals (cumulative) -> the interval's totals, as differences from the previous read;
- mqi_processes, mqi_files (drained) -> rows per process and per file;
- mqi_folios (drained, --store only) -> page ranges of each segment, each folio's pages spread over them.

What the counts mean (all in pages of PAGE_SIZE_BYTES, or in folios: one folio is 2^order pages):
  added_pages           pages the traced processes brought into the page cache: cache misses of reads and
                        faults (through readahead, which also brings in the pages after them) and pages
                        created by writes. added_folios: the insertions (large folios hold many pages).
  deleted_pages         pages removed from the page cache, of the files in view, by any process: reclaim
                        (kswapd, or an allocating process in direct reclaim), fadvise DONTNEED, truncation.
                        Removals are not filtered by --pid: the process that removes a page is rarely the
                        one that read it. With --pid the files in view are those the traced processes added
                        pages to during the session; with --store the store's files; else every file.
  deleted_pages_all_files  the same, for every file.
  sync_readahead_requests   reads that missed the cache and started readahead.
  async_readahead_requests  reads that reached the readahead mark of the last window, so the next window
                        is read ahead of them.
  readahead_windows / readahead_window_pages  windows readahead decided to read and their pages (the
                        requests' windows, mmap read-around, fadvise/madvise WILLNEED). An upper bound of
                        what it read: pages past the end of the file or already cached are in the window
                        but not read. None where the kernel lacks the readahead tracepoints (Linux < 6.18).
  lost_records          records the maps could not hold this interval: the per-process and per-file rows
                        miss them (the totals do not).
Page ranges (--store): each segment's pages are bucketed by 1/64 of its size.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from probes.ebpf.inodes import (
    FileId,
    FileLabel,
    kernel_inode_keys,
    read_address_space,
    store_files,
    unnamed_file,
)
from probes.ebpf.loader import (
    TRACEFS,
    IntSetMap,
    LoadedProgram,
    Parameters,
    checked_int,
    registered_program,
)
from probes.ebpf.tracepoints import tracepoint_format_path
from probes.procfs import PROC_ROOT, ProcessGone, read_process_faults
from store.errors import StoreError

PROBE_NAME = "pagecache"
BUCKETS_PER_FILE = 64
UNKNOWN_SIZE_CHUNK_PAGES = 256

_FUNCTIONS = {
    "filemap:mm_filemap_add_to_page_cache": "mqi_pc_added",
    "filemap:mm_filemap_delete_from_page_cache": "mqi_pc_deleted",
    "readahead:page_cache_sync_ra": "mqi_ra_sync",
    "readahead:page_cache_async_ra": "mqi_ra_async",
    "readahead:page_cache_ra_order": "mqi_ra_order",
    "readahead:page_cache_ra_unbounded": "mqi_ra_unbound",
}
# Optional tracepoints whose handler is compiled only where the kernel has them: bcc cannot build the
# argument struct of a tracepoint that does not exist.
_HANDLER_DEFINES = {
    "readahead:page_cache_sync_ra": "HAVE_RA_SYNC",
    "readahead:page_cache_async_ra": "HAVE_RA_ASYNC",
    "readahead:page_cache_ra_order": "HAVE_RA_ORDER",
    "readahead:page_cache_ra_unbounded": "HAVE_RA_UNBOUNDED",
}
READAHEAD_TRACEPOINTS = frozenset(_HANDLER_DEFINES)


# --- shared with writeback.py ------------------------------------------------------------------------------


def handler_defines(defines: Mapping[str, str], tracefs: Path = TRACEFS) -> dict[str, int]:
    """DEFINE=1 for each optional tracepoint this kernel has, 0 for one it lacks. Where tracefs cannot be
    read (not root: --print-bpf) a tracepoint counts as present, which is what a privileged run on a kernel
    that has it compiles."""
    return {define: int(_tracepoint_present(tp, tracefs)) for tp, define in defines.items()}


def _tracepoint_present(tracepoint: str, tracefs: Path) -> bool:
    try:
        return tracepoint_format_path(tracefs, tracepoint).exists()
    except PermissionError:
        return True


def scalar(value: Any) -> int:
    """A scalar map key or value: bcc gives a ctypes number from items(), a plain int from batch reads."""
    return int(getattr(value, "value", value))


def add_optional(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else a + b


class CumulativeTotals:
    """Differences between successive reads of a one-entry array of cumulative counters."""

    def __init__(self, map_name: str, fields: Sequence[str]):
        self.map_name = map_name
        self.fields = tuple(fields)
        self._previous = (0,) * len(self.fields)

    def since_last_read(self, program: LoadedProgram) -> dict[str, int]:
        entries = program.read(self.map_name)
        now = tuple(getattr(entries[0][1], name) for name in self.fields) if entries else self._previous
        gained = {name: a - b for name, a, b in zip(self.fields, now, self._previous, strict=True)}
        self._previous = now
        return gained


class ProcessWatch:
    """The traced processes: their names, and which of them exited (each reported once, then dropped from
    the kernel's set so that a new process reusing the pid is not traced)."""

    def __init__(self, pids: Sequence[int], proc_root: Path):
        self.pids = tuple(sorted({checked_int(pid, "pid") for pid in pids}))
        for pid in self.pids:
            if pid <= 0:
                raise ValueError(f"{pid} is not a process id")
            if not (proc_root / str(pid)).is_dir():
                raise ProcessGone(pid, proc_root)
        self._proc_root = proc_root
        self._alive = set(self.pids)
        self._comms: dict[int, str | None] = {}

    def subject(self) -> str:
        if not self.pids:
            return "every process"
        if len(self.pids) == 1:
            return f"pid {self.pids[0]}"
        return "pids " + ", ".join(map(str, self.pids))

    def comm(self, pid: int, seen: bytes = b"") -> str | None:
        """The name of `pid`: as the kernel saw it (`seen`, a NUL-padded comm), else the one read when the
        session started (a traced process), else from /proc now."""
        name = bytes(seen).split(b"\0", 1)[0]
        if name:
            return name.decode(errors="replace")
        return self._comms[pid] if pid in self._comms else self._read_comm(pid)

    def remember_comms(self) -> None:
        """Read the traced processes' names now, while they surely exist."""
        for pid in self.pids:
            self._comms[pid] = self._read_comm(pid)

    def _read_comm(self, pid: int) -> str | None:
        try:
            return (self._proc_root / str(pid) / "comm").read_text().strip()
        except OSError:
            return None

    def exited(self, program: LoadedProgram) -> tuple[int, ...]:
        gone = tuple(pid for pid in sorted(self._alive) if self._has_exited(pid))
        for pid in gone:
            self._alive.discard(pid)
            program.delete("mqi_tgids", (pid,))
        return gone

    def _has_exited(self, pid: int) -> bool:
        try:
            state = read_process_faults(pid, self._proc_root).state
        except ProcessGone:
            return True
        return state in ("Z", "X")  # a zombie has done all it will do


class FileNames:
    """How a file is shown: its store segment name, else the path under which a process that used it holds
    it open or mapped (from /proc/PID/fd and /proc/PID/maps, read at most once per process and interval),
    else "inode N on M:m"."""

    def __init__(self, labels: Mapping[FileId, FileLabel], proc_root: Path = PROC_ROOT):
        self._labels = dict(labels)
        self._proc_root = proc_root
        self._paths: dict[int, dict[FileId, tuple[str, int | None]]] = {}

    def new_interval(self) -> None:
        self._paths.clear()

    def learn(self, labels: Mapping[FileId, FileLabel]) -> None:
        self._labels.update(labels)

    def label(self, file: FileId, pid: int = 0) -> FileLabel:
        if file in self._labels:
            return self._labels[file]
        found = self._paths_of(pid).get(file) if pid else None
        if found is None:
            return unnamed_file(file)  # not kept: a later interval may find it open somewhere
        path, size = found
        self._labels[file] = FileLabel(file, path, path, None, size)
        return self._labels[file]

    def _paths_of(self, pid: int) -> dict[FileId, tuple[str, int | None]]:
        if pid not in self._paths:
            paths = self._mapped_paths(pid)
            paths.update(self._open_paths(pid))
            self._paths[pid] = paths
        return self._paths[pid]

    def _open_paths(self, pid: int) -> dict[FileId, tuple[str, int | None]]:
        fd_dir = self._proc_root / str(pid) / "fd"
        paths = {}
        with contextlib.suppress(OSError):
            for name in os.listdir(fd_dir):
                with contextlib.suppress(OSError):  # closed since the listing
                    target = os.readlink(fd_dir / name)
                    if target.startswith("/"):
                        status = os.stat(fd_dir / name)  # the open inode itself, even a deleted one
                        paths[FileId.from_stat(status)] = (target, status.st_size)
        return paths

    def _mapped_paths(self, pid: int) -> dict[FileId, tuple[str, int | None]]:
        try:
            space = read_address_space(pid, self._proc_root)
        except (ProcessGone, PermissionError):
            return {}
        return {m.file: (m.path, None) for m in space.mappings if m.file and m.path and m.path[0] == "/"}


# --- the program -------------------------------------------------------------------------------------------

PROGRAM = registered_program(PROBE_NAME, "pagecache.bpf.c", _FUNCTIONS)


@dataclass(frozen=True)
class MapLimits:
    """Entries each map may hold. The drained maps hold one interval's processes, files and folios."""

    tgids: int = 16384
    inodes: int = 65536
    folios: int = 131072
    threads: int = 32768


def _parameters(filter_tgids: bool, filter_inodes: bool, limits: MapLimits) -> Parameters:
    return Parameters.of(
        FILTER_TGIDS=int(filter_tgids),
        FILTER_INODES=int(filter_inodes),
        RECORD_FOLIOS=int(filter_inodes),  # page ranges for the store's segments only
        MAX_TGIDS=limits.tgids,
        MAX_INODES=limits.inodes,
        MAX_FOLIOS=limits.folios,
        MAX_THREADS=limits.threads,
        IGNORE_TGID=os.getpid(),
        **handler_defines(_HANDLER_DEFINES),
    )


def default_parameters() -> Parameters:
    """What doctor's load test compiles: every process, every file."""
    return _parameters(False, False, MapLimits())


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


@dataclass(frozen=True)
class PagecacheSnapshot:
    """Page-cache activity over one interval (kind "interval") or the whole session (kind "summary")."""

    kind: str
    interval_s: float
    end_time_unix_s: float
    pids: tuple[int, ...]  # traced processes; () means every process
    store: str | None
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
)


@dataclass
class _RangeTally:
    added_pages: int = 0
    deleted_pages: int = 0


class PagecacheProbe:
    """`mqinspect trace pagecache`: see the module docstring. Construct, then run in a TraceSession."""

    name = PROBE_NAME
    program = PROGRAM

    def __init__(
        self,
        pids: Sequence[int] = (),
        *,
        store: Path | None = None,
        limits: MapLimits = MapLimits(),
        proc_root: Path = PROC_ROOT,
    ):
        self.processes = ProcessWatch(pids, proc_root)
        self.pids = self.processes.pids
        self.store = store
        self.limits = limits
        self._store_files: dict[FileId, FileLabel] = store_files(store) if store else {}
        self._names = FileNames(self._store_files, proc_root)
        self._totals = CumulativeTotals("mqi_totals", _TOTAL_FIELDS)
        self._readahead_traced = True

    # --- what the session needs before loading

    def parameters(self) -> Parameters:
        return _parameters(bool(self.pids), bool(self.store), self.limits)

    def sets(self) -> tuple[IntSetMap, ...]:
        sets = []
        if self.pids:
            sets.append(IntSetMap.of_ints("mqi_tgids", self.pids))
        if self.store:
            sets.append(IntSetMap("mqi_inodes", kernel_inode_keys(self._store_files)))
        return tuple(sets)

    def subject(self) -> str:
        where = f"per segment of the store {self.store}" if self.store else "per file"
        if not self.pids:
            return f"page-cache additions, removals and readahead of every process, {where}"
        return (
            f"page-cache additions and readahead of {self.processes.subject()} and removals (by any "
            f"process) of the files {'it' if len(self.pids) == 1 else 'they'} added pages to, {where}"
        )

    # --- the session's calls

    def start(self, program: LoadedProgram) -> None:
        self._readahead_traced = any(tp in program.attached for tp in READAHEAD_TRACEPOINTS)
        self.processes.remember_comms()

    def collect(self, program: LoadedProgram, interval_s: float) -> PagecacheSnapshot:
        self._follow_store(program)
        # Empty the drained maps, then read the totals: all within a moment, so rows and totals cover the
        # same interval.
        processes = program.drain("mqi_processes")
        files = program.drain("mqi_files")
        folios = program.drain("mqi_folios") if self.store else iter(())
        totals = self._totals.since_last_read(program)
        exited = self.processes.exited(program)

        self._names.new_interval()
        readahead = self._readahead_traced
        return PagecacheSnapshot(
            kind="interval",
            interval_s=round(interval_s, 6),
            end_time_unix_s=time.time(),
            pids=self.pids,
            store=str(self.store) if self.store else None,
            added_pages=totals["added_pages"],
            added_folios=totals["added_folios"],
            deleted_pages=totals["deleted_pages"],
            deleted_folios=totals["deleted_folios"],
            deleted_pages_all_files=totals["deleted_pages_all"],
            sync_readahead_requests=totals["sync_readahead"] if readahead else None,
            async_readahead_requests=totals["async_readahead"] if readahead else None,
            readahead_windows=totals["readahead_windows"] if readahead else None,
            readahead_window_pages=totals["readahead_pages"] if readahead else None,
            lost_records=totals["lost_records"],
            processes=self._process_rows(processes),
            files=self._file_rows(files, self._ranges_per_file(folios)),
            exited_pids=exited,
        )

    def combine(self, summary: PagecacheSnapshot | None, snapshot: PagecacheSnapshot) -> PagecacheSnapshot:
        return combine_snapshots(summary, snapshot)

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
            )
            for key, process in records
        ]
        return tuple(sorted(rows, key=_process_order))

    def _file_rows(
        self, records: Iterable[tuple[Any, Any]], ranges: Mapping[FileId, Mapping[int, _RangeTally]]
    ) -> tuple[FileCacheActivity, ...]:
        readahead = self._readahead_traced
        rows = []
        for key, counts in records:
            file = FileId.from_kernel(key.dev, key.ino)
            label = self._names.label(file, counts.last_tgid)
            chunk = self._chunk_pages(label) if self.store else None
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
                    page_ranges=_page_ranges(ranges.get(file, {}), chunk, label.size_pages) if chunk else (),
                )
            )
        return tuple(sorted(rows, key=_file_order))

    # --- page ranges (--store)

    def _ranges_per_file(self, folios: Iterable[tuple[Any, Any]]) -> dict[FileId, dict[int, _RangeTally]]:
        """Each recorded folio's pages, spread over the page ranges of its file it overlaps."""
        ranges: dict[FileId, dict[int, _RangeTally]] = defaultdict(lambda: defaultdict(_RangeTally))
        for key, counts in folios:
            file = FileId.from_kernel(key.dev, key.ino)
            chunk = self._chunk_pages(self._names.label(file))
            first, end = key.index, key.index + (1 << key.order)
            for bucket in range(first // chunk, (end - 1) // chunk + 1):
                overlap = min(end, (bucket + 1) * chunk) - max(first, bucket * chunk)
                tally = ranges[file][bucket]
                tally.added_pages += overlap * counts.added
                tally.deleted_pages += overlap * counts.deleted
        return ranges

    @staticmethod
    def _chunk_pages(label: FileLabel) -> int:
        if label.size_pages:
            return max(1, -(-label.size_pages // BUCKETS_PER_FILE))
        return UNKNOWN_SIZE_CHUNK_PAGES

    def _follow_store(self, program: LoadedProgram) -> None:
        """Add the segments the store created since the last look (a rolled CommitLog, a new ConsumeQueue
        file) to the kernel's inode set: the new segment is where the writes go."""
        current = current_store_files(self.store)
        for file, label in current.items():
            if file not in self._store_files:
                (key,) = kernel_inode_keys({file: label})
                program.put("mqi_inodes", key, (1,))
        self._store_files.update(current)
        self._names.learn(current)


def current_store_files(store: Path | None) -> dict[FileId, FileLabel]:
    """The store's files now; nothing when there is no store, or while it is being deleted or moved."""
    if store is None:
        return {}
    try:
        return store_files(store)
    except (StoreError, OSError):
        return {}


def _process_order(row: ProcessCacheActivity) -> tuple[int, int]:
    return -(row.added_pages + row.deleted_pages), row.pid


def _file_order(row: FileCacheActivity) -> tuple[int, str]:
    return -(row.added_pages + row.deleted_pages), row.name


def _page_ranges(
    buckets: Mapping[int, _RangeTally], chunk: int, size_pages: int | None
) -> tuple[CachePageRange, ...]:
    ranges = []
    for bucket, tally in sorted(buckets.items()):
        last = (bucket + 1) * chunk - 1
        if size_pages:
            last = min(last, max(size_pages - 1, bucket * chunk))
        ranges.append(CachePageRange(bucket * chunk, last, tally.added_pages, tally.deleted_pages))
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
)


def combine_snapshots(summary: PagecacheSnapshot | None, snapshot: PagecacheSnapshot) -> PagecacheSnapshot:
    """The session so far: every count summed, processes merged by pid, files by inode, ranges by page."""
    if summary is None:
        return dataclasses.replace(snapshot, kind="summary")
    return dataclasses.replace(
        summary,
        **{name: getattr(summary, name) + getattr(snapshot, name) for name in _SUMMED},
        **{name: add_optional(getattr(summary, name), getattr(snapshot, name)) for name in _SUMMED_OPTIONAL},
        end_time_unix_s=snapshot.end_time_unix_s,
        processes=tuple(
            sorted(merge_rows(summary.processes, snapshot.processes, ("pid",)), key=_process_order)
        ),
        files=tuple(sorted(_merge_files(summary.files, snapshot.files), key=_file_order)),
        exited_pids=tuple(sorted({*summary.exited_pids, *snapshot.exited_pids})),
    )


def add_counts(a: Any, b: Any, fixed: Sequence[str]) -> Any:
    """`a` with every numeric field of `b` added, except the `fixed` ones (None + None stays None)."""
    changes = {}
    for item in dataclasses.fields(a):
        left, right = getattr(a, item.name), getattr(b, item.name)
        if item.name not in fixed and (isinstance(left, int) or isinstance(right, int)):
            changes[item.name] = add_optional(left, right)
    return dataclasses.replace(a, **changes)


def merge_rows(earlier: Sequence[Any], later: Sequence[Any], identity: Sequence[str]) -> list[Any]:
    """Rows of two intervals, those with the same `identity` fields added together."""
    merged: dict[tuple, Any] = {}
    for row in (*earlier, *later):
        key = tuple(getattr(row, name) for name in identity)
        merged[key] = add_counts(merged[key], row, identity) if key in merged else row
    return list(merged.values())


def _merge_files(earlier: Sequence[FileCacheActivity], later: Sequence[FileCacheActivity]) -> list:
    fixed = ("device", "inode", "size_pages", "chunk_pages")
    merged: dict[tuple[str, int], FileCacheActivity] = {}
    for row in (*earlier, *later):
        key = (row.device, row.inode)
        if key not in merged:
            merged[key] = row
            continue
        combined = add_counts(merged[key], row, fixed)
        ranges = merge_rows(merged[key].page_ranges, row.page_ranges, ("first_page", "last_page"))
        merged[key] = dataclasses.replace(
            combined, page_ranges=tuple(sorted(ranges, key=lambda r: r.first_page))
        )
    return list(merged.values())
