"""Recordings made by earlier versions still replay, value for value: the snapshot types moved from
mqinspect.dashboard to mqinspect.sampling, and a recording holds field names, never module paths.

Each file was made by the code at the commit in its name, as root with the four eBPF probes running:
`mqinspect top STORE --pid P --count 3 --interval 1 --format jsonl --record FILE.jsonl.gz`, on a three-segment
store built by tests/store/store_builder.py, while P read a segment through read(2) and a mapping and wrote
what it read to a TCP socket (so the send-path, fault, writeback and process panels all hold numbers); since
e187d72 the store also holds config/consumerOffset.json (two groups), so the consumers hold numbers too.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mqinspect.cli.app import app
from mqinspect.sampling.recording import read_recording

RECORDINGS = Path(__file__).parent / "recordings"
runner = CliRunner()


def holds(replayed: object, recorded: object) -> bool:
    """Whether `replayed` has every key and value of `recorded` (fields added since take their defaults)."""
    if isinstance(recorded, dict):
        return isinstance(replayed, dict) and all(
            key in replayed and holds(replayed[key], value) for key, value in recorded.items()
        )
    if isinstance(recorded, list):
        return (
            isinstance(replayed, list)
            and len(replayed) == len(recorded)
            and all(holds(new, old) for new, old in zip(replayed, recorded, strict=True))
        )
    return replayed == recorded


def recorded_frames(name: str) -> list[dict]:
    with gzip.open(RECORDINGS / name, "rt", encoding="utf-8") as lines:
        return [json.loads(line) for line in lines]


@pytest.mark.parametrize(
    "name",
    [
        "top-133f7a9.jsonl.gz",
        "top-fda83d7.jsonl.gz",
        "top-316aef8.jsonl.gz",
        "top-e187d72.jsonl.gz",
        "top-3a08df0.jsonl.gz",
    ],
)
def test_an_old_recording_replays_every_value_it_holds(name):
    recorded = recorded_frames(name)
    assert {probe["state"] for probe in recorded[-1]["probes"]} == {"running"}
    assert recorded[-1]["sendpaths"]["processes"] and recorded[-1]["processes"]
    result = runner.invoke(app, ["replay", str(RECORDINGS / name), "--format", "jsonl"])
    assert result.exit_code == 0, result.stderr
    replayed = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(replayed) == len(recorded) == 3
    assert all(holds(new, old) for new, old in zip(replayed, recorded, strict=True))


def test_a_recording_of_the_current_format_replays_key_for_key():
    name = "top-3a08df0.jsonl.gz"  # the snapshot format since this commit (hits, consumers), but for:
    expected = recorded_frames(name)
    for frame in expected:  # a segment's residency_time_unix_s (null: measured in the frame's interval)
        for segment in frame["store"]["segments"]:
            segment["residency_time_unix_s"] = None
            segment["partition"] = None  # a Kafka file's partition
        frame["store"] |= {"log_format": "rocketmq", "partitions": []}  # and a Kafka log dir's
    result = runner.invoke(app, ["replay", str(RECORDINGS / name), "--format", "jsonl"])
    assert [json.loads(line) for line in result.stdout.splitlines()] == expected


@pytest.mark.parametrize(
    "name",
    [
        "top-133f7a9.jsonl.gz",
        "top-fda83d7.jsonl.gz",
        "top-316aef8.jsonl.gz",
        "top-e187d72.jsonl.gz",
        "top-3a08df0.jsonl.gz",
    ],
)
def test_an_old_recording_draws_every_panel(name):
    frames = read_recording(RECORDINGS / name)
    result = runner.invoke(app, ["replay", str(RECORDINGS / name)], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.stderr
    assert result.stdout.count("Segments") == len(frames)
    for panel in ("Memory", "Faults", "Send paths", "Processes", "commitlog/00000000000000000000"):
        assert panel in result.stdout
    assert "read+write" in result.stdout and str(frames[-1].processes[0].pid) in result.stdout
