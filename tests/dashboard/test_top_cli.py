"""`mqinspect top` without a terminal and `mqinspect replay`: the --once --format json contract against the
other commands' JSON, the SVG export, bad input, and record-then-replay giving the same frames."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import sys
from pathlib import Path

import pytest
from fakes import frame
from rich.console import Console
from support import fincore_pages, one_error_line
from typer.testing import CliRunner

from mqinspect.cli.app import app
from mqinspect.errors import BadInput, ExitStatus
from mqinspect.render.top import top_view
from mqinspect.sampling.recording import SnapshotRecorder, read_recording
from mqinspect.sampling.snapshot import SCHEMA

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "store"))
from store_builder import StoreBuilder

runner = CliRunner()
FAST = ["--interval", "0.2", "--no-ebpf"]


@pytest.fixture
def built(tmp_path: Path):
    builder = StoreBuilder(tmp_path / "store", segment_size=64 * 1024, cq_entries_per_file=100)
    for number in range(150):
        # With a KEYS property every record ends in non-zero bytes (an empty properties field would end it
        # in two zero bytes, which "end of non-zero data" cannot tell from the zeros after the log's end).
        builder.add("TopicA", queue_id=number % 2, body=bytes([65 + number % 26]) * 900, keys=f"k{number}")
    return builder.build()


@pytest.fixture
def store(built) -> Path:
    return built.root


def top_json(*args: str) -> dict:
    result = runner.invoke(app, ["top", *args, "--once", "--format", "json", *FAST])
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def key_tree(value) -> object:
    """The keys of a JSON value, recursively (lists by their first item): the shape, not the numbers."""
    if isinstance(value, dict):
        return {key: key_tree(item) for key, item in value.items()}
    if isinstance(value, list):
        return [key_tree(value[0])] if value else []
    return None


def test_once_json_memory_has_the_keys_of_mem_json(store):
    mem = runner.invoke(app, ["mem", "--format", "json", "--interval", "0.2"])
    assert mem.exit_code == 0, mem.stderr
    top = top_json(str(store))
    assert top["schema"] == SCHEMA and next(iter(top)) == "schema"
    assert key_tree(top["memory"]) == key_tree(json.loads(mem.stdout))


def test_once_json_segments_agree_with_store_segments_json(built, store):
    listing = json.loads(runner.invoke(app, ["store", "segments", str(store), "--format", "json"]).stdout)
    top = top_json(str(store))
    ours = {row["path"]: row for row in top["store"]["segments"]}
    theirs = {row["path"]: row for row in listing["rows"] if row["kind"] != "index"}
    assert set(ours) == set(theirs)
    for path, row in theirs.items():
        for key in ("kind", "size_bytes", "start_offset_bytes"):
            assert ours[path][key] == row[key], (path, key)
    residency = {row["path"]: row for row in listing["residency"]["segments"]}
    for path, row in ours.items():
        assert row["pages"] == residency[path]["pages"]
        assert set(residency[path]) >= {"cached_pages", "dirty_pages", "writeback_pages", "locked_bytes"}
        assert row["residency_source"] == residency[path]["source"] == "cachestat"
    (newest,) = [row for row in top["store"]["segments"] if row["newest"] and row["kind"] == "commitlog"]
    # The builder writes zeros after the last record, so the end of data is where its records end.
    assert newest["wrote_position_bytes"] == built.max_physical_offset - newest["start_offset_bytes"]
    assert newest["wrote_position_bytes"] == theirs[newest["path"]]["written_bytes"]


def test_once_json_says_why_ebpf_numbers_are_missing(store):
    top = top_json(str(store))
    assert {probe["state"] for probe in top["probes"]} == {"disabled"}
    segment = top["store"]["segments"][0]
    assert segment["faults"] is None and "faults probe is not running" in segment["unavailable"]["faults"]
    assert top["sendpaths"]["bytes_to_sockets"] is None
    assert all(probe["fix"] for probe in top["probes"])


def test_every_json_key_is_snake_case_and_units_are_spelled_out(store):
    def keys(value):
        if isinstance(value, dict):
            for key, item in value.items():
                yield key
                if key != "unavailable":
                    yield from keys(item)
        elif isinstance(value, list):
            for item in value:
                yield from keys(item)

    found = set(keys(top_json(str(store), "--pid", str(os.getpid()))))
    assert all(key == key.lower() and " " not in key for key in found)
    assert {"size_bytes", "interval_s", "rss_bytes", "minor_faults_per_s", "wchar_bytes_per_s"} <= found
    assert not any(key.endswith(("_ms_", "_kb", "_mb", "_sec")) for key in found)


def test_count_prints_one_line_per_interval_and_jsonl_streams(store):
    result = runner.invoke(app, ["top", str(store), "--count", "2", *FAST], env={"COLUMNS": "150"})
    assert result.exit_code == 0, result.stderr
    header, *lines = result.stdout.splitlines()
    assert header.split()[:3] == ["time", "cached", "dirty"] and len(lines) == 2
    lines = runner.invoke(app, ["top", str(store), "--count", "2", "--format", "jsonl", *FAST]).stdout
    assert [json.loads(line)["sequence"] for line in lines.splitlines()] == [1, 2]


@pytest.mark.parametrize("output", ["table", "csv", "json", "jsonl"])
def test_svg_export_saves_the_dashboard_whatever_the_format(store, tmp_path, output):
    picture = tmp_path / "top.svg"
    arguments = ["top", str(store), "--once", "--svg", str(picture), "--format", output, *FAST]
    result = runner.invoke(app, arguments)
    assert result.exit_code == 0, result.stderr
    text = picture.read_text()
    assert text.startswith("<svg") and "Segments" in text and "commitlog" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--svg", "x.svg"], "--svg saves one snapshot"),
        (["--format", "json", "--count", "2"], "--format json writes one snapshot"),
        (["--pid", "999999999", "--once"], "--pid 999999999: no such process"),
        (["--interval", "0.01", "--once"], "the shortest interval"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(store, args, message):
    result = runner.invoke(app, ["top", str(store), "--no-ebpf", *args])
    assert result.exit_code == ExitStatus.BAD_INPUT
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert result.stdout == ""


def test_a_directory_that_is_not_a_store_is_bad_input(tmp_path):
    result = runner.invoke(app, ["top", str(tmp_path), "--once", *FAST])
    assert result.exit_code == ExitStatus.BAD_INPUT and "not a RocketMQ store" in result.stderr


def test_record_then_replay_gives_the_same_frames(store, tmp_path):
    recording = tmp_path / "run.jsonl"
    live = runner.invoke(
        app, ["top", str(store), "--count", "3", "--format", "jsonl", "--record", str(recording), *FAST]
    )
    assert live.exit_code == 0, live.stderr
    frames = read_recording(recording)
    assert [snapshot.sequence for snapshot in frames] == [1, 2, 3]
    replayed = runner.invoke(app, ["replay", str(recording), "--format", "jsonl"])
    assert replayed.exit_code == 0, replayed.stderr
    assert replayed.stdout == live.stdout  # the same snapshots, key for key
    assert render(frames[-1]) == render(read_recording(recording)[-1])


@pytest.mark.parametrize("name", ["fake.jsonl", "fake.jsonl.gz"])
def test_recorded_fakes_read_back_equal_and_draw_the_same(tmp_path, name):
    recording = tmp_path / name
    frames = [frame(1), frame(2, detail_for="/store/commitlog/00000000000002097152")]
    with SnapshotRecorder(recording) as recorder:
        for snapshot in frames:
            recorder.write(snapshot)
    back = read_recording(recording)
    assert back == tuple(frames)
    assert [render(snapshot) for snapshot in back] == [render(snapshot) for snapshot in frames]


def test_a_file_that_is_not_a_recording_is_bad_input(tmp_path):
    bogus = tmp_path / "bogus.jsonl"
    bogus.write_text('{"schema": "something else"}\n')
    with pytest.raises(BadInput, match="line 1: not a `mqinspect top` snapshot"):
        read_recording(bogus)
    result = runner.invoke(app, ["replay", str(bogus)])
    assert result.exit_code == ExitStatus.BAD_INPUT


def render(snapshot) -> str:
    console = Console(width=140, file=io.StringIO(), color_system=None)
    console.print(top_view(snapshot))
    return console.file.getvalue()


def test_the_probes_line_names_every_traced_pid():
    from mqinspect.render.top import _whom

    assert _whom("page faults of pids 10, 11, 12, per segment of the store /s") == "pids 10, 11, 12"
    assert _whom("page faults of pid 7, per file") == "pid 7"
    assert _whom("page faults of every process, per file") == "every process"


# --- the stream forms: bcc's positional INTERVAL COUNT, one line per interval, CSV, -J ---------------------

# A value with its unit: a size (0B, 12.3MiB), a rate (1.2MiB/s, 6,195/s); or a word (the regime).
VALUE_WITH_UNIT = re.compile(r"^((<1|[\d,]+(\.\d+)?)(B|KiB|MiB|GiB|TiB)?(/s)?|[a-z-]+)$")


@pytest.mark.parametrize("before", [[], ["STORE"]], ids=["no-store", "store"])
def test_positional_interval_count_prints_timestamped_lines_with_units(store, before):
    arguments = [str(store) if word == "STORE" else word for word in before]
    result = runner.invoke(app, ["top", *arguments, "0.2", "2", "--no-ebpf", "--pid", str(os.getpid())])
    assert result.exit_code == ExitStatus.OK, result.stderr
    header, *lines = result.stdout.splitlines()
    assert len(lines) == 2
    for line in lines:
        clock, *cells = re.split(r"\s{2,}", line.strip())
        assert re.match(r"^\d\d:\d\d:\d\d$", clock)
        assert len(cells) == len(re.split(r"\s{2,}", header.strip())) - 1
        measured = cells if before else cells[2:]  # without a store, its columns are unavailable
        assert all(VALUE_WITH_UNIT.match(cell) for cell in measured), line


def test_positional_and_option_together_are_a_usage_error(store):
    result = runner.invoke(app, ["top", str(store), "0.2", "2", "--count", "3", "--no-ebpf"])
    assert result.exit_code == ExitStatus.BAD_INPUT
    assert "give one of them" in one_error_line(result)


def test_csv_rows_carry_the_store_s_resident_bytes_as_fincore_counts_them(store):
    paths = [Path(segment["path"]) for segment in top_json(str(store))["store"]["segments"]]
    result = runner.invoke(app, ["top", str(store), "0.2", "1", "--no-ebpf", "--format", "csv"])
    assert result.exit_code == ExitStatus.OK, result.stderr
    (row,) = csv.DictReader(io.StringIO(result.stdout))
    page = os.sysconf("SC_PAGE_SIZE")
    assert int(row["store_cached_bytes"]) == sum(fincore_pages(path) for path in paths) * page
    assert {"time_unix_s", "store_dirty_bytes", "system_dirty_bytes", "to_sockets_bytes_per_s"} <= set(row)


def test_dash_j_is_format_json(store):
    result = runner.invoke(app, ["top", str(store), "--once", "-J", *FAST])
    assert result.exit_code == ExitStatus.OK, result.stderr
    assert json.loads(result.stdout)["schema"] == SCHEMA
