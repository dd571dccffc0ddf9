"""The store root's small state files: `checkpoint`, `abort` and `lock`.

- `checkpoint` (`StoreCheckpoint.java`): one 4096-byte page (`DefaultMappedFile.OS_PAGE_SIZE`) whose first 40
  bytes are five big-endian int64s. Recovery starts from the timestamps it holds.
- `abort` (`DefaultMessageStore.createTempFile`): present while a broker runs; left behind by a crash. Since
  5.0.0 it holds the broker's pid as decimal text, in 4.x it is empty.
- `lock` (`DefaultMessageStore.start`): `FileChannel.tryLock(0, 1, false)` on it keeps a second broker out.
  Java takes that lock with fcntl(F_SETLK) on Linux, a POSIX record lock, so `fcntl.lockf` excludes both ways.
"""

from __future__ import annotations

import enum
import errno
import fcntl
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from store.errors import CorruptRecord, StoreError
from store.safe_read import PreadFile

CHECKPOINT_FILE_SIZE = 4096  # DefaultMappedFile.OS_PAGE_SIZE: StoreCheckpoint maps exactly one page
ABORT_FILE_NAME = "abort"
LOCK_FILE_NAME = "lock"
CHECKPOINT_FILE_NAME = "checkpoint"
LOCK_CONTENT = b"lock"
# StoreCheckpoint.getMinTimestamp: recovery backs off 3 s from the older of the two flushed timestamps.
MIN_TIMESTAMP_SLACK_MS = 3000

_CHECKPOINT = struct.Struct(">qqqqq")
_INT64 = struct.Struct(">q")
# Offsets of the fields, with the release that added the last two (absent in older files).
_ALWAYS_PRESENT_BYTES = 24  # physicMsgTimestamp, logicsMsgTimestamp, indexMsgTimestamp
_MASTER_FLUSHED_OFFSET_AT = 24  # 5.0.0
_CONFIRM_PHY_OFFSET_AT = 32  # 5.1.1


# --- checkpoint -------------------------------------------------------------------------------------------


def _min_timestamp(physic_msg_timestamp: int, logics_msg_timestamp: int) -> int:
    return max(0, min(physic_msg_timestamp, logics_msg_timestamp) - MIN_TIMESTAMP_SLACK_MS)


@dataclass(frozen=True)
class CheckpointValues:
    """The fields of a `checkpoint` file, as read.

    `master_flushed_offset` (since 5.0.0) and `confirm_phy_offset` (since 5.1.1) are None when the file ends
    before them. A broker always writes a whole 4096-byte page, so in a real file they read as 0 when an
    older broker wrote it: the bytes cannot tell "absent" from 0, only a short file can.
    """

    physic_msg_timestamp: int
    logics_msg_timestamp: int
    index_msg_timestamp: int
    master_flushed_offset: int | None
    confirm_phy_offset: int | None
    file_size: int

    def min_timestamp(self) -> int:
        """`StoreCheckpoint.getMinTimestamp`: max(0, min(physic, logics) - 3000)."""
        return _min_timestamp(self.physic_msg_timestamp, self.logics_msg_timestamp)

    def min_timestamp_index(self) -> int:
        """`StoreCheckpoint.getMinTimestampIndex`: min(getMinTimestamp(), indexMsgTimestamp)."""
        return min(self.min_timestamp(), self.index_msg_timestamp)


def read_checkpoint(path: Path) -> CheckpointValues:
    """Read a `checkpoint` file with pread, never writing or mapping it. CorruptRecord as
    `decode_checkpoint`; OSError if it cannot be read."""
    with PreadFile(Path(path)) as reader:
        file_size = reader.size()
        data = reader.read(0, _CHECKPOINT.size)
    return decode_checkpoint(data, file_size, path=str(path))


def decode_checkpoint(
    data: bytes | bytearray | memoryview, file_size: int, *, path: str | None = None
) -> CheckpointValues:
    """The fields at the start of a checkpoint's bytes (`file_size`: the whole file's, as reported).

    Any 24 bytes are a checkpoint (every int64 is a timestamp or an offset to Java); CorruptRecord for fewer,
    nothing else."""
    if len(data) < _ALWAYS_PRESENT_BYTES:
        raise CorruptRecord(
            f"checkpoint is {len(data)} bytes; it needs at least {_ALWAYS_PRESENT_BYTES}",
            path=path,
            offset=len(data),
            field="indexMsgTimestamp",
        )
    physic, logics, index = struct.unpack_from(">qqq", data)
    return CheckpointValues(
        physic_msg_timestamp=physic,
        logics_msg_timestamp=logics,
        index_msg_timestamp=index,
        master_flushed_offset=_optional_int64(data, _MASTER_FLUSHED_OFFSET_AT),
        confirm_phy_offset=_optional_int64(data, _CONFIRM_PHY_OFFSET_AT),
        file_size=file_size,
    )


def _optional_int64(data: bytes, offset: int) -> int | None:
    if len(data) < offset + _INT64.size:
        return None
    return _INT64.unpack_from(data, offset)[0]


