"""MessageStore: a whole store directory opened for writing, in RocketMQ's design (`DefaultMessageStore`).

`start()` takes the `lock` file, recovers (normally, or abnormally when an `abort` file says the last run
crashed), writes a fresh `abort` file holding our pid and starts the services: segment preallocation, the
CommitLog flush, the dispatcher that builds consume queues and the index, and a scheduler that flushes the
consume queues and the checkpoint every second and persists consumer offsets every 5 s. `shutdown()` stops
them in order, flushes everything and removes the `abort` file once dispatch has caught up.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import logging
import operator
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import NamedTuple

from store import codec, retention
from store.checkpoint import StoreCheckpoint, acquire_store_lock, create_abort_file, remove_abort_file
from store.commitlog import AppendResult, CommitLog
from store.config import StoreConfig
from store.consume_queue import ConsumeQueue, ConsumeQueueStore, entries_struct
from store.consume_queue_format import ENTRY
from store.consumer_offsets import ConsumerOffsets, consumer_offset_path, load_consumer_offsets
from store.dispatch import Dispatcher, ReputMessageService
from store.errors import StoreError
from store.index_file import IndexService
from store.layout import discover_store
from store.mapped_file_queue import AllocateMappedFileService
from store.recovery import RecoveryPlan, plan_recovery
from store.transient_pool import TransientStorePool

log = logging.getLogger(__name__)

CONSUMER_OFFSET_PERSIST_INTERVAL_S = 5.0  # flushConsumerOffsetInterval


class StoreNotRunning(StoreError):
    """The store was not started, or has been shut down."""


class GetStatus(StrEnum):
    FOUND = "FOUND"
    NO_MESSAGE_IN_QUEUE = "NO_MESSAGE_IN_QUEUE"
    OFFSET_OVERFLOW_ONE = "OFFSET_OVERFLOW_ONE"  # asked for the next offset: nothing new yet
    OFFSET_OVERFLOW_BADLY = "OFFSET_OVERFLOW_BADLY"
    OFFSET_TOO_SMALL = "OFFSET_TOO_SMALL"  # below the queue's minimum (deleted by retention)
    NO_MATCHED_LOGIC_QUEUE = "NO_MATCHED_LOGIC_QUEUE"


class FoundMessage(NamedTuple):
    """A record found through a consume queue. A named tuple, so that `get_messages` builds a whole batch of
    them in C (`tuple.__new__` over zipped columns) instead of running an __init__ per message."""

    queue_offset: int
    physical_offset: int
    size_bytes: int
    tags_code: int
    data: memoryview  # the whole record, zero-copy from the CommitLog mapping


@dataclass(frozen=True)
class GetResult:
    status: GetStatus
    next_begin_offset: int
    min_offset: int
    max_offset: int
    messages: list[FoundMessage]


class MessageStore:
    """One store directory, opened for writing. Use `start()` / `shutdown()` or a `with` block."""

    def __init__(self, root: Path, config: StoreConfig | None = None):
        self.root = Path(root)
        self.config = config or StoreConfig()
        self.recovery: RecoveryPlan | None = None
        self.consumer_offsets = ConsumerOffsets()
        self.shutdown_problems: list[str] = []
        self._running = False
        self._lock = None
        self._pool: TransientStorePool | None = None
        self._allocator: AllocateMappedFileService | None = None
        self._scheduler: _Scheduler | None = None
        self._last_thorough_queue_flush = time.monotonic()

    @property
    def allocator(self) -> AllocateMappedFileService | None:
        """The service that makes CommitLog segments ahead of the writer (its `stats`, `wait_idle`)."""
        return self._allocator

    # ---- lifecycle ------------------------------------------------------------------------------------

    def start(self) -> MessageStore:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "commitlog").mkdir(exist_ok=True)
        self._lock = acquire_store_lock(self.root)
        try:
            self._open_components()
            self._recover()
            self._start_services()
        except BaseException:
            self._lock.release()
            raise
        self._running = True
        return self

    def _open_components(self) -> None:
        config = self.config
        self.checkpoint = StoreCheckpoint(self.root / "checkpoint")
        if config.transient_store_pool_enable:
            self._pool = TransientStorePool(
                config.transient_store_pool_size, config.mapped_file_size_commitlog
            )
        self._allocator = AllocateMappedFileService(config, self._pool).start()
        self.commit_log = CommitLog(
            self.root,
            config,
            checkpoint=self.checkpoint,
            allocate_service=self._allocator,
            transient_pool=self._pool,
        )
        self.consume_queues = ConsumeQueueStore(self.root, config)
        self.index_service = IndexService(self.root / "index", config, checkpoint=self.checkpoint)
        self.commit_log.load()
        self.consume_queues.load()
        self.index_service.load(read_only=False)
        self.dispatcher = Dispatcher(
            self.commit_log,
            self.consume_queues,
            self.index_service if config.message_index_enable else None,
        )
        self.consumer_offsets = load_consumer_offsets(consumer_offset_path(self.root))

    def _recover(self) -> None:
        """Apply the recovery plan: cut the log after its last valid record, cut each consume queue where its
        entries stop matching the log, drop the index files not known whole, re-dispatch what is missing."""
        layout = discover_store(
            self.root,
            commitlog_size=self.config.mapped_file_size_commitlog,
            cq_size=self.config.mapped_file_size_consume_queue,
        )
        plan = plan_recovery(layout, self.config, check_crc=self.config.check_crc_on_recover)
        # From here until a clean shutdown the files are being changed: a recovery cut short by a crash is
        # redone as after any crash (the plan's mode came from the abort file as it was before this line).
        create_abort_file(self.root)
        self.index_service.destroy_files(plan.index_files_to_drop)
        ends = {(end.topic, end.queue_id): end.end_queue_offset for end in plan.queue_ends}
        for consume_queue in self.consume_queues.queues:
            end = ends.get((consume_queue.topic, consume_queue.queue_id))
            if end is not None:  # None: the plan saw no files for it, so it has none to cut
                consume_queue.cut(end)
        self.commit_log.cut(plan.process_offset)
        self.dispatcher.reput_from_offset = plan.dispatch_from_offset
        self.dispatcher.dispatch_until(plan.process_offset)
        self.commit_log.queue_offsets = self.consume_queues.queue_offset_table()
        queue = self.commit_log.mapped_file_queue
        for consume_queue in self.consume_queues.queues:
            consume_queue.correct_min_offset(max(0, self.commit_log.min_offset))
        if (last := queue.last_file) is not None and not last.is_full():
            last.reserve_blocks()  # appends into a loaded file must not meet ENOSPC as SIGBUS
        self.recovery = plan
        log.info("recovered (%s): log ends at %d, %s", plan.mode, plan.process_offset, plan.stop_reason)

    def _start_services(self) -> None:
        self.commit_log.start()
        self._reput = ReputMessageService(self.dispatcher)
        self._reput.start()
        self.clean_service = retention.CleanService(
            self.config, self.commit_log, self.consume_queues, self.index_service
        )
        self._scheduler = _Scheduler(
            [
                (self.config.flush_interval_consume_queue_ms / 1000, self._flush_consume_queues),
                (self.config.checkpoint_flush_interval_ms / 1000, self.checkpoint.flush),
                (CONSUMER_OFFSET_PERSIST_INTERVAL_S, self.persist_consumer_offsets),
                (retention.CLEAN_RESOURCE_INTERVAL_S, self.clean_service.run_scheduled),
            ]
        )
        self._scheduler.start()

    def shutdown(self) -> list[str]:
        """Stop the services, flush everything, and leave a store that recovers normally.

        Best effort: every step runs even when an earlier one fails (a full disk), the lock is always
        released, and the failures are returned (and kept in `shutdown_problems`). The `abort` file stays
        unless dispatch caught up and nothing failed, so the next start re-checks what may be missing.
        """
        if not self._running:
            return []
        self._running = False
        problems: list[str] = []
        for step in (
            self._scheduler.stop,
            self._commit_written,
            self._reput.stop,
            self.commit_log.shutdown,
            lambda: self._flush_consume_queues(thorough=True),
            self.consume_queues.close,
            self.index_service.flush,
            self.index_service.close,
            self.persist_consumer_offsets,
            self.checkpoint.close,
            self._allocator.shutdown,
            self._pool.destroy if self._pool is not None else None,
        ):
            if step is not None:
                _run_step(step, problems)
        if self.dispatcher.error is not None:
            problems.append(f"dispatch did not finish: {self.dispatcher.error}")
        if not problems and self.dispatcher.behind_bytes == 0:
            remove_abort_file(self.root)
        self._lock.release()
        self.shutdown_problems = problems
        return problems

    def _commit_written(self) -> None:
        """Commit what a transient store pool's buffers hold, so that the dispatcher's last pass reaches the
        end of the log (readers and dispatch see committed bytes only): RocketMQ's commit service runs on
        while its reput drains. Without this a clean shutdown left the last puts undispatched, and the
        abort file with them."""
        queue = self.commit_log.mapped_file_queue
        while not queue.commit(0):  # one file per call; True once nothing moved
            pass

    def __enter__(self) -> MessageStore:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.shutdown()

    def _require_running(self) -> None:
        if not self._running:
            raise StoreNotRunning(f"{self.root}: the store is not running")

    # ---- writing ---------------------------------------------------------------------------------------

    def put_message(self, message: codec.Message) -> AppendResult:
        return self.put_messages([message])

    def put_messages(self, messages: list[codec.Message]) -> AppendResult:
        self._require_running()
        result = self.commit_log.put_messages(messages)
        self._reput.wakeup()
        return result

    # ---- reading ---------------------------------------------------------------------------------------

    def get_messages(
        self, topic: str, queue_id: int, offset: int, max_count: int = 32, max_bytes: int | None = None
    ) -> GetResult:
        """`getMessage`: up to `max_count` records (and `max_bytes`) from queue offset `offset`, zero-copy.

        Release each message's `data` when done with it (`with found.data:`): while a view of a sealed segment
        is held, another process's truncation of it waits (store.lease). A segment revoked after such a
        truncation raises SegmentRevokedError (a StoreError) instead of handing out views of lost pages."""
        queue = self.consume_queues.find(topic, queue_id)
        if queue is None:
            return GetResult(GetStatus.NO_MATCHED_LOGIC_QUEUE, 0, 0, 0, [])
        minimum, maximum = queue.min_offset_in_queue, queue.max_offset_in_queue
        status = _offset_status(offset, minimum, maximum)
        if status is not GetStatus.FOUND:
            return GetResult(status, _next_offset_for(status, offset, minimum, maximum), minimum, maximum, [])
        messages = self._read_entries(queue, offset, max_count, max_bytes)
        next_offset = messages[-1].queue_offset + 1 if messages else offset
        return GetResult(
            GetStatus.FOUND if messages else GetStatus.OFFSET_OVERFLOW_ONE,
            next_offset,
            minimum,
            maximum,
            messages,
        )

    def _read_entries(
        self, queue: ConsumeQueue, offset: int, max_count: int, max_bytes: int | None
    ) -> list[FoundMessage]:
        """Up to `max_count` records from queue offset `offset`, stopping before the record that would take
        the total past `max_bytes` (the first record always goes) and at the first record that is not
        readable (deleted by retention, or not yet written).

        Each file's block of consume-queue entries is unpacked by one call, and each stretch of records in
        one CommitLog segment is sliced out of one view of it, so no Python code runs per message."""
        messages: list[FoundMessage] = []
        spent = 0
        for first_queue_offset, block in queue.entry_blocks(offset, max_count):
            with block:
                physical_offsets, sizes, tags_codes = _entry_columns(block)
            if min(sizes) < 0:  # a damaged queue: read entry by entry, which stops at the bad one
                entries = zip(itertools.count(first_queue_offset), physical_offsets, sizes, tags_codes)
                self._read_one_by_one(messages, entries, max_bytes, spent)
                break
            wanted = len(sizes)
            if max_bytes is not None:
                wanted = _records_within(sizes, spent, max_bytes, first_goes=not messages)
                spent += sum(sizes[:wanted])
            read = self._read_block(
                messages, first_queue_offset, physical_offsets[:wanted], sizes[:wanted], tags_codes[:wanted]
            )
            if read < len(sizes):
                break
        return messages

    def _read_block(
        self,
        messages: list[FoundMessage],
        first_queue_offset: int,
        physical_offsets: tuple[int, ...],
        sizes: tuple[int, ...],
        tags_codes: tuple[int, ...],
    ) -> int:
        """Append the records of one block of entries while they are readable; return how many were."""
        count = len(sizes)
        if not count:
            return 0
        # Record positions relative to the first one. Entries point forward through the log, so in a sound
        # queue these only grow, and the records readable in one segment are a prefix of those left.
        origin = physical_offsets[0]
        starts = list(map((-origin).__add__, physical_offsets))
        stops = list(map(operator.add, starts, sizes))
        find_file = self.commit_log.mapped_file_queue.find_by_offset
        done = 0
        while done < count:
            mapped_file = find_file(physical_offsets[done])
            if mapped_file is None:
                return done
            segment_start = mapped_file.file_from_offset - origin
            run_end = bisect.bisect_right(stops, segment_start + mapped_file.read_position, done, count)
            if run_end == done:
                return done
            run_starts, run_stops = starts[done:run_end], stops[done:run_end]
            low, high = min(run_starts), max(run_stops)
            region = mapped_file.select(low - segment_start, high - low) if low >= segment_start else None
            if region is None:  # out of order (a damaged queue): read the rest entry by entry
                entries = zip(
                    itertools.count(first_queue_offset + done),
                    physical_offsets[done:],
                    sizes[done:],
                    tags_codes[done:],
                )
                return done + self._read_one_by_one(messages, entries, None, 0)
            if low:  # the region starts at the run's first record, not at the block's
                run_starts, run_stops = map((-low).__add__, run_starts), map((-low).__add__, run_stops)
            columns = zip(
                range(first_queue_offset + done, first_queue_offset + run_end),
                physical_offsets[done:run_end],
                sizes[done:run_end],
                tags_codes[done:run_end],
                map(region.__getitem__, map(slice, run_starts, run_stops)),
                strict=True,
            )
            messages.extend(map(tuple.__new__, itertools.repeat(FoundMessage), columns))
            done = run_end
        return count

    def _read_one_by_one(
        self,
        messages: list[FoundMessage],
        entries: Iterable[tuple[int, int, int, int]],
        max_bytes: int | None,
        spent: int,
    ) -> int:
        """RocketMQ's entry-by-entry loop, for consume queues whose entries are not in log order."""
        read = 0
        for queue_offset, physical_offset, size, tags in entries:
            if max_bytes is not None and messages and spent + size > max_bytes:
                break
            data = self.commit_log.get_message(physical_offset, size)
            if data is None:
                break
            messages.append(FoundMessage(queue_offset, physical_offset, size, tags, data))
            spent += size
            read += 1
        return read

    def look_message_by_offset(self, physical_offset: int, size: int | None = None) -> codec.MessageRecord:
        """Decode the record at `physical_offset` (`lookMessageByOffset`). The body is a view of a copy: the
        view of the mapping is released before returning, so a caller keeping the record never holds back a
        lease break (store.lease); a segment revoked meanwhile raises SegmentRevokedError (a StoreError)."""
        if size is None:
            head = self.commit_log.get_message(physical_offset, 8)
            if head is None:
                raise StoreError(f"no record at physical offset {physical_offset}")
            with head:
                size, _magic = codec.peek_total_size_and_magic(head)
        data = self.commit_log.get_message(physical_offset, size)
        if data is None:
            raise StoreError(f"no record of {size} bytes at physical offset {physical_offset}")
        with data:
            record = codec.decode_record(data, base_offset=physical_offset)
            if not isinstance(record, codec.MessageRecord):
                raise StoreError(f"physical offset {physical_offset} holds a BLANK record, not a message")
            if isinstance(record.body, memoryview):  # still a memoryview, but of a copy
                with record.body as body:
                    record = dataclasses.replace(record, body=memoryview(bytes(body)))
        return record

    def query_message(
        self, topic: str, key: str, max_num: int = 32, begin_ms: int = 0, end_ms: int = 1 << 62
    ) -> list[codec.MessageRecord]:
        """Messages whose KEYS or UNIQ_KEY equal `key`: the index by hash, then the real key re-checked."""
        found = []
        for offset in self.index_service.query(topic, key, max_num, begin_ms, end_ms):
            if offset < self.commit_log.min_offset:
                continue  # the index outlives the records retention deleted, as in RocketMQ
            record = self.look_message_by_offset(offset)
            if record.topic == topic and (key in record.key_list or record.uniq_key == key):
                found.append(record)
        return found

    def wait_dispatched(self, offset: int, timeout_s: float) -> bool:
        """Block until the consume queues cover the CommitLog up to `offset` (for consumers and tests)."""
        self._reput.wakeup()
        return self.dispatcher.wait_for_arrival(
            timeout_s, lambda: self.dispatcher.reput_from_offset >= offset
        )

    # ---- consumer offsets ----------------------------------------------------------------------------------

    def commit_consumer_offset(self, group: str, topic: str, queue_id: int, offset: int) -> None:
        self.consumer_offsets.set(topic, group, queue_id, offset)

    def persist_consumer_offsets(self) -> None:
        self.consumer_offsets.persist(consumer_offset_path(self.root))

    # ---- retention -----------------------------------------------------------------------------------------

    def clean(self, now: datetime | None = None) -> retention.CleanReport:
        """Manual deletion (`executeDeleteFilesManually`): one clean run now, deleting expired files whatever
        the hour; like RocketMQ, the next scheduled runs keep deleting expired files for MANUAL_DELETE_RUNS
        runs in all. Returns what this run deleted."""
        self._require_running()
        self.clean_service.request_manual_delete()
        return self.clean_service.run_once(now)

    # ---- flushing ----------------------------------------------------------------------------------------

    def _flush_consume_queues(self, thorough: bool = False) -> None:
        """`FlushConsumeQueueService.doFlush`: flush the queues (all of them, whatever is dirty, every
        flushConsumeQueueThoroughInterval), then let the checkpoint's logicsMsgTimestamp cover what is now
        durable, so that after a crash recovery re-reads the log from before any entry that may be lost."""
        now = time.monotonic()
        if (
            now - self._last_thorough_queue_flush
            >= self.config.flush_consume_queue_thorough_interval_ms / 1000
        ):
            thorough = True
        if thorough:
            self._last_thorough_queue_flush = now
        queued_until_ms = self.dispatcher.last_queued_timestamp_ms  # taken first: flushed below
        least_pages = 0 if thorough else self.config.flush_consume_queue_least_pages
        self.consume_queues.flush(least_pages)
        if queued_until_ms and (thorough or self.consume_queues.all_flushed()):
            self.checkpoint.logics_msg_timestamp = max(self.checkpoint.logics_msg_timestamp, queued_until_ms)

    def flush(self) -> None:
        """Make everything written so far durable: the log, the queues, the index and the checkpoint."""
        self.commit_log.flush(0)
        with self.dispatcher.paused:  # the reput thread must not roll an index file under the flush
            self.dispatcher.dispatch_until()
            self._flush_consume_queues(thorough=True)
            self.index_service.flush()
        self.checkpoint.flush()


