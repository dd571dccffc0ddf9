"""`mqinspect mem`: rates over the interval from two /proc samples, the JSON contract, the stream forms."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
from pathlib import Path

import pytest
from support import one_error_line
from typer.testing import CliRunner

from mqinspect.cli.app import app
from mqinspect.errors import ExitStatus
from mqinspect.render.mem import MEM_FIELDS, threshold_gauge
from mqinspect.render.stream_lines import LineStream, header_every
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


# --- the stream forms: bcc's positional INTERVAL COUNT, one line per interval, CSV, -J ---------------------

CLOCK = re.compile(r"^\d\d:\d\d:\d\d$")
# A value with its unit: a size (0B, 12.3MiB), a rate (1.2MiB/s, 6,195/s) or a share (0.12%).
VALUE_WITH_UNIT = re.compile(r"^(<1|[\d,]+(\.\d+)?)(B|KiB|MiB|GiB|TiB)?(/s|%)?$")
WORDS = {"regime"}  # the one column that is a name, not a measure


def _cells(line: str) -> list[str]:
    return re.split(r"\s{2,}", line.strip())


def test_positional_interval_count_streams_one_timestamped_line_per_interval_under_one_header():
    result = runner.invoke(app, ["mem", "0.05", "3"])
    assert result.exit_code == ExitStatus.OK, result.stderr
    header, *lines = result.stdout.splitlines()
    assert len(lines) == 3  # into a pipe the header is said once, as vmstat does
    headers = _cells(header)
    assert headers[:4] == ["time", "cached", "dirty", "writeback"]
    for line in lines:
        cells = _cells(line)
        assert len(cells) == len(headers) and CLOCK.match(cells[0]), line


def test_every_cell_of_a_stream_line_keeps_its_unit():
    result = runner.invoke(app, ["mem", "0.05", "2"])
    header, *lines = result.stdout.splitlines()
    names = _cells(header)
    for line in lines:
        for name, cell in zip(names[1:], _cells(line)[1:], strict=True):
            assert name in WORDS or VALUE_WITH_UNIT.match(cell), f"{name}: {cell!r} has no unit"


def test_positional_and_option_together_are_a_usage_error():
    for arguments in (["0.1", "--interval", "0.2"], ["0.1", "2", "--count", "3"]):
        result = runner.invoke(app, ["mem", *arguments])
        assert result.exit_code == ExitStatus.BAD_INPUT
        assert "give one of them" in one_error_line(result)


def test_csv_has_a_header_of_keys_with_units_and_one_row_per_interval():
    result = runner.invoke(app, ["mem", "0.05", "3", "--format", "csv"])
    assert result.exit_code == ExitStatus.OK, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == 3
    for key in rows[0]:
        assert key in WORDS or key.endswith(("_bytes", "_percent", "_per_s", "_unix_s")), key
    assert all(int(row["cached_bytes"]) > 0 and float(row["faults_per_s"]) >= 0 for row in rows)
    times = [float(row["time_unix_s"]) for row in rows]
    assert times == sorted(times)


def test_dash_j_is_format_json_and_help_shows_the_positional_form():
    result = runner.invoke(app, ["mem", "-J", "-i", "0.05"])
    assert result.exit_code == ExitStatus.OK, result.stderr
    assert json.loads(result.stdout)["interval_s"] > 0
    usage = " ".join(runner.invoke(app, ["mem", "--help"], env={"COLUMNS": "120"}).stdout.split())
    assert "[-J]" in usage and "[INTERVAL] [COUNT]" in usage and "-J is --format json" in usage


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_header_is_repeated_every_screenful_on_a_terminal():
    sample = next(sample_memory(0.01, 1, proc_root=SAMPLES, sleep=lambda _s: None))
    screen = Terminal()
    lines = LineStream(MEM_FIELDS, screen, header_every=header_every(screen, terminal_rows=4))
    for second in range(7):
        lines.write(sample, 1_700_000_000 + second)
    written = screen.getvalue().splitlines()
    assert [n for n, line in enumerate(written) if line.startswith("time")] == [0, 4, 8]
    assert header_every(io.StringIO(), terminal_rows=4) is None  # a pipe or file: once


def test_on_an_80_column_terminal_the_first_fields_that_fit_are_kept_and_the_rest_named(capsys):
    sample = next(sample_memory(0.01, 1, proc_root=SAMPLES, sleep=lambda _s: None))
    screen = Terminal()
    lines = LineStream(MEM_FIELDS, screen, header_every=None, width=80)
    for second in range(3):
        lines.write(sample, 1_700_000_000 + second)
    written = screen.getvalue().splitlines()
    assert all(len(line) <= 80 for line in written)
    kept = _cells(written[0])[1:]
    assert kept == [field.header for field in MEM_FIELDS[: len(kept)]] and len(kept) < len(MEM_FIELDS)
    left_out = ", ".join(field.header for field in MEM_FIELDS[len(kept) :])
    assert capsys.readouterr().err == (
        f"mqinspect: {left_out} left out at 80 columns (a wider terminal, or --format csv, has them)\n"
    )
