"""Send paths: the ways a byte range of a CommitLog segment can travel from the page cache to a TCP socket.

Each path serves (file path or open descriptor, offset, length) to a connected socket and returns a
`TransferResult`: bytes sent, the system calls it made by name (as strace names them), the time taken.

- `read_write`: pread64 into a reused buffer, then sendto. Two CPU copies (page cache → buffer → socket),
  two system calls per chunk. RocketMQ with transferMsgByHeap=true (its default), and most naive servers.
- `mmap_write`: sendto straight from the segment's mapping. One copy, one call per chunk. What RocketMQ
  really does with transferMsgByHeap=false (ManyMessageTransfer writes mapped buffers), not sendfile.
- `sendfile`: page references handed to the socket, no CPU copy, one call per chunk. Kafka's
  FileChannel.transferTo, which Kafka turns off with TLS (the bytes must pass through user space).
- `splice`: file → pipe → socket, sendfile's own mechanism made visible; two calls per pipeful.
- `zerocopy`: sendto(MSG_ZEROCOPY) from the mapping, then recvmsg(MSG_ERRQUEUE) for the completions. No
  copy where the NIC can take the pinned pages; a copy after all where it cannot (always over loopback).
- `direct_read_write`: O_DIRECT pread64 of whole blocks into an aligned buffer, trimmed, then sendto. The
  disk is read by DMA and the page cache is neither used nor filled: a cold read that leaves no trace.

The counts come from the implementation itself, one per system call it issues, so a test can hold them
against `strace -c`. Two things keep them exact:

- Sockets are used in blocking mode with a kernel send timeout (SO_SNDTIMEO) rather than Python's socket
  timeout. Python's timeout puts the descriptor in non-blocking mode and turns each send into poll+send,
  with extra sends whenever the buffer is full, so the counts would depend on timing; and os.sendfile and
  os.splice would get EAGAIN that Python does not retry. With SO_SNDTIMEO every send is one system call
  and the kernel enforces the timeout for sendfile and splice too. `Sender` switches the socket to that
  mode and restores it on close.
- pread64 goes through the C library (ctypes) into a buffer allocated once, because os.pread allocates a
  new bytes object per call and os.preadv is a different system call.

Python retries EINTR inside os.* and socket calls (PEP 475) without telling us, so a signal can add a
system call that strace sees and the count does not; the ctypes pread retries EINTR itself and counts it.

A peer that stops reading must not hang a transfer. The kernel send timeout is a quarter of the
transfer's `send_timeout_s`, so a blocked send comes back (short, or with EAGAIN) several times within
it, and the transfer raises TransferStalled once no byte has gone out for `send_timeout_s`. The slice is
shorter than the whole timeout because one sendfile or splice call can wait out the kernel timeout more
than once (a part per internal pipeful) before it returns. A peer that closed the connection raises
PeerClosed (MSG_NOSIGNAL keeps SIGPIPE away from embedding programs).

MSG_ZEROCOPY pins the pages of the mapping and reports completion later on the socket's error queue, as
`sock_extended_err` records (origin SO_EE_ORIGIN_ZEROCOPY) naming a range of send-call sequence numbers.
The mapping must stay unchanged until then, so `zerocopy` waits for every completion before returning.
The code SO_EE_CODE_ZEROCOPY_COPIED says the kernel copied after all; over loopback it always does
("packets looped onto a local destination have their payload copied", msg_zerocopy.rst), and the result
says so in `zerocopy_fell_back_to_copy`.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import mmap
import os
import select
import socket
import struct
import time
from collections import Counter, OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import ClassVar

from store.errors import StoreError


class SendPath(StrEnum):
    READ_WRITE = "read_write"
    MMAP_WRITE = "mmap_write"
    SENDFILE = "sendfile"
    SPLICE = "splice"
    ZEROCOPY = "zerocopy"
    DIRECT_READ_WRITE = "direct_read_write"


# The paths whose cost is per call rather than per byte copied: handing them a whole run of contiguous
# records in one call is the point. The copying paths send record by record, as RocketMQ's
# ManyMessageTransfer writes one mapped buffer per message.
RUN_COALESCING_PATHS = frozenset({SendPath.SENDFILE, SendPath.SPLICE, SendPath.ZEROCOPY})

# System call names as strace prints them on x86_64.
PREAD = "pread64"
SENDTO = "sendto"  # glibc's send() is the sendto system call
SENDFILE = "sendfile"
SPLICE = "splice"
RECVMSG = "recvmsg"
POLL = "poll"
COUNTED_SYSCALLS = (PREAD, SENDTO, SENDFILE, SPLICE, RECVMSG, POLL)

# Linux ABI constants Python 3.11 does not export.
SO_ZEROCOPY = getattr(socket, "SO_ZEROCOPY", 60)
MSG_ZEROCOPY = getattr(socket, "MSG_ZEROCOPY", 0x4000000)
SO_EE_ORIGIN_ZEROCOPY = 5
SO_EE_CODE_ZEROCOPY_COPIED = 1
IP_RECVERR = 11
IPV6_RECVERR = 25
BLKSSZGET = 0x1268  # ioctl: a block device's logical sector size
# struct sock_extended_err: ee_errno, ee_origin, ee_type, ee_code, ee_pad, ee_info, ee_data (native order)
SOCK_EXTENDED_ERR = struct.Struct("=IBBBBII")
_ERROR_QUEUE_ANCILLARY_BYTES = socket.CMSG_SPACE(SOCK_EXTENDED_ERR.size + 28)  # + a sockaddr_in6
_SEQUENCE_MASK = 0xFFFFFFFF  # zerocopy sequence numbers are 32-bit and wrap
_PAGE_SIZE = mmap.PAGESIZE
_DEFAULT_BLOCK_SIZE = 4096
_DIRECT_FILES_KEPT = 8

_libc = ctypes.CDLL(None, use_errno=True)
_libc.pread.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int64]
_libc.pread.restype = ctypes.c_ssize_t


# ---- errors ---------------------------------------------------------------------------------------------


class TransferError(StoreError):
    """A transfer that could not finish. `bytes_sent` says how far it got (the stream is then unusable)."""

    def __init__(self, message: str, *, path: SendPath | None = None, bytes_sent: int = 0):
        super().__init__(message)
        self.path = path
        self.bytes_sent = bytes_sent


class TransferStalled(TransferError):
    """The peer stopped reading: no send made progress within the send timeout."""


class PeerClosed(TransferError):
    """The peer closed or reset the connection in the middle of a transfer."""


class RangeOutsideFile(TransferError):
    """The byte range asked for is not (or no longer) inside the source file."""


class PathUnsupported(TransferError):
    """This send path cannot work here (kernel, socket type or filesystem)."""


class DirectIOUnsupported(PathUnsupported):
    """The filesystem refuses O_DIRECT (procfs, some FUSE and network filesystems; tmpfs before Linux 6.6)."""


# ---- options and results ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TransferOptions:
    # Bytes per call: the read buffer of the copying paths, the mapping slice per send, sendfile's count
    # and the size of each MSG_ZEROCOPY send.
    chunk_bytes: int = 256 * 1024
    pipe_bytes: int = 1 << 20  # splice's pipe, asked for with F_SETPIPE_SZ (capped by fs.pipe-max-size)
    send_timeout_s: float = 10.0  # a send that makes no progress this long means the peer stopped reading

    def __post_init__(self) -> None:
        if self.chunk_bytes <= 0 or self.pipe_bytes <= 0:
            raise ValueError("chunk_bytes and pipe_bytes must be positive")
        if self.send_timeout_s <= 0:
            raise ValueError("send_timeout_s must be positive: a send without a timeout can hang forever")


@dataclass(frozen=True)
class TransferResult:
    path: SendPath
    bytes_sent: int
    syscalls: MappingProxyType[str, int]  # strace's names -> calls made, failed ones included
    elapsed_s: float
    zerocopy_fell_back_to_copy: bool = False  # a completion carried SO_EE_CODE_ZEROCOPY_COPIED
    zerocopy_notifications: int = 0  # error-queue messages read (the kernel merges adjacent ranges)

    @property
    def mb_per_s(self) -> float:
        return self.bytes_sent / self.elapsed_s / 1e6 if self.elapsed_s > 0 else 0.0


Source = str | os.PathLike | int  # a path, or a descriptor open for reading that the caller keeps


# ---- one transfer's bookkeeping --------------------------------------------------------------------------


class _Run:
    """One transfer in progress: the bytes it sent and every system call it made, by name."""

    def __init__(self, path: SendPath, sock: socket.socket, send_timeout_s: float):
        self.path = path
        self.sock = sock
        self.send_timeout_s = send_timeout_s
        self.sent = 0
        self.syscalls: Counter[str] = Counter()
        self.copied = False
        self.notifications = 0
        self._started = time.perf_counter()
        self._last_progress = time.monotonic()

    def result(self) -> TransferResult:
        return TransferResult(
            self.path,
            self.sent,
            MappingProxyType(dict(sorted(self.syscalls.items()))),
            time.perf_counter() - self._started,
            self.copied,
            self.notifications,
        )

    def socket_call(self, name: str, function, *args) -> int | None:
        """Make one system call that writes to the socket: the bytes it sent (0 from sendfile is the end
        of the file), or None when a kernel timeout slice passed with nothing sent. TransferStalled once
        nothing has gone out for the send timeout; PeerClosed when the peer has gone."""
        self.syscalls[name] += 1
        try:
            sent = function(*args)
        except (BlockingIOError, TimeoutError):
            sent = None
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError) as error:
            raise PeerClosed(
                f"{self.path}: the peer closed the connection after {self.sent} bytes ({error.strerror})",
                path=self.path,
                bytes_sent=self.sent,
            ) from error
        except OSError as error:
            if error.errno != errno.EFAULT:
                raise
            # A send from a mapping whose file shrank: the kernel's copy faults in kernel mode and returns
            # EFAULT (x86 and arm64 send no SIGBUS for it; very old kernels did).
            raise RangeOutsideFile(
                f"{self.path}: the kernel could not read the mapped source after {self.sent} bytes (EFAULT): "
                "its file was truncated under the mapping",
                path=self.path,
                bytes_sent=self.sent,
            ) from error
        now = time.monotonic()
        if sent:
            self.sent += sent
            self._last_progress = now
        elif now - self._last_progress >= self.send_timeout_s:
            raise self.stalled()
        return sent

    def stalled(self) -> TransferStalled:
        return TransferStalled(
            f"{self.path}: the peer stopped reading; no progress for {self.send_timeout_s:g} s "
            f"after {self.sent} bytes",
            path=self.path,
            bytes_sent=self.sent,
        )

    def send_all(self, view: memoryview, flags: int = 0) -> None:
        """send(2) until `view` is gone: one call per chunk unless the peer is slow."""
        while view:
            sent = self.socket_call(SENDTO, self.sock.send, view, flags | socket.MSG_NOSIGNAL)
            if sent:
                view = view[sent:]

    def too_short(self, fd: int, position: int, end: int) -> RangeOutsideFile:
        return RangeOutsideFile(
            f"{self.path}: descriptor {fd} ended at {position} while reading up to {end} (the file shrank)",
            path=self.path,
            bytes_sent=self.sent,
        )


# ---- reusable resources ------------------------------------------------------------------------------


class _NativeBuffer:
    """Memory the C library can read into: a bytearray, or page-aligned anonymous memory for O_DIRECT."""

    def __init__(self, size: int, page_aligned: bool):
        self.storage: bytearray | mmap.mmap = mmap.mmap(-1, size) if page_aligned else bytearray(size)
        self._c_array = (ctypes.c_char * size).from_buffer(self.storage)
        self.address = ctypes.addressof(self._c_array)
        self.view = memoryview(self.storage)

    def __len__(self) -> int:
        return len(self.view)

    def close(self) -> None:
        self.view.release()
        del self._c_array
        if isinstance(self.storage, mmap.mmap):
            with contextlib.suppress(BufferError):  # a caller still holds a slice: freed with it
                self.storage.close()


class _Pipe:
    """The pipe splice moves pages through, enlarged with F_SETPIPE_SZ as far as the system allows."""

    def __init__(self, wanted_bytes: int):
        self.read_fd, self.write_fd = os.pipe2(os.O_CLOEXEC)
        self.size = _grow_pipe(self.write_fd, wanted_bytes)

    def close(self) -> None:
        os.close(self.read_fd)
        os.close(self.write_fd)


def _grow_pipe(fd: int, wanted_bytes: int) -> int:
    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, wanted_bytes)
    except PermissionError:  # above fs.pipe-max-size without CAP_SYS_RESOURCE: take the most allowed
        with contextlib.suppress(OSError, ValueError):
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, min(wanted_bytes, _pipe_max_size()))
    return fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)


def _pipe_max_size() -> int:
    with open("/proc/sys/fs/pipe-max-size") as limit:
        return int(limit.read())


@dataclass
class _DirectFile:
    fd: int
    block_size: int
    identity: tuple[int, int]


class _DirectFiles:
    """O_DIRECT descriptors, opened beside the caller's (switching the caller's own descriptor with
    F_SETFL would change it for every other user of that open file). Kept by (device, inode) so a server
    that reads record by record opens each segment once; a kept descriptor whose file was deleted is
    dropped, since its inode number may now belong to another file."""

    def __init__(self) -> None:
        self._files: OrderedDict[tuple[int, int], _DirectFile] = OrderedDict()

    def open(self, source: Source) -> _DirectFile:
        status = os.fstat(source) if isinstance(source, int) else os.stat(source)
        identity = (status.st_dev, status.st_ino)
        kept = self._files.get(identity)
        if kept is not None and os.fstat(kept.fd).st_nlink > 0:
            self._files.move_to_end(identity)
            return kept
        if kept is not None:
            self._forget(identity)
        opened = self._open_direct(source, identity)
        self._files[identity] = opened
        while len(self._files) > _DIRECT_FILES_KEPT:
            self._forget(next(iter(self._files)))
        return opened

    @staticmethod
    def _open_direct(source: Source, identity: tuple[int, int]) -> _DirectFile:
        # /proc/self/fd/N opens the very file behind a descriptor, even one already unlinked.
        name = f"/proc/self/fd/{source}" if isinstance(source, int) else os.fspath(source)
        try:
            fd = os.open(name, os.O_RDONLY | os.O_DIRECT | os.O_CLOEXEC)
        except OSError as error:
            if error.errno == errno.EINVAL:
                raise DirectIOUnsupported(
                    f"{name}: this filesystem refuses O_DIRECT; use another send path",
                    path=SendPath.DIRECT_READ_WRITE,
                ) from error
            raise
        return _DirectFile(fd, logical_block_size(fd), identity)

    def _forget(self, identity: tuple[int, int]) -> None:
        os.close(self._files.pop(identity).fd)

    def close(self) -> None:
        while self._files:
            self._forget(next(iter(self._files)))


def logical_block_size(fd: int) -> int:
    """The alignment O_DIRECT wants for offsets, lengths and buffers of the file open at `fd`.

    The filesystem block size (statvfs f_bsize) is a multiple of the device's logical block size, so it
    is always a safe alignment; failing that, the device's own answer (BLKSSZGET), failing that 4096."""
    with contextlib.suppress(OSError):
        block = os.fstatvfs(fd).f_bsize
        if block >= 512 and block & (block - 1) == 0:
            return block
    with contextlib.suppress(OSError):
        return _device_sector_size(os.fstat(fd).st_dev)
    return _DEFAULT_BLOCK_SIZE


