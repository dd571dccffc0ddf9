"""The CommitLog message record, byte for byte as RocketMQ writes and checks it.

Encoding follows `MessageExtEncoder.encode` plus the offset/timestamp/CRC fill-in of
`CommitLog.DefaultAppendMessageCallback.doAppend`; decoding follows `CommitLog.checkMessageAndReturnSize`
and `MessageDecoder.decode`. All integers are big-endian, as Java's ByteBuffer writes them.

Record layout (offsets for IPv4 born and store hosts; an IPv6 host adds 12 bytes each):

     0 TOTALSIZE int32        40 BORNTIMESTAMP int64              84 BODY length int32, BODY
     4 MAGICCODE int32        48 BORNHOST ip(4|16) + port int32      TOPIC length int8 (V1)|int16 (V2), TOPIC
     8 BODYCRC int32          56 STORETIMESTAMP int64                PROPERTIES length int16, PROPERTIES
    12 QUEUEID int32          64 STOREHOSTADDRESS ip + port
    16 FLAG int32             72 RECONSUMETIMES int32
    20 QUEUEOFFSET int64      76 PreparedTransactionOffset int64
    28 PHYSICALOFFSET int64
    36 SYSFLAG int32

Encoding is split as in RocketMQ: `prepare_record` does what MessageExtEncoder does before the put lock, and
`PreparedRecord.write_into` what doAppend does under it (offsets, store timestamp, `__CRC32#`), straight into
the mapped file. `encode_into` and `encode_record` do both.

Decoding never trusts a length before checking it against the buffer, so garbage cannot make it read out of
bounds or allocate more than the bytes it was given. What decoding reports at a position:
- a `MessageRecord` (or `DispatchInfo`) for a valid record;
- a `BlankRecord` for the END_OF_FILE filler (BLANK_MAGIC_CODE): RocketMQ's "size 0, success", which rolls
  to the next file;
- `UnwrittenSpace` (a `CorruptRecord`) when TOTALSIZE and MAGICCODE are both zero: space never written, the
  clean end of a log. RocketMQ reports this as a failure like any other, so code that only catches
  `CorruptRecord` behaves as recovery does; code that wants to tell "end of data" from damage catches
  `UnwrittenSpace` first;
- `CorruptRecord` for anything else, naming the path, the record's absolute offset and the field at fault.

Nothing else comes out of the decoders (`decode_record`, `decode_dispatch_info`, `peek_total_size_and_magic`)
for any bytes: ValueError only for a negative `position`, an argument no buffer has (the whole contract is
in `store.errors`). `parse_offset_msg_id` raises ValueError for any text that is not an offsetMsgId.
"""

from __future__ import annotations

import functools
import ipaddress
import itertools
import mmap
import operator
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import NamedTuple

from store.config import StoreConfig
from store.errors import CorruptRecord, StoreError
from store.java_checksums import masked_crc32, masked_crc32s
from store.java_checksums import tags_code as java_tags_code

# --- Magic codes (MessageDecoder / CommitLog), as unsigned 32-bit values; Java's are signed ints. ---
MESSAGE_MAGIC_CODE_V1 = 0xDAA320A7  # MESSAGE_MAGIC_CODE, -626843481: 1-byte topic length
MESSAGE_MAGIC_CODE = MESSAGE_MAGIC_CODE_V1
MESSAGE_MAGIC_CODE_V2 = 0xDAA320AB  # -626843477, since 5.1.0: 2-byte topic length
BLANK_MAGIC_CODE = 0xCBD43194  # -875286124: the end-of-file filler
END_FILE_MIN_BLANK_LENGTH = 4 + 4  # CommitLog: TOTALSIZE + MAGICCODE of the blank record

# --- Field positions in a record (MessageDecoder). The store timestamp's holds for IPv4 born hosts only. ---
MESSAGE_MAGIC_CODE_POSITION = 4
MESSAGE_FLAG_POSITION = 16
QUEUE_OFFSET_POSITION = 20
PHY_POS_POSITION = 28
SYSFLAG_POSITION = 36
MESSAGE_STORE_TIMESTAMP_POSITION = 56

# --- SYSFLAG bits (MessageSysFlag) ---
COMPRESSED_FLAG = 0x1
MULTI_TAGS_FLAG = 0x2
TRANSACTION_NOT_TYPE = 0x0
TRANSACTION_PREPARED_TYPE = 0x4
TRANSACTION_COMMIT_TYPE = 0x8
TRANSACTION_ROLLBACK_TYPE = 0xC
TRANSACTION_TYPE_MASK = 0xC
BORNHOST_V6_FLAG = 0x10
STOREHOSTADDRESS_V6_FLAG = 0x20
NEED_UNWRAP_FLAG = 0x40
INNER_BATCH_FLAG = 0x80
COMPRESSION_LZ4_TYPE = 0x1 << 8
COMPRESSION_ZSTD_TYPE = 0x2 << 8
COMPRESSION_ZLIB_TYPE = 0x3 << 8
COMPRESSION_TYPE_COMPARATOR = 0x7 << 8

# --- Property names (MessageConst) and separators (MessageDecoder) ---
PROPERTY_KEYS = "KEYS"
PROPERTY_TAGS = "TAGS"
PROPERTY_WAIT_STORE_MSG_OK = "WAIT"
PROPERTY_DELAY_TIME_LEVEL = "DELAY"
PROPERTY_RETRY_TOPIC = "RETRY_TOPIC"
PROPERTY_REAL_TOPIC = "REAL_TOPIC"
PROPERTY_REAL_QUEUE_ID = "REAL_QID"
PROPERTY_TRANSACTION_PREPARED = "TRAN_MSG"
PROPERTY_PRODUCER_GROUP = "PGROUP"
PROPERTY_MIN_OFFSET = "MIN_OFFSET"
PROPERTY_MAX_OFFSET = "MAX_OFFSET"
PROPERTY_UNIQ_CLIENT_MESSAGE_ID_KEYIDX = "UNIQ_KEY"
PROPERTY_INNER_NUM = "INNER_NUM"
PROPERTY_INNER_BASE = "INNER_BASE"
DUP_INFO = "DUP_INFO"
PROPERTY_INNER_MULTI_DISPATCH = "INNER_MULTI_DISPATCH"
PROPERTY_INNER_MULTI_QUEUE_OFFSET = "INNER_MULTI_QUEUE_OFFSET"
PROPERTY_TIMER_DELIVER_MS = "TIMER_DELIVER_MS"
PROPERTY_TIMER_DELAY_SEC = "TIMER_DELAY_SEC"
PROPERTY_CRC32 = "__CRC32#"
PROPERTY_TRANSIENT_PREFIX = "__RMQ.TRANSIENT."
KEY_SEPARATOR = " "
NAME_VALUE_SEPARATOR = "\x01"
PROPERTY_SEPARATOR = "\x02"

# TopicValidator.RMQ_SYS_SCHEDULE_TOPIC: on this topic the dispatcher replaces tagsCode by the delivery time.
SCHEDULE_TOPIC = "SCHEDULE_TOPIC_XXXX"

# --- Size limits ---
V1_MAX_TOPIC_LENGTH = 127  # Byte.MAX_VALUE: the V1 topic length is read back as a signed byte
MAX_TOPIC_LENGTH = 255  # HookUtils.MAX_TOPIC_LENGTH: the longest topic a broker accepts
MAX_PROPERTIES_SIZE = 32_767  # Short.MAX_VALUE: PROPERTIES_SIZE_EXCEEDED above it
DEFAULT_MAX_MESSAGE_BODY_SIZE = StoreConfig().max_message_body_size
# MessageExtEncoder sizes its buffer maxMessageBodySize + 64 KiB, so no broker record is longer than this.
ENCODER_HEADROOM = 64 * 1024
DEFAULT_MAX_RECORD_SIZE = DEFAULT_MAX_MESSAGE_BODY_SIZE + ENCODER_HEADROOM
# CommitLog.CRC32_RESERVED_LEN = "__CRC32#".length() + 1 + 10 + 1
CRC32_RESERVED_LEN = len(PROPERTY_CRC32) + 1 + 10 + 1

# What the codec reads from and writes into. (collections.abc.Buffer only arrives in Python 3.12.)
ReadableBuffer = bytes | bytearray | memoryview | mmap.mmap
WritableBuffer = bytearray | memoryview | mmap.mmap

_CRC32_PROPERTY_PREFIX = (PROPERTY_CRC32 + NAME_VALUE_SEPARATOR).encode("ascii")
_ASCII_DIGITS = frozenset(b"0123456789")
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


class MessageTooLarge(StoreError):
    """A message the broker would refuse (MESSAGE_ILLEGAL / PROPERTIES_SIZE_EXCEEDED): body, properties or
    topic longer than RocketMQ allows."""


class UnwrittenSpace(CorruptRecord):
    """TOTALSIZE and MAGICCODE are both zero: nothing was ever written here (mapped files start zero-filled).

    A `CorruptRecord`, because `checkMessageAndReturnSize` fails on it like on any unknown magic code; a
    subclass, so a scan can tell the clean end of a log from damage."""


