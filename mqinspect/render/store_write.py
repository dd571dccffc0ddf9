"""Tables for the commands that write a store: init, produce, consume, recover."""

from __future__ import annotations

from datetime import datetime

from rich.table import Table

from mqinspect.render.cells import UNAVAILABLE
from mqinspect.render.layout import PriorityTable, columns_by_priority
from mqinspect.render.units import human_rate, per_second
from store.config import StoreConfig
from store.recovery import RecoveryMode, RecoveryPlan, ScanScope
from store.retention import CleanPlan, CleanReport
from store.workload import ConsumeReport, ProduceReport


def _key_value_table(title: str, rows: list[tuple[str, str, str]]) -> Table:
    table = Table(title=title, title_justify="left", box=None, pad_edge=False)
    table.add_column("", style="bold", no_wrap=True)
    table.add_column("value", justify="right", no_wrap=True)
    table.add_column("meaning", style="dim")
    for row in rows:
        table.add_row(*row)
    return table


def _number(value: float | int | None, digits: int = 0) -> str:
    if value is None:
        return UNAVAILABLE
    return f"{value:,.{digits}f}" if isinstance(value, float) else f"{value:,}"


def init_table(config: StoreConfig) -> Table:
    return _key_value_table(
        "store created",
        [
            ("commitlog segment", f"{config.mapped_file_size_commitlog:,} B", "mappedFileSizeCommitLog"),
            ("consume queue file", f"{config.consume_queue_entries_per_file:,} entries", "20 bytes each"),
            (
                "index file",
                f"{config.max_hash_slot_num:,} slots, {config.max_index_num:,} entries",
                f"{config.index_file_size:,} B per file",
            ),
        ],
    )


def produce_table(report: ProduceReport) -> Table:
    suffix = " (interrupted)" if report.interrupted else ""
    return _key_value_table(
        f"produced to {report.topic}/{report.queue_id}{suffix}",
        [
            (
                "messages",
                _number(report.messages),
                f"queue offsets {report.first_queue_offset}..{report.last_queue_offset}",
            ),
            ("bytes", _number(report.bytes_written), "whole records, as stored in the CommitLog"),
            (
                "throughput",
                f"{report.msgs_per_s:,.0f} msg/s",
                f"{human_rate(per_second(report.bytes_written, report.elapsed_s))} over "
                f"{report.elapsed_s:.2f} s",
            ),
            (
                "put latency p50",
                f"{_number(report.put_latency_p50_us, 1)} µs",
                "one put call, lock and copy included",
            ),
            ("put latency p99", f"{_number(report.put_latency_p99_us, 1)} µs", ""),
            (
                "put latency max",
                f"{_number(report.put_latency_max_us, 1)} µs",
                "page faults on cold segments show here",
            ),
            ("max time in put lock", f"{_number(report.max_in_lock_ms, 3)} ms", "RocketMQ's pagecacheRT"),
            (
                "broker-busy puts",
                _number(report.page_cache_busy_puts),
                "held the lock > 1 s: [PC_SYNCHRONIZED]",
            ),
            ("flush timeouts", _number(report.flush_timeouts), "SYNC flush: stored, not durable in time"),
        ],
    )


CONSUME_COLUMNS = columns_by_priority(
    ("offset", "physical", "bytes", "stored", "keys", "tags", "body"),
    {"offset": 0, "physical": 1, "bytes": 2, "body": 3, "stored": 4, "keys": 5, "tags": 6},
    left=("keys", "tags", "body"),
    keys={"flexible": True, "max_width": 16, "overflow": "ellipsis"},
    tags={"flexible": True, "max_width": 10, "overflow": "ellipsis"},
    body={"flexible": True, "max_width": 24, "min_width": 8, "overflow": "ellipsis"},
)


def consume_table(report: ConsumeReport) -> PriorityTable:
    table = PriorityTable(
        CONSUME_COLUMNS,
        table_options={
            "title": f"consumed {report.topic}/{report.queue_id}: {len(report.messages)} messages, next "
            f"offset {report.next_offset} (queue {report.min_offset}..{report.max_offset}, {report.status})",
            "title_justify": "left",
        },
    )
    for message in report.messages:
        stored = datetime.fromtimestamp(message.store_timestamp_ms / 1000).strftime("%H:%M:%S.%f")[:-3]
        table.add_row(
            str(message.queue_offset),
            str(message.physical_offset),
            str(message.size_bytes),
            stored,
            message.keys or "",
            message.tags or "",
            message.body_preview,
        )
    return table


_MODE_MEANINGS = {
    RecoveryMode.NORMAL: "no abort file: the last run shut down cleanly",
    RecoveryMode.ABNORMAL: "an abort file says the last run crashed",
}


def recovery_table(plan: RecoveryPlan) -> Table:
    rows = [
        ("mode", str(plan.mode), _MODE_MEANINGS[plan.mode]),
        ("scan starts at", _number(plan.start_offset), _scan_note(plan)),
        ("log ends at", _number(plan.process_offset), plan.stop_reason),
        ("records checked", _number(plan.records_checked), _checked_note(plan)),
        ("bytes cut", _number(plan.truncated_bytes), "written bytes after the end of the log"),
        (
            "re-dispatch from",
            _number(plan.dispatch_from_offset),
            "rebuilds consume queues and index from here",
        ),
    ]
    rows += [
        ("delete segment", path.name, "starts after the end of the log") for path in plan.segments_to_delete
    ]
    rows += [
        (
            f"truncate {t.topic}/{t.queue_id}",
            f"{t.entries_dropped} entries from {t.end_queue_offset}",
            t.reason,
        )
        for t in plan.queue_truncations
    ]
    rows += [
        ("drop index file", path.name, plan.index_drop_reason or "") for path in plan.index_files_to_drop
    ]
    if plan.index_rebuild_from_offset is not None:
        rows.append(
            ("index from", _number(plan.index_rebuild_from_offset), "keys are (re)indexed from this record")
        )
    return _key_value_table("recovery plan", rows)


def _scan_note(plan: RecoveryPlan) -> str:
    note = "first record of the chosen segment"
    if plan.scope is ScanScope.DISPATCHED_TAIL:
        recovery_start = _number(plan.recovery_start_offset)
        note = f"every consume queue complete before it; recovery reads from {recovery_start}"
    return note if plan.scans == 1 else f"{note}; read {plan.scans} times: a lost queue tail lay before it"


def _checked_note(plan: RecoveryPlan) -> str:
    if plan.scope is ScanScope.DISPATCHED_TAIL:
        return "CRC verified, from the scan start only (store verify checks every record)"
    return "CRC verified"


def clean_table(result: CleanPlan | CleanReport) -> Table:
    verb = "would delete" if isinstance(result, CleanPlan) else "deleted"
    minimum = f"{result.commitlog_min_offset_before:,} -> {result.commitlog_min_offset_after:,}"
    table = Table(
        title=f"clean: {verb} {len(result.deletions)} files, {result.bytes_freed:,} bytes; "
        f"CommitLog min offset {minimum}\ndecision: {result.decision.reason}",
        title_justify="left",
    )
    for column in ("kind", "file", "size (B)", "why"):
        table.add_column(column, justify="right" if column == "size (B)" else "left")
    for deletion in result.deletions:
        table.add_row(str(deletion.kind), deletion.path.name, f"{deletion.size_bytes:,}", deletion.reason)
    return table
