"""`store dump`: CommitLog records from a physical offset, the blanks that end segments, and why the walk
ended (`CommitLogDump`), of a store or of one segment file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from store.commitlog_scan import ScannedRecord, SegmentEnd, SegmentEndReason, scan_commitlog
from store.inspection.log_format import vanishing_files_are_store_changes
from store.inspection.rocketmq.reading import (
    LogEnd,
    LogEndReason,
    RecordReader,
    commitlog_of,
    log_end_of,
    require_record_start,
)
from store.inspection.rocketmq.record_views import BlankView, RecordView, blank_view, record_view


@dataclass(frozen=True, kw_only=True)
class CommitLogDump:
    schema: str = "mqinspect.store.dump/v1"
    source: Path
    from_physical_offset: int
    crc_checked: bool
    count_limit: int
    message_count: int
    events: tuple[RecordView | BlankView, ...]
    end: LogEnd | None  # None: stopped at count_limit before the end
    next_physical_offset: int | None  # where to continue (--from) when stopped at count_limit


@vanishing_files_are_store_changes
def dump_records(
    target: Path, from_offset: int | None, count: int, *, include_body: bool, check_crc: bool
) -> CommitLogDump:
    """Records of a store (or of one segment file) from a physical offset: messages, the blanks that end
    segments, and why the walk ended. `from_offset` must be a record start (or the end of the log); by
    default it is the CommitLog's min offset."""
    queue = commitlog_of(target)
    if from_offset is not None:
        start = from_offset
    else:
        start = queue.segments[0].file_from_offset if queue.segments else 0
    events: list[RecordView | BlankView] = []
    messages, end, next_offset = 0, None, None
    with RecordReader(queue) as reader:
        if queue.segments:
            require_record_start(reader, start)
        for event in scan_commitlog(queue, start, check_crc=check_crc):
            if isinstance(event, ScannedRecord):
                if messages == count:
                    next_offset = event.physical_offset
                    break
                messages += 1
                segment = reader.segment_for(event.physical_offset)
                events.append(
                    record_view(event.physical_offset, event.record, segment and segment.path,
                                include_body=include_body)
                )  # fmt: skip
            elif isinstance(event, SegmentEnd) and event.reason is SegmentEndReason.BLANK:
                events.append(blank_view(event))
            if not isinstance(event, ScannedRecord):
                end = log_end_of(event)  # a blank is the end only if no segment follows it
    if next_offset is not None:
        end = None
    elif end is None:
        end = LogEnd(start, LogEndReason.NO_SEGMENTS, None)
    return CommitLogDump(
        source=Path(target),
        from_physical_offset=start,
        crc_checked=check_crc,
        count_limit=count,
        message_count=messages,
        events=tuple(events),
        end=end,
        next_physical_offset=next_offset,
    )
