"""`store recover --dry-run` reads only the dispatched tail (from where every consume queue is known complete:
the newest dispatched record after a clean shutdown, the checkpoint's after a crash, and everything after it)
and must still find what recovery finds: a torn tail, a crash mid-roll, queue entries past the end, a queue
tail lost after a crash, an index rebuilt after a crash. Ground truth for each store is the plan made
reading everything recovery reads (`ScanScope.FROM_RECOVERY_START`, what `MessageStore` applies), and
recovery itself applied afterwards."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from recovery_support import (
    OLD_TOPIC,
    QUEUES,
    SMALL,
    TOPIC,
    clean_store,
    clean_store_with_an_old_topic,
    cq_file_and_position,
    expected_entries,
    flip,
    flip_body_of,
    lose_queue_tail_before_the_scan_start,
    put_and_die,
    put_flush_put_and_die,
    records,
    recover,
    zero_from,
)
from typer.testing import CliRunner

from mqinspect.cli.app import app
from store.checkpoint import create_abort_file, read_checkpoint
from store.config import StoreConfig
from store.inspection.rocketmq.verify import verify_store
from store.layout import discover_store
from store.message_store import MessageStore
from store.recovery import RecoveryMode, RecoveryPlan, ScanScope, plan_recovery


def both_plans(root: Path, config: StoreConfig = SMALL) -> tuple[RecoveryPlan, RecoveryPlan]:
    """(the dry run's plan, the plan of a read from recovery's own start)."""
    tail = plan_recovery(discover_store(root), config, scope=ScanScope.DISPATCHED_TAIL)
    full = plan_recovery(discover_store(root), config)
    return tail, full


def assert_same_decisions(tail: RecoveryPlan, full: RecoveryPlan) -> None:
    assert full.scope is ScanScope.FROM_RECOVERY_START
    assert tail.start_offset >= full.start_offset and tail.records_checked <= full.records_checked
    differing = {
        name: (value, full.decisions()[name])
        for name, value in tail.decisions().items()
        if value != full.decisions()[name]
    }
    assert differing == {}
    assert "recovery_start_offset" in tail.decisions() and "start_offset" not in tail.decisions()


def test_on_a_clean_store_the_dry_run_checks_only_the_newest_dispatched_record(tmp_path: Path):
    clean_store(tmp_path, 800)
    written = records(tmp_path)
    tail, full = both_plans(tmp_path)
    assert_same_decisions(tail, full)
    # after a clean shutdown every record before the newest one a queue names was dispatched and flushed
    assert tail.scope is ScanScope.DISPATCHED_TAIL and tail.records_checked == 1
    assert tail.start_offset == written[-1].physical_offset
    # recovery reads the whole last segment (RocketMQ's start: its first record is dispatched)
    last_segment = discover_store(tmp_path).commitlog.segment_for(written[-1].physical_offset)
    assert full.start_offset == last_segment.file_from_offset
    assert full.records_checked == sum(e.physical_offset >= last_segment.file_from_offset for e in written)


def test_a_torn_tail_after_the_dispatched_records_is_cut_where_recovery_cuts(tmp_path: Path):
    clean_store(tmp_path, 800)
    last = records(tmp_path)[-1]
    end = last.physical_offset + last.record.total_size
    segment = discover_store(tmp_path).commitlog.segment_for(last.physical_offset)
    with open(segment.path, "r+b") as handle:  # half a record, as a writer killed mid-copy leaves it
        handle.seek(end - segment.file_from_offset)
        handle.write(last_bytes(segment.path, last.physical_offset - segment.file_from_offset, 200))
    tail, full = both_plans(tmp_path)
    assert_same_decisions(tail, full)
    assert tail.process_offset == end and tail.truncated_bytes == 200 and tail.corruption
    assert recover(tmp_path).process_offset == end


def last_bytes(path: Path, position: int, count: int) -> bytes:
    with open(path, "rb") as handle:
        handle.seek(position)
        return handle.read(count)


def test_queue_entries_past_a_torn_log_end_are_cut_as_recovery_cuts_them(tmp_path: Path):
    """The consume queues were flushed, the log's tail was not: the newest entries name zeros. The dry run
    starts at the newest entry whose record is whole, and drops the others as recovery does."""
    clean_store(tmp_path, 800)
    written = records(tmp_path)
    victim = written[-6]
    segment = discover_store(tmp_path).commitlog.segment_for(victim.physical_offset)
    zero_from(segment.path, victim.physical_offset - segment.file_from_offset)
    tail, full = both_plans(tmp_path)
    assert_same_decisions(tail, full)
    assert tail.process_offset == victim.physical_offset
    assert tail.start_offset < victim.physical_offset and tail.records_checked <= QUEUES
    assert sum(t.entries_dropped for t in tail.queue_truncations) == 6
    assert recover(tmp_path).queue_truncations == tail.queue_truncations


def test_a_crash_mid_roll_ends_the_log_where_recovery_ends_it(tmp_path: Path):
    """The newest segment was created (zeros) and its first record torn: the log ends after the blank of
    the full segment before it, and the torn bytes are cut."""
    clean_store(tmp_path, 800)
    written = records(tmp_path)
    commitlog = discover_store(tmp_path).commitlog
    last = commitlog.segment_for(written[-1].physical_offset)
    following = last.path.parent / f"{last.file_from_offset + SMALL.mapped_file_size_commitlog:020d}"
    with open(last.path, "r+b") as handle:  # fill the segment: a blank after the last record
        handle.seek(written[-1].physical_offset + written[-1].record.total_size - last.file_from_offset)
        position = handle.tell()
        handle.write((SMALL.mapped_file_size_commitlog - position).to_bytes(4, "big"))
        handle.write(bytes.fromhex("cbd43194"))  # BLANK_MAGIC_CODE
    with open(following, "wb") as handle:
        handle.write(last_bytes(last.path, written[-1].physical_offset - last.file_from_offset, 100))
        handle.truncate(SMALL.mapped_file_size_commitlog)
    tail, full = both_plans(tmp_path)
    assert_same_decisions(tail, full)
    assert tail.process_offset == int(following.name) and tail.truncated_bytes == 100
    assert recover(tmp_path).process_offset == int(following.name)


def test_after_a_crash_a_lost_queue_tail_is_rebuilt_as_recovery_rebuilds_it(tmp_path: Path):
    """The checkpoint covers none of the records (all stored within its 3 s slack): the dry run reads from
    the oldest queue's newest record on, and meets the queue's records that have no entries."""
    expected, lost_from = lose_queue_tail_before_the_scan_start(tmp_path)
    create_abort_file(tmp_path)
    tail, full = both_plans(tmp_path)
    assert_same_decisions(tail, full)
    [lost] = [end for end in tail.queue_ends if end.queue_id == 1]
    assert lost.end_queue_offset == lost.entries_on_disk == lost_from
    assert tail.start_offset == expected[lost_from - 1][0]  # the newest record the queue still names


def test_after_a_clean_shutdown_a_lost_queue_tail_is_verify_s_to_find(tmp_path: Path):
    """After a clean shutdown the dry run trusts what was flushed before the newest dispatched record (the
    dispatcher writes the queues in log order): a flushed queue tail lost since is damage, as a damaged
    record is. Recovery (and --full-scan) read again from where the queue needs; verify names the entry."""
    expected, lost_from = lose_queue_tail_before_the_scan_start(tmp_path)
    tail, full = both_plans(tmp_path)
    assert full.scans == 2 and full.dispatch_from_offset == expected[lost_from][0]
    assert tail.scope is ScanScope.DISPATCHED_TAIL and tail.records_checked == 1
    assert tail.recovery_start_offset == full.recovery_start_offset
    findings = verify_store(tmp_path).findings
    assert any(f"entry {lost_from} is missing" in finding.message for finding in findings)


def test_queues_that_end_segments_back_do_not_make_the_dry_run_read_the_last_segment(tmp_path: Path):
    """A topic written first and never again: its queues' newest entries lie segments before the log's end.
    After a clean shutdown everything before the newest dispatched record was dispatched and flushed, so
    the dry run reads that record only, and decides what recovery (reading its whole segment) decides."""
    clean_store_with_an_old_topic(tmp_path, 300, 1000)
    written = records(tmp_path)
    old_newest = max(e.physical_offset for e in written if e.record.topic == OLD_TOPIC)
    tail, full = both_plans(tmp_path)
    assert old_newest < full.recovery_start_offset < written[-1].physical_offset
    assert_same_decisions(tail, full)
    assert tail.records_checked == 1 and tail.start_offset == written[-1].physical_offset
    assert full.records_checked > 100
    assert recover(tmp_path).decisions() == tail.decisions()


def test_after_a_crash_the_dry_run_reads_from_the_checkpoints_record_through_the_unflushed_tail(
    tmp_path: Path,
):
    """A crash after 1,500 flushed puts and 300 unflushed ones, whose pages the machine lost: the log is torn
    in the unflushed tail and a queue lost its entries there. The old topic's queues end segments back; the
    checkpoint covers everything up to its min timestamp, so the dry run reads from the newest record
    stored by then (not from its segment's start, nor from the old queues' records) and decides what
    recovery decides."""
    put_flush_put_and_die(tmp_path, 300, 1500, 300)
    written = records(tmp_path)
    torn = written[1650]
    segment = discover_store(tmp_path).commitlog.segment_for(torn.physical_offset)
    zero_from(segment.path, torn.physical_offset - segment.file_from_offset + 40)
    for later in segment.path.parent.iterdir():
        if later.name > segment.path.name:
            zero_from(later, 0)
    lost_queue = 2
    lost_from = next(
        n
        for n, entry in enumerate(expected_entries(tmp_path, lost_queue))
        if entry[0] > written[1500].physical_offset
    )
    path, position = cq_file_and_position(tmp_path, lost_queue, lost_from)
    zero_from(path, position)

    tail, full = both_plans(tmp_path)
    assert tail.mode is RecoveryMode.ABNORMAL
    assert_same_decisions(tail, full)
    covered_until = read_checkpoint(tmp_path / "checkpoint").min_timestamp()
    newest_covered = [e for e in written if e.record.store_timestamp_ms <= covered_until][-1]
    assert written.index(newest_covered) == 1199  # 10 ms a record: the 3 s slack before the 1,500th
    assert tail.start_offset == newest_covered.physical_offset
    assert tail.records_checked == 1650 - 1199 < full.records_checked
    assert tail.process_offset == torn.physical_offset
    [lost] = [end for end in tail.queue_ends if (end.topic, end.queue_id) == (TOPIC, lost_queue)]
    assert lost.end_queue_offset == lost_from
    with MessageStore(tmp_path, SMALL) as store:
        assert store.recovery.decisions() == tail.decisions()


def test_a_damaged_newest_queue_entry_is_cut_as_recovery_cuts_it(tmp_path: Path):
    clean_store(tmp_path, 800)
    newest_queue = records(tmp_path)[-1].record.queue_id
    damaged = len(expected_entries(tmp_path, newest_queue)) - 1
    path, at = cq_file_and_position(tmp_path, newest_queue, damaged)
    flip(path, at + 11)  # the entry's size off by one
    tail, full = both_plans(tmp_path)
    assert_same_decisions(tail, full)
    [truncation] = tail.queue_truncations
    assert (truncation.queue_id, truncation.end_queue_offset) == (newest_queue, damaged)


@pytest.mark.parametrize("index_entries", [4096, 256], ids=["one-index-file", "index-files-roll"])
def test_after_a_crash_the_index_is_rebuilt_from_the_record_recovery_names(
    tmp_path: Path, index_entries: int
):
    """After SIGKILL the index file being written is not trusted: recovery re-indexes from the record the
    last trusted file ends with (or the log's start), which lies long before the dry run's start."""
    config = put_and_die(tmp_path, index_entries, 600)
    tail, full = both_plans(tmp_path, config)
    assert_same_decisions(tail, full)
    assert tail.mode is RecoveryMode.ABNORMAL and tail.index_files_to_drop
    assert tail.dispatch_from_offset == tail.index_rebuild_from_offset < tail.start_offset
    with MessageStore(tmp_path, config) as store:
        applied = store.recovery
    assert (applied.process_offset, applied.dispatch_from_offset) == (
        tail.process_offset,
        tail.dispatch_from_offset,
    )
    assert applied.index_files_to_drop == tail.index_files_to_drop


def test_a_damaged_record_before_the_newest_dispatched_one_is_verify_s_to_find(tmp_path: Path):
    """What the dry run does not read: recovery (and --full-scan) cut at a damaged record in the segment it
    re-reads; the dry run, which starts at the newest dispatched record, says where recovery reads from and
    that it checked only from its start; `verify` names the record."""
    clean_store(tmp_path, 800)
    written = records(tmp_path)
    victim = written[-25]
    flip_body_of(tmp_path, victim)
    tail, full = both_plans(tmp_path)
    assert full.process_offset == victim.physical_offset
    assert tail.process_offset == written[-1].physical_offset + written[-1].record.total_size
    assert tail.scope is ScanScope.DISPATCHED_TAIL and tail.recovery_start_offset <= victim.physical_offset
    assert any(finding.offset == victim.physical_offset for finding in verify_store(tmp_path).findings)


def test_the_dry_run_command_says_what_it_read_and_full_scan_reads_what_recovery_reads(tmp_path: Path):
    clean_store(tmp_path, 800)
    create_abort_file(tmp_path)  # a crash: recovery reads from the checkpoint's segment
    runner = CliRunner()

    def dry_run(*options: str) -> dict:
        result = runner.invoke(
            app, ["store", "recover", str(tmp_path), "--dry-run", "--format", "json", *options]
        )
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    tail, full = dry_run(), dry_run("--full-scan")
    assert tail["scope"] == "dispatched-tail" and full["scope"] == "from-recovery-start"
    assert tail["recovery_start_offset"] == full["start_offset"] < tail["start_offset"]
    assert tail["process_offset"] == full["process_offset"]
    table = runner.invoke(app, ["store", "recover", str(tmp_path), "--dry-run"], env={"COLUMNS": "200"})
    assert f"recovery reads from {full['start_offset']:,}" in table.stdout
    assert "store verify checks every record" in table.stdout
    with MessageStore(tmp_path, SMALL) as store:
        assert store.recovery.process_offset == tail["process_offset"]
