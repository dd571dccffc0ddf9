"""The CommitLog record codec: golden bytes, the rocketmq-rust fixture, round trips, corruption and limits."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import mmap
import struct
import tracemalloc
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from store.codec import (
    BLANK_MAGIC_CODE,
    BORNHOST_V6_FLAG,
    COMPRESSED_FLAG,
    CRC32_RESERVED_LEN,
    DEFAULT_MAX_RECORD_SIZE,
    END_FILE_MIN_BLANK_LENGTH,
    MAX_PROPERTIES_SIZE,
    MESSAGE_MAGIC_CODE_V1,
    MESSAGE_MAGIC_CODE_V2,
    PROPERTY_CRC32,
    SCHEDULE_TOPIC,
    STOREHOSTADDRESS_V6_FLAG,
    BlankRecord,
    DispatchInfo,
    HostAddress,
    Message,
    MessageRecord,
    MessageTooLarge,
    MessageVersion,
    UnwrittenSpace,
    calc_record_size,
    decode_dispatch_info,
    decode_record,
    encode_blank,
    encode_crc32_property,
    encode_into,
    encode_record,
    max_record_size_for,
    offset_msg_id,
    parse_offset_msg_id,
    peek_total_size_and_magic,
    prepare_record,
    properties_to_string,
    string_to_properties,
)
from store.errors import CorruptRecord
from store.java_checksums import masked_crc32

# --- §1.10 of the format reference: every field of the worked example, in order -----------------------------

WORKED_EXAMPLE_FIELDS = [
    ("TOTALSIZE", "00000089"),
    ("MAGIC", "daa320a7"),
    ("BODYCRC", "69c865ed"),
    ("QUEUEID", "00000000"),
    ("FLAG", "00000000"),
    ("QUEUEOFFSET", "0000000000000000"),
    ("PHYSOFFSET", "0000000000000000"),
    ("SYSFLAG", "00000000"),
    ("BORNTS", "0000018bcfe56800"),
    ("BORNHOST", "7f0000010000d431"),
    ("STORETS", "0000018bcfe56805"),
    ("STOREHOST", "c0a8000a00002a9f"),
    ("RECONSUME", "00000000"),
    ("PREPTXOFF", "0000000000000000"),
    ("BODYLEN", "0000000e"),
    ("BODY", "48656c6c6f20526f636b65744d51"),
    ("TOPICLEN", "09"),
    ("TOPIC", "546f70696354657374"),
    ("PROPLEN", "0017"),
    ("PROPS", "4b455953016f726465722d310254414753015461674102"),
]
WORKED_EXAMPLE = bytes.fromhex("".join(hex_text for _, hex_text in WORKED_EXAMPLE_FIELDS))
WORKED_MESSAGE = Message(
    topic="TopicTest",
    body=b"Hello RocketMQ",
    properties={"KEYS": "order-1", "TAGS": "TagA"},
    born_timestamp_ms=1_700_000_000_000,
    born_host=HostAddress("127.0.0.1", 54321),
    store_host=HostAddress("192.168.0.10", 10911),
)
WORKED_PLACEMENT = {"queue_offset": 0, "physical_offset": 0, "store_timestamp_ms": 1_700_000_000_005}


def test_worked_example_encodes_byte_for_byte():
    assert encode_record(WORKED_MESSAGE, **WORKED_PLACEMENT) == WORKED_EXAMPLE
    assert len(WORKED_EXAMPLE) == 137


def test_worked_example_decodes_back():
    record = decode_record(WORKED_EXAMPLE, check_crc=True)
    assert isinstance(record, MessageRecord)
    assert record.total_size == 137
    assert record.magic_code == MESSAGE_MAGIC_CODE_V1 and record.version is MessageVersion.V1
    assert record.body_crc == 1774740973 == masked_crc32(b"Hello RocketMQ")
    assert record.born_host == ("127.0.0.1", 54321)
    assert record.store_host == HostAddress("192.168.0.10", 10911)
    assert record.store_timestamp_ms == 1_700_000_000_005
    assert (record.topic, bytes(record.body)) == ("TopicTest", b"Hello RocketMQ")
    assert record.properties == {"KEYS": "order-1", "TAGS": "TagA"}
    assert (record.keys, record.key_list, record.tags, record.uniq_key) == (
        "order-1",
        ("order-1",),
        "TagA",
        None,
    )
    assert record.tags_code == 2598919
    assert record.offset_msg_id == "C0A8000A00002A9F0000000000000000"
    assert record.to_message() == WORKED_MESSAGE


def test_worked_example_dispatch_info_is_its_consume_queue_entry():
    info = decode_dispatch_info(WORKED_EXAMPLE)
    # §1.10: CQ entry = offset 0, size 0x89, tagsCode 0x27a807.
    cq_entry = struct.pack(">qiq", info.physical_offset, info.size, info.tags_code)
    assert cq_entry.hex() == "000000000000000000000089000000000027a807"
    assert (info.topic, info.queue_id, info.queue_offset, info.keys) == ("TopicTest", 0, 0, "order-1")
    assert (info.store_timestamp_ms, info.sysflag, info.uniq_key) == (1_700_000_000_005, 0, None)


def test_calc_record_size_mirrors_cal_msg_length():
    assert calc_record_size(MessageVersion.V1, 0, 14, 9, 23) == 137
    assert calc_record_size(MessageVersion.V2, 0, 14, 9, 23) == 138
    assert calc_record_size(MessageVersion.V1, BORNHOST_V6_FLAG, 14, 9, 23) == 149
    assert calc_record_size(MessageVersion.V1, BORNHOST_V6_FLAG | STOREHOSTADDRESS_V6_FLAG, 14, 9, 23) == 161
    assert calc_record_size(MessageVersion.V1, 0, -1, 9, -1) == calc_record_size(
        MessageVersion.V1, 0, 0, 9, 0
    )
    assert prepare_record(WORKED_MESSAGE).total_size == 137
    assert prepare_record(WORKED_MESSAGE, append_property_crc=True).total_size == 137 + CRC32_RESERVED_LEN


# --- The rocketmq-rust 0.9.0 fixture: bytes another implementation wrote ------------------------------------


def fixture_commitlog(rust_store: Path) -> bytes:
    return (rust_store / "commitlog" / "00000000000000000000").read_bytes()


def test_fixture_records_decode_with_crc(rust_store: Path):
    expected = json.loads((rust_store.parent / "expected-records.json").read_text())
    data = fixture_commitlog(rust_store)
    assert len(data) == 4096
    records = [decode_record(data, offset, check_crc=True) for offset in (0, 141)]
    for queue_offset, (record, body) in enumerate(zip(records, expected["message_bodies"], strict=True)):
        assert isinstance(record, MessageRecord)
        assert (record.total_size, record.physical_offset, record.queue_offset) == (
            141,
            141 * queue_offset,
            queue_offset,
        )
        assert (record.topic, record.queue_id) == (expected["topic"], expected["queue_id"])
        assert record.body == body.encode()
        assert record.properties == {"KEYS": expected["message_key"]}
        assert record.key_list == (expected["message_key"],)
        assert record.version is MessageVersion.V1 and record.sysflag == 0
        assert record.store_host == ("127.0.0.1", 10911)
        assert record.offset_msg_id == offset_msg_id(("127.0.0.1", 10911), 141 * queue_offset)
    assert records[1].store_timestamp_ms == records[0].store_timestamp_ms + 1


def test_fixture_reencodes_to_the_same_bytes(rust_store: Path):
    data = fixture_commitlog(rust_store)
    for offset in (0, 141):
        record = decode_record(data, offset)
        placement = {
            "queue_offset": record.queue_offset,
            "physical_offset": record.physical_offset,
            "store_timestamp_ms": record.store_timestamp_ms,
        }
        assert encode_record(record.to_message(), **placement) == data[offset : offset + 141]


def test_fixture_ends_in_unwritten_space_reported_as_a_distinct_corrupt_record(rust_store: Path):
    """After the two records the file is zeros: UnwrittenSpace, a CorruptRecord subclass, at that offset."""
    data = fixture_commitlog(rust_store)
    with pytest.raises(UnwrittenSpace) as caught:
        decode_record(data, 282, path="commitlog/00000000000000000000", base_offset=8192)
    assert isinstance(caught.value, CorruptRecord)
    assert (caught.value.offset, caught.value.field) == (8192 + 282, "TOTALSIZE")
    assert caught.value.path == "commitlog/00000000000000000000"
    assert peek_total_size_and_magic(data, 282) == (0, 0)


def test_fixture_scan_matches_its_consume_queue(rust_store: Path):
    """Walk the commitlog as the reput thread does; the dispatch info must equal the CQ rust wrote."""
    data = fixture_commitlog(rust_store)
    consume_queue = (
        rust_store / "consumequeue" / "V1UpgradeTopic" / "0" / "00000000000000000000"
    ).read_bytes()
    position, dispatched = 0, []
    with pytest.raises(UnwrittenSpace):
        while True:
            info = decode_dispatch_info(data, position)
            dispatched.append(struct.pack(">qiq", info.physical_offset, info.size, info.tags_code))
            position += info.size
    assert position == 282
    assert b"".join(dispatched) == consume_queue[: 20 * len(dispatched)]
    assert len(dispatched) == 2


def test_fixture_body_is_zero_copy_from_a_read_only_mapping(rust_store: Path):
    path = rust_store / "commitlog" / "00000000000000000000"
    with path.open("rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as mapping:
        view = memoryview(mapping)
        record = decode_record(view, 141, check_crc=True)
        assert isinstance(record.body, memoryview)
        assert record.body.obj is mapping
        assert record.body == b"v0.9.0-message-1"
        record.body.release()
        view.release()


# --- Round trips --------------------------------------------------------------------------------------------

INT32 = st.integers(-(2**31), 2**31 - 1)
INT64 = st.integers(-(2**63), 2**63 - 1)
TEXT_CHARACTERS = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x01\x02")
HOSTS = st.builds(
    HostAddress,
    st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)).map(str),
    st.integers(0, 65535),
)


def utf8_length_between(low: int, high: int):
    return lambda text: low <= len(text.encode()) <= high


TOPICS = st.one_of(
    st.text(min_size=1, max_size=60).filter(utf8_length_between(1, 127)),
    st.text(min_size=43, max_size=127).filter(utf8_length_between(128, 255)),  # non-ASCII, still V2
    st.text(alphabet="abcXYZ%_-0123456789", min_size=128, max_size=255),
)
PROPERTIES = st.dictionaries(
    st.text(TEXT_CHARACTERS, min_size=1, max_size=20).filter(lambda name: name != PROPERTY_CRC32),
    st.text(TEXT_CHARACTERS, min_size=1, max_size=40),
    max_size=6,
)
MESSAGES = st.builds(
    Message,
    topic=TOPICS,
    body=st.binary(max_size=600),
    queue_id=INT32,
    flag=INT32,
    properties=PROPERTIES,
    sysflag=INT32.map(lambda flag: flag & ~(BORNHOST_V6_FLAG | STOREHOSTADDRESS_V6_FLAG)),
    born_timestamp_ms=INT64,
    born_host=HOSTS,
    store_host=HOSTS,
    reconsume_times=INT32,
    prepared_transaction_offset=INT64,
)
PLACEMENTS = st.fixed_dictionaries(
    {"queue_offset": INT64, "physical_offset": INT64, "store_timestamp_ms": INT64}
)


def host_flags(message: Message) -> int:
    born_v6 = ipaddress.ip_address(message.born_host[0]).version == 6
    store_v6 = ipaddress.ip_address(message.store_host[0]).version == 6
    return (BORNHOST_V6_FLAG if born_v6 else 0) | (STOREHOSTADDRESS_V6_FLAG if store_v6 else 0)


def stored_form(message: Message) -> Message:
    """What decoding gives back: the message with the host bits the encoder sets in SYSFLAG."""
    return dataclasses.replace(message, sysflag=message.sysflag | host_flags(message))


@settings(deadline=None)
@given(MESSAGES, PLACEMENTS, st.booleans())
def test_encode_then_decode_gives_the_message_back(message: Message, placement: dict, with_crc: bool):
    encoded = encode_record(message, **placement, append_property_crc=with_crc)
    assert len(encoded) == prepare_record(message, append_property_crc=with_crc).total_size
    record = decode_record(memoryview(encoded), check_crc=True, require_property_crc=with_crc)
    assert isinstance(record, MessageRecord)
    assert record.to_message() == stored_form(message)
    assert record.total_size == len(encoded)
    assert record.queue_offset == placement["queue_offset"]
    assert record.physical_offset == placement["physical_offset"]
    assert record.store_timestamp_ms == placement["store_timestamp_ms"]
    topic_length = len(message.topic.encode())
    assert record.version is (MessageVersion.V2 if topic_length > 127 else MessageVersion.V1)
    assert record.body_crc == masked_crc32(message.body)
    assert (PROPERTY_CRC32 in record.properties) is with_crc


@settings(deadline=None)
@given(MESSAGES, PLACEMENTS, st.booleans(), st.integers(0, 64), st.integers(0, 64))
def test_encode_into_writes_exactly_what_encode_record_returns(
    message: Message, placement: dict, with_crc: bool, before: int, after: int
):
    expected = encode_record(message, **placement, append_property_crc=with_crc)
    buffer = bytearray(b"\xee" * (before + len(expected) + after))
    written = encode_into(buffer, before, message, **placement, append_property_crc=with_crc)
    assert written == len(expected)
    assert buffer[before : before + written] == expected
    assert buffer[:before] == b"\xee" * before and buffer[before + written :] == b"\xee" * after
    record = decode_record(buffer, before, base_offset=1000, check_crc=True)
    assert record.to_message() == stored_form(message)


@settings(deadline=None)
@given(MESSAGES, PLACEMENTS)
def test_dispatch_info_agrees_with_the_full_decode(message: Message, placement: dict):
    encoded = encode_record(message, **placement)
    record = decode_record(encoded)
    info = decode_dispatch_info(encoded, check_crc=True)
    assert (info.topic, info.queue_id, info.queue_offset, info.physical_offset) == (
        record.topic,
        record.queue_id,
        record.queue_offset,
        record.physical_offset,
    )
    assert (info.size, info.tags_code, info.store_timestamp_ms, info.sysflag) == (
        record.total_size,
        record.tags_code,
        record.store_timestamp_ms,
        record.sysflag,
    )
    assert (info.keys, info.uniq_key, info.key_list) == (record.keys, record.uniq_key, record.key_list)
    assert info.prepared_transaction_offset == record.prepared_transaction_offset
    assert info.properties == record.properties


def test_encode_into_an_mmap():
    with mmap.mmap(-1, 4096) as mapping:
        first = encode_into(mapping, 0, WORKED_MESSAGE, **WORKED_PLACEMENT)
        second = encode_into(
            mapping, first, WORKED_MESSAGE, queue_offset=1, physical_offset=first, store_timestamp_ms=7
        )
        assert mapping[:first] == WORKED_EXAMPLE
        record = decode_record(mapping, first, check_crc=True)
        assert (record.queue_offset, record.physical_offset, record.total_size) == (1, first, second)
        assert isinstance(record.body, bytes)  # copied out: the mapping can still be closed


def test_body_is_a_zero_copy_slice_of_a_memoryview_input():
    buffer = bytearray(WORKED_EXAMPLE)
    view = memoryview(buffer)
    record = decode_record(view, read_body=True)
    assert isinstance(record.body, memoryview)
    buffer[88] = ord("J")
    assert bytes(record.body) == b"Jello RocketMQ"
    assert decode_record(view, read_body=False).body is None
    assert isinstance(decode_record(bytes(buffer)).body, bytes)


def test_the_encoder_sets_the_host_bits_from_the_hosts():
    message = dataclasses.replace(
        WORKED_MESSAGE,
        sysflag=COMPRESSED_FLAG | BORNHOST_V6_FLAG,  # a stale v6 bit for a v4 born host
        store_host=HostAddress("fe80::1", 10911),
    )
    record = decode_record(encode_record(message, **WORKED_PLACEMENT))
    assert record.sysflag == COMPRESSED_FLAG | STOREHOSTADDRESS_V6_FLAG
    assert record.store_host == ("fe80::1", 10911) and record.born_host == ("127.0.0.1", 54321)
    assert record.total_size == 137 + 12
    assert record.offset_msg_id == "FE80000000000000000000000000000100002A9F0000000000000000"


def test_topic_versions_follow_the_utf8_length():
    ascii_127, ascii_128 = "t" * 127, "t" * 128
    non_ascii = "é" * 64  # 64 chars, 128 UTF-8 bytes: V1's signed byte would overflow
    assert decode_record(encode_record(Message(ascii_127), **WORKED_PLACEMENT)).version is MessageVersion.V1
    for topic in (ascii_128, non_ascii):
        encoded = encode_record(Message(topic), **WORKED_PLACEMENT)
        assert struct.unpack_from(">I", encoded, 4)[0] == MESSAGE_MAGIC_CODE_V2
        assert struct.unpack_from(">h", encoded, 88)[0] == 128  # empty body: the 2-byte length follows
        assert decode_record(encoded).topic == topic
    short_v2 = encode_record(Message("T"), **WORKED_PLACEMENT, version=MessageVersion.V2)
    assert decode_record(short_v2).version is MessageVersion.V2 and decode_record(short_v2).topic == "T"


# --- Corruption ---------------------------------------------------------------------------------------------

# Fields no check covers without the __CRC32# property: a flipped byte there decodes to a different value.
UNCHECKED_FIELDS = (
    "queue_id",
    "flag",
    "queue_offset",
    "physical_offset",
    "sysflag",
    "born_timestamp_ms",
    "born_host",
    "store_timestamp_ms",
    "store_host",
    "reconsume_times",
    "prepared_transaction_offset",
    "topic",
    "properties",
)


def field_spans(message: Message, encoded: bytes) -> list[tuple[str, int, int]]:
    """(name, start, end) of every field of an encoded record, named like MessageRecord's attributes."""
    born = 20 if ipaddress.ip_address(message.born_host[0]).version == 6 else 8
    store = 20 if ipaddress.ip_address(message.store_host[0]).version == 6 else 8
    topic_length_size = 2 if len(message.topic.encode()) > 127 else 1
    sizes = [
        ("TOTALSIZE", 4), ("MAGICCODE", 4), ("BODYCRC", 4), ("queue_id", 4), ("flag", 4), ("queue_offset", 8),
        ("physical_offset", 8), ("sysflag", 4), ("born_timestamp_ms", 8), ("born_host", born),
        ("store_timestamp_ms", 8), ("store_host", store), ("reconsume_times", 4),
        ("prepared_transaction_offset", 8), ("BODY length", 4), ("body", len(message.body)),
        ("TOPIC length", topic_length_size), ("topic", len(message.topic.encode())), ("PROPERTIES length", 2),
    ]  # fmt: skip
    spans, start = [], 0
    for name, size in sizes:
        spans.append((name, start, start + size))
        start += size
    spans.append(("properties", start, len(encoded)))
    return spans


