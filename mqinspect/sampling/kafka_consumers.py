"""The consumer side of a dashboard snapshot for a Kafka log directory: each group's committed offset per
topic-partition, read from the log dir's `__consumer_offsets` partitions (store.inspection.kafka.committed:
the latest commit wins, a tombstone deletes), against the partition's log end offset, and the consumers
connected to the broker as the sendpath probe sees their sockets (sampling.consumers, unchanged).

The rows are RocketMQ's GroupQueueView, with Kafka's meaning: queue_id is the partition; committed_offset
the next offset the group reads; max_offset the partition's log end offset; lag_messages their difference
(offsets, so a compacted or transactional log's gaps and markers count as Kafka's own lag does); the
physical offsets are positions in the partition's log, its .log segments end to end from the first on
disk: where the batch holding the committed offset starts (through the segment's .index) and where the log
ends; lag_bytes the bytes between them; segment the .log that holds the committed position.

Cost: __consumer_offsets is read on from where the last interval stopped (only what was appended); a
group's position is looked up again only when its offset or the segment holding it changed.
"""

from __future__ import annotations

import dataclasses
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

from mqinspect.sampling.consumers import UNREADABLE_FIX, sockets_sent_to
from mqinspect.sampling.snapshot import ConsumersView, GroupQueueView, PartitionView, SegmentView, StoreView
from store.errors import StoreError
from store.inspection.kafka.committed import (
    CONSUMER_OFFSETS_TOPIC,
    CommittedOffsets,
    batch_position,
    consumer_offsets_partitions,
)
from store.inspection.kafka.target import TargetKind, kafka_target
from store.kafka.consumer_offsets import OffsetCommit
from store.kafka.layout import parse_file_name

KAFKA_LOG = "log"  # a .log segment's kind (store.inspection.kafka.target.FILE_KIND_NAMES)
LAG_FIELDS = ("max_offset", "lag_messages", "lag_bytes")
ONE_SEGMENT = (
    "consumer groups are shown for a log dir or a partition directory: give one instead of a single segment"
)


