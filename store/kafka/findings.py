"""What the Kafka readers report instead of raising: a `Finding` names the file, the byte position and what
is wrong there; `KafkaDecodeError` is the one error the byte-level decoders raise.

The contract (held by `benchmarks/fuzz_decoders.py`): the decoders that take bytes (`decode_batch_header`,
`decode_records`, the index, snapshot, checkpoint, `__consumer_offsets` and `__cluster_metadata` decoders)
raise nothing but `KafkaDecodeError` for any input; the functions that read files turn every
`KafkaDecodeError` into a `Finding` and return what could be read before it. OSError still comes out of
the file readers (a missing file, EIO): they read, they do not decode.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from store.errors import StoreError

T = TypeVar("T")


class KafkaDecodeError(StoreError):
    """Bytes that are not what Kafka's format says, at `position` of the bytes the decoder was given."""

    def __init__(self, kind: str, message: str, position: int = 0):
        self.kind = kind
        self.position = position
        super().__init__(message)


class FindingKind:
    """The stable names findings carry (JSON and tests match on them, never on the message)."""

    TRUNCATED_HEADER = "truncated-header"  # fewer bytes left than a batch header: a partial last write
    LENGTH_PAST_END = "length-past-end"  # a batch whose length reaches past the end of the file
    BAD_LENGTH = "bad-length"  # a batch length smaller than any batch can be
    UNKNOWN_MAGIC = "unknown-magic"
    CRC_MISMATCH = "crc-mismatch"
    UNKNOWN_CODEC = "unknown-codec"
    DECOMPRESSION_FAILED = "decompression-failed"
    BAD_RECORD = "bad-record"  # a record (or inner message) that does not decode
    RECORD_COUNT = "record-count"  # a batch holding more or fewer records than its header says
    INDEX_SIZE = "index-size"  # an index file whose length is not a multiple of its entry size
    SNAPSHOT_CRC = "snapshot-crc"
    BAD_SNAPSHOT = "bad-snapshot"
    BAD_CHECKPOINT = "bad-checkpoint"  # a text file (checkpoint, properties, JSON) that does not parse
    BAD_CONTROL_RECORD = "bad-control-record"


@dataclass(frozen=True, slots=True)
class Finding:
    """Something wrong in a file: where (file and byte position) and what (a stable kind and a sentence)."""

    path: Path
    position: int
    kind: str
    message: str

    @classmethod
    def from_error(cls, path: Path, error: KafkaDecodeError, base_position: int = 0) -> Finding:
        return cls(Path(path), base_position + error.position, error.kind, str(error))

    def __str__(self) -> str:
        return f"{self.path}: position {self.position}: {self.message}"


@dataclass(frozen=True, slots=True)
class FileRead(Generic[T]):
    """What reading one file gave: its decoded value (None when nothing could be read) and the findings."""

    value: T | None
    findings: tuple[Finding, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.findings