def _run_step(step: Callable[[], object], problems: list[str]) -> None:
    try:
        step()
    except (StoreError, OSError) as error:
        # Not a warning: shutdown() returns the problem, and its caller reports it (the CLI printed it twice).
        log.info("shutdown step failed: %s", error)
        problems.append(str(error))


def _offset_status(offset: int, minimum: int, maximum: int) -> GetStatus:
    if maximum == 0:
        return GetStatus.NO_MESSAGE_IN_QUEUE
    if offset < minimum:
        return GetStatus.OFFSET_TOO_SMALL
    if offset == maximum:
        return GetStatus.OFFSET_OVERFLOW_ONE
    if offset > maximum:
        return GetStatus.OFFSET_OVERFLOW_BADLY
    return GetStatus.FOUND


def _next_offset_for(status: GetStatus, offset: int, minimum: int, maximum: int) -> int:
    """Where a consumer should continue (`DefaultMessageStore.getMessage`'s nextBeginOffset rules)."""
    if status is GetStatus.OFFSET_TOO_SMALL:
        return minimum
    if status is GetStatus.OFFSET_OVERFLOW_BADLY:
        return maximum
    return offset


def _entry_columns(block: memoryview) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """Physical offsets, sizes and tags codes of a block of consume-queue entries: one unpack of the whole
    block, then three strided slices, which is half the cost of a tuple per entry (iter_unpack)."""
    values = entries_struct(len(block) // ENTRY.size).unpack(block)
    return values[0::3], values[1::3], values[2::3]


def _records_within(sizes: tuple[int, ...], spent: int, max_bytes: int, first_goes: bool) -> int:
    """How many of `sizes` (none negative) keep the total within `max_bytes`, `spent` being taken already;
    the very first record of a read goes whatever its size (getMessage's maxMsgSize rule)."""
    totals = list(itertools.accumulate(sizes, initial=spent))
    within = bisect.bisect_right(totals, max_bytes, 1) - 1
    return max(within, 1) if first_goes else within


class _Scheduler:
    """One thread running periodic tasks; a failing task is logged and runs again next period."""

    def __init__(self, tasks: list[tuple[float, Callable[[], object]]]):
        self._tasks = [(period, task, time.monotonic() + period) for period, task in tasks]
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="StoreScheduler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stopped.is_set():
            now = time.monotonic()
            due = min(when for _period, _task, when in self._tasks)
            if self._stopped.wait(max(0.0, due - now)):
                return
            self._tasks = [self._run_if_due(entry) for entry in self._tasks]

    @staticmethod
    def _run_if_due(entry: tuple[float, Callable[[], object], float]):
        period, task, when = entry
        if time.monotonic() < when:
            return entry
        try:
            task()
        except Exception:
            log.exception("periodic store task %s failed", getattr(task, "__name__", task))
        return period, task, time.monotonic() + period
