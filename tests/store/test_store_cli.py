"""`mqinspect store ...` (read-only inspection) through the CLI.

Ground truth first: the rocketmq-rust fixture, written by another implementation, then stores made by
`store_builder` (independent of our writer) to test rolls across segments and precise corruption.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
from pathlib import Path

import pytest
from store_builder import (
    STORE_HOST,
    BuiltStore,
    StoreBuilder,
    flip_byte,
    overwrite_cq_entry,
    segment_name,
    write_at,
    zero_range,
)
from support import mqinspect_as_nobody, one_error_line, run_mqinspect
from typer.testing import CliRunner

from mqinspect.errors import ExitStatus
from store import codec, commitlog_scan
from store.checkpoint import acquire_store_lock, create_abort_file
from store.index_file import IndexFile
from store.inspection.rocketmq import reading
from store.java_checksums import index_key_hash
from store.safe_read import PreadFile

runner = CliRunner()

FIXTURE_BODIES = ["v0.9.0-message-0", "v0.9.0-message-1"]

RECORD_KEYS = {
    "kind", "physical_offset", "size_bytes", "segment", "topic", "queue_id", "queue_offset",
    "store_timestamp_ms", "store_time_iso", "born_timestamp_ms", "born_time_iso", "born_host", "store_host",
    "sysflag", "flag", "reconsume_times", "prepared_transaction_offset", "message_version", "tags", "keys",
    "properties", "body_crc", "body_size_bytes", "body_compressed", "offset_msg_id", "body",
}  # fmt: skip


def invoke_json(*args, status: int = ExitStatus.OK) -> dict:
    result = run_mqinspect(*args, "--format", "json")
    assert result.exit_code == status, result.stderr or result.stdout
    return json.loads(result.stdout)


def messages(dump: dict) -> list[dict]:
    return [event for event in dump["events"] if event["kind"] == "message"]


# ==========================================================================================================
# The rocketmq-rust fixture
# ==========================================================================================================


def test_cq_shows_both_fixture_entries(rust_store: Path):
    view = invoke_json("store", "cq", rust_store, "--topic", "V1UpgradeTopic")
    assert view["schema"] == "mqinspect.store.cq/v1"
    assert (view["min_offset"], view["max_offset"]) == (0, 2)
    assert [(e["queue_offset"], e["physical_offset"], e["size_bytes"]) for e in view["entries"]] == [
        (0, 0, 141),
        (1, 141, 141),
    ]
    table = run_mqinspect("store", "cq", rust_store, "--topic", "V1UpgradeTopic")
    assert table.exit_code == 0 and "141" in table.stdout


def test_cq_unknown_topic_or_queue_is_bad_input(rust_store: Path):
    result = run_mqinspect("store", "cq", rust_store, "--topic", "Nope")
    assert result.exit_code == ExitStatus.BAD_INPUT
    assert result.stderr.strip() == (
        f"mqinspect: error: no consume queue for topic 'Nope' in {rust_store}; topics: V1UpgradeTopic"
    )
    result = run_mqinspect("store", "cq", rust_store, "--topic", "V1UpgradeTopic", "--queue", "5")
    assert result.exit_code == ExitStatus.BAD_INPUT and "its queues: 0" in result.stderr


@pytest.mark.parametrize("command", ["cq", "stat", "segments", "dump", "verify", "query"])
def test_a_directory_that_is_not_a_store_is_bad_input(tmp_path: Path, command: str):
    extra = {"cq": ["--topic", "T"], "query": ["--offset", "0"]}.get(command, [])
    result = run_mqinspect("store", command, tmp_path, *extra)
    assert result.exit_code == ExitStatus.BAD_INPUT
    assert "not a RocketMQ store (no commitlog/ directory)" in one_error_line(result)


def test_dump_shows_both_fixture_messages(rust_store: Path):
    dump = invoke_json("store", "dump", rust_store, "--body")
    records = messages(dump)
    assert [(r["physical_offset"], r["size_bytes"]) for r in records] == [(0, 141), (141, 141)]
    assert [r["body"] for r in records] == [{"utf8": body} for body in FIXTURE_BODIES]
    assert all(set(r) == RECORD_KEYS for r in records)
    first = records[0]
    assert (first["topic"], first["queue_id"], first["queue_offset"]) == ("V1UpgradeTopic", 0, 0)
    assert first["keys"] == "v1-upgrade-key" and first["properties"] == {"KEYS": "v1-upgrade-key"}
    assert first["store_timestamp_ms"] == 1786727751703 and first["store_time_iso"].endswith("Z")
    assert first["store_host"] == "127.0.0.1:10911" and first["message_version"] == 1
    assert first["offset_msg_id"] == codec.offset_msg_id(("127.0.0.1", 10911), 0)
    assert dump["end"] == {"physical_offset": 282, "reason": "zeros", "detail": None,
                           "segment": str(rust_store / "commitlog" / segment_name(0))}  # fmt: skip
    assert dump["next_physical_offset"] is None and dump["crc_checked"] is True
    # Without --body, bodies are left out but their size is still there.
    assert [r["body"] for r in messages(invoke_json("store", "dump", rust_store))] == [None, None]
    table = run_mqinspect("store", "dump", rust_store, "--body")
    assert table.exit_code == 0
    assert "v0.9.0-message-1" in table.stdout and "end of log at 282: zeros" in table.stdout


def test_dump_reads_one_segment_file_by_its_name(rust_store: Path):
    segment = rust_store / "commitlog" / segment_name(0)
    dump = invoke_json("store", "dump", segment, "--from", "141", "--body")
    assert [r["body"]["utf8"] for r in messages(dump)] == FIXTURE_BODIES[1:]
    assert dump["end"]["reason"] == "zeros" and dump["source"] == str(segment)


def test_query_by_key_finds_both_fixture_messages(rust_store: Path):
    result = invoke_json("store", "query", rust_store, "--key", "v1-upgrade-key", "--topic", "V1UpgradeTopic")
    assert [hit["physical_offset"] for hit in result["hits"]] == [141, 0]  # newest first, as the index walks
    assert (result["index_hits"], result["hash_collisions_filtered"]) == (2, 0)
    assert result["topics_searched"] == ["V1UpgradeTopic"]
    # Without --topic every topic with a consume queue is searched.
    assert len(invoke_json("store", "query", rust_store, "--key", "v1-upgrade-key")["hits"]) == 2
    assert invoke_json("store", "query", rust_store, "--key", "other-key")["hits"] == []


def test_stat_reads_the_fixture(rust_store: Path):
    stat = invoke_json("store", "stat", rust_store)
    assert set(stat) == {
        "schema", "root", "commitlog", "topic_count", "queue_count", "consume_queues", "checkpoint",
        "checkpoint_problem", "run_state", "index", "config_files", "dispatch", "layout_problems",
    }  # fmt: skip
    log = stat["commitlog"]
    assert (log["min_physical_offset"], log["max_physical_offset"]) == (0, 282)
    assert (log["segment_count"], log["segment_size_bytes"], log["end"]["reason"]) == (1, 4096, "zeros")
    checkpoint = stat["checkpoint"]
    assert (
        checkpoint["physic_msg_timestamp_ms"],
        checkpoint["logics_msg_timestamp_ms"],
        checkpoint["index_msg_timestamp_ms"],
        checkpoint["master_flushed_offset"],
        checkpoint["confirm_phy_offset"],
    ) == (0, 1786727751704, 0, 0, 0)
    assert checkpoint["physic_msg_time_iso"] is None  # 0 is RocketMQ's "never", not 1970
    assert checkpoint["logics_msg_time_iso"] == "2026-08-14T17:15:51.704Z"
    assert stat["consume_queues"] == [
        {"topic": "V1UpgradeTopic", "queue_id": 0, "segment_count": 1, "min_queue_offset": 0,
         "max_queue_offset": 2, "message_count": 2, "dispatched_to_physical_offset": 282},
    ]  # fmt: skip
    assert stat["run_state"]["state"] == "stopped"
    assert stat["index"] == {"file_count": 1, "entry_count": 2, "unreadable": []}
    assert stat["dispatch"]["dispatch_behind_bytes"] == 0
    table = run_mqinspect("store", "stat", rust_store)
    assert table.exit_code == 0 and "0 / 282" in table.stdout and "1786727751704" in table.stdout


def test_verify_passes_on_the_fixture(rust_store: Path):
    report = invoke_json("store", "verify", rust_store)
    assert report["ok"] is True and report["findings"] == []
    counts = report["counts"]
    assert (counts["commitlog_records"], counts["consume_queue_entries_checked"]) == (2, 2)
    assert (counts["index_entries"], counts["index_entries_checked"]) == (2, 2)
    assert run_mqinspect("store", "verify", rust_store).exit_code == 0


def test_segments_lists_the_three_fixture_files(rust_store: Path):
    listing = invoke_json("store", "segments", rust_store)
    rows = {row["kind"]: row for row in listing["rows"]}
    assert len(listing["rows"]) == 3 and set(rows) == {"commitlog", "consumequeue", "index"}
    assert (rows["commitlog"]["written_bytes"], rows["commitlog"]["full"]) == (282, False)
    assert rows["consumequeue"]["entry_count"] == 2 and rows["consumequeue"]["topic"] == "V1UpgradeTopic"
    assert rows["index"]["entry_count"] == 2 and rows["index"]["size_bytes"] == 2728
    assert all(isinstance(row["mtime_ms"], int) and row["mtime_iso"] for row in listing["rows"])
    assert run_mqinspect("store", "segments", rust_store).exit_code == 0


# ==========================================================================================================
# Built stores: rolls across segments
# ==========================================================================================================


def build_rolled_store(builder: StoreBuilder, count: int = 20) -> BuiltStore:
    """`count` ~150-byte messages in 1 KiB segments: 6 per segment, so the log rolls every 6 messages."""
    for number in range(count):
        builder.add(
            "TopicA" if number % 2 else "TopicB",
            f"body-{number:02d}-" + "x" * 50,
            queue_id=number % 3,
            keys=f"key-{number} shared",
            tags="TagA",
        )
    return builder.build()


def test_dump_rolls_across_segments_and_shows_the_blanks(make_store):
    built = build_rolled_store(make_store())
    assert len(built.segments) >= 3 and built.blanks
    dump = invoke_json("store", "dump", built.root, "--count", "100", "--body")
    assert [r["physical_offset"] for r in messages(dump)] == [r.physical_offset for r in built.records]
    assert [r["body"]["utf8"] for r in messages(dump)] == [r.body.decode() for r in built.records]
    blanks = [event for event in dump["events"] if event["kind"] == "blank"]
    assert [blank["physical_offset"] for blank in blanks] == list(built.blanks)
    # Each blank fills its segment: the log goes on at the next segment's start.
    assert [blank["next_physical_offset"] for blank in blanks] == [
        (n + 1) * built.segment_size for n in range(len(blanks))
    ]
    assert dump["end"]["physical_offset"] == built.max_physical_offset
    table = run_mqinspect("store", "dump", built.root, "--count", "100")
    assert f"blank @ {built.blanks[0]}" in table.stdout


def test_dump_stops_at_the_count_and_says_where_to_go_on(make_store):
    built = build_rolled_store(make_store())
    first = invoke_json("store", "dump", built.root, "--count", "6")
    assert len(messages(first)) == 6 and first["end"] is None
    assert first["next_physical_offset"] == built.records[6].physical_offset
    rest = invoke_json("store", "dump", built.root, "--from", first["next_physical_offset"], "--count", "100")
    assert [r["physical_offset"] for r in messages(rest)] == [r.physical_offset for r in built.records[6:]]


def test_dump_of_a_middle_segment_file_ends_at_its_blank(make_store):
    built = build_rolled_store(make_store())
    dump = invoke_json("store", "dump", built.segments[1], "--count", "100")
    inside = [r for r in built.records if r.segment == built.segments[1]]
    assert [r["physical_offset"] for r in messages(dump)] == [r.physical_offset for r in inside]
    assert (dump["end"]["reason"], dump["end"]["physical_offset"]) == ("blank", built.blanks[1])


def test_stat_and_segments_on_a_rolled_store(make_store):
    built = build_rolled_store(make_store())
    stat = invoke_json("store", "stat", built.root)
    assert stat["commitlog"]["max_physical_offset"] == built.max_physical_offset
    assert stat["commitlog"]["segment_count"] == len(built.segments)
    assert (stat["topic_count"], stat["queue_count"]) == (2, 6)
    assert sum(queue["message_count"] for queue in stat["consume_queues"]) == len(built.records)
    listing = invoke_json("store", "segments", built.root)
    commitlog = [row for row in listing["rows"] if row["kind"] == "commitlog"]
    for row, blank in zip(commitlog, built.blanks, strict=False):
        assert row["full"] is True and row["blank_position"] == blank - row["start_offset_bytes"]
        assert row["written_measured_by"] == "tail-blank"
    # the last segment: walked from the end of the newest record a ConsumeQueue points at, not from its start
    assert commitlog[-1]["full"] is False and commitlog[-1]["written_measured_by"] == "walk-after-dispatched"
    assert commitlog[-1]["written_bytes"] == built.max_physical_offset - commitlog[-1]["start_offset_bytes"]


def test_stat_reports_run_state_config_files_and_dispatch_lag(make_store):
    built = build_rolled_store(make_store())
    (built.root / "abort").write_text("999999999")
    (built.root / "config").mkdir()
    (built.root / "config" / "topics.json").write_text("{}")
    last = built.records[-1]
    # The last message was never dispatched: its ConsumeQueue entry is still zeros.
    cq_file = built.cq_file(last.topic, last.queue_id)
    zero_range(cq_file, last.queue_offset * 20, last.queue_offset * 20 + 20)
    stat = invoke_json("store", "stat", built.root)
    assert stat["run_state"]["state"] == "crashed" and stat["run_state"]["abort_file_pid"] == 999999999
    assert stat["config_files"] == ["topics.json"]
    previous_end = max(r.end for r in built.records[:-1])
    assert stat["dispatch"]["consume_queue_max_physical_offset"] == previous_end
    assert stat["dispatch"]["dispatch_behind_bytes"] == built.max_physical_offset - previous_end
    # segments walks the undispatched tail from there, and still finds the end of the last record
    last_segment = [
        row for row in invoke_json("store", "segments", built.root)["rows"] if row["kind"] == "commitlog"
    ][-1]
    assert last_segment["written_bytes"] == built.max_physical_offset - last_segment["start_offset_bytes"]


def test_segments_walks_the_last_segment_from_its_start_when_the_dispatched_record_does_not_decode(
    make_store,
):
    built = build_rolled_store(make_store())
    newest = built.records[-1]  # in the last segment, and its ConsumeQueue entry points at it
    zero_range(newest.segment, newest.position, newest.position + 4)  # its size field
    listing = invoke_json("store", "segments", built.root)
    last_segment = [row for row in listing["rows"] if row["kind"] == "commitlog"][-1]
    assert last_segment["written_measured_by"] == "record-walk"
    assert last_segment["written_bytes"] == newest.position  # the walk stops where the broken record starts


def test_verify_passes_on_a_clean_built_store(make_store):
    built = build_rolled_store(make_store())
    report = invoke_json("store", "verify", built.root)
    assert report["ok"] is True, report["findings"]
    counts = report["counts"]
    assert counts["commitlog_records"] == len(built.records)
    assert counts["commitlog_blanks"] == len(built.blanks)
    assert counts["consume_queue_entries_checked"] == len(built.records)
    assert counts["index_entries_checked"] == counts["index_entries"] == 2 * len(built.records)


# ==========================================================================================================
# Corruption
# ==========================================================================================================


def findings_of(report: dict, check: str) -> list[dict]:
    return [finding for finding in report["findings"] if finding["check"] == check]


def test_a_flipped_body_byte_fails_verify_naming_file_and_offset(make_store):
    built = build_rolled_store(make_store())
    victim = built.records[8]  # in the second segment
    flip_byte(victim.segment, victim.body_position + 3)
    report = invoke_json("store", "verify", built.root, status=ExitStatus.FINDINGS)
    assert report["ok"] is False
    [bad] = findings_of(report, "commitlog-record")
    assert bad["file"] == str(victim.segment) and bad["offset"] == victim.physical_offset
    assert bad["offset_kind"] == "physical_offset" and "BODYCRC" in bad["message"]
    assert report["max_physical_offset"] == victim.physical_offset
    # Records after the bad one are lost to recovery: the rest of this segment and every later one.
    after = findings_of(report, "data-after-end")
    assert [finding["file"] for finding in after] == [str(path) for path in built.segments[1:]]
    assert "delete this file" in after[-1]["message"]
    # Every entry after the cut points past the end: one finding per queue, with a count.
    beyond = findings_of(report, "cq-beyond-log")
    assert sum(finding["count"] for finding in beyond) == len(built.records) - 8
    assert len(beyond) == len({(r.topic, r.queue_id) for r in built.records[8:]})
    [index_beyond] = findings_of(report, "index-beyond-log")
    assert index_beyond["count"] == 2 * (len(built.records) - 8)  # two keys per message
    table = run_mqinspect("store", "verify", built.root)
    assert table.exit_code == ExitStatus.FINDINGS and "problems found" in table.stdout
    # dump stops there too (exit 1), unless asked not to check CRCs.
    dump = invoke_json("store", "dump", built.root, "--count", "100", status=ExitStatus.FINDINGS)
    assert (dump["end"]["reason"], dump["end"]["physical_offset"]) == ("corrupt", victim.physical_offset)
    unchecked = invoke_json("store", "dump", built.root, "--count", "100", "--no-check-crc")
    assert len(messages(unchecked)) == len(built.records)
    # Looking at the damaged record itself works, with a note.
    result = invoke_json("store", "query", built.root, "--offset", victim.physical_offset)
    assert "body CRC" in result["notes"][0]


def test_a_truncated_last_record_is_reported(make_store):
    built = build_rolled_store(make_store())
    last = built.records[-1]
    # A write cut short: the record's second half never reached the file.
    zero_range(last.segment, last.position + last.size_bytes // 2, last.position + last.size_bytes)
    report = invoke_json("store", "verify", built.root, status=ExitStatus.FINDINGS)
    [bad] = findings_of(report, "commitlog-record")
    assert (bad["file"], bad["offset"]) == (str(last.segment), last.physical_offset)
    [beyond] = findings_of(report, "cq-beyond-log")
    assert beyond["offset"] == last.queue_offset and beyond["offset_kind"] == "queue_offset"
    assert findings_of(report, "index-beyond-log")  # its keys were indexed too
    stat = invoke_json("store", "stat", built.root)
    assert stat["commitlog"]["max_physical_offset"] == last.physical_offset
    assert stat["commitlog"]["end"]["reason"] == "corrupt"
    assert stat["dispatch"]["dispatch_behind_bytes"] == -last.size_bytes  # the CQ is ahead of the log


def test_a_hole_before_later_data_is_data_after_the_end(make_store):
    built = build_rolled_store(make_store())
    victim = built.records[14]
    zero_range(victim.segment, victim.position, victim.position + victim.size_bytes)
    report = invoke_json("store", "verify", built.root, status=ExitStatus.FINDINGS)
    assert report["end"]["reason"] == "zeros" and report["max_physical_offset"] == victim.physical_offset
    same_segment, *later = findings_of(report, "data-after-end")
    assert same_segment["file"] == str(victim.segment) and same_segment["offset"] == victim.position
    assert "truncate them" in same_segment["message"]
    at = built.segments.index(victim.segment)
    assert [finding["file"] for finding in later] == [str(path) for path in built.segments[at + 1 :]]


def test_a_cq_entry_with_the_wrong_size_is_reported(make_store):
    built = build_rolled_store(make_store())
    record = built.records[4]
    cq_file = built.cq_file(record.topic, record.queue_id)
    overwrite_cq_entry(
        cq_file, record.queue_offset, physical_offset=record.physical_offset, size=record.size_bytes + 1
    )
    report = invoke_json("store", "verify", built.root, status=ExitStatus.FINDINGS)
    [bad] = report["findings"]
    assert (bad["check"], bad["file"], bad["offset"]) == ("cq-entry", str(cq_file), record.queue_offset)
    assert f"size {record.size_bytes + 1} vs {record.size_bytes}" in bad["message"]


def test_a_cq_entry_pointing_into_a_record_is_reported(make_store):
    built = build_rolled_store(make_store())
    record = built.records[4]
    cq_file = built.cq_file(record.topic, record.queue_id)
    overwrite_cq_entry(
        cq_file, record.queue_offset, physical_offset=record.physical_offset + 10, size=record.size_bytes
    )
    [bad] = invoke_json("store", "verify", built.root, status=ExitStatus.FINDINGS)["findings"]
    assert bad["check"] == "cq-entry" and "no record starts there" in bad["message"]


def test_a_cq_entry_with_a_flipped_tags_code_is_reported(make_store):
    built = build_rolled_store(make_store())
    record = built.records[4]
    cq_file = built.cq_file(record.topic, record.queue_id)
    flip_byte(cq_file, (record.queue_offset % 8) * 20 + 19)  # the last byte of the entry's tagsCode
    [bad] = invoke_json("store", "verify", built.root, status=ExitStatus.FINDINGS)["findings"]
    assert (bad["check"], bad["file"], bad["offset"]) == ("cq-entry", str(cq_file), record.queue_offset)
    assert "tagsCode" in bad["message"]


def test_records_a_lost_queue_tail_hides_are_reported_with_the_queue_file(make_store):
    built = build_rolled_store(make_store(), count=60)
    queue = [r for r in built.records if (r.topic, r.queue_id) == ("TopicA", 1)]
    lost = queue[-7:]  # the last entries of TopicA/1 never reached the disk (zeros, as a torn write leaves)
    cq_file = built.cq_file("TopicA", 1, lost[0].queue_offset // 8)
    zero_range(cq_file, (lost[0].queue_offset % 8) * 20, 8 * 20)
    for later in sorted(cq_file.parent.iterdir()):
        if later.name > cq_file.name:
            later.unlink()
    report = invoke_json("store", "verify", built.root, status=ExitStatus.FINDINGS)
    [missing] = report["findings"]
    assert (missing["check"], missing["file"], missing["offset"]) == (
        "cq-unreachable",
        str(cq_file),
        lost[0].queue_offset,
    )
    assert missing["offset_kind"] == "queue_offset" and missing["count"] == len(lost)
    assert f"the first at {lost[0].physical_offset}" in missing["message"]
    assert report["counts"]["records_checked_through_queues"] == len(built.records)


def test_a_queue_without_its_consume_queue_is_reported(make_store):
    built = build_rolled_store(make_store())
    gone = built.root / "consumequeue" / "TopicB" / "2"
    for path in gone.iterdir():
        path.unlink()
    gone.rmdir()
    report = invoke_json("store", "verify", built.root, status=ExitStatus.FINDINGS)
    [missing] = findings_of(report, "cq-unreachable")
    lost = [r for r in built.records if (r.topic, r.queue_id) == ("TopicB", 2)]
    assert missing["count"] == len(lost) and "no ConsumeQueue for this queue" in missing["message"]
    assert missing["file"] == str(gone)


def test_keys_a_query_no_longer_finds_are_reported(make_store):
    builder = make_store(index_slots=1024, index_entries=4096)  # no other key shares key-7's slot
    built = build_rolled_store(builder)
    [index_file] = (built.root / "index").iterdir()
    victim = built.records[7]
    slot = index_key_hash(f"{victim.topic}#key-7") % 1024
    zero_range(index_file, 40 + slot * 4, 40 + slot * 4 + 4)  # the key's hash slot: its chain is lost
    report = invoke_json("store", "verify", built.root, status=ExitStatus.FINDINGS)
    [lost] = report["findings"]
    assert (lost["check"], lost["file"], lost["offset"]) == (
        "index-unreachable",
        str(index_file),
        victim.physical_offset,
    )
    assert "key 'key-7'" in lost["message"]
    assert report["counts"]["keyed_records_checked_through_index"] == len(built.records)


def test_a_running_stores_undispatched_tail_is_counted_not_reported(make_store):
    built = build_rolled_store(make_store())
    record = built.records[-1]  # its broker has not dispatched it yet
    zero_range(built.cq_file(record.topic, record.queue_id), (record.queue_offset % 8) * 20, 8 * 20)
    assert run_mqinspect("store", "verify", built.root).exit_code == ExitStatus.FINDINGS
    with acquire_store_lock(built.root):  # the broker runs
        report = invoke_json("store", "verify", built.root)
    assert report["counts"]["records_not_yet_dispatched"] >= 1


def test_on_a_crashed_store_verify_says_recovery_rebuilds(make_store):
    built = build_rolled_store(make_store())
    record = built.records[-1]
    zero_range(built.cq_file(record.topic, record.queue_id), (record.queue_offset % 8) * 20, 8 * 20)
    create_abort_file(built.root)
    [missing] = invoke_json("store", "verify", built.root, status=ExitStatus.FINDINGS)["findings"]
    assert missing["check"] == "cq-unreachable" and "recovery rebuilds them" in missing["message"]


# ==========================================================================================================
# Layout problems: exit 2 for stat/dump/query, a finding (exit 1) for verify
# ==========================================================================================================


def break_layout(built: BuiltStore, how: str) -> str:
    """Damage the CommitLog directory; return what the error must mention."""
    if how == "foreign-file":
        (built.commitlog / "notes.txt").write_text("hello")
        return "notes.txt: not a segment of this store"
    if how == "wrong-size":
        os.truncate(built.segments[1], built.segment_size - 24)
        return f"size {built.segment_size - 24} does not match the segment size {built.segment_size}"
    built.segments[1].unlink()  # a gap
    return "segments must be contiguous"


@pytest.mark.parametrize("how", ["foreign-file", "wrong-size", "gap"])
def test_a_broken_commitlog_layout_is_bad_input_except_for_verify(make_store, how: str):
    built = build_rolled_store(make_store())
    expected = break_layout(built, how)
    for command in (["stat"], ["dump"], ["query", "--offset", "0"], ["query", "--key", "shared"]):
        result = run_mqinspect("store", command[0], built.root, *command[1:])
        assert result.exit_code == ExitStatus.BAD_INPUT, (command, result.stdout)
        assert expected in one_error_line(result)
    report = invoke_json("store", "verify", built.root, status=ExitStatus.FINDINGS)
    layout = [f"{Path(f['file']).name}: {f['message']}" for f in findings_of(report, "layout")]
    assert any(expected in finding for finding in layout), layout
    listing = invoke_json("store", "segments", built.root)  # lists what is there, with the problems
    assert listing["layout_problems"]


def test_a_gap_leaves_cq_entries_pointing_at_nothing(make_store):
    built = build_rolled_store(make_store())
    built.segments[2].unlink()
    report = invoke_json("store", "verify", built.root, status=ExitStatus.FINDINGS)
    lost = [r for r in built.records if r.segment == built.segments[2]]
    # The walk rolls from the blank before the gap into the segment after it, so the log "ends" later
    # and the lost records' entries point into no segment at all.
    assert len(findings_of(report, "cq-entry")) == len(lost)
    assert all("no record starts there" in f["message"] for f in findings_of(report, "cq-entry"))


def test_dump_of_a_file_that_is_not_a_segment_is_bad_input(rust_store: Path):
    stray = rust_store / "commitlog" / "stray.bin"
    stray.write_bytes(bytes(64))
    assert "not a segment" in one_error_line(run_mqinspect("store", "dump", stray))
    cq_file = rust_store / "consumequeue" / "V1UpgradeTopic" / "0" / segment_name(0)
    assert "not a CommitLog segment" in one_error_line(run_mqinspect("store", "dump", cq_file))


# ==========================================================================================================
# query
# ==========================================================================================================


def test_query_by_msg_id_and_offset(make_store):
    built = build_rolled_store(make_store())
    record = built.records[9]
    result = invoke_json("store", "query", built.root, "--msg-id", record.offset_msg_id, "--body")
    [hit] = result["hits"]
    assert (hit["physical_offset"], hit["body"]["utf8"]) == (record.physical_offset, record.body.decode())
    assert result["store_host_matches"] is True and result["notes"] == []
    assert result["msg_id_store_host"] == f"{STORE_HOST[0]}:{STORE_HOST[1]}"
    # An id minted by another host names the same offset: found, with a note about the host.
    foreign_id = codec.offset_msg_id(("192.168.1.1", 10911), record.physical_offset)
    result = invoke_json("store", "query", built.root, "--msg-id", foreign_id.lower())
    assert result["store_host_matches"] is False and "192.168.1.1:10911" in result["notes"][0]
    by_offset = invoke_json("store", "query", built.root, "--offset", record.physical_offset)
    assert by_offset["hits"][0]["offset_msg_id"] == record.offset_msg_id


def test_query_offsets_that_are_not_record_starts_are_bad_input(make_store):
    built = build_rolled_store(make_store())
    record = built.records[3]
    line = one_error_line(run_mqinspect("store", "query", built.root, "--offset", record.physical_offset + 7))
    assert f"nearest record starts: {record.physical_offset} and {record.end}" in line
    line = one_error_line(run_mqinspect("store", "query", built.root, "--offset", built.blanks[0]))
    assert "END_OF_FILE blank" in line
    line = one_error_line(
        run_mqinspect("store", "query", built.root, "--offset", built.max_physical_offset + 40)
    )
    assert f"past the end of the log at {built.max_physical_offset}" in line
    line = one_error_line(run_mqinspect("store", "query", built.root, "--offset", 10**9))
    assert "in no CommitLog segment" in line
    line = one_error_line(run_mqinspect("store", "dump", built.root, "--from", record.physical_offset + 7))
    assert "not a record start" in line
    bad_id = codec.offset_msg_id(STORE_HOST, record.physical_offset + 7)
    assert "not a record start" in one_error_line(
        run_mqinspect("store", "query", built.root, "--msg-id", bad_id)
    )


@pytest.mark.parametrize("msg_id", ["zz", "0" * 31, "G" * 32])
def test_a_message_id_that_does_not_parse_is_bad_input(rust_store: Path, msg_id: str):
    result = run_mqinspect("store", "query", rust_store, "--msg-id", msg_id)
    assert result.exit_code == ExitStatus.BAD_INPUT and "offsetMsgId" in one_error_line(result)


@pytest.mark.parametrize(
    "options",
    [
        [],
        ["--key", "k", "--offset", "0"],
        ["--offset", "0", "--msg-id", "x"],
        ["--offset", "0", "--topic", "T"],
    ],
)
def test_query_needs_exactly_one_way_to_find_messages(rust_store: Path, options: list[str]):
    result = run_mqinspect("store", "query", rust_store, *options)
    assert result.exit_code == ExitStatus.BAD_INPUT
    assert "mqinspect store query --help" in one_error_line(result)


def test_query_by_key_filters_hash_collisions(make_store):
    builder = make_store()
    # "Aa" and "BB" have the same Java hashCode, so "T#Aa" and "T#BB" share an index hash.
    aa = builder.add("T", "first", keys="Aa")
    builder.add("T", "second", keys="BB")
    built = builder.build()
    result = invoke_json("store", "query", built.root, "--key", "Aa", "--topic", "T")
    assert [hit["physical_offset"] for hit in result["hits"]] == [aa.physical_offset]
    assert (result["index_hits"], result["hash_collisions_filtered"]) == (2, 1)
    table = run_mqinspect("store", "query", built.root, "--key", "Aa", "--topic", "T")
    assert "1 hash collision filtered out" in table.stdout


def test_query_by_key_respects_the_time_range(make_store):
    built = build_rolled_store(make_store())
    every = invoke_json("store", "query", built.root, "--key", "shared")
    assert len(every["hits"]) == len(built.records) and set(every["topics_searched"]) == {"TopicA", "TopicB"}
    assert len(invoke_json("store", "query", built.root, "--key", "shared", "--max", "3")["hits"]) == 6
    later = built.records[-1].store_timestamp_ms + 5_000  # index times have 1 s resolution
    assert invoke_json("store", "query", built.root, "--key", "shared", "--begin", later)["hits"] == []
    iso = "2023-11-14T22:13:19Z"  # a second before the first message
    result = invoke_json("store", "query", built.root, "--key", "key-3", "--begin", iso, "--end", later)
    assert [hit["body"] for hit in result["hits"]] == [None]
    line = one_error_line(run_mqinspect("store", "query", built.root, "--key", "k", "--begin", "yesterday"))
    assert "--begin" in line and "ISO-8601" in line


def test_index_checks_are_bounded_and_say_so(make_store):
    built = build_rolled_store(make_store())
    report = invoke_json("store", "verify", built.root, "--index-checks", "7")
    assert report["index_sampled"] is True and report["index_check_limit"] == 7
    assert report["counts"]["index_entries_checked"] <= 7 < report["counts"]["index_entries"]
    every = invoke_json("store", "verify", built.root, "--index-checks", "0")
    assert every["index_check_limit"] is None and every["index_sampled"] is False


def test_an_index_entry_for_the_wrong_record_is_reported(make_store):
    builder = make_store(index_entries=256)
    first = builder.add("T", "one", keys="alpha")
    second = builder.add("T", "two", keys="beta")
    built = builder.build()
    [index_file] = (built.root / "index").iterdir()
    # Entry 1 (alpha -> first) now points at the second record, which does not carry "alpha".
    entry_1 = 40 + builder.index_slots * 4 + 1 * 20
    with open(index_file, "r+b") as handle:
        handle.seek(entry_1 + 4)
        handle.write(struct.pack(">q", second.physical_offset))
    lost, bad = invoke_json("store", "verify", built.root, status=ExitStatus.FINDINGS)["findings"]
    assert (bad["check"], bad["offset"], bad["offset_kind"]) == ("index-entry", 1, "index_entry")
    assert "hash of none of the record's keys" in bad["message"]
    assert f"-> {second.physical_offset}" in bad["message"] and first.physical_offset == 0
    # And the other side of the same damage: a query for "alpha" no longer finds the first record.
    assert (lost["check"], lost["offset"], lost["offset_kind"]) == ("index-unreachable", 0, "physical_offset")
    assert "key 'alpha'" in lost["message"] and lost["file"] == str(index_file)


def test_stat_walks_only_the_undispatched_tail_and_finds_the_same_end(make_store, monkeypatch):
    builder = make_store(segment_size=1024 * 1024)
    for number in range(2000):  # about 300 KiB, all in the first segment
        builder.add("TopicA", f"body-{number:03d}-" + "x" * 80, queue_id=number % 2)
    built = builder.build()
    queue = reading.loadable_commitlog(reading.open_layout(built.root))
    last = built.records[-1]
    monkeypatch.setattr(commitlog_scan, "WINDOW_BYTES", 4096)  # scaled down with the segment (4 MiB : 1 GiB)
    read_bytes = []
    original = PreadFile.read
    monkeypatch.setattr(
        PreadFile, "read", lambda self, *a: read_bytes.append(len(data := original(self, *a))) or data
    )
    full = reading.find_log_end(queue)
    full_read, read_bytes[:] = sum(read_bytes), []
    tail = reading.find_log_end(queue, (last.physical_offset, last.size_bytes))
    assert tail == full and full.physical_offset == built.max_physical_offset
    assert sum(read_bytes) < full_read / 10  # the last record and what follows it, not the segment
    # a ConsumeQueue entry that does not point at a whole record of its size is not trusted
    assert reading.find_log_end(queue, (last.physical_offset + 1, last.size_bytes)) == full
    assert reading.find_log_end(queue, (last.physical_offset, last.size_bytes + 1)) == full
    assert (
        invoke_json("store", "stat", built.root)["commitlog"]["max_physical_offset"]
        == built.max_physical_offset
    )


def test_following_the_record_sizes_finds_the_end_the_decoding_walk_finds(make_store):
    built = build_rolled_store(make_store(), count=40)
    queue = reading.loadable_commitlog(reading.open_layout(built.root))
    last = built.records[-1]
    for known in ((), ((built.records[-7].physical_offset, built.records[-7].size_bytes),)):
        tail = reading.find_log_tail(queue, known, headers_only=True, window_bytes=300)  # windows < a record
        assert (
            tail.end == reading.find_log_end(queue) and tail.end.physical_offset == built.max_physical_offset
        )
        assert tail.last_record == (last.physical_offset, last.size_bytes)
    # where a record's header is broken, both walks stop at it
    for field, value in (("TOTALSIZE", b"\x7f\xff\xff\xff"), ("MAGICCODE", b"\x00\x00\x00\x01")):
        broken = built.records[-3]
        position = broken.position + (0 if field == "TOTALSIZE" else 4)
        original = broken.segment.read_bytes()[position : position + 4]
        write_at(broken.segment, position, value)
        tail = reading.find_log_tail(queue, headers_only=True)
        assert (tail.end.reason, tail.end.physical_offset) == ("corrupt", broken.physical_offset), field
        assert tail.end == reading.find_log_end(queue) and field in tail.end.detail
        assert tail.last_record == (built.records[-4].physical_offset, built.records[-4].size_bytes)
        write_at(broken.segment, position, original)


def test_verify_as_nobody_checks_reachability_on_a_store_root_wrote(make_store):
    """An operator checks a broker's store without root: every file readable, the lock probed read-only."""
    if os.geteuid() != 0:
        pytest.skip("needs root to write the store and then read it as nobody")
    shared = Path(tempfile.mkdtemp(prefix="verify-as-nobody-"))
    try:
        shared.chmod(0o755)
        built = build_rolled_store(StoreBuilder(shared / "store"))
        record = built.records[-1]
        zero_range(built.cq_file(record.topic, record.queue_id), (record.queue_offset % 8) * 20, 8 * 20)
        result = mqinspect_as_nobody("store", "verify", str(built.root), "--format", "json")
        assert result.returncode == ExitStatus.FINDINGS, result.stderr
        [missing] = json.loads(result.stdout)["findings"]
        assert missing["check"] == "cq-unreachable" and missing["offset"] == record.queue_offset
    finally:
        shutil.rmtree(shared)


def test_an_index_that_lost_every_entry_is_reported(make_store):
    builder = make_store(index_slots=16, index_entries=64)  # RocketMQ's 1:4, so an empty file reads back
    built = build_rolled_store(builder)
    [index_file] = (built.root / "index").iterdir()
    index_file.unlink()  # as a crash leaves it before recovery rebuilds: a new, empty file
    IndexFile.create(built.root / "index", hash_slot_num=16, index_num=64, name=index_file.name).close()
    [lost] = invoke_json("store", "verify", built.root, status=ExitStatus.FINDINGS)["findings"]
    assert (lost["check"], lost["offset"], lost["count"]) == ("index-unreachable", 0, len(built.records))
