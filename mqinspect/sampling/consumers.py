"""The consumer side of a dashboard snapshot: where each consumer group stands (its committed offset in
config/consumerOffset.json, placed in the CommitLog through its ConsumeQueue), how far behind it is, and the
consumers connected to the store's holder as the sendpath probe sees their sockets.

Groups. consumerOffset.json holds, per "topic@group" and queue, the next queue offset the group consumes
(the broker persists it every few seconds, so it trails the consumers by up to that). The queue's end is
the end of its last ConsumeQueue entry, as the store reader found it this interval (the segments' wrote
positions); the group's physical position is the CommitLog offset the ConsumeQueue entry at its committed
offset names (one 20-byte pread), and lag in bytes is the CommitLog span from there to the end of the
queue's last record (other queues' records between them included: what the group's reads pass over).

Connected consumers. The sendpath probe counts, per process and descriptor, the bytes delivered to each
socket and the file they came from (a read's file, a mapping's file, sendfile's source). A socket that got
bytes of the store's segments is a connected consumer, with its send path, the segments it read (and their
cached share now, cachestat), its read position (how far into the newest of those segments the latest send
reached: the page range mm_filemap_get_pages reported for sendfile, splice and the read of read+write, the
mapping's file offset for mmap+write) and its cold pages (pages its sends, or the reads that filled their
buffers, added to the page cache during the calls: read from disk for it, with the readahead they started).
A spliced send's source is a pipe: its segments, read position and cold pages are those of the splices
that filled the pipe (file -> pipe), when the pipe fed that one socket; else, and where the kernel lacks
filemap:mm_filemap_add_to_page_cache (no cold pages), those figures are "unavailable" with the reason.

Cost: consumerOffset.json is parsed again only when its inode, size or mtime changed; each group's queue
costs two 20-byte preads per interval, from ConsumeQueue files kept open while they are the same file (a
stat each per interval: one that was deleted, replaced or not read in an interval is closed). The segments
are indexed once per snapshot (queues by topic and id, segments by start offset) for the groups' rows and
the marks on the heat strips.
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import functools
import os
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from mqinspect.sampling.snapshot import (
    ConnectedConsumerView,
    ConsumersView,
    GroupQueueView,
    SegmentView,
    StoreView,
)
from store.config import CQ_STORE_UNIT_SIZE
from store.consume_queue_format import ConsumeQueueEntry, decode_entry
from store.consumer_offsets import (
    ConsumerOffsets,
    ConsumerOffsetsError,
    consumer_offset_path,
    load_consumer_offsets,
)
from store.errors import StoreError
from store.safe_read import PreadFile

COMMITLOG = "commitlog"
CONSUMEQUEUE = "consumequeue"
LOG_KINDS = (COMMITLOG, "log")  # the segments whose read position a send reports: a Kafka .log too
SEND_PATH_FIELDS = {
    "read+write": "read_write_bytes",
    "mmap+write": "mmap_write_bytes",
    "sendfile": "sendfile_bytes",
    "splice": "splice_bytes",
}
MAPPED_SUFFIX = " (mapped)"  # the sendpath probe's mapping sources: "commitlog/000... (mapped)"
NO_READ_POSITION = (
    "no send told how far into the CommitLog it read (a read or sendfile that bypasses the page cache, "
    "such as O_DIRECT, reports no page range)"
)
NO_ADDED_PAGES = (
    "this kernel's sendpath probe cannot count pages added during the calls "
    "(filemap:mm_filemap_add_to_page_cache is not attached)"
)
SPLICED = (
    "spliced from a pipe that no splice of a store segment filled this interval, or that fed several "
    "sockets: its bytes cannot be traced back to a file"
)
NO_SENDPATH = "the sendpath probe is not running"
UNREADABLE_FIX = "run as root (sudo mqinspect top ...) or as the store's owner"


# read(path, offset, length): bytes of a ConsumeQueue file
FileReader = Callable[[str, int, int], bytes]


def _read_once(path: str, offset: int, length: int) -> bytes:
    with PreadFile(Path(path)) as file:
        return file.read(offset, length)


class QueueFiles:
    """ConsumeQueue files kept open from one interval to the next while each path names the same file (its
    device and inode, one stat per path and interval), instead of an open, fadvise and close per read. A file
    deleted, replaced (a queue cut and written again) or not read in an interval is closed at the interval's
    end: no descriptor keeps a deleted file's space for longer than that."""

    def __init__(self) -> None:
        self._open: dict[str, tuple[tuple[int, int], PreadFile]] = {}
        self._checked: set[str] = set()  # the paths stat'ed this interval

    @contextlib.contextmanager
    def interval(self) -> Iterator[None]:
        """Reads of one interval: afterwards, the files it did not read are closed."""
        self._checked = set()
        try:
            yield
        finally:
            for path in self._open.keys() - self._checked:
                self._open.pop(path)[1].close()

    def read(self, path: str, offset: int, length: int) -> bytes:
        return self._file(path).read(offset, length)

    def _file(self, path: str) -> PreadFile:
        if path not in self._checked:
            status = os.stat(path)
            identity = (status.st_dev, status.st_ino)
            known = self._open.get(path)
            if known is not None and known[0] != identity:  # deleted and written again under its name
                self._open.pop(path)[1].close()
            if path not in self._open:
                self._open[path] = (identity, PreadFile(Path(path)))
            self._checked.add(path)
        return self._open[path][1]

    def close(self) -> None:
        for _identity, file in self._open.values():
            file.close()
        self._open.clear()


