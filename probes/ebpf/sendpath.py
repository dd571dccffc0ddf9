"""The sendpath probe: how the traced processes move bytes between files, pipes and sockets, and how many
CPU copies between user and kernel memory each byte sent to a socket cost.

Kernel side: programs/sendpath.bpf.c (its header explains each tracepoint). It counts, per process, syscall
and file descriptor (and source descriptor for sendfile and splice), the calls, errors, bytes returned and
kernel-mode page faults taken inside the calls, cumulatively; this module takes differences each interval,
names each descriptor from /proc/PID/fd, and classifies the traffic.

Directions, from the syscall alone (the syscall decides who copies):
  bytes_kernel_to_user  read, pread64, readv, recvfrom, recvmsg, and vmsplice out of a pipe: copied by the
                        CPU from the kernel (page cache, socket buffers, pipes) into the caller's buffers
  bytes_user_to_kernel  write, pwrite64, writev, sendto, sendmsg: copied by the CPU from the caller's buffers
  bytes_in_kernel       sendfile64, splice, and vmsplice into a pipe: page references handed along inside
                        the kernel, no copy between user and kernel memory (vmsplice references the caller's
                        pages). The kernel may still copy inside itself (no NIC scatter-gather or checksum
                        offload, kTLS in software); the syscalls cannot show that.
  syscalls, syscall_errors   calls that returned while traced (errors: negative return); the same calls as
                        `strace -c` counts for these 13 syscalls
  mode_switches         2 x syscalls: each call enters and leaves the kernel once. Switches for page faults,
                        interrupts and other syscalls are not counted.
  faults_in_syscalls    page faults taken in kernel mode on user addresses during the calls: with mmap+write,
                        write()/send() touching mapped file pages that are not mapped in yet. User-mode faults
                        are `mqinspect trace faults`' business.

Descriptors are named from /proc/PID/fd: a regular file (its store segment with --store, else its path), a
socket, a pipe (and which end), another kind, or "unknown" when the descriptor was closed before it could be
read (a process's descriptors are read when the session starts, and each interval for those that moved bytes;
a descriptor that is closed by then keeps the name it had when it was last read).

Send paths, per process, over the bytes delivered to sockets (write-like calls, sendfile and splice whose
descriptor is a socket):
  sendfile     sendfile64 into a socket
  splice       splice into a socket (from a pipe that splice or vmsplice filled)
  read+write   bytes written to sockets from user buffers, up to the bytes read into user buffers from
               regular files (with --store: from the store's segments): the file was read, then written
  mmap+write   the rest of the socket writes from user buffers: written without a matching file read, so the
               data came from memory the process already had, a mapped file being the usual case (RocketMQ
               with transferMsgByHeap=false). Syscalls cannot tell a mapping from a heap buffer that was
               filled by a memcpy; faults_in_syscalls on the socket descriptor is the hint (mapped pages
               fault inside the send the first time), `trace faults` the proof.
  cpu_copies_per_socket_byte = (2 x read+write + 1 x mmap+write + 0 x sendfile/splice) / bytes to sockets:
               the CPU copies between user and kernel memory per byte delivered, as the path model counts
               them (read+write: page cache -> user, user -> socket; mmap+write: mapping -> socket).
  main_path    the path that delivered the most bytes.

Socket side (optional tracepoints; None where the kernel lacks them): socket_bytes_sent (sock_send_length:
what sockets accepted, by any syscall), socket_bytes_copied_to_user (skb_copy_datagram_iovec: receive-side
copies out of socket buffers), tcp_sendmsg_passes (tcp_sendmsg_locked: passes of TCP's send loop).

Not seen: io_uring operations (they bypass the syscall tracepoints), copy_file_range and tee, and whether a
send used MSG_ZEROCOPY (counted as a copy from user memory, which on loopback it is).

Cost: while attached, every process's 13 traced syscalls go through the syscall tracepoints (the kernel's
slow path for all tasks, traced or not). Measured on the project's VM with `dd bs=1` (4 M read/write calls,
about 0.3 us each): about +0.25 us per call of an untraced process and +0.55 us per call of a traced one.
At 10^5 such calls per second that is about 5 % of one CPU: small, not free.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import stat
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from probes.ebpf.inodes import FileId, FileLabel, store_files
from probes.ebpf.loader import (
    IntSetMap,
    LoadedProgram,
    Parameters,
    ProgramSpec,
    checked_int,
    registered_program,
)
from probes.procfs import PROC_ROOT, ProcessGone, read_process_faults

PROBE_NAME = "sendpath"
NO_FD = -1

# The traced syscalls; a syscall's position is its id in the program's map keys (SYSCALL_<NAME> defines).
SYSCALLS = (
    "read",
    "pread64",
    "readv",
    "write",
    "pwrite64",
    "writev",
    "sendfile64",
    "splice",
    "vmsplice",
    "sendmsg",
    "sendto",
    "recvfrom",
    "recvmsg",
)
_ENTER_FUNCTIONS = {
    "read": "mqi_read_e",
    "pread64": "mqi_pread_e",
    "readv": "mqi_readv_e",
    "write": "mqi_write_e",
    "pwrite64": "mqi_pwrite_e",
    "writev": "mqi_writev_e",
    "sendfile64": "mqi_sendfile_e",
    "splice": "mqi_splice_e",
    "vmsplice": "mqi_vmsplice_e",
    "sendmsg": "mqi_sendmsg_e",
    "sendto": "mqi_sendto_e",
    "recvfrom": "mqi_recvfrom_e",
    "recvmsg": "mqi_recvmsg_e",
}
EXIT_FUNCTION = "mqi_sys_exit"
_OPTIONAL_FUNCTIONS = {
    "exceptions:page_fault_kernel": "mqi_copy_fault",
    "sock:sock_send_length": "mqi_sock_send",
    "skb:skb_copy_datagram_iovec": "mqi_skb_copy",
    "tcp:tcp_sendmsg_locked": "mqi_tcp_send",
}

KERNEL_TO_USER = frozenset({"read", "pread64", "readv", "recvfrom", "recvmsg"})
USER_TO_KERNEL = frozenset({"write", "pwrite64", "writev", "sendto", "sendmsg"})
IN_KERNEL = frozenset({"sendfile64", "splice"})  # vmsplice: by the pipe end, see _direction()

PATHS = ("read+write", "mmap+write", "sendfile", "splice")
# CPU copies between user and kernel memory per byte each path delivers (the path model, §3.1).
COPIES_PER_BYTE = {"read+write": 2, "mmap+write": 1, "sendfile": 0, "splice": 0}


def _program() -> ProgramSpec:
    """Every syscall's enter and exit handler, checked against the tracepoint registry."""
    functions = {f"syscalls:sys_enter_{name}": _ENTER_FUNCTIONS[name] for name in SYSCALLS}
    functions |= {f"syscalls:sys_exit_{name}": EXIT_FUNCTION for name in SYSCALLS}
    functions |= _OPTIONAL_FUNCTIONS
    return registered_program(PROBE_NAME, "sendpath.bpf.c", functions)