class KafkaConsumerReader:
    """Reads the groups' committed offsets and the connected consumers each interval. Keeps no file open."""

    def __init__(self, root: Path):
        target = kafka_target(Path(root))
        self._one_segment = target.kind == TargetKind.SEGMENT
        self._whole_log_dir = target.kind == TargetKind.LOG_DIR
        # a partition directory's groups are in the log dir it is in
        self.log_dir = target.path if self._whole_log_dir else target.log_dir or target.partitions[0].parent
        self._committed = CommittedOffsets()
        self._positions: dict[tuple, int | str] = {}

    def close(self) -> None:
        """Nothing to close: each interval's reads open and close their files."""

    def read(self, store: StoreView, sendpath: Any | None) -> ConsumersView:
        unavailable: dict[str, str] = {}
        groups: tuple[GroupQueueView, ...] = ()
        # the store reader's listing of a whole log dir's partitions (two listings of 200 directories more
        # each interval otherwise)
        listed = [self.log_dir / p.name for p in store.partitions] if self._whole_log_dir else None
        offsets_dirs = consumer_offsets_partitions(self.log_dir, listed or None)
        if self._one_segment:
            unavailable["groups"] = ONE_SEGMENT
        elif not offsets_dirs:
            unavailable["groups"] = f"no {CONSUMER_OFFSETS_TOPIC} in this log dir ({self.log_dir})"
        else:
            groups = self._groups(store, unavailable, offsets_dirs)
        connected = sockets_sent_to(sendpath, store.segments, unavailable)
        return ConsumersView(
            str(self.log_dir / f"{CONSUMER_OFFSETS_TOPIC}-*") if offsets_dirs else None,
            groups,
            connected,
            interval_s=sendpath.interval_s if connected else None,
            unavailable=unavailable,
        )

    def _groups(
        self, store: StoreView, unavailable: dict[str, str], offsets_dirs: tuple[Path, ...]
    ) -> tuple[GroupQueueView, ...]:
        try:
            commits, findings = self._committed.read(self.log_dir, offsets_dirs)
        except PermissionError as error:
            unavailable["groups"] = (
                f"{error.filename}: cannot be read ({error.strerror}); fix: {UNREADABLE_FIX}"
            )
            return ()
        except (StoreError, OSError) as error:  # a segment deleted while read: the next interval
            unavailable["groups"] = f"{CONSUMER_OFFSETS_TOPIC} cannot be read: {error}"
            return ()
        if findings:
            unavailable["offsets_file"] = f"read up to what does not decode: {findings[0]}"
        partitions = {partition.name: partition for partition in store.partitions}
        logs = _logs_by_partition(store.segments)
        rows = tuple(
            self._group_row(commit, partitions.get(f"{topic}-{number}"), logs.get(f"{topic}-{number}", ()))
            for (_group, topic, number), commit in sorted(commits.items())
            if self._whole_log_dir or f"{topic}-{number}" in partitions
        )
        if not rows:
            unavailable["groups"] = (
                f"no consumer group has a committed offset in {CONSUMER_OFFSETS_TOPIC}"
                + ("" if self._whole_log_dir else " on this partition")
            )
        listed = {(segment.path, segment.size_bytes) for segment in store.segments}
        self._positions = {key: known for key, known in self._positions.items() if key[:2] in listed}
        return rows

    def _group_row(
        self, commit: OffsetCommit, partition: PartitionView | None, logs: tuple[SegmentView, ...]
    ) -> GroupQueueView:
        name = f"{commit.topic}-{commit.partition}"
        row = GroupQueueView(commit.group, commit.topic, commit.partition, commit.offset, *(None,) * 6, {})
        if partition is None:
            return _without(row, LAG_FIELDS, f"{name} is not in this log dir (another broker holds it)")
        if partition.log_end_offset is None or partition.log_start_offset is None:
            reason = partition.unavailable.get("log_end_offset", "the partition's log end was not found")
            return _without(row, LAG_FIELDS, reason)
        end = partition.log_end_offset
        row = dataclasses.replace(
            row, max_offset=end, queue_end_physical_offset_bytes=partition.log_size_bytes
        )
        if commit.offset > end:
            reason = (
                f"the committed offset {commit.offset:,} is past the log end offset {end:,} (truncated since)"
            )
            return _without(row, ("lag_messages", "lag_bytes"), reason)
        row = dataclasses.replace(row, lag_messages=end - commit.offset)
        if commit.offset < partition.log_start_offset:
            reason = (
                f"offset {commit.offset:,} is before the log start {partition.log_start_offset:,}: deleted"
            )
            return _without(row, ("lag_bytes",), reason)
        holder = _holder(logs, commit.offset)
        if holder is None:
            return _without(row, ("lag_bytes",), f"no .log segment of {name} holds offset {commit.offset:,}")
        if commit.offset == end:  # read everything: its position is the end of the log
            physical = holder.start_offset_bytes + holder.size_bytes
        else:
            position = self._position(holder, commit.offset)
            if isinstance(position, str):
                return _without(row, ("lag_bytes",), position)
            physical = holder.start_offset_bytes + position
        return dataclasses.replace(
            row,
            committed_physical_offset_bytes=physical,
            lag_bytes=max(partition.log_size_bytes - physical, 0),
            segment=holder.name,
        )

    def _position(self, segment: SegmentView, offset: int) -> int | str:
        key = (segment.path, segment.size_bytes, offset)
        if key not in self._positions:
            try:
                self._positions[key] = batch_position(Path(segment.path), _base_offset(segment), offset)
            except OSError as error:  # deleted or cut while read: the next interval reads again
                return f"{segment.name} could not be read ({error.strerror or error})"
        return self._positions[key]


def _without(row: GroupQueueView, fields, reason: str) -> GroupQueueView:
    return dataclasses.replace(row, unavailable={**row.unavailable, **dict.fromkeys(fields, reason)})


def _logs_by_partition(segments) -> dict[str, tuple[SegmentView, ...]]:
    """Each partition's live .log segments (no .deleted, .cleaned or .swap), in base-offset order."""
    logs: dict[str, list[SegmentView]] = defaultdict(list)
    for segment in segments:
        if segment.kind == KAFKA_LOG and segment.partition and segment.path.endswith(".log"):
            logs[segment.partition].append(segment)
    return {name: tuple(found) for name, found in logs.items()}


def _base_offset(segment: SegmentView) -> int:
    parsed = parse_file_name(os.path.basename(segment.path))
    return parsed.offset if parsed is not None else 0


def _holder(logs: tuple[SegmentView, ...], offset: int) -> SegmentView | None:
    """The segment with the greatest base offset at most `offset`."""
    holder = None
    for segment in logs:
        if _base_offset(segment) <= offset:
            holder = segment
    return holder


def kafka_marks(
    store: StoreView, consumers: ConsumersView
) -> tuple[dict[str, set[int]], dict[str, set[int]]]:
    """Where each group's committed position and each connected consumer's read position lie in the .log
    segment that holds them (bytes into it), by the segment's path: (groups' marks, readers' marks)."""
    by_name = {segment.name: segment for segment in store.segments}
    marks: dict[str, set[int]] = defaultdict(set)
    readers: dict[str, set[int]] = defaultdict(set)
    placed = [(marks, row.segment, row.committed_physical_offset_bytes) for row in consumers.groups]
    placed += [(readers, row.read_segment, row.read_position_bytes) for row in consumers.connected]
    for found, name, offset in placed:
        holder = by_name.get(name) if name is not None else None
        if holder is not None and offset is not None:
            found[holder.path].add(min(max(offset - holder.start_offset_bytes, 0), holder.size_bytes))
    return marks, readers
