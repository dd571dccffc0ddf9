"""The demo's Kafka broker process: `python -m mqinspect.demo.kafka_broker --log-dir DIR --parent-pid PID
--settings JSON`.

Like a Kafka broker it is the one process that owns the log directory: a producer thread appends record
batches at a steady rate to partition `<topic>-0` with store.kafka.writer (segments rolled by size, an
`.index` entry every 4,096 bytes, a `.timeindex`, producer snapshots and the broker's checkpoints written
every tick), retention deletes the oldest segments beyond the settings' count (renamed `.deleted`, then
removed), and a fetch server sends consumers in other processes whole batches from a segment by the send
path each asks for (Kafka's own is sendfile: FileChannel.transferTo). Their commits are appended to
`__consumer_offsets-0` as the group coordinator's OffsetCommit records.

The fetch protocol, one request line of JSON per exchange on a loopback connection:
  {"fetch": OFFSET, "max_bytes": N, "path": "sendfile"} -> FETCH_HEADER (length, log start offset), then
      `length` bytes: whole batches from the one holding OFFSET (0: nothing new within the long poll;
      -1: OFFSET is below the log start, which the header gives)
  {"commit": OFFSET, "group": G} -> FETCH_HEADER (0, OFFSET)
  {"committed": G}               -> FETCH_HEADER (0, the group's committed offset, or -1)
Where a batch is, the broker knows from what it wrote (as Kafka keeps its offset index in memory).
"""

from __future__ import annotations

import argparse
import bisect
import json
import logging
import os
import socket
import struct
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from mqinspect.demo.child import child_parser, run_broker, start_child
from mqinspect.demo.report import BrokerSummary, PathServed
from mqinspect.demo.settings import PRODUCE_WINDOW_PUTS, DemoSettings
from store.errors import StoreError
from store.kafka.writer import LogDirWriter, ProducerRecord, WrittenBatch, offset_commit_record
from store.transfer import Sender, SendPath, TransferOptions

log = logging.getLogger("mqinspect.demo.kafka_broker")

FETCH_HEADER = struct.Struct(">iq")  # length of what follows (-1: out of range), log start offset
OFFSETS_TOPIC = "__consumer_offsets"
POLL_S = 0.01
REQUEST_BYTES = 4096
SEND_TIMEOUT_S = 10.0


@dataclass
class _Segment:
    """Where each batch a segment holds starts: what the fetch server looks up."""

    base_offset: int
    path: Path
    batch_offsets: list[int] = field(default_factory=list)  # each batch's base offset
    batch_ends: list[int] = field(default_factory=list)  # the byte after each batch


@dataclass
class _Served:
    requests: int = 0
    messages: int = 0  # records
    bytes_sent: int = 0
    transfer_calls: int = 0
    send_s: float = 0.0
    syscalls: Counter = field(default_factory=Counter)