PROGRAM = _program()


@dataclass(frozen=True)
class MapLimits:
    tgids: int = 16384
    threads: int = 65536
    records: int = 65536  # (process, syscall, fd, source fd) combinations alive at once


def _parameters(filter_tgids: bool, limits: MapLimits) -> Parameters:
    return Parameters.of(
        FILTER_TGIDS=int(filter_tgids),
        IGNORE_TGID=os.getpid(),
        MAX_TGIDS=limits.tgids,
        MAX_THREADS=limits.threads,
        MAX_RECORDS=limits.records,
        NO_FD=NO_FD,
        **{f"SYSCALL_{name.upper()}": number for number, name in enumerate(SYSCALLS)},
    )


def default_parameters() -> Parameters:
    """What doctor's load test compiles: every process."""
    return _parameters(False, MapLimits())


# --- what a file descriptor is ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FdTarget:
    """What a descriptor referred to: kind "file", "socket", "pipe", "other" or "unknown"."""

    kind: str
    name: str
    write_only: bool = False  # opened O_WRONLY: the write end of a pipe
    file: FileId | None = None
    in_store: bool = False


UNKNOWN_TARGET = FdTarget("unknown", "unknown (closed before it was read)")
_KINDS = {stat.S_IFREG: "file", stat.S_IFSOCK: "socket", stat.S_IFIFO: "pipe"}


def read_fd_target(
    pid: int, fd: int, store: Mapping[FileId, FileLabel], proc_root: Path = PROC_ROOT
) -> FdTarget:
    """What /proc/PID/fd/FD refers to now; UNKNOWN_TARGET when it is closed (or the process is gone)."""
    link = proc_root / str(pid) / "fd" / str(fd)
    try:
        target = os.readlink(link)
        status = os.stat(link)  # follows the magic link to the inode: sockets and pipes too
    except OSError:
        return UNKNOWN_TARGET
    kind = _KINDS.get(stat.S_IFMT(status.st_mode), "other")
    file = FileId.from_stat(status) if kind == "file" else None
    label = store.get(file) if file else None
    access = _access_mode(pid, fd, proc_root)
    name = label.name if label else target
    if kind == "pipe" and access in _PIPE_ENDS:
        name += _PIPE_ENDS[access]
    return FdTarget(kind, name, access == os.O_WRONLY, file, label is not None)


_PIPE_ENDS = {os.O_RDONLY: " (read end)", os.O_WRONLY: " (write end)"}


