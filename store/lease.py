"""Read leases on sealed segments: another process that truncates a segment cannot kill a reader of the store.

The danger. Touching a mapped page that lies past the end of its file raises SIGBUS, which kills a Python
process on the spot. get_messages hands out zero-copy views of CommitLog mappings and look_message_by_offset
decodes from one, so an outside `truncate -s 4k commitlog/00000000000000000000` killed a process reading
the store (4 of 4 tries).

The remedy: a read lease (fcntl(2), "Leases"). When another process opens a leased file for writing or
truncates it, the kernel sends the lease holder a signal and blocks that process until the holder releases
the lease, or until /proc/sys/fs/lease-break-time seconds (45 by default) have passed. The kernel grants a
read lease only on a file nobody has open for writing, this process included, and a shared writable mapping
keeps its file open for writing. Hence the design:

1. Sealing. A segment that is full, flushed and no longer mlocked (RocketMQ unlocks a warmed segment 6 s
   after it fills) is sealed by `MappedFile.seal`: reopened read-only through /proc/self/fd (the same inode,
   even if renamed), mapped PROT_READ, and the read-only descriptor dup2'd over the writable one, so the
   descriptor number others use (sendfile, cachestat) stays valid. The writable mapping is unmapped as soon
   as no reader holds a view of it; new views come from the read-only mapping.
2. Leasing. `MappedFile.protect` then takes the lease (F_SETSIG LEASE_SIGNAL, F_SETLEASE F_RDLCK).
3. A break. The watcher thread (`LeaseWatcher`) takes the signal and marks the file revoked: select()
   raises SegmentRevokedError (a StoreError) and hold() fails from then on. It releases the lease only once
   the mapping has no view left (mmap.close succeeds), polling every millisecond meanwhile, and unmaps it at
   that moment. So the other process's truncation goes ahead only when nothing in this process can touch
   the pages, and a reader that copies from a view it already had reads valid pages meanwhile. The other
   process waits as long as readers keep their views, plus about a millisecond: the pull server keeps a
   response's views for that response, look_message_by_offset copies its record out and drops its view at
   once. A caller of get_messages that keeps views longer than lease-break-time is not protected: the
   kernel then lets the truncation through, the watcher logs it, and touching those views raises SIGBUS.
4. After a break. The descriptor stays open: pread and sendfile on a shrunken file return short counts,
   never a signal. Every second `protect` tries again: if the file still has its full size and nobody holds
   it open for writing, the lease is taken again and the file is served again (it was only opened for
   writing); a file found shorter than a segment stays revoked for good, its records gone.

Signals. F_SETLEASE makes the whole process the owner of the open file, which is whom the kernel signals;
F_SETOWN_EX F_OWNER_TID then points the signal at the watcher thread alone, which keeps LEASE_SIGNAL blocked
and takes it with sigtimedwait. No other thread ever receives it, so the program needs to block nothing and
install no handler. (Python runs signal handlers only in the main thread, between bytecodes, while the
store is a library used from any thread, and the dashboard uses signals of its own.) A break that lands
between F_SETLEASE and F_SETOWN_EX is signalled to the process: so the watcher sets LEASE_SIGNAL's
disposition to SIG_IGN before its first lease (only while it is SIG_DFL, whose action for a real-time
signal is to kill), and checks F_GETLEASE once the signal points at it: during a break F_GETLEASE reports
the break's target (F_UNLCK instead of F_RDLCK), so a break in that window is caught too. sigtimedwait
gives no si_fd, so on a signal the watcher asks F_GETLEASE of every leased file (one fcntl each).

Where no lease can be had, the file says which protection applies (`MappedFile.protection`, a
FileProtection): the active segment and any file mapped writable have none from a lease (WRITABLE_DETAIL
says what happens to them); a lease refused with EACCES (not the file's owner, no CAP_LEASE), EAGAIN (open
for writing elsewhere: tried again every second) or EINVAL (leases disabled or unsupported) leaves the file
unleased, and it says so.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import signal
import struct
import threading
import time
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from store import _libc

log = logging.getLogger(__name__)

# Linux fcntl commands Python's fcntl module may lack.
F_SETSIG = 10
F_SETOWN_EX = 15
F_OWNER_TID = 0
F_SETLEASE = getattr(fcntl, "F_SETLEASE", 1024)
F_GETLEASE = getattr(fcntl, "F_GETLEASE", 1025)
_OWNER_EX = struct.Struct("ii")  # struct f_owner_ex: type, pid

# The lease-break signal: real-time, so breaks queue and never merge with SIGIO (F_SETSIG's default).
LEASE_SIGNAL = signal.SIGRTMIN + 6
SWEEP_INTERVAL_S = 0.1  # how often watched queues seal and lease their full files
RETRY_INTERVAL_S = 1.0  # a refused (EAGAIN) or revoked file is tried again this often
VIEW_POLL_S = 0.001  # while a revocation waits for readers' views to go
LEASE_BREAK_TIME_PATH = "/proc/sys/fs/lease-break-time"

WRITABLE_DETAIL = (
    "unprotected: mapped read-write because this store writes it, and the kernel grants a read lease only "
    "on a file nobody has open for writing; a truncation by another process is not held back: the writer's "
    "next append and any read of its views would raise SIGBUS, while the pull server's sends from its "
    "mapping fail with EFAULT and end only that consumer's connection"
)
LEASED_DETAIL = (
    "read lease held on a read-only mapping: another process that truncates the file or opens it for writing "
    "waits until this store has dropped its views of it; the file is then no longer served"
)


class ProtectionState(StrEnum):
    WRITABLE = "writable"  # mapped read-write: no lease possible
    SEALING = "sealing"  # full: sealed and leased once flushed, unlocked and free of writable views
    LEASED = "leased"
    UNLEASED = "unleased"  # read-only, but no lease: the detail says why and what would fix it
    REVOKED = "revoked"  # the lease broke: not served
    CLOSED = "closed"


@dataclass(frozen=True)
class FileProtection:
    """What guards one mapped file against a truncation by another process (a snapshot for inspection).

    `lease_breaks`: times another process broke the file's lease; `last_release_s`: how long the store took,
    from the last break's signal, to drop its views and release the lease (what that process waited, less the
    signal's delivery), None before any break."""

    path: str
    state: ProtectionState
    detail: str
    lease_breaks: int
    last_release_s: float | None


