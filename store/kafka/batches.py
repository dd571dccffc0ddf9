"""The batches of a Kafka `.log` segment: v2 record batches and legacy v0/v1 messages, read with pread from a
byte position within a byte budget, each checked against its CRC, bad input reported as findings.

A segment is a run of entries that all start with `baseOffset int64, length int32` (LOG_OVERHEAD, 12 bytes)
and have their magic byte at 16; what lies between depends on the magic:

    v2 (DefaultRecordBatch)            v0/v1 (LegacyRecord)
     0 baseOffset int64                 0 offset int64
     8 batchLength int32                8 messageSize int32
    12 partitionLeaderEpoch int32      12 crc uint32 (CRC-32 over magic..end)
    16 magic int8 = 2                  16 magic int8 = 0 | 1
    17 crc uint32 (CRC-32C over 21..)  17 attributes int8 (codec in bits 0-2, v1: timestamp type bit 3)
    21 attributes int16                18 timestamp int64 (v1 only)
    23 lastOffsetDelta int32           18|26 key int32 length + bytes, then value int32 length + bytes
    27 baseTimestamp int64
    35 maxTimestamp int64
    43 producerId int64
    51 producerEpoch int16
    53 baseSequence int32
    57 recordsCount int32
    61 records (compressed as one blob when the codec is not none)

A legacy message whose codec is not none is a wrapper: its value is a compressed message set of inner
messages (v1 inner offsets are relative: the wrapper carries the last inner offset).

Headers are decoded here with struct on memoryviews and CRCs computed in C; records are decoded only when
asked (`store.kafka.records.decode_records`), so a verify or a shallow dump never walks them.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from crc32c import crc32c

from store.kafka.compression import CODEC_NAMES, codec_name
from store.kafka.findings import Finding, FindingKind, KafkaDecodeError
from store.safe_read import PreadFile

LOG_OVERHEAD = 12  # baseOffset + length: what precedes the length-counted bytes of every entry
MAGIC_OFFSET = 16
V2_HEADER = struct.Struct(">qiibIhiqqqhii")
V2_HEADER_BYTES = V2_HEADER.size  # 61: RECORD_BATCH_OVERHEAD
V2_CRC_START = 21  # ATTRIBUTES_OFFSET: the CRC-32C covers [21, end)
LEGACY_HEADER_V0 = struct.Struct(">qiIbb")  # offset, size, crc, magic, attributes
LEGACY_HEADER_V1 = struct.Struct(">qiIbbq")  # ... timestamp
LEGACY_CRC_START = 16  # the CRC-32 covers [magic, end)
LEGACY_MIN_SIZE = (14, 22)  # the smallest messageSize of a v0 / v1 message: header fields and two -1 lengths
V2_MIN_LENGTH = V2_HEADER_BYTES - LOG_OVERHEAD
DEFAULT_WINDOW_BYTES = 4 << 20  # reads of up to 4 MiB, as the rest of the inspection reads

COMPRESSION_MASK = 0x07
TIMESTAMP_TYPE_FLAG = 0x08
TRANSACTIONAL_FLAG = 0x10
CONTROL_FLAG = 0x20
DELETE_HORIZON_FLAG = 0x40
CREATE_TIME, LOG_APPEND_TIME = "CreateTime", "LogAppendTime"
NO_TIMESTAMP = -1


class _Entry:
    """What every entry of a segment has, whatever its magic (both start with offset and length)."""

    __slots__ = ()
    position: int
    length: int
    attributes: int

    @property
    def size_bytes(self) -> int:
        return self.length + LOG_OVERHEAD

    @property
    def next_position(self) -> int:
        return self.position + self.size_bytes

    @property
    def next_offset(self) -> int:
        return self.last_offset + 1

    @property
    def codec(self) -> int:
        return self.attributes & COMPRESSION_MASK

    @property
    def compression(self) -> str:
        return codec_name(self.codec)


@dataclass(frozen=True, slots=True)
class RecordBatch(_Entry):
    """The header of one v2 record batch at `position` of its file; its records stay undecoded."""

    position: int
    base_offset: int
    length: int  # batchLength: the bytes after the length field
    partition_leader_epoch: int
    magic: int
    crc: int  # as stored
    crc_valid: bool  # the CRC-32C of [21, end) equals `crc`
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    record_count: int
    records_data: memoryview = field(repr=False, compare=False)  # the records, compressed or not

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def timestamp_type(self) -> str:
        return LOG_APPEND_TIME if self.attributes & TIMESTAMP_TYPE_FLAG else CREATE_TIME

    @property
    def is_transactional(self) -> bool:
        return bool(self.attributes & TRANSACTIONAL_FLAG)

    @property
    def is_control(self) -> bool:
        return bool(self.attributes & CONTROL_FLAG)

    @property
    def delete_horizon_ms(self) -> int | None:
        """With the delete-horizon flag, baseTimestamp holds the horizon (the log cleaner sets it)."""
        return self.base_timestamp if self.attributes & DELETE_HORIZON_FLAG else None

    @property
    def last_sequence(self) -> int:
        """baseSequence + lastOffsetDelta, wrapping at INT32_MAX as Kafka's incrementSequence does."""
        if self.base_sequence == -1:
            return -1
        return (self.base_sequence + self.last_offset_delta) % (1 << 31)


