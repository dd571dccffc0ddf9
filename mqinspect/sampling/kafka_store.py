"""The store side of a dashboard snapshot for a Kafka log directory (a log.dirs root, a partition directory
or one .log segment): the same SegmentView rows as a RocketMQ store's, one per file that `store segments`
lists (store.inspection.formats: each partition's .log, .index, .timeindex, .txnindex and producer
snapshots, labelled "topic-N/<base offset>.<suffix>"), and a PartitionView per partition with its log end
offset.

Residency, heat strips, locked bytes and eBPF events are measured as for a RocketMQ store, by StoreReader's
own code (this reader is a StoreReader that lists and places the files the Kafka way). Positions:
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
from pathlib import Path
from typing import Any

from mqinspect.sampling.snapshot import PROBE_PAGECACHE, PartitionView, SegmentView, StoreView
from mqinspect.sampling.store_reader import (
    EVENT_PROBES,
    LAYOUT_REFRESH_INTERVALS,
    StoreReader,
    _events_by_path,
    _mtime_ns,
    _QueuePositions,
)
from store.errors import NotAStore, StoreError
from store.inspection.kafka.reading import LogTail, log_tail, partition_key
from store.inspection.kafka.store_format import KAFKA
from store.inspection.kafka.target import TargetKind, kafka_target
from store.inspection.log_format import StoreFile
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
        self._listing: tuple[tuple[StoreFile, ...], list[tuple[Path, int | None]]] | None = None
        self._listed_at = 0  # the interval the files were listed in
        self._directories: tuple[Path, ...] = ()  # the partitions', as last listed
        self._built: dict[str, tuple[tuple, SegmentView]] = {}  # path -> (what its row was built from, row)
        super().__init__(root, **options)

    def _check_store(self) -> None:
        if not KAFKA.recognises(self.root):
            raise NotAStore(KAFKA.why_not(self.root))

    def segment_paths(self) -> list[str]:
        return [str(file.path) for file in KAFKA.store_files(self.root)]

    def read(self, events: Mapping[str, Any], drawn: frozenset[str] | None = None) -> StoreView:
        """One interval's view: every file measured (a dashboard measures heat strips of drawn rows only),
        before anything is read to place the positions (that read brings pages into the page cache)."""
        try:
            files = self._files(drawn)
        except (StoreError, OSError) as error:
            return self._unreadable(error)
        paths = [str(file.path) for file in files]
        self._refresh_locks(paths, drawn, self._listing)  # the same listing object while nothing moved
        measured = {}
        for path in paths:
            unavailable: dict[str, str] = {}
            measured[path] = (unavailable, self._residency(path, unavailable, drawn is None or path in drawn))
        try:
            queues, logs = self._queues(files)
            partitions = tuple(
                self._partition(directory, logs.get(directory)) for directory in self._directories
            )
        except (StoreError, OSError) as error:  # a partition deleted while listed: the next interval
            self._listing = None
            return self._unreadable(error)
        by_path = _events_by_path(events)
        evented = {path for _probe, path in by_path}
        shared = (
            self._locks_version,
            *(probe in events for probe in EVENT_PROBES),
            events.get(PROBE_PAGECACHE),
        )
        rows, built = [], {}
        for file in files:
            path = str(file.path)
            queue, positions, segment = queues[path]
            inputs = (measured[path], positions, segment, shared)
            known = self._built.get(path)
            if known is not None and path not in evented and known[0] == inputs:
                view = known[1]  # what it was built from is the same: the same row (1,400 rows an interval)
            else:
                view = self._segment(
                    file.kind, file.label, queue, segment, positions, by_path, events, inputs[0]
                )
                view = _in_partition(view, file.path.parent.name)
            built[path] = (inputs, view)
            rows.append(view)
        self._built = built
        listed = set(paths)
        self._chunk_maps = {path: known for path, known in self._chunk_maps.items() if path in listed}
        self._positions = {path: known for path, known in self._positions.items() if path in listed}
        self._tails = {path: known for path, known in self._tails.items() if path in listed}
        self._intervals += 1
        return StoreView(str(self.root), None, tuple(rows), log_format=LOG_FORMAT, partitions=partitions)

    def _files(self, drawn: frozenset[str] | None) -> tuple[StoreFile, ...]:
        """The log dir's files: listed again every interval when every row is used (as StoreReader does);
        for a dashboard, when the mtime of the log dir or of a partition directory moved (a file created,
        deleted or renamed in it), and every LAYOUT_REFRESH_INTERVALS (listing 200 partitions took 50 ms)."""
        if (
            drawn is None
            or self._listing is None
            or self._intervals - self._listed_at >= LAYOUT_REFRESH_INTERVALS
            or any(_mtime_ns(directory) != mtime for directory, mtime in self._listing[1])
        ):
            target = kafka_target(self.root)
            self._directories = target.partitions
            listed = target.path if target.kind == TargetKind.LOG_DIR else None
            watched = [path for path in (listed, *self._directories) if path is not None]
            mtimes = [(path, _mtime_ns(path)) for path in watched]  # before listing: a change meanwhile shows
            self._listing, self._listed_at = (KAFKA.store_files(self.root), mtimes), self._intervals
        return self._listing[0]

    def _unreadable(self, error: Exception) -> StoreView:
        reason = f"the log directory cannot be read: {error}"
        return StoreView(str(self.root), None, (), {"segments": reason}, log_format=LOG_FORMAT)

    # --- where each file's data ends

    def _queues(self, files: tuple[StoreFile, ...]) -> tuple[dict[str, tuple], dict[Path, SegmentQueue]]:
        """path -> (the stream of the partition's files of its kind, its positions, its SegmentFile); and
        each partition directory's stream of live .log segments."""
        streams: dict[tuple[Path, str, str | None], list[StoreFile]] = {}
        for file in files:
            parsed = parse_file_name(file.path.name)
            streams.setdefault((file.path.parent, file.kind, parsed.state if parsed else None), []).append(
                file
            )
        placed, logs = {}, {}
        for (_directory, kind, state), members in streams.items():
            segments, start = [], 0
            for file in members:
                status = os.stat(file.path)
                segments.append(SegmentFile(file.path, start, status.st_size, status.st_mtime))
                start += status.st_size
            queue = SegmentQueue(members[0].path.parent, tuple(segments), None)
            positions = self._stream_positions(queue, kind, state)
            placed.update((str(segment.path), (queue, positions, segment)) for segment in segments)
            if kind == KAFKA_LOG and state is None:
                logs[queue.directory] = queue
        return placed, logs

    def _stream_positions(self, queue: SegmentQueue, kind: str, state: str | None) -> _QueuePositions:
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
        """How the newest segment's log ends, read again only when its size, mtime or inode moved."""
        status = os.stat(log)
        identity = (status.st_ino, status.st_size, status.st_mtime_ns, status.st_dev)
        known = self._tails.get(str(log))
        if known is not None and known[0] == identity:
            return known[1]
        index = log.with_name(log.stem + ".index")
        segment = SegmentFiles(_base_offset(log), log=log, index=index if index.is_file() else None)
        tail = log_tail(segment)
        self._tails[str(log)] = (identity, tail)
        return tail


def _base_offset(path: Path) -> int:
    parsed = parse_file_name(path.name)
    return parsed.offset if parsed is not None else 0


def _in_partition(view: SegmentView, partition: str) -> SegmentView:
    """The row with its partition: a shallow copy (replace() runs the whole constructor, 1,400 rows an
    interval for 200 partitions), as store_reader marks rows."""
    marked = copy.copy(view)
    object.__setattr__(marked, "partition", partition)  # a copy no one else holds yet
    return marked
