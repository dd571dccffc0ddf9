"""Tables and lines for the Kafka inspection snapshots (`mqinspect store ...` on a Kafka log directory).

Renderers only draw what store.inspection.kafka produced. `store dump`'s table form is kafka-dump-log's:
a batch a line (`baseOffset: 0 lastOffset: 0 count: 1 ... isvalid: true`) and, with --deep, a record a
line starting with `| `; values from the log are escaped where they would break a line.
"""

from __future__ import annotations

import dataclasses
from json.encoder import encode_basestring
from typing import Any, TextIO

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from mqinspect.jsonable import json_line, to_jsonable
from mqinspect.render.cells import NONE
from mqinspect.render.dump import single_line, write_json_document
from mqinspect.render.layout import Column, PriorityTable, columns_by_priority
from mqinspect.render.store import (
    FLEXIBLE_MIN_WIDTH,
    RESIDENCY_HEADERS,
    RESIDENCY_PRIORITIES,
    residency_by_path,
    residency_caption,
    residency_cells,
)
from mqinspect.render.words import counted
from store.inspection.kafka.dump import (
    BatchEvent,
    FindingEvent,
    KafkaDumpFinish,
    KafkaDumpStart,
    KafkaDumpStream,
    RecordEvent,
    SegmentEvent,
)
from store.inspection.kafka.query import KafkaQueryResult
from store.inspection.kafka.segments import KafkaSegmentListing
from store.inspection.kafka.stat import KafkaPartitionStat, KafkaStoreStat
from store.inspection.kafka.verify import KafkaVerifyReport

FORMAT_TITLE = "Kafka log directory"


def _text(value: Any) -> Text:
    return Text(NONE if value is None else str(value))


def _findings_table(findings) -> Table:
    table = Table(title="findings", title_justify="left")
    table.add_column("kind", no_wrap=True)
    table.add_column("file", overflow="fold")
    table.add_column("position", justify="right")
    table.add_column("problem", overflow="fold")
    for finding in findings:
        table.add_row(
            _text(finding.kind), _text(finding.path), _text(finding.position), _text(finding.message)
        )
    return table


# --- stat -------------------------------------------------------------------------------------------------


def kafka_stat_view(stat: KafkaStoreStat) -> RenderableType:
    summary = Table(
        title=f"{FORMAT_TITLE} {stat.root} ({stat.target.replace('_', ' ')})",
        title_justify="left",
        show_header=False,
        box=None,
        pad_edge=False,
    )
    summary.add_column(style="bold", no_wrap=True)
    summary.add_column(overflow="fold")
    summary.add_row("cluster id", _text(stat.cluster_id))
    summary.add_row("node id", _text(stat.node_id))
    shutdown = NONE if stat.clean_shutdown is None else ("clean" if stat.clean_shutdown else "not clean")
    summary.add_row("shutdown", Text(shutdown))
    summary.add_row("partitions", _text(len(stat.partitions)))
    parts: list[RenderableType] = [summary, _partitions_table(stat.partitions)]
    producers = [(p, entry) for p in stat.partitions for entry in p.producers]
    if producers:
        parts.append(_producers_table(producers))
    findings = [*stat.findings, *(f for p in stat.partitions for f in p.findings)]
    if findings:
        parts.append(_findings_table(findings))
    return Group(*parts)


def _partition_name(partition: KafkaPartitionStat) -> str:
    if partition.topic is None:
        return partition.directory.name
    return f"{partition.topic}-{partition.partition}"


PARTITION_COLUMNS = (
    Column("partition", 0, "left", flexible=True, min_width=FLEXIBLE_MIN_WIDTH),
    Column("log start", 1),
    Column("log end", 0),
    Column("high watermark", 1),
    Column("recovery point", 2),
    Column("segments", 3),
    Column("size (B)", 4),
    Column("base offsets", 6, "left"),
    Column("leader epochs", 5, "left"),
    Column("producers", 5),
)


def _partitions_table(partitions: tuple[KafkaPartitionStat, ...]) -> PriorityTable:
    table = PriorityTable(
        list(PARTITION_COLUMNS), table_options={"title": "partitions", "title_justify": "left"}
    )
    for partition in partitions:
        epochs = ", ".join(f"{entry.epoch}@{entry.start_offset}" for entry in partition.leader_epochs)
        table.add_row(
            Text(_partition_name(partition)),
            _text(partition.log_start_offset),
            _text(partition.log_end_offset),
            _text(partition.high_watermark),
            _text(partition.recovery_point),
            _text(partition.segment_count),
            _text(partition.size_bytes),
            Text(_offsets_text(partition.base_offsets)),
            Text(epochs or NONE),
            _text(len(partition.producers) if partition.producer_snapshot_offset is not None else None),
        )
    return table


