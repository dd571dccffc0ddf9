"""ReputMessageService: builds the consume queues and the index from the CommitLog, behind the writer.

It walks the CommitLog from `reput_from_offset` to its readable end, turns each record into a consume-queue
entry and index keys, and rolls to the next segment at a BLANK record. Recovery runs the same walk
synchronously (`dispatch_until`) to rebuild what the crash left out.

Like RocketMQ's reput thread (`checkMessageAndReturnSize(buf, false, false, false)`), it reads only what the
consume queue and the index need. A producer's batch is a run of records of one shape (same size, layout,
body length, queue and sysflag), so a run is read by one `iter_unpack` of a struct that picks out each
record's header fields and its topic-and-properties tail, skipping the body; the tails, usually few distinct
ones, are checked and parsed once each (`_Tail`). The checks are `checkMessageAndReturnSize`'s: whatever a
run does not pass (a BLANK, damage, a transaction half, an unusual record) goes through the full decoder,
one record at a time, exactly as before.

While it runs beside the writer in one process, the writer hands it what it already knows of each packed
batch it put (`CommitLog.hand_written_batches_to`: where the records are, their sizes, queue offsets, store
time and topic-and-properties tails), so the records just written are not read back: the consume-queue
entries and index keys come out the same as from reading them (the tails go through the same parse and
checks). That is only a shortcut for the records this process wrote and has not dispatched yet: anything
else (records of an earlier run, a crash's leftovers at recovery, batches not handed over because the
dispatcher was too far behind, single records, transaction records) is read from the CommitLog, and after a
crash recovery rebuilds the consume queues and the index from the log's bytes alone, as RocketMQ does.
"""

from __future__ import annotations

import functools
import logging
import operator
import struct
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from store import codec
from store.commitlog import CommitLog, WrittenBatch
from store.consume_queue import ConsumeQueueStore
from store.consume_queue_format import enters_consume_queue
from store.errors import CorruptRecord, StoreError
from store.index_file import IndexRequest, IndexService, index_keys
from store.java_checksums import tags_code as java_tags_code
from store.service_thread import ServiceThread

log = logging.getLogger(__name__)

_FIRST_RUN = 64  # records read by the first unpack of a walk; the guess doubles while runs go on
_MAX_RUN = 1024  # a struct of 1,024 records takes ~300 KB: the cache of them stays small
# Distinct topic-and-properties tails kept parsed, per magic code: a few MiB at most.
_TAIL_CACHE_ENTRIES = 2048
_CACHED_TAIL_BYTES = 1024


