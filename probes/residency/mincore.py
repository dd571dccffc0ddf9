"""mincore(2) residency maps of a file, read through read-only mappings made one window at a time.

The map is one byte per page, 0 (not in the page cache) or 1 (in the page cache): the kernel's own
vector layout, so a window is copied as is, and counting resident pages is `bitmap.count(1)`, a C loop.
A bit-packed map would be 8x smaller but needs a Python-level packing pass; at one byte per 4 KiB page
a 100 GiB file costs 25 MiB, which is acceptable for a map the caller asked for.

Trust. Since Linux 5.2 (commit 134fca9063ad, "mm/mincore.c: make mincore() more conservative") the kernel
answers for a file-backed mapping only when `can_do_mincore(vma)` holds (mm/mincore.c):

    inode_owner_or_capable(idmap, inode)      the caller's fsuid owns the inode, or it has CAP_FOWNER
    || file_permission(file, MAY_WRITE) == 0  the caller could open the file for writing (DAC with
                                              CAP_DAC_OVERRIDE, read-only mounts, immutable files, LSMs)

Otherwise mincore does not fail: it fills the vector with 1s, so every page looks resident. How the file
was opened does not matter (unlike cachestat, which also accepts an fd opened for writing).
`mincore_trust` evaluates that rule from user space before any map is believed.

Nothing here reads mapped bytes, so a file truncated under a mapping cannot raise SIGBUS: mincore looks at
the page cache, not at the pages.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from probes.kernel import kernel_version
from probes.privileges import effective_capabilities

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
# Mapping a whole 100 GiB file would need that much address space and one huge page-table walk;
# 1 GiB windows keep both bounded (fincore uses 128 MiB, vmtouch maps whole files).
WINDOW_BYTES = 1 << 30
WINDOW_PAGES = WINDOW_BYTES // PAGE_SIZE
MINCORE_FAKES_RESIDENCY_SINCE = (5, 2)

PROT_READ = 0x1
MAP_SHARED = 0x01
_MAP_FAILED = ctypes.c_void_p(-1).value
# Only bit 0 of each vector byte is defined; the others are reserved.
_LOWEST_BIT = bytes(value & 1 for value in range(256))

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_long,
]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]


@dataclass(frozen=True)
class MincoreTrust:
    """Whether this caller's mincore answers for one file are real, and if not, why."""

    trusted: bool
    reason: str | None


@dataclass(frozen=True)
class PageBitmap:
    """Residency of pages [first_page, first_page + len(resident)) of a file.

    `resident` holds one byte per page: 1 in the page cache, 0 not. `size_bytes` is the file size seen by the
    last window; `shrank` says the file got shorter during the scan, so the map stops early.
    """

    first_page: int
    resident: bytes
    size_bytes: int
    shrank: bool

    @property
    def pages(self) -> int:
        return len(self.resident)

    @property
    def resident_pages(self) -> int:
        return self.resident.count(1)


def pages_spanning(size_bytes: int) -> int:
    """How many pages hold `size_bytes` bytes (a partial last page counts)."""
    return -(-size_bytes // PAGE_SIZE)


def mincore_trust(fd: int, *, release: str | None = None) -> MincoreTrust:
    """Apply the kernel's `can_do_mincore` rule to the open file `fd` for the calling process."""
    if kernel_version(release) < MINCORE_FAKES_RESIDENCY_SINCE:
        return MincoreTrust(True, None)
    if os.fstat(fd).st_uid == os.geteuid():
        return MincoreTrust(True, None)
    if "CAP_FOWNER" in (effective_capabilities() or ()):
        return MincoreTrust(True, None)
    if _could_open_for_writing(fd):
        return MincoreTrust(True, None)
    return MincoreTrust(
        False,
        "mincore cannot see this file's page cache: since Linux 5.2 it reports every page resident unless "
        "the caller owns the file, has CAP_FOWNER, or may write it; run as root or as the file's owner",
    )


def _could_open_for_writing(fd: int) -> bool:
    # AT_EACCESS (effective_ids) checks with the effective ids and capabilities, as file_permission does;
    # the /proc/self/fd link reaches the very inode even if the path was renamed since it was opened.
    try:
        return os.access(f"/proc/self/fd/{fd}", os.W_OK, effective_ids=True)
    except OSError:
        return False


def page_bitmap(fd: int, offset: int = 0, length: int | None = None) -> PageBitmap:
    """One byte per page (1 resident, 0 not) for the bytes [offset, offset+length) of the regular file `fd`.

    `length` None means to the end of the file. The range is widened to whole pages and clipped to the
    file size, re-read before each window, so a file truncated mid-scan yields a shorter map
    (`shrank=True`) instead of a fault. Raises OSError from fstat, mmap or mincore.
    Whether the map is real is a separate question: see `mincore_trust`.
    """
    if offset < 0 or (length is not None and length < 0):
        raise ValueError(f"offset and length must not be negative: {offset}, {length}")
    first_page = offset // PAGE_SIZE
    size_bytes = _regular_file_size(fd)
    end_page = pages_spanning(size_bytes if length is None else min(offset + length, size_bytes))
    resident = bytearray()
    vector = ctypes.create_string_buffer(max(min(WINDOW_PAGES, end_page - first_page), 1))
    page = first_page
    shrank = False
    while page < end_page:
        size_bytes = _regular_file_size(fd)
        available_end = min(end_page, pages_spanning(size_bytes))
        if available_end < end_page:
            shrank, end_page = True, available_end
            if page >= end_page:
                break
        window_pages = min(end_page - page, WINDOW_PAGES)
        _mincore_window(fd, page, window_pages, vector)
        resident += memoryview(vector)[:window_pages]
        page += window_pages
    return PageBitmap(first_page, bytes(resident.translate(_LOWEST_BIT)), size_bytes, shrank)


def _regular_file_size(fd: int) -> int:
    status = os.fstat(fd)
    if not stat.S_ISREG(status.st_mode):
        raise OSError(errno.EINVAL, "mincore: not a regular file")
    return status.st_size


def _mincore_window(fd: int, first_page: int, pages: int, vector: ctypes.Array) -> None:
    with mapped_read_only(fd, first_page * PAGE_SIZE, pages * PAGE_SIZE) as address:
        if _libc.mincore(address, pages * PAGE_SIZE, vector) != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"mincore: {os.strerror(code)}")


def map_read_only(fd: int, offset: int, length: int) -> int:
    """mmap(PROT_READ, MAP_SHARED) `length` bytes of `fd` at page-aligned `offset`; returns the address."""
    address = _libc.mmap(None, length, PROT_READ, MAP_SHARED, fd, offset)
    if address is None or address == _MAP_FAILED:
        code = ctypes.get_errno()
        raise OSError(code, f"mmap: {os.strerror(code)}")
    return address


def unmap(address: int, length: int) -> None:
    """munmap a mapping made by `map_read_only`."""
    if _libc.munmap(address, length) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"munmap: {os.strerror(code)}")


@contextmanager
def mapped_read_only(fd: int, offset: int, length: int) -> Iterator[int]:
    """A read-only shared mapping of `length` bytes at `offset`, unmapped on exit; yields its address."""
    address = map_read_only(fd, offset, length)
    try:
        yield address
    finally:
        unmap(address, length)