SYSFLAG_LOW_BYTE = 39  # holds the two IPv6 host bits


def changes_no_check_notices(name: str, index: int, mask: int, sysflag: int) -> set[str]:
    """The fields a flip may change without any check noticing; empty if it must raise CorruptRecord."""
    if name not in UNCHECKED_FIELDS:
        return set()
    host_bits = mask & (BORNHOST_V6_FLAG | STOREHOSTADDRESS_V6_FLAG) if index == SYSFLAG_LOW_BYTE else 0
    if not host_bits:
        return {name}
    if ((sysflag ^ host_bits) & 0x30).bit_count() != (sysflag & 0x30).bit_count():
        return set()  # the header grows or shrinks by 12 bytes, and the lengths stop adding up
    # Both bits flipped with one IPv6 host: the header keeps its size, the hosts are read the other way round.
    return {"sysflag", "born_host", "store_timestamp_ms", "store_host"}


def flipped(encoded: bytes, index: int, mask: int) -> bytes:
    damaged = bytearray(encoded)
    damaged[index] ^= mask
    return bytes(damaged)


FLIP_MASKS = (0x01, 0x10, 0x20, 0x80, 0xFF)
CORRUPTION_SUBJECTS = [
    WORKED_MESSAGE,
    Message(
        topic="主题-" + "x" * 130,
        body=bytes(range(256)),
        queue_id=7,
        properties={"UNIQ_KEY": "AC11000100002A9F0000000000000001", "KEYS": "a b"},
        born_host=HostAddress("2001:db8::7", 40000),
        store_host=HostAddress("10.1.2.3", 10911),
    ),
]