class MessageVersion(IntEnum):
    """`MessageVersion`: V1 writes the topic length in 1 byte, V2 in 2 bytes."""

    V1 = 1
    V2 = 2

    @property
    def magic_code(self) -> int:
        return MESSAGE_MAGIC_CODE_V1 if self is MessageVersion.V1 else MESSAGE_MAGIC_CODE_V2

    @property
    def topic_length_size(self) -> int:
        return 1 if self is MessageVersion.V1 else 2


class HostAddress(NamedTuple):
    """An `InetSocketAddress` as stored: IPv4 (4 bytes) or IPv6 (16 bytes) address text, and an int32 port."""

    host: str
    port: int


class OffsetMessageId(NamedTuple):
    """What an offsetMsgId encodes: the store host and the record's commitlog offset."""

    host: str
    port: int
    physical_offset: int


_LOOPBACK = HostAddress("127.0.0.1", 0)


@dataclass(frozen=True, slots=True)
class Message:
    """A message to append: what the producer sent plus what the broker decides before the put lock.

    `sysflag`'s host bits (BORNHOST_V6_FLAG, STOREHOSTADDRESS_V6_FLAG) are set by the encoder from the hosts,
    as `CommitLog.asyncPutMessage` does. A COMPRESSED body is stored as given (already compressed).
    """

    topic: str
    body: bytes | bytearray | memoryview = b""
    queue_id: int = 0
    flag: int = 0
    properties: Mapping[str, str] = field(default_factory=dict)
    sysflag: int = 0
    born_timestamp_ms: int = 0
    born_host: HostAddress | tuple[str, int] = _LOOPBACK
    store_host: HostAddress | tuple[str, int] = _LOOPBACK
    reconsume_times: int = 0
    prepared_transaction_offset: int = 0


@dataclass(frozen=True, slots=True)
class BlankRecord:
    """The END_OF_FILE filler: 8 bytes on disk, `total_size` = every byte left in the file from here."""

    total_size: int


@dataclass(frozen=True, slots=True)
class MessageRecord:
    """A decoded CommitLog record (`MessageExt` as `MessageDecoder.decode` builds it).

    `body` is a zero-copy memoryview slice when the input buffer was a memoryview, bytes otherwise, and None
    when decoded with `read_body=False`. A COMPRESSED body (sysflag bit 0x1) is returned as stored.
    """

    total_size: int
    magic_code: int
    body_crc: int
    queue_id: int
    flag: int
    queue_offset: int
    physical_offset: int
    sysflag: int
    born_timestamp_ms: int
    born_host: HostAddress
    store_timestamp_ms: int
    store_host: HostAddress
    reconsume_times: int
    prepared_transaction_offset: int
    body: bytes | memoryview | None
    topic: str
    properties: dict[str, str]

    @property
    def version(self) -> MessageVersion:
        return MessageVersion.V1 if self.magic_code == MESSAGE_MAGIC_CODE_V1 else MessageVersion.V2

    @property
    def keys(self) -> str | None:
        """The KEYS property: index keys separated by KEY_SEPARATOR."""
        return self.properties.get(PROPERTY_KEYS)

    @property
    def key_list(self) -> tuple[str, ...]:
        """The keys `IndexService.buildIndex` indexes: KEYS split on spaces, empty pieces dropped."""
        return _split_keys(self.keys)

    @property
    def tags(self) -> str | None:
        return self.properties.get(PROPERTY_TAGS)

    @property
    def uniq_key(self) -> str | None:
        """UNIQ_KEY: the client-side message id (`MessageClientIDSetter`)."""
        return self.properties.get(PROPERTY_UNIQ_CLIENT_MESSAGE_ID_KEYIDX)

    @property
    def tags_code(self) -> int:
        """The ConsumeQueue tagsCode of TAGS (Java hashCode, 0 without tags). SCHEDULE_TOPIC_XXXX records get
        their delivery time instead, which needs the broker's delay table: see `DispatchInfo.delay_level`."""
        return java_tags_code(self.tags)

    @property
    def offset_msg_id(self) -> str | None:
        """The broker-side msgId: store host + commitlog offset (`MessageDecoder.createMessageId`).

        None when the record's store host port is outside 0..65535: BODYCRC covers only the body, so a
        damaged header can decode, and no offsetMsgId names such a host (`MessageDecoder.decode` gives up on
        the record for the same reason)."""
        try:
            return offset_msg_id(self.store_host, self.physical_offset)
        except ValueError:
            return None

    def to_message(self) -> Message:
        """The `Message` that encodes back to this record, minus the store-computed `__CRC32#` property."""
        properties = {name: value for name, value in self.properties.items() if name != PROPERTY_CRC32}
        return Message(
            topic=self.topic,
            body=b"" if self.body is None else bytes(self.body),
            queue_id=self.queue_id,
            flag=self.flag,
            properties=properties,
            sysflag=self.sysflag,
            born_timestamp_ms=self.born_timestamp_ms,
            born_host=self.born_host,
            store_host=self.store_host,
            reconsume_times=self.reconsume_times,
            prepared_transaction_offset=self.prepared_transaction_offset,
        )


@dataclass(frozen=True, slots=True)
class DispatchInfo:
    """What `checkMessageAndReturnSize` hands the ConsumeQueue and index dispatchers (`DispatchRequest`).

    `tags_code` is the TAGS hash. For SCHEDULE_TOPIC_XXXX with a DELAY property RocketMQ replaces it by
    `computeDeliverTimestamp(delay_level, store_timestamp)`, which depends on the broker's messageDelayLevel
    table, so the dispatcher does that with `delay_level`.
    """

    topic: str
    queue_id: int
    queue_offset: int
    physical_offset: int
    size: int
    tags_code: int
    store_timestamp_ms: int
    keys: str | None
    uniq_key: str | None
    sysflag: int
    prepared_transaction_offset: int
    properties: dict[str, str]

    @property
    def key_list(self) -> tuple[str, ...]:
        return _split_keys(self.keys)

    @property
    def delay_level(self) -> int | None:
        """DELAY as an int on SCHEDULE_TOPIC_XXXX, else None (also None if it is not a number)."""
        if self.topic != SCHEDULE_TOPIC:
            return None
        try:
            return int(self.properties[PROPERTY_DELAY_TIME_LEVEL])
        except (KeyError, ValueError):
            return None


def _split_keys(keys: str | None) -> tuple[str, ...]:
    return tuple(key for key in keys.split(KEY_SEPARATOR) if key) if keys else ()


# ----------------------------------------------------------------------------------------------------------
# Fixed header: everything from TOTALSIZE to the BODY length. Four layouts, by the two IPv6 sysflag bits.
# ----------------------------------------------------------------------------------------------------------


def _header_struct(born_ip_size: int, store_ip_size: int) -> struct.Struct:
    # total, magic (unsigned, to compare with the constants), bodyCRC, queueId, flag, queueOffset,
    # physicalOffset, sysFlag, bornTimestamp, bornHost ip + port, storeTimestamp, storeHost ip + port,
    # reconsumeTimes, preparedTransactionOffset, body length.
    return struct.Struct(f">iIiiiqqiq{born_ip_size}siq{store_ip_size}siiqi")


def _layout(sysflag: int) -> int:
    """Index into _HEADERS: bit 0 = born host is IPv6, bit 1 = store host is IPv6."""
    return (sysflag >> 4) & 3


_HEADERS = tuple(_header_struct(16 if layout & 1 else 4, 16 if layout & 2 else 4) for layout in range(4))
_SIZE_AND_MAGIC = struct.Struct(">iI")
_SYSFLAG = struct.Struct(">i")
_TOPIC_LENGTH = {MessageVersion.V1: struct.Struct(">b"), MessageVersion.V2: struct.Struct(">h")}
# Keyed by the int magic code: enum members hash slowly, and decoding looks this up once per record.
_TOPIC_LENGTH_BY_MAGIC = {version.magic_code: _TOPIC_LENGTH[version] for version in MessageVersion}
_PROPERTIES_LENGTH = struct.Struct(">h")
_OFFSET_MSG_ID = {4: struct.Struct(">4siq"), 16: struct.Struct(">16siq")}
_PROPERTIES_LENGTH_SIZE = _PROPERTIES_LENGTH.size
_SMALLEST_RECORD = _HEADERS[0].size + 1 + _PROPERTIES_LENGTH_SIZE  # empty body, topic and properties, V1


def calc_record_size(
    version: MessageVersion, sysflag: int, body_length: int, topic_length: int, properties_length: int
) -> int:
    """`MessageExtEncoder.calMsgLength`: the TOTALSIZE of a record with these lengths (negative body and
    properties lengths count as 0, as in Java)."""
    return (
        _HEADERS[_layout(sysflag)].size
        + max(body_length, 0)
        + _TOPIC_LENGTH[version].size
        + topic_length
        + _PROPERTIES_LENGTH_SIZE
        + max(properties_length, 0)
    )


