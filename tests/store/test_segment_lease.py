"""Another process truncating a segment under a reader of the store (issue 13 C1).

A reader (tests/store/lease_reader.py, a process of its own: it is the one that would die of SIGBUS) reads the
first, sealed segment while this test truncates it: it gets a clear StoreError, the truncation waits only
milliseconds, and a view held at the moment of the break stays readable until released. Which protection
applies to each file is checked against the kernel's own account: /proc/locks (the lease), /proc/PID/maps
(read-only mapping) and /proc/PID/fdinfo (read-only descriptor). A lease refused (EAGAIN, EACCES as nobody)
says so; an open for writing that changes nothing revokes the segment and it is served again afterwards.
The send paths and the pull server turn a send from a truncated mapping (EFAULT) into an error for that
consumer.
"""

from __future__ import annotations

import json
import mmap
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from lease_reader import CONFIG, SEGMENT_BYTES, TOPIC
from support import AS_NOBODY, REPO, skip_or_fail

from mqinspect.render.machine import to_jsonable
from store import codec
from store import mapped_file as mapped_file_module
from store.config import StoreConfig
from store.lease import (
    LEASE_SIGNAL,
    LeaseAttempt,
    LeaseWatcher,
    ProtectionState,
    lease_break_time_s,
    release_lease,
)
from store.mapped_file import MappedFile, SegmentRevokedError
from store.mapped_file_queue import MappedFileQueue
from store.message_store import MessageStore
from store.pull_client import ProtocolError, PullClient
from store.pull_server import PullServer, PullServerConfig
from store.transfer import RangeOutsideFile, Sender, SendPath
from store.workload import ProduceSpec, message_body, produce

READER = Path(__file__).with_name("lease_reader.py")
WAIT_LIMIT_S = 20.0
SIGBUS_STATUS = -7  # subprocess's returncode for a child killed by SIGBUS


# ---- ground truth from the kernel -----------------------------------------------------------------------


def leases_on(path: Path) -> list[tuple[str, str, int]]:
    """(state, type, pid) of each lease /proc/locks lists on `path`'s inode: ACTIVE READ while held,
    BREAKING UNLCK while another process waits for it."""
    status = os.stat(path)
    device = f"{os.major(status.st_dev):02x}:{os.minor(status.st_dev):02x}:{status.st_ino}"
    found = []
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if "->" in fields or "LEASE" not in fields:
            continue  # a waiter's line, or not a lease
        at = fields.index("LEASE")
        state, kind, pid, where = fields[at + 1 : at + 5]
        if where == device:
            found.append((state, kind, int(pid)))
    return found


def wait_for(condition: Callable[[], bool], what: str, limit_s: float = WAIT_LIMIT_S) -> None:
    deadline = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit_s:g} s waiting until {what}")
        time.sleep(0.01)


def mappings_of(path: Path, pid: int | str = "self") -> list[str]:
    """The permission column of each of `pid`'s mappings of `path` (/proc/PID/maps)."""
    return [
        line.split()[1]
        for line in Path(f"/proc/{pid}/maps").read_text().splitlines()
        if line.endswith(str(path))
    ]


def access_mode(fd: int) -> int:
    """O_RDONLY, O_WRONLY or O_RDWR, as /proc/self/fdinfo reports the descriptor's flags (octal)."""
    for line in Path(f"/proc/self/fdinfo/{fd}").read_text().splitlines():
        if line.startswith("flags:"):
            return int(line.split()[1], 8) & os.O_ACCMODE
    raise AssertionError(f"no flags for descriptor {fd}")


class Truncator:
    """Another process that truncates a file to 4 KiB and says how long the call blocked."""

    SCRIPT = (
        "import os, sys, time\n"
        "began = time.monotonic()\n"
        "os.truncate(sys.argv[1], 4096)\n"
        "print(time.monotonic() - began, flush=True)\n"
    )

    def __init__(self, path: Path):
        self.process = subprocess.Popen(
            [sys.executable, "-c", self.SCRIPT, str(path)], stdout=subprocess.PIPE, text=True
        )

    def waited_s(self) -> float:
        out, _ = self.process.communicate(timeout=120)
        assert self.process.returncode == 0
        return float(out)


