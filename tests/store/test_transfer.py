"""The send paths of store.transfer over real loopback sockets: every path delivers exactly the byte range;
the system calls each reports are the ones strace counts; O_DIRECT leaves the page cache as it found it
while read+write fills it; MSG_ZEROCOPY says it was copied after all (loopback always copies); and a peer
that stops reading makes a transfer fail with TransferStalled instead of hanging."""

from __future__ import annotations

import contextlib
import hashlib
import json
import mmap
import os
import random
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from support import skip_or_fail, strace_calls

from probes.residency.cachestat import cachestat
from store.mapped_file import MappedFile
from store.transfer import (
    DirectIOUnsupported,
    PeerClosed,
    RangeOutsideFile,
    SendPath,
    TransferOptions,
    TransferStalled,
    direct_read_write,
    read_write,
    transfer,
)

MiB = 1 << 20
SEGMENT_BYTES = 20 * MiB
RANGE_OFFSET = 12_345  # deliberately unaligned: mmap and O_DIRECT must round out and trim
RANGE_BYTES = 16 * MiB
CHUNK_BYTES = 256 * 1024
STRACED = "read,pread64,write,sendto,sendmsg,sendfile,splice,recvmsg,poll"
# The system calls each path may make: anything else means a path took a detour.
EXPECTED_SYSCALLS = {
    SendPath.READ_WRITE: {"pread64", "sendto"},
    SendPath.MMAP_WRITE: {"sendto"},
    SendPath.SENDFILE: {"sendfile"},
    SendPath.SPLICE: {"splice"},
    SendPath.ZEROCOPY: {"sendto", "recvmsg", "poll"},
    SendPath.DIRECT_READ_WRITE: {"pread64", "sendto"},
}
WAIT_LIMIT_S = 30


@pytest.fixture(scope="module")
def segment(tmp_path_factory) -> Path:
    """A CommitLog-named segment of known (seeded random) content, on the tmp filesystem (ext4 here)."""
    path = tmp_path_factory.mktemp("transfer") / "00000000000000000000"
    path.write_bytes(random.Random(20261122).randbytes(SEGMENT_BYTES))
    return path


def expected_digest(segment: Path, offset: int = RANGE_OFFSET, length: int = RANGE_BYTES) -> str:
    with open(segment, "rb") as source:
        source.seek(offset)
        return hashlib.sha256(source.read(length)).hexdigest()


def connected_pair(receive_buffer_bytes: int | None = None) -> tuple[socket.socket, socket.socket]:
    """(sending socket, receiving socket), connected over 127.0.0.1."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        if receive_buffer_bytes is not None:  # inherited by the accepted socket, before the window opens
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer_bytes)
        sender = socket.create_connection(listener.getsockname(), timeout=WAIT_LIMIT_S)
        receiver, _address = listener.accept()
    receiver.settimeout(WAIT_LIMIT_S)
    return sender, receiver


class Receiver:
    """Drains a socket on a thread until end of stream, hashing what it gets."""

    def __init__(self, sock: socket.socket, stop_after_bytes: int | None = None):
        self.sock = sock
        self.stop_after_bytes = stop_after_bytes
        self.received = 0
        self._digest = hashlib.sha256()
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        buffer = memoryview(bytearray(MiB))
        with self.sock:
            while got := self.sock.recv_into(buffer):
                self._digest.update(buffer[:got])
                self.received += got
                if self.stop_after_bytes is not None and self.received >= self.stop_after_bytes:
                    self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
                    return  # closing with unread data resets the connection

    def finish(self) -> str:
        self._thread.join(WAIT_LIMIT_S)
        assert not self._thread.is_alive(), "the receiver never saw the end of the stream"
        return self._digest.hexdigest()


def send_and_receive(path: SendPath, segment: Path, **options):
    sender, receiver_sock = connected_pair()
    receiver = Receiver(receiver_sock)
    with sender:
        result = transfer(path, sender, segment, RANGE_OFFSET, RANGE_BYTES, **options)
        assert sender.gettimeout() == WAIT_LIMIT_S, "the caller's socket timeout was not restored"
    return result, receiver.finish(), receiver.received


@pytest.mark.parametrize("path", list(SendPath))
def test_each_path_delivers_exactly_the_range(segment: Path, path: SendPath):
    result, digest, received = send_and_receive(path, segment, options=TransferOptions(CHUNK_BYTES))
    assert (result.path, result.bytes_sent, received) == (path, RANGE_BYTES, RANGE_BYTES)
    assert digest == expected_digest(segment)
    assert set(result.syscalls) <= EXPECTED_SYSCALLS[path]
    chunks = RANGE_BYTES // CHUNK_BYTES
    if path is SendPath.READ_WRITE:
        assert result.syscalls["pread64"] == chunks  # a regular file never reads short
    elif path is SendPath.DIRECT_READ_WRITE:
        assert result.syscalls["pread64"] == chunks + 1  # rounding out to blocks adds one read
    elif path is SendPath.SENDFILE:
        assert result.syscalls["sendfile"] >= chunks
    elif path is SendPath.SPLICE:  # into the pipe and out of it, once per pipeful at least
        assert result.syscalls["splice"] >= 2 * (RANGE_BYTES // MiB)


@pytest.mark.parametrize("path", [SendPath.MMAP_WRITE, SendPath.ZEROCOPY])
def test_the_mapping_paths_send_from_an_existing_mapped_file(segment: Path, path: SendPath):
    """The pull server hands them a view of the MappedFile's own mapping instead of a file to map."""
    sender, receiver_sock = connected_pair()
    receiver = Receiver(receiver_sock)
    with MappedFile.open(segment, SEGMENT_BYTES, read_only=True) as mapped_file, sender:
        mapped_file.set_positions(SEGMENT_BYTES)
        with mapped_file.select(RANGE_OFFSET, RANGE_BYTES) as view:
            result = transfer(path, sender, None, RANGE_OFFSET, RANGE_BYTES, mapped=view)
    assert result.bytes_sent == RANGE_BYTES
    assert receiver.finish() == expected_digest(segment)


