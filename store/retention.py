"""Retention: deleting expired store files, as RocketMQ's `DefaultMessageStore.CleanCommitLogService` and
`CleanConsumeQueueService` do (`cleanFilesPeriodically`, first run 60 s after start, then every 10 s).

Three pieces share one rule set:
- `decide_clean`: the pure decision, whether to delete now and whether to ignore file ages;
- `CleanService`: deletes on a running store (CommitLog files by age, then consume queue and index files by
  offset against the new CommitLog minimum), reusing the MappedFileQueue deletions and their hold/release;
- `plan_clean`: the same decision and the same walks on a store directory that is not opened (stat and
  pread only), naming what a run would delete now, for `mqinspect store clean DIR --dry-run`.

The MessageStoreConfig settings below have no StoreConfig field, so they are module constants; tests
patch them.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import NamedTuple

from store.commitlog import CommitLog
from store.config import CQ_STORE_UNIT_SIZE, StoreConfig
from store.consume_queue import ConsumeQueue, ConsumeQueueStore
from store.consume_queue_format import ENTRY
from store.index_file import INDEX_HEADER_SIZE, IndexHeader, IndexService
from store.layout import SegmentFile, SegmentQueue, StoreLayout, discover_store
from store.mapped_file import MappedFile
from store.safe_read import PreadFile

log = logging.getLogger(__name__)

CLEAN_FIRST_DELAY_S = 60.0  # DefaultMessageStore.addScheduleTask: cleanFilesPeriodically starts after 60 s
CLEAN_RESOURCE_INTERVAL_S = 10.0  # cleanResourceInterval = 10,000 ms
DISK_SPACE_WARNING_LEVEL_RATIO = 90  # diskSpaceWarningLevelRatio, percent (clamped 35..90)
DISK_SPACE_CLEAN_FORCIBLY_RATIO = 85  # diskSpaceCleanForciblyRatio, percent (clamped 30..85)
DELETE_COMMITLOG_FILES_INTERVAL_S = 0.1  # deleteCommitLogFilesInterval = 100 ms
DELETE_CONSUME_QUEUE_FILES_INTERVAL_S = 0.1  # deleteConsumeQueueFilesInterval = 100 ms
DELETE_FILE_BATCH_MAX = 10  # deleteFileBatchMax
MANUAL_DELETE_RUNS = 20  # CleanCommitLogService.MAX_MANUAL_DELETE_FILE_TIMES

_MS_PER_HOUR = 3_600_000

DiskUsage = Callable[[Path], float | None]


class StoreFileKind(StrEnum):
    COMMITLOG = "commitlog"
    CONSUME_QUEUE = "consumequeue"
    INDEX = "index"


# ---- disk usage ------------------------------------------------------------------------------------------


def disk_partition_used_ratio(path: str | os.PathLike[str]) -> float | None:
    """`UtilAll.getDiskPartitionSpaceUsedPercent` (RocketMQ 5.x): used / (used + usable), rounded up to a
    whole percent, as a fraction (0.91 for 91 %). That is what `df` shows: root's reserved blocks count as
    neither used nor usable. None where RocketMQ returns -1 (no such path, statvfs failed, empty fs).

    RocketMQ 4.x computed (total - free) / total, i.e. (f_blocks - f_bfree) / f_blocks, which reads a few
    points lower on a filesystem with reserved blocks.
    """
    try:
        stats = os.statvfs(path)
    except OSError:
        return None
    used = (stats.f_blocks - stats.f_bfree) * stats.f_frsize
    entire = used + stats.f_bavail * stats.f_frsize
    if stats.f_blocks <= 0 or entire <= 0:
        return None
    return -(-used * 100 // entire) / 100  # ceiling division: Java adds 1 when there is a remainder


# ---- the decision ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DiskThresholds:
    """The three usage ratios (fractions), clamped as RocketMQ's getters clamp them."""

    max_used: float  # MessageStoreConfig.getDiskMaxUsedSpaceRatio: 10..95 %
    warning_level: float  # CleanCommitLogService.getDiskSpaceWarningLevelRatio: 35..90 %
    clean_forcibly: float  # CleanCommitLogService.getDiskSpaceCleanForciblyRatio: 30..85 %

    @classmethod
    def from_percents(
        cls,
        max_used_percent: float,
        warning_level_percent: float = DISK_SPACE_WARNING_LEVEL_RATIO,
        clean_forcibly_percent: float = DISK_SPACE_CLEAN_FORCIBLY_RATIO,
    ) -> DiskThresholds:
        return cls(
            max_used=_clamp(max_used_percent, 10, 95) / 100,
            warning_level=_clamp(warning_level_percent, 35, 90) / 100,
            clean_forcibly=_clamp(clean_forcibly_percent, 30, 85) / 100,
        )


