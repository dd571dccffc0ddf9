"""Options shared by every data command, defined once so they read and behave the same everywhere."""

from __future__ import annotations

from enum import StrEnum

import click
import typer


class OutputFormat(StrEnum):
    TABLE = "table"
    JSON = "json"
    JSONL = "jsonl"
    CSV = "csv"


def format_option(*choices: OutputFormat, default: OutputFormat = OutputFormat.TABLE):
    """`--format` restricted to what a command can produce (streams offer jsonl, tables may offer csv)."""
    allowed = choices or (OutputFormat.TABLE, OutputFormat.JSON)
    return typer.Option(
        default.value,
        "--format",
        "-f",
        click_type=click.Choice([choice.value for choice in allowed]),
        help="Output format: " + ", ".join(choice.value for choice in allowed) + ".",
        show_default=True,
    )
