"""The trace sessions' compact stream: one timestamped line per interval of a probe's totals (the block with
its per-process and per-file breakdown is printed for one interval, and as the summary at the end). CSV rows
carry every flat field of the snapshot instead (render/trace.snapshot_csv_row), under the snapshot's names.

Counts of events are plain numbers under the event's name (faults, calls); pages are shown as the bytes they
hold, under keys that stay in pages in CSV (`added_pages`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mqinspect.render.stream_lines import Field
from mqinspect.render.trace_io import duration_text
from mqinspect.render.units import human_bytes
from probes.ebpf import registry
from probes.residency.mincore import PAGE_SIZE


def _count(value: int) -> str:
    return f"{value:,}"


def _page_bytes(pages: int) -> str:
    return human_bytes(pages * PAGE_SIZE)


def _counts(*names: tuple[str, str], width: int = 8) -> list[Field[Any]]:
    """Fields of event counts: (snapshot field, header)."""
    return [Field(name, header, _getter(name), _count, width=width) for name, header in names]


def _pages(*names: tuple[str, str], width: int = 9) -> list[Field[Any]]:
    """Fields of page counts, shown as the bytes they hold."""
    return [Field(name, header, _getter(name), _page_bytes, width=width) for name, header in names]


def _getter(name: str) -> Any:
    return lambda snapshot: getattr(snapshot, name)


def _file_faults(snapshot: Any) -> int:
    return snapshot.kernel_placed_faults + snapshot.maps_placed_faults


def _copies(value: float) -> str:
    return f"{value:.2f}x"


# Each registered probe's line, by its name in probes/ebpf/registry.py.
LINE_FIELDS: dict[str, Sequence[Field[Any]]] = {
    registry.FAULTS.name: (
        *_counts(("faults", "faults"), ("minor_faults", "minor"), ("major_faults", "major")),
        Field("file_page_faults", "on files", _file_faults, _count, width=8),
        *_counts(("anonymous_faults", "anon"), ("populate_faults", "populate")),
        *_pages(("fault_around_pages", "around")),
    ),
    registry.PAGECACHE.name: (
        *_pages(("added_pages", "added"), ("deleted_pages", "deleted")),
        *_counts(("sync_readahead_requests", "ra sync"), ("async_readahead_requests", "ra async")),
        *_pages(("readahead_window_pages", "ra window"), width=10),
    ),
    registry.WRITEBACK.name: (
        *_pages(("dirtied_pages", "dirtied"), ("written_pages", "written")),
        *_pages(("flusher_written_pages", "by flusher"), ("written_pages_all_files", "all files"), width=10),
        Field("throttled_processes", "throttled", lambda s: len(s.throttled), _count, width=9),
    ),
    registry.SENDPATH.name: (
        Field("bytes_to_sockets", "to sockets", _getter("bytes_to_sockets"), human_bytes, width=10),
        Field("bytes_kernel_to_user", "to user", _getter("bytes_kernel_to_user"), human_bytes, width=9),
        Field("bytes_user_to_kernel", "to kernel", _getter("bytes_user_to_kernel"), human_bytes, width=9),
        Field("cpu_copies_per_socket_byte", "copies/B", _getter("cpu_copies_per_socket_byte"), _copies),
        *_counts(("syscalls", "calls"), ("faults_in_syscalls", "faults")),
    ),
    registry.SYSCALLS.name: (
        *_counts(("syscalls", "calls"), ("syscall_errors", "errors"), ("mode_switches", "switches")),
        Field("total_ns", "in calls", _getter("total_ns"), duration_text, width=9),
    ),
}