def _clamp(value: float, low: float, high: float) -> float:
    return min(max(value, low), high)


@dataclass(frozen=True)
class CleanDecision:
    """What `CleanCommitLogService.deleteExpiredFiles` decides before it deletes anything."""

    delete: bool  # delete expired CommitLog files this run
    clean_immediately: bool  # ignore file ages (cleanAtOnce): delete from the oldest regardless
    reason: str  # why (or why not), for logs and the dry run
    time_up: bool  # isTimeToDelete: the hour is one of deleteWhen
    disk_over_ratio: bool  # isSpaceToDelete: usage above a threshold, or unmeasurable
    manual: bool  # a manual delete request (executeDeleteFilesManually) is pending
    disk_full: bool  # above the warning level: RocketMQ also marks the disk full and refuses writes
    disk_used_ratio: float | None


def delete_when_hours(delete_when: str) -> tuple[int, ...]:
    """The hours of `deleteWhen` ("04", "03;04"). ValueError for an entry that is not a number, where
    RocketMQ's Integer.parseInt would fail every clean run."""
    hours = []
    for entry in delete_when.split(";"):
        try:
            hours.append(int(entry.strip()))
        except ValueError:
            raise ValueError(f"deleteWhen {delete_when!r}: {entry!r} is not an hour of the day") from None
    return tuple(hours)


def decide_clean(
    now: datetime,
    config: StoreConfig,
    disk_used_ratio: float | None,
    *,
    manual_request: bool = False,
    warning_level_percent: float = DISK_SPACE_WARNING_LEVEL_RATIO,
    clean_forcibly_percent: float = DISK_SPACE_CLEAN_FORCIBLY_RATIO,
) -> CleanDecision:
    """`CleanCommitLogService.deleteExpiredFiles`: delete if it is a deleteWhen hour (`isTimeToDelete`,
    `UtilAll.isItTimeToDo`), or the disk is too full (`isSpaceToDelete`), or a manual request is pending.

    Disk rules, in RocketMQ's order: above the warning level or the clean-forcibly ratio, delete and clean
    immediately (ignore file ages), if `clean_file_forcibly_enable`; above diskMaxUsedSpaceRatio, or when
    usage cannot be measured (RocketMQ's -1), delete expired files only. `now` is local time (a naive
    datetime is taken as local); `disk_used_ratio` is a fraction, as `disk_partition_used_ratio` returns.
    """
    local_now = now.astimezone()
    hours = delete_when_hours(config.delete_when)
    time_up = local_now.hour in hours
    thresholds = DiskThresholds.from_percents(
        config.disk_max_used_space_ratio, warning_level_percent, clean_forcibly_percent
    )
    disk = _judge_disk(disk_used_ratio, thresholds)
    clean_immediately = disk.clean_immediately and config.clean_file_forcibly_enable
    reasons = []
    if time_up:
        reasons.append(f"it is {local_now:%H:%M} (deleteWhen {config.delete_when})")
    if disk.over_ratio:
        reasons.append(disk.reason)
        if disk.clean_immediately and not clean_immediately:
            reasons.append("cleanFileForciblyEnable is off: expired files only")
    if manual_request:
        reasons.append("manual request")
    delete = time_up or disk.over_ratio or manual_request
    if not delete:
        reasons.append(
            f"not deleting: it is {local_now:%H:%M}, not deleteWhen {config.delete_when}; {disk.reason}"
        )
    return CleanDecision(
        delete=delete,
        clean_immediately=clean_immediately,
        reason="; ".join(reasons),
        time_up=time_up,
        disk_over_ratio=disk.over_ratio,
        manual=manual_request,
        disk_full=disk.full,
        disk_used_ratio=disk_used_ratio,
    )


class _DiskVerdict(NamedTuple):
    over_ratio: bool
    clean_immediately: bool
    full: bool
    reason: str


