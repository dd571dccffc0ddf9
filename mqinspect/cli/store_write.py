"""`mqinspect store init|produce|consume|recover`: commands that create or change a store.

Each says what it changes. Inspection commands (read-only) live in `mqinspect.cli.store`.
"""

from __future__ import annotations

import dataclasses
import signal
from pathlib import Path

import click
import typer

from mqinspect.cli.options import format_option
from mqinspect.cli.store import emit
from mqinspect.errors import BadInput, ExitStatus
from mqinspect.render.console import stderr_console
from mqinspect.render.store_write import clean_table, consume_table, init_table, produce_table, recovery_table
from store.config import FlushDiskType, StoreConfig, WarmupMode
from store.layout import discover_store
from store.message_store import MessageStore
from store.recovery import plan_recovery
from store.retention import plan_clean
from store.store_sizes import save_store_sizes, store_config_for
from store.workload import ProduceSpec, consume, produce

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1 << 10,
    "kb": 1000,
    "kib": 1 << 10,
    "m": 1 << 20,
    "mb": 1000**2,
    "mib": 1 << 20,
    "g": 1 << 30,
    "gb": 1000**3,
    "gib": 1 << 30,
}


class ByteSize(click.ParamType):
    """A size such as 4096, 64k, 64KiB, 1MB or 1g (k/m/g alone are binary, as in dd and vmtouch)."""

    name = "SIZE"

    def convert(self, value, param, ctx) -> int:
        if isinstance(value, int):
            return value
        text = str(value).strip().lower()
        number = text.rstrip("kmgib")
        unit = text[len(number) :]
        try:
            size = int(float(number) * _UNITS[unit])
        except (ValueError, KeyError):
            self.fail(f"{value!r} is not a size (examples: 4096, 64k, 1MiB, 1g)", param, ctx)
        if size <= 0:
            self.fail(f"{value!r} must be positive", param, ctx)
        return size


SIZE = ByteSize()
StoreDir = typer.Argument(
    ..., help="The store root: the directory that holds commitlog/.", show_default=False
)


def _say(message: str) -> None:
    """What a command changes, on stderr, so stdout stays data."""
    stderr_console().print(message, style="dim")


def init(
    store_dir: Path = StoreDir,
    segment_size: int = typer.Option(
        1 << 30, "--segment-size", click_type=SIZE, help="CommitLog segment size."
    ),
    cq_entries: int = typer.Option(300_000, "--cq-entries", min=1, help="ConsumeQueue entries per file."),
    index_slots: int = typer.Option(5_000_000, "--index-slots", min=1, help="Hash slots per index file."),
    index_entries: int = typer.Option(
        None, "--index-entries", min=1, help="Entries per index file (4 x slots)."
    ),
    output: str = format_option(),
) -> None:
    """Create an empty store with these segment sizes (RocketMQ's defaults unless given)."""
    if store_dir.exists() and any(store_dir.iterdir()) and not (store_dir / "commitlog").is_dir():
        raise BadInput(f"{store_dir} exists and is not empty; give a new or empty directory")
    config = StoreConfig(
        mapped_file_size_commitlog=segment_size,
        consume_queue_entries_per_file=cq_entries,
        max_hash_slot_num=index_slots,
        max_index_num=index_entries or index_slots * 4,
    )
    for name in ("commitlog", "consumequeue", "index", "config"):
        (store_dir / name).mkdir(parents=True, exist_ok=True)
    sizes_file = save_store_sizes(store_dir, config)
    _say(f"created {store_dir} (sizes saved in {sizes_file})")
    emit(config, output, init_table)


def _open_store(store_dir: Path, **changes) -> MessageStore:
    if not (store_dir / "commitlog").is_dir():
        discover_store(store_dir)  # raises NotAStore with a hint
    config = dataclasses.replace(store_config_for(store_dir), **changes)
    return MessageStore(store_dir, config).start()


