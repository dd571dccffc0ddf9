"""`mqinspect lab`: experiments that measure the textbook claims (copies per send path, warm-up, a file
truncated under its sender) on this machine, beside the model they test."""

from __future__ import annotations

import typer

lab_app = typer.Typer(
    name="lab",
    help="Measure the zero-copy, warm-up and truncation claims on this machine, beside the textbook model.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    from mqinspect.cli import lab_sendpath, lab_truncate, lab_warmup

    lab_sendpath.register(lab_app)
    lab_warmup.register(lab_app)
    lab_truncate.register(lab_app)
    app.add_typer(lab_app, name="lab", rich_help_panel="Labs")