def test_zerocopy_says_loopback_copied_the_bytes_and_still_delivers_them(segment: Path):
    result, digest, _received = send_and_receive(SendPath.ZEROCOPY, segment)
    assert digest == expected_digest(segment)
    assert result.zerocopy_fell_back_to_copy is True
    assert result.zerocopy_notifications >= 1
    assert result.syscalls["recvmsg"] >= result.zerocopy_notifications


# ---- system calls against strace ------------------------------------------------------------------------


def traced_transfer(path: SendPath, segment: Path, output: Path) -> tuple[dict[str, int], dict[str, int]]:
    """Run one transfer in a forked child under `strace -c -f -p`, attached before the child starts sending
    (it waits for SIGUSR1), so that only the transfer's calls are counted. Returns (what the transfer
    reported, what strace counted)."""
    sender, receiver_sock = connected_pair()
    report = mmap.mmap(-1, 4096)  # shared with the child: it reports without a write() strace would see
    previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})  # blocked before the fork
    child = os.fork()
    if child == 0:
        _child_transfer(path, segment, sender, receiver_sock, report)
    signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)
    sender.close()
    receiver = Receiver(receiver_sock)
    tracer = subprocess.Popen(
        ["strace", "-c", "-f", "-e", f"trace={STRACED}", "-o", str(output), "-p", str(child)],
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_until_traced(child)
        os.kill(child, signal.SIGUSR1)
        assert _wait_for_exit(child) == 0, "the traced transfer failed"
        tracer.wait(WAIT_LIMIT_S)
    finally:
        _reap(child, tracer)
    assert receiver.finish() == expected_digest(segment)
    reported = json.loads(report[: report.find(b"\0")].decode())
    return reported, strace_calls(output.read_text())


def _child_transfer(path, segment, sender, receiver_sock, report) -> None:
    status = 1
    try:
        receiver_sock.close()
        if signal.sigtimedwait({signal.SIGUSR1}, WAIT_LIMIT_S) is not None:
            result = transfer(path, sender, segment, RANGE_OFFSET, RANGE_BYTES)
            encoded = json.dumps(dict(result.syscalls)).encode()
            report[: len(encoded)] = encoded
            status = 0
    finally:
        os._exit(status)  # never return into pytest from a forked child


def _wait_until_traced(pid: int) -> None:
    deadline = time.monotonic() + WAIT_LIMIT_S
    while time.monotonic() < deadline:
        status = Path(f"/proc/{pid}/status").read_text()
        tracer = next(line.split()[1] for line in status.splitlines() if line.startswith("TracerPid:"))
        if tracer != "0":
            return
        time.sleep(0.01)
    raise AssertionError("strace did not attach")


def _wait_for_exit(pid: int) -> int:
    deadline = time.monotonic() + WAIT_LIMIT_S
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    raise AssertionError("the traced transfer did not finish")


def _reap(child: int, tracer: subprocess.Popen) -> None:
    for kill in (lambda: os.kill(child, signal.SIGKILL), tracer.kill):
        with contextlib.suppress(ProcessLookupError):
            kill()
    tracer.wait(WAIT_LIMIT_S)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(child, os.WNOHANG)


@pytest.mark.requires_root
@pytest.mark.parametrize("path", list(SendPath))
def test_the_reported_system_calls_are_the_ones_strace_counts(segment: Path, path: SendPath, tmp_path: Path):
    if shutil.which("strace") is None:
        skip_or_fail("needs strace (apt-get install strace)")
    reported, counted = traced_transfer(path, segment, tmp_path / "strace.txt")
    assert reported == counted
    assert set(counted) <= EXPECTED_SYSCALLS[path]


# ---- the page cache -------------------------------------------------------------------------------------


def cached_pages(path: Path) -> int:
    fd = os.open(path, os.O_RDONLY)
    try:
        return cachestat(fd, RANGE_OFFSET, RANGE_BYTES).cached_pages
    finally:
        os.close(fd)


def evicted_copy(segment: Path, directory: Path) -> Path:
    copy = directory / segment.name
    shutil.copyfile(segment, copy)
    fd = os.open(copy, os.O_RDONLY)
    try:
        os.fsync(fd)  # dirty pages cannot be dropped
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    if cached_pages(copy):
        skip_or_fail(f"{directory} keeps pages in the page cache after POSIX_FADV_DONTNEED (tmpfs?)")
    return copy


def test_o_direct_leaves_the_page_cache_alone_and_read_write_fills_it(segment: Path, tmp_path: Path):
    cold = evicted_copy(segment, tmp_path)
    want = expected_digest(segment)  # from the original: reading the cold copy would cache it
    assert send_range(direct_read_write, cold) == want
    assert cached_pages(cold) == 0
    assert send_range(read_write, cold) == want
    assert cached_pages(cold) >= RANGE_BYTES // mmap.PAGESIZE


def send_range(send, source: Path) -> str:
    sender, receiver_sock = connected_pair()
    receiver = Receiver(receiver_sock)
    with sender:
        send(sender, source, RANGE_OFFSET, RANGE_BYTES)
    return receiver.finish()


def test_a_filesystem_that_refuses_o_direct_is_a_clear_error():
    # procfs refuses O_DIRECT (tmpfs did too before Linux 6.6); the error must name the cause.
    sender, receiver_sock = connected_pair()
    with sender, receiver_sock, pytest.raises(DirectIOUnsupported, match="O_DIRECT"):
        direct_read_write(sender, "/proc/self/status", 0, 16)


# ---- failures ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", list(SendPath))
def test_a_receiver_that_stops_reading_stalls_within_the_timeout(segment: Path, path: SendPath):
    timeout_s = 0.5
    sender, receiver_sock = connected_pair(receive_buffer_bytes=64 * 1024)
    sender.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 256 * 1024)
    began = time.monotonic()
    with sender, receiver_sock, pytest.raises(TransferStalled) as stalled:
        transfer(
            path,
            sender,
            segment,
            RANGE_OFFSET,
            RANGE_BYTES,
            options=TransferOptions(send_timeout_s=timeout_s),
        )
    elapsed = time.monotonic() - began
    assert elapsed < 2 * timeout_s + 1.0
    assert 0 < stalled.value.bytes_sent < RANGE_BYTES
    assert stalled.value.path is path


@pytest.mark.parametrize("path", [SendPath.READ_WRITE, SendPath.SENDFILE, SendPath.SPLICE])
def test_a_receiver_that_goes_away_mid_transfer_is_reported(segment: Path, path: SendPath):
    sender, receiver_sock = connected_pair()
    receiver = Receiver(receiver_sock, stop_after_bytes=MiB)
    with sender, pytest.raises(PeerClosed):
        transfer(path, sender, segment, RANGE_OFFSET, RANGE_BYTES)
    receiver.finish()


@pytest.mark.parametrize("path", list(SendPath))
def test_a_range_past_the_end_of_the_file_is_refused_before_sending(segment: Path, path: SendPath):
    # For the mapping paths this is what stands between a short file and SIGBUS.
    sender, receiver_sock = connected_pair()
    with sender, receiver_sock, pytest.raises(RangeOutsideFile):
        transfer(path, sender, segment, SEGMENT_BYTES - 100, 200)
