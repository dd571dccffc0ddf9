"""mlock, munlock, madvise, msync and sigaction through ctypes: the one place where the store makes these
system calls.

Python's `mmap` object has `madvise` but no `mlock`, and RocketMQ's LibC calls all three on the address of
a mapping, so all three live here, on address ranges, with helpers that act on a whole `mmap.mmap`.
Every failure raises OSError carrying the errno, so callers can tell EINVAL (an advice this kernel does
not know, such as MADV_POPULATE_WRITE before Linux 5.14) from ENOMEM/EPERM (RLIMIT_MEMLOCK).
Python's `signal.signal` works only in the main thread; `ignore_signal_if_default` works in any (store.lease
needs it from whichever thread first takes a lease).
"""

from __future__ import annotations

import ctypes
import mmap
import os
import resource

MADV_NORMAL = 0
MADV_RANDOM = 1
MADV_SEQUENTIAL = 2
MADV_WILLNEED = 3
MADV_DONTNEED = 4
MADV_POPULATE_READ = 22  # Linux >= 5.14; older kernels answer EINVAL
MADV_POPULATE_WRITE = 23  # Linux >= 5.14; older kernels answer EINVAL

PAGE_SIZE = os.sysconf("SC_PAGESIZE")

_libc = ctypes.CDLL(None, use_errno=True)
for _name in ("mlock", "munlock"):
    getattr(_libc, _name).argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    getattr(_libc, _name).restype = ctypes.c_int
for _name in ("madvise", "msync"):
    getattr(_libc, _name).argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    getattr(_libc, _name).restype = ctypes.c_int
MS_SYNC = 4
_SIG_DFL, _SIG_IGN = 0, 1


