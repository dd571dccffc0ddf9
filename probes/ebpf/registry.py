"""Every eBPF probe of mqinspect, listed once.

An entry says what a probe is: its name (as in `mqinspect trace NAME`), the module and class of its user side
(a ScopedProbe), its kernel side (programs/NAME.bpf.c), the tracepoints that program attaches to (`required`:
the probe cannot load without them; `optional`: they add detail where the kernel has them), what its trace
command says of it, the options that command has beyond the shared ones, and which fields of its snapshots
count the events its programs handle.

Everything that needs the list of probes reads it here: the loader checks each program against its entry
(loader.program_spec), doctor checks each probe's tracepoints and loads its program (probes/capabilities.py,
smoke.load_all_probes), the trace CLI makes one command per entry (mqinspect/cli/trace.py), the trace
renderers and the dashboard find a probe by name here, and benchmarks/probe_overhead.py attaches them all.
Nothing here imports a probe: a probe's module is imported when it is used (`ProbeEntry.probe_class`), so
reading the registry costs no start-up time.

Adding a probe: its user side in probes/ebpf/NAME.py (a ScopedProbe), its kernel side in programs/NAME.bpf.c
(it includes "scope.h"), an entry below, and its TraceView in mqinspect/render/trace.py.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

# The syscalls the sendpath and syscalls probes trace; a syscall's position in its tuple is its id in the
# program's map keys (SYSCALL_<NAME> defines).
SENDPATH_SYSCALLS = (
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
MEMORY_SYSCALLS = (
    "mmap",
    "munmap",
    "madvise",
    "mlock",
    "mlock2",
    "munlock",
    "msync",
    "fadvise64",
    "mincore",
    "fsync",
    "fdatasync",
)
# Syscalls that make the kernel fault pages in for the process (the faults probe tells those faults apart).
POPULATE_SYSCALLS = (
    "mmap",
    "mlock",
    "mlock2",
    "mlockall",
    "madvise",
    "process_madvise",
    "mremap",
    "remap_file_pages",
)
# Where the store is on ext4, the probes that break events down per store file take each new file for the
# store's from its creation (programs/store_files.h).
STORE_FILE_CREATION = ("ext4:ext4_allocate_inode", "ext4:ext4_free_inode")
# Every probe follows the processes its traced ones start (`trace ... -- COMMAND`: programs/scope.h).
PROCESS_FOLLOWING = ("task:task_newtask", "sched:sched_process_exit")


def syscall_pairs(names: tuple[str, ...]) -> tuple[str, ...]:
    """The enter and exit tracepoints of each syscall."""
    return tuple(f"syscalls:sys_{edge}_{name}" for name in names for edge in ("enter", "exit"))


@dataclass(frozen=True)
class ProbeOption:
    """An integer option of one probe's trace command beyond the shared ones: `--flag N` becomes the probe's
    constructor keyword `name`; not given, it is None (the probe's own default)."""

    name: str
    flag: str
    help: str
    minimum: int | None = None


@dataclass(frozen=True)
class ProbeEntry:
    """One probe. `summary` is the first line of its trace command's help (and its line in `trace --help`),
    `description` the paragraph after it; `pid_help` replaces the shared --pid help where the probe counts
    more than the processes' own events; `store_help` says what --store does for it. `process_events` and
    `total_events` are the fields of its snapshot's process rows and of its totals that count the events its
    programs handled (benchmarks/probe_overhead.py divides a cost by them)."""

    name: str
    module: str
    class_name: str
    program: str
    required: tuple[str, ...]
    optional: tuple[str, ...]
    summary: str
    description: str
    store_help: str
    process_events: tuple[str, ...]
    total_events: tuple[str, ...]
    pid_help: str | None = None
    options: tuple[ProbeOption, ...] = ()

    @property
    def tracepoints(self) -> tuple[str, ...]:
        return (*self.required, *self.optional)

    def probe_class(self) -> Any:
        """The probe's class, its module imported now."""
        return getattr(importlib.import_module(self.module), self.class_name)


FAULTS = ProbeEntry(
    name="faults",
    module="probes.ebpf.faults",
    class_name="FaultsProbe",
    program="faults.bpf.c",
    required=(
        "exceptions:page_fault_user",
        "filemap:mm_filemap_fault",
        "filemap:mm_filemap_map_pages",
        "filemap:mm_filemap_add_to_page_cache",
    ),
    optional=(
        "exceptions:page_fault_kernel",
        "writeback:writeback_dirty_folio",
        *syscall_pairs(POPULATE_SYSCALLS),
        *STORE_FILE_CREATION,
        *PROCESS_FOLLOWING,
    ),
    summary="Page faults per process, file or store segment, and page range.",
    description=(
        "Minor and major faults, populate faults (mlock, MADV_POPULATE_*) and fault-around, beside the "
        "kernel's own /proc counters. The session ends as said below."
    ),
    store_help=(
        "break faults down by its CommitLog, ConsumeQueue and index segments (other files count in the "
        "totals only)."
    ),
    options=(
        ProbeOption(
            "chunk_pages", "--chunk-pages", "Pages per page range; default: 1/64 of each file.", minimum=1
        ),
    ),
    process_events=("faults", "populate_faults"),
    total_events=("faults", "file_faults", "populate_faults", "fault_around_events"),
)
PAGECACHE = ProbeEntry(
    name="pagecache",
    module="probes.ebpf.pagecache",
    class_name="PagecacheProbe",
    program="pagecache.bpf.c",
    required=("filemap:mm_filemap_add_to_page_cache", "filemap:mm_filemap_delete_from_page_cache"),
    optional=(
        "readahead:page_cache_sync_ra",
        "readahead:page_cache_async_ra",
        "readahead:page_cache_ra_order",
        "readahead:page_cache_ra_unbounded",
        "filemap:mm_filemap_get_pages",
        *STORE_FILE_CREATION,
        *PROCESS_FOLLOWING,
    ),
    summary=(
        "Pages entering the page cache (misses) and leaving it (evictions), readahead, and the read path's "
        "hits and misses, per process and file."
    ),
    description="Counted in pages, with large folios counted whole. The session ends as said below.",
    pid_help=(
        "Count the page-cache additions, readahead and read-path hits of this process (repeat for more), and "
        "removals of the files it added pages to or read, by any process (reclaim and fadvise remove pages, "
        "not the reader); default: every process and file."
    ),
    store_help=(
        "count its CommitLog, ConsumeQueue and index segments, with page ranges (other files count in the "
        "totals only)."
    ),
    process_events=("added_folios", "deleted_folios"),
    total_events=("added_folios", "deleted_folios"),
)
WRITEBACK = ProbeEntry(
    name="writeback",
    module="probes.ebpf.writeback",
    class_name="WritebackProbe",
    program="writeback.bpf.c",
    required=(
        "writeback:writeback_dirty_folio",
        "filemap:mm_filemap_add_to_page_cache",
        "filemap:mm_filemap_delete_from_page_cache",
        "writeback:writeback_single_inode_start",
        "writeback:writeback_single_inode",
        "writeback:writeback_start",
        "writeback:writeback_written",
        "writeback:global_dirty_state",
        "writeback:balance_dirty_pages",
    ),
    optional=("ext4:ext4_writepages_result", *STORE_FILE_CREATION, *PROCESS_FOLLOWING),
    summary=(
        "Pages dirtied and written back per file, the dirty state against its thresholds, throttled writers."
    ),
    description=(
        "A writer over the dirty limit is paused in balance_dirty_pages(): the kernel's side of RocketMQ's "
        '"[PC_SYNCHRONIZED] broker busy". The session ends as said below.'
    ),
    pid_help=(
        "Count the pages this process dirties and its throttling (repeat for more), and writeback of the "
        "files it dirtied, by any process (the flusher threads write them); default: every process."
    ),
    store_help="count its CommitLog, ConsumeQueue and index segments (other files count in the totals only).",
    process_events=("dirtied_folios",),
    total_events=("dirtied_folios",),
)
SENDPATH = ProbeEntry(
    name="sendpath",
    module="probes.ebpf.sendpath",
    class_name="SendpathProbe",
    program="sendpath.bpf.c",
    required=syscall_pairs(SENDPATH_SYSCALLS),
    optional=(
        "tcp:tcp_sendmsg_locked",
        "sock:sock_send_length",
        "skb:skb_copy_datagram_iovec",
        "exceptions:page_fault_kernel",
        "filemap:mm_filemap_get_pages",
        "filemap:mm_filemap_add_to_page_cache",
        *PROCESS_FOLLOWING,
    ),
    summary=(
        "Bytes per descriptor and send path (read+write, mmap+write, sendfile, splice), and CPU copies per "
        "byte."
    ),
    description=(
        "Read-, write-, send- and splice-like syscalls: calls, bytes copied kernel→user and user→kernel, "
        "bytes moved inside the kernel, mode switches, faults inside the copies, beside the socket-side "
        "counts. A path is named only with evidence (the buffer a file read filled, a file's mapping); other "
        "writes to sockets (protocol headers, requests) are shown apart. The session ends as said below."
    ),
    store_help=(
        "name its segments (and those it creates while traced), and count only buffers read from them as "
        "read+write and only their mappings as mmap+write."
    ),
    process_events=("syscalls",),
    total_events=("syscalls",),
)
SYSCALLS = ProbeEntry(
    name="syscalls",
    module="probes.ebpf.syscalls",
    class_name="SyscallsProbe",
    program="syscalls.bpf.c",
    required=syscall_pairs(MEMORY_SYSCALLS),
    optional=PROCESS_FOLLOWING,
    summary=(
        "Memory and flush syscalls (mmap, madvise, mlock, msync, fsync, ...): counts and latency histograms."
    ),
    description=(
        "Shows warm-up and flushing per process and per file or segment, with p50/p99/max as histogram "
        "bucket bounds. The session ends as said below."
    ),
    store_help="list calls per store segment (others count in the totals).",
    process_events=("calls",),
    total_events=("syscalls",),
)

PROBES: tuple[ProbeEntry, ...] = (FAULTS, PAGECACHE, WRITEBACK, SENDPATH, SYSCALLS)


class UnknownProbe(KeyError):
    """A name that is not a registered probe's."""


def probe_entry(name: str) -> ProbeEntry:
    """The entry of probe `name`; UnknownProbe when there is none."""
    for entry in PROBES:
        if entry.name == name:
            return entry
    raise UnknownProbe(f"no probe named {name!r}: the probes are {', '.join(entry.name for entry in PROBES)}")


def all_tracepoints() -> frozenset[str]:
    """Every tracepoint any probe attaches to."""
    return frozenset(tracepoint for entry in PROBES for tracepoint in entry.tracepoints)