# ----------------------------------------------------------------------------------------------------------
# Properties
# ----------------------------------------------------------------------------------------------------------


def properties_to_string(properties: Mapping[str, str]) -> str:
    """`MessageDecoder.messageProperties2String`: `name\\x01value\\x02` per entry, so it ends with \\x02.

    Raises ValueError for what RocketMQ's decoder could not give back: an empty name or value, or a
    separator inside one."""
    if not properties:
        return ""
    text = "".join([f"{name}\x01{value}\x02" for name, value in properties.items()])
    count = len(properties)
    # Two C-level scans instead of checking each entry: each entry contributes exactly one of each separator,
    # and an empty name or value shows up as adjacent separators.
    if (
        text.count(NAME_VALUE_SEPARATOR) != count
        or text.count(PROPERTY_SEPARATOR) != count
        or text[0] == NAME_VALUE_SEPARATOR
        or "\x02\x01" in text
        or "\x01\x02" in text
    ):
        raise ValueError(
            f"property names and values must be non-empty and free of \\x01 and \\x02: {properties!r}"
        )
    return text


def string_to_properties(text: str) -> dict[str, str]:
    """`MessageDecoder.string2messageProperties`, tolerant as in Java: split on \\x02; keep a segment only if
    it has a \\x01 with at least one character before and after it (the value may hold more \\x01); a
    missing trailing \\x02 is fine; a repeated name keeps the last value."""
    properties = {}
    for segment in text.split(PROPERTY_SEPARATOR):
        name, _, value = segment.partition(NAME_VALUE_SEPARATOR)
        if name and value:
            properties[name] = value
    return properties


def encode_crc32_property(crc: int) -> bytes:
    """`MessageDecoder.createCrc32`: the 20 bytes `__CRC32#`, \\x01, the value's 10 decimal digits least
    significant first (padded with '0' at the end), \\x02. crc 123 -> `__CRC32#\\x013210000000\\x02`."""
    if not 0 <= crc <= 0x7FFFFFFF:
        raise ValueError(f"a masked CRC32 is between 0 and 2^31-1, not {crc}")
    return _CRC32_PROPERTY_PREFIX + str(crc)[::-1].ljust(10, "0").encode("ascii") + b"\x02"


def _parse_crc32_digits(digits: bytes) -> int | None:
    """The CRC in a reserved tail's 10 digits (read from last to first, as CommitLog does), or None if they
    are not all digits."""
    if not _ASCII_DIGITS.issuperset(digits):
        return None
    return int(digits[::-1])


# ----------------------------------------------------------------------------------------------------------
# Hosts and message ids
# ----------------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def _packed_host(host: tuple[str, int]) -> tuple[bytes, int]:
    """(address bytes, port) of a host; cached because a store sees few distinct hosts and parsing is slow."""
    address, port = host
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"port {port} of {address} is not between 0 and 65535")
    return ipaddress.ip_address(address).packed, port


@functools.lru_cache(maxsize=4096)
@functools.lru_cache(maxsize=1024)
def host_from_packed(address: bytes, port: int) -> HostAddress:
    """The host a record's 4- or 16-byte address and port name. Cached: a store's records come from a few
    hosts, and parsing the address is most of what decoding a record's header costs."""
    ip = ipaddress.IPv4Address(address) if len(address) == 4 else ipaddress.IPv6Address(address)
    return HostAddress(ip.compressed, port)


def offset_msg_id(store_host: HostAddress | tuple[str, int], physical_offset: int) -> str:
    """`MessageDecoder.createMessageId`: upper-case hex of store ip (4|16 bytes) + int32 port + int64 offset,
    32 characters for IPv4, 56 for IPv6.

    Raises ValueError for a host that is not an IP address, a port outside 0..65535 or an offset that does
    not fit a Java long."""
    address, port = _packed_host(tuple(store_host))
    try:
        packed = _OFFSET_MSG_ID[len(address)].pack(address, port, physical_offset)
    except struct.error:
        raise ValueError(f"commitlog offset {physical_offset!r} does not fit a Java long") from None
    return packed.hex().upper()


def parse_offset_msg_id(text: str) -> OffsetMessageId:
    """`MessageDecoder.decodeMessageId`: (host, port, physical offset) of an offsetMsgId (either case).

    Raises ValueError unless it is 32 or 56 hex digits (nothing else: `bytes.fromhex` alone would take
    spaces) with a port in 0..65535 and a non-negative offset."""
    if not isinstance(text, str) or len(text) not in (32, 56):
        raise ValueError(f"an offsetMsgId is 32 (IPv4) or 56 (IPv6) hex digits, not {text!r}")
    if not _HEX_DIGITS.issuperset(text):
        raise ValueError(f"offsetMsgId {text!r} is not hexadecimal (digits 0-9 and A-F only)")
    raw = bytes.fromhex(text)
    address, port, physical_offset = _OFFSET_MSG_ID[len(raw) - 12].unpack(raw)
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"offsetMsgId {text!r} holds port {port}, outside 0..65535")
    if physical_offset < 0:
        raise ValueError(f"offsetMsgId {text!r} holds a negative commitlog offset {physical_offset}")
    host = host_from_packed(address, port)
    return OffsetMessageId(host.host, host.port, physical_offset)


# ----------------------------------------------------------------------------------------------------------
# Encoding
# ----------------------------------------------------------------------------------------------------------


def encode_blank(max_blank: int) -> bytes:
    """The END_OF_FILE record `doAppend` writes when a message does not fit: int32 TOTALSIZE = max_blank
    (every byte left in the file), int32 BLANK_MAGIC_CODE. Only these 8 bytes are written; the rest of the
    file stays as it was."""
    if not END_FILE_MIN_BLANK_LENGTH <= max_blank <= 0x7FFFFFFF:
        raise ValueError(f"a blank record spans {END_FILE_MIN_BLANK_LENGTH}..2^31-1 bytes, not {max_blank}")
    return _SIZE_AND_MAGIC.pack(max_blank, BLANK_MAGIC_CODE)


@functools.lru_cache(maxsize=4096)
def _topic_field(topic: str, version: MessageVersion | None) -> tuple[MessageVersion, bytes]:
    """The version to write and the TOPIC length + TOPIC bytes; cached because topics repeat."""
    if not topic:
        raise ValueError("a topic must not be empty")
    data = topic.encode("utf-8")
    if len(data) > MAX_TOPIC_LENGTH:
        raise MessageTooLarge(
            f"topic of {len(data)} UTF-8 bytes exceeds MAX_TOPIC_LENGTH ({MAX_TOPIC_LENGTH})"
        )
    if version is None:
        # autoMessageVersionOnTopicLen. Java compares topic.length() (chars) with 127 but writes the UTF-8
        # byte length, so a short non-ASCII topic could overflow V1's signed byte; the byte length counts.
        version = MessageVersion.V2 if len(data) > V1_MAX_TOPIC_LENGTH else MessageVersion.V1
    elif version is MessageVersion.V1 and len(data) > V1_MAX_TOPIC_LENGTH:
        raise MessageTooLarge(f"topic of {len(data)} UTF-8 bytes does not fit V1's 1-byte length (max 127)")
    return version, _TOPIC_LENGTH[version].pack(len(data)) + data


def _properties_field(properties: Mapping[str, str], append_property_crc: bool) -> bytes:
    """PROPERTIES length + PROPERTIES, with CRC32_RESERVED_LEN bytes reserved at the end if asked.

    `__CRC32#` is computed by the store, never taken from the message: a stale one would fail the check."""
    if PROPERTY_CRC32 in properties:
        properties = {name: value for name, value in properties.items() if name != PROPERTY_CRC32}
    data = properties_to_string(properties).encode("utf-8")
    # Our string always ends with \x02 when non-empty, so MessageExtEncoder's "append a separator before the
    # CRC" case never arises.
    length = len(data) + (CRC32_RESERVED_LEN if append_property_crc else 0)
    if length > MAX_PROPERTIES_SIZE:
        raise MessageTooLarge(
            f"properties of {length} bytes exceed {MAX_PROPERTIES_SIZE} (PROPERTIES_SIZE_EXCEEDED)"
        )
    reserved = bytes(CRC32_RESERVED_LEN) if append_property_crc else b""
    return _PROPERTIES_LENGTH.pack(length) + data + reserved


