"""ConsumeQueue entries: 20 bytes each, `>qiq` = CommitLog physical offset, record size, tagsCode.

Logical queue offset N is entry N of the queue's logical stream; segment files are named by the byte offset
(N * 20) of their first entry. An entry is valid while `offset >= 0 and size > 0`; the first invalid
(all-zero) entry ends the queue. Slots before a queue's real start are "pre-blank" filled with
(0, Integer.MAX_VALUE, 0) (`ConsumeQueue.fillPreBlank`).

The readers here work on a `SegmentQueue` from `store.layout` with pread only, so they are safe on a live
store. Decoding bytes (`decode_entry`, `decode_entries`) raises only CorruptRecord, for fewer than 20 bytes
where an entry must be: any 20 bytes are an entry, valid or not (the contract is in `store.errors`).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

from store.config import CQ_STORE_UNIT_SIZE
from store.errors import CorruptRecord
from store.layout import SegmentFile, SegmentQueue
from store.safe_read import PreadFile

ENTRY = struct.Struct(">qiq")
PRE_BLANK_SIZE = 0x7FFFFFFF  # Integer.MAX_VALUE


@dataclass(frozen=True)
class ConsumeQueueEntry:
    queue_offset: int
    physical_offset: int
    size_bytes: int
    tags_code: int

    @property
    def is_pre_blank(self) -> bool:
        return self.size_bytes == PRE_BLANK_SIZE and self.physical_offset == 0


def is_valid_entry(physical_offset: int, size: int) -> bool:
    return physical_offset >= 0 and size > 0


def entries_per_file(queue: SegmentQueue) -> int:
    return (queue.file_size or 0) // CQ_STORE_UNIT_SIZE


def decode_entry(
    data: bytes | bytearray | memoryview, position: int = 0, *, queue_offset: int = 0, path: str | None = None
) -> ConsumeQueueEntry:
    """The entry at `position` of `data`, valid or not (see `is_valid_entry`), as logical `queue_offset`.

    CorruptRecord if fewer than 20 bytes are left there (a torn last entry); ValueError for a negative
    position."""
    if position < 0:
        raise ValueError(f"position must not be negative: {position}")
    if len(data) - position < CQ_STORE_UNIT_SIZE:
        raise CorruptRecord(
            f"truncated: {max(len(data) - position, 0)} bytes left, a ConsumeQueue entry has 20",
            path=path,
            offset=position,
            field="entry",
        )
    return ConsumeQueueEntry(queue_offset, *ENTRY.unpack_from(data, position))


def decode_entries(
    data: bytes | bytearray | memoryview, first_queue_offset: int = 0
) -> Iterator[ConsumeQueueEntry]:
    """The valid entries at the start of `data` (entry 0 being logical offset `first_queue_offset`), up to
    the first invalid one, as `ConsumeQueue.recover` reads a file. Bytes after the last whole entry (a torn
    write) end the walk; they are not an error. Raises nothing for any bytes."""
    usable = len(data) - len(data) % CQ_STORE_UNIT_SIZE
    for number, (physical_offset, size, tags) in enumerate(ENTRY.iter_unpack(memoryview(data)[:usable])):
        if not is_valid_entry(physical_offset, size):
            return
        yield ConsumeQueueEntry(first_queue_offset + number, physical_offset, size, tags)


def iter_segment_entries(segment: SegmentFile, start_entry: int = 0) -> Iterator[ConsumeQueueEntry]:
    """Valid entries of one segment from `start_entry` (within the file) up to the first invalid one."""
    first_queue_offset = segment.file_from_offset // CQ_STORE_UNIT_SIZE
    with PreadFile(segment.path) as file:
        data = file.read(start_entry * CQ_STORE_UNIT_SIZE, segment.size_bytes)
    yield from decode_entries(data, first_queue_offset + start_entry)


def iter_entries(queue: SegmentQueue, from_queue_offset: int = 0) -> Iterator[ConsumeQueueEntry]:
    """Valid entries from logical offset `from_queue_offset`, across segments, skipping pre-blank slots."""
    per_file = entries_per_file(queue)
    if not per_file:
        return
    for segment in queue.segments:
        first = segment.file_from_offset // CQ_STORE_UNIT_SIZE
        if first + per_file <= from_queue_offset:
            continue
        reached_file_end = False
        for entry in iter_segment_entries(segment, max(0, from_queue_offset - first)):
            if not entry.is_pre_blank:
                yield entry
            reached_file_end = entry.queue_offset == first + per_file - 1
        if not reached_file_end:
            return  # a segment that ends early is the queue's end, as ConsumeQueue.recover decides


def queue_bounds(queue: SegmentQueue, commitlog_min_offset: int = 0) -> tuple[int, int]:
    """(min, max) logical offsets: one past the last valid entry, and the first entry whose record the
    CommitLog still holds (`correctMinOffset`: retention deletes segments before their queue files)."""
    minimum = next(
        (
            entry.queue_offset
            for entry in iter_entries(queue)
            if entry.physical_offset >= commitlog_min_offset
        ),
        None,
    )
    if minimum is None:
        start = queue.segments[0].file_from_offset // CQ_STORE_UNIT_SIZE if queue.segments else 0
        return start, start
    maximum = minimum
    for segment in reversed(queue.segments):
        last = None
        for last in iter_segment_entries(segment):  # noqa: B007 - only the last one matters
            pass
        if last is not None:
            maximum = last.queue_offset + 1
            break
    return minimum, maximum