@pytest.mark.parametrize("message", CORRUPTION_SUBJECTS, ids=["worked-example", "v2-ipv6"])
def test_a_flipped_byte_is_caught_or_changes_only_an_unchecked_field(message: Message):
    encoded = encode_record(message, **WORKED_PLACEMENT)
    original = decode_record(encoded)
    for name, start, end in field_spans(message, encoded):
        for index in range(start, end):
            for mask in FLIP_MASKS:
                allowed = changes_no_check_notices(name, index, mask, original.sysflag)
                try:
                    record = decode_record(flipped(encoded, index, mask), check_crc=True, base_offset=4096)
                except CorruptRecord as error:
                    assert error.offset == 4096
                    continue
                assert allowed, f"flip {mask:#x} at {index} ({name}) went unnoticed"
                changed = {
                    f.name
                    for f in dataclasses.fields(record)
                    if getattr(record, f.name) != getattr(original, f.name)
                }
                assert changed <= allowed, f"flip {mask:#x} at {index} ({name}) changed {changed}"


@pytest.mark.parametrize("message", CORRUPTION_SUBJECTS, ids=["worked-example", "v2-ipv6"])
def test_the_property_crc_catches_every_flipped_byte(message: Message):
    encoded = encode_record(message, **WORKED_PLACEMENT, append_property_crc=True)
    assert decode_record(encoded, check_crc=True, require_property_crc=True).to_message() == stored_form(
        message
    )
    for index in range(len(encoded)):
        for mask in FLIP_MASKS:
            with pytest.raises(CorruptRecord):
                decode_record(flipped(encoded, index, mask), check_crc=True, require_property_crc=True)