class PreparedRecord(NamedTuple):
    """A message encoded as far as `MessageExtEncoder.encode` goes before the put lock: everything except
    QUEUEOFFSET, PHYSICALOFFSET, STORETIMESTAMP and the `__CRC32#` value, which `write_into` fills in as
    `doAppend` does. `total_size` is known up front, so the store can choose between this record and a BLANK
    (RocketMQ writes the record only if `total_size + END_FILE_MIN_BLANK_LENGTH <= maxBlank`).

    Only `total_size` and `write_into` are meant for callers; the rest is the encoder's working state.
    """

    total_size: int
    header: struct.Struct
    leading: tuple  # TOTALSIZE, MAGICCODE, BODYCRC, QUEUEID, FLAG
    middle: tuple  # SYSFLAG, BORNTIMESTAMP, BORNHOST ip and port
    trailing: tuple  # STOREHOSTADDRESS ip and port, RECONSUMETIMES, PreparedTransactionOffset, BODY length
    body: bytes | bytearray | memoryview
    tail: bytes  # TOPIC length, TOPIC, PROPERTIES length, PROPERTIES (with the reserved CRC bytes)
    append_property_crc: bool

    def write_into(
        self,
        buffer: WritableBuffer,
        position: int,
        *,
        queue_offset: int,
        physical_offset: int,
        store_timestamp_ms: int,
    ) -> int:
        """Write the record at `position` of a writable buffer (mmap, bytearray, memoryview); return its size.

        Raises ValueError, having written nothing, if the record does not fit or an offset or the timestamp
        does not fit a Java long."""
        total = self.total_size
        if position < 0 or position + total > len(buffer):
            raise ValueError(
                f"record of {total} bytes does not fit at position {position} of a {len(buffer)}-byte buffer"
            )
        _check_placement(queue_offset, physical_offset, store_timestamp_ms)
        header = self.header
        header.pack_into(
            buffer, position, *self.leading, queue_offset, physical_offset, *self.middle,
            store_timestamp_ms, *self.trailing,
        )  # fmt: skip
        body_start = position + header.size
        tail_start = body_start + len(self.body)
        buffer[body_start:tail_start] = self.body
        buffer[tail_start : position + total] = self.tail
        if self.append_property_crc:
            _fill_property_crc(buffer, position, total)
        return total


def prepare_record(
    message: Message,
    *,
    version: MessageVersion | None = None,
    append_property_crc: bool = False,
    max_body_size: int = DEFAULT_MAX_MESSAGE_BODY_SIZE,
) -> PreparedRecord:
    """Encode everything about `message` that does not depend on where it lands in the log.

    `version` None picks V2 only for topics over 127 UTF-8 bytes (autoMessageVersionOnTopicLen).
    `append_property_crc` is `enabledAppendPropCRC`: reserve CRC32_RESERVED_LEN bytes at the end of the
    properties, to be filled with the CRC of the rest of the record once it is placed.
    Raises MessageTooLarge for a body over `max_body_size` (maxMessageSize), properties over 32767 bytes or
    a topic over 255 bytes; ValueError for an empty topic, bad hosts or properties, or numbers that overflow
    Java's int/long.
    """
    body = message.body
    if len(body) > max_body_size:
        raise MessageTooLarge(f"message body of {len(body)} bytes exceeds maxMessageSize ({max_body_size})")
    version, topic_field = _topic_field(message.topic, version)
    tail = topic_field + _properties_field(message.properties, append_property_crc)
    born_address, born_port = _packed_host(message.born_host)
    store_address, store_port = _packed_host(message.store_host)
    sysflag = _sysflag_with_host_bits(message.sysflag, born_address, store_address)
    header = _HEADERS[_layout(sysflag)]
    total = header.size + len(body) + len(tail)
    leading = (total, version.magic_code, masked_crc32(body), message.queue_id, message.flag)
    middle = (sysflag, message.born_timestamp_ms, born_address, born_port)
    trailing = (
        store_address,
        store_port,
        message.reconsume_times,
        message.prepared_transaction_offset,
        len(body),
    )
    try:
        # A dry run with zero placement: write_into's pack_into must not fail halfway through a record.
        header.pack(*leading, 0, 0, *middle, 0, *trailing)
    except struct.error as error:
        _raise_out_of_range(_message_numbers(message))
        raise ValueError(f"a header field does not fit its Java type: {error}") from error
    return PreparedRecord(total, header, leading, middle, trailing, body, tail, append_property_crc)


_PLACEMENT = struct.Struct(">qqq")


def _check_placement(queue_offset: int, physical_offset: int, store_timestamp_ms: int) -> None:
    try:
        _PLACEMENT.pack(queue_offset, physical_offset, store_timestamp_ms)
    except struct.error as error:
        placement = {
            "queue_offset": queue_offset,
            "physical_offset": physical_offset,
            "store_timestamp_ms": store_timestamp_ms,
        }
        _raise_out_of_range(placement)
        raise ValueError(f"an offset or the store timestamp does not fit a Java long: {error}") from error


def _fill_property_crc(buffer: WritableBuffer, position: int, total: int) -> None:
    """doAppend's last step: CRC over [0, total-20) of the finished record, written into the reserved tail."""
    crc_end = position + total - CRC32_RESERVED_LEN
    with memoryview(buffer) as view:
        crc = masked_crc32(view[position:crc_end])
    buffer[crc_end : position + total] = encode_crc32_property(crc)


def _message_numbers(message: Message) -> dict[str, int]:
    return {
        "queue_id": message.queue_id,
        "flag": message.flag,
        "sysflag": message.sysflag,
        "born_timestamp_ms": message.born_timestamp_ms,
        "reconsume_times": message.reconsume_times,
        "prepared_transaction_offset": message.prepared_transaction_offset,
    }


_INT32_FIELDS = frozenset({"queue_id", "flag", "sysflag", "reconsume_times"})


def _raise_out_of_range(numbers: dict[str, int]) -> None:
    """Name the field behind struct's anonymous "argument out of range" (a Java int or long)."""
    for name, value in numbers.items():
        bits = 32 if name in _INT32_FIELDS else 64
        if not isinstance(value, int) or not -(1 << (bits - 1)) <= value < 1 << (bits - 1):
            raise ValueError(f"{name}={value!r} does not fit a Java {'int' if bits == 32 else 'long'}")


def encode_into(
    buffer: WritableBuffer,
    position: int,
    message: Message,
    *,
    queue_offset: int,
    physical_offset: int,
    store_timestamp_ms: int,
    version: MessageVersion | None = None,
    append_property_crc: bool = False,
    max_body_size: int = DEFAULT_MAX_MESSAGE_BODY_SIZE,
) -> int:
    """Encode `message` straight into a writable buffer (an mmap, bytearray or memoryview) at `position` and
    return the record's size (TOTALSIZE).

    It goes through the batch encoder (`PackedBatch`, what the CommitLog writes batches of messages with a
    shared header with), so the golden and round-trip tests of this function pin that encoder's bytes too;
    `prepare_record` (single puts, mixed batches) has tests of its own.

    `queue_offset`, `physical_offset` and `store_timestamp_ms` are what doAppend fills in under the put lock
    (pass queue_offset 0 for TRANSACTION_PREPARED/ROLLBACK messages, which do not enter a ConsumeQueue).
    Raises as `prepare_record` and `PreparedRecord.write_into` do; nothing is written when it raises.
    """
    batch = _pack_batch([message], _SHARED_FIELDS(message), version, append_property_crc, max_body_size)
    return batch.write_into(
        buffer,
        position,
        queue_offset=queue_offset,
        physical_offset=physical_offset,
        store_timestamp_ms=store_timestamp_ms,
    )


def encode_record(
    message: Message,
    *,
    queue_offset: int,
    physical_offset: int,
    store_timestamp_ms: int,
    version: MessageVersion | None = None,
    append_property_crc: bool = False,
    max_body_size: int = DEFAULT_MAX_MESSAGE_BODY_SIZE,
) -> bytes:
    """The record `encode_into` would write, as bytes (also through the batch encoder)."""
    batch = _pack_batch([message], _SHARED_FIELDS(message), version, append_property_crc, max_body_size)
    buffer = bytearray(batch.total_size)
    batch.write_into(
        buffer,
        0,
        queue_offset=queue_offset,
        physical_offset=physical_offset,
        store_timestamp_ms=store_timestamp_ms,
    )
    return bytes(buffer)


# ----------------------------------------------------------------------------------------------------------
# Batches: every record of a batch written by one struct.pack_into
# ----------------------------------------------------------------------------------------------------------
#
# Record by record, the encoder spends microseconds of interpreter time per message, mostly rebuilding values
# that every message of a batch shares: a MessageExtBatch has one topic, queue, sysflag and pair of hosts.
# The batch encoder packs those once and describes the whole batch as one struct format whose arguments are
# per-record columns, so that what remains per message (the masked CRCs, the column fills, the pack) runs
# in C.
# The arguments are args[0], the first record's TOTALSIZE + MAGICCODE, then per record, in byte order:
#
#   crc     BODYCRC                                                               i
#   head    QUEUEID, FLAG                                                         8s
#   queue   QUEUEOFFSET                                                           q   placed under the lock
#   phys    PHYSICALOFFSET                                                        q   placed under the lock
#   sysflag SYSFLAG                                                               4s
#   born    BORNTIMESTAMP                                                         q
#   middle  BORNHOST, STORETIMESTAMP, STOREHOST, RECONSUMETIMES, PreparedTransactionOffset, BODY length
#                                                                                 Ms  placed under the lock
#   body    BODY                                                                  Ls
#   tail    TOPIC and PROPERTIES fields, then the next record's TOTALSIZE + MAGICCODE  Ts
#
# Gluing each record's leading constants to the previous record's tail saves one argument per record.

