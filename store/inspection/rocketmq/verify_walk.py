"""The CommitLog walk of `store verify`: every record decoded and CRC checked, at block speed.

The walk reads each segment in blocks of BLOCK_BYTES with pread (so a segment truncated under it ends a read
early, never with SIGBUS) and decodes the records inside a block in one tight loop: the header in one
struct call, the body CRC (and a `__CRC32#` tail's whole-record CRC) with masked_crc32 on slices, the topic
as text, the properties as their bytes, checked to be UTF-8 (the checks read the few properties they need
from them: parsing every record's into a dict cost more than the rest of the walk). It accepts a record
only when every check codec.decode_record makes (with check_crc, as scan_commitlog calls it) passes on it.
Anything else, a blank, zeros, a hole, the end of a file, a record that does not decode, an IPv6 host
layout, is handed to scan_commitlog at that offset, which says exactly what it says when it walks the whole
log: the same events, the same errors with the same offsets.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from store import codec
from store.commitlog_scan import ScanFailure, ScannedRecord, SegmentEnd, SegmentEndReason, scan_commitlog
from store.inspection.rocketmq.reading import LogEnd, LogEndReason, Walk, log_end_of, queue_of_one
from store.java_checksums import masked_crc32
from store.layout import SegmentFile, SegmentQueue
from store.safe_read import PreadFile

BLOCK_BYTES = 4 << 20
# What the exact path reads around a record it is handed: one record, usually.
DELEGATE_WINDOW_BYTES = 64 << 10

# The IPv4 layout's fixed header up to the body length, keeping only what verify checks: TOTALSIZE,
# MAGICCODE, BODYCRC, QUEUEID, (FLAG), QUEUEOFFSET, PHYSICALOFFSET, SYSFLAG, (born time and host, store
# time and host, reconsume times, prepared offset), BODY length.
_HEADER = struct.Struct(">iIii4xqqi44xi")
_IPV6_FLAGS = codec.BORNHOST_V6_FLAG | codec.STOREHOSTADDRESS_V6_FLAG
_V1, _V2 = codec.MESSAGE_MAGIC_CODE_V1, codec.MESSAGE_MAGIC_CODE_V2
_SMALLEST_RECORD = _HEADER.size + 1 + 2
_CRC32_PREFIX = (codec.PROPERTY_CRC32 + codec.NAME_VALUE_SEPARATOR).encode("ascii")
_CRC32_TAIL = codec.CRC32_RESERVED_LEN

# What the walk passes on for each record: (physical offset, its PHYSICALOFFSET field, topic, queue id,
# queue offset, size, sysflag, properties), in lists of a block's records. The properties are the record's
# raw bytes (valid UTF-8) from the block walk, a dict from the exact path: `properties_of` reads either.
RecordFields = tuple[int, int, str, int, int, int, int, bytes | dict]
RecordsCallback = Callable[[list[RecordFields]], None]
_DIGITS = frozenset(b"0123456789")


def walk_for_verify(queue: SegmentQueue, on_records: RecordsCallback, block_bytes: int = BLOCK_BYTES) -> Walk:
    """walk_commitlog(queue, first segment's start, check_crc=True), passing the records to `on_records` a
    block at a time, as RecordFields: the same records, blanks and end."""
    start = queue.segments[0].file_from_offset if queue.segments else 0
    if not queue.segments or not queue.file_size:
        return Walk(0, (), LogEnd(start, LogEndReason.NO_SEGMENTS, None))
    records, blanks, end = 0, [], None
    for at, segment in enumerate(queue.segments):
        if at + 1 < len(queue.segments):  # its first block comes off the disk while this segment is walked
            with PreadFile(queue.segments[at + 1].path) as following:
                following.will_need(0, block_bytes)
        walked, end = _walk_segment(queue, segment, on_records, block_bytes)
        records += walked
        if not (isinstance(end, SegmentEnd) and end.reason is SegmentEndReason.BLANK):
            break
        blanks.append(end)
    return Walk(records, tuple(blanks), log_end_of(end))


def record_fields(event: ScannedRecord) -> RecordFields:
    """A record the exact path decoded, as RecordFields."""
    record = event.record
    return (
        event.physical_offset, record.physical_offset, record.topic, record.queue_id, record.queue_offset,
        record.total_size, record.sysflag, record.properties,
    )  # fmt: skip


def properties_of(properties: bytes | dict) -> dict:
    """A record's properties as codec.string_to_properties gives them, from RecordFields' last field."""
    return properties if type(properties) is dict else codec.string_to_properties(properties.decode())


def _walk_segment(
    queue: SegmentQueue, segment: SegmentFile, on_records: RecordsCallback, block_bytes: int
) -> tuple[int, SegmentEnd | ScanFailure]:
    """The records of one segment from its start, and the event that ends it."""
    file_size, base = queue.file_size, segment.file_from_offset
    records, position = 0, 0
    with PreadFile(segment.path) as file:
        while True:
            block = _refill(file, position, file_size, block_bytes)
            if len(block) == block_bytes:  # the next block comes off the disk while this one is decoded
                file.will_need(position + block_bytes, block_bytes)
            decoded, used, at_block_end = _decode_block(block, base + position, file_size - position)
            if decoded:
                on_records(decoded)
                records += len(decoded)
                position += used
                if at_block_end:
                    continue  # read the next block from the next record
            # Something the fast path does not take (or a record no block holds whole): the exact path
            # says what it is.
            event = _exact_event(queue, segment, base + position)
            if not isinstance(event, ScannedRecord):
                return records, event
            on_records([record_fields(event)])
            records += 1
            position += event.record.total_size


def _refill(file: PreadFile, position: int, file_size: int, block_bytes: int) -> bytes:
    """The file's bytes from `position`, up to a block, never into a hole (a hole is zeros by definition:
    reading one would only add zero pages to the page cache; the exact path reports the end there)."""
    data_end = file.data_end(position)
    if data_end is not None and data_end <= position:
        return b""
    wanted = block_bytes if data_end is None else min(block_bytes, data_end - position)
    return file.read(position, min(wanted, file_size - position))


def _decode_block(block: bytes, base: int, left: int) -> tuple[list[RecordFields], int, bool]:
    """The records from the start of `block` (at physical offset `base`, `left` bytes before the segment's
    end) that codec.decode_record(check_crc=True) accepts for sure, up to the first it would not (or might
    not) accept or that the block does not hold whole; how many bytes they take; and whether they end
    because the block does (True) or at a record the fast path does not take.

    The properties are left as their bytes (checked to be UTF-8), for the checks to read what they need.
    (The body CRCs computed after the loop, in one C pass over slices, cost more per record than here.)"""
    decoded: list[RecordFields] = []
    append = decoded.append
    view = memoryview(block)
    unpack_header = _HEADER.unpack_from
    topics: dict[bytes, str] = {}
    digits, header_size, max_size = _DIGITS, _HEADER.size, codec.DEFAULT_MAX_RECORD_SIZE
    v1, v2, smallest, ipv6_flags, crc32 = _V1, _V2, _SMALLEST_RECORD, _IPV6_FLAGS, masked_crc32
    end, at, at_block_end = len(block), 0, False
    last_start = end - header_size  # where a header still fits in the block
    while True:
        if at > last_start:
            at_block_end = True
            break
        total, magic, body_crc, queue_id, queue_offset, stored, sysflag, body_length = unpack_header(
            block, at
        )
        record_end = at + total
        if magic == v2:
            topic_length_size = 2
        elif magic == v1:
            topic_length_size = 1
        else:
            break
        if not smallest <= total <= max_size or total > left - at or sysflag & ipv6_flags:
            break
        if record_end > end:
            at_block_end = True
            break
        body_start = at + header_size
        body_end = body_start + body_length
        if not 0 <= body_length <= total - header_size - topic_length_size - 2:
            break
        if topic_length_size == 2:
            topic_length = block[body_end] << 8 | block[body_end + 1]
            if topic_length > 0x7FFF:  # a negative short
                break
        else:
            topic_length = block[body_end]
            if topic_length > 127:  # a negative byte
                break
        topic_start = body_end + topic_length_size
        topic_end = topic_start + topic_length
        properties_start = topic_end + 2
        if properties_start > record_end:
            break
        properties_length = block[topic_end] << 8 | block[topic_end + 1]
        if properties_length > 0x7FFF or properties_start + properties_length != record_end:
            break  # a negative properties length, or calMsgLength disagrees with TOTALSIZE
        if body_length and crc32(view[body_start:body_end]) != body_crc:
            break  # Java checks a body's CRC only when it has one
        if record_end > properties_start and (
            block[record_end - 1] == 0
            or (
                block[record_end - 2] in digits
                and not _tail_checks(block, view, at, properties_start, record_end, crc32)
            )
        ):
            break
        topic_bytes = block[topic_start:topic_end]
        topic = topics.get(topic_bytes)
        properties = block[properties_start:record_end]
        if topic is None or not properties.isascii():
            try:
                if topic is None:
                    topic = topics[topic_bytes] = topic_bytes.decode()
                properties.decode()
            except UnicodeDecodeError:
                break
        append((base + at, stored, topic, queue_id, queue_offset, total, sysflag, properties))
        at = record_end
    return decoded, at, at_block_end


def _tail_checks(block, view, at, properties_start, record_end, crc32) -> bool:
    """Whether the properties' last 20 bytes pass codec's `__CRC32#` checks for sure: no tail and nothing
    that looks like one (a 10-digit value and \\x02 at the very end, which codec looks at closer), or a
    well-formed tail whose whole-record CRC matches."""
    tail_start = record_end - _CRC32_TAIL
    if tail_start < properties_start:
        return True
    digits = block[record_end - 11 : record_end - 1]
    well_formed = block[record_end - 1] == 0x02 and digits.isdigit()
    if block[tail_start : tail_start + len(_CRC32_PREFIX)] == _CRC32_PREFIX:
        return well_formed and crc32(view[at:tail_start]) == int(digits[::-1])
    return not well_formed


def _exact_event(
    queue: SegmentQueue, segment: SegmentFile, offset: int
) -> ScannedRecord | SegmentEnd | ScanFailure:
    """What scan_commitlog says at `offset`: the record there, or why the segment (or the log) ends."""
    events = scan_commitlog(
        queue_of_one(queue, segment), offset, check_crc=True, window_bytes=DELEGATE_WINDOW_BYTES
    )
    try:
        return next(events)
    finally:
        events.close()
