"""The store and consumer readers of a dashboard, for the format of the store's files: a RocketMQ store's
(sampling.store_reader, sampling.consumers) or a Kafka log directory's (sampling.kafka_store,
sampling.kafka_consumers), which produce the same snapshots. The sampler opens its readers here, and places
the consumers' positions on the heat strips here, so neither format's reader knows the other's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mqinspect.sampling import consumers
from mqinspect.sampling.kafka_consumers import KafkaConsumerReader, kafka_marks
from mqinspect.sampling.kafka_store import LOG_FORMAT as KAFKA
from mqinspect.sampling.kafka_store import KafkaStoreReader
from mqinspect.sampling.snapshot import ConsumersView, StoreView
from mqinspect.sampling.store_reader import StoreReader
from store.inspection.formats import detect_format


def open_store_reader(root: Path, **options: Any) -> StoreReader:
    """The reader of the store at `root` in its format; NotAStore, naming what each format looked for, if
    it is neither."""
    if detect_format(Path(root)).name == KAFKA:
        return KafkaStoreReader(root, **options)
    return StoreReader(root, **options)


def open_consumer_reader(root: Path) -> consumers.ConsumerReader | KafkaConsumerReader:
    """The reader of the store's consumer groups: RocketMQ's config/consumerOffset.json, or a Kafka log
    directory's __consumer_offsets."""
    if detect_format(Path(root)).name == KAFKA:
        return KafkaConsumerReader(root)
    return consumers.ConsumerReader()


def mark_positions(store: StoreView, view: ConsumersView) -> StoreView:
    """The store view with the groups' committed and the connected consumers' read positions on the
    segments that hold them (a Kafka partition's .log segments, by name)."""
    if store.log_format == KAFKA:
        return consumers.with_marks(store, *kafka_marks(store, view))
    return consumers.mark_positions(store, view)