def _access_mode(pid: int, fd: int, proc_root: Path) -> int | None:
    """O_RDONLY, O_WRONLY or O_RDWR, from the flags in /proc/PID/fdinfo/FD (None if unreadable)."""
    try:
        text = (proc_root / str(pid) / "fdinfo" / str(fd)).read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags:"):
            return int(line.split()[1], 8) & os.O_ACCMODE
    return None


class FdNames:
    """Names of the traced processes' descriptors, read from /proc/PID/fd at most once per interval each.

    A descriptor read in an earlier interval and closed since keeps its last name; one never read while open
    is UNKNOWN_TARGET. Reading again each interval (only those that moved bytes) notices a number reused for
    another file between intervals; a reuse within one interval is not seen. TCP and UDP sockets are named by
    their addresses ("TCP 127.0.0.1:5000 → 127.0.0.1:40112") from the process's /proc/PID/net tables.
    """

    def __init__(self, store: Mapping[FileId, FileLabel], proc_root: Path = PROC_ROOT):
        self._store = store
        self._proc_root = proc_root
        self._known: dict[tuple[int, int], FdTarget] = {}
        self._read_this_interval: set[tuple[int, int]] = set()
        self._sockets = SocketNames(proc_root)

    def new_interval(self) -> None:
        self._read_this_interval.clear()
        self._sockets.new_interval()

    def read_all(self, pid: int) -> None:
        """Name every descriptor `pid` has open now (at the start: it may exit before the first read)."""
        try:
            numbers = [int(name) for name in os.listdir(self._proc_root / str(pid) / "fd")]
        except OSError:
            return
        for fd in numbers:
            self.target(pid, fd)

    def target(self, pid: int, fd: int) -> FdTarget:
        key = (pid, fd)
        if key not in self._read_this_interval:
            self._read_this_interval.add(key)
            now = read_fd_target(pid, fd, self._store, self._proc_root)
            if now.kind == "socket":
                now = dataclasses.replace(now, name=self._sockets.name(pid, now.name) or now.name)
            if now is not UNKNOWN_TARGET:
                self._known[key] = now
        return self._known.get(key, UNKNOWN_TARGET)

    def forget(self, pid: int) -> None:
        for key in [key for key in self._known if key[0] == pid]:
            del self._known[key]


class SocketNames:
    """ "socket:[INODE]" -> "TCP local → remote", from /proc/PID/net/{tcp,tcp6,udp,udp6}: the tables of the
    process's network namespace, read at most once per interval and process, and only for a socket not yet
    named (sockets keep their inode for life, so a name is kept)."""

    TABLES = (("tcp", "TCP"), ("tcp6", "TCP"), ("udp", "UDP"), ("udp6", "UDP"))

    def __init__(self, proc_root: Path = PROC_ROOT):
        self._proc_root = proc_root
        self._names: dict[str, str] = {}
        self._read_this_interval: set[int] = set()

    def new_interval(self) -> None:
        self._read_this_interval.clear()

    def name(self, pid: int, link: str) -> str | None:
        if link not in self._names and pid not in self._read_this_interval:
            self._read_this_interval.add(pid)
            for table, protocol in self.TABLES:
                self._names.update(self._read_table(pid, table, protocol))
        return self._names.get(link)

    def _read_table(self, pid: int, table: str, protocol: str) -> dict[str, str]:
        try:
            lines = (self._proc_root / str(pid) / "net" / table).read_text().splitlines()[1:]
        except OSError:
            return {}
        names = {}
        for line in lines:
            fields = line.split()
            if len(fields) > 9:
                local, remote = (_socket_address(text) for text in fields[1:3])
                ends = local if remote.endswith(":0") else f"{local} → {remote}"
                names[f"socket:[{fields[9]}]"] = f"{protocol} {ends}"
        return names


def _socket_address(text: str) -> str:
    """/proc/net/tcp's "0100007F:1F90" (the address as the kernel stores it, in host order words; the port
    in hex) as "127.0.0.1:8080", and its IPv6 form as "[::1]:8080"."""
    address_hex, port_hex = text.split(":")
    raw = bytes.fromhex(address_hex)
    words = b"".join(raw[start : start + 4][::-1] for start in range(0, len(raw), 4))
    address = ipaddress.ip_address(words)
    address = getattr(address, "ipv4_mapped", None) or address  # a v4 peer of a v6 socket reads as v4
    port = int(port_hex, 16)
    return f"{address}:{port}" if address.version == 4 else f"[{address}]:{port}"


# --- processes and cumulative counters -------------------------------------------------------------------


