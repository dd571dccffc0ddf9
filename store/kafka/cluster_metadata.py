"""`__cluster_metadata` records (the KRaft metadata log), named by type.

A metadata record's value is MetadataRecordSerde's frame: frame version (unsigned varint, 1), the record's
api key (unsigned varint) and its version (unsigned varint), then the record itself. The key is null.
The api keys are those of metadata/src/main/resources/common/metadata/*.json ("apiKey"); a key not in the
table is named "unknown type N" (a newer broker's record, or 6, 13 and 16, which no released
version writes), never an error.
"""

from __future__ import annotations

from dataclasses import dataclass

from store.kafka.findings import KafkaDecodeError
from store.kafka.wire import read_unsigned_varint

METADATA_RECORD_TYPES = {
    0: "RegisterBrokerRecord",
    1: "UnregisterBrokerRecord",
    2: "TopicRecord",
    3: "PartitionRecord",
    4: "ConfigRecord",
    5: "PartitionChangeRecord",
    7: "FenceBrokerRecord",
    8: "UnfenceBrokerRecord",
    9: "RemoveTopicRecord",
    10: "DelegationTokenRecord",
    11: "UserScramCredentialRecord",
    12: "FeatureLevelRecord",
    14: "ClientQuotaRecord",
    15: "ProducerIdsRecord",
    17: "BrokerRegistrationChangeRecord",
    18: "AccessControlEntryRecord",
    19: "RemoveAccessControlEntryRecord",
    20: "NoOpRecord",
    21: "ZkMigrationStateRecord",
    22: "RemoveUserScramCredentialRecord",
    23: "BeginTransactionRecord",
    24: "EndTransactionRecord",
    25: "AbortTransactionRecord",
    26: "RemoveDelegationTokenRecord",
    27: "RegisterControllerRecord",
    28: "ClearElrRecord",
    29: "UnregisterControllerRecord",
}
_KIND = "bad-metadata-record"


@dataclass(frozen=True, slots=True)
class MetadataRecord:
    frame_version: int
    api_key: int
    version: int
    type_name: str
    body_bytes: int  # the record's own fields, after the frame


def metadata_type_name(api_key: int) -> str:
    return METADATA_RECORD_TYPES.get(api_key, f"unknown type {api_key}")


def decode_metadata_record(value: bytes | None) -> MetadataRecord:
    if value is None:
        raise KafkaDecodeError(_KIND, "a __cluster_metadata record with a null value")
    frame_version, position = read_unsigned_varint(value, 0)
    if frame_version != 1:
        raise KafkaDecodeError(_KIND, f"metadata frame version {frame_version} (Kafka writes 1)")
    api_key, position = read_unsigned_varint(value, position)
    version, position = read_unsigned_varint(value, position)
    return MetadataRecord(frame_version, api_key, version, metadata_type_name(api_key), len(value) - position)