class Dispatcher:
    """Turns CommitLog records into consume-queue entries and index keys (CommitLogDispatcher*)."""

    def __init__(
        self,
        commit_log: CommitLog,
        consume_queues: ConsumeQueueStore,
        index_service: IndexService | None,
        *,
        take_written_batches: bool = True,
    ):
        """`take_written_batches`: have the CommitLog hand over what each put wrote (see the module's
        docstring); False reads every record from the log."""
        self.commit_log = commit_log
        self.consume_queues = consume_queues
        self.index_service = index_service
        self.reput_from_offset = 0
        # The store time of the newest record given a ConsumeQueue entry. The checkpoint takes it as its
        # logicsMsgTimestamp only once the entries up to it are flushed (MessageStore._flush_consume_queues).
        self.last_queued_timestamp_ms = 0
        # The reason dispatch is stuck: a CorruptRecord stops it for good; an I/O error (a full disk while
        # creating a consume-queue or index file) is retried at the next call.
        self.error: Exception | None = None
        # Whether the current pause was logged: the reput thread retries after every put, and one line per
        # retry buried the one that mattered (a full disk printed hundreds under `store produce`).
        self._pause_logged = False
        self._arrived = threading.Condition()
        # One dispatcher at a time: the reput thread, and a flush or recovery that dispatches itself. Two
        # walks of the same records would put the same keys twice and race on the index's files. Hold it
        # (`with dispatcher.paused:`) to keep the consume queues and the index still while flushing them.
        self.paused = threading.RLock()
        self._tails: dict[int, dict[bytes, _Tail | None]] = {
            version.magic_code: {} for version in codec.MessageVersion
        }
        # The writer appends, only this dispatcher takes from the left. The writer bounds it: it stops
        # handing batches over while WRITTEN_BATCHES_KEPT wait (those are then read from the log).
        self._written: deque[WrittenBatch] = deque()
        if take_written_batches:
            commit_log.hand_written_batches_to(self._written)

    @property
    def behind_bytes(self) -> int:
        """`dispatchBehindBytes`: CommitLog bytes not yet in the consume queues and the index."""
        return max(0, self.commit_log.max_offset - self.reput_from_offset)

    def dispatch_until(self, end_offset: int | None = None) -> int:
        """Dispatch every record from `reput_from_offset` up to `end_offset` (default: the readable end).
        Returns the number of records dispatched; stops at a record that does not decode."""
        with self.paused:
            dispatched = self._dispatch_until(end_offset)
        if dispatched:
            with self._arrived:
                self._arrived.notify_all()
        return dispatched

    def _dispatch_until(self, end_offset: int | None) -> int:
        end = self.commit_log.max_offset if end_offset is None else end_offset
        if self.error is not None and not isinstance(self.error, CorruptRecord):
            self.error = None
        self._skip_deleted_segments()
        dispatched = 0
        while self.reput_from_offset < end and self.error is None:
            written = self._written_batch_at(self.reput_from_offset)
            here = written is not None and written.physical_offset == self.reput_from_offset
            if here and written.end_offset <= end:
                handed = self._dispatch_written(written)
                if handed is None:  # paused: retried at the next call
                    break
                if handed:
                    dispatched += handed
                    continue
            # Read from the log up to the next batch handed over, or all of this one if its tails did not
            # parse (or only part of it is readable yet).
            limit = (
                end if written is None else min(end, written.end_offset if here else written.physical_offset)
            )
            found = self.commit_log.get_data(self.reput_from_offset)
            if found is None:
                break
            view, file_from_offset = found
            with view:
                dispatched += self._dispatch_view(view, file_from_offset, limit)
        return dispatched

    def _skip_deleted_segments(self) -> None:
        """doReput's rule: dispatch goes on from the CommitLog's first segment when the records it was to
        start from are gone (retention deleted them; recovery may plan to dispatch from before them, and
        get_data finds nothing there: dispatch stood still at that offset for good)."""
        first = self.commit_log.min_offset
        if self.reput_from_offset < first:
            log.warning(
                "dispatch goes on at %d, the start of the CommitLog: the records from %d are deleted",
                first,
                self.reput_from_offset,
            )
            self.reput_from_offset = first

    def _written_batch_at(self, offset: int) -> WrittenBatch | None:
        """The first batch handed over that starts at or after `offset` (those before it are dispatched)."""
        written = self._written
        while written and written[0].physical_offset < offset:
            written.popleft()
        return written[0] if written else None

    def _dispatch_written(self, written: WrittenBatch) -> int | None:
        """Consume-queue entries and index keys of a batch handed over by the writer: the records it holds,
        0 when its tails do not parse (the log is read instead), None when dispatch pauses."""
        run = _handed_over_run(written, self._tails)
        if run is None:
            return 0
        if not self._dispatch_run(run, written.physical_offset, written.shape.sizes):
            return None
        self._written.popleft()
        self.reput_from_offset = written.end_offset
        self._resumed(written.end_offset)
        return run.count

    def _dispatch_view(self, view: memoryview, file_from_offset: int, end: int) -> int:
        """Dispatch the records of `view` (from `reput_from_offset` to the readable end of its segment) that
        start before `end`: runs of same-shape records a block at a time, anything else one by one."""
        base = self.reput_from_offset
        limit = min(len(view), end - base)  # records starting before `limit` are dispatched
        position, dispatched, guess = 0, 0, _FIRST_RUN
        while position < limit and self.error is None:
            run = _read_run(view, position, limit, guess, self._tails)
            if run is None:  # not a plain message (a BLANK, damage, a transaction half...): the full decoder
                step = self._dispatch_one(view, base, position)
                if step is None:
                    return dispatched
                position, dispatched = position + step, dispatched + 1
                continue
            if not self._dispatch_run(run, base + position):
                break
            guess = min(_MAX_RUN, 2 * run.count) if run.count == run.asked else run.count
            position += run.count * run.size
            dispatched += run.count
            self._resumed(base + position)
        self.reput_from_offset = base + position
        return dispatched

    def _dispatch_one(self, view: memoryview, base: int, position: int) -> int | None:
        """Decode and dispatch the record at `position` as RocketMQ does: its size, or None when dispatch
        stops here or rolls to the next segment (`reput_from_offset` then says where it goes on)."""
        self.reput_from_offset = base + position
        try:
            info = codec.decode_dispatch_info(view, position, base_offset=base)
        except CorruptRecord as error:
            self.error = error
            log.error("dispatch stopped: %s", error)
            return None
        if isinstance(info, codec.BlankRecord):
            self.reput_from_offset = self.commit_log.roll_next_file(base + position)
            return None
        try:
            self._dispatch(info)
        except (StoreError, OSError) as error:  # each step is idempotent, so a retry redoes only the rest
            self._pause(info.physical_offset, error)
            return None
        self._resumed(info.physical_offset)
        return info.size

    def _dispatch_run(self, run: _Run, start_offset: int, sizes: int | Sequence[int] | None = None) -> bool:
        """Consume-queue entries (one write per queue) and index keys for a run (of records of `sizes`, by
        default all of run.size); False if dispatch pauses, at the run's first record: every step is
        idempotent, so the retry redoes only what is missing."""
        sizes = run.size if sizes is None else sizes
        try:
            for (topic, queue_id), rows in run.by_queue().items():
                queue = self.consume_queues.find_or_create(topic, queue_id)
                if rows is None:  # the whole run
                    queue.put_positions(run.queue_offsets, run.physical_offsets, sizes, run.tags_codes())
                    continue
                queue.put_positions(
                    [run.queue_offsets[row] for row in rows],
                    [run.physical_offsets[row] for row in rows],
                    sizes if isinstance(sizes, int) else [sizes[row] for row in rows],
                    [run.tails[row].tags_code for row in rows],
                )
            self.last_queued_timestamp_ms = run.store_timestamps[-1]
            if self.index_service is not None:
                self._index_run(run)
        except (StoreError, OSError) as error:
            self._pause(start_offset, error)
            return False
        return True

    def _index_run(self, run: _Run) -> None:
        """IndexService.buildIndex for each record of the run, the keys put file by file. A run without
        keys puts nothing, but buildIndex still makes the first index file (or the next, after a full one)."""
        if not run.any_keys:
            self.index_service.writable_file()
            return
        self.index_service.build_indexes(
            [
                IndexRequest(
                    tail.topic, tail.keys, tail.uniq_key, physical_offset, store_timestamp, run.sysflag
                )
                for tail, physical_offset, store_timestamp in zip(
                    run.tails, run.physical_offsets, run.store_timestamps, strict=True
                )
            ]
        )

    def _pause(self, physical_offset: int, error: Exception) -> None:
        self.error = error
        if not self._pause_logged:
            log.warning("dispatch paused at %d (retried until it succeeds): %s", physical_offset, error)
            self._pause_logged = True

    def _resumed(self, physical_offset: int) -> None:
        if self._pause_logged:
            log.info("dispatch resumed at %d", physical_offset)
            self._pause_logged = False

    def _dispatch(self, info: codec.DispatchInfo) -> None:
        if enters_consume_queue(info.sysflag):
            queue = self.consume_queues.find_or_create(info.topic, info.queue_id)
            queue.put_message_position_info(
                info.physical_offset, info.size, info.tags_code, info.queue_offset
            )
            self.last_queued_timestamp_ms = info.store_timestamp_ms
        if self.index_service is not None:
            request = IndexRequest(
                info.topic,
                info.keys,
                info.uniq_key,
                info.physical_offset,
                info.store_timestamp_ms,
                info.sysflag,
            )
            self.index_service.build_index(request)

    def wait_for_arrival(self, timeout_s: float, arrived: Callable[[], bool]) -> bool:
        """Block until `arrived()` holds (checked after each dispatch) or the timeout passes: long polling."""
        with self._arrived:
            return self._arrived.wait_for(arrived, timeout_s)


