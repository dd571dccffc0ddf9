"""`store segments` residency columns: cached pages per segment against fincore, and mlocked bytes from a
process that really locks part of a segment."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from page_cache_files import as_built
from support import fincore_pages, mqinspect_as_nobody, store_holder, store_nobody_can_read
from typer.testing import CliRunner

from mqinspect.cli.app import app
from probes import file_locks
from probes.residency.actions import evict
from probes.residency.mincore import PAGE_SIZE

runner = CliRunner()


@pytest.fixture
def store_root(tmp_path: Path) -> Path:
    root = tmp_path / "store"
    for args in (
        ["init", root, "--segment-size", "256k", "--cq-entries", "1000", "--index-slots", "64"],
        ["produce", root, "-t", "T", "-n", "3000", "--size", "200", "--batch", "50"],
    ):
        assert runner.invoke(app, ["store", *map(str, args)]).exit_code == 0
    return root


def segments_json(root: Path) -> dict:
    result = runner.invoke(app, ["store", "segments", str(root), "--chunks", "8", "-f", "json"])
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_cached_pages_per_segment_match_fincore(store_root: Path):
    segments = sorted((store_root / "commitlog").iterdir())
    evict(segments[0], sync=True)
    segments[1].read_bytes()  # bring one segment fully in
    truth = {segment: fincore_pages(segment) for segment in segments[:2]}
    listing = segments_json(store_root)
    measured = {s["path"]: s for s in listing["residency"]["segments"]}
    for segment in segments[:2]:
        row = measured[str(segment)]
        assert row["cached_pages"] == truth[segment], segment.name
        assert len(row["chunks"]) == 8 and row["source"] == "cachestat"
    assert measured[str(segments[0])]["cached_pages"] == 0
    assert measured[str(segments[1])]["cached_pages"] == measured[str(segments[1])]["pages"]
    # Listing finds a full segment's blank by reading back from the end over the zeros after it; without
    # readahead that brings in only those pages, not the segment.
    row = next(r for r in listing["rows"] if r["path"] == str(segments[0]))
    tail_pages = (row["size_bytes"] - row["blank_position"]) // 4096 + 1
    assert fincore_pages(segments[0]) <= tail_pages < row["size_bytes"] // 4096


# A process that maps a segment and mlocks its first 16 pages, until its stdin closes.
LOCKER = textwrap.dedent(
    """
    import mmap, sys
    from store import _libc
    with open(sys.argv[1], "rb") as f:
        mapping = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
    _libc.lock_mapping(mapping, 0, 16 * 4096)
    print("locked", flush=True)
    sys.stdin.read()
    """
)


@contextlib.contextmanager
def mapping_processes(segment: Path, *commands: tuple[str, ...]) -> Iterator[list[int]]:
    """Each `python -c SCRIPT SEGMENT ARGS...` of `commands` (SCRIPT, ARGS...), once every one has printed
    "locked": their pids. At the end their stdin closes, and they exit."""
    children = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(segment), *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        for script, *args in commands
    ]
    try:
        for child in children:
            assert child.stdout.readline().strip() == b"locked"
        yield [child.pid for child in children]
    finally:
        for child in children:
            child.stdin.close()
            child.wait(10)


def test_locked_bytes_come_from_the_processes_that_lock_the_segment(store_root: Path):
    segment = sorted((store_root / "commitlog").iterdir())[0]
    locker = subprocess.Popen(
        [sys.executable, "-c", LOCKER, str(segment)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert locker.stdout.readline().strip() == "locked"
        listing = segments_json(store_root)
    finally:
        locker.stdin.close()
        locker.wait(10)
    locked = {s["path"]: s["locked_bytes"] for s in listing["residency"]["segments"]}
    assert locked[str(segment)] == 16 * 4096
    assert all(value == 0 for path, value in locked.items() if path != str(segment))


def test_only_the_smaps_of_processes_whose_vmlck_is_not_0_are_read(
    store_root: Path, monkeypatch: pytest.MonkeyPatch
):
    """A broker maps every segment (smaps costs ~0.1 ms per mapping): the smaps of a process that maps the
    segment but locks nothing (VmLck 0) is not read, and the counts are those of the one that locks."""
    segment = sorted((store_root / "commitlog").iterdir())[0]
    # The mapper touches no page: smaps "Locked" is proportional (PSS), so a page the mapper also mapped
    # would count half for the locker.
    mapper_script = LOCKER.replace("_libc.lock_mapping(mapping, 0, 16 * 4096)", "")
    read = []
    real_read = file_locks._read_or_none
    monkeypatch.setattr(file_locks, "_read_or_none", lambda path: read.append(path) or real_read(path))
    with mapping_processes(segment, (LOCKER,), (mapper_script,)) as (locker, mapper):
        found = file_locks.locked_bytes_by_file([segment])
    assert found.files[str(segment)].locked_bytes == 16 * 4096
    assert found.files[str(segment)].locking_pids == (locker,)
    smaps_read = {int(path.parent.name) for path in read if path.name == "smaps"}
    assert locker in smaps_read and mapper not in smaps_read


def test_pages_a_locker_shares_with_a_process_that_maps_them_unlocked_count_whole(store_root: Path):
    """smaps "Locked" is a PSS: 16 locked pages that another process maps too show as 8 in the locker's smaps.
    The locked bytes are the file range of the locker's locked mapping, wholly resident: 16 pages."""
    segment = sorted((store_root / "commitlog").iterdir())[0]
    sharer_script = LOCKER.replace(
        "_libc.lock_mapping(mapping, 0, 16 * 4096)", "sum(mapping[page * 4096] for page in range(16))"
    )
    with mapping_processes(segment, (LOCKER,), (sharer_script,)) as (locker, _):
        locker_smaps = Path(f"/proc/{locker}/smaps").read_text()
        found = file_locks.locked_bytes_by_file([segment])
    assert re.search(r"^Locked:\s+32 kB$", locker_smaps, re.MULTILINE)  # the PSS: half of the 16 pages
    assert found.files[str(segment)].locked_bytes == 16 * 4096
    assert found.files[str(segment)].locking_pids == (locker,)


