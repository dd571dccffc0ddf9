"""`mqinspect demo`: a live store with a warming producer and consumers on several send paths, watched by the
dashboard; without a terminal (or with --no-ui), a final report of the run plus short lab runs."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from pathlib import Path

import click
import typer

from mqinspect.cli.options import OutputFormat
from mqinspect.demo.headless import DEFAULT_DURATION_S, run_headless
from mqinspect.demo.report import WorkloadOutcome
from mqinspect.demo.settings import LOG_FORMATS, DemoSettings
from mqinspect.demo.workload import DemoFailed, DemoWorkload
from mqinspect.errors import BadInput, ExitStatus
from mqinspect.render.console import stderr_console, stdout_console
from mqinspect.render.demo import demo_view
from mqinspect.render.machine import write_json
from mqinspect.render.units import human_bytes
from mqinspect.signals import signals_interrupt

ENDING_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
REPORT_WIDTH = 160
REPORT_FORMATS = (OutputFormat.TABLE.value, OutputFormat.JSON.value)


def _say(message: str) -> None:
    """Progress and what the demo creates, on stderr, so stdout stays the report."""
    stderr_console().print(f"demo: {message}", style="dim")


def demo(
    directory: Path | None = typer.Option(
        None,
        "--dir",
        help="Create the store here and keep it (default: a temporary directory, removed at the end).",
        file_okay=False,
    ),
    duration: float | None = typer.Option(
        None,
        "--duration",
        min=3.0,
        help=f"Seconds to run before the final report (default {DEFAULT_DURATION_S:g}). The dashboard runs "
        "until q.",
    ),
    no_ui: bool = typer.Option(
        False, "--no-ui", help="No dashboard: run for the duration and print the final report."
    ),
    output: str = typer.Option(
        OutputFormat.TABLE.value,
        "--format",
        "-f",
        click_type=click.Choice([*REPORT_FORMATS, *LOG_FORMATS]),
        help="The final report's output format (table, json), or the log format to write (rocketmq, kafka: "
        "the values are distinct, so one option takes either; --log-format gives the log format when "
        "--format gives the report's).",
        show_default=True,
    ),
    log_format: str | None = typer.Option(
        None,
        "--log-format",
        click_type=click.Choice(LOG_FORMATS),
        help="The log to write and watch: a RocketMQ store (default) or a Kafka log directory.",
    ),
) -> int:
    """Start a small store (8 x 64 MiB segments) with a broker process (producer with warm-up, retention,
    pull server) and one consumer process per send path (read_write, mmap_write, sendfile, splice); watch it
    on the dashboard, and clean everything up on exit.

    With --format kafka (or --log-format kafka): a Kafka log directory instead, written by a broker process
    with store.kafka's writer (64 MiB segments rolled by size, an index entry every 4,096 bytes, a time
    index, checkpoints, retention, consumer offsets committed to __consumer_offsets) and read by the same
    consumers, each fetching whole batches by its send path (sendfile is Kafka's own)."""
    output, log_format = _formats(output, log_format)
    _check_directory(directory)
    headless = no_ui or output == OutputFormat.JSON or not _has_terminal()
    if duration is not None and not headless:
        raise BadInput("--duration applies to the final report: add --no-ui (the dashboard runs until q)")
    settings = DemoSettings(log_format=log_format)
    workload = DemoWorkload(settings, directory)
    with signals_interrupt(ENDING_SIGNALS):
        try:
            workload.start()
            _announce(workload)
            if headless:
                report = run_headless(workload, duration or DEFAULT_DURATION_S, _say)
                _emit(report, output)
                outcome = report.workload
            else:
                _run_dashboard(workload)
                outcome = workload.stop()
        finally:
            workload.close()
            _say_where(workload)
    return _exit_status(outcome)


def _formats(output: str, log_format: str | None) -> tuple[str, str]:
    """(report format, log format) from --format, which takes either, and --log-format."""
    if output in LOG_FORMATS:
        if log_format is not None and log_format != output:
            raise BadInput(f"--format {output} and --log-format {log_format} name two log formats")
        return OutputFormat.TABLE.value, output
    return output, log_format or "rocketmq"


def _check_directory(directory: Path | None) -> None:
    if directory is None or not directory.exists():
        return
    demo_dirs = ("store", "kafka-logs")
    if any(directory.iterdir()) and not any((directory / name).is_dir() for name in demo_dirs):
        raise BadInput(f"{directory} is not empty and holds no demo store; give a new or empty directory")


def _has_terminal() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()


def _announce(workload: DemoWorkload) -> None:
    settings = workload.settings
    roles = workload.roles()
    consumers = ", ".join(f"{role.split(':', 1)[1]} {pid}" for pid, role in roles.items() if role != "broker")
    broker = next(pid for pid, role in roles.items() if role == "broker")
    what = "Kafka log directory" if workload.is_kafka else "store"
    warmup = "no" if workload.is_kafka else settings.warmup
    server = "fetch server" if workload.is_kafka else "pull server"
    _say(
        f"{what} {workload.store_dir} ({human_bytes(settings.segment_size_bytes)} segments, about "
        f"{settings.max_segments} kept); broker pid {broker} (producer at {settings.rate_msgs_per_s:g} msg/s "
        f"with {warmup} warm-up, {server} on 127.0.0.1:{workload.broker_port}); "
        f"consumer pids: {consumers}"
    )


def _run_dashboard(workload: DemoWorkload) -> None:
    from mqinspect.dashboard.runner import run_dashboard
    from mqinspect.sampling.stream import TopOptions

    run_dashboard(TopOptions(store_dir=workload.store_dir, pids=workload.pids))


def _emit(report, output: str) -> None:
    if output == OutputFormat.JSON:
        write_json(report, sys.stdout)
    else:
        console = stdout_console()
        if not console.is_terminal and "COLUMNS" not in os.environ:
            console.width = REPORT_WIDTH  # a file or pipe has no width; rich's 80 would squeeze the tables
        console.print(demo_view(report))


def _say_where(workload: DemoWorkload) -> None:
    with contextlib.suppress(RuntimeError):  # never started: nothing was created
        if workload.keep_directory:
            _say(f"kept {workload.directory} (store, logs)")
        else:
            _say(f"removed {workload.directory}")


def _exit_status(outcome: WorkloadOutcome) -> int:
    if outcome.clean_exit:
        return ExitStatus.OK
    failed = [child for child in outcome.children if child.exit_code != 0 or child.killed]
    details = "; ".join(f"{child.role} (pid {child.pid}) exit {child.exit_code}" for child in failed)
    raise DemoFailed(f"demo processes did not end cleanly: {details}")


def register(app: typer.Typer) -> None:
    app.command("demo", rich_help_panel="Demo")(demo)
