"""CommitLog: the append-only log of every message, in RocketMQ's design (`CommitLog.java`).

A put encodes the records outside the lock (`prepare_batch`), then, under the put lock, assigns the queue
offset and the physical offset, writes the record straight into the mapped segment, and rolls to a new
segment with a BLANK record when it does not fit. Durability is the flush services' job:
- ASYNC (FlushRealTimeService): every 500 ms msync at least 4 dirty pages, everything every 10 s;
- SYNC (GroupCommitService): the producer waits until a flush covers its record, or times out;
- with a transient store pool, CommitRealTimeService first copies the pool buffer into the file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import NamedTuple

from store import codec
from store.checkpoint import StoreCheckpoint
from store.config import FlushDiskType, StoreConfig, WarmupMode
from store.errors import StoreError
from store.mapped_file import MappedFile
from store.mapped_file_queue import AllocateMappedFileService, MappedFileQueue
from store.recovery import erase_after
from store.service_thread import ServiceThread
from store.transient_pool import TransientStorePool


class PutStatus(StrEnum):
    PUT_OK = "PUT_OK"
    FLUSH_DISK_TIMEOUT = "FLUSH_DISK_TIMEOUT"  # stored, but not known to be durable within syncFlushTimeout


class BatchTooLarge(StoreError):
    """A batch that cannot fit even an empty segment (RocketMQ: MESSAGE_ILLEGAL)."""


class WrittenBatch(NamedTuple):
    """A batch just written, as the writer knows it: where its records are and what the consume queue and
    the index take from them (`codec.BatchShape`). Handed to the dispatcher, which then need not read the
    records back (store.dispatch); only for batches whose records all enter their consume queue."""

    physical_offset: int  # of the first record
    end_offset: int  # just past the last record
    queue_offset: int  # of the first record; the others follow it
    store_timestamp_ms: int
    shape: codec.BatchShape


# Written batches kept for the dispatcher: while it is further behind, it reads the records from the log.
WRITTEN_BATCHES_KEPT = 1024
# Smaller batches are not handed over: taking one costs the dispatcher ~10 us whatever its size, while it
# reads back-to-back records of one shape at ~0.6 us each (measured with 1 KiB bodies: batches of 16
# 0.69 us/record handed over against 0.60 read, of 64 0.24 against 0.59).
WRITTEN_BATCH_MIN_RECORDS = 32


@dataclass(frozen=True)
class AppendResult:
    """What a put did (`AppendMessageResult` + `PutMessageStatus`)."""

    status: PutStatus
    physical_offset: int  # where the first record starts
    wrote_bytes: int
    queue_offset: int  # of the first message; later messages of a batch follow it
    message_count: int
    store_timestamp_ms: int
    msg_id: str  # offsetMsgId of the first record
    in_lock_ms: float  # time holding the put lock: RocketMQ's pagecacheRT, >1 s means "[PC_SYNCHRONIZED]"


TRANSACTION = codec.TRANSACTION_TYPE_MASK


def _is_transaction_prepared_or_rollback(sysflag: int) -> bool:
    kind = sysflag & codec.TRANSACTION_TYPE_MASK
    return kind in (codec.TRANSACTION_PREPARED_TYPE, codec.TRANSACTION_ROLLBACK_TYPE)


class CommitLog:
    """The `commitlog/` segments of a store, with the put lock and the flush services."""

    def __init__(
        self,
        store_root: Path,
        config: StoreConfig,
        *,
        checkpoint: StoreCheckpoint | None = None,
        allocate_service: AllocateMappedFileService | None = None,
        transient_pool: TransientStorePool | None = None,
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ):
        self.config = config
        self.checkpoint = checkpoint
        self.mapped_file_queue = MappedFileQueue(
            Path(store_root) / "commitlog",
            config.mapped_file_size_commitlog,
            allocate_service=allocate_service,
            transient_pool=transient_pool,
        )
        self._clock_ms = clock_ms
        self._put_lock = threading.Lock()
        # topicQueueTable: the next queue offset of each "topic-queueId"; rebuilt from the consume queues.
        self.queue_offsets: dict[tuple[str, int], int] = {}
        self._last_store_timestamp_ms = 0
        self._flush_service: _Service | None = None
        self._commit_service: _CommitService | None = None
        self._unlock_timers: list[threading.Timer] = []
        # What each put wrote, for a dispatcher that asked for it (`hand_written_batches_to`); None: nobody.
        self._written_batches: deque[WrittenBatch] | None = None

    def hand_written_batches_to(self, written_batches: deque[WrittenBatch]) -> None:
        """From now on append a WrittenBatch for each packed batch put, while fewer than WRITTEN_BATCHES_KEPT
        wait in `written_batches` (the taker pops from the left). Only a shortcut for the taker: the log's
        bytes stay the truth, which crash recovery reads."""
        self._written_batches = written_batches

    # ---- lifecycle --------------------------------------------------------------------------------

    def load(self) -> None:
        self.mapped_file_queue.load()

    def start(self) -> None:
        """Start the flush service (and the commit service when a transient store pool is in use), and seal
        and lease full segments from now on (store.lease), so that another process's truncation cannot kill
        a reader."""
        self.mapped_file_queue.start_protecting()
        sync = self.config.flush_disk_type is FlushDiskType.SYNC
        self._flush_service = _GroupCommitService(self) if sync else _FlushRealTimeService(self)
        self._flush_service.start()
        if self.config.transient_store_pool_enable:
            self._commit_service = _CommitService(self, self._flush_service)
            self._commit_service.start()

    def shutdown(self) -> None:
        """Stop the services, committing and flushing everything first (as RocketMQ's shutdown does)."""
        for service in (self._commit_service, self._flush_service):
            if service is not None:
                service.stop()
        for timer in self._unlock_timers:
            timer.cancel()
        self.mapped_file_queue.commit(0)
        self.flush(0)
        self.mapped_file_queue.close()

    # ---- offsets ----------------------------------------------------------------------------------

    @property
    def min_offset(self) -> int:
        return self.mapped_file_queue.min_offset

    @property
    def max_offset(self) -> int:
        return self.mapped_file_queue.max_offset

    @property
    def flushed_where(self) -> int:
        return self.mapped_file_queue.flushed_where

    def cut(self, offset: int) -> int:
        """Recovery's verdict (`store.recovery`): the log ends at `offset`. Later segments are deleted, and
        the bytes after `offset` in its segment are zeroed on disk and flushed: otherwise records after a bad
        one could come back to life in a later recovery once new writes end exactly where one of them began.
        Returns the bytes zeroed."""
        queue = self.mapped_file_queue
        queue.flushed_where = queue.committed_where = offset
        queue.truncate_dirty_files(offset)
        last = queue.last_file
        return 0 if last is None else erase_after(last.path, last.fileno(), last.wrote_position)

    def roll_next_file(self, offset: int) -> int:
        """`rollNextFile`: the start of the segment after the one holding `offset`."""
        size = self.config.mapped_file_size_commitlog
        return offset + size - offset % size

    # ---- put ----------------------------------------------------------------------------------------

    def put_message(self, message: codec.Message) -> AppendResult:
        """Append one message. Raises MessageTooLarge / ValueError for an illegal message."""
        return self.put_messages([message])

    def put_messages(self, messages: Sequence[codec.Message]) -> AppendResult:
        """Append a batch to one topic and queue as consecutive records (`MessageExtBatch`).

        All of it lands in one segment, so a batch that does not fit the current one rolls it with a BLANK
        record first."""
        batch = codec.prepare_batch(
            messages,
            max_body_size=self.config.max_message_body_size,
            append_property_crc=self.config.enabled_append_prop_crc,
        )
        if batch.total_size + codec.END_FILE_MIN_BLANK_LENGTH > self.config.mapped_file_size_commitlog:
            raise BatchTooLarge(
                f"a batch of {batch.total_size} bytes cannot fit a "
                f"{self.config.mapped_file_size_commitlog}-byte segment"
            )
        with self._put_lock:
            result = self._append_locked(messages[0], batch)
        return self._after_append(result)

    def _append_locked(self, first: codec.Message, batch: codec.PreparedBatch) -> AppendResult:
        started = time.monotonic()
        store_timestamp = self._clock_ms()
        mapped_file = self._file_with_room(batch.total_size)
        key = (first.topic, first.queue_id)
        counts_in_queue = not _is_transaction_prepared_or_rollback(first.sysflag)
        queue_offset = self.queue_offsets.get(key, 0) if counts_in_queue else None
        physical_offset = self._write(mapped_file, batch, queue_offset, store_timestamp)
        if queue_offset is not None:
            self.queue_offsets[key] = queue_offset + batch.count
            self._hand_over(batch, physical_offset, queue_offset, store_timestamp)
        self._last_store_timestamp_ms = store_timestamp
        return AppendResult(
            PutStatus.PUT_OK,
            physical_offset,
            batch.total_size,
            queue_offset or 0,
            batch.count,
            store_timestamp,
            codec.offset_msg_id(first.store_host, physical_offset),
            (time.monotonic() - started) * 1000,
        )

    def _hand_over(
        self, batch: codec.PreparedBatch, physical_offset: int, queue_offset: int, store_timestamp: int
    ) -> None:
        """Tell the dispatcher what was just written, when it listens and has room: a packed batch of at
        least WRITTEN_BATCH_MIN_RECORDS records that all enter their consume queue."""
        written = self._written_batches
        shape = getattr(batch, "shape", None)
        if (
            written is None
            or shape is None
            or batch.count < WRITTEN_BATCH_MIN_RECORDS
            or shape.sysflag & TRANSACTION
            or len(written) >= WRITTEN_BATCHES_KEPT
        ):
            return
        written.append(
            WrittenBatch(
                physical_offset, physical_offset + batch.total_size, queue_offset, store_timestamp, shape
            )
        )

    def _file_with_room(self, needed: int) -> MappedFile:
        """The segment to write `needed` bytes to, after closing the current one with a BLANK if too full."""
        queue = self.mapped_file_queue
        mapped_file = queue.get_last_file(0, create=True)
        room = mapped_file.file_size - mapped_file.wrote_position
        if needed + codec.END_FILE_MIN_BLANK_LENGTH <= room:
            return mapped_file
        self._write_blank(mapped_file, room)
        self._schedule_munlock(mapped_file)
        return queue.get_last_file(0, create=True)

    @staticmethod
    def _write_blank(mapped_file: MappedFile, room: int) -> None:
        """END_OF_FILE: 8 bytes (TOTALSIZE = the rest of the file, BLANK magic); the file is then full."""
        reservation = mapped_file.reserve(room)
        with reservation as view:
            view[: codec.END_FILE_MIN_BLANK_LENGTH] = codec.encode_blank(room)
        mapped_file.advance(room)

    @staticmethod
    def _write(
        mapped_file: MappedFile, batch: codec.PreparedBatch, queue_offset: int | None, store_timestamp: int
    ) -> int:
        reservation = mapped_file.reserve(batch.total_size)
        physical_offset = mapped_file.file_from_offset + reservation.position
        with reservation as view:
            batch.write_into(
                view,
                0,
                queue_offset=queue_offset,
                physical_offset=physical_offset,
                store_timestamp_ms=store_timestamp,
            )
        mapped_file.advance(batch.total_size)
        return physical_offset

    def _after_append(self, result: AppendResult) -> AppendResult:
        service = self._flush_service
        if isinstance(service, _GroupCommitService):
            if not service.wait_flushed(result.physical_offset + result.wrote_bytes):
                return _replace_status(result, PutStatus.FLUSH_DISK_TIMEOUT)
        elif self._commit_service is not None:
            self._commit_service.wakeup()  # wakeCommitWhenPutMessage=true
        return result

    def _schedule_munlock(self, mapped_file: MappedFile) -> None:
        """A warmed segment stays mlocked while written; RocketMQ unlocks it 6 s after it fills."""
        if self.config.warmup is WarmupMode.NONE or not mapped_file.is_locked:
            return
        timer = threading.Timer(self.config.munlock_delay_ms / 1000, _munlock_quietly, (mapped_file,))
        timer.daemon = True
        self._unlock_timers = [t for t in self._unlock_timers if t.is_alive()] + [timer]
        timer.start()

    # ---- read ---------------------------------------------------------------------------------------

    def get_message(self, physical_offset: int, size: int) -> memoryview | None:
        """A zero-copy view of one record, or None where nothing readable is stored."""
        mapped_file = self.mapped_file_queue.find_by_offset(physical_offset)
        if mapped_file is None:
            return None
        return mapped_file.select(physical_offset - mapped_file.file_from_offset, size)

    def get_data(self, offset: int) -> tuple[memoryview, int] | None:
        """`getData`: a view from `offset` to the readable end of its segment, and the segment's start."""
        mapped_file = self.mapped_file_queue.find_by_offset(offset)
        if mapped_file is None:
            return None
        view = mapped_file.select(offset - mapped_file.file_from_offset)
        return None if view is None else (view, mapped_file.file_from_offset)

    # ---- flush ----------------------------------------------------------------------------------------

    def flush(self, least_pages: int = 0) -> bool:
        """Flush the log; on progress, record the newest durable store time in the checkpoint."""
        newest = self._last_store_timestamp_ms  # taken first: everything appended so far gets flushed
        flushed = self.mapped_file_queue.flush(least_pages)
        if self.checkpoint is not None and newest:
            self.checkpoint.physic_msg_timestamp = newest
        return flushed


def _replace_status(result: AppendResult, status: PutStatus) -> AppendResult:
    return dataclasses.replace(result, status=status)


def _munlock_quietly(mapped_file: MappedFile) -> None:
    # The file may have been closed or destroyed in the meantime: then there is nothing left to unlock.
    with contextlib.suppress(OSError, StoreError):
        mapped_file.munlock()


# ---- services ---------------------------------------------------------------------------------------------


class _Service(ServiceThread):
    """A CommitLog service thread."""

    def __init__(self, commit_log: CommitLog):
        super().__init__()
        self.commit_log = commit_log


class _FlushRealTimeService(_Service):
    """ASYNC_FLUSH: a timed flush of at least `flushCommitLogLeastPages` pages, and everything every 10 s."""

    name = "FlushRealTimeService"

    def __init__(self, commit_log: CommitLog):
        super().__init__(commit_log)
        self._last_thorough = time.monotonic()

    def run_once(self) -> None:
        config = self.commit_log.config
        self._wait(config.flush_interval_commitlog_ms / 1000)
        least_pages = config.flush_commitlog_least_pages
        if time.monotonic() - self._last_thorough >= config.flush_commitlog_thorough_interval_ms / 1000:
            least_pages = 0
            self._last_thorough = time.monotonic()
        self.commit_log.flush(least_pages)


class _GroupCommitService(_Service):
    """SYNC_FLUSH: producers wait until the flushed offset passes their record (`GroupCommitService`).

    Waiters queue up while a flush runs; one msync then serves the whole group, which is the point."""

    name = "GroupCommitService"

    def __init__(self, commit_log: CommitLog):
        super().__init__(commit_log)
        self._flushed = threading.Condition()
        self._wanted = 0

    def wait_flushed(self, next_offset: int) -> bool:
        """Block until everything before `next_offset` is durable; False after syncFlushTimeout."""
        deadline = time.monotonic() + self.commit_log.config.sync_flush_timeout_ms / 1000
        with self._flushed:
            self._wanted = max(self._wanted, next_offset)
            self.wakeup()
            while self.commit_log.flushed_where < next_offset:
                left = deadline - time.monotonic()
                if left <= 0 or self.error is not None:
                    return False
                self._flushed.wait(left)
        return True

    def run_once(self) -> None:
        self._wait(0.01)  # waitForRunning(10)
        with self._flushed:
            wanted = self._wanted
        if self.commit_log.flushed_where < wanted:
            # With a transient store pool the waiter's bytes may still be in the pool buffer. RocketMQ
            # waits for the next timed commit (up to 200 ms per put, #7523); committing now serves the
            # waiter at once, and the retries stay for commits racing with us.
            self.commit_log.mapped_file_queue.commit(0)
        for _attempt in range(1000):
            if self.commit_log.flushed_where >= wanted:
                break
            self.commit_log.flush(0)
            if self.commit_log.flushed_where < wanted:
                time.sleep(0.001)
        with self._flushed:
            self._flushed.notify_all()

    def on_failure(self, error: BaseException) -> None:
        with self._flushed:
            self._flushed.notify_all()


class _CommitService(_Service):
    """With a transient store pool: copy pool buffers into the file every 200 ms, then wake the flusher."""

    name = "CommitRealTimeService"

    def __init__(self, commit_log: CommitLog, flush_service: _Service):
        super().__init__(commit_log)
        self._flush_service = flush_service
        self._last_thorough = time.monotonic()

    def run_once(self) -> None:
        config = self.commit_log.config
        self._wait(config.commit_interval_commitlog_ms / 1000)
        least_pages = config.commit_commitlog_least_pages
        if time.monotonic() - self._last_thorough >= config.commit_commitlog_thorough_interval_ms / 1000:
            least_pages = 0
            self._last_thorough = time.monotonic()
        if self.commit_log.mapped_file_queue.commit(least_pages):
            self._flush_service.wakeup()
