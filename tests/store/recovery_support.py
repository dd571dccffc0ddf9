"""Stores for the recovery tests (test_recovery, test_recovery_dry_run): written by the project's
MessageStore, damaged the ways a crash or a disk damages them, and read back through the read-only views."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from store import codec
from store.commitlog_scan import ScannedRecord, scan_commitlog
from store.config import CQ_STORE_UNIT_SIZE, FlushDiskType, StoreConfig
from store.consume_queue_format import iter_entries
from store.inspection.rocketmq.verify import verify_store
from store.layout import discover_store
from store.message_store import MessageStore

SEGMENT = 64 * 1024
SMALL = StoreConfig(
    mapped_file_size_commitlog=SEGMENT,
    consume_queue_entries_per_file=128,
    max_hash_slot_num=256,
    max_index_num=4096,
    flush_interval_commitlog_ms=50,
)
TOPIC = "Orders"
QUEUES = 4


def message(number: int) -> codec.Message:
    body = f"message-{number}-".encode().ljust(100 + number % 37, b".")
    return codec.Message(
        TOPIC,
        body=body,
        queue_id=number % QUEUES,
        properties={codec.PROPERTY_KEYS: f"key-{number}", codec.PROPERTY_TAGS: f"Tag{number % 3}"},
    )


def clean_store(root: Path, count: int, config: StoreConfig = SMALL) -> None:
    with MessageStore(root, config) as store:
        for number in range(count):
            store.put_message(message(number))


def recover(root: Path, config: StoreConfig = SMALL):
    with MessageStore(root, config) as store:
        return store.recovery


def records(root: Path) -> list[ScannedRecord]:
    return [e for e in scan_commitlog(discover_store(root).commitlog) if isinstance(e, ScannedRecord)]


def queue_entries(root: Path, queue_id: int) -> list[tuple[int, int, int]]:
    cq = discover_store(root).consume_queue(TOPIC, queue_id)
    return [(e.physical_offset, e.size_bytes, e.tags_code) for e in iter_entries(cq.queue)]


def expected_entries(root: Path, queue_id: int) -> list[tuple[int, int, int]]:
    """What the queue must hold: one entry per record of the queue, in log order (ground truth: the log)."""
    return [
        (e.physical_offset, e.record.total_size, e.record.tags_code)
        for e in records(root)
        if e.record.queue_id == queue_id
    ]


def cq_file_and_position(root: Path, queue_id: int, queue_offset: int) -> tuple[Path, int]:
    cq = discover_store(root).consume_queue(TOPIC, queue_id)
    segment = cq.queue.segment_for(queue_offset * CQ_STORE_UNIT_SIZE)
    return segment.path, queue_offset * CQ_STORE_UNIT_SIZE - segment.file_from_offset


def flip(path: Path, position: int, mask: int = 0x01) -> None:
    with open(path, "r+b") as handle:
        handle.seek(position)
        value = handle.read(1)[0]
        handle.seek(position)
        handle.write(bytes([value ^ mask]))


def zero_from(path: Path, position: int) -> None:
    with open(path, "r+b") as handle:
        handle.seek(position)
        handle.write(bytes(os.path.getsize(path) - position))


def flip_body_of(root: Path, event: ScannedRecord) -> Path:
    segment = discover_store(root).commitlog.segment_for(event.physical_offset)
    flip(segment.path, event.physical_offset - segment.file_from_offset + event.record.total_size // 2)
    return segment.path


def verify_ok(root: Path) -> None:
    report = verify_store(root)
    assert report.ok, report.findings


# ---- B1: the index after a crash ------------------------------------------------------------------------

# Puts keyed messages with store times 10 ms apart (a fake clock: the ~6 s the run took, without the
# wait), flushes everything the way the periodic services would, and dies of SIGKILL.
PUT_AND_DIE = textwrap.dedent(
    """
    import itertools, json, os, signal, sys
    from pathlib import Path
    from store.codec import Message
    from store.config import StoreConfig
    from store.message_store import MessageStore
    config = StoreConfig(**json.loads(sys.argv[2]))
    store = MessageStore(Path(sys.argv[1]), config).start()
    clock = itertools.count(1_700_000_000_000, 10)
    store.commit_log._clock_ms = lambda: next(clock)  # the CommitLog's store-time source
    for number in range(int(sys.argv[3])):
        body = b"b" * (200 + number % 50)
        store.put_message(Message("Keyed", body=body, properties={"KEYS": "k%d" % number}))
    store.flush()  # log, queues, index and checkpoint as durable as the services make them
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def put_and_die(root: Path, index_entries: int, count: int) -> StoreConfig:
    """`count` keyed messages put by a SYNC-flush store that then dies of SIGKILL; the store's config."""
    config = dataclasses.replace(SMALL, flush_disk_type=FlushDiskType.SYNC, max_index_num=index_entries)
    settings = {
        "mapped_file_size_commitlog": config.mapped_file_size_commitlog,
        "consume_queue_entries_per_file": config.consume_queue_entries_per_file,
        "max_hash_slot_num": config.max_hash_slot_num,
        "max_index_num": config.max_index_num,
        "flush_disk_type": "sync",
    }
    child = subprocess.run(
        [sys.executable, "-c", PUT_AND_DIE, str(root), json.dumps(settings), str(count)], check=False
    )
    assert child.returncode == -signal.SIGKILL
    return config