class ConsumerReader:
    """Reads the groups' committed offsets and the connected consumers each interval. Keeps the ConsumeQueue
    files it read open until the next interval (QueueFiles); `close()` closes them."""

    def __init__(self) -> None:
        self._offsets: tuple[tuple[int, int, int, int], ConsumerOffsets] | None = None
        self._files = QueueFiles()

    def close(self) -> None:
        self._files.close()

    def read(self, store: StoreView, sendpath: Any | None) -> ConsumersView:
        """`sendpath`: the sendpath probe's snapshot of the interval (None when it is not running)."""
        if store.root is None:
            return ConsumersView(None, (), (), unavailable={"groups": "no store"})
        path = consumer_offset_path(Path(store.root))
        unavailable: dict[str, str] = {}
        try:
            offsets = self._load(path)
        except PermissionError as error:
            offsets = None
            unavailable["groups"] = f"{path}: cannot be read ({error.strerror}); fix: {UNREADABLE_FIX}"
        except (ConsumerOffsetsError, OSError) as error:
            offsets = None
            unavailable["groups"] = f"{path}: cannot be read ({error})"
        with self._files.interval():
            groups = () if offsets is None else tuple(group_queues(offsets, store.segments, self._files.read))
        if offsets is not None and offsets.used_backup:
            unavailable["offsets_file"] = f"read {offsets.loaded_from} instead: {offsets.fallback_reason}"
        if offsets is not None and not groups:
            unavailable["groups"] = _no_groups(path, offsets)
        connected = sockets_sent_to(sendpath, store.segments, unavailable)
        return ConsumersView(
            str(path),
            groups,
            connected,
            # only with rows to draw as rates: a frame that differs by its interval alone is not drawn again
            interval_s=sendpath.interval_s if connected else None,
            unavailable=unavailable,
        )

    def _load(self, path: Path) -> ConsumerOffsets:
        """The file parsed again only when it changed (a broker rewrites it every few seconds at most)."""
        try:
            status = os.stat(path)
        except FileNotFoundError:
            return load_consumer_offsets(path)  # its .bak, as the broker reads it, or an empty table
        identity = (status.st_ino, status.st_size, status.st_mtime_ns, status.st_dev)
        if self._offsets is not None and self._offsets[0] == identity:
            return self._offsets[1]
        offsets = load_consumer_offsets(path)
        self._offsets = (identity, offsets)
        return offsets


def sockets_sent_to(
    sendpath: Any | None, segments: Sequence[SegmentView], unavailable: dict[str, str]
) -> tuple[ConnectedConsumerView, ...]:
    """The connected consumers of the interval (`connected_consumers`); none, saying why in `unavailable`,
    when the sendpath probe is not running."""
    if sendpath is None:
        unavailable["connected"] = NO_SENDPATH
        return ()
    comms = {row.pid: row.comm for row in sendpath.processes}
    return connected_consumers(sendpath.fds, segments, comms)


