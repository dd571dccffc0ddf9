"""`store dump` for Kafka: the batches of a segment, a partition or a whole log dir, one event each, and their
records with `deep`, as kafka-dump-log prints them, handed over while the logs are read (`batches`).

A dump reads no more than it needs: it starts each partition at the segment holding `from_offset` (its
`.index` gives the position to start reading at) or at the first record at or after `from_time` (through the
`.timeindex`, then the `.index`), reads no byte of the logs past `max_bytes` in all, and stops after
`count` batches, its reads starting at a page and doubling: under four times what those batches take.
Control records are named (COMMIT, ABORT, LEADER_CHANGE, ...), and `__cluster_metadata`
records by their type. Values are text (printable UTF-8, else hex) or hex throughout (`values="hex"`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from store.inspection.kafka.reading import first_offset, max_timestamp
from store.inspection.kafka.target import file_label, kafka_target, segments_to_read
from store.inspection.log_format import vanishing_files_are_store_changes
from store.kafka.batches import LogEntry, LogReader, RecordBatch
from store.kafka.cluster_metadata import decode_metadata_record
from store.kafka.files import read_kafka_file
from store.kafka.findings import Finding, KafkaDecodeError
from store.kafka.indexes import offset_for_time, position_for_offset
from store.kafka.layout import SegmentFiles, parse_partition_dir
from store.kafka.records import Record, decode_control_record, decode_records

SCHEMA = "mqinspect.store.kafka.dump/v1"
METADATA_TOPIC = "__cluster_metadata"
EVENTS_PER_RUN = 512  # events handed over at once: a renderer writes and flushes each run
FIRST_WINDOW_BYTES = 4096  # a segment's first read, doubling to the reader's window: --count 1 reads a page


@dataclass(frozen=True, kw_only=True)
class KafkaDumpStart:
    schema: str = SCHEMA
    format: str = "kafka"
    source: Path
    from_offset: int | None
    from_time_ms: int | None
    deep: bool
    values: str  # text or hex
    max_bytes: int | None
    count_limit: int | None  # batches


@dataclass(frozen=True, kw_only=True)
class KafkaDumpFinish:
    batch_count: int
    record_count: int
    log_bytes_read: int  # what pread returned of the .log files
    stopped: str  # end (every log read to its end), budget (max_bytes), count, finding
    next_offset: int | None  # where to go on (--from-offset) when stopped by the budget or the count
    finding_count: int


@dataclass(frozen=True, slots=True)
class SegmentEvent:
    kind: str  # "segment"
    path: Path
    label: str
    base_offset: int
    start_position: int  # where reading starts (from the .index, for --from-offset/--from-time)


# Batch and record events are not frozen: a frozen dataclass's __init__ sets each field through
# object.__setattr__, 1.3 us more per record of 15 fields, as much as decoding the record.
@dataclass(slots=True)
class BatchEvent:
    kind: str  # "batch"
    segment: str
    position: int
    base_offset: int
    last_offset: int
    count: int  # records the header announces (1 for a legacy message; a wrapper's are inside it)
    base_sequence: int
    last_sequence: int
    producer_id: int
    producer_epoch: int
    partition_leader_epoch: int
    is_transactional: bool
    is_control: bool
    delete_horizon_ms: int | None
    timestamp_type: str | None
    max_timestamp_ms: int
    size_bytes: int
    magic: int
    compression: str
    crc: int
    crc_valid: bool


@dataclass(slots=True)
class RecordEvent:
    kind: str  # "record"
    offset: int
    timestamp_ms: int
    key_size_bytes: int  # -1: null
    value_size_bytes: int
    sequence: int
    headers: tuple[tuple[str, str | None], ...]  # values encoded as the record values are
    key: str | None
    value: str | None
    encoding: str  # of key, value and header values: utf8 or hex (each is hex when not UTF-8 with "text")
    control_type: str | None = None  # COMMIT, ABORT, LEADER_CHANGE, ... for a control batch's record
    coordinator_epoch: int | None = None
    leader_id: int | None = None
    voters: tuple[int, ...] = ()
    metadata_type: str | None = None  # a __cluster_metadata record's type (TopicRecord, ...)


@dataclass(frozen=True, slots=True)
class FindingEvent:
    kind: str  # "finding"
    finding: str  # store.kafka.findings.FindingKind
    path: Path
    position: int
    message: str


DumpEvent = SegmentEvent | BatchEvent | RecordEvent | FindingEvent


class KafkaDumpStream:
    """The dump as it is read: `start` before anything, `batches()` the events a run at a time, then
    `finish` (None until the walk ends)."""

    def __init__(
        self,
        target: Path,
        *,
        from_offset: int | None = None,
        from_time_ms: int | None = None,
        deep: bool = False,
        values: str = "text",
        max_bytes: int | None = None,
        count: int | None = None,
    ):
        self.target = kafka_target(Path(target))
        self.start = KafkaDumpStart(
            source=self.target.path,
            from_offset=from_offset,
            from_time_ms=from_time_ms,
            deep=deep,
            values=values,
            max_bytes=max_bytes,
            count_limit=count,
        )
        self.finish: KafkaDumpFinish | None = None
        self._hex = values == "hex"
        self._batches = self._records = self._bytes = self._findings = 0
        self._next_offset: int | None = None
        self._reader: LogReader | None = None

    def batches(self) -> Iterator[list[DumpEvent]]:
        events = self._events()
        next_events = vanishing_files_are_store_changes(events.__next__)  # a segment deleted while dumped
        run: list[DumpEvent] = []
        stopped = "end"
        for events_read in iter(next_events, None):
            if isinstance(events_read, str):
                stopped = events_read
                break
            run += events_read
            if len(run) >= EVENTS_PER_RUN:
                yield run
                run = []
        if run:
            yield run
        self.finish = KafkaDumpFinish(
            batch_count=self._batches,
            record_count=self._records,
            log_bytes_read=self._bytes,
            stopped=stopped,
            next_offset=self._next_offset if stopped in ("budget", "count") else None,
            finding_count=self._findings,
        )

    def _events(self) -> Iterator[list[DumpEvent] | str]:
        """Every event, a batch's at a time (and a segment's start, a finding alone); a string (why) when
        the dump stops before the end of the logs. Lists, not single events: each level of generators a
        record passes through costs as much as building its event."""
        for directory in self.target.partitions:
            name = parse_partition_dir(directory.name)
            metadata = name is not None and name.topic == METADATA_TOPIC
            for segment, start in self._segments(directory):
                stop = yield from self._segment_events(segment, start, metadata)
                if stop:
                    yield stop
                    return

    def _segments(self, directory: Path) -> Iterator[tuple[SegmentFiles, int]]:
        """The segments to read and where in each to start: from the one holding the first wanted batch."""
        segments = [
            segment for segment in segments_to_read(directory, self.target.segment) if segment.log is not None
        ]
        first = 0
        offset = self.start.from_offset
        if self.start.from_time_ms is not None:
            first = _first_segment_by_time(segments, self.start.from_time_ms)
            if first < len(segments):
                offset = max(offset or 0, _offset_for_time(segments[first], self.start.from_time_ms))
        if offset is not None:
            while first + 1 < len(segments) and segments[first + 1].base_offset <= offset:
                first += 1
        for number in range(first, len(segments)):
            start = _position_for_offset(segments[number], offset) if number == first and offset else 0
            yield segments[number], start

    @property
    def log_bytes_read(self) -> int:
        """What pread returned of the .log files so far."""
        return self._bytes + (self._reader.bytes_read if self._reader is not None else 0)

    def _segment_events(self, segment: SegmentFiles, start: int, metadata: bool):
        label = file_label(segment.log)
        yield [SegmentEvent("segment", segment.log, label, segment.base_offset, start)]
        budget = None if self.start.max_bytes is None else self.start.max_bytes - self._bytes
        reader = self._reader = LogReader(
            segment.log, start=start, max_bytes=budget, first_window_bytes=FIRST_WINDOW_BYTES
        )
        for item in reader:
            if isinstance(item, Finding):
                self._findings += 1
                yield [FindingEvent("finding", item.kind, item.path, item.position, item.message)]
                continue
            if not self._wanted(item):
                continue
            if self.start.count_limit is not None and self._batches >= self.start.count_limit:
                self._bytes += reader.bytes_read
                self._reader = None
                self._next_offset = first_offset(item)
                return "count"
            self._batches += 1
            self._next_offset = item.next_offset
            events: list[DumpEvent] = [_batch_event(item, label)]
            if self.start.deep:
                self._add_record_events(item, segment.log, metadata, events)
            yield events
        self._bytes += reader.bytes_read
        self._reader = None
        if reader.stopped == "budget":
            return "budget"
        if reader.stopped == "finding":
            return "finding"
        return None

    def _wanted(self, entry: LogEntry) -> bool:
        if self.start.from_offset is not None and entry.last_offset < self.start.from_offset:
            return False
        return self.start.from_time_ms is None or max_timestamp(entry) >= self.start.from_time_ms

    def _add_record_events(self, entry: LogEntry, path: Path, metadata: bool, events: list) -> None:
        """The batch's records appended to `events`, from the decoder's columns (a Record object only for a
        control or metadata record). A plain batch whose keys and values are all text takes one pass
        with their text made a column at a time (`_column_texts`); any other goes record by record."""
        decoded = decode_records(entry, path)
        control = isinstance(entry, RecordBatch) and entry.is_control
        from_offset = self.start.from_offset if self.start.from_offset is not None else -1
        key_texts = value_texts = None
        if not (self._hex or control or metadata or (decoded.offsets and decoded.offsets[0] < from_offset)):
            key_texts = _column_texts(decoded.keys)
            value_texts = _column_texts(decoded.values) if key_texts is not None else None
        if value_texts is None or not self._add_text_records(decoded, key_texts, value_texts, events):
            self._add_records_one_by_one(entry, decoded, path, control or metadata, from_offset, events)
        for finding in decoded.findings:
            self._findings += 1
            events.append(
                FindingEvent("finding", finding.kind, finding.path, finding.position, finding.message)
            )

    def _add_text_records(self, decoded, key_texts: list, value_texts: list, events: list) -> bool:
        """A batch whose keys and values are text: its records' events in one comprehension. False (and
        nothing added) when a header value is not text: that record's key and value are then hex too."""
        offsets, base_offset, base_sequence = decoded.offsets, decoded.base_offset, decoded.base_sequence
        if base_sequence == -1:
            sequences = [-1] * len(offsets)
        else:
            sequences = [(base_sequence + offset - base_offset) % _SEQUENCE_WRAP for offset in offsets]
        try:
            events += [
                RecordEvent(
                    "record",
                    offset,
                    timestamp,
                    -1 if key is None else len(key),
                    -1 if value is None else len(value),
                    sequence,
                    _header_texts(headers) if headers else (),
                    key_text,
                    value_text,
                    "utf8",
                )
                for offset, timestamp, key, value, headers, key_text, value_text, sequence in zip(
                    offsets, decoded.timestamps, decoded.keys, decoded.values, decoded.headers, key_texts,
                    value_texts, sequences, strict=True,
                )
            ]  # fmt: skip
        except _NotText:
            return False
        self._records += len(offsets)
        return True

    def _add_records_one_by_one(
        self, entry: LogEntry, decoded, path: Path, special: bool, from_offset: int, events: list
    ) -> None:
        columns = zip(
            decoded.offsets, decoded.timestamps, decoded.keys, decoded.values, decoded.headers, strict=True
        )
        records = decoded.records if special else ()
        control = isinstance(entry, RecordBatch) and entry.is_control
        for index, (offset, timestamp, key, value, headers) in enumerate(columns):
            if offset < from_offset:
                continue
            self._records += 1
            try:
                extra = self._control_or_metadata(records[index], control) if records else {}
            except KafkaDecodeError as error:
                self._findings += 1
                events.append(
                    FindingEvent("finding", error.kind, path, entry.position, f"offset {offset}: {error}")
                )
                continue
            texts = None if self._hex else _texts(key, value, headers)
            if texts is None:
                encoding, key_text, value_text = "hex", _hex(key), _hex(value)
                header_texts = tuple([(name, _hex(data)) for name, data in headers]) if headers else ()
            else:
                encoding, (key_text, value_text, header_texts) = "utf8", texts
            sequence = decoded.sequence(index) if decoded.base_sequence != -1 else -1
            events.append(
                RecordEvent(
                    "record",
                    offset,
                    timestamp,
                    -1 if key is None else len(key),
                    -1 if value is None else len(value),
                    sequence,
                    header_texts,
                    key_text,
                    value_text,
                    encoding,
                    **extra,
                )
            )

    @staticmethod
    def _control_or_metadata(record: Record, control: bool) -> dict:
        """A control record's type and fields, or a __cluster_metadata record's type."""
        if not control:
            return {"metadata_type": decode_metadata_record(record.value).type_name}
        marker = decode_control_record(record)
        return {
            "control_type": marker.type_name,
            "coordinator_epoch": marker.coordinator_epoch,
            "leader_id": marker.leader_id,
            "voters": marker.voters,
        }


