"""`mqinspect store init|produce|consume|recover`: commands that create or change a store.

Each says what it changes. Inspection commands (read-only) live in `mqinspect.cli.store`.
"""

from __future__ import annotations

import dataclasses
import errno
import signal
from pathlib import Path

import click
import typer

from mqinspect.cli.options import format_option, wide_option
from mqinspect.cli.store import emit, utf8_text
from mqinspect.errors import BadInput, ExitStatus, MqinspectError
from mqinspect.render.console import stderr_console
from mqinspect.render.store_write import clean_table, consume_table, init_table, produce_table, recovery_table
from store import codec
from store.config import FlushDiskType, StoreConfig, WarmupMode
from store.errors import StoreError
from store.layout import discover_store
from store.message_store import MessageStore
from store.recovery import ScanScope, plan_recovery
from store.retention import plan_clean
from store.store_sizes import save_store_sizes, store_config_for
from store.workload import ProduceReport, ProduceSpec, ProduceStopped, build_message, consume, produce

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
        except (ValueError, KeyError, OverflowError):  # OverflowError: 1e400 is an infinite float
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
    sizes_file = _create_store(store_dir, config)
    _say(f"created {store_dir} (sizes saved in {sizes_file})")
    emit(config, output, init_table)


def _create_store(store_dir: Path, config: StoreConfig) -> Path:
    """The directories of an empty store and the sizes it is made with; returns the sizes file."""
    for name in ("commitlog", "consumequeue", "index", "config"):
        (store_dir / name).mkdir(parents=True, exist_ok=True)
    return save_store_sizes(store_dir, config)


def _is_new_store(store_dir: Path) -> bool:
    """A directory to create a store in, as `init` takes it: missing, or empty."""
    return not store_dir.exists() or (store_dir.is_dir() and not any(store_dir.iterdir()))


def _open_store(store_dir: Path, **changes) -> MessageStore:
    if not (store_dir / "commitlog").is_dir():
        discover_store(store_dir)  # raises NotAStore with a hint
    config = dataclasses.replace(store_config_for(store_dir), **changes)
    return MessageStore(store_dir, config).start()