@dataclass(frozen=True, slots=True)
class LegacyMessage(_Entry):
    """One top-level v0/v1 message at `position` (a wrapper when compressed: its value holds the inner
    message set, decoded by decode_records)."""

    position: int
    offset: int  # a wrapper's is the offset of its last inner message
    length: int  # messageSize: the bytes after the length field
    crc: int
    crc_valid: bool  # the CRC-32 of [magic, end) equals `crc`
    magic: int
    attributes: int
    timestamp: int  # -1 for v0 (no timestamp)
    key: bytes | None
    value: bytes | None

    @property
    def last_offset(self) -> int:
        return self.offset

    @property
    def timestamp_type(self) -> str | None:
        if self.magic == 0:
            return None
        return LOG_APPEND_TIME if self.attributes & TIMESTAMP_TYPE_FLAG else CREATE_TIME

    @property
    def is_wrapper(self) -> bool:
        return self.codec != 0


LogEntry = RecordBatch | LegacyMessage


def decode_batch_header(buf, position: int = 0, *, buffer_start: int = 0) -> LogEntry:
    """The entry at `position` of `buf`, which must hold all of it; `buffer_start` is where `buf` lies in
    its file (entries carry file positions). Raises KafkaDecodeError (position relative to `buf`) for an
    entry that is cut short, of an impossible length or of an unknown magic."""
    if position < 0:
        raise ValueError(f"negative position {position}")
    available = len(buf) - position
    if available < LOG_OVERHEAD + 5:
        raise KafkaDecodeError(
            FindingKind.TRUNCATED_HEADER, f"{available} bytes: too few for a batch header", position
        )
    length = int.from_bytes(buf[position + 8 : position + 12], "big", signed=True)
    magic = buf[position + MAGIC_OFFSET]
    minimum = V2_MIN_LENGTH if magic == 2 else LEGACY_MIN_SIZE[magic] if magic < 2 else 0
    if magic > 2:
        raise KafkaDecodeError(
            FindingKind.UNKNOWN_MAGIC, f"magic {magic} (Kafka writes 0, 1 and 2)", position
        )
    if length < minimum:
        raise KafkaDecodeError(
            FindingKind.BAD_LENGTH,
            f"batch length {length}: a magic {magic} batch takes {minimum} at least",
            position,
        )
    if length + LOG_OVERHEAD > available:
        raise KafkaDecodeError(
            FindingKind.LENGTH_PAST_END,
            f"batch length {length} reaches {length + LOG_OVERHEAD - available} bytes past the end",
            position,
        )
    view = buf if isinstance(buf, memoryview) else memoryview(buf)
    if magic == 2:
        return _v2_batch(view, position, length, buffer_start)
    return _legacy_message(view, position, length, magic, buffer_start)


def _v2_batch(view: memoryview, position: int, length: int, buffer_start: int) -> RecordBatch:
    return _v2_from_header(V2_HEADER.unpack_from(view, position), view, position, buffer_start)