# A pass that found at least this many records met a busy writer: the next pass waits a slice, so that it
# takes a slice's puts at once. The writer and this thread share the GIL: woken after every put, the thread
# took it every switch interval (5 ms: ~100-140 hand-offs a second at 1 KiB, each a wake-up on the other
# core, and, on a busy machine, a wait for a CPU with nobody running Python); a slice of 20 ms cut the
# wake-ups 3x and the dispatcher's CPU per message by 30-40 % (0.13-0.27 -> 0.09-0.16 us at 1 KiB).
BUSY_PASS_RECORDS = 256
DISPATCH_SLICE_S = 0.02  # consumers see a busy writer's puts at most this much later (RocketMQ polls 1 ms)


class ReputMessageService(ServiceThread):
    """The dispatcher's thread. The CommitLog wakes it after each put; it also polls every 100 ms. Behind a
    busy writer it dispatches a slice of puts per pass (BUSY_PASS_RECORDS, DISPATCH_SLICE_S)."""

    name = "ReputMessageService"
    join_timeout_s = 60.0

    def __init__(self, dispatcher: Dispatcher):
        super().__init__()
        self.dispatcher = dispatcher

    def stop(self) -> None:
        """Finish dispatching what is readable, then stop (RocketMQ waits up to 50 s for the same)."""
        super().stop()
        self.dispatcher.dispatch_until()

    def run_once(self) -> None:
        self._wait(0.1)
        if self.dispatcher.dispatch_until() >= BUSY_PASS_RECORDS:
            self._stopped.wait(DISPATCH_SLICE_S)  # stop() ends it at once, then dispatches the rest


