"""`mqinspect cache` against the real kernel: counts equal fincore's, chunks agree with the page map, the
actions change what fincore sees, --pid finds a child's files, bad paths are error rows, and every output
form streams.

Files live on ext4 (tmp_path), not tmpfs, so dirty and writeback counts mean what they mean for a
CommitLog. Scenarios that compare page-cache state rerun when another process drops the page cache
meanwhile (`undisturbed`) and compare with fincore between two equal readings (`settled_fincore`).
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import mmap
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import test_residency as residency_helpers
from support import AS_NOBODY, fincore_pages
from test_process_files import MappingChild
from test_residency import (
    REPO,
    STATE_LIMIT_S,
    STATES,
    as_built,
    build_evicted,
    drop_caches,
    page_states,
    read_pages,
    settled_fincore,
    undisturbed,
    write_at_pages,
    write_pages,
)
from typer.testing import CliRunner

from mqinspect.cli.app import app
from mqinspect.errors import ExitStatus
from probes.residency import report
from probes.residency.mincore import PAGE_SIZE
from probes.residency.scan import file_residency
from store import _libc

MADV_PAGEOUT = 21  # linux/mman.h, Linux >= 5.4
PAGE_TABLE_PAGES = 512  # pages one x86-64 page table maps
on_ext4 = residency_helpers.on_ext4
world_dir = residency_helpers.world_dir
runner = CliRunner()
# An SGR sequence that sets a foreground colour (30-38, 90-97). NO_COLOR forbids colour, not bold.
COLOUR_SGR = re.compile(r"\x1b\[(?:[0-9;]*;)?(?:3[0-8]|9[0-7])(?:;[0-9;]*)?m")
SUBPROCESS_ENV = {"PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1", "PATH": os.environ["PATH"]}


def run_cache(*args: object, env: dict[str, str] | None = None):
    return runner.invoke(app, ["cache", *map(str, args)], env=env)


def cache_json(*args: object, status: int = ExitStatus.OK) -> dict:
    result = run_cache("--format", "json", *args)
    assert result.exit_code == status, result.stderr
    return json.loads(result.stdout)


def only_file(document: dict) -> dict:
    (file,) = document["files"]
    return file


def pages_in(runs: list[list[int]]) -> set[int]:
    return {page for first, end in runs for page in range(first, end)}


def mqinspect_subprocess(*args: object, prefix: tuple[str, ...] = (), env: dict | None = None, **popen):
    command = [*prefix, sys.executable, "-m", "mqinspect", "cache", *map(str, args)]
    return subprocess.Popen(command, cwd="/", env={**SUBPROCESS_ENV, **(env or {})}, text=True, **popen)


def run_mqinspect(*args: object, prefix: tuple[str, ...] = (), env: dict | None = None):
    child = mqinspect_subprocess(
        *args, prefix=prefix, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    stdout, stderr = child.communicate(timeout=60)
    return child.returncode, stdout, stderr


# ---------------------------------------------------------------- counts equal fincore


@pytest.mark.parametrize("state", STATES)
def test_cached_pages_in_the_json_equal_fincore(on_ext4: Path, state: str):
    def scenario():
        path = STATES[state](on_ext4)
        return path, *settled_fincore(path, lambda: cache_json(path))

    path, fincore_count, document = undisturbed(scenario)
    file = only_file(document)
    assert (file["path"], file["size_bytes"], file["pages"]) == (
        str(path),
        path.stat().st_size,
        -(-path.stat().st_size // PAGE_SIZE),
    )
    assert file["cached_pages"] == fincore_count
    assert (file["source"], file["trusted"], file["notes"]) == ("cachestat", True, {})
    assert "chunks" not in file and "page_map" not in file
    assert document["errors"] == []
    assert document["totals"]["cached_pages"] == fincore_count and document["totals"]["files"] == 1
    assert (document["schema"], document["page_size_bytes"]) == ("mqinspect.cache/v1", PAGE_SIZE)


def test_dirty_pages_are_counted_until_fsync(on_ext4: Path):
    path = on_ext4 / "commitlog"
    written, table = as_built(
        lambda: write_pages(path, 300, sync=False),
        {path: {"cached_pages": 300, "dirty_pages": 300}},
        lambda: (only_file(cache_json(path)), run_cache(path, env={"COLUMNS": "200"}).stdout),
    )
    synced = as_built(
        lambda: write_pages(path, 300, sync=True),
        {path: {"cached_pages": 300, "dirty_pages": 0, "writeback_pages": 0}},
        lambda: only_file(cache_json(path)),
    )
    assert (written["cached_pages"], written["dirty_pages"]) == (300, 300)
    assert (synced["cached_pages"], synced["dirty_pages"], synced["writeback_pages"]) == (300, 0, 0)
    header, row = table.splitlines()[:2]
    columns = dict(zip(header.split(), row.split(), strict=False))
    assert (columns["PAGES"], columns["CACHED"], columns["CACHED%"], columns["DIRTY"]) == (
        "300",
        "300",
        "100.0%",
        "300",
    )


# ---------------------------------------------------------------- chunks and the page map


def test_chunks_agree_with_the_page_map(on_ext4: Path):
    resident = [*range(0, 40), *range(333, 345), 500, 777, *range(960, 1000)]
    dirty = [5, 6, 7, 400, 401, 998]

    path = on_ext4 / "evicted"

    def build():
        build_evicted(on_ext4)
        read_pages(path, resident, readahead=False)
        write_at_pages(path, dirty)

    def measured():
        return settled_fincore(path, lambda: only_file(cache_json("--chunks", 7, "--map", path)))

    fincore_count, file = undisturbed(lambda: as_built(build, {path: {"dirty_pages": len(dirty)}}, measured))
    in_map = pages_in(file["page_map"])
    # nothing we did not read or write; what the kernel holds now is fincore's count (this VM runs a DAMON
    # kdamond whose reclaim may already have taken a few of the clean pages we read)
    assert in_map <= set(resident) | set(dirty)
    assert file["cached_pages"] == len(in_map) == fincore_count
    assert file["dirty_pages"] == len(dirty)
    assert len(file["chunks"]) == 7
    assert file["chunks"][0]["first_page"] == 0 and file["chunks"][-1]["end_page"] == 1000
    for chunk in file["chunks"]:
        first, end = chunk["first_page"], chunk["end_page"]
        assert chunk["cached_fraction"] == len(in_map & set(range(first, end))) / (end - first)
        assert chunk["dirty_fraction"] == sum(first <= page < end for page in dirty) / (end - first)


def test_the_map_is_drawn_like_vmtouch(on_ext4: Path):
    small, big = on_ext4 / "small", on_ext4 / "evicted"

    def build():
        write_pages(small, 50, sync=True)
        build_evicted(on_ext4)
        residency_helpers.fadvise_out(small)
        read_pages(small, [*range(10), 20], readahead=False)
        read_pages(big, range(10), readahead=False)

    table = as_built(
        build,
        {small: {"cached_pages": 11}, big: {"cached_pages": 10}},
        lambda: run_cache("--map", small, big, env={"COLUMNS": "64"}).stdout,
    )
    charts = [line.strip() for line in table.splitlines() if line.strip().startswith("[")]
    # One character per page while the pages fit the width...
    assert charts[0] == "[" + "O" * 10 + " " * 10 + "O" + " " * 29 + "] 11/50"
    # ...else one per run of pages, scaled to the terminal: 64 columns less indent, brackets and counts.
    assert charts[1] == "[o" + " " * 49 + "] 10/1000"
    assert len(charts[1]) == 64 - 4


# ---------------------------------------------------------------- actions


def test_evict_with_sync_empties_the_files_and_a_fresh_look_agrees(on_ext4: Path):
    path = write_pages(on_ext4 / "segment", 500, sync=False)
    result = run_cache("--evict", "--sync", "--format", "json", path)
    assert result.exit_code == 0, result.stderr
    assert "fsync" in result.stderr and "page cache" in result.stderr
    file = only_file(json.loads(result.stdout))
    assert file["evict"] == {"synced": True, "pages_evicted": 500, "pages_stayed_resident": 0}
    assert file["cached_pages"] == 0
    assert only_file(cache_json(path))["cached_pages"] == 0 == fincore_pages(path)
    assert json.loads(result.stdout)["totals"]["evict"] == {"pages_evicted": 500, "pages_stayed_resident": 0}


def test_evict_without_sync_reports_the_dirty_pages_that_stayed(on_ext4: Path):
    path = on_ext4 / "segment"

    def build():
        write_pages(path, 200, sync=True)
        residency_helpers.fadvise_out(path)
        read_pages(path, range(100), readahead=False)
        write_at_pages(path, list(range(100, 200)))  # page-sized folios: exactly 100 dirty pages

    def evicted_as_built():
        """The eviction of the 200 pages built, found so by the command itself: reclaim took none of the
        clean ones between the build and its look before DONTNEED (it once did: 99 dropped, 100 stayed)."""
        deadline = time.monotonic() + STATE_LIMIT_S
        while True:
            as_built(build, {path: {"cached_pages": 200, "dirty_pages": 100}})
            result = run_cache("--evict", "--format", "json", path)
            counts = only_file(json.loads(result.stdout))["evict"] if result.exit_code == 0 else {}
            dropped_or_stayed = counts.get("pages_evicted", 0) + counts.get("pages_stayed_resident", 0)
            if dropped_or_stayed == 200 or time.monotonic() > deadline:
                return result

    result = undisturbed(evicted_as_built)
    assert result.exit_code == 0 and "--sync" in result.stderr
    file = only_file(json.loads(result.stdout))
    stayed = file["evict"]["pages_stayed_resident"]
    # DONTNEED starts write-back of the dirty pages before it drops pages, so on a fast disk some (or all)
    # are clean in time and go too: only the dirty 100 may stay, and the counts must add up.
    assert 0 <= stayed <= 100 and file["evict"]["pages_evicted"] == 200 - stayed
    assert file["cached_pages"] == stayed


def paged_out(path: Path, pages: int) -> None:
    """Reclaim the file's pages as memory pressure would (MADV_PAGEOUT): each leaves a shadow entry, which
    cachestat counts as evicted. Through a mapping within one page table: see `within_one_page_table`."""
    fd = os.open(path, os.O_RDONLY)
    try:
        with contextlib.ExitStack() as mappings:
            area = within_one_page_table(fd, pages, mappings)
            for page in range(pages):
                area[page * PAGE_SIZE]
            area.madvise(MADV_PAGEOUT)
    finally:
        os.close(fd)


def within_one_page_table(fd: int, pages: int, mappings: contextlib.ExitStack) -> mmap.mmap:
    """A read-only mapping of the file's first `pages` pages that one page table holds (2 MiB on x86-64).

    On this kernel (6.18) MADV_PAGEOUT unmaps the pages of a mapping that crosses a page-table boundary but
    leaves every one of them cached, and Python puts a process's next mapping where its last one was: 6 of 40
    processes never evicted a page (all at page-table offsets 456-510 for 64 pages). Mappings that cross stay
    in `mappings` meanwhile, so that each next one falls elsewhere."""
    assert pages <= PAGE_TABLE_PAGES
    for _ in range(PAGE_TABLE_PAGES):
        area = mappings.enter_context(mmap.mmap(fd, pages * PAGE_SIZE, prot=mmap.PROT_READ))
        if page_table_offset(area) + pages <= PAGE_TABLE_PAGES:
            return area
    raise AssertionError(f"no mapping of {pages} pages fell within one page table")


def page_table_offset(area: mmap.mmap) -> int:
    return _libc.mapping_address(area) // PAGE_SIZE % PAGE_TABLE_PAGES


def test_evict_says_that_dropped_pages_are_not_evictions(on_ext4: Path):
    path = on_ext4 / "segment"

    def build():
        write_pages(path, 64, sync=True)
        paged_out(path, 64)
        read_pages(path, range(8), readahead=False)

    before, resident = as_built(
        build,
        {path: {"cached_pages": 8, "evicted_pages": 56}},
        lambda: (only_file(cache_json(path)), fincore_pages(path)),
    )
    document = cache_json("--evict", path)
    assert before["evicted_pages"] == 56 and before["cached_pages"] == 8 == resident
    after = only_file(document)
    # What cachestat says, unchanged: the dropped pages are not evictions, and the shadow entries are gone.
    assert (after["cached_pages"], after["evicted_pages"], after["evict"]["pages_evicted"]) == (0, 0, 8)
    note = document["totals"]["notes"]["evicted_pages"]
    assert "POSIX_FADV_DONTNEED" in note and "not evicted" in note
    assert "not evicted" in document["totals"]["notes"]["recently_evicted_pages"]
    table = run_cache("--evict", path, env={"COLUMNS": "300"})
    assert table.exit_code == 0 and re.search(
        r"note: evicted_pages, recently_evicted_pages: .*not evicted", table.stdout
    )
    row = next(csv.DictReader(io.StringIO(run_cache("--evict", "--format", "csv", path).stdout)))
    assert "evicted_pages: pages dropped by --evict" in row["notes"]
    assert "not evicted" not in only_file(cache_json(path))["notes"].get("evicted_pages", "")  # no action


def test_touch_fills_the_file(on_ext4: Path):
    path = on_ext4 / "evicted"

    def scenario():
        as_built(
            lambda: read_pages(build_evicted(on_ext4), [7], readahead=False), {path: {"cached_pages": 1}}
        )
        result = run_cache("--touch", "--format", "json", path)
        return result, settled_fincore(path, lambda: None)[0]

    result, fincore_after = undisturbed(scenario)
    assert result.exit_code == 0 and "into the page cache" in result.stderr
    file = only_file(json.loads(result.stdout))
    assert file["touch"]["pages_brought_in"] == 999
    assert file["cached_pages"] == 1000 == fincore_after


@pytest.mark.requires_root
@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_lock_holds_the_pages_through_drop_caches_until_signalled(on_ext4: Path, stop_signal: int):
    locked = write_pages(on_ext4 / "locked", 1000, sync=True)
    twin = write_pages(on_ext4 / "twin", 1000, sync=True)
    read_pages(twin, range(1000))
    child = mqinspect_subprocess("--lock", locked, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    said = []
    try:
        while not said or "Ctrl-C to release" not in said[-1]:
            line = child.stderr.readline()
            assert line, f"mqinspect ended before locking: {''.join(said)}"
            said.append(line)
        assert any(f"locked 1000 pages of {locked}" in line for line in said)
        drop_caches()
        assert fincore_pages(locked) == 1000
        assert fincore_pages(twin) == 0
        child.send_signal(stop_signal)
        stdout, stderr = child.communicate(timeout=20)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 0, stderr
    assert "released" in stderr
    header, row = stdout.splitlines()[:2]
    columns = dict(zip(header.split(), row.split(), strict=False))
    assert (columns["CACHED"], columns["LOCKED"]) == ("1000", "1000")
    drop_caches()
    assert fincore_pages(locked) == 0


@pytest.mark.requires_root
def test_a_memlock_limit_too_small_is_an_error_row_with_the_fix(world_dir: Path):
    big = write_pages(world_dir / "big", 1024, sync=True)  # 4 MiB against a 1 MiB limit
    big.chmod(0o644)
    small_limit = ("prlimit", "--memlock=1048576:1048576", "--", *AS_NOBODY)
    status, stdout, stderr = run_mqinspect("--lock", big, prefix=small_limit, env={"COLUMNS": "400"})
    assert status == ExitStatus.FINDINGS, stderr
    (error_line,) = [line for line in stdout.splitlines() if line.startswith("error:")]
    assert error_line.startswith(f"error: {big}: mlock of {big} (4096 KiB) refused")
    assert "RLIMIT_MEMLOCK allows 1024 KiB" in error_line and "fix: raise the limit" in error_line
    assert "ulimit -l 4096" in error_line
    assert "nothing to hold" in stderr and "Ctrl-C to release" not in stderr


# ---------------------------------------------------------------- --pid


@pytest.fixture
def mapping_child(tmp_path: Path):
    child = MappingChild(tmp_path)
    yield child
    child.stop()


def test_pid_lists_the_files_a_process_maps_and_holds_open(mapping_child: MappingChild):
    child = mapping_child
    document, fincore_count = settled_fincore(child.mapped, lambda: cache_json("--pid", child.pid))[::-1]
    assert (document["process"]["pid"], document["process"]["notes"]) == (child.pid, {})
    files = {file["path"]: file for file in document["files"]}
    mapped = files[str(child.mapped)]
    assert (mapped["process"]["mapped"], mapped["process"]["open_fds"]) == (True, [])
    assert mapped["process"]["rss_bytes"] == child.PAGES * PAGE_SIZE
    assert mapped["process"]["locked_bytes"] == child.LOCKED_PAGES * PAGE_SIZE
    assert mapped["cached_pages"] == fincore_count == child.PAGES  # mapped pages stay through drop_caches
    held_open = files[str(child.held_open)]
    assert held_open["process"]["mapped"] is False and held_open["process"]["open_fds"]
    assert (held_open["pages"], held_open["source"], held_open["trusted"]) == (8, "cachestat", True)
    deleted = files[str(child.deleted)]
    assert deleted["process"]["deleted"] is True and deleted["pages"] == 2
    assert deleted["source"] == "cachestat"  # measured through /proc/PID/fd although it has no name
    table = run_cache("--pid", child.pid, env={"COLUMNS": "300"}).stdout
    assert table.startswith(f"process {child.pid} (")
    assert f"{child.deleted} (deleted)" in table
    assert any(
        line.split()[-1] == str(child.mapped) and "mmap" in line.split() for line in table.splitlines()
    )


def test_pid_usage_errors_and_a_gone_process():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    gone = run_cache("--pid", child.pid)
    assert gone.exit_code == ExitStatus.BAD_INPUT and gone.stdout == ""
    assert f"process {child.pid} is gone" in gone.stderr
    with_paths = run_cache("--pid", os.getpid(), "/etc/hostname")
    assert with_paths.exit_code == ExitStatus.BAD_INPUT and "not both" in with_paths.stderr
    recursive = run_cache("--pid", os.getpid(), "--recursive")
    assert recursive.exit_code == ExitStatus.BAD_INPUT
    nothing = run_cache()
    assert nothing.exit_code == ExitStatus.BAD_INPUT and "PATH" in nothing.stderr


# ---------------------------------------------------------------- bad input


def test_bad_paths_are_error_rows_and_the_others_are_still_reported(on_ext4: Path):
    good = write_pages(on_ext4 / "good", 10, sync=False)
    missing = on_ext4 / "missing"
    document = cache_json(missing, on_ext4, "/dev/null", good, status=ExitStatus.FINDINGS)
    assert [(error["path"], error["errno"]) for error in document["errors"]] == [
        (str(missing), errno.ENOENT),
        (str(on_ext4), errno.EISDIR),
        ("/dev/null", None),
    ]
    assert "--recursive" in document["errors"][1]["reason"]
    assert "character device" in document["errors"][2]["reason"]
    assert [file["path"] for file in document["files"]] == [str(good)]
    assert document["totals"]["errors"] == 3 and document["totals"]["files"] == 1
    table = run_cache(missing, on_ext4, "/dev/null", good)
    assert table.exit_code == ExitStatus.FINDINGS and table.stderr == ""
    lines = table.stdout.splitlines()
    assert lines[1] == f"error: {missing}: No such file or directory"
    assert lines[-2].split()[-5:] == ["total:", "1", "file,", "3", "errors"]
    assert any(line.split()[-1] == str(good) for line in lines)


def test_a_recursive_walk_reports_every_file(on_ext4: Path):
    tree = on_ext4 / "store"
    (tree / "commitlog").mkdir(parents=True)
    files = {
        write_pages(tree / "commitlog" / "00000000000000000000", 5, sync=False),
        write_pages(tree / "checkpoint", 1, sync=False),
    }
    document = cache_json("--recursive", tree)
    assert {Path(file["path"]) for file in document["files"]} == files
    assert document["totals"]["pages"] == 6


@pytest.mark.requires_root
def test_as_nobody_denied_and_unmeasurable_files_are_reported_honestly(world_dir: Path):
    secret = write_pages(world_dir / "secret", 4, sync=True)
    secret.chmod(0o600)
    theirs = write_pages(world_dir / "theirs", 8, sync=False)
    os.chown(theirs, 65534, 65534)
    readable_only = write_pages(world_dir / "readable-only", 16, sync=True)
    readable_only.chmod(0o644)
    status, stdout, stderr = run_mqinspect(
        "--format", "json", secret, theirs, readable_only, prefix=AS_NOBODY
    )
    assert status == ExitStatus.FINDINGS, stderr
    document = json.loads(stdout)
    assert [(error["path"], error["errno"]) for error in document["errors"]] == [(str(secret), errno.EACCES)]
    assert "Permission denied" in document["errors"][0]["reason"]
    files = {file["path"]: file for file in document["files"]}
    # nobody owns "theirs", so cachestat answers with real numbers.
    assert (files[str(theirs)]["cached_pages"], files[str(theirs)]["trusted"]) == (8, True)
    # nobody may read but not write "readable-only": cachestat is refused and mincore would lie.
    unmeasured = files[str(readable_only)]
    assert (unmeasured["cached_pages"], unmeasured["dirty_pages"], unmeasured["trusted"]) == (
        None,
        None,
        False,
    )
    assert unmeasured["source"] == "mincore" and "EPERM" in unmeasured["notes"]["source"]
    assert "every page resident" in unmeasured["notes"]["cached_pages"]
    assert document["totals"]["cached_pages"] == 8
    assert "sum over the 1 of 2 files" in document["totals"]["notes"]["cached_pages"]
    status, table, stderr = run_mqinspect(secret, readable_only, prefix=AS_NOBODY, env={"COLUMNS": "300"})
    lines = table.splitlines()
    # nothing measured, each path for lack of privilege: 3, and the fix
    assert status == ExitStatus.MISSING_CAPABILITY
    assert "no file could be measured by this user: run as root" in stderr
    assert lines[1].startswith(f"error: {secret}: Permission denied")
    assert lines[2].split()[2:4] == ["unavailable", "unavailable"] and lines[2].endswith(str(readable_only))
    assert any("note: cached_pages" in line and "every page resident" in line for line in lines)


@pytest.mark.requires_root
@pytest.mark.parametrize(
    ("files", "status"),
    [
        (("theirs",), ExitStatus.OK),
        (("readable_only",), ExitStatus.MISSING_CAPABILITY),
        (("theirs", "readable_only"), ExitStatus.FINDINGS),
        (("readable_only", "missing"), ExitStatus.FINDINGS),
    ],
    ids=["measured", "none-for-privilege", "some-measured", "privilege-and-missing"],
)
def test_the_exit_status_says_whether_privileges_kept_every_value_unavailable(world_dir: Path, files, status):
    paths = {
        "theirs": write_pages(world_dir / "theirs", 4, sync=True),
        "readable_only": write_pages(world_dir / "readable-only", 4, sync=True),
        "missing": world_dir / "missing",
    }
    os.chown(paths["theirs"], 65534, 65534)
    paths["readable_only"].chmod(0o644)
    code, stdout, _stderr = run_mqinspect(
        "--format", "json", *(paths[name] for name in files), prefix=AS_NOBODY
    )
    assert code == status, stdout


@pytest.mark.requires_root
def test_evict_as_nobody_of_a_root_file_says_the_kernel_acted_though_it_cannot_count(world_dir: Path):
    path = write_pages(world_dir / "root-segment", 256, sync=True)
    path.chmod(0o644)
    read_pages(path, range(256), readahead=False)
    assert fincore_pages(path) == 256
    status, stdout, stderr = run_mqinspect("--evict", "--format", "json", path, prefix=AS_NOBODY)
    evicted = only_file(json.loads(stdout))
    assert evicted["evict"]["pages_evicted"] is None and evicted["cached_pages"] is None
    note = evicted["notes"]["pages_evicted"]
    assert note.startswith("the kernel accepted POSIX_FADV_DONTNEED, which needs only read access, so clean ")
    assert "how many cannot be measured: mincore cannot see" in note
    assert fincore_pages(path) == 0  # it did act: every clean, unmapped page went
    assert status == ExitStatus.MISSING_CAPABILITY and "run as root" in stderr


# ---------------------------------------------------------------- usage


@pytest.mark.parametrize(
    "actions", [("--evict", "--touch"), ("--touch", "--lock"), ("--evict", "--lock"), ("--sync",)]
)
def test_actions_are_exclusive_and_sync_goes_with_evict(actions: tuple[str, ...]):
    result = run_cache(*actions, "/etc/hostname")
    assert result.exit_code == ExitStatus.BAD_INPUT
    assert result.stdout == "" and "mqinspect cache --help" in result.stderr


# ---------------------------------------------------------------- output forms


def test_csv_has_a_header_and_one_row_per_file_or_error(on_ext4: Path):
    good, missing = on_ext4 / "good", on_ext4 / "missing"
    result = as_built(
        lambda: write_pages(good, 4, sync=False),
        {good: {"cached_pages": 4, "dirty_pages": 4}},
        lambda: run_cache("--format", "csv", "--chunks", 2, "--map", good, missing),
    )
    assert result.exit_code == ExitStatus.FINDINGS
    assert result.stdout.splitlines()[0] == (
        "path,size_bytes,pages,cached_pages,dirty_pages,writeback_pages,evicted_pages,"
        "recently_evicted_pages,source,trusted,notes,error,chunks_cached_percent,chunks_dirty_percent,page_map"
    )
    good_row, missing_row = csv.DictReader(io.StringIO(result.stdout))
    assert (good_row["path"], good_row["pages"], good_row["cached_pages"], good_row["dirty_pages"]) == (
        str(good),
        "4",
        "4",
        "4",
    )
    assert (good_row["chunks_cached_percent"], good_row["chunks_dirty_percent"], good_row["page_map"]) == (
        "100 100",
        "100 100",
        "0:4",
    )
    assert (good_row["error"], missing_row["error"], missing_row["cached_pages"]) == (
        "",
        "No such file or directory",
        "",
    )


# ---------------------------------------------------------------- the kernel moving a built state


def once_disturbed(monkeypatch: pytest.MonkeyPatch, name: str, disturbed: Callable) -> list[int]:
    """This module's `name` replaced by `disturbed(original, ...)` for its first call only: what the kernel
    or another process did at that moment once. Returns the calls made, one entry each."""
    original, calls = globals()[name], []

    def first_disturbed(*args, **kwargs):
        calls.append(len(calls))
        if len(calls) == 1:
            return disturbed(original, *args, **kwargs)
        return original(*args, **kwargs)

    monkeypatch.setitem(globals(), name, first_disturbed)
    return calls


def test_a_file_written_back_before_the_csv_is_taken_is_built_again(on_ext4: Path, monkeypatch):
    """Another process's sync (the file written back early) once made the csv say 0 dirty pages."""
    writes = once_disturbed(
        monkeypatch, "write_pages", lambda write, path, pages, sync: write(path, pages, sync=True)
    )
    test_csv_has_a_header_and_one_row_per_file_or_error(on_ext4)
    assert len(writes) == 2  # the first file was not measured: it was no longer dirty


