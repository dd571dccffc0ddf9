"""`mqinspect trace faults|pagecache|writeback --store KAFKA_LOG_DIR -- COMMAND`: events on a Kafka log
directory's files are attributed to the topic-partition and segment ("orders-2/<base offset>.log"), counted
against a workload that faults, reads or writes a known number of pages of one partition's segment; a
partition created while traced is followed from its creation."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from support import fadvise_out, run_mqinspect

from store.kafka.writer import LogDirWriter, ProducerRecord

PAGE = 4096
# Reads one byte of `count` pages, `stride` pages apart, through a read-only mapping: one fault each (a read
# fault maps the cached pages around it, fault_around_bytes, 64 KiB: 64 pages apart is past that).
FAULT_PAGES = r"""
import mmap, os, sys
path, first, count, stride = sys.argv[1], *map(int, sys.argv[2:])
fd = os.open(path, os.O_RDONLY)
mapping = mmap.mmap(fd, 0, prot=mmap.PROT_READ)
for page in range(first, first + count * stride, stride):
    mapping[page * mmap.PAGESIZE]
"""
# Reads one byte of each page of [first, first + count) with pread, readahead off: one page added each.
READ_PAGES = r"""
import os, sys
path, first, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
fd = os.open(path, os.O_RDONLY)
os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
for page in range(first, first + count):
    os.pread(fd, 1, page * 4096)
"""
# A new partition, written and synced while traced: 100 batches of one 4,000-byte record.
WRITE_PARTITION = r"""
import os, sys
from pathlib import Path
from store.kafka.writer import PartitionWriter, ProducerRecord
with PartitionWriter(Path(sys.argv[1])) as writer:
    for _ in range(100):
        writer.append([ProducerRecord(b"k", b"w" * 4000)])
    log = writer._segment.paths[0]
fd = os.open(log, os.O_RDONLY)
os.fsync(fd)
print(os.path.getsize(log))
"""


def _log_dir(root: Path) -> Path:
    """A log dir whose orders-2 has one 2.8 MB segment (700 pages); returns that segment."""
    with LogDirWriter(root) as log_dir:
        partition = log_dir.partition("orders", 2)
        for _ in range(700):
            partition.append([ProducerRecord(b"k", b"v" * 4000)])
        log_dir.partition("orders", 0).append([ProducerRecord(b"k", b"v")])
    return root / "orders-2" / f"{0:020d}.log"


def _trace(probe: str, root: Path, tmp_path: Path, script: str, *arguments: object) -> list[dict]:
    """The jsonl lines of `trace PROBE --store ROOT -- python SCRIPT ARGUMENTS`; the last is the summary."""
    workload = tmp_path / f"{probe}.py"
    workload.write_text(script)
    command = [
        "trace",
        probe,
        "--store",
        root,
        "--format",
        "jsonl",
        "--",
        sys.executable,
        workload,
        *arguments,
    ]
    result = subprocess.run(
        [sys.executable, "-m", "mqinspect", *map(str, command)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def _files(summary: dict) -> dict[str, dict]:
    return {row["name"]: row for row in summary["files"]}


def test_trace_help_names_kafka_log_directories():
    for probe in ("faults", "pagecache", "writeback"):
        help_text = run_mqinspect("trace", probe, "--help", columns=200).stdout
        assert "Kafka log directory" in help_text, probe


@pytest.mark.requires_bpf
def test_faults_on_a_partitions_segment_are_counted_on_its_pages(tmp_path: Path):
    root = tmp_path / "kafka-logs"
    segment = _log_dir(root)
    fadvise_out(segment)
    touched = list(range(32, 32 + 8 * 64, 64))
    summary = _trace("faults", root, tmp_path, FAULT_PAGES, segment, 32, 8, 64)[-1]
    row = _files(summary)["orders-2/00000000000000000000.log"]
    assert row["faults"] == len(touched)
    assert row["major_faults"] >= 1  # the first read the disk, and its readahead the others' pages
    ranges = [r for r in row["page_ranges"] if r["faults"]]
    assert sum(r["faults"] for r in ranges) == len(touched)
    for page in touched:
        assert any(r["first_page"] <= page <= r["last_page"] for r in ranges), (page, ranges)


@pytest.mark.requires_bpf
def test_pages_read_into_the_cache_are_counted_on_the_segment(tmp_path: Path):
    root = tmp_path / "kafka-logs"
    segment = _log_dir(root)
    fadvise_out(segment)
    summary = _trace("pagecache", root, tmp_path, READ_PAGES, segment, 100, 20)[-1]
    row = _files(summary)["orders-2/00000000000000000000.log"]
    assert row["added_pages"] == 20
    assert sum(r["added_pages"] or 0 for r in row["page_ranges"]) == 20
    assert all(
        r["first_page"] <= 119 and r["last_page"] >= 100 for r in row["page_ranges"] if r["added_pages"]
    )


@pytest.mark.requires_bpf
def test_a_partition_created_while_traced_is_written_back_under_its_name(tmp_path: Path):
    root = tmp_path / "kafka-logs"
    _log_dir(root)
    lines = _trace("writeback", root, tmp_path, WRITE_PARTITION, root / "orders-7")
    row = _files(lines[-1])["orders-7/00000000000000000000.log"]
    size = (root / "orders-7" / f"{0:020d}.log").stat().st_size
    pages = -(-size // PAGE)
    assert row["dirtied_pages"] >= pages - 1  # a folio dirtied before the session counts once (a lower bound)
    assert row["written_pages"] >= pages - 1
    assert lines[-1]["late_store_files"] == []
