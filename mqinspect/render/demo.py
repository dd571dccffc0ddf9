"""The final report of `mqinspect demo --no-ui`: what the workload did by its own account, the live view at
its end, and the lab summaries."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from mqinspect.demo.report import (
    BrokerSummary,
    ChildExit,
    ConsumerSummary,
    DemoReport,
    Section,
    SectionKind,
    WorkloadOutcome,
)
from mqinspect.demo.settings import PRODUCE_WINDOW_PUTS
from mqinspect.render.cells import NONE, UNAVAILABLE, unavailable_text
from mqinspect.render.units import human_bytes, human_rate

MiB = 1 << 20


def demo_view(report: DemoReport) -> RenderableType:
    parts: list[RenderableType] = [workload_view(report.workload, report.settings.rate_msgs_per_s)]
    parts.append(section_view(report.live))
    parts.extend(section_view(lab) for lab in report.labs)
    return Group(*_spaced(parts))


def _spaced(parts: list[RenderableType]) -> list[RenderableType]:
    spaced: list[RenderableType] = []
    for part in parts:
        if spaced:
            spaced.append(Text(""))
        spaced.append(part)
    return spaced


def workload_view(outcome: WorkloadOutcome, rate_msgs_per_s: float) -> RenderableType:
    parts: list[RenderableType] = [processes_table(outcome)]
    if outcome.broker is not None:
        parts += [broker_table(outcome.broker, rate_msgs_per_s), served_table(outcome.broker)]
    if outcome.consumers:
        parts.append(consumers_table(outcome.consumers))
    where = "kept" if outcome.store_kept else "removed at the end"
    parts.append(Text(f"store: {outcome.store_dir} ({where})", style="dim"))
    return Group(*_spaced(parts))


def processes_table(outcome: WorkloadOutcome) -> Table:
    table = Table(title=f"demo processes (ran {outcome.ran_s:.1f} s)", title_justify="left", box=None)
    for column in ("role", "pid", "exit", "summary"):
        table.add_column(column, justify="right" if column == "pid" else "left", no_wrap=column != "summary")
    for child in outcome.children:
        table.add_row(child.role, str(child.pid), _exit_text(child), _summary_text(child))
    return table


def _exit_text(child: ChildExit) -> Text:
    if child.killed:
        return Text(f"SIGKILL after grace ({child.exit_code})", style="red")
    if child.exit_code is None:
        return Text("still running", style="red")
    if child.exit_code < 0:
        return Text(f"signal {-child.exit_code}", style="red")
    return Text(str(child.exit_code), style="green" if child.exit_code == 0 else "red")


def _summary_text(child: ChildExit) -> Text:
    if child.reported and child.log_tail is None:
        return Text("reported")
    if child.log_tail:
        return Text(child.log_tail.splitlines()[-1], style="red")
    return Text(
        "unavailable: it ended without reporting; fix: see its log in the demo directory", style="red"
    )


def broker_table(broker: BrokerSummary, rate_msgs_per_s: float) -> Table:
    table = Table(
        title=f"broker (pid {broker.pid}): store, producer, retention", title_justify="left", box=None
    )
    table.add_column("", style="bold", no_wrap=True)
    table.add_column("value", justify="right", no_wrap=True)
    table.add_column("meaning", style="dim")
    table.add_row(
        "produced",
        f"{broker.produced_messages:,} msgs, {human_bytes(broker.produced_bytes)}",
        f"paced at {rate_msgs_per_s:,.0f} msg/s; {_rate(broker.produce_bytes_per_s)} over "
        f"{broker.produce_elapsed_s:.1f} s",
    )
    table.add_row("put latency max", _micros(broker.put_latency_max_us), "one put call: lock, copy, faults")
    table.add_row(
        "put latency p99",
        _micros(broker.put_latency_p99_us_worst_window),
        f"worst p99 of any {PRODUCE_WINDOW_PUTS}-put window",
    )
    table.add_row(
        "segments",
        f"{broker.segments_written} written, {broker.segments_deleted} deleted, "
        f"{broker.segments_at_end} left",
        "retention (fileReservedTime) keeps the CommitLog small",
    )
    table.add_row("log offsets", f"{broker.commitlog_min_offset:,} .. {broker.commitlog_max_offset:,}", "")
    table.add_row("warm-ups", *_warmup_cells(broker))
    for problem in broker.shutdown_problems:
        table.add_row("problem", Text(problem, style="red"), "")
    return table


def _warmup_cells(broker: BrokerSummary) -> tuple[str, str]:
    if not broker.warmups:
        return "none", "no segment was warmed (warm-up off, or none allocated)"
    times_ms = sorted(warmup.elapsed_s * 1000 for warmup in broker.warmups)
    pages = broker.warmups[0].pages
    modes = ", ".join(sorted({warmup.mode.value for warmup in broker.warmups}))
    locked = sum(warmup.locked for warmup in broker.warmups)
    return (
        f"{len(broker.warmups)} segments x {pages:,} pages",
        f"{modes}: {times_ms[len(times_ms) // 2]:.0f} ms median, {times_ms[-1]:.0f} ms max per segment; "
        f"{locked} mlocked (allocation service, ahead of the writer)",
    )


def served_table(broker: BrokerSummary) -> Table:
    table = Table(title="pull server: sent per path (its own count)", title_justify="left", box=None)
    for column in ("path", "requests", "messages", "sent", "send calls", "syscalls", "syscalls / MiB"):
        table.add_column(column, justify="left" if column in ("path", "syscalls") else "right", no_wrap=True)
    for served in sorted(broker.served, key=lambda row: row.path.value):
        calls = sum(served.syscalls.values())
        per_mib = f"{calls / (served.bytes_sent / MiB):,.0f}" if served.bytes_sent else NONE
        table.add_row(
            served.path.value,
            f"{served.requests:,}",
            f"{served.messages:,}",
            human_bytes(served.bytes_sent),
            f"{served.transfer_calls:,}",
            ", ".join(f"{name} {count:,}" for name, count in sorted(served.syscalls.items())),
            per_mib,
        )
    return table


def consumers_table(consumers: tuple[ConsumerSummary, ...]) -> Table:
    table = Table(
        title="consumers (each its own process and group)",
        title_justify="left",
        box=None,
        caption=_skipped_caption(consumers),
        caption_justify="left",
    )
    for column in ("path", "pid", "pulls", "messages", "received", "rate", "committed offset", "stopped by"):
        table.add_column(column, justify="left" if column in ("path", "stopped by") else "right")
    for consumer in consumers:
        table.add_row(
            consumer.path.value,
            str(consumer.pid),
            f"{consumer.pulls:,}",
            f"{consumer.messages:,}",
            human_bytes(consumer.bytes_received),
            _rate(consumer.bytes_per_s),
            NONE if consumer.committed_offset is None else f"{consumer.committed_offset:,}",
            Text(consumer.error, style="red") if consumer.error else Text("SIGTERM (demo end)"),
        )
    return table


def _skipped_caption(consumers: tuple[ConsumerSummary, ...]) -> Text | None:
    """Retention deletes by age, not by what the groups have read: say which group lost messages to it."""
    lost = [f"{c.group} {c.skipped_messages:,} msgs" for c in consumers if c.skipped_messages]
    if not lost:
        return None
    return Text(f"lost to retention (deleted before they were pulled): {', '.join(lost)}", style="yellow")


def _rate(bytes_per_s: float | None) -> str:
    return human_rate(bytes_per_s)


def _micros(value: float | None) -> str:
    return UNAVAILABLE if value is None else f"{value:,.0f} µs"


def section_view(section: Section) -> RenderableType:
    heading = Text(section.title, style="bold underline")
    if section.data is None:
        return Group(heading, unavailable_text(section.unavailable))
    return Group(heading, _view_for(section)(section.data))


def _view_for(section: Section) -> Callable[[Any], RenderableType]:
    """Each section is drawn by the renderer of the command it comes from."""
    if section.kind is SectionKind.LIVE:
        from mqinspect.render.top import top_view

        return top_view
    if section.kind is SectionKind.WARMUP_LAB:
        from mqinspect.render.lab_warmup import warmup_view

        return warmup_view
    from mqinspect.render.lab_sendpath import sendpath_view

    return sendpath_view