def test_pages_are_paged_out_where_the_next_mapping_would_cross_a_page_table(on_ext4: Path):
    """The spot where this process's next mapping of 64 pages falls is made one that crosses a page-table
    boundary, as it was for every test of a pytest process that failed with evicted 0 instead of 56."""
    path = write_pages(on_ext4 / "segment", 64, sync=True)
    with contextlib.ExitStack() as spacers:
        for _ in range(PAGE_TABLE_PAGES):
            probe = mmap.mmap(-1, 64 * PAGE_SIZE)  # where a mapping of 64 pages falls now
            if page_table_offset(probe) + 64 > PAGE_TABLE_PAGES:
                probe.close()  # the spot is free again: the file's mapping takes it
                break
            spacers.enter_context(probe)
        paged_out(path, 64)
    assert page_states({path: {"cached_pages": 0, "evicted_pages": 0}}) == {
        path: {"cached_pages": 0, "evicted_pages": 64}
    }


def test_a_pageout_left_undone_is_built_again(on_ext4: Path, monkeypatch):
    """A pageout the kernel leaves undone (or pages it takes back in) makes a state the test did not build."""
    pageouts = once_disturbed(monkeypatch, "paged_out", lambda _page_out, path, pages: None)
    test_evict_says_that_dropped_pages_are_not_evictions(on_ext4)
    assert len(pageouts) == 2


