"""`mqinspect mem`: the system's page cache against the kernel's writeback thresholds, over intervals."""

from __future__ import annotations

import sys

import typer

from mqinspect.cli.options import OutputFormat, format_option
from mqinspect.errors import BadInput, ExitStatus
from mqinspect.render.console import stdout_console
from mqinspect.render.machine import write_json, write_jsonl
from mqinspect.render.mem import mem_view
from mqinspect.signals import signals_interrupt
from probes.memory import sample_memory


def mem(
    interval: float = typer.Option(1.0, "--interval", "-i", min=0.05, help="Seconds per sample."),
    count: int = typer.Option(1, "--count", "-c", min=0, help="Samples to take; 0 runs until Ctrl-C."),
    output: str = format_option(OutputFormat.TABLE, OutputFormat.JSON, OutputFormat.JSONL),
) -> int:
    """Cached, dirty and writeback pages against the background and throttle thresholds; fault and writeback
    rates and PSI over each interval.

    Exit status: 0 after --count samples; 130 when Ctrl-C or SIGTERM ends the stream (each sample is printed
    whole before that)."""
    if output == OutputFormat.JSON and count != 1:
        raise BadInput("--format json writes one sample; use --format jsonl for a stream")
    with signals_interrupt():
        try:
            for sample in sample_memory(interval, count or None):
                if output == OutputFormat.JSON:
                    write_json(sample, sys.stdout)
                elif output == OutputFormat.JSONL:
                    write_jsonl(sample, sys.stdout)
                else:
                    stdout_console().print(mem_view(sample))
        except KeyboardInterrupt:
            return ExitStatus.INTERRUPTED  # the README's 130: the stream did not reach its end
    return ExitStatus.OK


def register(app: typer.Typer) -> None:
    app.command(rich_help_panel="Page cache")(mem)
