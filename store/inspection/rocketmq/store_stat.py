"""`store stat`: a RocketMQ store at a glance (`StoreStat`), reached through `store.inspection.formats`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from store.checkpoint import (
    StoreRunState,
    abort_file_state,
    probe_store_lock,
    read_checkpoint,
    store_run_state,
)
from store.consume_queue_format import iter_entries, queue_bounds
from store.errors import CorruptRecord, StoreError
from store.index_file import IndexFile
from store.inspection.log_format import vanishing_files_are_store_changes
from store.inspection.rocketmq.reading import (
    LogEnd,
    ProblemView,
    commitlog_min_offset,
    find_log_end,
    loadable_commitlog,
    open_layout,
    problem_views,
)
from store.inspection.rocketmq.record_views import iso_time_ms
from store.layout import ConsumeQueueDir, SegmentQueue, StoreLayout


@dataclass(frozen=True, kw_only=True)
class CommitLogSummary:
    segment_count: int
    segment_size_bytes: int | None
    total_size_bytes: int
    first_segment: str | None
    last_segment: str | None
    min_physical_offset: int
    max_physical_offset: int  # end of the last valid record (CRC checked)
    end: LogEnd


@dataclass(frozen=True)
class QueueSummary:
    topic: str
    queue_id: int
    segment_count: int
    min_queue_offset: int
    max_queue_offset: int  # the next queue offset to be written
    message_count: int
    dispatched_to_physical_offset: int | None  # offset + size of the last entry


@dataclass(frozen=True)
class CheckpointSummary:
    path: Path
    file_size_bytes: int
    physic_msg_timestamp_ms: int
    physic_msg_time_iso: str | None
    logics_msg_timestamp_ms: int
    logics_msg_time_iso: str | None
    index_msg_timestamp_ms: int
    index_msg_time_iso: str | None
    master_flushed_offset: int | None  # None: the file ends before the field (written before 5.0.0)
    confirm_phy_offset: int | None  # None: the file ends before the field (written before 5.1.1)
    recovery_from_timestamp_ms: int  # StoreCheckpoint.getMinTimestamp: min(physic, logics) - 3 s
    recovery_from_time_iso: str | None


@dataclass(frozen=True)
class RunStateSummary:
    state: StoreRunState
    lock_held: bool
    lock_holder_pid: int | None
    abort_file_present: bool
    abort_file_pid: int | None
    abort_file_pid_alive: bool | None


@dataclass(frozen=True)
class IndexSummary:
    file_count: int
    entry_count: int
    unreadable: tuple[str, ...]


@dataclass(frozen=True)
class DispatchSummary:
    commitlog_max_physical_offset: int
    consume_queue_max_physical_offset: int | None  # None: no consume queue has an entry
    dispatch_behind_bytes: int  # negative: consume queues point past the end of the log


@dataclass(frozen=True, kw_only=True)
class StoreStat:
    schema: str = "mqinspect.store.stat/v1"
    root: Path
    commitlog: CommitLogSummary
    topic_count: int
    queue_count: int
    consume_queues: tuple[QueueSummary, ...]
    checkpoint: CheckpointSummary | None
    checkpoint_problem: str | None
    run_state: RunStateSummary
    index: IndexSummary
    config_files: tuple[str, ...]
    dispatch: DispatchSummary
    layout_problems: tuple[ProblemView, ...]


@vanishing_files_are_store_changes
def store_stat(root: Path) -> StoreStat:
    """Everything about a store at a glance. Costs one full read of the last written CommitLog segment."""
    layout = open_layout(root)
    queues = tuple(queue_summary(cq, commitlog_min_offset(layout)) for cq in layout.consume_queues)
    commitlog = _commitlog_summary(loadable_commitlog(layout), newest_dispatched_record(layout, queues))
    checkpoint, checkpoint_problem = _checkpoint_summary(layout)
    return StoreStat(
        root=layout.root,
        commitlog=commitlog,
        topic_count=len(layout.topics),
        queue_count=len(queues),
        consume_queues=queues,
        checkpoint=checkpoint,
        checkpoint_problem=checkpoint_problem,
        run_state=_run_state_summary(layout.root),
        index=_index_summary(layout),
        config_files=_config_files(layout),
        dispatch=_dispatch_summary(commitlog, queues),
        layout_problems=problem_views(layout, include_commitlog=True),
    )


def _commitlog_summary(queue: SegmentQueue, dispatched: tuple[int, int] | None) -> CommitLogSummary:
    segments = queue.segments
    end = find_log_end(queue, dispatched)
    return CommitLogSummary(
        segment_count=len(segments),
        segment_size_bytes=queue.file_size,
        total_size_bytes=sum(segment.size_bytes for segment in segments),
        first_segment=segments[0].path.name if segments else None,
        last_segment=segments[-1].path.name if segments else None,
        min_physical_offset=segments[0].file_from_offset if segments else 0,
        max_physical_offset=end.physical_offset,
        end=end,
    )


def queue_summary(cq: ConsumeQueueDir, log_min_offset: int) -> QueueSummary:
    """One ConsumeQueue's bounds (entries below `log_min_offset`, the CommitLog's first, do not count) and
    where in the CommitLog its last entry's record ends."""
    minimum, maximum = queue_bounds(cq.queue, log_min_offset)
    last = next(iter_entries(cq.queue, maximum - 1), None) if maximum > minimum else None
    return QueueSummary(
        topic=cq.topic,
        queue_id=cq.queue_id,
        segment_count=len(cq.queue.segments),
        min_queue_offset=minimum,
        max_queue_offset=maximum,
        message_count=maximum - minimum,
        dispatched_to_physical_offset=last.physical_offset + last.size_bytes if last else None,
    )