_SEQUENCE_WRAP = 1 << 31


def _column_texts(column: tuple[bytes | None, ...]) -> list[str | None] | None:
    """A column of keys or values as text when every one is printable UTF-8 (None stays None), else None.
    Decoded and checked at once: joined by NUL, which no printable text holds, so the split is exact."""
    present = [data for data in column if data is not None]
    if not present:
        return list(column)
    try:
        text = b"\x00".join(present).decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not text.replace("\x00", "").isprintable():
        return None  # control characters somewhere: record by record, line breaks allowed
    pieces = text.split("\x00")
    if len(present) == len(column):
        return pieces
    texts = iter(pieces)
    return [None if data is None else next(texts) for data in column]


class _NotText(Exception):
    """A header value that is not printable UTF-8."""


def _header_texts(headers: tuple) -> tuple:
    """Header values as text, or _NotText."""
    try:
        texts = tuple([(name, None if data is None else data.decode("utf-8")) for name, data in headers])
    except UnicodeDecodeError as error:
        raise _NotText from error
    if all(text is None or _printable(text) for _, text in texts):
        return texts
    raise _NotText


def _texts(key: bytes | None, value: bytes | None, headers) -> tuple | None:
    """Key, value and header values as text (printable UTF-8), or None when any of them is not."""
    try:
        key_text = None if key is None else key.decode("utf-8")
        value_text = None if value is None else value.decode("utf-8")
        header_texts = (
            tuple([(name, None if data is None else data.decode("utf-8")) for name, data in headers])
            if headers
            else ()
        )
    except UnicodeDecodeError:
        return None
    parts = [key_text, value_text, *(text for _, text in header_texts)] if headers else (key_text, value_text)
    if all(text is None or text.isprintable() or _printable(text) for text in parts):
        return key_text, value_text, header_texts
    return None


