"""TCP bytes per process without eBPF and without root: the kernel's per-socket counters (sock_diag), summed
over the sockets a process holds.

A consumer that reads its socket with recv(2) shows nothing in /proc/PID/io: rchar counts read(2), pread(2),
readv(2) and sendfile(2), on files and sockets alike, but not recv/recvmsg, send/sendmsg or splice. The bytes
a process moves over TCP are in each socket's tcp_info instead (`ss -ti` shows them): tcpi_bytes_received
(RFC 4898 ThruOctetsReceived) and tcpi_bytes_acked (bytes sent and acknowledged by the peer). They are read
with one NETLINK_SOCK_DIAG dump per address family, which any user may make, and matched to a process by the
socket inodes its /proc/PID/fd links name ("socket:[INODE]"), which only the process's owner (or a holder of
CAP_SYS_PTRACE) may read.

The counters belong to sockets, not processes: a socket closed between two samples takes its last bytes with
it, and a socket shared by two processes (inherited over fork) counts for both.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from probes.errors import AccessDenied, CapabilityMissing
from probes.procfs import PROC_ROOT, ProcessGone

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3
INET_DIAG_INFO = 2
# Every TCP state but LISTEN (no data moves) and TIME_WAIT (no socket inode left): 1 << TCP_* (linux/tcp.h).
_TCP_LISTEN, _TCP_TIME_WAIT = 10, 6
DATA_STATES = 0xFFF & ~(1 << _TCP_LISTEN) & ~(1 << _TCP_TIME_WAIT)

_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_REQUEST = struct.Struct("=BBBxI48x")  # inet_diag_req_v2: family, protocol, ext, pad, states, sockid (any)
_MESSAGE_INODE = struct.Struct("=I")  # inet_diag_msg.idiag_inode, at offset 68 of the 72-byte message
_MESSAGE_BYTES, _INODE_OFFSET = 72, 68
_RTATTR = struct.Struct("=HH")  # len, type
# struct tcp_info (linux/tcp.h): 8 one-byte fields, 24 __u32, pacing_rate, max_pacing_rate, then these two
# (since Linux 4.1; the layout only ever grows at the end).
_BYTES_ACKED_RECEIVED = struct.Struct("=QQ")
_BYTES_ACKED_OFFSET = 8 + 24 * 4 + 2 * 8
_RECEIVE_BUFFER = 1 << 20


@dataclass(frozen=True)
class TcpSocketBytes:
    """One TCP socket's byte counters since it was created."""

    inode: int
    received_bytes: int  # tcpi_bytes_received: payload received (and in order)
    acked_bytes: int  # tcpi_bytes_acked: payload sent and acknowledged by the peer


def tcp_socket_bytes(inodes: Collection[int] | None = None) -> dict[int, TcpSocketBytes]:
    """The TCP sockets of this network namespace that can carry data, by inode: all of them, or those of
    `inodes` (the others are skipped unparsed: a busy broker's host has thousands).

    Raises CapabilityMissing when the kernel has no sock_diag for TCP (CONFIG_INET_DIAG off)."""
    found: dict[int, TcpSocketBytes] = {}
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG) as channel:
            for family in (socket.AF_INET, socket.AF_INET6):
                for counters in _dump(channel, family, inodes):
                    found[counters.inode] = counters
    except OSError as error:
        raise CapabilityMissing(
            f"the kernel's sock_diag interface for TCP could not be read ({error.strerror or error})",
            fix="a kernel built with CONFIG_INET_DIAG and CONFIG_INET_TCP_DIAG (modprobe tcp_diag)",
        ) from None
    return found


def _dump(channel: socket.socket, family: int, inodes: Collection[int] | None) -> Iterator[TcpSocketBytes]:
    request = _REQUEST.pack(family, socket.IPPROTO_TCP, 1 << (INET_DIAG_INFO - 1), DATA_STATES)
    header = _NLMSGHDR.pack(
        _NLMSGHDR.size + len(request), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, 1, 0
    )
    channel.send(header + request)
    while True:
        data = channel.recv(_RECEIVE_BUFFER)
        for kind, start, end in _messages(data):
            if kind == NLMSG_DONE:
                return
            if kind == NLMSG_ERROR:
                code = -struct.unpack_from("=i", data, start)[0]
                raise OSError(code, os.strerror(code))
            if end - start < _MESSAGE_BYTES:
                continue
            (inode,) = _MESSAGE_INODE.unpack_from(data, start + _INODE_OFFSET)
            if inode and (inodes is None or inode in inodes):
                counters = _socket_counters(inode, data, start + _MESSAGE_BYTES, end)
                if counters is not None:
                    yield counters


def _messages(data: bytes) -> Iterator[tuple[int, int, int]]:
    """(type, start, end) of each netlink message's payload in `data`."""
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, kind, _flags, _seq, _pid = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size:
            return
        yield kind, offset + _NLMSGHDR.size, min(offset + length, len(data))
        offset += (length + 3) & ~3


def _socket_counters(inode: int, data: bytes, offset: int, end: int) -> TcpSocketBytes | None:
    """The byte counters in the INET_DIAG_INFO attribute among data[offset:end]; None without a tcp_info
    long enough to hold them (Linux < 4.1)."""
    while offset + _RTATTR.size <= end:
        length, kind = _RTATTR.unpack_from(data, offset)
        if length < _RTATTR.size:
            return None
        if kind == INET_DIAG_INFO:
            if length - _RTATTR.size < _BYTES_ACKED_OFFSET + _BYTES_ACKED_RECEIVED.size:
                return None
            acked, received = _BYTES_ACKED_RECEIVED.unpack_from(
                data, offset + _RTATTR.size + _BYTES_ACKED_OFFSET
            )
            return TcpSocketBytes(inode, received, acked)
        offset += (length + 3) & ~3
    return None


def socket_inodes(pid: int, proc_root: Path = PROC_ROOT) -> frozenset[int]:
    """The inodes of the sockets process `pid` holds open (its /proc/PID/fd links "socket:[INODE]").

    Raises ProcessGone, or AccessDenied when the links are not ours to read."""
    directory = proc_root / str(pid) / "fd"
    try:
        entries = os.scandir(directory)
    except FileNotFoundError:
        raise ProcessGone(pid, proc_root) from None
    except PermissionError:
        raise AccessDenied(
            f"permission denied: {directory} is readable by the process's owner or root (CAP_SYS_PTRACE)"
        ) from None
    with entries:
        return frozenset(_inodes(entries))


def _inodes(entries: Iterable[os.DirEntry]) -> Iterator[int]:
    for entry in entries:
        try:
            target = os.readlink(entry.path)
        except OSError as error:
            if error.errno in (errno.ENOENT, errno.ESRCH):
                continue  # closed while we looked
            raise
        if target.startswith("socket:[") and target.endswith("]"):
            yield int(target[len("socket:[") : -1])
