"""Fuzz every decoder of the store with mutated valid encodings, against the error contract of store.errors.

Thirteen decoders, one input in thirteen each: a CommitLog record, the END_OF_FILE blank, the records of one
batch walked as the reput thread walks them, ConsumeQueue entries, the IndexFile header, a whole small
IndexFile (its hash slots and entries: table sizes inferred, then queried), the checkpoint,
consumerOffset.json and the offsetMsgId; and Kafka's (store.kafka, whose one documented error is
KafkaDecodeError): a segment's entries (v2 batches in every codec, control batches, legacy wrappers) with
their records and control records, index files and producer snapshots, the text files (offset and
leader-epoch checkpoints, partition.metadata, meta.properties, .kafka_cleanshutdown, quorum-state), and
__consumer_offsets and __cluster_metadata records.

Each input is a valid encoding (built from the seed: IPv4 and IPv6 hosts, V1 and V2 topics, `__CRC32#`
tails, batches, fastjson and strict JSON, Kafka batches written by store.kafka.writer, ...) mutated one to
eight times: bit flips, byte sets, truncation, extension, length fields set to edge values (0, -1,
2^31-1, 2^31, the length +-1), splices with another seed, deleted or repeated chunks, and for the text
formats inserted JSON tokens.

Reported, per decoder and in total: every exception outside the decoder's documented errors (type, message,
where it was raised, and the input's number), every input that took over 1 s (an input still running after
10 s is stopped with SIGALRM and reported as a hang), the slowest input, the peak memory (max RSS of each
process) and the largest allocation one input made (tracemalloc on every 100th input) next to its size.
Each worker runs under an address-space limit (--memory-limit-mib above its size at start), so an
allocation a length field sized beyond the input fails as MemoryError, a finding like any other.

Reproducible: input N goes to decoder N mod 13 (or mod the number chosen with --decoders), mutated by
random.Random(seed * 10**12 + N). `--replay N` runs one input again and prints its traceback; `--out DIR`
writes the input of each finding to DIR/<decoder>-<N>.bin. Exit status 0 when nothing undocumented was
raised and nothing hung.

    .venv/bin/python benchmarks/fuzz_decoders.py  # 1,000,000 inputs: 58 s on 2 idle cores, 4 min at load 8
    .venv/bin/python benchmarks/fuzz_decoders.py --count 20000 --seed 7
    .venv/bin/python benchmarks/fuzz_decoders.py --seed 7 --replay 123457
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import multiprocessing
import os
import random
import resource
import signal
import struct
import sys
import tempfile
import time
import traceback
import tracemalloc
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from store import codec  # noqa: E402
from store.checkpoint import decode_checkpoint  # noqa: E402
from store.consume_queue_format import ENTRY, PRE_BLANK_SIZE, decode_entries, decode_entry  # noqa: E402
from store.consumer_offsets import ConsumerOffsets, ConsumerOffsetsError, DataVersion  # noqa: E402
from store.errors import CorruptRecord, StoreLayoutError  # noqa: E402
from store.index_file import IndexFile, IndexHeader, infer_index_geometry  # noqa: E402
from store.kafka import checkpoints as kafka_checkpoints  # noqa: E402
from store.kafka import writer as kafka_writer  # noqa: E402
from store.kafka.batches import RecordBatch, decode_batch_header, entry_findings  # noqa: E402
from store.kafka.cluster_metadata import decode_metadata_record  # noqa: E402
from store.kafka.consumer_offsets import decode_group_record  # noqa: E402
from store.kafka.findings import KafkaDecodeError  # noqa: E402
from store.kafka.indexes import decode_offset_index, decode_time_index, decode_txn_index  # noqa: E402
from store.kafka.records import decode_control_record, decode_records  # noqa: E402
from store.kafka.snapshots import decode_producer_snapshot  # noqa: E402

DEFAULT_COUNT = 1_000_000
SLOW_INPUT_S = 1.0  # the bar: an input over a second is reported
HANG_ABORT_S = 10.0  # an input still running then is stopped and reported as a hang
TRACE_EVERY = 100  # inputs between two whose allocations tracemalloc measures
CHUNK_INPUTS = 5_000
FINDINGS_KEPT_PER_KIND = 5
MiB = 1 << 20


# ---- the decoders and what each may raise ---------------------------------------------------------------


def exercise_record(record: codec.MessageRecord | codec.BlankRecord) -> None:
    """What the CLI and the dispatcher read off a decoded record: all of it must work on any record."""
    if isinstance(record, codec.MessageRecord):
        _read(record, "version", "key_list", "tags_code", "uniq_key", "offset_msg_id")
        record.to_message()


def _read(value: object, *names: str) -> None:
    """Read properties for what computing them may raise; the values do not matter here."""
    for name in names:
        getattr(value, name)


def decode_record_input(data: bytes) -> None:
    exercise_record(codec.decode_record(data, check_crc=True, require_property_crc=len(data) % 2 == 1))


def decode_record_unchecked(data: bytes) -> None:
    """The reput thread's view (no CRC), on a memoryview as the mapped CommitLog hands it."""
    info = codec.decode_dispatch_info(memoryview(data))
    if isinstance(info, codec.DispatchInfo):
        _read(info, "key_list", "delay_level")


def decode_record_both(data: bytes) -> None:
    """Both views of one input; an undocumented error from either is raised as it is, never hidden behind
    the other's CorruptRecord."""
    corrupt = []
    for decode in (decode_record_input, decode_record_unchecked):
        try:
            decode(data)
        except CorruptRecord as error:
            corrupt.append(error)
    if corrupt:
        raise corrupt[0]


