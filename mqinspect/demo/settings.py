"""DemoSettings: the shape of the demo's workload, and the StoreConfig the broker opens its store with."""

from __future__ import annotations

import json
from dataclasses import dataclass

from mqinspect.jsonable import to_jsonable
from store.config import MiB, StoreConfig, WarmupMode
from store.transfer import SendPath

# What a record adds to its body in the CommitLog (codec's fixed fields, topic, properties), for sizing
# only: the broker reports the bytes it really wrote.
RECORD_OVERHEAD_BYTES = 120
LOG_FORMATS = ("rocketmq", "kafka")
PRODUCE_WINDOW_PUTS = 500  # produce() keeps every put's result: the broker runs it in windows of this many


@dataclass(frozen=True)
class DemoSettings:
    """Small segments that roll every few seconds, so that warm-up, residency and retention all happen
    while one watches; consumers on the four send paths the sendpath probe tells apart."""

    segment_size_bytes: int = 64 * MiB
    max_segments: int = 8  # retention keeps the CommitLog to about this many segments
    body_size_bytes: int = 8000
    rate_msgs_per_s: float = 1500.0  # about 11.6 MiB/s: a new 64 MiB segment every 5 to 6 s
    batch: int = 8  # messages per put
    warmup: WarmupMode = WarmupMode.TOUCH  # RocketMQ's warmMappedFile
    paths: tuple[SendPath, ...] = (
        SendPath.READ_WRITE,
        SendPath.MMAP_WRITE,
        SendPath.SENDFILE,
        SendPath.SPLICE,
    )
    topic: str = "DemoTopic"
    log_format: str = "rocketmq"  # or "kafka": a Kafka log directory written and served (kafka_broker)
    pull_batch: int = 64  # messages per pull
    long_poll_ms: int = 500
    stop_grace_s: float = 8.0  # SIGTERM, then SIGKILL after this long
    ready_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if self.segment_size_bytes < 1 * MiB or self.segment_size_bytes % 4096:
            raise ValueError("segments must be whole pages and at least 1 MiB")
        if self.max_segments < 3:
            raise ValueError("keep at least 3 segments: the one written, the one warmed ahead and one read")
        if self.rate_msgs_per_s <= 0 or self.batch <= 0 or self.body_size_bytes <= 0:
            raise ValueError("rate, batch and body size must be positive")
        if not self.paths:
            raise ValueError("at least one consumer send path")
        if self.log_format not in LOG_FORMATS:
            raise ValueError(f"log format {self.log_format!r}: one of {', '.join(LOG_FORMATS)}")

    @property
    def produce_bytes_per_s(self) -> float:
        return self.rate_msgs_per_s * (self.body_size_bytes + len(self.topic) + RECORD_OVERHEAD_BYTES)

    @property
    def segment_fill_s(self) -> float:
        """How long the producer takes to fill one segment at its rate."""
        return self.segment_size_bytes / self.produce_bytes_per_s

    @property
    def file_reserved_hours(self) -> float:
        """RocketMQ's fileReservedTime, chosen so that a segment expires once `max_segments - 2` newer ones
        were written: with the one being written and the one warmed ahead, about `max_segments` remain."""
        return (self.max_segments - 2) * self.segment_fill_s / 3600

    def store_config(self) -> StoreConfig:
        return StoreConfig(
            mapped_file_size_commitlog=self.segment_size_bytes,
            consume_queue_entries_per_file=100_000,  # 2 MB consume queue files
            max_hash_slot_num=50_000,  # 4.2 MB index files instead of RocketMQ's 420 MB
            max_index_num=200_000,
            warmup=self.warmup,
            file_reserved_hours=self.file_reserved_hours,
        )


def settings_to_json(settings: DemoSettings) -> str:
    """The settings for a child's command line."""
    return json.dumps(to_jsonable(settings), separators=(",", ":"))


def settings_from_json(text: str) -> DemoSettings:
    data = json.loads(text)
    data["paths"] = tuple(SendPath(path) for path in data["paths"])
    data["warmup"] = WarmupMode(data["warmup"])
    return DemoSettings(**data)
