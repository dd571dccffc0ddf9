"""Residency probes against the real kernel, cross-checked with fincore(1) and vmtouch(8).

Files live on ext4 (tmp_path and /tmp are on the root file system here): tmpfs keeps no dirty/writeback
state and would not test what the CommitLog sees. Other test runs on this shared machine may drop the page
cache at any moment, so every scenario that compares page-cache state is rerun when /proc/vmstat's
drop_pagecache counter moved during it, and every comparison with fincore is taken between two equal
fincore readings (pending readahead I/O settles first).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from page_cache_files import (
    STATES,
    as_built,
    build_empty,
    build_evicted,
    build_sparse,
    drop_caches,
    fadvise_out,
    read_pages,
    run_as_nobody,
    settled_fincore,
    sparse_file,
    undisturbed,
    vmtouch_pages,
    write_at_pages,
    write_pages,
)
from support import fincore_pages

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
