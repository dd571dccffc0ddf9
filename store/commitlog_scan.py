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
from store.safe_read import PreadFile

WINDOW_BYTES = 4 << 20
_SIZE_AND_MAGIC = struct.Struct(">iI")


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
class SegmentEnd:
    physical_offset: int
    segment: Path
    reason: SegmentEndReason
    blank_bytes: int | None = None  # the BLANK record's TOTALSIZE: the rest of the segment


@dataclass(frozen=True)
class ScanFailure:
    physical_offset: int
    error: CorruptRecord


ScanEvent = ScannedRecord | SegmentEnd | ScanFailure


def scan_commitlog(
    queue: SegmentQueue, from_offset: int | None = None, *, check_crc: bool = True, read_body: bool = True
) -> Iterator[ScanEvent]:
    """Records from `from_offset` (default: the first segment's start) to the end of the log or the first
    failure. Each segment that ends is reported once, with why it ended."""
    if not queue.segments or not queue.file_size:
        return
    start = queue.segments[0].file_from_offset if from_offset is None else from_offset
    for segment in queue.segments:
        if segment.file_from_offset + queue.file_size <= start:
            continue
        position = max(0, start - segment.file_from_offset)
        last_event = None
        for last_event in _scan_segment(segment, queue.file_size, position, check_crc, read_body):
            yield last_event
        if not (isinstance(last_event, SegmentEnd) and last_event.reason is SegmentEndReason.BLANK):
            return  # only a BLANK marker says the log goes on in the next segment


def _scan_segment(
    segment: SegmentFile, file_size: int, position: int, check_crc: bool, read_body: bool
) -> Iterator[ScanEvent]:
    with PreadFile(segment.path) as file:
        window = _Window(file)
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
            event = _decode(window, segment, file_size, position, total_size, check_crc, read_body)
            yield event
            if not isinstance(event, ScannedRecord):
                return
            position += total_size


def _decode(
    window: _Window,
    segment: SegmentFile,
    file_size: int,
    position: int,
    total_size: int,
    check_crc: bool,
    read_body: bool,
) -> ScanEvent:
    absolute = segment.file_from_offset + position
    if not 0 < total_size <= min(codec.DEFAULT_MAX_RECORD_SIZE, file_size - position):
        reason = f"TOTALSIZE {total_size} does not fit the {file_size - position} bytes left in the segment"
        return ScanFailure(
            absolute, CorruptRecord(reason, path=str(segment.path), offset=absolute, field="TOTALSIZE")
        )
    data = window.view(position, total_size)
    if len(data) < total_size and window.file.size() < file_size:
        return SegmentEnd(absolute, segment.path, SegmentEndReason.SHRUNK)
    try:
        record = codec.decode_record(
            data, 0, path=str(segment.path), base_offset=absolute, check_crc=check_crc, read_body=read_body
        )
    except CorruptRecord as error:
        return ScanFailure(absolute, error)
    return ScannedRecord(absolute, record)


class _Window:
    """A sliding pread window over one file, so small records cost no syscall each."""

    def __init__(self, file: PreadFile):
        self.file = file
        self._start = 0
        self._data = b""

    def view(self, position: int, length: int) -> memoryview:
        if not (self._start <= position and position + length <= self._start + len(self._data)):
            self._data = self.file.read(position, max(WINDOW_BYTES, length))
            self._start = position
        offset = position - self._start
        return memoryview(self._data)[offset : offset + length]
