"""The kernel tracepoints each mqinspect probe attaches to. Stable tracepoints only: no kprobes, no fentry.

`required` tracepoints must all exist for the probe to load; `optional` ones add detail where present.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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


def _syscall_pairs(names: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(f"syscalls:sys_{edge}_{name}" for name in names for edge in ("enter", "exit"))


@dataclass(frozen=True)
class ProbeTracepoints:
    probe: str
    required: tuple[str, ...]
    optional: tuple[str, ...] = ()


PROBES: tuple[ProbeTracepoints, ...] = (
    ProbeTracepoints(
        "faults",
        (
            "exceptions:page_fault_user",
            "filemap:mm_filemap_fault",
            "filemap:mm_filemap_map_pages",
            "filemap:mm_filemap_add_to_page_cache",
        ),
        (
            "exceptions:page_fault_kernel",
            "writeback:writeback_dirty_folio",
            *_syscall_pairs(POPULATE_SYSCALLS),
            *STORE_FILE_CREATION,
        ),
    ),
    ProbeTracepoints(
        "pagecache",
        ("filemap:mm_filemap_add_to_page_cache", "filemap:mm_filemap_delete_from_page_cache"),
        (
            "readahead:page_cache_sync_ra",
            "readahead:page_cache_async_ra",
            "readahead:page_cache_ra_order",
            "readahead:page_cache_ra_unbounded",
            *STORE_FILE_CREATION,
        ),
    ),
    ProbeTracepoints(
        "writeback",
        (
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
        ("ext4:ext4_writepages_result", *STORE_FILE_CREATION),
    ),
    ProbeTracepoints(
        "sendpath",
        _syscall_pairs(SENDPATH_SYSCALLS),
        (
            "tcp:tcp_sendmsg_locked",
            "sock:sock_send_length",
            "skb:skb_copy_datagram_iovec",
            "exceptions:page_fault_kernel",
            "filemap:mm_filemap_get_pages",
        ),
    ),
    ProbeTracepoints("syscalls", _syscall_pairs(MEMORY_SYSCALLS)),
)


def tracepoint_format_path(tracefs: Path, tracepoint: str) -> Path:
    category, name = tracepoint.split(":", 1)
    return tracefs / "events" / category / name / "format"


def present_tracepoints(tracefs: Path) -> frozenset[str]:
    """Every tracepoint of every probe that this kernel offers under the mounted tracefs."""
    wanted = {tp for probe in PROBES for tp in (*probe.required, *probe.optional)}
    return frozenset(tp for tp in wanted if tracepoint_format_path(tracefs, tp).exists())
