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
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from probes.ebpf.inodes import FdNames, FdTarget
from probes.ebpf.loader import LoadedProgram, Parameters, ProgramSpec, registered_program
from probes.ebpf.scope import CounterDifferences, ScopedProbe, ScopeLimits, merge_rows, merged_pids, scalar
from probes.ebpf.tracepoints import SENDPATH_SYSCALLS
from probes.procfs import PROC_ROOT

PROBE_NAME = "sendpath"
NO_FD = -1

SYSCALLS = SENDPATH_SYSCALLS  # a syscall's position is its id in the program's map keys
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
class MapLimits(ScopeLimits):
    threads: int = 65536
    records: int = 65536  # (process, syscall, fd, source fd) combinations alive at once


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

    def fd_traffic_counts(self) -> dict[str, Any]:
        """The counts of an FdTraffic row."""
        return {
            "syscalls": self.syscalls,
            "syscall_errors": self.syscall_errors,
            "mode_switches": 2 * self.syscalls,
            "bytes_kernel_to_user": self.bytes_kernel_to_user,
            "bytes_user_to_kernel": self.bytes_user_to_kernel,
            "bytes_in_kernel": self.bytes_in_kernel,
            "faults_in_syscalls": self.faults_in_syscalls,
            "per_syscall": self.syscall_counts(),
        }


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
        **counts.fd_traffic_counts(),
    )


def _by_traffic(row: ProcessSendpath | FdTraffic) -> tuple:
    moved = row.bytes_kernel_to_user + row.bytes_user_to_kernel + row.bytes_in_kernel
    return (-moved, -row.syscalls, row.pid)


# --- the probe ---------------------------------------------------------------------------------------------


class SendpathProbe(ScopedProbe):
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
        super().__init__(pids, store, limits, proc_root)
        self._names = FdNames(self._store_files, proc_root)
        self._traffic = CounterDifferences()
        self._sockets = CounterDifferences()
        self._lost = CounterDifferences()
        self._socket_fields: frozenset[str] = frozenset()  # those whose tracepoint is attached

    # --- what the session needs before loading

    def parameters(self) -> Parameters:
        return self.scope_parameters(
            MAX_RECORDS=self.limits.records,
            NO_FD=NO_FD,
            **{f"SYSCALL_{name.upper()}": number for number, name in enumerate(SYSCALLS)},
        )

    def subject(self) -> str:
        where = f", store files named from {self.store}" if self.store else ""
        return f"send-path syscalls of {self.processes.subject()}, per descriptor{where}"

    # --- the session's calls

    def start(self, program: LoadedProgram) -> None:
        self._socket_fields = frozenset(
            name for name, tracepoint in _SOCKET_TRACEPOINTS.items() if tracepoint in program.attached
        )
        for pid in self.pids:
            self._names.read_all(pid)  # in case it exits before the first interval ends
        self.processes.remember_comms()

    def collect(self, program: LoadedProgram, interval_s: float) -> SendpathSnapshot:
        traffic = self._traffic.gained(_traffic_entries(program.read("mqi_traffic")))
        sockets = self._sockets.gained(_socket_entries(program.read("mqi_sockets")))
        lost = sum(
            sum(change) for change in self._lost.gained(_lost_entries(program.read("mqi_lost"))).values()
        )
        seen = {key[0] for key in self._traffic.known_keys()} | {key[0] for key in self._sockets.known_keys()}
        ended = self.processes.newly_ended(set(self.pids) | seen)

        self._names.new_interval()
        processes, fds = self._tally(traffic, sockets)
        self._forget(program, ended)
        return _snapshot(
            **self.interval_header(interval_s),
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
                pid, self.processes.comm(pid), per_process[pid], self._socket_side(socket_counts.get(pid))
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
            self.processes.forget(pid)


def default_parameters() -> Parameters:
    """What doctor's load test compiles: every process."""
    return SendpathProbe().parameters()


def _traffic_entries(items) -> Iterable[tuple[tuple[int, ...], tuple[int, ...]]]:
    for key, value in items:
        yield (
            (key.tgid, key.syscall, key.fd, key.source_fd),
            (value.calls, value.errors, value.bytes, value.faults),
        )


def _socket_entries(items) -> Iterable[tuple[tuple[int, ...], tuple[int, ...]]]:
    for key, value in items:
        yield (scalar(key),), tuple(getattr(value, name) for name in _SOCKET_MAP_FIELDS)


_SOCKET_MAP_FIELDS = ("sent_bytes", "copied_to_user_bytes", "tcp_sendmsg_passes")


def _lost_entries(items) -> Iterable[tuple[tuple[int, ...], tuple[int, ...]]]:
    for key, value in items:
        yield (scalar(key),), (scalar(value),)


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
        exited_pids=merged_pids(summary.exited_pids, snapshot.exited_pids),
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
    return tuple(sorted(merge_rows(earlier, later, ("pid",), _merge_process), key=_by_traffic))


def _merge_process(before: ProcessSendpath, row: ProcessSendpath) -> ProcessSendpath:
    counts = _Counts.of_row(before)
    counts.add(_Counts.of_row(row))
    socket = {name: _sum_optional((getattr(before, name), getattr(row, name))) for name in _SOCKET_FIELDS}
    return _process_row(row.pid, row.comm or before.comm, counts, socket)


def _merge_fds(earlier: Sequence[FdTraffic], later: Sequence[FdTraffic]) -> tuple[FdTraffic, ...]:
    return tuple(sorted(merge_rows(earlier, later, ("pid", "fd", "source_fd"), _merge_fd), key=_by_traffic))


def _merge_fd(before: FdTraffic, row: FdTraffic) -> FdTraffic:
    counts = _Counts.of_row(before)
    counts.add(_Counts.of_row(row))
    return dataclasses.replace(row, **counts.fd_traffic_counts())
