"""The sendpath probe. Without root: the path classification rule, descriptor naming from /proc/PID/fd, socket
addresses, one interval assembled from canned map contents on this process's real descriptors, the summary's
re-classification (--print-bpf of every probe: test_trace_cli.py). With BPF: sendpath_workload.py sends 64 MiB
over loopback by each path while the probe and `strace -c -f -p` watch the same sender, and the bytes per
direction and the syscall counts are held against the path model and strace."""

from __future__ import annotations

import contextlib
import ctypes
import io
import mmap
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
from rich.console import Console
from support import strace_counts, strace_summary, trace_following
from typer.testing import CliRunner

from mqinspect.demo.settings import DemoSettings
from mqinspect.demo.workload import DemoWorkload
from mqinspect.render.trace import VIEWS
from probes.ebpf.inodes import (
    PAGE_SHIFT,
    UNKNOWN_TARGET,
    FdTarget,
    FileId,
    _socket_address,
    parse_address_space,
    read_fd_target,
)
from probes.ebpf.sendpath import (
    BEYOND_IOVECS,
    GROUP_PAGES,
    GROUP_SHIFT,
    MAPPING_CHANGED,
    MAPS_UNREADABLE,
    MAX_IOVECS,
    MEMORY,
    NO_FD,
    ORIGIN_ADDRESS,
    ORIGIN_NONE,
    ORIGIN_READ,
    ORIGIN_UNSEEN,
    OUTSIDE_MAPPINGS,
    PATHS,
    SYSCALLS,
    SendpathProbe,
    SendpathSnapshot,
    SyscallCount,
    _process_row,
    _snapshot,
    combine_snapshots,
    maps_a_file,
    socket_bytes_as,
)
from probes.ebpf.session import TraceSession
from probes.ebpf.tally import Tally
from store.config import MiB

REPO = Path(__file__).resolve().parents[3]
WORKLOAD = Path(__file__).with_name("sendpath_workload.py")
TRACE_SENDPATH = [sys.executable, "-m", "mqinspect", "trace", "sendpath"]
FILE_BYTES = 64 << 20
CHUNK_BYTES = 64 << 10
# strace names the x86_64 sendfile syscall "sendfile"; its tracepoint is sys_enter_sendfile64.
STRACE_NAMES = {"sendfile": "sendfile64"}
runner = CliRunner()


# --- the evidence rule -------------------------------------------------------------------------------------

SEGMENT = FdTarget("file", "commitlog/00000000000000000000", in_store=True)
OTHER_FILE = FdTarget("file", "/etc/broker.conf")
MAPPED_SEGMENT = FdTarget("mapping", "commitlog/00000000000000000000 (mapped)", in_store=True)
MAPPED_OTHER = FdTarget("mapping", "/usr/lib/libc.so.6 (mapped)")
SOCKET = FdTarget("socket", "TCP 127.0.0.1:5000 → 127.0.0.1:40112")
PIPE = FdTarget("pipe", "pipe:[7] (write end)", write_only=True)


@pytest.mark.parametrize(
    ("syscall", "target", "source", "store", "expected"),
    [
        ("sendto", SOCKET, SEGMENT, True, "read+write"),  # the thread read the segment into the buffer
        ("sendto", SOCKET, OTHER_FILE, False, "read+write"),  # without --store any regular file counts
        ("sendto", SOCKET, OTHER_FILE, True, "other"),  # with --store only the store's files
        ("writev", SOCKET, MAPPED_SEGMENT, True, "mmap+write"),  # the buffer lies in a segment's mapping
        ("sendmsg", SOCKET, MAPPED_OTHER, False, "mmap+write"),
        ("sendmsg", SOCKET, MAPPED_OTHER, True, "other"),
        ("sendto", SOCKET, MEMORY, True, "other"),  # a protocol header built in the heap
        ("sendto", SOCKET, SOCKET, False, "other"),  # bytes a socket delivered, sent on
        ("write", SOCKET, None, False, "other"),
        ("sendto", SOCKET, MAPS_UNREADABLE, True, "unresolved"),
        ("sendto", SOCKET, UNKNOWN_TARGET, False, "unresolved"),  # read from a descriptor never named
        ("sendfile64", SOCKET, SEGMENT, True, "sendfile"),
        ("splice", SOCKET, PIPE, True, "splice"),
        ("splice", PIPE, SEGMENT, True, None),  # into a pipe: not delivered to a socket yet
        ("write", PIPE, SEGMENT, False, None),
        ("recvfrom", SOCKET, None, False, None),
    ],
)
def test_a_path_is_named_only_with_its_evidence(syscall, target, source, store, expected):
    assert socket_bytes_as(syscall, target, source, store) == expected


