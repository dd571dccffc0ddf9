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

import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from store import codec
from store.config import CQ_STORE_UNIT_SIZE
from store.errors import CorruptRecord
from store.layout import SegmentFile, SegmentQueue
from store.safe_read import PreadFile

ENTRY = struct.Struct(">qiq")
PRE_BLANK_SIZE = 0x7FFFFFFF  # Integer.MAX_VALUE
RECOVER_FROM_LAST_FILES = 3  # ConsumeQueue.recover starts three files before the end
# QueueEntryReader reads this many entries per pread (20 KiB): one read serves that many records of a queue.
ENTRIES_PER_WINDOW = 1024
# iter_segment_entries' first read: a queue's first entry or a page of `store cq` costs one page or two.
FIRST_WINDOW_ENTRIES = 64
# Counting valid entries reads this many per pread (1.25 MiB) and checks them with a few C passes.
COUNT_WINDOW_ENTRIES = 1 << 16
_SIGN_BIT_SET = re.compile(rb"[\x80-\xff]")


@dataclass(frozen=True)
class ConsumeQueueEntry:
    queue_offset: int
    physical_offset: int
    size_bytes: int
    tags_code: int

    @property
    def is_pre_blank(self) -> bool:
        return self.size_bytes == PRE_BLANK_SIZE and self.physical_offset == 0

    @property
    def names_a_record(self) -> bool:
        """A valid entry that is not a pre-blank placeholder."""
        return is_valid_entry(self.physical_offset, self.size_bytes) and not self.is_pre_blank


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


def valid_prefix_length(data: bytes) -> int:
    """How many whole entries at the start of `data` are valid (`is_valid_entry`): what `decode_entries`
    yields, counted with a few C-speed passes over byte columns (every 20th byte) instead of a Python step
    per entry. An entry is invalid when its offset or size is negative (the sign bit of their first byte)
    or its size is zero (all four size bytes zero)."""
    usable = len(data) - len(data) % CQ_STORE_UNIT_SIZE
    count = usable // CQ_STORE_UNIT_SIZE
    if not count:
        return 0
    offsets_first, sizes_first = data[0:usable:CQ_STORE_UNIT_SIZE], data[8:usable:CQ_STORE_UNIT_SIZE]
    valid = count
    for column in (offsets_first, sizes_first):
        if not column.isascii():  # a sign bit set (ASCII: every byte below 0x80)
            valid = min(valid, _SIGN_BIT_SET.search(column).start())
    size_bytes_or = int.from_bytes(sizes_first, "big")
    for at in (9, 10, 11):
        size_bytes_or |= int.from_bytes(data[at:usable:CQ_STORE_UNIT_SIZE], "big")
    zero_size = size_bytes_or.to_bytes(count, "big").find(b"\0")
    return valid if zero_size < 0 else min(valid, zero_size)


_PRE_BLANK_HEAD = ENTRY.pack(0, PRE_BLANK_SIZE, 0)[:12]  # offset 0 and size MAX; any tagsCode


def count_pre_blanks(data: bytes, entries: int) -> int:
    """How many of the first `entries` entries of `data` are pre-blank placeholders."""
    found, at, end = (
        0,
        data.find(_PRE_BLANK_HEAD, 0, entries * CQ_STORE_UNIT_SIZE),
        entries * CQ_STORE_UNIT_SIZE,
    )
    while at >= 0:
        if at % CQ_STORE_UNIT_SIZE == 0:
            found += 1
        at = data.find(_PRE_BLANK_HEAD, at + 1, end)
    return found


@dataclass(frozen=True)
class SegmentEntryCount:
    valid: int  # entries from the file's start up to the first invalid one, pre-blanks included
    pre_blanks: int  # pre-blank placeholders among them

    @property
    def records(self) -> int:
        """The valid entries that name a record."""
        return self.valid - self.pre_blanks


def count_segment_entries(segment: SegmentFile, limit: int | None = None) -> SegmentEntryCount:
    """The valid prefix of one segment (at most `limit` entries), read in windows of COUNT_WINDOW_ENTRIES so
    a file full of valid entries costs a few C passes per window, and memory stays bounded."""
    limit = segment.size_bytes // CQ_STORE_UNIT_SIZE if limit is None else limit
    valid = pre_blanks = 0
    with PreadFile(segment.path) as file:
        while valid < limit:
            wanted = min(COUNT_WINDOW_ENTRIES, limit - valid)
            data = file.read(valid * CQ_STORE_UNIT_SIZE, wanted * CQ_STORE_UNIT_SIZE)
            good = valid_prefix_length(data)
            valid, pre_blanks = valid + good, pre_blanks + count_pre_blanks(data, good)
            if good < wanted:
                break  # an invalid entry, or the file is shorter than its size says (truncated under us)
    return SegmentEntryCount(valid, pre_blanks)