def _no_groups(path: Path, offsets: ConsumerOffsets) -> str:
    if offsets.loaded_from is not None:
        return f"no consumer group has committed an offset yet ({offsets.loaded_from} lists none)"
    if path.exists():  # but unreadable, and no .bak: the broker too starts from an empty table then
        return f"{offsets.fallback_reason}; no {path.name}.bak to read instead"
    return f"no consumer group has committed an offset yet ({path} is missing)"


# --- groups


def group_queues(
    offsets: ConsumerOffsets, segments: Sequence[SegmentView], read: FileReader | None = None
) -> Iterable[GroupQueueView]:
    """One row per group and queue, in group, topic, queue order. `read(path, offset, length)` reads the
    ConsumeQueue entries (default: each file opened for its read)."""
    index = _segment_index(segments)
    keys = (key.split("@") for key in offsets.offset_table)
    # keys that are not "topic@group" are skipped, as the broker's whichGroupByTopic skips them
    for group, topic in sorted((parts[1], parts[0]) for parts in keys if len(parts) == 2):
        for queue_id, committed in sorted(offsets.queues(topic, group).items()):
            queue = index.queue(topic, queue_id)
            yield group_queue(group, topic, queue_id, committed, queue, index.commitlog, read or _read_once)


class _Picked(Sequence[SegmentView]):
    """Some of a snapshot's segments, by their places in it (a queue's files, the CommitLog's), taken from
    the snapshot as they are looked at."""

    def __init__(self, segments: Sequence[SegmentView], places: Sequence[int]):
        self._segments = segments
        self._places = places

    def __len__(self) -> int:
        return len(self._places)

    def __getitem__(self, item):  # type: ignore[override]
        if isinstance(item, slice):
            return [self._segments[place] for place in self._places[item]]
        return self._segments[self._places[item]]


class _Shape:
    """Where a snapshot's segments are: the ConsumeQueue segments' places by (topic, queue id), from their
    names "consumequeue/TOPIC/ID/FILE", the CommitLog's, and each path's. The same for every snapshot of one
    listing of the store: made again only when the segments' paths are not the same."""

    def __init__(self, segments: Sequence[SegmentView]):
        queues: dict[tuple[str, int], list[int]] = defaultdict(list)
        commitlog = []
        for place, segment in enumerate(segments):
            if segment.kind == COMMITLOG:
                commitlog.append(place)
            elif segment.kind == CONSUMEQUEUE and (queue := _queue_of(segment.name)) is not None:
                queues[queue].append(place)
        self.paths = [segment.path for segment in segments]
        self.places = {path: place for place, path in enumerate(self.paths)}
        self.queues = dict(queues)
        self.commitlog = commitlog


class _SegmentIndex:
    """The segments of one snapshot as the consumers' rows look for them: a queue's files and the CommitLog's
    in order, each segment's place."""

    def __init__(self, segments: Sequence[SegmentView], shape: _Shape):
        self.segments = segments
        self.places = shape.places
        self._queues = shape.queues
        self.commitlog = _Picked(segments, shape.commitlog)

    def queue(self, topic: str, queue_id: int) -> Sequence[SegmentView]:
        places = self._queues.get((topic, queue_id))
        return _Picked(self.segments, places) if places else ()


_last_index: tuple[Sequence[SegmentView], _SegmentIndex] | None = None


def _segment_index(segments: Sequence[SegmentView]) -> _SegmentIndex:
    """The index of `segments`, made once for the groups' rows and the marks of one snapshot, on the shape of
    the previous snapshot's when the paths are the same (1,500 segments went through twice per interval)."""
    global _last_index
    last = _last_index
    if last is not None and last[0] is segments:
        return last[1]
    shape = _shape_of(segments)
    index = _SegmentIndex(segments, shape)
    _last_index = (segments, index)
    return index


_last_shape: _Shape | None = None


def _shape_of(segments: Sequence[SegmentView]) -> _Shape:
    """The previous snapshot's shape while the segments' paths are the same ones, in the same order."""
    global _last_shape
    shape = _last_shape
    if shape is None or len(shape.paths) != len(segments) or shape.paths != [s.path for s in segments]:
        shape = _last_shape = _Shape(segments)
    return shape


