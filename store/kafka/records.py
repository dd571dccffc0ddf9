"""The records inside a batch, decoded only when asked: v2 records (zigzag varints, headers) and the inner
messages of legacy wrapper messages, with control records (transaction markers, KRaft's LEADER_CHANGE,
snapshot header and footer, kraft.version, voters) decoded from their key and value.

v2 record (DefaultRecord):
    length varint, attributes int8, timestampDelta varlong, offsetDelta varint,
    keyLength varint (-1: null) key, valueLength varint (-1: null) value,
    headersCount varint, then per header: keyLength varint, key UTF-8, valueLength varint (-1: null), value

A record's timestamp is baseTimestamp + timestampDelta, or the batch's maxTimestamp for LogAppendTime
batches (as Kafka's DefaultRecordBatch reads it); its sequence is baseSequence + offsetDelta.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

from store.kafka import wire
from store.kafka.batches import (
    LOG_APPEND_TIME,
    V2_HEADER_BYTES,
    LegacyMessage,
    LogEntry,
    RecordBatch,
    decode_batch_header,
)
from store.kafka.compression import decompress
from store.kafka.findings import Finding, FindingKind, KafkaDecodeError
from store.kafka.wire import read_unsigned_varint, read_varint

RECORD_MIN_BYTES = 6  # attributes, timestampDelta, offsetDelta, keyLength, valueLength, headersCount: 1 each
RECORD_MIN_RAW = RECORD_MIN_BYTES << 1  # its zigzag encoding


@dataclass(frozen=True, slots=True)
class Record:
    """One record: of a v2 batch, or a legacy message (top-level or inside a wrapper)."""

    offset: int
    timestamp: int  # -1: none (magic 0)
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]
    sequence: int  # -1: none (no idempotent producer, or magic 0/1)
    size_bytes: int  # the encoded record, its length field included


@dataclass(frozen=True, slots=True)
class DecodedRecords:
    """The records of one entry, as many as decoded before the first finding (if any), by column: the
    i-th record is (offsets[i], timestamps[i], keys[i], values[i], headers[i], sizes[i]). Columns, not a
    Record per record, because making an object per record costs as much as decoding it; `records` makes
    them for callers that want them, `len()` counts them."""

    offsets: tuple[int, ...]
    timestamps: tuple[int, ...]
    keys: tuple[bytes | None, ...]
    values: tuple[bytes | None, ...]
    headers: tuple[tuple[tuple[str, bytes | None], ...], ...]
    sizes: tuple[int, ...]
    base_offset: int = 0
    base_sequence: int = -1  # a record's sequence is base_sequence + (offset - base_offset), wrapping at 2^31
    findings: tuple[Finding, ...] = ()

    def __len__(self) -> int:
        return len(self.offsets)

    def sequence(self, index: int) -> int:
        if self.base_sequence == -1:
            return -1
        return (self.base_sequence + self.offsets[index] - self.base_offset) % (1 << 31)

    @property
    def records(self) -> tuple[Record, ...]:
        return tuple(
            Record(offset, timestamp, key, value, headers, self.sequence(index), size)
            for index, (offset, timestamp, key, value, headers, size) in enumerate(
                zip(
                    self.offsets,
                    self.timestamps,
                    self.keys,
                    self.values,
                    self.headers,
                    self.sizes,
                    strict=True,
                )
            )
        )


class _Columns:
    """What decoding appends to (kept by the caller, so the records before a bad one survive): a row per
    record, (offset, timestamp, key, value, headers, size), one append a record instead of six; turned
    into columns at the end in one transposition."""

    __slots__ = ("rows",)

    def __init__(self):
        self.rows: list[tuple] = []

    def add(self, record: Record) -> None:
        self.rows.append(
            (record.offset, record.timestamp, record.key, record.value, record.headers, record.size_bytes)
        )

    def decoded(self, base_offset: int, base_sequence: int, findings: tuple[Finding, ...]) -> DecodedRecords:
        columns = tuple(zip(*self.rows, strict=True)) if self.rows else ((),) * 6
        return DecodedRecords(*columns, base_offset, base_sequence, findings)


def decode_records(entry: LogEntry, path: Path | str = "") -> DecodedRecords:
    """The records of a batch (or of a legacy message: itself, or a wrapper's inner messages)."""
    columns = _Columns()
    is_batch = isinstance(entry, RecordBatch)
    base_offset, base_sequence = (entry.base_offset, entry.base_sequence) if is_batch else (entry.offset, -1)
    try:
        if is_batch:
            data = entry.records_data
            if entry.codec:
                data = decompress(entry.codec, data, magic=2)
            _decode_v2_records(entry, bytes(data), columns)
            if len(columns.rows) != entry.record_count:
                raise KafkaDecodeError(
                    FindingKind.RECORD_COUNT,
                    f"the header says {entry.record_count} records, the batch holds {len(columns.rows)}",
                )
        elif entry.is_wrapper:
            for record in _inner_messages(entry):
                columns.add(record)
        else:
            columns.add(_legacy_record(entry, entry.offset))
    except KafkaDecodeError as error:
        position = entry.position
        if is_batch and not entry.codec and error.kind != FindingKind.RECORD_COUNT:
            position += V2_HEADER_BYTES + error.position  # within uncompressed records: where it went wrong
        finding = Finding(Path(path), position, error.kind, str(error))
        return columns.decoded(base_offset, base_sequence, (finding,))
    return columns.decoded(base_offset, base_sequence, ())


def _bad(message: str, position: int) -> KafkaDecodeError:
    return KafkaDecodeError(FindingKind.BAD_RECORD, message, position)


def _decode_v2_records(batch: RecordBatch, data: bytes, columns: _Columns) -> None:
    """Append the records in `data` to `columns`.

    The hot loop of a deep dump and of verify, so written for CPython: one pass over the batch with local
    variables and no function call per field. Varints of one and two bytes (nearly all lengths and deltas)
    are decoded inline, longer ones by read_unsigned_varint; a key or value length is checked on its zigzag
    form (even: a size, 1: null, other odd: negative, an error); the attributes byte is skipped unread;
    headers, rarer, go through _headers. An IndexError (a field past the end of `data`) is turned into a
    finding once, outside.
    """
    base_offset = batch.base_offset
    if batch.timestamp_type == LOG_APPEND_TIME:  # every record's timestamp is the batch's max
        base_timestamp, timestamp_scale = batch.max_timestamp, 0
    else:
        base_timestamp, timestamp_scale = batch.base_timestamp, 1
    add = columns.rows.append
    varint, max_varlong = read_unsigned_varint, wire.MAX_VARLONG_BYTES
    end = len(data)
    position = 0
    while position < end:
        start = position
        try:
            byte = data[position]  # length
            if byte < 0x80:
                raw, position = byte, position + 1
            elif data[position + 1] < 0x80:
                raw, position = (byte & 0x7F) | (data[position + 1] << 7), position + 2
            else:
                raw, position = varint(data, position)
            record_end = position + (raw >> 1)
            if raw & 1 or raw < RECORD_MIN_RAW or record_end > end:  # odd: a negative length
                length = (raw >> 1) ^ -(raw & 1)
                raise _bad(f"a record of length {length} at {start} does not fit the batch", start)
            byte = data[position + 1]  # timestampDelta (a varlong), after the attributes
            if byte < 0x80:
                timestamp_delta, position = (byte >> 1) ^ -(byte & 1), position + 2
            elif data[position + 2] < 0x80:
                raw, position = (byte & 0x7F) | (data[position + 2] << 7), position + 3
                timestamp_delta = (raw >> 1) ^ -(raw & 1)
            else:
                raw, position = varint(data, position + 1, max_varlong)
                timestamp_delta = (raw >> 1) ^ -(raw & 1)
            byte = data[position]  # offsetDelta
            if byte < 0x80:
                offset_delta, position = (byte >> 1) ^ -(byte & 1), position + 1
            else:
                if data[position + 1] < 0x80:
                    raw, position = (byte & 0x7F) | (data[position + 1] << 7), position + 2
                else:
                    raw, position = varint(data, position)
                offset_delta = (raw >> 1) ^ -(raw & 1)
            byte = data[position]  # keyLength
            if byte < 0x80:
                raw, position = byte, position + 1
            elif data[position + 1] < 0x80:
                raw, position = (byte & 0x7F) | (data[position + 1] << 7), position + 2
            else:
                raw, position = varint(data, position)
            if raw & 1 == 0:
                field_end = position + (raw >> 1)
                if field_end > record_end:
                    raise _bad(f"a field of {raw >> 1} bytes runs past its record", position)
                key, position = data[position:field_end], field_end
            elif raw == 1:
                key = None
            else:
                raise _bad(f"a field of length {(raw >> 1) ^ -1}", position)
            byte = data[position]  # valueLength
            if byte < 0x80:
                raw, position = byte, position + 1
            elif data[position + 1] < 0x80:
                raw, position = (byte & 0x7F) | (data[position + 1] << 7), position + 2
            else:
                raw, position = varint(data, position)
            if raw & 1 == 0:
                field_end = position + (raw >> 1)
                if field_end > record_end:
                    raise _bad(f"a field of {raw >> 1} bytes runs past its record", position)
                value, position = data[position:field_end], field_end
            elif raw == 1:
                value = None
            else:
                raise _bad(f"a field of length {(raw >> 1) ^ -1}", position)
            if data[position] == 0:  # headersCount
                headers, position = (), position + 1
            else:
                header_count, position = read_varint(data, position)
                headers, position = _headers(data, position, record_end, header_count)
        except IndexError as error:
            raise _bad(f"the record at {start} runs past the batch", start) from error
        if position != record_end:
            raise _bad(
                f"the record at {start} has {record_end - position} bytes its fields do not use", start
            )
        add(
            (
                base_offset + offset_delta,
                base_timestamp + timestamp_delta * timestamp_scale,
                key,
                value,
                headers,
                record_end - start,
            )
        )


def _sized_field(data: bytes, position: int, end: int) -> tuple[bytes | None, int]:
    """A key, value or header field: a zigzag varint length (-1: null), then as many bytes, within `end`."""
    byte = data[position]
    if byte < 0x80:
        raw, position = byte, position + 1
    elif data[position + 1] < 0x80:
        raw, position = (byte & 0x7F) | (data[position + 1] << 7), position + 2
    else:
        raw, position = read_unsigned_varint(data, position)
    size = (raw >> 1) ^ -(raw & 1)
    if size >= 0:
        if position + size > end:
            raise _bad(f"a field of {size} bytes runs past its record", position)
        return data[position : position + size], position + size
    if size == -1:
        return None, position
    raise _bad(f"a field of length {size}", position)


def _headers(data: bytes, position: int, end: int, count: int) -> tuple[tuple, int]:
    if count < 0 or count > end - position:
        raise _bad(f"{count} headers", position)
    headers = []
    for _ in range(count):
        start = position
        key, position = _sized_field(data, position, end)
        if key is None:
            raise _bad("a header with a null key", start)
        try:
            name = key.decode("utf-8")
        except UnicodeDecodeError as error:
            raise _bad("a header key that is not UTF-8", start) from error
        value, position = _sized_field(data, position, end)
        headers.append((name, value))
    return tuple(headers), position


def _legacy_record(message: LegacyMessage, offset: int, timestamp: int | None = None) -> Record:
    return Record(
        offset,
        message.timestamp if timestamp is None else timestamp,
        message.key,
        message.value,
        (),
        -1,
        message.size_bytes,
    )


def _inner_messages(wrapper: LegacyMessage) -> list[Record]:
    """A wrapper's inner messages, with absolute offsets: v1 inner offsets count from the first inner
    message and the wrapper holds the last one's absolute offset (AbstractLegacyRecordBatch's
    DeepRecordsIterator); v0 inner offsets are absolute. A LogAppendTime wrapper's timestamp is every inner
    message's."""
    if wrapper.value is None:
        raise _bad("a compressed wrapper message with a null value", 0)
    data = memoryview(decompress(wrapper.codec, wrapper.value, magic=wrapper.magic))
    inner: list[LegacyMessage] = []
    position = 0
    while position < len(data):
        message = decode_batch_header(data, position)
        if not isinstance(message, LegacyMessage) or message.magic != wrapper.magic:
            raise _bad(f"an inner message of magic {message.magic} in a magic {wrapper.magic} wrapper", 0)
        if message.is_wrapper:
            raise _bad("a compressed message inside a compressed message", 0)
        if not message.crc_valid:
            raise KafkaDecodeError(FindingKind.CRC_MISMATCH, f"inner message at {position}: CRC-32 mismatch")
        inner.append(message)
        position = message.next_position
    if not inner:
        raise _bad("a wrapper message holding no messages", 0)
    shift = wrapper.offset - inner[-1].offset if wrapper.magic == 1 else 0
    log_append = wrapper.timestamp if wrapper.timestamp_type == LOG_APPEND_TIME else None
    return [_legacy_record(message, message.offset + shift, log_append) for message in inner]


# --- control records -------------------------------------------------------------------------------------

CONTROL_TYPE_NAMES = {
    0: "ABORT",
    1: "COMMIT",
    2: "LEADER_CHANGE",
    3: "SNAPSHOT_HEADER",
    4: "SNAPSHOT_FOOTER",
    5: "KRAFT_VERSION",
    6: "KRAFT_VOTERS",
}


@dataclass(frozen=True, slots=True)
class ControlRecord:
    """A control batch's record, from its key (int16 version, int16 type) and value."""

    offset: int
    key_version: int
    type: int
    type_name: str
    value_version: int | None = None
    coordinator_epoch: int | None = None  # ABORT / COMMIT
    leader_id: int | None = None  # LEADER_CHANGE
    voters: tuple[int, ...] = ()  # LEADER_CHANGE, KRAFT_VOTERS
    granting_voters: tuple[int, ...] = ()  # LEADER_CHANGE
    last_contained_log_timestamp: int | None = None  # SNAPSHOT_HEADER
    kraft_version: int | None = None  # KRAFT_VERSION

    @property
    def is_transaction_marker(self) -> bool:
        return self.type in (0, 1)


def decode_control_record(record: Record) -> ControlRecord:
    """The control record a control batch's record holds; raises KafkaDecodeError when it does not decode.
    An unknown type is named "unknown control type N", not an error (newer brokers add types)."""
    if record.key is None or len(record.key) < 4:
        raise KafkaDecodeError(FindingKind.BAD_CONTROL_RECORD, "a control record key shorter than 4 bytes")
    key = wire.Reader(record.key)
    key_version, control_type = key.int16(), key.int16()
    name = CONTROL_TYPE_NAMES.get(control_type, f"unknown control type {control_type}")
    fields: dict = {}
    if record.value is not None and control_type in CONTROL_TYPE_NAMES:
        value = wire.Reader(record.value)
        fields["value_version"] = value.int16()
        if control_type in (0, 1):
            fields["coordinator_epoch"] = value.int32()
        elif control_type == 2:  # LeaderChangeMessage (flexible): LeaderId, Voters, GrantingVoters
            fields["leader_id"] = value.int32()
            fields["voters"] = _voter_ids(value, with_directory=fields["value_version"] >= 1)
            fields["granting_voters"] = _voter_ids(value, with_directory=fields["value_version"] >= 1)
        elif control_type == 3:  # SnapshotHeaderRecord
            fields["last_contained_log_timestamp"] = value.int64()
        elif control_type == 5:  # KRaftVersionRecord
            fields["kraft_version"] = value.int16()
        elif control_type == 6:  # VotersRecord: each voter's id first
            fields["voters"] = _kraft_voter_ids(value)
    return ControlRecord(record.offset, key_version, control_type, name, **fields)


def _voter_ids(value: wire.Reader, *, with_directory: bool) -> tuple[int, ...]:
    voters = []
    for _ in range(value.array_length(compact=True)):
        voters.append(value.int32())
        if with_directory:
            value.uuid()
        value.tagged_fields()
    return tuple(voters)


def _kraft_voter_ids(value: wire.Reader) -> tuple[int, ...]:
    voters = []
    for _ in range(value.array_length(compact=True)):
        voters.append(value.int32())
        value.uuid()  # VoterDirectoryId
        for _ in range(value.array_length(compact=True)):  # Endpoints: Name, Host, Port
            value.string(compact=True)
            value.string(compact=True)
            value.uint16()
            value.tagged_fields()
        value.int16()  # KRaftVersionFeature: MinSupportedVersion, MaxSupportedVersion
        value.int16()
        value.tagged_fields()
        value.tagged_fields()
    return tuple(voters)


def record_findings(path: Path, entry: LogEntry, decoded: DecodedRecords) -> tuple[Finding, ...]:
    """A batch's records against its header: offsets increasing, the last one the header's (for verify)."""
    findings = list(decoded.findings)
    offsets = decoded.offsets
    for previous, offset in itertools.pairwise(offsets):
        if offset <= previous:
            message = f"offset {offset} follows {previous} inside the batch"
            findings.append(Finding(path, entry.position, FindingKind.BAD_RECORD, message))
            break
    if isinstance(entry, RecordBatch) and offsets and offsets[-1] != entry.last_offset:
        message = (
            f"the last record's offset {offsets[-1]} is not the header's last offset {entry.last_offset}"
        )
        findings.append(Finding(path, entry.position, FindingKind.BAD_RECORD, message))
    return tuple(findings)