def test_property_crc_layout_and_value():
    assert encode_crc32_property(123) == b"__CRC32#\x013210000000\x02"
    assert encode_crc32_property(0) == b"__CRC32#\x010000000000\x02"
    assert encode_crc32_property(2**31 - 1) == b"__CRC32#\x017463847412\x02"
    with pytest.raises(ValueError):
        encode_crc32_property(2**31)
    encoded = encode_record(WORKED_MESSAGE, **WORKED_PLACEMENT, append_property_crc=True)
    assert encoded[:4] == struct.pack(">i", 137 + 20)
    assert encoded[112:114] == struct.pack(">h", 23 + 20)
    assert encoded[114 : 114 + 23] == WORKED_EXAMPLE[114:]
    crc = zlib.crc32(encoded[:-20]) & 0x7FFFFFFF
    assert encoded[-20:] == encode_crc32_property(crc)
    assert decode_record(encoded).properties[PROPERTY_CRC32] == str(crc)[::-1].ljust(10, "0")


def test_property_crc_with_no_other_properties_and_stale_input_crc():
    message = Message("T", b"x", properties={PROPERTY_CRC32: "9999999999"})  # the store computes its own
    without = encode_record(message, **WORKED_PLACEMENT)
    assert PROPERTY_CRC32 not in decode_record(without).properties
    encoded = encode_record(message, **WORKED_PLACEMENT, append_property_crc=True)
    assert encoded[-22:-20] == struct.pack(">h", 20)
    record = decode_record(encoded, check_crc=True, require_property_crc=True)
    assert list(record.properties) == [PROPERTY_CRC32]


