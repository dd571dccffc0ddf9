"""Draws a SendpathLabReport: per send path what was measured (throughput, CPU, context switches, syscalls,
copies, residency) beside the textbook model, then one sentence for each contradiction.

Only draws: every number comes from the report. A number that was not measured reads "unavailable", and
the reason and the fix are printed once under the table they concern.
"""

from __future__ import annotations

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from mqinspect.labs.sendpath import PathResult, SendpathLabReport
from mqinspect.render.cells import NONE, UNAVAILABLE
from mqinspect.render.units import human_bytes, human_rate, residency_percent
from mqinspect.render.words import counted
from store.transfer import SendPath

PATH_WIDTH = 12  # the longest word of a path label: MSG_ZEROCOPY


def sendpath_view(report: SendpathLabReport) -> RenderableType:
    parts: list[RenderableType] = [
        _heading(report),
        _cost_table(report),
        _copies_table(report),
    ]
    if report.copies_unavailable is not None:
        gap = report.copies_unavailable
        parts.append(Text(f"copies {UNAVAILABLE}: {gap.reason}; fix: {gap.fix}", style="yellow"))
    parts.append(_residency_table(report))
    parts.append(_findings(report))
    parts.append(_notes(report))
    return Group(*parts)


def _segment(source) -> str:
    if source.log_format == "kafka":  # sendfile is how a broker serves its fetches (FileChannel.transferTo)
        return f"Kafka segment {source.label}, which a broker serves by sendfile"
    return f"CommitLog segment {source.path.name}"


def _heading(report: SendpathLabReport) -> Text:
    source = report.source
    where = "the lab's temporary store" if source.temporary else f"store {source.store_dir}"
    return Text.assemble(
        ("Send paths over loopback TCP", "bold"),
        f" ({report.loopback}): {human_bytes(report.payload_bytes)} of {_segment(source)} "
        f"({where}), offset {source.offset_bytes}; {report.cache_mode} page cache; "
        f"median of {counted(report.repeat, 'run')} per path; "
        f"chunk {human_bytes(report.chunk_bytes)}; kernel {report.kernel_release}.",
    )