# ---- the reader in another process ----------------------------------------------------------------------


class Reader:
    def __init__(self, directory: Path, how: str):
        self.process = subprocess.Popen(
            [sys.executable, str(READER), str(directory), how],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        ready = self.line()
        self.pid = ready["pid"]
        self.first_segment = Path(ready["segments"][0])

    def line(self) -> dict:
        text = self.process.stdout.readline()
        assert text, f"the reader ended (exit status {self.process.wait(timeout=60)})"
        return json.loads(text)

    def tell(self) -> None:
        self.process.stdin.write("go\n")
        self.process.stdin.flush()

    def outcome(self) -> tuple[int, dict | None]:
        """Exit status and last line. Read through the same buffered stream as `line` (communicate() would
        read the pipe underneath it and miss what the buffer already holds)."""
        self.process.stdin.close()
        lines = [json.loads(text) for text in self.process.stdout.read().splitlines() if text.strip()]
        return self.process.wait(timeout=120), (lines[-1] if lines else None)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def reader(tmp_path: Path) -> Iterator[Callable[[str], Reader]]:
    started: list[Reader] = []

    def start(how: str) -> Reader:
        started.append(Reader(tmp_path / "store", how))
        return started[-1]

    yield start
    for one in started:
        one.close()


def held_by(reader: Reader) -> bool:
    return ("ACTIVE", "READ", reader.pid) in leases_on(reader.first_segment)


@pytest.mark.parametrize("how", ["get_messages", "look_message_by_offset"])
def test_a_reader_gets_a_store_error_not_sigbus_when_another_process_truncates_a_sealed_segment(reader, how):
    one = reader(how)
    try:
        wait_for(lambda: held_by(one), "the reader holds a read lease on its first, full segment")
        leased = True
    except AssertionError:
        leased = False  # truncate anyway: what happens then is the point of the test
    waited_s = Truncator(one.first_segment).waited_s()
    status, last = one.outcome()
    assert status != SIGBUS_STATUS, f"the reader died of SIGBUS ({how} on a segment truncated under it)"
    assert leased, "the reader never held a lease on its sealed segment (/proc/locks)"
    assert status == 0 and last is not None
    assert last["error"] == SegmentRevokedError.__name__, last
    assert str(one.first_segment) in last["message"] and "no longer served" in last["message"]
    assert os.stat(one.first_segment).st_size == 4096  # the truncation did happen, once released
    # It waited for the reader to drop its views, not for the kernel's lease-break-time (45 s here).
    assert waited_s < lease_break_time_s() / 2, waited_s


def test_a_view_held_when_the_lease_breaks_stays_readable_until_it_is_released(reader):
    one = reader("hold_view")
    wait_for(lambda: held_by(one), "the reader holds a read lease on its first segment")
    assert one.line()["holding"] > 0
    truncator = Truncator(one.first_segment)
    wait_for(
        lambda: ("BREAKING", "UNLCK", one.pid) in leases_on(one.first_segment),
        "the truncation is held back by the reader's breaking lease",
    )
    assert os.stat(one.first_segment).st_size == SEGMENT_BYTES and truncator.process.poll() is None
    one.tell()  # the reader now copies every byte of the views it kept
    assert one.line()["copied"] > 0
    assert truncator.waited_s() < lease_break_time_s() / 2
    status, last = one.outcome()
    assert status == 0 and last["error"] == SegmentRevokedError.__name__
    assert os.stat(one.first_segment).st_size == 4096


# ---- which protection applies to each file --------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Iterator[MessageStore]:
    with MessageStore(tmp_path / "store", CONFIG) as opened:
        produce(opened, ProduceSpec(TOPIC, count=3 * SEGMENT_BYTES // 4000, body_size_bytes=4000))
        opened.flush()
        yield opened


def states(store: MessageStore) -> list[ProtectionState]:
    return [protection.state for protection in store.commit_log.mapped_file_queue.protections()]


def test_full_segments_are_sealed_read_only_and_leased_and_the_active_one_says_it_is_unprotected(store):
    queue = store.commit_log.mapped_file_queue
    wait_for(lambda: states(store)[:2] == [ProtectionState.LEASED] * 2, "both full segments are leased")
    sealed, active = queue.mapped_files[0], queue.mapped_files[-1]
    assert sealed.is_sealed and not active.is_sealed
    assert ("ACTIVE", "READ", os.getpid()) in leases_on(sealed.path)
    assert mappings_of(sealed.path) == ["r--s"]  # the writable mapping is gone, not merely unused
    assert access_mode(sealed.fileno()) == os.O_RDONLY
    assert mappings_of(active.path) == ["rw-s"] and access_mode(active.fileno()) == os.O_RDWR
    assert leases_on(active.path) == []
    protection = queue.protections()[-1]
    assert protection.state is ProtectionState.WRITABLE and protection.detail.startswith("unprotected")
    assert list(to_jsonable(protection)) == ["path", "state", "detail", "lease_breaks", "last_release_s"]
    # Still served, by the read-only mapping: the bytes are the ones the writer put there.
    first = store.get_messages(TOPIC, 0, 0, 1).messages[0]
    with first.data as data:
        assert bytes(codec.decode_record(bytes(data)).body) == message_body(TOPIC, 0, 4000)
    assert bytes(store.look_message_by_offset(0).body) == message_body(TOPIC, 0, 4000)


def test_a_view_of_the_writable_mapping_holds_the_lease_back_until_it_is_released(tmp_path: Path):
    """A reader's view from before sealing keeps the file open for writing (its mapping is writable), which
    the kernel refuses a read lease for: the file waits, sealed, and is leased once the view goes."""
    queue = MappedFileQueue(tmp_path, SEGMENT_BYTES)
    full = queue.get_last_file(0)
    assert full.append(b"\x07" * SEGMENT_BYTES) == 0
    queue.flush(0)
    view = full.select(0, 100)
    try:
        queue.start_protecting()
        protection = full.protection
        assert protection.state is ProtectionState.SEALING and "1 view(s)" in protection.detail
        assert sorted(mappings_of(full.path)) == ["r--s", "rw-s"] and leases_on(full.path) == []
        assert bytes(full.select(0, 4)) == b"\x07" * 4  # new views come from the read-only mapping
        view.release()
        wait_for(lambda: full.protection.state is ProtectionState.LEASED, "the file is leased")
        assert mappings_of(full.path) == ["r--s"]
    finally:
        view.release()
        queue.close()


def lease_attempts_on(segment: MappedFile, monkeypatch) -> list[LeaseAttempt]:
    """Every lease the store tries to take on `segment` from now on, as the watcher answered it."""
    watcher = LeaseWatcher.shared()
    take, attempts = watcher.take, []

    def recorded(leased_file, fd: int) -> LeaseAttempt:
        attempt = take(leased_file, fd)
        if leased_file is segment:
            attempts.append(attempt)
        return attempt

    monkeypatch.setattr(watcher, "take", recorded)
    return attempts


@pytest.mark.parametrize("stall_s", [0.0, 0.5], ids=["as_it_runs", "watcher_stalled_after_the_release"])
def test_an_open_for_writing_that_changes_nothing_revokes_the_segment_then_it_is_served_again(
    store, monkeypatch, stall_s: float
):
    """The writer's open returns the moment the lease is released, and the watcher thread may lose the CPU
    right then (on 2 loaded cores it did, 1 run in 32): the stall makes that happen every time, and the
    protection read at once must still show the release."""
    wait_for(lambda: states(store)[0] is ProtectionState.LEASED, "the first segment is leased")
    segment = store.commit_log.mapped_file_queue.mapped_files[0]
    before = store.look_message_by_offset(0)
    if stall_s:
        monkeypatch.setattr(mapped_file_module, "release_lease", stalling_after(release_lease, stall_s))
    attempts = lease_attempts_on(segment, monkeypatch)
    writer = subprocess.Popen(
        [sys.executable, "-c", "import os, sys; fd = os.open(sys.argv[1], os.O_RDWR); print(1, flush=True); "
         "sys.stdin.readline()", str(segment.path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert writer.stdout.readline()  # its open returned: the store released the lease
        protection = segment.protection
        assert protection.state is ProtectionState.REVOKED and protection.lease_breaks == 1
        assert protection.last_release_s is not None and protection.last_release_s < lease_break_time_s()
        with pytest.raises(SegmentRevokedError, match="no longer served"):
            store.get_messages(TOPIC, 0, 0, 1)
        # The retry (every RETRY_INTERVAL_S) is refused while the writer has the file open.
        wait_for(lambda: attempts, "the store tries the lease again")
        assert not attempts[0].held and "EAGAIN" in attempts[0].refusal
        assert segment.protection.state is ProtectionState.REVOKED
    finally:
        writer.communicate("\n", timeout=30)
    wait_for(lambda: segment.protection.state is ProtectionState.LEASED, "the segment is leased again")
    assert attempts[-1].held
    assert store.look_message_by_offset(0) == before


def stalling_after(release: Callable[[int], None], stall_s: float) -> Callable[[int], None]:
    def release_then_stall(fd: int) -> None:
        release(fd)
        time.sleep(stall_s)  # the thread that released loses the CPU before its next line

    return release_then_stall


def test_a_segment_truncated_while_unleased_is_never_served_again(tmp_path: Path):
    """A file shrunk before its lease is taken (read-only here, and leased once the truncation is over)."""
    segments = make_segments(tmp_path, 2)
    queue = MappedFileQueue(tmp_path, SEGMENT_BYTES, read_only=True)
    queue.load()
    try:
        os.truncate(segments[0], 4096)  # nothing has touched its pages: no SIGBUS to fear yet
        queue.start_protecting()
        first = queue.mapped_files[0]
        wait_for(lambda: first.protection.state is ProtectionState.REVOKED and first.protection.detail.find(
            "truncated it to 4,096") > 0, "the shrunk file is revoked")  # fmt: skip
        with pytest.raises(SegmentRevokedError, match="truncated it to 4,096"):
            first.select(0, 100)
        assert queue.protections()[1].state is ProtectionState.LEASED
    finally:
        queue.close()
    assert leases_on(segments[1]) == []  # released with the close


def make_segments(directory: Path, count: int) -> list[Path]:
    paths = []
    for number in range(count):
        path = directory / f"{number * SEGMENT_BYTES:020d}"
        path.write_bytes(bytes([number + 1]) * SEGMENT_BYTES)
        paths.append(path)
    return paths


def test_a_lease_refused_while_another_process_writes_the_file_is_taken_once_it_closes(tmp_path: Path):
    segments = make_segments(tmp_path, 1)
    writer = subprocess.Popen(
        [sys.executable, "-c", "import os, sys; fd = os.open(sys.argv[1], os.O_RDWR); print(1, flush=True); "
         "sys.stdin.readline()", str(segments[0])],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    queue = MappedFileQueue(tmp_path, SEGMENT_BYTES, read_only=True)
    try:
        assert writer.stdout.readline()
        queue.load()
        queue.start_protecting()
        protection = queue.protections()[0]
        assert protection.state is ProtectionState.UNLEASED and "EAGAIN" in protection.detail
        writer.communicate("\n", timeout=30)
        wait_for(lambda: queue.protections()[0].state is ProtectionState.LEASED, "the lease is taken")
        assert ("ACTIVE", "READ", os.getpid()) in leases_on(segments[0])
    finally:
        if writer.poll() is None:
            writer.kill()
        queue.close()


def test_without_ownership_or_cap_lease_the_file_says_it_is_unprotected_and_why():
    if os.geteuid() != 0:
        skip_or_fail("needs root: the files must belong to another user than the reader (nobody)")
    with tempfile.TemporaryDirectory(prefix="mqinspect-lease-") as name:
        directory = Path(name)
        directory.chmod(0o755)
        make_segments(directory, 1)
        script = (
            "import json, sys; from store.mapped_file_queue import MappedFileQueue\n"
            "queue = MappedFileQueue(sys.argv[1], int(sys.argv[2]), read_only=True); queue.load()\n"
            "queue.start_protecting(); p = queue.protections()[0]\n"
            "print(json.dumps([p.state, p.detail])); queue.close()\n"
        )
        done = subprocess.run(
            [*AS_NOBODY, sys.executable, "-c", script, name, str(SEGMENT_BYTES)],
            capture_output=True, text=True, cwd=REPO, timeout=60,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    state, detail = json.loads(done.stdout)
    assert state == ProtectionState.UNLEASED and "EACCES" in detail and "CAP_LEASE" in detail


def test_the_lease_signal_reaches_only_the_watcher_thread_and_never_kills_the_process(store):
    """Every thread but the watcher leaves LEASE_SIGNAL unblocked: were the signal sent to the process, the
    default action of a real-time signal would kill it. Breaks land on the watcher alone."""
    wait_for(lambda: states(store)[0] is ProtectionState.LEASED, "the first segment is leased")
    blocked = [
        int(line.split()[1], 16)
        for line in Path(f"/proc/{os.getpid()}/status").read_text().splitlines()
        if line.startswith("SigBlk:")
    ]
    assert not blocked[0] & (1 << (LEASE_SIGNAL - 1))  # this (main) thread does not block it
    Truncator(store.commit_log.mapped_file_queue.mapped_files[0].path).waited_s()
    wait_for(lambda: states(store)[0] is ProtectionState.REVOKED, "the first segment is revoked")


# ---- sends from a truncated mapping --------------------------------------------------------------------


@pytest.fixture
def connected() -> Iterator[tuple[socket.socket, Callable[[], int]]]:
    """A loopback TCP pair: the sending socket, and a function that drains the other end and counts."""
    listener = socket.create_server(("127.0.0.1", 0))
    sender = socket.create_connection(listener.getsockname())
    receiver, _ = listener.accept()
    received = []
    drain = threading.Thread(target=lambda: received.append(_drain(receiver)), daemon=True)
    drain.start()

    def count() -> int:
        sender.shutdown(socket.SHUT_WR)
        drain.join(30)
        return received[0]

    yield sender, count
    for sock in (sender, receiver, listener):
        sock.close()


def _drain(sock: socket.socket) -> int:
    total = 0
    while chunk := sock.recv(1 << 20):
        total += len(chunk)
    return total


@pytest.mark.parametrize("path", [SendPath.MMAP_WRITE, SendPath.ZEROCOPY])
def test_a_send_from_a_truncated_mapping_is_an_error_saying_so(tmp_path: Path, connected, path: SendPath):
    sock, received = connected
    (segment,) = make_segments(tmp_path, 1)
    with open(segment, "rb") as source:
        mapping = mmap.mmap(source.fileno(), SEGMENT_BYTES, prot=mmap.PROT_READ)
    os.truncate(segment, 4096)
    with Sender(sock) as sender, pytest.raises(RangeOutsideFile) as raised:
        sender.send(path, None, 0, SEGMENT_BYTES, mapped=memoryview(mapping))
    assert "EFAULT" in str(raised.value) and "truncated" in str(raised.value)
    # What went out (none, or part of the first 4 KiB: the kernel copies in its own pieces, and a piece
    # that faults is not sent) is what the error says went out.
    assert raised.value.bytes_sent == received() <= 4096


def test_the_pull_server_ends_only_that_consumer_when_its_segment_is_truncated(tmp_path: Path):
    """The active segment cannot be leased (the store writes it): a send from its truncated mapping fails with
    EFAULT, the consumer gets an error, the server counts it and serves the next request."""
    config = StoreConfig(mapped_file_size_commitlog=256 * 1024, consume_queue_entries_per_file=1000,
                         max_hash_slot_num=64, max_index_num=8192)  # fmt: skip
    with MessageStore(tmp_path / "store", config) as opened:
        produce(opened, ProduceSpec(TOPIC, count=20, body_size_bytes=1000))
        opened.flush()
        assert opened.wait_dispatched(opened.commit_log.max_offset, WAIT_LIMIT_S)
        active = opened.commit_log.mapped_file_queue.last_file
        with PullServer(opened, PullServerConfig(default_path=SendPath.MMAP_WRITE)) as server:
            os.truncate(active.path, 4096)  # the store is idle: only the pull touches the mapping now
            with PullClient(server.address) as client, pytest.raises(ProtocolError):
                client.pull(TOPIC, 0, 0, max_count=20)
            wait_for(lambda: server.counters().truncated_sources == 1, "the server counted the truncation")
            with PullClient(server.address) as client:
                assert client.query_offset("group", TOPIC, 0) is None  # the server still serves