def test_property_crc_failures_name_the_field():
    encoded = bytearray(encode_record(WORKED_MESSAGE, **WORKED_PLACEMENT, append_property_crc=True))
    with pytest.raises(CorruptRecord) as missing:
        decode_record(WORKED_EXAMPLE, check_crc=True, require_property_crc=True)
    assert missing.value.field == PROPERTY_CRC32
    encoded[20] ^= 1  # QUEUEOFFSET: only the record CRC covers it
    assert decode_record(encoded, check_crc=False).queue_offset == 1 << 56
    with pytest.raises(CorruptRecord, match="does not match __CRC32#") as mismatch:
        decode_record(encoded, check_crc=True)
    assert mismatch.value.field == PROPERTY_CRC32
    encoded[20] ^= 1
    encoded[-5] = ord("x")
    with pytest.raises(CorruptRecord, match="malformed"):
        decode_record(encoded, check_crc=True)


def passes_check_crc(data: bytes) -> bool:
    """Whether a record decodes with every check recovery and verify make."""
    try:
        decode_record(data, check_crc=True)
    except CorruptRecord:
        return False
    return True


def test_with_the_property_crc_every_single_bit_flip_of_a_record_is_caught():
    """The whole-record CRC covers everything but its own 20 bytes, and those are checked by shape: a flip in
    the name would otherwise hide the CRC (the record then reads as one without it)."""
    encoded = encode_record(WORKED_MESSAGE, **WORKED_PLACEMENT, append_property_crc=True)
    flips = (flipped(encoded, bit // 8, 1 << (bit % 8)) for bit in range(len(encoded) * 8))
    assert [damaged for damaged in flips if passes_check_crc(damaged)] == []
    name_flip = flipped(encoded, len(encoded) - 18, 0x04)  # "__CRC32#" -> "__GRC32#"
    with pytest.raises(CorruptRecord, match="damaged __CRC32# property name") as caught:
        decode_record(name_flip, check_crc=True)
    assert caught.value.field == PROPERTY_CRC32


@pytest.mark.parametrize("with_crc", [False, True], ids=["plain", "with-__CRC32#"])
def test_every_torn_tail_of_a_record_is_caught(with_crc: bool):
    """A write cut short leaves zeros from some point to the record's end. Past the body, BODYCRC still
    holds and zeroed properties still decode: it is their missing final \\x02 that gives the tear away."""
    encoded = encode_record(WORKED_MESSAGE, **WORKED_PLACEMENT, append_property_crc=with_crc)
    tears = (encoded[:cut] + bytes(len(encoded) - cut) for cut in range(8, len(encoded)))
    assert [torn for torn in tears if torn != encoded and passes_check_crc(torn)] == []
    with pytest.raises(CorruptRecord, match="never written") as caught:
        decode_record(encoded[:-3] + bytes(3), check_crc=True)
    assert caught.value.field == "PROPERTIES"


def test_body_crc_mismatch_names_bodycrc():
    damaged = flipped(WORKED_EXAMPLE, 90, 0x01)
    assert decode_record(damaged).body == b"Hemlo RocketMQ"  # nothing checks the body without check_crc
    with pytest.raises(CorruptRecord) as caught:
        decode_record(damaged, check_crc=True, path="commitlog/x", base_offset=1 << 30)
    assert (caught.value.field, caught.value.offset, caught.value.path) == ("BODYCRC", 1 << 30, "commitlog/x")
    assert "commitlog/x, offset 1073741824" in str(caught.value)


@pytest.mark.parametrize("position", [0, 37])
def test_every_truncation_raises_with_the_record_offset(position: int):
    encoded = b"\x00" * position + WORKED_EXAMPLE
    for cut in range(position, len(encoded)):
        with pytest.raises(CorruptRecord) as caught:
            decode_record(encoded[:cut], position, base_offset=5000)
        assert (caught.value.offset, caught.value.field) == (5000 + position, "TOTALSIZE")
        assert not isinstance(caught.value, UnwrittenSpace)
        with pytest.raises(CorruptRecord):
            decode_dispatch_info(memoryview(encoded)[:cut], position)


@pytest.mark.parametrize("total_size", [0x7FFFFFFF, 0x10000000, -1, -(2**31), 90])
def test_absurd_total_sizes_raise_without_allocating(total_size: int):
    buffer = struct.pack(">iI", total_size, MESSAGE_MAGIC_CODE_V1) + bytes(300)
    tracemalloc.start()
    try:
        for max_record_size in (None, 2**31 - 1):
            kwargs = {} if max_record_size is None else {"max_record_size": max_record_size}
            with pytest.raises(CorruptRecord) as caught:
                decode_record(buffer, **kwargs)
            assert caught.value.field == "TOTALSIZE"
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024


def test_the_record_size_cap_follows_max_message_size():
    assert max_record_size_for(4 * 1024 * 1024) == DEFAULT_MAX_RECORD_SIZE == 4 * 1024 * 1024 + 64 * 1024
    assert max_record_size_for(2**31 - 1) == 2**31 - 1
    with pytest.raises(CorruptRecord, match="exceeds the largest record") as caught:
        decode_record(WORKED_EXAMPLE, max_record_size=136)
    assert caught.value.field == "TOTALSIZE"
    assert decode_record(WORKED_EXAMPLE, max_record_size=137).total_size == 137


def test_length_fields_that_disagree_are_rejected_by_field():
    def with_int(offset: int, fmt: str, value: int) -> bytes:
        damaged = bytearray(WORKED_EXAMPLE)
        struct.pack_into(fmt, damaged, offset, value)
        return bytes(damaged)

    cases = [
        (with_int(84, ">i", 2**31 - 1), "BODY length"),
        (with_int(84, ">i", -5), "BODY length"),
        (with_int(102, ">b", -1), "TOPIC length"),
        (with_int(102, ">b", 127), "TOPIC length"),
        (with_int(112, ">h", -1), "PROPERTIES length"),
        (with_int(112, ">h", 22), "TOTALSIZE"),
        (with_int(4, ">I", 0x12345678), "MAGICCODE"),
        (with_int(0, ">i", 138), "TOTALSIZE"),
    ]
    for damaged, field in cases:
        with pytest.raises(CorruptRecord) as caught:
            decode_record(damaged + bytes(8))
        assert caught.value.field == field, caught.value


def test_invalid_utf8_in_topic_or_properties_is_corruption():
    topic_damaged = bytearray(WORKED_EXAMPLE)
    topic_damaged[103] = 0xFF
    with pytest.raises(CorruptRecord) as caught:
        decode_record(topic_damaged)
    assert caught.value.field == "TOPIC"
    properties_damaged = bytearray(WORKED_EXAMPLE)
    properties_damaged[114] = 0xC3
    with pytest.raises(CorruptRecord) as caught:
        decode_record(properties_damaged)
    assert caught.value.field == "PROPERTIES"


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400), st.integers(0, 16))
def test_garbage_never_raises_anything_but_corrupt_record(garbage: bytes, position: int):
    assume(position <= len(garbage))
    for decode in (decode_record, decode_dispatch_info):
        try:
            result = decode(garbage, position, check_crc=True)
        except CorruptRecord:
            continue
        assert isinstance(result, MessageRecord | DispatchInfo | BlankRecord)


