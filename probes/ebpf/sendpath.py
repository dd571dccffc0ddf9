"""The sendpath probe: how the traced processes move bytes between files, pipes and sockets, by which send
path the bytes they deliver to sockets travel (named only with evidence), and how many CPU copies between
user and kernel memory each byte sent to a socket cost.

Kernel side: programs/sendpath.bpf.c (its header explains each tracepoint). Per process, syscall, file
descriptor and source (the source descriptor of sendfile and splice; for write-like calls, where their
buffer's bytes came from, see below) it counts the calls, errors, bytes returned and kernel-mode page faults
taken inside the calls, cumulatively; user space takes differences each interval, names each descriptor
from /proc/PID/fd, places buffers in /proc/PID/maps, and classifies the traffic.

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
a descriptor that is closed by then keeps the name it had when it was last read). With --store the store is
listed again every interval, like the other probes do, so segments created during the session (a rolled
CommitLog) are the store's from the interval they appear in; a file under the store's directory that has a
store file's name (commitlog/<20 digits>, ...) is the store's even before a listing saw it, or after it was
deleted. Where the kernel told at the time, its word wins over /proc/PID/fd read at the interval's end (a
descriptor closed and its number reused in between): the file a call read pages of
(filemap:mm_filemap_get_pages: device and inode), and whether a socket took the bytes a call sent
(sock:sock_send_length during the call).

Where a write-like call's bytes came from (the program tells, per user buffer, and user space names it):
  a read       the buffer starts inside what the same thread's last successful read-like call filled (read,
               pread64, recvfrom: their buffer; readv, recvmsg: their first iovec): the source is that
               call's file (as the page cache saw it) or descriptor (source_fd), a file, a socket or a pipe
  a mapping    otherwise the buffer's first byte is placed in the process's mappings (/proc/PID/maps, read
               when the session starts and again each interval in which the process wrote to a socket, the
               reading before kept beside it; a process that has exited keeps its last reading): a mapping
               of a regular file (with --store: of a store segment) is the source "… (mapped)"; anonymous
               memory, the heap and stacks are "memory". Where the two readings hold different mappings at
               the address (a segment unmapped by retention and its range mapped again), either may have
               held the bytes: they are placed when both count alike ("A or B (mapped)"), else unplaced.
  unplaced     the buffer could not be placed: the process's mappings could not be read (it exited before
               they were read for the first time, or they belong to another user and the tracer lacks the
               right to read them), the address lay outside every mapping read (mapped and unmapped between
               two readings), the mapping there changed as above, or it was a writev/sendmsg iovec past the
               first MAX_IOVECS (16); and a read whose descriptor was closed before it could be named, of
               no file the page cache saw
A buffer is placed by its first byte; a write that starts in one mapping and runs on into the next counts
for the first. A buffer filled by a memcpy rather than a read syscall, or read by one thread and written by
another, has no read evidence: it is placed by address like any other.

Send paths, per process, over the bytes delivered to sockets (write-like calls, sendfile and splice whose
descriptor is a socket), each named only with evidence:
  read+write   written to a socket from a buffer the thread's last read filled from a regular file (with
               --store: from one of the store's segments, including those created after the session started)
  mmap+write   written to a socket from a mapping of a regular file (with --store: of a store segment)
  sendfile     sendfile64 into a socket
  splice       splice into a socket (from a pipe that splice or vmsplice filled)
The rest of the bytes written to sockets from user memory are not a send path:
  other_socket_write_bytes       written from memory that is neither: protocol headers and requests built in
                                 the heap, bytes a socket or pipe delivered, files read outside the store
  unresolved_socket_write_bytes  written from buffers that could not be placed, or filled by a read of an
                                 unknown source (above)
  bytes_to_sockets = the four paths + other + unresolved: every byte delivered to sockets.
  cpu_copies_per_socket_byte = (2 x read+write + 1 x (mmap+write + other + unresolved) + 0 x sendfile/splice)
               / bytes_to_sockets: the CPU copies between user and kernel memory per byte delivered, as the
               path model counts them (read+write: page cache -> user, user -> socket; mmap+write: mapping ->
               socket). Other and unresolved socket writes are counted with the one copy the write itself
               made (user -> socket), which each of them surely cost; how their buffer was filled is unknown,
               so for them the figure is a lower bound.
  main_path    the send path that delivered the most bytes (None when no path delivered any).

Per descriptor row, for a consumer's view of the sends (mqinspect.sampling.consumers):
  pages_added_in_syscalls  pages the calls' thread added to the page cache during the calls
               (filemap:mm_filemap_add_to_page_cache; for a write from a read's buffer, during that read):
               the pages they had to read from disk, cold pages, with the readahead they started; None where
               the tracepoint is not attached
  source_end_bytes         how far into the source file the latest call read (above)

Socket side (optional tracepoints; None where the kernel lacks them): socket_bytes_sent (sock_send_length:
what sockets accepted, by any syscall), socket_bytes_copied_to_user (skb_copy_datagram_iovec: receive-side
copies out of socket buffers), tcp_sendmsg_passes (tcp_sendmsg_locked: passes of TCP's send loop).

Not seen: io_uring operations (they bypass the syscall tracepoints), copy_file_range and tee, and whether a
send used MSG_ZEROCOPY (counted as a copy from user memory, which on loopback it is).

Cost: while attached, every process's 13 traced syscalls go through the syscall tracepoints (the kernel's
slow path for all tasks, traced or not). Measured on the project's VM with `dd bs=1` (4 M read/write calls,
about 0.3 us each): about +0.25 us per call of an untraced process and +0.55 us per call of a traced one.
At 10^5 such calls per second that is about 5 % of one CPU: small, not free. The programs' own run time
(benchmarks/sendpath_cost.py, the kernel's run statistics, which add two clock reads to each figure):
about 110-140 ns per entry and 85-110 ns per exit of an untraced process's call, and 100-135 ns per
page-cache read of any process (mm_filemap_get_pages), about 90 ns per folio any process adds to the page
cache (mm_filemap_add_to_page_cache); 180-265 ns per entry and 135-220 ns per exit of a
traced call (its thread's state is updated in place; before this probe named paths by evidence, an LRU
update per entry made them 345-480 and 235-300 ns).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from probes.ebpf import registry
from probes.ebpf.inodes import (
    PAGE_SHIFT,
    AddressSpace,
    AddressSpaces,
    FdNames,
    FdTarget,
    FileId,
    FileLabel,
    FileNames,
    MappedRange,
)
from probes.ebpf.loader import LoadedProgram, Parameters, ProgramSpec, program_spec
from probes.ebpf.registry import SENDPATH_SYSCALLS
from probes.ebpf.scope import (
    FOLLOWING_FUNCTIONS,
    CounterDifferences,
    LostRecords,
    ScopedProbe,
    ScopeLimits,
    SnapshotHeader,
    current_store_files,
    scalar,
)
from probes.ebpf.tally import Tally, merge_rows, merged_pids
from probes.process_files import DELETED_SUFFIX
from store.inspection.formats import detect_format

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
    "filemap:mm_filemap_get_pages": "mqi_get_pages",
    "filemap:mm_filemap_add_to_page_cache": "mqi_page_added",
    "exceptions:page_fault_kernel": "mqi_copy_fault",
    "sock:sock_send_length": "mqi_sock_send",
    "skb:skb_copy_datagram_iovec": "mqi_skb_copy",
    "tcp:tcp_sendmsg_locked": "mqi_tcp_send",
    **FOLLOWING_FUNCTIONS,
}

KERNEL_TO_USER = frozenset({"read", "pread64", "readv", "recvfrom", "recvmsg"})
USER_TO_KERNEL = frozenset({"write", "pwrite64", "writev", "sendto", "sendmsg"})
IN_KERNEL = frozenset({"sendfile64", "splice"})  # vmsplice: by the pipe end, see _direction()
SENDS = USER_TO_KERNEL | IN_KERNEL  # the calls that can deliver bytes to a socket

PATHS = ("read+write", "mmap+write", "sendfile", "splice")
OTHER = "other"  # socket writes from user memory without evidence of a path
UNRESOLVED = "unresolved"  # socket writes whose buffer could not be placed
# CPU copies between user and kernel memory per byte delivered to a socket (the path model, §3.1); other and
# unresolved socket writes: the copy the write itself made.
COPIES_PER_BYTE = {"read+write": 2, "mmap+write": 1, "sendfile": 0, "splice": 0, OTHER: 1, UNRESOLVED: 1}

# Where a record's bytes came from: ORIGIN_<NAME> in the program is the position here.
ORIGINS = ("none", "read", "address", "unseen")
ORIGIN_NONE, ORIGIN_READ, ORIGIN_ADDRESS, ORIGIN_UNSEEN = range(len(ORIGINS))
GROUP_SHIFT = 4  # an address record covers 16 pages (64 KiB) of the address space, bytes per page
GROUP_PAGES = 1 << GROUP_SHIFT
MAX_IOVECS = 16  # iovecs of one writev/sendmsg placed one by one; the bytes of the rest are unplaced
RETIRE_AFTER_READS = 3  # a traffic record that has not moved for this many reads is removed from the map


def _program() -> ProgramSpec:
    """Every syscall's enter and exit handler, checked against the tracepoint registry."""
    functions = {f"syscalls:sys_enter_{name}": _ENTER_FUNCTIONS[name] for name in SYSCALLS}
    functions |= {f"syscalls:sys_exit_{name}": EXIT_FUNCTION for name in SYSCALLS}
    functions |= _OPTIONAL_FUNCTIONS
    return program_spec(registry.SENDPATH, functions)


