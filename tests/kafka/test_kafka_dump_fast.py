"""`store dump` on Kafka, the fast paths held to the plain ones: a batch's records made a column at a time
give the events the record-by-record path gives, and the jsonl lines are json_line's; `--count N` reads a
few times what N batches take (strace's pread64 results, not the dump's own counter, are the ground truth);
and the benchmark of issue 17 item 6 runs end to end on a small partition."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mqinspect.jsonable import json_line
from store.inspection.kafka import dump
from store.inspection.kafka.dump import KafkaDumpStream
from store.kafka.writer import LogDirWriter, ProducerRecord

REPO = Path(__file__).resolve().parents[2]
MQINSPECT = Path(sys.executable).with_name("mqinspect")
T0 = 1_700_000_000_000

# Text that is printable, text that needs JSON escaping, text with line breaks (printable to a terminal,
# not to str.isprintable), control characters, and bytes that are not UTF-8.
VALUES = (
    b"plain text",
    'quote " backslash \\ slash / unicode \u00e9\u4e2d'.encode(),
    b"two\nlines\tand a tab",
    b"bell \x07",
    b"\xff\xfe not utf-8",
    b"",
    None,
)


def _mixed_records(batch: int, count: int) -> list[ProducerRecord]:
    records = []
    for i in range(count):
        value = VALUES[(batch + i) % len(VALUES)] if batch % 3 else b"all text %d" % i
        header_value = VALUES[(batch * 3 + i) % len(VALUES)] if batch % 4 == 1 else b"h"
        records.append(
            ProducerRecord(
                None if i % 5 == 2 else b"key-%d" % i,
                value,
                (("trace", header_value), ("none", None)) if i % 3 == 0 else (),
                T0 + batch * 100 + i,
            )
        )
    return records


@pytest.fixture
def mixed_log_dir(tmp_path: Path) -> Path:
    root = tmp_path / "logs"
    with LogDirWriter(root, segment_bytes=8192) as writer:
        partition = writer.partition("mixed", 0)
        for batch in range(40):
            partition.append(
                _mixed_records(batch, 1 + batch % 6),
                compression=("none", "gzip", "zstd")[batch % 3],
                timestamp_type="LogAppendTime" if batch % 7 == 3 else "CreateTime",
                producer_id=5 if batch % 2 else -1,
            )
    return root


def _events(root: Path, **options) -> list:
    return [event for run in KafkaDumpStream(root, **options).batches() for event in run]


def test_column_texts_give_the_record_by_record_events(mixed_log_dir: Path, monkeypatch):
    for options in ({"deep": True}, {"deep": True, "from_offset": 7}, {"deep": True, "values": "hex"}):
        fast = _events(mixed_log_dir, **options)
        with monkeypatch.context() as patched:
            patched.setattr(dump, "_column_texts", lambda column: None)  # every batch record by record
            plain = _events(mixed_log_dir, **options)
        assert fast == plain, options
    encodings = {event.encoding for event in fast if event.kind == "record"}
    assert encodings == {"hex"}
    text_run = {event.encoding for event in _events(mixed_log_dir, deep=True) if event.kind == "record"}
    assert text_run == {"utf8", "hex"}


@pytest.mark.parametrize("source", ["writer", "kafka-4.0"])
def test_jsonl_lines_are_json_line_of_each_event(source: str, request):
    """Writer-made records of every kind of text, and the fixture's control and metadata records."""
    log_dir = request.getfixturevalue("mixed_log_dir" if source == "writer" else "kafka_fixture")
    result = subprocess.run(
        [MQINSPECT, "store", "dump", log_dir, "--deep", "--format", "jsonl"],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = result.stdout.splitlines()[1:-1]  # between the start and the end lines
    events = _events(log_dir, deep=True)
    assert len(lines) == len(events)
    for line, event in zip(lines, events, strict=True):
        assert json.loads(line) == json.loads(json_line(event)), event
    assert (
        sum(event.kind == "record" for event in events)
        == json.loads(result.stdout.splitlines()[-1])["record_count"]
    )


# --- --count reads what the asked batches take -------------------------------------------------------------


@pytest.fixture
def big_partition(tmp_path: Path) -> Path:
    """One 6 MiB segment of ~10 KiB batches: more than one 4 MiB window."""
    value = b"v" * 100
    with LogDirWriter(tmp_path / "logs") as writer:
        partition = writer.partition("big", 0)
        for batch in range(600):
            partition.append([ProducerRecord(b"k", value, (), T0 + batch)] * 100)
    return tmp_path / "logs" / "big-0"


def _log_bytes_pread(trace: str) -> int:
    """What pread64 returned on the .log files, from `strace -e trace=openat,pread64,close` output."""
    log_fds, total = set(), 0
    for line in trace.splitlines():
        opened = re.search(r'openat\(.*"[^"]*\.log", .*\)\s+=\s+(\d+)$', line)
        if opened:
            log_fds.add(int(opened.group(1)))
            continue
        closed = re.search(r"close\((\d+)\)", line)
        if closed:
            log_fds.discard(int(closed.group(1)))
            continue
        read = re.search(r"pread64\((\d+), .*\)\s+=\s+(\d+)$", line)
        if read and int(read.group(1)) in log_fds:
            total += int(read.group(2))
    return total


def _dump_traced(tmp_path: Path, *arguments: object) -> tuple[int, dict]:
    trace = tmp_path / "strace.txt"
    result = subprocess.run(
        ["strace", "-f", "-qq", "-s", "0", "-e", "trace=openat,pread64,close", "-o", trace, MQINSPECT,
         "store", "dump", *map(str, arguments), "--format", "jsonl"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return _log_bytes_pread(trace.read_text()), json.loads(result.stdout.splitlines()[-1])


@pytest.mark.parametrize("count", [1, 10])
def test_count_reads_about_what_the_asked_batches_take(big_partition: Path, tmp_path: Path, count: int):
    batch_bytes = (big_partition / "00000000000000000000.log").stat().st_size // 600
    read, end = _dump_traced(tmp_path, big_partition, "--count", count, "--deep")
    assert end["stopped"] == "count" and end["batch_count"] == count and end["record_count"] == 100 * count
    assert read == end["log_bytes_read"]  # the dump's counter is what the kernel handed over
    # The asked batches and the next one (for --from-offset to go on), in reads doubling from a page: the
    # reads add up to less than twice the last, which is less than twice what was needed, plus the first
    # page. Main read a whole 4 MiB window for either.
    assert read <= 4 * (count + 1) * batch_bytes + 4096, (read, batch_bytes)
    assert read < 4 << 20


def test_count_within_max_bytes_reads_no_byte_past_the_budget(big_partition: Path, tmp_path: Path):
    read, end = _dump_traced(tmp_path, big_partition, "--count", 1000, "--max-bytes", 100_000)
    assert end["stopped"] == "budget" and read == end["log_bytes_read"] <= 100_000


# --- the benchmark ----------------------------------------------------------------------------------------


def test_kafka_scan_benchmark_runs_on_a_small_partition(tmp_path: Path):
    result = subprocess.run(
        [sys.executable, REPO / "benchmarks" / "kafka_scan.py", "--gib", "0.002", "--dir", tmp_path],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    verdicts = [line.split()[0] for line in result.stdout.splitlines() if line.startswith(("PASS", "MISS"))]
    assert len(verdicts) == 3, result.stdout
    assert "kafka-python decoding" in result.stdout
