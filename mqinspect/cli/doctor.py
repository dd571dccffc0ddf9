"""`mqinspect doctor`: what this machine allows, what depends on it, and the exact fix."""

from __future__ import annotations

import sys

import typer

from mqinspect.cli.options import OutputFormat, format_option
from mqinspect.errors import ExitStatus
from mqinspect.render.console import stdout_console
from mqinspect.render.doctor import doctor_table, doctor_verdict
from mqinspect.render.machine import write_json
from probes.capabilities import run_doctor


def doctor(
    quick: bool = typer.Option(False, "--quick", help="Skip loading test BPF programs (about 1 s)."),
    output: str = format_option(),
) -> int:
    """Check kernel, privileges, bcc, headers, tracepoints, cachestat and tools.

    Exit 0 when everything the product needs is present, 3 otherwise.
    """
    report = run_doctor(quick=quick)
    if output == OutputFormat.JSON:
        write_json(report, sys.stdout)
    else:
        console = stdout_console()
        console.print(doctor_table(report))
        console.print(doctor_verdict(report))
    return ExitStatus.OK if report.ok else ExitStatus.MISSING_CAPABILITY


def register(app: typer.Typer) -> None:
    app.command(rich_help_panel="Setup")(doctor)
