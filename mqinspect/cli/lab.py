"""`mqinspect lab`: experiments that measure the textbook claims (copies per send path, warm-up, a file
truncated under its sender) on this machine, beside the model they test."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import typer

from mqinspect.cli.lazy import LazyGroup


class LabGroup(LazyGroup):
    """Each lab's module is imported only when that lab runs (or `lab --help` lists them)."""

    COMMAND_MODULES: ClassVar[Mapping[str, str]] = {
        "sendpath": "mqinspect.cli.lab_sendpath",
        "warmup": "mqinspect.cli.lab_warmup",
        "truncate": "mqinspect.cli.lab_truncate",
    }


lab_app = typer.Typer(
    cls=LabGroup,
    name="lab",
    help="Measure the zero-copy, warm-up and truncation claims on this machine, beside the textbook model.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(lab_app, name="lab", rich_help_panel="Labs")
