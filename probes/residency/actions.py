"""Change a file's page-cache residency: evict it, touch it in, or lock it in (as vmtouch -e, -t, -l do).

Each action measures the file before and after with the same source as `residency_of_range`, so its
report carries that source's trust: a count the caller's privileges cannot measure is None, not a guess.
"""

from __future__ import annotations

import ctypes
import errno
import os
import resource
import weakref
from dataclasses import dataclass

from probes.errors import CapabilityMissing
from probes.privileges import effective_capabilities
from probes.residency.mincore import (
    PAGE_SIZE,
    WINDOW_BYTES,
    map_read_only,
    mapped_read_only,
    pages_spanning,
    unmap,
)
from probes.residency.scan import RangeResidency, open_regular_file, residency_of_range

# linux/mman.h; glibc's Python has no constant for it. Linux >= 5.14.
MADV_POPULATE_READ = 22
_READ_BUFFER_BYTES = 1 << 20

_libc = ctypes.CDLL(None, use_errno=True)
_libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_libc.mlock.argtypes = [ctypes.c_void_p, ctypes.c_size_t]


@dataclass(frozen=True)
class EvictResult:
    """What posix_fadvise(POSIX_FADV_DONTNEED) left behind. Dirty, under-writeback, mapped-elsewhere
    and locked pages are not dropped; `synced` says whether the file was fsync'ed first so its dirty
    pages could go too."""

    path: str
    synced: bool
    before: RangeResidency
    after: RangeResidency
    pages_evicted: int | None
    pages_stayed_resident: int | None


@dataclass(frozen=True)
class TouchResult:
    """Residency before and after reading every page in; `method` is "madvise_populate_read" or "read"."""

    path: str
    method: str
    before: RangeResidency
    after: RangeResidency
    pages_brought_in: int | None


class MemoryLockRefused(CapabilityMissing):
    """mlock was refused because of RLIMIT_MEMLOCK (or its absence of CAP_IPC_LOCK)."""


def evict(path: str | os.PathLike, sync: bool = False) -> EvictResult:
    """Drop the file's clean pages from the page cache; with `sync=True` fsync first so dirty pages go too.

    Without sync, DONTNEED starts writeback of the dirty pages and drops only those whose writeback has
    ended when it retries; the rest are counted in `pages_stayed_resident`. Raises ResidencyUnavailable for a
    path that is not a readable regular file.
    """
    fd = open_regular_file(os.fspath(path))
    try:
        before = residency_of_range(fd)
        if sync:
            os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        after = residency_of_range(fd)
    finally:
        os.close(fd)
    return EvictResult(
        os.fspath(path),
        sync,
        before,
        after,
        _difference(before.cached_pages, after.cached_pages),
        after.cached_pages,
    )


def touch(path: str | os.PathLike) -> TouchResult:
    """Bring every page of the file into the page cache.

    Uses MADV_POPULATE_READ on read-only mappings (one 1 GiB window at a time; no byte is read by Python,
    so a file truncated meanwhile gives EFAULT, not SIGBUS); on kernels without it (< 5.14) reads the
    file with pread. `pages_brought_in` is after minus before, so other activity on the file counts too.
    """
    fd = open_regular_file(os.fspath(path))
    try:
        before = residency_of_range(fd)
        method = _populate(fd)
        after = residency_of_range(fd)
    finally:
        os.close(fd)
    return TouchResult(
        os.fspath(path), method, before, after, _difference(after.cached_pages, before.cached_pages)
    )


def _difference(minuend: int | None, subtrahend: int | None) -> int | None:
    return None if minuend is None or subtrahend is None else minuend - subtrahend


def _populate(fd: int) -> str:
    offset = 0
    while offset < (size_bytes := os.fstat(fd).st_size):
        length = min(WINDOW_BYTES, size_bytes - offset)
        with mapped_read_only(fd, offset, length) as address:
            if _libc.madvise(address, length, MADV_POPULATE_READ) != 0:
                code = ctypes.get_errno()
                if code == errno.EINVAL:  # the kernel does not know MADV_POPULATE_READ
                    _read_from(fd, offset)
                    return "read"
                if code == errno.EFAULT and os.fstat(fd).st_size < offset + length:
                    break  # truncated under us: what is left has been populated
                raise OSError(code, f"madvise(MADV_POPULATE_READ): {os.strerror(code)}")
        offset += length
    return "madvise_populate_read"


