"""The store side of a dashboard snapshot for a Kafka log directory (a log.dirs root, a partition directory
or one .log segment): the same SegmentView rows as a RocketMQ store's, one per file that `store segments`
lists (store.inspection.formats: each partition's .log, .index, .timeindex, .txnindex and producer
snapshots, labelled "topic-N/<base offset>.<suffix>"), and a PartitionView per partition with its log end
offset.

Residency, heat strips, locked bytes and eBPF events are measured as for a RocketMQ store, by StoreReader's
own read loop (this reader is a StoreReader that lists and places the files the Kafka way: its seams
_list_store, _entries, _current_entry, _always_due, _queue_positions_of and _view). So a dashboard on a
log dir of more than MEASURE_ALL_UP_TO files measures by turns, as on a big RocketMQ store: every interval
the drawn rows, those with events, each partition's active segment (its .log, which the broker appends to
and consumers read; its index files when their size or mtime moved), every other file at least once in
TURN_INTERVALS intervals, its row saying when (residency_time_unix_s). Each partition's files of one kind
are a queue whose newest file is looked at (a stat) when due; the others' sizes are the listing's (a
partition's older segments change only by a rename or a deletion, which its directory's mtime shows).
Positions:
- a partition's .log segments are one stream of bytes, each segment starting where the one before ended
  (start_offset_bytes); Kafka writes a segment with write(2) and never preallocates it, so its data ends
  at its size: every .log is written to its end, and the W mark is at the end of the newest one;
- an index file of the newest segment is preallocated by the broker (log.index.size.max.bytes) and
  trimmed when the segment rolls: its data ends after its last non-zero entry, found as a ConsumeQueue's
  is; older segments' index files end at their size;
- flushed and committed positions are RocketMQ's (its checkpoint and transient pool): a Kafka broker
  keeps no flushed byte position in its files, so flushed_position_bytes is unavailable, saying so.
A partition's log end offset is read from its newest segment's last .index entry to its end (a few KiB),
again only when that segment's size, mtime or inode moved.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mqinspect.sampling.snapshot import PartitionView, SegmentView, StoreView
from mqinspect.sampling.store_reader import (
    Entry,
    StoreReader,
    _QueuePositions,
)
from store.errors import NotAStore, StoreError
from store.inspection.kafka.reading import LogTail, log_tail, partition_key
from store.inspection.kafka.store_format import KAFKA
from store.inspection.kafka.target import TargetKind, kafka_target
from store.kafka.indexes import OFFSET_ENTRY, TIME_ENTRY, TXN_ENTRY
from store.kafka.layout import SegmentFiles, parse_file_name
from store.layout import SegmentFile, SegmentQueue

LOG_FORMAT = "kafka"
INDEX_ENTRY_BYTES = {
    "offset_index": OFFSET_ENTRY.size,
    "time_index": TIME_ENTRY.size,
    "txn_index": TXN_ENTRY.size,
}
INDEX_KINDS = tuple(INDEX_ENTRY_BYTES)
KAFKA_LOG = "log"  # a .log segment's kind (store.inspection.kafka.target.FILE_KIND_NAMES)
ACTIVE_KINDS = (KAFKA_LOG, *INDEX_KINDS)  # the files of a partition's active segment
NO_FLUSHED_POSITION = (
    "does not apply to Kafka: a broker keeps no flushed byte position in its files (the recovery point "
    "in recovery-point-offset-checkpoint is a record offset; `mqinspect store stat` shows it)"
)
NO_SNAPSHOT_POSITION = "a producer-state snapshot is written whole: it has no write position"
BEING_REMOVED = "a .{state} file: the broker is deleting, cleaning or swapping it; no write position"


class KafkaStoreReader(StoreReader):
    """Reads a Kafka log directory each interval into a StoreView (see the module docstring)."""

    def __init__(self, root: Path, **options: Any):
        self._tails: dict[str, tuple[tuple[int, int, int, int], LogTail]] = {}  # by the newest .log's path
        # a stream's positions, with the queue (its files as last looked at) they were found for
        self._stream_positions: dict[str, tuple[SegmentQueue, _QueuePositions]] = {}
        # a partition's view, with the queue of live .log segments it was made from
        self._partition_views: dict[Path, tuple[SegmentQueue | None, PartitionView]] = {}
        # the live streams of active segments' files, .log first: (entry number, kind, partition directory)
        self._active: list[tuple[int, str, Path]] = []
        self._written: set[Path] = set()  # the partitions whose active .log moved in the last interval
        self._looked_at: set[str] = set()  # the streams whose newest file was looked at this interval
        super().__init__(root, **options)

    def read(self, events: Mapping[str, Any], drawn: frozenset[str] | None = None) -> StoreView:
        self._looked_at = set()
        return super().read(events, drawn)

    def _check_store(self) -> None:
        if not KAFKA.recognises(self.root):
            raise NotAStore(KAFKA.why_not(self.root))

    # --- the seams of StoreReader.read, which measures the files, by turns on a big log dir

    def _list_store(self) -> tuple[_Listing, list[Path], int]:
        """The log dir's files, each partition's files of one kind and state as a stream of bytes; every
        partition directory is looked at every interval (a roll or a deletion shows in the next one)."""
        target = kafka_target(self.root)
        streams: dict[str, _Stream] = {}
        for file in KAFKA.store_files(self.root):
            try:
                status = os.stat(file.path)
            except FileNotFoundError:  # deleted since listed: its directory's mtime moved, listed again
                continue
            parsed = parse_file_name(file.path.name)
            state = parsed.state if parsed else None
            key = f"{file.path.parent.name}/{file.kind}" + (f"/{state}" if state else "")  # no "/" in a topic
            stream = streams.setdefault(key, _Stream(file.path.parent, file.kind, state, []))
            last = stream.files[-1][0] if stream.files else None
            start = last.file_from_offset + last.size_bytes if last else 0
            stream.files.append((SegmentFile(file.path, start, status.st_size, status.st_mtime), file.label))
        listing = _Listing(self.root, target.partitions, streams)
        self._stream_positions, self._partition_views = {}, {}  # they name the previous listing's files
        listed = {str(segment.path) for stream in streams.values() for segment, _label in stream.files}
        self._tails = {path: known for path, known in self._tails.items() if path in listed}
        root = target.path if target.kind == TargetKind.LOG_DIR else None
        watched = [path for path in (root, *target.partitions) if path is not None]
        return listing, watched, len(watched)

    def _entries(self, layout: _Listing) -> list[Entry]:
        entries, active = [], []
        for key, stream in layout.streams.items():
            queue = SegmentQueue(stream.directory, tuple(segment for segment, _label in stream.files), None)
            rows = [(segment, str(segment.path), label) for segment, label in stream.files]
            if stream.kind in ACTIVE_KINDS and stream.live:
                active.append((ACTIVE_KINDS.index(stream.kind), len(entries), stream.kind, stream.directory))
            entries.append((stream.kind, key, queue, rows))
        self._active = [(number, kind, directory) for _order, number, kind, directory in sorted(active)]
        return entries

    def _always_due(self, entries: list[Entry]) -> set[str]:
        """Each partition's active segment (the newest .log: a broker appends to it, consumers read it),
        and the newest index files that were written since the last interval (their size or mtime moved:
        the rest of their time they change as little as the segments measured by turns). An index entry
        follows the batch it points at: only the indexes of a partition whose .log moved this interval or
        the one before are looked at (a stat each; 600 files of 200 partitions every interval)."""
        due, written, written_before = set(), set(), self._written
        for number, kind, directory in self._active:  # each partition's .log first
            if kind != KAFKA_LOG and directory not in written and directory not in written_before:
                continue
            entry = entries[number]
            current = entries[number] = self._current_entry(entry)
            if kind == KAFKA_LOG and current is not entry:
                written.add(directory)
            if kind == KAFKA_LOG or current is not entry:
                due.add(entry[3][-1][1])
        self._written = written
        return due

    def _current_entry(self, entry: Entry) -> Entry:
        """The stream with its newest file as it is now (a .log is written to its end, never preallocated;
        older segments do not change but by a rename or deletion, which their directory's mtime shows)."""
        kind, key, queue, rows = entry
        if key in self._looked_at:  # by _always_due, this interval
            return entry
        self._looked_at.add(key)
        newest = queue.segments[-1]
        try:
            status = os.stat(newest.path)
        except OSError:  # deleted: its directory's mtime has moved, and the next interval lists again
            return entry
        if status.st_size == newest.size_bytes and status.st_mtime == newest.mtime_s:
            return entry
        segment = SegmentFile(newest.path, newest.file_from_offset, status.st_size, status.st_mtime)
        queue = SegmentQueue(queue.directory, (*queue.segments[:-1], segment), None)
        return kind, key, queue, [*rows[:-1], (segment, *rows[-1][1:])]

    def _checkpoint(self, layout: Any) -> tuple[None, None, None]:
        return None, None, None  # a Kafka broker's checkpoints hold record offsets, not byte positions

    def _queue_positions_of(self, kind, prefix, queue, flushed, checkpoint_note, due) -> _QueuePositions:
        """The stream's positions, found again when its files moved (`_current_entry` made a new queue)."""
        known = self._stream_positions.get(prefix)
        if known is not None and known[0] is queue:
            return known[1]
        positions = self._positions_of_stream(queue, kind, self._layout.streams[prefix].state)
        if known is not None and known[1] == positions:
            positions = known[1]  # the same object: the rows see an unmoved stream
        self._stream_positions[prefix] = (queue, positions)
        self._queue_positions[prefix] = positions  # what read() takes as the stream's, unmoved, until due
        return positions

    def _segment(self, kind, name, queue, segment, positions, by_path, events, measured) -> SegmentView:
        view = super()._segment(kind, name, queue, segment, positions, by_path, events, measured)
        return _in_partition(view, segment.path.parent.name)

    def _view(self, layout: _Listing, flush_time_ms: None, segments: tuple[SegmentView, ...]) -> StoreView:
        logs = {
            queue.directory: queue
            for kind, key, queue, _rows in self._rows_of(layout).entries
            if kind == KAFKA_LOG and layout.streams[key].live
        }
        try:
            partitions = tuple(
                self._partition_view(directory, logs.get(directory)) for directory in layout.partitions
            )
        except (StoreError, OSError) as error:  # a partition deleted while listed: listed again next interval
            self._layout = None
            return self._unreadable(error)
        return StoreView(str(self.root), None, segments, log_format=LOG_FORMAT, partitions=partitions)

    def _unreadable(self, error: Exception) -> StoreView:
        reason = f"the log directory cannot be read: {error}"
        return StoreView(str(self.root), None, (), {"segments": reason}, log_format=LOG_FORMAT)

    # --- where each file's data ends

    def _positions_of_stream(self, queue: SegmentQueue, kind: str, state: str | None) -> _QueuePositions:
        unavailable = {"flushed_position_bytes": NO_FLUSHED_POSITION}
        last = queue.segments[-1]
        end: int | None = last.file_from_offset + last.size_bytes
        if state is not None or kind == "snapshot":
            reason = BEING_REMOVED.format(state=state) if state else NO_SNAPSHOT_POSITION
            unavailable["wrote_position_bytes"] = unavailable["committed_position_bytes"] = reason
            end = None
        elif kind in INDEX_KINDS:  # the active segment's may be preallocated: its entries end before its size
            data_end, reason = self._end_of_data(str(last.path))
            if data_end is None:
                unavailable["wrote_position_bytes"] = unavailable["committed_position_bytes"] = reason
            else:  # an entry may end in zero bytes (a time index entry's relative offset 0): whole entries
                entry_bytes = INDEX_ENTRY_BYTES[kind]
                data_end = min(-(-data_end // entry_bytes) * entry_bytes, last.size_bytes)
            end = None if data_end is None else last.file_from_offset + data_end
        return _QueuePositions.of(queue, end, None, unavailable)

    # --- partitions

    def _partition_view(self, directory: Path, logs: SegmentQueue | None) -> PartitionView:
        """The partition's view, made again when its live .log segments moved."""
        known = self._partition_views.get(directory)
        if known is not None and known[0] is logs:
            return known[1]
        view = self._partition(directory, logs)
        self._partition_views[directory] = (logs, view)
        return view

    def _partition(self, directory: Path, logs: SegmentQueue | None) -> PartitionView:
        """The partition's offsets, from its live .log segments as listed (one segment given: that one's)."""
        key = partition_key(directory)
        topic, number = key if key is not None else (directory.name, -1)
        segments = logs.segments if logs is not None else ()
        size = sum(segment.size_bytes for segment in segments)
        if not segments:
            reason = f"{directory.name} has no .log segment"
            gaps = dict.fromkeys(("log_start_offset", "log_end_offset"), reason)
            return PartitionView(directory.name, topic, number, 0, None, None, size, gaps)
        tail = self._tail(segments[-1].path)
        first, newest = (_base_offset(segment.path) for segment in (segments[0], segments[-1]))
        end = newest if tail.next_offset is None else tail.next_offset
        unavailable = {}
        if tail.findings:
            unavailable["log_end_offset"] = f"read up to the first finding: {tail.findings[0]}"
        return PartitionView(directory.name, topic, number, len(segments), first, end, size, unavailable)

    def _tail(self, log: Path) -> LogTail:
        """How the newest segment's log ends, read again only when its size, mtime or inode moved, on from
        where the last read stopped when the same file grew."""
        status = os.stat(log)
        identity = (status.st_ino, status.st_size, status.st_mtime_ns, status.st_dev)
        known = self._tails.get(str(log))
        if known is not None and known[0] == identity:
            return known[1]
        index = log.with_name(log.stem + ".index")
        segment = SegmentFiles(_base_offset(log), log=log, index=index if index.is_file() else None)
        grown = (  # the same file, not shorter than where it was read to: read on from there
            known is not None and known[0][0::3] == identity[0::3] and known[1].end_position <= status.st_size
        )
        tail = log_tail(segment, known[1] if grown and known is not None else None)
        if grown and tail.findings:  # not batches from where the last read stopped: truncated and rewritten?
            tail = log_tail(segment)
        self._tails[str(log)] = (identity, tail)
        return tail


@dataclass(frozen=True)
class _Stream:
    """A partition's files of one kind and state (None, or "deleted", "cleaned", "swap"), in offset order,
    one stream of bytes, each file with its label."""

    directory: Path
    kind: str
    state: str | None
    files: list[tuple[SegmentFile, str]]

    @property
    def live(self) -> bool:
        return self.state is None


@dataclass(frozen=True, eq=False)
class _Listing:
    """One listing of a log dir: its partition directories and its streams, by a key unique to each
    ("topic-N/kind[/state]"), which also keys their positions."""

    root: Path
    partitions: tuple[Path, ...]
    streams: dict[str, _Stream]


def _base_offset(path: Path) -> int:
    parsed = parse_file_name(path.name)
    return parsed.offset if parsed is not None else 0


def _in_partition(view: SegmentView, partition: str) -> SegmentView:
    """The row with its partition: a shallow copy (replace() runs the whole constructor, 1,400 rows an
    interval for 200 partitions), as store_reader marks rows."""
    marked = copy.copy(view)
    object.__setattr__(marked, "partition", partition)  # a copy no one else holds yet
    return marked