def _v2_from_header(fields: tuple, view: memoryview, position: int, buffer_start: int) -> RecordBatch:
    """The batch whose unpacked V2_HEADER is `fields`, at `position` of `view` (which holds all of it)."""
    end = position + LOG_OVERHEAD + fields[1]
    crc = fields[4]
    return RecordBatch(
        buffer_start + position,
        fields[0],
        fields[1],
        fields[2],
        2,
        crc,
        crc32c(view[position + V2_CRC_START : end]) == crc,
        *fields[5:],
        view[position + V2_HEADER_BYTES : end],
    )


def _legacy_message(
    view: memoryview, position: int, length: int, magic: int, buffer_start: int
) -> LegacyMessage:
    if magic == 0:
        offset, _, crc, _, attributes = LEGACY_HEADER_V0.unpack_from(view, position)
        timestamp, cursor = NO_TIMESTAMP, position + LEGACY_HEADER_V0.size
    else:
        offset, _, crc, _, attributes, timestamp = LEGACY_HEADER_V1.unpack_from(view, position)
        cursor = position + LEGACY_HEADER_V1.size
    end = position + LOG_OVERHEAD + length
    key, cursor = _legacy_bytes(view, cursor, end, "key")
    value, cursor = _legacy_bytes(view, cursor, end, "value")
    if cursor != end:
        raise KafkaDecodeError(
            FindingKind.BAD_RECORD, f"{end - cursor} bytes after the value of a magic {magic} message", cursor
        )
    crc_valid = zlib.crc32(view[position + LEGACY_CRC_START : end]) == crc
    return LegacyMessage(
        buffer_start + position,
        offset,
        length,
        crc,
        crc_valid,
        magic,
        attributes & 0xFF,
        timestamp,
        key,
        value,
    )


def _legacy_bytes(view: memoryview, cursor: int, end: int, what: str) -> tuple[bytes | None, int]:
    if cursor + 4 > end:
        raise KafkaDecodeError(FindingKind.BAD_RECORD, f"the {what} length runs past the message", cursor)
    size = int.from_bytes(view[cursor : cursor + 4], "big", signed=True)
    cursor += 4
    if size == -1:
        return None, cursor
    if size < 0 or cursor + size > end:
        raise KafkaDecodeError(
            FindingKind.BAD_RECORD, f"a {what} of {size} bytes runs past the message", cursor
        )
    return bytes(view[cursor : cursor + size]), cursor + size


def entry_findings(path: Path, entry: LogEntry) -> tuple[Finding, ...]:
    """What is wrong with a decoded entry itself: its CRC, an unknown codec."""
    findings = []
    if not entry.crc_valid:
        checksum = "CRC-32C" if entry.magic == 2 else "CRC-32"
        findings.append(
            Finding(
                path, entry.position, FindingKind.CRC_MISMATCH, f"{checksum} mismatch: stored {entry.crc}"
            )
        )
    if entry.codec >= len(CODEC_NAMES) or (entry.codec == 4 and entry.magic < 2):
        findings.append(
            Finding(
                path, entry.position, FindingKind.UNKNOWN_CODEC, f"{entry.compression} (magic {entry.magic})"
            )
        )
    return tuple(findings)


