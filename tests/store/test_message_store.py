"""The writable store end to end: puts, rolls with BLANK records, dispatch to consume queues and the index,
restarts, recovery after damage, durability under SIGKILL with SYNC flush, and a full disk."""

from __future__ import annotations

import json
import os
import random
import signal
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from store import codec
from store.commitlog_scan import ScannedRecord, SegmentEnd, SegmentEndReason, scan_commitlog
from store.config import FlushDiskType, StoreConfig
from store.errors import StoreError
from store.java_checksums import tags_code
from store.layout import discover_store, offset_to_file_name
from store.message_store import GetStatus, MessageStore
from store.recovery import RecoveryMode, plan_recovery

SMALL = StoreConfig(
    mapped_file_size_commitlog=64 * 1024,
    consume_queue_entries_per_file=128,
    max_hash_slot_num=64,
    max_index_num=256,
    flush_interval_commitlog_ms=50,
)


def message(number: int, queue_id: int = 0, size: int = 100) -> codec.Message:
    body = f"message-{number}-".encode().ljust(size, b".")
    return codec.Message(
        "Orders", body=body, queue_id=queue_id, properties={"KEYS": f"key-{number}", "TAGS": "TagA"}
    )


def fill(store: MessageStore, count: int, queues: int = 1) -> list:
    results = [store.put_message(message(n, n % queues)) for n in range(count)]
    assert store.wait_dispatched(store.commit_log.max_offset, 10)
    return results


def test_puts_roll_segments_with_a_blank_record_and_reads_continue_across_them(tmp_path: Path):
    with MessageStore(tmp_path, SMALL) as store:
        results = fill(store, 1200, queues=3)
        segments = store.commit_log.mapped_file_queue.mapped_files
        assert len(segments) > 3
        got = store.get_messages("Orders", 1, 0, 1000)
        assert got.status is GetStatus.FOUND and len(got.messages) == 400
        numbers = [codec.decode_record(m.data).body.tobytes().split(b"-")[1] for m in got.messages]
        assert numbers == [str(n).encode() for n in range(1, 1200, 3)]
    assert [r.queue_offset for r in results[:6]] == [0, 0, 0, 1, 1, 1]
    events = list(scan_commitlog(discover_store(tmp_path).commitlog))
    blanks = [e for e in events if isinstance(e, SegmentEnd) and e.reason is SegmentEndReason.BLANK]
    assert len(blanks) == len(segments) - 1
    for blank in blanks:  # each fills its segment to the end, and the next record starts the next segment
        assert (blank.physical_offset + blank.blank_bytes) % SMALL.mapped_file_size_commitlog == 0
    assert sum(isinstance(e, ScannedRecord) for e in events) == 1200


def test_a_clean_restart_recovers_normally_and_continues_the_queue_offsets(tmp_path: Path):
    with MessageStore(tmp_path, SMALL) as store:
        fill(store, 300, queues=2)
        end = store.commit_log.max_offset
    assert not (tmp_path / "abort").exists()
    with MessageStore(tmp_path, SMALL) as store:
        assert store.recovery.mode is RecoveryMode.NORMAL
        assert store.recovery.process_offset == end
        assert store.put_message(message(300, 0)).queue_offset == 150
        assert [r.queue_offset for r in store.query_message("Orders", "key-299")] == [149]


def test_a_held_lock_refuses_a_second_store(tmp_path: Path):
    with MessageStore(tmp_path, SMALL), pytest.raises(StoreError, match="locked"):
        MessageStore(tmp_path, SMALL).start()


def _last_segment(root: Path) -> Path:
    return sorted((root / "commitlog").iterdir())[-1]


def _record_starts(root: Path) -> list[tuple[int, int]]:
    return [
        (e.physical_offset, e.record.total_size)
        for e in scan_commitlog(discover_store(root).commitlog)
        if isinstance(e, ScannedRecord)
    ]