def _judge_disk(ratio: float | None, thresholds: DiskThresholds) -> _DiskVerdict:
    """`isSpaceToDelete` for one filesystem, in its order: warning level, clean forcibly, max used."""
    if ratio is None:
        return _DiskVerdict(True, False, False, "disk usage unknown: treated as full, as RocketMQ treats -1")
    used = f"disk {_percent(ratio)} used"
    if ratio > thresholds.warning_level:
        limit = _percent(thresholds.warning_level)
        return _DiskVerdict(True, True, True, f"{used} > {limit} (warning level: forcibly, disk full)")
    if ratio > thresholds.clean_forcibly:
        return _DiskVerdict(True, True, False, f"{used} > {_percent(thresholds.clean_forcibly)} (forcibly)")
    limit = _percent(thresholds.max_used)
    if ratio > thresholds.max_used:
        return _DiskVerdict(True, False, False, f"{used} > {limit} (diskMaxUsedSpaceRatio)")
    return _DiskVerdict(False, False, False, f"{used} <= {limit}")


def _percent(ratio: float) -> str:
    return f"{round(ratio * 100, 1):g}%"


# ---- what a run deletes ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileDeletion:
    """One file deleted (by `CleanService`) or to be deleted (by `plan_clean`)."""

    kind: StoreFileKind
    path: Path
    size_bytes: int  # apparent size: a sparse tail frees less
    reason: str

    @property
    def name(self) -> str:
        return self.path.name


class _DeletionSummary:
    deletions: tuple[FileDeletion, ...]

    def files(self, kind: StoreFileKind) -> tuple[FileDeletion, ...]:
        return tuple(deletion for deletion in self.deletions if deletion.kind is kind)

    def names(self, kind: StoreFileKind) -> list[str]:
        return [deletion.name for deletion in self.files(kind)]

    @property
    def bytes_freed(self) -> int:
        return sum(deletion.size_bytes for deletion in self.deletions)


@dataclass(frozen=True)
class CleanReport(_DeletionSummary):
    """What one `CleanService.run_once` did."""

    decision: CleanDecision
    deletions: tuple[FileDeletion, ...]
    commitlog_min_offset_before: int
    commitlog_min_offset_after: int
    disk_used_ratio_before: float | None
    disk_used_ratio_after: float | None


@dataclass(frozen=True)
class CleanPlan(_DeletionSummary):
    """What a clean run would delete now (`plan_clean`); nothing has been touched."""

    root: Path
    decision: CleanDecision
    deletions: tuple[FileDeletion, ...]
    commitlog_min_offset_before: int
    commitlog_min_offset_after: int
    problems: tuple[str, ...]  # layout rule violations: RocketMQ would refuse to load such a store


def _commitlog_reason(mtime_ms: int, now_ms: float, reserved_ms: float) -> str:
    """Expired by age, or else deleted only because the run cleans immediately."""
    age_hours = (now_ms - mtime_ms) / _MS_PER_HOUR
    if now_ms >= mtime_ms + reserved_ms:
        return f"modified {age_hours:.1f} h ago >= fileReservedTime {reserved_ms / _MS_PER_HOUR:g} h"
    return f"clean immediately (modified {age_hours:.1f} h ago)"


def _consume_queue_reason(commitlog_min_offset: int) -> str:
    return f"every entry points below the CommitLog minimum {commitlog_min_offset}"


def _index_reason(end_phy_offset: int, commitlog_min_offset: int) -> str:
    return f"endPhyOffset {end_phy_offset} < CommitLog minimum {commitlog_min_offset}"


def _reserved_ms(config: StoreConfig) -> float:
    return config.file_reserved_hours * _MS_PER_HOUR


def _epoch_ms(now: datetime) -> float:
    return now.timestamp() * 1000


# ---- deleting on a running store ---------------------------------------------------------------------


