"""`mqinspect store ...`: create, write and inspect RocketMQ-format stores; inspect Kafka log directories.

The inspection commands (this module) open any store read-only, with pread and never mmap, so they are safe
on a store a broker is writing. Each parses its options, asks `store.inspection` for a snapshot and renders
it; errors go up to the one ladder in `mqinspect.cli.app`. Exit status: 0 ok, 1 findings (`verify` found
problems, `dump` stopped at a corrupt record), 2 bad input (not a store, unknown queue, not a record start).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import ClassVar

import click
import typer

from mqinspect.cli.lazy import LazyGroup
from mqinspect.cli.options import OutputFormat, format_option, wide_option
from mqinspect.errors import ExitStatus
from mqinspect.render.console import stdout_console
from mqinspect.render.dump import write_cards, write_json_document, write_jsonl, write_lines
from mqinspect.render.layout import wide_console
from mqinspect.render.machine import write_json
from mqinspect.render.store import (
    consume_queue_table,
    query_view,
    segments_table,
    stat_view,
    verify_view,
)
from store.inspection.formats import detect_format, list_segments, store_file_paths, store_stat
from store.inspection.kafka.store_format import KAFKA
from store.inspection.rocketmq.cq import consume_queue_view
from store.inspection.rocketmq.dump import DumpStream
from store.inspection.rocketmq.query import query_by_key, query_by_msg_id, query_by_offset
from store.inspection.rocketmq.reading import LogEndReason, open_layout
from store.inspection.rocketmq.store_format import ROCKETMQ
from store.inspection.rocketmq.verify import DEFAULT_INDEX_CHECKS, verify_store


class StoreGroup(LazyGroup):
    """`mqinspect store`: the inspection commands below, and the writing ones, imported only when used (they
    bring the whole write path of the store)."""

    COMMAND_MODULES: ClassVar[Mapping[str, str]] = dict.fromkeys(
        ("init", "produce", "consume", "recover", "clean"), "mqinspect.cli.store_write"
    )


store_app = typer.Typer(
    cls=StoreGroup,
    help="Create, write and inspect RocketMQ-format stores, inspect Kafka log directories (read-only).",
    no_args_is_help=True,
)

INSPECTION = "Inspection (read-only)"

StoreDir = typer.Argument(
    ..., help="The store root: the directory that holds commitlog/.", show_default=False
)
AnyStoreDir = typer.Argument(
    ...,
    help="The store root (the directory that holds commitlog/), or a Kafka log dir, partition directory "
    "(topic-N) or .log file.",
    show_default=False,
)


def utf8_text(param: typer.CallbackParam, value: str | None) -> str | None:
    """Topics, keys, tags and groups are UTF-8 in the store: refuse bytes the command line could not decode
    (Python hands them over as surrogates) here, with the option's name, not in the encoder."""
    if value is not None:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise typer.BadParameter(f"{value!r} is not UTF-8 text", param=param) from None
    return value


def is_kafka(path: Path) -> bool:
    """Whether `path` is a Kafka log dir, partition or segment; a directory of neither format is bad input,
    one line naming what each format looked for. Anything else goes to the RocketMQ commands as before."""
    if KAFKA.recognises(path):
        return True
    if Path(path).is_dir() and not ROCKETMQ.recognises(path):
        detect_format(path)  # raises NotAStore with each format's reason
    return False


def refuse_options(ctx: typer.Context, log_format: str, given: Mapping[str, object]) -> None:
    """Options of the other format: one line, exit 2."""
    named = [name for name, value in given.items() if value is not None and value is not False]
    if named:
        raise click.UsageError(f"{', '.join(named)}: not for a {log_format}", ctx=ctx)


def emit(snapshot, output: str, table, wide: bool = False) -> None:
    """Data to stdout: the snapshot as JSON, or its table (fitted to the terminal, or whole with --wide)."""
    if output == OutputFormat.JSON:
        write_json(snapshot, sys.stdout)
    else:
        console = stdout_console()
        (wide_console(console) if wide else console).print(table(snapshot))


@store_app.command("stat", rich_help_panel=INSPECTION)
def stat(store_dir: Path = AnyStoreDir, output: str = format_option(), wide: bool = wide_option()) -> None:
    """Segments, CommitLog min/max offsets, queues, checkpoint, run state, index and dispatch lag; for a
    Kafka log directory: each partition's segments, log start and end offsets, recovery point and high
    watermark (the broker's checkpoints), leader epochs, producers, and whether it shut down cleanly.

    Finding the max offset reads the records after the newest one a consume queue points at (the whole last
    written CommitLog segment when none does).
    """
    snapshot = store_stat(store_dir)
    if getattr(snapshot, "format", None) == KAFKA.name:
        from mqinspect.render.kafka import kafka_stat_view

        emit(snapshot, output, kafka_stat_view, wide)
    else:
        emit(snapshot, output, stat_view, wide)


