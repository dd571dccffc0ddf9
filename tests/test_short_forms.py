"""The short forms users of other tools type: fincore's `-J` for `--format json` wherever a command offers
json (and nowhere else), on the command line and in --help."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import one_error_line, run_mqinspect

from mqinspect.errors import ExitStatus


def test_cache_takes_fincore_s_dash_j(tmp_path: Path):
    path = tmp_path / "file.bin"
    path.write_bytes(b"x" * 8192)
    short, long = run_mqinspect("cache", path, "-J"), run_mqinspect("cache", path, "--format", "json")
    assert short.exit_code == ExitStatus.OK, short.stderr
    assert (
        json.loads(short.stdout)["files"][0]["path"]
        == json.loads(long.stdout)["files"][0]["path"]
        == str(path)
    )
    assert "-J is --format json" in " ".join(run_mqinspect("cache", "--help").stdout.split())


def test_dash_j_where_json_is_not_offered_is_a_usage_error():
    result = run_mqinspect("trace", "faults", "-J")
    assert result.exit_code == ExitStatus.BAD_INPUT
    assert "-J" in one_error_line(result)


@pytest.mark.parametrize("command", [("top",), ("mem",), ("trace", "faults"), ("trace", "sendpath")])
def test_the_positional_interval_and_count_are_named_as_bcc_s_tools_name_them(command):
    """--help's arguments panel named them after the parameters that take them (interval_arg, count_arg);
    they read INTERVAL and COUNT, and `mem 0.1 2` still takes two samples."""
    text = run_mqinspect(*command, "--help", columns=200).stdout
    arguments = [line.split() for line in text.splitlines() if "[INTERVAL]" in line or "[COUNT]" in line]
    assert [words[1:3] for words in arguments if words[0] == "│"] == [
        ["INTERVAL", "[INTERVAL]"],
        ["COUNT", "[COUNT]"],
    ]
    assert "interval_arg" not in text.lower() and "count_arg" not in text.lower()


def test_the_positional_interval_and_count_still_set_the_stream():
    result = run_mqinspect("mem", "0.1", "2")
    assert result.exit_code == ExitStatus.OK, result.stderr
    assert len([line for line in result.stdout.splitlines() if line[:2].isdigit()]) == 2
