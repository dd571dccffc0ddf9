"""Issue 17 item 6: `store verify` and `store dump --deep --format jsonl` on a 2 GiB Kafka partition, end to
end through the CLI, beside the floors measured in the same run on the same bytes.

The partition is written once with store.kafka.writer (LogDirWriter, 1 GiB segments, an index entry every
4,096 bytes, a time index, checkpoints) under --dir, and reused while its manifest matches: batches of 100
records, keys `key-N`, printable text values of ~100 B, a header on every tenth record. Then, with its pages
in the page cache:
- read+CRC-32C floor: pread 4 MiB windows of every .log and CRC-32C them (the least a verify can do);
- `mqinspect store verify LOGDIR --format json` as a child process;
- `mqinspect store dump LOGDIR --deep --format jsonl` as a child process, its lines counted through a pipe;
- kafka-python: MemoryRecords over the same segments, iterating every record (its own decoding);
- store.kafka's decoding alone (LogReader + decode_records, in this process): what bounds the commands.
Every figure is CPU time (user + system; a child's from wait4): on a shared machine wall time measures the
neighbours. Wall time is printed beside it. Targets: verify >= 50% of the floor's rate; dump --deep jsonl
>= 200k records/s and >= 3x kafka-python's decoding rate; each PASS or MISS, a MISS with what bounds it.

    .venv/bin/python benchmarks/kafka_scan.py                         # 2 GiB under /work/scratch/kafkabench
    .venv/bin/python benchmarks/kafka_scan.py --gib 0.05 --dir /tmp/k # a quick run
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


from store.kafka.batches import LogReader, RecordBatch  # noqa: E402
from store.kafka.records import decode_records  # noqa: E402
from store.kafka.writer import LogDirWriter, ProducerRecord  # noqa: E402

sys.path.insert(0, str(REPO / "benchmarks"))
from kafka_decode import kafka_python  # noqa: E402  the library's benchmark: the same floor and reader
from kafka_decode import read_and_crc as read_and_crc_log  # noqa: E402

MQINSPECT = Path(sys.executable).with_name("mqinspect")
DEFAULT_ROOT = Path("/work/scratch/kafkabench")
MANIFEST = "kafka_scan.json"
TOPIC = "bench"
SEGMENT_BYTES = 1 << 30
RECORDS_PER_BATCH = 100
PIPE_READ_BYTES = 1 << 20

VERIFY_FLOOR_SHARE = 0.50
DUMP_RECORDS_PER_S = 200_000
DUMP_OVER_KAFKA_PYTHON = 3.0


@dataclass(frozen=True)
class Manifest:
    gib: float
    batches: int
    records: int
    log_bytes: int


@dataclass(frozen=True)
class Timing:
    cpu_s: float
    wall_s: float


# ---- the partition ---------------------------------------------------------------------------------------


def text_values(count: int) -> list[bytes]:
    words = b"order shipped invoice paid user signed-in cart item price quantity warehouse route".split()
    values = []
    for number in range(count):
        picked = b" ".join(words[(number * 7 + i) % len(words)] for i in range(10))
        values.append(b'{"id":%d,"event":"%s"}' % (number, picked[:70]))
    return values


def write_partition(root: Path, gib: float) -> Manifest:
    """The log dir under root/logs (an earlier one there removed; nothing else of root is touched)."""
    (root / MANIFEST).unlink(missing_ok=True)
    shutil.rmtree(root / "logs", ignore_errors=True)
    values = text_values(64)
    goal = int(gib * (1 << 30))
    batches = records = written = 0
    timestamp = 1_700_000_000_000
    with LogDirWriter(root / "logs", segment_bytes=SEGMENT_BYTES) as log_dir:
        writer = log_dir.partition(TOPIC, 0)
        while written < goal:
            batch = [
                ProducerRecord(
                    b"key-%d" % ((records + i) % 10_000),
                    values[(records + i) % 64],
                    (("trace", b"%d" % i),) if i % 10 == 0 else (),
                    timestamp + records + i,
                )
                for i in range(RECORDS_PER_BATCH)
            ]
            written += writer.append(batch).size_bytes
            batches += 1
            records += RECORDS_PER_BATCH
    manifest = Manifest(gib, batches, records, written)
    (root / MANIFEST).write_text(json.dumps(asdict(manifest)))
    return manifest


def partition_of(root: Path, gib: float) -> Manifest:
    """The partition under root, written now unless a finished one of this size is there."""
    try:
        manifest = Manifest(**json.loads((root / MANIFEST).read_text()))
    except (OSError, ValueError, TypeError):
        manifest = None
    if manifest is None or manifest.gib != gib:
        print(f"writing {gib:g} GiB under {root} ...", file=sys.stderr, flush=True)
        started = time.monotonic()
        manifest = write_partition(root, gib)
        print(f"written in {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    return manifest


def logs_of(root: Path) -> list[Path]:
    return sorted((root / "logs" / f"{TOPIC}-0").glob("*.log"))


# ---- the measurements ------------------------------------------------------------------------------------


def timed(work) -> tuple[Timing, object]:
    cpu, wall = time.process_time(), time.monotonic()
    result = work()
    return Timing(time.process_time() - cpu, time.monotonic() - wall), result


def read_and_crc(logs: list[Path]) -> int:
    return sum(read_and_crc_log(log) for log in logs)


def library_decode(logs: list[Path]) -> int:
    return sum(
        len(decode_records(item, log))
        for log in logs
        for item in LogReader(log)
        if isinstance(item, RecordBatch)
    )


def kafka_python_decode(logs: list[Path]) -> int | None:
    counts = [kafka_python(log) for log in logs]
    return None if None in counts else sum(counts)


def run_child(arguments: list[str], on_output) -> Timing:
    """A CLI child to completion, its stdout handed to on_output in chunks; its CPU time from wait4."""
    started = time.monotonic()
    child = subprocess.Popen([str(MQINSPECT), *arguments], stdout=subprocess.PIPE)
    while chunk := child.stdout.read(PIPE_READ_BYTES):
        on_output(chunk)
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - started
    if child.returncode != 0:
        raise SystemExit(f"mqinspect {' '.join(arguments)} exited {child.returncode}")
    return Timing(usage.ru_utime + usage.ru_stime, wall)


def run_verify(log_dir: Path) -> tuple[Timing, dict]:
    output = bytearray()
    timing = run_child(["store", "verify", str(log_dir), "--format", "json"], output.extend)
    return timing, json.loads(output)


class LineCounter:
    """Counts a stream's lines and keeps its last one (the dump's end line with its counts)."""

    def __init__(self):
        self.lines = 0
        self.tail = b""

    def __call__(self, chunk: bytes) -> None:
        self.lines += chunk.count(b"\n")
        self.tail = (self.tail + chunk)[-4096:]

    def last(self) -> dict:
        return json.loads(self.tail.rstrip(b"\n").rsplit(b"\n", 1)[-1])


def run_dump(log_dir: Path) -> tuple[Timing, dict]:
    lines = LineCounter()
    timing = run_child(["store", "dump", str(log_dir), "--deep", "--format", "jsonl"], lines)
    return timing, lines.last()


def target(ok: bool, what: str, bound: str) -> None:
    """A target's PASS or MISS line; a MISS says what bounds it."""
    print(f"PASS {what}" if ok else f"MISS {what}; {bound}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=DEFAULT_ROOT, help="where the partition is (re)used")
    parser.add_argument("--gib", type=float, default=2.0, help="size of the partition's log")
    arguments = parser.parse_args()
    manifest = partition_of(arguments.dir, arguments.gib)
    log_dir, logs = arguments.dir / "logs", logs_of(arguments.dir)
    mib = manifest.log_bytes / (1 << 20)
    load = os.getloadavg()[0]
    print(
        f"Kafka partition {log_dir / f'{TOPIC}-0'}: {mib:,.0f} MiB in {len(logs)} segments, "
        f"{manifest.batches:,} batches, {manifest.records:,} records (load {load:.1f}; CPU time)"
    )
    read_and_crc(logs)  # into the page cache: the CPU is measured, not the disk
    floor, read = timed(lambda: read_and_crc(logs))
    verify, report = run_verify(log_dir)
    dump, end = run_dump(log_dir)
    theirs, their_records = timed(lambda: kafka_python_decode(logs))
    ours, our_records = timed(lambda: library_decode(logs))

    problems = []
    if read != manifest.log_bytes:
        problems.append(f"read {read} B of the logs, the manifest says {manifest.log_bytes}")
    if report.get("records_checked") != manifest.records or report.get("findings"):
        problems.append(f"verify: {report.get('records_checked')} records, findings {report.get('findings')}")
    if end.get("record_count") != manifest.records:
        problems.append(f"dump: {end.get('record_count')} records, {manifest.records} written")
    for name, count in (("kafka-python", their_records), ("store.kafka", our_records)):
        if count is not None and count != manifest.records:
            problems.append(f"{name} decoded {count} records, {manifest.records} written")

    def rate(timing: Timing) -> str:
        return f"{mib / timing.cpu_s:8,.0f} MiB/s CPU ({mib / timing.wall_s:,.0f} wall)"

    def records_rate(timing: Timing) -> str:
        records = manifest.records
        return f"{records / timing.cpu_s:10,.0f} records/s CPU ({records / timing.wall_s:,.0f} wall)"

    print(f"  read+CRC-32C floor        {rate(floor)}  {floor.cpu_s:.2f} s")
    print(f"  store verify              {rate(verify)}  {verify.cpu_s:.2f} s")
    print(f"  store dump --deep jsonl   {records_rate(dump)}  {dump.cpu_s:.2f} s")
    print(f"  store.kafka decoding      {records_rate(ours)}  {ours.cpu_s:.2f} s (in process)")
    if their_records is None:
        print("  kafka-python              unavailable: pip install '.[test]' for it")
    else:
        print(f"  kafka-python decoding     {records_rate(theirs)}  {theirs.cpu_s:.2f} s")

    share = floor.cpu_s / verify.cpu_s
    target(
        share >= VERIFY_FLOOR_SHARE,
        f"verify at {share:.0%} of the read+CRC-32C floor's rate (target {VERIFY_FLOOR_SHARE:.0%})",
        f"bounded by decoding every record: store.kafka's decoding alone takes {ours.cpu_s:.2f} s CPU of "
        f"verify's {verify.cpu_s:.2f} s, {ours.cpu_s / floor.cpu_s:.1f}x the whole floor",
    )
    dump_rate = manifest.records / dump.cpu_s
    target(
        dump_rate >= DUMP_RECORDS_PER_S,
        f"dump --deep jsonl {dump_rate:,.0f} records/s (target {DUMP_RECORDS_PER_S:,})",
        f"decoding takes {ours.cpu_s / dump.cpu_s:.0%} of its CPU, events and JSON lines the rest",
    )
    if their_records is not None:
        ratio = theirs.cpu_s / dump.cpu_s
        target(
            ratio >= DUMP_OVER_KAFKA_PYTHON,
            f"dump --deep jsonl {ratio:.1f}x kafka-python's decoding (target {DUMP_OVER_KAFKA_PYTHON:g}x); "
            f"store.kafka's decoding alone {theirs.cpu_s / ours.cpu_s:.1f}x",
            f"to reach it the whole dump would have to take {theirs.cpu_s / DUMP_OVER_KAFKA_PYTHON:.2f} s; "
            f"store.kafka's decoding alone takes {ours.cpu_s:.2f} s",
        )
    for problem in problems:
        print(f"ERROR {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
