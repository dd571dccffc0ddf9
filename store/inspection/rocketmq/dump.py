"""`store dump`: CommitLog records from a physical offset, the blanks that end segments, and why the walk
ended, of a store or of one segment file.

`DumpStream` hands the records over as the walk decodes them, a run of records at a time (`batches`), so a
renderer writes the first ones while the rest are still on disk; `dump_records` collects a whole
`CommitLogDump`. A renderer that writes many records at once may take a run as the decoder's columns
(`RecordRun`, `batches(record_runs=True)`) instead of a RecordView per record; its runs of the common
shape come as columns (`run_columns.RunColumns`), decoded with no object per record. The walk reads no further
than the records asked for need: its reads start at one page and double up to the scan's window, and it
stops at `count` messages or `max_bytes` of them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import accumulate, takewhile
from pathlib import Path
from typing import Any

from store.codec import RunRecord
from store.commitlog_scan import (
    DecodedColumns,
    DecodedRun,
    ScanEvent,
    ScannedRecord,
    SegmentEnd,
    SegmentEndReason,
    scan_commitlog,
)
from store.inspection.log_format import vanishing_files_are_store_changes
from store.inspection.rocketmq.reading import (
    FIRST_READ_BYTES,
    LogEnd,
    LogEndReason,
    RecordReader,
    commitlog_of,
    log_end_of,
    require_record_start,
)
from store.inspection.rocketmq.record_views import (
    BlankView,
    RecordView,
    blank_view,
    record_view,
    run_record_view,
)
from store.run_columns import RunColumns

SCHEMA = "mqinspect.store.dump/v1"
# Records decoded in one go, at most: a renderer writes (and flushes) each run, so this bounds how long the
# first record waits for the ones decoded with it.
RUN_RECORDS = 1024


@dataclass(frozen=True, slots=True)
class RecordRun:
    """Messages decoded back to back, as the decoder made them: `codec.RunRecord`s, or `columns` (None:
    see `records`), their positions offsets into `data`, which starts at physical offset `base`, in
    `segment`. `views()` are their RecordViews: a renderer that writes a run at once draws the same fields
    without making one object per record. `data` is the read window: valid while the batch holding the run
    is being written."""

    segment: Path | None
    base: int
    data: memoryview = field(repr=False)
    records: list[RunRecord]
    include_body: bool
    columns: RunColumns | None = None

    def views(self) -> list[RecordView]:
        path, data, base, include_body = self.segment, self.data, self.base, self.include_body
        records = self.records if self.columns is None else self.columns.records()
        return [
            run_record_view(base + record.position, record, data, path, include_body) for record in records
        ]


DumpEvent = RecordView | BlankView


@dataclass(frozen=True, kw_only=True)
class DumpStart:
    """What a dump walks: known before its first record."""

    schema: str = SCHEMA
    source: Path
    from_physical_offset: int
    crc_checked: bool
    count_limit: int
    size_limit_bytes: int | None  # --max-bytes: the messages dumped add up to no more than this


@dataclass(frozen=True, kw_only=True)
class DumpFinish:
    """How a dump ended: known after its last record."""

    message_count: int
    message_bytes: int  # the messages' sizes added up (what --max-bytes limits)
    end: LogEnd | None  # None: stopped at count_limit or size_limit_bytes before the end
    next_physical_offset: int | None  # where to continue (--from) when stopped at a limit


@dataclass(frozen=True, kw_only=True)
class DumpEvents:
    events: tuple[DumpEvent, ...]


@dataclass(frozen=True, kw_only=True)
class CommitLogDump(DumpFinish, DumpEvents, DumpStart):
    """A whole dump: its start's fields, every event, its finish's fields (the order a stream writes them)."""


class DumpStream:
    """Records of a store (or of one segment file) from a physical offset, as the walk decodes them: messages,
    the blanks that end segments, then (in `finish`) why the walk ended.

    `from_offset` must be a record start (or the end of the log), checked here, before any record is handed
    over; by default it is the CommitLog's min offset. `batches` may be iterated once.
    """

    def __init__(
        self,
        target: Path,
        from_offset: int | None,
        count: int,
        *,
        include_body: bool,
        check_crc: bool,
        max_bytes: int | None = None,
    ):
        self._queue = _open(target)
        segments = self._queue.segments
        start = from_offset if from_offset is not None else segments[0].file_from_offset if segments else 0
        if segments and self._queue.file_size:  # no size yet: the first segment is being created, still empty
            with RecordReader(self._queue) as reader:
                _require_start(reader, start)
        self.start = DumpStart(
            source=Path(target),
            from_physical_offset=start,
            crc_checked=check_crc,
            count_limit=count,
            size_limit_bytes=max_bytes,
        )
        self._include_body = include_body
        self.finish: DumpFinish | None = None  # set once `batches` is exhausted

    def batches(self, record_runs: bool = False) -> Iterator[list[DumpEvent | RecordRun]]:
        """The events in order, a run of them at a time; `finish` is set when this ends. With `record_runs`
        the messages decoded in one go come as one RecordRun event instead of a RecordView each."""
        events = self._events(record_runs)
        try:
            while (batch := _next_batch(events)) is not None:
                yield batch
        finally:
            events.close()

    def _events(self, record_runs: bool) -> Iterator[list[DumpEvent | RecordRun]]:
        start, queue = self.start, self._queue
        tally = _Tally(start.count_limit, start.size_limit_bytes)
        end: LogEnd | None = None
        scan = scan_commitlog(
            queue,
            start.from_physical_offset,
            check_crc=start.crc_checked,
            run_records=RUN_RECORDS,
            first_window_bytes=FIRST_READ_BYTES,
            run_columns=record_runs,
        )
        with RecordReader(queue) as reader:
            for event in scan:
                batch = self._views(event, reader, tally, record_runs)
                if batch:
                    yield batch
                if tally.next_offset is not None:
                    break
                if not isinstance(event, ScannedRecord | DecodedRun | DecodedColumns):
                    end = log_end_of(event)  # a blank is the end only if no segment follows it
        scan.close()
        if tally.next_offset is None and end is None:
            end = LogEnd(start.from_physical_offset, LogEndReason.NO_SEGMENTS, None)
        self.finish = DumpFinish(
            message_count=tally.messages,
            message_bytes=tally.message_bytes,
            end=None if tally.next_offset is not None else end,
            next_physical_offset=tally.next_offset,
        )

    def _views(
        self, event: ScanEvent, reader: RecordReader, tally: _Tally, record_runs: bool
    ) -> list[DumpEvent | RecordRun]:
        """The snapshots of one scan event's records, as many as the limits leave room for."""
        include_body = self._include_body
        if isinstance(event, DecodedColumns):
            segment = reader.segment_for(event.physical_offset)
            columns = tally.take_columns(event.physical_offset, event.columns)
            if not columns.count:
                return []
            path = segment and segment.path
            return [RecordRun(path, event.physical_offset, event.data, [], include_body, columns)]
        if isinstance(event, DecodedRun):
            segment = reader.segment_for(event.physical_offset)
            base = event.physical_offset
            taken = tally.take_run(base, event.records)
            if not taken:
                return []
            run = RecordRun(
                segment=segment and segment.path,
                base=base,
                data=event.data,
                records=taken,
                include_body=include_body,
            )
            return [run] if record_runs else run.views()
        if isinstance(event, ScannedRecord):
            offset = event.physical_offset
            if not tally.take(offset, event.record.total_size):
                return []
            segment = reader.segment_for(offset)
            return [record_view(offset, event.record, segment and segment.path, include_body=include_body)]
        if isinstance(event, SegmentEnd) and event.reason is SegmentEndReason.BLANK:
            return [blank_view(event)]
        return []