@settings(deadline=None)
@given(MESSAGES, st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4))
def test_damaged_records_never_raise_anything_but_corrupt_record(message: Message, damage: list):
    encoded = bytearray(encode_record(message, **WORKED_PLACEMENT, append_property_crc=True))
    for index, value in damage:
        encoded[index % len(encoded)] = value
    for check_crc in (False, True):
        try:
            decode_record(encoded, check_crc=check_crc)
            decode_dispatch_info(memoryview(encoded), check_crc=check_crc)
        except CorruptRecord:
            pass


# --- Blank records and unwritten space ----------------------------------------------------------------------


def test_blank_record_is_eight_bytes_and_decodes_as_blank():
    blank = encode_blank(1000)
    assert blank == struct.pack(">iI", 1000, BLANK_MAGIC_CODE) and len(blank) == END_FILE_MIN_BLANK_LENGTH
    file_tail = blank + bytes(992)
    assert decode_record(file_tail) == BlankRecord(1000)
    assert decode_dispatch_info(memoryview(file_tail)) == BlankRecord(1000)
    assert decode_record(bytes(100) + encode_blank(8), 100) == BlankRecord(8)
    assert peek_total_size_and_magic(file_tail) == (1000, BLANK_MAGIC_CODE)
    for bad in (7, 0, 2**31):
        with pytest.raises(ValueError):
            encode_blank(bad)


@pytest.mark.parametrize("total_size", [1001, 7, 0, -8])
def test_a_blank_that_does_not_fit_the_file_is_corrupt(total_size: int):
    with pytest.raises(CorruptRecord) as caught:
        decode_record(struct.pack(">iI", total_size, BLANK_MAGIC_CODE) + bytes(992), base_offset=3)
    assert (caught.value.field, caught.value.offset) == ("TOTALSIZE", 3)


