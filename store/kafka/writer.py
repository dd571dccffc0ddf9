"""Writes Kafka partition directories as a broker does, for tests, benchmarks and the demo.

A `PartitionWriter` appends v2 record batches (any codec; keys, null keys and values, headers; idempotent
and transactional producers, with COMMIT/ABORT control batches) to `<20-digit base offset>.log` segments,
rolls to a new segment when the next batch would take the active one past `segment_bytes`, and keeps the
indexes as LogSegment.append does:
- `.index`: after a batch is appended, when more than `index_interval_bytes` (log.index.interval.bytes,
  4,096) were appended since the last entry, an entry (the batch's last offset, the batch's start
  position); so a segment's first batch never gets one;
- `.timeindex`: with each offset index entry, the largest timestamp so far and its batch's last offset,
  when larger than the last entry's; and once more when the segment is rolled or closed;
- `.txnindex`: an entry per aborted transaction.
Index files are appended entry by entry (the size a cleanly closed broker trims them to), so a reader sees
a consistent directory at any time. `flush()` and `close()` write leader-epoch-checkpoint,
partition.metadata and a producer-state snapshot. `LogDirWriter` adds the broker's files: meta.properties,
the offset checkpoints and .kafka_cleanshutdown.
"""

from __future__ import annotations

import base64
import os
import struct
import time
import uuid
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from crc32c import crc32c

from store.kafka import layout
from store.kafka.batches import (
    CONTROL_FLAG,
    LOG_APPEND_TIME,
    LOG_OVERHEAD,
    TIMESTAMP_TYPE_FLAG,
    TRANSACTIONAL_FLAG,
    V2_CRC_START,
    V2_HEADER,
)
from store.kafka.compression import CODEC_IDS, compress
from store.kafka.indexes import OFFSET_ENTRY, TIME_ENTRY, TXN_ENTRY
from store.kafka.snapshots import PRODUCER_ENTRY, SNAPSHOT_VERSION
from store.kafka.wire import write_varint

DEFAULT_SEGMENT_BYTES = 1 << 30  # log.segment.bytes
DEFAULT_INDEX_INTERVAL_BYTES = 4096  # log.index.interval.bytes
ABORT, COMMIT = 0, 1
_NULL = write_varint(-1)


@dataclass(frozen=True, slots=True)
class ProducerRecord:
    """A record to append: key and value (None for null), headers, and a timestamp (None: now)."""

    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = ()
    timestamp: int | None = None


@dataclass(frozen=True, slots=True)
class WrittenBatch:
    segment: Path
    position: int
    base_offset: int
    last_offset: int
    size_bytes: int


def _sized(data: bytes | None) -> bytes:
    return _NULL if data is None else write_varint(len(data)) + data


def encode_record(offset_delta: int, timestamp_delta: int, record: ProducerRecord) -> bytes:
    body = b"".join(
        (
            b"\x00",
            write_varint(timestamp_delta),
            write_varint(offset_delta),
            _sized(record.key),
            _sized(record.value),
            write_varint(len(record.headers)),
            *(_sized(name.encode()) + _sized(value) for name, value in record.headers),
        )
    )
    return write_varint(len(body)) + body


def encode_batch(
    base_offset: int,
    records: Sequence[ProducerRecord],
    *,
    compression: str = "none",
    timestamp_type: str = "CreateTime",
    log_append_time: int | None = None,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    transactional: bool = False,
    control: bool = False,
    partition_leader_epoch: int = 0,
) -> bytes:
    """One v2 record batch, byte for byte as Kafka's MemoryRecordsBuilder writes it."""
    if not records:
        raise ValueError("a batch holds one record at least")
    now = int(time.time() * 1000)
    timestamps = [now if record.timestamp is None else record.timestamp for record in records]
    base_timestamp = timestamps[0]
    body = b"".join(
        encode_record(delta, timestamp - base_timestamp, record)
        for delta, (timestamp, record) in enumerate(zip(timestamps, records, strict=True))
    )
    codec = CODEC_IDS[compression]
    if codec:
        body = compress(codec, body)
    attributes = codec | (TRANSACTIONAL_FLAG if transactional else 0) | (CONTROL_FLAG if control else 0)
    max_timestamp = max(timestamps)
    if timestamp_type == LOG_APPEND_TIME:
        attributes |= TIMESTAMP_TYPE_FLAG
        max_timestamp = now if log_append_time is None else log_append_time
    header = bytearray(
        V2_HEADER.pack(
            base_offset,
            V2_HEADER.size - LOG_OVERHEAD + len(body),
            partition_leader_epoch,
            2,
            0,
            attributes,
            len(records) - 1,
            base_timestamp,
            max_timestamp,
            producer_id,
            producer_epoch,
            base_sequence,
            len(records),
        )
    )
    crc = crc32c(body, crc32c(memoryview(header)[V2_CRC_START:]))
    struct.pack_into(">I", header, 17, crc)
    return bytes(header) + body