# A process that maps a segment's first page and reads it (mlocking it with argv[2] "lock"), until its stdin
# closes.
PAGE_MAPPER = textwrap.dedent(
    """
    import mmap, sys
    from store import _libc
    with open(sys.argv[1], "rb") as f:
        mapping = mmap.mmap(f.fileno(), 4096, prot=mmap.PROT_READ)
    mapping[0]
    if sys.argv[2] == "lock":
        _libc.lock_mapping(mapping)
    print("locked", flush=True)
    sys.stdin.read()
    """
)


def test_a_locked_page_shared_by_six_processes_counts_whole(store_root: Path):
    """smaps "Locked" is a PSS in whole kB: one locked page that 6 processes map reads 0 kB (4096 / 6 bytes).
    The mapping is locked by its VmFlags ("lo"), so the page counts: 4,096 bytes, by the one that locks it,
    in the segment's locked bytes and in `cache --pid` of the locker (0 in that of one that only maps it)."""
    segment = sorted((store_root / "commitlog").iterdir())[0]

    def locked_by_process(pid: int) -> int:
        result = runner.invoke(app, ["cache", "--pid", str(pid), "--format", "json"])
        assert result.exit_code == 0, result.stderr
        (file,) = [file for file in json.loads(result.stdout)["files"] if file["path"] == str(segment)]
        return file["process"]["locked_bytes"]

    with mapping_processes(segment, *[(PAGE_MAPPER, "touch")] * 5, (PAGE_MAPPER, "lock")) as pids:
        locker_smaps = Path(f"/proc/{pids[-1]}/smaps").read_text()
        found = file_locks.locked_bytes_by_file([segment])
        by_process = [locked_by_process(pid) for pid in (pids[-1], pids[0])]
    (mapping,) = [block for block in re.split(r"\n(?=[0-9a-f]+-)", locker_smaps) if str(segment) in block]
    assert re.search(r"^Locked:\s+0 kB$", mapping, re.MULTILINE), mapping
    assert re.search(r"^VmFlags:.* lo\b", mapping, re.MULTILINE), mapping
    assert found.files[str(segment)].locked_bytes == 4096
    assert found.files[str(segment)].locking_pids == (pids[-1],)
    assert by_process == [4096, 0]


