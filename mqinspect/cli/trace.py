"""`mqinspect trace PROBE`: eBPF tracing sessions, one interval at a time, with a summary at the end.

Every probe command shares the session options (--interval, --count | --duration or bcc's positional
INTERVAL COUNT, --follow, --format, --print-bpf, `-- COMMAND`) and `run_trace()`, which owns the session's
shape: validate, print the program or load it, announce on stderr, stream one snapshot per interval, and end
like perf stat and strace do: on --count, --duration, or when every --pid (or the command) has exited
(exit 0, or the command's status), or on Ctrl-C or SIGTERM (exit 130), each time after the last interval
and the summary. --follow, or --store (the store's files stay traced), keep a session going after its
processes exit. A table stream is one line per interval, then the summary's block; a session of one
interval prints its block alone (it is its own summary); JSONL and CSV always end with the summary.

There is one command per probe of the registry (probes/ebpf/registry.py): `probe_command()` makes it from the
entry, with the session options below around the probe's own (its ProbeOptions), and the entry's help.
Adding a probe: see the registry's docstring.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import typer

from mqinspect.cli.options import (
    COMMAND_KEY,
    CommandAfterDashes,
    OutputFormat,
    count_argument,
    format_option,
    interval_and_count,
    interval_argument,
    one_line_per_interval,
)
from mqinspect.cli.workload import Workload
from mqinspect.errors import BadInput, ExitStatus
from mqinspect.render.console import stdout_console
from mqinspect.render.machine import CsvRows, write_jsonl
from mqinspect.render.stream_lines import LineStream, header_every, terminal_width
from mqinspect.render.trace import (
    VIEWS,
    TraceView,
    interval_title,
    snapshot_csv_row,
    startup_line,
    summary_title,
)
from mqinspect.render.trace_notes import Note, SessionNotes, exit_notes
from probes.ebpf.registry import PROBES, ProbeEntry
from probes.ebpf.session import ENDED_BY_SIGNAL, Probe, TraceSession, program_text
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
    follow: bool = False  # go on after every --pid has exited


EVERY_PROCESS = "Trace this process (repeat for more); default: every process."


def pid_option(help: str = EVERY_PROCESS) -> Any:
    return typer.Option([], "--pid", "-p", help=help)


def store_option(help: str) -> Any:
    return typer.Option(
        None,
        "--store",
        help=f"A RocketMQ store root, or a Kafka log directory (its topic-N/ segments and indexes): {help}",
    )


MIN_INTERVAL_S = 0.05


def interval_option() -> Any:
    return typer.Option(
        1.0, "--interval", "-i", min=MIN_INTERVAL_S, help="Seconds per interval (or INTERVAL)."
    )


def count_option() -> Any:
    return typer.Option(
        None, "--count", "-c", min=1, help="Intervals to trace (or COUNT); default: no limit."
    )


def duration_option() -> Any:
    return typer.Option(None, "--duration", "-d", min=0.05, help="Seconds to trace; default: no limit.")


def follow_option() -> Any:
    return typer.Option(
        False,
        "--follow",
        help="Go on after every --pid has exited (like tail --follow), until Ctrl-C, --count or --duration; "
        "without it the session ends with its last process, as strace -p and perf stat -p do. --store "
        "also keeps it going.",
    )


def print_bpf_option() -> Any:
    return typer.Option(
        False,
        "--print-bpf",
        help="Print the BPF program with its -D defines and map contents, and exit without loading it "
        "(needs no privileges).",
    )


def run_trace(
    probe: Probe[Any], options: SessionOptions, view: TraceView, workload: Workload | None = None
) -> int:
    """The session every probe command runs; returns the exit status (130 when a signal ended it). With a
    `workload` (`-- COMMAND`), the command runs once the probe is attached, the session ends with it, and
    its exit status is the command's."""
    if options.count is not None and options.duration_s is not None:
        raise BadInput("--count and --duration both say when to stop: give one of them")
    if options.print_bpf:
        sys.stdout.write(program_text(probe))
        return ExitStatus.OK
    keeps_going = None if workload else _keeps_going(probe, options)
    processes = probe.processes
    until, until_exit = _session_end(processes, keeps_going, workload)
    notes = SessionNotes()
    output = SessionOutput(options, view)
    intervals = 0
    with TraceSession(probe) as session:
        print(
            startup_line(
                probe.subject(), options.interval_s, options.count, options.duration_s, **until_exit
            ),
            file=sys.stderr,
            flush=True,
        )
        if workload is not None:
            workload.start()
        for snapshot in session.intervals(
            options.interval_s, count=options.count, duration_s=options.duration_s, until=until
        ):
            notes.interval([*_exit_notes(snapshot, processes, keeps_going, workload), *view.notes(snapshot)])
            output.interval(snapshot)
            intervals += 1
    # drawn after the program is detached; one interval's block is its own summary
    if session.summary is not None and (intervals > 1 or not output.blocks):
        output.summary(session.summary)
    if session.ended_by == ENDED_BY_SIGNAL:
        return ExitStatus.INTERRUPTED
    return ExitStatus.OK if workload is None else workload.finish()


