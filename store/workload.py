"""Test traffic on a MessageStore: what `mqinspect store produce/consume` and the demo's producer run.

Each returns a report of what it measured."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from store import codec
from store.commitlog import AppendResult, PutStatus
from store.errors import StoreError
from store.message_store import GetStatus, MessageStore

PAGE_CACHE_BUSY_MS = 1000  # osPageCacheBusyTimeOutMills: a put that held the lock longer is "broker busy"


@dataclass(frozen=True)
class ProduceSpec:
    topic: str
    queue_id: int = 0
    count: int = 1000
    body_size_bytes: int = 1024
    keys: str | None = None  # "{n}" becomes the message number
    tags: str | None = None
    batch: int = 1
    rate_msgs_per_s: float | None = None


@dataclass(frozen=True)
class ProduceReport:
    topic: str
    queue_id: int
    messages: int
    bytes_written: int
    elapsed_s: float
    msgs_per_s: float
    mb_per_s: float
    first_physical_offset: int | None
    last_physical_offset: int | None
    first_queue_offset: int | None
    last_queue_offset: int | None
    put_latency_p50_us: float | None
    put_latency_p99_us: float | None
    put_latency_max_us: float | None
    max_in_lock_ms: float | None
    page_cache_busy_puts: int  # puts that held the CommitLog lock > 1 s: "[PC_SYNCHRONIZED]broker busy"
    flush_timeouts: int  # SYNC flush: puts stored but not durable within syncFlushTimeout
    interrupted: bool


class ProduceStopped(StoreError):
    """A put failed (a full disk, say): `report` holds what was acknowledged before it, `__cause__` the
    failure. Everything in the report was stored; nothing after it was."""

    def __init__(self, report: ProduceReport, failure: BaseException):
        super().__init__(f"stopped after {report.messages} acknowledged messages: {failure}")
        self.report = report
        self.failure = failure


def message_body(topic: str, number: int, size: int) -> bytes:
    """A recognisable body: "<topic>-<n>-" then a repeating pattern, `size` bytes long."""
    head = f"{topic}-{number}-".encode()
    pattern = b"0123456789abcdef"
    filler = pattern * (max(0, size - len(head)) // len(pattern) + 1)
    return (head + filler)[:size]


def build_message(spec: ProduceSpec, number: int) -> codec.Message:
    properties = {}
    if spec.keys:
        properties[codec.PROPERTY_KEYS] = spec.keys.replace("{n}", str(number))
    if spec.tags:
        properties[codec.PROPERTY_TAGS] = spec.tags.replace("{n}", str(number))
    return codec.Message(
        spec.topic,
        body=message_body(spec.topic, number, spec.body_size_bytes),
        queue_id=spec.queue_id,
        properties=properties,
        born_timestamp_ms=time.time_ns() // 1_000_000,
    )


def produce(
    store: MessageStore,
    spec: ProduceSpec,
    *,
    should_stop: Callable[[], bool] = lambda: False,
    on_put: Callable[[AppendResult], None] | None = None,
) -> ProduceReport:
    """Put `spec.count` messages (in batches of `spec.batch`), paced to `spec.rate_msgs_per_s` if set.

    Raises ProduceStopped, with the report of the puts acknowledged so far, when a put fails."""
    results: list[AppendResult] = []
    latencies_us: list[float] = []
    started = time.monotonic()
    number, interrupted = 0, False
    try:
        while number < spec.count and not (interrupted := should_stop()):
            size = min(spec.batch, spec.count - number)
            batch = [build_message(spec, number + i) for i in range(size)]
            _pace(spec.rate_msgs_per_s, number, started)
            put_started = time.perf_counter()
            result = store.put_messages(batch)
            latencies_us.append((time.perf_counter() - put_started) * 1e6)
            results.append(result)
            if on_put is not None:
                on_put(result)
            number += size
    except KeyboardInterrupt:
        interrupted = True
    except (StoreError, OSError) as failure:
        report = _produce_report(spec, results, latencies_us, time.monotonic() - started, interrupted)
        raise ProduceStopped(report, failure) from failure
    return _produce_report(spec, results, latencies_us, time.monotonic() - started, interrupted)


def _pace(rate: float | None, sent: int, started: float) -> None:
    if rate:
        delay = started + sent / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)


def _produce_report(
    spec: ProduceSpec,
    results: list[AppendResult],
    latencies_us: list[float],
    elapsed_s: float,
    interrupted: bool,
) -> ProduceReport:
    messages = sum(r.message_count for r in results)
    written = sum(r.wrote_bytes for r in results)
    ordered = sorted(latencies_us)
    return ProduceReport(
        topic=spec.topic,
        queue_id=spec.queue_id,
        messages=messages,
        bytes_written=written,
        elapsed_s=elapsed_s,
        msgs_per_s=messages / elapsed_s if elapsed_s > 0 else 0.0,
        mb_per_s=written / elapsed_s / 1e6 if elapsed_s > 0 else 0.0,
        first_physical_offset=results[0].physical_offset if results else None,
        last_physical_offset=results[-1].physical_offset if results else None,
        first_queue_offset=results[0].queue_offset if results else None,
        last_queue_offset=results[-1].queue_offset + results[-1].message_count - 1 if results else None,
        put_latency_p50_us=_percentile(ordered, 0.50),
        put_latency_p99_us=_percentile(ordered, 0.99),
        put_latency_max_us=ordered[-1] if ordered else None,
        max_in_lock_ms=max((r.in_lock_ms for r in results), default=None),
        page_cache_busy_puts=sum(r.in_lock_ms > PAGE_CACHE_BUSY_MS for r in results),
        flush_timeouts=sum(r.status is PutStatus.FLUSH_DISK_TIMEOUT for r in results),
        interrupted=interrupted,
    )


def _percentile(ordered: list[float], fraction: float) -> float | None:
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


@dataclass(frozen=True)
class ConsumedMessage:
    queue_offset: int
    physical_offset: int
    size_bytes: int
    store_timestamp_ms: int
    keys: str | None
    tags: str | None
    body_preview: str  # the first bytes of the body, decoded leniently for display


@dataclass(frozen=True)
class ConsumeReport:
    topic: str
    queue_id: int
    group: str | None
    from_offset: int
    next_offset: int
    min_offset: int
    max_offset: int
    status: GetStatus
    committed: bool  # the group's offset was committed and persisted
    messages: list[ConsumedMessage] = field(default_factory=list)


PREVIEW_BYTES = 64


def consume(
    store: MessageStore, topic: str, queue_id: int, *, group: str | None, from_offset: int | None, count: int
) -> ConsumeReport:
    """Read up to `count` messages; with a group, start at its committed offset and commit where we stop."""
    start = from_offset
    if start is None and group is not None:
        start = store.consumer_offsets.get(topic, group, queue_id)
    queue = store.consume_queues.find(topic, queue_id)
    if start is None:
        start = queue.min_offset_in_queue if queue is not None else 0
    consumed, offset, result = [], start, None
    while len(consumed) < count:
        result = store.get_messages(topic, queue_id, offset, min(32, count - len(consumed)))
        if result.status is not GetStatus.FOUND:
            break
        consumed.extend(_consumed(found) for found in result.messages)
        offset = result.next_begin_offset
    status = result.status if result is not None else GetStatus.NO_MESSAGE_IN_QUEUE
    if result is not None and result.status is not GetStatus.FOUND:
        offset = result.next_begin_offset
    if group is not None:
        store.commit_consumer_offset(group, topic, queue_id, offset)
        store.persist_consumer_offsets()
    minimum = queue.min_offset_in_queue if queue else 0
    maximum = queue.max_offset_in_queue if queue else 0
    return ConsumeReport(
        topic, queue_id, group, start, offset, minimum, maximum, status, group is not None, consumed
    )


def _consumed(found) -> ConsumedMessage:
    record = codec.decode_record(found.data, base_offset=found.physical_offset)
    preview = bytes(record.body[:PREVIEW_BYTES]).decode("utf-8", errors="replace")
    return ConsumedMessage(
        found.queue_offset,
        found.physical_offset,
        found.size_bytes,
        record.store_timestamp_ms,
        record.keys,
        record.tags,
        preview,
    )
