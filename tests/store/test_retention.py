"""Retention as RocketMQ's CleanCommitLogService / CleanConsumeQueueService: the decision table, CommitLog
files deleted by age (oldest first, never the last, no holes), consume queue and index files deleted by
offset, readers delaying a destroy, the dry-run planner matching a real run, and the scheduled task."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import struct
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from store import codec, retention
from store.config import StoreConfig
from store.message_store import GetStatus, MessageStore, StoreNotRunning
from store.retention import (
    CleanService,
    DiskThresholds,
    StoreFileKind,
    decide_clean,
    disk_partition_used_ratio,
    plan_clean,
)

SEGMENT = 64 * 1024
CQ_ENTRIES_PER_FILE = 128
SMALL = StoreConfig(
    mapped_file_size_commitlog=SEGMENT,
    consume_queue_entries_per_file=CQ_ENTRIES_PER_FILE,
    max_hash_slot_num=64,
    max_index_num=256,
    flush_interval_commitlog_ms=50,
)
NOW = datetime.now().replace(microsecond=0)  # local; ages below are relative to it
OLD_HOURS = 100  # older than the default fileReservedTime of 72 h
FRESH_HOURS = 10
LOW_DISK = 0.10
NOT_AN_HOUR = datetime(2024, 5, 1, 13, 30)


@pytest.fixture(autouse=True)
def no_pauses(monkeypatch):
    """RocketMQ spreads deletions 100 ms apart; the tests that care put a pause back."""
    monkeypatch.setattr(retention, "DELETE_COMMITLOG_FILES_INTERVAL_S", 0.0)
    monkeypatch.setattr(retention, "DELETE_CONSUME_QUEUE_FILES_INTERVAL_S", 0.0)


def message(number: int, queue_id: int = 0) -> codec.Message:
    body = f"message-{number}-".encode().ljust(100, b".")
    return codec.Message("Orders", body=body, queue_id=queue_id, properties={"KEYS": f"key-{number}"})


def fill(store: MessageStore, count: int, queues: int = 1) -> None:
    for number in range(count):
        store.put_message(message(number, number % queues))
    assert store.wait_dispatched(store.commit_log.max_offset, 10)
    store.flush()  # no dirty page left: a later writeback would bump the mtimes the tests set


def age(path: Path, hours: float) -> None:
    when = NOW.timestamp() - hours * 3600
    os.utime(path, (when, when))


def commitlog_paths(store: MessageStore) -> list[Path]:
    return [mapped_file.path for mapped_file in store.commit_log.mapped_file_queue.mapped_files]


def pinned_disk(store: MessageStore, ratio: float) -> None:
    store.clean_service.disk_usage = lambda _path: ratio


@contextlib.contextmanager
def started(root: Path, config: StoreConfig = SMALL, disk: float = LOW_DISK) -> Iterator[MessageStore]:
    """A running store whose disk usage reads `disk`, whatever this machine's disk holds."""
    with MessageStore(root, config) as store:
        pinned_disk(store, disk)
        yield store


# ---- the decision ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("delete_when", "hour", "deletes"),
    [("04", 4, True), ("04", 5, False), ("04", 3, False), ("03;04", 3, True), ("03;04", 4, True)],
)
def test_delete_when_hours_trigger_deletion_of_expired_files(delete_when, hour, deletes):
    config = dataclasses.replace(SMALL, delete_when=delete_when)
    decision = decide_clean(datetime(2024, 5, 1, hour, 17), config, LOW_DISK)
    assert decision.delete is deletes and decision.time_up is deletes
    assert not decision.clean_immediately
    if deletes:
        assert decision.reason == f"it is {hour:02d}:17 (deleteWhen {delete_when})"
    else:
        assert decision.reason.startswith(f"not deleting: it is {hour:02d}:17")


@pytest.mark.parametrize(
    ("ratio", "deletes", "immediately", "disk_full", "reason"),
    [
        (0.75, False, False, False, "disk 75% used <= 75%"),
        (0.80, True, False, False, "disk 80% used > 75% (diskMaxUsedSpaceRatio)"),
        (0.85, True, False, False, "disk 85% used > 75% (diskMaxUsedSpaceRatio)"),
        (0.86, True, True, False, "disk 86% used > 85% (forcibly)"),
        (0.91, True, True, True, "disk 91% used > 90% (warning level: forcibly, disk full)"),
        (None, True, False, False, "disk usage unknown: treated as full, as RocketMQ treats -1"),
    ],
)
def test_disk_usage_over_the_ratios_deletes_and_cleans_immediately(
    ratio, deletes, immediately, disk_full, reason
):
    decision = decide_clean(NOT_AN_HOUR, SMALL, ratio)
    assert (decision.delete, decision.clean_immediately, decision.disk_full) == (
        deletes,
        immediately,
        disk_full,
    )
    assert reason in decision.reason
    assert decision.disk_used_ratio == ratio


