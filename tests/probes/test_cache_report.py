"""probes.residency.report: what `mqinspect cache` shows, built below the CLI. Rows and totals against
fincore, an action's outcome, error rows in the library's terms, and no import from the floors above."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
from support import fincore_pages

from probes.residency.mincore import PAGE_SIZE
from probes.residency.report import CacheRequest, CacheRow, CacheTally, cache_rows
from probes.residency.scan import ResidencyError

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def page_cache_drops() -> int:
    """How many times anyone wrote to /proc/sys/vm/drop_caches (the kernel's drop_pagecache count)."""
    for line in Path("/proc/vmstat").read_text().splitlines():
        name, _, value = line.partition(" ")
        if name == "drop_pagecache":
            return int(value)
    return 0


def undisturbed(scenario: Callable[[], T]) -> T:
    """`scenario()`, again when another process dropped the page cache meanwhile (other tests do)."""
    for _ in range(4):
        drops = page_cache_drops()
        outcome = scenario()
        if page_cache_drops() == drops:
            return outcome
    pytest.fail("another process kept dropping the page cache")


def written(path: Path, pages: int) -> Path:
    """A file of `pages` pages, written and fsynced (clean), then read back whole (cached)."""
    path.write_bytes(os.urandom(pages * PAGE_SIZE))
    with path.open("rb") as handle:
        os.fsync(handle.fileno())
        handle.read()
    return path


def test_the_report_imports_nothing_of_the_cli_or_the_renderers():
    code = "import json, sys; import probes.residency.report; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True, timeout=60
    )
    packages = {name.split(".")[0] for name in json.loads(done.stdout)}
    assert not packages & {"mqinspect", "rich", "typer", "click", "psutil"}


def test_rows_and_totals_agree_with_fincore(tmp_path: Path):
    hot, cold = written(tmp_path / "hot", 16), written(tmp_path / "cold", 8)
    with cold.open("rb") as handle:
        os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)

    def scenario():
        tally = CacheTally(None)
        rows = list(
            tally.counted(cache_rows([str(hot), str(cold), str(tmp_path / "missing")], CacheRequest()))
        )
        return rows, tally, fincore_pages(hot), fincore_pages(cold)

    rows, tally, hot_pages, cold_pages = undisturbed(scenario)
    measured = [row for row in rows if isinstance(row, CacheRow)]
    assert [row.residency.cached_pages for row in measured] == [hot_pages, cold_pages] == [16, 0]
    (error,) = [row for row in rows if isinstance(row, ResidencyError)]
    assert (error.path, error.errno) == (str(tmp_path / "missing"), errno.ENOENT)
    totals = tally.totals()
    assert (totals.files, totals.errors, totals.pages, totals.cached_pages) == (2, 1, 24, 16)
    assert totals.cached_percent == 100 * 16 / 24
    assert not tally.all_measured and not tally.only_privilege_missing


def test_an_evicted_file_reports_what_the_action_dropped(tmp_path: Path):
    path = tmp_path / "segment"

    def scenario():
        written(path, 32)
        before = fincore_pages(path)
        (row,) = cache_rows([str(path)], CacheRequest(action="evict"))
        return before, row, fincore_pages(path)

    before, row, after = undisturbed(scenario)
    assert row.action.name == "evict"
    assert row.action.pages == {"pages_evicted": before - after, "pages_stayed_resident": after}
    assert (before, after, row.residency.cached_pages) == (32, 0, 0)


def test_errors_are_in_the_librarys_terms_and_the_walk_goes_on(tmp_path: Path):
    (tmp_path / "tree").mkdir()
    written(tmp_path / "tree" / "segment", 1)
    flat = list(cache_rows([str(tmp_path / "tree")], CacheRequest()))
    assert [(row.errno, row.reason) for row in flat] == [
        (errno.EISDIR, "is a directory; scan it with recursive=True")
    ]
    walked = list(cache_rows([str(tmp_path / "tree")], CacheRequest(chunks=1), recursive=True))
    assert [(row.residency.path, len(row.residency.chunks)) for row in walked] == [
        (str(tmp_path / "tree" / "segment"), 1)
    ]