def test_table_shows_the_columns_and_where_they_come_from(store_root: Path):
    result = runner.invoke(app, ["store", "segments", str(store_root)], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for text in ("cached", "dirty", "locked", "heat", "smaps (mappings with VmFlags lo)", "cachestat"):
        assert text in result.stdout
    assert (
        "cached"
        not in runner.invoke(
            app, ["store", "segments", str(store_root), "--no-residency"], env={"COLUMNS": "200"}
        ).stdout
    )


@pytest.mark.requires_root
def test_as_nobody_pages_a_root_broker_locks_are_unavailable_with_the_reason_not_0():
    with store_nobody_can_read() as root:
        segments = sorted((root / "commitlog").iterdir())[:3]
        with store_holder(root, segments, locked_pages=16):
            as_root = segments_json(root)
            done = mqinspect_as_nobody("store", "segments", str(root), "--format", "json")
    assert done.returncode == 0, done.stderr
    mine = {s["path"]: s for s in as_root["residency"]["segments"]}
    assert [mine[str(segment)]["locked_bytes"] for segment in segments] == [16 * 4096] * 3
    theirs = json.loads(done.stdout)["residency"]["segments"]
    assert {s["path"]: s["locked_bytes"] for s in theirs} == dict.fromkeys((s["path"] for s in theirs), None)
    reason = theirs[0]["notes"]["locked_bytes"]  # names some of the processes (other brokers may run)
    assert "with locked memory (VmLck) whose /proc/PID/smaps cannot be read: pid" in reason
    assert "owned by root" in reason and reason.endswith("run as root or with CAP_SYS_PTRACE")


def cache_all_but(path: Path, absent_pages: range) -> None:
    """Every page of the file in the page cache but `absent_pages`: written back and dropped, then read back
    page by page without readahead (small folios, so exactly those pages are missing)."""
    evict(path, sync=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        for page in range(os.fstat(fd).st_size // PAGE_SIZE):
            if page not in absent_pages:
                os.pread(fd, 1, page * PAGE_SIZE)
    finally:
        os.close(fd)


def commitlog_row(*arguments: object) -> str:
    """The table line of the (only) CommitLog segment, on a console wide enough for one line per row."""
    result = runner.invoke(app, [str(argument) for argument in arguments], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.stderr
    (row,) = [line for line in result.stdout.splitlines() if line.strip("│ ").startswith("commitlog")]
    return row


def test_4084_of_4096_pages_cached_never_reads_100_percent(tmp_path: Path):
    root = tmp_path / "store"
    for args in (["init", root, "--segment-size", "16m"], ["produce", root, "-t", "T", "-n", "1"]):
        assert runner.invoke(app, ["store", *map(str, args)]).exit_code == 0
    (segment,) = (root / "commitlog").iterdir()

    def as_cached_for(*command: object) -> tuple[int, str]:
        """fincore's count and the command's row, with the cache set up before each command and found so by
        cachestat just before and after it (reclaim may evict pages meanwhile: then it is set up again)."""
        return as_built(
            lambda: cache_all_but(segment, range(100, 112)),
            {segment: {"cached_pages": 4084}},
            lambda: (fincore_pages(segment), commitlog_row(*command)),
        )

    (resident_for_listing, listing), (resident_for_top, top) = (
        as_cached_for("store", "segments", root),
        as_cached_for("top", root, "--once", "--no-ebpf"),
    )
    assert resident_for_listing == resident_for_top == 4084
    assert " 99% " in listing and "100%" not in listing
    assert " 99% " in top and "100%" not in top