def _read_from(fd: int, offset: int) -> None:
    buffer = bytearray(_READ_BUFFER_BYTES)
    while (count := os.preadv(fd, [buffer], offset)) > 0:
        offset += count


class LockedFile:
    """The pages of one file, mlock'ed in the page cache until `release()` or the end of a `with` block.

    Like `vmtouch -l`, the lock lives as long as this process keeps the mapping: dropping the last reference
    or exiting the process releases it too.
    """

    def __init__(self, path: str, size_bytes: int, address: int | None, mapped_bytes: int):
        self.path = path
        self.size_bytes = size_bytes
        self.pages = mapped_bytes // PAGE_SIZE
        self._release = weakref.finalize(self, unmap, address, mapped_bytes) if address is not None else None

    @property
    def locked(self) -> bool:
        return self._release is not None and self._release.alive

    def release(self) -> None:
        """Unlock and unmap the pages (they stay cached until the kernel needs the memory). Idempotent."""
        if self._release is not None:
            self._release()

    def __enter__(self) -> LockedFile:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def __repr__(self) -> str:
        state = "locked" if self.locked else "released"
        return f"LockedFile({self.path!r}, pages={self.pages}, {state})"


def lock(path: str | os.PathLike) -> LockedFile:
    """Read the whole file into the page cache and mlock it there; returns the handle that holds the lock.

    Raises MemoryLockRefused naming RLIMIT_MEMLOCK and the fix when the limit is too small for the file,
    and ResidencyUnavailable for a path that is not a readable regular file.
    """
    name = os.fspath(path)
    fd = open_regular_file(name)
    try:
        size_bytes = os.fstat(fd).st_size
        if size_bytes == 0:
            return LockedFile(name, 0, None, 0)
        mapped_bytes = pages_spanning(size_bytes) * PAGE_SIZE
        address = map_read_only(fd, 0, mapped_bytes)
        if _libc.mlock(address, mapped_bytes) != 0:
            code = ctypes.get_errno()
            unmap(address, mapped_bytes)
            raise _lock_failure(name, fd, code, mapped_bytes)
    finally:
        os.close(fd)
    return LockedFile(name, size_bytes, address, mapped_bytes)


def _lock_failure(path: str, fd: int, code: int, mapped_bytes: int) -> Exception:
    # mlock folds a fault past the end of the file into ENOMEM, the same code as the rlimit refusal.
    if code == errno.ENOMEM and pages_spanning(os.fstat(fd).st_size) < mapped_bytes // PAGE_SIZE:
        return OSError(code, f"mlock {path}: the file was truncated while it was being locked")
    has_ipc_lock = "CAP_IPC_LOCK" in (effective_capabilities() or ())
    if code in (errno.ENOMEM, errno.EPERM) and not has_ipc_lock:
        soft, _hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
        limit = "unlimited" if soft == resource.RLIM_INFINITY else f"{soft // 1024} KiB"
        needed_kib = -(-mapped_bytes // 1024)
        return MemoryLockRefused(
            f"mlock of {path} ({needed_kib} KiB) refused ({errno.errorcode[code]}): RLIMIT_MEMLOCK allows "
            f"{limit} of locked memory per process (including what it already holds) and the caller lacks "
            "CAP_IPC_LOCK",
            fix=f"raise the limit before starting mqinspect (`ulimit -l {needed_kib}` or "
            "`ulimit -l unlimited`; LimitMEMLOCK=infinity for a systemd unit; memlock in "
            "/etc/security/limits.conf), or grant "
            "CAP_IPC_LOCK (e.g. run as root)",
        )
    return OSError(code, f"mlock {path}: {os.strerror(code)}")