# What the messages of a packed batch must share. Bodies, properties and born timestamps may differ.
_SHARED_FIELDS = operator.attrgetter(
    "topic",
    "queue_id",
    "flag",
    "sysflag",
    "born_host",
    "store_host",
    "reconsume_times",
    "prepared_transaction_offset",
)
_BODY = operator.attrgetter("body")
_PROPERTIES = operator.attrgetter("properties")
_BORN_TIMESTAMP = operator.attrgetter("born_timestamp_ms")
_STRUCT_BYTES_TYPES = frozenset({bytes, bytearray})  # what struct's "s" code accepts
_COLUMNS = 9
_CRC_COLUMN, _QUEUE_COLUMN, _PHYSICAL_COLUMN, _SYSFLAG_COLUMN = 1, 3, 4, 5
_BORN_COLUMN, _MIDDLE_COLUMN, _BODY_COLUMN, _TAIL_COLUMN = 6, 7, 8, 9
_QUEUE_ID_AND_FLAG = struct.Struct(">ii")
_INT = struct.Struct(">i")
_LONG = struct.Struct(">q")
_RECONSUME_AND_PREPARED = struct.Struct(">iq")
_HOST_FIELDS = {4: struct.Struct(">4si"), 16: struct.Struct(">16si")}


def _record_format(middle_size: int, body_length: int | str, tail_length: int | str) -> str:
    return f"i8sqq4sq{middle_size}s{body_length}s{tail_length}s"


@functools.lru_cache(maxsize=64)
def _uniform_batch_struct(count: int, middle_size: int, body_length: int, tail_length: int) -> struct.Struct:
    """The struct of `count` records of one size. Cached: a producer sends the same shape over and over, and
    compiling the format of a 256-record batch costs about as much as packing it."""
    glued = _record_format(middle_size, body_length, tail_length + _SIZE_AND_MAGIC.size)
    return struct.Struct(">8s" + glued * (count - 1) + _record_format(middle_size, body_length, tail_length))


@functools.lru_cache(maxsize=64)
def _longs(count: int) -> struct.Struct:
    return struct.Struct(f">{count}q")


class PackedBatch:
    """Records of one topic and queue encoded as far as they go before the put lock; `write_into` places
    and writes them all with one `struct.pack_into`, as doAppend does for a MessageExtBatch.

    Build it with `prepare_batch`. `write_into` fills the placement columns of its argument list, so one
    batch must not be written by two threads at once (the put lock serialises writers anyway)."""

    __slots__ = (
        "_args",
        "_born_host",
        "_middle_suffixes",
        "_record_sizes",
        "_record_starts",
        "_struct",
        "_uniform_middle_suffix",
        "count",
        "shape",
        "total_size",
    )

    def __init__(
        self,
        batch_struct: struct.Struct,
        args: list,
        record_starts: range | list[int],
        record_sizes: list[int] | None,
        born_host: bytes,
        middle_suffixes: bytes | list[bytes],
        shape: BatchShape | None = None,
    ):
        self.count = len(record_starts)
        self.shape = shape
        self.total_size = batch_struct.size
        self._struct = batch_struct
        self._args = args
        self._record_starts = record_starts
        self._record_sizes = record_sizes  # only kept when each record's __CRC32# tail must be filled in
        self._born_host = born_host
        if isinstance(middle_suffixes, bytes):
            self._uniform_middle_suffix, self._middle_suffixes = middle_suffixes, None
        else:
            self._uniform_middle_suffix, self._middle_suffixes = None, middle_suffixes

    def write_into(
        self,
        buffer: WritableBuffer,
        position: int,
        *,
        queue_offset: int | None,
        physical_offset: int,
        store_timestamp_ms: int,
    ) -> int:
        """Write every record at `position` of a writable buffer; return the bytes written.

        The first record gets `queue_offset` (the rest follow it; None writes 0 into every record, as for
        TRANSACTION_PREPARED/ROLLBACK messages) and `physical_offset` (the rest follow their predecessors).
        Raises ValueError, having written nothing, if the batch does not fit or an offset or the timestamp
        does not fit a Java long."""
        total = self.total_size
        _check_fits(buffer, position, total, "batch" if self.count > 1 else "record")
        count = self.count
        starts = self._record_starts
        _check_batch_placement(queue_offset, count, physical_offset, starts[-1], store_timestamp_ms)
        args = self._args
        args[_QUEUE_COLUMN::_COLUMNS] = (
            [0] * count if queue_offset is None else range(queue_offset, queue_offset + count)
        )
        args[_PHYSICAL_COLUMN::_COLUMNS] = _shifted(starts, physical_offset)
        middle_prefix = self._born_host + _LONG.pack(store_timestamp_ms)
        if self._middle_suffixes is None:
            args[_MIDDLE_COLUMN::_COLUMNS] = [middle_prefix + self._uniform_middle_suffix] * count
        else:
            args[_MIDDLE_COLUMN::_COLUMNS] = map(middle_prefix.__add__, self._middle_suffixes)
        self._struct.pack_into(buffer, position, *args)
        if self._record_sizes is not None:
            for start, size in zip(starts, self._record_sizes, strict=True):
                _fill_property_crc(buffer, position + start, size)
        return total


class BatchShape(NamedTuple):
    """Where a PackedBatch's records start and what the consume queue and the index take from them besides
    the placement: what the writer hands the dispatcher (store.dispatch) so that it need not read back the
    records it was just given. `sizes` and `tails` are one value for all records when they share it."""

    magic_code: int
    sysflag: int
    queue_id: int
    starts: range | list[int]  # from the first record's start
    sizes: int | list[int]
    tails: bytes | list[bytes]  # TOPIC length, TOPIC, PROPERTIES length, PROPERTIES, as written


class RecordByRecordBatch(NamedTuple):
    """A batch whose messages do not share their topic-independent header fields (hosts, sysflag, flag,
    ...), written one `PreparedRecord` after the other. Same interface as PackedBatch."""

    records: list[PreparedRecord]
    total_size: int

    @property
    def count(self) -> int:
        return len(self.records)

    def write_into(
        self,
        buffer: WritableBuffer,
        position: int,
        *,
        queue_offset: int | None,
        physical_offset: int,
        store_timestamp_ms: int,
    ) -> int:
        """As `PackedBatch.write_into`."""
        if len(self.records) == 1:  # the record checks its own fit and placement before writing anything
            return self.records[0].write_into(
                buffer,
                position,
                queue_offset=0 if queue_offset is None else queue_offset,
                physical_offset=physical_offset,
                store_timestamp_ms=store_timestamp_ms,
            )
        _check_fits(buffer, position, self.total_size, "batch" if self.count > 1 else "record")
        last_start = self.total_size - self.records[-1].total_size
        _check_batch_placement(queue_offset, self.count, physical_offset, last_start, store_timestamp_ms)
        offset = 0
        for number, record in enumerate(self.records):
            offset += record.write_into(
                buffer,
                position + offset,
                queue_offset=0 if queue_offset is None else queue_offset + number,
                physical_offset=physical_offset + offset,
                store_timestamp_ms=store_timestamp_ms,
            )
        return offset


PreparedBatch = PackedBatch | RecordByRecordBatch


def _check_fits(buffer: WritableBuffer, position: int, size: int, what: str) -> None:
    if position < 0 or position + size > len(buffer):
        raise ValueError(
            f"{what} of {size} bytes does not fit at position {position} of a {len(buffer)}-byte buffer"
        )


def _check_batch_placement(
    queue_offset: int | None, count: int, physical_offset: int, last_start: int, store_timestamp_ms: int
) -> None:
    """Offsets grow through a batch, so the first and the last record bound every placement."""
    first_queue_offset = 0 if queue_offset is None else queue_offset
    _check_placement(first_queue_offset, physical_offset, store_timestamp_ms)
    if count > 1:
        _check_placement(first_queue_offset + count - 1, physical_offset + last_start, store_timestamp_ms)


def _shifted(starts: range | list[int], offset: int) -> range | map:
    if isinstance(starts, range):
        return range(starts.start + offset, starts.stop + offset, starts.step)
    return map(offset.__add__, starts)