def newest_dispatched_record(layout: StoreLayout, queues: Sequence[QueueSummary]) -> tuple[int, int] | None:
    """(physical offset, size) of the newest record any ConsumeQueue points at."""
    newest = max(
        (queue for queue in queues if queue.dispatched_to_physical_offset is not None),
        key=lambda queue: queue.dispatched_to_physical_offset,
        default=None,
    )
    if newest is None:
        return None
    cq = layout.consume_queue(newest.topic, newest.queue_id)
    entry = next(iter_entries(cq.queue, newest.max_queue_offset - 1), None) if cq else None
    return (entry.physical_offset, entry.size_bytes) if entry else None


def _checkpoint_summary(layout: StoreLayout) -> tuple[CheckpointSummary | None, str | None]:
    if layout.checkpoint is None:
        return None, f"{layout.root / 'checkpoint'}: missing"
    try:
        values = read_checkpoint(layout.checkpoint)
    except CorruptRecord as error:
        return None, str(error)
    return (
        CheckpointSummary(
            path=layout.checkpoint,
            file_size_bytes=values.file_size,
            physic_msg_timestamp_ms=values.physic_msg_timestamp,
            physic_msg_time_iso=iso_time_ms(values.physic_msg_timestamp),
            logics_msg_timestamp_ms=values.logics_msg_timestamp,
            logics_msg_time_iso=iso_time_ms(values.logics_msg_timestamp),
            index_msg_timestamp_ms=values.index_msg_timestamp,
            index_msg_time_iso=iso_time_ms(values.index_msg_timestamp),
            master_flushed_offset=values.master_flushed_offset,
            confirm_phy_offset=values.confirm_phy_offset,
            recovery_from_timestamp_ms=values.min_timestamp(),
            recovery_from_time_iso=iso_time_ms(values.min_timestamp()),
        ),
        None,
    )


def _run_state_summary(root: Path) -> RunStateSummary:
    lock = probe_store_lock(root)
    abort = abort_file_state(root)
    return RunStateSummary(
        state=store_run_state(root),
        lock_held=lock.locked,
        lock_holder_pid=lock.holder_pid,
        abort_file_present=abort.present,
        abort_file_pid=abort.pid,
        abort_file_pid_alive=abort.pid_alive,
    )


def _index_summary(layout: StoreLayout) -> IndexSummary:
    entries, unreadable = 0, []
    for path in layout.index_files:
        try:
            with IndexFile.open(path) as index_file:
                entries += index_file.header.entry_count
        except StoreError as error:
            unreadable.append(str(error))
    return IndexSummary(len(layout.index_files), entries, tuple(unreadable))


def _config_files(layout: StoreLayout) -> tuple[str, ...]:
    if layout.config_dir is None:
        return ()
    with os.scandir(layout.config_dir) as listing:
        return tuple(sorted(entry.name for entry in listing if entry.is_file()))


def _dispatch_summary(commitlog: CommitLogSummary, queues: tuple[QueueSummary, ...]) -> DispatchSummary:
    ends = [q.dispatched_to_physical_offset for q in queues if q.dispatched_to_physical_offset is not None]
    dispatched = max(ends) if ends else None
    # With no entry at all, nothing of the log has been dispatched yet.
    behind_from = dispatched if dispatched is not None else commitlog.min_physical_offset
    return DispatchSummary(
        commitlog_max_physical_offset=commitlog.max_physical_offset,
        consume_queue_max_physical_offset=dispatched,
        dispatch_behind_bytes=commitlog.max_physical_offset - behind_from,
    )
