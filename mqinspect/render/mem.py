"""Draws a MemorySample: the page cache against the kernel's writeback thresholds, with rates and PSI.

Every row says what its number means and which /proc file it comes from.
"""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text

from mqinspect.render.cells import UNAVAILABLE
from mqinspect.render.stream_lines import Field
from mqinspect.render.units import human_bytes, human_rate
from probes.memory import MemorySample
from probes.procfs import WritebackState

GAUGE_WIDTH = 40


def _pages(pages: int | None, page_size: int) -> str:
    return UNAVAILABLE if pages is None else f"{pages:,} pages ({human_bytes(pages * page_size)})"


def _rate(value: float | None, unit: str) -> str:
    return UNAVAILABLE if value is None else f"{value:,.1f} {unit}"


def _kib_rate(kib_per_s: float | None) -> str:
    """A /proc/vmstat rate in KiB/s (pgpgin, pgpgout) in the units every size rate uses."""
    return human_rate(None if kib_per_s is None else kib_per_s * 1024)


def _percent(value: float | None) -> str:
    return UNAVAILABLE if value is None else f"{value:.2f} %"


class _Section(Table):
    """Rows of name, value, and what the value means followed by where it comes from."""

    def __init__(self, title: str):
        super().__init__(title=title, title_justify="left", title_style="bold", box=None, pad_edge=False)
        self.add_column("", no_wrap=True)
        self.add_column("value", justify="right", no_wrap=True)
        self.add_column("meaning [source]", ratio=1)

    def add_row(self, name: str, value: str, meaning: str, source: str) -> None:  # type: ignore[override]
        super().add_row(name, value, Text.assemble((meaning, "dim"), " ", (f"[{source}]", "cyan")))


def threshold_gauge(writeback: WritebackState) -> Text:
    """dirty + writeback on a bar that ends at the throttle threshold, with the background (b) and
    freerun-ceiling (f) marks: writers slow down past f and stop at the end of the bar."""
    limit = writeback.throttle_threshold_pages
    if not limit or writeback.dirty_pages is None or writeback.writeback_pages is None:
        return Text(f"gauge {UNAVAILABLE}: {', '.join(writeback.unavailable.values()) or 'no threshold'}")
    used = writeback.dirty_pages + writeback.writeback_pages
    filled = min(GAUGE_WIDTH, round(used / limit * GAUGE_WIDTH))
    cells = ["█"] * filled + ["·"] * (GAUGE_WIDTH - filled)
    for mark, pages in (("b", writeback.background_threshold_pages), ("f", writeback.freerun_ceiling_pages)):
        if pages is not None and pages < limit:
            cells[min(GAUGE_WIDTH - 1, round(pages / limit * GAUGE_WIDTH))] = mark
    style = (
        "red" if writeback.writers_throttled else "yellow" if writeback.background_writeback_due else "green"
    )
    return Text.assemble("[", ("".join(cells), style), f"] {used / limit:.1%} of the dirty limit")


def mem_view(sample: MemorySample) -> Group:
    snapshot = sample.snapshot
    return Group(
        _page_cache(sample),
        threshold_gauge(snapshot.writeback),
        Text(
            f"regime: {snapshot.writeback.regime or UNAVAILABLE}: "
            f"{WritebackState.REGIMES.get(snapshot.writeback.regime or '', '')}"
        ),
        _activity(sample),
        _pressure(sample),
    )


def _page_cache(sample: MemorySample) -> Table:
    meminfo, writeback = sample.snapshot.meminfo, sample.snapshot.writeback
    settings = sample.snapshot.dirty_settings
    page = writeback.page_size_bytes
    meanings = WritebackState.MEANINGS
    table = _Section("page cache and writeback")
    table.add_row(
        "cached",
        human_bytes(meminfo.cached_bytes),
        "file data in memory (includes shmem/tmpfs)",
        "/proc/meminfo Cached",
    )
    table.add_row(
        "dirty", _pages(writeback.dirty_pages, page), meanings["dirty_pages"], "/proc/vmstat nr_dirty"
    )
    table.add_row(
        "writeback",
        _pages(writeback.writeback_pages, page),
        meanings["writeback_pages"],
        "/proc/vmstat nr_writeback",
    )
    table.add_row(
        "background threshold",
        _pages(writeback.background_threshold_pages, page),
        meanings["background_threshold_pages"],
        f"vmstat nr_dirty_background_threshold ({settings.background_limit_setting})",
    )
    table.add_row(
        "freerun ceiling",
        _pages(writeback.freerun_ceiling_pages, page),
        meanings["freerun_ceiling_pages"],
        "(background + limit) / 2, mm/page-writeback.c",
    )
    table.add_row(
        "dirty limit",
        _pages(writeback.throttle_threshold_pages, page),
        meanings["throttle_threshold_pages"],
        f"vmstat nr_dirty_threshold ({settings.throttle_limit_setting})",
    )
    table.add_row(
        "mlocked",
        human_bytes(meminfo.mlocked_bytes),
        "pinned by mlock (warm-up, vmtouch -l)",
        "/proc/meminfo Mlocked",
    )
    return table


