"""The two processes of `mqinspect lab sendpath`, each measuring itself: a sender that serves a byte range of
a file by one send path (store.transfer), and a receiver that drains a loopback TCP connection.

    python -m mqinspect.labs.sendpath_worker sender|receiver

The lab talks to each over its stdin and stdout, one JSON object per line: a command in, a report out. The
receiver first says {"port": N}: the 127.0.0.1 port it listens on. Commands:

    sender    {"op": "send", "path": P, "source": FILE, "offset": N, "length": N, "port": N, "chunk_bytes": N}
    receiver  {"op": "drain", "buffer_bytes": N}: accept one connection, read it to the end

Each report has the process's own getrusage(RUSAGE_SELF) over its part only (user and system CPU seconds,
voluntary and involuntary context switches), CLOCK_MONOTONIC stamps the lab can compare across the two
processes, and the system calls made, by strace's name. A sender that cannot use the path here says
{"unsupported": why}; any other failure {"error": why}.

Why separate processes: getrusage and the eBPF probe both count per process, so the sender's cost and the
receiver's come apart. Why getrusage and not psutil's cpu_times() and num_ctx_switches(): those read
/proc/self/stat and /proc/self/status, reads the sendpath probe would count as copies of the very transfer
being measured, and status's context switches are the main thread's alone; getrusage(RUSAGE_SELF) is one
system call, over every thread. Why descriptors 0-2 only for the protocol: the lab leaves them out of the
copies it counts. Why everything is imported before the first command: an import reads files (read(2) on
descriptors above 2), which would land in the copies of the transfer that happened to trigger it. SIGINT is
ignored: Ctrl-C in the terminal is the lab's to handle; a worker ends when its stdin closes.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import sys
import time
from collections.abc import Callable

from store.transfer import PathUnsupported, Sender, SendPath, TransferError, TransferOptions

LOOPBACK = "127.0.0.1"
ACCEPT_TIMEOUT_S = 60.0  # a sender that never connects must not keep the receiver waiting for ever
RECVFROM = "recvfrom"  # socket.recv_into is one recvfrom(2) per call on a blocking socket


def _usage() -> resource.struct_rusage:
    return resource.getrusage(resource.RUSAGE_SELF)


def _usage_between(before: resource.struct_rusage, after: resource.struct_rusage) -> dict:
    return {
        "user_s": round(after.ru_utime - before.ru_utime, 6),
        "sys_s": round(after.ru_stime - before.ru_stime, 6),
        "voluntary_ctx_switches": after.ru_nvcsw - before.ru_nvcsw,
        "involuntary_ctx_switches": after.ru_nivcsw - before.ru_nivcsw,
    }


def send(command: dict) -> dict:
    path = SendPath(command["path"])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.connect((LOOPBACK, command["port"]))  # a numeric address: no resolver, no file read
        with Sender(sock, TransferOptions(chunk_bytes=command["chunk_bytes"])) as sender:
            try:
                sender.prepare(path, command["source"])  # O_DIRECT opened, SO_ZEROCOPY set: before timing
            except PathUnsupported as error:
                return {"unsupported": str(error)}
            before, started = _usage(), time.monotonic()
            result = sender.send(path, command["source"], command["offset"], command["length"])
            finished, after = time.monotonic(), _usage()
    except (TransferError, OSError) as error:
        return {"error": f"{path}: {error}"}
    finally:
        sock.close()  # the receiver's end of stream
    return {
        "bytes_sent": result.bytes_sent,
        "syscalls": dict(result.syscalls),
        "started_monotonic_s": started,
        "finished_monotonic_s": finished,
        "zerocopy_fell_back_to_copy": result.zerocopy_fell_back_to_copy,
        "zerocopy_notifications": result.zerocopy_notifications,
        "usage": _usage_between(before, after),
    }


def drain(listener: socket.socket, command: dict) -> dict:
    try:
        connection, _peer = listener.accept()  # blocking, as Python makes it: no timeout is inherited
    except TimeoutError:
        return {"error": f"receiver: no connection within {ACCEPT_TIMEOUT_S:g} s"}
    buffer = bytearray(command["buffer_bytes"])
    received = calls = 0
    with connection:
        before = _usage()
        while True:
            calls += 1
            count = connection.recv_into(buffer)
            if not count:
                break
            received += count
        finished, after = time.monotonic(), _usage()
    return {
        "bytes_received": received,
        "syscalls": {RECVFROM: calls},
        "finished_monotonic_s": finished,
        "usage": _usage_between(before, after),
    }


def _serve(handle: Callable[[dict], dict]) -> None:
    for line in sys.stdin.buffer:
        report = handle(json.loads(line))
        os.write(sys.stdout.fileno(), json.dumps(report).encode() + b"\n")


def main(role: str) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if role == "sender":
        _serve(send)
        return 0
    if role == "receiver":
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind((LOOPBACK, 0))
        listener.listen(1)
        listener.settimeout(ACCEPT_TIMEOUT_S)
        os.write(sys.stdout.fileno(), json.dumps({"port": listener.getsockname()[1]}).encode() + b"\n")
        _serve(lambda command: drain(listener, command))
        return 0
    print(
        f"usage: python -m {__spec__.name if __spec__ else 'sendpath_worker'} sender|receiver",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else ""))