def _session_end(
    processes: Any, keeps_going: str | None, workload: Workload | None
) -> tuple[Callable[[], bool] | None, dict[str, Any]]:
    """What ends the session besides --count, --duration and signals (its `until`), and how the startup line
    says it: the command's exit, else the last --pid's, unless something keeps the session going."""
    if workload is not None:
        return (lambda: workload.pid not in processes.running()), {"until_exit": 1, "command": workload.name}
    if keeps_going:
        return None, {"until_exit": 0}
    return processes.all_ended, {"until_exit": len(processes.pids)}


def _exit_notes(
    snapshot: Any, processes: Any, keeps_going: str | None, workload: Workload | None
) -> list[Note]:
    """The stderr notes of the processes that exited this interval; the command's exit ends the session."""
    if workload is None or workload.pid not in snapshot.exited_pids:
        return exit_notes(snapshot.exited_pids, processes.running(), keeps_going)
    others = [pid for pid in snapshot.exited_pids if pid != workload.pid]
    ended = Note(
        f"exited:{workload.pid}", f"{workload.name} (pid {workload.pid}) exited; the session ends with it"
    )
    return [*exit_notes(others, processes.running(), "the command runs"), ended]


def _keeps_going(probe: Any, options: SessionOptions) -> str | None:
    """Why the session outlives its traced processes: --follow, or --store (its files stay traced)."""
    if options.follow:
        return "--follow"
    return "--store" if probe.store is not None else None


class SessionOutput:
    """Where a session's intervals and summary go, in its --format: JSON Lines, CSV rows, or in a table one
    line per interval under a header (the probe's totals; a session of one interval gets its block) and the
    summary as a block with its per-process and per-file breakdown."""

    def __init__(self, options: SessionOptions, view: TraceView):
        self.format = options.output
        self.view = view
        self.rows = CsvRows(sys.stdout)
        self.lines = None
        if self.format == OutputFormat.TABLE and one_line_per_interval(self.format, options.count):
            self.lines = LineStream(
                view.fields,
                sys.stdout,
                header_every=header_every(sys.stdout),
                width=terminal_width(sys.stdout),
            )

    @property
    def blocks(self) -> bool:
        """Whether each interval is drawn as its block (then a single one needs no summary)."""
        return self.format == OutputFormat.TABLE and self.lines is None

    def interval(self, snapshot: Any) -> None:
        if self.lines is not None:
            self.lines.write(snapshot, snapshot.end_time_unix_s)
        else:
            self._write(snapshot, interval_title(snapshot))

    def summary(self, snapshot: Any) -> None:
        if self.lines is not None:
            sys.stdout.write("\n")
        self._write(snapshot, summary_title(snapshot))

    def _write(self, snapshot: Any, title: str) -> None:
        if self.format == OutputFormat.JSONL:
            write_jsonl(snapshot, sys.stdout)
        elif self.format == OutputFormat.CSV:
            self.rows.write(snapshot_csv_row(snapshot))
        else:
            stdout_console().print(self.view.table(snapshot, title))
        sys.stdout.flush()


# --- one command per registered probe ---------------------------------------------------------------------