def test_without_clean_file_forcibly_a_full_disk_deletes_expired_files_only():
    config = dataclasses.replace(SMALL, clean_file_forcibly_enable=False)
    decision = decide_clean(NOT_AN_HOUR, config, 0.95)
    assert decision.delete and decision.disk_over_ratio and not decision.clean_immediately
    assert "cleanFileForciblyEnable is off" in decision.reason


def test_a_manual_request_deletes_at_any_hour():
    decision = decide_clean(NOT_AN_HOUR, SMALL, LOW_DISK, manual_request=True)
    assert decision.delete and decision.manual and not decision.clean_immediately
    assert decision.reason == "manual request"


def test_several_reasons_are_all_named():
    config = dataclasses.replace(SMALL, delete_when="13")
    decision = decide_clean(NOT_AN_HOUR, config, 0.86, manual_request=True)
    assert decision.reason == "it is 13:30 (deleteWhen 13); disk 86% used > 85% (forcibly); manual request"


@pytest.mark.parametrize(
    ("percents", "clamped"),
    [
        ((75, 90, 85), (0.75, 0.90, 0.85)),
        ((5, 99, 99), (0.10, 0.90, 0.85)),
        ((99, 20, 10), (0.95, 0.35, 0.30)),
    ],
)
def test_ratios_are_clamped_as_rocketmq_getters_clamp_them(percents, clamped):
    thresholds = DiskThresholds.from_percents(*percents)
    assert (thresholds.max_used, thresholds.warning_level, thresholds.clean_forcibly) == clamped


def test_clamped_ratios_drive_the_decision():
    config = dataclasses.replace(SMALL, disk_max_used_space_ratio=1)  # clamped to 10 %
    assert decide_clean(NOT_AN_HOUR, config, 0.11).disk_over_ratio
    assert not decide_clean(NOT_AN_HOUR, config, 0.10).disk_over_ratio
    low_warning = decide_clean(NOT_AN_HOUR, SMALL, 0.36, warning_level_percent=20)  # clamped to 35 %
    assert low_warning.disk_full and low_warning.clean_immediately


def test_a_delete_when_that_is_not_hours_is_refused():
    with pytest.raises(ValueError, match="'x' is not an hour"):
        decide_clean(NOT_AN_HOUR, dataclasses.replace(SMALL, delete_when="04;x"), LOW_DISK)


def test_disk_usage_is_used_over_used_plus_usable_rounded_up(monkeypatch, tmp_path):
    ratio = disk_partition_used_ratio(tmp_path)
    assert ratio is not None and 0 < ratio <= 1
    assert disk_partition_used_ratio(tmp_path / "missing") is None
    fake = os.statvfs_result((4096, 4096, 1000, 100, 50, 0, 0, 0, 0, 255))
    monkeypatch.setattr(os, "statvfs", lambda _path: fake)
    # 900 used, 50 usable to non-root: 900 / 950 = 94.7 %, rounded up as RocketMQ (and df) do
    assert disk_partition_used_ratio(tmp_path) == 0.95


# ---- CommitLog files by age ------------------------------------------------------------------------------


def test_expired_files_go_oldest_first_stopping_at_the_first_unexpired(tmp_path: Path):
    with started(tmp_path) as store:
        fill(store, 2200)
        paths = commitlog_paths(store)
        assert len(paths) >= 6
        for path in paths:
            age(path, OLD_HOURS)
        age(paths[3], FRESH_HOURS)  # the files after it are old, but deleting them would leave a hole

        report = store.clean(NOW)

        assert report.names(StoreFileKind.COMMITLOG) == [path.name for path in paths[:3]]
        assert [path.exists() for path in paths] == [False] * 3 + [True] * (len(paths) - 3)
        assert commitlog_paths(store) == paths[3:]
        assert report.commitlog_min_offset_before == 0
        assert report.commitlog_min_offset_after == store.commit_log.min_offset == 3 * SEGMENT
        assert report.decision.manual and not report.decision.clean_immediately
        assert all(
            "h ago >= fileReservedTime 72 h" in d.reason for d in report.files(StoreFileKind.COMMITLOG)
        )
        assert report.bytes_freed >= 3 * SEGMENT
        assert report.disk_used_ratio_before == report.disk_used_ratio_after == LOW_DISK
        assert store.clean_service.manual_runs_left == retention.MANUAL_DELETE_RUNS - 1


