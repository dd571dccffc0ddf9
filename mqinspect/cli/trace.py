"""`mqinspect trace PROBE`: eBPF tracing sessions, one interval at a time, with a summary at the end.

Every probe command shares the session options (--interval, --count | --duration, --format, --print-bpf)
and `run_trace()`, which owns the session's shape: validate, print the program or load it, announce on
stderr, stream one snapshot per interval, end on count, duration, Ctrl-C or SIGTERM with a summary and exit 0.

Adding a probe: its kernel and user side in probes/ebpf (NAME.py with a Probe, programs/NAME.bpf.c, an
entry in session.PROBE_MODULES and tracepoints.PROBES), its TraceView in mqinspect/render/trace.py, a
command function below that builds the probe from its own options, and one entry in TRACE_COMMANDS.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from mqinspect.cli.options import OutputFormat, format_option
from mqinspect.errors import BadInput
from mqinspect.render.console import stdout_console
from mqinspect.render.machine import write_jsonl
from mqinspect.render.trace import (
    VIEWS,
    TraceView,
    interval_title,
    startup_line,
    summary_title,
)
from probes.ebpf.faults import FaultsProbe
from probes.ebpf.pagecache import PagecacheProbe
from probes.ebpf.sendpath import SendpathProbe
from probes.ebpf.session import Probe, TraceSession, program_text
from probes.ebpf.syscalls import SyscallsProbe
from probes.ebpf.writeback import WritebackProbe
from probes.procfs import ProcessGone

trace_app = typer.Typer(
    help="eBPF tracing sessions (tracepoints only): rolling output every interval, a summary at the end. "
    "Needs root or CAP_BPF+CAP_PERFMON; --print-bpf needs nothing.",
    no_args_is_help=True,
)


@dataclass(frozen=True)
class SessionOptions:
    interval_s: float
    count: int | None
    duration_s: float | None
    output: str
    print_bpf: bool


EVERY_PROCESS = "Trace this process (repeat for more); default: every process."


def pid_option(help: str = EVERY_PROCESS) -> Any:
    return typer.Option([], "--pid", "-p", help=help)


def store_option(help: str) -> Any:
    return typer.Option(None, "--store", help=f"A RocketMQ store root: {help}")


def interval_option() -> Any:
    return typer.Option(1.0, "--interval", "-i", min=0.05, help="Seconds per interval.")


def count_option() -> Any:
    return typer.Option(None, "--count", "-c", min=1, help="Intervals to trace; default: until Ctrl-C.")


def duration_option() -> Any:
    return typer.Option(None, "--duration", "-d", min=0.05, help="Seconds to trace; default: until Ctrl-C.")


def print_bpf_option() -> Any:
    return typer.Option(
        False,
        "--print-bpf",
        help="Print the BPF program with its -D defines and map contents, and exit without loading it "
        "(needs no privileges).",
    )


def run_trace(probe: Probe[Any], options: SessionOptions, view: TraceView) -> None:
    """The session every probe command runs. SIGTERM ends it like Ctrl-C: summary, exit status 0."""
    if options.count is not None and options.duration_s is not None:
        raise BadInput("--count and --duration both say when to stop: give one of them")
    if options.print_bpf:
        sys.stdout.write(program_text(probe))
        return
    with TraceSession(probe) as session:
        print(
            startup_line(probe.subject(), options.interval_s, options.count, options.duration_s),
            file=sys.stderr,
            flush=True,
        )
        for snapshot in session.intervals(
            options.interval_s, count=options.count, duration_s=options.duration_s
        ):
            _emit(snapshot, interval_title(snapshot), options, view)
    if session.summary is not None:  # drawn after the program is detached
        _emit(session.summary, summary_title(session.summary), options, view)


def _emit(snapshot: Any, title: str, options: SessionOptions, view: TraceView) -> None:
    for note in view.notes(snapshot) if snapshot.kind == "interval" else ():
        print(f"mqinspect: {note}", file=sys.stderr, flush=True)
    if options.output == OutputFormat.JSONL:
        write_jsonl(snapshot, sys.stdout)
    else:
        stdout_console().print(view.table(snapshot, title))
        sys.stdout.flush()


# --- probes ------------------------------------------------------------------------------------------------


def faults(
    pid: list[int] = pid_option(),
    store: Path | None = store_option(
        "break faults down by its CommitLog, ConsumeQueue and index segments "
        "(other files count in the totals only)."
    ),
    chunk_pages: int | None = typer.Option(
        None, "--chunk-pages", min=1, help="Pages per page range; default: 1/64 of each file."
    ),
    interval: float = interval_option(),
    count: int | None = count_option(),
    duration: float | None = duration_option(),
    output: str = format_option(OutputFormat.TABLE, OutputFormat.JSONL),
    print_bpf: bool = print_bpf_option(),
) -> None:
    """Page faults per process, file or store segment, and page range.

    Minor and major faults, populate faults (mlock, MADV_POPULATE_*) and fault-around, beside the kernel's own
    /proc counters. Runs until Ctrl-C (or SIGTERM), --count or --duration, then prints a summary."""
    probe = _probe_for_pids(FaultsProbe, pid, store, chunk_pages=chunk_pages)
    run_trace(probe, SessionOptions(interval, count, duration, output, print_bpf), VIEWS["faults"])


def sendpath(
    pid: list[int] = pid_option(),
    store: Path | None = store_option(
        "name its segments (and those it creates while traced), and count only buffers read from them as "
        "read+write and only their mappings as mmap+write."
    ),
    interval: float = interval_option(),
    count: int | None = count_option(),
    duration: float | None = duration_option(),
    output: str = format_option(OutputFormat.TABLE, OutputFormat.JSONL),
    print_bpf: bool = print_bpf_option(),
) -> None:
    """Bytes per descriptor and send path (read+write, mmap+write, sendfile, splice), and CPU copies per byte.

    Read-, write-, send- and splice-like syscalls: calls, bytes copied kernel→user and user→kernel, bytes
    moved inside the kernel, mode switches, faults inside the copies, beside the socket-side counts. A path
    is named only with evidence (the buffer a file read filled, a file's mapping); other writes to sockets
    (protocol headers, requests) are shown apart. Runs until Ctrl-C (or SIGTERM), --count or --duration,
    then prints a summary."""
    probe = _probe_for_pids(SendpathProbe, pid, store)
    run_trace(probe, SessionOptions(interval, count, duration, output, print_bpf), VIEWS["sendpath"])


def syscalls(
    pid: list[int] = pid_option(),
    store: Path | None = store_option("list calls per store segment (others count in the totals)."),
    interval: float = interval_option(),
    count: int | None = count_option(),
    duration: float | None = duration_option(),
    output: str = format_option(OutputFormat.TABLE, OutputFormat.JSONL),
    print_bpf: bool = print_bpf_option(),
) -> None:
    """Memory and flush syscalls (mmap, madvise, mlock, msync, fsync, ...): counts and latency histograms.

    Shows warm-up and flushing per process and per file or segment, with p50/p99/max as histogram bucket
    bounds. Runs until Ctrl-C (or SIGTERM), --count or --duration, then prints a summary."""
    probe = _probe_for_pids(SyscallsProbe, pid, store)
    run_trace(probe, SessionOptions(interval, count, duration, output, print_bpf), VIEWS["syscalls"])


def _probe_for_pids(probe_class: Any, pids: list[int], store: Path | None, **options: Any) -> Any:
    """`probe_class(pids, store=store, **options)`, with a pid that is not a live process as bad input."""
    for pid in pids:
        if pid <= 0:
            raise BadInput(f"--pid {pid}: not a process id")
    try:
        return probe_class(pids, store=store, **options)
    except ProcessGone as gone:
        raise BadInput(f"--pid {gone.pid}: no such process") from None


def pagecache(
    pid: list[int] = pid_option(
        "Count the page-cache additions and readahead of this process (repeat for more), and removals "
        "of the files it added pages to, by any process (reclaim and fadvise remove pages, not the reader); "
        "default: every process and file.",
    ),
    store: Path | None = store_option(
        "count its CommitLog, ConsumeQueue and index segments, with page ranges "
        "(other files count in the totals only)."
    ),
    interval: float = interval_option(),
    count: int | None = count_option(),
    duration: float | None = duration_option(),
    output: str = format_option(OutputFormat.TABLE, OutputFormat.JSONL),
    print_bpf: bool = print_bpf_option(),
) -> None:
    """Pages entering the page cache (misses) and leaving it (evictions), and readahead, per process and file.

    Counted in pages, with large folios counted whole. Runs until Ctrl-C (or SIGTERM), --count or
    --duration, then prints a summary."""
    probe = _probe_for_pids(PagecacheProbe, pid, store)
    run_trace(probe, SessionOptions(interval, count, duration, output, print_bpf), VIEWS["pagecache"])


def writeback(
    pid: list[int] = pid_option(
        "Count the pages this process dirties and its throttling (repeat for more), and writeback of "
        "the files it dirtied, by any process (the flusher threads write them); default: every process.",
    ),
    store: Path | None = store_option(
        "count its CommitLog, ConsumeQueue and index segments (other files count in the totals only)."
    ),
    interval: float = interval_option(),
    count: int | None = count_option(),
    duration: float | None = duration_option(),
    output: str = format_option(OutputFormat.TABLE, OutputFormat.JSONL),
    print_bpf: bool = print_bpf_option(),
) -> None:
    """Pages dirtied and written back per file, the dirty state against its thresholds, throttled writers.

    A writer over the dirty limit is paused in balance_dirty_pages(): the kernel's side of RocketMQ's
    "[PC_SYNCHRONIZED] broker busy". Runs until Ctrl-C (or SIGTERM), --count or --duration, then prints a
    summary."""
    probe = _probe_for_pids(WritebackProbe, pid, store)
    run_trace(probe, SessionOptions(interval, count, duration, output, print_bpf), VIEWS["writeback"])


TRACE_COMMANDS = (faults, sendpath, syscalls, pagecache, writeback)


def register(app: typer.Typer) -> None:
    for command in TRACE_COMMANDS:
        trace_app.command(rich_help_panel="Probes")(command)
    app.add_typer(trace_app, name="trace", rich_help_panel="Tracing")