PROGRAM = _program()
PAGES_ADDED_TRACEPOINT = "filemap:mm_filemap_add_to_page_cache"


@dataclass(frozen=True)
class MapLimits(ScopeLimits):
    threads: int = 65536
    records: int = 65536  # (process, syscall, fd, source, page group) combinations within one interval


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
    """Bytes delivered to sockets, by send path (see the module docstring for the evidence each needs)."""

    read_write_bytes: int
    mmap_write_bytes: int
    sendfile_bytes: int
    splice_bytes: int

    def by_path(self) -> dict[str, int]:
        return dict(zip(PATHS, dataclasses.astuple(self), strict=True))


@dataclass(frozen=True)
class FdTraffic:
    """One descriptor of one process, per source: for sendfile and splice the source descriptor; for
    write-like calls where their buffers' bytes came from (a read's descriptor, a mapping, memory, or
    unplaced); None for calls without one (reads, calls that moved no byte)."""

    pid: int
    fd: int
    fd_kind: str
    fd_name: str
    source_fd: int | None  # a descriptor source: sendfile/splice's, or the read that filled the buffer
    source_kind: str | None  # file, socket, pipe, other, unknown; mapping, memory, unplaced
    source_name: str | None
    syscalls: int
    syscall_errors: int
    mode_switches: int
    bytes_kernel_to_user: int
    bytes_user_to_kernel: int
    bytes_in_kernel: int
    faults_in_syscalls: int
    per_syscall: tuple[SyscallCount, ...]
    # What this row's bytes delivered to a socket count as: a path of PATHS, "other" or "unresolved";
    # None when the row delivered nothing to a socket.
    socket_bytes_as: str | None = None
    # Pages the calls' thread added to the page cache during the calls (for a write from a read's buffer:
    # during that read): the cold pages they read, with the readahead they started; None where the kernel
    # lacks filemap:mm_filemap_add_to_page_cache.
    pages_added_in_syscalls: int | None = None
    # How far into the source file the row's latest call read, in bytes (the end of its last page): from
    # filemap:mm_filemap_get_pages for sendfile, splice and read+write, from the mapping for mmap+write (the
    # furthest buffer's page plus its bytes, right to within a page); None where neither told.
    source_end_bytes: int | None = None


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
    other_socket_write_bytes: int  # socket writes from user memory without evidence of a path
    unresolved_socket_write_bytes: int  # socket writes whose buffer could not be placed
    bytes_to_sockets: int
    cpu_copies_per_socket_byte: float | None
    paths: SendPaths
    socket_bytes_sent: int | None
    socket_bytes_copied_to_user: int | None
    tcp_sendmsg_passes: int | None
    per_syscall: tuple[SyscallCount, ...]