class LeasedFile(Protocol):
    """What the watcher asks of a file it holds a lease for (MappedFile)."""

    def lease_broken(self) -> bool: ...

    def finish_revocation(self) -> bool: ...


class ProtectedQueue(Protocol):
    """What the watcher asks of a queue it sweeps (MappedFileQueue)."""

    def protect_files(self) -> None: ...


@dataclass(frozen=True)
class LeaseAttempt:
    held: bool
    refusal: str | None = None  # why not, and the fix
    retry: bool = False  # the refusal may pass (EAGAIN)


def refusal_detail(error: OSError) -> str:
    """One sentence for a refused F_SETLEASE: what it means and what would fix it."""
    if error.errno in (errno.EACCES, errno.EPERM):
        return (
            "unprotected: the kernel refused a read lease (EACCES): this process neither owns the file nor "
            "has CAP_LEASE; run the store as the files' owner, or grant CAP_LEASE"
        )
    if error.errno == errno.EAGAIN:
        return (
            "unprotected: the kernel refused a read lease (EAGAIN): another process (or another descriptor "
            f"here) has the file open for writing; tried again every {RETRY_INTERVAL_S:g} s"
        )
    if error.errno == errno.EINVAL:
        return (
            "unprotected: the kernel refused a read lease (EINVAL): leases are disabled "
            "(sysctl fs.leases-enable=0) or this filesystem does not support them"
        )
    return f"unprotected: the kernel refused a read lease ({errno.errorcode.get(error.errno, error.errno)})"


def lease_break_time_s() -> float | None:
    """/proc/sys/fs/lease-break-time: how long a breaker waits at most; None where unreadable."""
    try:
        with open(LEASE_BREAK_TIME_PATH) as setting:
            return float(setting.read())
    except (OSError, ValueError):
        return None


def release_lease(fd: int) -> None:
    """F_SETLEASE F_UNLCK; a lease the kernel already broke after lease-break-time is gone, which is fine."""
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, F_SETLEASE, fcntl.F_UNLCK)


def lease_still_held(fd: int) -> bool:
    """False during a break (F_GETLEASE reports the break's target) and after one."""
    try:
        return fcntl.fcntl(fd, F_GETLEASE) == fcntl.F_RDLCK
    except OSError:
        return False