def _device_sector_size(device: int) -> int:
    fd = os.open(f"/dev/block/{os.major(device)}:{os.minor(device)}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        answer = fcntl.ioctl(fd, BLKSSZGET, b"\0" * 4)
    finally:
        os.close(fd)
    return int.from_bytes(answer, "little")


_TIMEVAL = struct.Struct("@ll")


def timeval(seconds: float) -> bytes:
    """A struct timeval for SO_SNDTIMEO / SO_RCVTIMEO. Never all zero, which would mean "no timeout"."""
    whole = int(seconds)
    return _TIMEVAL.pack(whole, max(round((seconds - whole) * 1e6), 0 if whole else 1))


class _SocketMode:
    """Blocking mode with a kernel send timeout for the life of a Sender; the caller's mode comes back
    on `restore`. Why not Python's timeout: see the module docstring."""

    def __init__(self, sock: socket.socket, send_timeout_s: float):
        self.sock = sock
        self._python_timeout = sock.gettimeout()
        self._send_timeout = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _TIMEVAL.size)
        sock.settimeout(None)
        slice_s = max(send_timeout_s / 4, 0.01)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval(slice_s))

    def restore(self) -> None:
        if self.sock.fileno() < 0:  # closed meanwhile: nothing to restore
            return
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, self._send_timeout)
            self.sock.settimeout(self._python_timeout)


