"""`mqinspect store init|produce|consume|recover`: what they change, what they report, and their errors."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

from typer.testing import CliRunner

from mqinspect.cli.app import app
from mqinspect.errors import ExitStatus
from store import codec
from store.commitlog_scan import ScannedRecord, scan_commitlog
from store.consumer_offsets import consumer_offset_path, load_consumer_offsets
from store.layout import discover_store

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(arg) for arg in args], env={"COLUMNS": "120"})


def make_store(root: Path, count: int = 500) -> dict:
    assert (
        invoke(
            "store", "init", root, "--segment-size", "64k", "--cq-entries", "100", "--index-slots", "64"
        ).exit_code
        == 0
    )
    result = invoke(
        "store",
        "produce",
        root,
        "-t",
        "Orders",
        "-n",
        count,
        "--size",
        "100",
        "--keys",
        "k-{n}",
        "--tags",
        "TagA",
        "--batch",
        "10",
        "-f",
        "json",
    )
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_init_saves_the_sizes_and_produce_uses_them(tmp_path: Path):
    root = tmp_path / "store"
    report = make_store(root, 500)
    assert (
        report["messages"] == 500 and report["first_queue_offset"] == 0 and report["last_queue_offset"] == 499
    )
    assert report["put_latency_p50_us"] > 0 and report["interrupted"] is False
    layout = discover_store(root)
    assert layout.commitlog.file_size == 64 * 1024 and len(layout.commitlog.segments) > 1
    assert layout.consume_queue("Orders", 0).queue.file_size == 100 * 20
    assert not (root / "abort").exists()  # a clean shutdown


def test_init_refuses_a_non_empty_foreign_directory(tmp_path: Path):
    (tmp_path / "notes.txt").write_text("mine")
    result = invoke("store", "init", tmp_path)
    assert result.exit_code == ExitStatus.BAD_INPUT and "not empty" in result.stderr


def test_consume_with_a_group_resumes_and_commits(tmp_path: Path):
    root = tmp_path / "store"
    make_store(root, 50)
    first = json.loads(
        invoke("store", "consume", root, "-t", "Orders", "-g", "g1", "-n", 20, "-f", "json").stdout
    )
    second = json.loads(
        invoke("store", "consume", root, "-t", "Orders", "-g", "g1", "-n", 100, "-f", "json").stdout
    )
    assert [m["queue_offset"] for m in first["messages"]] == list(range(20))
    assert [m["queue_offset"] for m in second["messages"]] == list(range(20, 50))
    assert second["next_offset"] == 50 and second["committed"] is True
    assert first["messages"][3]["keys"] == "k-3" and first["messages"][3]["body_preview"].startswith(
        "Orders-3-"
    )
    assert load_consumer_offsets(consumer_offset_path(root)).get("Orders", "g1", 0) == 50


def test_consume_of_an_unknown_queue_is_bad_input(tmp_path: Path):
    root = tmp_path / "store"
    make_store(root, 5)
    result = invoke("store", "consume", root, "-t", "Nope")
    assert result.exit_code == ExitStatus.BAD_INPUT
    assert result.stderr.strip() == f"mqinspect: error: no consume queue for topic 'Nope' queue 0 in {root}"


def test_recover_dry_run_changes_nothing_and_matches_the_real_run(tmp_path: Path):
    root = tmp_path / "store"
    make_store(root, 300)
    last = sorted((root / "commitlog").iterdir())[-1]
    with open(last, "r+b") as handle:  # a torn write at the end of the log
        size = len(handle.read().rstrip(b"\0"))
        handle.seek(size - 30)
        handle.write(b"\0" * 30)
    (root / "abort").write_text("4242")
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    dry = json.loads(invoke("store", "recover", root, "--dry-run", "-f", "json").stdout)
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before
    assert dry["mode"] == "abnormal" and dry["truncated_bytes"] > 0
    real = invoke("store", "recover", root, "-f", "json")
    assert real.exit_code == 0, real.stderr
    assert json.loads(real.stdout)["process_offset"] == dry["process_offset"]
    assert not (root / "abort").exists()
    consumed = json.loads(invoke("store", "consume", root, "-t", "Orders", "-n", 1000, "-f", "json").stdout)
    assert len(consumed["messages"]) == 299  # the torn last record is gone, everything before it is there


def test_produce_bad_sizes_are_usage_errors(tmp_path: Path):
    result = invoke("store", "produce", tmp_path / "s", "-t", "T", "--size", "12q")
    assert result.exit_code == ExitStatus.BAD_INPUT and "is not a size" in result.stderr
    result = invoke("store", "init", tmp_path / "s", "--segment-size", "0")
    assert result.exit_code == ExitStatus.BAD_INPUT and "must be positive" in result.stderr


def test_clean_dry_run_lists_what_the_real_run_deletes(tmp_path: Path):
    import os
    import time

    root = tmp_path / "store"
    make_store(root, 1500)
    old = time.time() - 100 * 3600
    for segment in (root / "commitlog").iterdir():
        os.utime(segment, (old, old))
    dry = json.loads(invoke("store", "clean", root, "--dry-run", "-f", "json").stdout)
    assert dry["deletions"] and all(Path(d["path"]).exists() for d in dry["deletions"])
    real = invoke("store", "clean", root, "-f", "json")
    assert real.exit_code == 0, real.stderr
    deleted = json.loads(real.stdout)["deletions"]
    assert sorted(d["path"] for d in deleted) == sorted(d["path"] for d in dry["deletions"])
    assert not any(Path(d["path"]).exists() for d in deleted)
    assert len(list((root / "commitlog").iterdir())) >= 1  # never the newest segment


def test_after_clean_the_read_only_views_start_at_the_first_message_still_stored(tmp_path: Path):
    import os
    import time

    root = tmp_path / "store"
    make_store(root, 1500)
    old = time.time() - 100 * 3600
    for segment in (root / "commitlog").iterdir():
        os.utime(segment, (old, old))
    assert invoke("store", "clean", root).exit_code == 0
    view = json.loads(invoke("store", "cq", root, "-t", "Orders", "-n", 1, "-f", "json").stdout)
    consumed = json.loads(invoke("store", "consume", root, "-t", "Orders", "-n", 1, "-f", "json").stdout)
    assert view["min_offset"] == consumed["min_offset"] == consumed["messages"][0]["queue_offset"]
    commitlog_min = min(int(p.name) for p in (root / "commitlog").iterdir())
    assert view["entries"][0]["physical_offset"] >= commitlog_min


def _produce_small(root: Path, *extra: str) -> None:
    assert invoke("store", "init", root, "--segment-size", "64k", "--index-slots", "64").exit_code == 0
    result = invoke(
        "store", "produce", root, "-t", "Orders", "-n", 300, "--size", "100", "--keys", "k-{n}", *extra
    )
    assert result.exit_code == 0, result.stderr


def _flip_store_timestamp(root: Path) -> tuple[Path, int]:
    """Flip a bit of STORETIMESTAMP, a field BODYCRC does not cover, in the middle record of the last segment
    (which normal recovery re-reads); return the segment and the record's physical offset."""
    commitlog = discover_store(root).commitlog
    segment = commitlog.segments[-1]
    events = scan_commitlog(commitlog, segment.file_from_offset)
    records = [event for event in events if isinstance(event, ScannedRecord)]
    victim = records[len(records) // 2]
    with open(segment.path, "r+b") as handle:
        handle.seek(
            victim.physical_offset - segment.file_from_offset + codec.MESSAGE_STORE_TIMESTAMP_POSITION + 7
        )
        byte = handle.read(1)[0]
        handle.seek(-1, 1)
        handle.write(bytes([byte ^ 0x01]))
    return segment.path, victim.physical_offset


def test_append_prop_crc_writes_rocketmq_5s_record_crc(tmp_path: Path):
    root = tmp_path / "store"
    _produce_small(root, "--append-prop-crc")
    segment = discover_store(root).commitlog.segments[0]
    data = segment.path.read_bytes()
    records = [e for e in scan_commitlog(discover_store(root).commitlog) if isinstance(e, ScannedRecord)]
    assert len(records) == 300
    for event in records[:50]:  # the CRC of bytes [0, TOTALSIZE-20), its 10 digits least significant first
        start = event.physical_offset - segment.file_from_offset
        raw = data[start : start + event.record.total_size]
        crc = zlib.crc32(raw[:-20]) & 0x7FFFFFFF
        assert raw[-20:] == b"__CRC32#\x01" + str(crc)[::-1].ljust(10, "0").encode() + b"\x02"


def test_append_prop_crc_finds_a_flipped_header_field_where_the_store_wrote_it(tmp_path: Path):
    root = tmp_path / "store"
    _produce_small(root, "--append-prop-crc")
    segment, offset = _flip_store_timestamp(root)
    report = json.loads(invoke("store", "verify", root, "-f", "json").stdout)
    bad = [f for f in report["findings"] if f["check"] == "commitlog-record"]
    assert [(f["file"], f["offset"]) for f in bad] == [(str(segment), offset)]
    assert "__CRC32#" in bad[0]["message"]
    recovered = invoke("store", "recover", root, "-f", "json")
    assert recovered.exit_code == 0, recovered.stderr
    assert json.loads(recovered.stdout)["process_offset"] == offset
    assert invoke("store", "verify", root).exit_code == ExitStatus.OK


def test_without_the_prop_crc_the_same_flip_goes_unseen(tmp_path: Path):
    root = tmp_path / "store"
    _produce_small(root)
    _flip_store_timestamp(root)
    assert invoke("store", "verify", root).exit_code == ExitStatus.OK  # BODYCRC covers only the body