def _offsets_text(offsets: tuple[int, ...]) -> str:
    shown = ", ".join(str(offset) for offset in offsets[:4])
    return shown + (f" ... {offsets[-1]} ({len(offsets)})" if len(offsets) > 4 else "") if offsets else NONE


def _producers_table(producers) -> Table:
    table = Table(title="producers (newest snapshot)", title_justify="left")
    for header in ("partition", "producer id", "epoch", "last sequence", "last offset", "open txn from"):
        table.add_column(header, justify="left" if header == "partition" else "right")
    for partition, entry in producers:
        table.add_row(
            Text(_partition_name(partition)),
            _text(entry.producer_id),
            _text(entry.producer_epoch),
            _text(entry.last_sequence),
            _text(entry.last_offset),
            _text(entry.current_txn_first_offset if entry.current_txn_first_offset >= 0 else None),
        )
    return table


# --- verify -----------------------------------------------------------------------------------------------


def kafka_verify_view(report: KafkaVerifyReport) -> RenderableType:
    total = len(report.findings)
    verdict = Text(
        "OK: no problems found" if report.ok else f"{counted(total, 'problem')} found", style="bold"
    )
    checked = Text(
        f"checked {FORMAT_TITLE} {report.root}: {counted(report.files_checked, 'file')}, "
        f"{counted(report.batches_checked, 'batch')}, {counted(report.records_checked, 'record')}"
    )
    parts: list[RenderableType] = [verdict, checked]
    if report.findings:
        parts.append(_findings_table(report.findings))
    return Group(*parts)


# --- dump -------------------------------------------------------------------------------------------------


def write_kafka_lines(stream: KafkaDumpStream, out: TextIO) -> None:
    """kafka-dump-log's form: a line per segment, batch and (with --deep) record, between a start line and
    an end line, each run written and flushed as it is read."""
    out.write(kafka_start_line(stream.start) + "\n")
    out.flush()
    for run in stream.batches():
        out.write("".join(_event_line(event) + "\n" for event in run))
        out.flush()
    out.write(kafka_finish_line(stream.finish) + "\n")


def kafka_start_line(start: KafkaDumpStart) -> str:
    where = []
    if start.from_offset is not None:
        where.append(f"from offset {start.from_offset}")
    if start.from_time_ms is not None:
        where.append(f"from time {start.from_time_ms}")
    if start.count_limit is not None:
        where.append(f"{counted(start.count_limit, 'batch')} at most")
    if start.max_bytes is not None:
        where.append(f"{start.max_bytes} B of the logs at most")
    records = f"records ({start.values})" if start.deep else "batches"
    return f"{FORMAT_TITLE} {start.source}: {records}{', ' if where else ''}{', '.join(where)}"


def kafka_finish_line(finish: KafkaDumpFinish | None) -> str:
    if finish is None:
        return "interrupted"
    done = (
        f"{counted(finish.batch_count, 'batch')}, {counted(finish.record_count, 'record')}, "
        f"{finish.log_bytes_read} B of the logs read"
    )
    if finish.finding_count:
        done += f", {counted(finish.finding_count, 'finding')}"
    if finish.stopped == "end":
        return f"{done}; end of the logs"
    if finish.stopped == "finding":
        return f"{done}; stopped at a batch that cannot be read"
    limit = "--max-bytes" if finish.stopped == "budget" else "--count"
    return f"{done}; stopped at {limit}; continue with --from-offset {finish.next_offset}"


def _event_line(event) -> str:
    if type(event) is BatchEvent:
        return batch_line(event)
    if type(event) is RecordEvent:
        return record_line(event)
    if type(event) is SegmentEvent:
        start = f" from position {event.start_position}" if event.start_position else ""
        return f"Dumping {event.path}{start}"
    assert type(event) is FindingEvent
    return f"finding: {event.path}: position {event.position}: {event.finding}: {event.message}"


def _bool(value: bool) -> str:
    return "true" if value else "false"


