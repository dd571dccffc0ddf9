"""The small text files of a Kafka log directory, each decoded to a dataclass:

- offset checkpoints (recovery-point-, replication-, log-start-, cleaner-offset-checkpoint): a version line
  (0), a count line, then `<topic> <partition> <offset>` lines;
- leader-epoch-checkpoint: version 0, count, then `<leaderEpoch> <startOffset>` lines;
- partition.metadata: `version: 0` and `topic_id: <22 characters of URL-safe base64>`;
- meta.properties: Java properties (`key=value`, `#` comments): version, cluster.id, node.id (broker.id
  before KRaft), directory.id;
- .kafka_cleanshutdown: JSON `{"version":0,"brokerEpoch":N}` (empty in brokers before 3.7);
- quorum-state (the KRaft metadata partition): JSON with leaderId, leaderEpoch, votedId, appliedOffset,
  currentVoters.
The decoders take bytes and raise only KafkaDecodeError (with the byte position of the bad line); the
`read_*` functions read a file and return a FileRead with a finding instead.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from store.kafka.findings import FileRead, Finding, FindingKind, KafkaDecodeError
from store.safe_read import PreadFile

T = TypeVar("T")
MAX_TEXT_BYTES = 64 << 20  # a checkpoint of a broker with a million partitions is ~40 MiB


@dataclass(frozen=True, slots=True)
class OffsetCheckpointEntry:
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class OffsetCheckpoint:
    version: int
    entries: tuple[OffsetCheckpointEntry, ...]  # empty for an empty file (cleaner-offset-checkpoint)

    def offsets(self) -> dict[tuple[str, int], int]:
        return {(entry.topic, entry.partition): entry.offset for entry in self.entries}


@dataclass(frozen=True, slots=True)
class EpochEntry:
    epoch: int
    start_offset: int


@dataclass(frozen=True, slots=True)
class LeaderEpochCheckpoint:
    version: int
    entries: tuple[EpochEntry, ...]


@dataclass(frozen=True, slots=True)
class PartitionMetadata:
    version: int
    topic_id: str  # as Kafka prints it: 22 characters of URL-safe base64


@dataclass(frozen=True, slots=True)
class MetaProperties:
    version: int | None
    cluster_id: str | None
    node_id: int | None  # node.id (KRaft) or broker.id (ZooKeeper mode)
    directory_id: str | None
    properties: tuple[tuple[str, str], ...]  # every key and value, in file order


@dataclass(frozen=True, slots=True)
class CleanShutdown:
    version: int | None  # None: an empty file (brokers before 3.7 wrote it empty)
    broker_epoch: int | None


@dataclass(frozen=True, slots=True)
class QuorumState:
    leader_id: int | None
    leader_epoch: int | None
    voted_id: int | None
    applied_offset: int | None
    voters: tuple[int, ...]
    data_version: int | None


def _bad(message: str, position: int = 0) -> KafkaDecodeError:
    return KafkaDecodeError(FindingKind.BAD_CHECKPOINT, message, position)


def _lines(data: bytes) -> list[tuple[int, str]]:
    """(byte position, text) of each non-empty line."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise _bad("not UTF-8 text", error.start) from error
    lines, position = [], 0
    for line in text.splitlines(keepends=True):
        if line.strip():
            lines.append((position, line.strip()))
        position += len(line.encode("utf-8"))
    return lines


def _int(text: str, what: str, position: int) -> int:
    try:
        return int(text)
    except ValueError as error:
        raise _bad(f"{what} {text!r} is not a number", position) from error


def _versioned_entries(data: bytes, fields: int) -> tuple[int, list[tuple[int, list[str]]]]:
    """CheckpointFile's layout: version line, count line, `count` lines of `fields` fields."""
    lines = _lines(data)
    if not lines:
        return 0, []
    if len(lines) < 2:
        raise _bad("a version line without a count line", lines[0][0])
    version = _int(lines[0][1], "the version", lines[0][0])
    if version != 0:
        raise _bad(f"version {version} (Kafka writes 0)", lines[0][0])
    count = _int(lines[1][1], "the entry count", lines[1][0])
    entries = lines[2:]
    if count != len(entries):
        raise _bad(f"the count line says {count} entries, the file has {len(entries)}", lines[1][0])
    parsed = []
    for position, line in entries:
        parts = line.split()
        if len(parts) != fields:
            raise _bad(f"{line!r}: {len(parts)} fields, not {fields}", position)
        parsed.append((position, parts))
    return version, parsed