@pytest.mark.parametrize(
    ("line", "is_file"),
    [
        (
            "7f0000000000-7f0004000000 rw-s 00000000 08:01 1234 /data/store/commitlog/00000000000000000000",
            True,
        ),
        ("7f0000000000-7f0000001000 r--p 00000000 08:01 99 /usr/lib/libc.so.6", True),
        ("7f0000000000-7f0000001000 rw-s 00000000 00:1a 5 /dev/shm/ring", True),
        ("7f0000000000-7f0000001000 rw-s 00000000 00:01 77 /dev/zero (deleted)", False),  # shared anon
        ("7f0000000000-7f0000001000 rw-s 00000000 00:01 78 /SYSV00000000 (deleted)", False),
        ("7f0000000000-7f0000001000 rw-s 00000000 00:05 3 /dev/dri/card0", False),
        ("55d000000000-55d000021000 rw-p 00000000 00:00 0 [heap]", False),
        ("7f0000000000-7f0000001000 rw-p 00000000 00:00 0", False),
    ],
)
def test_a_mapping_counts_as_a_file_only_with_an_inode_and_a_file_path(line, is_file):
    (mapping,) = parse_address_space(1, line).mappings
    assert maps_a_file(mapping) is is_file


# --- descriptors ------------------------------------------------------------------------------------------


def test_descriptors_are_named_by_kind_and_a_closed_one_is_unknown(tmp_path: Path):
    path = tmp_path / "segment"
    path.write_bytes(b"x")
    pid = os.getpid()
    pipe_out, pipe_in = os.pipe()
    left, right = socket.socketpair()
    with path.open("rb") as opened, left, right:
        file = read_fd_target(pid, opened.fileno(), {})
        assert (file.kind, file.name, file.in_store) == ("file", str(path), False)
        assert read_fd_target(pid, left.fileno(), {}).kind == "socket"
        reading, writing = read_fd_target(pid, pipe_out, {}), read_fd_target(pid, pipe_in, {})
        assert (reading.kind, reading.write_only, reading.name.endswith("(read end)")) == (
            "pipe",
            False,
            True,
        )
        assert (writing.kind, writing.write_only, writing.name.endswith("(write end)")) == (
            "pipe",
            True,
            True,
        )
        os.close(pipe_out)
        os.close(pipe_in)
        assert read_fd_target(pid, pipe_in, {}).kind == "unknown"


def test_proc_net_addresses_read_as_ip_and_port():
    assert _socket_address("0100007F:1F90") == "127.0.0.1:8080"
    assert _socket_address("00000000000000000000000001000000:0016") == "[::1]:22"
    assert _socket_address("0000000000000000FFFF00000100007F:1F90") == "127.0.0.1:8080"


# --- one interval from canned map contents -----------------------------------------------------------------


class CannedProgram:
    """Stands in for a LoadedProgram: read() answers from canned map contents."""

    def __init__(self, maps: dict[str, list], attached: tuple[str, ...] = ()):
        self.maps = maps
        self.attached = attached
        self.deleted: list[tuple[str, tuple]] = []

    def read(self, name):
        return list(self.maps.get(name, []))

    def take(self, name, key):
        self.deleted.append((name, key))

    def delete(self, name, key):
        self.deleted.append((name, key))


def _traffic(
    syscall: str,
    fd: int,
    calls: int,
    moved: int,
    *,
    source_fd: int = NO_FD,
    origin: int = ORIGIN_NONE,
    address: int | None = None,
    faults: int = 0,
    pid: int | None = None,
    file: FileId | None = None,
    to_socket: bool = False,
):
    """One mqi_traffic record; with `address`, an ORIGIN_ADDRESS record of a buffer starting there; with
    `file`, the file whose pages the call (or the read that filled the buffer) read, as the kernel said."""
    page_bytes = [0] * GROUP_PAGES
    group = 0
    if address is not None:
        origin = ORIGIN_ADDRESS
        group = address >> (PAGE_SHIFT + GROUP_SHIFT)
        page_bytes[(address >> PAGE_SHIFT) % GROUP_PAGES] = moved
    key = SimpleNamespace(
        tgid=pid or os.getpid(),
        syscall=SYSCALLS.index(syscall),
        fd=fd,
        source_fd=source_fd,
        origin=origin,
        dev=file.kernel_dev if file else 0,
        ino=file.inode if file else 0,
        group=group,
        to_socket=int(to_socket),
    )
    value = SimpleNamespace(calls=calls, errors=0, bytes=moved, faults=faults, page_bytes=page_bytes)
    return key, value


def _sockets(sent: int, copied: int = 0, passes: int = 0):
    value = SimpleNamespace(sent_bytes=sent, copied_to_user_bytes=copied, tcp_sendmsg_passes=passes)
    return SimpleNamespace(value=os.getpid()), value


def address_of(buffer) -> int:
    """Where a writable buffer (a bytearray, a mapping) lies in this process's memory."""
    return ctypes.addressof(ctypes.c_char.from_buffer(buffer))


@contextlib.contextmanager
def mapped_file(path: Path, size: int = 1 << 20) -> Iterator[mmap.mmap]:
    path.write_bytes(b"\0" * size)
    with path.open("r+b") as opened, mmap.mmap(opened.fileno(), size) as mapping:
        yield mapping