def encode_legacy_message(
    magic: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    *,
    timestamp: int = -1,
    attributes: int = 0,
) -> bytes:
    """One v0/v1 message (LegacyRecord): offset, size, CRC-32 over magic..end, magic, attributes, (v1)
    timestamp, key and value with int32 lengths (-1: null)."""

    def sized(data: bytes | None) -> bytes:
        return struct.pack(">i", -1) if data is None else struct.pack(">i", len(data)) + data

    body = bytes((magic, attributes)) + (struct.pack(">q", timestamp) if magic == 1 else b"") + sized(key)
    body += sized(value)
    return struct.pack(">qiI", offset, len(body) + 4, zlib.crc32(body)) + body


def encode_legacy_wrapper(
    magic: int, compression: str, first_offset: int, records: Sequence[ProducerRecord]
) -> bytes:
    """A compressed v0/v1 message set as a broker stores it: inner offsets absolute (v0) or relative (v1),
    the wrapper carrying the last inner offset and (v1) the largest timestamp."""
    timestamps = [-1 if record.timestamp is None else record.timestamp for record in records]
    inner = b"".join(
        encode_legacy_message(
            magic,
            first_offset + number if magic == 0 else number,
            record.key,
            record.value,
            timestamp=timestamp,
        )
        for number, (record, timestamp) in enumerate(zip(records, timestamps, strict=True))
    )
    codec = CODEC_IDS[compression]
    return encode_legacy_message(
        magic,
        first_offset + len(records) - 1,
        None,
        compress(codec, inner),
        timestamp=max(timestamps),
        attributes=codec,
    )


def control_record(marker: int, coordinator_epoch: int) -> ProducerRecord:
    """An end-transaction marker (EndTransactionMarker: key version 0 + type, value version 0 + epoch)."""
    return ProducerRecord(struct.pack(">hh", 0, marker), struct.pack(">hi", 0, coordinator_epoch))


def offset_commit_record(
    group: str, topic: str, partition: int, offset: int, commit_ms: int
) -> ProducerRecord:
    """A group's committed offset as the group coordinator appends it to `__consumer_offsets`:
    OffsetCommitKey v1 (group, topic, partition) and OffsetCommitValue v3 (offset, leader epoch -1 for
    unknown, empty metadata, commit timestamp)."""

    def string(text: str) -> bytes:
        data = text.encode()
        return struct.pack(">h", len(data)) + data

    key = struct.pack(">h", 1) + string(group) + string(topic) + struct.pack(">i", partition)
    value = struct.pack(">hqi", 3, offset, -1) + string("") + struct.pack(">q", commit_ms)
    return ProducerRecord(key, value, (), commit_ms)


