"""Recovery never hides an acknowledged message: the index after a crash, the consume queues after a cut or
a lost tail, and nothing after a cut served again. Each store is written by the project's MessageStore and
checked through the read-only views (`store.inspection`), the way `mqinspect store cq/query/verify` see it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from recovery_support import (
    QUEUES,
    SMALL,
    TOPIC,
    clean_store,
    cq_file_and_position,
    expected_entries,
    flip,
    flip_body_of,
    lose_queue_tail_before_the_scan_start,
    message,
    put_and_die,
    queue_entries,
    records,
    recover,
    verify_ok,
    zero_from,
)

from store.checkpoint import create_abort_file
from store.dispatch import Dispatcher
from store.inspection.rocketmq.query import query_by_key
from store.inspection.rocketmq.verify import verify_store
from store.layout import discover_store
from store.message_store import MessageStore
from store.recovery import RecoveryMode, plan_recovery
from store.safe_read import PreadFile


@pytest.mark.parametrize("index_entries", [4096, 256], ids=["one-index-file", "index-files-roll"])
def test_after_a_crash_every_acknowledged_keyed_message_is_found_by_key(tmp_path: Path, index_entries: int):
    count = 600  # 6 s of store time over five segments
    config = put_and_die(tmp_path, index_entries, count)
    assert len(discover_store(tmp_path).commitlog.segments) >= 5
    with MessageStore(tmp_path, config) as store:
        assert store.recovery.mode is RecoveryMode.ABNORMAL
        missing = [n for n in range(count) if len(store.query_message("Keyed", f"k{n}")) != 1]
    assert missing == []
    for key in ("k0", "k300", f"k{count - 1}"):  # and the read-only query, as `store query --key` runs it
        assert len(query_by_key(tmp_path, key, topic=None, begin_ms=None, end_ms=None,
                                        max_hits=64, include_body=False).hits) == 1  # fmt: skip
    verify_ok(tmp_path)


# ---- B2: a cut removes what follows it ------------------------------------------------------------------


def test_a_cut_removes_the_queue_entries_and_the_bytes_after_it(tmp_path: Path):
    clean_store(tmp_path, 800)
    victim = records(tmp_path)[-25]  # in the last segment, which recovery re-reads
    segment = flip_body_of(tmp_path, victim)
    plan = recover(tmp_path)
    assert plan.process_offset == victim.physical_offset and "BODYCRC" in plan.stop_reason
    for queue_id in range(QUEUES):
        kept = queue_entries(tmp_path, queue_id)
        assert kept == expected_entries(tmp_path, queue_id)  # the read-only view: nothing past the cut
        assert all(offset < victim.physical_offset for offset, _size, _tags in kept)
        path, position = cq_file_and_position(tmp_path, queue_id, len(kept))
        with PreadFile(path) as file:  # the cut entries are gone from the file, not just skipped
            assert file.end_of_nonzero_data() <= position
    with PreadFile(segment) as file:
        assert file.end_of_nonzero_data() == victim.physical_offset - int(segment.name)
    verify_ok(tmp_path)


def test_records_after_a_cut_never_come_back(tmp_path: Path):
    clean_store(tmp_path, 800)
    victim = records(tmp_path)[-25]
    follower = records(tmp_path)[-24]
    flip_body_of(tmp_path, victim)
    recover(tmp_path)
    with MessageStore(tmp_path, SMALL) as store:
        # A record of the victim's size ends exactly where the old next record began...
        rewritten = store.put_message(message(799 - 24))
        assert rewritten.physical_offset + rewritten.wrote_bytes == follower.physical_offset
    create_abort_file(tmp_path)  # ...and the broker crashes
    plan = plan_recovery(discover_store(tmp_path))
    assert plan.process_offset == follower.physical_offset, "the records the cut removed came back"
    assert recover(tmp_path).process_offset == follower.physical_offset
    verify_ok(tmp_path)


# ---- B3: recovery rebuilds what is missing --------------------------------------------------------------


def test_normal_recovery_rebuilds_a_queue_whose_tail_was_lost(tmp_path: Path):
    clean_store(tmp_path, 800)
    expected = expected_entries(tmp_path, 2)
    path, position = cq_file_and_position(tmp_path, 2, len(expected) - 40)
    zero_from(path, position)  # the last 40 entries of queue 2 are gone; the other queues are whole
    plan = recover(tmp_path)
    assert queue_entries(tmp_path, 2) == expected
    assert plan.mode is RecoveryMode.NORMAL and plan.scans == 1
    with MessageStore(tmp_path, SMALL) as store:
        got = store.get_messages(TOPIC, 2, 0, 1000)
        assert [found.physical_offset for found in got.messages] == [entry[0] for entry in expected]
    verify_ok(tmp_path)


def test_a_lost_queue_tail_whose_records_lie_before_the_scan_start_is_rebuilt(tmp_path: Path):
    expected, lost_from = lose_queue_tail_before_the_scan_start(tmp_path)
    plan = recover(tmp_path)
    assert queue_entries(tmp_path, 1) == expected
    assert plan.scans == 2 and plan.start_offset <= expected[lost_from][0]
    verify_ok(tmp_path)


@pytest.mark.parametrize(
    ("field", "position", "mask"), [("offset", 7, 0x10), ("size", 11, 0x02), ("tags", 19, 0x01)]
)
def test_a_damaged_queue_entry_is_cut_and_rebuilt(tmp_path: Path, field: str, position: int, mask: int):
    clean_store(tmp_path, 800)
    expected = expected_entries(tmp_path, 3)
    damaged = len(expected) - 10
    path, at = cq_file_and_position(tmp_path, 3, damaged)
    flip(path, at + position, mask)
    assert not verify_store(tmp_path).ok
    plan = recover(tmp_path)
    assert queue_entries(tmp_path, 3) == expected
    [truncation] = plan.queue_truncations
    assert (truncation.queue_id, truncation.end_queue_offset) == (3, damaged), truncation
    verify_ok(tmp_path)


def test_an_interrupted_recovery_is_redone_as_after_a_crash(tmp_path: Path, monkeypatch):
    clean_store(tmp_path, 300)

    def die(*_args, **_kwargs):
        raise KeyboardInterrupt  # stands for a SIGKILL halfway through applying the plan

    monkeypatch.setattr(Dispatcher, "dispatch_until", die)
    with pytest.raises(KeyboardInterrupt):
        MessageStore(tmp_path, SMALL).start()
    monkeypatch.undo()
    assert (tmp_path / "abort").exists(), "changes began without the abort file that makes them redone"
    assert recover(tmp_path).mode is RecoveryMode.ABNORMAL
    verify_ok(tmp_path)


# ---- the checkpoint covers only what is durable ---------------------------------------------------------


def test_the_checkpoint_logics_time_covers_only_flushed_queue_entries(tmp_path: Path):
    config = dataclasses.replace(SMALL, flush_interval_consume_queue_ms=3_600_000)  # no periodic flush
    with MessageStore(tmp_path, config) as store:
        results = [store.put_message(message(n)) for n in range(50)]
        assert store.wait_dispatched(store.commit_log.max_offset, 10)
        assert store.checkpoint.logics_msg_timestamp == 0, "entries not yet flushed already counted durable"
        store.flush()
        assert store.checkpoint.logics_msg_timestamp == results[-1].store_timestamp_ms


def test_a_bad_first_record_of_a_segment_cuts_the_log_at_that_segments_start(tmp_path: Path):
    """Past an END_OF_FILE blank the log goes on in the next segment (RocketMQ moves processOffset there):
    the cut keeps the full segment before, with its blank, and the next message opens the damaged one."""
    clean_store(tmp_path, 800)
    written = records(tmp_path)
    segments = discover_store(tmp_path).commitlog.segments
    last = [s for s in segments if s.file_from_offset <= written[-1].physical_offset][-1]
    first = next(e for e in written if e.physical_offset == last.file_from_offset)
    flip_body_of(tmp_path, first)
    plan = recover(tmp_path)
    assert plan.process_offset == last.file_from_offset
    with MessageStore(tmp_path, SMALL) as store:
        assert store.put_message(message(800)).physical_offset == last.file_from_offset
    verify_ok(tmp_path)
