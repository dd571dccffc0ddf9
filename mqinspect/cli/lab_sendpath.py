"""`mqinspect lab sendpath`: one byte range of a CommitLog segment sent over loopback by each send path,
measured (throughput, CPU, context switches, syscalls, copies by the eBPF sendpath probe, residency)
beside the textbook model of each path."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from mqinspect.cli.options import OutputFormat, format_option, parse_choices
from mqinspect.cli.store_write import SIZE
from mqinspect.labs.sendpath import DEFAULT_PAYLOAD_BYTES, DEFAULT_REPEAT, LabOptions, run_sendpath_lab
from mqinspect.render.console import stderr_console, stdout_console
from mqinspect.render.lab_sendpath import sendpath_view
from mqinspect.render.machine import write_json
from mqinspect.signals import signals_interrupt
from store.transfer import SendPath

PATH_NAMES = ", ".join(path.value for path in SendPath)


def parse_paths(text: str) -> tuple[SendPath, ...]:
    """'sendfile,read+write' -> (SENDFILE, READ_WRITE): SendPath names, "+" and "-" read as "_", in the order
    given, each once; "all" is every path."""
    return parse_choices(text, SendPath, "--paths", "send path")


def sendpath(
    payload_bytes: int = typer.Option(
        DEFAULT_PAYLOAD_BYTES,
        "--bytes",
        click_type=SIZE,
        help="Bytes each transfer sends (64k, 16MiB, 1g). Default 64 MiB.",
        show_default=False,
    ),
    paths: str = typer.Option("all", "--paths", help=f"Comma-separated send paths ({PATH_NAMES}), or all."),
    cold: bool = typer.Option(
        False,
        "--cold/--hot",
        help="Cold: evict the lab's source from the page cache before each run (reads the disk). "
        "Hot: read it in once first.",
    ),
    repeat: int = typer.Option(DEFAULT_REPEAT, "--repeat", "-n", min=1, max=100, help="Runs per path."),
    store_dir: Path = typer.Option(
        None,
        "--store",
        help="Serve the newest CommitLog segment of this store (read-only) instead of a temporary store; "
        "of a Kafka log directory, the newest segment of its largest partition (of a partition directory, "
        "its newest; or one .log file), which Kafka itself serves by sendfile.",
        exists=True,
    ),
    output: str = format_option(OutputFormat.TABLE, OutputFormat.JSON),
) -> None:
    """Send the same CommitLog range over loopback TCP by each send path (read+write, mmap+write, sendfile,
    splice, MSG_ZEROCOPY, O_DIRECT) and show, beside the textbook model, the measured throughput, CPU,
    context switches, syscalls, copies (eBPF; root) and page-cache residency. Says where the measurement
    contradicts the model. Without root it still runs; the copy columns are then unavailable."""
    options = LabOptions(
        payload_bytes=payload_bytes, paths=parse_paths(paths), repeat=repeat, cold=cold, store_dir=store_dir
    )
    console = stderr_console()
    with signals_interrupt():
        report = run_sendpath_lab(options, say=lambda message: console.print(message, style="dim"))
    if output == OutputFormat.JSON:
        write_json(report, sys.stdout)
    else:
        stdout_console().print(sendpath_view(report))


def register(lab_app: typer.Typer) -> None:
    lab_app.command("sendpath")(sendpath)