class ProcessWatch:
    """Which traced processes have exited, and their names. Shared by the probes that trace per process."""

    def __init__(self, pids: Sequence[int], proc_root: Path = PROC_ROOT):
        self.pids = validated_pids(pids, proc_root)
        self._proc_root = proc_root
        self._comms: dict[int, str | None] = {}
        self._ended: set[int] = set()

    def comm(self, pid: int) -> str | None:
        if pid not in self._comms:
            try:
                self._comms[pid] = (self._proc_root / str(pid) / "comm").read_text().strip()
            except OSError:
                self._comms[pid] = None
        return self._comms[pid]

    def newly_ended(self, pids: Iterable[int]) -> set[int]:
        """Those of `pids` that have exited (gone, or a zombie whose counts are final) since the last call."""
        ended = set()
        for pid in set(pids) - self._ended:
            try:
                state = read_process_faults(pid, self._proc_root).state
            except ProcessGone:
                state = "X"
            if state in ("Z", "X"):
                ended.add(pid)
        self._ended |= ended
        return ended

    def forget(self, pid: int) -> None:
        """Drop what is kept for `pid`. A pid given to trace stays ended: a new process reusing it is not
        ours; without given pids any process is ours, so a reused pid can end again."""
        self._comms.pop(pid, None)
        if pid not in self.pids:
            self._ended.discard(pid)


def validated_pids(pids: Sequence[int], proc_root: Path = PROC_ROOT) -> tuple[int, ...]:
    """The pids, sorted and unique, once each is an int naming a live process (ProcessGone otherwise)."""
    checked = tuple(sorted({checked_int(pid, "pid") for pid in pids}))
    for pid in checked:
        if pid <= 0:
            raise ValueError(f"{pid} is not a process id")
        if not (proc_root / str(pid)).is_dir():
            raise ProcessGone(pid, proc_root)
    return checked


class CounterDifferences:
    """What each entry of a cumulative BPF map gained since the previous read (entries are never drained,
    so an event counted while user space reads lands in the next difference instead of being lost)."""

    def __init__(self) -> None:
        self._previous: dict[tuple[int, ...], tuple[int, ...]] = {}

    def gained(self, entries: Iterable[tuple[tuple[int, ...], tuple[int, ...]]]) -> dict[tuple, tuple]:
        differences = {}
        for key, now in entries:
            before = self._previous.get(key, (0,) * len(now))
            self._previous[key] = now
            change = tuple(a - b for a, b in zip(now, before, strict=True))
            if any(change):
                differences[key] = change
        return differences

    def known_keys(self) -> list[tuple[int, ...]]:
        return list(self._previous)

    def forget(self, key: tuple[int, ...]) -> None:
        self._previous.pop(key, None)


def subject_of(pids: Sequence[int]) -> str:
    if not pids:
        return "every process"
    return f"pid {pids[0]}" if len(pids) == 1 else "pids " + ", ".join(map(str, pids))


def _scalar(value) -> int:
    """A scalar map key or value: bcc gives ctypes numbers from items()."""
    return int(getattr(value, "value", value))


# --- snapshots ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SyscallCount:
    """One syscall's calls, errors and bytes returned (for sendfile/splice: bytes moved)."""

    syscall: str
    calls: int
    errors: int
    returned_bytes: int  # the sum of positive return values: bytes read, written or moved


@dataclass(frozen=True)
class SendPaths:
    """Bytes delivered to sockets, by send path (see the module docstring for the rule)."""

    read_write_bytes: int
    mmap_write_bytes: int
    sendfile_bytes: int
    splice_bytes: int

    def by_path(self) -> dict[str, int]:
        return dict(zip(PATHS, dataclasses.astuple(self), strict=True))


@dataclass(frozen=True)
class FdTraffic:
    """One descriptor of one process (for sendfile and splice: the pair source -> destination)."""

    pid: int
    fd: int
    fd_kind: str
    fd_name: str
    source_fd: int | None
    source_kind: str | None
    source_name: str | None
    syscalls: int
    syscall_errors: int
    mode_switches: int
    bytes_kernel_to_user: int
    bytes_user_to_kernel: int
    bytes_in_kernel: int
    faults_in_syscalls: int
    per_syscall: tuple[SyscallCount, ...]


@dataclass(frozen=True)
class ProcessSendpath:
    """One process over the interval: its totals, its send paths and its socket-side counts."""

    pid: int
    comm: str | None
    main_path: str | None
    syscalls: int
    syscall_errors: int
    mode_switches: int
    bytes_kernel_to_user: int
    bytes_user_to_kernel: int
    bytes_in_kernel: int
    faults_in_syscalls: int
    file_bytes_to_user: int  # read-like calls on regular files (store segments with --store)
    socket_bytes_from_user: int  # write-like calls on sockets
    socket_bytes_by_sendfile: int
    socket_bytes_by_splice: int
    bytes_to_sockets: int
    cpu_copies_per_socket_byte: float | None
    paths: SendPaths
    socket_bytes_sent: int | None
    socket_bytes_copied_to_user: int | None
    tcp_sendmsg_passes: int | None
    per_syscall: tuple[SyscallCount, ...]