def iter_segment_entries(segment: SegmentFile, start_entry: int = 0) -> Iterator[ConsumeQueueEntry]:
    """Valid entries of one segment from `start_entry` (within the file) up to the first invalid one, read
    in windows that start at FIRST_WINDOW_ENTRIES and double up to ENTRIES_PER_WINDOW * 16, so a reader
    that stops after a few entries (a queue's first, a page of `store cq`) reads a few pages."""
    first_queue_offset = segment.file_from_offset // CQ_STORE_UNIT_SIZE
    window_entries = FIRST_WINDOW_ENTRIES
    with PreadFile(segment.path) as file:
        position = start_entry * CQ_STORE_UNIT_SIZE
        while position < segment.size_bytes:
            wanted = min(window_entries * CQ_STORE_UNIT_SIZE, segment.size_bytes - position)
            data = file.read(position, wanted)
            whole = len(data) - len(data) % CQ_STORE_UNIT_SIZE
            yield from decode_entries(data, first_queue_offset + position // CQ_STORE_UNIT_SIZE)
            if whole < wanted or valid_prefix_length(data) < whole // CQ_STORE_UNIT_SIZE:
                return  # an invalid entry, a torn last entry, or a file shorter than its size says
            position += whole
            window_entries = min(window_entries * 2, ENTRIES_PER_WINDOW * 16)


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
        valid = count_segment_entries(segment).valid
        if valid:
            maximum = segment.file_from_offset // CQ_STORE_UNIT_SIZE + valid
            break
    return minimum, maximum


# --- what the store makes of a queue, and what a record's entry must be ------------------------------------


def recovered_queue_end(queue: SegmentQueue) -> int:
    """`ConsumeQueue.recover`: one past the last entry the store keeps at start-up, as a queue offset.

    The valid prefix (entries with offset >= 0 and size > 0) is followed from the start of the third file
    before the end, file after file while each is valid to its end; everything after the first invalid entry
    is dropped. Files before those three are taken as they are."""
    per_file = entries_per_file(queue)
    segments = queue.segments
    if not per_file or not segments:
        return 0
    recovered = segments[max(0, len(segments) - RECOVER_FROM_LAST_FILES)]
    end = recovered.file_from_offset // CQ_STORE_UNIT_SIZE
    for segment in segments[max(0, len(segments) - RECOVER_FROM_LAST_FILES) :]:
        first = segment.file_from_offset // CQ_STORE_UNIT_SIZE
        valid = count_segment_entries(segment, per_file).valid
        end = first + valid
        if valid < per_file:
            break
    return end


def enters_consume_queue(sysflag: int) -> bool:
    """Whether the dispatcher gives a record a ConsumeQueue entry: not for prepared or rolled-back
    transaction halves (`CommitLogDispatcherBuildConsumeQueue`)."""
    kind = sysflag & codec.TRANSACTION_TYPE_MASK
    return kind in (codec.TRANSACTION_NOT_TYPE, codec.TRANSACTION_COMMIT_TYPE)


def expected_tags_code(record: codec.MessageRecord) -> int | None:
    """The tagsCode a broker writes for `record`, or None when it cannot be told from the record alone: for
    SCHEDULE_TOPIC_XXXX with a DELAY property it is the delivery time, which depends on the broker's
    messageDelayLevel table."""
    if record.topic == codec.SCHEDULE_TOPIC and codec.PROPERTY_DELAY_TIME_LEVEL in record.properties:
        return None
    return record.tags_code


def entry_matches(entry: ConsumeQueueEntry | None, record: codec.MessageRecord, physical_offset: int) -> bool:
    """Whether `entry` is what the dispatcher writes for `record`, which lies at `physical_offset`."""
    if entry is None or entry.physical_offset != physical_offset or entry.size_bytes != record.total_size:
        return False
    tags_code = expected_tags_code(record)
    return tags_code is None or entry.tags_code == tags_code


class QueueEntryReader:
    """One ConsumeQueue's entries by queue offset, read with pread through a window of ENTRIES_PER_WINDOW.

    Whoever walks the CommitLog meets each queue's records in queue-offset order, so a reader per queue reads
    its files once, in order, whatever the number of queues interleaved in the log. Entries at or past `end`
    (the queue's end, as the caller's rule decides) or in no file are None; pre-blank and invalid entries
    before `end` are returned as they are, for the caller to judge."""

    def __init__(self, queue: SegmentQueue, end: int):
        self.queue = queue
        self.end = end
        self.first = queue.segments[0].file_from_offset // CQ_STORE_UNIT_SIZE if queue.segments else end
        self._per_file = entries_per_file(queue)
        self._file: PreadFile | None = None  # the segment last read: the next window is mostly in it too
        self._window_start = 0
        self._window: tuple[tuple[int, int, int], ...] = ()

    def entry(self, queue_offset: int) -> ConsumeQueueEntry | None:
        if not self.first <= queue_offset < self.end or not self._per_file:
            return None
        position = queue_offset - self._window_start
        if not 0 <= position < len(self._window):
            self._load_window(queue_offset)
            position = 0
            if not self._window:
                return None
        physical_offset, size, tags_code = self._window[position]
        return ConsumeQueueEntry(queue_offset, physical_offset, size, tags_code)

    def last_record_end(self) -> int:
        """Where the record the last entry before `end` names ends (0 without one): how far dispatch got."""
        entry = self.entry(self.end - 1)
        return entry.physical_offset + entry.size_bytes if entry is not None and entry.names_a_record else 0

    def _load_window(self, queue_offset: int) -> None:
        self._window_start = queue_offset
        self._window = tuple(ENTRY.iter_unpack(self._read_entries(queue_offset)))

    def _read_entries(self, queue_offset: int) -> memoryview | bytes:
        """The whole entries from `queue_offset` up to a window's worth, the file's end or `end`, raw."""
        segment = self.queue.segment_for(queue_offset * CQ_STORE_UNIT_SIZE)
        if segment is None:
            return b""
        in_file = queue_offset - segment.file_from_offset // CQ_STORE_UNIT_SIZE
        count = min(ENTRIES_PER_WINDOW, self._per_file - in_file, self.end - queue_offset)
        if self._file is None or self._file.path != segment.path:
            self.close()
            self._file = PreadFile(segment.path)
        data = self._file.read(in_file * CQ_STORE_UNIT_SIZE, count * CQ_STORE_UNIT_SIZE)
        return memoryview(data)[: len(data) - len(data) % CQ_STORE_UNIT_SIZE]

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> QueueEntryReader:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
