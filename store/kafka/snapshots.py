"""Producer-state snapshots (`<offset>.snapshot`, ProducerStateManager), version 1:

version int16, crc uint32 (CRC-32C of everything after it), entry count int32, then per producer:
producerId int64, producerEpoch int16, lastSequence int32, lastOffset int64, offsetDelta int32,
timestamp int64, coordinatorEpoch int32, currentTxnFirstOffset int64 (-1: no open transaction)
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from crc32c import crc32c

from store.kafka.findings import FileRead, Finding, FindingKind, KafkaDecodeError
from store.safe_read import PreadFile

SNAPSHOT_VERSION = 1
SNAPSHOT_HEADER = struct.Struct(">hIi")
CRC_START = 6  # PRODUCER_ENTRIES_OFFSET
PRODUCER_ENTRY = struct.Struct(">qhiqiqiq")
MAX_SNAPSHOT_BYTES = 1 << 30


@dataclass(frozen=True, slots=True)
class ProducerEntry:
    producer_id: int
    producer_epoch: int
    last_sequence: int
    last_offset: int
    offset_delta: int
    timestamp: int
    coordinator_epoch: int
    current_txn_first_offset: int  # -1: no transaction open


@dataclass(frozen=True, slots=True)
class ProducerSnapshot:
    offset: int  # from the file name: the producer state as of this offset
    version: int
    crc: int
    crc_valid: bool
    entries: tuple[ProducerEntry, ...]


def decode_producer_snapshot(data: bytes, offset: int = 0) -> ProducerSnapshot:
    """Raises KafkaDecodeError for an unknown version or a count that does not match the bytes; a CRC
    mismatch is not an error here (crc_valid says it; the file reader makes it a finding)."""
    if len(data) < SNAPSHOT_HEADER.size:
        raise KafkaDecodeError(FindingKind.BAD_SNAPSHOT, f"{len(data)} bytes: too few for a snapshot header")
    version, crc, count = SNAPSHOT_HEADER.unpack_from(data)
    if version != SNAPSHOT_VERSION:
        raise KafkaDecodeError(FindingKind.BAD_SNAPSHOT, f"snapshot version {version} (Kafka writes 1)")
    expected = SNAPSHOT_HEADER.size + count * PRODUCER_ENTRY.size
    if count < 0 or expected != len(data):
        raise KafkaDecodeError(
            FindingKind.BAD_SNAPSHOT,
            f"{count} producer entries in {len(data)} bytes (that takes {expected})",
            SNAPSHOT_HEADER.size - 4,
        )
    entries = tuple(
        ProducerEntry(*fields)
        for fields in PRODUCER_ENTRY.iter_unpack(memoryview(data)[SNAPSHOT_HEADER.size :])
    )
    return ProducerSnapshot(offset, version, crc, crc32c(memoryview(data)[CRC_START:]) == crc, entries)


def read_producer_snapshot(path: Path, offset: int) -> FileRead[ProducerSnapshot]:
    path = Path(path)
    with PreadFile(path) as file:
        data = file.read(0, min(file.size(), MAX_SNAPSHOT_BYTES))
    try:
        snapshot = decode_producer_snapshot(data, offset)
    except KafkaDecodeError as error:
        return FileRead(None, (Finding.from_error(path, error),))
    if snapshot.crc_valid:
        return FileRead(snapshot)
    return FileRead(
        snapshot, (Finding(path, 2, FindingKind.SNAPSHOT_CRC, f"CRC-32C mismatch: stored {snapshot.crc}"),)
    )