@dataclass(frozen=True)
class SendpathSnapshot:
    """Send-path traffic over one interval (kind "interval") or the whole session (kind "summary")."""

    kind: str
    interval_s: float
    end_time_unix_s: float
    pids: tuple[int, ...]  # traced processes; () means every process
    store: str | None
    syscalls: int
    syscall_errors: int
    mode_switches: int
    bytes_kernel_to_user: int
    bytes_user_to_kernel: int
    bytes_in_kernel: int
    bytes_to_sockets: int
    cpu_copies_per_socket_byte: float | None
    paths: SendPaths
    faults_in_syscalls: int
    socket_bytes_sent: int | None
    socket_bytes_copied_to_user: int | None
    tcp_sendmsg_passes: int | None
    lost_records: int
    processes: tuple[ProcessSendpath, ...]
    fds: tuple[FdTraffic, ...]
    exited_pids: tuple[int, ...] = ()


# --- counting ----------------------------------------------------------------------------------------------


@dataclass
class _Counts:
    """Mutable tallies of one process or one descriptor while an interval (or the summary) is assembled."""

    syscalls: int = 0
    syscall_errors: int = 0
    bytes_kernel_to_user: int = 0
    bytes_user_to_kernel: int = 0
    bytes_in_kernel: int = 0
    faults_in_syscalls: int = 0
    file_bytes_to_user: int = 0
    socket_bytes_from_user: int = 0
    socket_bytes_by_sendfile: int = 0
    socket_bytes_by_splice: int = 0
    per_syscall: dict[str, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0, 0]))

    def add(self, other: _Counts) -> None:
        for name in _COUNT_FIELDS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for syscall, (calls, errors, moved) in other.per_syscall.items():
            self._add_syscall(syscall, calls, errors, moved)

    def add_calls(self, syscall: str, calls: int, errors: int, moved: int, faults: int) -> None:
        self.syscalls += calls
        self.syscall_errors += errors
        self.faults_in_syscalls += faults
        self._add_syscall(syscall, calls, errors, moved)

    def _add_syscall(self, syscall: str, calls: int, errors: int, moved: int) -> None:
        tally = self.per_syscall[syscall]
        tally[0] += calls
        tally[1] += errors
        tally[2] += moved

    @classmethod
    def of_row(cls, row: ProcessSendpath | FdTraffic) -> _Counts:
        counts = cls(**{name: getattr(row, name, 0) for name in _COUNT_FIELDS})
        for entry in row.per_syscall:
            counts._add_syscall(entry.syscall, entry.calls, entry.errors, entry.returned_bytes)
        return counts

    def syscall_counts(self) -> tuple[SyscallCount, ...]:
        return tuple(
            SyscallCount(name, *self.per_syscall[name]) for name in SYSCALLS if name in self.per_syscall
        )


_COUNT_FIELDS = tuple(f.name for f in dataclasses.fields(_Counts) if f.name != "per_syscall")


def _direction(syscall: str, target: FdTarget) -> str:
    """Which of the three byte counts a call's bytes belong to."""
    if syscall in KERNEL_TO_USER:
        return "bytes_kernel_to_user"
    if syscall in USER_TO_KERNEL:
        return "bytes_user_to_kernel"
    if syscall in IN_KERNEL:
        return "bytes_in_kernel"
    # vmsplice: into a pipe the kernel takes references to the caller's pages; out of one it copies them.
    return "bytes_in_kernel" if target.write_only else "bytes_kernel_to_user"


def _count_record(
    counts: _Counts, syscall: str, target: FdTarget, gained: tuple[int, ...], store: bool
) -> None:
    """Fold one map record's gain (calls, errors, bytes, faults) into `counts`."""
    calls, errors, moved, faults = gained
    counts.add_calls(syscall, calls, errors, moved, faults)
    direction = _direction(syscall, target)
    setattr(counts, direction, getattr(counts, direction) + moved)
    if syscall in KERNEL_TO_USER and target.kind == "file" and (target.in_store or not store):
        counts.file_bytes_to_user += moved
    elif target.kind == "socket" and syscall in USER_TO_KERNEL:
        counts.socket_bytes_from_user += moved
    elif target.kind == "socket" and syscall == "sendfile64":
        counts.socket_bytes_by_sendfile += moved
    elif target.kind == "socket" and syscall == "splice":
        counts.socket_bytes_by_splice += moved


