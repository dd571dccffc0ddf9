"""Fixtures for the Kafka format tests: the Kafka 4.0 fixture, and kafka-python as the independent decoder
every segment is checked against."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from kafka.record import MemoryRecords

from store.kafka.batches import LegacyMessage, RecordBatch, scan_log
from store.kafka.records import decode_records

KAFKA_FIXTURE = Path("/work/shared/fixtures/kafka-4.0-kraft-logs")


def _their_records(batch) -> list[tuple]:
    """kafka-python's records; its None timestamp (magic 0) is Kafka's NO_TIMESTAMP, -1."""
    return [
        (
            record.offset,
            -1 if record.timestamp is None else record.timestamp,
            record.key,
            record.value,
            [tuple(header) for header in record.headers],
        )
        for record in batch
    ]


def agree_with_kafka_python(log: Path) -> int:
    """Assert kafka-python reads `log` batch for batch as store.kafka does (header fields, CRC, and every
    record's offset, timestamp, key, value and headers); return the number of records."""
    scan = scan_log(log)
    assert scan.findings == (), scan.findings
    theirs = MemoryRecords(log.read_bytes())
    records = 0
    for entry in scan.entries:
        batch = theirs.next_batch()
        assert batch is not None, f"kafka-python ends before the batch at {entry.position}"
        assert batch.validate_crc() and entry.crc_valid
        assert (batch.base_offset, batch.magic) == (
            entry.base_offset if isinstance(entry, RecordBatch) else entry.offset,
            entry.magic,
        )
        assert batch.size_in_bytes == entry.size_bytes
        if isinstance(entry, RecordBatch):
            assert (batch.last_offset, batch.max_timestamp, batch.producer_id, batch.producer_epoch) == (
                entry.last_offset,
                entry.max_timestamp,
                entry.producer_id,
                entry.producer_epoch,
            )
            assert (batch.base_sequence, batch.is_transactional, batch.is_control_batch) == (
                entry.base_sequence,
                entry.is_transactional,
                entry.is_control,
            )
            assert batch.compression_type == entry.codec
        else:
            assert isinstance(entry, LegacyMessage)
            assert batch.compression_type == entry.codec
        decoded = decode_records(entry, log)
        assert decoded.findings == ()
        mine = [(r.offset, r.timestamp, r.key, r.value, list(r.headers)) for r in decoded.records]
        assert mine == _their_records(batch)
        records += len(mine)
    assert theirs.next_batch() is None, "kafka-python reads a batch store.kafka does not"
    return records


@pytest.fixture
def kafka_python_agrees() -> Callable[[Path], int]:
    return agree_with_kafka_python


@pytest.fixture
def kafka_fixture() -> Path:
    if not KAFKA_FIXTURE.is_dir():
        pytest.skip(f"the Kafka 4.0 fixture is not at {KAFKA_FIXTURE}")
    return KAFKA_FIXTURE