def batch_line(batch: BatchEvent) -> str:
    horizon = (
        "OptionalLong.empty"
        if batch.delete_horizon_ms is None
        else f"OptionalLong[{batch.delete_horizon_ms}]"
    )
    time_type = batch.timestamp_type or "NoTimestampType"
    return (
        f"baseOffset: {batch.base_offset} lastOffset: {batch.last_offset} count: {batch.count} "
        f"baseSequence: {batch.base_sequence} lastSequence: {batch.last_sequence} "
        f"producerId: {batch.producer_id} producerEpoch: {batch.producer_epoch} "
        f"partitionLeaderEpoch: {batch.partition_leader_epoch} "
        f"isTransactional: {_bool(batch.is_transactional)} "
        f"isControl: {_bool(batch.is_control)} deleteHorizonMs: {horizon} position: {batch.position} "
        f"{time_type}: {batch.max_timestamp_ms} size: {batch.size_bytes} magic: {batch.magic} "
        f"compresscodec: {batch.compression} crc: {batch.crc} isvalid: {_bool(batch.crc_valid)}"
    )


def record_line(record: RecordEvent) -> str:
    line = (
        f"| offset: {record.offset} CreateTime: {record.timestamp_ms} keySize: {record.key_size_bytes} "
        f"valueSize: {record.value_size_bytes} sequence: {record.sequence} "
        f"headerKeys: [{','.join(single_line(name) for name, _ in record.headers)}]"
    )
    if record.control_type is not None:
        line += f" controlType: {record.control_type}"
        if record.coordinator_epoch is not None:
            line += f" coordinatorEpoch: {record.coordinator_epoch}"
        if record.leader_id is not None:
            line += f" leaderId: {record.leader_id} voters: [{','.join(map(str, record.voters))}]"
        return line
    if record.metadata_type is not None:
        line += f" metadataType: {record.metadata_type}"
    hex_mark = " (hex)" if record.encoding == "hex" else ""
    if record.key is not None:
        line += f" key{hex_mark}: {single_line(record.key)}"
    if record.value is not None:
        line += f" payload{hex_mark}: {single_line(record.value)}"
    return line


# --- segments ---------------------------------------------------------------------------------------------

SEGMENT_COLUMNS = (
    Column("kind", 0, "left"),
    Column("file", 0, "left", flexible=True, min_width=FLEXIBLE_MIN_WIDTH),
    Column("base offset", 4, "right"),
    Column("end offset", 3, "right"),
    Column("size (B)", 7, "right"),
    Column("entries", 5, "right"),
    Column("modified (UTC)", 8, "left"),
    Column("problem", 2, "left", flexible=True, min_width=FLEXIBLE_MIN_WIDTH),
)


def kafka_segments_table(listing: KafkaSegmentListing) -> RenderableType:
    residency = residency_by_path(listing)
    columns = list(SEGMENT_COLUMNS)
    if residency is not None:
        columns += columns_by_priority(RESIDENCY_HEADERS, RESIDENCY_PRIORITIES, left=("heat",))
    table = PriorityTable(
        columns,
        table_options={"title": f"segments of {FORMAT_TITLE} {listing.root}", "title_justify": "left"},
    )
    for row in listing.rows:
        cells = [
            Text(row.kind),
            Text(row.label),
            _text(row.base_offset),
            _text(row.end_offset),
            _text(row.size_bytes),
            _text(row.entries),
            _text(row.mtime_iso and row.mtime_iso[:19].replace("T", " ")),
            _text(row.problem),
        ]
        if residency is not None:
            cells += residency_cells(residency.get(str(row.path)), listing.residency.page_size_bytes)
        table.add_row(*cells)
    if residency is not None:
        table.table_options["caption"] = residency_caption(listing.residency)
    return table


# --- query ------------------------------------------------------------------------------------------------


def kafka_query_view(result: KafkaQueryResult) -> RenderableType:
    asked = f"offset {result.offset}" if result.by == "offset" else f"time {result.time_ms}"
    parts: list[RenderableType] = [
        Text(f"{FORMAT_TITLE} {result.root}: the first record at or after {asked}")
    ]
    for hit in result.hits:
        found = "none" if hit.record is None else f"{hit.segment} position {hit.batch.position}"
        where = (
            f"{hit.partition}: {found} (read from position {hit.start_position} of {hit.segment}, as the "
            f"index says; {hit.log_bytes_read} B read)"
            if hit.segment is not None
            else f"{hit.partition}: no segment holds it"
        )
        parts.append(Text(where, style="bold"))
        if hit.batch is not None:
            parts.append(Text(batch_line(hit.batch)))
        if hit.record is not None:
            parts.append(Text(record_line(hit.record)))
        parts += [Text(_event_line(finding)) for finding in hit.findings]
    return Group(*parts)


# --- jsonl and json ---------------------------------------------------------------------------------------

_NULL = "null"
_RECORD_JSON = "{" + ",".join(f'"{field.name}":%s' for field in dataclasses.fields(RecordEvent)) + "}"
_BATCH_JSON = "{" + ",".join(f'"{field.name}":%s' for field in dataclasses.fields(BatchEvent)) + "}"