class LogReader:
    """The entries of one `.log` file from byte `start`, reading no byte past `start + max_bytes` (nor past
    the file's size when the reader was made: a growing file's later batches are the next reader's).

    Iterating yields RecordBatch and LegacyMessage entries in file order, each followed by the findings
    about it (CRC mismatch, unknown codec); an entry that cannot be read (cut short, a length past the
    end, an impossible length, an unknown magic) ends the iteration with its finding. Afterwards
    `position` is where reading stopped and `stopped` says why: "end" (the end of the file), "budget"
    (the next entry reaches past max_bytes) or "finding". `bytes_read` counts the bytes pread returned.

    Reads are `window_bytes` long; with `first_window_bytes`, the first is that long and each next one
    twice the last, up to `window_bytes`: a reader that stops after a few entries (`dump --count`) reads
    less than four times what they take (the reads add up to under twice the last one, which is under
    twice what was needed), and hands the first over before a whole window is read.
    """

    def __init__(
        self,
        path: Path,
        *,
        start: int = 0,
        max_bytes: int | None = None,
        window_bytes: int = DEFAULT_WINDOW_BYTES,
        first_window_bytes: int | None = None,
    ):
        if start < 0 or (max_bytes is not None and max_bytes < 0):
            raise ValueError("start and max_bytes are positions and sizes: not negative")
        self.path = Path(path)
        self.start = start
        self.max_bytes = max_bytes
        self.window_bytes = window_bytes
        self._next_window_bytes = min(first_window_bytes or window_bytes, window_bytes)
        self.position = start
        self.stopped: str | None = None
        self.bytes_read = 0

    def __iter__(self) -> Iterator[LogEntry | Finding]:
        unpack_v2_header = V2_HEADER.unpack_from
        with PreadFile(self.path) as file:
            file_end = file.size()
            limit = file_end if self.max_bytes is None else min(file_end, self.start + self.max_bytes)
            window = memoryview(b"")
            window_start = self.position
            while True:
                position = self.position
                if position >= limit:
                    self.stopped = "end" if position >= file_end else "budget"
                    return
                have = window_start + len(window) - position
                if have >= V2_HEADER_BYTES:  # the common case first: a whole v2 batch in the window
                    at = position - window_start
                    fields = unpack_v2_header(window, at)
                    size = LOG_OVERHEAD + fields[1]
                    if fields[3] == 2 and V2_HEADER_BYTES <= size <= have:
                        batch = _v2_from_header(fields, window, at, window_start)
                        yield batch
                        if not batch.crc_valid or fields[5] & COMPRESSION_MASK >= len(CODEC_NAMES):
                            yield from entry_findings(self.path, batch)
                        self.position = position + size
                        continue
                if have < LOG_OVERHEAD + 5:
                    window = self._read(file, window, position - window_start, limit, LOG_OVERHEAD + 5)
                    window_start = position
                    have = len(window)
                    if have < LOG_OVERHEAD + 5 and limit < file_end:
                        self.stopped = "budget"  # the budget ends inside the next header
                        return
                if have >= LOG_OVERHEAD:
                    at = position - window_start
                    size = LOG_OVERHEAD + int.from_bytes(window[at + 8 : at + 12], "big", signed=True)
                    if have < size <= limit - position:
                        window, window_start = self._read(file, window, at, limit, size), position
                    elif size > limit - position and limit < file_end:
                        self.stopped = "budget"  # the entry ends past the budget: not read, not a finding
                        return
                try:
                    entry = decode_batch_header(window, position - window_start, buffer_start=window_start)
                except KafkaDecodeError as error:
                    self.stopped = "finding"
                    yield Finding.from_error(self.path, error, window_start)
                    return
                yield entry
                yield from entry_findings(self.path, entry)
                self.position = entry.next_position

    def _read(self, file: PreadFile, window: memoryview, at: int, limit: int, at_least: int) -> memoryview:
        """The next window, from `at` in the current one (whose start is the reader's position). While the
        windows grow, the bytes of the current one from `at` on are kept, not read again: no byte is read
        twice, so the bytes read add up to no more than max_bytes. Full windows read their start again
        (a partial entry, copied less often than a whole window would be)."""
        position = self.position
        size = min(max(self._next_window_bytes, at_least), limit - position)
        kept = window[at:] if self._next_window_bytes < self.window_bytes and 0 <= at < len(window) else b""
        self._next_window_bytes = min(self._next_window_bytes * 2, self.window_bytes)
        data = file.read(position + len(kept), size - len(kept))
        self.bytes_read += len(data)
        return memoryview(bytes(kept) + data if kept else data)


@dataclass(frozen=True, slots=True)
class LogScan:
    """All that a LogReader yielded, for small files and tests."""

    entries: tuple[LogEntry, ...]
    findings: tuple[Finding, ...]
    end_position: int
    stopped: str


def scan_log(path: Path, *, start: int = 0, max_bytes: int | None = None) -> LogScan:
    reader = LogReader(path, start=start, max_bytes=max_bytes)
    entries, findings = [], []
    for item in reader:
        (findings if isinstance(item, Finding) else entries).append(item)
    return LogScan(tuple(entries), tuple(findings), reader.position, reader.stopped or "end")