def decode_blank(data: bytes) -> None:
    codec.peek_total_size_and_magic(data)
    decode_record_both(data)


def decode_batch(data: bytes) -> None:
    """Every record of a buffer in turn, until the end, a blank or the first that does not decode."""
    view = memoryview(data)
    position = 0
    while position < len(view):
        info = codec.decode_dispatch_info(view, position, base_offset=4096, check_crc=True)
        if isinstance(info, codec.BlankRecord):
            return
        exercise_record(codec.decode_record(view, position, base_offset=4096))
        position += info.size


def decode_consume_queue(data: bytes) -> None:
    list(decode_entries(data, 300_000))
    middle = len(data) // 2 // ENTRY.size * ENTRY.size
    decode_entry(data, middle, queue_offset=middle // ENTRY.size)


def decode_index_header(data: bytes) -> None:
    _read(IndexHeader.unpack(data), "entry_count")


class _BytesReader:
    """What IndexFile reads a read-only file with (PreadFile's read and close), over bytes in memory."""

    def __init__(self, data: bytes):
        self.data = data

    def read(self, offset: int, length: int) -> bytes:
        return self.data[offset : offset + length]

    def close(self) -> None:
        pass


INDEX_KEYS = ("Topic#k0", "Topic#k1", "Topic#k5", "Topic#UNIQ7", "Topic#absent")


def decode_index_file(data: bytes) -> None:
    """IndexFile.open's read-only path and a query per key, with inferred and with given table sizes."""
    header = IndexHeader.unpack(data)
    reader = _BytesReader(data)
    for explicit in ({}, {"hash_slot_num": 8}):
        try:
            geometry = infer_index_geometry(len(data), header, reader.read, **explicit)
        except StoreLayoutError:
            continue
        index_file = IndexFile(Path("fuzzed-index"), geometry, header, reader=reader)
        for key in INDEX_KEYS:
            index_file.select_phy_offsets(key, 64, 0, 2**62)
        for _entry in index_file.iter_entries():
            pass


def decode_checkpoint_input(data: bytes) -> None:
    values = decode_checkpoint(data, len(data))
    (values.min_timestamp(), values.min_timestamp_index())


def decode_consumer_offsets(data: bytes) -> None:
    offsets = ConsumerOffsets.from_bytes(data)
    offsets.to_text()
    for topic_group in offsets.offset_table:
        topic = topic_group.partition("@")[0]
        offsets.groups_for(topic)


def decode_message_id(data: bytes) -> None:
    """As the CLI gets it: command-line bytes, undecodable ones as surrogates."""
    text = data.decode("utf-8", "surrogateescape")
    parsed = codec.parse_offset_msg_id(text)
    again = codec.offset_msg_id((parsed.host, parsed.port), parsed.physical_offset)
    if again != text.upper():
        raise AssertionError(f"offsetMsgId {text!r} parses to {parsed} and encodes back as {again}")


def decode_kafka_log(data: bytes) -> None:
    """A Kafka segment as LogReader walks it (entries in turn until one does not decode), every entry's
    records decoded (their findings are values, not errors) and control records read."""
    position = 0
    while position < len(data):
        entry = decode_batch_header(data, position, buffer_start=4096)
        entry_findings(Path("fuzzed.log"), entry)
        decoded = decode_records(entry, "fuzzed.log")
        if isinstance(entry, RecordBatch) and entry.is_control:
            for record in decoded.records:
                decode_control_record(record)
        _read(entry, "last_offset", "compression", "timestamp_type", "next_position")
        position = entry.next_position - 4096


def decode_kafka_index_or_snapshot(data: bytes) -> None:
    """The same bytes as each index (which cannot fail: whole entries are read) and as a producer snapshot."""
    (decode_offset_index(data, 100), decode_time_index(data, 100), decode_txn_index(data))
    decode_producer_snapshot(data, 100)


KAFKA_TEXT_DECODERS = (
    kafka_checkpoints.decode_offset_checkpoint,
    kafka_checkpoints.decode_leader_epoch_checkpoint,
    kafka_checkpoints.decode_partition_metadata,
    kafka_checkpoints.decode_meta_properties,
    kafka_checkpoints.decode_clean_shutdown,
    kafka_checkpoints.decode_quorum_state,
)


def decode_kafka_text(data: bytes) -> None:
    """Every text-file decoder on the input; an error of one is raised after all have run."""
    errors = []
    for decode in KAFKA_TEXT_DECODERS:
        try:
            decode(data)
        except KafkaDecodeError as error:
            errors.append(error)
    if len(errors) == len(KAFKA_TEXT_DECODERS):
        raise errors[0]


def decode_kafka_group_or_metadata(data: bytes) -> None:
    """A record of __consumer_offsets (int16 key length, key, then the value; a length of -1: no value) and
    the same value as a __cluster_metadata record."""
    if len(data) < 2:
        raise KafkaDecodeError("truncated", "no key length")
    (key_length,) = struct.unpack_from(">h", data)
    key = data[2 : 2 + key_length] if key_length >= 0 else None
    value = data[2 + max(key_length, 0) :] or None
    with contextlib.suppress(KafkaDecodeError):
        decode_metadata_record(value)
    decode_group_record(key, value)


# ---- seeds: valid encodings, with where their length fields lie --------------------------------------------


@dataclass(frozen=True)
class Seed:
    data: bytes
    fields: tuple[tuple[int, int], ...] = ()  # (offset, width) of the length and count fields


@dataclass(frozen=True)
class Decoder:
    name: str
    decode: Callable[[bytes], None]
    documented: tuple[type[BaseException], ...]
    seeds: tuple[Seed, ...]
    text: bool = False  # mutations also insert JSON and hex tokens


HOSTS = (("127.0.0.1", 10911), ("192.168.0.10", 1), ("::1", 0), ("fe80::1", 65535), ("10.0.0.7", 65535))
TOPICS = ("TopicTest", "t", "订单-事件", "x" * 130, "%RETRY%group", codec.SCHEDULE_TOPIC)
SYSFLAGS = (
    0,
    codec.COMPRESSED_FLAG,
    codec.MULTI_TAGS_FLAG,
    codec.TRANSACTION_PREPARED_TYPE,
    codec.TRANSACTION_COMMIT_TYPE,
    codec.TRANSACTION_ROLLBACK_TYPE,
)


def random_message(
    rng: random.Random, topic: str | None = None, queue_id: int | None = None
) -> codec.Message:
    topic = topic or rng.choice(TOPICS)
    properties: dict[str, str] = {}
    if rng.random() < 0.7:
        properties[codec.PROPERTY_KEYS] = " ".join(
            f"k{rng.randrange(10)}" for _ in range(rng.randrange(1, 4))
        )
    if rng.random() < 0.5:
        properties[codec.PROPERTY_TAGS] = rng.choice(("TagA", "标签", "a||b"))
    if rng.random() < 0.5:
        properties[codec.PROPERTY_UNIQ_CLIENT_MESSAGE_ID_KEYIDX] = rng.randbytes(16).hex().upper()
    if topic == codec.SCHEDULE_TOPIC:
        properties[codec.PROPERTY_DELAY_TIME_LEVEL] = str(rng.randrange(1, 19))
    if rng.random() < 0.3:
        properties["名前"] = "値" * rng.randrange(1, 40)
    return codec.Message(
        topic,
        body=rng.randbytes(rng.choice((0, 1, 16, 100, 1000, 3000))),
        queue_id=rng.randrange(8) if queue_id is None else queue_id,
        flag=rng.choice((0, 1, -1)),
        properties=properties,
        sysflag=rng.choice(SYSFLAGS),
        born_timestamp_ms=1_700_000_000_000 + rng.randrange(10**9),
        born_host=rng.choice(HOSTS),
        store_host=rng.choice(HOSTS),
        reconsume_times=rng.randrange(3),
        prepared_transaction_offset=rng.choice((0, 4096)),
    )


def record_fields(data: bytes, start: int = 0) -> list[tuple[int, int]]:
    """TOTALSIZE, MAGICCODE, SYSFLAG, BODY length, TOPIC length and PROPERTIES length of a valid record."""
    record = codec.decode_record(data, start)
    header_size = 88 + 12 * bool(record.sysflag & codec.BORNHOST_V6_FLAG)
    header_size += 12 * bool(record.sysflag & codec.STOREHOSTADDRESS_V6_FLAG)
    topic_length_at = start + header_size + len(record.body)
    topic_width = record.version.topic_length_size
    properties_length_at = topic_length_at + topic_width + len(record.topic.encode())
    fixed = [(start, 4), (start + 4, 4), (start + 36, 4), (start + header_size - 4, 4)]
    return [*fixed, (topic_length_at, topic_width), (properties_length_at, 2)]


def encoded(rng: random.Random, message: codec.Message) -> bytes:
    return codec.encode_record(
        message,
        queue_offset=rng.randrange(10**6),
        physical_offset=rng.randrange(10**12),
        store_timestamp_ms=message.born_timestamp_ms + rng.randrange(1000),
        version=rng.choice((None, codec.MessageVersion.V2)),
        append_property_crc=rng.random() < 0.5,
    )


def record_seeds(rng: random.Random) -> list[Seed]:
    seeds = []
    for _ in range(40):
        data = encoded(rng, random_message(rng))
        seeds.append(Seed(data, tuple(record_fields(data))))
    return seeds


def blank_seeds(rng: random.Random) -> list[Seed]:
    seeds = []
    for _ in range(12):
        size = rng.choice((8, 9, 64, 4096))
        tail = rng.choice((bytes(size - 8), rng.randbytes(size - 8), b""))
        seeds.append(Seed(codec.encode_blank(size) + tail, ((0, 4), (4, 4))))
    record = encoded(rng, random_message(rng))
    seeds.append(Seed(codec.encode_blank(8) + record, ((0, 4), (4, 4))))
    return seeds


def batch_seeds(rng: random.Random) -> list[Seed]:
    seeds = []
    for _ in range(16):
        topic, queue_id = rng.choice(TOPICS), rng.randrange(4)
        first = random_message(rng, topic, queue_id)
        messages = [first]
        for _ in range(rng.randrange(1, 8)):  # shared headers make a PackedBatch, others record by record
            other = random_message(rng, topic, queue_id)
            if rng.random() < 0.7:  # what a PackedBatch's messages may not share: body, properties, born time
                other = dataclasses.replace(
                    first,
                    body=other.body,
                    properties=other.properties,
                    born_timestamp_ms=other.born_timestamp_ms,
                )
            messages.append(other)
        batch = codec.prepare_batch(messages, append_property_crc=rng.random() < 0.5)
        buffer = bytearray(batch.total_size + rng.choice((0, 8, 64)))
        batch.write_into(
            buffer, 0, queue_offset=rng.randrange(1000), physical_offset=4096, store_timestamp_ms=1
        )
        if len(buffer) > batch.total_size:
            buffer[batch.total_size : batch.total_size + 8] = codec.encode_blank(
                len(buffer) - batch.total_size
            )
        fields, position = [], 0
        while position < batch.total_size:
            fields += record_fields(bytes(buffer), position)
            position += codec.peek_total_size_and_magic(buffer, position)[0]
        seeds.append(Seed(bytes(buffer), tuple(fields)))
    return seeds


def consume_queue_seeds(rng: random.Random) -> list[Seed]:
    seeds = []
    for _ in range(12):
        entries = [(0, PRE_BLANK_SIZE, 0)] * rng.choice((0, 0, 2))
        offset = rng.randrange(10**9)
        for _ in range(rng.randrange(1, 40)):
            size = rng.randrange(91, 5000)
            entries.append((offset, size, rng.randrange(-(2**31), 2**31)))
            offset += size
        entries += [(0, 0, 0)] * rng.choice((0, 1, 5))
        data = b"".join(ENTRY.pack(*entry) for entry in entries)
        fields = [
            (at + part, width) for at in range(0, len(data), ENTRY.size) for part, width in ((0, 8), (8, 4))
        ]
        seeds.append(Seed(data, tuple(fields)))
    return seeds


def index_file_seeds(rng: random.Random) -> list[Seed]:
    """Small IndexFiles as IndexService writes them: default ratio, other geometries, empty, full."""
    seeds = []
    with tempfile.TemporaryDirectory(prefix="mqinspect-fuzz-") as directory:
        for number, (slots, entries, puts) in enumerate(
            ((8, 32, 20), (8, 32, 31), (8, 32, 0), (5, 20, 12), (16, 64, 40), (4, 17, 9), (8, 32, 3))
        ):
            index_file = IndexFile.create(
                Path(directory), hash_slot_num=slots, index_num=entries, name=f"{number:017d}"
            )
            with index_file:
                for put in range(puts):
                    key = rng.choice(INDEX_KEYS[:4]) if rng.random() < 0.8 else f"Topic#other{put}"
                    index_file.put_key(key, 4096 * put, 1_700_000_000_000 + 1000 * put)
            data = index_file.path.read_bytes()
            fields = [(24, 8), (32, 4), (36, 4)] + [(40 + 4 * slot, 4) for slot in range(slots)]
            for entry in range(1, puts + 1):
                at = index_file.geometry.entry_position(entry)
                fields += [(at, 4), (at + 12, 4), (at + 16, 4)]  # key hash, time diff, previous entry
            seeds.append(Seed(data, tuple(fields)))
    return seeds


def checkpoint_seeds(rng: random.Random) -> list[Seed]:
    seeds = []
    for length in (24, 32, 40, 4096):
        values = [1_700_000_000_000 + rng.randrange(10**6) for _ in range(3)] + [rng.randrange(10**9)] * 2
        data = struct.pack(">5q", *values)[:length].ljust(length, b"\0")
        seeds.append(Seed(data, tuple((at, 8) for at in range(0, min(length, 40), 8))))
    return seeds


def consumer_offsets_seeds(rng: random.Random) -> list[Seed]:
    seeds = []
    for _ in range(8):
        table = {
            f"{rng.choice(TOPICS)}@group{group}": {
                queue: rng.randrange(10**9) for queue in range(rng.randrange(1, 5))
            }
            for group in range(rng.randrange(1, 4))
        }
        offsets = ConsumerOffsets(offset_table=table, data_version=DataVersion(rng.randrange(100), 0, 1))
        if rng.random() < 0.5:
            offsets.other_fields["lmqOffsetTable"] = {"%LMQ%x@g": {0: 3}}
        seeds.append(Seed(offsets.to_text().encode()))
        strict = {
            "offsetTable": {key: {str(q): o for q, o in queues.items()} for key, queues in table.items()}
        }
        seeds.append(Seed(json.dumps(strict, ensure_ascii=False).encode()))
    return seeds


def message_id_seeds(rng: random.Random) -> list[Seed]:
    ids = [codec.offset_msg_id(host, rng.randrange(2**40)) for host in HOSTS]
    return [Seed(text.encode()) for text in ids + [text.lower() for text in ids]]


KAFKA_CODECS = ("none", "gzip", "snappy", "lz4", "zstd")


def kafka_records(rng: random.Random, count: int) -> list[kafka_writer.ProducerRecord]:
    return [
        kafka_writer.ProducerRecord(
            None if rng.random() < 0.3 else rng.randbytes(rng.choice((0, 3, 20))),
            None if rng.random() < 0.2 else rng.randbytes(rng.choice((0, 1, 50, 400))),
            tuple(
                (f"h{i}", None if rng.random() < 0.3 else rng.randbytes(4))
                for i in range(rng.choice((0, 0, 2)))
            ),
            1_700_000_000_000 + rng.randrange(10**6),
        )
        for _ in range(count)
    ]


def _kafka_v2_fields(position: int, data: bytes) -> list[tuple[int, int]]:
    """batchLength, lastOffsetDelta, recordsCount, and the first record's length byte (uncompressed)."""
    return [(position + 8, 4), (position + 23, 4), (position + 57, 4), (position + 61, 1)]


def kafka_log_seeds(rng: random.Random) -> list[Seed]:
    seeds = []
    for _ in range(20):
        parts, fields, offset = [], [], rng.randrange(1000)
        for _ in range(rng.randrange(1, 4)):
            position = sum(map(len, parts))
            kind = rng.random()
            if kind < 0.7:
                count = rng.randrange(1, 6)
                part = kafka_writer.encode_batch(
                    offset,
                    kafka_records(rng, count),
                    compression=rng.choice(KAFKA_CODECS),
                    producer_id=rng.choice((-1, 7)),
                    base_sequence=rng.choice((-1, 0, 2**31 - 2)),
                )
                fields += _kafka_v2_fields(position, part)
            elif kind < 0.85:
                count = 1
                marker = kafka_writer.control_record(rng.choice((0, 1)), rng.randrange(10))
                part = kafka_writer.encode_batch(
                    offset, [marker], producer_id=7, transactional=True, control=True
                )
                fields += _kafka_v2_fields(position, part)
            else:
                count = rng.randrange(1, 4)
                magic = rng.choice((0, 1))
                part = kafka_writer.encode_legacy_wrapper(
                    magic, rng.choice(KAFKA_CODECS[1:4]), offset, kafka_records(rng, count)
                )
                fields += [(position + 8, 4), (position + 18 + 8 * magic, 4)]
            parts.append(part)
            offset += count
        seeds.append(Seed(b"".join(parts), tuple(fields)))
    return seeds


def kafka_index_seeds(rng: random.Random) -> list[Seed]:
    seeds = []
    for _ in range(8):
        count = rng.randrange(0, 4)
        entries = b"".join(
            struct.pack(
                ">qhiqiqiq",
                rng.randrange(10**6),
                0,
                rng.randrange(100),
                rng.randrange(10**6),
                0,
                1_700_000_000_000,
                -1,
                -1,
            )
            for _ in range(count)
        )
        body = struct.pack(">i", count) + entries
        snapshot = struct.pack(">hI", 1, __import__("crc32c").crc32c(body)) + body
        seeds.append(Seed(snapshot, ((6, 4),)))
    seeds.append(Seed(b"".join(struct.pack(">ii", 8 * i, 4096 * i) for i in range(1, 6)) + bytes(16)))
    return seeds


def kafka_text_seeds(rng: random.Random) -> list[Seed]:
    return [
        Seed(b"0\n2\nfoo 0 1\n__consumer_offsets 17 42\n"),
        Seed(b"0\n1\n3 1200\n"),
        Seed(b"0\n0\n"),
        Seed(b"version: 0\ntopic_id: v9meXjI1RVKB-NSvF0GXDA"),
        Seed(b"#\n#Mon Sep 02 15:43:32 IST 2024\ncluster.id=rwd2jqiwRaCycLq7mKVHXA\nnode.id=1\nversion=1\n"),
        Seed(b'{"version":0,"brokerEpoch":6}'),
        Seed(
            b'{"clusterId":"","leaderId":1,"leaderEpoch":1,"votedId":-1,"appliedOffset":0,'
            b'"currentVoters":[{"voterId":1}],"data_version":0}'
        ),
    ]


def _kafka_string(text: str) -> bytes:
    return struct.pack(">h", len(text.encode())) + text.encode()


def kafka_group_seeds(rng: random.Random) -> list[Seed]:
    seeds = []
    for version in range(5):
        key = (
            struct.pack(">h", version % 2)
            + _kafka_string("group")
            + _kafka_string("topic")
            + struct.pack(">i", 3)
        )
        meta = _kafka_string("m") if version < 4 else b"\x02m"
        value = struct.pack(">hq", version, 42) + (struct.pack(">i", 1) if version >= 3 else b"") + meta
        value += (
            struct.pack(">q", 1)
            + (struct.pack(">q", 2) if version == 1 else b"")
            + (b"\0" if version >= 4 else b"")
        )
        seeds.append(Seed(struct.pack(">h", len(key)) + key + value, ((0, 2), (4, 2))))
    group_key = struct.pack(">h", 2) + _kafka_string("g")
    member = _kafka_string("m1") + _kafka_string("c") + _kafka_string("h") + struct.pack(">iiii", 1, 2, 0, 0)
    group_value = (
        struct.pack(">h", 1)
        + _kafka_string("consumer")
        + struct.pack(">i", 5)
        + _kafka_string("range")
        + _kafka_string("m1")
        + struct.pack(">i", 1)
        + member
    )
    seeds.append(Seed(struct.pack(">h", len(group_key)) + group_key + group_value, ((0, 2),)))
    seeds.append(Seed(struct.pack(">h", -1) + b"\x01\x02\x00" + rng.randbytes(10)))  # a metadata record
    return seeds


def build_decoders(seed: int, names: Sequence[str] | None = None) -> list[Decoder]:
    """The decoders with their seed inputs, the same for every process given the same seed."""
    rng = random.Random(seed)
    corrupt = (CorruptRecord,)
    decoders = [
        Decoder("record", decode_record_both, corrupt, tuple(record_seeds(rng))),
        Decoder("blank", decode_blank, corrupt, tuple(blank_seeds(rng))),
        Decoder("batch", decode_batch, corrupt, tuple(batch_seeds(rng))),
        Decoder("consume-queue", decode_consume_queue, corrupt, tuple(consume_queue_seeds(rng))),
        Decoder("index-header", decode_index_header, corrupt, tuple(index_file_seeds(rng)[:3])),
        Decoder(
            "index-file", decode_index_file, (CorruptRecord, StoreLayoutError), tuple(index_file_seeds(rng))
        ),
        Decoder("checkpoint", decode_checkpoint_input, corrupt, tuple(checkpoint_seeds(rng))),
        Decoder(
            "consumer-offsets",
            decode_consumer_offsets,
            (ConsumerOffsetsError,),
            tuple(consumer_offsets_seeds(rng)),
            text=True,
        ),
        Decoder("message-id", decode_message_id, (ValueError,), tuple(message_id_seeds(rng)), text=True),
        Decoder("kafka-log", decode_kafka_log, (KafkaDecodeError,), tuple(kafka_log_seeds(rng))),
        Decoder(
            "kafka-index", decode_kafka_index_or_snapshot, (KafkaDecodeError,), tuple(kafka_index_seeds(rng))
        ),
        Decoder(
            "kafka-text", decode_kafka_text, (KafkaDecodeError,), tuple(kafka_text_seeds(rng)), text=True
        ),
        Decoder(
            "kafka-group", decode_kafka_group_or_metadata, (KafkaDecodeError,), tuple(kafka_group_seeds(rng))
        ),
    ]
    if names:
        unknown = set(names) - {decoder.name for decoder in decoders}
        if unknown:
            raise SystemExit(f"unknown decoders: {', '.join(sorted(unknown))}")
        decoders = [decoder for decoder in decoders if decoder.name in names]
    return decoders


# ---- mutation ---------------------------------------------------------------------------------------------

JSON_TOKENS = (
    *(b"{", b"}", b"[", b"]", b":", b",", b'"', b"\\", b"\\u", b"\\ud800", b"-", b"0", b"1e400", b"null"),
    *(b"9" * 5000, b"true", b"[" * 200, b"{1:", b"\x00", b"\xff", b"\xc3", b" ", b"\t", b"\n", b"0x1F"),
)


def edge_value(rng: random.Random, width: int, length: int) -> int:
    """A value for a length or count field: the signed and unsigned edges, sizes near the input's, a small
    count (a chain link, an entry number) or anything."""
    top = 1 << (8 * width)
    edges = (0, 1, top - 1, top // 2 - 1, top // 2)
    near_length = (length, length - 1, length + 1, 2 * length)
    return rng.choice((*edges, *near_length, rng.randrange(64), rng.randrange(top))) % top


def mutate(rng: random.Random, seed: Seed, decoder: Decoder) -> bytes:
    data = bytearray(seed.data)
    for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 4, 8))):
        operation = rng.randrange(10)
        size = len(data)
        if operation == 0 and size:  # flip a bit
            data[rng.randrange(size)] ^= 1 << rng.randrange(8)
        elif operation == 1 and size:  # set a byte
            data[rng.randrange(size)] = rng.choice((0, 0xFF, 0x7F, 0x80, 0x01, rng.randrange(256)))
        elif operation == 2:  # truncate
            del data[rng.randrange(size + 1) :]
        elif operation == 3:  # extend
            data += rng.choice(
                (bytes(rng.choice((1, 8, 20, 100))), rng.randbytes(rng.choice((1, 4, 64, 1000))))
            )
        elif operation in (4, 5) and seed.fields:  # a length or count field set to an edge value
            at, width = rng.choice(seed.fields)
            if at + width <= size:
                data[at : at + width] = edge_value(rng, width, size).to_bytes(width, "big")
        elif operation == 6:  # splice with another seed
            other = rng.choice(decoder.seeds).data
            data[rng.randrange(size + 1) :] = other[rng.randrange(len(other) + 1) :]
        elif operation == 7 and size:  # delete a chunk
            start = rng.randrange(size)
            del data[start : start + rng.choice((1, 4, 20, 100))]
        elif operation == 8 and size:  # repeat a chunk
            start = rng.randrange(size)
            data[start:start] = data[start : start + rng.choice((1, 8, 20, 200))]
        elif decoder.text:  # a token in place of as many characters, or of a random range
            token = rng.choice(JSON_TOKENS)
            start = rng.randrange(size + 1)
            end = start + len(token) if rng.random() < 0.5 else rng.randrange(size + 1)
            data[start:end] = token
        elif size:  # set an aligned int32
            at = rng.randrange(size) & ~3
            data[at : at + 4] = edge_value(rng, 4, size).to_bytes(4, "big")
    return bytes(data)


