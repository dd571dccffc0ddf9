"""`__consumer_offsets` records (the group coordinator's log), from their key and value.

The key starts with an int16 version that says what the record is: 0 and 1 an offset commit (group,
topic, partition), 2 a classic group's metadata (group), 3 and up the records of KIP-848 consumer groups
and KIP-932 share groups (each with the group id first). A null value is a tombstone: the offset or group
was deleted. Values: OffsetCommitValue v0-v4 (offset, v3+ leader epoch, metadata, commit timestamp, v1
expire timestamp; v4 flexible), GroupMetadataValue v0-v4 (protocol type, generation, protocol, leader, v2+
state timestamp, members; v4 flexible).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from store.kafka.findings import KafkaDecodeError
from store.kafka.wire import Reader

GROUP_RECORD_NAMES = {
    3: "ConsumerGroupMetadata",
    4: "ConsumerGroupPartitionMetadata",
    5: "ConsumerGroupMemberMetadata",
    6: "ConsumerGroupTargetAssignmentMetadata",
    7: "ConsumerGroupTargetAssignmentMember",
    8: "ConsumerGroupCurrentMemberAssignment",
    9: "ShareGroupPartitionMetadata",
    10: "ShareGroupMemberMetadata",
    11: "ShareGroupMetadata",
    12: "ShareGroupTargetAssignmentMetadata",
    13: "ShareGroupTargetAssignmentMember",
    14: "ShareGroupCurrentMemberAssignment",
    15: "ShareGroupStatePartitionMetadata",
}
_KIND = "bad-consumer-offsets-record"


@dataclass(frozen=True, slots=True)
class OffsetCommit:
    """A committed offset (or, with `deleted`, the tombstone of one)."""

    group: str
    topic: str
    partition: int
    deleted: bool = False
    offset: int | None = None
    leader_epoch: int | None = None  # v3+; -1 when the consumer did not know it
    metadata: str | None = None
    commit_timestamp: int | None = None
    expire_timestamp: int | None = None  # v1 only


@dataclass(frozen=True, slots=True)
class GroupMetadata:
    """A classic group's state (or its tombstone)."""

    group: str
    deleted: bool = False
    protocol_type: str | None = None
    generation: int | None = None
    protocol: str | None = None
    leader: str | None = None
    current_state_timestamp: int | None = None
    member_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class OtherGroupRecord:
    """A KIP-848/KIP-932 group record, or a key version this decoder does not know: named, not decoded."""

    key_version: int
    name: str
    group: str | None


GroupRecord = OffsetCommit | GroupMetadata | OtherGroupRecord


def decode_group_record(key: bytes | None, value: bytes | None) -> GroupRecord:
    if key is None:
        raise KafkaDecodeError(_KIND, "a __consumer_offsets record without a key")
    reader = Reader(key)
    key_version = reader.int16()
    if key_version in (0, 1):
        group = reader.string(compact=False)
        topic = reader.string(compact=False)
        partition = reader.int32()
        if value is None:
            return OffsetCommit(group, topic, partition, deleted=True)
        return OffsetCommit(group, topic, partition, **_offset_commit_value(Reader(value)))
    if key_version == 2:
        group = reader.string(compact=False)
        if value is None:
            return GroupMetadata(group, deleted=True)
        return GroupMetadata(group, **_group_metadata_value(Reader(value)))
    name = GROUP_RECORD_NAMES.get(key_version, f"unknown key version {key_version}")
    group = None
    if key_version in GROUP_RECORD_NAMES:
        group = reader.string(compact=False)  # every such key is non-flexible with the group id first
    return OtherGroupRecord(key_version, name, group)


def _offset_commit_value(value: Reader) -> dict:
    version = value.int16()
    if not 0 <= version <= 4:
        raise KafkaDecodeError(_KIND, f"OffsetCommitValue version {version} (0-4 exist)")
    flexible = version >= 4
    fields = {"offset": value.int64()}
    if version >= 3:
        fields["leader_epoch"] = value.int32()
    fields["metadata"] = value.string(compact=flexible)
    fields["commit_timestamp"] = value.int64()
    if version == 1:
        fields["expire_timestamp"] = value.int64()
    if flexible:
        value.tagged_fields()
    return fields


def _group_metadata_value(value: Reader) -> dict:
    version = value.int16()
    if not 0 <= version <= 4:
        raise KafkaDecodeError(_KIND, f"GroupMetadataValue version {version} (0-4 exist)")
    flexible = version >= 4
    fields = {
        "protocol_type": value.string(compact=flexible),
        "generation": value.int32(),
        "protocol": value.string(compact=flexible, nullable=True),
        "leader": value.string(compact=flexible, nullable=True),
    }
    if version >= 2:
        fields["current_state_timestamp"] = value.int64()
    members = []
    for _ in range(value.array_length(compact=flexible)):
        members.append(value.string(compact=flexible))
        if version >= 3:
            value.string(compact=flexible, nullable=True)  # groupInstanceId
        value.string(compact=flexible)  # clientId
        value.string(compact=flexible)  # clientHost
        if version >= 1:
            value.int32()  # rebalanceTimeout
        value.int32()  # sessionTimeout
        value.bytes_field(compact=flexible)  # subscription
        value.bytes_field(compact=flexible)  # assignment
        if flexible:
            value.tagged_fields()
    if flexible:
        value.tagged_fields()
    fields["member_ids"] = tuple(members)
    return fields


# --- encoding, for test data: the records a group coordinator appends for an offset commit


def encode_offset_commit(
    group: str,
    topic: str,
    partition: int,
    offset: int | None,
    *,
    commit_timestamp: int,
    leader_epoch: int = -1,
    metadata: str = "",
) -> tuple[bytes, bytes | None]:
    """(key, value) of an offset commit: key version 1, OffsetCommitValue version 3, as Kafka 2.1 to 3.x
    write them; `offset` None: the tombstone (a null value) that deletes the group's offset."""
    key = struct.pack(">h", 1) + _string(group) + _string(topic) + struct.pack(">i", partition)
    if offset is None:
        return key, None
    value = (
        struct.pack(">hqi", 3, offset, leader_epoch) + _string(metadata) + struct.pack(">q", commit_timestamp)
    )
    return key, value


def _string(text: str) -> bytes:
    data = text.encode()
    return struct.pack(">h", len(data)) + data