def _table(title: str) -> Table:
    table = Table(
        title=title,
        title_justify="left",
        title_style="bold",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    table.add_column("path", min_width=PATH_WIDTH)  # wraps "O_DIRECT read+write" at its space
    return table


# ---- throughput, CPU, context switches, syscalls -----------------------------------------------------------


def _cost_table(report: SendpathLabReport) -> Group:
    table = _table("Throughput and cost")
    headers = (
        "throughput",
        "spread",
        "side",
        "user\nms",
        "sys\nms",
        "ctx\nvol",
        "ctx\ninvol",
        "sys-\ncalls",
        "mode\nsw.",
    )
    for name in headers:
        table.add_column(name, justify="left" if name == "side" else "right")
    for result in report.paths:
        if result.unsupported:
            table.add_row(result.label, Text("unsupported", style="yellow"), end_section=True)
            continue
        spread = result.throughput_bytes_per_s
        table.add_row(
            result.label,
            UNAVAILABLE if spread is None else human_rate(spread.median),
            UNAVAILABLE
            if spread is None or spread.spread_percent is None
            else f"{spread.spread_percent:.0f} %",
            "sender",
            _ms(result.sender_user_s),
            _ms(result.sender_sys_s),
            _count(result.sender_voluntary_ctx_switches),
            _count(result.sender_involuntary_ctx_switches),
            _count(result.sender_syscalls),
            _count(result.sender_mode_switches),
        )
        table.add_row(
            "",
            "",
            "",
            "receiver",
            _ms(result.receiver_user_s),
            _ms(result.receiver_sys_s),
            _count(result.receiver_voluntary_ctx_switches),
            _count(result.receiver_involuntary_ctx_switches),
            _count(result.receiver_syscalls),
            "",
            end_section=True,
        )
    source = (
        "throughput: payload / (sender start → receiver end of stream), CLOCK_MONOTONIC; spread: "
        f"(max - min) / median of the runs; CPU and context switches: {report.usage_source}; syscalls: the "
        "sender's own count, by strace's name (the receiver's: recvfrom calls); mode switches: 2 per sender "
        "syscall"
    )
    return Group(table, Text(source, style="dim"))


# ---- copies against the model ------------------------------------------------------------------------------


def _copies_table(report: SendpathLabReport) -> Group:
    table = _table("Copies per payload byte: measured vs. the textbook model")
    measured_columns = ("snd\nk→u", "snd\nu→k", "snd in\nkernel", "snd\ntotal", "rcv\nk→u")
    if report.copies_unavailable is None:
        for name in measured_columns:
            table.add_column(name, justify="right")
    else:
        table.add_column("measured")
    for name in ("model\nCPU", "model\nDMA", "model\nsw/chunk"):
        table.add_column(name, justify="right")
    payload = report.payload_bytes
    for result in report.paths:
        model = result.model
        if report.copies_unavailable is not None:
            measured = [UNAVAILABLE if not result.unsupported else NONE]
        elif result.unsupported:
            measured = [NONE] * len(measured_columns)
        else:
            measured = [
                _times(result.sender_bytes_kernel_to_user, payload),
                _times(result.sender_bytes_user_to_kernel, payload),
                _times(result.sender_bytes_in_kernel, payload),
                UNAVAILABLE
                if result.sender_crossings_per_byte is None
                else f"{result.sender_crossings_per_byte:.2f}",
                _times(result.receiver_bytes_kernel_to_user, payload),
            ]
        table.add_row(
            result.label,
            *measured,
            str(model.cpu_copies_per_byte),
            str(model.dma_copies_per_byte),
            str(model.mode_switches_per_chunk),
        )
    source = (
        f"snd: sender, rcv: receiver; k→u: kernel → user, u→k: user → kernel, as multiples of the payload "
        f"({human_bytes(payload)}); total: k→u + u→k per byte (crossings of the user/kernel boundary). "
        f"measured: {report.copies_source}, descriptors 0-2 left out. model: copies per byte and mode "
        "switches per chunk (splice: per pipeful), TCP with a scatter-gather, checksum-offloading NIC "
        "(reference §3.1; Kafka design docs)"
    )
    return Group(table, Text(source, style="dim"))


# ---- residency ---------------------------------------------------------------------------------------------


def _residency_table(report: SendpathLabReport) -> Group:
    table = _table("Page cache: the source range before and after the last run; faults inside the sends")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    table.add_column("faults\nin calls", justify="right")
    table.add_column("what the model says")
    pages = report.source.range_pages
    for result in report.paths:
        if result.unsupported:
            continue
        table.add_row(
            result.label,
            _resident(result.cached_pages_before, pages),
            _resident(result.cached_pages_after, pages),
            UNAVAILABLE
            if result.sender_faults_in_syscalls is None
            else f"{result.sender_faults_in_syscalls:,}",
            _residency_expectation(result, report.cache_mode),
        )
    source = (
        f"{pages:,} pages of {report.source.page_size_bytes} bytes; {report.residency_source}. faults in "
        "calls: kernel-mode page faults on user addresses inside the sender's traced calls "
        "(exceptions:page_fault_kernel, median), as when mmap+write sends mapped pages not mapped in yet"
    )
    return Group(table, Text(source, style="dim"))


def _residency_expectation(result: PathResult, cache_mode: str) -> str:
    if result.path is SendPath.DIRECT_READ_WRITE:
        return "O_DIRECT neither reads nor fills the page cache: unchanged"
    if cache_mode == "cold":
        return "read through the page cache: all resident after"
    return "already resident: stays resident"


# ---- sentences ---------------------------------------------------------------------------------------------


def _findings(report: SendpathLabReport) -> RenderableType:
    lines = [Text(f"• {sentence}") for result in report.paths for sentence in result.findings]
    skipped = [
        Text(f"{result.label} could not run here: {result.unsupported}", style="yellow")
        for result in report.paths
        if result.unsupported
    ]
    if not lines:
        return Group(*skipped, Text("Where the measurement contradicts the model: nowhere on this run."))
    return Group(*skipped, Text("Where the measurement contradicts the model:", style="bold"), *lines)


def _notes(report: SendpathLabReport) -> RenderableType:
    model_notes = [Text(f"{result.label}: {result.model.caveat}", style="dim") for result in report.paths]
    return Group(
        Text("Notes:", style="bold dim"),
        *(Text(note, style="dim") for note in report.notes),
        *model_notes,
        Text(f"Lab took {report.elapsed_s:.1f} s.", style="dim"),
    )


# ---- cells -------------------------------------------------------------------------------------------------


def _ms(seconds: float | None) -> str:
    return UNAVAILABLE if seconds is None else f"{seconds * 1000:.1f}"


def _count(value: int | None) -> str:
    return UNAVAILABLE if value is None else f"{value:,}"


def _pair(sender: str, receiver: str) -> str:
    return f"{sender} | {receiver}"


def _times(value: int | None, payload: int) -> str:
    if value is None:
        return UNAVAILABLE
    return f"{value / payload:.2f}×" if payload else f"{value:,} B"


def _resident(pages: int | None, total: int) -> str:
    if pages is None:
        return UNAVAILABLE
    if not total:
        return f"{pages:,}"
    return f"{pages:,} ({residency_percent(pages, total, decimals=1)})"