def send_paths(counts: _Counts) -> SendPaths:
    """The classification rule: socket writes from user buffers are read+write up to the file bytes the
    process read into user buffers, mmap+write beyond them."""
    read_write = min(counts.file_bytes_to_user, counts.socket_bytes_from_user)
    return SendPaths(
        read_write_bytes=read_write,
        mmap_write_bytes=counts.socket_bytes_from_user - read_write,
        sendfile_bytes=counts.socket_bytes_by_sendfile,
        splice_bytes=counts.socket_bytes_by_splice,
    )


def copies_per_byte(paths: SendPaths) -> float | None:
    by_path = paths.by_path()
    delivered = sum(by_path.values())
    if not delivered:
        return None
    return round(sum(COPIES_PER_BYTE[path] * moved for path, moved in by_path.items()) / delivered, 4)


def main_path(paths: SendPaths) -> str | None:
    by_path = paths.by_path()
    busiest = max(by_path, key=lambda path: by_path[path])
    return busiest if by_path[busiest] else None


_SOCKET_FIELDS = ("socket_bytes_sent", "socket_bytes_copied_to_user", "tcp_sendmsg_passes")
_SOCKET_TRACEPOINTS = {
    "socket_bytes_sent": "sock:sock_send_length",
    "socket_bytes_copied_to_user": "skb:skb_copy_datagram_iovec",
    "tcp_sendmsg_passes": "tcp:tcp_sendmsg_locked",
}


def _process_row(
    pid: int, comm: str | None, counts: _Counts, socket: Mapping[str, int | None]
) -> ProcessSendpath:
    paths = send_paths(counts)
    return ProcessSendpath(
        pid=pid,
        comm=comm,
        main_path=main_path(paths),
        mode_switches=2 * counts.syscalls,
        bytes_to_sockets=sum(paths.by_path().values()),
        cpu_copies_per_socket_byte=copies_per_byte(paths),
        paths=paths,
        per_syscall=counts.syscall_counts(),
        **{name: getattr(counts, name) for name in _COUNT_FIELDS},
        **{name: socket.get(name) for name in _SOCKET_FIELDS},
    )


def _fd_row(
    pid: int, fd: int, target: FdTarget, source_fd: int | None, source: FdTarget | None, counts: _Counts
) -> FdTraffic:
    return FdTraffic(
        pid=pid,
        fd=fd,
        fd_kind=target.kind,
        fd_name=target.name,
        source_fd=source_fd,
        source_kind=source.kind if source else None,
        source_name=source.name if source else None,
        syscalls=counts.syscalls,
        syscall_errors=counts.syscall_errors,
        mode_switches=2 * counts.syscalls,
        bytes_kernel_to_user=counts.bytes_kernel_to_user,
        bytes_user_to_kernel=counts.bytes_user_to_kernel,
        bytes_in_kernel=counts.bytes_in_kernel,
        faults_in_syscalls=counts.faults_in_syscalls,
        per_syscall=counts.syscall_counts(),
    )


def _by_traffic(row: ProcessSendpath | FdTraffic) -> tuple:
    moved = row.bytes_kernel_to_user + row.bytes_user_to_kernel + row.bytes_in_kernel
    return (-moved, -row.syscalls, row.pid)


# --- the probe ---------------------------------------------------------------------------------------------


