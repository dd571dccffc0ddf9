"""Consumer groups' committed offsets in a Kafka log directory, as its group coordinator would load them from
`__consumer_offsets` (GroupMetadataManager.loadGroupsAndOffsets), and where an offset lies in a partition's
log.

`CommittedOffsets.read(log_dir)` reads every `__consumer_offsets-N` partition's live segments in order: the
latest commit per group, topic and partition wins, a tombstone (a null value) deletes it. A transactional
commit counts once its COMMIT marker is read and is dropped at an ABORT, as the coordinator applies them.
Reads are incremental: a segment that only grew is read on from where the last read stopped; any other
change (a segment rolled away by compaction, rewritten, a new partition) reads them all again.

`batch_position(segment, offset)` is where the batch holding `offset` starts in a .log segment: found as a
broker's fetch finds it, through the segment's .index and then batch headers only (no record is decoded).
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from store.kafka.batches import LogReader, RecordBatch
from store.kafka.consumer_offsets import OffsetCommit, decode_group_record
from store.kafka.findings import Finding, KafkaDecodeError
from store.kafka.indexes import position_for_offset, read_offset_index
from store.kafka.layout import SegmentFiles, list_partition, parse_partition_dir, partition_dirs
from store.kafka.records import decode_control_record, decode_records

CONSUMER_OFFSETS_TOPIC = "__consumer_offsets"
# batch_position reads this much at a time: the batch it looks for is within log.index.interval.bytes (4 KiB)
# of the index entry it starts from, and a dashboard must not pull a segment into the page cache to find it.
POSITION_WINDOW_BYTES = 8 << 10

GroupKey = tuple[str, str, int]  # group, topic, partition


def consumer_offsets_partitions(log_dir: Path, listed: Sequence[Path] | None = None) -> tuple[Path, ...]:
    """The log dir's live `__consumer_offsets-N` directories (not those being deleted or moved), among its
    partition directories as `listed` already (a dashboard's each interval), else as listed here."""
    found = []
    for directory in partition_dirs(log_dir) if listed is None else listed:
        name = parse_partition_dir(directory.name)
        if name is not None and name.topic == CONSUMER_OFFSETS_TOPIC and name.state is None:
            found.append(directory)
    return tuple(found)


@dataclass
class _SegmentRead:
    identity: tuple[int, int]  # inode, device
    position: int  # where reading stopped
    size: int  # the size read up to


@dataclass
class _PartitionState:
    """One __consumer_offsets partition's commits, and how far each of its segments was read."""

    segments: dict[str, _SegmentRead] = field(default_factory=dict)
    commits: dict[GroupKey, OffsetCommit] = field(default_factory=dict)
    pending: dict[int, dict[GroupKey, OffsetCommit]] = field(default_factory=lambda: defaultdict(dict))
    findings: list[Finding] = field(default_factory=list)


class CommittedOffsets:
    """The committed offsets of a log dir's groups, read again incrementally on each `read()`."""

    def __init__(self) -> None:
        self._partitions: dict[str, _PartitionState] = {}

    def read(
        self, log_dir: Path, listed: Sequence[Path] | None = None
    ) -> tuple[dict[GroupKey, OffsetCommit], tuple[Finding, ...]]:
        """{(group, topic, partition): its latest commit} of every __consumer_offsets partition, and the
        findings of what could not be read (a cut batch, a record that does not decode). `listed`: the log
        dir's partition directories, as consumer_offsets_partitions takes them."""
        directories = consumer_offsets_partitions(log_dir, listed)
        self._partitions = {
            str(directory): self._read_partition(directory, self._partitions.get(str(directory)))
            for directory in directories
        }
        commits: dict[GroupKey, OffsetCommit] = {}
        findings: list[Finding] = []
        for state in self._partitions.values():
            commits.update(state.commits)  # a group's commits all go to one partition of the topic
            findings += state.findings
        return commits, tuple(findings)

    def _read_partition(self, directory: Path, state: _PartitionState | None) -> _PartitionState:
        segments = [segment for segment in list_partition(directory).segments if not segment.states]
        segments = [segment for segment in segments if segment.log is not None]
        sizes = {}
        for segment in segments:
            status = os.stat(segment.log)
            sizes[str(segment.log)] = ((status.st_ino, status.st_dev), status.st_size)
        if state is None or not _only_grew(state, segments, sizes):
            state = _PartitionState()
        for segment in segments:
            path = str(segment.log)
            identity, size = sizes[path]
            known = state.segments.get(path)
            if known is not None and known.size == size:
                continue
            start = known.position if known is not None else 0
            state.segments[path] = _SegmentRead(identity, _apply_log(segment, start, size, state), size)
        return state


def _only_grew(state: _PartitionState, segments: list[SegmentFiles], sizes: dict) -> bool:
    """Whether every segment read before is still there, the same file, no shorter, in the same order, and
    only segments after them are new."""
    paths = [str(segment.log) for segment in segments]
    known = list(state.segments)
    if paths[: len(known)] != known:
        return False
    return all(
        sizes[path][0] == read.identity and sizes[path][1] >= read.size
        for path, read in state.segments.items()
    )


def _apply_log(segment: SegmentFiles, start: int, size: int, state: _PartitionState) -> int:
    """Apply the commits of the segment's batches from `start` up to `size`; where reading stopped."""
    reader = LogReader(segment.log, start=start, max_bytes=size - start)
    for entry in reader:
        if isinstance(entry, Finding):
            state.findings.append(entry)
        elif isinstance(entry, RecordBatch) and entry.crc_valid:
            _apply_batch(segment.log, entry, state)
    return reader.position


def _apply_batch(path: Path, batch: RecordBatch, state: _PartitionState) -> None:
    decoded = decode_records(batch, path)
    state.findings += decoded.findings
    if batch.is_control:
        for record in decoded.records:
            try:
                marker = decode_control_record(record)
            except KafkaDecodeError as error:
                state.findings.append(Finding(path, batch.position, error.kind, str(error)))
                continue
            if marker.is_transaction_marker:
                pending = state.pending.pop(batch.producer_id, {})
                if marker.type == 1:  # COMMIT
                    _apply_commits(state.commits, pending.values())
        return
    commits = []
    for key, value in zip(decoded.keys, decoded.values, strict=True):
        try:
            record = decode_group_record(key, value)
        except KafkaDecodeError as error:
            state.findings.append(Finding(path, batch.position, error.kind, str(error)))
            continue
        if isinstance(record, OffsetCommit):
            commits.append(record)
    if batch.is_transactional:
        pending = state.pending[batch.producer_id]
        pending.update(((c.group, c.topic, c.partition), c) for c in commits)
    else:
        _apply_commits(state.commits, commits)


def _apply_commits(table: dict[GroupKey, OffsetCommit], commits) -> None:
    for commit in commits:
        key = (commit.group, commit.topic, commit.partition)
        if commit.deleted:
            table.pop(key, None)
        else:
            table[key] = commit


def batch_position(log: Path, base_offset: int, offset: int) -> int | str:
    """Where the batch holding `offset` starts in the .log segment whose base offset is `base_offset`
    (through its .index, then batch headers, 8 KiB at a time); why not when no batch of the segment
    holds it."""
    start = 0
    index = log.with_name(log.name.removesuffix(".log") + ".index")
    if index.is_file():
        read = read_offset_index(index, base_offset)
        if read.value is not None:
            start = position_for_offset(read.value.entries, offset)
    for entry in LogReader(log, start=start, window_bytes=POSITION_WINDOW_BYTES):
        if isinstance(entry, Finding):
            return f"{log.name} at byte {entry.position}: {entry.message}"
        if entry.last_offset >= offset:
            return entry.position
    return f"no batch of {log.name} holds offset {offset:,}"
