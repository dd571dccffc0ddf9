"""`mqinspect lab truncate`: each way of reading or sending a file (a read of its mapping, write and send from
the mapping, the same under a read lease, sendfile, splice, pread + write) while another process truncates
it, in a child process per run: how the sender ended, the bytes delivered, how long the truncation waited,
beside the textbook."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from mqinspect.cli.options import OutputFormat, format_option, parse_choices
from mqinspect.cli.store_write import SIZE
from mqinspect.errors import ExitStatus
from mqinspect.labs.truncate import DEFAULT_FILE_BYTES, DEFAULT_REPEAT, LabSettings, run_truncate_lab
from mqinspect.labs.truncate_model import Ending, TruncateWay
from mqinspect.render.console import stderr_console, stdout_console
from mqinspect.render.lab_truncate import truncate_view
from mqinspect.render.machine import write_json
from mqinspect.signals import signals_interrupt

WAY_NAMES = ", ".join(way.value for way in TruncateWay)


def parse_ways(text: str) -> tuple[TruncateWay, ...]:
    """'sendfile,write_mapping' -> the ways in that order, each once; "all" is every way."""
    return parse_choices(text, TruncateWay, "--ways", "way")


def truncate(
    ways: str = typer.Option("all", "--ways", help=f"Comma-separated ways ({WAY_NAMES}), or all."),
    repeat: int = typer.Option(DEFAULT_REPEAT, "--repeat", "-n", min=1, max=20, help="Runs per way."),
    file_size: int = typer.Option(
        DEFAULT_FILE_BYTES,
        "--file-size",
        click_type=SIZE,
        help="Size of the file each run serves, then truncates to 4 KiB. Default 16 MiB.",
        show_default=False,
    ),
    directory: Path | None = typer.Option(
        None,
        "--dir",
        help="Where the lab's files go (a temporary directory inside it, deleted afterwards). "
        "Default: the system's temporary directory.",
        show_default=False,
    ),
    output: str = format_option(OutputFormat.TABLE, OutputFormat.JSON),
) -> int:
    """Truncate a file under a process that reads or sends it, each way in its own child process: how the
    sender ended (signal, errno, short count, clean stop), the bytes delivered and how long the truncating
    process waited, beside what the textbook says; one sentence per contradiction. Needs no root: the lab
    owns the files it leases. Exits 1 if a run could not be made."""
    settings = LabSettings(
        ways=parse_ways(ways), repeat=repeat, file_size_bytes=file_size, directory=directory
    )
    console = stderr_console()
    say = (lambda message: console.print(message, style="dim")) if sys.stderr.isatty() else (lambda _m: None)
    with signals_interrupt():
        report = run_truncate_lab(settings, say=say)
    if output == OutputFormat.JSON:
        write_json(report, sys.stdout)
    else:
        stdout_console().print(truncate_view(report))
    failed = any(run.ending is Ending.FAILED for way in report.ways for run in way.runs)
    return ExitStatus.FINDINGS if failed else ExitStatus.OK


def register(lab_app: typer.Typer) -> None:
    lab_app.command("truncate")(truncate)
