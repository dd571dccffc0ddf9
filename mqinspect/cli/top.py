"""`mqinspect top`: the live dashboard of a store and the kernel serving it; `mqinspect replay`: a recording
of it played back through the same dashboard.

On a terminal `top` is the interactive Textual app; with --once, --count, a --format other than table, or
stdout not a terminal, it prints snapshots instead (rich tables, JSON or JSON Lines), like `mqinspect mem`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console

from mqinspect.cli.options import OutputFormat, format_option, wide_option
from mqinspect.errors import BadInput, ExitStatus
from mqinspect.render.console import stdout_console
from mqinspect.render.layout import wide_console
from mqinspect.render.machine import write_json, write_jsonl
from mqinspect.render.top import top_view
from mqinspect.sampling.recording import read_recording
from mqinspect.sampling.stream import TopOptions, stream_snapshots, validate
from mqinspect.signals import signals_interrupt

SVG_WIDTH = 140


def top(
    store_dir: Path | None = typer.Argument(
        None, help="A RocketMQ store root (the directory holding commitlog/): show its segments."
    ),
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
    output: str = format_option(OutputFormat.TABLE, OutputFormat.JSON, OutputFormat.JSONL),
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
) -> int:
    """The live dashboard: segments' page-cache heat with wrote/flushed positions and locks, memory against
    the writeback thresholds, faults per process and segment, send paths, and the processes using the store.

    Keys: space pause, s sort, r reverse, / filter, enter segment map, tab or 1-5 panels, ? help, q quit.
    Printed snapshots (no terminal, --count, --format jsonl) end with exit status 130 on Ctrl-C or SIGTERM."""
    options = TopOptions(store_dir, tuple(pid), interval, not no_ebpf, record)
    validate(options)
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


def _print_snapshots(
    options: TopOptions, count: int | None, output: str, svg: Path | None, wide: bool = False
) -> int:
    console = wide_console(stdout_console()) if wide else stdout_console()
    with signals_interrupt():
        try:
            for snapshot in stream_snapshots(options, count):
                if output == OutputFormat.JSON:
                    write_json(snapshot, sys.stdout)
                elif output == OutputFormat.JSONL:
                    write_jsonl(snapshot, sys.stdout)
                else:
                    console.print(top_view(snapshot))
                if svg is not None:
                    save_svg(snapshot, svg)
        except KeyboardInterrupt:
            return ExitStatus.INTERRUPTED  # Ctrl-C or SIGTERM: 130, as the README says
    return ExitStatus.OK


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
    app.command(rich_help_panel="Dashboard")(top)
    app.command(rich_help_panel="Dashboard")(replay)
