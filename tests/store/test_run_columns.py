"""`run_columns.decode_columns` (the jsonl dump's reader) against `codec.decode_run`, the run decoder every
other reader's records are held to: from any record start, the columns hold the same records as decode_run's
first ones and end where they end, or the reader declines (None) and decode_run reads that window. Records of
one size go through one whole-record struct, others a field at a time: both are fed damage, awkward
properties and shapes that must stop or refuse a run."""

from __future__ import annotations

import pytest

from store import codec
from store.run_columns import decode_columns


def encoded(message: codec.Message, **options) -> bytes:
    return codec.encode_record(message, queue_offset=3, physical_offset=0, store_timestamp_ms=1, **options)


def message(number: int, *, body: bytes | None = None, **fields) -> codec.Message:
    """A message of one size whatever `number` (< 10,000): awkward but fixed-width keys, tags and body."""
    properties = fields.pop("properties", {"KEYS": f'k"{number:04d}\\\u2028', "TAGS": "t\x1fé"})
    return codec.Message(
        topic=fields.pop("topic", "Tópic"),
        body=body if body is not None else f"body {number:04d}".encode(),
        queue_id=number % 4,
        properties=properties,
        born_timestamp_ms=1_700_000_000_000 + number // 3,
        **fields,
    )


def assert_agrees_with_decode_run(records: list[bytes], max_records: int = 100) -> list[int | None]:
    """decode_columns from every record start (CRC checked or not) against decode_run; how many records
    each start's columns held (None: declined), CRC checked."""
    data = memoryview(b"".join(records) + bytes(64))
    starts = [sum(map(len, records[:index])) for index in range(len(records))]
    counts = []
    for check_crc in (True, False):
        for start in starts:
            columns = decode_columns(data, start, len(data), check_crc=check_crc, max_records=max_records)
            run, end = codec.decode_run(data, start, len(data), check_crc=check_crc, max_records=max_records)
            if check_crc:
                counts.append(None if columns is None else columns.count)
            if columns is None:
                continue
            assert 1 <= columns.count <= len(run)
            assert columns.records() == run[: columns.count]
            assert columns.end == (end if columns.count == len(run) else run[columns.count].position)
    return counts


def test_records_of_one_size_are_decoded_as_decode_run_decodes_them():
    records = [encoded(message(number)) for number in range(40)]
    assert len(set(map(len, records))) == 1
    counts = assert_agrees_with_decode_run(records)
    assert counts == list(range(40, 0, -1))  # every start: the rest of the run, all as columns
    assert assert_agrees_with_decode_run(records, max_records=7)[:3] == [7, 7, 7]


def test_records_of_several_sizes_are_decoded_a_field_at_a_time():
    records = [encoded(message(number, body=b"x" * (number % 5))) for number in range(30)]
    no_properties = [encoded(message(number, properties={})) for number in range(5)]
    assert assert_agrees_with_decode_run(records)[0] == 30
    assert assert_agrees_with_decode_run(no_properties)[0] == 5


def flipped(record: bytes, old: bytes, new: bytes) -> bytes:
    assert len(old) == len(new) and record.count(old) == 1
    return record.replace(old, new)


# Damage and shapes at record 9 of 20 (which must stop a run there, or make the reader decline the run).
AT_NINE = {
    "body-crc": lambda record: flipped(record, b"body 0009", b"bodx 0009"),
    "torn-tail": lambda record: record[:-1] + b"\x00",
    "topic-utf8": lambda record: flipped(record, "Tópic".encode(), b"T\xff\xfepic"),
    "crc32-tail": lambda _: encoded(message(9), append_property_crc=True),
    "damaged-crc32-name": lambda _: flipped(
        encoded(message(9), append_property_crc=True), b"__CRC32#", b"__CRD32#"
    ),
    "ends-in-digits": lambda record: flipped(record, "t\x1fé\x02".encode(), b"t123\x02"),  # not a CRC tail
    "other-topic": lambda _: encoded(message(9, topic="Topic-9")),
    "ipv6-host": lambda _: encoded(message(9, store_host=("::1", 10911))),
    "v2-magic": lambda _: encoded(message(9), version=codec.MessageVersion.V2),
    "other-names": lambda record: flipped(record, b"TAGS", b"TAGZ"),
    "repeated-name": lambda record: flipped(record, b"TAGS", b"KEYS"),
    "no-trailing-separator": lambda record: record[:-1] + b"x",
    "separator-in-value": lambda record: flipped(record, b"t\x1f", b"t\x01"),
    "empty-value": lambda _: flipped(
        encoded(message(9, properties={"A": "x", "KEYS": f'k"{9:04d}\\\u2028', "TAGS": "t\x1fé"})),
        b"A\x01x\x02",
        b"A\x01\x02\x02",
    ),
    "empty-name": lambda record: flipped(record, b"\x02TAGS\x01", b"\x02\x02AGS\x01"),
    "not-utf8-value": lambda record: flipped(record, "é".encode(), b"\xff\xfe"),
}


@pytest.mark.parametrize("one_size", [True, False], ids=["one-size", "sizes"])
@pytest.mark.parametrize("case", AT_NINE, ids=str)
def test_a_run_stops_or_is_declined_where_decode_run_says(case: str, one_size: bool):
    bodies = [
        f"body {number:04d}".encode() + (b"" if one_size else b"y" * (number % 3)) for number in range(20)
    ]
    records = [encoded(message(number, body=body)) for number, body in enumerate(bodies)]
    records[9] = AT_NINE[case](records[9])
    counts = assert_agrees_with_decode_run(records)
    if case == "ends-in-digits" or (case == "other-topic" and one_size):  # like the others: the run goes on
        assert counts[0] == 20
    elif case == "other-topic":  # a record of the next one's size with another topic length: a new stretch
        assert counts[0] in (9, 20)
    else:  # the run stops before it, or is left to decode_run
        assert counts[0] in (9, None)
    assert counts[10] == 10  # past it, the rest is one run again


def test_a_view_that_is_not_read_only_is_declined():
    data = bytearray(b"".join(encoded(message(number)) for number in range(3)))
    assert decode_columns(memoryview(data), 0, len(data), check_crc=True, max_records=10) is None


def test_stretches_of_one_size_each_are_joined_into_one_run():
    """Producers' batches: stretches of records of one size after another (a whole-record struct each)."""
    sizes = [0] * 30 + [5] * 20 + [0] * 25 + [9] * 40
    records = [encoded(message(number, body=b"b" * 9 + b"z" * extra)) for number, extra in enumerate(sizes)]
    assert assert_agrees_with_decode_run(records, max_records=1000)[0] == len(records)
    damaged = list(records)
    damaged[40] = flipped(damaged[40], b"zzzzz", b"zzzzy")
    assert assert_agrees_with_decode_run(damaged, max_records=1000)[0] == 40
    # past 64 records of one shape a run stops at another shape; before that it is left to decode_run
    other = [encoded(message(number, properties={"KEYS": "k"})) for number in range(10)]
    counts = assert_agrees_with_decode_run(records + other, max_records=1000)
    assert counts[0] == len(records) and counts[len(records) - 20] is None
