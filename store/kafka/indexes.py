"""A segment's index files: `.index` (OffsetIndex), `.timeindex` (TimeIndex) and `.txnindex` (AbortedTxn).

    .index      8-byte entries: relativeOffset int32 (offset - base offset), position int32 in the .log
    .timeindex  12-byte entries: timestamp int64, relativeOffset int32
    .txnindex   34-byte entries: version int16, producerId int64, firstOffset int64, lastOffset int64,
                lastStableOffset int64

An active segment's offset and time indexes are preallocated and zero-filled (AbstractIndex), so the entries
end at the first all-zero entry after the first (as DumpLogSegments stops; a time index's first entry too,
a timestamp of 0 being no timestamp a broker writes). A length that is not a multiple of the entry size is
a finding; the whole entries before it are still read.
"""

from __future__ import annotations

import bisect
import struct
from dataclasses import dataclass
from pathlib import Path

from store.kafka.findings import FileRead, Finding, FindingKind
from store.safe_read import PreadFile

OFFSET_ENTRY = struct.Struct(">ii")
TIME_ENTRY = struct.Struct(">qi")
TXN_ENTRY = struct.Struct(">hqqqq")
MAX_INDEX_BYTES = 1 << 31  # an index is mmapped by Kafka: never over 2 GiB


@dataclass(frozen=True, slots=True)
class OffsetIndexEntry:
    offset: int  # absolute: base offset + relative offset
    position: int


@dataclass(frozen=True, slots=True)
class TimeIndexEntry:
    timestamp: int
    offset: int  # absolute


@dataclass(frozen=True, slots=True)
class AbortedTxn:
    version: int
    producer_id: int
    first_offset: int
    last_offset: int
    last_stable_offset: int


@dataclass(frozen=True, slots=True)
class IndexContents:
    """The entries of one index file, and how many bytes of it they take."""

    entries: tuple
    entry_bytes: int  # entries x entry size: where the entries end (the rest is preallocated zeros or bad)
    file_bytes: int


def decode_offset_index(data: bytes, base_offset: int) -> tuple[OffsetIndexEntry, ...]:
    entries = []
    for index, (relative, position) in enumerate(_whole_entries(OFFSET_ENTRY, data)):
        if index > 0 and relative == 0 and position == 0:
            break
        entries.append(OffsetIndexEntry(base_offset + relative, position))
    return tuple(entries)


def decode_time_index(data: bytes, base_offset: int) -> tuple[TimeIndexEntry, ...]:
    entries = []
    for timestamp, relative in _whole_entries(TIME_ENTRY, data):
        if timestamp == 0 and relative == 0:
            break
        entries.append(TimeIndexEntry(timestamp, base_offset + relative))
    return tuple(entries)


def decode_txn_index(data: bytes) -> tuple[AbortedTxn, ...]:
    return tuple(AbortedTxn(*fields) for fields in _whole_entries(TXN_ENTRY, data))


def _whole_entries(entry: struct.Struct, data: bytes):
    usable = len(data) - len(data) % entry.size
    return entry.iter_unpack(memoryview(data)[:usable])


def read_offset_index(path: Path, base_offset: int) -> FileRead[IndexContents]:
    return _read_index(path, OFFSET_ENTRY.size, lambda data: decode_offset_index(data, base_offset))


def read_time_index(path: Path, base_offset: int) -> FileRead[IndexContents]:
    return _read_index(path, TIME_ENTRY.size, lambda data: decode_time_index(data, base_offset))


def read_txn_index(path: Path) -> FileRead[IndexContents]:
    return _read_index(path, TXN_ENTRY.size, decode_txn_index)


def _read_index(path: Path, entry_size: int, decode) -> FileRead[IndexContents]:
    path = Path(path)
    with PreadFile(path) as file:
        size = file.size()
        data = file.read(0, min(size, MAX_INDEX_BYTES))
    entries = decode(data)
    findings = ()
    if len(data) % entry_size:
        whole = len(data) - len(data) % entry_size
        findings = (
            Finding(
                path,
                whole,
                FindingKind.INDEX_SIZE,
                f"{len(data)} bytes: not a multiple of the {entry_size}-byte entry"
                f" ({len(data) % entry_size} left over)",
            ),
        )
    return FileRead(IndexContents(entries, len(entries) * entry_size, size), findings)


def position_for_offset(entries: tuple[OffsetIndexEntry, ...], offset: int) -> int:
    """Where to start reading a segment for `offset` (OffsetIndex.lookup): the position of the greatest
    entry whose offset is at most `offset`, or 0 (the segment's start) when there is none."""
    index = bisect.bisect_right(entries, offset, key=lambda entry: entry.offset)
    return entries[index - 1].position if index else 0


def offset_for_time(entries: tuple[TimeIndexEntry, ...], timestamp: int, base_offset: int) -> int:
    """The offset to search from for the first record at or after `timestamp` (TimeIndex.lookup): that of
    the greatest entry whose timestamp is below `timestamp`, or the segment's base offset."""
    index = bisect.bisect_left(entries, timestamp, key=lambda entry: entry.timestamp)
    return entries[index - 1].offset if index else base_offset
