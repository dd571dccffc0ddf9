"""What the product says it does, it does: README's opening, pyproject's description and every command's
--help name only the formats mqinspect reads today: RocketMQ-format stores everywhere, Kafka log directories
in the `store` inspection commands (and the help that lists them), the rest of Kafka's support landing
with its own parts of issue 17, and with them the claim."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import click
import typer
from typer.testing import CliRunner

from mqinspect.cli.app import app

REPO = Path(__file__).resolve().parent.parent
runner = CliRunner()
UNREAD_FORMATS = re.compile(r"kafka", re.IGNORECASE)
READS_KAFKA = {(), ("store",), *(("store", verb) for verb in ("stat", "segments", "dump", "verify", "query"))}
READS_KAFKA |= {
    ("top",),
    ("lab", "sendpath"),
    *(("trace", probe) for probe in ("faults", "pagecache", "writeback", "sendpath", "syscalls")),
}  # issue 17 item 4: top, trace --store, lab sendpath --store on Kafka log dirs


def _command_paths(command: click.Command, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = [path]
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            paths += _command_paths(sub, (*path, name))
    return paths


def test_no_help_text_claims_a_format_the_tool_does_not_read():
    paths = _command_paths(typer.main.get_command(app))
    assert len(paths) > 20  # every group and command, not only the top level
    for path in paths:
        result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0, (path, result.output)
        if path not in READS_KAFKA:
            assert not UNREAD_FORMATS.search(result.stdout), (
                f"mqinspect {' '.join(path)} --help: {result.stdout}"
            )
    kafka_help = runner.invoke(app, ["store", "dump", "--help"], env={"COLUMNS": "200"}).stdout
    assert "Kafka" in kafka_help and "--from-offset" in kafka_help


def test_pyproject_describes_what_the_package_reads():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert "RocketMQ" in project["description"]
    assert not UNREAD_FORMATS.search(project["description"]) and not UNREAD_FORMATS.search(
        " ".join(project.get("keywords", ()))
    )


def test_readme_opening_names_only_rocketmq_format_stores():
    opening = (REPO / "README.md").read_text().split("\n\n")[1]  # the paragraph under the title
    assert "RocketMQ" in opening
    assert not UNREAD_FORMATS.search(opening)
