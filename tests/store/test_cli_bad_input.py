"""Bad input through the CLI: one line on stderr and exit 2 (--debug adds the traceback), nothing lost.

Covers what issue 13 found: a message id with spaces (KeyError: 3), `store produce` into a missing
directory, `store stat` and `cache` on paths that do not exist, sizes and texts the store cannot take, and a
disk that fills up under a SYNC-flush producer.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import mqinspect_as_nobody, one_error_line, run_mqinspect

from mqinspect.errors import ExitStatus
from store.message_store import GetStatus, MessageStore
from store.store_sizes import store_config_for
from store.workload import message_body

REPO = Path(__file__).resolve().parents[2]
SPACED_ID = "7F 00 00010000000000000000000000"  # 32 characters; bytes.fromhex skips the spaces


def small_store(root: Path, count: int = 3) -> Path:
    created = run_mqinspect(
        "store", "init", root, "--segment-size", "128k", "--cq-entries", "100", "--index-slots", "8"
    )
    assert created.exit_code == 0, created.stderr
    produced = run_mqinspect("store", "produce", root, "-t", "T", "-n", count, "--size", "100")
    assert produced.exit_code == 0, produced.stderr
    return root


def test_a_message_id_with_spaces_is_one_line_of_bad_input(tmp_path: Path):
    root = small_store(tmp_path / "store")
    result = run_mqinspect("store", "query", root, "--msg-id", SPACED_ID)
    assert result.exit_code == ExitStatus.BAD_INPUT
    assert "is not hexadecimal" in one_error_line(result)
    debugged = run_mqinspect("store", "query", root, "--msg-id", SPACED_ID, "--debug")
    assert debugged.exit_code == ExitStatus.BAD_INPUT
    assert "Traceback" in debugged.stderr and "BadMessageId" in debugged.stderr
    assert debugged.stderr.strip().splitlines()[-1] == one_error_line(result)


def test_produce_creates_the_store_its_help_promises(tmp_path: Path):
    for root in (tmp_path / "missing" / "store", tmp_path / "empty"):
        if root.name == "empty":
            root.mkdir()
        result = run_mqinspect("store", "produce", root, "-t", "T", "-n", 5, "--size", "100", "-f", "json")
        assert result.exit_code == 0, result.stderr
        assert json.loads(result.stdout)["messages"] == 5
        assert f"created {root} with RocketMQ's default sizes" in result.stderr
        dump = json.loads(run_mqinspect("store", "dump", root, "--body", "-f", "json").stdout)
        bodies = [event["body"]["utf8"] for event in dump["events"] if event["kind"] == "message"]
        assert bodies == [message_body("T", n, 100).decode() for n in range(5)]
        assert (root / "config" / "mqinspect.json").is_file()


def test_produce_leaves_a_foreign_directory_alone(tmp_path: Path):
    (tmp_path / "notes.txt").write_text("mine")
    result = run_mqinspect("store", "produce", tmp_path, "-t", "T", "-n", 1)
    assert result.exit_code == ExitStatus.BAD_INPUT
    assert "not a RocketMQ store" in one_error_line(result)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["notes.txt"]


def test_a_missing_store_directory_is_said_not_to_exist(tmp_path: Path):
    missing = tmp_path / "nonexistent" / "x"
    for command in ("stat", "verify", "segments", "dump"):
        result = run_mqinspect("store", command, missing)
        assert result.exit_code == ExitStatus.BAD_INPUT
        assert one_error_line(result) == f"mqinspect: error: {missing}: does not exist"
    a_file = tmp_path / "file"
    a_file.write_text("x")
    line = one_error_line(run_mqinspect("store", "stat", a_file))
    assert f"{a_file}: not a directory; {a_file}: not a Kafka segment file" in line


@pytest.mark.parametrize("output", ["table", "json", "csv"])
def test_cache_of_paths_that_do_not_exist_is_one_line_of_bad_input(tmp_path: Path, output: str):
    missing, under_a_file = tmp_path / "nonexistent", tmp_path / "file" / "x"
    (tmp_path / "file").write_text("x")
    result = run_mqinspect("cache", missing, under_a_file, "--format", output)
    assert result.exit_code == ExitStatus.BAD_INPUT
    assert one_error_line(result) == f"mqinspect: error: no such file or directory: {missing}, {under_a_file}"


@pytest.mark.requires_root
def test_a_path_nobody_may_look_at_is_not_called_missing(tmp_path: Path):
    """As nobody, a file under root's private directory cannot even be stat'ed: it is not reported as
    missing (exit 2) but measured as unreadable, in its row; a path that is really missing still is."""
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    (private / "segment").write_bytes(b"x" * 4096)
    hidden = mqinspect_as_nobody("cache", str(private / "segment"), "--format", "json")
    assert hidden.returncode != ExitStatus.BAD_INPUT, hidden.stderr
    assert "no such file" not in hidden.stderr.lower()
    (row,) = json.loads(hidden.stdout)["errors"]
    assert (row["path"], row["errno"]) == (str(private / "segment"), errno.EACCES)
    nowhere = Path("/") / f"mqinspect-missing-{os.getpid()}"  # under a directory nobody may search
    missing = mqinspect_as_nobody("cache", str(nowhere))
    assert missing.returncode == ExitStatus.BAD_INPUT
    assert f"mqinspect: error: no such file or directory: {nowhere}" in missing.stderr


def test_sizes_the_store_cannot_take_are_refused_before_it_is_created(tmp_path: Path):
    root = tmp_path / "never"
    infinite = run_mqinspect("store", "produce", root, "-t", "T", "--size", "1e400")
    assert infinite.exit_code == ExitStatus.BAD_INPUT and "is not a size" in one_error_line(infinite)
    huge = run_mqinspect(
        "store", "produce", root, "-t", "T", "--size", "100g"
    )  # built, the body alone was 100 GiB
    assert huge.exit_code == ExitStatus.BAD_INPUT
    assert "exceeds the store's maxMessageSize (4,194,304 B)" in one_error_line(huge)
    for option, value in (("--keys", "a\x01b"), ("--tags", "x\x02"), ("-t", "x" * 256)):
        refused = run_mqinspect("store", "produce", root, "-t", "T", option, value)
        assert refused.exit_code == ExitStatus.BAD_INPUT
        assert "cannot produce these messages" in one_error_line(refused)
    assert not root.exists()


@pytest.mark.parametrize(
    "args",
    [
        ("query", "{root}", "--key", "\udcff"),
        ("query", "{root}", "--key", "k", "--topic", "T\udcff"),
        ("cq", "{root}", "--topic", "\udcff"),
        ("produce", "{root}", "-t", "\udcff"),
        ("produce", "{root}", "-t", "T", "--keys", "k\udcff"),
        ("consume", "{root}", "-t", "T", "--group", "g\udcff"),
    ],
    ids=["query-key", "query-topic", "cq-topic", "produce-topic", "produce-keys", "consume-group"],
)
def test_text_the_command_line_could_not_decode_is_bad_input(tmp_path: Path, args: tuple[str, ...]):
    """A byte that is not UTF-8 reaches Python as a surrogate (\\udcff for 0xff): before, hashing or
    encoding it raised UnicodeEncodeError, an internal error."""
    root = small_store(tmp_path / "store")
    result = run_mqinspect("store", *(str(root) if arg == "{root}" else arg for arg in args))
    assert result.exit_code == ExitStatus.BAD_INPUT
    assert "is not UTF-8 text" in one_error_line(result)


# ---- a disk that fills up ----------------------------------------------------------------------------------


def mqinspect(*args: object) -> subprocess.CompletedProcess:
    """The real command in its own process: its stderr is what a user sees, library logging included."""
    return subprocess.run(
        [sys.executable, "-m", "mqinspect", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "NO_COLOR": "1", "COLUMNS": "120"},
        timeout=120,
    )


@pytest.mark.parametrize(
    ("segment_size", "index_slots"),
    [("128k", 8), ("480k", 1000)],
    ids=["segment-cannot-be-created", "index-cannot-be-created-either"],
)
def test_a_full_disk_stops_a_sync_producer_with_its_report_and_one_line(
    tiny_filesystem: Path, segment_size: str, index_slots: int
):
    """In a 512 KiB filesystem. With 480k segments the first segment fits and the 84 KiB index file does
    not: dispatch pauses from the start (said once, not once per retry), the shutdown steps that write the
    queues fail too, and the store is left to recover at its next start."""
    root = tiny_filesystem / "store"
    init = (
        "store",
        "init",
        root,
        "--segment-size",
        segment_size,
        "--cq-entries",
        100,
        "--index-slots",
        index_slots,
    )
    assert mqinspect(*init).returncode == 0
    result = mqinspect(
        "store", "produce", root, "-t", "T", "-n", 2000, "--size", 1000, "--flush", "sync", "-f", "json"
    )

    assert result.returncode == ExitStatus.FINDINGS, result.stderr
    report = json.loads(result.stdout)
    acknowledged = report["messages"]
    assert 100 < acknowledged < 2000 and report["last_queue_offset"] == acknowledged - 1
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith(f"appending 2000 messages of 1000 B to {root}")
    assert (
        lines[-1].startswith("mqinspect: error: the disk is full: ")
        and "No space left on device" in lines[-1]
    )
    assert f"the {acknowledged:,} messages reported were acknowledged and are kept" in lines[-1]
    assert f"the last at offset {report['last_physical_offset']:,}" in lines[-1]
    assert "shutdown step failed:" not in result.stderr and "warning" not in result.stderr
    if index_slots == 8:
        assert len(lines) == 2, result.stderr
    else:
        assert len(lines) == 3 and lines[1].startswith("dispatch paused at 0"), result.stderr
        assert "could not finish either, so the store's next start recovers it" in lines[-1]

    # Nothing acknowledged is lost: with room again, the store recovers and serves every one of them.
    subprocess.run(["mount", "-o", "remount,size=8m", str(tiny_filesystem)], check=True)
    with MessageStore(root, store_config_for(root)) as store:
        got = store.get_messages("T", 0, 0, max_count=acknowledged + 10)
        assert got.status is GetStatus.FOUND and len(got.messages) == acknowledged
        for number, message in enumerate(got.messages):
            record = store.look_message_by_offset(message.physical_offset, message.size_bytes)
            assert bytes(record.body) == message_body("T", number, 1000), number
    assert mqinspect("store", "verify", root).returncode == 0
