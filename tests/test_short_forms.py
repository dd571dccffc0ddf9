"""The short forms users of other tools type: fincore's `-J` for `--format json` wherever a command offers
json (and nowhere else), on the command line and in --help."""

from __future__ import annotations

import json
from pathlib import Path

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
