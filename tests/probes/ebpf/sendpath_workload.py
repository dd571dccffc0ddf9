"""Sends a file over loopback TCP by one send path, for the sendpath probe's tests (and by hand).

    python tests/probes/ebpf/sendpath_workload.py PATH FILE [--chunk-bytes N] [--header-bytes N] [--vectors N]

PATH is one of sendfile, read+write, mmap+write, splice. The script forks a receiver process that drains
the connection on 127.0.0.1, connects to it, prepares the path (opens FILE; maps it for mmap+write; makes
the pipe for splice), then prints one line

    ready SENDER_PID RECEIVER_PID

and waits for SIGUSR1 before it sends (`kill -USR1 SENDER_PID`). Everything is set up before that line and
nothing is written after the signal, so a tracer attached in between sees the sending and nothing else:
the chosen path's syscalls, in CHUNK-byte steps, so their counts are the same on every run. The wait is
sigtimedwait(), not a read, so it adds no read-like syscall to what is traced.

--header-bytes N frames every chunk as a server's response is framed: N bytes built in the heap go before
it, in the same call where the path has one that takes several buffers (read+write: sendmsg of the header
and the read buffer; mmap+write: writev of the header and the mapped chunk), else in a send() of their own
(sendfile, splice: as the pull server sends its protocol header before the body). --vectors N (mmap+write)
sends each chunk as one writev of N equal slices of the mapping.

The receiver prints "received BYTES" when the sender has closed the connection. The sender exits 0 once
the receiver has taken every byte, 1 otherwise. Both end by themselves: the receiver on end of stream (or
after WAIT_LIMIT_S without a connection or data), the sender when the file is sent, or WAIT_LIMIT_S after
"ready" if no signal came.
"""

from __future__ import annotations

import argparse
import mmap
import os
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

PATHS = ("sendfile", "read+write", "mmap+write", "splice")
DEFAULT_CHUNK_BYTES = 64 * 1024
WAIT_LIMIT_S = 120
LOOPBACK = "127.0.0.1"

Sender = Callable[[socket.socket], None]


@dataclass(frozen=True)
class Framing:
    header_bytes: int = 0
    vectors: int = 1

    def header(self, sequence: int) -> bytes:
        """A header built now, in the heap (as a server builds each response's)."""
        return sequence.to_bytes(8, "big").ljust(self.header_bytes, b"h")[: self.header_bytes]


def main() -> int:
    arguments = _arguments()
    fd = os.open(arguments.file, os.O_RDONLY)
    size = os.fstat(fd).st_size
    framing = Framing(arguments.header_bytes, arguments.vectors)
    expected = size + -(-size // arguments.chunk_bytes) * framing.header_bytes  # a header per chunk
    listener = socket.create_server((LOOPBACK, 0))
    receiver_pid = os.fork()
    if receiver_pid == 0:
        received = _drain(listener, arguments.chunk_bytes)
        print(f"received {received}", flush=True)
        os._exit(0 if received == expected else 1)
    listener_address = listener.getsockname()
    listener.close()
    connection = socket.create_connection(listener_address)
    send = PREPARERS[arguments.path](fd, size, arguments.chunk_bytes, framing)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})  # a signal sent right after "ready" waits
    print(f"ready {os.getpid()} {receiver_pid}", flush=True)
    if signal.sigtimedwait({signal.SIGUSR1}, WAIT_LIMIT_S) is not None:
        send(connection)
    connection.close()
    _pid, status = os.waitpid(receiver_pid, 0)
    return 0 if os.waitstatus_to_exitcode(status) == 0 else 1


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", choices=PATHS)
    parser.add_argument("file")
    parser.add_argument("--chunk-bytes", type=int, default=DEFAULT_CHUNK_BYTES)
    parser.add_argument("--header-bytes", type=int, default=0)
    parser.add_argument("--vectors", type=int, default=1)
    return parser.parse_args()


