"""`mqinspect store ...`: create, write and inspect RocketMQ-format stores.

The inspection commands open any store read-only and never modify it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from mqinspect.cli.options import OutputFormat, format_option
from mqinspect.render.console import stdout_console
from mqinspect.render.machine import write_json
from mqinspect.render.store import consume_queue_table
from store.inspect import consume_queue_view, open_layout

store_app = typer.Typer(
    help="Create, write and inspect RocketMQ-format stores (inspection is read-only).", no_args_is_help=True
)

StoreDir = typer.Argument(
    ..., help="The store root: the directory that holds commitlog/.", show_default=False
)


def emit(snapshot, output: str, table) -> None:
    """Data to stdout: the snapshot as JSON, or its table."""
    if output == OutputFormat.JSON:
        write_json(snapshot, sys.stdout)
    else:
        stdout_console().print(table(snapshot))


@store_app.command("cq", rich_help_panel="Inspection (read-only)")
def cq(
    store_dir: Path = StoreDir,
    topic: str = typer.Option(..., "--topic", "-t", help="Topic name."),
    queue: int = typer.Option(0, "--queue", "-q", min=0, help="Queue id."),
    from_offset: int = typer.Option(
        None, "--from", min=0, help="First queue offset (default: the queue's min)."
    ),
    count: int = typer.Option(100, "--count", "-n", min=1, help="How many entries at most."),
    output: str = format_option(),
) -> None:
    """ConsumeQueue entries of one queue: queue offset, CommitLog offset, size and tags code."""
    view = consume_queue_view(open_layout(store_dir), topic, queue, from_offset, count)
    emit(view, output, consume_queue_table)


def register(app: typer.Typer) -> None:
    app.add_typer(store_app, name="store", rich_help_panel="Store")