def test_an_interval_names_each_socket_writes_source_and_classifies_by_evidence(tmp_path: Path):
    path = tmp_path / "segment"
    path.write_bytes(b"\0" * 4096)
    heap = bytearray(1 << 20)
    left, right = socket.socketpair()
    pipe_out, pipe_in = os.pipe()
    with path.open("rb") as segment, left, right, mapped_file(tmp_path / "mapped") as mapping:
        file_fd, socket_fd = segment.fileno(), left.fileno()
        probe = SendpathProbe([os.getpid()])
        program = CannedProgram({}, attached=("sock:sock_send_length", "skb:skb_copy_datagram_iovec"))
        probe.start(program)
        sent = {"to_socket": True}  # sock_send_length saw a socket take the bytes
        program.maps = {
            "mqi_traffic": [
                _traffic("read", file_fd, 10, 1000),
                _traffic("sendto", socket_fd, 10, 1000, source_fd=file_fd, origin=ORIGIN_READ, **sent),
                _traffic("sendto", socket_fd, 10, 2000, address=address_of(mapping) + 8192, faults=7, **sent),
                _traffic("sendto", socket_fd, 5, 300, address=address_of(heap) + 100, **sent),  # a header
                _traffic("sendmsg", socket_fd, 1, 50, origin=ORIGIN_UNSEEN, **sent),  # iovecs past the bound
                _traffic("sendfile64", socket_fd, 5, 4000, source_fd=file_fd, **sent),
                _traffic("splice", pipe_in, 2, 500, source_fd=file_fd),  # file -> pipe: in kernel
                _traffic("splice", socket_fd, 2, 500, source_fd=pipe_out, **sent),
                _traffic("vmsplice", pipe_in, 1, 64),  # into a pipe: page references, no copy
            ],
            "mqi_sockets": [_sockets(sent=8000)],
        }
        snapshot = probe.collect(program, 1.0)
        os.close(pipe_out)
        os.close(pipe_in)
    assert (snapshot.syscalls, snapshot.mode_switches) == (46, 92)
    assert snapshot.bytes_kernel_to_user == 1000 and snapshot.bytes_user_to_kernel == 3350
    assert snapshot.bytes_in_kernel == 4000 + 500 + 500 + 64
    paths = snapshot.paths
    assert (paths.read_write_bytes, paths.mmap_write_bytes, paths.sendfile_bytes, paths.splice_bytes) == (
        1000,
        2000,
        4000,
        500,
    )
    assert (snapshot.other_socket_write_bytes, snapshot.unresolved_socket_write_bytes) == (300, 50)
    assert snapshot.bytes_to_sockets == 7850
    copies = 2 * 1000 + 1 * (2000 + 300 + 50)
    assert snapshot.cpu_copies_per_socket_byte == pytest.approx(copies / 7850, abs=1e-4)
    assert snapshot.socket_bytes_sent == 8000 and snapshot.socket_bytes_copied_to_user == 0
    assert snapshot.tcp_sendmsg_passes is None  # its tracepoint was not attached
    (process,) = snapshot.processes
    assert process.main_path == "sendfile" and process.faults_in_syscalls == 7
    rows = {(row.socket_bytes_as, row.source_kind): row for row in snapshot.fds if row.fd == socket_fd}
    assert rows["read+write", "file"].source_name == str(path)
    assert rows["mmap+write", "mapping"].source_name == f"{tmp_path / 'mapped'} (mapped)"
    assert rows["mmap+write", "mapping"].faults_in_syscalls == 7
    assert rows["other", "memory"].bytes_user_to_kernel == 300
    assert rows["unresolved", "unplaced"].source_name == BEYOND_IOVECS.name
    sendfile = rows["sendfile", "file"]
    assert (sendfile.fd_kind, sendfile.source_fd, sendfile.source_name) == ("socket", file_fd, str(path))
    assert sendfile.bytes_in_kernel == 4000 and sendfile.mode_switches == 10


BASE = 0x7F0000000000  # a group boundary
CRAFTED_MAPS = (
    f"{BASE:x}-{BASE + 0x8000:x} rw-s 00000000 08:01 1234 /data/segment\n"  # pages 0-7 of the group
    f"{BASE + 0x8000:x}-{BASE + 0xA000:x} rw-p 00000000 00:00 0\n"  # pages 8-9: anonymous; 10-15: none
    f"{BASE + 0x10000:x}-{BASE + 0x30000:x} r--s 00000000 08:01 1235 /data/other\n"  # groups 1 and 2
)