def new_topic_id() -> str:
    """A Uuid as Kafka prints it: 16 bytes in URL-safe base64 without padding."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()


@dataclass
class _ProducerState:
    epoch: int
    last_sequence: int = -1
    last_offset: int = -1
    offset_delta: int = 0
    timestamp: int = -1
    coordinator_epoch: int = -1
    txn_first_offset: int = -1


@dataclass
class _Segment:
    base_offset: int
    log: object
    index: object
    timeindex: object
    size: int = 0
    bytes_since_index_entry: int = 0
    max_timestamp: int = -1
    max_timestamp_offset: int = -1
    last_time_entry: int = -1
    txnindex: object | None = None
    paths: list[Path] = field(default_factory=list)


class PartitionWriter:
    """Appends to one partition directory (see the module docstring). Use as a context manager or close()."""

    def __init__(
        self,
        directory: Path,
        *,
        topic_id: str | None = None,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        index_interval_bytes: int = DEFAULT_INDEX_INTERVAL_BYTES,
        leader_epoch: int = 0,
        start_offset: int = 0,
    ):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.topic_id = topic_id or new_topic_id()
        self.segment_bytes = segment_bytes
        self.index_interval_bytes = index_interval_bytes
        self.leader_epoch = leader_epoch
        self.log_start_offset = start_offset
        self.next_offset = start_offset
        self._producers: dict[int, _ProducerState] = {}
        self._segment = self._open_segment(start_offset)
        self.segments: list[int] = [start_offset]
        self._write_partition_metadata()

    # --- appending --------------------------------------------------------------------------------------

    def append(
        self,
        records: Iterable[ProducerRecord],
        *,
        compression: str = "none",
        timestamp_type: str = "CreateTime",
        producer_id: int = -1,
        producer_epoch: int = 0,
        transactional: bool = False,
    ) -> WrittenBatch:
        records = list(records)
        sequence = -1
        if producer_id >= 0:
            state = self._producer(producer_id, producer_epoch)
            sequence = state.last_sequence + 1
            if transactional and state.txn_first_offset < 0:
                state.txn_first_offset = self.next_offset
        elif transactional:
            raise ValueError("a transactional batch needs a producer id")
        data = encode_batch(
            self.next_offset,
            records,
            compression=compression,
            timestamp_type=timestamp_type,
            producer_id=producer_id,
            producer_epoch=producer_epoch if producer_id >= 0 else -1,
            base_sequence=sequence,
            transactional=transactional,
            partition_leader_epoch=self.leader_epoch,
        )
        written = self._append_bytes(data, len(records))
        if producer_id >= 0:
            state.last_sequence = sequence + len(records) - 1
            self._producer_appended(state, written, data)
        return written

    def end_transaction(self, producer_id: int, *, commit: bool, coordinator_epoch: int = 0) -> WrittenBatch:
        """A COMMIT or ABORT control batch; an abort is also entered in the segment's .txnindex."""
        state = self._producers.get(producer_id)
        if state is None or state.txn_first_offset < 0:
            raise ValueError(f"producer {producer_id} has no open transaction")
        data = encode_batch(
            self.next_offset,
            [control_record(COMMIT if commit else ABORT, coordinator_epoch)],
            producer_id=producer_id,
            producer_epoch=state.epoch,
            transactional=True,
            control=True,
            partition_leader_epoch=self.leader_epoch,
        )
        first_offset = state.txn_first_offset
        written = self._append_bytes(data, 1)
        self._producer_appended(state, written, data)
        state.coordinator_epoch = coordinator_epoch
        state.txn_first_offset = -1
        if not commit:
            open_firsts = [p.txn_first_offset for p in self._producers.values() if p.txn_first_offset >= 0]
            stable = min(open_firsts, default=self.next_offset)
            self._txn_index().write(TXN_ENTRY.pack(0, producer_id, first_offset, written.last_offset, stable))
        return written

    def _producer(self, producer_id: int, epoch: int) -> _ProducerState:
        state = self._producers.get(producer_id)
        if state is None or state.epoch != epoch:
            state = self._producers[producer_id] = _ProducerState(epoch)
        return state

    def _producer_appended(self, state: _ProducerState, written: WrittenBatch, data: bytes) -> None:
        state.last_offset = written.last_offset
        state.offset_delta = written.last_offset - written.base_offset
        state.timestamp = struct.unpack_from(">q", data, 35)[0]

    def _append_bytes(self, data: bytes, record_count: int) -> WrittenBatch:
        segment = self._segment
        if segment.size and segment.size + len(data) > self.segment_bytes:
            self.roll()
            segment = self._segment
        position = segment.size
        base_offset = self.next_offset
        last_offset = base_offset + record_count - 1
        segment.log.write(data)
        segment.size += len(data)
        max_timestamp = struct.unpack_from(">q", data, 35)[0]
        if max_timestamp > segment.max_timestamp:
            segment.max_timestamp, segment.max_timestamp_offset = max_timestamp, last_offset
        if segment.bytes_since_index_entry > self.index_interval_bytes:
            segment.index.write(OFFSET_ENTRY.pack(last_offset - segment.base_offset, position))
            self._maybe_time_entry(segment)
            segment.bytes_since_index_entry = 0
        segment.bytes_since_index_entry += len(data)
        self.next_offset = last_offset + 1
        return WrittenBatch(segment.paths[0], position, base_offset, last_offset, len(data))

    def _maybe_time_entry(self, segment: _Segment) -> None:
        if segment.max_timestamp > segment.last_time_entry:
            segment.timeindex.write(
                TIME_ENTRY.pack(segment.max_timestamp, segment.max_timestamp_offset - segment.base_offset)
            )
            segment.last_time_entry = segment.max_timestamp

    # --- segments and the partition's files ---------------------------------------------------------------

    def _open_segment(self, base_offset: int) -> _Segment:
        paths = [
            self.directory / layout.file_name(base_offset, kind) for kind in ("log", "index", "timeindex")
        ]
        # Unbuffered: a batch is one write, and an index entry is never on disk before its batch.
        files = [open(path, "ab", buffering=0) for path in paths]  # noqa: SIM115
        return _Segment(base_offset, *files, paths=paths)

    def _txn_index(self):
        segment = self._segment
        if segment.txnindex is None:
            path = self.directory / layout.file_name(segment.base_offset, "txnindex")
            segment.txnindex = open(path, "ab", buffering=0)  # noqa: SIM115
        return segment.txnindex

    def _close_segment(self, segment: _Segment) -> None:
        self._maybe_time_entry(segment)  # the entry a roll or close forces
        for file in (segment.log, segment.index, segment.timeindex, segment.txnindex):
            if file is not None:
                file.close()

    def roll(self) -> None:
        self._close_segment(self._segment)
        self._segment = self._open_segment(self.next_offset)
        self.segments.append(self.next_offset)

    def delete_oldest_segment(self) -> Path:
        """Retention: the oldest segment's files renamed to `.deleted` and removed, as the broker's log
        cleanup does (it removes them file.delete.delay.ms later); the log start offset moves to the next
        segment's base. Returns the removed log's path. The active segment is never deleted."""
        if len(self.segments) < 2:
            raise ValueError("the active segment is the only one: nothing to delete")
        base = self.segments.pop(0)
        self.log_start_offset = self.segments[0]
        log = self.directory / layout.file_name(base, "log")
        for kind in layout.SEGMENT_KINDS:
            path = self.directory / layout.file_name(base, kind)
            deleted = path.with_name(path.name + ".deleted")
            try:
                os.replace(path, deleted)
            except FileNotFoundError:
                continue
            deleted.unlink()
        return log

    def flush(self) -> None:
        """Make what was appended readable (the log's buffer), and write the checkpoints and a snapshot."""
        self._segment.log.flush()
        self._write_checkpoints()

    def close(self) -> None:
        self._close_segment(self._segment)
        self._write_checkpoints()

    def __enter__(self) -> PartitionWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _write_partition_metadata(self) -> None:
        _write_text(self.directory / layout.PARTITION_METADATA, f"version: 0\ntopic_id: {self.topic_id}")

    def _write_checkpoints(self) -> None:
        _write_text(
            self.directory / layout.LEADER_EPOCH_CHECKPOINT,
            f"0\n1\n{self.leader_epoch} {self.log_start_offset}\n",
        )
        entries = [
            PRODUCER_ENTRY.pack(
                producer_id,
                state.epoch,
                state.last_sequence,
                state.last_offset,
                state.offset_delta,
                state.timestamp,
                state.coordinator_epoch,
                state.txn_first_offset,
            )
            for producer_id, state in sorted(self._producers.items())
            if state.last_offset >= 0
        ]
        body = struct.pack(">i", len(entries)) + b"".join(entries)
        header = struct.pack(">hI", SNAPSHOT_VERSION, crc32c(body))
        snapshot = self.directory / layout.file_name(self.next_offset, "snapshot")
        for old in self.directory.glob("*.snapshot"):
            if old != snapshot:
                old.unlink()
        _write_bytes(snapshot, header + body)