class _SigAction(ctypes.Structure):
    """glibc's struct sigaction (the same field order on x86_64 and aarch64)."""

    _fields_ = [
        ("handler", ctypes.c_void_p),
        ("mask", ctypes.c_ulong * (128 // ctypes.sizeof(ctypes.c_ulong))),
        ("flags", ctypes.c_int),
        ("restorer", ctypes.c_void_p),
    ]


_libc.sigaction.argtypes = [ctypes.c_int, ctypes.POINTER(_SigAction), ctypes.POINTER(_SigAction)]
_libc.sigaction.restype = ctypes.c_int


class _PyBuffer(ctypes.Structure):
    """CPython's Py_buffer (part of the stable ABI since 3.11)."""

    _fields_ = [
        ("buf", ctypes.c_void_p),
        ("obj", ctypes.c_void_p),
        ("len", ctypes.c_ssize_t),
        ("itemsize", ctypes.c_ssize_t),
        ("readonly", ctypes.c_int),
        ("ndim", ctypes.c_int),
        ("format", ctypes.c_char_p),
        ("shape", ctypes.c_void_p),
        ("strides", ctypes.c_void_p),
        ("suboffsets", ctypes.c_void_p),
        ("internal", ctypes.c_void_p),
    ]


_get_buffer = ctypes.pythonapi.PyObject_GetBuffer
_get_buffer.argtypes = [ctypes.py_object, ctypes.POINTER(_PyBuffer), ctypes.c_int]
_get_buffer.restype = ctypes.c_int
_release_buffer = ctypes.pythonapi.PyBuffer_Release
_release_buffer.argtypes = [ctypes.POINTER(_PyBuffer)]
_release_buffer.restype = None
_PYBUF_SIMPLE = 0


def _check(result: int, call: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{call}: {os.strerror(code)}")


def mlock(address: int, length: int) -> None:
    """Lock `length` bytes at `address` in RAM (the kernel rounds the range out to whole pages)."""
    _check(_libc.mlock(address, length), f"mlock({length} bytes)")


def munlock(address: int, length: int) -> None:
    """Undo mlock for `length` bytes at `address`."""
    _check(_libc.munlock(address, length), f"munlock({length} bytes)")


def msync(address: int, length: int, flags: int = MS_SYNC) -> None:
    """msync(2) through ctypes, which releases the GIL for the call: CPython's mmap.flush() holds it, so a
    flush thread stalled the writer thread for the whole write-back (measured: 1.0 vs 1.66 GB/s at 4 KiB)."""
    _check(_libc.msync(address, length, flags), f"msync({length} bytes)")


def madvise(address: int, length: int, advice: int) -> None:
    """madvise(2). `address` must be page-aligned (EINVAL otherwise); mapping helpers align for you."""
    _check(_libc.madvise(address, length, advice), f"madvise({length} bytes, advice {advice})")


def ignore_signal_if_default(signum: int) -> bool:
    """Set `signum`'s disposition to SIG_IGN if it is SIG_DFL (from any thread); False if the program has its
    own disposition for it, which is then left alone."""
    current = _SigAction()
    _check(_libc.sigaction(signum, None, ctypes.byref(current)), f"sigaction({signum})")
    if current.handler not in (None, _SIG_DFL):
        return current.handler == _SIG_IGN
    ignore_signal(signum)
    return True


def ignore_signal(signum: int) -> None:
    """Set `signum`'s disposition to SIG_IGN in the kernel only, whatever Python's signal module holds for it:
    unlike signal.signal it runs no pending Python handler first."""
    ignore = _SigAction()
    ignore.handler = _SIG_IGN
    _check(_libc.sigaction(signum, ctypes.byref(ignore), None), f"sigaction({signum}, SIG_IGN)")


def mapping_address(mapping: mmap.mmap) -> int:
    """Base address of `mapping`, read-only or writable.

    The buffer export that reveals the address is released before returning, so the mapping can still be
    closed; the address is valid only while the caller keeps the mapping open.
    """
    view = _PyBuffer()
    _get_buffer(mapping, ctypes.byref(view), _PYBUF_SIMPLE)
    try:
        return view.buf
    finally:
        _release_buffer(ctypes.byref(view))


def _page_range(mapping: mmap.mmap, offset: int, length: int | None) -> tuple[int, int]:
    """(address, length) covering [offset, offset+length) of `mapping`, the start rounded down to a page."""
    end = len(mapping) if length is None else offset + length
    if offset < 0 or end > len(mapping) or end < offset:
        raise ValueError(f"range [{offset}, {end}) is outside a mapping of {len(mapping)} bytes")
    aligned = offset - offset % PAGE_SIZE
    return mapping_address(mapping) + aligned, end - aligned


def lock_mapping(mapping: mmap.mmap, offset: int = 0, length: int | None = None) -> None:
    """mlock a range of `mapping` (all of it by default)."""
    address, size = _page_range(mapping, offset, length)
    if size:
        mlock(address, size)


def unlock_mapping(mapping: mmap.mmap, offset: int = 0, length: int | None = None) -> None:
    """munlock a range of `mapping` (all of it by default)."""
    address, size = _page_range(mapping, offset, length)
    if size:
        munlock(address, size)


def advise_mapping(mapping: mmap.mmap, advice: int, offset: int = 0, length: int | None = None) -> None:
    """madvise a range of `mapping` (all of it by default)."""
    address, size = _page_range(mapping, offset, length)
    if size:
        madvise(address, size, advice)


def memlock_limit_hint() -> str:
    """One sentence on RLIMIT_MEMLOCK and how to raise it, for mlock failures (ENOMEM or EPERM)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)

    def render(value: int) -> str:
        return "unlimited" if value == resource.RLIM_INFINITY else f"{value} bytes"

    return (
        f"RLIMIT_MEMLOCK is {render(soft)} (hard {render(hard)}) and processes without CAP_IPC_LOCK "
        "cannot lock more; raise it (ulimit -l, systemd LimitMEMLOCK=, 'memlock' in limits.conf) "
        "or run with CAP_IPC_LOCK"
    )