@dataclass(frozen=True)
class SendpathSnapshot(SnapshotHeader):
    """Send-path traffic over one interval (kind "interval") or the whole session (kind "summary")."""

    syscalls: int
    syscall_errors: int
    mode_switches: int
    bytes_kernel_to_user: int
    bytes_user_to_kernel: int
    bytes_in_kernel: int
    bytes_to_sockets: int
    cpu_copies_per_socket_byte: float | None
    paths: SendPaths
    other_socket_write_bytes: int
    unresolved_socket_write_bytes: int
    faults_in_syscalls: int
    socket_bytes_sent: int | None
    socket_bytes_copied_to_user: int | None
    tcp_sendmsg_passes: int | None
    lost_records: int
    processes: tuple[ProcessSendpath, ...]
    fds: tuple[FdTraffic, ...]
    exited_pids: tuple[int, ...] = ()
    followed_pids: tuple[int, ...] = ()  # processes started by traced ones, followed (scope.h)


# --- where bytes came from --------------------------------------------------------------------------------

MEMORY = FdTarget("memory", "anonymous memory")
MAPPED = " (mapped)"  # a mapping source's name: the file's, with this after it
MAPS_UNREADABLE = FdTarget("unplaced", "unplaced: the process's mappings could not be read")
OUTSIDE_MAPPINGS = FdTarget("unplaced", "unplaced: outside every mapping read")
MAPPING_CHANGED = FdTarget("unplaced", "unplaced: the mapping there changed during the interval")
BEYOND_IOVECS = FdTarget("unplaced", f"unplaced: iovecs past the first {MAX_IOVECS}")
# Mappings with an inode that are shared memory rather than a file's pages: MAP_SHARED|MAP_ANONYMOUS memory
# ("/dev/zero (deleted)"), System V segments, and devices (except the files of /dev/shm, a tmpfs).
_NOT_FILES = ("/dev/zero", "/SYSV")


def store_label_by_path(
    file: FileId, path: str, store_prefix: str, file_kind: Callable[[str], str | None]
) -> FileLabel | None:
    """The label of a store file known only by the path a process has it open or mapped at (`store_prefix`:
    the store's root with a trailing separator; `file_kind`: its format's, for a path under the root), as
    store_files() labels it; None when the path is not one of a store file's."""
    path = path.removesuffix(DELETED_SUFFIX)  # a deleted file's, as /proc/PID/fd links show it
    if not path.startswith(store_prefix):
        return None
    relative = path[len(store_prefix) :]
    kind = file_kind(relative)
    return None if kind is None else FileLabel(file, relative, path, kind)


def maps_a_file(mapping: MappedRange) -> bool:
    """Whether a mapping holds a regular file's pages (by its /proc/PID/maps line: an inode and a path)."""
    path = mapping.path or ""
    if mapping.file is None or not path.startswith("/") or path.startswith(_NOT_FILES):
        return False
    return not path.startswith("/dev/") or path.startswith("/dev/shm/")


def socket_bytes_as(syscall: str, target: FdTarget, source: FdTarget | None, store: bool) -> str | None:
    """What a record's bytes count as when its descriptor is a socket: a send path only with evidence, else
    "other" or "unresolved"; None when they are not delivered to a socket."""
    if target.kind != "socket":
        return None
    if syscall == "sendfile64":
        return "sendfile"
    if syscall == "splice":
        return "splice"
    if syscall not in USER_TO_KERNEL:
        return None
    if source is None or source.kind == "memory":
        return OTHER
    if source.kind in ("unplaced", "unknown"):  # no buffer placed, or a read of a descriptor never named
        return UNRESOLVED
    from_store = source.in_store or not store
    if source.kind == "file" and from_store:
        return "read+write"
    if source.kind == "mapping" and from_store:
        return "mmap+write"
    return OTHER


# --- counting ----------------------------------------------------------------------------------------------


# The counts a descriptor row carries as fields of its own.
_FD_FIELDS = (
    "syscalls",
    "syscall_errors",
    "bytes_kernel_to_user",
    "bytes_user_to_kernel",
    "bytes_in_kernel",
    "faults_in_syscalls",
)
# A process's or a descriptor's counts (a Tally), each a ProcessSendpath field of the same name but the two
# paths, which are in its SendPaths; and per syscall, ("calls" | "errors" | "returned_bytes", syscall).
_COUNTS = (
    *_FD_FIELDS,
    "file_bytes_to_user",
    "socket_bytes_from_user",
    "socket_bytes_by_sendfile",
    "socket_bytes_by_splice",
    "other_socket_write_bytes",
    "unresolved_socket_write_bytes",
    "read_write_bytes",
    "mmap_write_bytes",
)
_PER_SYSCALL = ("calls", "errors", "returned_bytes")  # the fields of a SyscallCount