class LogDirWriter:
    """A whole `log.dirs` entry: meta.properties, partitions made on first use, and on close the broker's
    offset checkpoints and (for a clean shutdown) .kafka_cleanshutdown."""

    def __init__(self, root: Path, *, cluster_id: str | None = None, node_id: int = 1, **partition_options):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.partition_options = partition_options
        self.partitions: dict[tuple[str, int], PartitionWriter] = {}
        cluster_id = cluster_id or new_topic_id()
        _write_text(
            self.root / layout.META_PROPERTIES,
            f"#\n#{time.strftime('%a %b %d %H:%M:%S UTC %Y', time.gmtime())}\ncluster.id={cluster_id}\n"
            f"directory.id={new_topic_id()}\nnode.id={node_id}\nversion=1\n",
        )

    def partition(self, topic: str, partition: int = 0) -> PartitionWriter:
        key = (topic, partition)
        if key not in self.partitions:
            self.partitions[key] = PartitionWriter(
                self.root / f"{topic}-{partition}", **self.partition_options
            )
        return self.partitions[key]

    def close(self, *, clean_shutdown: bool = True) -> None:
        for writer in self.partitions.values():
            writer.close()
        self.write_checkpoints()
        if clean_shutdown:
            _write_text(self.root / layout.CLEAN_SHUTDOWN, '{"version":0,"brokerEpoch":1}')

    def write_checkpoints(self) -> None:
        ends = [
            (topic, partition, w.next_offset) for (topic, partition), w in sorted(self.partitions.items())
        ]
        starts = [
            (topic, partition, w.log_start_offset)
            for (topic, partition), w in sorted(self.partitions.items())
        ]
        for name, entries in (
            ("recovery-point-offset-checkpoint", ends),
            ("replication-offset-checkpoint", ends),
            ("log-start-offset-checkpoint", [entry for entry in starts if entry[2] > 0]),
        ):
            lines = "".join(f"{topic} {partition} {offset}\n" for topic, partition, offset in entries)
            _write_text(self.root / name, f"0\n{len(entries)}\n{lines}")
        _write_text(self.root / "cleaner-offset-checkpoint", "")

    def __enter__(self) -> LogDirWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _write_text(path: Path, text: str) -> None:
    _write_bytes(path, text.encode())


def _write_bytes(path: Path, data: bytes) -> None:
    """Write-then-rename, as Kafka's checkpoint files are replaced: a reader never sees half a file."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)