def input_for(index: int, seed: int, decoders: Sequence[Decoder]) -> tuple[Decoder, bytes]:
    rng = random.Random(seed * 10**12 + index)
    decoder = decoders[index % len(decoders)]
    return decoder, mutate(rng, rng.choice(decoder.seeds), decoder)


# ---- running ----------------------------------------------------------------------------------------------


class InputTimedOut(BaseException):
    """Raised by SIGALRM inside a decoder that ran past HANG_ABORT_S (a BaseException: nothing catches it)."""


def _on_alarm(_signum, _frame):
    raise InputTimedOut


@dataclass
class Finding:
    decoder: str
    index: int
    kind: str  # "undocumented", "hang" or "slow"
    error: str  # exception type, or the duration
    message: str
    where: str
    input_bytes: int


@dataclass
class Tally:
    """One process's counts over a chunk of inputs (merged by the parent)."""

    inputs: Counter = field(default_factory=Counter)
    decoded: Counter = field(default_factory=Counter)
    documented: Counter = field(default_factory=Counter)
    findings: list[Finding] = field(default_factory=list)
    slowest: dict[str, tuple[float, int]] = field(default_factory=dict)
    traced_peak: tuple[int, str, int, int] = (0, "", -1, 0)  # bytes, decoder, index, input size
    max_rss_kib: int = 0
    seconds: float = 0.0

    def merge(self, other: Tally) -> None:
        self.inputs.update(other.inputs)
        self.decoded.update(other.decoded)
        self.documented.update(other.documented)
        self.findings += other.findings
        for name, slowest in other.slowest.items():
            self.slowest[name] = max(self.slowest.get(name, (0.0, -1)), slowest)
        self.traced_peak = max(self.traced_peak, other.traced_peak)
        self.max_rss_kib = max(self.max_rss_kib, other.max_rss_kib)