def decode_offset_checkpoint(data: bytes) -> OffsetCheckpoint:
    version, entries = _versioned_entries(data, 3)
    return OffsetCheckpoint(
        version,
        tuple(
            OffsetCheckpointEntry(topic, _int(partition, "the partition", at), _int(offset, "the offset", at))
            for at, (topic, partition, offset) in entries
        ),
    )


def decode_leader_epoch_checkpoint(data: bytes) -> LeaderEpochCheckpoint:
    version, entries = _versioned_entries(data, 2)
    return LeaderEpochCheckpoint(
        version,
        tuple(
            EpochEntry(_int(epoch, "the epoch", at), _int(offset, "the start offset", at))
            for at, (epoch, offset) in entries
        ),
    )


def decode_partition_metadata(data: bytes) -> PartitionMetadata:
    fields = {}
    for position, line in _lines(data):
        name, colon, value = line.partition(":")
        if not colon:
            raise _bad(f"{line!r} is not `name: value`", position)
        fields[name.strip()] = (position, value.strip())
    if "version" not in fields or "topic_id" not in fields:
        raise _bad("no version or no topic_id line")
    version = _int(fields["version"][1], "the version", fields["version"][0])
    position, topic_id = fields["topic_id"]
    try:
        raw = base64.urlsafe_b64decode(topic_id + "==")
    except (binascii.Error, ValueError) as error:
        raise _bad(f"topic_id {topic_id!r} is not URL-safe base64", position) from error
    if len(raw) != 16 or len(topic_id) != 22:
        raise _bad(f"topic_id {topic_id!r} is not a 16-byte Uuid", position)
    return PartitionMetadata(version, topic_id)


def decode_meta_properties(data: bytes) -> MetaProperties:
    properties = []
    for position, line in _lines(data):
        if line.startswith(("#", "!")):
            continue
        key, separator, value = line.partition("=")
        if not separator:
            raise _bad(f"{line!r} is not `key=value`", position)
        properties.append((key.strip(), value.strip()))
    values = dict(properties)
    version = values.get("version")
    node = values.get("node.id", values.get("broker.id"))
    return MetaProperties(
        None if version is None else _int(version, "version", 0),
        values.get("cluster.id"),
        None if node is None else _int(node, "node.id", 0),
        values.get("directory.id"),
        tuple(properties),
    )


def _json_object(data: bytes) -> dict:
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise _bad(f"not JSON: {error}") from error
    if not isinstance(value, dict):
        raise _bad("JSON that is not an object")
    return value


def _json_int(value: dict, key: str) -> int | None:
    number = value.get(key)
    if number is None:
        return None
    if not isinstance(number, int) or isinstance(number, bool):
        raise _bad(f"{key} is {number!r}, not an integer")
    return number


def decode_clean_shutdown(data: bytes) -> CleanShutdown:
    if not data.strip():
        return CleanShutdown(None, None)
    value = _json_object(data)
    return CleanShutdown(_json_int(value, "version"), _json_int(value, "brokerEpoch"))


def decode_quorum_state(data: bytes) -> QuorumState:
    value = _json_object(data)
    voters = value.get("currentVoters") or []
    if not isinstance(voters, list) or not all(isinstance(voter, dict) for voter in voters):
        raise _bad("currentVoters is not a list of objects")
    return QuorumState(
        _json_int(value, "leaderId"),
        _json_int(value, "leaderEpoch"),
        _json_int(value, "votedId"),
        _json_int(value, "appliedOffset"),
        tuple(_json_int(voter, "voterId") for voter in voters),
        _json_int(value, "data_version"),
    )


def read_text_file(path: Path, decode: Callable[[bytes], T]) -> FileRead[T]:
    """Any of the files above, through its decoder: a FileRead with a finding when it does not decode."""
    path = Path(path)
    with PreadFile(path) as file:
        data = file.read(0, min(file.size(), MAX_TEXT_BYTES))
    try:
        return FileRead(decode(data))
    except KafkaDecodeError as error:
        return FileRead(None, (Finding.from_error(path, error),))