class _Tally:
    """The messages taken so far against the count and byte limits, and where the first one left is."""

    def __init__(self, count: int, max_bytes: int | None):
        self.count, self.max_bytes = count, max_bytes
        self.messages = self.message_bytes = 0
        self.next_offset: int | None = None

    def take_run(self, base: int, records: list[RunRecord]) -> list[RunRecord]:
        """The first of a run's records (at `base` + their positions) within the limits (they are counted)."""
        room = self.count - self.messages
        if self.max_bytes is None:
            taken = records[:room]
            if taken:  # back to back: their sizes add up to where the last ends
                self.message_bytes += taken[-1].position + taken[-1].header[0] - taken[0].position
        else:
            taken = []
            for record in records[:room]:
                if self.message_bytes + record.header[0] > self.max_bytes:
                    break
                self.message_bytes += record.header[0]
                taken.append(record)
        self.messages += len(taken)
        if len(taken) < len(records):
            self.next_offset = base + records[len(taken)].position
        return taken

    def take_columns(self, base: int, columns: RunColumns) -> RunColumns:
        """`take_run` of a run decoded as columns."""
        sizes = columns.headers[0]
        room = self.count - self.messages
        if self.max_bytes is not None:  # the records whose sizes add up to no more than the bytes left
            left = self.max_bytes - self.message_bytes
            room = min(room, sum(1 for _ in takewhile(left.__ge__, accumulate(sizes[:room]))))
        taken = columns.head(room)
        self.messages += taken.count
        if taken.count:
            self.message_bytes += taken.end - taken.positions[0]  # back to back
        if taken.count < columns.count:
            self.next_offset = base + columns.positions[taken.count]
        return taken

    def take(self, offset: int, size: int) -> bool:
        """Whether the message at `offset` (`size` bytes) is within the limits (then it is counted)."""
        over_bytes = self.max_bytes is not None and self.message_bytes + size > self.max_bytes
        if self.messages == self.count or over_bytes:
            self.next_offset = offset
            return False
        self.messages += 1
        self.message_bytes += size
        return True


@vanishing_files_are_store_changes
def _open(target: Path):
    return commitlog_of(target)


@vanishing_files_are_store_changes
def _require_start(reader: RecordReader, offset: int) -> None:
    require_record_start(reader, offset)


@vanishing_files_are_store_changes
def _next_batch(events: Iterator[list[DumpEvent]]) -> list[DumpEvent] | None:
    return next(events, None)


def dump_records(target: Path, from_offset: int | None, count: int, **options: Any) -> CommitLogDump:
    """A whole `DumpStream` (its options: include_body, check_crc, max_bytes), collected."""
    stream = DumpStream(target, from_offset, count, **options)
    events = tuple(event for batch in stream.batches() for event in batch)
    assert stream.finish is not None
    return CommitLogDump(**vars(stream.start), events=events, **vars(stream.finish))
