"""MappedFileQueue: one directory of same-size segments (a CommitLog, or one ConsumeQueue), and
AllocateMappedFileService, the thread that creates the next segment before the writer needs it.

Threading rules: the writer thread calls `get_last_file` (which may create a file); the flush and commit
threads call `flush`/`commit`; any thread may look files up (`find_by_offset`, `first_file`, ...). The file
list is copy-on-write, like RocketMQ's CopyOnWriteArrayList: a lookup reads one immutable snapshot, and
changes (a new file, deletions) swap in a new tuple under a lock. `load`, `truncate_dirty_files` and the
position setters belong to start-up and recovery, before other threads run; the deletions belong to the
clean-up thread, and use hold/release so a reader keeps its file until it is done. After `start_protecting`
the lease watcher's thread seals and leases full files (store.lease) every SWEEP_INTERVAL_S.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from store.config import FlushDiskType, StoreConfig, WarmupMode
from store.errors import StoreError
from store.layout import file_name_to_offset, offset_to_file_name, scan_segment_dir
from store.lease import FileProtection, LeaseWatcher
from store.mapped_file import WARM_STRIDE_BYTES, MappedFile, ReadOnlyStoreError
from store.transient_pool import TransientStorePool

log = logging.getLogger(__name__)

TRUNCATE_DESTROY_TIMEOUT_S = 1.0  # RocketMQ's truncateDirtyFiles destroys with 1000 ms
# How far (in log bytes) the warm-up of the segment after the writer's may run ahead of the writer.
# MADV_POPULATE_WRITE dirties every page it makes, and two whole 1 GiB segments of dirty zero pages can pass
# the kernel's background threshold (10% of RAM, 2.1 GiB here): the flusher then writes warmed zero pages
# back (traced at load 7: 56-116 MiB of each segment) and the writer faults on them again. A lead of 256 MiB
# avoided that, but beside a writer this VM makes new pages at only 0.35-0.47 GB/s (it zeroes them on the
# host's behalf), slower than a 1-4 KiB writer: every pause of the warm-up was lost for good, and on an idle
# machine rolls fell from 86-88% to 68-73% of the one-segment rate at 1 KiB (58-50% against 62-67% at
# 4 KiB; store_append.py --sizes 1024,4096 --cases store,rolls, two runs each, back to back). So the lead
# is two default segments: the segment after the writer's is warmed whole at once, as RocketMQ's warm-up
# does; only segments over 1 GiB are paced.
WARM_LEAD_BYTES = 2 << 30
_PACE_FIRST_S = 0.01  # the warm-up's first look at a writer it is far enough ahead of
_PACE_MIN_S, _PACE_MAX_S = 0.005, 0.2  # its later looks: when the writer should have used up the excess


class MappedFileAllocationError(StoreError):
    """AllocateMappedFileService could not deliver a file: creation failed (see __cause__), or timed out."""


class MappedFileQueue:
    """The segments of one directory, all `mapped_file_size` bytes, named by their start offsets.

    `read_only=True` is for inspection: files are opened read-only, and nothing on disk is created,
    changed or deleted (a zero-length last file is skipped and named in `skipped_empty_file`).
    """

    def __init__(
        self,
        store_path: str | os.PathLike[str],
        mapped_file_size: int,
        *,
        allocate_service: AllocateMappedFileService | None = None,
        transient_pool: TransientStorePool | None = None,
        read_only: bool = False,
    ):
        if mapped_file_size <= 0:
            raise ValueError(f"mapped_file_size must be positive, got {mapped_file_size}")
        self.store_path = Path(store_path)
        self.mapped_file_size = mapped_file_size
        self.read_only = read_only
        self.skipped_empty_file: Path | None = None
        self._allocate_service = allocate_service
        self._transient_pool = transient_pool
        self._files: tuple[MappedFile, ...] = ()
        self._change_lock = threading.Lock()
        self._flushed_where = 0
        self._committed_where = 0
        self._flush_lock = threading.Lock()
        self._commit_lock = threading.Lock()
        self._lease_watcher: LeaseWatcher | None = None

    # ---- loading ----------------------------------------------------------------------------------

    def load(self) -> None:
        """Map every segment of the directory (none if it does not exist), in offset order.

        Refuses, with a StoreLayoutError naming the file: a name that is not a 20-digit offset, a file whose
        size is not mapped_file_size ("length not matched message store config value"), an offset that is
        not a multiple of it, and a gap between consecutive files. A zero-length last file (a creation cut
        short by a crash) is deleted, as RocketMQ does, or only skipped when read-only. Afterwards every
        position of every file is the file size; recovery truncates them (`truncate_dirty_files`).
        """
        if self._files:
            raise StoreError(f"{self.store_path}: already loaded")
        if not self.store_path.is_dir():
            return
        layout = scan_segment_dir(self.store_path, self.mapped_file_size).require_valid()
        if layout.empty_last_file is not None:
            self._drop_empty_last_file(layout.empty_last_file)
        self._files = tuple(self._open_all([segment.path for segment in layout.loadable_segments]))

    def _drop_empty_last_file(self, path: Path) -> None:
        self.skipped_empty_file = path
        if self.read_only:
            log.warning("%s is empty; skipped (read-only: not deleted)", path)
        else:
            path.unlink()
            log.warning("%s is empty; deleted, as RocketMQ does", path)

    def _open_all(self, paths: list[Path]) -> list[MappedFile]:
        opened: list[MappedFile] = []
        try:
            for path in paths:
                mapped_file = MappedFile.open(path, self.mapped_file_size, read_only=self.read_only)
                mapped_file.set_positions(self.mapped_file_size)
                opened.append(mapped_file)
        except BaseException:
            for mapped_file in opened:
                mapped_file.close()
            raise
        return opened

    # ---- lookups ----------------------------------------------------------------------------------

    @property
    def mapped_files(self) -> tuple[MappedFile, ...]:
        """A snapshot of the files, oldest first."""
        return self._files

    @property
    def first_file(self) -> MappedFile | None:
        files = self._files
        return files[0] if files else None

    @property
    def last_file(self) -> MappedFile | None:
        files = self._files
        return files[-1] if files else None

    @property
    def min_offset(self) -> int:
        """Start offset of the first file, or -1 when there is none (RocketMQ's getMinOffset)."""
        first = self.first_file
        return first.file_from_offset if first is not None else -1

    @property
    def max_offset(self) -> int:
        """End of the readable bytes: last file's start + its read position (0 without files)."""
        last = self.last_file
        return last.file_from_offset + last.read_position if last is not None else 0

    @property
    def max_wrote_offset(self) -> int:
        """End of the appended bytes, committed or not: last file's start + its wrote position."""
        last = self.last_file
        return last.file_from_offset + last.wrote_position if last is not None else 0

    def find_by_offset(self, offset: int, return_first_on_not_found: bool = False) -> MappedFile | None:
        """The file holding `offset`, or None (or the first file, if asked) when no file does."""
        files = self._files
        if not files:
            return None
        first, size = files[0], self.mapped_file_size
        if first.file_from_offset <= offset < files[-1].file_from_offset + size:
            index = offset // size - first.file_from_offset // size
            if 0 <= index < len(files) and self._holds(files[index], offset):
                return files[index]
            # The index is only a guess when the snapshot has a hole (a file deleted out of order).
            found = next((candidate for candidate in files if self._holds(candidate, offset)), None)
            if found is not None:
                return found
        return first if return_first_on_not_found else None

    def _holds(self, mapped_file: MappedFile, offset: int) -> bool:
        return mapped_file.file_from_offset <= offset < mapped_file.file_from_offset + self.mapped_file_size

    def get_last_file(self, start_offset: int = 0, create: bool = True) -> MappedFile | None:
        """The file to append to (RocketMQ's getLastMappedFile).

        With `create`, makes the first file (the one holding `start_offset`) when there is none, and the
        next one when the last is full; without, returns the last file, full or not, or None.
        """
        last = self.last_file
        if last is None:
            create_offset = start_offset - start_offset % self.mapped_file_size
        elif last.is_full():
            create_offset = last.file_from_offset + self.mapped_file_size
        else:
            return last
        return self._create_file(create_offset) if create else last

    def _create_file(self, offset: int) -> MappedFile:
        self._require_writable()
        path = self.store_path / offset_to_file_name(offset)
        if self._allocate_service is not None:
            following = self.store_path / offset_to_file_name(offset + self.mapped_file_size)
            mapped_file = self._allocate_service.put_request_and_return_mapped_file(
                path, following, self.mapped_file_size
            )
        else:
            mapped_file = MappedFile.create(path, self.mapped_file_size, transient_pool=self._transient_pool)
        with self._change_lock:
            self._files = (*self._files, mapped_file)
        return mapped_file

    # ---- flush and commit -------------------------------------------------------------------------

    @property
    def flushed_where(self) -> int:
        """Absolute offset up to which bytes are durable."""
        return self._flushed_where

    @flushed_where.setter
    def flushed_where(self, offset: int) -> None:
        self._flushed_where = offset

    @property
    def committed_where(self) -> int:
        """Absolute offset up to which bytes are committed (== appended without a transient pool)."""
        return self._committed_where

    @committed_where.setter
    def committed_where(self, offset: int) -> None:
        self._committed_where = offset

    def flush(self, least_pages: int = 0) -> bool:
        """Flush the file holding flushed_where and advance it. True if nothing moved (RocketMQ's result).

        Callers may race (the flush service, a producer's group commit, an explicit flush): the lock keeps
        each read-flush-advance whole, so flushed_where never moves backwards."""
        with self._flush_lock:
            where = self._flushed_where
            mapped_file = self.find_by_offset(where, return_first_on_not_found=where == 0)
            if mapped_file is None:
                return True
            self._flushed_where = mapped_file.file_from_offset + mapped_file.flush(least_pages)
            return self._flushed_where == where

    def commit(self, least_pages: int = 0) -> bool:
        """Commit the file holding committed_where and advance it. True if nothing moved (same locking)."""
        with self._commit_lock:
            where = self._committed_where
            mapped_file = self.find_by_offset(where, return_first_on_not_found=where == 0)
            if mapped_file is None:
                return True
            self._committed_where = mapped_file.file_from_offset + mapped_file.commit(least_pages)
            return self._committed_where == where

    # ---- truncation and deletion ------------------------------------------------------------------

    def truncate_dirty_files(self, offset: int) -> None:
        """Cut the log at `offset` (recovery): the file holding it gets every position at offset % size,
        and files starting after it are destroyed (only closed and dropped when read-only). The bytes after
        the cut inside that file stay as they are, to be overwritten, as in RocketMQ.
        """
        doomed: list[MappedFile] = []
        for mapped_file in self._files:
            if mapped_file.file_from_offset + self.mapped_file_size > offset:
                if offset >= mapped_file.file_from_offset:
                    mapped_file.set_positions(offset % self.mapped_file_size)
                else:
                    doomed.append(mapped_file)
        self._discard(doomed)

    def delete_last_file(self) -> None:
        """`deleteLastMappedFile`: destroy the newest file (a consume queue cut back past its start)."""
        last = self.last_file
        if last is not None:
            self._discard([last])

    def _discard(self, doomed: list[MappedFile]) -> None:
        self._remove(doomed)
        for mapped_file in doomed:
            if self.read_only:
                mapped_file.close()
            else:
                mapped_file.destroy(TRUNCATE_DESTROY_TIMEOUT_S)

    def delete_expired_by_time(
        self,
        expired_ms: float,
        delete_interval_s: float = 0.1,
        destroy_timeout_s: float = 120.0,
        clean_immediately: bool = False,
        batch_max: int = 10,
    ) -> int:
        """Delete files whose mtime is over `expired_ms` old (any, with `clean_immediately`), oldest first.

        Never the last file; stops at the first file that has not expired, so the log never gets a hole;
        at most `batch_max` files per call, `delete_interval_s` apart (spreading the I/O, as RocketMQ's
        deleteCommitLogFilesInterval does). Each destroy waits up to `destroy_timeout_s` for readers.
        Returns how many files were deleted.
        """
        self._require_writable()
        candidates = self._files[:-1]
        deleted = 0
        for index, mapped_file in enumerate(candidates):
            expired = time.time() * 1000 >= mapped_file.last_modified + expired_ms
            if not (expired or clean_immediately):
                break
            self._remove([mapped_file])
            mapped_file.destroy(destroy_timeout_s)
            deleted += 1
            if deleted >= batch_max:
                break
            if delete_interval_s > 0 and index + 1 < len(candidates):
                time.sleep(delete_interval_s)
        return deleted

    def delete_expired_by_offset(
        self,
        min_offset: int,
        unit_size: int,
        entry_offset: Callable[[memoryview], int],
        destroy_timeout_s: float = 60.0,
    ) -> int:
        """Delete the leading files whose last entry points below `min_offset` (consume queues).

        This class does not know the entry format: `entry_offset` receives the file's last `unit_size`
        bytes and returns the log offset that entry points to (for a ConsumeQueue, the big-endian int64 at
        its start). Never the last file; stops at the first file that must stay. Returns the count deleted.
        """
        self._require_writable()
        deleted = 0
        for mapped_file in self._files[:-1]:
            if not self._points_below(mapped_file, min_offset, unit_size, entry_offset):
                break
            self._remove([mapped_file])
            mapped_file.destroy(destroy_timeout_s)
            deleted += 1
        return deleted

    def _points_below(
        self,
        mapped_file: MappedFile,
        min_offset: int,
        unit_size: int,
        entry_offset: Callable[[memoryview], int],
    ) -> bool:
        if not mapped_file.hold():
            return True  # already being destroyed (RocketMQ's "hanged" file): finish the job
        try:
            last_entry = mapped_file.select(self.mapped_file_size - unit_size, unit_size)
            if last_entry is None:
                return False  # not filled up to its last entry yet, so not expired either
            with last_entry:
                return entry_offset(last_entry) < min_offset
        finally:
            mapped_file.release()

    def _remove(self, doomed: Iterable[MappedFile]) -> None:
        doomed_ids = {id(mapped_file) for mapped_file in doomed}
        if doomed_ids:
            with self._change_lock:
                self._files = tuple(f for f in self._files if id(f) not in doomed_ids)

    def _require_writable(self) -> None:
        if self.read_only:
            raise ReadOnlyStoreError(f"{self.store_path} is open read-only")

    # ---- protection against truncation by other processes (store.lease) ---------------------------

    def start_protecting(self) -> None:
        """From now on seal every full, flushed, unlocked file and hold it under a read lease: at once, then
        at each sweep of the lease watcher. Call it once recovery is over: a sealed file is never written
        again."""
        self._lease_watcher = LeaseWatcher.shared()
        self.protect_files()
        self._lease_watcher.watch(self)

    def stop_protecting(self) -> None:
        """No more sealing or leasing; leases already held stay until their files close."""
        watcher, self._lease_watcher = self._lease_watcher, None
        if watcher is not None:
            watcher.unwatch(self)

    def protect_files(self) -> None:
        """One sweep (the watcher's thread calls it): seal the files ready for it, lease those that may be."""
        watcher = self._lease_watcher
        if watcher is None:
            return
        for mapped_file in self._files:
            if mapped_file.ready_to_seal():
                mapped_file.seal()
            if mapped_file.is_sealed:
                mapped_file.protect(watcher)

    def protections(self) -> tuple[FileProtection, ...]:
        """What guards each file against a truncation by another process, oldest file first."""
        return tuple(mapped_file.protection for mapped_file in self._files)

    # ---- shutdown ---------------------------------------------------------------------------------

    def close(self, timeout_s: float = 0.0) -> None:
        """Unmap every file, keeping them on disk."""
        self.stop_protecting()
        files, self._files = self._files, ()
        for mapped_file in files:
            mapped_file.close(timeout_s)

    def destroy(self, timeout_s: float = 3.0) -> None:
        """Delete every file and then the directory if it is empty (RocketMQ's MappedFileQueue.destroy)."""
        self._require_writable()
        self.stop_protecting()
        files, self._files = self._files, ()
        for mapped_file in files:
            mapped_file.destroy(timeout_s)
        self._flushed_where = self._committed_where = 0
        with contextlib.suppress(OSError):  # not empty (someone else's files) or already gone: leave it
            self.store_path.rmdir()

    def __repr__(self) -> str:
        return (
            f"MappedFileQueue({self.store_path}, {len(self._files)} files of {self.mapped_file_size} bytes)"
        )


@dataclass(eq=False)
class _AllocateRequest:
    path: Path
    file_size: int
    done: threading.Event = field(default_factory=threading.Event)
    ready: threading.Event = field(default_factory=threading.Event)  # mapped_file may be taken (or error)
    taken: bool = False
    mapped_file: MappedFile | None = None
    error: Exception | None = None


@dataclass
class AllocationStats:
    """Where a writer's segment rolls spent their time, for benchmarks and diagnostics.

    `ready_ahead` counts files made and warmed before the writer asked for them (the allocator was ahead:
    the put lock did not wait); `waited_s` is the time writers spent waiting for a file, which is time in
    the put lock; `lead_bytes` is, per file handed over, how many of its bytes were warmed when the writer
    took it."""

    handed_over: int = 0
    ready_ahead: int = 0
    waited_s: float = 0.0
    longest_wait_s: float = 0.0
    warm_s: float = 0.0  # populating, not counting the time parked for the writer to move
    warmed_files: int = 0  # warm-ups finished, which took warm_s in all
    parked_s: float = 0.0  # warm-ups waiting for the writer (WARM_LEAD_BYTES ahead of it)
    lead_bytes: list[int] = field(default_factory=list)


class AllocateMappedFileService:
    """A thread that creates (and warms, per config) segment files ahead of the writer.

    The writer asks for file N and N+1 at once and waits up to `allocate_wait_timeout_ms` for N; N+1 is
    then usually ready when the writer rolls over again. Larger files are served first, then lower
    offsets (RocketMQ's priority order). Creation errors reach the requester as MappedFileAllocationError
    (the original as __cause__). `shutdown()` stops the thread and deletes files made ahead but never
    taken. With a transient pool, N+1 is made ahead only while a pool buffer is free for it.
    """

    def __init__(self, config: StoreConfig | None = None, transient_pool: TransientStorePool | None = None):
        self._config = config or StoreConfig()
        self._pool = transient_pool
        self._requests: dict[Path, _AllocateRequest] = {}
        self._queue: list[tuple[int, int, int, _AllocateRequest]] = []
        self._order = itertools.count()
        self._wakeup = threading.Condition()
        self._stopping = False
        self._serving = False
        self._thread = threading.Thread(target=self._run, name="AllocateMappedFileService", daemon=True)
        self._parked = False  # a warm-up waits for the writer to move (WARM_LEAD_BYTES ahead of it)
        self._writer_file: MappedFile | None = None  # the file the writer took last
        self.stats = AllocationStats()

    def start(self) -> AllocateMappedFileService:
        """Start the thread; returns self."""
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread.is_alive() and not self._stopping

    def put_request_and_return_mapped_file(
        self, next_path: str | os.PathLike[str], next_next_path: str | os.PathLike[str], file_size: int
    ) -> MappedFile:
        """Request files N (`next_path`) and N+1; return N once it exists (RocketMQ's method of this name)."""
        next_path, next_next_path = Path(next_path), Path(next_next_path)
        with self._wakeup:
            if not self.running:
                raise MappedFileAllocationError(
                    f"cannot allocate {next_path}: the allocation service is not running"
                )
            request = self._submit(next_path, file_size)
            if self._may_allocate_ahead():
                self._submit(next_next_path, file_size)
        timeout_s = self._config.allocate_wait_timeout_ms / 1000
        # Ready ahead: made and warmed before it was asked for, or, with a warm-up paced by the writer,
        # made and warmed at least a stride of it (the rest follows ahead of the writer).
        was_ready = request.done.is_set() or (
            request.ready.is_set()
            and request.mapped_file is not None
            and request.mapped_file.warmed_bytes >= min(request.file_size, WARM_STRIDE_BYTES)
        )
        began = time.monotonic()
        if not request.ready.wait(timeout_s):
            raise MappedFileAllocationError(f"timed out after {timeout_s:.1f} s waiting for {next_path}")
        with self._wakeup:
            taken = request.taken = self._requests.get(next_path) is request
            if taken:
                del self._requests[next_path]
        if request.error is not None:
            raise MappedFileAllocationError(f"cannot create {next_path}: {request.error}") from request.error
        if not taken or request.mapped_file is None:
            raise MappedFileAllocationError(f"cannot allocate {next_path}: the allocation service shut down")
        self._count_hand_over(request.mapped_file, was_ready, time.monotonic() - began)
        return request.mapped_file

    def _count_hand_over(self, mapped_file: MappedFile, was_ready: bool, waited_s: float) -> None:
        self._writer_file = mapped_file
        stats = self.stats
        stats.handed_over += 1
        stats.ready_ahead += was_ready
        stats.waited_s += waited_s
        stats.longest_wait_s = max(stats.longest_wait_s, waited_s)
        stats.lead_bytes.append(mapped_file.warmed_bytes)

    def _submit(self, path: Path, file_size: int) -> _AllocateRequest:
        """The request for `path`: the pending or finished one, or a new one (a failed one is retried)."""
        request = self._requests.get(path)
        if request is not None and not (request.done.is_set() and request.error is not None):
            return request
        request = _AllocateRequest(path, file_size)
        self._requests[path] = request
        offset = file_name_to_offset(path.name)
        heapq.heappush(self._queue, (-file_size, offset, next(self._order), request))
        self._wakeup.notify()
        return request

    def _may_allocate_ahead(self) -> bool:
        if self._pool is None:
            return True
        waiting = sum(1 for request in self._requests.values() if not request.done.is_set())
        return self._pool.available - waiting > 0

    def _run(self) -> None:
        while True:
            with self._wakeup:
                self._serving = False
                self._wakeup.notify_all()  # for wait_idle
                while not self._queue and not self._stopping:
                    self._wakeup.wait()
                if self._stopping:
                    return
                request = heapq.heappop(self._queue)[-1]
                if self._requests.get(request.path) is not request:
                    continue  # superseded or dropped at shutdown
                self._serving = True
            self._serve(request)

    def wait_idle(self, timeout_s: float) -> bool:
        """Block until every file asked for is made and warmed as far ahead of the writer as it goes
        (WARM_LEAD_BYTES; the next segment is ready ahead), or the timeout passes; False then. For
        benchmarks and tests, which wait for this state, not for time."""
        with self._wakeup:
            return self._wakeup.wait_for(
                lambda: not self._queue and (not self._serving or self._parked), timeout_s
            )

    def _serve(self, request: _AllocateRequest) -> None:
        try:
            mapped_file = MappedFile.create(request.path, request.file_size, transient_pool=self._pool)
        except Exception as err:  # handed to the requester, who raises it
            request.error = err
            request.ready.set()
            request.done.set()
            return
        if self._warms_while_written(mapped_file):
            self._serve_then_warm(request, mapped_file)
            return
        try:
            try:
                self._warm(mapped_file)
            except BaseException:
                mapped_file.destroy(0.0)
                raise
            if self._dropped(request):  # shutdown gave up waiting for this thread and dropped the request
                mapped_file.destroy(0.0)
                return
            request.mapped_file = mapped_file
        except Exception as err:  # handed to the requester, who raises it
            request.error = err
        finally:
            request.ready.set()
            request.done.set()

    def _warms_while_written(self, mapped_file: MappedFile) -> bool:
        """Whether a file may go to the writer before its warm-up ends: POPULATE changes no byte, so it can
        go on over pages the writer fills (TOUCH writes zeros, so that file must be warmed first)."""
        config = self._config
        return (
            config.warmup == WarmupMode.POPULATE
            and mapped_file.file_size >= config.mapped_file_size_commitlog
        )

    def _serve_then_warm(self, request: _AllocateRequest, mapped_file: MappedFile) -> None:
        """Make the file takeable now and warm it: a writer that was faster than the warm-up (it waits in
        the put lock) takes it at once, and the rest of the warm-up runs ahead of it, from where it writes,
        instead of the put lock waiting for every page of the file to be pre-faulted."""
        request.mapped_file = mapped_file
        request.ready.set()
        try:
            self._warm(mapped_file, while_written=True, pace=self._paced_by_writer(mapped_file))
        except (OSError, ValueError, StoreError) as err:  # the writer faults the pages left
            log.warning("%s: warm-up stopped: %s", mapped_file.path, err)
        finally:
            request.done.set()
        if self._dropped(request):
            mapped_file.destroy(0.0)

    def _paced_by_writer(self, mapped_file: MappedFile) -> Callable[[int], bool]:
        """The pace of a warm-up while the file waits for the writer: a stride goes once it starts less than
        WARM_LEAD_BYTES ahead of the writer in the log (the file the writer writes, or is about to take, is
        warmed at once, as before); False when the service stops or the file closes meanwhile. Between
        looks it sleeps for as long as the writer, at the rate it last moved, takes to use up the excess,
        so an idle writer costs a look every _PACE_MAX_S."""

        def may_warm(start: int) -> bool:
            delay_s, last = _PACE_FIRST_S, None
            while True:
                writer = self._writer_file
                if writer is None or writer.file_from_offset >= mapped_file.file_from_offset:
                    return True  # the writer's own file (or the first one it takes)
                position = writer.file_from_offset + writer.wrote_position
                excess = mapped_file.file_from_offset + start - position - WARM_LEAD_BYTES
                if excess < 0:
                    return True
                if last is not None:
                    moved = position - last
                    delay_s = min(
                        _PACE_MAX_S, max(_PACE_MIN_S, excess * delay_s / moved if moved > 0 else 2 * delay_s)
                    )
                last = position
                if not self._park(delay_s) or mapped_file.is_closed:
                    return False

        return may_warm

    def _park(self, seconds: float) -> bool:
        """Wait `seconds` with the warm-up parked (wait_idle counts that as idle); False when stopping."""
        with self._wakeup:
            self._parked = True
            self._wakeup.notify_all()
            if not self._stopping:
                began = time.monotonic()
                self._wakeup.wait(seconds)
                self.stats.parked_s += time.monotonic() - began
            self._parked = False
            return not self._stopping

    def _dropped(self, request: _AllocateRequest) -> bool:
        """Whether shutdown dropped the request: nobody takes or deletes its file but us."""
        with self._wakeup:
            return not request.taken and self._requests.get(request.path) is not request

    def _warm(
        self, mapped_file: MappedFile, while_written: bool = False, pace: Callable[[int], bool] | None = None
    ) -> None:
        config = self._config
        if config.warmup == WarmupMode.NONE or mapped_file.file_size < config.mapped_file_size_commitlog:
            return
        began, parked_s = time.monotonic(), self.stats.parked_s
        mapped_file.warm(
            config.warmup,
            flush_every_pages=config.flush_least_pages_when_warm_mapped_file,
            sync_flush=config.flush_disk_type == FlushDiskType.SYNC,
            while_written=while_written,
            pace=pace,
        )
        if mapped_file.warmed_bytes < mapped_file.file_size:
            return  # stopped: the service is stopping or the file closed
        self.stats.warm_s += time.monotonic() - began - (self.stats.parked_s - parked_s)
        self.stats.warmed_files += 1

    def shutdown(self, timeout_s: float = 10.0) -> None:
        """Stop the thread (after the file it is making, if any) and delete files made ahead but not taken."""
        with self._wakeup:
            self._stopping = True
            self._wakeup.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        with self._wakeup:
            leftovers, self._requests = list(self._requests.values()), {}
            self._queue.clear()
        for request in leftovers:
            if request.mapped_file is not None:
                request.mapped_file.destroy(1.0)
            request.ready.set()  # wake a requester still waiting: it finds its request gone
            request.done.set()

    def __enter__(self) -> AllocateMappedFileService:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()