# ---- the sender ------------------------------------------------------------------------------------------


class Sender:
    """The send side of one connection: the socket in blocking mode with a send timeout, plus what the
    paths reuse between transfers (read buffers, the splice pipe, O_DIRECT descriptors, SO_ZEROCOPY).

    Not thread-safe: one thread sends on a connection at a time. Use `with Sender(sock) as sender:`."""

    def __init__(self, sock: socket.socket, options: TransferOptions | None = None):
        self.sock = sock
        self.options = options or TransferOptions()
        self._mode = _SocketMode(sock, self.options.send_timeout_s)
        self._copy_buffer: _NativeBuffer | None = None
        self._direct_buffer: _NativeBuffer | None = None
        self._pipe: _Pipe | None = None
        self._direct_files = _DirectFiles()
        self._zerocopy_enabled = False

    def __enter__(self) -> Sender:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        for buffer in (self._copy_buffer, self._direct_buffer):
            if buffer is not None:
                buffer.close()
        self._copy_buffer = self._direct_buffer = None
        self._discard_pipe()
        self._direct_files.close()
        self._mode.restore()

    def prepare(self, path: SendPath, source: Source | None = None) -> None:
        """Fail now, with PathUnsupported, if `path` cannot serve `source` on this socket: before a caller
        commits to a response it could not finish."""
        if path is SendPath.ZEROCOPY:
            self._enable_zerocopy()
        elif path is SendPath.DIRECT_READ_WRITE and source is not None:
            self._direct_files.open(source)

    def send_bytes(self, data: bytes | memoryview, *, more: bool = False) -> TransferResult:
        """Send a small buffer of our own (a protocol header); `more` corks it onto what follows."""
        run = _Run(SendPath.READ_WRITE, self.sock, self.options.send_timeout_s)
        run.send_all(memoryview(data), socket.MSG_MORE if more else 0)
        return run.result()

    def send(
        self,
        path: SendPath | str,
        source: Source | None,
        offset: int,
        length: int,
        *,
        mapped: memoryview | None = None,
    ) -> TransferResult:
        """Send `length` bytes at `offset` of `source` by `path`.

        `mapped`, for mmap_write and zerocopy only, is those bytes in a mapping the caller already has
        (a MappedFile's select()); the source is then not mapped again and may be None."""
        path = SendPath(path)
        if offset < 0 or length < 0:
            raise ValueError(f"bad range: offset {offset}, length {length}")
        if mapped is not None and len(mapped) != length:
            raise ValueError(f"the mapped view has {len(mapped)} bytes, not {length}")
        if source is None and (mapped is None or path not in (SendPath.MMAP_WRITE, SendPath.ZEROCOPY)):
            raise ValueError(f"{path} needs a source file")
        run = _Run(path, self.sock, self.options.send_timeout_s)
        if length:
            self._PATHS[path](self, run, source, offset, length, mapped)
        return run.result()

    # ---- read + write -------------------------------------------------------------------------------------

    def _read_write(self, run: _Run, source: Source, offset: int, length: int, _mapped) -> None:
        buffer = self._copy_buffer
        if buffer is None:
            buffer = self._copy_buffer = _NativeBuffer(self.options.chunk_bytes, page_aligned=False)
        with _opened(source) as fd:
            _require_range(run, fd, offset, length)
            position, end = offset, offset + length
            while position < end:
                got = _pread(run, fd, buffer, min(len(buffer), end - position), position)
                if got == 0:
                    raise run.too_short(fd, position, end)
                run.send_all(buffer.view[:got])
                position += got

    # ---- mmap + write -------------------------------------------------------------------------------------

    def _mmap_write(self, run: _Run, source: Source, offset: int, length: int, mapped) -> None:
        chunk = self.options.chunk_bytes
        with _mapped_range(run, source, offset, length, mapped) as view:
            for start in range(0, length, chunk):
                run.send_all(view[start : start + chunk])

    # ---- sendfile -----------------------------------------------------------------------------------------

    def _sendfile(self, run: _Run, source: Source, offset: int, length: int, _mapped) -> None:
        socket_fd = self.sock.fileno()
        with _opened(source) as fd:
            _require_range(run, fd, offset, length)
            position, end = offset, offset + length
            while position < end:
                asked = min(self.options.chunk_bytes, end - position)
                sent = run.socket_call(SENDFILE, os.sendfile, socket_fd, fd, position, asked)
                if sent == 0:
                    raise run.too_short(fd, position, end)
                position += sent or 0

    # ---- splice -------------------------------------------------------------------------------------------

    def _splice(self, run: _Run, source: Source, offset: int, length: int, _mapped) -> None:
        if self._pipe is None:
            self._pipe = _Pipe(self.options.pipe_bytes)
        pipe = self._pipe
        try:
            with _opened(source) as fd:
                _require_range(run, fd, offset, length)
                position, end = offset, offset + length
                while position < end:
                    run.syscalls[SPLICE] += 1
                    filled = os.splice(
                        fd, pipe.write_fd, min(pipe.size, end - position), position, None, os.SPLICE_F_MOVE
                    )
                    if filled == 0:
                        raise run.too_short(fd, position, end)
                    position += filled
                    self._drain_pipe(run, pipe, filled, more_follows=position < end)
        except BaseException:
            self._discard_pipe()  # pages may be left in it, which would go out with the next transfer
            raise

    def _drain_pipe(self, run: _Run, pipe: _Pipe, pending: int, more_follows: bool) -> None:
        socket_fd = self.sock.fileno()
        # SPLICE_F_MORE is MSG_MORE: keep the segment open while more of the range is on its way.
        flags = os.SPLICE_F_MOVE | (os.SPLICE_F_MORE if more_follows else 0)
        while pending:
            sent = run.socket_call(SPLICE, os.splice, pipe.read_fd, socket_fd, pending, None, None, flags)
            pending -= sent or 0

    def _discard_pipe(self) -> None:
        if self._pipe is not None:
            self._pipe.close()
            self._pipe = None

    # ---- MSG_ZEROCOPY -------------------------------------------------------------------------------------

    def _zerocopy(self, run: _Run, source: Source | None, offset: int, length: int, mapped) -> None:
        self._enable_zerocopy()
        chunk = self.options.chunk_bytes
        completions = _ZeroCopyCompletions(run)
        with _mapped_range(run, source, offset, length, mapped) as view:
            position = 0
            while position < length:
                piece = view[position : position + chunk]
                try:
                    sent = run.socket_call(SENDTO, self.sock.send, piece, MSG_ZEROCOPY | socket.MSG_NOSIGNAL)
                except OSError as error:
                    if error.errno != errno.ENOBUFS:
                        raise
                    # Too many sends in flight (net.core.optmem_max): completions free the room.
                    completions.wait_for_progress()
                    continue
                if sent:  # each send that queued bytes takes a sequence number
                    completions.issued += 1
                    position += sent
            # The pages stay pinned and must not change until the kernel is done with them.
            completions.wait_for_all()

    def _enable_zerocopy(self) -> None:
        if self._zerocopy_enabled:
            return
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, SO_ZEROCOPY, 1)
        except OSError as error:
            raise PathUnsupported(
                f"SO_ZEROCOPY refused ({error.strerror}): MSG_ZEROCOPY needs Linux >= 4.14 and a TCP socket",
                path=SendPath.ZEROCOPY,
            ) from error
        self._zerocopy_enabled = True

    # ---- O_DIRECT read + write ----------------------------------------------------------------------------

    def _direct_read_write(self, run: _Run, source: Source, offset: int, length: int, _mapped) -> None:
        direct = self._direct_files.open(source)
        _require_range(run, direct.fd, offset, length)
        block = direct.block_size
        buffer = self._aligned_buffer(_round_up(self.options.chunk_bytes, block))
        end = offset + length
        position = offset - offset % block  # O_DIRECT reads whole blocks: round out, then trim
        while position < end:
            wanted = min(len(buffer), _round_up(end, block) - position)
            got = _pread(run, direct.fd, buffer, wanted, position, direct_block=block)
            first, last = max(offset - position, 0), min(got, end - position)
            if last <= first:
                raise run.too_short(direct.fd, position, end)
            run.send_all(buffer.view[first:last])
            position += got

    def _aligned_buffer(self, size: int) -> _NativeBuffer:
        buffer = self._direct_buffer
        if buffer is None or len(buffer) < size:
            if buffer is not None:
                buffer.close()
            buffer = self._direct_buffer = _NativeBuffer(_round_up(size, _PAGE_SIZE), page_aligned=True)
        return buffer

    _PATHS: ClassVar = MappingProxyType(
        {
            SendPath.READ_WRITE: _read_write,
            SendPath.MMAP_WRITE: _mmap_write,
            SendPath.SENDFILE: _sendfile,
            SendPath.SPLICE: _splice,
            SendPath.ZEROCOPY: _zerocopy,
            SendPath.DIRECT_READ_WRITE: _direct_read_write,
        }
    )