def test_the_last_file_is_never_deleted_even_when_cleaning_immediately(tmp_path: Path):
    with started(tmp_path, disk=0.91) as store:
        fill(store, 1500)
        paths = commitlog_paths(store)
        for path in paths:
            age(path, FRESH_HOURS)  # nothing has expired: only the full disk deletes

        report = store.clean_service.run_once(NOT_AN_HOUR)

        assert report.decision.clean_immediately and report.decision.disk_full
        assert report.names(StoreFileKind.COMMITLOG) == [path.name for path in paths[:-1]]
        assert commitlog_paths(store) == paths[-1:] and paths[-1].exists()
        assert all(d.reason.startswith("clean immediately") for d in report.files(StoreFileKind.COMMITLOG))
        assert store.clean_service.run_once(NOT_AN_HOUR).names(StoreFileKind.COMMITLOG) == []


def test_nothing_is_deleted_outside_delete_when_on_an_empty_disk(tmp_path: Path):
    with started(tmp_path) as store:
        fill(store, 1000)
        paths = commitlog_paths(store)
        for path in paths:
            age(path, OLD_HOURS)
        report = store.clean_service.run_once(NOT_AN_HOUR)
        assert not report.decision.delete and report.deletions == ()
        assert all(path.exists() for path in paths)


