"""TransientStorePool: RocketMQ's pool of locked off-heap write buffers, one segment in size each.

With the pool (transientStorePoolEnable), a new MappedFile borrows a buffer and appends go into it instead
of into the file mapping; the commit thread pwrites the appended bytes into the file and the flush thread
fdatasyncs. Producers then never touch page-cache pages (no page faults, no contention with writeback on
the hot path); the price is one more copy and `pool_size * file_size` bytes of locked memory.

Buffers are anonymous private mappings, mlocked once at construction, as RocketMQ's `init()` does.
Returned buffers keep their old bytes: RocketMQ does not clear them either, and only bytes the writer has
appended are ever committed. The pool is thread-safe.
"""

from __future__ import annotations

import contextlib
import mmap
import threading
from collections import deque

from store import _libc
from store.errors import StoreError


class TransientStorePoolError(StoreError):
    """The pool's buffers could not be allocated or locked."""


class TransientStorePoolDeficient(TransientStorePoolError):
    """No buffer is free: RocketMQ rejects sends as busy in this state (isTransientStorePoolDeficient)."""


class TransientStorePool:
    """`pool_size` mlocked anonymous buffers of `file_size` bytes, lent to MappedFiles one at a time."""

    def __init__(self, pool_size: int, file_size: int):
        if pool_size <= 0 or file_size <= 0:
            raise ValueError(f"pool_size and file_size must be positive, got {pool_size} and {file_size}")
        self.pool_size = pool_size
        self.file_size = file_size
        self._lock = threading.Lock()
        self._owned: dict[int, mmap.mmap] = {}
        self._free: deque[mmap.mmap] = deque()
        self._destroyed = False
        try:
            for _ in range(pool_size):
                self._free.append(self._new_locked_buffer())
        except BaseException:
            self.destroy()
            raise

    def _new_locked_buffer(self) -> mmap.mmap:
        buffer = mmap.mmap(-1, self.file_size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self._owned[id(buffer)] = buffer
        try:
            _libc.lock_mapping(buffer)
        except OSError as err:
            raise TransientStorePoolError(
                f"cannot mlock transient store pool buffer {len(self._owned)} of {self.pool_size} "
                f"({self.file_size} bytes each): {err.strerror}. {_libc.memlock_limit_hint()}; "
                "or make the pool or the segment size smaller"
            ) from err
        return buffer

    @property
    def available(self) -> int:
        """Buffers free to borrow now."""
        return len(self._free)

    def borrow(self) -> mmap.mmap | None:
        """A free buffer, or None when all are lent out (RocketMQ's borrowBuffer)."""
        with self._lock:
            return self._free.popleft() if self._free else None

    def return_buffer(self, buffer: mmap.mmap) -> None:
        """Give back a borrowed buffer. It is lent out first next time (it is the one most likely cached).

        After `destroy` a returned buffer is simply dropped: files closed after their pool have nothing to
        give back.
        """
        with self._lock:
            if self._destroyed:
                return
            if self._owned.get(id(buffer)) is not buffer:
                raise ValueError("this buffer does not belong to this pool")
            if any(free is buffer for free in self._free):
                raise ValueError("this buffer was already returned")
            self._free.appendleft(buffer)

    def destroy(self) -> None:
        """Unlock and unmap every buffer. Call it after the files that borrowed buffers are closed."""
        with self._lock:
            self._destroyed = True
            buffers, self._owned = list(self._owned.values()), {}
            self._free.clear()
        for buffer in buffers:
            with contextlib.suppress(OSError):  # never locked (init failed on it): nothing to undo
                _libc.unlock_mapping(buffer)
            with contextlib.suppress(BufferError):  # a view is still alive: the memory goes with it
                buffer.close()

    def __enter__(self) -> TransientStorePool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.destroy()

    def __repr__(self) -> str:
        return f"TransientStorePool({self.available}/{self.pool_size} free, {self.file_size} bytes each)"
