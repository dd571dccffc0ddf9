"""Page-cache residency and mlocked bytes of a store's segment files, for `store segments` and the dashboard.

Residency comes from `file_residency` (cachestat, or mincore where cachestat is refused), locked bytes from
the smaps of the processes that map each file.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from probes.file_locks import locked_bytes_by_file
from probes.residency.scan import ResidencyChunk, ResidencyUnavailable, file_residency


@dataclass(frozen=True)
class SegmentResidency:
    path: str
    pages: int | None
    cached_pages: int | None
    dirty_pages: int | None
    writeback_pages: int | None
    locked_bytes: int | None
    source: str | None  # cachestat or mincore
    trusted: bool
    chunks: tuple[ResidencyChunk, ...] | None = None
    notes: dict[str, str] = field(default_factory=dict)  # why a field is None, or what it leaves out


@dataclass(frozen=True)
class SegmentsResidency:
    segments: tuple[SegmentResidency, ...]
    page_size_bytes: int
    locked_processes_scanned: int


def measure_segments(paths: Iterable[Path | str], chunks: int | None = None) -> SegmentsResidency:
    paths = [str(path) for path in paths]
    locks = locked_bytes_by_file(paths)
    segments = tuple(_measure(path, chunks, locks.files.get(path), locks.notes) for path in paths)
    return SegmentsResidency(segments, _page_size(), locks.processes_scanned)


def _measure(path: str, chunks: int | None, locks, lock_notes: dict[str, str]) -> SegmentResidency:
    locked = locks.locked_bytes if locks is not None else None
    notes = dict(lock_notes)
    if locks is None:
        notes["locked_bytes"] = "the file vanished before it could be matched to mappings"
    try:
        residency = file_residency(path, chunks=chunks)
    except ResidencyUnavailable as error:
        notes["cached_pages"] = error.error.reason
        return SegmentResidency(path, None, None, None, None, locked, None, False, None, notes)
    notes.update(residency.unmeasured)
    if residency.untrusted_reason:
        notes["trusted"] = residency.untrusted_reason
    return SegmentResidency(
        path,
        residency.pages,
        residency.cached_pages,
        residency.dirty_pages,
        residency.writeback_pages,
        locked,
        residency.source,
        residency.trusted,
        residency.chunks,
        notes,
    )


def _page_size() -> int:
    return mmap.PAGESIZE