def _drain(listener: socket.socket, chunk_bytes: int) -> int:
    # Timeouts here only (the receiver is not what is traced): it ends even if the sender never comes.
    listener.settimeout(WAIT_LIMIT_S)
    connection, _peer = listener.accept()
    connection.settimeout(WAIT_LIMIT_S)
    buffer = bytearray(chunk_bytes)
    received = 0
    with connection:
        while count := connection.recv_into(buffer):
            received += count
    return received


# Each preparer does its setup now (before "ready") and returns the function that sends.


def send_buffers(sock: socket.socket, buffers: Sequence[memoryview], call: Callable[[list], int]) -> None:
    """Every byte of `buffers`, by `call` (sendmsg or writev of the buffers left) until all are sent."""
    left = [view for view in buffers if len(view)]
    while left:
        sent = call(left)
        while left and sent >= len(left[0]):
            sent -= len(left.pop(0))
        if sent:
            left[0] = left[0][sent:]


def prepare_sendfile(fd: int, size: int, chunk_bytes: int, framing: Framing) -> Sender:
    def send(sock: socket.socket) -> None:
        for start in range(0, size, chunk_bytes):
            if framing.header_bytes:
                sock.sendall(framing.header(start))
            offset, end = start, min(start + chunk_bytes, size)
            while offset < end:
                offset += os.sendfile(sock.fileno(), fd, offset, end - offset)

    return send


def prepare_read_write(fd: int, size: int, chunk_bytes: int, framing: Framing) -> Sender:
    buffer = bytearray(chunk_bytes)
    view = memoryview(buffer)
    source = os.fdopen(fd, "rb", buffering=0)  # unbuffered: each readinto() is one read(2) into `buffer`

    def send(sock: socket.socket) -> None:
        sent = 0
        while sent < size:
            count = source.readinto(buffer)
            if framing.header_bytes:
                header = memoryview(framing.header(sent))
                send_buffers(sock, (header, view[:count]), sock.sendmsg)
            else:
                sock.sendall(view[:count])
            sent += count

    return send


def prepare_mmap_write(fd: int, size: int, chunk_bytes: int, framing: Framing) -> Sender:
    view = memoryview(mmap.mmap(fd, size, prot=mmap.PROT_READ))

    def send(sock: socket.socket) -> None:
        for offset in range(0, size, chunk_bytes):
            chunk = view[offset : offset + chunk_bytes]  # a memoryview slice copies nothing
            if framing.header_bytes or framing.vectors > 1:
                slices = _slices(chunk, framing.vectors)
                header = [memoryview(framing.header(offset))] if framing.header_bytes else []
                send_buffers(sock, header + slices, lambda left: os.writev(sock.fileno(), left))
            else:
                sock.sendall(chunk)

    return send


def _slices(chunk: memoryview, count: int) -> list[memoryview]:
    step = -(-len(chunk) // count)
    return [chunk[start : start + step] for start in range(0, len(chunk), step)]


def prepare_splice(fd: int, size: int, chunk_bytes: int, framing: Framing) -> Sender:
    pipe_out, pipe_in = os.pipe()

    def send(sock: socket.socket) -> None:
        for start in range(0, size, chunk_bytes):
            if framing.header_bytes:
                sock.sendall(framing.header(start))
            offset, end = start, min(start + chunk_bytes, size)
            while offset < end:
                in_pipe = os.splice(fd, pipe_in, end - offset, offset_src=offset)
                offset += in_pipe
                while in_pipe:
                    in_pipe -= os.splice(pipe_out, sock.fileno(), in_pipe)

    return send


PREPARERS: dict[str, Callable[[int, int, int, Framing], Sender]] = {
    "sendfile": prepare_sendfile,
    "read+write": prepare_read_write,
    "mmap+write": prepare_mmap_write,
    "splice": prepare_splice,
}

if __name__ == "__main__":
    sys.exit(main())