class _ZeroCopyCompletions:
    """Counts MSG_ZEROCOPY sends against the completion ranges the error queue reports.

    Every send call that queues data takes the socket's next 32-bit sequence number; a notification
    `sock_extended_err{ee_origin=SO_EE_ORIGIN_ZEROCOPY, ee_info=first, ee_data=last}` says those sends'
    pages are released. One transfer waits for all of its own before returning, so ranges never
    straddle transfers and counting is enough."""

    def __init__(self, run: _Run):
        self.run = run
        self.issued = 0
        self.completed = 0

    def wait_for_all(self) -> None:
        while self.completed < self.issued:
            self.wait_for_progress()

    def wait_for_progress(self) -> None:
        """Read completions until at least one arrives; TransferStalled after the send timeout."""
        deadline = time.monotonic() + self.run.send_timeout_s
        before = self.completed
        while self.completed == before:
            if self._read_notification():
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._wait_readable(remaining):
                raise self.run.stalled()

    def _read_notification(self) -> bool:
        run = self.run
        run.syscalls[RECVMSG] += 1
        try:
            _data, ancillary, _flags, _address = run.sock.recvmsg(
                0, _ERROR_QUEUE_ANCILLARY_BYTES, socket.MSG_ERRQUEUE
            )
        except BlockingIOError:  # nothing queued: the error queue never blocks
            return False
        run.notifications += 1
        for level, kind, data in ancillary:
            if (level, kind) in ((socket.SOL_IP, IP_RECVERR), (socket.IPPROTO_IPV6, IPV6_RECVERR)):
                self._account(data)
        return True

    def _account(self, data: bytes) -> None:
        if len(data) < SOCK_EXTENDED_ERR.size:
            return
        ee_errno, origin, _type, code, _pad, first, last = SOCK_EXTENDED_ERR.unpack_from(data)
        if origin != SO_EE_ORIGIN_ZEROCOPY or ee_errno != 0:
            return
        self.completed += ((last - first) & _SEQUENCE_MASK) + 1
        self.run.copied |= bool(code & SO_EE_CODE_ZEROCOPY_COPIED)

    def _wait_readable(self, timeout_s: float) -> bool:
        """Wait for the error queue (POLLERR is always reported, so no events are asked for)."""
        poller = select.poll()
        poller.register(self.run.sock.fileno(), 0)
        self.run.syscalls[POLL] += 1
        events = poller.poll(max(1, int(timeout_s * 1000)))
        if events and events[0][1] & select.POLLHUP:
            raise PeerClosed(
                f"zerocopy: the peer closed the connection before {self.issued - self.completed} "
                "send(s) completed",
                path=SendPath.ZEROCOPY,
                bytes_sent=self.run.sent,
            )
        return bool(events)


