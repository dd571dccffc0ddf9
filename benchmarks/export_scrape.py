"""What a scrape of `mqinspect export` costs: one scrape of a store with 1,000 segments, and the exporter's
CPU when Prometheus scrapes it every 15 s, without eBPF and (--ebpf) with the probes.

Builds a store in a temporary directory on the root file system with MessageStore and small files
(64 KiB CommitLog segments, 1,000-entry ConsumeQueue files: 1,000 CommitLog segments and their queues'
files), starts `mqinspect export` on it, and:
  1. times scrapes over HTTP, as Prometheus makes them (wall clock, median and worst of --scrapes), with the
     exporter's own mqinspect_scrape_duration_seconds beside them;
  2. scrapes it every --interval seconds (15, Prometheus's usual) for --intervals intervals and reads the
     exporter's CPU time from /proc/PID/stat: the share of one core between the first and the last scrape.

With --ebpf (root, bcc) a broker's stand-in (a child process holding the store open with MessageStore, so
mapping every segment) appends --write-rate messages of 1 KiB per second, and the same is measured twice
while it runs: the exporter without eBPF (the floor, in the same run: a holder that maps every segment makes
the scrape's locked-bytes measurement read its smaps), then `mqinspect export --ebpf`, whose probes trace
the holder as it faults, dirties and rolls the CommitLog: scrape latency (each scrape drains the probes)
and the exporter's CPU at one scrape per --interval, the compile before it listens excluded (it is paid
once, at start). A MISS says the floor and what the probes add to it.

Issue targets: one scrape within 100 ms; under 1 % of one core at a 15 s interval, with --ebpf too.

    .venv/bin/python benchmarks/export_scrape.py [--segments 1000] [--scrapes 9] [--interval 15]
        [--intervals 4] [--ebpf [--write-rate 10]]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
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


@contextlib.contextmanager
def serving(root: Path, *extra: str) -> Iterator[tuple[int, str]]:
    """`mqinspect export ROOT EXTRA` as (pid, url), once it says where it serves (after compiling, with
    --ebpf); stopped with SIGTERM at the end of the block."""
    process = subprocess.Popen(
        [sys.executable, "-m", "mqinspect", "export", str(root), "--listen", "127.0.0.1:0", *extra],
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        said = []
        for line in process.stderr:
            said.append(line)
            found = SERVING.search(line)
            if found:
                yield process.pid, found.group(1)
                return
        raise SystemExit(f"export did not start: {''.join(said)}")
    finally:
        process.terminate()
        process.wait(timeout=30)


@dataclass
class Measured:
    median_wall_s: float
    worst_wall_s: float
    median_own_s: float
    cpu_per_scrape_s: float
    percent: float  # of one core at one scrape per interval
    cpu_s: float


def measure(url: str, pid: int, args: argparse.Namespace) -> Measured:
    scrape(url)  # the first pays for imports
    cpu_before = cpu_seconds(pid)
    timed = [scrape(url) for _ in range(args.scrapes)]
    cpu_per_scrape = (cpu_seconds(pid) - cpu_before) / args.scrapes
    walls = sorted(wall for wall, _own in timed)
    owns = sorted(own for _wall, own in timed)
    cpu_before, wall_before = cpu_seconds(pid), time.monotonic()
    for _ in range(args.intervals):
        time.sleep(args.interval)
        scrape(url)
    cpu = cpu_seconds(pid) - cpu_before
    percent = 100 * cpu / (time.monotonic() - wall_before)
    return Measured(
        statistics.median(walls), walls[-1], statistics.median(owns), cpu_per_scrape, percent, cpu
    )


def report(what: str, measured: Measured, args: argparse.Namespace) -> None:
    print(
        f"{what}: one scrape over HTTP: median {measured.median_wall_s * 1000:.1f} ms, worst "
        f"{measured.worst_wall_s * 1000:.1f} ms (measuring: median {measured.median_own_s * 1000:.1f} ms; "
        f"the exporter's CPU: {measured.cpu_per_scrape_s * 1000:.0f} ms per scrape) over {args.scrapes} "
        f"scrapes, load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"
    )
    print(
        f"{what}: CPU at one scrape per {args.interval:g} s: {measured.percent:.2f} % of one core "
        f"({measured.cpu_s:.2f} s over {args.intervals} intervals)"
    )


# A broker's stand-in for --ebpf: it holds the store open and appends until its stdin closes.
_WRITER = """
import sys, threading
from store.config import StoreConfig
from store.message_store import MessageStore
from store.workload import ProduceSpec, produce
root, rate, segment = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
config = StoreConfig(mapped_file_size_commitlog=segment, consume_queue_entries_per_file=1000,
                     max_hash_slot_num=64, max_index_num=256)