def test_only_all_zero_headers_are_unwritten_space():
    with pytest.raises(UnwrittenSpace):
        decode_record(bytes(4096), 1024)
    with pytest.raises(CorruptRecord) as short:
        decode_record(bytes(7))  # fewer than 8 bytes: truncated, whatever they hold
    assert not isinstance(short.value, UnwrittenSpace)
    with pytest.raises(CorruptRecord) as zero_magic:
        decode_record(struct.pack(">iI", 137, 0) + bytes(200))
    assert not isinstance(zero_magic.value, UnwrittenSpace) and zero_magic.value.field == "MAGICCODE"


def test_peek_needs_eight_bytes_and_a_position_inside():
    assert peek_total_size_and_magic(WORKED_EXAMPLE) == (137, MESSAGE_MAGIC_CODE_V1)
    with pytest.raises(CorruptRecord) as caught:
        peek_total_size_and_magic(WORKED_EXAMPLE, 130, base_offset=10)
    assert caught.value.offset == 140
    with pytest.raises(CorruptRecord):
        peek_total_size_and_magic(WORKED_EXAMPLE, 500)
    with pytest.raises(ValueError):
        peek_total_size_and_magic(WORKED_EXAMPLE, -1)


# --- Limits and bad input -----------------------------------------------------------------------------------


def test_body_limit_is_max_message_size():
    at_limit = Message("T", bytes(4 * 1024 * 1024))
    assert decode_record(encode_record(at_limit, **WORKED_PLACEMENT)).total_size > 4 * 1024 * 1024
    with pytest.raises(MessageTooLarge, match="maxMessageSize"):
        encode_record(Message("T", bytes(4 * 1024 * 1024 + 1)), **WORKED_PLACEMENT)
    with pytest.raises(MessageTooLarge):
        encode_into(bytearray(4096), 0, Message("T", bytes(11)), **WORKED_PLACEMENT, max_body_size=10)


def test_properties_limit_is_short_max_value_including_the_crc_reservation():
    # "k\x01" + value + "\x02" = len(value) + 3 bytes
    at_limit = Message("T", properties={"k": "v" * (MAX_PROPERTIES_SIZE - 3)})
    assert len(decode_record(encode_record(at_limit, **WORKED_PLACEMENT)).properties["k"]) == 32764
    with pytest.raises(MessageTooLarge, match="PROPERTIES_SIZE_EXCEEDED"):
        encode_record(Message("T", properties={"k": "v" * (MAX_PROPERTIES_SIZE - 2)}), **WORKED_PLACEMENT)
    with pytest.raises(MessageTooLarge):
        encode_record(at_limit, **WORKED_PLACEMENT, append_property_crc=True)
    fits_with_crc = Message("T", properties={"k": "v" * (MAX_PROPERTIES_SIZE - 3 - CRC32_RESERVED_LEN)})
    record = decode_record(
        encode_record(fits_with_crc, **WORKED_PLACEMENT, append_property_crc=True), check_crc=True
    )
    assert PROPERTY_CRC32 in record.properties


def test_topic_limits():
    assert decode_record(encode_record(Message("t" * 255), **WORKED_PLACEMENT)).topic == "t" * 255
    with pytest.raises(MessageTooLarge, match="MAX_TOPIC_LENGTH"):
        encode_record(Message("t" * 256), **WORKED_PLACEMENT)
    with pytest.raises(MessageTooLarge, match="V1"):
        encode_record(Message("t" * 128), **WORKED_PLACEMENT, version=MessageVersion.V1)
    with pytest.raises(ValueError, match="empty"):
        encode_record(Message(""), **WORKED_PLACEMENT)


def test_a_prepared_record_is_placed_later_like_do_append():
    prepared = prepare_record(WORKED_MESSAGE, append_property_crc=True)
    buffer = bytearray(1000)
    first = prepared.write_into(buffer, 0, queue_offset=0, physical_offset=0, store_timestamp_ms=1)
    second = prepared.write_into(buffer, first, queue_offset=1, physical_offset=first, store_timestamp_ms=2)
    records = [decode_record(buffer, at, check_crc=True, require_property_crc=True) for at in (0, first)]
    assert [(r.queue_offset, r.physical_offset, r.store_timestamp_ms) for r in records] == [
        (0, 0, 1),
        (1, first, 2),
    ]
    assert first == second == prepared.total_size
    assert records[0].properties[PROPERTY_CRC32] != records[1].properties[PROPERTY_CRC32]


def test_encode_into_refuses_a_buffer_too_small_and_writes_nothing():
    buffer = bytearray(b"\xaa" * 200)
    with pytest.raises(ValueError, match="does not fit"):
        encode_into(buffer, 100, WORKED_MESSAGE, **WORKED_PLACEMENT)
    with pytest.raises(ValueError):
        encode_into(buffer, -1, WORKED_MESSAGE, **WORKED_PLACEMENT)
    assert buffer == bytearray(b"\xaa" * 200)
    assert encode_into(buffer, 63, WORKED_MESSAGE, **WORKED_PLACEMENT) == 137


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"queue_id": 2**31}, "queue_id"),
        ({"flag": -(2**31) - 1}, "flag"),
        ({"reconsume_times": 2**40}, "reconsume_times"),
        ({"born_timestamp_ms": 2**63}, "born_timestamp_ms"),
        ({"prepared_transaction_offset": -(2**63) - 1}, "prepared_transaction_offset"),
    ],
)
def test_numbers_that_overflow_java_types_name_the_field(change: dict, field: str):
    with pytest.raises(ValueError, match=rf"^{field}="):
        encode_record(dataclasses.replace(WORKED_MESSAGE, **change), **WORKED_PLACEMENT)


