"""Residency probes against the real kernel, cross-checked with fincore(1) and vmtouch(8).

Files live on ext4 (tmp_path and /tmp are on the root file system here): tmpfs keeps no dirty/writeback
state and would not test what the CommitLog sees. Other test runs on this shared machine may drop the page
cache at any moment, so every scenario that compares page-cache state is rerun when /proc/vmstat's
drop_pagecache counter moved during it, and every comparison with fincore is taken between two equal
fincore readings (pending readahead I/O settles first).
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from support import AS_NOBODY, fincore_pages

from probes.errors import CapabilityMissing
from probes.residency import actions, mincore, scan
from probes.residency.actions import MemoryLockRefused, evict, lock, touch
from probes.residency.cachestat import cachestat
from probes.residency.mincore import PAGE_SIZE, kernel_version, mincore_trust, page_bitmap
from probes.residency.scan import (
    FileResidency,
    ResidencyError,
    ResidencyUnavailable,
    chunk_bounds,
    file_residency,
    residency_of_range,
    scan_paths,
)

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")


# ---------------------------------------------------------------- reference tools and machine state


def vmtouch_pages(path: Path) -> tuple[int, int]:
    """(resident, total) pages from vmtouch's "Resident Pages: X/Y" line."""
    out = subprocess.run(["vmtouch", str(path)], capture_output=True, text=True, check=True).stdout
    found = re.search(r"Resident Pages: (\d+)/(\d+)", out)
    assert found, out
    return int(found.group(1)), int(found.group(2))


def settled_fincore(path: Path, measure: Callable[[], T]) -> tuple[int, T]:
    """fincore's count and `measure()` taken between two equal fincore readings (retried until they agree)."""
    for _ in range(50):
        before = fincore_pages(path)
        measured = measure()
        if fincore_pages(path) == before:
            return before, measured
        time.sleep(0.02)
    pytest.fail(f"{path}: the page cache never settled")


def page_cache_drops() -> int:
    for line in Path("/proc/vmstat").read_text().splitlines():
        name, value = line.split()
        if name == "drop_pagecache":
            return int(value)
    return 0


def undisturbed(scenario: Callable[[], T], own_drops: int = 0, tries: int = 4) -> T:
    """Run `scenario`, again if some other process dropped the page cache meanwhile (ours are `own_drops`)."""
    for _ in range(tries):
        drops = page_cache_drops()
        outcome = scenario()
        if page_cache_drops() - drops == own_drops:
            return outcome
    pytest.fail("another process kept dropping the page cache; cannot compare states")


STATE_LIMIT_S = 60.0


def page_states(files: dict[Path, dict[str, int]]) -> dict[Path, dict[str, int]]:
    """Each file's page-cache counts from cachestat(2), for the CacheStat fields named in `files`."""
    states = {}
    for path, fields in files.items():
        fd = os.open(path, os.O_RDONLY)
        try:
            counts = cachestat(fd)
        finally:
            os.close(fd)
        states[path] = {field: getattr(counts, field) for field in fields}
    return states


def as_built(
    build: Callable[[], object], state: dict[Path, dict[str, int]], measure: Callable[[], T] | None = None
) -> T | None:
    """`measure()` of the files `build()` left in `state`, found so by cachestat just before and just after.

    The kernel does not promise to keep a state: it writes dirty pages back early (another process's sync,
    the flusher) and reclaims clean ones (this VM's DAMON kdamond). The files are then built and measured
    again, for up to STATE_LIMIT_S, so that the assertions can compare with `state` exactly. Without
    `measure`, the state is checked once built: an action the test runs next finds it as built."""
    deadline = time.monotonic() + STATE_LIMIT_S
    while True:
        build()
        found = page_states(state)
        if found == state:
            outcome = measure() if measure is not None else None
            found = page_states(state)
            if found == state:
                return outcome
        if time.monotonic() > deadline:
            pytest.fail(f"the kernel kept changing the files from {state}; last {found}")