def _where(error: BaseException) -> str:
    """The innermost frame of the traceback inside this repository: where the error was raised."""
    frames = [
        frame for frame in traceback.extract_tb(error.__traceback__) if frame.filename.startswith(str(REPO))
    ]
    if not frames:
        return "?"
    frame = frames[-1]
    return f"{Path(frame.filename).relative_to(REPO)}:{frame.lineno} {frame.name}"


# Set in the worker processes: SIGALRM there stops a decoder that hangs. Left off in a process that runs
# chunks itself (a test), whose SIGALRM may belong to someone else (pytest-timeout).
_watchdog = False


def run_one(decoder: Decoder, data: bytes, trace: bool) -> tuple[float, BaseException | None, int]:
    """(seconds, the exception or None, traced peak bytes or 0) of one decode."""
    if trace:
        tracemalloc.start()
    if _watchdog:
        signal.setitimer(signal.ITIMER_REAL, HANG_ABORT_S)
    started = time.perf_counter()
    error = None
    try:
        decoder.decode(data)
    except (Exception, InputTimedOut) as raised:
        error = raised
    finally:
        elapsed = time.perf_counter() - started
        if _watchdog:
            signal.setitimer(signal.ITIMER_REAL, 0)
    peak = 0
    if trace:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return elapsed, error, peak