def prepare_batch(
    messages: Sequence[Message],
    *,
    version: MessageVersion | None = None,
    append_property_crc: bool = False,
    max_body_size: int = DEFAULT_MAX_MESSAGE_BODY_SIZE,
) -> PreparedBatch:
    """Encode a batch for one topic and queue (a MessageExtBatch) as far as it goes before the put lock.

    Messages that share topic, queue, flag, sysflag, hosts, reconsume times and prepared transaction offset
    (bodies, properties and born timestamps may differ) become one PackedBatch; others are prepared record
    by record. Either way the records are byte for byte what `prepare_record` + `write_into` produce.
    Raises ValueError for an empty batch or one that mixes topics or queues, and otherwise as
    `prepare_record` does for the first message it would reject.
    """
    count = len(messages)
    if count == 1:  # prepare_record has fewer steps than the batch machinery when there is nothing to share
        record = prepare_record(
            messages[0], version=version, append_property_crc=append_property_crc, max_body_size=max_body_size
        )
        return RecordByRecordBatch([record], record.total_size)
    if not count:
        raise ValueError("a batch needs at least one message")
    shared = list(map(_SHARED_FIELDS, messages))
    if shared.count(shared[0]) != count:
        _require_one_queue(messages)
        records = [
            prepare_record(
                message, version=version, append_property_crc=append_property_crc, max_body_size=max_body_size
            )
            for message in messages
        ]
        return RecordByRecordBatch(records, sum(record.total_size for record in records))
    return _pack_batch(messages, shared[0], version, append_property_crc, max_body_size)


def _require_one_queue(messages: Sequence[Message]) -> None:
    first = messages[0]
    for message in messages[1:]:
        if (message.topic, message.queue_id) != (first.topic, first.queue_id):
            raise ValueError("every message of a batch must go to the same topic and queue")


def _pack_batch(
    messages: Sequence[Message],
    shared: tuple,
    version: MessageVersion | None,
    append_property_crc: bool,
    max_body_size: int,
) -> PackedBatch:
    count = len(messages)
    topic, queue_id, flag, sysflag, born_host, store_host, reconsume_times, prepared_offset = shared
    bodies = _struct_ready_bodies(list(map(_BODY, messages)))
    body_lengths = list(map(len, bodies))
    _check_body_lengths(body_lengths, max_body_size)
    version, topic_field = _topic_field(topic, version)
    tails = _tails(topic_field, list(map(_PROPERTIES, messages)), append_property_crc)
    born_address, born_port = _packed_host(born_host)
    store_address, store_port = _packed_host(store_host)
    sysflag = _sysflag_with_host_bits(sysflag, born_address, store_address)
    try:
        head = _QUEUE_ID_AND_FLAG.pack(queue_id, flag)
        sysflag_field = _INT.pack(sysflag)
        born_field = _HOST_FIELDS[len(born_address)].pack(born_address, born_port)
        store_field = _HOST_FIELDS[len(store_address)].pack(
            store_address, store_port
        ) + _RECONSUME_AND_PREPARED.pack(reconsume_times, prepared_offset)
    except struct.error as error:
        _raise_out_of_range(_message_numbers(messages[0]))
        raise ValueError(f"a header field does not fit its Java type: {error}") from error
    born_timestamps = list(map(_BORN_TIMESTAMP, messages))
    _check_born_timestamps(born_timestamps)
    header_size = _HEADERS[_layout(sysflag)].size
    middle_size = len(born_field) + _LONG.size + len(store_field) + _INT.size
    magic = version.magic_code

    args = [head] * (1 + _COLUMNS * count)
    args[_CRC_COLUMN::_COLUMNS] = masked_crc32s(bodies)
    args[_SYSFLAG_COLUMN::_COLUMNS] = [sysflag_field] * count
    args[_BORN_COLUMN::_COLUMNS] = born_timestamps
    args[_BODY_COLUMN::_COLUMNS] = bodies
    uniform_tail = isinstance(tails, bytes)
    if uniform_tail and body_lengths.count(body_lengths[0]) == count:
        record_size = header_size + body_lengths[0] + len(tails)
        lead = _SIZE_AND_MAGIC.pack(record_size, magic)
        args[0] = lead
        args[_TAIL_COLUMN::_COLUMNS] = [tails + lead] * count
        args[-1] = tails
        batch_struct = _uniform_batch_struct(count, middle_size, body_lengths[0], len(tails))
        starts: range | list[int] = range(0, count * record_size, record_size)
        record_sizes = [record_size] * count if append_property_crc else None
        middle_suffixes: bytes | list[bytes] = store_field + _INT.pack(body_lengths[0])
    else:
        if uniform_tail:
            tails = [tails] * count
        record_sizes = list(map(header_size.__add__, map(operator.add, body_lengths, map(len, tails))))
        leads = list(map(_SIZE_AND_MAGIC.pack, record_sizes, itertools.repeat(magic)))
        args[0] = leads[0]
        glued_tails = [*map(operator.add, tails, leads[1:]), tails[-1]]
        args[_TAIL_COLUMN::_COLUMNS] = glued_tails
        record_format = _record_format(middle_size, "%d", "%d").__mod__  # formatted in C, record by record
        batch_struct = struct.Struct(
            ">8s" + "".join(map(record_format, zip(body_lengths, map(len, glued_tails), strict=True)))
        )
        starts = list(itertools.accumulate(record_sizes[:-1], initial=0))
        middle_suffixes = list(map(store_field.__add__, map(_INT.pack, body_lengths)))
    # With __CRC32# the tails written differ from these (the digits are filled in at write time).
    shape = (
        None
        if append_property_crc
        else BatchShape(
            magic, sysflag, queue_id, starts, record_size if isinstance(tails, bytes) else record_sizes, tails
        )
    )
    return PackedBatch(
        batch_struct,
        args,
        starts,
        record_sizes if append_property_crc else None,
        born_field,
        middle_suffixes,
        shape,
    )


def _struct_ready_bodies(bodies: list) -> list:
    """Bodies as struct's "s" code takes them: bytes and bytearray as they are, other buffers copied."""
    if _STRUCT_BYTES_TYPES.issuperset(map(type, bodies)):
        return bodies
    return [body if type(body) in _STRUCT_BYTES_TYPES else bytes(body) for body in bodies]


def _check_body_lengths(body_lengths: list[int], max_body_size: int) -> None:
    if max(body_lengths) > max_body_size:
        length = next(length for length in body_lengths if length > max_body_size)
        raise MessageTooLarge(f"message body of {length} bytes exceeds maxMessageSize ({max_body_size})")


def _tails(
    topic_field: bytes, properties: list[Mapping[str, str]], append_property_crc: bool
) -> bytes | list:
    """TOPIC + PROPERTIES fields: one bytes when every message has equal properties (the common batch),
    else one per message."""
    if properties.count(properties[0]) == len(properties):
        return topic_field + _properties_field(properties[0], append_property_crc)
    return list(map(topic_field.__add__, _properties_fields(properties, append_property_crc)))


def _properties_fields(properties: list[Mapping[str, str]], append_property_crc: bool) -> list[bytes]:
    """`_properties_field` of every message, with the checks and the encoding done once for the batch.

    The checks of `properties_to_string` hold for the concatenation exactly when they hold for each message
    (each contributes at least one separator per entry, and an empty name after a message boundary shows
    up as \x02\x01), so one pass over the joined text does. Anything unusual (a stale __CRC32#, a name or
    value that is not a str, a rejected message) goes through `_properties_field` message by message, which
    also raises the error that names the message."""

    def one_by_one() -> list[bytes]:
        return [_properties_field(each, append_property_crc) for each in properties]

    if any(map(operator.contains, properties, itertools.repeat(PROPERTY_CRC32))):
        return one_by_one()
    try:
        texts = list(map(_properties_text, properties))
    except TypeError:
        return one_by_one()
    if not _well_formed_properties("".join(texts), sum(map(len, properties))):
        return one_by_one()
    data = list(map(str.encode, texts))
    reserved = CRC32_RESERVED_LEN if append_property_crc else 0
    lengths = list(map(reserved.__add__, map(len, data)))
    if max(lengths) > MAX_PROPERTIES_SIZE:
        return one_by_one()
    if reserved:
        data = list(map(operator.add, data, itertools.repeat(bytes(reserved))))
    return list(map(operator.add, map(_PROPERTIES_LENGTH.pack, lengths), data))


_JOIN_NAME_AND_VALUE = NAME_VALUE_SEPARATOR.join


def _properties_text(properties: Mapping[str, str]) -> str:
    """`properties_to_string` without its checks; TypeError for a name or value that is not a str."""
    if not properties:
        return ""
    return PROPERTY_SEPARATOR.join(map(_JOIN_NAME_AND_VALUE, properties.items())) + PROPERTY_SEPARATOR


def _well_formed_properties(text: str, count: int) -> bool:
    """The checks of `properties_to_string` on the text of `count` entries."""
    return not (
        text.count(NAME_VALUE_SEPARATOR) != count
        or text.count(PROPERTY_SEPARATOR) != count
        or text[:1] == NAME_VALUE_SEPARATOR
        or "\x02\x01" in text
        or "\x01\x02" in text
    )


def _sysflag_with_host_bits(sysflag: int, born_address: bytes, store_address: bytes) -> int:
    """CommitLog.asyncPutMessage sets the host bits from the address types, whatever the producer sent."""
    sysflag &= ~(BORNHOST_V6_FLAG | STOREHOSTADDRESS_V6_FLAG)
    if len(born_address) == 16:
        sysflag |= BORNHOST_V6_FLAG
    if len(store_address) == 16:
        sysflag |= STOREHOSTADDRESS_V6_FLAG
    return sysflag


