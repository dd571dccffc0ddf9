"""`mqinspect lab warmup`: does warm-up pre-fault the next segment, or does the producer pay the faults?

Runs each warm-up mode on a fresh segment in a fresh worker process and measures warm-up time, faults,
dirtied and locked pages, then the faults and per-append latency of an append pass over the segment.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from mqinspect.cli.options import OutputFormat, format_option
from mqinspect.cli.store_write import SIZE
from mqinspect.labs.warmup import (
    DEFAULT_REPEAT,
    DEFAULT_SEGMENT_BYTES,
    LabSettings,
    ModeRun,
    WarmupLabMode,
    parse_modes,
    run_warmup_lab,
)
from mqinspect.render.console import stderr_console, stdout_console
from mqinspect.render.lab_warmup import warmup_view
from mqinspect.render.machine import write_json

_ALL_MODES = ",".join(mode.value for mode in WarmupLabMode)


def warmup(
    segment_size: int = typer.Option(
        DEFAULT_SEGMENT_BYTES,
        "--segment-size",
        click_type=SIZE,
        help="Segment size (RocketMQ's CommitLog uses 1g). Default 256m.",
        show_default=False,
    ),
    modes: str = typer.Option(
        _ALL_MODES, "--modes", help="Comma-separated warm-up modes to run, in this order."
    ),
    repeat: int = typer.Option(
        DEFAULT_REPEAT, "--repeat", "-n", min=1, help="Runs per mode; the table shows medians."
    ),
    directory: Path | None = typer.Option(
        None,
        "--dir",
        help="Where the segments go (a temporary directory inside it, deleted afterwards). Must be on a "
        "disk filesystem, not tmpfs. Default: the current directory.",
        show_default=False,
    ),
    trace: bool = typer.Option(
        True, "--ebpf/--no-ebpf", help="Attribute faults with the eBPF faults probe when it can load."
    ),
    output: str = format_option(OutputFormat.TABLE, OutputFormat.JSON),
) -> None:
    """Warm-up modes (none, RocketMQ's touch + mlock, MADV_POPULATE_WRITE, MAP_POPULATE, mlock alone) on fresh
    segments: warm-up time and faults, pages dirtied and locked, then the append pass's faults and latency."""
    settings = LabSettings(
        segment_bytes=segment_size,
        modes=parse_modes(modes),
        repeat=repeat,
        directory=directory,
        trace=trace,
    )
    report = run_warmup_lab(settings, progress=_progress if sys.stderr.isatty() else None)
    if output == OutputFormat.JSON:
        write_json(report, sys.stdout)
    else:
        stdout_console().print(warmup_view(report))


def _progress(run: ModeRun) -> None:
    outcome = (
        f"failed: {run.error}"
        if run.error
        else f"warm-up {(run.warmup_s or 0) * 1000:.1f} ms, append pass {(run.append_s or 0) * 1000:.1f} ms"
    )
    stderr_console().print(f"{run.mode.value} (run {run.repeat + 1}) {outcome}", style="dim")


def register(lab_app: typer.Typer) -> None:
    lab_app.command()(warmup)