# ---- reading runs of same-shape records ---------------------------------------------------------------


@dataclass(frozen=True, slots=True, eq=False)
class _Tail:
    """What the dispatcher needs from a record's topic and properties (a checked, parsed tail)."""

    topic: str
    tags_code: int
    keys: str | None
    uniq_key: str | None
    has_keys: bool  # whether buildIndex puts any key for it


@dataclass(frozen=True, slots=True)
class _Run:
    """`count` back-to-back records of `size` bytes, one queue id and sysflag, as columns."""

    size: int  # 0 for a batch handed over whose records differ in size (_dispatch_run takes their sizes)
    count: int
    queue_id: int
    sysflag: int
    queue_offsets: Sequence[int]
    physical_offsets: Sequence[int]
    store_timestamps: tuple[int, ...]
    tails: tuple[_Tail, ...]
    distinct_tails: tuple[_Tail, ...]
    asked: int  # the records read: a run shorter than that ended at a record of another shape

    def tags_codes(self) -> list[int]:
        if len(self.distinct_tails) == 1:
            return [next(iter(self.distinct_tails)).tags_code] * self.count
        return list(map(_TAGS_CODE, self.tails))

    @property
    def any_keys(self) -> bool:
        return any(tail.has_keys for tail in self.distinct_tails)

    def by_queue(self) -> dict[tuple[str, int], list[int] | None]:
        """The rows of each (topic, queue id); None for all of them, when the run has one topic (nearly
        always: a batch is one queue's)."""
        topics = {tail.topic for tail in self.distinct_tails}
        if len(topics) == 1:
            return {(topics.pop(), self.queue_id): None}
        rows: dict[tuple[str, int], list[int]] = {}
        for row, tail in enumerate(self.tails):
            rows.setdefault((tail.topic, self.queue_id), []).append(row)
        return rows