class KafkaDemoBroker:
    def __init__(self, log_dir: Path, settings: DemoSettings):
        self.settings = settings
        self.log_dir = log_dir
        self.writer = LogDirWriter(log_dir, segment_bytes=settings.segment_size_bytes)
        self.partition = self.writer.partition(settings.topic, 0)
        self.offsets = self.writer.partition(OFFSETS_TOPIC, 0)
        self.segments: list[_Segment] = []
        self.committed: dict[str, int] = {}
        self.served: dict[SendPath, _Served] = {}
        self.lock = threading.Lock()  # the writer and the segment list, between producer, ticks and server
        self.produced = self.produced_bytes = self.segments_deleted = 0
        self.latencies_us: list[float] = []
        self.worst_p99_us: float | None = None
        self.latency_max_us: float | None = None
        self.produce_started = self.produce_ended = 0.0
        self.error: str | None = None
        self._stopping = threading.Event()
        self._first = threading.Event()

    # ---- producing ---------------------------------------------------------------------------------

    def start(self) -> KafkaDemoBroker:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, name="KafkaFetch", daemon=True).start()
        self._producer = threading.Thread(target=self._produce, name="KafkaProducer", daemon=True)
        self._producer.start()
        if not self._first.wait(20):
            raise RuntimeError("no batch was written within 20 s")
        return self

    def _records(self, number: int, values: list[bytes]) -> list[ProducerRecord]:
        now = int(time.time() * 1000)
        return [
            ProducerRecord(b"key-%d" % ((number + i) % 1000), values[(number + i) % len(values)], (), now)
            for i in range(self.settings.batch)
        ]

    def _produce(self) -> None:
        settings = self.settings
        values = [os.urandom(settings.body_size_bytes) for _ in range(16)]
        interval = settings.batch / settings.rate_msgs_per_s
        self.produce_started = next_at = time.monotonic()
        try:
            while not self._stopping.is_set():
                records = self._records(self.produced, values)
                started = time.perf_counter()
                with self.lock:
                    written = self.partition.append(records)
                    self._note(written)
                self._latency((time.perf_counter() - started) * 1e6)
                self.produced += len(records)
                self.produced_bytes += written.size_bytes
                self._first.set()
                next_at += interval
                self._stopping.wait(max(0.0, next_at - time.monotonic()))
        except Exception as error:  # the broker goes on serving what is written, and reports why
            log.exception("the producer stopped")
            self.error = f"{type(error).__name__}: {error}"
        self.produce_ended = time.monotonic()

    def _note(self, written: WrittenBatch) -> None:
        if not self.segments or self.segments[-1].path != written.segment:
            self.segments.append(_Segment(written.base_offset, written.segment))
        segment = self.segments[-1]
        segment.batch_offsets.append(written.base_offset)
        segment.batch_ends.append(written.position + written.size_bytes)

    def _latency(self, micros: float) -> None:
        self.latency_max_us = max(self.latency_max_us or 0.0, micros)
        self.latencies_us.append(micros)
        if len(self.latencies_us) >= PRODUCE_WINDOW_PUTS:
            p99 = sorted(self.latencies_us)[int(len(self.latencies_us) * 0.99)]
            self.worst_p99_us = max(self.worst_p99_us or 0.0, p99)
            self.latencies_us.clear()

    def tick(self) -> None:
        """Checkpoints and snapshots, as the broker writes them periodically; retention."""
        with self.lock:
            self._apply_retention()
            self.partition.flush()
            self.offsets.flush()
            self.writer.write_checkpoints()

    def _apply_retention(self) -> None:
        """Delete the oldest segments beyond max_segments (the caller holds the lock)."""
        while len(self.partition.segments) > self.settings.max_segments:
            self.partition.delete_oldest_segment()
            self.segments.pop(0)
            self.segments_deleted += 1

    # ---- serving -----------------------------------------------------------------------------------

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                connection, _ = self.server.accept()
            except OSError:
                return  # closed by stop()
            threading.Thread(target=self._serve, args=(connection,), name="KafkaConn", daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        """One consumer's connection until it closes; a consumer that goes away mid-send, or sends what is
        not a request, ends its connection only (logged), never the broker."""
        options = TransferOptions(send_timeout_s=SEND_TIMEOUT_S)
        try:
            with connection, Sender(connection, options) as sender, connection.makefile("rb") as requests:
                for line in requests:
                    self._answer(sender, json.loads(line))
        except (OSError, StoreError, ValueError, KeyError, TypeError) as error:
            log.warning("a consumer connection ended: %s", error)

    def _answer(self, sender: Sender, request: dict) -> None:
        if "fetch" in request:
            self._fetch(sender, request)
        elif "commit" in request:
            self._commit(request["group"], int(request["commit"]))
            sender.send_bytes(FETCH_HEADER.pack(0, int(request["commit"])))
        else:
            sender.send_bytes(FETCH_HEADER.pack(0, self.committed.get(request["committed"], -1)))

    def _fetch(self, sender: Sender, request: dict) -> None:
        offset, path = int(request["fetch"]), SendPath(request.get("path", SendPath.SENDFILE))
        deadline = time.monotonic() + self.settings.long_poll_ms / 1000
        while offset >= self.partition.next_offset and time.monotonic() < deadline:
            time.sleep(POLL_S)
        with self.lock:
            found = self._locate(offset, int(request.get("max_bytes", 1 << 20)))
            start_offset = self.partition.log_start_offset
        if found is None:
            length = -1 if offset < start_offset else 0
            sender.send_bytes(FETCH_HEADER.pack(length, start_offset))
            return
        segment_path, position, end, records = found
        served = self.served.setdefault(path, _Served())
        try:
            fd = os.open(segment_path, os.O_RDONLY)
        except FileNotFoundError:  # deleted by retention since: out of range now
            sender.send_bytes(FETCH_HEADER.pack(-1, self.partition.log_start_offset))
            return
        try:
            sender.send_bytes(FETCH_HEADER.pack(end - position, start_offset), more=True)
            result = sender.send(path, fd, position, end - position)
        finally:
            os.close(fd)
        served.requests += 1
        served.messages += records
        served.bytes_sent += result.bytes_sent
        served.transfer_calls += 1
        served.send_s += result.elapsed_s
        served.syscalls.update(result.syscalls)

    def _locate(self, offset: int, max_bytes: int) -> tuple[Path, int, int, int] | None:
        """The segment, start and end positions of the whole batches from the one holding `offset`, up to
        `max_bytes` (one batch at least), and the records they hold; None when none holds it."""
        if not self.segments or not self.partition.log_start_offset <= offset < self.partition.next_offset:
            return None
        number = bisect.bisect_right([segment.base_offset for segment in self.segments], offset) - 1
        segment = self.segments[max(number, 0)]
        first = bisect.bisect_right(segment.batch_offsets, offset) - 1
        if number < 0 or first < 0:
            return None
        start = segment.batch_ends[first - 1] if first else 0
        last = max(first, bisect.bisect_right(segment.batch_ends, start + max_bytes) - 1)
        return segment.path, start, segment.batch_ends[last], self.settings.batch * (last - first + 1)

    def _commit(self, group: str, offset: int) -> None:
        record = offset_commit_record(group, self.settings.topic, 0, offset, int(time.time() * 1000))
        with self.lock:
            self.offsets.append([record])
        self.committed[group] = offset

    # ---- stopping ----------------------------------------------------------------------------------

    def stop(self) -> BrokerSummary:
        self._stopping.set()
        self._producer.join()
        self.server.close()
        problems = [f"producer stopped early: {self.error}"] if self.error else []
        with self.lock:
            # A last retention check: on a loaded machine the producer can roll several segments between
            # two ticks, and the log dir left behind keeps max_segments.
            self._apply_retention()
            start, end = self.partition.log_start_offset, self.partition.next_offset
            segments_at_end = len(self.partition.segments)
            try:
                self.writer.close()
            except OSError as error:
                problems.append(f"closing the log dir: {error}")
        elapsed = max(self.produce_ended - self.produce_started, 0.0)
        return BrokerSummary(
            pid=os.getpid(),
            port=self.port,
            topic=self.settings.topic,
            produced_messages=self.produced,
            produced_bytes=self.produced_bytes,
            produce_elapsed_s=elapsed,
            produce_bytes_per_s=self.produced_bytes / elapsed if elapsed > 0 else None,
            put_latency_max_us=self.latency_max_us,
            put_latency_p99_us_worst_window=self.worst_p99_us,
            page_cache_busy_puts=None,  # a RocketMQ broker's; a Kafka broker has no such refusal
            segments_written=segments_at_end + self.segments_deleted,
            segments_deleted=self.segments_deleted,
            segments_at_end=segments_at_end,
            commitlog_min_offset=start,
            commitlog_max_offset=end,
            warmups=(),  # Kafka does not warm its segments
            served=tuple(PathServed.from_counts(path, counts) for path, counts in self.served.items()),
            shutdown_problems=tuple(problems),
        )


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = child_parser("mqinspect.demo.kafka_broker", __doc__)
    parser.add_argument("--log-dir", type=Path, required=True)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    stop = start_child(args, "demo-broker")  # the same role as the RocketMQ demo's
    try:
        broker = KafkaDemoBroker(args.log_dir, args.settings).start()
    except (OSError, StoreError, RuntimeError) as error:
        log.error("the Kafka broker could not start: %s", error)
        return 1
    return run_broker(broker, stop)


if __name__ == "__main__":
    sys.exit(main())
