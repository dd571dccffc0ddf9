"""`mqinspect mem`: rates over the interval from two /proc samples, the JSON contract, the stream forms."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mqinspect.cli.app import app
from mqinspect.errors import ExitStatus
from mqinspect.render.mem import threshold_gauge
from probes.memory import sample_memory

SAMPLES = Path(__file__).parent / "procfs_samples" / "this_machine"
runner = CliRunner()


def _bump_counter(vmstat: Path, name: str, by: int) -> None:
    text = vmstat.read_text()
    value = int(re.search(rf"^{name} (\d+)$", text, re.M).group(1))
    vmstat.write_text(re.sub(rf"^{name} \d+$", f"{name} {value + by}", text, flags=re.M))


def test_rates_are_the_counter_deltas_over_the_interval(tmp_path: Path, monkeypatch):
    proc = tmp_path / "proc"
    shutil.copytree(SAMPLES, proc)

    def two_seconds_pass(_seconds: float) -> None:
        _bump_counter(proc / "vmstat", "pgfault", 5000)
        _bump_counter(proc / "vmstat", "pgpgout", 4096)

    clock = iter([100.0, 102.0])
    monkeypatch.setattr("probes.procfs.time.monotonic", lambda: next(clock))
    (sample,) = list(sample_memory(2.0, 1, proc_root=proc, sleep=two_seconds_pass))
    monkeypatch.undo()
    assert sample.interval_s == pytest.approx(2.0)
    assert sample.rates.vmstat.faults_per_s == pytest.approx(2500.0)
    assert sample.rates.vmstat.pgpgout_kib_per_s == pytest.approx(2048.0)
    assert sample.rates.vmstat.major_faults_per_s == 0.0


def test_json_sample_carries_units_and_meanings_of_the_thresholds():
    result = runner.invoke(app, ["mem", "--interval", "0.1", "--format", "json"])
    assert result.exit_code == 0, result.stderr
    sample = json.loads(result.stdout)
    assert sample["interval_s"] > 0.05
    writeback = sample["snapshot"]["writeback"]
    for key in (
        "dirty_pages",
        "writeback_pages",
        "background_threshold_pages",
        "throttle_threshold_pages",
        "freerun_ceiling_pages",
        "dirty_fraction_of_throttle",
        "regime",
    ):
        assert key in writeback
    assert writeback["background_threshold_pages"] < writeback["freerun_ceiling_pages"]
    assert writeback["freerun_ceiling_pages"] < writeback["throttle_threshold_pages"]
    assert sample["snapshot"]["meminfo"]["cached_bytes"] > 0
    assert sample["rates"]["vmstat"]["faults_per_s"] >= 0


def test_jsonl_streams_one_sample_per_line_and_json_refuses_a_stream():
    result = runner.invoke(app, ["mem", "-i", "0.05", "-c", "3", "-f", "jsonl"])
    assert result.exit_code == 0
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 3 and all(json.loads(line)["interval_s"] > 0 for line in lines)
    refused = runner.invoke(app, ["mem", "-c", "2", "-f", "json"])
    assert refused.exit_code == ExitStatus.BAD_INPUT and "jsonl" in refused.stderr


def test_table_says_where_each_number_comes_from():
    result = runner.invoke(app, ["mem", "-i", "0.05"], env={"COLUMNS": "160"})
    assert result.exit_code == 0
    for text in (
        "dirty limit",
        "/proc/vmstat nr_dirty",
        "of the dirty limit",
        "regime:",
        "/proc/pressure/io",
    ):
        assert text in result.stdout


def test_gauge_marks_and_unavailable_thresholds():
    sample = next(sample_memory(0.01, 1, proc_root=SAMPLES, sleep=lambda _s: None))
    gauge = threshold_gauge(sample.snapshot.writeback).plain
    assert "b" in gauge and "f" in gauge and gauge.index("b") < gauge.index("f")
    empty = type(sample.snapshot.writeback)(
        None,
        None,
        None,
        None,
        None,
        None,
        None,
        None,
        None,
        None,
        unavailable={"throttle_threshold_pages": "not in /proc/vmstat"},
    )
    assert threshold_gauge(empty).plain.startswith("gauge unavailable: not in /proc/vmstat")