class SendpathProbe:
    """`mqinspect trace sendpath`: see the module docstring. Construct, then run in a TraceSession."""

    name = PROBE_NAME
    program = PROGRAM

    def __init__(
        self,
        pids: Sequence[int] = (),
        *,
        store: Path | None = None,
        limits: MapLimits = MapLimits(),
        proc_root: Path = PROC_ROOT,
    ):
        self._watch = ProcessWatch(pids, proc_root)
        self.pids = self._watch.pids
        self.store = store
        self.limits = limits
        self._proc_root = proc_root
        self._store_files = store_files(store) if store else {}
        self._names = FdNames(self._store_files, proc_root)
        self._traffic = CounterDifferences()
        self._sockets = CounterDifferences()
        self._lost = CounterDifferences()
        self._socket_fields: frozenset[str] = frozenset()  # those whose tracepoint is attached

    # --- what the session needs before loading

    def parameters(self) -> Parameters:
        return _parameters(bool(self.pids), self.limits)

    def sets(self) -> tuple[IntSetMap, ...]:
        return (IntSetMap.of_ints("mqi_tgids", self.pids),) if self.pids else ()

    def subject(self) -> str:
        where = f", store files named from {self.store}" if self.store else ""
        return f"send-path syscalls of {subject_of(self.pids)}, per descriptor{where}"

    # --- the session's calls

    def start(self, program: LoadedProgram) -> None:
        self._socket_fields = frozenset(
            name for name, tracepoint in _SOCKET_TRACEPOINTS.items() if tracepoint in program.attached
        )
        for pid in self.pids:
            self._names.read_all(pid)  # in case it exits before the first interval ends
            self._watch.comm(pid)

    def collect(self, program: LoadedProgram, interval_s: float) -> SendpathSnapshot:
        traffic = self._traffic.gained(_traffic_entries(program.read("mqi_traffic")))
        sockets = self._sockets.gained(_socket_entries(program.read("mqi_sockets")))
        lost = sum(
            sum(change) for change in self._lost.gained(_lost_entries(program.read("mqi_lost"))).values()
        )
        seen = {key[0] for key in self._traffic.known_keys()} | {key[0] for key in self._sockets.known_keys()}
        ended = self._watch.newly_ended(set(self.pids) | seen)

        self._names.new_interval()
        processes, fds = self._tally(traffic, sockets)
        self._forget(program, ended)
        return _snapshot(
            kind="interval",
            interval_s=round(interval_s, 6),
            pids=self.pids,
            store=str(self.store) if self.store else None,
            lost_records=lost,
            processes=processes,
            fds=fds,
            exited_pids=tuple(sorted(ended & set(self.pids))),
            socket_fields=self._socket_fields,
        )

    def combine(self, summary: SendpathSnapshot | None, snapshot: SendpathSnapshot) -> SendpathSnapshot:
        return combine_snapshots(summary, snapshot)

    # --- assembling one interval

    def _tally(
        self, traffic: Mapping[tuple, tuple], sockets: Mapping[tuple, tuple]
    ) -> tuple[tuple[ProcessSendpath, ...], tuple[FdTraffic, ...]]:
        per_process: dict[int, _Counts] = defaultdict(_Counts)
        per_fd: dict[tuple[int, int, int], _Counts] = defaultdict(_Counts)
        for (tgid, syscall_id, fd, source_fd), gained in traffic.items():
            syscall = SYSCALLS[syscall_id]
            target = self._names.target(tgid, fd)
            _count_record(per_process[tgid], syscall, target, gained, bool(self.store))
            _count_record(per_fd[(tgid, fd, source_fd)], syscall, target, gained, bool(self.store))
        socket_counts = {
            key[0]: dict(zip(_SOCKET_FIELDS, change, strict=True)) for key, change in sockets.items()
        }
        processes = [
            _process_row(
                pid, self._watch.comm(pid), per_process[pid], self._socket_side(socket_counts.get(pid))
            )
            for pid in set(per_process) | set(socket_counts)
        ]
        fds = [self._fd_row(pid, fd, source_fd, counts) for (pid, fd, source_fd), counts in per_fd.items()]
        return tuple(sorted(processes, key=_by_traffic)), tuple(sorted(fds, key=_by_traffic))

    def _socket_side(self, gained: Mapping[str, int] | None) -> dict[str, int | None]:
        """The socket-side counts: None for those whose tracepoint this kernel lacks."""
        return {
            name: (gained or {}).get(name, 0) if name in self._socket_fields else None
            for name in _SOCKET_FIELDS
        }

    def _fd_row(self, pid: int, fd: int, source_fd: int, counts: _Counts) -> FdTraffic:
        target = self._names.target(pid, fd)
        if source_fd == NO_FD:
            return _fd_row(pid, fd, target, None, None, counts)
        return _fd_row(pid, fd, target, source_fd, self._names.target(pid, source_fd), counts)

    def _forget(self, program: LoadedProgram, ended: set[int]) -> None:
        """Drop the records of processes that are gone (their last counts were just read): a new process
        reusing the pid is not ours, and the map must not fill with the dead."""
        for key in self._traffic.known_keys():
            if key[0] in ended:
                program.delete("mqi_traffic", key)
                self._traffic.forget(key)
        for pid in ended:
            program.delete("mqi_sockets", (pid,))
            program.delete("mqi_tgids", (pid,))
            self._sockets.forget((pid,))
            self._names.forget(pid)
            self._watch.forget(pid)


def _traffic_entries(items) -> Iterable[tuple[tuple[int, ...], tuple[int, ...]]]:
    for key, value in items:
        yield (
            (key.tgid, key.syscall, key.fd, key.source_fd),
            (value.calls, value.errors, value.bytes, value.faults),
        )


def _socket_entries(items) -> Iterable[tuple[tuple[int, ...], tuple[int, ...]]]:
    for key, value in items:
        yield (_scalar(key),), tuple(getattr(value, name) for name in _SOCKET_MAP_FIELDS)


_SOCKET_MAP_FIELDS = ("sent_bytes", "copied_to_user_bytes", "tcp_sendmsg_passes")


def _lost_entries(items) -> Iterable[tuple[tuple[int, ...], tuple[int, ...]]]:
    for key, value in items:
        yield (_scalar(key),), (_scalar(value),)


# --- snapshots from process and descriptor rows ----------------------------------------------------------


def _sum_optional(values: Iterable[int | None]) -> int | None:
    present = [value for value in values if value is not None]
    return sum(present) if present else None