# ---- helpers ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _opened(source: Source) -> Iterator[int]:
    """The descriptor of `source`: the caller's own, or one opened here for the transfer's duration."""
    if isinstance(source, int):
        yield source
        return
    fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    try:
        yield fd
    finally:
        os.close(fd)


def _require_range(run: _Run, fd: int, offset: int, length: int) -> None:
    # Checked up front: touching a mapping past the end of its file is SIGBUS, which kills the process.
    size = os.fstat(fd).st_size
    if offset + length > size:
        raise RangeOutsideFile(
            f"{run.path}: [{offset}, {offset + length}) is past the end of a {size}-byte file",
            path=run.path,
        )


@contextlib.contextmanager
def _mapped_range(
    run: _Run, source: Source | None, offset: int, length: int, mapped: memoryview | None
) -> Iterator[memoryview]:
    """The range as a read-only view: the caller's mapping, or the range mapped here read-only."""
    if mapped is not None:
        yield mapped
        return
    assert source is not None
    with _opened(source) as fd:
        _require_range(run, fd, offset, length)
        start = offset - offset % mmap.ALLOCATIONGRANULARITY
        mapping = mmap.mmap(fd, offset + length - start, prot=mmap.PROT_READ, offset=start)
    try:
        with memoryview(mapping) as whole, whole[offset - start :] as view:
            yield view
    finally:
        with contextlib.suppress(BufferError):  # a slice still referenced: unmapped when it goes
            mapping.close()