def _check_born_timestamps(born_timestamps: list) -> None:
    """A dry run with the struct code the batch packs them with, so pack_into cannot fail halfway."""
    try:
        _longs(len(born_timestamps)).pack(*born_timestamps)
    except struct.error as error:
        for value in born_timestamps:
            _raise_out_of_range({"born_timestamp_ms": value})
        raise ValueError(f"a born timestamp does not fit a Java long: {error}") from error


# ----------------------------------------------------------------------------------------------------------
# Decoding
# ----------------------------------------------------------------------------------------------------------


class _Frame(NamedTuple):
    """A record whose lengths all check out: header values and where body, topic and properties lie."""

    header: tuple
    body_start: int
    body_end: int
    topic: str
    properties: dict[str, str]


class _Location(NamedTuple):
    path: str | None
    offset: int

    def corrupt(self, reason: str, field_name: str) -> CorruptRecord:
        return CorruptRecord(reason, path=self.path, offset=self.offset, field=field_name)


def peek_total_size_and_magic(
    buffer: ReadableBuffer, position: int = 0, *, path: str | None = None, base_offset: int = 0
) -> tuple[int, int]:
    """TOTALSIZE (signed, as Java reads it) and MAGICCODE (unsigned, comparable with the constants) at
    `position`, for scans that only hop from record to record. CorruptRecord if fewer than 8 bytes remain."""
    return _peek(buffer, position, _Location(path, base_offset + position))


def _peek(buffer: ReadableBuffer, position: int, where: _Location) -> tuple[int, int]:
    if position < 0:
        raise ValueError(f"position must not be negative: {position}")
    available = len(buffer) - position
    if available < _SIZE_AND_MAGIC.size:
        raise where.corrupt(f"truncated: {max(available, 0)} bytes left, a record starts with 8", "TOTALSIZE")
    return _SIZE_AND_MAGIC.unpack_from(buffer, position)


def _read_frame(
    view: memoryview,
    position: int,
    where: _Location,
    check_crc: bool,
    require_property_crc: bool,
    max_record_size: int,
) -> _Frame | BlankRecord:
    """checkMessageAndReturnSize's checks, in an order that never reads past a length it has not checked."""
    total, magic = _peek(view, position, where)
    available = len(view) - position
    if magic == BLANK_MAGIC_CODE:
        if not END_FILE_MIN_BLANK_LENGTH <= total <= available:
            raise where.corrupt(f"blank record claims {total} bytes, {available} are left", "TOTALSIZE")
        return BlankRecord(total)
    topic_length_struct = _TOPIC_LENGTH_BY_MAGIC.get(magic)
    if topic_length_struct is None:
        if total == 0 and magic == 0:
            raise UnwrittenSpace("no record: zero bytes where a record would start", path=where.path,
                                 offset=where.offset, field="TOTALSIZE")  # fmt: skip
        raise where.corrupt(f"illegal magic code 0x{magic:08X}", "MAGICCODE")
    _check_total_size(total, available, max_record_size, where)
    header = _HEADERS[_layout(_SYSFLAG.unpack_from(view, position + SYSFLAG_POSITION)[0])]
    record_end = position + total
    fixed = header.size + topic_length_struct.size + _PROPERTIES_LENGTH_SIZE
    if total < fixed:
        raise where.corrupt(
            f"TOTALSIZE {total} is shorter than this layout's {fixed}-byte minimum", "TOTALSIZE"
        )
    values = header.unpack_from(view, position)
    body_length = values[-1]
    if not 0 <= body_length <= total - fixed:
        raise where.corrupt(f"body length {body_length} does not fit a {total}-byte record", "BODY length")
    body_start = position + header.size
    body_end = body_start + body_length
    topic_length = topic_length_struct.unpack_from(view, body_end)[0]
    topic_start = body_end + topic_length_struct.size
    topic_end = topic_start + topic_length
    if topic_length < 0 or topic_end + _PROPERTIES_LENGTH_SIZE > record_end:
        raise where.corrupt(f"topic length {topic_length} does not fit a {total}-byte record", "TOPIC length")
    properties_length = _PROPERTIES_LENGTH.unpack_from(view, topic_end)[0]
    if properties_length < 0:
        raise where.corrupt(f"negative properties length {properties_length}", "PROPERTIES length")
    expected = fixed + body_length + topic_length + properties_length  # calMsgLength, inlined
    if expected != total:
        raise where.corrupt(
            f"TOTALSIZE {total} but the fields add up to {expected} "
            f"(body {body_length}, topic {topic_length}, properties {properties_length})",
            "TOTALSIZE",
        )
    properties_start = topic_end + _PROPERTIES_LENGTH_SIZE
    if check_crc:
        _verify_body_crc(view, body_start, body_end, values[2], where)
        _verify_not_torn(view, properties_start, record_end, where)
        _verify_property_crc(view, position, properties_start, record_end, require_property_crc, where)
    topic = _utf8(view, topic_start, topic_end, "TOPIC", where)
    properties = string_to_properties(_utf8(view, properties_start, record_end, "PROPERTIES", where))
    return _Frame(values, body_start, body_end, topic, properties)


def _check_total_size(total: int, available: int, max_record_size: int, where: _Location) -> None:
    if total < _SMALLEST_RECORD:
        raise where.corrupt(
            f"TOTALSIZE {total} is below the {_SMALLEST_RECORD}-byte minimum record", "TOTALSIZE"
        )
    if total > max_record_size:
        raise where.corrupt(
            f"TOTALSIZE {total} exceeds the largest record a broker writes "
            f"({max_record_size}: maxMessageSize + 64 KiB)",
            "TOTALSIZE",
        )
    if total > available:
        raise where.corrupt(f"truncated: TOTALSIZE {total} but only {available} bytes left", "TOTALSIZE")


def _verify_body_crc(view: memoryview, body_start: int, body_end: int, stored: int, where: _Location) -> None:
    if body_end == body_start:
        return  # Java checks only when bodyLen > 0
    actual = masked_crc32(view[body_start:body_end])
    if actual != stored:
        raise where.corrupt(f"body CRC {actual} does not match BODYCRC {stored}", "BODYCRC")


def _verify_not_torn(view: memoryview, properties_start: int, record_end: int, where: _Location) -> None:
    """Properties end with \\x02 (messageProperties2String ends every pair with it, and `__CRC32#` too), so
    properties ending in a zero byte are a record whose tail never reached the disk: a torn write zeroes it,
    and without this the record would pass, its body CRC intact and its properties (and `__CRC32#`) gone."""
    if record_end > properties_start and view[record_end - 1] == 0:
        raise where.corrupt(
            "the properties end in zero bytes: the record's tail was never written", "PROPERTIES"
        )


def _verify_property_crc(
    view: memoryview, position: int, properties_start: int, record_end: int, required: bool, where: _Location
) -> None:
    """Check the whole-record `__CRC32#` tail if the record has one (or must have one: forceVerifyPropCRC)."""
    tail_start = record_end - CRC32_RESERVED_LEN
    has_tail = (
        tail_start >= properties_start
        and view[tail_start : tail_start + len(_CRC32_PROPERTY_PREFIX)] == _CRC32_PROPERTY_PREFIX
    )
    if not has_tail:
        if tail_start >= properties_start and _is_damaged_crc32_name(view[tail_start:record_end]):
            raise where.corrupt("damaged __CRC32# property name (one byte differs)", PROPERTY_CRC32)
        if required:
            raise where.corrupt("no __CRC32# property at the end of the properties", PROPERTY_CRC32)
        return
    stored = _parse_crc32_digits(bytes(view[record_end - 11 : record_end - 1]))
    if stored is None or view[record_end - 1] != 0x02:
        raise where.corrupt("malformed __CRC32# property (10 digits and \\x02 expected)", PROPERTY_CRC32)
    actual = masked_crc32(view[position:tail_start])
    if actual != stored:
        raise where.corrupt(f"record CRC {actual} does not match __CRC32# {stored}", PROPERTY_CRC32)


def _is_damaged_crc32_name(tail: memoryview) -> bool:
    """A reserved tail (name, \\x01, 10 digits, \\x02) whose `__CRC32#\\x01` differs in exactly one byte.

    The tail is found by its name, so a flipped bit there would otherwise hide the whole-record CRC and let
    every other damage to the record pass. No other property is 8 characters one byte away from this name
    with a 10-digit value at the very end."""
    digits = tail[len(_CRC32_PROPERTY_PREFIX) : -1]
    if tail[-1] != 0x02 or not _ASCII_DIGITS.issuperset(digits):
        return False
    name = tail[: len(_CRC32_PROPERTY_PREFIX)]
    return sum(map(operator.ne, name, _CRC32_PROPERTY_PREFIX)) == 1


