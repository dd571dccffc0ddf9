"""`mqinspect store ...` on the rocketmq-rust fixture: the independent check that we read the format."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from mqinspect.cli.app import app
from mqinspect.errors import ExitStatus

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(arg) for arg in args], env={"COLUMNS": "120"})


def test_cq_shows_both_fixture_entries(rust_store: Path):
    result = invoke("store", "cq", rust_store, "--topic", "V1UpgradeTopic", "--format", "json")
    assert result.exit_code == 0, result.stderr
    view = json.loads(result.stdout)
    assert (view["min_offset"], view["max_offset"]) == (0, 2)
    assert [(e["queue_offset"], e["physical_offset"], e["size_bytes"]) for e in view["entries"]] == [
        (0, 0, 141),
        (1, 141, 141),
    ]
    table = invoke("store", "cq", rust_store, "--topic", "V1UpgradeTopic")
    assert table.exit_code == 0 and "141" in table.stdout


def test_cq_unknown_topic_or_queue_is_bad_input(rust_store: Path):
    result = invoke("store", "cq", rust_store, "--topic", "Nope")
    assert result.exit_code == ExitStatus.BAD_INPUT
    assert result.stderr.strip() == (
        f"mqinspect: error: no consume queue for topic 'Nope' in {rust_store}; topics: V1UpgradeTopic"
    )
    result = invoke("store", "cq", rust_store, "--topic", "V1UpgradeTopic", "--queue", "5")
    assert result.exit_code == ExitStatus.BAD_INPUT and "its queues: 0" in result.stderr


def test_a_directory_that_is_not_a_store_is_bad_input(tmp_path: Path):
    result = invoke("store", "cq", tmp_path, "--topic", "T")
    assert result.exit_code == ExitStatus.BAD_INPUT
    assert "not a RocketMQ store (no commitlog/ directory)" in result.stderr
    assert result.stdout == ""
