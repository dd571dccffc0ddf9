"""Record snapshots (`RecordView`, `BlankView`) as `store dump` and `store query` show CommitLog records, and
the small conversions every RocketMQ snapshot uses for times, hosts and bodies.

Times are epoch milliseconds (`*_ms`) with a UTC ISO-8601 twin (`*_iso`); 0 means "never" to RocketMQ, so a
timestamp <= 0 has no ISO time.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType

from store import codec
from store.commitlog_scan import SegmentEnd


@functools.lru_cache(maxsize=4096)  # a dump's records share their milliseconds, and formatting is slow
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


@functools.lru_cache(maxsize=256)
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
    return _message_view(
        physical_offset, segment, record.topic, MappingProxyType(dict(record.properties)), len(body),
        body if include_body else None, record.total_size, record.magic_code, record.body_crc,
        record.queue_id, record.flag, record.queue_offset, record.sysflag, record.born_timestamp_ms,
        record.born_host, record.store_timestamp_ms, record.store_host, record.reconsume_times,
        record.prepared_transaction_offset,
    )  # fmt: skip


def run_record_view(
    physical_offset: int, record: codec.RunRecord, data: memoryview, segment: Path | None, include_body: bool
) -> RecordView:
    """`record_view` of a record `codec.decode_run` decoded out of `data`, at `physical_offset`."""
    (total, magic, body_crc, queue_id, flag, queue_offset, _, sysflag, born_timestamp, born_ip, born_port,
     store_timestamp, store_ip, store_port, reconsume_times, prepared_offset, body_length,
     ) = record.header  # fmt: skip
    body_start = record.body_start
    return _message_view(
        physical_offset, segment, record.topic, MappingProxyType(record.properties), body_length,
        data[body_start : body_start + body_length] if include_body else None, total, magic, body_crc,
        queue_id, flag, queue_offset, sysflag, born_timestamp, _host(born_ip, born_port), store_timestamp,
        _host(store_ip, store_port), reconsume_times, prepared_offset,
    )  # fmt: skip


_host = codec.host_from_packed
VERSION_BY_MAGIC = {version.magic_code: int(version) for version in codec.MessageVersion}
_new_object, _set_attribute = object.__new__, object.__setattr__


def _message_view(
    physical_offset: int,
    segment: Path | None,
    topic: str,
    properties: Mapping[str, str],
    body_size: int,
    body: bytes | memoryview | None,
    total: int,
    magic: int,
    body_crc: int,
    queue_id: int,
    flag: int,
    queue_offset: int,
    sysflag: int,
    born_timestamp: int,
    born_host: codec.HostAddress,
    store_timestamp: int,
    store_host: codec.HostAddress,
    reconsume_times: int,
    prepared_offset: int,
) -> RecordView:
    """The RecordView of a decoded record (`body` None: left out).

    Built as pickle restores a dataclass, its __dict__ set at once (its keys are the fields, in their
    order): the frozen dataclass's __init__ sets each of its 26 fields through object.__setattr__, which was
    most of what a dump spent per record."""
    view = _new_object(RecordView)
    _set_attribute(view, "__dict__", {
        "kind": "message",
        "physical_offset": physical_offset,
        "size_bytes": total,
        "segment": segment,
        "topic": topic,
        "queue_id": queue_id,
        "queue_offset": queue_offset,
        "store_timestamp_ms": store_timestamp,
        "store_time_iso": iso_time_ms(store_timestamp),
        "born_timestamp_ms": born_timestamp,
        "born_time_iso": iso_time_ms(born_timestamp),
        "born_host": host_text(born_host),
        "store_host": host_text(store_host),
        "sysflag": sysflag,
        "flag": flag,
        "reconsume_times": reconsume_times,
        "prepared_transaction_offset": prepared_offset,
        "message_version": VERSION_BY_MAGIC[magic],
        "tags": properties.get(codec.PROPERTY_TAGS),
        "keys": properties.get(codec.PROPERTY_KEYS),
        "properties": properties,
        "body_crc": body_crc,
        "body_size_bytes": body_size,
        "body_compressed": bool(sysflag & codec.COMPRESSED_FLAG),
        "offset_msg_id": _offset_msg_id(store_host, physical_offset),
        "body": None if body is None else body_text(body),
    })  # fmt: skip
    return view


def _offset_msg_id(store_host: codec.HostAddress, physical_offset: int) -> str | None:
    """None when the store host's port does not fit the id: BODYCRC covers only the body, so a damaged
    header field can pass every check."""
    prefix = msg_id_prefix(store_host)
    if prefix is None or physical_offset not in MSG_ID_OFFSETS:
        return None
    return f"{prefix}{physical_offset:016X}"


# offsetMsgIds end in the physical offset as 16 hex digits, which only these offsets have.
MSG_ID_OFFSETS = range(1 << 63)


@functools.lru_cache(maxsize=256)
def msg_id_prefix(store_host: codec.HostAddress) -> str | None:
    """The store host's part of its offsetMsgIds (all but the 16 hex digits of the offset); None when no
    offsetMsgId can name the host."""
    try:
        return codec.offset_msg_id(store_host, 0)[:-16]
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