def _add_calls(counts: Tally, syscall: str, calls: int, errors: int, moved: int) -> None:
    counts[("calls", syscall)] += calls
    counts[("errors", syscall)] += errors
    counts[("returned_bytes", syscall)] += moved


def _tally_of_row(row: ProcessSendpath | FdTraffic) -> Tally:
    """The counts of a row (a descriptor's row has no send paths: they count 0)."""
    counts = Tally.of_fields(row, (name for name in _ROW_FIELDS if hasattr(row, name)))
    counts.add(pages_added_in_syscalls=getattr(row, "pages_added_in_syscalls", None) or 0)
    paths = getattr(row, "paths", None)
    if paths is not None:
        counts.add(read_write_bytes=paths.read_write_bytes, mmap_write_bytes=paths.mmap_write_bytes)
    for entry in row.per_syscall:
        _add_calls(counts, entry.syscall, entry.calls, entry.errors, entry.returned_bytes)
    return counts


def _syscall_counts(counts: Tally) -> tuple[SyscallCount, ...]:
    return tuple(
        SyscallCount(name, *(counts[(part, name)] for part in _PER_SYSCALL))
        for name in SYSCALLS
        if ("calls", name) in counts
    )


def _fd_traffic_counts(counts: Tally, added_pages: bool = True) -> dict[str, Any]:
    """The counts of an FdTraffic row (`added_pages`: whether the kernel counted them)."""
    return {
        **counts.named(_FD_FIELDS),
        "pages_added_in_syscalls": counts["pages_added_in_syscalls"] if added_pages else None,
        "mode_switches": 2 * counts["syscalls"],
        "per_syscall": _syscall_counts(counts),
    }


_PATH_COUNTS = {"read+write": "read_write_bytes", "mmap+write": "mmap_write_bytes"}
_CLASS_COUNTS = {
    **_PATH_COUNTS,
    "sendfile": "socket_bytes_by_sendfile",
    "splice": "socket_bytes_by_splice",
    OTHER: "other_socket_write_bytes",
    UNRESOLVED: "unresolved_socket_write_bytes",
}
# The counts a process row carries as fields of its own (read+write and mmap+write are in its paths).
_ROW_FIELDS = tuple(name for name in _COUNTS if name not in _PATH_COUNTS.values())
# The counts a snapshot carries as totals of its own.
_SNAPSHOT_FIELDS = (*_FD_FIELDS, "other_socket_write_bytes", "unresolved_socket_write_bytes")


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
    counts: Tally,
    syscall: str,
    target: FdTarget,
    counted_as: str | None,
    gained: tuple[int, ...],
    store: bool,
) -> None:
    """Fold one record's gain (calls, errors, bytes, faults) into `counts`; `counted_as` is what its bytes
    delivered to a socket count as (socket_bytes_as)."""
    calls, errors, moved, faults = gained
    counts["syscalls"] += calls
    counts["syscall_errors"] += errors
    counts["faults_in_syscalls"] += faults
    _add_calls(counts, syscall, calls, errors, moved)
    counts[_direction(syscall, target)] += moved
    if syscall in KERNEL_TO_USER and target.kind == "file" and (target.in_store or not store):
        counts["file_bytes_to_user"] += moved
    if counted_as is None:
        return
    if syscall in USER_TO_KERNEL:
        counts["socket_bytes_from_user"] += moved
    counts[_CLASS_COUNTS[counted_as]] += moved


def send_paths(counts: Tally) -> SendPaths:
    """The send paths of the tallies: each path's bytes as the evidence placed them."""
    return SendPaths(
        read_write_bytes=counts["read_write_bytes"],
        mmap_write_bytes=counts["mmap_write_bytes"],
        sendfile_bytes=counts["socket_bytes_by_sendfile"],
        splice_bytes=counts["socket_bytes_by_splice"],
    )


def bytes_by_class(paths: SendPaths, other: int, unresolved: int) -> dict[str, int]:
    """Every byte delivered to sockets: by send path, other and unresolved."""
    return {**paths.by_path(), OTHER: other, UNRESOLVED: unresolved}


def _delivered(paths: SendPaths, counts: Tally) -> dict[str, int]:
    return bytes_by_class(paths, counts["other_socket_write_bytes"], counts["unresolved_socket_write_bytes"])


def copies_per_byte(delivered: Mapping[str, int]) -> float | None:
    """CPU copies between user and kernel memory per byte delivered (bytes by class, bytes_by_class)."""
    total = sum(delivered.values())
    if not total:
        return None
    return round(sum(COPIES_PER_BYTE[name] * moved for name, moved in delivered.items()) / total, 4)


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
    pid: int, comm: str | None, counts: Tally, socket: Mapping[str, int | None]
) -> ProcessSendpath:
    paths = send_paths(counts)
    delivered = _delivered(paths, counts)
    return ProcessSendpath(
        pid=pid,
        comm=comm,
        main_path=main_path(paths),
        mode_switches=2 * counts["syscalls"],
        bytes_to_sockets=sum(delivered.values()),
        cpu_copies_per_socket_byte=copies_per_byte(delivered),
        paths=paths,
        per_syscall=_syscall_counts(counts),
        **counts.named(_ROW_FIELDS),
        **{name: socket.get(name) for name in _SOCKET_FIELDS},
    )


