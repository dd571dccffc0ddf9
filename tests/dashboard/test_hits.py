"""The page-cache hit ratio in the dashboard: a segment's and a process's hits and misses from the pagecache
probe's snapshot (what they are when the probe is not running or the kernel cannot count them), and, with BPF,
the sampler's numbers for a child that reads resident and evicted pages of a segment, against fincore."""

from __future__ import annotations

import json
import mmap
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from rich.console import Console
from support import (
    fadvise_out,
    fincore_pages,
    mqinspect_as_nobody,
    ready_child,
    store_holder,
    store_nobody_can_read,
)

from mqinspect.render.top import processes_table, segments_table
from mqinspect.sampling.hits import PAGECACHE_NOT_RUNNING, hit_fields, process_row
from mqinspect.sampling.sampler import Sampler, SamplerSettings
from mqinspect.sampling.snapshot import ProbeState
from probes.ebpf.pagecache import NO_LOOKUPS

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "store"))
from store_builder import StoreBuilder

PAGE = mmap.PAGESIZE


def test_hit_fields_are_the_rows_zero_without_lookups_and_unavailable_with_the_reason():
    row = SimpleNamespace(pid=7, hit_pages=30, miss_pages=10, hit_ratio_percent=75.0)
    counted = SimpleNamespace(hit_pages=30, processes=(row,))
    assert process_row(counted, 7) is row and process_row(counted, 8) is None
    assert hit_fields(counted, row, "off") == (
        {"hit_pages": 30, "miss_pages": 10, "hit_ratio_percent": 75.0},
        {},
    )
    # the probe ran and saw no lookup of this segment: 0 measured, and no ratio of nothing
    assert hit_fields(counted, None, "off") == (
        {"hit_pages": 0, "miss_pages": 0, "hit_ratio_percent": None},
        {},
    )
    nothing = dict.fromkeys(("hit_pages", "miss_pages", "hit_ratio_percent"))
    assert hit_fields(None, None, PAGECACHE_NOT_RUNNING) == (
        nothing,
        {"hit_pages": PAGECACHE_NOT_RUNNING, "miss_pages": PAGECACHE_NOT_RUNNING},
    )
    old_kernel = SimpleNamespace(hit_pages=None, processes=())
    assert hit_fields(old_kernel, None, "off") == (
        nothing,
        {"hit_pages": NO_LOOKUPS, "miss_pages": NO_LOOKUPS},
    )


# Holds the segment open (so the dashboard finds it), then on "go" preads pages [0, count) one by one with
# readahead off, and says "read".
READER = r"""
import os, sys
path, count = sys.argv[1], int(sys.argv[2])
page = os.sysconf("SC_PAGE_SIZE")
fd = os.open(path, os.O_RDONLY)
os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
print("ready", flush=True)
sys.stdin.readline()
for number in range(count):
    os.pread(fd, page, number * page)
print("read", flush=True)
sys.stdin.readline()
"""


def _warm(path: Path, pages: int) -> None:
    with path.open("rb", buffering=0) as opened:
        os.posix_fadvise(opened.fileno(), 0, 0, os.POSIX_FADV_RANDOM)
        for number in range(pages):
            os.pread(opened.fileno(), PAGE, number * PAGE)


@pytest.mark.requires_bpf
def test_the_dashboard_shows_the_hits_and_misses_of_a_reader_of_a_segment(tmp_path: Path):
    builder = StoreBuilder(tmp_path / "store", segment_size=64 * PAGE, cq_entries_per_file=100, index=False)
    for number in range(300):
        builder.add("TopicA", body=bytes([65 + number % 26]) * 1000, keys=f"k{number}")
    built = builder.build()
    target = built.segments[0]
    with ready_child(READER, target, 64) as child:
        sampler = Sampler(SamplerSettings(built.root, (child.pid,), 0.5, ebpf=True))
        sampler.open(background=False)
        try:
            assert {s.state for s in sampler.probes.statuses()} == {ProbeState.RUNNING}
            # warmed once the probes are attached: a compile can take long enough for reclaim to take pages
            fadvise_out(target)
            _warm(target, 40)  # 40 of its 64 pages resident: the reader hits 40 and misses 24
            assert fincore_pages(target) == 40
            sampler.sample()
            child.stdin.write("go\n")
            child.stdin.flush()
            assert child.stdout.readline().strip() == "read"
            snapshot = sampler.sample()
        finally:
            sampler.close()
        resident_after = fincore_pages(target)
    segment = next(row for row in snapshot.store.segments if Path(row.path) == target)
    process = next(row for row in snapshot.processes if row.pid == child.pid)
    print(f"segment hits {segment.hit_pages} misses {segment.miss_pages}; fincore 40 -> {resident_after}")
    assert resident_after >= 60  # every page read came into the cache (reclaim here may take a few back)
    assert (segment.hit_pages, segment.miss_pages, segment.hit_ratio_percent) == (40, 24, 62.5)
    assert (process.hit_pages, process.miss_pages) == (40, 24)
    others = {(row.hit_pages, row.miss_pages) for row in snapshot.store.segments if Path(row.path) != target}
    assert others <= {(0, 0)}

    console = Console(width=200, record=True, color_system=None)
    console.print(segments_table(snapshot), processes_table(snapshot))
    drawn = [line.split() for line in console.export_text().splitlines()]
    assert any(words[0] == segment.name and words[-3:] == ["40", "24", "62.5%"] for words in drawn if words)
    assert any(words[0] == str(child.pid) and words[-3:] == ["40", "24", "62.5%"] for words in drawn if words)


@pytest.mark.requires_root
def test_without_bpf_privileges_hits_are_unavailable_with_the_reason_never_0(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # every column of the drawn frame
    with store_nobody_can_read() as root:
        segments = sorted((root / "commitlog").iterdir())[:2]
        with store_holder(root, segments, locked_pages=0):
            done = mqinspect_as_nobody("top", str(root), "--once", "--format", "json", "--interval", "0.2")
            drawn = mqinspect_as_nobody("top", str(root), "--once", "--interval", "0.2")
    assert done.returncode == drawn.returncode == 0, done.stderr + drawn.stderr
    frame = json.loads(done.stdout)
    for row in (*frame["store"]["segments"], *frame["processes"]):
        assert (row["hit_pages"], row["miss_pages"], row["hit_ratio_percent"]) == (None, None, None)
    for segment in frame["store"]["segments"]:
        assert segment["unavailable"]["hit_pages"] == PAGECACHE_NOT_RUNNING
    name = frame["store"]["segments"][0]["name"]
    row = next(line.split() for line in drawn.stdout.splitlines() if line.startswith(name))
    assert row[-3:] == ["-", "-", "-"]