def run_chunk(arguments: tuple[int, int, int, tuple[str, ...] | None]) -> Tally:
    start, stop, seed, names = arguments
    decoders = decoders_for(seed, names)
    tally = Tally()
    began = time.perf_counter()
    for index in range(start, stop):
        decoder, data = input_for(index, seed, decoders)
        elapsed, error, peak = run_one(decoder, data, trace=index % TRACE_EVERY == 0)
        _count(tally, decoder, index, data, elapsed, error, peak)
    tally.seconds = time.perf_counter() - began
    tally.max_rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return tally


def _count(
    tally: Tally,
    decoder: Decoder,
    index: int,
    data: bytes,
    elapsed: float,
    error: BaseException | None,
    peak: int,
) -> None:
    name = decoder.name
    tally.inputs[name] += 1
    if elapsed > tally.slowest.get(name, (0.0, -1))[0]:
        tally.slowest[name] = (elapsed, index)
    tally.traced_peak = max(tally.traced_peak, (peak, name, index, len(data)))
    if isinstance(error, InputTimedOut):
        tally.findings.append(Finding(name, index, "hang", f"over {HANG_ABORT_S:.0f} s", "", "", len(data)))
        return
    if elapsed > SLOW_INPUT_S:
        tally.findings.append(Finding(name, index, "slow", f"{elapsed:.2f} s", "", "", len(data)))
    if error is None:
        tally.decoded[name] += 1
    elif isinstance(error, decoder.documented):
        tally.documented[name] += 1
    else:
        message = str(error)[:200]
        tally.findings.append(
            Finding(name, index, "undocumented", type(error).__name__, message, _where(error), len(data))
        )


