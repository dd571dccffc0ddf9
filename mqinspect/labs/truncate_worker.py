"""The two child processes of `mqinspect lab truncate`: a sender that serves a file one way while the file is
truncated under it, and the truncating process.

    python mqinspect/labs/truncate_worker.py sender WAY FILE PORT CHUNK_BYTES MAX_SEND_S
    python mqinspect/labs/truncate_worker.py truncator

Each speaks one JSON object per line on stdout, and reads a line on stdin where noted:

    sender     {"event": "ready", "pid"}  (file open, mapped, leased, connected to PORT) ... go ...
               {"event": "sending"}  after its first chunk went out
               {"event": "ended", "ending", "bytes_sent", "detail", ...}  unless a signal killed it
    truncator  {"event": "ready", "pid"}, then for each {"path", "size_bytes"} line:
               {"event": "truncated", "waited_s"}  how long truncate(2) blocked

One sender per run (it may die); one truncating process serves the whole lab, unless the lab had to kill it.

The sender passes over the file again and again, a chunk per call, until the truncation stops it or
MAX_SEND_S pass. How it ended is for the lab to classify: an errno, a short count (then 0 at the new end of
the file), a clean stop on the lease-break signal, or death by a signal, which the lab sees only in the exit
status (so nothing here may catch it). A leased sender releases the lease at once on the signal: the
truncating process waits for that. The ways are in mqinspect.labs.truncate_model.

SIGINT is ignored (Ctrl-C is the lab's); a child ends when its work ends or its stdin closes.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import mmap
import os
import signal
import socket
import sys
import time
from collections.abc import Callable

from store.lease import F_SETLEASE, F_SETSIG, LEASE_SIGNAL

LOOPBACK = "127.0.0.1"


def say(**fields: object) -> None:
    os.write(sys.stdout.fileno(), json.dumps(fields).encode() + b"\n")


def wait_for_go() -> None:
    if not sys.stdin.readline():
        sys.exit(0)  # the lab went away


class Stop(Exception):
    """How the sender ended, when it lived to say so."""

    def __init__(self, ending: str, detail: str, **fields: object):
        super().__init__(detail)
        self.ending = ending
        self.detail = detail
        self.fields = fields


class Sender:
    """One way of serving FILE to the socket, a chunk per call, counting what went out."""

    def __init__(self, way: str, path: str, sock: socket.socket, chunk: int):
        self.way = way
        self.sock = sock
        self.chunk = chunk
        self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self.size = os.fstat(self.fd).st_size
        self.sent = 0  # bytes the calls said went out
        self.lease_broken = False
        self.mapping: mmap.mmap | None = None
        self.view: memoryview | None = None
        if way.endswith("_mapping") or way.endswith("_mapping_leased"):
            self.mapping = mmap.mmap(self.fd, self.size, prot=mmap.PROT_READ)
            self.view = memoryview(self.mapping)
        if way.endswith("_leased"):
            self._take_lease()
        self.buffer = bytearray(chunk)
        self.pipe = os.pipe() if way == "splice" else None
        self.send_chunk: Callable[[int, int], int] = getattr(self, f"_{way.removesuffix('_leased')}")

    # ---- the lease -------------------------------------------------------------------------------------

    def _take_lease(self) -> None:
        # Single-threaded: the process owns the lease, and a Python handler (main thread) sees the signal.
        signal.signal(LEASE_SIGNAL, self._lease_breaking)
        fcntl.fcntl(self.fd, F_SETSIG, LEASE_SIGNAL)
        fcntl.fcntl(self.fd, F_SETLEASE, fcntl.F_RDLCK)

    def _lease_breaking(self, _signum: int, _frame: object) -> None:
        self.lease_broken = True

    def release(self) -> None:
        """Drop every view, unmap, release the lease: the truncating process goes on."""
        if self.view is not None:
            self.view.release()
        if self.mapping is not None:
            with contextlib.suppress(BufferError):  # a slice still alive: it goes with the process
                self.mapping.close()
        fcntl.fcntl(self.fd, F_SETLEASE, fcntl.F_UNLCK)

    # ---- one chunk per way: bytes that went out (fewer than asked is a short count) ----------------------

    def _read_mapping(self, position: int, count: int) -> int:
        self.buffer[:count] = self.view[position : position + count]  # a user-space read of the mapping
        return self._write_all(memoryview(self.buffer)[:count])

    def _write_mapping(self, position: int, count: int) -> int:
        return os.write(self.sock.fileno(), self.view[position : position + count])

    def _send_mapping(self, position: int, count: int) -> int:
        return self.sock.send(self.view[position : position + count])

    def _sendfile(self, position: int, count: int) -> int:
        return os.sendfile(self.sock.fileno(), self.fd, position, count)

    def _splice(self, position: int, count: int) -> int:
        """file → pipe → socket, a pipeful at a time: short only where the file ends."""
        read_end, write_end = self.pipe
        done = 0
        while done < count:
            filled = os.splice(self.fd, write_end, count - done, offset_src=position + done)
            if filled == 0:
                break
            moved = 0
            while moved < filled:
                moved += os.splice(read_end, self.sock.fileno(), filled - moved)
            done += filled
        return done

    def _pread_write(self, position: int, count: int) -> int:
        got = os.preadv(self.fd, [memoryview(self.buffer)[:count]], position)
        return self._write_all(memoryview(self.buffer)[:got]) if got else 0

    def _write_all(self, data: memoryview) -> int:
        done = 0
        while done < len(data):
            done += os.write(self.sock.fileno(), data[done:])
        return done

    # ---- the loop ----------------------------------------------------------------------------------------

    def run(self, max_send_s: float) -> Stop:
        deadline = time.monotonic() + max_send_s
        position, short = 0, ""
        while time.monotonic() < deadline:
            count = min(self.chunk, self.size - position)
            try:
                went = self.send_chunk(position, count)
            except OSError as error:
                name = errno.errorcode.get(error.errno, str(error.errno))
                detail = f"{name} ({error.strerror}) at offset {position:,}{short}"
                return Stop("errno", detail, errno_name=name)
            if self.sent == 0 and went:
                say(event="sending")
            self.sent += went
            if self.lease_broken:
                detail = (
                    f"stopped on the lease-break signal; its last call returned {went:,} of {count:,} bytes"
                )
                return Stop("clean_stop", detail, interrupted=went < count)
            if went == 0:
                return Stop("short_count", f"0 bytes at offset {position:,} (the new end of the file){short}")
            if went < count:  # a blocking call returns short only where something stopped it: look again
                short = f", after a short count of {went:,} of {count:,} bytes at offset {position:,}"
            position = (position + went) % self.size
        return Stop("undisturbed", f"sent for {max_send_s:g} s without noticing a truncation")


def run_sender(way: str, path: str, port: int, chunk: int, max_send_s: float) -> int:
    sock = socket.create_connection((LOOPBACK, port))
    sender = Sender(way, path, sock, chunk)
    say(event="ready", pid=os.getpid())
    wait_for_go()
    stop = sender.run(max_send_s)
    if way.endswith("_leased"):
        sender.release()
    sock.close()  # the receiver's end of stream
    say(event="ended", ending=stop.ending, bytes_sent=sender.sent, detail=stop.detail, **stop.fields)
    return 0


def run_truncator() -> int:
    """Truncates each file named on stdin, {"path", "size_bytes"} a line, timing truncate(2) (which a read
    lease holds back), until stdin ends."""
    say(event="ready", pid=os.getpid())
    for line in sys.stdin:
        command = json.loads(line)
        began = time.monotonic()
        os.truncate(command["path"], command["size_bytes"])
        say(event="truncated", waited_s=round(time.monotonic() - began, 6))
    return 0


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if argv[:1] == ["sender"] and len(argv) == 6:
        _role, way, path, port, chunk, max_send_s = argv
        return run_sender(way, path, int(port), int(chunk), float(max_send_s))
    if argv == ["truncator"]:
        return run_truncator()
    print(__doc__.split("\n\n")[1], file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
