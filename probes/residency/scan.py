"""Page-cache residency of files and file ranges: cachestat(2) first, mincore(2) where cachestat is refused.

Source choice, per file:
  * cachestat answers: cached, dirty, writeback, evicted and recently-evicted pages, trusted.
  * cachestat fails with ENOSYS (kernel < 6.5 or built without it), EPERM (this kernel refuses callers who
    may not write the file; container seccomp profiles also answer EPERM) or EOPNOTSUPP (hugetlbfs):
    mincore, which sees residency only, so dirty/writeback/evicted counts are None with the reason.
    If the caller may not write the file, mincore would report every page resident (see
    `probes.residency.mincore`), so no map is made and cached_pages is None too: `trusted=False` with
    `untrusted_reason`. A number is never shown that the kernel did not really measure.

Dirty and writeback counts are what cachestat reports: pages of dirty (or under-writeback) folios. Where
the page cache holds large folios (ext4 on this kernel uses them for readahead and large writes), writing
one byte marks its whole folio dirty, and writeback will write all of it, so dirty_pages can exceed the
pages written; page-sized folios give exact counts.

Chunk maps split the pages into N nearly equal runs. With cachestat each run is one sub-range call, so it
carries dirty counts too; the file's totals are then the sums of the runs, which keeps totals and chunks
one consistent picture. With mincore the runs are counted from the page map.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from probes.errors import ProbeError
from probes.residency.cachestat import CacheStat, cachestat
from probes.residency.mincore import PAGE_SIZE, PageBitmap, mincore_trust, page_bitmap, pages_spanning

SOURCE_CACHESTAT = "cachestat"
SOURCE_MINCORE = "mincore"
# cachestat errors after which mincore can still say something; anything else is a real failure.
_CACHESTAT_FALLBACK_ERRNOS = {
    errno.ENOSYS: "the kernel has no cachestat (Linux < 6.5 or CONFIG_CACHESTAT_SYSCALL off)",
    errno.EPERM: "cachestat refused (EPERM): the caller may not write this file, or seccomp blocks it",
    errno.EOPNOTSUPP: "cachestat does not support this file system (hugetlbfs)",
}
_MINCORE_HAS_NO_COUNTS = "mincore sees residency only, not dirty/writeback/evicted state"
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


@dataclass(frozen=True)
class ResidencyChunk:
    """One run of pages [first_page, end_page) of a chunk map; fractions are of the run's pages."""

    first_page: int
    end_page: int
    cached_pages: int
    dirty_pages: int | None
    cached_fraction: float
    dirty_fraction: float | None
    writeback_pages: int | None = None  # cachestat only; None from mincore, which cannot see it

    @property
    def pages(self) -> int:
        return self.end_page - self.first_page


@dataclass(frozen=True, kw_only=True)
class RangeResidency:
    """Page-cache state of pages [first_page, first_page + pages) of one file.

    Counts are in pages of `page_size_bytes`. A count the source could not measure is None, and
    `unmeasured` maps its field name to the reason. `page_map` has one byte per page (1 resident,
    0 not), from mincore, only when asked for and trustworthy.
    """

    size_bytes: int
    first_page: int
    pages: int
    page_size_bytes: int
    cached_pages: int | None
    dirty_pages: int | None
    writeback_pages: int | None
    evicted_pages: int | None
    recently_evicted_pages: int | None
    source: str
    trusted: bool
    untrusted_reason: str | None = None
    source_reason: str | None = None
    unmeasured: dict[str, str] = field(default_factory=dict)
    chunks: tuple[ResidencyChunk, ...] | None = None
    page_map: bytes | None = None


@dataclass(frozen=True, kw_only=True)
class FileResidency(RangeResidency):
    """Page-cache state of a whole regular file (first_page is 0)."""

    path: str


@dataclass(frozen=True)
class ResidencyError:
    """A path that could not be measured: missing, not a regular file, permission denied, ..."""

    path: str
    reason: str
    errno: int | None


class ResidencyUnavailable(ProbeError):
    """`file_residency` could not measure a path; `.error` is the row a scan would have reported."""

    def __init__(self, error: ResidencyError):
        super().__init__(f"{error.path}: {error.reason}")
        self.error = error