def probe_command(entry: ProbeEntry) -> Callable[..., int]:
    """The `trace NAME` command of a registered probe: --pid and --store, the probe's own options, then the
    session options; its help is the entry's summary and description."""

    def command(**values: Any) -> int:
        values["interval"], values["count"] = interval_and_count(
            values.pop("interval_arg"), values.pop("count_arg"), values["interval"], values["count"]
        )
        session = SessionOptions(*(values.pop(name) for name in _SESSION_PARAMETERS))
        pids, store = values.pop("pid"), values.pop("store")
        argv = click.get_current_context().meta.get(COMMAND_KEY)
        if not argv:
            probe = _probe_for_pids(entry.probe_class(), pids, store, **values)
            return run_trace(probe, session, VIEWS[entry.name])
        _command_allowed(session)
        with Workload(argv) as workload:
            probe = _probe_for_pids(
                entry.probe_class(), [*pids, workload.pid], store, follow_children=True, **values
            )
            return run_trace(probe, session, VIEWS[entry.name], workload)

    command.__name__ = command.__qualname__ = entry.name
    command.__doc__ = f"{entry.summary}\n\n{entry.description}"
    command.__signature__ = inspect.Signature(_parameters(entry))  # type: ignore[attr-defined]
    return command


# SessionOptions' fields, in order, as the command's parameters are named.
_SESSION_PARAMETERS = ("interval", "count", "duration", "output", "print_bpf", "follow")


def _command_allowed(session: SessionOptions) -> None:
    """BadInput for the options a command after `--` contradicts."""
    if session.print_bpf:
        raise BadInput("--print-bpf starts nothing: leave out the command after --")
    if session.follow:
        raise BadInput(
            "--follow goes on after the traced processes, a command after -- ends the session with it"
        )


def _parameters(entry: ProbeEntry) -> list[inspect.Parameter]:
    """The command's arguments and options, in the order --help lists them."""

    def option(name: str, kind: Any, default: Any) -> inspect.Parameter:
        return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=kind)

    return [
        option("interval_arg", float | None, interval_argument(MIN_INTERVAL_S)),
        option("count_arg", int | None, count_argument()),
        option("pid", list[int], pid_option(entry.pid_help or EVERY_PROCESS)),
        option("store", Path | None, store_option(entry.store_help)),
        *(
            option(extra.name, int | None, typer.Option(None, extra.flag, min=extra.minimum, help=extra.help))
            for extra in entry.options
        ),
        option("interval", float, interval_option()),
        option("count", int | None, count_option()),
        option("duration", float | None, duration_option()),
        option("output", str, format_option(OutputFormat.TABLE, OutputFormat.JSONL, OutputFormat.CSV)),
        option("follow", bool, follow_option()),
        option("print_bpf", bool, print_bpf_option()),
    ]


def _probe_for_pids(probe_class: Any, pids: list[int], store: Path | None, **options: Any) -> Any:
    """`probe_class(pids, store=store, **options)`, with a pid that is not a live process as bad input."""
    for pid in pids:
        if pid <= 0:
            raise BadInput(f"--pid {pid}: not a process id")
    try:
        return probe_class(pids, store=store, **options)
    except ProcessGone as gone:
        raise BadInput(f"--pid {gone.pid}: no such process") from None


SESSION_END = (
    "The session prints one line of the probe's totals per interval (a session of one interval: its block) "
    "and ends after --count intervals (or COUNT), --duration seconds, or once every --pid has exited (exit "
    "0; --follow or --store keep it going), or on Ctrl-C or SIGTERM (exit 130), each time with a summary: "
    "the block with the per-process and per-file breakdown, the last JSONL line, or the last CSV row. A "
    "warning on stderr is said once while it lasts.\n\n"
    "`trace PROBE [INTERVAL [COUNT]] -- COMMAND ARGS` starts COMMAND, traces it (with any --pid) from its "
    "first instruction, and ends with it, like perf stat and strace: the exit status is the command's "
    "(128+N when signal N killed it); --count or --duration ending first send it SIGTERM. Its stdout goes "
    "to stderr, so that stdout is the trace alone. The processes it starts (a script's commands, forks) are "
    "traced too, from their start, and their children: followed_pids lists them."
)


def register(app: typer.Typer) -> None:
    for entry in PROBES:
        trace_app.command(rich_help_panel="Probes", epilog=SESSION_END, cls=CommandAfterDashes)(
            probe_command(entry)
        )
    app.add_typer(trace_app, name="trace", rich_help_panel="Tracing")
