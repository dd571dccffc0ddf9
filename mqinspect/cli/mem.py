"""`mqinspect mem`: the system's page cache against the kernel's writeback thresholds, over intervals."""

from __future__ import annotations

import sys
import time

import typer

from mqinspect.cli.options import (
    OutputFormat,
    ShortFormsCommand,
    count_argument,
    format_option,
    interval_and_count,
    interval_argument,
    one_line_per_interval,
)
from mqinspect.errors import BadInput, ExitStatus
from mqinspect.render.console import stdout_console
from mqinspect.render.machine import write_json, write_jsonl
from mqinspect.render.mem import MEM_FIELDS, mem_view
from mqinspect.render.stream_lines import write_stream
from mqinspect.signals import signals_interrupt
from probes.memory import sample_memory

MIN_INTERVAL_S = 0.05


def mem(
    interval_arg: float | None = interval_argument(MIN_INTERVAL_S),
    count_arg: int | None = count_argument(minimum=0),
    interval: float = typer.Option(
        1.0, "--interval", "-i", min=MIN_INTERVAL_S, help="Seconds per sample (or INTERVAL)."
    ),
    count: int = typer.Option(
        1, "--count", "-c", min=0, help="Samples to take (or COUNT); 0 runs until Ctrl-C."
    ),
    output: str = format_option(OutputFormat.TABLE, OutputFormat.JSON, OutputFormat.JSONL, OutputFormat.CSV),
) -> int:
    """Cached, dirty and writeback pages against the background and throttle thresholds; fault and writeback
    rates and PSI over each interval.

    One sample prints the whole table; a stream (`mqinspect mem 1 5`, `mem 1` runs until Ctrl-C like vmstat 1)
    prints one timestamped line per interval under a header, in the table's units; --format csv writes the
    same columns as rows, --format jsonl whole samples.

    Exit status: 0 after COUNT samples; 130 when Ctrl-C or SIGTERM ends the stream (each sample is printed
    whole before that)."""
    interval, count = interval_and_count(interval_arg, count_arg, interval, count)
    if interval_arg is not None and count_arg is None:
        count = 0  # `mem 1` streams until Ctrl-C, as `vmstat 1` does
    if output == OutputFormat.JSON and count != 1:
        raise BadInput("--format json writes one sample; use --format jsonl for a stream")
    with signals_interrupt():
        try:
            samples = sample_memory(interval, count or None)
            if one_line_per_interval(output, count):
                stamped = ((sample, time.time()) for sample in samples)  # when each interval ended
                write_stream(MEM_FIELDS, stamped, sys.stdout, as_csv=output == OutputFormat.CSV)
            else:
                for sample in samples:
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
    app.command(rich_help_panel="Page cache", cls=ShortFormsCommand)(mem)
