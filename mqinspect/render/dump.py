"""`store dump`'s forms, each written as the records arrive (a run of them at a time, flushed):

- the table form: one line per message, kafka-dump-log's `name: value` habit (`offset: 0 size: 1145B queue:
  T/0 queueOffset: 0 stored: 2026-...Z keys: k tags: t`), a line per blank, a first line saying what is
  dumped and a last one saying how it ended;
- `verbose`: the table form with each message as a block of every field (`store query`'s card);
- `jsonl`: one object per line: {"kind": "dump", ...the start}, the events ("message", "blank"), and
  {"kind": "end", ...the finish};
- `json`: one JSON document (the start's keys, "events": [...], the finish's keys), streamed.

A message's JSON is written from a template of RecordView's fields: the same object `to_jsonable` makes of
it (tests hold them equal), at a fraction of the cost. jsonl takes the messages decoded in one go as the
decoder's columns (`RecordRun`, most often `run_columns.RunColumns`) and writes a run's lines with one
C-level pass per field (map), the values records share (topics, hosts, milliseconds, tags, properties)
converted once into the run's template, and one join of the template's parts and the columns for the run.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable, Hashable, Iterable, Sequence
from itertools import repeat
from json.encoder import encode_basestring
from operator import add
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console

from mqinspect.jsonable import json_line, to_jsonable
from mqinspect.render.store import blank_line, log_end_text, record_card
from mqinspect.render.words import counted
from store import codec
from store.inspection.rocketmq.dump import DumpEvent, DumpFinish, DumpStart, DumpStream, RecordRun
from store.inspection.rocketmq.record_views import (
    MSG_ID_OFFSETS,
    VERSION_BY_MAGIC,
    BlankView,
    RecordView,
    body_text,
    host_text,
    iso_time_ms,
    msg_id_prefix,
)

_NULL = "null"
_RECORD_JSON = "{" + ",".join(f'"{field.name}":%s' for field in dataclasses.fields(RecordView)) + "}"


def _write_batches(
    batches: Iterable[list[DumpEvent | RecordRun]],
    out: TextIO,
    record_text: Callable[[RecordView], str],
    blank_text: Callable,
    run_lines: Callable[[RecordRun], str] | None = None,
) -> None:
    """Each batch as lines (a message's by `record_text`, a run's by `run_lines`, its lines joined by
    newlines, a blank's by `blank_text`), written and flushed."""
    for batch in batches:
        if run_lines is None:  # a RecordView for each message
            lines = [
                record_text(event) if type(event) is RecordView else blank_text(event) for event in batch
            ]
        else:
            lines = []
            for event in batch:
                kind = type(event)
                if kind is RecordRun:
                    lines.append(run_lines(event))
                else:
                    lines.append(record_text(event) if kind is RecordView else blank_text(event))
        lines.append("")
        out.write("\n".join(lines))
        out.flush()


# --- table: one line per record ----------------------------------------------------------------------------


def write_lines(stream: DumpStream, out: TextIO) -> None:
    """The table form: a line per record between the start's line and the finish's."""
    out.write(start_line(stream.start) + "\n")
    out.flush()
    _write_batches(stream.batches(), out, record_line, _blank_text)
    out.write(finish_line(stream.finish) + "\n")


def start_line(start: DumpStart) -> str:
    """What is dumped: "SOURCE: from offset 0, 20 messages at most (CRC checked; times UTC)"."""
    limits = counted(start.count_limit, "message")
    if start.size_limit_bytes is not None:
        limits += f" or {start.size_limit_bytes} B"
    crc = "CRC checked" if start.crc_checked else "CRC not checked"
    return f"{start.source}: from offset {start.from_physical_offset}, {limits} at most ({crc}; times UTC)"


def finish_line(finish: DumpFinish | None) -> str:
    """How it ended: the messages dumped, then the end of the log or where to go on."""
    if finish is None:
        return "interrupted"
    dumped = f"{counted(finish.message_count, 'message')} ({finish.message_bytes} B)"
    if finish.end is not None:
        return f"{dumped}; {log_end_text(finish.end)}"
    return f"{dumped}, stopped at the limit; continue with --from {finish.next_physical_offset}"


def record_line(record: RecordView) -> str:
    """A message on one line: where, how big, which queue and queue offset, when stored, keys and tags; flags
    and redeliveries only when set; the body when asked for. Text from the record is escaped where it would
    break the line."""
    stored = record.store_time_iso or record.store_timestamp_ms
    line = (
        f"offset: {record.physical_offset} size: {record.size_bytes}B queue: {single_line(record.topic)}/"
        f"{record.queue_id} queueOffset: {record.queue_offset} stored: {stored}"
    )
    if record.keys is not None:
        line += f" keys: {single_line(record.keys)}"
    if record.tags is not None:
        line += f" tags: {single_line(record.tags)}"
    if record.sysflag:
        line += f" sysflag: 0x{record.sysflag:x}"
    if record.reconsume_times:
        line += f" reconsumed: {record.reconsume_times}"
    if record.body is not None:  # last, as kafka-dump-log's payload: it may be long
        encoding, content = next(iter(record.body.items()))
        line += f" body: {single_line(content)}" if encoding == "utf8" else f" body ({encoding}): {content}"
    return line


def single_line(text: str) -> str:
    """`text` as it is if printable, else with its control characters escaped (a newline in a key must not
    start a line of its own)."""
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def _blank_text(blank: BlankView) -> str:
    return blank_line(blank).plain


# --- verbose: one block per record -------------------------------------------------------------------------


def write_cards(stream: DumpStream, console: Console) -> None:
    """The verbose table form: a block per message (`store query`'s), a line per blank."""
    console.print(start_line(stream.start), markup=False, soft_wrap=True)
    for batch in stream.batches():
        for event in batch:
            console.print(record_card(event) if isinstance(event, RecordView) else blank_line(event))
        console.file.flush()
    console.print(finish_line(stream.finish), markup=False, soft_wrap=True)


# --- jsonl and json ----------------------------------------------------------------------------------------


def write_jsonl(stream: DumpStream, out: TextIO) -> None:
    """JSON Lines: the start (kind "dump"), each event, the finish (kind "end")."""
    out.write(json_line({"kind": "dump", **to_jsonable(stream.start)}) + "\n")
    out.flush()
    _write_batches(stream.batches(record_runs=True), out, record_json, json_line, run_json_text)
    out.write(json_line({"kind": "end", **to_jsonable(stream.finish)}) + "\n")


def write_json_document(
    stream: DumpStream, out: TextIO, event_text: Callable[[Any], str] | None = None
) -> None:
    """A JSON document with the keys of `CommitLogDump` (or the start's and finish's of any dump stream), its
    events written as they arrive, one a line, each by `event_text` (default: `event_json`)."""
    event_text = event_text or event_json
    out.write("{\n" + _json_members(to_jsonable(stream.start)) + ',\n  "events": [')
    out.flush()
    first = True
    for batch in stream.batches():
        text = ",".join(["\n    " + event_text(event) for event in batch])
        out.write(text if first else "," + text)
        out.flush()
        first = False
    out.write("\n  ],\n" + _json_members(to_jsonable(stream.finish)) + "\n}\n")


def _json_members(values: dict[str, Any]) -> str:
    return ",\n".join(
        f"  {json.dumps(key)}: " + json.dumps(value, indent=2, ensure_ascii=False).replace("\n", "\n  ")
        for key, value in values.items()
    )


def event_json(event: DumpEvent) -> str:
    """An event as compact JSON: what `json_line` writes of it."""
    if type(event) is RecordView:
        return record_json(event)
    return json_line(event)


def record_json(record: RecordView) -> str:
    """`json_line(record)`, from a template of RecordView's fields."""
    tags, keys, store_iso, born_iso, msg_id = (
        record.tags, record.keys, record.store_time_iso, record.born_time_iso, record.offset_msg_id,
    )  # fmt: skip
    return _RECORD_JSON % (
        '"message"', record.physical_offset, record.size_bytes, _path_json(record.segment),
        encode_basestring(record.topic), record.queue_id, record.queue_offset, record.store_timestamp_ms,
        _NULL if store_iso is None else encode_basestring(store_iso), record.born_timestamp_ms,
        _NULL if born_iso is None else encode_basestring(born_iso), encode_basestring(record.born_host),
        encode_basestring(record.store_host), record.sysflag, record.flag, record.reconsume_times,
        record.prepared_transaction_offset, record.message_version,
        _NULL if tags is None else encode_basestring(tags),
        _NULL if keys is None else encode_basestring(keys), _object_json(record.properties), record.body_crc,
        record.body_size_bytes, "true" if record.body_compressed else "false",
        _NULL if msg_id is None else encode_basestring(msg_id),
        _NULL if record.body is None else _object_json(record.body),
    )  # fmt: skip


def _object_json(mapping: Any) -> str:
    """A str -> str mapping as compact JSON."""
    return (
        "{" + ",".join([encode_basestring(k) + ":" + encode_basestring(v) for k, v in mapping.items()]) + "}"
    )


@functools.lru_cache(maxsize=64)
def _path_json(path: Path | None) -> str:
    return _NULL if path is None else encode_basestring(str(path))


# --- jsonl of a run: a field at a time ---------------------------------------------------------------------

MEMO_ENTRIES = 1 << 14  # a memo is emptied past this (a long dump's milliseconds must not pile up)


class _Memo(dict):
    """Values computed once per key, looked up at C speed (map over `__getitem__`)."""

    def __init__(self, compute: Callable[[Hashable], str | None]):
        super().__init__()
        self.compute = compute

    def __missing__(self, key: Hashable) -> str | None:
        value = self[key] = self.compute(key)
        return value

    def bounded(self) -> _Memo:
        if len(self) > MEMO_ENTRIES:
            self.clear()
        return self


def _string_json(text: str | None) -> str:
    return _NULL if text is None else encode_basestring(text)


def _host_json(packed: tuple[bytes, int]) -> str:
    return encode_basestring(host_text(codec.host_from_packed(*packed)))


def _msg_id_head(packed: tuple[bytes, int]) -> str | None:
    """The offsetMsgId's JSON up to its offset digits (the quote and the host's part); None: no id."""
    prefix = msg_id_prefix(codec.host_from_packed(*packed))
    return None if prefix is None else '"' + prefix


_TOPICS = _Memo(encode_basestring)
_TAGS = _Memo(_string_json)
_HOSTS = _Memo(_host_json)
_MSG_ID_HEADS = _Memo(_msg_id_head)
_COMPRESSED = {0: "false", codec.COMPRESSED_FLAG: "true"}


_TEMPLATES = _Memo(  # a None text: the field is written with the one before it
    lambda texts: (
        "{"
        + ",".join(f'"{name}":{text}' for name, text in zip(_FIELDS, texts, strict=True) if text is not None)
        + "}"
    )
)
_FIELDS = tuple(field.name for field in dataclasses.fields(RecordView))
_WITH_PREVIOUS = ("", None)  # a field `fields` writes in the slot of the one before it


def _timestamp_json(name: str) -> Callable[[int], str]:
    """A timestamp's field and the ISO twin after it (named `name`), as one slot's text."""
    return lambda timestamp_ms: f'{timestamp_ms},"{name}":{_string_json(iso_time_ms(timestamp_ms))}'


_STORE_TIMES = _Memo(_timestamp_json("store_time_iso"))
_BORN_TIMES = _Memo(_timestamp_json("born_time_iso"))
_VARIES = "%s"  # a template's slot for a column whose values differ within the run


def run_json_lines(run: RecordRun) -> list[str]:
    """`record_json` of each of the run's records (`run.views()`)."""
    return run_json_text(run).split("\n")  # a JSON text holds no newline (U+2028 is no line end here)


def run_json_text(run: RecordRun) -> str:
    """`run_json_lines(run)` joined by newlines, written a field at a time for the whole run: a small field
    that holds one value for the whole run (the kind, segment, hosts, flags; often the topic, tags, sizes)
    is converted once and written into the run's template; the others go through map() into its slots
    (a timestamp and its ISO twin in one)."""
    if run.columns is None:
        return _records_json_text(run)
    columns = run.columns
    names = columns.property_names
    tags = (None,)
    keys_json = ((_NULL,), str)
    parts, slots = [], []  # the properties object's template: its names, a value where the run has one
    for name, values in zip(names, columns.property_values, strict=True):
        if _one_value(values):
            parts.append(encode_basestring(values[0]).replace("%", "%%"))
        else:
            parts.append(_VARIES)
            slots.append(list(map(encode_basestring, values)))
        if name == codec.PROPERTY_TAGS:
            tags = values
        elif name == codec.PROPERTY_KEYS:
            keys_json = (slots[-1], None) if parts[-1] is _VARIES else ((parts[-1],), str)
    template = "{" + ",".join(map(add, map(_NAME_JSON.__getitem__, names), parts)) + "}"
    return _run_text(
        run,
        columns.positions,
        columns.headers,
        columns.topics,
        (template, slots),
        tags,
        keys_json,
        columns.body_starts,
    )


_NAME_JSON = _Memo(lambda name: encode_basestring(name).replace("%", "%%") + ":")  # a template's text


def _records_json_text(run: RecordRun) -> str:
    """`run_json_text` of a run of `codec.RunRecord`s (their properties may differ in shape)."""
    positions, headers, body_starts, topics, properties = zip(*run.records, strict=True)
    tags = tuple(map(dict.get, properties, repeat(codec.PROPERTY_TAGS)))
    keys = map(_string_json, map(dict.get, properties, repeat(codec.PROPERTY_KEYS)))
    shape = _one_shape(properties)
    if shape is None:
        properties_json = (map(_object_json, properties), None)
    else:  # every record has the same property names, in the same order: their values go into slots
        named = {name: tuple(map(dict.get, properties, repeat(name))) for name in shape}
        properties_json = (_object_template(shape), [map(encode_basestring, named[name]) for name in shape])
        if codec.PROPERTY_KEYS in named:
            keys = map(encode_basestring, named[codec.PROPERTY_KEYS])
    header_columns = list(zip(*headers, strict=True))
    return _run_text(run, positions, header_columns, topics, properties_json, tags, (keys, None), body_starts)


def _run_text(
    run: RecordRun,
    positions: Sequence[int],
    header_columns: Sequence[Sequence],
    topics: Sequence[str],
    properties_json: tuple,
    tags: Sequence[str | None],
    keys_json: tuple,
    body_starts: Sequence[int],
) -> str:
    """The run's lines from its columns: `header_columns` are RunRecord.header's values, as decode_record
    unpacks them; `properties_json` and `keys_json` are their fields' (values, how one becomes JSON) or
    (a template part, its slots)."""
    (sizes, magics, body_crcs, queue_ids, flags, queue_offsets, _, sysflags, born_ms, born_ips, born_ports,
     store_ms, store_ips, store_ports, reconsumes, prepared_offsets, body_sizes) = header_columns  # fmt: skip
    offsets = list(map(run.base.__add__, positions))
    store_hosts = _pairs(store_ips, store_ports)
    msg_id_heads = list(map(_MSG_ID_HEADS.bounded().__getitem__, store_hosts))
    if None in msg_id_heads or offsets[0] not in MSG_ID_OFFSETS or offsets[-1] not in MSG_ID_OFFSETS:
        return "\n".join([record_json(view) for view in run.views()])  # a record without an offsetMsgId
    hosts = _HOSTS.bounded().__getitem__
    if run.include_body:
        data = run.data
        bodies = (
            [
                _object_json(body_text(data[start : start + size]))
                for start, size in zip(body_starts, body_sizes, strict=True)
            ],
            None,
        )
    else:
        bodies = ((_NULL,), str)
    # RecordView's fields in order: (values, how one becomes JSON) for the small fields, which the template
    # takes when the run has one value of them; the JSON texts of the others.
    fields = (
        (('"message"',), str), (offsets, str), (sizes, str), ((_path_json(run.segment),), str),
        (topics, _TOPICS.bounded().__getitem__), (queue_ids, str), (queue_offsets, str),
        (store_ms, _STORE_TIMES.bounded().__getitem__), _WITH_PREVIOUS,
        (born_ms, _BORN_TIMES.bounded().__getitem__), _WITH_PREVIOUS, (_pairs(born_ips, born_ports), hosts),
        (store_hosts, hosts), (sysflags, str), (flags, str), (reconsumes, str), (prepared_offsets, str),
        (magics, VERSION_BY_MAGIC.__getitem__), (tags, _TAGS.bounded().__getitem__), keys_json,
        properties_json, (body_crcs, str), (body_sizes, str),
        (list(map(codec.COMPRESSED_FLAG.__and__, sysflags)), _COMPRESSED.__getitem__),
        _msg_ids(msg_id_heads, offsets), bodies,
    )  # fmt: skip
    texts, slots = [], []
    for values, to_json in fields:
        if to_json is None and values == "":  # written with the field before
            texts.append(None)
        elif type(values) is str:  # a part of the template, with its slots
            texts.append(values)
            slots += to_json
        elif to_json is not None and _one_value(values):
            texts.append(str(to_json(values[0])).replace("%", "%%"))
        else:
            texts.append(_VARIES)
            slots.append(values if to_json is None else map(to_json, values))
    return _joined(_TEMPLATES.bounded()[tuple(texts)], slots, len(offsets))


def _joined(template: str, slots: list[Iterable[str]], count: int) -> str:
    """`count` lines of `template` (its %s slots filled from `slots`' columns, record by record), newline
    separated: one join of the template's literal parts interleaved with the columns (a % per line costs
    twice as much)."""
    parts = _LITERAL_PARTS.bounded()[template, len(slots)]
    step = 2 * len(parts) - 1
    pieces = [None] * (count * step)
    pieces[0::step] = ["\n" + parts[0]] * count
    for index, part in enumerate(parts[1:], 1):
        pieces[2 * index :: step] = [part] * count
    for index, column in enumerate(slots):
        pieces[2 * index + 1 :: step] = column
    pieces[0] = parts[0]
    return "".join(pieces)


# A template's text between its slots (% unescaped), by (template, slots): JSON text holds no NUL.
_LITERAL_PARTS = _Memo(lambda key: tuple((key[0] % (("\x00",) * key[1])).split("\x00")))


def _one_value(values: Sequence) -> bool:
    """Whether a column holds one value (C-speed comparisons; its ends and middle first: a column that
    varies mostly differs there, and count() compares every value)."""
    first = values[0]
    return first == values[-1] and first == values[len(values) // 2] and values.count(first) == len(values)


def _pairs(first: Sequence, second: Sequence) -> Sequence[tuple]:
    """The (first, second) pairs of two columns: one when each column holds one value (a host)."""
    if _one_value(first) and _one_value(second):
        return ((first[0], second[0]),)
    return list(zip(first, second, strict=True))


def _msg_ids(heads: tuple[str, ...], offsets: tuple[int, ...]) -> tuple:
    """The offsetMsgIds' field: the host's part in the template and the offsets' 16 hex digits in a slot when
    the run has one store host, else each id whole in a slot."""
    if _one_value(heads):
        return heads[0].replace("%", "%%") + '%s"', [map(_HEX_OFFSET.__mod__, offsets)]
    return map('%s%016X"'.__mod__, zip(heads, offsets, strict=True)), None


_HEX_OFFSET = "%016X"


def _one_shape(properties: tuple[dict[str, str], ...]) -> tuple[str, ...] | None:
    """The property names of every record of a run, in order, when they are the same for all."""
    shapes = tuple(map(tuple, properties))
    return shapes[0] if shapes.count(shapes[0]) == len(shapes) else None


@functools.lru_cache(maxsize=256)
def _object_template(names: tuple[str, ...]) -> str:
    """`_object_json` of a mapping with these names, its values left as slots."""
    return "{" + ",".join(encode_basestring(name).replace("%", "%%") + ":%s" for name in names) + "}"
