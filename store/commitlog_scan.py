"""Walk a CommitLog's records read-only, the way RocketMQ's recovery and reput threads walk it.

Reads go through pread windows (never mmap), so a segment that another process truncates or deletes while we
read ends the walk with a note instead of a SIGBUS. The walk follows `checkMessageAndReturnSize`:
- a BLANK record ends a segment, and the walk rolls to the next one (`rollNextFile`);
- zeros where a record should start are the end of the written data;
- anything else that does not decode is corruption, and the walk stops there, as recovery does.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from store import codec
from store.errors import CorruptRecord
from store.layout import SegmentFile, SegmentQueue
from store.run_columns import RunColumns, decode_columns
from store.safe_read import PreadFile

WINDOW_BYTES = 4 << 20
_SIZE_AND_MAGIC = struct.Struct(">iI")
_MESSAGE_MAGIC_CODES = frozenset(version.magic_code for version in codec.MessageVersion)


class SegmentEndReason(StrEnum):
    BLANK = "blank"  # the END_OF_FILE marker: the next record is in the next segment
    ZEROS = "zeros"  # nothing written here yet: the end of the log
    FILE_END = "file-end"  # fewer than 8 bytes left in the segment
    SHRUNK = "shrunk"  # the file became shorter while we read it (truncated or deleted by its owner)


@dataclass(frozen=True)
class ScannedRecord:
    physical_offset: int
    record: codec.MessageRecord


@dataclass(frozen=True)
class ChainedRecords:
    """Back-to-back records known by their TOTALSIZE and MAGICCODE only (a `headers_only` scan reads nothing
    else): `count` records from `physical_offset` to `end_offset`, the last one at `last_offset`."""

    physical_offset: int
    end_offset: int
    count: int
    last_offset: int

    @property
    def last_size(self) -> int:
        return self.end_offset - self.last_offset


@dataclass(frozen=True)
class DecodedRun:
    """Back-to-back message records decoded in one go (a scan with `run_records`), from `physical_offset` to
    `end_offset`: each `codec.RunRecord`'s positions are offsets into `data`, which starts at
    `physical_offset` (the read window, for the bodies)."""

    physical_offset: int
    end_offset: int
    records: list[codec.RunRecord]
    data: memoryview


@dataclass(frozen=True)
class DecodedColumns:
    """A `DecodedRun` decoded as columns (a scan with `run_columns`): `columns`' positions are offsets into
    `data`, which starts at `physical_offset`."""

    physical_offset: int
    end_offset: int
    columns: RunColumns
    data: memoryview


@dataclass(frozen=True)
class SegmentEnd:
    physical_offset: int
    segment: Path
    reason: SegmentEndReason
    blank_bytes: int | None = None  # the BLANK record's TOTALSIZE: the rest of the segment


@dataclass(frozen=True)
class ScanFailure:
    physical_offset: int
    error: CorruptRecord


ScanEvent = ScannedRecord | ChainedRecords | DecodedRun | DecodedColumns | SegmentEnd | ScanFailure


@dataclass(frozen=True)
class _ScanOptions:
    check_crc: bool
    read_body: bool
    headers_only: bool
    window_bytes: int
    run_records: int
    first_window_bytes: int | None
    run_columns: bool


def scan_commitlog(
    queue: SegmentQueue,
    from_offset: int | None = None,
    *,
    check_crc: bool = True,
    read_body: bool = True,
    headers_only: bool = False,
    window_bytes: int | None = None,
    run_records: int = 0,
    first_window_bytes: int | None = None,
    run_columns: bool = False,
) -> Iterator[ScanEvent]:
    """Records from `from_offset` (default: the first segment's start) to the end of the log or the first
    failure. Each segment that ends is reported once, with why it ended.

    `headers_only` follows the chain of TOTALSIZE fields (each checked for a message MAGICCODE and a size
    that fits) and yields ChainedRecords, one per run of records in a read window: for a caller that only
    needs where the records end, at a small part of the cost of decoding them. `window_bytes` (default
    WINDOW_BYTES) caps each read; holes in a sparse segment are never read.

    `run_records` > 0 decodes the valid message records of a read window in one go (`codec.decode_run`) and
    yields DecodedRun events of up to that many records; a record the run stops at is decoded alone, as
    without it (a ScannedRecord, or what went wrong); with `run_columns` too, a run of records of the common
    shape comes as DecodedColumns (`run_columns.decode_columns`: no object per record). `first_window_bytes`
    makes the first read of each segment that short, each next one twice as long up to `window_bytes`: a
    reader that may want only a few records reads little more than them.
    """
    if not queue.segments or not queue.file_size:
        return
    options = _ScanOptions(
        check_crc,
        read_body,
        headers_only,
        window_bytes or WINDOW_BYTES,
        run_records,
        first_window_bytes,
        run_columns,
    )
    start = queue.segments[0].file_from_offset if from_offset is None else from_offset
    for segment in queue.segments:
        if segment.file_from_offset + queue.file_size <= start:
            continue
        position = max(0, start - segment.file_from_offset)
        last_event = None
        for last_event in _scan_segment(segment, queue.file_size, position, options):
            yield last_event
        if not (isinstance(last_event, SegmentEnd) and last_event.reason is SegmentEndReason.BLANK):
            return  # only a BLANK marker says the log goes on in the next segment


def _scan_segment(
    segment: SegmentFile, file_size: int, position: int, options: _ScanOptions
) -> Iterator[ScanEvent]:
    with PreadFile(segment.path) as file:
        window = _Window(file, options.window_bytes, options.first_window_bytes)
        while True:
            absolute = segment.file_from_offset + position
            if file_size - position < codec.END_FILE_MIN_BLANK_LENGTH:
                yield SegmentEnd(absolute, segment.path, SegmentEndReason.FILE_END)
                return
            head = window.view(position, _SIZE_AND_MAGIC.size)
            if len(head) < _SIZE_AND_MAGIC.size:
                yield SegmentEnd(absolute, segment.path, SegmentEndReason.SHRUNK)
                return
            total_size, magic = _SIZE_AND_MAGIC.unpack(head)
            if magic == codec.BLANK_MAGIC_CODE:
                yield SegmentEnd(absolute, segment.path, SegmentEndReason.BLANK, total_size)
                return
            if total_size == 0 and magic == 0:
                yield SegmentEnd(absolute, segment.path, SegmentEndReason.ZEROS)
                return
            if options.headers_only:
                event = _chained(window, segment, file_size, position)
            elif options.run_records:
                event = _decoded_run(window, segment, file_size, position, total_size, options)
            else:
                event = _decode(window, segment, file_size, position, total_size, options)
            yield event
            if isinstance(event, ChainedRecords | DecodedRun | DecodedColumns):
                position = event.end_offset - segment.file_from_offset
            elif isinstance(event, ScannedRecord):
                position += total_size
            else:
                return


def _fits(total_size: int, left: int) -> bool:
    """Whether a TOTALSIZE can be a record's with `left` bytes left in the segment."""
    return 0 < total_size <= min(codec.DEFAULT_MAX_RECORD_SIZE, left)


def _bad_size(segment: SegmentFile, file_size: int, position: int, total_size: int) -> ScanFailure:
    absolute = segment.file_from_offset + position
    reason = f"TOTALSIZE {total_size} does not fit the {file_size - position} bytes left in the segment"
    return ScanFailure(
        absolute, CorruptRecord(reason, path=str(segment.path), offset=absolute, field="TOTALSIZE")
    )


def _chained(window: _Window, segment: SegmentFile, file_size: int, position: int) -> ScanEvent:
    """The records that follow each other from `position` within the read window (one at least), or why the
    one at `position` is not a record. A tight loop: no object per record."""
    data, start = window.rest(position)
    unpack, offset, last, count = _SIZE_AND_MAGIC.unpack_from, 0, None, 0
    limit = min(len(data), file_size - position) - _SIZE_AND_MAGIC.size  # where a header still fits
    while offset <= limit:
        total_size, magic = unpack(data, offset)
        if magic not in _MESSAGE_MAGIC_CODES or not _fits(total_size, file_size - position - offset):
            break
        last, offset, count = offset, offset + total_size, count + 1
    if last is not None:
        absolute = segment.file_from_offset + start
        return ChainedRecords(absolute, absolute + offset, count, absolute + last)
    total_size, magic = unpack(data, 0)
    if magic in _MESSAGE_MAGIC_CODES:  # so its size is what stopped the loop
        return _bad_size(segment, file_size, position, total_size)
    absolute = segment.file_from_offset + position
    reason = f"illegal magic code 0x{magic:08X}"  # codec's words for it
    return ScanFailure(
        absolute, CorruptRecord(reason, path=str(segment.path), offset=absolute, field="MAGICCODE")
    )


def _decoded_run(
    window: _Window,
    segment: SegmentFile,
    file_size: int,
    position: int,
    total_size: int,
    options: _ScanOptions,
) -> ScanEvent:
    """The valid records from `position` on in the read window, decoded in one go; the record there alone
    (`_decode`) when the run stops at it."""
    data, start = window.rest(position)
    limit = min(len(data), file_size - start)
    absolute = segment.file_from_offset + start
    if options.run_columns:
        columns = decode_columns(data, 0, limit, check_crc=options.check_crc, max_records=options.run_records)
        if columns is not None:
            return DecodedColumns(absolute, absolute + columns.end, columns, data)
    records, end = codec.decode_run(
        data, 0, limit, check_crc=options.check_crc, max_records=options.run_records
    )
    if not records:
        return _decode(window, segment, file_size, position, total_size, options)
    return DecodedRun(absolute, absolute + end, records, data)


def _decode(
    window: _Window,
    segment: SegmentFile,
    file_size: int,
    position: int,
    total_size: int,
    options: _ScanOptions,
) -> ScanEvent:
    absolute = segment.file_from_offset + position
    if not _fits(total_size, file_size - position):
        return _bad_size(segment, file_size, position, total_size)
    data = window.view(position, total_size)
    if len(data) < total_size and window.file.size() < file_size:
        return SegmentEnd(absolute, segment.path, SegmentEndReason.SHRUNK)
    try:
        record = codec.decode_record(
            data,
            0,
            path=str(segment.path),
            base_offset=absolute,
            check_crc=options.check_crc,
            read_body=options.read_body,
        )
    except CorruptRecord as error:
        return ScanFailure(absolute, error)
    return ScannedRecord(absolute, record)


class _Window:
    """A sliding pread window over one file, so small records cost no syscall each.

    A window stops where a hole of a sparse file begins, and a hole is never read (it reads as zeros by
    definition): reading one would add zero-filled pages to the page cache, ahead of the broker that
    preallocated the segment, and the residency shown next to it would count them.
    """

    def __init__(self, file: PreadFile, window_bytes: int, first_window_bytes: int | None = None):
        self.file = file
        self.window_bytes = window_bytes
        # the next read's length: growing from first_window_bytes (if given) to window_bytes
        self._read_bytes = min(first_window_bytes or window_bytes, window_bytes)
        self._start = 0
        self._data = b""

    def view(self, position: int, length: int) -> memoryview:
        if not (self._start <= position and position + length <= self._start + len(self._data)):
            data_ends = self.file.data_end(position)
            if data_ends is not None and data_ends <= position:
                self._data = bytes(length)  # a hole
            else:
                wanted = (
                    self._read_bytes if data_ends is None else min(self._read_bytes, data_ends - position)
                )
                self._data = self.file.read(position, max(wanted, length))
                self._read_bytes = min(self._read_bytes * 2, self.window_bytes)
            self._start = position
        offset = position - self._start
        return memoryview(self._data)[offset : offset + length]

    def rest(self, position: int) -> tuple[memoryview, int]:
        """The window's bytes from `position` on (a header at least, when the file has one there)."""
        self.view(position, _SIZE_AND_MAGIC.size)
        return memoryview(self._data)[position - self._start :], position
