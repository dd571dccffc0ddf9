"""Files in known page-cache states, and the tools that check them: the helpers the residency, cache and
process-file tests share.

Files are built on ext4 (tmpfs keeps no dirty or writeback state). Other test runs on this shared machine may
drop the page cache, the flusher may write dirty pages back early and DAMON may reclaim clean ones, so a
scenario is rerun when the state it built moved (`undisturbed`, `as_built`), and fincore is compared between
two equal readings (`settled_fincore`).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
from support import AS_NOBODY, fadvise_out, fincore_pages

from probes.residency.cachestat import cachestat
from probes.residency.mincore import PAGE_SIZE

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


# ---------------------------------------------------------------- a process that maps and holds files

CHILD = """
import ctypes, os, sys
PAGE = os.sysconf("SC_PAGE_SIZE")
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, *[ctypes.c_int] * 3, ctypes.c_long]
libc.mlock.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
mapped_path, open_path, deleted_path, pages, locked_pages, dirty_pages = sys.argv[1:7]
pages, locked_pages, dirty_pages = int(pages), int(locked_pages), int(dirty_pages)
fd = os.open(mapped_path, os.O_RDWR)
address = libc.mmap(None, pages * PAGE, 0x1 | 0x2, 0x01, fd, 0)  # PROT_READ|PROT_WRITE, MAP_SHARED
os.close(fd)  # the mapping alone keeps the file: it is mapped, not open
view = (ctypes.c_char * (pages * PAGE)).from_address(address)
touched = sum(view[page * PAGE][0] for page in range(pages))  # every page mapped in
for page in range(dirty_pages):
    view[page * PAGE + 1] = b"d"
assert libc.mlock(address + (pages - locked_pages) * PAGE, locked_pages * PAGE) == 0, ctypes.get_errno()
held_open = open(open_path, "rb")
deleted = open(deleted_path, "rb")
os.unlink(deleted_path)
print("ready", flush=True)
sys.stdin.read()
"""


class MappingChild:
    """A child that maps a file (dirtying some pages, mlocking others), holds one open and one deleted."""

    PAGES, LOCKED_PAGES, DIRTY_PAGES = 64, 16, 4

    def __init__(self, directory: Path):
        self.mapped = write_pages(directory / "commitlog", self.PAGES, sync=True)
        self.held_open = write_pages(directory / "segment.log", 8, sync=True)
        self.deleted = write_pages(directory / "rotated.log", 2, sync=True)
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                CHILD,
                *map(str, (self.mapped, self.held_open, self.deleted)),
                *map(str, (self.PAGES, self.LOCKED_PAGES, self.DIRTY_PAGES)),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout.readline().strip() == "ready"

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        self.process.communicate("", timeout=10)