def produce_command(
    store_dir: Path = StoreDir,
    topic: str = typer.Option(..., "--topic", "-t", help="Topic name."),
    queue: int = typer.Option(0, "--queue", "-q", min=0, help="Queue id."),
    count: int = typer.Option(1000, "--count", "-n", min=1, help="How many messages."),
    size: int = typer.Option(1024, "--size", click_type=SIZE, help="Body size."),
    keys: str = typer.Option(None, "--keys", help="KEYS property; {n} becomes the message number."),
    tags: str = typer.Option(None, "--tags", help="TAGS property; {n} becomes the message number."),
    batch: int = typer.Option(1, "--batch", min=1, help="Messages per put (one MessageExtBatch)."),
    flush: FlushDiskType = typer.Option(FlushDiskType.ASYNC, "--flush", help="Flush mode."),
    warmup: WarmupMode = typer.Option(WarmupMode.NONE, "--warmup", help="Pre-fault new segments."),
    rate: float = typer.Option(
        None, "--rate", min=0.001, help="Messages per second (default: as fast as possible)."
    ),
    append_prop_crc: bool = typer.Option(
        False,
        "--append-prop-crc",
        help="End each record with RocketMQ 5's __CRC32# property (enabledAppendPropCRC): a CRC over the "
        "whole record, so verify and recovery also find damaged header fields, topic and properties.",
    ),
    output: str = format_option(),
) -> int:
    """Append messages to a store (creating it if needed) and report throughput and put latency."""
    store = _open_store(
        store_dir, flush_disk_type=flush, warmup=warmup, enabled_append_prop_crc=append_prop_crc
    )
    spec = ProduceSpec(topic, queue, count, size, keys, tags, batch, rate)
    _say(
        f"appending {count} messages of {size} B to {store_dir} ({flush} flush, warm-up {warmup}); "
        "Ctrl-C stops"
    )
    stop = _stop_on_sigterm()
    try:
        report = produce(store, spec, should_stop=stop)
    finally:
        _report_shutdown(store.shutdown())
    emit(report, output, produce_table)
    return ExitStatus.INTERRUPTED if report.interrupted else ExitStatus.OK


def _stop_on_sigterm():
    """SIGTERM ends production like Ctrl-C: the store still shuts down cleanly."""
    requested = []
    signal.signal(signal.SIGTERM, lambda _signum, _frame: requested.append(True))
    return lambda: bool(requested)


def _report_shutdown(problems: list[str]) -> None:
    for problem in problems:
        stderr_console().print(f"mqinspect: warning: {problem}", style="yellow")


def consume_command(
    store_dir: Path = StoreDir,
    topic: str = typer.Option(..., "--topic", "-t", help="Topic name."),
    queue: int = typer.Option(0, "--queue", "-q", min=0, help="Queue id."),
    group: str = typer.Option(
        None, "--group", "-g", help="Consumer group: resume from, and commit, its offset."
    ),
    from_offset: int = typer.Option(
        None, "--from", min=0, help="First queue offset (default: group's, or min)."
    ),
    count: int = typer.Option(32, "--count", "-n", min=1, help="How many messages at most."),
    output: str = format_option(),
) -> None:
    """Read messages of one queue through its ConsumeQueue; a group resumes from and commits its offset."""
    store = _open_store(store_dir)
    try:
        if store.consume_queues.find(topic, queue) is None:
            raise BadInput(f"no consume queue for topic {topic!r} queue {queue} in {store_dir}")
        report = consume(store, topic, queue, group=group, from_offset=from_offset, count=count)
    finally:
        _report_shutdown(store.shutdown())
    if report.committed:
        _say(f"committed offset {report.next_offset} for group {group} in config/consumerOffset.json")
    emit(report, output, consume_table)


def recover_command(
    store_dir: Path = StoreDir,
    dry_run: bool = typer.Option(False, "--dry-run", help="Only say what recovery would do; change nothing."),
    output: str = format_option(),
) -> None:
    """Recover a store as RocketMQ does at start-up: cut the log after its last valid record and rebuild the
    consume queues and index; normal after a clean shutdown, abnormal after a crash."""
    if dry_run:
        plan = plan_recovery(
            discover_store(store_dir, **_known_sizes(store_dir)), store_config_for(store_dir)
        )
    else:
        store = _open_store(store_dir)
        plan = store.recovery
        _report_shutdown(store.shutdown())
        _say(f"recovered {store_dir}: the log ends at {plan.process_offset}")
    emit(plan, output, recovery_table)


def clean_command(
    store_dir: Path = StoreDir,
    dry_run: bool = typer.Option(False, "--dry-run", help="Only say what would be deleted; change nothing."),
    output: str = format_option(),
) -> None:
    """Delete expired files now, as a manual delete does in RocketMQ: CommitLog segments older than the
    reserved time (all but the newest when the disk is over its ratio), then the consume-queue and index
    files that only point below the new minimum. The newest segment is never deleted."""
    if dry_run:
        result = plan_clean(store_dir, store_config_for(store_dir), manual_request=True)
    else:
        store = _open_store(store_dir)
        try:
            result = store.clean()
        finally:
            _report_shutdown(store.shutdown())
        _say(f"deleted {len(result.deletions)} files ({result.bytes_freed:,} bytes) from {store_dir}")
    emit(result, output, clean_table)


def _known_sizes(store_dir: Path) -> dict[str, int]:
    config = store_config_for(store_dir)
    return {
        "commitlog_size": config.mapped_file_size_commitlog,
        "cq_size": config.mapped_file_size_consume_queue,
    }


def register(store_app: typer.Typer) -> None:
    panel = "Writing (changes the store)"
    store_app.command("init", rich_help_panel=panel)(init)
    store_app.command("produce", rich_help_panel=panel)(produce_command)
    store_app.command("consume", rich_help_panel=panel)(consume_command)
    store_app.command("recover", rich_help_panel=panel)(recover_command)
    store_app.command("clean", rich_help_panel=panel)(clean_command)
