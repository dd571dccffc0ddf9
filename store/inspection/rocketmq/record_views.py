"""Record snapshots (`RecordView`, `BlankView`) as `store dump` and `store query` show CommitLog records, and
the small conversions every RocketMQ snapshot uses for times, hosts and bodies.

Times are epoch milliseconds (`*_ms`) with a UTC ISO-8601 twin (`*_iso`); 0 means "never" to RocketMQ, so a
timestamp <= 0 has no ISO time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType

from store import codec
from store.commitlog_scan import SegmentEnd


def iso_time_ms(timestamp_ms: int | None) -> str | None:
    """UTC ISO-8601 with milliseconds; None for None, 0 or negative (RocketMQ's "never") and for values no
    calendar can show (a damaged field must not crash a listing)."""
    if timestamp_ms is None or timestamp_ms <= 0:
        return None
    try:
        moment = datetime.fromtimestamp(timestamp_ms // 1000, tz=UTC) + timedelta(
            milliseconds=timestamp_ms % 1000
        )
    except (OverflowError, OSError, ValueError):
        return None
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def mtime_ms(mtime_s: float) -> int:
    """A file's mtime (os.stat's float seconds) in the epoch milliseconds snapshots carry."""
    return int(mtime_s * 1000)


def host_text(host: codec.HostAddress) -> str:
    """ip:port, with IPv6 addresses in brackets."""
    return f"[{host.host}]:{host.port}" if ":" in host.host else f"{host.host}:{host.port}"


def body_text(body: bytes | memoryview) -> Mapping[str, str]:
    """A body for JSON and tables: {"utf8": text} when it is valid UTF-8, else {"hex": lowercase hex}."""
    raw = bytes(body)
    try:
        return MappingProxyType({"utf8": raw.decode("utf-8")})
    except UnicodeDecodeError:
        return MappingProxyType({"hex": raw.hex()})


@dataclass(frozen=True, kw_only=True)
class RecordView:
    """One CommitLog message as `dump` and `query` show it. `body` is None unless asked for."""

    kind: str = "message"
    physical_offset: int
    size_bytes: int
    segment: Path | None
    topic: str
    queue_id: int
    queue_offset: int
    store_timestamp_ms: int
    store_time_iso: str | None
    born_timestamp_ms: int
    born_time_iso: str | None
    born_host: str
    store_host: str
    sysflag: int
    flag: int
    reconsume_times: int
    prepared_transaction_offset: int
    message_version: int
    tags: str | None
    keys: str | None
    properties: Mapping[str, str]
    body_crc: int
    body_size_bytes: int
    body_compressed: bool
    offset_msg_id: str | None
    body: Mapping[str, str] | None = None


@dataclass(frozen=True, kw_only=True)
class BlankView:
    """The END_OF_FILE blank: the rest of its segment is filler; the log goes on at `next_physical_offset`."""

    kind: str = "blank"
    physical_offset: int
    size_bytes: int
    segment: Path | None
    next_physical_offset: int


def record_view(
    physical_offset: int, record: codec.MessageRecord, segment: Path | None, *, include_body: bool
) -> RecordView:
    """The message at `physical_offset` (in `segment`) as `dump` and `query` show it."""
    body = b"" if record.body is None else record.body
    return RecordView(
        physical_offset=physical_offset,
        size_bytes=record.total_size,
        segment=segment,
        topic=record.topic,
        queue_id=record.queue_id,
        queue_offset=record.queue_offset,
        store_timestamp_ms=record.store_timestamp_ms,
        store_time_iso=iso_time_ms(record.store_timestamp_ms),
        born_timestamp_ms=record.born_timestamp_ms,
        born_time_iso=iso_time_ms(record.born_timestamp_ms),
        born_host=host_text(record.born_host),
        store_host=host_text(record.store_host),
        sysflag=record.sysflag,
        flag=record.flag,
        reconsume_times=record.reconsume_times,
        prepared_transaction_offset=record.prepared_transaction_offset,
        message_version=int(record.version),
        tags=record.tags,
        keys=record.keys,
        properties=MappingProxyType(dict(record.properties)),
        body_crc=record.body_crc,
        body_size_bytes=len(body),
        body_compressed=bool(record.sysflag & codec.COMPRESSED_FLAG),
        offset_msg_id=_offset_msg_id(record.store_host, physical_offset),
        body=body_text(body) if include_body else None,
    )


def _offset_msg_id(store_host: codec.HostAddress, physical_offset: int) -> str | None:
    """None when the store host's port does not fit the id: BODYCRC covers only the body, so a damaged
    header field can pass every check."""
    try:
        return codec.offset_msg_id(store_host, physical_offset)
    except ValueError:
        return None


def blank_view(blank: SegmentEnd) -> BlankView:
    """The END_OF_FILE blank a walk met, as `dump` lists it."""
    size = blank.blank_bytes or 0
    return BlankView(
        physical_offset=blank.physical_offset,
        size_bytes=size,
        segment=blank.segment,
        next_physical_offset=blank.physical_offset + size,
    )
