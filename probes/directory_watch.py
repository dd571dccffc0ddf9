"""Which entries of some directories were created, deleted or renamed: inotify(7), through the C library.

A store's follower asks every interval whether any of its hundreds of directories changed (probes/ebpf/
scope.py). A stat of each directory costs a system call per directory per interval whether or not anything
changed; inotify costs one read() of a non-blocking descriptor, and the events name the entries that changed,
so a CommitLog roll is one new file to look at, not the whole store to list again.

`DirectoryWatch.take()` returns the entry events since the last call, in order, or None when they cannot be
trusted to be complete (the kernel's event queue overflowed, a watched directory itself was deleted or moved,
a subdirectory was created or removed, the filesystem was unmounted): then the caller lists afresh.
`DirectoryWatch.open()` raises OSError where inotify cannot be had (the per-user limit of instances or
watches, fs.inotify.max_user_watches, was reached; no inotify in this kernel): the caller falls back to
comparing the directories' mtimes.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass

# <sys/inotify.h>
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_UNMOUNT = 0x00002000
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_ISDIR = 0x40000000
# An entry created, deleted or renamed in a watched directory (what changes its mtime), and the directory
# itself going away.
WATCHED = IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF
# What makes the events incomplete as a description of the directories' entries.
_UNTRUSTED = IN_Q_OVERFLOW | IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF | IN_UNMOUNT | IN_ISDIR
_HEADER = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len (then the NUL-padded name)
_READ_BYTES = 64 << 10

_libc = ctypes.CDLL(None, use_errno=True)
_libc.inotify_add_watch.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32)


@dataclass(frozen=True)
class EntryEvent:
    """An entry `name` of the watched `directory` was created (or renamed into it) or deleted (or renamed
    out of it): `mask` says which."""

    directory: str
    name: str
    mask: int


class DirectoryWatch:
    """inotify watches on directories, read without blocking. Not thread-safe: one owner at a time."""

    def __init__(self, fd: int):
        self._fd = fd
        self._directories: dict[int, str] = {}  # watch descriptor -> the directory as it was given

    @classmethod
    def open(cls) -> DirectoryWatch:
        fd = _libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            number = ctypes.get_errno()
            raise OSError(number, f"inotify_init1: {os.strerror(number)}")
        return cls(fd)

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def watch(self, directories: Iterable[str]) -> None:
        """Watch `directories` too (those watched already are kept: the kernel reuses their watch). A
        directory that no longer exists is left out (the listing that follows will not find it either);
        OSError when the kernel refuses a watch (ENOSPC: fs.inotify.max_user_watches reached)."""
        for directory in directories:
            wd = _libc.inotify_add_watch(self._fd, os.fsencode(directory), WATCHED | IN_ONLYDIR)
            if wd >= 0:
                self._directories[wd] = directory
                continue
            number = ctypes.get_errno()
            if number not in (errno.ENOENT, errno.ENOTDIR):
                raise OSError(number, f"inotify_add_watch {directory}: {os.strerror(number)}")

    def take(self) -> list[EntryEvent] | None:
        """The entry events since the last call (none: nothing changed), or None when they are incomplete
        (see the module docstring): the directories must be looked at afresh."""
        events: list[EntryEvent] = []
        trusted = True
        while True:
            try:
                data = os.read(self._fd, _READ_BYTES)
            except BlockingIOError:
                break
            position = 0
            while position < len(data):
                wd, mask, _cookie, length = _HEADER.unpack_from(data, position)
                name = data[position + _HEADER.size : position + _HEADER.size + length].rstrip(b"\0")
                position += _HEADER.size + length
                if mask & _UNTRUSTED or wd not in self._directories:
                    trusted = False  # read on to the end: what is left would be taken for new changes
                    continue
                events.append(EntryEvent(self._directories[wd], os.fsdecode(name), mask))
        return events if trusted else None

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def __del__(self) -> None:
        self.close()
