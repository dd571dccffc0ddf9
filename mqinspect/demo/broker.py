"""The demo's broker process: `python -m mqinspect.demo.broker --store DIR --parent-pid PID --settings JSON`.

Like a RocketMQ broker it is the one process that owns the store: the MessageStore (with its allocation
service warming each new segment ahead of the writer), a producer thread putting messages at a steady rate,
retention keeping the CommitLog to a few segments, and the PullServer that consumers in other processes
pull from, each through the send path it asks for. It announces `ready` with the server's port once the
first message can be pulled, and a `summary` (BrokerSummary) when SIGTERM stops it.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
from pathlib import Path

from mqinspect.demo.child import child_parser, run_broker, start_child
from mqinspect.demo.report import BrokerSummary, PathServed, SegmentWarmup
from mqinspect.demo.settings import PRODUCE_WINDOW_PUTS, DemoSettings
from store.commitlog import AppendResult
from store.errors import StoreError
from store.message_store import MessageStore
from store.pull_server import PullServer, PullServerConfig
from store.retention import StoreFileKind
from store.store_sizes import save_store_sizes
from store.workload import ProduceReport, ProduceSpec, produce

log = logging.getLogger("mqinspect.demo.broker")

RETENTION_EVERY_S = 2.0
FIRST_MESSAGE_TIMEOUT_S = 20.0


class _ProducerTally:
    """What the producer thread put, over all its windows."""

    def __init__(self, segment_size: int):
        self.segment_size = segment_size
        self.messages = 0
        self.bytes = 0
        self.elapsed_s = 0.0
        self.latency_max_us: float | None = None
        self.worst_p99_us: float | None = None
        self.busy_puts = 0
        self.segments: set[int] = set()
        self.error: str | None = None

    def on_put(self, result: AppendResult) -> None:
        self.segments.add(result.physical_offset // self.segment_size)

    def add(self, report: ProduceReport) -> None:
        self.messages += report.messages
        self.bytes += report.bytes_written
        self.elapsed_s += report.elapsed_s
        self.latency_max_us = _max(self.latency_max_us, report.put_latency_max_us)
        self.worst_p99_us = _max(self.worst_p99_us, report.put_latency_p99_us)
        self.busy_puts += report.page_cache_busy_puts


def _max(current: float | None, new: float | None) -> float | None:
    if new is None:
        return current
    return new if current is None else max(current, new)


class DemoBroker:
    def __init__(self, root: Path, settings: DemoSettings):
        self.root = root
        self.settings = settings
        self.config = settings.store_config()
        self.producing = threading.Event()
        self.tally = _ProducerTally(settings.segment_size_bytes)
        self.warmups: dict[str, SegmentWarmup] = {}
        self.segments_deleted = 0
        self.problems: list[str] = []  # what went wrong while running, for the summary
        self._last_retention = time.monotonic()
        self._stopping = threading.Event()

    def start(self) -> DemoBroker:
        save_store_sizes(self.root, self.config)
        self.store = MessageStore(self.root, self.config).start()
        self.server = PullServer(self.store, PullServerConfig()).start()
        self.port = self.server.address[1]
        self._producer = threading.Thread(target=self._produce, name="DemoProducer", daemon=True)
        self._producer.start()
        self._wait_first_message()
        return self

    def _produce(self) -> None:
        settings = self.settings
        window = PRODUCE_WINDOW_PUTS * settings.batch
        spec = ProduceSpec(
            settings.topic,
            count=window,
            body_size_bytes=settings.body_size_bytes,
            tags="TagDemo",
            batch=settings.batch,
            rate_msgs_per_s=settings.rate_msgs_per_s,
        )
        try:
            while not self._stopping.is_set():
                report = produce(self.store, spec, should_stop=self._stopping.is_set, on_put=self._on_put)
                self.tally.add(report)
        except Exception as error:  # the broker goes on serving what is stored, and reports why
            log.exception("the producer stopped")
            self.tally.error = f"{type(error).__name__}: {error}"

    def _on_put(self, result: AppendResult) -> None:
        self.tally.on_put(result)
        self.producing.set()

    def _wait_first_message(self) -> None:
        """Consumers of a topic that has no consume queue yet would be told UNKNOWN_QUEUE."""
        if not self.producing.wait(FIRST_MESSAGE_TIMEOUT_S):
            raise RuntimeError(f"no message was stored within {FIRST_MESSAGE_TIMEOUT_S:g} s")
        if not self.store.wait_dispatched(self.store.commit_log.max_offset, FIRST_MESSAGE_TIMEOUT_S):
            raise RuntimeError(f"the first messages were not dispatched within {FIRST_MESSAGE_TIMEOUT_S:g} s")

    def tick(self) -> None:
        """Note newly warmed segments; every few seconds, let retention delete the expired ones."""
        for mapped_file in self.store.commit_log.mapped_file_queue.mapped_files:
            result = mapped_file.warmup
            if result is not None and mapped_file.path.name not in self.warmups:
                self.warmups[mapped_file.path.name] = SegmentWarmup(
                    mapped_file.path.name, result.mode, result.pages, result.elapsed_s, result.locked
                )
        if time.monotonic() - self._last_retention >= RETENTION_EVERY_S:
            self._last_retention = time.monotonic()
            self._apply_retention()

    def _apply_retention(self) -> None:
        """A manual clean (RocketMQ's deleteExpiredCommitLog admin command) whenever the log is over its
        size: it deletes segments older than fileReservedTime, as the hourly clean would."""
        if len(self.store.commit_log.mapped_file_queue.mapped_files) < self.settings.max_segments:
            return
        try:
            report = self.store.clean()
        except (StoreError, OSError) as error:  # the store keeps working; the log just grows
            log.warning("retention failed: %s", error)
            self.problems.append(f"retention failed: {error}")
            return
        self.segments_deleted += len(report.files(StoreFileKind.COMMITLOG))

    def stop(self) -> BrokerSummary:
        self._stopping.set()
        self._producer.join()
        self.tick()
        self.server.shutdown()
        counters = self.server.counters()
        queue = self.store.commit_log.mapped_file_queue
        segments_at_end = len(queue.mapped_files)
        min_offset, max_offset = queue.min_offset, queue.max_offset
        problems = [*self.problems, *self.store.shutdown()]
        if self.tally.error:
            problems.insert(0, f"producer stopped early: {self.tally.error}")
        tally = self.tally
        return BrokerSummary(
            pid=os.getpid(),
            port=self.port,
            topic=self.settings.topic,
            produced_messages=tally.messages,
            produced_bytes=tally.bytes,
            produce_elapsed_s=tally.elapsed_s,
            produce_bytes_per_s=tally.bytes / tally.elapsed_s if tally.elapsed_s > 0 else None,
            put_latency_max_us=tally.latency_max_us,
            put_latency_p99_us_worst_window=tally.worst_p99_us,
            page_cache_busy_puts=tally.busy_puts,
            segments_written=len(tally.segments),
            segments_deleted=self.segments_deleted,
            segments_at_end=segments_at_end,
            commitlog_min_offset=min_offset,
            commitlog_max_offset=max_offset,
            warmups=tuple(self.warmups.values()),
            served=tuple(PathServed.from_counts(path, counts) for path, counts in counters.paths.items()),
            shutdown_problems=tuple(problems),
        )


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = child_parser("mqinspect.demo.broker", __doc__)
    parser.add_argument("--store", type=Path, required=True)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    stop = start_child(args, "demo-broker")
    return run_broker(DemoBroker(args.store, args.settings).start(), stop)


if __name__ == "__main__":
    sys.exit(main())