@store_app.command("segments", rich_help_panel=INSPECTION)
def segments(
    store_dir: Path = AnyStoreDir,
    residency: bool = typer.Option(True, "--residency/--no-residency", help="Measure page-cache residency."),
    chunks: int = typer.Option(16, "--chunks", min=1, max=1024, help="Cells of each file's heat strip."),
    output: str = format_option(),
    wide: bool = wide_option(),
) -> None:
    """One row per CommitLog, ConsumeQueue and index file: offsets, sizes, written bytes, entries, mtime, and
    how much of it is in the page cache, dirty and mlocked, with a heat strip per file.

    Lists stores that break RocketMQ's load rules too, with the broken rules underneath. For Kafka: one row
    per .log, .index, .timeindex, .txnindex and producer snapshot, with its base and end offsets and entries.
    """
    # Imported here: finding who mlocks each file reads /proc, which no other store command needs.
    from probes.residency.segments import measure_segments

    # Residency first: finding where each segment's data ends reads it, and readahead would pull it in.
    measured = measure_segments(store_file_paths(store_dir), chunks=chunks) if residency else None
    listing = list_segments(store_dir)
    if measured is not None:
        listing = dataclasses.replace(listing, residency=measured)
    if getattr(listing, "format", None) == KAFKA.name:
        from mqinspect.render.kafka import kafka_segments_table

        emit(listing, output, kafka_segments_table, wide)
    else:
        emit(listing, output, segments_table, wide)


@store_app.command("dump", rich_help_panel=INSPECTION)
def dump(
    target: Path = typer.Argument(
        ...,
        help="A store root, or one CommitLog segment file (its name gives its start offset); or a Kafka "
        "log dir, partition directory or .log file.",
        show_default=False,
    ),
    ctx: typer.Context = None,
    from_offset: int = typer.Option(
        None,
        "--from",
        min=0,
        help="RocketMQ: physical offset of the first record (default: the CommitLog's min).",
    ),
    count: int = typer.Option(
        None,
        "--count",
        "-n",
        min=1,
        help="How many messages at most (RocketMQ, default 20); Kafka: batches (default: all).",
    ),
    max_bytes: int = typer.Option(
        None,
        "--max-bytes",
        min=1,
        help="Stop before the message that would take the messages dumped past this many bytes.",
    ),
    body: bool = typer.Option(False, "--body", help="Include message bodies (UTF-8 text, else hex)."),
    check_crc: bool = typer.Option(
        True, "--check-crc/--no-check-crc", help="Stop at a record whose body CRC does not match."
    ),
    verbose: bool = typer.Option(
        False, "--verbose", "-v", help="Table: every field of each message in a block, not one line."
    ),
    from_record_offset: int = typer.Option(
        None, "--from-offset", min=0, help="Kafka: the first record offset (through the .index)."
    ),
    from_time: str = typer.Option(
        None,
        "--from-time",
        help="Kafka: the first record at or after this time, epoch ms or ISO-8601 (through the .timeindex).",
    ),
    deep: bool = typer.Option(False, "--deep", help="Kafka: each batch's records too, one line each."),
    values: str = typer.Option(
        None,
        "--values",
        click_type=click.Choice(["text", "hex"]),
        help="Kafka, with --deep: keys and values as text (printable UTF-8, else hex) or hex.",
    ),
    output: str = format_option(OutputFormat.TABLE, OutputFormat.JSON, OutputFormat.JSONL),
) -> int:
    """CommitLog records from a physical offset, with the blanks that end segments and why the log ends,
    written as they are read. For Kafka: the batches (with --deep, the records) of a log dir, partition or
    .log file, as kafka-dump-log prints them; --max-bytes bounds the bytes of the logs read.

    The table has one line per message (offset, size, queue, queue offset, store time, keys, tags);
    --verbose shows every field. jsonl is one object per line: the dump's start, each record, its end.

    Exit 1 if the walk stops at a corrupt record (Kafka: if anything is wrong in what was read).
    """
    kafka_only = {
        "--from-offset": from_record_offset,
        "--from-time": from_time,
        "--deep": deep,
        "--values": values,
    }
    if is_kafka(target):
        refuse_options(
            ctx,
            KAFKA.title,
            {"--from": from_offset, "--body": body, "--no-check-crc": not check_crc, "--verbose": verbose},
        )
        return _kafka_dump(
            target,
            from_record_offset,
            _time_ms(from_time, "--from-time"),
            deep,
            values,
            max_bytes,
            count,
            output,
        )
    refuse_options(ctx, ROCKETMQ.title, kafka_only)
    if count is None:
        count = 20
    stream = DumpStream(
        target, from_offset, count, include_body=body, check_crc=check_crc, max_bytes=max_bytes
    )
    if output == OutputFormat.JSONL:
        write_jsonl(stream, sys.stdout)
    elif output == OutputFormat.JSON:
        write_json_document(stream, sys.stdout)
    elif verbose:
        write_cards(stream, stdout_console())
    else:
        write_lines(stream, sys.stdout)
    end = stream.finish.end if stream.finish else None
    return ExitStatus.FINDINGS if end is not None and end.reason is LogEndReason.CORRUPT else ExitStatus.OK