def _printable(text: str) -> bool:
    """Text a terminal shows as it is: no control characters but line breaks and tabs."""
    return text.isprintable() or text.translate(_LINE_BREAKS).isprintable()


_LINE_BREAKS = str.maketrans("", "", "\t\n\r")


def _hex(data: bytes | None) -> str | None:
    return None if data is None else data.hex()


def _batch_event(entry: LogEntry, label: str) -> BatchEvent:
    if isinstance(entry, RecordBatch):
        return BatchEvent(
            "batch", label, entry.position, entry.base_offset, entry.last_offset, entry.record_count,
            entry.base_sequence, entry.last_sequence, entry.producer_id, entry.producer_epoch,
            entry.partition_leader_epoch, entry.is_transactional, entry.is_control, entry.delete_horizon_ms,
            entry.timestamp_type, entry.max_timestamp, entry.size_bytes, entry.magic, entry.compression,
            entry.crc, entry.crc_valid,
        )  # fmt: skip
    return BatchEvent(
        "batch", label, entry.position, entry.offset, entry.offset, 1, -1, -1, -1, -1, -1, False, False, None,
        entry.timestamp_type, entry.timestamp, entry.size_bytes, entry.magic, entry.compression, entry.crc,
        entry.crc_valid,
    )  # fmt: skip


def _index_entries(path: Path | None) -> tuple:
    read = read_kafka_file(path) if path is not None else None
    return read.value.entries if read is not None and read.value is not None else ()


def _position_for_offset(segment: SegmentFiles, offset: int) -> int:
    return position_for_offset(_index_entries(segment.index), offset)


def _offset_for_time(segment: SegmentFiles, timestamp_ms: int) -> int:
    return offset_for_time(_index_entries(segment.timeindex), timestamp_ms, segment.base_offset)


def _first_segment_by_time(segments: list[SegmentFiles], timestamp_ms: int) -> int:
    """The first segment that may hold a record at or after the time: a closed segment's last time index
    entry is its largest timestamp (the broker appends it on roll); the last segment always may."""
    for number, segment in enumerate(segments[:-1]):
        entries = _index_entries(segment.timeindex)
        if not entries or entries[-1].timestamp >= timestamp_ms:
            return number
    return max(len(segments) - 1, 0)
