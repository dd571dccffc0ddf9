"""What `mqinspect cache` reports: one row per file, error rows, and the totals, built as the rows are drawn.

`cache_rows` picks the files (paths, a recursive walk, or the files of a process), applies the action asked
for (evict, touch, lock) and measures each file, yielding one `CacheRow` or `ResidencyError` at a time, only
when the consumer asks for it: that is what lets the renderers stream a large tree. `CacheTally` sums the
rows as they pass, for the totals line drawn after the last one, and counts what could not be measured and
why, from which the CLI picks its exit status.

Where each figure comes from: residency from `probes.residency.scan` (cachestat, mincore where cachestat is
refused), the action's effect from `probes.residency.actions` (residency before and after), what a process
does with a file from `probes.process_files` (/proc/PID/maps, smaps and fd). A count that could not be
measured is None with the reason in the row's notes; a total sums the files that could measure it and says
over how many.
"""

from __future__ import annotations

import dataclasses
import errno
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from probes.residency.scan import (
    FileResidency,
    RangeResidency,
    ResidencyError,
    ResidencyUnavailable,
    file_residency,
    scan_paths,
)

if TYPE_CHECKING:  # a scan of paths neither reads a process's files nor acts: it does not import these
    from probes.process_files import ProcessFile, ProcessFiles
    from probes.residency.actions import LockedFile

COUNTED_FIELDS = ("cached_pages", "dirty_pages", "writeback_pages", "evicted_pages", "recently_evicted_pages")
# The page counts each action reports, per file and summed in the totals.
ACTION_COUNTS: Mapping[str, tuple[str, ...]] = {
    "evict": ("pages_evicted", "pages_stayed_resident"),
    "touch": ("pages_brought_in",),
    "lock": ("locked_pages",),
}
# Errors that more privilege would have turned into a measurement.
_REFUSED_ERRNOS = {errno.EACCES, errno.EPERM}
# What an action did that needs only read access, said where its effect cannot be measured.
_APPLIED_UNMEASURED = {
    "evict": "the kernel accepted POSIX_FADV_DONTNEED, which needs only read access, so clean pages of this "
    "file may have been dropped; how many cannot be measured: ",
    "touch": "the file was read into the page cache (MADV_POPULATE_READ needs only read access); how many "
    "pages that brought in cannot be measured: ",
}


@dataclass(frozen=True)
class ActionOutcome:
    """What an action did to one file (or, in CacheTotals, to all of them).

    `name` is "evict", "touch" or "lock"; `pages` holds its page counts (pages_evicted and
    pages_stayed_resident; pages_brought_in; locked_pages), None where not measurable, with the reason in
    `unmeasured`; `detail` holds the rest (synced, method).
    """

    name: str
    pages: dict[str, int | None]
    detail: dict[str, Any] = field(default_factory=dict)
    unmeasured: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CacheRow:
    """One measured file: its residency, and what `--pid` and an action know of it."""

    residency: FileResidency
    process_file: ProcessFile | None = None
    action: ActionOutcome | None = None


@dataclass(frozen=True)
class CacheTotals:
    """Sums over the measured files. A count some file could not measure is summed over the others, and
    `notes` says over how many; it is None only when no file measured it."""

    files: int
    errors: int
    size_bytes: int
    pages: int
    cached_pages: int | None
    cached_percent: float | None
    dirty_pages: int | None
    writeback_pages: int | None
    evicted_pages: int | None
    recently_evicted_pages: int | None
    action: ActionOutcome | None = None
    notes: dict[str, str] = field(default_factory=dict)


CacheItem = CacheRow | ResidencyError


@dataclass(frozen=True)
class CacheRequest:
    """What to measure of each file, and which action ("evict", "touch", "lock" or None) to apply first."""

    chunks: int | None = None
    page_map: bool = False
    action: str | None = None
    sync: bool = False  # with "evict": fsync first, so that dirty pages can be dropped too


@dataclass(frozen=True)
class HeldLock:
    """A lock taken by the "lock" action, and the path it is reported under."""

    display_path: str
    handle: LockedFile


@dataclass(frozen=True)
class _Target:
    """A file to act on and measure: `display_path` is how it is reported, `open_path` how it is reached."""

    display_path: str
    open_path: str
    process_file: ProcessFile | None = None


# --------------------------------------------------------------------------------------- the rows


def cache_rows(
    paths: Iterable[str],
    request: CacheRequest,
    *,
    recursive: bool = False,
    process: ProcessFiles | None = None,
    held: list[HeldLock] | None = None,
) -> Iterator[CacheItem]:
    """One row per file of `paths` (or of `process`, when given), measured only when asked for.

    Locks taken by the "lock" action are appended to `held`; the caller releases them.
    """
    held = [] if held is None else held
    if process is not None:
        for process_file in process.files:
            yield _row(_Target(process_file.path, process_file.open_path, process_file), request, held)
        return
    if request.action is None:
        # scan_paths measures as it walks: one pass, one measurement per file.
        for found in scan_paths(paths, recursive=recursive, chunks=request.chunks, page_map=request.page_map):
            yield found if isinstance(found, ResidencyError) else CacheRow(found)
        return
    # With an action the walk only finds the files (its cheap cachestat counts are dropped); each file is
    # then acted on and measured afresh, so its row shows the state the action left.
    for found in scan_paths(paths, recursive=recursive):
        if isinstance(found, ResidencyError):
            yield found
        else:
            yield _row(_Target(found.path, found.path), request, held)