def _pread(
    run: _Run, fd: int, buffer: _NativeBuffer, count: int, offset: int, direct_block: int | None = None
) -> int:
    """pread64 into `buffer`, retrying EINTR (each try is a system call, so each is counted).
    `direct_block`: the alignment used on an O_DIRECT descriptor, for the error when it is refused."""
    while True:
        run.syscalls[PREAD] += 1
        got = _libc.pread(fd, buffer.address, count, offset)
        if got >= 0:
            return got
        code = ctypes.get_errno()
        if code == errno.EINTR:
            continue
        if direct_block is not None and code == errno.EINVAL:
            raise DirectIOUnsupported(
                f"O_DIRECT read of {count} bytes at {offset} refused with {direct_block}-byte alignment",
                path=run.path,
                bytes_sent=run.sent,
            )
        raise OSError(code, f"pread: {os.strerror(code)}")


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


# ---- one-shot functions ------------------------------------------------------------------------------


def transfer(
    path: SendPath | str,
    sock: socket.socket,
    source: Source | None,
    offset: int,
    length: int,
    *,
    mapped: memoryview | None = None,
    options: TransferOptions | None = None,
) -> TransferResult:
    """Send one byte range by `path` on a socket (a Sender for one transfer; reuse a Sender for many)."""
    with Sender(sock, options) as sender:
        return sender.send(path, source, offset, length, mapped=mapped)