def test_an_address_group_is_placed_page_by_page_where_it_straddles_mappings(monkeypatch):
    left, right = socket.socketpair()
    with left, right:
        probe = SendpathProbe([os.getpid()])
        space = parse_address_space(os.getpid(), CRAFTED_MAPS)
        monkeypatch.setattr(probe._spaces, "snapshot", lambda pid, fresh=False: space)
        straddling, value = _traffic("sendto", left.fileno(), 3, 1000, address=BASE + 3 * 4096)
        value.page_bytes[8], value.page_bytes[12] = 24, 5
        value.bytes = 1029
        whole = _traffic("writev", left.fileno(), 1, 4096, address=BASE + 0x10000 + 5 * 4096)
        snapshot = probe.collect(CannedProgram({"mqi_traffic": [(straddling, value), whole]}), 1.0)
    assert snapshot.paths.mmap_write_bytes == 1000 + 4096
    assert (snapshot.other_socket_write_bytes, snapshot.unresolved_socket_write_bytes) == (24, 5)
    assert snapshot.syscalls == 4  # each record's calls counted once, with its first part
    sources = {row.source_name: row.bytes_user_to_kernel for row in snapshot.fds}
    assert sources == {
        "/data/segment (mapped)": 1000,
        "/data/other (mapped)": 4096,
        "anonymous memory": 24,
        OUTSIDE_MAPPINGS.name: 5,
    }


def test_the_kernels_word_names_a_descriptor_closed_or_reused_before_the_interval_ended(tmp_path: Path):
    """The calls' descriptors now refer to something else: the file a read read pages of (as
    mm_filemap_get_pages said) and whether a socket took the bytes (sock_send_length) name them as they
    were, so a read of the store then a send stays read+write, and a send to what is a socket now, but was
    a file then, is not delivered to a socket."""
    root = make_store(tmp_path / "store")
    segment = segment_of(root, 0)
    segment_file = FileId.from_stat(segment.stat())
    left, right = socket.socketpair()
    pipe_out, pipe_in = os.pipe()
    with left, right:
        probe = SendpathProbe([os.getpid()], store=root)
        program = CannedProgram({}, attached=("sock:sock_send_length",))
        probe.start(program)
        reused = pipe_in  # the segment's descriptor, closed, and its number taken by a pipe since
        program.maps["mqi_traffic"] = [
            _traffic("pread64", reused, 1, 3000, file=segment_file),
            _traffic(
                "sendto",
                pipe_out,
                1,
                3000,
                source_fd=reused,
                origin=ORIGIN_READ,
                file=segment_file,
                to_socket=True,
            ),
            _traffic("write", left.fileno(), 1, 700, address=address_of(bytearray(4096))),  # a file then
        ]
        snapshot = probe.collect(program, 1.0)
        os.close(pipe_out)
        os.close(pipe_in)
    assert (snapshot.paths.read_write_bytes, snapshot.bytes_to_sockets) == (3000, 3000)
    (process,) = snapshot.processes
    assert process.file_bytes_to_user == 3000
    rows = {row.socket_bytes_as: row for row in snapshot.fds if row.bytes_user_to_kernel}
    assert rows["read+write"].source_name == "commitlog/00000000000000000000"
    assert (
        rows["read+write"].fd_kind == "socket" and "closed before it was named" in rows["read+write"].fd_name
    )
    assert rows[None].fd_kind == "unknown"


def test_without_a_store_the_file_a_read_read_is_named_by_its_path(tmp_path: Path):
    """Tracing without --store (every process, as probe_overhead.py and `trace sendpath` alone do): the file
    the kernel said a read read pages of, which the descriptor no longer refers to, is named by the path the
    process holds it under. (It raised AttributeError on the path's store label, None without a store, and
    ended `mqinspect trace sendpath` within seconds on a busy machine.)"""
    data = tmp_path / "data.bin"
    data.write_bytes(b"x" * 8192)
    left, right = socket.socketpair()
    pipe_out, pipe_in = os.pipe()
    with left, right, data.open("rb") as held:
        probe = SendpathProbe([os.getpid()])
        program = CannedProgram({})
        probe.start(program)
        read_file = FileId.from_stat(os.fstat(held.fileno()))
        program.maps["mqi_traffic"] = [  # the read's descriptor was closed, its number reused by a pipe
            _traffic("read", pipe_in, 1, 4096, file=read_file),
            _traffic("sendto", left.fileno(), 1, 4096, source_fd=pipe_in, origin=ORIGIN_READ, file=read_file),
        ]
        snapshot = probe.collect(program, 1.0)
        os.close(pipe_out)
        os.close(pipe_in)
    assert (snapshot.paths.read_write_bytes, snapshot.bytes_to_sockets) == (4096, 4096)
    (row,) = [row for row in snapshot.fds if row.socket_bytes_as == "read+write"]
    assert (row.source_kind, row.source_name) == ("file", str(data))
    (read,) = [row for row in snapshot.fds if row.bytes_kernel_to_user]
    assert (read.fd_kind, read.fd_name) == ("file", str(data))


def make_store(root: Path) -> Path:
    (root / "commitlog").mkdir(parents=True)
    (root / "consumequeue").mkdir()
    return root


def segment_of(root: Path, offset: int) -> Path:
    segment = root / "commitlog" / f"{offset:020d}"
    segment.write_bytes(b"\0" * 4096)
    return segment