def _utf8(view: memoryview, start: int, end: int, field_name: str, where: _Location) -> str:
    # Java decodes with replacement, but no Java (or Rust) writer produces invalid UTF-8, so it means damage.
    try:
        return str(view[start:end], "utf-8")
    except UnicodeDecodeError as error:
        raise where.corrupt(
            f"{field_name} is not valid UTF-8 ({error.reason} at byte {error.start})", field_name
        ) from None


def _as_view(buffer: ReadableBuffer) -> tuple[memoryview, bool]:
    """A memoryview over `buffer`, and whether we made it (and so must release it and copy out of it)."""
    if type(buffer) is memoryview:
        return buffer, False
    return memoryview(buffer), True


def decode_record(
    buffer: ReadableBuffer,
    position: int = 0,
    *,
    path: str | None = None,
    base_offset: int = 0,
    check_crc: bool = False,
    require_property_crc: bool = False,
    read_body: bool = True,
    max_record_size: int = DEFAULT_MAX_RECORD_SIZE,
) -> MessageRecord | BlankRecord:
    """Decode the record at `position` of `buffer` (bytes, bytearray, mmap or memoryview).

    Returns a MessageRecord, or a BlankRecord for the END_OF_FILE filler. Raises UnwrittenSpace (a
    CorruptRecord) where TOTALSIZE and MAGICCODE are zero, and CorruptRecord for a truncated record, an
    unknown magic code, a TOTALSIZE that disagrees with the field lengths (calMsgLength) or exceeds
    `max_record_size`, invalid UTF-8, or, with `check_crc` (checkCRCOnRecover), a wrong BODYCRC or `__CRC32#`
    tail; `require_property_crc` (forceVerifyPropCRC) also rejects records without the tail. Errors carry
    `path`, the absolute offset `base_offset + position` of the record and the field at fault.

    `read_body=False` leaves `body` None (CRCs are still checked if asked). The body is a zero-copy slice when
    `buffer` is a memoryview, which keeps the underlying buffer exported while the body lives.
    """
    view, owned = _as_view(buffer)
    try:
        frame = _read_frame(
            view,
            position,
            _Location(path, base_offset + position),
            check_crc,
            require_property_crc,
            max_record_size,
        )
        if isinstance(frame, BlankRecord):
            return frame
        body = None
        if read_body:
            body = view[frame.body_start : frame.body_end]
            if owned:
                body = bytes(body)
        (total, magic, body_crc, queue_id, flag, queue_offset, physical_offset, sysflag, born_timestamp,
         born_ip, born_port, store_timestamp, store_ip, store_port, reconsume_times, prepared_offset, _,
         ) = frame.header  # fmt: skip
        return MessageRecord(
            total, magic, body_crc, queue_id, flag, queue_offset, physical_offset, sysflag, born_timestamp,
            host_from_packed(born_ip, born_port), store_timestamp, host_from_packed(store_ip, store_port),
            reconsume_times, prepared_offset, body, frame.topic, frame.properties,
        )  # fmt: skip
    finally:
        if owned:
            view.release()


def decode_dispatch_info(
    buffer: ReadableBuffer,
    position: int = 0,
    *,
    path: str | None = None,
    base_offset: int = 0,
    check_crc: bool = False,
    require_property_crc: bool = False,
    max_record_size: int = DEFAULT_MAX_RECORD_SIZE,
) -> DispatchInfo | BlankRecord:
    """What the ConsumeQueue and index dispatchers need from the record at `position`, without materialising
    the body (the reput thread's `checkMessageAndReturnSize(buf, false, false, false)`; recovery passes
    `check_crc=True`). Same outcomes and errors as `decode_record`."""
    view, owned = _as_view(buffer)
    try:
        frame = _read_frame(
            view,
            position,
            _Location(path, base_offset + position),
            check_crc,
            require_property_crc,
            max_record_size,
        )
    finally:
        if owned:
            view.release()
    if isinstance(frame, BlankRecord):
        return frame
    header, properties = frame.header, frame.properties
    return DispatchInfo(
        topic=frame.topic,
        queue_id=header[3],
        queue_offset=header[5],
        physical_offset=header[6],
        size=header[0],
        tags_code=java_tags_code(properties.get(PROPERTY_TAGS)),
        store_timestamp_ms=header[11],
        keys=properties.get(PROPERTY_KEYS),
        uniq_key=properties.get(PROPERTY_UNIQ_CLIENT_MESSAGE_ID_KEYIDX),
        sysflag=header[7],
        prepared_transaction_offset=header[15],
        properties=properties,
    )


def max_record_size_for(max_message_body_size: int) -> int:
    """The largest TOTALSIZE a broker configured with this maxMessageSize writes (its encoder buffer size)."""
    return min(max_message_body_size + ENCODER_HEADROOM, 0x7FFFFFFF)


class RunRecord(NamedTuple):
    """A message record of a run (`decode_run`): where it starts, the fixed header's values (as
    `decode_record` unpacks them: TOTALSIZE first, the body length last), where its body starts, its topic
    and its properties."""

    position: int
    header: tuple
    body_start: int
    topic: str
    properties: dict[str, str]


_NEW_RUN_RECORD = tuple.__new__
# TOTALSIZE, MAGICCODE and SYSFLAG, which pick a record's layout, in one unpack.
_RUN_HEAD = struct.Struct(f">iI{SYSFLAG_POSITION - 8}xi")
# By magic code, then by the IPv6 bits of the sysflag: the header struct, its size, the topic length
# struct, its size, and the bytes every record of that layout has (header, topic and properties lengths).
_RUN_LAYOUTS = {
    magic: tuple(
        (header, header.size, topic_length, topic_length.size,
         header.size + topic_length.size + _PROPERTIES_LENGTH_SIZE)
        for header in _HEADERS
    )
    for magic, topic_length in _TOPIC_LENGTH_BY_MAGIC.items()
}  # fmt: skip


def decode_run(
    view: memoryview,
    position: int,
    end: int,
    *,
    check_crc: bool,
    max_records: int,
    max_record_size: int = DEFAULT_MAX_RECORD_SIZE,
) -> tuple[list[RunRecord], int]:
    """The message records back to back in `view[position:end]`, at most `max_records`, and where they end.

    A tight loop for readers of many records (`store dump`): the checks are `decode_record`'s, but the run
    stops, without raising, before the first record that is not a whole valid message: a blank, zeros,
    damage, a record running past `end`, or one with a `__CRC32#` tail (or what may be a damaged one) to
    check. The caller decodes that record with `decode_record`, which says what it is.
    """
    records: list[RunRecord] = []
    append, head, layouts_by_magic = records.append, _RUN_HEAD.unpack_from, _RUN_LAYOUTS
    unpack_properties_length, crc32, smallest = _PROPERTIES_LENGTH.unpack_from, masked_crc32, _SMALLEST_RECORD
    last_start = end - smallest  # no record starts after this
    while position <= last_start and len(records) < max_records:
        total, magic, sysflag = head(view, position)
        layouts = layouts_by_magic.get(magic)
        record_end = position + total
        if layouts is None or not smallest <= total <= max_record_size or record_end > end:
            break
        header, header_size, topic_length_struct, topic_length_size, fixed = layouts[(sysflag >> 4) & 3]
        if total < fixed:
            break
        values = header.unpack_from(view, position)
        body_length = values[-1]
        if not 0 <= body_length <= total - fixed:
            break
        body_start = position + header_size
        body_end = body_start + body_length
        topic_start = body_end + topic_length_size
        topic_end = topic_start + topic_length_struct.unpack_from(view, body_end)[0]
        properties_start = topic_end + _PROPERTIES_LENGTH_SIZE
        if topic_end < topic_start or properties_start > record_end:
            break
        if properties_start + unpack_properties_length(view, topic_end)[0] != record_end:
            break  # calMsgLength disagrees with TOTALSIZE (or a negative properties length)
        if check_crc and (
            (body_length and crc32(view[body_start:body_end]) != values[2])
            or (view[record_end - 1] in (0, 0x02) and _tail_to_check(view, properties_start, record_end))
        ):
            break
        try:
            topic = str(view[topic_start:topic_end], "utf-8")
            properties = string_to_properties(str(view[properties_start:record_end], "utf-8"))
        except UnicodeDecodeError:
            break
        append(_NEW_RUN_RECORD(RunRecord, (position, values, body_start, topic, properties)))
        position = record_end
    return records, position


def _tail_to_check(view: memoryview, properties_start: int, record_end: int) -> bool:
    """Whether the properties end torn (in a zero byte), in a `__CRC32#` tail, or in what may be a damaged
    one: the checks `decode_record` makes with check_crc beyond the body's CRC."""
    if record_end <= properties_start:
        return False
    if view[record_end - 1] == 0:
        return True
    tail_start = record_end - CRC32_RESERVED_LEN
    if tail_start < properties_start or not 0x30 <= view[record_end - 2] <= 0x39:
        return False
    tail = view[tail_start:record_end]
    return tail[: len(_CRC32_PROPERTY_PREFIX)] == _CRC32_PROPERTY_PREFIX or _is_damaged_crc32_name(tail)