def lose_queue_tail_before_the_scan_start(root: Path) -> tuple[list[tuple[int, int, int]], int]:
    """2,000 messages; then every entry of queue 1 from the third-last segment on is lost: their records
    precede RocketMQ's scan start. Returns the queue's entries as they must be and the first one lost."""
    clean_store(root, 2000)
    segments = discover_store(root).commitlog.segments
    assert len(segments) >= 5
    expected = expected_entries(root, 1)
    lost_from = next(n for n, entry in enumerate(expected) if entry[0] >= segments[-3].file_from_offset)
    path, position = cq_file_and_position(root, 1, lost_from)
    zero_from(path, position)
    for later in sorted(path.parent.iterdir()):
        if later.name > path.name:
            later.unlink()
    return expected, lost_from


# ---- queues that end in different segments ---------------------------------------------------------------

OLD_TOPIC = "Old"  # written first, then never again: its queues' newest entries lie segments back


def two_topics_message(number: int, old_messages: int) -> codec.Message:
    """The first `old_messages` go to OLD_TOPIC's two queues, the others round TOPIC's four."""
    if number < old_messages:
        return codec.Message(OLD_TOPIC, body=b"o" * (120 + number % 17), queue_id=number % 2)
    return message(number)


def clean_store_with_an_old_topic(root: Path, old_messages: int, count: int) -> None:
    with MessageStore(root, SMALL) as store:
        for number in range(count):
            store.put_message(two_topics_message(number, old_messages))


# Puts messages with store times 10 ms apart (OLD_TOPIC's first), flushes everything, puts more that no flush
# makes durable, and dies of SIGKILL. The periodic services are slowed so that only store.flush() writes the
# checkpoint: the records put after it are the unflushed tail.
PUT_FLUSH_PUT_AND_DIE = textwrap.dedent(
    """
    import itertools, json, signal, os, sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[5])
    from recovery_support import SMALL, two_topics_message
    import dataclasses
    from store.message_store import MessageStore
    slow = 600_000
    config = dataclasses.replace(
        SMALL,
        flush_interval_commitlog_ms=slow,
        flush_interval_consume_queue_ms=slow,
        checkpoint_flush_interval_ms=slow,
    )
    store = MessageStore(Path(sys.argv[1]), config).start()
    clock = itertools.count(1_700_000_000_000, 10)
    store.commit_log._clock_ms = lambda: next(clock)  # the CommitLog's store-time source
    old, flushed, unflushed = (int(argument) for argument in sys.argv[2:5])
    for number in range(flushed):
        store.put_message(two_topics_message(number, old))
    store.flush()
    for number in range(flushed, flushed + unflushed):
        store.put_message(two_topics_message(number, old))
    with store.dispatcher.paused:  # the queues name the unflushed records too (in the page cache)
        store.dispatcher.dispatch_until()
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def put_flush_put_and_die(root: Path, old_messages: int, flushed: int, unflushed: int) -> None:
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            PUT_FLUSH_PUT_AND_DIE,
            str(root),
            str(old_messages),
            str(flushed),
            str(unflushed),
            str(Path(__file__).parent),
        ],
        check=False,
    )
    assert child.returncode == -signal.SIGKILL