def test_a_truncated_last_record_is_cut_and_the_queues_follow(tmp_path: Path):
    with MessageStore(tmp_path, SMALL) as store:
        fill(store, 500)
    starts = _record_starts(tmp_path)
    victim_offset, victim_size = starts[-1]
    segment = _last_segment(tmp_path)
    position = victim_offset - int(segment.name)
    with open(segment, "r+b") as handle:  # the tail of the last record never reached the disk
        handle.seek(position + victim_size // 2)
        handle.write(b"\0" * (victim_size - victim_size // 2))
    (tmp_path / "abort").write_text("12345")  # and the broker died
    assert plan_recovery(discover_store(tmp_path)).process_offset == victim_offset
    with MessageStore(tmp_path, SMALL) as store:
        assert store.recovery.mode is RecoveryMode.ABNORMAL
        assert store.commit_log.max_offset == victim_offset
        queue = store.consume_queues.find("Orders", 0)
        assert queue.max_offset_in_queue == 499
        assert store.put_message(message(999)).physical_offset == victim_offset
        assert store.put_message(message(1000)).queue_offset == 500


def test_a_flipped_body_byte_fails_its_crc_and_ends_the_log_there(tmp_path: Path):
    with MessageStore(tmp_path, SMALL) as store:
        fill(store, 400)
    starts = _record_starts(tmp_path)
    victim_offset, _size = starts[-10]
    segment = _last_segment(tmp_path)
    with open(segment, "r+b") as handle:
        handle.seek(victim_offset - int(segment.name) + 90)  # inside the body
        byte = handle.read(1)
        handle.seek(-1, os.SEEK_CUR)
        handle.write(bytes([byte[0] ^ 0x40]))
    plan = plan_recovery(discover_store(tmp_path))
    assert plan.process_offset == victim_offset and "BODYCRC" in plan.stop_reason
    assert plan.queue_truncations and plan.queue_truncations[0].entries_dropped == 10
    with MessageStore(tmp_path, SMALL) as store:
        assert store.consume_queues.find("Orders", 0).max_offset_in_queue == 390
        assert store.get_messages("Orders", 0, 389, 5).next_begin_offset == 390


def test_abnormal_recovery_rebuilds_consume_queues_lost_with_the_crash(tmp_path: Path):
    with MessageStore(tmp_path, SMALL) as store:
        fill(store, 300)
    for entry in (tmp_path / "consumequeue" / "Orders" / "0").iterdir():
        entry.unlink()  # the queue files never reached the disk
    (tmp_path / "abort").write_text("12345")
    with MessageStore(tmp_path, SMALL) as store:
        got = store.get_messages("Orders", 0, 0, 500)
        assert got.max_offset == 300 and len(got.messages) == 300


# ---- durability under SIGKILL --------------------------------------------------------------------------

PRODUCER = textwrap.dedent(
    """
    import sys, json
    from pathlib import Path
    from store.codec import Message
    from store.commitlog import PutStatus
    from store.config import StoreConfig, FlushDiskType
    from store.message_store import MessageStore
    config = StoreConfig(**json.loads(sys.argv[2]))
    store = MessageStore(Path(sys.argv[1]), config).start()
    first = int(sys.argv[3])
    for number in range(first, first + 1_000_000):
        body = ("acked-%d-" % number).encode().ljust(64 + number % 300, b"#")
        result = store.put_message(Message("Durable", body=body, properties={"KEYS": "n%d" % number}))
        if result.status is PutStatus.PUT_OK:
            sys.stdout.write("%d %d\\n" % (number, result.physical_offset))
            sys.stdout.flush()
    """
)


def _produce_until_killed(root: Path, first: int, run_s: float) -> list[tuple[int, int]]:
    settings = {
        "mapped_file_size_commitlog": 256 * 1024,
        "consume_queue_entries_per_file": 512,
        "max_hash_slot_num": 256,
        "max_index_num": 1024,
        "flush_disk_type": FlushDiskType.SYNC.value,
    }
    child = subprocess.Popen(
        [sys.executable, "-c", PRODUCER, str(root), json.dumps(settings), str(first)],
        stdout=subprocess.PIPE,
        text=True,
    )
    # Timed from its 30th acknowledgement, not from its spawn: a loaded machine may take seconds to start it.
    early = [child.stdout.readline() for _ in range(30)]
    time.sleep(run_s)
    child.send_signal(signal.SIGKILL)
    output, _ = child.communicate()
    assert child.returncode == -signal.SIGKILL
    lines = "".join([*early, output]).splitlines()
    return [tuple(map(int, line.split())) for line in lines if line.count(" ") == 1]


def test_sync_flush_keeps_every_acknowledged_message_through_sigkill(tmp_path: Path):
    rng = random.Random(20261122)
    acked: dict[int, int] = {}
    first = 0
    config = StoreConfig(
        mapped_file_size_commitlog=256 * 1024,
        consume_queue_entries_per_file=512,
        max_hash_slot_num=256,
        max_index_num=1024,
        flush_disk_type=FlushDiskType.SYNC,
    )
    for _round in range(4):
        run = _produce_until_killed(tmp_path, first, rng.uniform(0.2, 1.0))
        assert run, "the producer acknowledged nothing before it was killed"
        acked.update(run)
        first = max(acked) + 1
        # Drop what is only in the page cache: only what fsync/msync made durable may survive.
        subprocess.run(["sync"], check=True)
        with MessageStore(tmp_path, config) as store:
            assert store.recovery.mode is RecoveryMode.ABNORMAL
            for number, offset in acked.items():
                record = store.look_message_by_offset(offset)
                assert record.body.tobytes().startswith(f"acked-{number}-".encode()), number
            queue = store.consume_queues.find("Durable", 0)
            assert queue.max_offset_in_queue >= len(acked)
    assert len(acked) >= 4 * 30  # each round is timed from its 30th acknowledgement


# ---- a full disk ------------------------------------------------------------------------------------


def test_a_full_disk_is_a_clean_error_and_keeps_what_was_written(tiny_filesystem: Path):
    config = StoreConfig(
        mapped_file_size_commitlog=128 * 1024,
        consume_queue_entries_per_file=64,
        max_hash_slot_num=16,
        max_index_num=64,
    )
    written = []
    with MessageStore(tiny_filesystem, config) as store:
        with pytest.raises(StoreError) as caught:
            for number in range(100_000):
                written.append(store.put_message(message(number)).physical_offset)
        assert "No space" in str(caught.value) or "space" in str(caught.value).lower()
        for number, offset in enumerate(written):
            assert (
                store.look_message_by_offset(offset).body.tobytes().startswith(f"message-{number}-".encode())
            )
    assert len(written) > 100
    assert offset_to_file_name(0) in os.listdir(tiny_filesystem / "commitlog")


def test_a_message_over_the_maximum_size_is_refused(tmp_path: Path):
    config = StoreConfig(mapped_file_size_commitlog=64 * 1024, max_message_body_size=1000)
    with MessageStore(tmp_path, config) as store, pytest.raises(codec.MessageTooLarge, match="exceeds"):
        store.put_message(codec.Message("T", body=b"x" * 1001))


def test_a_batch_lands_in_one_segment_with_consecutive_queue_offsets(tmp_path: Path):
    with MessageStore(tmp_path, SMALL) as store:
        fill(store, 250)
        batch = [message(1000 + n) for n in range(50)]
        result = store.put_messages(batch)
        assert result.message_count == 50 and result.queue_offset == 250
        start = result.physical_offset
        assert start // SMALL.mapped_file_size_commitlog == (start + result.wrote_bytes - 1) // (
            SMALL.mapped_file_size_commitlog
        )
        assert store.wait_dispatched(store.commit_log.max_offset, 5)
        got = store.get_messages("Orders", 0, 250, 100)
        assert [m.queue_offset for m in got.messages] == list(range(250, 300))


def test_the_cq_entry_bytes_match_the_reference_layout(tmp_path: Path):
    with MessageStore(tmp_path, SMALL) as store:
        first = store.put_message(message(0))
        store.wait_dispatched(store.commit_log.max_offset, 5)
    data = (tmp_path / "consumequeue" / "Orders" / "0" / offset_to_file_name(0)).read_bytes()[:20]
    assert data == struct.pack(">qiq", 0, first.wrote_bytes, tags_code("TagA"))


def test_messages_left_after_retention_stay_readable_across_a_restart(tmp_path: Path):
    with MessageStore(tmp_path, SMALL) as store:
        fill(store, 1500)
        old = time.time() - 100 * 3600
        for segment in (tmp_path / "commitlog").iterdir():
            os.utime(segment, (old, old))
        report = store.clean()
        assert report.deletions
        minimum = store.consume_queues.find("Orders", 0).min_offset_in_queue
        assert 0 < minimum < 1500
        assert store.get_messages("Orders", 0, 0, 5).status is GetStatus.OFFSET_TOO_SMALL
    with MessageStore(tmp_path, SMALL) as store:
        queue = store.consume_queues.find("Orders", 0)
        assert queue.min_offset_in_queue == minimum and queue.max_offset_in_queue == 1500
        got = store.get_messages("Orders", 0, minimum, 2000)
        assert [m.queue_offset for m in got.messages] == list(range(minimum, 1500))


@pytest.mark.parametrize("flush", [FlushDiskType.ASYNC, FlushDiskType.SYNC])
def test_the_transient_store_pool_path_commits_flushes_and_recovers(tmp_path: Path, flush: FlushDiskType):
    import dataclasses

    config = dataclasses.replace(
        SMALL, transient_store_pool_enable=True, transient_store_pool_size=3, flush_disk_type=flush
    )
    with MessageStore(tmp_path, config) as store:
        results = fill(store, 700)  # rolls segments: pool buffers are committed, fdatasync'd and returned
        assert all(r.status.value == "PUT_OK" for r in results)
        end = results[-1].physical_offset + results[-1].wrote_bytes  # shutdown commits what the pool holds
    with MessageStore(tmp_path, config) as store:
        assert store.recovery.process_offset == end
        got = store.get_messages("Orders", 0, 0, 1000)
        assert [m.queue_offset for m in got.messages] == list(range(700))
