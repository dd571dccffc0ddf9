"""`mqinspect cache DIR -r` on a Kafka log directory: every segment and index file of every partition is a row
named by its path (the partition directory in it, as a RocketMQ store's rows carry commitlog/ and
consumequeue/TOPIC/ID/), and its cached pages equal fincore's."""

from __future__ import annotations

import json
from pathlib import Path

from support import fadvise_out, fincore_pages, read_pages, run_mqinspect

from store.kafka.writer import LogDirWriter, ProducerRecord


def test_cache_recursive_names_each_partitions_files_and_agrees_with_fincore(tmp_path: Path):
    root = tmp_path / "kafka-logs"
    with LogDirWriter(root, segment_bytes=32 << 10) as log_dir:
        for number in (0, 1):
            partition = log_dir.partition("orders", number)
            for _ in range(40):
                partition.append([ProducerRecord(b"k", b"v" * 1000)])
    segments = sorted(root.glob("orders-*/*.log"))
    assert len(segments) >= 4  # each partition rolled
    for segment in segments:
        fadvise_out(segment)
    read_pages(segments[1], 1, 2)
    result = run_mqinspect("cache", root, "-r", "--format", "json")
    assert result.exit_code == 0, result.output
    rows = {row["path"]: row for row in json.loads(result.stdout)["files"]}
    for path in sorted(root.glob("orders-*/*")):
        if path.suffix in (".log", ".index", ".timeindex"):
            row = rows[str(path)]
            assert f"/{path.parent.name}/" in row["path"]  # labelled with its topic-partition
            assert row["cached_pages"] == fincore_pages(path), path
    assert rows[str(segments[1])]["cached_pages"] == 2
    table = run_mqinspect("cache", root, "-r", columns=200)
    assert f"orders-1/{segments[-1].name}" in table.stdout