@functools.lru_cache(maxsize=1 << 14)
def _queue_of(name: str) -> tuple[str, int] | None:
    """(topic, queue id) of a ConsumeQueue segment's name (kept: 500 queues' names parsed twice a second
    were a tenth of a big store's sampling)."""
    topic, queue_id, _file = name.removeprefix(f"{CONSUMEQUEUE}/").rsplit("/", 2)
    return (topic, int(queue_id)) if queue_id.isdigit() else None


def group_queue(
    group: str,
    topic: str,
    queue_id: int,
    committed: int,
    queue: Sequence[SegmentView],
    commitlog: Sequence[SegmentView],
    read: FileReader | None = None,
) -> GroupQueueView:
    read = read or _read_once
    row = GroupQueueView(group, topic, queue_id, committed, None, None, None, None, None, None, {})
    if not queue:
        return _without(
            row, ("max_offset", "lag_messages", "lag_bytes"), f"no ConsumeQueue for {topic}@{queue_id}"
        )
    end = _queue_end(queue)
    if isinstance(end, str):
        return _without(row, ("max_offset", "lag_messages", "lag_bytes"), end)
    first = queue[0].start_offset_bytes // CQ_STORE_UNIT_SIZE
    row = dataclasses.replace(row, max_offset=end)
    if committed > end:
        return _without(
            row,
            ("lag_messages", "lag_bytes"),
            f"the committed offset {committed:,} is past the queue's end {end:,} (the queue was cut since)",
        )
    row = dataclasses.replace(row, lag_messages=end - committed)
    last = _entry(queue, end - 1, read) if end > first else "the queue has no entry on disk"
    if isinstance(last, str):
        return _without(row, ("lag_bytes",), f"the queue's last entry: {last}")
    queue_end = last.physical_offset + last.size_bytes
    row = dataclasses.replace(row, queue_end_physical_offset_bytes=queue_end)
    if committed < first:
        reason = (
            f"queue offset {committed:,} is before the first entry on disk ({first:,}): retention deleted it"
        )
        return _without(row, ("lag_bytes",), reason)
    at = last if committed == end - 1 else _entry(queue, committed, read) if committed < end else None
    if isinstance(at, str):
        return _without(row, ("lag_bytes",), f"the entry at queue offset {committed:,}: {at}")
    physical = queue_end if at is None else at.physical_offset
    return dataclasses.replace(
        row,
        committed_physical_offset_bytes=physical,
        lag_bytes=max(queue_end - physical, 0),
        segment=_holder_name(commitlog, physical),
    )


def _without(row: GroupQueueView, fields: Sequence[str], reason: str) -> GroupQueueView:
    return dataclasses.replace(row, unavailable={**row.unavailable, **dict.fromkeys(fields, reason)})


def _queue_end(queue: Sequence[SegmentView]) -> int | str:
    """The queue's next offset to be written, from the end of data the store reader found; else why not."""
    holder = next((segment for segment in queue if segment.holds_write_position), None)
    if holder is None or holder.wrote_position_bytes is None:
        newest = queue[-1]
        return newest.unavailable.get("wrote_position_bytes", "the end of the queue's data was not found")
    return (holder.start_offset_bytes + holder.wrote_position_bytes) // CQ_STORE_UNIT_SIZE


def _entry(queue: Sequence[SegmentView], queue_offset: int, read: FileReader) -> ConsumeQueueEntry | str:
    """The ConsumeQueue entry at `queue_offset` (one pread); why not when it names no record."""
    position = queue_offset * CQ_STORE_UNIT_SIZE
    segment = next(
        (s for s in queue if s.start_offset_bytes <= position < s.start_offset_bytes + s.size_bytes), None
    )
    if segment is None:
        return "in no ConsumeQueue file"
    try:
        data = read(segment.path, position - segment.start_offset_bytes, CQ_STORE_UNIT_SIZE)
        entry = decode_entry(data, queue_offset=queue_offset, path=segment.path)
    except (OSError, StoreError) as error:  # deleted or cut while read: the next interval reads again
        return f"{segment.name} could not be read ({error})"
    return entry if entry.names_a_record else f"{segment.name} holds no record's entry there"


def _holder_name(segments: Sequence[SegmentView], offset: int) -> str | None:
    holder = _holder(segments, offset)
    return None if holder is None else holder.name