@pytest.mark.parametrize(
    ("placement", "field"),
    [
        ({"queue_offset": 0, "physical_offset": 2**63, "store_timestamp_ms": 0}, "physical_offset"),
        ({"queue_offset": -(2**63) - 1, "physical_offset": 0, "store_timestamp_ms": 0}, "queue_offset"),
        ({"queue_offset": 0, "physical_offset": 0, "store_timestamp_ms": 1.5}, "store_timestamp_ms"),
    ],
)
def test_placement_overflow_names_the_field_and_writes_nothing(placement: dict, field: str):
    buffer = bytearray(200)
    with pytest.raises(ValueError, match=rf"^{field}="):
        encode_into(buffer, 0, WORKED_MESSAGE, **placement)
    assert buffer == bytearray(200)


def test_a_number_of_the_wrong_type_is_a_value_error():
    with pytest.raises(ValueError, match=r"^queue_id="):
        encode_record(dataclasses.replace(WORKED_MESSAGE, queue_id=1.0), **WORKED_PLACEMENT)


@pytest.mark.parametrize(
    "host", [HostAddress("not-an-ip", 1), HostAddress("10.0.0.1", 65536), HostAddress("10.0.0.1", -1)]
)
def test_bad_hosts_are_rejected(host: HostAddress):
    with pytest.raises(ValueError):
        encode_record(dataclasses.replace(WORKED_MESSAGE, born_host=host), **WORKED_PLACEMENT)


# --- Properties ---------------------------------------------------------------------------------------------

N, P = "\x01", "\x02"


@pytest.mark.parametrize(
    ("text", "expected"),
    [  # MessageDecoderTest.testString2messageProperties
        (f"k1{N}v1", {"k1": "v1"}),
        ("", {}),
        (" ", {}),
        ("aaa", {}),
        (f"k1{N}", {}),
        (f"{N}v1", {}),
        (f"k1{N}v1{P}", {"k1": "v1"}),
        (f"k1{N}v1{P}k2{N}v2", {"k1": "v1", "k2": "v2"}),
        (f"k1{N}v1{P}{N}v2", {"k1": "v1"}),
        (f"k1{N}v1{P}k2{N}", {"k1": "v1"}),
        (f"{N}v1{P}k2{N}v2", {"k2": "v2"}),
        (f"k1{N}{P}k2{N}v2", {"k2": "v2"}),
        (f"1{N}1{P}2{N}2", {"1": "1", "2": "2"}),
        (f"1{N}{P}2{N}2", {"2": "2"}),
        (f"{N}1{P}2{N}2", {"2": "2"}),
        (f"1{N}1{P}2{N}", {"1": "1"}),
        (f"1{N}1{P}{N}2", {"1": "1"}),
        # and what the Java loop implies: extra \x01 stay in the value, empty segments vanish, last value wins
        (f"k{N}a{N}b{P}", {"k": f"a{N}b"}),
        (f"{P}{P}k{N}v{P}{P}", {"k": "v"}),
        (f"k{N}1{P}k{N}2{P}", {"k": "2"}),
    ],
)
def test_string_to_properties_is_as_tolerant_as_java(text: str, expected: dict):
    assert string_to_properties(text) == expected


def test_properties_to_string_ends_every_entry_with_the_separator():
    assert properties_to_string({"KEYS": "order-1", "TAGS": "TagA"}) == f"KEYS{N}order-1{P}TAGS{N}TagA{P}"
    assert properties_to_string({}) == ""
    for bad in ({"": "v"}, {"k": ""}, {f"k{N}": "v"}, {"k": f"v{P}"}, {"a": "1", "b": f"{N}"}):
        with pytest.raises(ValueError):
            properties_to_string(bad)


def test_dispatch_info_exposes_the_delay_level_on_the_schedule_topic_only():
    message = Message(SCHEDULE_TOPIC, b"x", properties={"DELAY": "3", "TAGS": "t", "KEYS": " a  b "})
    info = decode_dispatch_info(encode_record(message, **WORKED_PLACEMENT))
    assert (info.delay_level, info.tags_code, info.key_list) == (3, 116, ("a", "b"))
    plain = decode_dispatch_info(encode_record(dataclasses.replace(message, topic="T"), **WORKED_PLACEMENT))
    assert plain.delay_level is None
    odd = dataclasses.replace(message, properties={"DELAY": "soon"})
    assert decode_dispatch_info(encode_record(odd, **WORKED_PLACEMENT)).delay_level is None


# --- Message ids --------------------------------------------------------------------------------------------


def test_offset_msg_id_round_trips():
    assert offset_msg_id(("192.168.0.10", 10911), 0) == "C0A8000A00002A9F0000000000000000"
    assert parse_offset_msg_id("C0A8000A00002A9F0000000000000000") == ("192.168.0.10", 10911, 0)
    ipv6 = offset_msg_id(HostAddress("::1", 0), 123456)
    assert len(ipv6) == 56 and ipv6 == "0" * 31 + "1" + "00000000" + "000000000001E240"
    parsed = parse_offset_msg_id(ipv6.lower())
    assert (parsed.host, parsed.port, parsed.physical_offset) == ("::1", 0, 123456)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "C0A8000A00002A9F000000000000000",  # 31 digits
        "C0A8000A00002A9F00000000000000000",  # 33 digits
        "G0A8000A00002A9F0000000000000000",
        "C0A8000A00012A9F0000000000000000",  # port 76447
        "C0A8000AFFFFFFFF0000000000000000",  # port -1
        "C0A8000A00002A9FFFFFFFFFFFFFFFFF",  # offset -1
        None,
    ],
)
def test_parse_offset_msg_id_rejects_bad_input(text):
    with pytest.raises(ValueError):
        parse_offset_msg_id(text)