_SIZE_AND_MAGIC = struct.Struct(">iI")
_INT = struct.Struct(">i")
_TOPIC_LENGTH_SIZES = {codec.MESSAGE_MAGIC_CODE_V1: 1, codec.MESSAGE_MAGIC_CODE_V2: 2}
_PROPERTIES_LENGTH_SIZE = 2
_HEADER_SIZES = tuple(
    codec.calc_record_size(codec.MessageVersion.V1, layout << 4, 0, 0, 0) - 1 - _PROPERTIES_LENGTH_SIZE
    for layout in range(4)
)
_SMALLEST_RECORD = _HEADER_SIZES[0] + 1 + _PROPERTIES_LENGTH_SIZE
# The columns of a record's row, and those every record of a run shares with the first.
(
    _TOTAL,
    _MAGIC,
    _QUEUE_ID,
    _QUEUE_OFFSET,
    _PHYSICAL_OFFSET,
    _SYSFLAG,
    _STORE_TIMESTAMP,
    _BODY_LENGTH,
    _TAIL,
) = range(9)
_FIELDS = 9
_SHARED = (_TOTAL, _MAGIC, _QUEUE_ID, _SYSFLAG, _BODY_LENGTH)
_TAGS_CODE = operator.attrgetter("tags_code")


@functools.lru_cache(maxsize=64)
def _run_struct(layout: int, body_length: int, tail_length: int, count: int) -> struct.Struct:
    """`count` records of this shape back to back, each giving TOTALSIZE, MAGICCODE, QUEUEID, QUEUEOFFSET,
    PHYSICALOFFSET, SYSFLAG, STORETIMESTAMP and the BODY length (codec's record layout), the body skipped,
    then the tail's bytes: one flat tuple, whose columns are strided slices."""
    born_host = (16 if layout & 1 else 4) + 4
    store_host = (16 if layout & 2 else 4) + 4
    record = f"iI4xi4xqqi8x{born_host}xq{store_host}x4x8xi{body_length}x{tail_length}s"
    return struct.Struct(">" + record * count)