def _holder(segments: Sequence[SegmentView], offset: int) -> SegmentView | None:
    """The segment `offset` lies in; the end of the last segment lies in it (the log filled it). `segments`
    are in offset order (a queue's files): bisected, not walked (1,000 CommitLog segments)."""
    position = bisect.bisect_right(segments, offset, key=_start) - 1
    for segment in segments[max(position, 0) : position + 1]:
        if segment.start_offset_bytes <= offset < segment.start_offset_bytes + segment.size_bytes:
            return segment
    last = segments[-1] if segments else None
    return last if last is not None and offset == last.start_offset_bytes + last.size_bytes else None


def _start(segment: SegmentView) -> int:
    return segment.start_offset_bytes


# --- the positions on the heat strips


def mark_positions(store: StoreView, consumers: ConsumersView) -> StoreView:
    """The store view with each group's committed position in the segments that hold it (the CommitLog
    offset of its next message, and its entry in the ConsumeQueue), and each connected consumer's read
    position in the CommitLog segment that holds it."""
    index = _segment_index(store.segments)
    commitlog = index.commitlog
    marks: dict[str, set[int]] = defaultdict(set)
    readers: dict[str, set[int]] = defaultdict(set)
    for offset in (consumer.read_position_bytes for consumer in consumers.connected):
        holder = None if offset is None else _holder(commitlog, offset)
        if holder is not None and offset is not None:
            readers[holder.path].add(offset - holder.start_offset_bytes)
    for row in consumers.groups:
        for segments, offset in (
            (commitlog, row.committed_physical_offset_bytes),
            (index.queue(row.topic, row.queue_id), row.committed_offset * CQ_STORE_UNIT_SIZE),
        ):
            holder = None if offset is None else _holder(segments, offset)
            if holder is not None and offset is not None:
                marks[holder.path].add(offset - holder.start_offset_bytes)
    return with_marks(store, marks, readers, index.places)


def with_marks(
    store: StoreView,
    marks: dict[str, set[int]],
    readers: dict[str, set[int]],
    places: Mapping[str, int] | None = None,
) -> StoreView:
    """The store view with these consumer (`marks`) and reader positions, bytes into each segment by path.
    `places`: each segment's place in `store.segments` by path, when the caller has them."""
    if not marks and not readers:
        return store
    segments = list(store.segments)
    if places is None:
        places = {segment.path: place for place, segment in enumerate(segments)}
    for path in marks.keys() | readers.keys():  # only these rows change
        place = places[path]
        segments[place] = dataclasses.replace(
            segments[place],
            consumer_positions_bytes=tuple(sorted(marks.get(path, ()))),
            reader_positions_bytes=tuple(sorted(readers.get(path, ()))),
        )
    return dataclasses.replace(store, segments=tuple(segments))


# --- connected consumers


def connected_consumers(
    fds: Sequence[Any], segments: Sequence[SegmentView], comms: dict[int, str | None]
) -> tuple[ConnectedConsumerView, ...]:
    """The sockets that got store bytes by a send path this interval, busiest first. `fds`: the sendpath
    probe's per-descriptor rows (FdTraffic); `comms`: its processes' names.

    A spliced send's source is a pipe: the store segments, read position and cold pages are those of the
    splices that filled that pipe (file -> pipe), when the pipe fed this one socket only."""
    by_name = {segment.name: segment for segment in segments}
    sends = [row for row in fds if row.fd_kind == "socket" and row.socket_bytes_as in SEND_PATH_FIELDS]
    feeders = _pipe_feeders(fds, sends, by_name)
    sockets: dict[tuple[int, str], _Socket] = {}
    for row in sends:
        pipe_fed = feeders.get((row.pid, _pipe(row.source_name))) if row.source_kind == "pipe" else None
        reads = [row] if pipe_fed is None else pipe_fed
        if not pipe_fed and not _store_segments(row.source_name, by_name) and row.socket_bytes_as != "splice":
            continue  # a file outside the store
        entry = sockets.setdefault((row.pid, row.fd_name), _Socket())
        entry.paths[row.socket_bytes_as] += row.bytes_user_to_kernel + row.bytes_in_kernel
        for read in reads:
            entry.read(read, _store_segments(read.source_name, by_name), by_name)
    views = [_connected(pid, peer, entry, by_name, comms.get(pid)) for (pid, peer), entry in sockets.items()]
    return tuple(sorted(views, key=lambda view: (-view.bytes_sent, view.pid, view.peer)))