@functools.cache
def decoders_for(seed: int, names: tuple[str, ...] | None) -> list[Decoder]:
    """`build_decoders`, once per process and seed (the workers inherit the parent's by fork)."""
    return build_decoders(seed, names)


def _limit_memory(limit_mib: int) -> None:
    """Address space of this process capped at its size now + limit_mib: a decoder that allocates what a
    length field says, beyond the input, gets MemoryError instead of the machine's memory."""
    with open("/proc/self/statm") as statm:
        size_bytes = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    limit = size_bytes + limit_mib * MiB
    resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))


def _worker_start(limit_mib: int) -> None:
    global _watchdog
    signal.signal(signal.SIGALRM, _on_alarm)
    _watchdog = True
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and ends the pool
    _limit_memory(limit_mib)


def fuzz(count: int, seed: int, jobs: int, names: tuple[str, ...] | None, limit_mib: int, progress) -> Tally:
    chunks = [
        (start, min(start + CHUNK_INPUTS, count), seed, names) for start in range(0, count, CHUNK_INPUTS)
    ]
    total = Tally()
    decoders_for(seed, names)  # built here, before the forks (unknown names fail early)
    context = multiprocessing.get_context("fork")
    with context.Pool(jobs, initializer=_worker_start, initargs=(limit_mib,)) as pool:
        for tally in pool.imap_unordered(run_chunk, chunks):
            total.merge(tally)
            progress(sum(total.inputs.values()), count)
    total.max_rss_kib = max(total.max_rss_kib, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    return total


# ---- reporting ---------------------------------------------------------------------------------------------


def summary(total: Tally, decoders: Sequence[Decoder], seconds: float, seed: int, jobs: int) -> dict:
    undocumented = [finding for finding in total.findings if finding.kind == "undocumented"]
    hangs = [finding for finding in total.findings if finding.kind in ("hang", "slow")]
    kinds = Counter((f.decoder, f.error, f.where) for f in undocumented)
    examples: dict[tuple, list[Finding]] = {}
    for finding in sorted(undocumented, key=lambda f: f.index):
        examples.setdefault((finding.decoder, finding.error, finding.where), []).append(finding)
    peak_bytes, peak_decoder, peak_index, peak_input = total.traced_peak
    slowest_decoder, (slowest_s, slowest_index) = max(total.slowest.items(), key=lambda item: item[1])
    return {
        "seed": seed,
        "inputs": sum(total.inputs.values()),
        "processes": jobs,
        "elapsed_s": round(seconds, 1),
        "decoders": [
            {
                "name": decoder.name,
                "documented_errors": [error.__name__ for error in decoder.documented],
                "inputs": total.inputs[decoder.name],
                "decoded": total.decoded[decoder.name],
                "documented_raised": total.documented[decoder.name],
                "undocumented_raised": sum(1 for f in undocumented if f.decoder == decoder.name),
                "slowest_ms": round(total.slowest.get(decoder.name, (0.0, -1))[0] * 1000, 2),
            }
            for decoder in decoders
        ],
        "undocumented_exceptions": len(undocumented),
        "undocumented_kinds": [
            {
                "decoder": decoder,
                "error": error,
                "where": where,
                "count": count,
                "message": examples[(decoder, error, where)][0].message,
                "inputs": [f.index for f in examples[(decoder, error, where)][:FINDINGS_KEPT_PER_KIND]],
            }
            for (decoder, error, where), count in kinds.most_common()
        ],
        "hangs": len(hangs),
        "hang_inputs": [{"decoder": f.decoder, "input": f.index, "took": f.error} for f in hangs],
        "slowest_input": {
            "decoder": slowest_decoder,
            "input": slowest_index,
            "ms": round(slowest_s * 1000, 2),
        },
        "max_rss_mib": round(total.max_rss_kib / 1024, 1),
        "largest_traced_allocation": {
            "bytes": peak_bytes,
            "decoder": peak_decoder,
            "input": peak_index,
            "input_bytes": peak_input,
            "sampled_every": TRACE_EVERY,
        },
    }


def print_summary(report: dict) -> None:
    print(
        f"fuzz_decoders: seed {report['seed']}, {report['inputs']:,} inputs, {report['processes']} "
        f"processes, {report['elapsed_s']:.1f} s ({report['inputs'] / max(report['elapsed_s'], 1e-9):,.0f} "
        "inputs/s)"
    )
    print(
        f"{'decoder':<17}{'inputs':>10}{'decoded':>10}{'documented':>12}{'undocumented':>14}{'slowest':>11}"
    )
    for row in report["decoders"]:
        print(
            f"{row['name']:<17}{row['inputs']:>10,}{row['decoded']:>10,}{row['documented_raised']:>12,}"
            f"{row['undocumented_raised']:>14,}{row['slowest_ms']:>9.2f}ms"
        )
    print(f"undocumented exceptions: {report['undocumented_exceptions']}")
    for kind in report["undocumented_kinds"]:
        print(
            f"  {kind['count']:,} x {kind['decoder']}: {kind['error']} at {kind['where']}: {kind['message']} "
            f"(inputs {', '.join(map(str, kind['inputs']))})"
        )
    print(f"hangs (inputs over {SLOW_INPUT_S:.0f} s): {report['hangs']}")
    for hang in report["hang_inputs"][:20]:
        print(f"  {hang['decoder']} input {hang['input']}: {hang['took']}")
    slowest, traced = report["slowest_input"], report["largest_traced_allocation"]
    print(f"slowest input: {slowest['decoder']} #{slowest['input']}, {slowest['ms']:.2f} ms")
    print(
        f"peak memory: {report['max_rss_mib']:.1f} MiB max RSS per process; largest allocation by one input "
        f"(every {traced['sampled_every']}th traced): {traced['bytes']:,} B, {traced['decoder']} "
        f"#{traced['input']} ({traced['input_bytes']:,} B in)"
    )


def write_inputs(report: dict, seed: int, decoders: Sequence[Decoder], directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    indexes = [index for kind in report["undocumented_kinds"] for index in kind["inputs"]]
    indexes += [hang["input"] for hang in report["hang_inputs"]]
    for index in indexes:
        decoder, data = input_for(index, seed, decoders)
        (directory / f"{decoder.name}-{index}.bin").write_bytes(data)
    print(f"wrote {len(indexes)} inputs to {directory}", file=sys.stderr)


def replay(index: int, seed: int, decoders: Sequence[Decoder]) -> int:
    decoder, data = input_for(index, seed, decoders)
    print(f"input {index}: decoder {decoder.name}, {len(data)} bytes: {data[:200]!r}", file=sys.stderr)
    try:
        decoder.decode(data)
    except decoder.documented as error:
        print(f"documented {type(error).__name__}: {error}")
        return 0
    except Exception:
        traceback.print_exc()
        return 1
    print("decoded")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=DEFAULT_COUNT, help="inputs in all (default 1,000,000)")
    parser.add_argument("--seed", type=int, default=None, help="default: a random one, printed")
    parser.add_argument(
        "--jobs", type=int, default=os.cpu_count() or 1, help="processes (default: one per CPU)"
    )
    parser.add_argument("--decoders", default=None, help="comma-separated subset (default: all)")
    parser.add_argument(
        "--memory-limit-mib", type=int, default=1024, help="address space each process may add"
    )
    parser.add_argument("--out", type=Path, default=None, help="write each finding's input here")
    parser.add_argument(
        "--replay", type=int, default=None, metavar="N", help="run input N again, with traceback"
    )
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON document")
    options = parser.parse_args(argv)
    seed = random.SystemRandom().randrange(2**31) if options.seed is None else options.seed
    names = tuple(options.decoders.split(",")) if options.decoders else None
    decoders = decoders_for(seed, names)
    if options.replay is not None:
        return replay(options.replay, seed, decoders)
    print(f"fuzz_decoders: seed {seed} (--seed {seed} repeats this run)", file=sys.stderr)

    def progress(done: int, count: int) -> None:
        if sys.stderr.isatty():
            print(f"\r{done:,}/{count:,}", end="", file=sys.stderr, flush=True)

    started = time.perf_counter()
    total = fuzz(options.count, seed, options.jobs, names, options.memory_limit_mib, progress)
    if sys.stderr.isatty():
        print(file=sys.stderr)
    report = summary(total, decoders, time.perf_counter() - started, seed, options.jobs)
    if options.out is not None:
        write_inputs(report, seed, decoders, options.out)
    if options.json:
        json.dump(report, sys.stdout, indent=2)
        print()
    else:
        print_summary(report)
    return 1 if report["undocumented_exceptions"] or report["hangs"] else 0


if __name__ == "__main__":
    sys.exit(main())