class LeaseWatcher:
    """The process's one thread that takes lease-break signals, waits out revocations and sweeps queues.

    Started by the first lease; a daemon thread, it lives as long as the process (leases point their signal at
    its thread id, so it must outlive them). Use `LeaseWatcher.shared()`."""

    _shared: LeaseWatcher | None = None
    _shared_lock = threading.Lock()

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._leased: dict[int, LeasedFile] = {}
        self._revoking: dict[int, tuple[LeasedFile, float]] = {}
        self._queues: weakref.WeakSet[ProtectedQueue] = weakref.WeakSet()
        self._thread: threading.Thread | None = None
        self._thread_id = 0
        self._ready = threading.Event()

    @classmethod
    def shared(cls) -> LeaseWatcher:
        with cls._shared_lock:
            if cls._shared is None:
                cls._shared = cls()
            return cls._shared

    @classmethod
    def _forget_shared(cls) -> None:
        """In a forked child: the parent's thread is not there, so the child's first lease starts its own."""
        cls._shared = None
        cls._shared_lock = threading.Lock()

    # ---- what files and queues ask of it ----------------------------------------------------------------

    def take(self, leased_file: LeasedFile, fd: int) -> LeaseAttempt:
        """Take a read lease on `fd` (a read-only descriptor) for `leased_file`, its breaks signalled here."""
        thread_id = self._start()
        with self._lock:  # known before the lease exists, so that no break can find it missing
            self._leased[id(leased_file)] = leased_file
        try:
            fcntl.fcntl(fd, F_SETSIG, LEASE_SIGNAL)
            fcntl.fcntl(fd, F_SETLEASE, fcntl.F_RDLCK)
        except OSError as error:
            self.forget(leased_file)
            return LeaseAttempt(False, refusal_detail(error), retry=error.errno == errno.EAGAIN)
        try:
            fcntl.fcntl(fd, F_SETOWN_EX, _OWNER_EX.pack(F_OWNER_TID, thread_id))
        except OSError as error:  # a lease whose breaks nobody sees must not stay: its breaker would wait
            release_lease(fd)
            self.forget(leased_file)
            return LeaseAttempt(False, f"unprotected: F_SETOWN_EX failed ({error.strerror}); lease released")
        if not lease_still_held(fd):  # broken before the signal pointed here: it went to the process
            self.wake()
        return LeaseAttempt(True)

    def forget(self, leased_file: LeasedFile) -> None:
        """The file no longer holds a lease (released, or closing)."""
        with self._lock:
            self._leased.pop(id(leased_file), None)

    def watch(self, queue: ProtectedQueue) -> None:
        """Sweep `queue` every SWEEP_INTERVAL_S (`protect_files`) until `unwatch`; a weak reference."""
        self._start()
        with self._lock:
            self._queues.add(queue)

    def unwatch(self, queue: ProtectedQueue) -> None:
        with self._lock:
            self._queues.discard(queue)

    def wake(self) -> None:
        """Make the thread look at every lease now, by sending it the signal itself (which it blocks)."""
        if self._thread is not None and self._thread.ident is not None:
            signal.pthread_kill(self._thread.ident, LEASE_SIGNAL)

    @property
    def thread_id(self) -> int:
        """The native id the lease-break signals go to (0 before the thread started)."""
        return self._thread_id

    # ---- the thread -------------------------------------------------------------------------------------

    def _start(self) -> int:
        with self._lock:
            if self._thread is None:
                _libc.ignore_signal_if_default(LEASE_SIGNAL)  # see the module doc: the F_SETOWN_EX window
                self._thread = threading.Thread(target=self._run, name="LeaseWatcher", daemon=True)
                self._thread.start()
        self._ready.wait()
        return self._thread_id

    def _run(self) -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, {LEASE_SIGNAL})
        self._thread_id = threading.get_native_id()
        self._ready.set()
        next_sweep = time.monotonic()
        while True:
            with self._lock:
                revoking = bool(self._revoking)
            timeout = VIEW_POLL_S if revoking else max(0.0, next_sweep - time.monotonic())
            if signal.sigtimedwait({LEASE_SIGNAL}, timeout) is not None:
                while signal.sigtimedwait({LEASE_SIGNAL}, 0) is not None:
                    pass  # several breaks at once: one look at every lease serves them all
                self._guarded(self._check_leases)
            self._guarded(self._advance_revocations)
            if time.monotonic() >= next_sweep:
                self._guarded(self._sweep)
                next_sweep = time.monotonic() + SWEEP_INTERVAL_S

    @staticmethod
    def _guarded(step) -> None:
        try:
            step()
        except Exception:  # the thread must outlive any one file's trouble: leases depend on it
            log.exception("lease watcher: %s failed", step.__name__)

    def _check_leases(self) -> None:
        with self._lock:
            leased = list(self._leased.values())
        broken = [leased_file for leased_file in leased if leased_file.lease_broken()]
        now = time.monotonic()
        with self._lock:
            for leased_file in broken:
                self._leased.pop(id(leased_file), None)
                self._revoking[id(leased_file)] = (leased_file, now)

    def revoke(self, leased_file: LeasedFile) -> None:
        """Finish revoking `leased_file` (its views dropped, its lease released) from the thread."""
        with self._lock:
            self._leased.pop(id(leased_file), None)
            self._revoking.setdefault(id(leased_file), (leased_file, time.monotonic()))
        self.wake()

    def _advance_revocations(self) -> None:
        with self._lock:
            pending = list(self._revoking.items())
        limit = lease_break_time_s()
        for key, (leased_file, since) in pending:
            if leased_file.finish_revocation():
                with self._lock:
                    self._revoking.pop(key, None)
            elif limit is not None and time.monotonic() - since > limit:
                log.warning(
                    "%s: views were still held %.0f s after its lease broke: the kernel has let the other "
                    "process go on, and reading those views now raises SIGBUS",
                    leased_file,
                    limit,
                )
                with self._lock:  # warned once; the file still unmaps when its last view goes
                    self._revoking[key] = (leased_file, float("inf"))

    def _sweep(self) -> None:
        with self._lock:
            queues: Iterable[ProtectedQueue] = list(self._queues)
        for queue in queues:
            queue.protect_files()


os.register_at_fork(after_in_child=LeaseWatcher._forget_shared)