def _pipe(name: str | None) -> str | None:
    """ "pipe:[123] (read end)" -> "pipe:[123]": one pipe, whichever end a descriptor holds."""
    return None if name is None else name.split(" ", 1)[0]


def _pipe_feeders(
    fds: Sequence[Any], sends: Sequence[Any], by_name: dict[str, SegmentView]
) -> dict[tuple[int, str | None], list[Any]]:
    """(pid, pipe) -> the rows that spliced store segments into that pipe, for pipes that fed one socket."""
    fed_sockets: dict[tuple[int, str | None], set[str]] = defaultdict(set)
    for row in sends:
        if row.source_kind == "pipe":
            fed_sockets[(row.pid, _pipe(row.source_name))].add(row.fd_name)
    feeders: dict[tuple[int, str | None], list[Any]] = defaultdict(list)
    for row in fds:
        pipe = (row.pid, _pipe(row.fd_name))
        fed_one = row.fd_kind == "pipe" and len(fed_sockets.get(pipe, ())) == 1
        if fed_one and _store_segments(row.source_name, by_name):
            feeders[pipe].append(row)
    return feeders


class _Socket:
    """What one socket was sent over the interval, gathered from its descriptor rows."""

    def __init__(self) -> None:
        self.paths: dict[str, int] = defaultdict(int)
        self.segments: dict[str, int] = defaultdict(int)
        self.cold_pages: int | None = 0  # None once a row could not count them
        self.position: tuple[int, str] | None = None  # (CommitLog offset, segment): the furthest reached

    def read(self, row: Any, segments: tuple[str, ...], by_name: dict[str, SegmentView]) -> None:
        """A row whose bytes came from `segments` (the socket's own, or the splices that filled its pipe)."""
        moved = row.bytes_user_to_kernel + row.bytes_in_kernel
        for name in segments:
            self.segments[name] += moved // len(segments)
        pages = row.pages_added_in_syscalls
        self.cold_pages = None if pages is None or self.cold_pages is None else self.cold_pages + pages
        if len(segments) == 1 and row.source_end_bytes is not None and by_name[segments[0]].kind in LOG_KINDS:
            self.reached(by_name[segments[0]], row.source_end_bytes)

    def reached(self, segment: SegmentView, end_in_file: int) -> None:
        offset = segment.start_offset_bytes + min(end_in_file, segment.size_bytes)
        if self.position is None or offset > self.position[0]:
            self.position = (offset, segment.name)


def _store_segments(source_name: str | None, by_name: dict[str, SegmentView]) -> tuple[str, ...]:
    """The store segments a source names: a file, "NAME (mapped)", or "A or B (mapped)"."""
    if not source_name:
        return ()
    names = source_name.removesuffix(MAPPED_SUFFIX).split(" or ")
    return tuple(name for name in names if name in by_name)


def _connected(
    pid: int, peer: str, entry: _Socket, by_name: dict[str, SegmentView], comm: str | None
) -> ConnectedConsumerView:
    paths = entry.paths
    read = sorted(entry.segments, key=lambda name: (-entry.segments[name], name))
    unavailable = {}
    if paths.get("splice") and not read:
        unavailable["segments"] = SPLICED
    if entry.position is None:
        unavailable["read_position_bytes"] = SPLICED if "segments" in unavailable else NO_READ_POSITION
    if entry.cold_pages is None:
        unavailable["cold_pages"] = NO_ADDED_PAGES
    busiest = max(paths, key=lambda path: paths[path]) if any(paths.values()) else None
    return ConnectedConsumerView(
        pid=pid,
        comm=comm,
        peer=peer,
        main_path=busiest,
        bytes_sent=sum(paths.values()),
        **{field: paths.get(path, 0) for path, field in SEND_PATH_FIELDS.items()},
        segments=tuple(read),
        segment_cached_pages=tuple(by_name[name].cached_pages for name in read),
        segment_pages=tuple(by_name[name].pages for name in read),
        read_position_bytes=None if entry.position is None else entry.position[0],
        cold_pages=entry.cold_pages,
        unavailable=unavailable,
        read_segment=None if entry.position is None else entry.position[1],
    )
