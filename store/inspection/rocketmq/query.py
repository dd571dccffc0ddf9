"""`store query`: messages by key (through the index, each hit checked against its record), by physical offset
or by offsetMsgId (`QueryResult`)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from store import codec
from store.errors import CorruptRecord, StoreError
from store.index_file import IndexService
from store.inspection.log_format import vanishing_files_are_store_changes
from store.inspection.rocketmq.reading import (
    NoRecordAt,
    RecordReader,
    loadable_commitlog,
    open_layout,
    require_record_start,
)
from store.inspection.rocketmq.record_views import RecordView, host_text, record_view
from store.java_checksums import masked_crc32
from store.layout import SegmentQueue

LATEST_TIME_MS = 2**63 - 1


class BadMessageId(StoreError):
    """A message id that is not an offsetMsgId (32 or 56 hex digits)."""


class NoTopicToSearch(StoreError):
    """A key query without --topic on a store whose consume queues name no topic."""


class QueryBy(StrEnum):
    KEY = "key"
    OFFSET = "offset"
    MSG_ID = "msg_id"


@dataclass(frozen=True)
class UnreadableHit:
    physical_offset: int
    problem: str


@dataclass(frozen=True, kw_only=True)
class QueryResult:
    schema: str = "mqinspect.store.query/v1"
    root: Path
    by: QueryBy
    key: str | None = None
    topics_searched: tuple[str, ...] = ()
    begin_timestamp_ms: int | None = None
    end_timestamp_ms: int | None = None
    max_hits: int | None = None
    index_hits: int = 0  # offsets the index returned: key *hash* matches
    hash_collisions_filtered: int = 0  # index hits whose record does not carry the key
    unreadable_hits: tuple[UnreadableHit, ...] = ()
    msg_id: str | None = None
    msg_id_store_host: str | None = None
    store_host_matches: bool | None = None
    notes: tuple[str, ...] = ()
    hits: tuple[RecordView, ...] = ()


@vanishing_files_are_store_changes
def query_by_key(
    root: Path,
    key: str,
    *,
    topic: str | None,
    begin_ms: int | None,
    end_ms: int | None,
    max_hits: int,
    include_body: bool,
) -> QueryResult:
    """Messages with `key` (a KEYS token or UNIQ_KEY) through the index, newest file first, as
    `IndexService.queryOffset`. The index compares hashes only, so every hit is decoded and kept only if
    the record really carries the key; the others are counted as hash collisions. Without a topic, every
    topic that has a consume queue is searched (the index key is "topic#key")."""
    layout = open_layout(root)
    topics = (topic,) if topic else layout.topics
    if not topics:
        raise NoTopicToSearch(f"{layout.root}: no consume queue names a topic to search; pass --topic")
    begin, end = begin_ms or 0, LATEST_TIME_MS if end_ms is None else end_ms
    hits, unreadable, collisions, index_hits, seen = [], [], 0, 0, set()
    queue = loadable_commitlog(layout)
    with IndexService(layout.root / "index") as service, RecordReader(queue) as reader:
        service.load(read_only=True)
        for searched_topic in topics:
            offsets = service.query(searched_topic, key, max_hits, begin, end, max_msgs_num_batch=max_hits)
            for offset in offsets:
                if offset in seen:  # a message whose KEYS repeat the key is indexed once per repeat
                    continue
                seen.add(offset)
                index_hits += 1
                verdict = _key_hit(reader, offset, searched_topic, key)
                if isinstance(verdict, UnreadableHit):
                    unreadable.append(verdict)
                elif verdict is None:
                    collisions += 1
                else:
                    segment = reader.segment_for(offset)
                    hits.append(
                        record_view(
                            offset, verdict, segment.path if segment else None, include_body=include_body
                        )
                    )
    return QueryResult(
        root=layout.root,
        by=QueryBy.KEY,
        key=key,
        topics_searched=tuple(topics),
        begin_timestamp_ms=begin_ms,
        end_timestamp_ms=end_ms,
        max_hits=max_hits,
        index_hits=index_hits,
        hash_collisions_filtered=collisions,
        unreadable_hits=tuple(unreadable),
        notes=() if layout.index_files else ("the store has no index files",),
        hits=tuple(hits),
    )


def _key_hit(
    reader: RecordReader, offset: int, topic: str, key: str
) -> codec.MessageRecord | UnreadableHit | None:
    """The record if it carries `key` in `topic`, None for a hash collision, UnreadableHit if there is no
    message at the offset (deleted by retention, truncated, or a damaged index)."""
    try:
        record = reader.record_at(offset)
    except (CorruptRecord, NoRecordAt) as error:
        return UnreadableHit(offset, str(error))
    if isinstance(record, codec.BlankRecord):
        return UnreadableHit(offset, "an END_OF_FILE blank, not a message")
    carries_key = key in record.key_list or record.uniq_key == key
    return record if record.topic == topic and carries_key else None


@vanishing_files_are_store_changes
def query_by_offset(root: Path, offset: int, *, include_body: bool) -> QueryResult:
    """The message at a physical offset. NoRecordAt names the nearest record starts if none starts there."""
    layout = open_layout(root)
    view, notes = _message_at(loadable_commitlog(layout), offset, include_body)
    return QueryResult(root=layout.root, by=QueryBy.OFFSET, notes=notes, hits=(view,))


@vanishing_files_are_store_changes
def query_by_msg_id(root: Path, msg_id: str, *, include_body: bool) -> QueryResult:
    """The message an offsetMsgId names (store host + physical offset). The host is compared, not required
    to match: a store copied to another machine keeps the ids its old host gave out."""
    try:
        parsed = codec.parse_offset_msg_id(msg_id.strip())
    except ValueError as error:
        raise BadMessageId(str(error)) from None
    layout = open_layout(root)
    view, notes = _message_at(loadable_commitlog(layout), parsed.physical_offset, include_body)
    id_host = host_text(codec.HostAddress(parsed.host, parsed.port))
    matches = id_host == view.store_host
    if not matches:
        notes += (
            f"the id names store host {id_host}, but the record at {view.physical_offset} was stored by "
            f"{view.store_host}",
        )
    return QueryResult(
        root=layout.root,
        by=QueryBy.MSG_ID,
        msg_id=msg_id.strip(),
        msg_id_store_host=id_host,
        store_host_matches=matches,
        notes=notes,
        hits=(view,),
    )


def _message_at(queue: SegmentQueue, offset: int, include_body: bool) -> tuple[RecordView, tuple[str, ...]]:
    """The message at `offset` and notes about it. A body CRC mismatch is a note, not an error: asking for
    one record is how one looks at a damaged one."""
    with RecordReader(queue) as reader:
        require_record_start(reader, offset)
        try:
            record = reader.record_at(offset)
        except codec.UnwrittenSpace:
            raise NoRecordAt(f"offset {offset} is the end of the log: no message is there yet") from None
        if isinstance(record, codec.BlankRecord):
            raise NoRecordAt(
                f"offset {offset} holds an END_OF_FILE blank (the rest of its segment is filler), "
                "not a message"
            )
        segment = reader.segment_for(offset)
    notes: tuple[str, ...] = ()
    body = record.body or b""
    if body and masked_crc32(body) != record.body_crc:
        notes = (
            f"body CRC {masked_crc32(body)} does not match BODYCRC {record.body_crc}: the body is damaged",
        )
    return record_view(offset, record, segment.path if segment else None, include_body=include_body), notes
