"""MappedFile: one fixed-size segment of a RocketMQ store (DefaultMappedFile), mapped shared read-write.

A segment is named by its 20-digit zero-padded start offset in the log (`file_from_offset`) and always
has its full size on disk. Positions, all relative to the start of the file:

- `wrote_position`: end of the bytes appended (into the mapping, or into the transient pool buffer);
- `committed_position`: end of the bytes pwritten from the pool buffer into the file (pool only);
- `flushed_position`: end of the bytes known to be on disk (msync or fdatasync);
- `read_position`: what readers may see: wrote_position without a pool, committed_position with one.

Threading rules (RocketMQ's):

- One writer thread appends: `append`, `append_batch`, `reserve` + `advance`. It never waits for a lock.
- One flush thread calls `flush`, one commit thread calls `commit`; each is serialised by its own lock, so
  that concurrent callers cannot move a position backwards.
- Any thread may `select`. A reader that may race with `destroy`/`close` brackets its use with
  `hold()`/`release()`, which makes `destroy` wait for it.
- `warm`, position setters and `reserve_blocks` run before the file is handed to the writer (allocation,
  recovery), `close`/`destroy` after the writer has left it.
- Positions are plain ints. Under CPython's GIL a store to an attribute is atomic and the writer copies
  bytes into the mapping before it publishes the new position, so a reader that sees a position also
  sees every byte before it.
- `seal`, `protect` and the lease-break steps (`lease_broken`, `finish_revocation`) change the mapping and
  the descriptor under the same lock as hold/release/close; `select` takes no lock (see store.lease for why
  its order of checks is enough).

A truncation by another process: a full, flushed segment is sealed (mapped read-only from a read-only
descriptor) and held under a read lease, so that a truncation waits until no view of it is held and the file
is then no longer served (SegmentRevokedError); store.lease explains the design. `protection` says what guards
each file, or why nothing does.

Running out of disk: a file created at full size with ftruncate is sparse, and writing into the mapping
later needs the filesystem to allocate blocks. When it cannot (ENOSPC, EDQUOT), the kernel answers the
page fault with SIGBUS, which kills a Python process outright. So `create` reserves the segment's blocks
with posix_fallocate before mapping it: ENOSPC then surfaces as NoSpaceForSegmentError at creation, and
the reserved blocks (unwritten extents on ext4 and XFS, which still read as zeros) need no allocation when
the mapping is written. fallocate also sets the file size, so there is no moment at which a full-size
file without reserved blocks exists. Files opened from disk are not fallocated (loading must not change
them); `reserve_blocks()` does it on demand, e.g. for the last, writable file after recovery.
Copy-on-write filesystems (btrfs, ZFS) cannot honour a reservation against overwrites; there a full disk
can still raise SIGBUS.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import mmap
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from store import _libc
from store.config import OS_PAGE_SIZE, WarmupMode
from store.errors import StoreError, StoreLayoutError
from store.layout import file_name_to_offset
from store.lease import (
    LEASED_DETAIL,
    RETRY_INTERVAL_S,
    WRITABLE_DETAIL,
    FileProtection,
    LeaseWatcher,
    ProtectionState,
    lease_still_held,
    release_lease,
)
from store.transient_pool import TransientStorePool, TransientStorePoolDeficient

log = logging.getLogger(__name__)

# MADV_POPULATE_WRITE is issued this much at a time, so that a file handed over while it is warmed can be
# skipped ahead of where its writer is (and warmed_bytes tells how far the warm-up got).
WARM_STRIDE_BYTES = 16 << 20
_WRITE_CHUNK_MAX = 1 << 30  # pwrite moves at most ~2 GiB per call on Linux; stay well under


class MappedFileClosedError(StoreError):
    """The file was closed or destroyed; its mapping is gone."""


class ReadOnlyStoreError(StoreError):
    """A write, flush or deletion was asked of a file or queue opened read-only (for inspection)."""


class NoSpaceForSegmentError(StoreError):
    """The filesystem cannot reserve a new segment's blocks (ENOSPC or EDQUOT); nothing was created."""


class SegmentRevokedError(MappedFileClosedError):
    """Another process truncated the file or opened it for writing: its read lease broke and the store no
    longer hands out views of it (store.lease)."""


