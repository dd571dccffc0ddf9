"""How fast store.kafka reads a Kafka segment, in CPU time, against two floors: pread + CRC-32C of the same
bytes (what `verify` cannot beat), and kafka-python decoding the same batches (the independent decoder).

A partition is written with store.kafka.writer in one codec (100 records of ~110 B per batch, a header on
every tenth record), then, with its pages in the page cache:
- read+CRC floor: pread 4 MiB windows and CRC-32C them;
- scan: LogReader over the segment (batch headers, each batch's CRC-32C);
- decode: scan plus decode_records for every batch (decompression included);
- kafka-python: MemoryRecords over the same bytes, iterating every record.
CPU time (time.process_time), not wall time: on a shared machine wall time measures the neighbours. This is
the library's share; benchmarks/kafka_scan.py (issue 17 item 6) measures the commands end to end.

    .venv/bin/python benchmarks/kafka_decode.py --codec none --mib 128
    .venv/bin/python benchmarks/kafka_decode.py --codec zstd --mib 64 --dir /tmp/kafka-bench
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from crc32c import crc32c  # noqa: E402

from store.kafka.batches import LogReader, RecordBatch  # noqa: E402
from store.kafka.compression import CODEC_NAMES  # noqa: E402
from store.kafka.records import decode_records  # noqa: E402
from store.kafka.writer import PartitionWriter, ProducerRecord  # noqa: E402

WINDOW_BYTES = 4 << 20
RECORDS_PER_BATCH = 100


def write_segment(directory: Path, codec: str, mib: int) -> Path:
    rng = random.Random(1)
    values = [rng.randbytes(100) for _ in range(64)]
    with PartitionWriter(directory, segment_bytes=(mib + 1) << 20) as writer:
        written = 0
        while written < mib << 20:
            records = [
                ProducerRecord(
                    b"key-%d" % (i % 1000),
                    values[i % 64],
                    (("trace", b"1"),) if i % 10 == 0 else (),
                    1_700_000_000_000 + written + i,
                )
                for i in range(RECORDS_PER_BATCH)
            ]
            written += writer.append(records, compression=codec).size_bytes
    return directory / "00000000000000000000.log"


def cpu_seconds(work) -> tuple[float, int]:
    started = time.process_time()
    count = work()
    return time.process_time() - started, count


def read_and_crc(log: Path) -> int:
    fd = os.open(log, os.O_RDONLY)
    try:
        position, crc = 0, 0
        while chunk := os.pread(fd, WINDOW_BYTES, position):
            crc = crc32c(chunk, crc)
            position += len(chunk)
        return position
    finally:
        os.close(fd)


def scan(log: Path) -> int:
    return sum(1 for item in LogReader(log) if isinstance(item, RecordBatch))


def decode(log: Path) -> int:
    return sum(len(decode_records(item, log)) for item in LogReader(log) if isinstance(item, RecordBatch))


def kafka_python(log: Path) -> int | None:
    try:
        from kafka.record import MemoryRecords
    except ImportError:
        return None
    records, batches = 0, MemoryRecords(log.read_bytes())
    while (batch := batches.next_batch()) is not None:
        records += sum(1 for _ in batch)
    return records


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--codec", choices=CODEC_NAMES, default="none")
    parser.add_argument("--mib", type=int, default=128, help="segment size to write")
    parser.add_argument("--dir", type=Path, help="where to write (kept); a temporary directory otherwise")
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kafka-decode-") as temporary:
        directory = (arguments.dir or Path(temporary)) / f"bench-{arguments.codec}-0"
        log = next(directory.glob("*.log"), None) if directory.exists() else None
        log = log or write_segment(directory, arguments.codec, arguments.mib)
        size_mib = log.stat().st_size / (1 << 20)
        read_and_crc(log)  # the pages in the page cache: CPU, not the disk, is measured
        floor, _ = cpu_seconds(lambda: read_and_crc(log))
        scanned, batches = cpu_seconds(lambda: scan(log))
        decoded, records = cpu_seconds(lambda: decode(log))
        theirs, their_records = cpu_seconds(lambda: kafka_python(log))
        print(f"{arguments.codec}: {size_mib:,.0f} MiB, {batches:,} batches, {records:,} records (CPU time)")
        print(f"  read+CRC-32C floor  {size_mib / floor:8,.0f} MiB/s")
        print(f"  scan (LogReader)    {size_mib / scanned:8,.0f} MiB/s  {floor / scanned:.0%} of the floor")
        print(f"  decode_records      {records / decoded:8,.0f} records/s")
        if their_records is None:
            print("  kafka-python        unavailable: pip install '.[test]' for it")
        else:
            if their_records != records:
                print(f"kafka-python read {their_records} records, store.kafka {records}", file=sys.stderr)
                return 1
            ratio = theirs / decoded
            print(f"  kafka-python        {records / theirs:8,.0f} records/s  store.kafka {ratio:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