class CleanService:
    """`DefaultMessageStore.cleanFilesPeriodically`: `CleanCommitLogService.run` then
    `CleanConsumeQueueService.run`, for one running store.

    Runs are serialized (the scheduler and a manual `MessageStore.clean` may meet). `disk_usage` measures
    the CommitLog's filesystem; replace it to pin the disk rules (tests, or a CLI override).
    """

    def __init__(
        self,
        config: StoreConfig,
        commit_log: CommitLog,
        consume_queues: ConsumeQueueStore,
        index_service: IndexService,
        *,
        disk_usage: DiskUsage = disk_partition_used_ratio,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.config = config
        self.disk_usage = disk_usage
        self._commit_log = commit_log
        self._consume_queues = consume_queues
        self._index_service = index_service
        self._clock = clock
        self._created_at = clock()
        self._run_lock = threading.Lock()
        self._manual_runs_left = 0
        self._last_physical_min_offset = 0  # CleanConsumeQueueService.lastPhysicalMinOffset

    def request_manual_delete(self) -> None:
        """`executeDeleteFilesManually`: the next MANUAL_DELETE_RUNS runs delete expired files whatever the
        hour or disk usage."""
        self._manual_runs_left = MANUAL_DELETE_RUNS

    @property
    def manual_runs_left(self) -> int:
        return self._manual_runs_left

    def run_scheduled(self) -> CleanReport | None:
        """The scheduler's task: nothing during the first CLEAN_FIRST_DELAY_S after creation (RocketMQ's
        initial delay, which our scheduler has no notion of), then one `run_once`."""
        if self._clock() - self._created_at < CLEAN_FIRST_DELAY_S:
            return None
        report = self.run_once()
        if report.deletions:
            log.info(
                "retention deleted %d file(s), %d bytes (%s)",
                len(report.deletions),
                report.bytes_freed,
                report.decision.reason,
            )
        return report

    def run_once(self, now: datetime | None = None) -> CleanReport:
        """One clean run: decide at `now` (default: the current local time), delete expired CommitLog files,
        then the consume queue and index files left wholly below the new CommitLog minimum."""
        now = now or datetime.now().astimezone()
        with self._run_lock:
            directory = self._commit_log.mapped_file_queue.store_path
            ratio_before = self.disk_usage(directory)
            decision = decide_clean(now, self.config, ratio_before, manual_request=self._manual_runs_left > 0)
            min_before = self._commit_log.min_offset
            deletions: list[FileDeletion] = []
            if decision.delete:
                if decision.manual:
                    self._manual_runs_left -= 1
                deletions += self._delete_commitlog_files(decision, _epoch_ms(now))
            deletions += self._clean_consume_queues_and_index()
            return CleanReport(
                decision=decision,
                deletions=tuple(deletions),
                commitlog_min_offset_before=min_before,
                commitlog_min_offset_after=self._commit_log.min_offset,
                disk_used_ratio_before=ratio_before,
                disk_used_ratio_after=self.disk_usage(directory) if deletions else ratio_before,
            )

    def _delete_commitlog_files(self, decision: CleanDecision, now_ms: float) -> list[FileDeletion]:
        """`CommitLog.deleteExpiredFile` → `MappedFileQueue.deleteExpiredFileByTime`: oldest first, never the
        last file, stopping at the first unexpired one unless cleaning immediately; each destroy waits for
        readers up to destroyMapedFileIntervalForcibly."""
        queue = self._commit_log.mapped_file_queue
        # Stat before deleting: afterwards the files are gone. Only a batch's worth can go in one run.
        leading = [_describe(mapped_file) for mapped_file in queue.mapped_files[:-1][:DELETE_FILE_BATCH_MAX]]
        reserved_ms = _reserved_ms(self.config)
        # The queue judges ages by the wall clock; shift the threshold so they are judged at `now`.
        wall_shift_ms = now_ms - time.time() * 1000
        deleted = queue.delete_expired_by_time(
            reserved_ms - wall_shift_ms,
            delete_interval_s=DELETE_COMMITLOG_FILES_INTERVAL_S,
            destroy_timeout_s=self.config.destroy_mapped_file_interval_forcibly_ms / 1000,
            clean_immediately=decision.clean_immediately,
            batch_max=DELETE_FILE_BATCH_MAX,
        )
        return [
            FileDeletion(
                StoreFileKind.COMMITLOG,
                path,
                size,
                _commitlog_reason(mtime_ms, now_ms, reserved_ms),
            )
            for path, size, mtime_ms in leading[:deleted]
        ]

    def _clean_consume_queues_and_index(self) -> list[FileDeletion]:
        """`CleanConsumeQueueService.deleteExpiredFiles`: only when the CommitLog minimum has moved since the
        last run, delete each queue's leading files whose entries all point below it (100 ms pause after a
        queue that lost files), then the index files wholly below it."""
        min_offset = self._commit_log.min_offset
        if min_offset <= self._last_physical_min_offset:
            return []
        self._last_physical_min_offset = min_offset
        deletions = []
        reason = _consume_queue_reason(min_offset)
        for queue in self._consume_queues.queues:
            deleted = _delete_expired_consume_queue_files(queue, min_offset)
            deletions += [
                FileDeletion(StoreFileKind.CONSUME_QUEUE, mapped_file.path, mapped_file.file_size, reason)
                for mapped_file in deleted
            ]
            if deleted and DELETE_CONSUME_QUEUE_FILES_INTERVAL_S > 0:
                time.sleep(DELETE_CONSUME_QUEUE_FILES_INTERVAL_S)
        return deletions + self._delete_expired_index_files(min_offset)

    def _delete_expired_index_files(self, min_offset: int) -> list[FileDeletion]:
        """`IndexService.deleteExpiredFile(offset)`."""
        by_name = {
            index_file.name: (index_file.path, index_file.geometry.file_size, index_file.end_phy_offset)
            for index_file in self._index_service.files
        }
        return [
            FileDeletion(StoreFileKind.INDEX, path, size, _index_reason(end_phy_offset, min_offset))
            for name in self._index_service.delete_expired_by_offset(min_offset)
            for path, size, end_phy_offset in [by_name[name]]
        ]


def _describe(mapped_file: MappedFile) -> tuple[Path, int, int]:
    return mapped_file.path, mapped_file.file_size, mapped_file.last_modified


def _delete_expired_consume_queue_files(queue: ConsumeQueue, commitlog_min_offset: int) -> list[MappedFile]:
    """`ConsumeQueueStore.deleteExpiredFile(queue, offset)`: the files deleted, oldest first."""
    files_before = queue.mapped_file_queue.mapped_files
    count = queue.delete_expired_files(commitlog_min_offset)
    return list(files_before[:count])


# ---- the dry run -----------------------------------------------------------------------------------------


def plan_clean(
    root: str | os.PathLike[str],
    config: StoreConfig | None = None,
    now: datetime | None = None,
    *,
    manual_request: bool = False,
    disk_usage: DiskUsage = disk_partition_used_ratio,
) -> CleanPlan:
    """What a clean run of a freshly started store would delete at `now`, without opening the store:
    `discover_store`, stat and pread only, never a write, so it is safe on a store a broker is running.

    Same decision (`decide_clean`) and walks as `CleanService.run_once`: CommitLog files by mtime (a batch
    of DELETE_FILE_BATCH_MAX at most), then consume queue files whose last entry points below the new
    CommitLog minimum, then index files whose endPhyOffset is below it. Segment sizes come from the files.
    """
    config = config or StoreConfig()
    now = now or datetime.now().astimezone()
    layout = discover_store(Path(root))
    decision = decide_clean(
        now, config, disk_usage(layout.commitlog.directory), manual_request=manual_request
    )
    segments = layout.commitlog.loadable_segments
    commitlog = (
        _plan_commitlog(segments, decision, _epoch_ms(now), _reserved_ms(config)) if decision.delete else []
    )
    min_before = segments[0].file_from_offset if segments else -1
    min_after = segments[len(commitlog)].file_from_offset if segments else -1
    # A fresh CleanConsumeQueueService has lastPhysicalMinOffset 0: it cleans once the minimum is above it.
    by_offset = (
        _plan_consume_queues(layout, min_after) + _plan_index(layout, min_after) if min_after > 0 else []
    )
    return CleanPlan(
        root=layout.root,
        decision=decision,
        deletions=tuple(commitlog + by_offset),
        commitlog_min_offset_before=min_before,
        commitlog_min_offset_after=min_after,
        problems=tuple(_layout_problems(layout)),
    )


def _plan_commitlog(
    segments: tuple[SegmentFile, ...], decision: CleanDecision, now_ms: float, reserved_ms: float
) -> list[FileDeletion]:
    """`deleteExpiredFileByTime` on paper: never the last file, stop at the first unexpired one."""
    planned = []
    for segment in _up_to_last_written(segments)[:-1]:
        mtime_ms = _mtime_ms(segment.path)
        if mtime_ms is None:
            break  # deleted under us (a broker's own retention): the rest is the broker's business
        if not (now_ms >= mtime_ms + reserved_ms or decision.clean_immediately):
            break
        reason = _commitlog_reason(mtime_ms, now_ms, reserved_ms)
        planned.append(FileDeletion(StoreFileKind.COMMITLOG, segment.path, segment.size_bytes, reason))
        if len(planned) >= DELETE_FILE_BATCH_MAX:
            break
    return planned


def _up_to_last_written(segments: tuple[SegmentFile, ...]) -> tuple[SegmentFile, ...]:
    """The segments without the trailing ones that hold no record yet.

    A running broker's AllocateMappedFileService makes the next file ahead of the writer, so on disk the
    file being written is not the last one; it is the last one in the broker's queue, and after a restart
    recovery deletes the unwritten file. Either way it is the file that must never be deleted.
    """
    end = len(segments)
    while end > 0 and not _starts_with_a_record(segments[end - 1]):
        end -= 1
    return segments[:end]


def _starts_with_a_record(segment: SegmentFile) -> bool:
    """Every segment starts with a record (or a BLANK): a zero TOTALSIZE means nothing was written."""
    try:
        with PreadFile(segment.path) as reader:
            head = reader.read(0, 4)
    except FileNotFoundError:
        return False
    return len(head) == 4 and head != bytes(4)


def _mtime_ms(path: Path) -> int | None:
    """The mtime in ms as `MappedFile.last_modified` reads it (from st_mtime_ns: no float rounding)."""
    try:
        return os.stat(path).st_mtime_ns // 1_000_000
    except FileNotFoundError:
        return None


def _plan_consume_queues(layout: StoreLayout, commitlog_min_offset: int) -> list[FileDeletion]:
    planned = []
    for consume_queue in layout.consume_queues:
        planned += _plan_consume_queue(consume_queue.queue, commitlog_min_offset)
    return planned


def _plan_consume_queue(queue: SegmentQueue, commitlog_min_offset: int) -> list[FileDeletion]:
    """`deleteExpiredFileByOffset` on paper: leading files (never the last) whose last entry points below
    the CommitLog minimum."""
    planned = []
    segments = queue.loadable_segments
    for segment in segments[:-1]:
        last_entry_offset = _last_entry_physical_offset(segment)
        if last_entry_offset is None or last_entry_offset >= commitlog_min_offset:
            break
        reason = _consume_queue_reason(commitlog_min_offset)
        planned.append(FileDeletion(StoreFileKind.CONSUME_QUEUE, segment.path, segment.size_bytes, reason))
    return planned


def _last_entry_physical_offset(segment: SegmentFile) -> int | None:
    """The CommitLog offset the file's last 20-byte entry points to; None if the file is shorter (a file
    not filled to its end is not expired) or gone."""
    try:
        with PreadFile(segment.path) as reader:
            last = reader.read(segment.size_bytes - CQ_STORE_UNIT_SIZE, CQ_STORE_UNIT_SIZE)
    except FileNotFoundError:
        return None
    return ENTRY.unpack(last)[0] if len(last) == CQ_STORE_UNIT_SIZE else None


def _plan_index(layout: StoreLayout, commitlog_min_offset: int) -> list[FileDeletion]:
    """`IndexService.deleteExpiredFile(offset)` on paper: leading files (never the newest) whose header's
    endPhyOffset is below the CommitLog minimum."""
    planned = []
    for path in layout.index_files[:-1]:
        header_and_size = _read_index_header(path)
        if header_and_size is None or header_and_size[0].end_phy_offset >= commitlog_min_offset:
            break
        header, size = header_and_size
        reason = _index_reason(header.end_phy_offset, commitlog_min_offset)
        planned.append(FileDeletion(StoreFileKind.INDEX, path, size, reason))
    return planned


def _read_index_header(path: Path) -> tuple[IndexHeader, int] | None:
    """The header and the file size; None for a file too short to hold a header, or gone."""
    try:
        with PreadFile(path) as reader:
            data = reader.read(0, INDEX_HEADER_SIZE)
            size = reader.size()
    except FileNotFoundError:
        return None
    return (IndexHeader.unpack(data), size) if len(data) == INDEX_HEADER_SIZE else None


def _layout_problems(layout: StoreLayout) -> Iterable[str]:
    queues = [layout.commitlog, *(consume_queue.queue for consume_queue in layout.consume_queues)]
    problems = [*layout.problems, *(problem for queue in queues for problem in queue.problems)]
    return [f"{problem.path}: {problem.reason}" for problem in problems if problem.fatal]
