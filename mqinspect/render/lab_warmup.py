"""Draws `mqinspect lab warmup`: one row of figures per warm-up mode, then each mode's model beside what
this machine did. Only draws: every number comes from the WarmupReport."""

from __future__ import annotations

from collections.abc import Callable

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from mqinspect.labs.stats import Spread
from mqinspect.labs.warmup import WarmupReport
from mqinspect.labs.warmup_stats import HistogramBin, sparkline, used_bins
from mqinspect.render.cells import UNAVAILABLE
from mqinspect.render.units import human_bytes
from mqinspect.render.words import counted


def warmup_view(report: WarmupReport) -> RenderableType:
    return Group(
        _headline(report),
        Text(""),
        warmup_table(report),
        Text(""),
        append_table(report),
        Text(""),
        models_table(report),
        *_notes(report),
    )


def _headline(report: WarmupReport) -> Text:
    repeats = f"{counted(report.repeat, 'repeat')} (medians)"
    lines = [
        f"Warm-up lab: {human_bytes(report.segment_bytes)} segment ({report.segment_pages:,} pages), "
        f"{report.appends_per_pass:,} appends of {report.record_bytes:,} B per pass, {repeats}, "
        f"{report.elapsed_s:.1f} s",
        f"on {report.filesystem} ({report.directory}), kernel {report.kernel}; "
        f"faults from {report.fault_source}",
    ]
    if report.ebpf_unavailable:
        lines.append(f"eBPF columns {UNAVAILABLE}: {report.ebpf_unavailable}")
    return Text("\n".join(lines))


def _value(spread: Spread | None, show: Callable[[float], str], ranged: bool) -> str:
    if spread is None:
        return UNAVAILABLE
    text = show(spread.median)
    low, high = show(spread.minimum), show(spread.maximum)
    if ranged and spread.samples > 1 and low != high:
        text += f"\n[{low}-{high}]"
    return text


def _count(value: float) -> str:
    return f"{int(value):,}"


def _time(seconds: float) -> str:
    if seconds < 0.001:
        return f"{seconds * 1e6:.0f} µs"
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _us(nanoseconds: float) -> str:
    micro = nanoseconds / 1000
    return f"{micro:.2f}" if micro < 10 else f"{micro:.1f}" if micro < 100 else f"{micro:,.0f}"


def _bin_label(b: HistogramBin) -> str:
    if b.upper_ns is None:
        return f"≥{_duration_ns(b.lower_ns)}"
    if b.lower_ns == 0:
        return f"<{_duration_ns(b.upper_ns)}"
    return _duration_ns(b.lower_ns)


def _duration_ns(value: int) -> str:
    return f"{value / 1000:.2g}µs" if value < 1_000_000 else f"{value / 1_000_000:.2g}ms"


def _new_table(title: str) -> Table:
    return Table(
        title=title,
        title_justify="left",
        title_style="bold",
        header_style="bold",
        box=None,
        pad_edge=False,
        padding=(0, 1),
    )


def warmup_table(report: WarmupReport) -> Table:
    """Per mode: the warm-up's time, faults, and the pages it dirtied and locked."""
    table = _new_table("Warm-up")
    table.add_column("mode", no_wrap=True)
    for name in ("time", "faults\nminor/major", "eBPF: exc/\npopulate", "dirtied", "locked"):
        table.add_column(name, justify="right", no_wrap=True)
    ranged = report.repeat > 1
    page_bytes = report.segment_bytes // max(report.segment_pages, 1)
    for mode in report.modes:
        if mode.runs == 0:
            table.add_row(mode.mode.value, "failed", "", "", "", "", style="red")
            continue
        table.add_row(
            mode.mode.value,
            _value(mode.warmup_s, _time, ranged),
            _pair(mode.warmup_proc_minor_faults, mode.warmup_proc_major_faults),
            _pair(mode.warmup_exception_faults, mode.warmup_populate_faults),
            _value(mode.warmup_dirty_pages, lambda pages: human_bytes(pages * page_bytes), False),
            _value(mode.locked_bytes, human_bytes, False),
        )
    return table


def append_table(report: WarmupReport) -> Table:
    """Per mode: the append pass's faults and per-append latency, with a histogram on a shared scale."""
    histograms = [mode.latency_histogram for mode in report.modes if mode.latency_histogram]
    bins = used_bins(histograms)
    spark_header = "latency"
    if bins and histograms:
        spark_header += f"\n{_bin_label(histograms[0][bins[0]])}…{_bin_label(histograms[0][bins[1]])}"
    table = _new_table("Append pass")
    table.add_column("mode", no_wrap=True)
    for name in ("faults", "eBPF: on\nsegment", "p50 µs", "p99 µs", "max µs"):
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column(spark_header, no_wrap=True)
    ranged = report.repeat > 1
    for mode in report.modes:
        if mode.runs == 0:
            table.add_row(mode.mode.value, "failed", *[""] * 5, style="red")
            continue
        table.add_row(
            mode.mode.value,
            _sum(mode.append_proc_minor_faults, mode.append_proc_major_faults),
            _value(mode.append_segment_faults, _count, ranged),
            _value(mode.append_p50_ns, _us, False),
            _value(mode.append_p99_ns, _us, ranged),
            _value(mode.append_max_ns, _us, False),
            sparkline(mode.latency_histogram, bins),
        )
    return table


def _pair(left: Spread | None, right: Spread | None) -> str:
    if left is None or right is None:
        return UNAVAILABLE
    return f"{_count(left.median)}/{_count(right.median)}"


def _sum(minor: Spread | None, major: Spread | None) -> str:
    if minor is None or major is None:
        return UNAVAILABLE
    return _count(minor.median + major.median)


def models_table(report: WarmupReport) -> Table:
    table = Table(header_style="bold", box=None, pad_edge=False, padding=(0, 1), show_lines=False)
    table.add_column("mode", no_wrap=True)
    table.add_column("what it does / what the model says", ratio=1)
    table.add_column("on this machine", ratio=1)
    for mode in report.modes:
        described = Text(mode.mechanism)
        described.append("\nmodel: " + mode.model, style="dim")
        measured = Text(mode.verdict, style="yellow" if mode.findings or not mode.runs else "")
        for finding in mode.findings[1:]:
            measured.append("\nalso: " + finding, style="yellow")
        table.add_row(mode.mode.value, described, measured)
    return table


def _notes(report: WarmupReport) -> list[Text]:
    lines = []
    for mode in report.modes:
        for problem in mode.problems:
            lines.append(f"{mode.mode.value}: {problem}")
        for error in mode.errors:
            lines.append(f"{mode.mode.value}: failed: {error}")
    lines.append(
        "faults: the worker's getrusage minflt/majflt (they count the kernel's populate faults inside "
        "mlock/madvise/mmap too); eBPF exc: CPU exceptions (what perf page-faults counts); populate: "
        "faults the kernel took inside those syscalls; on segment: exceptions on the segment file; "
        "dirtied: cachestat(2) right after warm-up; locked: VmLck in /proc/PID/status; "
        "[min-max] over the repeats."
    )
    return [Text(""), *(Text(line, style="dim") for line in lines)]