def test_a_run_deletes_at_most_a_batch_spaced_by_the_delete_interval(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(retention, "DELETE_FILE_BATCH_MAX", 2)
    monkeypatch.setattr(retention, "DELETE_COMMITLOG_FILES_INTERVAL_S", 0.2)
    with started(tmp_path) as store:
        fill(store, 1500)
        for path in commitlog_paths(store):
            age(path, OLD_HOURS)
        began = time.monotonic()
        report = store.clean(NOW)
        assert len(report.files(StoreFileKind.COMMITLOG)) == 2
        assert time.monotonic() - began >= 0.2


# ---- consume queues and index by offset ----------------------------------------------------------------


def test_consume_queue_files_below_the_new_minimum_go_and_consumers_skip_ahead(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(retention, "DELETE_FILE_BATCH_MAX", 100)  # all but the last file in one run
    with started(tmp_path) as store:
        fill(store, 4000, queues=2)
        paths = commitlog_paths(store)
        for path in paths[:-1]:
            age(path, OLD_HOURS)
        queue = store.consume_queues.find("Orders", 1)
        entries = [physical for _queue_offset, physical, _size, _tags in queue.entries(0, 1 << 30)]
        files_before = [mapped_file.path for mapped_file in queue.mapped_file_queue.mapped_files]

        report = store.clean(NOW)

        new_min = store.commit_log.min_offset
        assert new_min == int(paths[-1].name)
        # A file goes when its last entry points below the minimum; the first one left still may hold some.
        last_entries = entries[CQ_ENTRIES_PER_FILE - 1 :: CQ_ENTRIES_PER_FILE]
        expected_gone = [
            path for path, last in zip(files_before, last_entries, strict=False) if last < new_min
        ]
        assert expected_gone and len(expected_gone) < len(files_before)
        deleted = {d.path for d in report.files(StoreFileKind.CONSUME_QUEUE)}
        assert set(expected_gone) <= deleted
        assert not any(path.exists() for path in expected_gone)
        assert all(path.exists() for path in files_before[len(expected_gone) :])

        first_kept = next(offset for offset, physical in enumerate(entries) if physical >= new_min)
        assert first_kept > len(expected_gone) * CQ_ENTRIES_PER_FILE, "some entries of a kept file are stale"
        assert queue.min_offset_in_queue == first_kept

        too_small = store.get_messages("Orders", 1, 0)
        assert too_small.status is GetStatus.OFFSET_TOO_SMALL
        assert too_small.next_begin_offset == too_small.min_offset == first_kept
        found = store.get_messages("Orders", 1, too_small.next_begin_offset, 5)
        assert found.status is GetStatus.FOUND and found.messages[0].queue_offset == first_kept
        assert found.messages[0].physical_offset >= new_min
        assert codec.decode_record(found.messages[0].data).queue_id == 1


def test_index_files_wholly_below_the_new_minimum_are_deleted(tmp_path: Path):
    with started(tmp_path) as store:
        fill(store, 2200)
        index_files = [(f.path, f.end_phy_offset) for f in store.index_service.files]
        assert len(index_files) >= 4
        for path in commitlog_paths(store)[:3]:
            age(path, OLD_HOURS)

        report = store.clean(NOW)

        new_min = store.commit_log.min_offset
        expected = [path for path, end in index_files[:-1] if end < new_min]
        assert expected and len(expected) < len(index_files) - 1, "the test wants some files kept too"
        assert [d.path for d in report.files(StoreFileKind.INDEX)] == expected
        assert not any(path.exists() for path in expected)
        assert [f.path for f in store.index_service.files] == [
            path for path, _end in index_files[len(expected) :]
        ]
        assert store.index_service.files[0].end_phy_offset >= new_min


def test_queues_and_index_are_cleaned_only_when_the_commitlog_minimum_moves(tmp_path: Path):
    with started(tmp_path) as store:
        fill(store, 1500)
        for path in commitlog_paths(store)[:2]:
            age(path, OLD_HOURS)
        first = store.clean(NOW)
        assert first.files(StoreFileKind.CONSUME_QUEUE) and first.files(StoreFileKind.INDEX)
        again = store.clean(NOW)
        assert again.deletions == () and again.commitlog_min_offset_after == first.commitlog_min_offset_after


# ---- readers holding a file ------------------------------------------------------------------------------


def test_a_reader_holding_a_segment_delays_its_destruction_until_release(tmp_path: Path):
    config = dataclasses.replace(SMALL, destroy_mapped_file_interval_forcibly_ms=10_000)
    with started(tmp_path, config) as store:
        fill(store, 1000)
        first = store.commit_log.mapped_file_queue.first_file
        for path in commitlog_paths(store):
            age(path, OLD_HOURS)
        assert first.hold()
        held_for_s = 0.5
        threading.Timer(held_for_s, first.release).start()
        began = time.monotonic()
        report = store.clean(NOW)
        elapsed = time.monotonic() - began
        assert first.path.name in report.names(StoreFileKind.COMMITLOG)
        assert held_for_s <= elapsed < 5, "destroy waited for the release, not for the forcible timeout"
        assert not first.path.exists()


def test_a_reader_that_never_releases_is_overridden_after_the_forcible_interval(tmp_path: Path):
    config = dataclasses.replace(SMALL, destroy_mapped_file_interval_forcibly_ms=300)
    with started(tmp_path, config) as store:
        fill(store, 1000)
        first = store.commit_log.mapped_file_queue.first_file
        for path in commitlog_paths(store):
            age(path, OLD_HOURS)
        assert first.hold()
        view = first.select(0, 64)
        began = time.monotonic()
        report = store.clean(NOW)
        assert 0.3 <= time.monotonic() - began < 5
        assert first.path.name in report.names(StoreFileKind.COMMITLOG) and not first.path.exists()
        (total_size,) = struct.unpack_from(">i", view)
        assert total_size > 0, "the reader's view of the unlinked file is still valid memory"
        view.release()
        first.release()


# ---- the dry run -----------------------------------------------------------------------------------------


def tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for directory, subdirectories, files in sorted(os.walk(root)):
        subdirectories.sort()
        digest.update(f"D {Path(directory).relative_to(root)}\n".encode())
        for name in sorted(files):
            path = Path(directory) / name
            stat = path.stat()
            digest.update(f"F {path.relative_to(root)} {stat.st_size} {stat.st_mtime_ns}\n".encode())
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


@pytest.mark.parametrize("disk", [LOW_DISK, 0.91])
def test_the_dry_run_names_what_a_real_run_deletes_and_changes_nothing(tmp_path: Path, disk: float):
    with started(tmp_path) as store:
        fill(store, 3000, queues=3)
        paths = commitlog_paths(store)
        for path in paths:
            age(path, OLD_HOURS)
        age(paths[4], FRESH_HOURS)
    before = tree_digest(tmp_path)

    plan = plan_clean(tmp_path, SMALL, NOW, manual_request=True, disk_usage=lambda _path: disk)

    assert tree_digest(tmp_path) == before
    assert plan.problems == ()
    assert plan.decision.clean_immediately is (disk > 0.85)
    with started(tmp_path, disk=disk) as store:
        report = store.clean(NOW)
    assert report.decision == plan.decision
    assert {d.kind for d in plan.deletions} == set(StoreFileKind)
    assert set(plan.deletions) == set(report.deletions)
    assert plan.commitlog_min_offset_after == report.commitlog_min_offset_after
    assert plan.bytes_freed == report.bytes_freed


def test_the_dry_run_never_plans_the_file_being_written_when_the_next_is_made_ahead(tmp_path: Path):
    with started(tmp_path) as store:
        fill(store, 1500)
        paths = commitlog_paths(store)
    made_ahead = paths[-1].with_name(f"{int(paths[-1].name) + SEGMENT:020d}")
    made_ahead.write_bytes(bytes(SEGMENT))  # what AllocateMappedFileService leaves beside a running writer

    plan = plan_clean(tmp_path, SMALL, NOW, disk_usage=lambda _path: 0.91)

    assert plan.decision.clean_immediately
    assert plan.names(StoreFileKind.COMMITLOG) == [path.name for path in paths[:-1]]
    with started(tmp_path, disk=0.91) as store:  # recovery drops the unwritten file, as RocketMQ's does
        assert set(store.clean(NOW).deletions) == set(plan.deletions)
        assert commitlog_paths(store) == paths[-1:]


def test_the_dry_run_outside_delete_when_plans_nothing(tmp_path: Path):
    with started(tmp_path) as store:
        fill(store, 1000)
        for path in commitlog_paths(store):
            age(path, OLD_HOURS)
    plan = plan_clean(tmp_path, SMALL, NOT_AN_HOUR, disk_usage=lambda _path: LOW_DISK)
    assert not plan.decision.delete and plan.deletions == ()
    assert plan.commitlog_min_offset_after == plan.commitlog_min_offset_before == 0


# ---- the scheduled task ----------------------------------------------------------------------------------


def test_the_scheduler_runs_the_clean_task_after_its_first_delay(tmp_path: Path, monkeypatch):
    with started(tmp_path) as store:
        fill(store, 1500)
        paths = commitlog_paths(store)
    first_delay_s = 1.0
    monkeypatch.setattr(retention, "CLEAN_FIRST_DELAY_S", first_delay_s)
    monkeypatch.setattr(retention, "CLEAN_RESOURCE_INTERVAL_S", 0.05)
    hour = datetime.now().hour
    config = dataclasses.replace(SMALL, delete_when=f"{hour};{(hour + 1) % 24}")  # safe across the hour
    wall_now = time.time()
    for path in paths[:2]:
        os.utime(path, (wall_now - OLD_HOURS * 3600, wall_now - OLD_HOURS * 3600))

    began = time.monotonic()
    with started(tmp_path, config) as store:
        runs_at: list[float] = []
        run_once = store.clean_service.run_once
        monkeypatch.setattr(
            store.clean_service, "run_once", lambda: (runs_at.append(time.monotonic()), run_once())[1]
        )
        queue = store.consume_queues.find("Orders", 0)
        # One run deletes the CommitLog files, then the ConsumeQueue files below the new minimum: wait for the
        # end state, which a loaded machine may reach several ticks later.
        assert wait_for(lambda: not paths[1].exists() and queue.min_offset_in_queue > 0), (
            "the clean never ran"
        )
        assert not paths[0].exists() and paths[2].exists()
        assert store.commit_log.min_offset == 2 * SEGMENT
        assert runs_at and min(runs_at) - began >= first_delay_s, "nothing runs during the first delay"


def wait_for(condition, timeout_s: float = 30.0) -> bool:
    """Poll `condition` until it holds; False after `timeout_s` (a deadline, not a timing assumption)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_the_scheduled_task_is_a_no_op_before_the_first_delay():
    clock = [100.0]
    service = CleanService(SMALL, None, None, None, clock=lambda: clock[0])  # never reached before the delay
    assert service.run_scheduled() is None
    clock[0] += retention.CLEAN_FIRST_DELAY_S - 1
    assert service.run_scheduled() is None


def test_manual_clean_needs_a_running_store(tmp_path: Path):
    store = MessageStore(tmp_path, SMALL)
    with pytest.raises(StoreNotRunning):
        store.clean(NOW)
