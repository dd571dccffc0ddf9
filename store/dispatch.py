"""ReputMessageService: builds the consume queues and the index from the CommitLog, behind the writer.

It walks the CommitLog from `reput_from_offset` to its readable end, turns each record into a consume-queue
entry and index keys, and rolls to the next segment at a BLANK record. Recovery runs the same walk
synchronously (`dispatch_until`) to rebuild what the crash left out.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from store import codec
from store.commitlog import CommitLog
from store.consume_queue import ConsumeQueueStore
from store.consume_queue_format import enters_consume_queue
from store.errors import CorruptRecord, StoreError
from store.index_file import IndexRequest, IndexService
from store.service_thread import ServiceThread

log = logging.getLogger(__name__)


class Dispatcher:
    """Turns CommitLog records into consume-queue entries and index keys (CommitLogDispatcher*)."""

    def __init__(
        self,
        commit_log: CommitLog,
        consume_queues: ConsumeQueueStore,
        index_service: IndexService | None,
    ):
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
        dispatched = 0
        while self.reput_from_offset < end and self.error is None:
            found = self.commit_log.get_data(self.reput_from_offset)
            if found is None:
                break
            view, file_from_offset = found
            with view:
                dispatched += self._dispatch_view(view, file_from_offset, end)
        return dispatched

    def _dispatch_view(self, view: memoryview, file_from_offset: int, end: int) -> int:
        base = self.reput_from_offset
        position, dispatched = 0, 0
        while position < len(view) and base + position < end:
            try:
                info = codec.decode_dispatch_info(view, position, base_offset=base)
            except CorruptRecord as error:
                self.error = error
                log.error("dispatch stopped: %s", error)
                break
            if isinstance(info, codec.BlankRecord):
                self.reput_from_offset = self.commit_log.roll_next_file(base + position)
                return dispatched
            try:
                self._dispatch(info)
            except (StoreError, OSError) as error:  # each step is idempotent, so a retry redoes only the rest
                self.error = error
                if not self._pause_logged:
                    log.warning(
                        "dispatch paused at %d (retried until it succeeds): %s", info.physical_offset, error
                    )
                    self._pause_logged = True
                break
            if self._pause_logged:
                log.info("dispatch resumed at %d", info.physical_offset)
                self._pause_logged = False
            position += info.size
            dispatched += 1
        self.reput_from_offset = base + position
        return dispatched

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


class ReputMessageService(ServiceThread):
    """The dispatcher's thread. The CommitLog wakes it after each put; it also polls every 100 ms."""

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
        self.dispatcher.dispatch_until()