class StoreCheckpoint:
    """`StoreCheckpoint`: the writable checkpoint. Set the attributes, then `flush`.

    Opening creates the file if needed and grows it to 4096 bytes (what mapping one page does in Java).
    Writes use pwrite + fdatasync instead of a mapping, so the bytes on disk are the same but a file
    shrunk by someone else cannot SIGBUS us.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        if os.fstat(self._fd).st_size < CHECKPOINT_FILE_SIZE:
            os.ftruncate(self._fd, CHECKPOINT_FILE_SIZE)
        values = read_checkpoint(self.path)
        self.physic_msg_timestamp = values.physic_msg_timestamp
        self.logics_msg_timestamp = values.logics_msg_timestamp
        self.index_msg_timestamp = values.index_msg_timestamp
        self.master_flushed_offset = values.master_flushed_offset or 0
        self.confirm_phy_offset = values.confirm_phy_offset or 0

    def values(self) -> CheckpointValues:
        return CheckpointValues(
            self.physic_msg_timestamp,
            self.logics_msg_timestamp,
            self.index_msg_timestamp,
            self.master_flushed_offset,
            self.confirm_phy_offset,
            CHECKPOINT_FILE_SIZE,
        )

    def min_timestamp(self) -> int:
        """`StoreCheckpoint.getMinTimestamp`: max(0, min(physic, logics) - 3000)."""
        return _min_timestamp(self.physic_msg_timestamp, self.logics_msg_timestamp)

    def min_timestamp_index(self) -> int:
        """`StoreCheckpoint.getMinTimestampIndex`: min(getMinTimestamp(), indexMsgTimestamp)."""
        return min(self.min_timestamp(), self.index_msg_timestamp)

    def flush(self) -> None:
        """`StoreCheckpoint.flush`: all five fields at offset 0, then forced to disk."""
        if self._fd < 0:
            raise StoreError(f"{self.path}: checkpoint is closed")
        data = _CHECKPOINT.pack(
            self.physic_msg_timestamp,
            self.logics_msg_timestamp,
            self.index_msg_timestamp,
            self.master_flushed_offset,
            self.confirm_phy_offset,
        )
        os.pwrite(self._fd, data, 0)
        os.fdatasync(self._fd)

    def close(self) -> None:
        """`StoreCheckpoint.shutdown`: flush, then close."""
        if self._fd >= 0:
            self.flush()
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> StoreCheckpoint:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


# --- abort file -------------------------------------------------------------------------------------------


def pid_is_alive(pid: int) -> bool:
    """Whether a process with this pid exists (signal 0). Pids are reused, so this is a hint, not proof."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, it is just not ours to signal
    return True


@dataclass(frozen=True)
class AbortFileState:
    """What the `abort` file says. `pid` is None when absent, empty (4.x brokers) or not a number."""

    present: bool
    pid: int | None = None
    pid_alive: bool | None = None
    content: bytes = b""

    @property
    def written_by(self) -> str:
        """ "4.x" for an empty file, "5.x" for a pid, "unknown" for anything else; "" when absent."""
        if not self.present:
            return ""
        if not self.content.strip():
            return "4.x"
        return "5.x" if self.pid is not None else "unknown"


def create_abort_file(root: Path, pid: int | None = None) -> Path:
    """`DefaultMessageStore.createTempFile`: `<root>/abort` holding the pid as text (what 5.x writes).

    RocketMQ writes it through MixAll.string2File, which also leaves an `abort.bak`; nothing reads that
    file, so it is not reproduced.
    """
    path = Path(root) / ABORT_FILE_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, str(os.getpid() if pid is None else pid).encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    return path


def abort_file_state(root: Path) -> AbortFileState:
    """Read `<root>/abort` without changing it."""
    path = Path(root) / ABORT_FILE_NAME
    try:
        content = path.read_bytes()
    except FileNotFoundError:
        return AbortFileState(present=False)
    text = content.decode("ascii", errors="replace").strip()
    pid = int(text) if text.isdigit() else None
    return AbortFileState(True, pid, None if pid is None else pid_is_alive(pid), content)


def remove_abort_file(root: Path) -> bool:
    """What a clean shutdown does (`DefaultMessageStore.shutdown`). True if a file was removed."""
    try:
        (Path(root) / ABORT_FILE_NAME).unlink()
    except FileNotFoundError:
        return False
    return True


# --- lock file --------------------------------------------------------------------------------------------


class StoreInUse(StoreError):
    """Another process (a broker, or another mqinspect) holds the store's `lock`."""

    def __init__(self, path: Path, holder_pid: int | None, *, by_this_process: bool = False):
        self.path = Path(path)
        self.holder_pid = holder_pid
        self.by_this_process = by_this_process
        if by_this_process:
            message = "store is already locked by this process"
        else:
            holder = f" (pid {holder_pid})" if holder_pid else ""
            message = f"store is in use by another process{holder}"
        super().__init__(f"{self.path}: {message}")


# POSIX record locks belong to the process and vanish when it closes *any* descriptor of the file, so this
# process must never open and close the lock file while it holds the lock: held locks are remembered here.
_HELD_LOCKS: dict[tuple[int, int], StoreLock] = {}