@dataclass(frozen=True)
class WarmupResult:
    """What `MappedFile.warm` did. `mode` is the mode used, which is TOUCH when POPULATE had to fall back."""

    requested: WarmupMode
    mode: WarmupMode
    pages: int
    elapsed_s: float
    locked: bool
    problems: tuple[str, ...] = ()


class Reservation(NamedTuple):
    """A writable zero-copy window at the end of a MappedFile, from `MappedFile.reserve`.

    `with reservation as view:` releases the view on exit, which lets the file be unmapped later.
    Nothing is visible to readers until the writer calls `MappedFile.advance`.
    """

    view: memoryview
    position: int

    def __enter__(self) -> memoryview:
        return self.view

    def __exit__(self, *exc_info: object) -> None:
        self.view.release()


class MappedFile:
    """One segment file, mapped shared. Build it with `MappedFile.create` or `MappedFile.open`."""

    def __init__(
        self,
        path: Path,
        file_size: int,
        fd: int,
        mapping: mmap.mmap,
        *,
        read_only: bool,
        transient_pool: TransientStorePool | None = None,
        write_buffer: mmap.mmap | None = None,
    ):
        self.path = path
        self.file_size = file_size
        self.file_from_offset = file_name_to_offset(path.name)
        self.read_only = read_only
        self.warmup: WarmupResult | None = None
        self._fd = fd
        self._mapping: mmap.mmap | None = mapping
        self._transient_pool = transient_pool
        self._write_buffer = write_buffer
        self._write_target: mmap.mmap | None = (
            None if read_only else (write_buffer if write_buffer is not None else mapping)
        )
        self._reads_committed = write_buffer is not None
        self._wrote_through_fd = False
        self._locked = False
        self.warmed_bytes = 0  # how far warm() has pre-faulted the mapping
        self._wrote = 0
        self._committed = 0
        self._flushed = 0
        self._flush_lock = threading.Lock()
        self._commit_lock = threading.Lock()
        self._references = threading.Condition()
        self._ref_count = 1  # the file's own reference, dropped by close/destroy
        self._available = True
        self._free_on_last_release = False
        # Sealing and the read lease (store.lease). Changed under self._references.
        self._sealed = read_only  # mapped read-only from a read-only descriptor
        self._retired: list[mmap.mmap] = []  # writable mappings left by sealing, closed with their last view
        self._watcher: LeaseWatcher | None = None  # while a lease is held or being released
        self._refusal: str | None = None  # why the kernel refused the lease
        self._revoked: str | None = None  # why views are refused (select raises SegmentRevokedError)
        self._shrunk = False  # revoked for good: the file is shorter than a segment
        self._revoked_at = 0.0
        self._next_lease_attempt = 0.0
        self._lease_breaks = 0
        self._last_release_s: float | None = None

    # ---- creation ---------------------------------------------------------------------------------

    @classmethod
    def create(
        cls, path: str | os.PathLike[str], file_size: int, *, transient_pool: TransientStorePool | None = None
    ) -> MappedFile:
        """Create a new segment of `file_size` bytes with its blocks reserved, and map it.

        With `transient_pool`, appends go into a borrowed pool buffer (TransientStorePoolDeficient if none is
        free). Raises NoSpaceForSegmentError when the disk cannot hold the segment (the file is removed),
        StoreLayoutError for a name that is not a 20-digit offset, FileExistsError if the file exists.
        """
        path = Path(path)
        file_name_to_offset(path.name)
        if file_size <= 0:
            raise ValueError(f"file_size must be positive, got {file_size}")
        buffer = cls._borrow_buffer(transient_pool, file_size)
        try:
            fd, mapping = cls._create_and_map(path, file_size)
        except BaseException:
            if buffer is not None and transient_pool is not None:
                transient_pool.return_buffer(buffer)
            raise
        return cls(
            path, file_size, fd, mapping, read_only=False, transient_pool=transient_pool, write_buffer=buffer
        )

    @staticmethod
    def _borrow_buffer(pool: TransientStorePool | None, file_size: int) -> mmap.mmap | None:
        if pool is None:
            return None
        if pool.file_size != file_size:
            raise ValueError(f"pool buffers are {pool.file_size} bytes, segments {file_size}")
        buffer = pool.borrow()
        if buffer is None:
            raise TransientStorePoolDeficient(f"all {pool.pool_size} transient store pool buffers are in use")
        return buffer

    @staticmethod
    def _create_and_map(path: Path, file_size: int) -> tuple[int, mmap.mmap]:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            reserve_blocks(fd, file_size, path)
            return fd, mmap.mmap(fd, file_size, flags=mmap.MAP_SHARED)
        except BaseException:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise

    @classmethod
    def open(cls, path: str | os.PathLike[str], file_size: int, *, read_only: bool = False) -> MappedFile:
        """Map an existing segment. Its size must be `file_size` (StoreLayoutError otherwise).

        Positions start at 0; MappedFileQueue.load sets them to the file size and recovery truncates them.
        `read_only` opens the file O_RDONLY and maps it PROT_READ: nothing can change it.
        """
        path = Path(path)
        file_name_to_offset(path.name)
        fd = os.open(path, (os.O_RDONLY if read_only else os.O_RDWR) | os.O_CLOEXEC)
        try:
            actual = os.fstat(fd).st_size
            if actual != file_size:
                raise StoreLayoutError(
                    f"{path}: {actual} bytes, length not matched message store config value {file_size}"
                )
            protection = mmap.PROT_READ if read_only else mmap.PROT_READ | mmap.PROT_WRITE
            mapping = mmap.mmap(fd, file_size, flags=mmap.MAP_SHARED, prot=protection)
        except BaseException:
            os.close(fd)
            raise
        return cls(path, file_size, fd, mapping, read_only=read_only)

    def reserve_blocks(self) -> None:
        """posix_fallocate the whole file, so writes into its mapping cannot meet ENOSPC (see module doc)."""
        self._require_writable()
        reserve_blocks(self._fd, self.file_size, self.path)

    # ---- positions --------------------------------------------------------------------------------

    @property
    def wrote_position(self) -> int:
        return self._wrote

    @wrote_position.setter
    def wrote_position(self, position: int) -> None:
        self._wrote = self._checked_position(position)

    @property
    def committed_position(self) -> int:
        return self._committed

    @committed_position.setter
    def committed_position(self, position: int) -> None:
        self._committed = self._checked_position(position)

    @property
    def flushed_position(self) -> int:
        return self._flushed

    @flushed_position.setter
    def flushed_position(self, position: int) -> None:
        self._flushed = self._checked_position(position)

    @property
    def read_position(self) -> int:
        """Bytes readers may see: committed ones with a transient pool buffer, appended ones without."""
        return self._committed if self._reads_committed else self._wrote

    def set_positions(self, position: int) -> None:
        """Set wrote, committed and flushed positions at once (load and recovery do this)."""
        position = self._checked_position(position)
        self._wrote = self._committed = self._flushed = position

    def _checked_position(self, position: int) -> int:
        if not 0 <= position <= self.file_size:
            raise ValueError(f"{self.path}: position {position} outside [0, {self.file_size}]")
        return position

    def is_full(self) -> bool:
        """True when nothing more can be appended."""
        return self._wrote == self.file_size

    @property
    def is_closed(self) -> bool:
        return self._mapping is None

    @property
    def is_locked(self) -> bool:
        """True while the mapping is mlocked (after warm-up, until munlock or close)."""
        return self._locked

    @property
    def has_write_buffer(self) -> bool:
        """True while the file holds a transient store pool buffer."""
        return self._write_buffer is not None

    @property
    def last_modified(self) -> int:
        """The file's mtime in milliseconds since the epoch (what RocketMQ's expiry by time looks at)."""
        return os.stat(self.path).st_mtime_ns // 1_000_000

    def fileno(self) -> int:
        """The file's descriptor, e.g. for cachestat(2). Valid until close/destroy."""
        return self._fd

    # ---- writing (writer thread only) -------------------------------------------------------------

    def append(self, data: bytes | bytearray | memoryview) -> int | None:
        """Copy `data` (a bytes-like object of bytes) to the end; its position, or None if it does not fit."""
        target = self._target()
        position = self._wrote
        size = len(data)
        if position + size > self.file_size:
            return None
        target[position : position + size] = data
        self._wrote = position + size
        return position

    def append_batch(self, chunks: Iterable[bytes | bytearray | memoryview]) -> int | None:
        """Append the chunks back to back: position of the first, or None (writing nothing) if too big."""
        target = self._target()
        chunks = list(chunks)
        position = self._wrote
        end = position + sum(len(chunk) for chunk in chunks)
        if end > self.file_size:
            return None
        cursor = position
        for chunk in chunks:
            target[cursor : cursor + len(chunk)] = chunk
            cursor += len(chunk)
        self._wrote = end
        return position

    def reserve(self, size: int) -> Reservation | None:
        """A writable view of the next `size` bytes, for encoders that `struct.pack_into` in place.

        None if `size` bytes do not fit. Readers see nothing until `advance`; not advancing discards the
        bytes (RocketMQ's rollback of a batch that does not fit). Release the view before the file is closed.
        """
        if size < 0:
            raise ValueError(f"cannot reserve {size} bytes")
        target = self._target()
        position = self._wrote
        if position + size > self.file_size:
            return None
        with memoryview(target) as whole:
            return Reservation(whole[position : position + size], position)

    def advance(self, size: int) -> int:
        """Publish `size` bytes written through a reservation; returns the new wrote position."""
        if size < 0 or self._wrote + size > self.file_size:
            raise ValueError(
                f"{self.path}: cannot advance {size} bytes from {self._wrote} in {self.file_size}"
            )
        self._wrote += size
        return self._wrote

    def _target(self) -> mmap.mmap:
        target = self._write_target
        if target is None:
            self._require_writable()
            raise MappedFileClosedError(f"{self.path} is closed")
        return target

    def _require_writable(self) -> None:
        if self.read_only:
            raise ReadOnlyStoreError(f"{self.path} is open read-only")
        if self._sealed:
            raise ReadOnlyStoreError(f"{self.path} is sealed: full, and mapped read-only")
        if self._mapping is None:
            raise MappedFileClosedError(f"{self.path} is closed")

    # ---- reading (any thread) ---------------------------------------------------------------------

    def select(self, position: int, size: int | None = None) -> memoryview | None:
        """A read-only zero-copy view of the mapping: [position, position+size), or to read_position.

        None when the range is not readable yet (RocketMQ's selectMappedBuffer returns null): position at
        or past read_position, or the range ending past it. Release the view (`with view:`) when done.
        """
        mapping = self._mapping
        if mapping is None or self._revoked is not None:
            raise self._closed_error()
        readable = self.read_position
        if size is None:
            if not 0 <= position < readable:
                return None
            end = readable
        else:
            if position < 0 or size < 0 or position + size > readable:
                return None
            end = position + size
        try:
            with memoryview(mapping) as whole:
                view = whole[position:end].toreadonly()
        except ValueError as err:  # closed by another thread between the check and the view
            raise self._closed_error() from err
        # Checked again now that the view exists: a revocation that began meanwhile cannot unmap the file
        # (nor release its lease) before this view is released.
        if self._revoked is not None:
            view.release()
            raise self._closed_error()
        return view

    def _closed_error(self) -> MappedFileClosedError:
        if self._revoked is not None:
            return SegmentRevokedError(f"{self.path}: no longer served: {self._revoked}")
        return MappedFileClosedError(f"{self.path} is closed")

    def hold(self) -> bool:
        """Take a reference so that destroy/close wait for this reader; False once they have begun, or once
        the file is revoked (store.lease)."""
        with self._references:
            if self._available and self._ref_count > 0 and self._revoked is None:
                self._ref_count += 1
                return True
            return False

    def release(self) -> None:
        """Drop a reference taken by hold()."""
        with self._references:
            if self._available and self._ref_count <= 1:
                raise RuntimeError(f"{self.path}: release() without hold()")
            self._ref_count -= 1
            if self._ref_count <= 0:
                self._references.notify_all()
                if self._free_on_last_release:
                    self._free_descriptor_and_buffer()

    # ---- flush and commit -------------------------------------------------------------------------

    def flush(self, least_pages: int = 0) -> int:
        """Make appended (or, with a pool, committed) bytes durable; returns flushed_position.

        Acts only when `is_able_to_flush(least_pages)`. Without a pool it msyncs just the dirty range, from
        the page holding flushed_position to read_position; after a commit it fdatasyncs, as RocketMQ's
        `force(false)` does.
        """
        with self._flush_lock:
            if self.is_able_to_flush(least_pages):
                if self.hold():
                    try:
                        target = self.read_position
                        self._sync(self._flushed, target)
                        self._flushed = target
                    finally:
                        self.release()
                else:  # being destroyed: nobody will read it again (RocketMQ does the same)
                    self._flushed = self.read_position
            return self._flushed

    def is_able_to_flush(self, least_pages: int) -> bool:
        """RocketMQ's isAbleToFlush: full, or `least_pages` whole pages unflushed, or (at 0) any byte."""
        flushed, readable = self._flushed, self.read_position
        if self.is_full():
            return True
        if least_pages > 0:
            return readable // OS_PAGE_SIZE - flushed // OS_PAGE_SIZE >= least_pages
        return readable > flushed

    def _sync(self, start: int, end: int) -> None:
        if self.read_only:
            return
        if self._wrote_through_fd:
            os.fdatasync(self._fd)
        elif end > start and self._mapping is not None:
            _msync(self._mapping, start, end)

    def commit(self, least_pages: int = 0) -> int:
        """pwrite the pool buffer's [committed, wrote) into the file; returns committed_position.

        Without a pool buffer there is nothing to commit and the wrote position is returned, as in RocketMQ.
        When the whole file is committed, the buffer goes back to the pool.
        """
        if not self._reads_committed:
            return self._wrote
        with self._commit_lock:
            if self._write_buffer is not None and self.is_able_to_commit(least_pages) and self.hold():
                try:
                    self._commit_pending()
                finally:
                    self.release()
            if self._committed == self.file_size:
                with self._references:  # close() may free the buffer concurrently
                    self._return_write_buffer()
            return self._committed

    def is_able_to_commit(self, least_pages: int) -> bool:
        """RocketMQ's isAbleToCommit: the isAbleToFlush rule between committed and wrote positions."""
        committed, wrote = self._committed, self._wrote
        if self.is_full():
            return True
        if least_pages > 0:
            return wrote // OS_PAGE_SIZE - committed // OS_PAGE_SIZE >= least_pages
        return wrote > committed

    def _commit_pending(self) -> None:
        start, end = self._committed, self._wrote
        if end <= start:
            return
        with memoryview(self._write_buffer) as whole, whole[start:end] as pending:
            _pwrite_all(self._fd, pending, start)
        self._wrote_through_fd = True
        self._committed = end

    def _return_write_buffer(self) -> None:
        buffer, self._write_buffer = self._write_buffer, None
        if buffer is None:
            return
        if self._write_target is buffer:  # the file is full, so the writer is done; never leave it None
            self._write_target = self._mapping
        if self._transient_pool is not None:
            self._transient_pool.return_buffer(buffer)

    # ---- warm-up ----------------------------------------------------------------------------------

    def warm(
        self,
        mode: WarmupMode,
        flush_every_pages: int = 4096,
        sync_flush: bool = False,
        *,
        while_written: bool = False,
        pace: Callable[[int], bool] | None = None,
    ) -> WarmupResult:
        """Pre-fault every page of the mapping, mlock it and madvise WILLNEED (RocketMQ's warmMappedFile).

        TOUCH writes a zero byte at every 4096-byte page; with `sync_flush` it msyncs every
        `flush_every_pages` pages and once at the end. POPULATE does the same with
        madvise(MADV_POPULATE_WRITE), one call instead of a fault per page; on kernels before 5.14 it
        reports that and falls back to TOUCH. mlock and madvise failures are reported in the result, not
        raised, as RocketMQ only logs them. Run it before the file is handed to the writer, or, with POPULATE
        only, with `while_written` once a writer has it: POPULATE changes no byte, and where it is
        unavailable the pages are left to the writer's own faults (touching would zero written bytes).

        `pace` (POPULATE only) is called with the offset of each stride before it is populated and blocks
        until it may go; when it returns False the warm-up stops there, without the mlock (which would map
        the pages left read-only, for the writer to fault again), and `warmed_bytes` says how far it got.
        """
        began = time.monotonic()
        if mode == WarmupMode.NONE:
            return WarmupResult(mode, mode, 0, 0.0, self._locked)
        self._require_writable()
        mapping = self._mapping
        if mapping is None:
            raise MappedFileClosedError(f"{self.path} is closed")
        problems: list[str] = []
        used = mode
        if mode == WarmupMode.POPULATE:
            try:
                if not self._populate(mapping, flush_every_pages, sync_flush, pace):
                    return WarmupResult(mode, used, 0, time.monotonic() - began, self._locked, ("stopped",))
            except OSError as err:
                if err.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
                    raise
                fallback = "left to the writer" if while_written else "touched pages"
                problems.append(f"MADV_POPULATE_WRITE unavailable (Linux >= 5.14 has it): {err}; {fallback}")
                used = WarmupMode.NONE if while_written else WarmupMode.TOUCH
        elif while_written:
            raise ValueError(f"only POPULATE warms a file while it is written, not {mode}")
        if used == WarmupMode.TOUCH:
            self._touch(mapping, flush_every_pages, sync_flush)
        self._lock_and_advise(mapping, problems)
        for problem in problems:
            log.warning("%s warm-up: %s", self.path, problem)
        pages = -(-self.file_size // OS_PAGE_SIZE)
        self.warmup = WarmupResult(mode, used, pages, time.monotonic() - began, self._locked, tuple(problems))
        return self.warmup

    def _touch(self, mapping: mmap.mmap, flush_every_pages: int, sync_flush: bool) -> None:
        flushed_from = 0
        for page, offset in enumerate(range(0, self.file_size, OS_PAGE_SIZE)):
            mapping[offset] = 0
            if sync_flush and page - flushed_from // OS_PAGE_SIZE >= flush_every_pages:
                _msync(mapping, flushed_from, offset + 1)
                flushed_from = offset
        if sync_flush:
            _msync(mapping, flushed_from, self.file_size)
        self.warmed_bytes = self.file_size

    def _populate(
        self, mapping: mmap.mmap, flush_every_pages: int, sync_flush: bool, pace: Callable[[int], bool] | None
    ) -> bool:
        # With sync flush, populate in the same strides the touch loop msyncs at, so that both modes leave
        # at most `flush_every_pages` dirty pages behind at any time. A file may be handed to the writer
        # while it is warmed (AllocateMappedFileService, when the writer caught up with it). The populate
        # never changes a byte, so it may run over pages being written; but where the writer has overtaken
        # it, the writer faults the pages in front of it itself, and a populate of those same pages would
        # only make one of the two wait for the other's page locks: the warm-up then goes on one stride
        # ahead of the writer, so that both make new pages at once, on different pages.
        stride = flush_every_pages * OS_PAGE_SIZE if sync_flush else WARM_STRIDE_BYTES
        start = 0
        while start < self.file_size:
            writer_page = self._wrote - self._wrote % OS_PAGE_SIZE
            if writer_page > start:
                start = writer_page + stride
            length = min(stride, self.file_size - start)
            if length <= 0:
                break
            if pace is not None and not pace(start):
                return False
            with memoryview(mapping):  # mapped while advised, even if the file is closed meanwhile
                _libc.advise_mapping(mapping, _libc.MADV_POPULATE_WRITE, start, length)
                if sync_flush:
                    _msync(mapping, start, start + length)
            start += length
            self.warmed_bytes = start
        self.warmed_bytes = self.file_size  # the pages skipped are the writer's to fault
        return True

    def _lock_and_advise(self, mapping: mmap.mmap, problems: list[str]) -> None:
        try:
            _libc.lock_mapping(mapping)
            self._locked = True
        except OSError as err:
            problems.append(f"mlock failed: {err.strerror}. {_libc.memlock_limit_hint()}")
        try:
            _libc.advise_mapping(mapping, _libc.MADV_WILLNEED)
        except OSError as err:
            problems.append(f"madvise(MADV_WILLNEED) failed: {err.strerror}")

    def munlock(self) -> None:
        """Unlock the mapping's pages (RocketMQ does this once a warmed file is full, 6 s later)."""
        mapping = self._mapping
        if mapping is None:
            raise MappedFileClosedError(f"{self.path} is closed")
        _libc.unlock_mapping(mapping)
        self._locked = False

    # ---- sealing and the read lease (store.lease) ------------------------------------------------

    @property
    def is_sealed(self) -> bool:
        """True once the file is mapped read-only from a read-only descriptor (opened so, or sealed)."""
        return self._sealed

    def ready_to_seal(self) -> bool:
        """Full, every byte flushed (and so committed) and not mlocked: nothing will write it again."""
        return not self._sealed and self.is_full() and self._flushed == self.file_size and not self._locked

    def seal(self) -> bool:
        """Map the file read-only from a read-only descriptor, so that it can be leased (store.lease).

        The read-only descriptor replaces the writable one under the same number (dup2); the writable mapping
        is unmapped now, or with its last view. Only for a file `ready_to_seal`: False for any other.
        """
        with self._references:
            if not (self._available and self._mapping is not None and self.ready_to_seal()):
                return False
            # /proc/self/fd reopens the very inode behind the descriptor, whatever its name is now.
            readonly_fd = os.open(f"/proc/self/fd/{self._fd}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                mapping = _map_read_only(readonly_fd, self.file_size)
                try:
                    os.dup2(readonly_fd, self._fd, inheritable=False)
                except BaseException:
                    mapping.close()
                    raise
            finally:
                os.close(readonly_fd)
            self._retired.append(self._mapping)
            self._mapping, self._write_target, self._sealed = mapping, None, True
            self._unmap_retired()
            return True

    def _unmap_retired(self) -> None:
        kept = []
        for mapping in self._retired:
            try:
                mapping.close()
            except BufferError:  # a reader still has a view of it
                kept.append(mapping)
        self._retired = kept

    def protect(self, watcher: LeaseWatcher) -> None:
        """Take the read lease where the file may have one now: sealed, no writable view left, not leased
        yet; a refused (EAGAIN) or revoked file at most every RETRY_INTERVAL_S. See `protection`."""
        if self._watcher is not None or self._shrunk:  # the sweep's usual case, without the lock
            return
        with self._references:
            if self._may_try_lease():
                self._try_lease(watcher)

    def _may_try_lease(self) -> bool:
        if not (self._sealed and self._available) or self._watcher is not None or self._shrunk:
            return False
        if self._retired:
            self._unmap_retired()
        return not self._retired and time.monotonic() >= self._next_lease_attempt

    def _try_lease(self, watcher: LeaseWatcher) -> None:
        attempt = watcher.take(self, self._fd)
        if not attempt.held:
            self._refusal = attempt.refusal
            self._next_lease_attempt = time.monotonic() + RETRY_INTERVAL_S if attempt.retry else float("inf")
            return
        self._watcher, self._refusal = watcher, None
        size = os.fstat(self._fd).st_size
        if size < self.file_size:  # shrunk while nothing held it back: its records are gone
            self._shrunk = True
            self._begin_revocation(f"another process truncated it to {size:,} of {self.file_size:,} bytes")
            watcher.revoke(self)
        elif self._revoked is not None:  # the break was only an open for writing: serve it again
            if self._mapping is None:
                self._mapping = _map_read_only(self._fd, self.file_size)
            self._revoked = None

    def lease_broken(self) -> bool:
        """For the lease watcher, on a lease-break signal: True if this file's lease is breaking, after which
        no view is handed out and `finish_revocation` must be called until it returns True."""
        with self._references:
            if self._watcher is None or self._revoked is not None or lease_still_held(self._fd):
                return False
            self._lease_breaks += 1
            self._begin_revocation("another process truncated it or opened it for writing (its lease broke)")
            return True

    def _begin_revocation(self, why: str) -> None:
        self._revoked = why
        self._revoked_at = time.monotonic()
        log.warning("%s: %s; no longer served", self.path, why)

    def finish_revocation(self) -> bool:
        """Unmap the file and release its lease once no view of it is left; False while one is."""
        with self._references:
            mapping = self._mapping
            if mapping is not None:
                try:
                    mapping.close()
                except BufferError:
                    return False
                self._mapping = None
            # Recorded before the release: the breaker goes on the moment it is made, and whoever it tells
            # may look at `protection` at once.
            self._last_release_s = time.monotonic() - self._revoked_at
            self._next_lease_attempt = time.monotonic() + RETRY_INTERVAL_S
            self._drop_lease()
            return True

    def _drop_lease(self) -> None:
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.forget(self)
            if self._fd >= 0:
                release_lease(self._fd)

    @property
    def protection(self) -> FileProtection:
        """What guards this file against a truncation by another process, now (see store.lease). Taken under
        the lock the lease watcher changes it under, so that no snapshot is half of a break or release."""
        with self._references:
            state, detail = self._protection_state()
            return FileProtection(str(self.path), state, detail, self._lease_breaks, self._last_release_s)

    def _protection_state(self) -> tuple[ProtectionState, str]:
        if not self._available:
            return ProtectionState.CLOSED, "closed"
        if self._revoked is not None:
            held = "; waiting for readers to drop their views" if self._mapping is not None else ""
            return ProtectionState.REVOKED, f"not served: {self._revoked}{held}"
        if self._watcher is not None:
            return ProtectionState.LEASED, LEASED_DETAIL
        if not self._sealed:
            if self.is_full():
                return ProtectionState.SEALING, f"full; {self._seal_wait()}"
            return ProtectionState.WRITABLE, WRITABLE_DETAIL
        if self._retired:
            return ProtectionState.SEALING, (
                f"sealed; leased once readers drop their {len(self._retired)} view(s) of its writable mapping"
            )
        if self._refusal is not None:
            return ProtectionState.UNLEASED, self._refusal
        return ProtectionState.UNLEASED, (
            "unprotected: mapped read-only but not leased (its queue does not take leases: "
            "MappedFileQueue.start_protecting)"
        )

    def _seal_wait(self) -> str:
        if self._flushed < self.file_size:
            return "sealed and leased once flushed"
        if self._locked:
            return "sealed and leased once munlocked (RocketMQ unlocks a warmed file 6 s after it fills)"
        return "sealed and leased at its queue's next sweep"

    # ---- close and destroy ------------------------------------------------------------------------

    def close(self, timeout_s: float = 0.0) -> bool:
        """Unmap without deleting, after waiting up to `timeout_s` for holders; True if none was left.

        Python keeps a mapping alive while a memoryview of it exists, so a reader that still has a view
        keeps valid memory (Java's forced unmap crashes such readers); the unmap happens with its last view.
        """
        clean = self._shut_down(timeout_s)
        self._unmap()
        self._finish(clean)
        return clean

    def destroy(self, timeout_s: float) -> bool:
        """Unmap and delete the file, after waiting up to `timeout_s` for holders; True if none was left.

        After the timeout it proceeds anyway (RocketMQ's destroyMapedFileIntervalForcibly): the file is
        unlinked at once; the descriptor and any pool buffer are freed by the last holder's release(), so a
        late flush or commit never writes through a descriptor number reused by another file.
        """
        clean = self._shut_down(timeout_s)
        if not clean:
            log.warning(
                "%s: destroying with %d holder(s) left after %.1f s", self.path, self._ref_count, timeout_s
            )
        self._unmap()
        self.path.unlink(missing_ok=True)
        self._finish(clean)
        return clean

    def _shut_down(self, timeout_s: float) -> bool:
        with self._references:
            if self._available:
                self._available = False
                self._ref_count -= 1
                # Released now, not with the descriptor: a view that outlives the close must not leave
                # another process's truncation waiting lease-break-time for a lease nobody watches.
                self._drop_lease()
            return self._references.wait_for(lambda: self._ref_count <= 0, timeout=timeout_s)

    def _unmap(self) -> None:
        self._unmap_retired()
        mapping, self._mapping, self._write_target = self._mapping, None, None
        if mapping is None:
            return
        if self._locked:
            self._locked = False
            with contextlib.suppress(OSError):  # munmap unlocks anyway
                _libc.unlock_mapping(mapping)
        # BufferError: a reader still has a view; the mapping then goes with its last view.
        with contextlib.suppress(BufferError):
            mapping.close()

    def _finish(self, clean: bool) -> None:
        with self._references:
            if clean or self._ref_count <= 0:
                self._free_descriptor_and_buffer()
            else:
                self._free_on_last_release = True

    def _free_descriptor_and_buffer(self) -> None:
        self._free_on_last_release = False
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)
        self._return_write_buffer()

    def __enter__(self) -> MappedFile:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"MappedFile({self.path.name}, size={self.file_size}, wrote={self._wrote}, "
            f"committed={self._committed}, flushed={self._flushed})"
        )


def reserve_blocks(fd: int, size: int, path: Path) -> None:
    """Allocate the file's blocks up front (and extend it to `size`): writes through a mapping of a sparse
    file raise SIGBUS when the disk is full, an allocation that fails here is an error instead."""
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise NoSpaceForSegmentError(
                f"{path}: no space to reserve {size} bytes for a new store file ({err.strerror}); "
                "free disk space or lower the segment size"
            ) from err
        raise


def _map_read_only(fd: int, size: int) -> mmap.mmap:
    return mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)


def _msync(mapping: mmap.mmap, start: int, end: int) -> None:
    """msync(MS_SYNC) the pages covering [start, end); msync wants a page-aligned start."""
    aligned = start - start % mmap.PAGESIZE
    length = min(end, len(mapping)) - aligned
    if length > 0:
        _libc.msync(_libc.mapping_address(mapping) + aligned, length)


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    written = 0
    while written < len(data):
        with data[written : written + _WRITE_CHUNK_MAX] as chunk:
            written += os.pwrite(fd, chunk, offset + written)