@pytest.mark.parametrize("output", ["table", "json", "csv"])
def test_each_file_is_written_before_the_next_is_measured(
    on_ext4: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, output: str
):
    paths = [write_pages(on_ext4 / f"segment-{number}", 4, sync=True) for number in range(3)]
    printed_before: list[str] = []
    printed = ""

    def measured_one_at_a_time(paths, recursive=False, chunks=None, page_map=False):
        nonlocal printed
        for path in paths:
            printed += capsys.readouterr().out
            printed_before.append(printed)
            yield file_residency(path, chunks=chunks, page_map=page_map)

    monkeypatch.setattr(report, "scan_paths", measured_one_at_a_time)
    status = app(["cache", "--format", output, *map(str, paths)], standalone_mode=False)
    assert status == ExitStatus.OK
    for number, before in enumerate(printed_before):
        assert all(str(path) in before for path in paths[:number])
        assert not any(str(path) in before for path in paths[number:])
    everything = printed + capsys.readouterr().out
    if output == "table":
        assert "total: 3 files" in everything
    if output == "json":
        assert json.loads(everything)["totals"]["files"] == 3


def test_no_color_removes_the_colours(on_ext4: Path):
    dirty = write_pages(on_ext4 / "dirty", 4, sync=False)
    missing = on_ext4 / "missing"
    base = {"FORCE_COLOR": "1", "COLUMNS": "200"}
    _status, coloured, _stderr = run_mqinspect(dirty, missing, env=base)
    assert COLOUR_SGR.search(coloured)  # so the check below can fail
    assert re.search(r"\x1b\[[0-9;]*31m" + re.escape(f"error: {missing}"), coloured)  # the error line is red
    status, plain, _stderr = run_mqinspect(dirty, missing, env={**base, "NO_COLOR": "1"})
    assert status == ExitStatus.FINDINGS
    assert not COLOUR_SGR.search(plain)
    assert "total: 1 file, 1 error" in plain