def produce_command(
    store_dir: Path = StoreDir,
    topic: str = typer.Option(..., "--topic", "-t", callback=utf8_text, help="Topic name."),
    queue: int = typer.Option(0, "--queue", "-q", min=0, help="Queue id."),
    count: int = typer.Option(1000, "--count", "-n", min=1, help="How many messages."),
    size: int = typer.Option(1024, "--size", click_type=SIZE, help="Body size."),
    keys: str = typer.Option(
        None, "--keys", callback=utf8_text, help="KEYS property; {n} becomes the message number."
    ),
    tags: str = typer.Option(
        None, "--tags", callback=utf8_text, help="TAGS property; {n} becomes the message number."
    ),
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
    """Append messages to a store (creating it, with RocketMQ's default sizes, if the directory is missing or
    empty) and report throughput and put latency.

    Exit 1 if a put fails (a full disk): the report then shows the messages acknowledged before it, and
    one line says why it stopped."""
    spec = ProduceSpec(topic, queue, count, size, keys, tags, batch, rate)
    _check_messages(spec, store_config_for(store_dir))
    if _is_new_store(store_dir):
        sizes_file = _create_store(store_dir, StoreConfig())
        _say(
            f"created {store_dir} with RocketMQ's default sizes (saved in {sizes_file}; "
            "`store init` sets others)"
        )
    store = _open_store(
        store_dir, flush_disk_type=flush, warmup=warmup, enabled_append_prop_crc=append_prop_crc
    )
    _say(
        f"appending {count} messages of {size} B to {store_dir} ({flush} flush, warm-up {warmup}); "
        "Ctrl-C stops"
    )
    stop = _stop_on_sigterm()
    try:
        report = produce(store, spec, should_stop=stop)
    except ProduceStopped as stopped:
        problems = store.shutdown()
        emit(stopped.report, output, produce_table)
        raise _stopped_producing(stopped, problems) from stopped
    except BaseException:
        _report_shutdown(store.shutdown())
        raise
    _report_shutdown(store.shutdown())
    emit(report, output, produce_table)
    return ExitStatus.INTERRUPTED if report.interrupted else ExitStatus.OK


def _check_messages(spec: ProduceSpec, config: StoreConfig) -> None:
    """Refuse, before the store is touched, messages the store would refuse at the first put: a body over
    maxMessageSize (checked before one is built: --size 100g must not allocate 100 GB), a topic or
    properties RocketMQ cannot hold."""
    if spec.body_size_bytes > config.max_message_body_size:
        raise BadInput(
            f"--size {spec.body_size_bytes:,} B exceeds the store's maxMessageSize "
            f"({config.max_message_body_size:,} B)"
        )
    try:
        codec.prepare_record(build_message(spec, 0), max_body_size=config.max_message_body_size)
    except (StoreError, ValueError) as error:
        raise BadInput(f"cannot produce these messages: {error}") from None


_DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def _disk_full(failure: BaseException) -> str | None:
    """If a full disk (or quota) is behind `failure`, however many store errors wrap it: the innermost
    store error's words for it (they name the file), else None."""
    said, error, seen = str(failure), failure, set()
    while error is not None and id(error) not in seen:
        if isinstance(error, OSError) and error.errno in _DISK_FULL_ERRNOS:
            return said
        if isinstance(error, StoreError):
            said = str(error)
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def _stopped_producing(stopped: ProduceStopped, problems: list[str]) -> MqinspectError:
    """The one line after the report: why production stopped, and that what was acknowledged is kept.

    The shutdown steps a full disk also fails (flushing queues, saving offsets) are counted, not listed:
    the store keeps its `abort` file, so its next start recovers from the CommitLog what they left out.
    --debug lists them."""
    report: ProduceReport = stopped.report
    disk_full = _disk_full(stopped.failure)
    cause = f"the disk is full: {disk_full}" if disk_full else f"a put failed: {stopped.failure}"
    kept = f"the {report.messages:,} messages reported were acknowledged and are kept"
    if report.last_physical_offset is not None:
        kept += f" (the last at offset {report.last_physical_offset:,})"
    left = ""
    if problems:
        if _debugging():
            _report_shutdown(problems)
        left = (
            f"; {len(problems)} shutdown step{'s' * (len(problems) > 1)} could not finish either, so the "
            "store's next start recovers it"
        )
    return MqinspectError(f"{cause}; {kept}{left}")


def _debugging() -> bool:
    """--debug, which the root command takes wherever it was given."""
    context = click.get_current_context(silent=True)
    return bool(context and context.find_root().params.get("debug"))


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
    topic: str = typer.Option(..., "--topic", "-t", callback=utf8_text, help="Topic name."),
    queue: int = typer.Option(0, "--queue", "-q", min=0, help="Queue id."),
    group: str = typer.Option(
        None,
        "--group",
        "-g",
        callback=utf8_text,
        help="Consumer group: resume from, and commit, its offset.",
    ),
    from_offset: int = typer.Option(
        None, "--from", min=0, help="First queue offset (default: group's, or min)."
    ),
    count: int = typer.Option(32, "--count", "-n", min=1, help="How many messages at most."),
    output: str = format_option(),
    wide: bool = wide_option(),
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
    emit(report, output, consume_table, wide)


def recover_command(
    store_dir: Path = StoreDir,
    dry_run: bool = typer.Option(False, "--dry-run", help="Only say what recovery would do; change nothing."),
    full_scan: bool = typer.Option(
        False,
        "--full-scan",
        help="With --dry-run: read every record recovery reads, from its start segment (default: only the "
        "records from where every consume queue is known complete: the newest dispatched record after a "
        "clean shutdown, the checkpoint's after a crash).",
    ),
    output: str = format_option(),
) -> None:
    """Recover a store as RocketMQ does at start-up: cut the log after its last valid record and rebuild the
    consume queues and index; normal after a clean shutdown, abnormal after a crash.

    The dry run checks (CRC) the records from where every consume queue is known complete (the newest
    dispatched record after a clean shutdown, the newest the checkpoint covers after a crash) to the end: it
    finds a torn tail, a crash mid-roll, queue entries past the end, in time that does not grow with the
    segments.
    A damaged record before that point, which recovery would also cut at, is `store verify`'s to find (or
    --full-scan's)."""
    if dry_run:
        plan = plan_recovery(
            discover_store(store_dir, **_known_sizes(store_dir)),
            store_config_for(store_dir),
            scope=ScanScope.FROM_RECOVERY_START if full_scan else ScanScope.DISPATCHED_TAIL,
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