def file_residency(
    path: str | os.PathLike, *, chunks: int | None = None, page_map: bool = False
) -> FileResidency:
    """Page-cache residency of the regular file at `path`.

    `chunks`: also split the file into that many page runs (fewer when the file has fewer pages).
    `page_map`: also return the per-page mincore map. Raises ResidencyUnavailable for a path that is
    missing, not a regular file, or not readable; other paths of a scan are unaffected (see `scan_paths`).
    """
    outcome = _measure_path(os.fspath(path), chunks, page_map)
    if isinstance(outcome, ResidencyError):
        raise ResidencyUnavailable(outcome)
    return outcome


def path_totals(path: str) -> RangeResidency:
    """The totals of `file_residency(path)` (no chunks, no page map), as the RangeResidency measured: what a
    dashboard asks of a few hundred files each second, without the FileResidency copy. Raises
    ResidencyUnavailable as file_residency does."""
    fd = open_regular_file(path)
    try:
        return residency_of_range(fd)
    except OSError as error:
        raise ResidencyUnavailable(_error_row(path, error)) from error
    finally:
        os.close(fd)


def residency_of_range(
    fd: int, offset: int = 0, length: int | None = None, *, chunks: int | None = None, page_map: bool = False
) -> RangeResidency:
    """Page-cache residency of the bytes [offset, offset+length) of the open regular file `fd`.

    `length` None means to the end of the file. The range is widened to whole pages and clipped to the
    file size at the time of the call. Raises OSError if `fd` is not a readable regular file.
    """
    if offset < 0 or (length is not None and length < 0):
        raise ValueError(f"offset and length must not be negative: {offset}, {length}")
    status = os.fstat(fd)
    if not stat.S_ISREG(status.st_mode):
        raise OSError(errno.EINVAL, "not a regular file")
    size_bytes = status.st_size
    end_byte = size_bytes if length is None else min(offset + length, size_bytes)
    first_page = min(offset // PAGE_SIZE, pages_spanning(size_bytes))
    end_page = max(first_page, pages_spanning(end_byte))
    try:
        counted = _cachestat_runs(fd, first_page, end_page, chunks)
    except OSError as error:
        if error.errno not in _CACHESTAT_FALLBACK_ERRNOS:
            raise
        reason = _CACHESTAT_FALLBACK_ERRNOS[error.errno]
        return _from_mincore(fd, size_bytes, first_page, end_page, chunks, page_map, source_reason=reason)
    return _from_cachestat(fd, size_bytes, first_page, end_page, chunks, page_map, counted)


def scan_paths(
    paths: Iterable[str | os.PathLike],
    recursive: bool = False,
    chunks: int | None = None,
    page_map: bool = False,
) -> Iterator[FileResidency | ResidencyError]:
    """Measure each path, yielding one row per file as soon as it is measured.

    Paths named by the caller are followed if they are symlinks. Directories are entered only with
    `recursive=True`; inside them symlinks are not followed (no loops, no file counted twice through a
    link), directories already visited are skipped (bind-mount loops), and entries are visited in name
    order. Every failure (missing path, directory without `recursive`, FIFO, device, socket, permission
    denied) is yielded as a ResidencyError row and the scan goes on.
    """
    if isinstance(paths, str | bytes | os.PathLike):
        paths = [paths]
    visited_directories: set[tuple[int, int]] = set()
    for raw_path in paths:
        path = os.fspath(raw_path)
        try:
            status = os.stat(path)
        except OSError as error:
            yield _error_row(path, error)
            continue
        if not stat.S_ISDIR(status.st_mode):
            yield _measure_path(path, chunks, page_map, status)
        elif not recursive:
            yield ResidencyError(path, "is a directory; scan it with recursive=True", errno.EISDIR)
        else:
            yield from _walk(path, status, visited_directories, chunks, page_map)


def _walk(
    top: str,
    top_status: os.stat_result,
    visited: set[tuple[int, int]],
    chunks: int | None,
    page_map: bool,
) -> Iterator[FileResidency | ResidencyError]:
    # An explicit stack instead of recursion: deep trees must not hit Python's recursion limit.
    pending = [(top, top_status)]
    while pending:
        directory, status = pending.pop()
        identity = (status.st_dev, status.st_ino)
        if identity in visited:
            continue
        visited.add(identity)
        try:
            with os.scandir(directory) as listing:
                entries = sorted(listing, key=lambda entry: entry.name)
        except OSError as error:
            yield _error_row(directory, error)
            continue
        subdirectories = []
        for entry in entries:
            if entry.is_symlink():
                continue
            try:
                entry_status = entry.stat(follow_symlinks=False)
            except OSError as error:
                yield _error_row(entry.path, error)
                continue
            if stat.S_ISDIR(entry_status.st_mode):
                subdirectories.append((entry.path, entry_status))
            else:
                yield _measure_path(entry.path, chunks, page_map, entry_status)
        pending.extend(reversed(subdirectories))


def open_regular_file(path: str, status: os.stat_result | None = None) -> int:
    """Open `path` read-only for probing; raises ResidencyUnavailable unless it is a regular file.

    The type is checked before open, because opening a FIFO can block and opening some devices has side
    effects (a watchdog arms itself), and again on the open fd, in case the path was swapped in between.
    `status` is a stat of the path the caller already has.
    """
    try:
        status = status or os.stat(path)
        if not stat.S_ISREG(status.st_mode):
            raise ResidencyUnavailable(_not_regular_row(path, status))
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as error:
        raise ResidencyUnavailable(_error_row(path, error)) from error
    opened_status = os.fstat(fd)
    if not stat.S_ISREG(opened_status.st_mode):
        os.close(fd)
        raise ResidencyUnavailable(_not_regular_row(path, opened_status))
    return fd


def _measure_path(
    path: str, chunks: int | None, page_map: bool, status: os.stat_result | None = None
) -> FileResidency | ResidencyError:
    try:
        fd = open_regular_file(path, status)
    except ResidencyUnavailable as refused:
        return refused.error
    try:
        measured = residency_of_range(fd, chunks=chunks, page_map=page_map)
    except OSError as error:
        return _error_row(path, error)
    finally:
        os.close(fd)
    return FileResidency(path=path, **{name: getattr(measured, name) for name in _RANGE_FIELDS})


_RANGE_FIELDS = tuple(RangeResidency.__dataclass_fields__)


def _error_row(path: str, error: OSError) -> ResidencyError:
    return ResidencyError(path, error.strerror or str(error), error.errno)


def _not_regular_row(path: str, status: os.stat_result) -> ResidencyError:
    kinds = {
        stat.S_IFDIR: "a directory",
        stat.S_IFCHR: "a character device",
        stat.S_IFBLK: "a block device",
        stat.S_IFIFO: "a FIFO",
        stat.S_IFSOCK: "a socket",
    }
    kind = kinds.get(stat.S_IFMT(status.st_mode), "not a regular file")
    return ResidencyError(path, f"skipped: {kind}, not a regular file", None)


def chunk_bounds(first_page: int, end_page: int, chunks: int) -> list[tuple[int, int]]:
    """Split pages [first_page, end_page) into min(chunks, pages) runs whose sizes differ by at most one."""
    if chunks < 1:
        raise ValueError(f"chunks must be at least 1, not {chunks}")
    pages = end_page - first_page
    count = min(chunks, pages)
    return [(first_page + i * pages // count, first_page + (i + 1) * pages // count) for i in range(count)]


def _chunk(
    first_page: int,
    end_page: int,
    cached_pages: int,
    dirty_pages: int | None,
    writeback_pages: int | None = None,
) -> ResidencyChunk:
    pages = end_page - first_page
    return ResidencyChunk(
        first_page,
        end_page,
        cached_pages,
        dirty_pages,
        cached_pages / pages,
        None if dirty_pages is None else dirty_pages / pages,
        writeback_pages,
    )


def _cachestat_runs(
    fd: int, first_page: int, end_page: int, chunks: int | None
) -> tuple[CacheStat, list[tuple[int, int, CacheStat]]]:
    """Totals of the range and, with `chunks`, (first, end, counts) per run; raises cachestat's OSError."""
    if end_page == first_page:
        # An empty range: still ask once, so a refusal leads to the same fallback as for any file.
        cachestat(fd, 0, PAGE_SIZE)
        return CacheStat(0, 0, 0, 0, 0), []
    if chunks is None:
        return _cachestat_pages(fd, first_page, end_page), []
    runs = [(a, b, _cachestat_pages(fd, a, b)) for a, b in chunk_bounds(first_page, end_page, chunks)]
    return _sum_stats(one for _first, _end, one in runs), runs


def _from_cachestat(
    fd: int,
    size_bytes: int,
    first_page: int,
    end_page: int,
    chunks: int | None,
    page_map: bool,
    counted: tuple[CacheStat, list[tuple[int, int, CacheStat]]],
) -> RangeResidency:
    totals, runs = counted
    unmeasured: dict[str, str] = {}
    bitmap = _trusted_page_map(fd, first_page, end_page, unmeasured) if page_map else None
    return RangeResidency(
        size_bytes=size_bytes,
        first_page=first_page,
        pages=end_page - first_page,
        page_size_bytes=PAGE_SIZE,
        cached_pages=totals.cached_pages,
        dirty_pages=totals.dirty_pages,
        writeback_pages=totals.writeback_pages,
        evicted_pages=totals.evicted_pages,
        recently_evicted_pages=totals.recently_evicted_pages,
        source=SOURCE_CACHESTAT,
        trusted=True,
        unmeasured=unmeasured,
        chunks=None
        if chunks is None
        else tuple(_chunk(a, b, s.cached_pages, s.dirty_pages, s.writeback_pages) for a, b, s in runs),
        page_map=bitmap,
    )


def _cachestat_pages(fd: int, first_page: int, end_page: int) -> CacheStat:
    return cachestat(fd, first_page * PAGE_SIZE, (end_page - first_page) * PAGE_SIZE)


def _sum_stats(stats: Iterable[CacheStat]) -> CacheStat:
    totals = [0, 0, 0, 0, 0]
    for one in stats:
        for index, value in enumerate(
            (
                one.cached_pages,
                one.dirty_pages,
                one.writeback_pages,
                one.evicted_pages,
                one.recently_evicted_pages,
            )
        ):
            totals[index] += value
    return CacheStat(*totals)


def _trusted_page_map(fd: int, first_page: int, end_page: int, unmeasured: dict[str, str]) -> bytes | None:
    trust = mincore_trust(fd)
    if not trust.trusted:
        unmeasured["page_map"] = trust.reason or "mincore is not trustworthy here"
        return None
    return _fit_to_range(
        page_bitmap(fd, first_page * PAGE_SIZE, (end_page - first_page) * PAGE_SIZE), end_page
    )


def _fit_to_range(bitmap: PageBitmap, end_page: int) -> bytes:
    # A file truncated during the scan has no pages past its new end: they are, truthfully, not cached.
    missing = end_page - bitmap.first_page - bitmap.pages
    return bitmap.resident + bytes(missing) if missing > 0 else bitmap.resident


def _from_mincore(
    fd: int,
    size_bytes: int,
    first_page: int,
    end_page: int,
    chunks: int | None,
    page_map: bool,
    *,
    source_reason: str,
) -> RangeResidency:
    unmeasured = dict.fromkeys(
        ("dirty_pages", "writeback_pages", "evicted_pages", "recently_evicted_pages"), _MINCORE_HAS_NO_COUNTS
    )
    trust = mincore_trust(fd)
    common = {
        "size_bytes": size_bytes,
        "first_page": first_page,
        "pages": end_page - first_page,
        "page_size_bytes": PAGE_SIZE,
        "dirty_pages": None,
        "writeback_pages": None,
        "evicted_pages": None,
        "recently_evicted_pages": None,
        "source": SOURCE_MINCORE,
        "source_reason": source_reason,
    }
    if not trust.trusted:
        # Not even mapped: the kernel would fill the map with 1s without looking at the page cache.
        for name in ("cached_pages", "chunks", "page_map"):
            unmeasured[name] = trust.reason or "mincore is not trustworthy here"
        return RangeResidency(
            **common, cached_pages=None, trusted=False, untrusted_reason=trust.reason, unmeasured=unmeasured
        )
    resident = _fit_to_range(
        page_bitmap(fd, first_page * PAGE_SIZE, (end_page - first_page) * PAGE_SIZE), end_page
    )
    return RangeResidency(
        **common,
        cached_pages=resident.count(1),
        trusted=True,
        unmeasured=unmeasured,
        chunks=None if chunks is None else chunks_from_page_map(resident, first_page, chunks),
        page_map=resident if page_map else None,
    )


def chunks_from_page_map(resident: bytes, first_page: int, chunks: int) -> tuple[ResidencyChunk, ...]:
    """Chunk map of a mincore page map (dirty fractions unknown): the same runs cachestat chunks use."""
    return tuple(
        _chunk(a, b, resident.count(1, a - first_page, b - first_page), None)
        for a, b in chunk_bounds(first_page, first_page + len(resident), chunks)
    )
