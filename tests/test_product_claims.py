"""What the product says it does, it does: README's opening names the two formats mqinspect reads, RocketMQ
stores and Kafka log directories, and its Kafka section says what each command shows for Kafka; every
command's --help names Kafka only where the command takes a Kafka log directory: the `store` inspection
commands and `demo` (--format kafka)."""

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
READS_KAFKA |= {("demo",)}  # issue 17 item 5: demo --format kafka


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
    demo_help = runner.invoke(app, ["demo", "--help"], env={"COLUMNS": "200"}).stdout
    assert "Kafka log directory" in demo_help and "--log-format" in demo_help


def test_pyproject_describes_what_the_package_reads():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert "RocketMQ stores" in project["description"] and "Kafka log directories" in project["description"]


def test_readme_opening_names_both_formats_it_reads():
    opening = (REPO / "README.md").read_text().split("\n\n")[1]  # the paragraph under the title
    assert "RocketMQ stores" in opening and "Kafka log directories" in opening


def test_readme_says_what_each_command_shows_for_kafka():
    readme = (REPO / "README.md").read_text()
    section = readme.split("### Kafka log directories", 1)[1].split("\n## ", 1)[0]
    for command in ("stat", "segments", "dump", "verify", "query", "cache", "top", "trace", "lab sendpath"):
        assert f"`{command}" in section, command
    assert "demo --format kafka" in section and "benchmarks/kafka_scan.py" in section
    assert "Hello World!" in section  # the example is the fixture's
