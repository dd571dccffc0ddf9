"""`store cq`: the entries of one ConsumeQueue (`ConsumeQueueView`)."""

from __future__ import annotations

from dataclasses import dataclass

from store.consume_queue_format import ConsumeQueueEntry, iter_entries, queue_bounds
from store.errors import StoreError
from store.inspection.log_format import vanishing_files_are_store_changes
from store.inspection.rocketmq.reading import commitlog_min_offset
from store.layout import StoreLayout


class UnknownQueue(StoreError):
    """The store has no consume queue for the topic and queue asked for."""


@dataclass(frozen=True)
class ConsumeQueueView:
    topic: str
    queue_id: int
    min_offset: int
    max_offset: int
    from_offset: int
    entries: list[ConsumeQueueEntry]
    schema: str = "mqinspect.store.cq/v1"


@vanishing_files_are_store_changes
def consume_queue_view(
    layout: StoreLayout, topic: str, queue_id: int, from_offset: int | None, count: int
) -> ConsumeQueueView:
    cq = layout.consume_queue(topic, queue_id)
    if cq is None:
        raise UnknownQueue(_unknown_queue_message(layout, topic, queue_id))
    cq.queue.require_valid()
    minimum, maximum = queue_bounds(cq.queue, commitlog_min_offset(layout))
    start = minimum if from_offset is None else from_offset
    entries = []
    for entry in iter_entries(cq.queue, start):
        if len(entries) >= count:
            break
        entries.append(entry)
    return ConsumeQueueView(topic, queue_id, minimum, maximum, start, entries)


def _unknown_queue_message(layout: StoreLayout, topic: str, queue_id: int) -> str:
    queues = [cq.queue_id for cq in layout.consume_queues if cq.topic == topic]
    if queues:
        return f"topic {topic!r} has no queue {queue_id}; its queues: {', '.join(map(str, queues))}"
    known = ", ".join(layout.topics) or "none"
    return f"no consume queue for topic {topic!r} in {layout.root}; topics: {known}"
