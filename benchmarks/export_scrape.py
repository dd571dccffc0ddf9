"""What a scrape of `mqinspect export` costs: one scrape of a store with 1,000 segments, and the exporter's
CPU when Prometheus scrapes it every 15 s (without eBPF).

Builds a store in a temporary directory on the root file system with MessageStore and small files
(64 KiB CommitLog segments, 1,000-entry ConsumeQueue files: 1,000 CommitLog segments and their queues'
files), starts `mqinspect export` on it, and:
  1. times scrapes over HTTP, as Prometheus makes them (wall clock, median and worst of --scrapes), with the
     exporter's own mqinspect_scrape_duration_seconds beside them;
  2. scrapes it every --interval seconds (15, Prometheus's usual) for --intervals intervals and reads the
     exporter's CPU time from /proc/PID/stat: the share of one core between the first and the last scrape.

Issue targets: one scrape within 100 ms; under 1 % of one core at a 15 s interval.

    .venv/bin/python benchmarks/export_scrape.py [--segments 1000] [--scrapes 9] [--interval 15]
        [--intervals 4]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from store.config import StoreConfig  # noqa: E402
from store.inspection.formats import store_files  # noqa: E402
from store.message_store import MessageStore  # noqa: E402
from store.workload import ProduceSpec, produce  # noqa: E402

SEGMENT_BYTES = 64 * 1024
BODY_BYTES = 4000
SCRAPE_TARGET_S = 0.100
CPU_TARGET_PERCENT = 1.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SERVING = re.compile(r"serving metrics at (\S+)")
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def build_store(root: Path, segments: int) -> int:
    """A store whose CommitLog has `segments` segments (two queues); returns how many files it has."""
    config = StoreConfig(
        mapped_file_size_commitlog=SEGMENT_BYTES,
        consume_queue_entries_per_file=1000,
        max_hash_slot_num=64,
        max_index_num=256,
    )
    per_segment = SEGMENT_BYTES // (BODY_BYTES + 200)
    with MessageStore(root, config) as store:
        for queue_id in (0, 1):
            spec = ProduceSpec(
                "Bench", queue_id, count=segments * per_segment // 2, body_size_bytes=BODY_BYTES
            )
            produce(store, spec)
    return len(store_files(root))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def scrape(url: str) -> tuple[float, float]:
    """(wall seconds of one scrape, the exporter's own mqinspect_scrape_duration_seconds)."""
    started = time.perf_counter()
    with OPENER.open(url, timeout=30) as response:
        body = response.read().decode()
    elapsed = time.perf_counter() - started
    measured = float(re.search(r"^mqinspect_scrape_duration_seconds (\S+)$", body, re.MULTILINE).group(1))
    return elapsed, measured


def start_exporter(root: Path) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "mqinspect", "export", str(root), "--listen", "127.0.0.1:0"],
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    line = process.stderr.readline()
    found = SERVING.search(line)
    if not found:
        process.kill()
        raise SystemExit(f"export did not start: {line}")
    return process, found.group(1)


def verdict(met: bool) -> str:
    return "PASS" if met else "MISS"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--segments", type=int, default=1000)
    parser.add_argument("--scrapes", type=int, default=9)
    parser.add_argument("--interval", type=float, default=15.0)
    parser.add_argument("--intervals", type=int, default=4)
    parser.add_argument("--dir", type=Path, default=Path("/tmp"))
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="mqinspect-export-", dir=args.dir))
    try:
        root = directory / "store"
        started = time.monotonic()
        files = build_store(root, args.segments)
        print(
            f"store: {files} files ({args.segments} CommitLog segments of {SEGMENT_BYTES // 1024} KiB), "
            f"built in {time.monotonic() - started:.1f} s"
        )
        process, url = start_exporter(root)
        try:
            scrape(url)  # the first pays for imports
            cpu_before = cpu_seconds(process.pid)
            timed = [scrape(url) for _ in range(args.scrapes)]
            cpu_per_scrape = (cpu_seconds(process.pid) - cpu_before) / args.scrapes
            walls = sorted(wall for wall, _own in timed)
            owns = sorted(own for _wall, own in timed)
            median_wall = statistics.median(walls)
            print(
                f"one scrape over HTTP: median {median_wall * 1000:.1f} ms, worst {walls[-1] * 1000:.1f} ms "
                f"(measuring: median {statistics.median(owns) * 1000:.1f} ms; the exporter's CPU: "
                f"{cpu_per_scrape * 1000:.0f} ms per scrape) over {args.scrapes} scrapes, load average "
                f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"
            )
            cpu_before, wall_before = cpu_seconds(process.pid), time.monotonic()
            for _ in range(args.intervals):
                time.sleep(args.interval)
                scrape(url)
            cpu = cpu_seconds(process.pid) - cpu_before
            percent = 100 * cpu / (time.monotonic() - wall_before)
            print(
                f"CPU at one scrape per {args.interval:g} s: {percent:.2f} % of one core "
                f"({cpu:.2f} s over {args.intervals} intervals)"
            )
        finally:
            process.terminate()
            process.wait(timeout=10)
        print(
            f"{verdict(median_wall <= SCRAPE_TARGET_S)}  one scrape of {args.segments} segments within "
            f"{SCRAPE_TARGET_S * 1000:.0f} ms: {median_wall * 1000:.1f} ms"
        )
        print(
            f"{verdict(percent < CPU_TARGET_PERCENT)}  under {CPU_TARGET_PERCENT:g} % of one core at "
            f"{args.interval:g} s (no eBPF): {percent:.2f} %"
        )
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