@dataclass(frozen=True)
class _FdKey:
    """What one FdTraffic row gathers: a descriptor (as what it was when used), the source of its bytes,
    and what they count as."""

    pid: int
    fd: int
    target: FdTarget
    source_fd: int | None
    source: FdTarget | None
    counted_as: str | None


def _fd_row(key: _FdKey, counts: Tally, end_bytes: int | None, added_pages: bool) -> FdTraffic:
    return FdTraffic(
        pid=key.pid,
        fd=key.fd,
        fd_kind=key.target.kind,
        fd_name=key.target.name,
        source_fd=key.source_fd,
        source_kind=key.source.kind if key.source else None,
        source_name=key.source.name if key.source else None,
        socket_bytes_as=key.counted_as,
        source_end_bytes=end_bytes,
        **_fd_traffic_counts(counts, added_pages),
    )


def _by_traffic(row: ProcessSendpath | FdTraffic) -> tuple:
    moved = row.bytes_kernel_to_user + row.bytes_user_to_kernel + row.bytes_in_kernel
    return (-moved, -row.syscalls, row.pid)


# --- the probe ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Record:
    """What one mqi_traffic record gained over an interval."""

    pid: int
    syscall: str
    fd: int
    source_fd: int
    origin: int
    file: FileId | None  # the file the call (ORIGIN_NONE) or the last read (ORIGIN_READ) read pages of
    group: int
    gained: tuple[int, int, int, int]  # calls, errors, bytes, faults
    page_bytes: tuple[int, ...]  # ORIGIN_ADDRESS: bytes of buffers starting in each page of the group
    to_socket: bool = False  # a socket accepted the calls' bytes (sock_send_length during the calls)
    added_pages: int = 0  # pages the calls' thread added to the page cache during them
    end_page: int = 0  # one past the last page of the file the latest call read (0: unknown)