def test_with_a_store_segments_created_after_the_start_are_followed(tmp_path: Path):
    """The CommitLog rolls during the session: reads of the new segment are the store's from the interval
    it appears in, and writes of what they read stay read+write; a file outside the store is not."""
    root = make_store(tmp_path / "store")
    first = segment_of(root, 0)
    config = tmp_path / "broker.conf"
    config.write_bytes(b"x" * 4096)
    left, right = socket.socketpair()
    probe = SendpathProbe([os.getpid()], store=root)
    with first.open("rb") as segment, left, right:
        probe.start(CannedProgram({}))
        before = probe.collect(
            CannedProgram(
                {
                    "mqi_traffic": [
                        _traffic("pread64", segment.fileno(), 1, 1000),
                        _traffic("sendto", left.fileno(), 1, 1000, source_fd=segment.fileno(), origin=1),
                    ]
                }
            ),
            1.0,
        )
        rolled = segment_of(root, 4096)  # created after the probe listed the store
        with rolled.open("rb") as new, config.open("rb") as other:
            records = [
                _traffic("pread64", new.fileno(), 1, 3000),
                _traffic("sendto", left.fileno(), 1, 3000, source_fd=new.fileno(), origin=ORIGIN_READ),
                _traffic("read", other.fileno(), 1, 500),
                _traffic("sendto", left.fileno(), 1, 500, source_fd=other.fileno(), origin=ORIGIN_READ),
            ]
            after = probe.collect(CannedProgram({"mqi_traffic": records}), 1.0)
    assert (before.paths.read_write_bytes, before.paths.mmap_write_bytes) == (1000, 0)
    assert (after.paths.read_write_bytes, after.paths.mmap_write_bytes) == (3000, 0)
    assert after.other_socket_write_bytes == 500  # read from a file outside the store
    (process,) = after.processes
    assert process.file_bytes_to_user == 3000
    names = {row.fd_name for row in after.fds}
    assert "commitlog/00000000000000004096" in names and str(config) in names


def test_an_address_whose_mapping_changed_between_two_readings_is_placed_only_if_both_count_alike(
    tmp_path: Path, monkeypatch
):
    """A segment unmapped by retention and its range mapped again for a new segment: either may have held
    the bytes, both are store segments, so they are mmap+write; a range that held a segment and holds
    anonymous memory now cannot be placed; one unmapped since is placed by the reading before."""
    root = make_store(tmp_path / "store")
    old, new = segment_of(root, 0), segment_of(root, 4096)
    ids = {path: FileId.from_stat(path.stat()) for path in (old, new)}

    def line(start: int, path: Path | None) -> str:
        file = ids[path] if path else FileId(0, 0, 0)
        where = f" {path}" if path else ""
        return f"{start:x}-{start + 0x10000:x} r--s 0 {file.major:x}:{file.minor:x} {file.inode}{where}\n"

    earlier_maps = line(BASE, old) + line(BASE + 0x10000, old) + line(BASE + 0x20000, old)
    earlier = parse_address_space(os.getpid(), earlier_maps)
    now = parse_address_space(os.getpid(), line(BASE, new) + line(BASE + 0x10000, None))
    left, right = socket.socketpair()
    with left, right:
        probe = SendpathProbe([os.getpid()], store=root)
        monkeypatch.setattr(probe, "_address_spaces", lambda pid: (now, earlier))
        sent = {"to_socket": True}
        records = [
            _traffic("sendto", left.fileno(), 1, 1000, address=BASE, **sent),
            _traffic("sendto", left.fileno(), 1, 200, address=BASE + 0x10000, **sent),
            _traffic("sendto", left.fileno(), 1, 30, address=BASE + 0x20000, **sent),
        ]
        program = CannedProgram({"mqi_traffic": records}, attached=("sock:sock_send_length",))
        snapshot = probe.collect(program, 1.0)
    assert snapshot.paths.mmap_write_bytes == 1000 + 30
    assert snapshot.unresolved_socket_write_bytes == 200
    names = {row.source_name for row in snapshot.fds}
    both = "commitlog/00000000000000000000 or commitlog/00000000000000004096 (mapped)"
    assert {both, MAPPING_CHANGED.name, "commitlog/00000000000000000000 (mapped)"} <= names


HOLD_A_SOCKET = (
    "import socket, sys; a, b = socket.socketpair(); print(a.fileno(), flush=True); sys.stdin.read()"
)


