"""`mqinspect top`: the live dashboard of a store and the kernel serving it; `mqinspect replay`: a recording
of it played back through the same dashboard.

On a terminal `top` is the interactive Textual app; with --once, --count, a --format other than table, or
stdout not a terminal, it prints snapshots instead, like `mqinspect mem`: --once the dashboard as rich
tables, a stream one line per interval (CSV rows with --format csv), or JSON / JSON Lines.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import typer
from rich.console import Console

from mqinspect.cli.options import (
    OutputFormat,
    ShortFormsCommand,
    count_argument,
    format_option,
    interval_and_count,
    interval_argument,
    one_line_per_interval,
    wide_option,
)
from mqinspect.errors import BadInput, ExitStatus
from mqinspect.render.console import stdout_console
from mqinspect.render.layout import wide_console
from mqinspect.render.machine import write_json, write_jsonl
from mqinspect.render.stream_lines import write_stream
from mqinspect.render.top import top_view
from mqinspect.render.top_lines import TOP_FIELDS
from mqinspect.sampling.recording import read_recording
from mqinspect.sampling.snapshot import TopSnapshot
from mqinspect.sampling.stream import MIN_INTERVAL_S, TopOptions, stream_snapshots, validate
from mqinspect.signals import signals_interrupt

SVG_WIDTH = 140


def top(
    store_dir: Path | None = typer.Argument(
        None,
        help="A RocketMQ store root (the directory holding commitlog/), or a Kafka log directory (a log.dirs "
        "root, a topic-N partition directory or one .log segment): show its segments.",
    ),
    interval_arg: float | None = interval_argument(MIN_INTERVAL_S),
    count_arg: int | None = count_argument(),
    pid: list[int] = typer.Option(
        [],
        "--pid",
        "-p",
        help="Watch this process (repeat for more); default: those holding the store's files.",
    ),
    interval: float = typer.Option(1.0, "--interval", "-i", help="Seconds per sample (at least 0.1)."),
    once: bool = typer.Option(False, "--once", help="Print one snapshot (rates over one interval) and exit."),
    count: int | None = typer.Option(
        None, "--count", "-c", min=1, help="Print this many snapshots, one per interval, and exit."
    ),
    output: str = format_option(OutputFormat.TABLE, OutputFormat.JSON, OutputFormat.JSONL, OutputFormat.CSV),
    record: Path | None = typer.Option(
        None,
        "--record",
        help="Also write every snapshot to FILE.jsonl (FILE.jsonl.gz: gzip), for `mqinspect replay FILE`.",
    ),
    no_ebpf: bool = typer.Option(
        False,
        "--no-ebpf",
        help="Do not load eBPF probes: the faults, throttling and send-path panels say why.",
    ),
    svg: Path | None = typer.Option(
        None, "--svg", help="With --once: also save the dashboard as an SVG picture."
    ),
    wide: bool = wide_option(),
    print_bpf: bool = typer.Option(
        False,
        "--print-bpf",
        help="Print the one BPF program the dashboard's probes are compiled into (for --pid, or every "
        "process), with its -D defines and map contents, and exit without loading it (needs no privileges).",
    ),
) -> int:
    """The live dashboard: segments' page-cache heat with wrote/flushed positions and locks, memory against
    the writeback thresholds, faults per process and segment, send paths, and the processes using the store.

    Keys: space pause, s sort, r reverse, / filter, enter segment map, tab or 1-5 panels, ? help, q quit.

    `top [STORE_DIR] INTERVAL COUNT` (bcc's form; a first number that is no directory is the interval)
    prints COUNT lines, one per interval. Printed snapshots (no terminal, --count, --format jsonl or csv)
    end with exit status 130 on Ctrl-C or SIGTERM."""
    store_dir, interval_arg, count_arg = _numbers_after_store(store_dir, interval_arg, count_arg)
    interval, count = interval_and_count(interval_arg, count_arg, interval, count)
    options = TopOptions(store_dir, tuple(pid), interval, not no_ebpf, record)
    validate(options)
    if print_bpf:
        from mqinspect.sampling.probe_set import dashboard_program_text

        sys.stdout.write(dashboard_program_text(options.pids, options.store_dir))
        return ExitStatus.OK
    if svg is not None and not once:
        raise BadInput("--svg saves one snapshot: use it with --once")
    if once:
        count = 1
    if output == OutputFormat.JSON and count != 1:
        raise BadInput("--format json writes one snapshot: add --once, or use --format jsonl for a stream")
    interactive = count is None and output == OutputFormat.TABLE and sys.stdout.isatty()
    if interactive:
        from mqinspect.dashboard.runner import run_dashboard  # Textual: only for the interactive app

        run_dashboard(options)
        return ExitStatus.OK
    return _print_snapshots(options, count, output, svg, wide)


def _numbers_after_store(
    store_dir: Path | None, interval: float | None, count: int | None
) -> tuple[Path | None, float | None, int | None]:
    """`top 1 5` is bcc's INTERVAL COUNT without a store: the numbers moved out of STORE_DIR's place (a
    directory named like a number stays a store)."""
    if store_dir is None or store_dir.exists() or not _is_number(str(store_dir)):
        return store_dir, interval, count
    if count is not None:
        raise BadInput(f"{store_dir}: no such store directory (and three numbers are one too many)")
    if interval is not None and not float(interval).is_integer():
        raise BadInput(f"COUNT {interval}: not a whole number of intervals")
    return None, float(str(store_dir)), None if interval is None else int(interval)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _print_snapshots(
    options: TopOptions, count: int | None, output: str, svg: Path | None, wide: bool = False
) -> int:
    console = wide_console(stdout_console()) if wide else stdout_console()
    with signals_interrupt():
        try:
            snapshots = _saving_svg(stream_snapshots(options, count), svg)
            if one_line_per_interval(output, count):
                stamped = ((snapshot, snapshot.time_unix_s) for snapshot in snapshots)
                write_stream(TOP_FIELDS, stamped, sys.stdout, as_csv=output == OutputFormat.CSV)
                return ExitStatus.OK
            for snapshot in snapshots:
                if output == OutputFormat.JSON:
                    write_json(snapshot, sys.stdout)
                elif output == OutputFormat.JSONL:
                    write_jsonl(snapshot, sys.stdout)
                else:
                    console.print(top_view(snapshot))
        except KeyboardInterrupt:
            return ExitStatus.INTERRUPTED  # Ctrl-C or SIGTERM: 130, as the README says
    return ExitStatus.OK


def _saving_svg(snapshots: Iterator[TopSnapshot], svg: Path | None) -> Iterator[TopSnapshot]:
    """The snapshots, each also saved as the --svg picture whatever --format prints (a CSV or table line
    included)."""
    for snapshot in snapshots:
        if svg is not None:
            save_svg(snapshot, svg)
        yield snapshot


def save_svg(snapshot, path: Path) -> None:
    """The dashboard of one snapshot as an SVG picture, through rich's console export."""
    recorder = Console(
        record=True, width=SVG_WIDTH, file=_Discard(), force_terminal=True, color_system="truecolor"
    )
    recorder.print(top_view(snapshot))
    try:
        recorder.save_svg(str(path), title=f"mqinspect top — frame {snapshot.sequence}")
    except OSError as error:
        raise BadInput(f"--svg {path}: {error.strerror or error}") from None


class _Discard:
    """A write-only sink: the SVG recorder draws nothing on the terminal."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


def replay(
    recording: Path = typer.Argument(..., help="A file written by `mqinspect top --record FILE`."),
    output: str = format_option(OutputFormat.TABLE, OutputFormat.JSONL),
) -> None:
    """Play a recorded dashboard: the same panels, with space to pause, ',' and '.' to step one frame, '[' and
    ']' to jump ten. Not on a terminal (or with --format jsonl) the frames are printed instead."""
    if output == OutputFormat.TABLE and sys.stdout.isatty():
        from mqinspect.dashboard.runner import replay_dashboard  # Textual: only for the interactive app

        replay_dashboard(recording)
        return
    console = stdout_console()
    for snapshot in read_recording(recording):
        if output == OutputFormat.JSONL:
            write_jsonl(snapshot, sys.stdout)
        else:
            console.print(top_view(snapshot))


def register(app: typer.Typer) -> None:
    app.command(rich_help_panel="Dashboard", cls=ShortFormsCommand)(top)
    app.command(rich_help_panel="Dashboard")(replay)
