"""Residency scan speed: mqinspect's scan_paths against fincore(1) and vmtouch(8) on partly resident files.

Builds sparse files (default 16 x 1 GiB) in a temporary directory on the root file system, writes a few
percent of their pages in scattered runs and fsyncs every other file, then times (wall clock, median of
N runs) each way of reading their residency. The in-process rows time the function alone; the
`python -c` rows run it in a fresh interpreter, whose start-up (and import) cost is listed on its own rows.

Issue targets: the summary within 1.0x fincore's wall time, the 256-chunk map within 2x.

    .venv/bin/python benchmarks/residency_scan.py [--files 16] [--size-gib 1] [--runs 5] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from probes.residency.mincore import PAGE_SIZE  # noqa: E402
from probes.residency.scan import FileResidency, scan_paths  # noqa: E402

RUN_LENGTH_PAGES = 64
RESIDENT_SHARE = 0.03


def build_files(directory: Path, count: int, size_bytes: int, seed: int = 7) -> list[Path]:
    """Sparse files with ~3 % of their pages written in scattered 64-page runs; every other one fsync'ed."""
    chooser = random.Random(seed)
    pages = size_bytes // PAGE_SIZE
    runs = max(1, int(pages * RESIDENT_SHARE) // RUN_LENGTH_PAGES)
    block = os.urandom(RUN_LENGTH_PAGES * PAGE_SIZE)
    files = []
    for index in range(count):
        path = directory / f"{index * size_bytes:020d}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.ftruncate(fd, size_bytes)
            for start in chooser.sample(range(0, pages - RUN_LENGTH_PAGES, RUN_LENGTH_PAGES), runs):
                os.pwrite(fd, block, start * PAGE_SIZE)
            if index % 2 == 0:
                os.fsync(fd)
        finally:
            os.close(fd)
        files.append(path)
    return files


def median_seconds(action: Callable[[], object], runs: int) -> float:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def run_quietly(command: list[str]) -> None:
    subprocess.run(
        command, check=True, stdout=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(REPO)}
    )


def python_command(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def scan_code(chunks: int | None) -> str:
    return (
        "import sys\nfrom probes.residency.scan import scan_paths\n"
        f"rows = list(scan_paths(sys.argv[1:], chunks={chunks}))\n"
        "print(sum(row.cached_pages for row in rows))"
    )


def fincore_total(files: list[Path]) -> int:
    out = subprocess.run(
        ["fincore", "--noheadings", "--raw", "--output", "PAGES", *map(str, files)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return sum(int(line) for line in out.split())


def measure(files: list[Path], runs: int) -> list[tuple[str, float]]:
    names = [str(path) for path in files]
    summary_code, chunks_code = scan_code(None), scan_code(256)
    return [
        (
            "fincore (util-linux 2.38, mincore)",
            median_seconds(lambda: run_quietly(["fincore", *names]), runs),
        ),
        ("vmtouch (1.3.1, mincore)", median_seconds(lambda: run_quietly(["vmtouch", *names]), runs)),
        ("scan_paths summary, in-process", median_seconds(lambda: list(scan_paths(names)), runs)),
        (
            "scan_paths 256-chunk map, in-process",
            median_seconds(lambda: list(scan_paths(names, chunks=256)), runs),
        ),
        (
            "scan_paths page_map (mincore), in-process",
            median_seconds(lambda: list(scan_paths(names, page_map=True)), runs),
        ),
        (
            "python -c: summary",
            median_seconds(lambda: run_quietly([*python_command(summary_code), *names]), runs),
        ),
        (
            "python -c: 256-chunk map",
            median_seconds(lambda: run_quietly([*python_command(chunks_code), *names]), runs),
        ),
        ("python -c: start-up only", median_seconds(lambda: run_quietly(python_command("pass")), runs)),
        (
            "python -c: start-up + import scan",
            median_seconds(lambda: run_quietly(python_command("import probes.residency.scan")), runs),
        ),
    ]


def print_table(rows: list[tuple[str, float]], files: list[Path], size_bytes: int) -> None:
    fincore_seconds = rows[0][1]
    print(f"{len(files)} files x {size_bytes >> 20} MiB, page size {PAGE_SIZE}; wall time, median")
    print(f"{'method':44} {'ms':>9} {'x fincore':>10}")
    for name, seconds in rows:
        print(f"{name:44} {seconds * 1e3:9.2f} {seconds / fincore_seconds:10.2f}")


def check_agreement(files: list[Path]) -> None:
    rows = list(scan_paths(files))
    ours = sum(row.cached_pages for row in rows if isinstance(row, FileResidency))
    theirs = fincore_total(files)
    resident_share = ours / (len(files) * (files[0].stat().st_size // PAGE_SIZE))
    verdict = "agree" if ours == theirs else "DIFFER (page cache changed meanwhile?)"
    print(
        f"resident pages: scan_paths {ours}, fincore {theirs} ({resident_share:.2%} of all pages): {verdict}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--files", type=int, default=16)
    parser.add_argument("--size-gib", type=float, default=1.0)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--dir", default="/tmp", help="parent of the scratch directory (not tmpfs)")
    options = parser.parse_args()
    size_bytes = int(options.size_gib * (1 << 30)) // PAGE_SIZE * PAGE_SIZE
    directory = Path(tempfile.mkdtemp(prefix="mqinspect-bench-", dir=options.dir))
    try:
        files = build_files(directory, options.files, size_bytes)
        check_agreement(files)
        rows = measure(files, options.runs)
        print_table(rows, files, size_bytes)
    finally:
        shutil.rmtree(directory)


if __name__ == "__main__":
    main()
