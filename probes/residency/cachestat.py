"""cachestat(2) through ctypes: page-cache state of a file range without mapping the file (Linux >= 6.5).

glibc has no wrapper yet, so the raw syscall is used. Its number is 451 on every architecture that uses the
generic syscall table (x86_64, arm64, riscv64, ...).
"""

from __future__ import annotations

import ctypes
import os
import platform
from dataclasses import dataclass

SYSCALL_NUMBERS = {"x86_64": 451, "aarch64": 451, "riscv64": 451, "ppc64le": 451, "s390x": 451}


class _Range(ctypes.Structure):
    _fields_ = [("off", ctypes.c_uint64), ("len", ctypes.c_uint64)]


class _Stat(ctypes.Structure):
    _fields_ = [
        ("nr_cache", ctypes.c_uint64),
        ("nr_dirty", ctypes.c_uint64),
        ("nr_writeback", ctypes.c_uint64),
        ("nr_evicted", ctypes.c_uint64),
        ("nr_recently_evicted", ctypes.c_uint64),
    ]


@dataclass(frozen=True)
class CacheStat:
    """Pages of one file range, as the kernel counts them (pages of the base page size)."""

    cached_pages: int
    dirty_pages: int
    writeback_pages: int
    evicted_pages: int
    recently_evicted_pages: int


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def cachestat(fd: int, offset: int = 0, length: int = 0) -> CacheStat:
    """Page-cache counts for `length` bytes at `offset` of the open file `fd` (length 0: to the end).

    Raises OSError: ENOSYS on kernels without cachestat, EPERM where the kernel refuses the caller
    (newer kernels require write permission or ownership, as mincore does), EBADF for a bad fd.
    """
    number = SYSCALL_NUMBERS.get(platform.machine())
    if number is None:
        raise OSError(38, f"cachestat: syscall number unknown on {platform.machine()}")
    span = _Range(offset, length)
    result = _Stat()
    if _libc.syscall(number, fd, ctypes.byref(span), ctypes.byref(result), 0) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"cachestat: {os.strerror(code)}")
    return CacheStat(
        result.nr_cache, result.nr_dirty, result.nr_writeback, result.nr_evicted, result.nr_recently_evicted
    )