def _row(target: _Target, request: CacheRequest, held: list[HeldLock]) -> CacheItem:
    # Imported here: a plain scan never gets here, and the actions' libc bindings cost its start-up ~5 ms.
    from probes.residency.actions import MemoryLockRefused

    try:
        outcome = _act(target, request, held)
        measured = file_residency(target.open_path, chunks=request.chunks, page_map=request.page_map)
    except ResidencyUnavailable as refused:
        return dataclasses.replace(refused.error, path=target.display_path)
    except MemoryLockRefused as refused:
        return ResidencyError(target.display_path, f"{refused} (fix: {refused.fix})", errno.ENOMEM)
    except OSError as error:
        return ResidencyError(target.display_path, error.strerror or str(error), error.errno)
    return CacheRow(dataclasses.replace(measured, path=target.display_path), target.process_file, outcome)


def _act(target: _Target, request: CacheRequest, held: list[HeldLock]) -> ActionOutcome | None:
    from probes.residency.actions import evict, lock, touch

    path = target.open_path
    if request.action == "evict":
        evicted = evict(path, sync=request.sync)
        return ActionOutcome(
            "evict",
            {"pages_evicted": evicted.pages_evicted, "pages_stayed_resident": evicted.pages_stayed_resident},
            {"synced": evicted.synced},
            _unmeasured_counts("evict", evicted.after),
        )
    if request.action == "touch":
        touched = touch(path)
        return ActionOutcome(
            "touch",
            {"pages_brought_in": touched.pages_brought_in},
            {"method": touched.method},
            _unmeasured_counts("touch", touched.after),
        )
    if request.action == "lock":
        locked = lock(path)
        held.append(HeldLock(target.display_path, locked))
        return ActionOutcome("lock", {"locked_pages": locked.pages if locked.locked else 0})
    return None


def _unmeasured_counts(action: str, after: RangeResidency) -> dict[str, str]:
    """Why the action's counts are None: the residency after it could not be measured. The action itself
    was applied, which the reason says, so that "unavailable" does not read as "nothing happened"."""
    reason = after.unmeasured.get("cached_pages")
    if after.cached_pages is not None or not reason:
        return {}
    return dict.fromkeys(ACTION_COUNTS[action], _APPLIED_UNMEASURED[action] + reason)


# --------------------------------------------------------------------------------------- totals


class CacheTally:
    """Sums the rows as they pass to the writer, for the totals line drawn after the last one.

    `files` counts measured files, `errors` error rows; `unmeasured` the files whose residency the caller's
    privileges could not measure, and `refused` the errors and unmeasured files that more privilege would
    have measured.
    """

    def __init__(self, action: str | None):
        self.action = action
        self.files = 0
        self.errors = 0
        self.unmeasured = 0
        self.refused = 0
        self.size_bytes = 0
        self.pages = 0
        self._sums: Counter[str] = Counter()
        self._measured: Counter[str] = Counter()
        self._pages_with_cached_count = 0

    def counted(self, items: Iterable[CacheItem]) -> Iterator[CacheItem]:
        for item in items:
            self._add(item)
            yield item

    @property
    def all_measured(self) -> bool:
        return not (self.errors or self.unmeasured)

    @property
    def only_privilege_missing(self) -> bool:
        """Nothing was measured, and each failure was for lack of privilege."""
        failed = self.errors + self.unmeasured
        return bool(failed) and self.refused == failed and self.files == self.unmeasured

    def _add(self, item: CacheItem) -> None:
        if isinstance(item, ResidencyError):
            self.errors += 1
            self.refused += item.errno in _REFUSED_ERRNOS
            return
        residency: FileResidency = item.residency
        self.files += 1
        if residency.cached_pages is None:  # only a caller mincore would lie to gets no count at all
            self.unmeasured += 1
            self.refused += 1
        self.size_bytes += residency.size_bytes
        self.pages += residency.pages
        if residency.cached_pages is not None:
            self._pages_with_cached_count += residency.pages
        self._add_counts({name: getattr(residency, name) for name in COUNTED_FIELDS})
        if item.action:
            self._add_counts(item.action.pages)

    def _add_counts(self, counts: dict[str, int | None]) -> None:
        for name, value in counts.items():
            if value is not None:
                self._sums[name] += value
                self._measured[name] += 1

    def _total(self, name: str, notes: dict[str, str]) -> int | None:
        measured = self._measured[name]
        if measured < self.files:
            notes[name] = (
                "no file could measure it"
                if measured == 0
                else f"sum over the {measured} of {self.files} files that could measure it"
            )
        return self._sums[name] if measured or not self.files else None

    def totals(self) -> CacheTotals:
        notes: dict[str, str] = {}
        counts = {name: self._total(name, notes) for name in COUNTED_FIELDS}
        cached = counts["cached_pages"]
        action = None
        if self.action:
            counts_of_action = {name: self._total(name, notes) for name in ACTION_COUNTS[self.action]}
            action = ActionOutcome(self.action, counts_of_action)
        return CacheTotals(
            files=self.files,
            errors=self.errors,
            size_bytes=self.size_bytes,
            pages=self.pages,
            cached_percent=100 * cached / self._pages_with_cached_count
            if cached is not None and self._pages_with_cached_count
            else None,
            **counts,
            action=action,
            notes=notes,
        )