def _kafka_dump(target, from_offset, from_time_ms, deep, values, max_bytes, count, output) -> int:
    from mqinspect.render.kafka import write_kafka_json_document, write_kafka_jsonl, write_kafka_lines
    from store.inspection.kafka.dump import KafkaDumpStream

    stream = KafkaDumpStream(
        target,
        from_offset=from_offset,
        from_time_ms=from_time_ms,
        deep=deep,
        values=values or "text",
        max_bytes=max_bytes,
        count=count,
    )
    if output == OutputFormat.JSONL:
        write_kafka_jsonl(stream, sys.stdout)
    elif output == OutputFormat.JSON:
        write_kafka_json_document(stream, sys.stdout)
    else:
        write_kafka_lines(stream, sys.stdout)
    return ExitStatus.FINDINGS if stream.finish and stream.finish.finding_count else ExitStatus.OK


@store_app.command("verify", rich_help_panel=INSPECTION)
def verify(
    store_dir: Path = AnyStoreDir,
    index_checks: int = typer.Option(
        DEFAULT_INDEX_CHECKS,
        "--index-checks",
        min=0,
        help="Check at most this many index entries (and keyed records), an even sample beyond it (0: all).",
    ),
    output: str = format_option(),
) -> int:
    """Check layout, every CommitLog record (CRC), every ConsumeQueue entry, index entries and the checkpoint,
    and that every record is reachable through its ConsumeQueue and each of its keys through the index.

    For Kafka: every batch's CRC and records, offsets against each other and the file names, the .index and
    .timeindex against the batches, producer snapshots' CRCs, every checkpoint file, trailing garbage.

    Exit 0 if all is well, 1 if anything is wrong; every problem is listed with its file and offset.
    """
    if is_kafka(store_dir):
        from mqinspect.render.kafka import kafka_verify_view
        from store.inspection.kafka.verify import verify_kafka

        kafka_report = verify_kafka(store_dir)
        emit(kafka_report, output, kafka_verify_view)
        return ExitStatus.OK if kafka_report.ok else ExitStatus.FINDINGS
    report = verify_store(store_dir, index_check_limit=index_checks or None)
    emit(report, output, verify_view)
    return ExitStatus.OK if report.ok else ExitStatus.FINDINGS


DEFAULT_MAX_HITS = 64  # MessageStoreConfig.maxMsgsNumBatch: what a broker answers at most