def drop_caches() -> None:
    Path("/proc/sys/vm/drop_caches").write_text("1")


def run_as_nobody(code: str, *args: str) -> dict:
    """Run `code` as user nobody without capabilities; it prints one JSON document as its last line."""
    child = subprocess.run(
        [*AS_NOBODY, sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
        env={"PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1", "PATH": os.environ["PATH"]},
    )
    assert child.returncode == 0, child.stderr
    return json.loads(child.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- building files in known states


def write_pages(path: Path, pages: int, *, sync: bool) -> Path:
    """A new file of `pages` random pages, dirty unless `sync`. New, not truncated: ext4 starts writing back
    a file it truncated as soon as it is closed (auto_da_alloc), so a rewritten file's pages were clean."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, os.urandom(pages * PAGE_SIZE))
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)
    return path


def fadvise_out(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def read_pages(path: Path, pages: range, *, readahead: bool = True) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        if not readahead:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        for page in pages:
            os.pread(fd, PAGE_SIZE, page * PAGE_SIZE)
    finally:
        os.close(fd)


def write_at_pages(path: Path, pages: list[int]) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        for page in pages:
            os.pwrite(fd, os.urandom(PAGE_SIZE), page * PAGE_SIZE)
    finally:
        os.close(fd)


def sparse_file(path: Path, size_bytes: int, written_pages: list[int]) -> Path:
    path.unlink(missing_ok=True)  # new, as in write_pages
    with open(path, "wb") as handle:
        handle.truncate(size_bytes)
    write_at_pages(path, written_pages)
    return path


def build_dirty(directory: Path) -> Path:
    return write_pages(directory / "dirty", 300, sync=False)


def build_synced(directory: Path) -> Path:
    return write_pages(directory / "synced", 300, sync=True)


def build_evicted(directory: Path) -> Path:
    path = write_pages(directory / "evicted", 1000, sync=True)
    fadvise_out(path)
    return path


def build_partly_read(directory: Path) -> Path:
    # Pages 0-99 are read; readahead brings in more, and fincore says how many.
    path = build_evicted(directory)
    read_pages(path, range(100))
    return path


def build_sparse(directory: Path) -> Path:
    return sparse_file(directory / "sparse", 1000 * PAGE_SIZE, [3, 500, 501, 999])


def build_empty(directory: Path) -> Path:
    path = directory / "empty"
    path.touch()
    return path


def build_sparse_over_4gib(directory: Path) -> Path:
    beyond_4gib = (4 << 30) // PAGE_SIZE + 7
    return sparse_file(directory / "sparse5g", 5 << 30, [0, 1, beyond_4gib, (5 << 30) // PAGE_SIZE - 1])


STATES = {
    "dirty": build_dirty,
    "synced": build_synced,
    "evicted": build_evicted,
    "partly_read_after_eviction": build_partly_read,
    "sparse": build_sparse,
    "empty": build_empty,
    "sparse_over_4gib": build_sparse_over_4gib,
}


@pytest.fixture
def on_ext4(tmp_path: Path) -> Path:
    kind = subprocess.run(["stat", "-f", "-c", "%T", str(tmp_path)], capture_output=True, text=True).stdout
    if "tmpfs" in kind:
        pytest.skip("tmp_path is on tmpfs, whose page cache keeps no dirty or writeback state")
    return tmp_path


@pytest.fixture
def world_dir() -> Iterator[Path]:
    """A directory user nobody can enter (pytest's tmp_path is private to root), on the ext4 /tmp."""
    directory = Path(tempfile.mkdtemp(prefix="mqinspect-residency-", dir="/tmp"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory)


# ---------------------------------------------------------------- residency equals fincore and vmtouch


@pytest.mark.parametrize("state", STATES)
def test_cached_pages_equal_fincore_and_vmtouch(on_ext4: Path, state: str):
    def scenario():
        path = STATES[state](on_ext4)
        fincore_count, (ours, vmtouch_count) = settled_fincore(
            path, lambda: (file_residency(path), vmtouch_pages(path))
        )
        return path, fincore_count, ours, vmtouch_count

    path, fincore_count, ours, (vmtouch_resident, vmtouch_total) = undisturbed(scenario)
    assert (ours.source, ours.trusted, ours.untrusted_reason) == ("cachestat", True, None)
    assert ours.size_bytes == path.stat().st_size
    assert ours.pages == vmtouch_total == -(-ours.size_bytes // PAGE_SIZE)
    assert ours.cached_pages == fincore_count == vmtouch_resident
    if state == "partly_read_after_eviction":
        assert ours.cached_pages >= 100
    if state in ("evicted", "empty"):
        assert ours.cached_pages == 0


def test_the_mincore_fallback_counts_what_fincore_counts(on_ext4: Path, monkeypatch: pytest.MonkeyPatch):
    path = build_sparse(on_ext4)

    def no_cachestat(*_args):
        raise OSError(errno.ENOSYS, "cachestat: Function not implemented")

    monkeypatch.setattr(scan, "cachestat", no_cachestat)
    fincore_count, ours = settled_fincore(path, lambda: file_residency(path, chunks=3, page_map=True))
    assert (ours.source, ours.trusted) == ("mincore", True)
    assert "no cachestat" in ours.source_reason
    assert ours.cached_pages == fincore_count == 4
    assert ours.dirty_pages is None and ours.writeback_pages is None and ours.evicted_pages is None
    assert "dirty_pages" in ours.unmeasured and "cached_pages" not in ours.unmeasured
    assert [chunk.dirty_fraction for chunk in ours.chunks] == [None, None, None]
    assert ours.page_map.count(1) == 4 and ours.page_map[500] == 1


# ---------------------------------------------------------------- dirty counts


def test_dirty_pages_are_the_pages_written_until_fsync(on_ext4: Path):
    path = on_ext4 / "log"
    written = as_built(
        lambda: write_pages(path, 300, sync=False),
        {path: {"cached_pages": 300, "dirty_pages": 300}},
        lambda: file_residency(path),
    )
    synced = as_built(
        lambda: write_pages(path, 300, sync=True),
        {path: {"cached_pages": 300, "dirty_pages": 0, "writeback_pages": 0}},
        lambda: file_residency(path),
    )
    assert (written.cached_pages, written.dirty_pages) == (300, 300)
    assert (synced.cached_pages, synced.dirty_pages, synced.writeback_pages) == (300, 0, 0)


def test_dirty_pages_of_scattered_writes(on_ext4: Path):
    scattered = [10, 11, 12, 400, 999]
    # Into holes, each write makes its own single-page folio: dirty is exactly what was written.
    sparse = on_ext4 / "sparse"
    ours = as_built(
        lambda: sparse_file(sparse, 1000 * PAGE_SIZE, scattered),
        {sparse: {"cached_pages": 5, "dirty_pages": 5}},
        lambda: file_residency(sparse),
    )
    assert (ours.cached_pages, ours.dirty_pages) == (5, 5)
    # Into a file cached in large folios, the kernel marks a whole folio dirty (and will write it all back),
    # so cachestat counts the pages of the dirty folios: at least the pages written.
    synced = write_pages(on_ext4 / "synced", 1000, sync=True)
    write_at_pages(synced, scattered)
    assert 5 <= file_residency(synced).dirty_pages <= 1000


# ---------------------------------------------------------------- chunk maps


def test_chunk_maps_agree_with_the_mincore_page_map(on_ext4: Path):
    # Residency in a pattern (readahead off), plus dirty pages that make some chunks partly dirty.
    resident = [*range(0, 40), *range(333, 345), 500, 777, *range(960, 1000)]
    dirty = [5, 6, 7, 400, 401, 998]

    path = on_ext4 / "evicted"

    def build():
        build_evicted(on_ext4)
        read_pages(path, resident, readahead=False)
        write_at_pages(path, dirty)

    def measured():
        return settled_fincore(path, lambda: file_residency(path, chunks=7, page_map=True))

    fincore_count, ours = undisturbed(lambda: as_built(build, {path: {"dirty_pages": len(dirty)}}, measured))
    expected_resident = set(resident) | set(dirty)
    assert ours.cached_pages == fincore_count == len(expected_resident) == ours.page_map.count(1)
    assert {page for page, flag in enumerate(ours.page_map) if flag} == expected_resident
    assert ours.dirty_pages == len(dirty)
    assert len(ours.chunks) == 7
    for chunk, (first, end) in zip(ours.chunks, chunk_bounds(0, 1000, 7), strict=True):
        assert (chunk.first_page, chunk.end_page) == (first, end)
        assert chunk.cached_fraction == ours.page_map.count(1, first, end) / (end - first)
        assert chunk.dirty_fraction == sum(first <= page < end for page in dirty) / (end - first)
    assert sum(chunk.cached_pages for chunk in ours.chunks) == ours.cached_pages


def test_chunks_never_outnumber_pages_and_split_evenly():
    assert chunk_bounds(0, 3, 256) == [(0, 1), (1, 2), (2, 3)]
    assert chunk_bounds(10, 20, 4) == [(10, 12), (12, 15), (15, 17), (17, 20)]
    assert chunk_bounds(5, 5, 8) == []
    with pytest.raises(ValueError):
        chunk_bounds(0, 10, 0)


# ---------------------------------------------------------------- ranges and truncation


def test_residency_of_a_segment_tail(on_ext4: Path):
    path = on_ext4 / "evicted"

    def ranges():
        fd = os.open(path, os.O_RDONLY)
        try:
            return (
                residency_of_range(fd, 900 * PAGE_SIZE + 100, None, chunks=4),
                residency_of_range(fd, 0, 900 * PAGE_SIZE),
                residency_of_range(fd, 2000 * PAGE_SIZE, PAGE_SIZE),
            )
        finally:
            os.close(fd)

    tail, head, past_the_end = as_built(
        lambda: write_at_pages(build_evicted(on_ext4), list(range(900, 1000))),
        {path: {"cached_pages": 100, "dirty_pages": 100}},
        ranges,
    )
    assert (tail.first_page, tail.pages, tail.cached_pages, tail.dirty_pages) == (900, 100, 100, 100)
    assert [chunk.cached_fraction for chunk in tail.chunks] == [1.0] * 4
    assert (head.pages, head.dirty_pages) == (900, 0)
    assert (past_the_end.pages, past_the_end.cached_pages) == (0, 0)


def test_a_file_truncated_during_the_mincore_scan_gives_a_shorter_map(
    on_ext4: Path, monkeypatch: pytest.MonkeyPatch
):
    path = write_pages(on_ext4 / "shrinking", 100, sync=False)
    monkeypatch.setattr(mincore, "WINDOW_PAGES", 10)
    scan_window = mincore._mincore_window

    def truncate_after_the_first_window(fd, first_page, pages, vector):
        scan_window(fd, first_page, pages, vector)
        os.truncate(path, 25 * PAGE_SIZE)

    monkeypatch.setattr(mincore, "_mincore_window", truncate_after_the_first_window)
    fd = os.open(path, os.O_RDONLY)
    try:
        bitmap = page_bitmap(fd)
    finally:
        os.close(fd)
    assert (bitmap.shrank, bitmap.pages, bitmap.resident_pages, bitmap.size_bytes) == (
        True,
        25,
        25,
        25 * 4096,
    )


# ---------------------------------------------------------------- trust


def test_the_trust_rule_follows_the_kernel_version_and_the_caller(on_ext4: Path):
    path = write_pages(on_ext4 / "mine", 1, sync=False)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert mincore_trust(fd, release="5.1.21").trusted
        assert mincore_trust(fd).trusted  # we own it
    finally:
        os.close(fd)
    assert kernel_version("6.18.44-fc-v669") == (6, 18, 44)
    assert kernel_version("5.2") == (5, 2, 0)


@pytest.mark.requires_root
def test_as_a_non_writer_residency_is_untrusted_never_faked(world_dir: Path):
    path = write_pages(world_dir / "commitlog", 64, sync=True)
    path.chmod(0o444)
    fadvise_out(path)
    assert undisturbed(lambda: settled_fincore(path, lambda: None))[0] == 0
    seen_by_nobody = run_as_nobody(
        """
        import dataclasses, json, os, sys
        from probes.residency.cachestat import cachestat
        from probes.residency.mincore import mincore_trust, page_bitmap
        from probes.residency.scan import file_residency
        fd = os.open(sys.argv[1], os.O_RDONLY)
        try:
            cachestat(fd)
            cachestat_errno = None
        except OSError as error:
            cachestat_errno = error.errno
        raw = page_bitmap(fd)
        result = file_residency(sys.argv[1], chunks=4, page_map=True)
        print(json.dumps({
            "cachestat_errno": cachestat_errno,
            "raw_resident": raw.resident_pages,
            "trust": dataclasses.asdict(mincore_trust(fd)),
            "result": dataclasses.asdict(result),
        }))
        """,
        str(path),
    )
    # This kernel (6.18, after the CVE-2025-21691 fix) refuses cachestat to non-writers...
    assert seen_by_nobody["cachestat_errno"] == errno.EPERM
    # ...and mincore answers "all resident" for a file with no page cached: the lie the result must not tell.
    assert seen_by_nobody["raw_resident"] == 64
    assert seen_by_nobody["trust"]["trusted"] is False
    result = seen_by_nobody["result"]
    assert (result["source"], result["trusted"]) == ("mincore", False)
    assert "EPERM" in result["source_reason"]
    assert "every page resident" in result["untrusted_reason"]
    assert result["cached_pages"] is None and result["chunks"] is None and result["page_map"] is None
    assert result["dirty_pages"] is None and set(result["unmeasured"]) >= {"cached_pages", "dirty_pages"}
    assert result["pages"] == 64
    as_root = file_residency(path)
    assert (as_root.source, as_root.trusted, as_root.cached_pages) == ("cachestat", True, 0)


# ---------------------------------------------------------------- errors and trees


def expected_error(row, path: Path | str, code: int | None, words: str) -> None:
    assert isinstance(row, ResidencyError), row
    assert (row.path, row.errno) == (str(path), code)
    assert words in row.reason


def test_bad_paths_become_error_rows_and_the_scan_goes_on(on_ext4: Path):
    good = write_pages(on_ext4 / "good", 10, sync=False)
    fifo = on_ext4 / "fifo"
    os.mkfifo(fifo)
    rows = list(scan_paths([on_ext4 / "missing", on_ext4, "/dev/null", fifo, good]))
    expected_error(rows[0], on_ext4 / "missing", errno.ENOENT, "No such file")
    expected_error(rows[1], on_ext4, errno.EISDIR, "recursive=True")
    expected_error(rows[2], "/dev/null", None, "character device")
    expected_error(rows[3], fifo, None, "FIFO")
    assert isinstance(rows[4], FileResidency) and rows[4].cached_pages == 10
    with pytest.raises(ResidencyUnavailable) as refused:
        file_residency(fifo)
    assert refused.value.error.reason == rows[3].reason


@pytest.mark.requires_root
def test_permission_denied_is_one_row_among_others(world_dir: Path):
    secret = write_pages(world_dir / "secret", 4, sync=False)
    secret.chmod(0o600)
    theirs = write_pages(world_dir / "theirs", 8, sync=False)
    os.chown(theirs, 65534, 65534)
    fifo = world_dir / "fifo"
    os.mkfifo(fifo)
    rows = run_as_nobody(
        """
        import dataclasses, json, sys
        from probes.residency.scan import scan_paths
        rows = [{"kind": type(row).__name__, **dataclasses.asdict(row)} for row in scan_paths(sys.argv[1:])]
        print(json.dumps(rows))
        """,
        *map(str, [world_dir / "missing", secret, theirs, "/dev/null", fifo, world_dir]),
    )
    kinds = [(row["kind"], row.get("errno")) for row in rows]
    assert kinds == [
        ("ResidencyError", errno.ENOENT),
        ("ResidencyError", errno.EACCES),
        ("FileResidency", None),
        ("ResidencyError", None),
        ("ResidencyError", None),
        ("ResidencyError", errno.EISDIR),
    ]
    assert "Permission denied" in rows[1]["reason"]
    # nobody owns "theirs": cachestat answers for the owner, so these numbers are real.
    assert (rows[2]["source"], rows[2]["trusted"], rows[2]["cached_pages"], rows[2]["dirty_pages"]) == (
        "cachestat",
        True,
        8,
        8,
    )


def test_a_recursive_scan_reports_every_file_once(on_ext4: Path):
    tree = on_ext4 / "store"
    queue = tree / "consumequeue" / "topic" / "0"
    (tree / "commitlog").mkdir(parents=True)
    queue.mkdir(parents=True)
    files = {
        write_pages(tree / "commitlog" / "00000000000000000000", 50, sync=False),
        sparse_file(tree / "commitlog" / "00000000001073741824", 1000 * PAGE_SIZE, [0, 999]),
        build_empty(queue),
        write_pages(tree / "checkpoint", 1, sync=True),
    }
    os.mkfifo(tree / "pipe")
    (tree / "consumequeue" / "loop").symlink_to(tree)
    (tree / "link-to-checkpoint").symlink_to(tree / "checkpoint")

    def scenario():
        return list(scan_paths([tree], recursive=True, chunks=2))

    rows = undisturbed(scenario)
    measured = {Path(row.path): row for row in rows if isinstance(row, FileResidency)}
    errors = [row for row in rows if isinstance(row, ResidencyError)]
    assert set(measured) == files
    assert [(Path(row.path).name, row.errno) for row in errors] == [("pipe", None)]
    for path, row in measured.items():
        assert row.cached_pages == settled_fincore(path, lambda: None)[0], path
    with pytest.raises(ResidencyUnavailable, match="a directory"):
        file_residency(tree)


# ---------------------------------------------------------------- actions


def test_evict_after_sync_empties_the_file(on_ext4: Path):
    path = on_ext4 / "segment"

    def scenario():
        as_built(
            lambda: write_pages(path, 500, sync=False), {path: {"cached_pages": 500, "dirty_pages": 500}}
        )
        result = evict(path, sync=True)
        return result, settled_fincore(path, lambda: None)[0]

    result, fincore_after = undisturbed(scenario)
    assert (result.before.cached_pages, result.before.dirty_pages, result.synced) == (500, 500, True)
    assert result.after.cached_pages == 0 == fincore_after
    assert (result.pages_evicted, result.pages_stayed_resident) == (500, 0)


def test_evict_without_sync_leaves_the_dirty_pages(on_ext4: Path):
    path = on_ext4 / "segment"

    def build():
        # Page-sized folios throughout (readahead off, page-sized writes into uncached ranges), so the
        # dirty count is exactly the pages written: large folios would be dirtied whole.
        write_pages(path, 500, sync=True)
        fadvise_out(path)
        read_pages(path, [*range(0, 100), *range(300, 500)], readahead=False)
        write_at_pages(path, list(range(100, 300)))

    def scenario():
        as_built(build, {path: {"cached_pages": 500, "dirty_pages": 200}})
        result = evict(path)
        return result, settled_fincore(path, lambda: None)[0]

    result, fincore_after = undisturbed(scenario)
    assert (result.before.cached_pages, result.before.dirty_pages) == (500, 200)
    # DONTNEED drops the clean pages and starts writeback of the dirty ones. Those still dirty or under
    # writeback stay; but the kernel tries again after draining the LRU caches of every CPU, and a fast disk
    # may have finished the writeback by then (seen in CI), so anywhere from none to all 200 stay.
    assert 0 <= result.pages_stayed_resident <= 200
    assert result.pages_stayed_resident == result.after.cached_pages == fincore_after
    assert result.pages_evicted == 500 - result.pages_stayed_resident


@pytest.mark.parametrize("populate_advice", [actions.MADV_POPULATE_READ, -1], ids=["madvise", "read"])
def test_touch_fills_an_evicted_file(on_ext4: Path, monkeypatch: pytest.MonkeyPatch, populate_advice: int):
    # An advice the kernel does not know gives EINVAL, as on kernels before MADV_POPULATE_READ (5.14).
    monkeypatch.setattr(actions, "MADV_POPULATE_READ", populate_advice)

    def scenario():
        path = build_evicted(on_ext4)
        read_pages(path, [7], readahead=False)
        result = touch(path)
        return result, settled_fincore(path, lambda: None)[0]

    result, fincore_after = undisturbed(scenario)
    assert result.method == ("madvise_populate_read" if populate_advice > 0 else "read")
    assert result.before.cached_pages == 1
    assert result.after.cached_pages == 1000 == fincore_after
    assert result.pages_brought_in == 999


@pytest.mark.requires_root
def test_a_locked_file_survives_drop_caches_and_its_twin_does_not(on_ext4: Path):
    locked_path = write_pages(on_ext4 / "locked", 1000, sync=True)
    twin_path = write_pages(on_ext4 / "twin", 1000, sync=True)
    read_pages(twin_path, range(1000))
    with lock(locked_path) as handle:
        assert handle.locked and handle.pages == 1000
        drop_caches()
        assert fincore_pages(locked_path) == 1000
        assert fincore_pages(twin_path) == 0
        assert file_residency(locked_path).cached_pages == 1000
    assert not handle.locked
    drop_caches()
    assert fincore_pages(locked_path) == 0


def test_locking_an_empty_file_holds_nothing(on_ext4: Path):
    with lock(build_empty(on_ext4)) as handle:
        assert (handle.pages, handle.locked) == (0, False)


@pytest.mark.requires_root
def test_a_memlock_limit_too_small_is_named_with_its_fix(world_dir: Path):
    path = write_pages(world_dir / "big", 1024, sync=True)  # 4 MiB
    path.chmod(0o644)
    answer = run_as_nobody(
        """
        import json, resource, sys
        from probes.residency.actions import MemoryLockRefused, lock
        soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (1 << 20, hard))
        try:
            lock(sys.argv[1])
            print(json.dumps({"refused": None}))
        except MemoryLockRefused as refused:
            print(json.dumps({"refused": str(refused), "fix": refused.fix}))
        """,
        str(path),
    )
    assert "RLIMIT_MEMLOCK allows 1024 KiB" in answer["refused"]
    assert "CAP_IPC_LOCK" in answer["refused"]
    assert "ulimit -l 4096" in answer["fix"] and "CAP_IPC_LOCK" in answer["fix"]
    assert issubclass(MemoryLockRefused, CapabilityMissing)


def test_cachestat_keeps_its_contract(on_ext4: Path):
    path = write_pages(on_ext4 / "small", 3, sync=False)
    with open(path, "rb") as handle:
        counts = cachestat(handle.fileno())
    assert (counts.cached_pages, counts.dirty_pages) == (3, 3)
    with pytest.raises(OSError) as bad:
        cachestat(10_000)
    assert bad.value.errno == errno.EBADF