with MessageStore(root, config) as store:
    print("ready", flush=True)
    produce(store, ProduceSpec("Live", 0, count=10**9, body_size_bytes=1024, rate_msgs_per_s=rate),
            should_stop=stop.is_set)
"""


def start_writer(root: Path, rate: float) -> subprocess.Popen:
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(root), str(rate), str(SEGMENT_BYTES)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    if writer.stdout.readline().strip() != "ready":
        raise SystemExit("the writer did not start")
    return writer


def ebpf_case(root: Path, args: argparse.Namespace) -> bool:
    """While a writer holds and appends to the store: the exporter without eBPF (the floor: a holder that maps
    every segment makes the scrape's locked-bytes measurement read its smaps), then with --ebpf; PASS/MISS."""
    writer = start_writer(root, args.write_rate)
    try:
        with serving(root) as (pid, url):
            floor = measure(url, pid, args)
        started = time.monotonic()
        with serving(root, "--ebpf") as (pid, url):
            print(
                f"--ebpf: compiled and attached in {time.monotonic() - started:.1f} s (paid once, at start)"
            )
            segments_before, measuring_since = len(os.listdir(root / "commitlog")), time.monotonic()
            measured = measure(url, pid, args)
            rolls = len(os.listdir(root / "commitlog")) - segments_before
            rolls_per_s = rolls / (time.monotonic() - measuring_since)
            probes = scrape_text(url)
    finally:
        writer.stdin.close()
        writer.wait(timeout=30)
    report("no eBPF, with the writer", floor, args)
    report("--ebpf, with the writer", measured, args)
    print(
        f"--ebpf: the writer appended {args.write_rate:g} messages of 1 KiB per second: {rolls} CommitLog "
        f"rolls while measured, {rolls_per_s * args.interval:.1f} per {args.interval:g} s (a broker writing "
        f"{rolls_per_s * 1024:.0f} MiB/s into 1 GiB segments rolls as often)"
    )
    running = re.findall(r'^mqinspect_ebpf_probe_running\{probe="(\w+)".*\} 1\.0$', probes, re.MULTILINE)
    print(f"--ebpf: probes running at the end: {', '.join(running) or 'none'}")
    met = measured.percent < CPU_TARGET_PERCENT and len(running) == 4
    bound = (
        ""
        if met
        else (
            f" (bounded by the scrape without eBPF, same store and writer, measured in this run: "
            f"{floor.percent:.2f} %, {floor.cpu_per_scrape_s * 1000:.0f} ms per scrape; the probes add "
            f"{measured.percent - floor.percent:.2f} points, "
            f"{(measured.cpu_per_scrape_s - floor.cpu_per_scrape_s) * 1000:.0f} ms per back-to-back scrape)"
        )
    )
    print(
        f"{verdict(met)}  under {CPU_TARGET_PERCENT:g} % of one core at {args.interval:g} s with --ebpf: "
        f"{measured.percent:.2f} %, scrape median {measured.median_wall_s * 1000:.1f} ms{bound}"
    )
    return met


def scrape_text(url: str) -> str:
    with OPENER.open(url, timeout=30) as response:
        return response.read().decode()


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
    parser.add_argument("--ebpf", action="store_true", help="also measure export --ebpf (root, bcc)")
    parser.add_argument(
        "--write-rate",
        type=float,
        default=10,
        help="messages of 1 KiB per second the writer appends (10: ~2 rolls of the 64 KiB segments per 15 s)",
    )
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
        with serving(root) as (pid, url):
            floor = measure(url, pid, args)
        report("no eBPF", floor, args)
        print(
            f"{verdict(floor.median_wall_s <= SCRAPE_TARGET_S)}  one scrape of {args.segments} segments "
            f"within {SCRAPE_TARGET_S * 1000:.0f} ms: {floor.median_wall_s * 1000:.1f} ms"
        )
        print(
            f"{verdict(floor.percent < CPU_TARGET_PERCENT)}  under {CPU_TARGET_PERCENT:g} % of one core at "
            f"{args.interval:g} s (no eBPF): {floor.percent:.2f} %"
        )
        if args.ebpf:
            ebpf_case(root, args)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
