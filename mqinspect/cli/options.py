"""Options shared by every data command, defined once so they read and behave the same everywhere."""

from __future__ import annotations

from enum import StrEnum
from typing import TypeVar

import click
import typer

from mqinspect.errors import BadInput

Choice = TypeVar("Choice", bound=StrEnum)


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


def parse_choices(text: str, choices: type[Choice], option: str, what: str) -> tuple[Choice, ...]:
    """'a,b+c' -> the members of `choices` named, in the order given, each once ("+" and "-" read as "_");
    "all" is every member. BadInput naming the known ones otherwise (`option` and `what` say where and what:
    "--paths", "send path")."""
    known = ", ".join(choice.value for choice in choices)
    if text.strip().lower() == "all":
        return tuple(choices)
    chosen: list[Choice] = []
    for name in (part.strip().lower().replace("+", "_").replace("-", "_") for part in text.split(",")):
        if not name:
            continue
        try:
            choice = choices(name)
        except ValueError:
            raise BadInput(f"{option}: unknown {what} {name!r} (known: {known})") from None
        if choice not in chosen:
            chosen.append(choice)
    if not chosen:
        raise BadInput(f"{option} names no {what} (known: {known})")
    return tuple(chosen)


def wide_option():
    """`--wide`: tables keep every column, in lines as long as they need (narrow output drops columns by
    priority, and says which)."""
    return typer.Option(
        False, "--wide", "-w", help="Keep every column of a table, however wide (default: fit the terminal)."
    )