def read_write(sock, source, offset, length, *, options=None) -> TransferResult:
    """pread64 into a reused buffer, then send: two copies, two system calls per chunk."""
    return transfer(SendPath.READ_WRITE, sock, source, offset, length, options=options)


def mmap_write(sock, source, offset, length, *, mapped=None, options=None) -> TransferResult:
    """send from the segment's mapping (RocketMQ's way): one copy, one system call per chunk."""
    return transfer(SendPath.MMAP_WRITE, sock, source, offset, length, mapped=mapped, options=options)


def sendfile(sock, source, offset, length, *, options=None) -> TransferResult:
    """sendfile (Kafka's way): page references, no copy by the CPU, one system call per chunk."""
    return transfer(SendPath.SENDFILE, sock, source, offset, length, options=options)


def splice(sock, source, offset, length, *, options=None) -> TransferResult:
    """splice file→pipe→socket: sendfile's mechanism, two system calls per pipeful."""
    return transfer(SendPath.SPLICE, sock, source, offset, length, options=options)


def zerocopy(sock, source, offset, length, *, mapped=None, options=None) -> TransferResult:
    """send(MSG_ZEROCOPY) from the mapping, then wait for the completions on the error queue."""
    return transfer(SendPath.ZEROCOPY, sock, source, offset, length, mapped=mapped, options=options)


def direct_read_write(sock, source, offset, length, *, options=None) -> TransferResult:
    """O_DIRECT pread64 of whole blocks into an aligned buffer, trimmed, then send: no page cache."""
    return transfer(SendPath.DIRECT_READ_WRITE, sock, source, offset, length, options=options)