def _time_ms(value: str | None, option: str) -> int | None:
    """--begin/--end: epoch milliseconds, or ISO-8601 (a time without a zone is local time)."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is neither epoch milliseconds nor an ISO-8601 time (e.g. 2024-05-01T12:00:00Z)",
            param_hint=option,
        ) from None
    return round(moment.timestamp() * 1000)


@store_app.command("query", rich_help_panel=INSPECTION)
def query(
    ctx: typer.Context,
    store_dir: Path = AnyStoreDir,
    key: str = typer.Option(
        None, "--key", "-k", callback=utf8_text, help="A message key (a KEYS token or the UNIQ_KEY)."
    ),
    offset: int = typer.Option(
        None,
        "--offset",
        min=0,
        help="RocketMQ: a physical offset, the record there. Kafka: a record offset (through the .index).",
    ),
    msg_id: str = typer.Option(None, "--msg-id", help="An offsetMsgId (store host + physical offset)."),
    topic: str = typer.Option(
        None, "--topic", "-t", callback=utf8_text, help="With --key: the topic (default: every topic)."
    ),
    begin: str = typer.Option(None, "--begin", help="With --key: earliest store time, epoch ms or ISO-8601."),
    end: str = typer.Option(None, "--end", help="With --key: latest store time, epoch ms or ISO-8601."),
    max_hits: int = typer.Option(
        None, "--max", min=1, help=f"With --key: index hits per topic at most [default: {DEFAULT_MAX_HITS}]."
    ),
    body: bool = typer.Option(False, "--body", help="Include message bodies (UTF-8 text, else hex)."),
    time: str = typer.Option(
        None,
        "--time",
        help="Kafka: the first record at or after this time, epoch ms or ISO-8601 (through the .timeindex).",
    ),
    values: str = typer.Option(
        None,
        "--values",
        click_type=click.Choice(["text", "hex"]),
        help="Kafka: keys and values as text (printable UTF-8, else hex) or hex.",
    ),
    output: str = format_option(),
) -> None:
    """Find messages by key (through the index, then checked against the records), offset or message id.

    Exactly one of --key, --offset, --msg-id. The index compares key hashes only, so --key decodes every
    hit and reports how many were hash collisions.

    Kafka log dir, partition or .log file: exactly one of --offset (a record offset) or --time, in each
    partition; --key, --msg-id, --topic, --begin, --end, --max and --body are RocketMQ's.
    """
    if is_kafka(store_dir):
        _kafka_query(ctx, store_dir, offset, time, values, output, key=key, msg_id=msg_id, topic=topic,
                     begin=begin, end=end, max_hits=max_hits, body=body)  # fmt: skip
        return
    refuse_options(ctx, ROCKETMQ.title, {"--time": time, "--values": values})
    modes = [
        name
        for name, value in (("--key", key), ("--offset", offset), ("--msg-id", msg_id))
        if value is not None
    ]
    if len(modes) != 1:
        raise click.UsageError("give exactly one of --key, --offset, --msg-id", ctx=ctx)
    key_only = {"--topic": topic, "--begin": begin, "--end": end, "--max": max_hits}
    given = [name for name, value in key_only.items() if value is not None]
    if key is None and given:
        raise click.UsageError(f"{', '.join(given)}: only with --key", ctx=ctx)
    if key is not None:
        result = query_by_key(
            store_dir,
            key,
            topic=topic,
            begin_ms=_time_ms(begin, "--begin"),
            end_ms=_time_ms(end, "--end"),
            max_hits=max_hits or DEFAULT_MAX_HITS,
            include_body=body,
        )
    elif offset is not None:
        result = query_by_offset(store_dir, offset, include_body=body)
    else:
        result = query_by_msg_id(store_dir, msg_id, include_body=body)
    emit(result, output, query_view)


def _kafka_query(ctx, store_dir, offset, time, values, output, **rocketmq_options) -> None:
    from mqinspect.render.kafka import kafka_query_view
    from store.inspection.kafka.query import query_kafka

    names = {"key": "--key", "msg_id": "--msg-id", "topic": "--topic", "begin": "--begin", "end": "--end",
             "max_hits": "--max", "body": "--body"}  # fmt: skip
    refuse_options(ctx, KAFKA.title, {names[name]: value for name, value in rocketmq_options.items()})
    if (offset is None) == (time is None):
        raise click.UsageError("give exactly one of --offset, --time for a Kafka log", ctx=ctx)
    result = query_kafka(store_dir, offset=offset, time_ms=_time_ms(time, "--time"), values=values or "text")
    emit(result, output, kafka_query_view)


@store_app.command("cq", rich_help_panel=INSPECTION)
def cq(
    store_dir: Path = StoreDir,
    topic: str = typer.Option(..., "--topic", "-t", callback=utf8_text, help="Topic name."),
    queue: int = typer.Option(0, "--queue", "-q", min=0, help="Queue id."),
    from_offset: int = typer.Option(
        None, "--from", min=0, help="First queue offset (default: the queue's min)."
    ),
    count: int = typer.Option(100, "--count", "-n", min=1, help="How many entries at most."),
    output: str = format_option(),
    wide: bool = wide_option(),
) -> None:
    """ConsumeQueue entries of one queue: queue offset, CommitLog offset, size and tags code."""
    view = consume_queue_view(open_layout(store_dir), topic, queue, from_offset, count)
    emit(view, output, consume_queue_table, wide)


def register(app: typer.Typer) -> None:
    app.add_typer(store_app, name="store", rich_help_panel="Store")
