"""A small writer of RocketMQ-format store directories, for tests that need stores of a given shape.

It writes the files directly with `store.codec.encode_record` and plain file writes, not through the
project's MessageStore, so the inspection code is tested against bytes laid out independently of the
writer it would otherwise share bugs with:

- CommitLog segments of `segment_size` bytes; a record goes into a segment only if it leaves at least 8 bytes
  (`msgLen + 8 <= maxBlank`), otherwise the segment gets the 8-byte BLANK record and the log rolls;
- one ConsumeQueue per topic/queue, `cq_entries_per_file` 20-byte entries per file;
- optionally an index (through `store.index_file.IndexService`) and always a 4096-byte checkpoint.

Every record's place is returned, so a test can corrupt exactly the byte it means to.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

from store import codec
from store.config import StoreConfig
from store.index_file import IndexRequest, IndexService
from store.java_checksums import tags_code

T0_MS = 1_700_000_000_000  # 2023-11-14T22:13:20Z: store times are T0_MS + record number
STORE_HOST = ("10.0.0.7", 10911)
BORN_HOST = ("10.0.0.8", 52000)
_BLANK = struct.Struct(">iI")
_CQ_ENTRY = struct.Struct(">qiq")
_CHECKPOINT = struct.Struct(">qqqqq")


def segment_name(offset: int) -> str:
    return f"{offset:020d}"


@dataclass(frozen=True)
class PlacedRecord:
    """Where one message landed, and what it holds."""

    physical_offset: int
    size_bytes: int
    topic: str
    queue_id: int
    queue_offset: int
    body: bytes
    keys: str | None
    store_timestamp_ms: int
    segment: Path
    position: int  # within the segment file
    body_position: int  # within the segment file

    @property
    def end(self) -> int:
        return self.physical_offset + self.size_bytes

    @property
    def offset_msg_id(self) -> str:
        return codec.offset_msg_id(STORE_HOST, self.physical_offset)


@dataclass(frozen=True)
class BuiltStore:
    root: Path
    segment_size: int
    records: tuple[PlacedRecord, ...]
    blanks: tuple[int, ...]  # physical offsets of the BLANK records
    segments: tuple[Path, ...]

    @property
    def commitlog(self) -> Path:
        return self.root / "commitlog"

    @property
    def max_physical_offset(self) -> int:
        return self.records[-1].end if self.records else 0

    def cq_file(self, topic: str, queue_id: int = 0, number: int = 0) -> Path:
        directory = self.root / "consumequeue" / topic / str(queue_id)
        return sorted(directory.iterdir())[number]


@dataclass
class _Segment:
    start: int
    data: bytearray
    position: int = 0


@dataclass
class StoreBuilder:
    """Add messages, then `build()`. Sizes are tiny by default so a handful of messages spans segments."""

    root: Path
    segment_size: int = 1024
    cq_entries_per_file: int = 8
    index: bool = True
    index_slots: int = 16
    index_entries: int = 256
    _segments: list[_Segment] = field(default_factory=list)
    _records: list[PlacedRecord] = field(default_factory=list)
    _blanks: list[int] = field(default_factory=list)
    _queue_offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    _properties: list[dict[str, str]] = field(default_factory=list)

    def add(
        self,
        topic: str,
        body: bytes | str,
        *,
        queue_id: int = 0,
        keys: str | None = None,
        tags: str | None = None,
        properties: dict[str, str] | None = None,
    ) -> PlacedRecord:
        body = body.encode() if isinstance(body, str) else body
        props = dict(properties or {})
        if keys:
            props[codec.PROPERTY_KEYS] = keys
        if tags:
            props[codec.PROPERTY_TAGS] = tags
        queue_offset = self._queue_offsets.get((topic, queue_id), 0)
        timestamp = T0_MS + len(self._records)
        message = codec.Message(
            topic=topic,
            body=body,
            queue_id=queue_id,
            properties=props,
            born_timestamp_ms=timestamp - 1,
            born_host=BORN_HOST,
            store_host=STORE_HOST,
        )
        size = codec.prepare_record(message).total_size
        segment = self._segment_with_room_for(size)
        physical_offset = segment.start + segment.position
        encoded = codec.encode_record(
            message, queue_offset=queue_offset, physical_offset=physical_offset, store_timestamp_ms=timestamp
        )
        position = segment.position
        segment.data[position : position + size] = encoded
        segment.position += size
        self._queue_offsets[(topic, queue_id)] = queue_offset + 1
        placed = PlacedRecord(
            physical_offset=physical_offset,
            size_bytes=size,
            topic=topic,
            queue_id=queue_id,
            queue_offset=queue_offset,
            body=body,
            keys=keys,
            store_timestamp_ms=timestamp,
            segment=self.root / "commitlog" / segment_name(segment.start),
            position=position,
            body_position=position + encoded.index(body) if body else position,
        )
        self._records.append(placed)
        self._properties.append(props)
        return placed

    def _segment_with_room_for(self, size: int) -> _Segment:
        if size + codec.END_FILE_MIN_BLANK_LENGTH > self.segment_size:
            raise ValueError(f"a {size}-byte record never fits a {self.segment_size}-byte segment")
        if not self._segments:
            self._segments.append(_Segment(0, bytearray(self.segment_size)))
        segment = self._segments[-1]
        left = self.segment_size - segment.position
        if size + codec.END_FILE_MIN_BLANK_LENGTH <= left:
            return segment
        # doAppend: the message does not fit, so an 8-byte BLANK claims the rest and the log rolls.
        segment.data[segment.position : segment.position + 8] = _BLANK.pack(left, codec.BLANK_MAGIC_CODE)
        self._blanks.append(segment.start + segment.position)
        segment.position = self.segment_size
        self._segments.append(_Segment(segment.start + self.segment_size, bytearray(self.segment_size)))
        return self._segments[-1]

    def build(self) -> BuiltStore:
        (self.root / "commitlog").mkdir(parents=True, exist_ok=True)
        paths = []
        for segment in self._segments:
            path = self.root / "commitlog" / segment_name(segment.start)
            path.write_bytes(segment.data)
            paths.append(path)
        self._write_consume_queues()
        if self.index:
            self._write_index()
        self._write_checkpoint()
        return BuiltStore(
            self.root, self.segment_size, tuple(self._records), tuple(self._blanks), tuple(paths)
        )

    def _write_consume_queues(self) -> None:
        per_file = self.cq_entries_per_file
        file_size = per_file * _CQ_ENTRY.size
        for topic, queue_id in sorted(self._queue_offsets):
            entries = [
                (record.physical_offset, record.size_bytes, tags_code(props.get(codec.PROPERTY_TAGS)))
                for record, props in zip(self._records, self._properties, strict=True)
                if (record.topic, record.queue_id) == (topic, queue_id)
            ]
            directory = self.root / "consumequeue" / topic / str(queue_id)
            directory.mkdir(parents=True, exist_ok=True)
            for first in range(0, len(entries), per_file):
                data = bytearray(file_size)
                for slot, entry in enumerate(entries[first : first + per_file]):
                    _CQ_ENTRY.pack_into(data, slot * _CQ_ENTRY.size, *entry)
                (directory / segment_name(first * _CQ_ENTRY.size)).write_bytes(data)

    def _write_index(self) -> None:
        config = StoreConfig(max_hash_slot_num=self.index_slots, max_index_num=self.index_entries)
        clock = iter(range(T0_MS, T0_MS + 1_000_000))
        with IndexService(self.root / "index", config, clock_ms=lambda: next(clock)) as service:
            service.load(read_only=False)
            for record, props in zip(self._records, self._properties, strict=True):
                service.build_index(
                    IndexRequest(
                        topic=record.topic,
                        keys=props.get(codec.PROPERTY_KEYS),
                        uniq_key=props.get(codec.PROPERTY_UNIQ_CLIENT_MESSAGE_ID_KEYIDX),
                        phy_offset=record.physical_offset,
                        store_timestamp_ms=record.store_timestamp_ms,
                    )
                )
            service.flush()

    def _write_checkpoint(self) -> None:
        last = self._records[-1].store_timestamp_ms if self._records else 0
        data = _CHECKPOINT.pack(last, last, 0, 0, 0).ljust(4096, b"\0")
        (self.root / "checkpoint").write_bytes(data)


# --- precise damage ---------------------------------------------------------------------------------------


def flip_byte(path: Path, position: int) -> None:
    with open(path, "r+b") as handle:
        handle.seek(position)
        value = handle.read(1)[0]
        handle.seek(position)
        handle.write(bytes([value ^ 0xFF]))


def write_at(path: Path, position: int, data: bytes) -> None:
    with open(path, "r+b") as handle:
        handle.seek(position)
        handle.write(data)


def zero_range(path: Path, start: int, end: int) -> None:
    write_at(path, start, bytes(end - start))


def overwrite_cq_entry(
    path: Path, slot: int, *, physical_offset: int, size: int, tags_code_value: int = 0
) -> None:
    """Replace entry `slot` (0-based within the file) of a ConsumeQueue file."""
    write_at(path, slot * _CQ_ENTRY.size, _CQ_ENTRY.pack(physical_offset, size, tags_code_value))