class StoreLock:
    """The held lock on `<root>/lock`. Release it, or use it as a context manager."""

    def __init__(self, path: Path, fd: int, identity: tuple[int, int]):
        self.path = path
        self._fd = fd
        self._identity = identity

    @property
    def held(self) -> bool:
        return self._fd >= 0

    def release(self) -> None:
        if self._fd < 0:
            return
        _HELD_LOCKS.pop(self._identity, None)
        fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, 0)
        os.close(self._fd)
        self._fd = -1

    def __enter__(self) -> StoreLock:
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()


def acquire_store_lock(root: Path) -> StoreLock:
    """`DefaultMessageStore.start`: lock byte 0 of `<root>/lock` without waiting, then write "lock" into it.

    Raises StoreInUse when a broker or another process holds it, or this process already does.
    """
    path = Path(root) / LOCK_FILE_NAME
    if _held_here(path):
        raise StoreInUse(path, os.getpid(), by_this_process=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0)
    except OSError as error:
        os.close(fd)
        if error.errno in (errno.EACCES, errno.EAGAIN):
            raise StoreInUse(path, probe_store_lock(root).holder_pid) from error
        raise
    os.pwrite(fd, LOCK_CONTENT, 0)
    os.fsync(fd)
    identity = _file_identity(os.fstat(fd))
    lock = StoreLock(path, fd, identity)
    _HELD_LOCKS[identity] = lock
    return lock


@dataclass(frozen=True)
class LockProbe:
    """Who holds `<root>/lock`. `holder_pid` is None when free or unknown (an OFD lock has no owner pid)."""

    locked: bool
    holder_pid: int | None = None
    by_this_process: bool = False


def probe_store_lock(root: Path) -> LockProbe:
    """Ask the kernel who holds byte 0 of `<root>/lock`, taking nothing (F_OFD_GETLK, else F_GETLK).

    Caveats: a traditional F_GETLK never reports the caller's own locks; F_OFD_GETLK does, which is why it is
    tried first. Locks this process took with `acquire_store_lock` are answered from memory, because the
    probe's open/close of the file would otherwise drop them. Opening the file here is also why a probe
    must not run in a process that locked the file by other means.
    """
    path = Path(root) / LOCK_FILE_NAME
    if _held_here(path):
        return LockProbe(True, os.getpid(), by_this_process=True)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return LockProbe(locked=False)
    try:
        lock_type, pid = _get_lock(fd)
    finally:
        os.close(fd)
    if lock_type == fcntl.F_UNLCK:
        return LockProbe(locked=False)
    return LockProbe(True, pid, by_this_process=pid == os.getpid())


def is_store_locked(root: Path) -> bool:
    """Whether any process holds `<root>/lock` (see `probe_store_lock` for the caveats)."""
    return probe_store_lock(root).locked


# struct flock { short l_type; short l_whence; off_t l_start; off_t l_len; pid_t l_pid; } with native padding.
_FLOCK = struct.Struct("@hhqqi")
_FLOCK_BUFFER_SIZE = 64  # larger than any ABI's struct flock; the kernel reads and writes only its own size


def _get_lock(fd: int) -> tuple[int, int | None]:
    """(l_type, l_pid) of a lock that would block a write lock on byte 0."""
    probe = _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, 0, 1, 0).ljust(_FLOCK_BUFFER_SIZE, b"\0")
    commands = [getattr(fcntl, "F_OFD_GETLK", None), fcntl.F_GETLK]
    for command in (c for c in commands if c is not None):
        try:
            answer = fcntl.fcntl(fd, command, probe)
        except OSError as error:
            if error.errno == errno.EINVAL:  # kernel without OFD locks (< 3.15)
                continue
            raise
        lock_type, _whence, _start, _length, pid = _FLOCK.unpack_from(answer)
        return lock_type, (pid if pid > 0 else None)
    raise StoreError("fcntl cannot query locks on this system")


def _file_identity(stat: os.stat_result) -> tuple[int, int]:
    return stat.st_dev, stat.st_ino


def _held_here(path: Path) -> bool:
    """Asked with stat, which opens no descriptor and so cannot drop a lock this process holds."""
    try:
        return _file_identity(os.stat(path)) in _HELD_LOCKS
    except FileNotFoundError:
        return False


# --- run state --------------------------------------------------------------------------------------------


class StoreRunState(enum.StrEnum):
    RUNNING = "running"  # the lock is held: a broker (or a writer of ours) has the store
    CRASHED = "crashed"  # lock free but abort left behind: the next start recovers abnormally
    STOPPED = "stopped"  # lock free, no abort: the last shutdown was clean


def store_run_state(root: Path) -> StoreRunState:
    """The lock decides "running": a broker takes it before it writes `abort` and keeps it until exit.

    The abort file's pid is not trusted for this (a crashed broker's pid may belong to someone else now);
    `abort_file_state(root).pid_alive` is available to show it as a hint.
    """
    if probe_store_lock(root).locked:
        return StoreRunState.RUNNING
    return StoreRunState.CRASHED if abort_file_state(root).present else StoreRunState.STOPPED
