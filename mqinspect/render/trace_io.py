"""Draws the sendpath and syscalls probes' snapshots (their TraceViews are registered in render/trace.py).

Only draws: every number comes from a probe's frozen snapshot. Tables keep to 80 columns: numbers first, the
free-text column (a descriptor's name, a call's target) last, where it can be cut.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from mqinspect.render.trace_notes import Note
from mqinspect.render.units import human_bytes
from mqinspect.render.words import more
from probes.ebpf.sendpath import MAX_IOVECS, FdTraffic, ProcessSendpath, SendpathSnapshot
from probes.ebpf.syscalls import ProcessSyscalls, SyscallLatency, SyscallsSnapshot, TargetCalls

TOP_PROCESSES = 10
TOP_FDS = 12
TOP_TARGETS = 12
# Prefixes the JSON keeps and a table column can do without ("MADV_WILLNEED" -> "WILLNEED").
_DETAIL_PREFIXES = ("POSIX_FADV_", "MADV_", "MLOCK_", "MAP_", "MS_")


def _count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _bytes(value: int | None) -> str:
    return "-" if value is None else human_bytes(value)


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def duration_text(ns: int | float | None) -> str:
    if ns is None:
        return "-"
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= scale:
            return f"{ns / scale:.3g}{unit}"
    return f"{ns:.0f}ns"


def _at_most(ns: int | None) -> str:
    return "-" if ns is None else "≤" + duration_text(ns)


def _table(number_columns: Sequence[str], text_column: str, first: str = "pid") -> Table:
    """`first` (right-aligned), the number columns, then one text column that is cut when space runs out."""
    table = Table(box=None, pad_edge=False, padding=(0, 1, 0, 0), header_style="bold")
    table.add_column(first, justify="right", no_wrap=True)
    for name in number_columns:
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column(text_column, overflow="ellipsis")  # the only wrapping column: it gives way first
    return table


def _hidden_row(table: Table, hidden: int, noun: str) -> None:
    """A last row saying how many rows were left out, in the text column (the narrow ones stay narrow)."""
    if hidden > 0:
        table.add_row(*[""] * (len(table.columns) - 1), Text(f"… {more(hidden, noun)}", style="dim"))


# --- sendpath ------------------------------------------------------------------------------------------


def sendpath_table(snapshot: SendpathSnapshot, title: str) -> RenderableType:
    parts: list[RenderableType] = [Text(title, style="bold"), _sendpath_headline(snapshot)]
    if snapshot.processes:
        parts.append(_sendpath_processes(snapshot.processes))
    if snapshot.fds:
        parts.append(_sendpath_fds(snapshot.fds))
    return Group(*parts, Text(""))


def _sendpath_headline(snapshot: SendpathSnapshot) -> Text:
    used = [f"{path} {_bytes(moved)}" for path, moved in snapshot.paths.by_path().items() if moved]
    lines = [
        f"syscalls {_count(snapshot.syscalls)} (errors {_count(snapshot.syscall_errors)}), "
        f"mode switches {_count(snapshot.mode_switches)} (2 per syscall)",
        f"bytes kernel→user {_bytes(snapshot.bytes_kernel_to_user)}, "
        f"user→kernel {_bytes(snapshot.bytes_user_to_kernel)}, in kernel {_bytes(snapshot.bytes_in_kernel)}; "
        f"faults in calls {_count(snapshot.faults_in_syscalls)}",
        f"to sockets {_bytes(snapshot.bytes_to_sockets)}" + (f" by {', '.join(used)}" if used else ""),
        f"other writes to sockets {_bytes(snapshot.other_socket_write_bytes)}"
        + (
            f", unresolved {_bytes(snapshot.unresolved_socket_write_bytes)}"
            if snapshot.unresolved_socket_write_bytes
            else ""
        )
        + f"; CPU copies per socket byte {_ratio(snapshot.cpu_copies_per_socket_byte)}",
    ]
    if snapshot.socket_bytes_sent is not None or snapshot.socket_bytes_copied_to_user is not None:
        lines.append(
            f"socket side: sent {_bytes(snapshot.socket_bytes_sent)}, "
            f"copied to user {_bytes(snapshot.socket_bytes_copied_to_user)}, "
            f"tcp_sendmsg passes {_count(snapshot.tcp_sendmsg_passes)}"
        )
    return Text("\n".join(lines))


def _sendpath_processes(processes: Sequence[ProcessSendpath]) -> Table:
    table = _table(("syscalls", "k→user", "user→k", "in kern", "→sockets", "copies/B"), "main path  command")
    for row in processes[:TOP_PROCESSES]:
        table.add_row(
            str(row.pid),
            _count(row.syscalls),
            _bytes(row.bytes_kernel_to_user),
            _bytes(row.bytes_user_to_kernel),
            _bytes(row.bytes_in_kernel),
            _bytes(row.bytes_to_sockets),
            _ratio(row.cpu_copies_per_socket_byte),
            f"{row.main_path or '-':<10} {row.comm or '?'}",
        )
    _hidden_row(table, len(processes) - TOP_PROCESSES, "process")
    return table


def _fd_label(row: FdTraffic) -> Text:
    """The syscalls, what the socket bytes count as, then where the bytes came from and went: "read  /data/f",
    "sendfile sendfile  /data/f → socket:[123]", "sendto mmap+write  commitlog/0… (mapped) → TCP …"."""
    syscalls = ",".join(entry.syscall for entry in row.per_syscall)
    counted_as = f" {row.socket_bytes_as}" if row.socket_bytes_as else ""
    label = Text(f"{syscalls}{counted_as}  ")
    if row.source_name is not None:
        label.append(row.source_name, style="cyan" if row.source_kind in ("file", "mapping") else "")
        label.append(" → ")
    label.append(row.fd_name, style="cyan")
    return label


def _fd_numbers(row: FdTraffic) -> str:
    return str(row.fd) if row.source_fd is None else f"{row.source_fd}→{row.fd}"


def _sendpath_fds(fds: Sequence[FdTraffic]) -> Table:
    table = _table(("fd", "calls", "k→user", "user→k", "in kern", "faults"), "syscalls  descriptor")
    for row in fds[:TOP_FDS]:
        table.add_row(
            str(row.pid),
            _fd_numbers(row),
            _count(row.syscalls),
            _bytes(row.bytes_kernel_to_user),
            _bytes(row.bytes_user_to_kernel),
            _bytes(row.bytes_in_kernel),
            _count(row.faults_in_syscalls),
            _fd_label(row),
        )
    _hidden_row(table, len(fds) - TOP_FDS, "descriptor")
    return table


def sendpath_notes(snapshot: SendpathSnapshot) -> list[Note]:
    notes = []
    if snapshot.lost_records:
        notes.append(
            Note(
                "lost_records",
                f"{snapshot.lost_records:,} events did not fit the BPF maps this interval: the counts "
                "miss them",
            )
        )
    if snapshot.unresolved_socket_write_bytes:
        notes.append(
            Note(
                "unresolved_socket_writes",
                f"{human_bytes(snapshot.unresolved_socket_write_bytes)} written to sockets could not be "
                "placed in the writer's memory (its /proc/PID/maps unreadable, the mapping gone before the "
                f"interval's end, or writev/sendmsg iovecs past the first {MAX_IOVECS}): counted as "
                "unresolved, not as a send path",
            )
        )
    unknown = sum(row.syscalls for row in snapshot.fds if row.fd_kind == "unknown")
    if unknown:
        notes.append(
            Note(
                "unknown_fds",
                f"{unknown:,} calls were on descriptors closed before /proc/PID/fd could name them "
                "(kind unknown)",
            )
        )
    return notes


# --- syscalls ------------------------------------------------------------------------------------------


def syscalls_table(snapshot: SyscallsSnapshot, title: str) -> RenderableType:
    headline = Text(
        f"calls {_count(snapshot.syscalls)} (errors {_count(snapshot.syscall_errors)}), "
        f"mode switches {_count(snapshot.mode_switches)} (2 per call), "
        f"time in calls {duration_text(snapshot.total_ns)}\n"
        "p50, p99, max: upper bounds of log2 histogram buckets (the true value is at most that)"
    )
    parts: list[RenderableType] = [Text(title, style="bold"), headline]
    for process in snapshot.processes[:TOP_PROCESSES]:
        parts.append(_latency_table(process))
    if len(snapshot.processes) > TOP_PROCESSES:
        parts.append(Text(f"… {more(len(snapshot.processes) - TOP_PROCESSES, 'process')}", style="dim"))
    if snapshot.targets:
        parts.append(_targets_table(snapshot.targets))
    return Group(*parts, Text(""))


def _latency_table(process: ProcessSyscalls) -> Group:
    who = f"pid {process.pid} {process.comm or '?'}"
    heading = Text(f"{who}: {_count(process.calls)} calls, {duration_text(process.total_ns)}", style="bold")
    table = Table(box=None, pad_edge=False, padding=(0, 1, 0, 0), header_style="bold")
    for name in ("syscall", "calls", "errors", "total", "mean", "p50", "p99", "max", "bytes"):
        table.add_column(name, justify="right", no_wrap=True)
    for row in process.per_syscall:
        table.add_row(*_latency_cells(row))
    return Group(heading, table)


def _latency_cells(row: SyscallLatency) -> list[str]:
    return [
        row.syscall,
        _count(row.calls),
        _count(row.errors),
        duration_text(row.total_ns),
        duration_text(row.mean_ns),
        _at_most(row.p50_ns_at_most),
        _at_most(row.p99_ns_at_most),
        _at_most(row.max_ns_at_most),
        _bytes(row.length_bytes),
    ]


def _short_detail(detail: str) -> str:
    for prefix in _DETAIL_PREFIXES:
        detail = detail.replace(prefix, "")
    return detail


def _targets_table(targets: Sequence[TargetCalls]) -> Table:
    table = _table(("calls", "errors", "total", "bytes"), "syscall  target")
    for row in targets[:TOP_TARGETS]:
        label = Text(f"{row.syscall} {_short_detail(row.detail)}  " if row.detail else f"{row.syscall}  ")
        label.append(row.target, style="cyan" if row.target_kind == "file" else "")
        table.add_row(
            str(row.pid),
            _count(row.calls),
            _count(row.errors),
            duration_text(row.total_ns),
            _bytes(row.length_bytes),
            label,
        )
    _hidden_row(table, len(targets) - TOP_TARGETS, "target")
    return table


def syscalls_notes(snapshot: SyscallsSnapshot) -> list[Note]:
    notes = []
    if snapshot.lost_records:
        notes.append(
            Note(
                "lost_records",
                f"{snapshot.lost_records:,} calls did not fit the BPF maps this interval: the counts "
                "miss them",
            )
        )
    return notes