def _snapshot(
    *,
    kind: str,
    interval_s: float,
    pids: tuple[int, ...],
    store: str | None,
    lost_records: int,
    processes: tuple[ProcessSendpath, ...],
    fds: tuple[FdTraffic, ...],
    exited_pids: tuple[int, ...],
    socket_fields: frozenset[str],
    end_time_unix_s: float | None = None,
) -> SendpathSnapshot:
    """A snapshot whose totals are the sums of its process rows (paths are classified per process first,
    so the totals are sums of per-process paths, not a classification of summed bytes). Socket-side totals
    are None unless their field is in `socket_fields` (its tracepoint is attached)."""
    totals = _Counts()
    for row in processes:
        totals.add(_Counts.of_row(row))
    paths = SendPaths(*(sum(getattr(row.paths, name) for row in processes) for name in _PATH_FIELDS))
    return SendpathSnapshot(
        kind=kind,
        interval_s=interval_s,
        end_time_unix_s=time.time() if end_time_unix_s is None else end_time_unix_s,
        pids=pids,
        store=store,
        syscalls=totals.syscalls,
        syscall_errors=totals.syscall_errors,
        mode_switches=2 * totals.syscalls,
        bytes_kernel_to_user=totals.bytes_kernel_to_user,
        bytes_user_to_kernel=totals.bytes_user_to_kernel,
        bytes_in_kernel=totals.bytes_in_kernel,
        bytes_to_sockets=sum(paths.by_path().values()),
        cpu_copies_per_socket_byte=copies_per_byte(paths),
        paths=paths,
        faults_in_syscalls=totals.faults_in_syscalls,
        **{
            name: sum(getattr(row, name) or 0 for row in processes) if name in socket_fields else None
            for name in _SOCKET_FIELDS
        },
        lost_records=lost_records,
        processes=processes,
        fds=fds,
        exited_pids=exited_pids,
    )


_PATH_FIELDS = tuple(f.name for f in dataclasses.fields(SendPaths))


def combine_snapshots(summary: SendpathSnapshot | None, snapshot: SendpathSnapshot) -> SendpathSnapshot:
    """The session so far: processes merged by pid and descriptors by (pid, fd, source fd), each process's
    paths classified again from its summed bytes, and the totals summed from the merged rows."""
    if summary is None:
        return dataclasses.replace(snapshot, kind="summary")
    return _snapshot(
        kind="summary",
        interval_s=round(summary.interval_s + snapshot.interval_s, 6),
        pids=summary.pids,
        store=summary.store,
        lost_records=summary.lost_records + snapshot.lost_records,
        processes=_merge_processes(summary.processes, snapshot.processes),
        fds=_merge_fds(summary.fds, snapshot.fds),
        exited_pids=tuple(sorted({*summary.exited_pids, *snapshot.exited_pids})),
        socket_fields=frozenset(
            name
            for name in _SOCKET_FIELDS
            if getattr(summary, name) is not None or getattr(snapshot, name) is not None
        ),
        end_time_unix_s=snapshot.end_time_unix_s,
    )


def _merge_processes(
    earlier: Sequence[ProcessSendpath], later: Sequence[ProcessSendpath]
) -> tuple[ProcessSendpath, ...]:
    merged = {row.pid: row for row in earlier}
    for row in later:
        before = merged.get(row.pid)
        if before is None:
            merged[row.pid] = row
            continue
        counts = _Counts.of_row(before)
        counts.add(_Counts.of_row(row))
        socket = {name: _sum_optional((getattr(before, name), getattr(row, name))) for name in _SOCKET_FIELDS}
        merged[row.pid] = _process_row(row.pid, row.comm or before.comm, counts, socket)
    return tuple(sorted(merged.values(), key=_by_traffic))


def _merge_fds(earlier: Sequence[FdTraffic], later: Sequence[FdTraffic]) -> tuple[FdTraffic, ...]:
    merged = {(row.pid, row.fd, row.source_fd): row for row in earlier}
    for row in later:
        key = (row.pid, row.fd, row.source_fd)
        before = merged.get(key)
        if before is None:
            merged[key] = row
            continue
        counts = _Counts.of_row(before)
        counts.add(_Counts.of_row(row))
        merged[key] = dataclasses.replace(
            row,
            syscalls=counts.syscalls,
            syscall_errors=counts.syscall_errors,
            mode_switches=2 * counts.syscalls,
            bytes_kernel_to_user=counts.bytes_kernel_to_user,
            bytes_user_to_kernel=counts.bytes_user_to_kernel,
            bytes_in_kernel=counts.bytes_in_kernel,
            faults_in_syscalls=counts.faults_in_syscalls,
            per_syscall=counts.syscall_counts(),
        )
    return tuple(sorted(merged.values(), key=_by_traffic))