def write_kafka_jsonl(stream: KafkaDumpStream, out: TextIO) -> None:
    """JSON Lines: the start (kind "dump"), each event as it is read, the finish (kind "end")."""
    out.write(json_line({"kind": "dump", **to_jsonable(stream.start)}) + "\n")
    out.flush()
    for run in stream.batches():
        out.write(_run_jsonl(run))
        out.flush()
    out.write(json_line({"kind": "end", **to_jsonable(stream.finish)}) + "\n")


def _run_jsonl(run: list) -> str:
    """A run of events as JSON Lines. A plain record (no control or metadata fields) is written here by an
    f-string in RecordEvent's field order (test_kafka_commands holds it equal to json_line), rather than
    through kafka_event_json: a third of the CPU a record costs."""
    lines = []
    add = lines.append
    escape, encodings = encode_basestring, _ENCODINGS
    for r in run:
        if type(r) is RecordEvent and r.control_type is None and r.metadata_type is None:
            key, value = r.key, r.value
            add(
                f'{{"kind":"record","offset":{r.offset},"timestamp_ms":{r.timestamp_ms},'
                f'"key_size_bytes":{r.key_size_bytes},"value_size_bytes":{r.value_size_bytes},'
                f'"sequence":{r.sequence},"headers":{_headers_json(r.headers) if r.headers else "[]"},'
                f'"key":{"null" if key is None else escape(key)},'
                f'"value":{"null" if value is None else escape(value)},"encoding":{encodings[r.encoding]},'
                '"control_type":null,"coordinator_epoch":null,"leader_id":null,"voters":[],'
                '"metadata_type":null}'
            )
        else:
            add(kafka_event_json(r))
    lines.append("")
    return "\n".join(lines)


def write_kafka_json_document(stream: KafkaDumpStream, out: TextIO) -> None:
    write_json_document(stream, out, kafka_event_json)


def kafka_event_json(event) -> str:
    """An event as compact JSON: what `json_line` writes of it, batches and records from templates."""
    kind = type(event)
    if kind is RecordEvent:
        return _record_json(event)
    if kind is BatchEvent:
        return _batch_json(event)
    return json_line(event)


def _string(text: str | None) -> str:
    return _NULL if text is None else encode_basestring(text)


def _flag(value: bool) -> str:
    return "true" if value else "false"


def _int(value: int | None) -> str:
    return _NULL if value is None else str(value)


def _headers_json(headers: tuple) -> str:
    return "[" + ",".join([f"[{_string(name)},{_string(value)}]" for name, value in headers]) + "]"


def _record_json(r: RecordEvent) -> str:
    headers = _headers_json(r.headers)
    key, value = r.key, r.value
    if r.control_type is None and r.metadata_type is None:  # the common record: its tail is constant
        return _PLAIN_RECORD_JSON % (
            r.offset, r.timestamp_ms, r.key_size_bytes, r.value_size_bytes, r.sequence, headers,
            _NULL if key is None else encode_basestring(key),
            _NULL if value is None else encode_basestring(value), _ENCODINGS[r.encoding],
        )  # fmt: skip
    return _RECORD_JSON % (
        '"record"', r.offset, r.timestamp_ms, r.key_size_bytes, r.value_size_bytes, r.sequence, headers,
        _string(key), _string(value), _string(r.encoding), _string(r.control_type),
        _int(r.coordinator_epoch), _int(r.leader_id), "[" + ",".join(map(str, r.voters)) + "]",
        _string(r.metadata_type),
    )  # fmt: skip


_ENCODINGS = {"utf8": '"utf8"', "hex": '"hex"'}
_PLAIN_RECORD_JSON = _RECORD_JSON.replace('"kind":%s', '"kind":"record"', 1).replace(
    '"control_type":%s,"coordinator_epoch":%s,"leader_id":%s,"voters":%s,"metadata_type":%s',
    '"control_type":null,"coordinator_epoch":null,"leader_id":null,"voters":[],"metadata_type":null',
)


def _batch_json(b: BatchEvent) -> str:
    return _BATCH_JSON % (
        '"batch"', _string(b.segment), b.position, b.base_offset, b.last_offset, b.count, b.base_sequence,
        b.last_sequence, b.producer_id, b.producer_epoch, b.partition_leader_epoch, _flag(b.is_transactional),
        _flag(b.is_control), _int(b.delete_horizon_ms), _string(b.timestamp_type), b.max_timestamp_ms,
        b.size_bytes, b.magic, _string(b.compression), b.crc, _flag(b.crc_valid),
    )  # fmt: skip