def test_a_process_that_exited_is_placed_by_the_mappings_it_had():
    """Its /proc/PID/maps and /proc/PID/fd are gone at the interval's end: what was read when the session
    started (its socket, its mappings) names and places its writes."""
    child = subprocess.Popen(
        [sys.executable, "-c", HOLD_A_SOCKET], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        socket_fd = int(child.stdout.readline())
        probe = SendpathProbe([child.pid])
        probe.start(CannedProgram({}))
        mappings = probe._spaces.snapshot(child.pid).mappings
    finally:
        child.communicate("", timeout=30)
    stack = next(mapping for mapping in mappings if mapping.path == "[stack]")
    binary = next(mapping for mapping in mappings if mapping.file and "python" in (mapping.path or ""))
    records = [
        _traffic("sendto", socket_fd, 1, 700, address=binary.start, pid=child.pid),
        _traffic("sendto", socket_fd, 1, 70, address=stack.start, pid=child.pid),
    ]
    snapshot = probe.collect(CannedProgram({"mqi_traffic": records}), 1.0)
    assert snapshot.exited_pids == (child.pid,)
    assert (snapshot.paths.mmap_write_bytes, snapshot.other_socket_write_bytes) == (700, 70)
    assert snapshot.unresolved_socket_write_bytes == 0


def _interval(**counts) -> SendpathSnapshot:
    """A snapshot of one process with the given byte tallies (through the probe's own row builder)."""
    row = _process_row(7, "broker", Tally(counts), dict.fromkeys(("socket_bytes_sent",), 0))
    return _snapshot(
        kind="interval",
        interval_s=1.0,
        pids=(7,),
        store=None,
        lost_records=0,
        processes=(row,),
        fds=(),
        exited_pids=(),
        socket_fields=frozenset({"socket_bytes_sent"}),
    )


def test_the_summary_adds_up_each_class_of_the_intervals():
    first = _interval(
        syscalls=2, read_write_bytes=100, socket_bytes_from_user=110, other_socket_write_bytes=10
    )
    second = _interval(
        syscalls=1, mmap_write_bytes=50, socket_bytes_from_user=55, unresolved_socket_write_bytes=5
    )
    summary = combine_snapshots(combine_snapshots(None, first), second)
    assert summary.kind == "summary" and summary.interval_s == 2.0 and summary.syscalls == 3
    assert (summary.paths.read_write_bytes, summary.paths.mmap_write_bytes) == (100, 50)
    assert (summary.other_socket_write_bytes, summary.unresolved_socket_write_bytes) == (10, 5)
    assert summary.bytes_to_sockets == 165
    assert summary.cpu_copies_per_socket_byte == pytest.approx((2 * 100 + 50 + 10 + 5) / 165, abs=1e-4)
    (process,) = summary.processes
    assert process.main_path == "read+write" and process.bytes_to_sockets == 165
    assert summary.socket_bytes_sent == 0 and summary.tcp_sendmsg_passes is None


def test_the_table_draws_an_interval():
    snapshot = _interval(
        syscalls=2, read_write_bytes=100, socket_bytes_from_user=164, other_socket_write_bytes=64
    )
    console = Console(width=80, record=True, file=io.StringIO())
    console.print(VIEWS["sendpath"].table(snapshot, "title"))
    text = console.export_text()
    assert "read+write 100B" in text and "other writes to sockets 64B" in text
    assert "CPU copies per socket byte 1.61" in text


# --- with BPF: 64 MiB by each path, beside strace ------------------------------------------------------


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sendpath") / "segment.bin"
    with path.open("wb") as data:
        for _ in range(FILE_BYTES // (1 << 20)):
            data.write(os.urandom(1 << 20))
    return path


@dataclass
class Sender:
    process: subprocess.Popen
    pid: int

    def start_sending(self) -> None:
        os.kill(self.pid, signal.SIGUSR1)

    def finish(self) -> int:
        """The receiver's byte count, once the sender has exited (successfully)."""
        word, received = self.process.stdout.readline().split()
        assert word == "received"
        assert self.process.wait(timeout=60) == 0
        return int(received)


@contextlib.contextmanager
def paused_sender(path_name: str, data: Path, *options: str) -> Iterator[Sender]:
    process = subprocess.Popen(
        [sys.executable, str(WORKLOAD), path_name, str(data), "--chunk-bytes", str(CHUNK_BYTES), *options],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        word, sender_pid, _receiver_pid = process.stdout.readline().split()
        assert word == "ready"
        yield Sender(process, int(sender_pid))
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


def by_probe_names(counts: dict[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
    """strace's counts by the probe's names (sendfile is sendfile64 to the tracepoint)."""
    return {STRACE_NAMES.get(name, name): calls for name, calls in counts.items()}


def test_the_strace_summary_parser_reads_calls_and_errors():
    text = (
        "% time     seconds  usecs/call     calls    errors syscall\n"
        "------ ----------- ----------- --------- --------- ----------------\n"
        " 54.15    0.019868          19      1024           sendfile\n"
        "  0.13    0.000047          23         2         1 read\n"
        "100.00    0.036689          35      1026         1 total\n"
    )
    assert by_probe_names(strace_summary(text)) == {"sendfile64": (1024, 0), "read": (2, 1)}


# Bytes of the sender per direction, as multiples of the file: (kernel->user, user->kernel, in kernel).
EXPECTED_MULTIPLES = {
    "sendfile": (0, 0, 1),
    "read+write": (1, 1, 0),
    "mmap+write": (0, 1, 0),
    "splice": (0, 0, 2),  # file -> pipe, then pipe -> socket: two moves of page references
}
EXPECTED_COPIES = {"sendfile": 0.0, "read+write": 2.0, "mmap+write": 1.0, "splice": 0.0}


@pytest.mark.requires_bpf
@pytest.mark.parametrize("path_name", list(EXPECTED_MULTIPLES))
def test_each_path_moves_its_bytes_the_way_the_path_model_says_and_counts_agree_with_strace(
    path_name: str, data_file: Path, tmp_path: Path
):
    with (
        paused_sender(path_name, data_file) as sender,
        TraceSession(SendpathProbe([sender.pid])) as session,
    ):
        with strace_counts(sender.pid, tmp_path / "strace.out") as straced:
            sender.start_sending()
            assert sender.finish() == FILE_BYTES
        snapshot = session.snapshot()  # the sender has exited: its counts are final
    (process,) = snapshot.processes
    straced = by_probe_names(straced)
    moved = (process.bytes_kernel_to_user, process.bytes_user_to_kernel, process.bytes_in_kernel)
    print(f"{path_name}: kernel->user, user->kernel, in kernel = {moved}; strace {straced}")
    assert moved == tuple(multiple * FILE_BYTES for multiple in EXPECTED_MULTIPLES[path_name])
    assert process.main_path == path_name and process.bytes_to_sockets == FILE_BYTES
    assert process.cpu_copies_per_socket_byte == EXPECTED_COPIES[path_name]
    assert process.socket_bytes_sent == FILE_BYTES  # the socket layer agrees with the syscalls
    assert snapshot.exited_pids == (sender.pid,)

    traced = {entry.syscall: (entry.calls, entry.errors) for entry in process.per_syscall}
    assert {name: traced.get(name, (0, 0)) for name in SYSCALLS} == {
        name: straced.get(name, (0, 0)) for name in SYSCALLS
    }
    assert process.syscalls == sum(straced.get(name, (0, 0))[0] for name in SYSCALLS) > 0
    assert process.mode_switches == 2 * process.syscalls


HEADER_BYTES = 100


@pytest.mark.requires_bpf
@pytest.mark.parametrize("path_name", list(EXPECTED_MULTIPLES))
def test_headers_sent_beside_each_chunk_are_other_writes_and_the_path_keeps_exactly_the_files_bytes(
    path_name: str, data_file: Path
):
    """Every chunk framed by a header built in the heap, as a server frames its responses: in the same
    sendmsg (read+write) or writev (mmap+write) as the chunk, or in a send() of its own before sendfile and
    splice. The path gets the file's bytes and nothing else; the headers are other writes to sockets."""
    with (
        paused_sender(path_name, data_file, "--header-bytes", str(HEADER_BYTES)) as sender,
        TraceSession(SendpathProbe([sender.pid])) as session,
    ):
        sender.start_sending()
        received = sender.finish()
        snapshot = session.snapshot()
    headers = FILE_BYTES // CHUNK_BYTES * HEADER_BYTES
    assert received == FILE_BYTES + headers
    (process,) = snapshot.processes
    assert process.paths.by_path() == {name: FILE_BYTES if name == path_name else 0 for name in PATHS}
    assert (process.other_socket_write_bytes, process.unresolved_socket_write_bytes) == (headers, 0)
    assert process.bytes_to_sockets == received == process.socket_bytes_sent
    copies = EXPECTED_COPIES[path_name] * FILE_BYTES + headers  # a header: its one copy into the socket
    assert process.cpu_copies_per_socket_byte == pytest.approx(copies / received, abs=1e-4)


@pytest.mark.requires_bpf
def test_iovecs_past_the_bound_are_unresolved_not_guessed(data_file: Path):
    vectors = MAX_IOVECS + 4
    with (
        paused_sender("mmap+write", data_file, "--vectors", str(vectors)) as sender,
        TraceSession(SendpathProbe([sender.pid])) as session,
    ):
        sender.start_sending()
        assert sender.finish() == FILE_BYTES
        snapshot = session.snapshot()
    slice_bytes = -(-CHUNK_BYTES // vectors)  # the workload's slices: equal but the last
    placed = FILE_BYTES // CHUNK_BYTES * MAX_IOVECS * slice_bytes
    (process,) = snapshot.processes
    assert process.paths.mmap_write_bytes == placed
    assert process.unresolved_socket_write_bytes == FILE_BYTES - placed
    assert process.per_syscall == (SyscallCount("writev", FILE_BYTES // CHUNK_BYTES, 0, FILE_BYTES),)


# --- with BPF: the demo's broker across CommitLog rolls -----------------------------------------------------

# 8 MiB segments at about 11.6 MiB/s: the CommitLog rolls every 0.7 s or so. Retention keeps all of them
# for the test's few seconds: a segment that retention deletes between two readings of the probe while a
# consumer still reads it leaves nothing for /proc to name (the demo's own segments live ~50 s).
ROLLING = DemoSettings(segment_size_bytes=8 * MiB, max_segments=64, stop_grace_s=4.0)
ROLLS = 3
ROLL_DEADLINE_S = 60.0
DEMO_PATHS = {
    "read+write": "read_write",
    "mmap+write": "mmap_write",
    "sendfile": "sendfile",
    "splice": "splice",
}


@contextlib.contextmanager
def read_meanwhile(session: TraceSession, every_s: float = 0.5) -> Iterator[None]:
    """Read `session` every `every_s` from a thread while the block runs, as the CLI reads it each interval.
    The block's slow steps (starting the consumers, compiling their probe: seconds under load) would leave it
    unread for as long, and a segment's writable mapping mapped, sent from and unmapped by its seal between
    two readings of /proc/PID/maps is, rightly, unplaced (read only after the block: 1 to 13 segments' bytes
    unresolved in 6 of 12 runs beside two busy loops)."""
    done = threading.Event()
    failures: list[BaseException] = []

    def read() -> None:
        try:
            while not done.wait(every_s):
                session.snapshot()
        except BaseException as error:  # raised again in the test's thread
            failures.append(error)

    reader = threading.Thread(target=read, name="read-meanwhile", daemon=True)
    reader.start()
    try:
        yield
    finally:
        done.set()
        reader.join()
    if failures:
        raise failures[0]


def wait_for_rolls(commitlog: Path, rolls: int, session: TraceSession) -> int:
    """Read the session every half second until the CommitLog has created `rolls` more segments; the
    number of segments it created."""
    first = set(os.listdir(commitlog))
    created: set[str] = set()
    deadline = time.monotonic() + ROLL_DEADLINE_S
    while len(created) < rolls:
        assert time.monotonic() < deadline, (
            f"the CommitLog rolled {len(created)} times in {ROLL_DEADLINE_S} s"
        )
        time.sleep(0.5)
        session.snapshot()
        created |= set(os.listdir(commitlog)) - first
    return len(created)


@pytest.mark.requires_bpf
def test_across_commitlog_rolls_each_path_gets_its_consumers_bytes_and_headers_and_requests_are_no_path(
    tmp_path: Path,
):
    """The demo's broker traced with --store from before its consumers start, while the CommitLog rolls
    several times: each send path carries exactly the bytes its consumer received (the records, from the
    segments created during the session too), the broker's protocol headers are other writes, and the
    consumers' pull requests are other writes of theirs, never mmap+write."""
    workload = DemoWorkload(ROLLING, tmp_path / "demo")
    try:
        workload.start_broker()
        (broker_pid,) = workload.pids
        with TraceSession(SendpathProbe([broker_pid], store=workload.store_dir)) as broker:
            with read_meanwhile(broker):
                workload.start_consumers()
                consumer_pids = [pid for pid in workload.pids if pid != broker_pid]
                consumers = TraceSession(SendpathProbe(consumer_pids))
                consumers.open()
            with consumers:
                rolls = wait_for_rolls(workload.store_dir / "commitlog", ROLLS, broker)
                workload.stop_consumers()  # each ends after its last pull is received and counted
                consumers.snapshot()
            broker.snapshot()  # the broker still runs: its mappings are read fresh
        outcome = workload.stop()
    finally:
        workload.close()
    received = {consumer.path.value: consumer.bytes_received for consumer in outcome.consumers}
    (served,) = broker.summary.processes
    print(
        f"{rolls} rolls; paths {served.paths}; other {served.other_socket_write_bytes}; received {received}"
    )
    assert served.paths.by_path() == {path: received[DEMO_PATHS[path]] for path in PATHS}
    assert all(received.values())
    assert served.other_socket_write_bytes > 0 and served.unresolved_socket_write_bytes == 0
    assert served.bytes_to_sockets == served.socket_bytes_sent
    for consumer in consumers.summary.processes:
        assert sum(consumer.paths.by_path().values()) == 0, consumer
        assert consumer.other_socket_write_bytes > 0 and consumer.unresolved_socket_write_bytes == 0


@pytest.mark.requires_bpf
def test_sigterm_mid_session_prints_the_summary_exits_130_and_unloads(data_file: Path):
    with paused_sender("read+write", data_file) as sender:
        traced = trace_following("sendpath", sender.pid)  # --follow: it outlives the sender, until SIGTERM
        sender.start_sending()
        sender.finish()
        lines, errors = traced.stop()
    assert traced.process.returncode == 130, errors
    first, summary = lines[0], lines[-1]
    assert summary["kind"] == "summary" and summary["pids"] == [sender.pid]
    assert summary["bytes_kernel_to_user"] == summary["bytes_user_to_kernel"] == FILE_BYTES
    assert summary["syscalls"] == sum(line["syscalls"] for line in lines[:-1])
    for key in ("interval_s", "bytes_in_kernel", "mode_switches", "cpu_copies_per_socket_byte", "paths"):
        assert key in first
    assert errors.startswith(f"Tracing send-path syscalls of pid {sender.pid}, per descriptor, every 0.2 s.")
    assert f"mqinspect: pid {sender.pid} exited; the session goes on" in errors
    assert traced.programs_gone()