def _activity(sample: MemorySample) -> Table:
    vm = sample.rates.vmstat
    table = _Section(f"over the last {sample.interval_s:.2f} s")
    table.add_row(
        "page faults", _rate(vm.faults_per_s, "/s"), "minor and major, all processes", "/proc/vmstat pgfault"
    )
    table.add_row(
        "major faults",
        _rate(vm.major_faults_per_s, "/s"),
        "faults that waited for disk",
        "/proc/vmstat pgmajfault",
    )
    table.add_row(
        "read from disk",
        _kib_rate(vm.pgpgin_kib_per_s),
        "page-ins: cache misses and readahead",
        "/proc/vmstat pgpgin",
    )
    table.add_row(
        "written to disk",
        _kib_rate(vm.pgpgout_kib_per_s),
        "page-outs: write-back of dirty pages",
        "/proc/vmstat pgpgout",
    )
    table.add_row(
        "file refaults",
        _rate(vm.file_refaults_per_s, "/s"),
        "evicted file pages needed again soon: the cache is too small",
        "vmstat workingset_refault_file",
    )
    table.add_row(
        "reclaimed",
        _rate(vm.reclaimed_pages_per_s, "pages/s"),
        "pages taken back by reclaim",
        "/proc/vmstat pgsteal_*",
    )
    return table


def _pressure(sample: MemorySample) -> Table:
    pressure = sample.rates.pressure
    table = _Section("pressure stall (PSI) over the interval")
    for resource in ("memory", "io"):
        for line, meaning in (
            ("some", "share of time at least one task stalled"),
            ("full", "share of time all tasks stalled at once"),
        ):
            value = getattr(pressure, f"{resource}_{line}_stalled_percent")
            table.add_row(
                f"{resource} {line}",
                _percent(value),
                f"{meaning} on {resource}",
                f"/proc/pressure/{resource}",
            )
    return table


# --- the compact stream: one line (or CSV row) per interval -------------------------------------------------


def _page_bytes(sample: MemorySample, pages: int | None) -> int | None:
    return None if pages is None else pages * sample.snapshot.writeback.page_size_bytes


def _times(value: float) -> str:
    return f"{value:,.0f}/s"


def _percent_cell(value: float) -> str:
    return f"{value:.2f}%"


def _kib_to_bytes(kib_per_s: float | None) -> float | None:
    return None if kib_per_s is None else kib_per_s * 1024


# The stream's columns, most important first: a terminal narrower than all of them keeps the first that fit
# (at 80 columns: up to disk out). `mqinspect mem 1 5`, `--format csv`.
MEM_FIELDS: tuple[Field[MemorySample], ...] = (
    Field("cached_bytes", "cached", lambda s: s.snapshot.meminfo.cached_bytes, human_bytes, width=8),
    Field(
        "dirty_bytes",
        "dirty",
        lambda s: _page_bytes(s, s.snapshot.writeback.dirty_pages),
        human_bytes,
        width=8,
    ),
    Field(
        "writeback_bytes",
        "writeback",
        lambda s: _page_bytes(s, s.snapshot.writeback.writeback_pages),
        human_bytes,
        width=9,
    ),
    Field(
        "dirty_limit_used_percent",
        "of limit",
        lambda s: _fraction_percent(s.snapshot.writeback.dirty_fraction_of_throttle),
        _percent_cell,
        width=8,
    ),
    Field(
        "read_from_disk_bytes_per_s",
        "disk in",
        lambda s: _kib_to_bytes(s.rates.vmstat.pgpgin_kib_per_s),
        human_rate,
        width=9,
    ),
    Field(
        "written_to_disk_bytes_per_s",
        "disk out",
        lambda s: _kib_to_bytes(s.rates.vmstat.pgpgout_kib_per_s),
        human_rate,
        width=9,
    ),
    Field("faults_per_s", "faults", lambda s: s.rates.vmstat.faults_per_s, _times, width=8),
    Field("major_faults_per_s", "major", lambda s: s.rates.vmstat.major_faults_per_s, _times, width=7),
    Field(
        "io_some_stalled_percent",
        "psi io",
        lambda s: s.rates.pressure.io_some_stalled_percent,
        _percent_cell,
        width=7,
    ),
    Field(
        "memory_some_stalled_percent",
        "psi mem",
        lambda s: s.rates.pressure.memory_some_stalled_percent,
        _percent_cell,
        width=7,
    ),
    Field("file_refaults_per_s", "refaults", lambda s: s.rates.vmstat.file_refaults_per_s, _times, width=8),
    Field("regime", "regime", lambda s: s.snapshot.writeback.regime, width=16),
)


def _fraction_percent(fraction: float | None) -> float | None:
    return None if fraction is None else round(fraction * 100, 2)
