"""`store dump` on a cached store of 1 KiB records: records/s of each form, and how soon the first record
comes out, against floors measured in the same run (issue 16's dump targets: jsonl >= 200k records/s, the
one-line table >= 50k records/s, the first record within 100 ms of start whatever --count).

Floors, over the bytes the dumped records take: reading them (pread, 4 MiB at a time), zlib.crc32 over
them, and `codec.decode_run` over them in this interpreter (decoding and checking every record, which any
form pays before it writes anything). Each form runs as `python -m mqinspect store dump` into /dev/null:
records/s by wall time and by the child's CPU time (the machine may be shared: CPU time is what the dump
itself spent). The first record's delay is from reading the dump's first line (written when the store is
open, before the walk starts) to reading its first message line, on a dump of a million records.

    .venv/bin/python benchmarks/dump_rate.py STORE             # a store of >= 1 GiB of 1 KiB records
    .venv/bin/python benchmarks/dump_rate.py STORE --build     # makes it first if missing (~1-2 min)

--build runs `mqinspect store produce STORE -t DumpTopic -n 1000000 --size 1024 --batch 64 --keys 'key-{n}'
--tags TagA`.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from store import codec  # noqa: E402
from store.inspection.rocketmq.reading import commitlog_of  # noqa: E402
from store.safe_read import PreadFile  # noqa: E402

MQINSPECT = [sys.executable, "-m", "mqinspect"]
TARGETS = {"jsonl": 200_000, "table": 50_000}  # records/s
FIRST_RECORD_TARGET_S = 0.100
FORMS = {"jsonl": ["-f", "jsonl"], "json": ["-f", "json"], "table": [], "verbose": ["--verbose"]}
MESSAGE_MARK = {"jsonl": b'"kind":"message"', "table": b"queueOffset: "}


def build(store: Path, messages: int) -> None:
    produce = [*MQINSPECT, "store", "produce", str(store), "-t", "DumpTopic", "-n", str(messages)]
    options = ["--size", "1024", "--batch", "64", "--keys", "key-{n}", "--tags", "TagA"]
    subprocess.run([*produce, *options], check=True, stdout=subprocess.DEVNULL)


def floors(store: Path, records: int) -> dict[str, float]:
    """CPU seconds to read the first `records` records' bytes, to crc32 them, and to decode them
    (decode_run): CPU time, as the dumps' rates are compared by theirs."""
    segment = commitlog_of(store).segments[0]
    read_s = crc_s = decode_s = 0.0
    decoded, position = 0, 0
    with PreadFile(segment.path) as file:
        while decoded < records:
            started = time.process_time()
            data = file.read(position, 4 << 20)
            read_s += time.process_time() - started
            started = time.process_time()
            zlib.crc32(data)
            crc_s += time.process_time() - started
            started = time.process_time()
            run, end = codec.decode_run(memoryview(data), 0, len(data), check_crc=True, max_records=records)
            decode_s += time.process_time() - started
            if not run:
                break
            decoded, position = decoded + len(run), position + end
    scale = records / decoded
    return {"read": read_s * scale, "crc32": crc_s * scale, "decode_run": decode_s * scale}


def timed_dump(store: Path, count: int, form: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds of one dump of `count` records into /dev/null."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(
        [*MQINSPECT, "store", "dump", str(store), "-n", str(count), *form],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def first_record_s(store: Path, form: str) -> tuple[float, float]:
    """Seconds from spawning a dump of a million records to reading its first line (written once the store
    is open, before the walk) and to reading its first message line."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [*MQINSPECT, "store", "dump", str(store), "-n", "1000000", *FORMS[form]], stdout=subprocess.PIPE
    )
    try:
        process.stdout.readline()
        opened = time.perf_counter() - started
        for line in process.stdout:
            if MESSAGE_MARK[form] in line:
                return opened, time.perf_counter() - started
        raise RuntimeError("no message line")
    finally:
        process.kill()
        process.wait()


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("store", type=Path)
    parser.add_argument("--build", action="store_true", help="produce the store first if it is missing")
    parser.add_argument("--count", type=int, default=200_000, help="records per timed dump")
    parser.add_argument("--repeat", type=int, default=3, help="runs per form (the best is kept)")
    args = parser.parse_args()
    if args.build and not (args.store / "commitlog").is_dir():
        build(args.store, 1_000_000)
    segments = commitlog_of(args.store).segments
    subprocess.run(["cat", *map(str, (s.path for s in segments))], check=True, stdout=subprocess.DEVNULL)
    print(f"store {args.store}: {len(segments)} segments; load average {os.getloadavg()[0]:.2f} on "
          f"{os.cpu_count()} CPUs; {args.count:,} records per dump, best of {args.repeat}")  # fmt: skip
    floor = floors(args.store, args.count)
    for name, seconds in floor.items():
        print(f"  floor {name:<11} {seconds:7.3f} s CPU  {args.count / seconds:>12,.0f} records/s")
    for form, options in FORMS.items():
        count = args.count if form != "verbose" else max(1, args.count // 200)  # a rich table per record
        runs = [timed_dump(args.store, count, options) for _ in range(args.repeat)]
        wall, cpu = min(run[0] for run in runs), min(run[1] for run in runs)
        target = TARGETS.get(form)
        mark = f"  target {target:,}/s {verdict(count / wall >= target)}" if target else ""
        of_decode = count / cpu * floor["decode_run"] / args.count
        print(f"  dump {form:<8} {wall:7.3f} s  {count / wall:>12,.0f} records/s wall, {count / cpu:>9,.0f} "
              f"by CPU ({of_decode:.0%} of decode_run's rate){mark}")  # fmt: skip
    for form in MESSAGE_MARK:
        times = [first_record_s(args.store, form) for _ in range(args.repeat)]
        opened, first = min(times, key=lambda pair: pair[1] - pair[0])
        delay = first - opened
        target_ms = FIRST_RECORD_TARGET_S * 1000
        print(f"  first record ({form}) {delay * 1000:.1f} ms after the start line ({opened * 1000:.0f} ms "
              f"after spawning: start-up and opening the store)  target {target_ms:.0f} ms "
              f"{verdict(delay <= FIRST_RECORD_TARGET_S)}")  # fmt: skip


if __name__ == "__main__":
    main()