def _read_run(
    view: memoryview, position: int, limit: int, guess: int, tails: dict[int, dict[bytes, _Tail | None]]
) -> _Run | None:
    """The run of same-shape records at `position` (at most `guess`, none starting at or after `limit`), or
    None when the record there is not one the run reader takes: the caller decodes it fully."""
    available = len(view) - position
    if available < _SIZE_AND_MAGIC.size:
        return None
    total, magic = _SIZE_AND_MAGIC.unpack_from(view, position)
    topic_length_size = _TOPIC_LENGTH_SIZES.get(magic)
    if topic_length_size is None or not _SMALLEST_RECORD <= total <= min(
        codec.DEFAULT_MAX_RECORD_SIZE, available
    ):
        return None
    sysflag = _INT.unpack_from(view, position + codec.SYSFLAG_POSITION)[0]
    if sysflag & codec.TRANSACTION_TYPE_MASK:
        return None
    header_size = _HEADER_SIZES[(sysflag >> 4) & 3]
    body_length = _INT.unpack_from(view, position + header_size - 4)[0]
    if not 0 <= body_length <= total - header_size - topic_length_size - _PROPERTIES_LENGTH_SIZE:
        return None
    count = min(guess, available // total, -(-(limit - position) // total))
    count = asked = 1 << (count.bit_length() - 1)  # a power of two: few structs to build and cache
    layout = (sysflag >> 4) & 3
    values = _run_struct(layout, body_length, total - header_size - body_length, count).unpack_from(
        view, position
    )
    columns = [values[field::_FIELDS] for field in range(_FIELDS)]
    for field in _SHARED:
        column = columns[field]
        if column.count(column[0]) != count:
            count = _same_prefix(column, count)
            columns = [column[:count] for column in columns]
    # PHYSICALOFFSETs one record apart, as in any sound log: so the entries' ends only grow (put_positions)
    physical_offsets = columns[_PHYSICAL_OFFSET]
    spaced = range(physical_offsets[0], physical_offsets[0] + count * total, total)
    if physical_offsets != tuple(spaced):
        count = next(
            row for row, (have, want) in enumerate(zip(physical_offsets, spaced, strict=True)) if have != want
        )
        columns = [column[:count] for column in columns]
        if not count:
            return None
    columns[_PHYSICAL_OFFSET] = spaced[:count]  # a range: the consume queue packs such runs from a template
    parsed = _parsed_tails(set(columns[_TAIL]), magic, topic_length_size, tails)
    run_tails = tuple(map(parsed.__getitem__, columns[_TAIL]))
    if None in parsed.values():
        count = run_tails.index(None)
        if not count:
            return None
        columns = [column[:count] for column in columns]
        run_tails = run_tails[:count]
    return _Run(
        total,
        count,
        columns[_QUEUE_ID][0],
        sysflag,
        columns[_QUEUE_OFFSET],
        columns[_PHYSICAL_OFFSET],
        columns[_STORE_TIMESTAMP],
        run_tails,
        tuple(tail for tail in parsed.values() if tail is not None),
        asked,
    )


def _handed_over_run(written: WrittenBatch, tails: dict[int, dict[bytes, _Tail | None]]) -> _Run | None:
    """The run of a batch the writer handed over, its tails parsed as the run reader parses them; None if
    one does not parse (then the log's bytes decide)."""
    shape = written.shape
    topic_length_size = _TOPIC_LENGTH_SIZES.get(shape.magic_code)
    if topic_length_size is None:
        return None
    uniform = isinstance(shape.tails, bytes)
    parsed = _parsed_tails(
        {shape.tails} if uniform else set(shape.tails), shape.magic_code, topic_length_size, tails
    )
    if None in parsed.values():
        return None
    count = len(shape.starts)
    first, starts = written.physical_offset, shape.starts
    return _Run(
        shape.sizes if isinstance(shape.sizes, int) else 0,
        count,
        shape.queue_id,
        shape.sysflag,
        range(written.queue_offset, written.queue_offset + count),
        range(first, first + starts.stop, starts.step)
        if isinstance(starts, range)
        else tuple(map(first.__add__, starts)),
        (written.store_timestamp_ms,) * count,
        (parsed[shape.tails],) * count if uniform else tuple(map(parsed.__getitem__, shape.tails)),
        tuple(parsed.values()),
        count,
    )


def _same_prefix(column: tuple, count: int) -> int:
    """How many values from the start equal the first (fewer than `count`): a binary search of C counts."""
    low, high = 1, count - 1
    while low < high:
        middle = (low + high + 1) // 2
        if column[:middle].count(column[0]) == middle:
            low = middle
        else:
            high = middle - 1
    return low


def _parsed_tails(
    distinct: set[bytes], magic: int, topic_length_size: int, tails: dict[int, dict[bytes, _Tail | None]]
) -> dict[bytes, _Tail | None]:
    cache = tails[magic]
    if len(cache) > _TAIL_CACHE_ENTRIES:
        cache.clear()
    parsed = {}
    for tail in distinct:
        found = cache.get(tail, cache)
        if found is cache:
            found = _parse_tail(tail, topic_length_size)
            if len(tail) <= _CACHED_TAIL_BYTES:
                cache[tail] = found
        parsed[tail] = found
    return parsed


_tags_code = functools.lru_cache(maxsize=1024)(java_tags_code)  # tails differ by key, tags repeat


def _parse_tail(tail: bytes, topic_length_size: int) -> _Tail | None:
    """TOPIC length, TOPIC, PROPERTIES length and PROPERTIES, with checkMessageAndReturnSize's checks that
    concern them (the lengths add up to the tail's, valid UTF-8); None when one fails."""
    topic_end = topic_length_size + int.from_bytes(tail[:topic_length_size], "big", signed=True)
    properties_start = topic_end + _PROPERTIES_LENGTH_SIZE
    if topic_end < topic_length_size or properties_start > len(tail):
        return None
    properties_length = int.from_bytes(tail[topic_end:properties_start], "big", signed=True)
    if properties_length < 0 or properties_start + properties_length != len(tail):
        return None
    try:
        topic = tail[topic_length_size:topic_end].decode()
        properties = codec.string_to_properties(tail[properties_start:].decode())
    except UnicodeDecodeError:
        return None
    keys = properties.get(codec.PROPERTY_KEYS)
    uniq_key = properties.get(codec.PROPERTY_UNIQ_CLIENT_MESSAGE_ID_KEYIDX)
    return _Tail(
        topic,
        _tags_code(properties.get(codec.PROPERTY_TAGS)),
        keys,
        uniq_key,
        bool(index_keys(uniq_key, keys)),
    )