class SendpathProbe(ScopedProbe):
    """`mqinspect trace sendpath`: see the module docstring. Construct, then run in a TraceSession."""

    name = registry.SENDPATH.name
    program = PROGRAM
    map_limits = MapLimits

    def __init__(self, pids: Sequence[int] = (), **scope: Any):
        super().__init__(pids, **scope)
        self._names = FdNames(self._store_files, self._proc_root)  # the same dict: it learns new segments too
        self._file_names = FileNames({}, self._proc_root)  # files the kernel named by inode, by their paths
        self._spaces = AddressSpaces(self._proc_root)
        self._spaces_this_interval: dict[int, tuple[AddressSpace, ...]] = {}
        self._traffic = CounterDifferences()
        self._idle: dict[tuple[int, ...], int] = {}  # reads in a row in which a traffic record did not move
        self._sockets = CounterDifferences()
        self._lost = LostRecords()
        self._seen: set[int] = set()  # processes with records, until they exit
        self._store_prefix = f"{self.store.resolve()}{os.sep}" if self.store else None
        self._store_file_kind = detect_format(self.store).file_kind if self.store else None
        self._socket_fields: frozenset[str] = frozenset()  # those whose tracepoint is attached
        self._counts_added_pages = False  # filemap:mm_filemap_add_to_page_cache is attached

    # --- what the session needs before loading

    def parameters(self) -> Parameters:
        return self.scope_parameters(
            MAX_RECORDS=self.limits.records,
            NO_FD=NO_FD,
            PAGE_SHIFT=PAGE_SHIFT,
            GROUP_SHIFT=GROUP_SHIFT,
            MAX_IOVECS=MAX_IOVECS,
            **{f"ORIGIN_{name.upper()}": number for number, name in enumerate(ORIGINS)},
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
        self._counts_added_pages = PAGES_ADDED_TRACEPOINT in program.attached
        for pid in self.pids:  # in case it exits before the first interval ends
            self._names.read_all(pid)
            self._spaces.snapshot(pid)
        self.processes.remember_comms()

    def collect(self, program: LoadedProgram, interval_s: float) -> SendpathSnapshot:
        records = self._traffic_gained(program)
        sockets = self._sockets.gained(_socket_entries(program.read("mqi_sockets")))
        lost = self._lost.since_last_read(program)
        self._seen |= {record.pid for record in records} | {key[0] for key in self._sockets.known_keys()}
        ended = self.processes.newly_ended(set(self.pids) | self._seen)

        self._follow_store()
        self._names.new_interval()
        self._file_names.new_interval()
        self._spaces.new_interval()
        self._spaces_this_interval.clear()
        processes, fds = self._tally(records, sockets)
        self._forget(program, ended)
        return _snapshot(
            **self.interval_header(interval_s, program),
            lost_records=lost,
            processes=processes,
            fds=fds,
            exited_pids=tuple(sorted(ended & set(self.pids))),
            socket_fields=self._socket_fields,
        )

    def combine(self, summary: SendpathSnapshot | None, snapshot: SendpathSnapshot) -> SendpathSnapshot:
        return combine_snapshots(summary, snapshot)

    # --- assembling one interval

    def _follow_store(self) -> None:
        """Learn the segments the store created since the last look (the shared listing the other probes
        follow the store with). Files of the store stay known after their deletion: a descriptor or a
        mapping may outlive the name."""
        if self.store is not None:
            self._store_files.update(current_store_files(self.store))

    def _store_label(self, file: FileId | None, path: str) -> FileLabel | None:
        """The store's label of `file`, open or mapped at `path`: from the listing, else from the path
        itself when it has the shape of a store file under the store's directory (a segment the listing has
        not seen yet, or never will: created and deleted between two listings, as happens to segments that
        retention removes while a slow consumer still reads them). Learned once, kept."""
        if file is None or self._store_prefix is None or self._store_file_kind is None:
            return None
        known = self._store_files.get(file)
        if known is None:
            known = store_label_by_path(file, path, self._store_prefix, self._store_file_kind)
            if known is not None:
                self._store_files[file] = known
        return known

    def _named(self, pid: int, fd: int) -> FdTarget:
        """What descriptor `fd` of `pid` is, a store file named as one even before the listing knew it."""
        target = self._names.target(pid, fd)
        if target.kind != "file" or target.in_store:
            return target
        label = self._store_label(target.file, target.name)
        return dataclasses.replace(target, name=label.name, in_store=True) if label else target

    def _target(self, record: _Record) -> FdTarget:
        """What a record's descriptor was when the calls used it. The kernel's word wins over /proc/PID/fd
        read now, which may name another file or socket under a number closed and reused since: a read's
        file as the page cache saw it, and, where sock_send_length is attached, whether a socket took the
        bytes."""
        read_file = record.file if record.syscall in KERNEL_TO_USER else None
        target = self._file_named(record.pid, record.fd, read_file)
        if "socket_bytes_sent" not in self._socket_fields or record.syscall not in SENDS:
            return target
        if record.to_socket and target.kind != "socket":
            return FdTarget("socket", f"a socket (descriptor {record.fd} was closed before it was named)")
        if not record.to_socket and target.kind == "socket" and record.gained[2]:
            return FdTarget("unknown", f"not a socket then (descriptor {record.fd} was reused since)")
        return target

    def _file_named(self, pid: int, fd: int, file: FileId | None) -> FdTarget:
        """Descriptor `fd` of `pid`, or, when the kernel said which file the call read pages of (`file`) and
        the descriptor refers to another by now (closed and reused), that file: named by the store, else by
        its inode."""
        target = self._named(pid, fd)
        if file is None or target.file == file:
            return target
        label = self._store_files.get(file)
        if label is None:  # the path the process holds it open or mapped under, if it still does
            label = self._file_names.label(file, pid)
            label = (self._store_label(file, label.path) if label.path else None) or label
        return FdTarget("file", label.name, file=file, in_store=label.segment_kind is not None)

    def _tally(
        self, records: Iterable[_Record], sockets: Mapping[tuple, tuple]
    ) -> tuple[tuple[ProcessSendpath, ...], tuple[FdTraffic, ...]]:
        store = bool(self.store)
        per_process: dict[int, Tally] = defaultdict(Tally)
        per_fd: dict[_FdKey, Tally] = defaultdict(Tally)
        ends: dict[_FdKey, int] = {}
        for record in records:
            target = self._target(record)
            for position, (source_fd, source, gained, end) in enumerate(self._sources(record, target)):
                counted_as = socket_bytes_as(record.syscall, target, source, store) if gained[2] else None
                key = _FdKey(record.pid, record.fd, target, source_fd, source, counted_as)
                _count_record(per_process[record.pid], record.syscall, target, counted_as, gained, store)
                _count_record(per_fd[key], record.syscall, target, counted_as, gained, store)
                if position == 0:
                    per_fd[key]["pages_added_in_syscalls"] += record.added_pages
                if end:
                    ends[key] = max(ends.get(key, 0), end)
        socket_counts = {
            key[0]: dict(zip(_SOCKET_FIELDS, change, strict=True)) for key, change in sockets.items()
        }
        processes = [
            _process_row(
                pid, self.processes.comm(pid), per_process[pid], self._socket_side(socket_counts.get(pid))
            )
            for pid in set(per_process) | set(socket_counts)
        ]
        fds = [
            _fd_row(key, counts, ends.get(key), self._counts_added_pages) for key, counts in per_fd.items()
        ]
        return tuple(sorted(processes, key=_by_traffic)), tuple(sorted(fds, key=_by_traffic))

    def _sources(
        self, record: _Record, target: FdTarget
    ) -> Iterator[tuple[int | None, FdTarget | None, tuple[int, int, int, int], int]]:
        """The record's gain by where its bytes came from: (source fd, source, gain, end) parts, `end` being
        how far into the source file the bytes reach (0: unknown). The call counts go with the first part;
        an address record is split by the mappings its pages lie in."""
        end_bytes = record.end_page << PAGE_SHIFT
        if record.origin in (ORIGIN_NONE, ORIGIN_READ) and record.source_fd != NO_FD:
            source = self._file_named(record.pid, record.source_fd, record.file)
            yield record.source_fd, source, record.gained, end_bytes
        elif record.origin == ORIGIN_UNSEEN:
            yield None, BEYOND_IOVECS, record.gained, 0
        elif record.origin == ORIGIN_ADDRESS and target.kind == "socket" and record.syscall in USER_TO_KERNEL:
            calls, errors, _moved, faults = record.gained
            for position, (source, moved, end) in enumerate(
                self._placed(record.pid, record.group, record.page_bytes)
            ):
                yield None, source, (calls, errors, moved, faults) if position == 0 else (0, 0, moved, 0), end
        else:  # reads, calls that moved nothing, and writes to what is not a socket: no source to name
            yield None, None, record.gained, end_bytes

    def _placed(self, pid: int, group: int, page_bytes: Sequence[int]) -> list[tuple[FdTarget, int, int]]:
        """The bytes of an address record by what holds each page: the whole group at once when one mapping
        covers it in every reading, else page by page. With each part, how far into the mapped file its
        pages reach (the end of the last page sent from; 0 when not one file's mapping)."""
        spaces = self._address_spaces(pid)
        if not spaces:
            return [(MAPS_UNREADABLE, sum(page_bytes), 0)]
        start = group << (PAGE_SHIFT + GROUP_SHIFT)
        end = start + (GROUP_PAGES << PAGE_SHIFT)
        covering = [space.find(start) for space in spaces]
        if all(mapping is not None and mapping.end >= end for mapping in covering):
            sources = {self._mapping_source(mapping) for mapping in covering if mapping is not None}
            if len(sources) == 1:
                source = sources.pop()
                last = max(page for page, moved in enumerate(page_bytes) if moved)
                end = _end_in_file(source, covering[0], start + (last << PAGE_SHIFT), page_bytes[last])
                return [(source, sum(page_bytes), end)]
        parts: dict[FdTarget, list[int]] = {}
        for page, moved in enumerate(page_bytes):
            if moved:
                address = start + (page << PAGE_SHIFT)
                source = self._source_at(spaces, address)
                part = parts.setdefault(source, [0, 0])
                part[0] += moved
                part[1] = max(part[1], _end_in_file(source, spaces[0].find(address), address, moved))
        return [(source, moved, end) for source, (moved, end) in parts.items()]

    def _source_at(self, spaces: Sequence[AddressSpace], address: int) -> FdTarget:
        """What holds `address`: the mapping there now, or at the reading before if it is gone now. When the
        two readings hold different things there (unmapped and mapped again during the interval, as a new
        segment takes the place of one retention deleted), either may have held the bytes when they were
        sent: they are placed only if both count the same (both store segments, both memory), else not."""
        sources = sorted(
            {self._mapping_source(found) for space in spaces if (found := space.find(address))},
            key=lambda source: source.name,
        )
        if not sources:
            return OUTSIDE_MAPPINGS
        if len(sources) == 1:
            return sources[0]
        if all(source.kind == "memory" for source in sources):
            return MEMORY
        if all(source.kind == "mapping" and source.in_store == sources[0].in_store for source in sources):
            names = " or ".join(source.name.removesuffix(MAPPED) for source in sources)
            return FdTarget("mapping", f"{names}{MAPPED}", in_store=sources[0].in_store)
        return MAPPING_CHANGED

    def _address_spaces(self, pid: int) -> tuple[AddressSpace, ...]:
        """The mappings of `pid` read now, then those of the reading before (a mapping unmapped during the
        interval, such as a segment deleted by retention, is only there); () when none could be read."""
        if pid not in self._spaces_this_interval:
            earlier = self._spaces.snapshot(pid)  # the last reading, or a first one now
            now = self._spaces.snapshot(pid, fresh=True)  # read at most once per interval
            found = (now,) if earlier is None or earlier is now else (now, earlier)
            self._spaces_this_interval[pid] = tuple(space for space in found if space is not None)
        return self._spaces_this_interval[pid]

    def _mapping_source(self, mapping: MappedRange) -> FdTarget:
        if not maps_a_file(mapping):
            return dataclasses.replace(MEMORY, name=mapping.shown_path) if mapping.path else MEMORY
        label = self._store_label(mapping.file, mapping.path or "")
        name = label.name if label else mapping.shown_path
        return FdTarget("mapping", f"{name}{MAPPED}", file=mapping.file, in_store=label is not None)

    def _socket_side(self, gained: Mapping[str, int] | None) -> dict[str, int | None]:
        """The socket-side counts: None for those whose tracepoint this kernel lacks."""
        return {
            name: (gained or {}).get(name, 0) if name in self._socket_fields else None
            for name in _SOCKET_FIELDS
        }

    def _traffic_gained(self, program: LoadedProgram) -> list[_Record]:
        """What each mqi_traffic record gained since the last read. The records are cumulative and read in
        place; one that has not moved for RETIRE_AFTER_READS reads (a page group of a mapping no longer sent
        from) is removed, so that the map stays small over a long session: taken out in one step with what
        it holds, so that a call added to it since the read (the same addresses mapped again for a new
        segment) is counted, not lost."""
        entries = list(_traffic_entries(program.read("mqi_traffic")))
        end_pages = {key: now[_END_PAGE] for key, now in entries}
        gained = self._traffic.gained(entries)
        for key, _now in entries:
            self._idle[key] = 0 if key in gained else self._idle.get(key, 0) + 1
            if self._idle[key] >= RETIRE_AFTER_READS:
                late = self._retire(program, key)
                if late is not None:
                    gained[key] = late
        return [_record(key, change, end_pages.get(key, 0)) for key, change in gained.items()]

    def _retire(self, program: LoadedProgram, key: tuple[int, ...]) -> tuple[int, ...] | None:
        """Remove a record that stopped moving; what it gained since the last read, if anything."""
        taken = program.take("mqi_traffic", key)
        late = None if taken is None else self._traffic.gained([(key, _traffic_value(taken))]).get(key)
        self._traffic.forget(key)
        self._idle.pop(key, None)
        return late

    def _forget(self, program: LoadedProgram, ended: set[int]) -> None:
        """Drop what is kept for processes that are gone (their last counts were just read): a new process
        reusing the pid is not ours, and the maps must not fill with the dead."""
        for key in [key for key in self._traffic.known_keys() if key[0] in ended]:
            program.delete("mqi_traffic", key)
            self._traffic.forget(key)
            self._idle.pop(key, None)
        for pid in ended:
            program.delete("mqi_sockets", (pid,))
            program.delete("mqi_tgids", (pid,))
            self._sockets.forget((pid,))
            self._names.forget(pid)
            self._spaces.forget(pid)
            self._seen.discard(pid)
            self.processes.forget(pid)


def _end_in_file(source: FdTarget, mapping: MappedRange | None, page_address: int, moved: int) -> int:
    """How far into the file mapped at `page_address` the `moved` bytes of the buffers starting in that page
    reach, rounded up to a page (buffers start anywhere in their page: right to within a page), when `source`
    is that one file's mapping; else 0."""
    if source.kind != "mapping" or mapping is None or mapping.file != source.file or source.file is None:
        return 0
    reach = (mapping.file_page(page_address) << PAGE_SHIFT) + moved
    page = 1 << PAGE_SHIFT
    return -(-reach // page) * page


_TRAFFIC_KEY_FIELDS = ("tgid", "syscall", "fd", "source_fd", "origin", "dev", "ino", "group", "to_socket")


def _traffic_entries(items) -> Iterator[tuple[tuple[int, ...], tuple[int, ...]]]:
    """mqi_traffic as (key fields, (calls, errors, bytes, faults, pages added, end page, bytes of each page of
    the group)). The end page is the latest call's, not a count: its difference means nothing (_record)."""
    for key, value in items:
        yield tuple(getattr(key, name) for name in _TRAFFIC_KEY_FIELDS), _traffic_value(value)


def _traffic_value(value) -> tuple[int, ...]:
    # added_pages and end_page: absent from values made before the program had them (canned in tests)
    added, end_page = getattr(value, "added_pages", 0), getattr(value, "end_page", 0)
    return (value.calls, value.errors, value.bytes, value.faults, added, end_page, *value.page_bytes)


_END_PAGE = 5  # the end page's place in a traffic value


def _record(key: tuple[int, ...], change: tuple[int, ...], end_page: int) -> _Record:
    tgid, syscall, fd, source_fd, origin, dev, ino, group, to_socket = key
    return _Record(
        pid=tgid,
        syscall=SYSCALLS[syscall],
        fd=fd,
        source_fd=source_fd,
        origin=origin,
        file=FileId.from_kernel(dev, ino) if ino else None,
        group=group,
        gained=(change[0], change[1], change[2], change[3]),
        page_bytes=change[_END_PAGE + 1 :] if origin == ORIGIN_ADDRESS else (),
        to_socket=bool(to_socket),
        added_pages=change[4],
        end_page=end_page,
    )


def _socket_entries(items) -> Iterable[tuple[tuple[int, ...], tuple[int, ...]]]:
    for key, value in items:
        yield (scalar(key),), tuple(getattr(value, name) for name in _SOCKET_MAP_FIELDS)


_SOCKET_MAP_FIELDS = ("sent_bytes", "copied_to_user_bytes", "tcp_sendmsg_passes")


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
    followed_pids: tuple[int, ...] = (),
    socket_fields: frozenset[str],
    end_time_unix_s: float | None = None,
) -> SendpathSnapshot:
    """A snapshot whose totals are the sums of its process rows. Socket-side totals are None unless their
    field is in `socket_fields` (its tracepoint is attached)."""
    totals = Tally()
    for row in processes:
        totals.add(_tally_of_row(row))
    paths = send_paths(totals)
    delivered = _delivered(paths, totals)
    return SendpathSnapshot(
        kind=kind,
        interval_s=interval_s,
        end_time_unix_s=time.time() if end_time_unix_s is None else end_time_unix_s,
        pids=pids,
        store=store,
        **totals.named(_SNAPSHOT_FIELDS),
        mode_switches=2 * totals["syscalls"],
        bytes_to_sockets=sum(delivered.values()),
        cpu_copies_per_socket_byte=copies_per_byte(delivered),
        paths=paths,
        **{
            name: sum(getattr(row, name) or 0 for row in processes) if name in socket_fields else None
            for name in _SOCKET_FIELDS
        },
        lost_records=lost_records,
        processes=processes,
        fds=fds,
        exited_pids=exited_pids,
        followed_pids=followed_pids,
    )


def combine_snapshots(summary: SendpathSnapshot | None, snapshot: SendpathSnapshot) -> SendpathSnapshot:
    """The session so far: processes merged by pid and descriptors by (pid, fd, source, what their socket
    bytes count as), and the totals summed from the merged rows."""
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
        followed_pids=merged_pids(summary.followed_pids, snapshot.followed_pids),
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
    counts = _tally_of_row(before)
    counts.add(_tally_of_row(row))
    socket = {name: _sum_optional((getattr(before, name), getattr(row, name))) for name in _SOCKET_FIELDS}
    return _process_row(row.pid, row.comm or before.comm, counts, socket)


_FD_IDENTITY = (
    "pid",
    "fd",
    "fd_kind",
    "fd_name",
    "source_fd",
    "source_kind",
    "source_name",
    "socket_bytes_as",
)


def _merge_fds(earlier: Sequence[FdTraffic], later: Sequence[FdTraffic]) -> tuple[FdTraffic, ...]:
    return tuple(sorted(merge_rows(earlier, later, _FD_IDENTITY, _merge_fd), key=_by_traffic))


def _merge_fd(before: FdTraffic, row: FdTraffic) -> FdTraffic:
    counts = _tally_of_row(before)
    counts.add(_tally_of_row(row))
    end = row.source_end_bytes if row.source_end_bytes is not None else before.source_end_bytes
    added = row.pages_added_in_syscalls is not None or before.pages_added_in_syscalls is not None
    return dataclasses.replace(row, source_end_bytes=end, **_fd_traffic_counts(counts, added))
