"""The pure arithmetic of the warm-up lab: percentiles, latency histograms, spreads over repeats, and the
verdict that holds a mode's measured figures against what the textbook says it should do.

Nothing here measures; everything here is unit-tested without root.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

# Latency histogram: bins of powers of two, the first "< 512 ns", the last "16.8 ms and more".
HISTOGRAM_FIRST_EDGE_NS = 1 << 9
HISTOGRAM_LAST_EDGE_NS = 1 << 24
# A warmed segment's append pass may fault on at most this fraction of its pages ("no faults" in the model).
WARMED_FAULT_FRACTION = 0.01
# With no warm-up the textbook expects a fault per page; fewer than this fraction means several per fault.
ONE_PER_PAGE_FRACTION = 0.9
# Dirty or locked "all pages" tolerates this shortfall (a page or two of the file's last folio).
WHOLE_FRACTION = 0.99


@dataclass(frozen=True)
class HistogramBin:
    """Appends whose latency fell in [lower_ns, upper_ns); upper_ns None: no upper bound."""

    lower_ns: int
    upper_ns: int | None
    count: int


@dataclass(frozen=True)
class LatencySummary:
    """Per-append latencies of one append pass (or all passes of a mode, for the histogram)."""

    appends: int
    p50_ns: int
    p99_ns: int
    max_ns: int
    mean_ns: float
    histogram: tuple[HistogramBin, ...]


def percentile(sorted_values: Sequence[int], fraction: float) -> int:
    """The nearest-rank percentile of values sorted ascending: the smallest value with at least `fraction`
    of the values at or below it (a measured value, never an interpolation)."""
    if not sorted_values:
        raise ValueError("no values")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction {fraction} is outside (0, 1]")
    rank = math.ceil(fraction * len(sorted_values))
    return sorted_values[max(rank, 1) - 1]


def histogram_edges() -> list[int]:
    edges = []
    edge = HISTOGRAM_FIRST_EDGE_NS
    while edge <= HISTOGRAM_LAST_EDGE_NS:
        edges.append(edge)
        edge <<= 1
    return edges


def latency_histogram(values_ns: Sequence[int]) -> tuple[HistogramBin, ...]:
    """Counts per power-of-two bin, the same bins for every mode so their shapes compare."""
    edges = histogram_edges()
    counts = [0] * (len(edges) + 1)
    for value in values_ns:
        index = 0 if value < edges[0] else min(value.bit_length() - edges[0].bit_length() + 1, len(edges))
        counts[index] += 1
    lowers = [0, *edges]
    uppers: list[int | None] = [*edges, None]
    return tuple(
        HistogramBin(low, high, count) for low, high, count in zip(lowers, uppers, counts, strict=True)
    )


def merge_histograms(histograms: Sequence[Sequence[HistogramBin]]) -> tuple[HistogramBin, ...]:
    """Bin-wise sums of histograms made by latency_histogram."""
    if not histograms:
        return ()
    first = histograms[0]
    return tuple(
        HistogramBin(b.lower_ns, b.upper_ns, sum(h[i].count for h in histograms)) for i, b in enumerate(first)
    )


def summarize_latencies(values_ns: Sequence[int]) -> LatencySummary:
    ordered = sorted(values_ns)
    return LatencySummary(
        appends=len(ordered),
        p50_ns=percentile(ordered, 0.50),
        p99_ns=percentile(ordered, 0.99),
        max_ns=ordered[-1],
        mean_ns=round(sum(ordered) / len(ordered), 1),
        histogram=latency_histogram(ordered),
    )


SPARK_LEVELS = "▁▂▃▄▅▆▇█"


def used_bins(histograms: Sequence[Sequence[HistogramBin]]) -> tuple[int, int] | None:
    """(first, last) index of the bins any of the histograms uses; None if all are empty."""
    used = [i for histogram in histograms for i, b in enumerate(histogram) if b.count]
    return (min(used), max(used)) if used else None


def sparkline(histogram: Sequence[HistogramBin], bins: tuple[int, int] | None = None) -> str:
    """One character per bin, height by log-scaled count (a blank for an empty bin), over the bins
    `bins` = (first, last) (default: those this histogram uses), so several modes can share one scale."""
    counts = [b.count for b in histogram]
    bins = bins or used_bins([histogram])
    if bins is None or not any(counts):
        return ""
    top = math.log1p(max(counts))
    chars = []
    for count in counts[bins[0] : bins[1] + 1]:
        if not count:
            chars.append(" ")
            continue
        level = round(math.log1p(count) / top * (len(SPARK_LEVELS) - 1))
        chars.append(SPARK_LEVELS[min(max(level, 0), len(SPARK_LEVELS) - 1)])
    return "".join(chars)


# --- the verdict --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expectation:
    """What the textbook says a mode does: whether the append pass faults, whether warm-up dirties every
    page (True) or none (False), and whether the segment ends up locked."""

    append_faults: bool
    dirties_all: bool
    locks: bool


@dataclass(frozen=True)
class Observed:
    """The figures a verdict weighs, medians over the repeats. None: not measured."""

    pages: int
    append_faults: int | None
    append_major_faults: int | None
    append_write_faults: int | None
    warmup_dirty_pages: int | None
    locked_bytes: int | None
    segment_bytes: int
    problems: tuple[str, ...] = ()


def _per_100(count: int, pages: int) -> str:
    return f"{100 * count / pages:.1f} per 100 pages"


def findings(expected: Expectation, seen: Observed) -> tuple[str, ...]:
    """One sentence per place where the machine disagrees with the model; () when it agrees throughout."""
    found = [
        *_append_findings(expected, seen),
        *_dirty_findings(expected, seen),
        *_lock_findings(expected, seen),
    ]
    return tuple(found)


def _append_findings(expected: Expectation, seen: Observed) -> list[str]:
    faults = seen.append_faults
    if faults is None or seen.pages <= 0:
        return []
    if expected.append_faults:
        if faults < ONE_PER_PAGE_FRACTION * seen.pages and faults > 0:
            return [
                f"{faults:,} append faults for {seen.pages:,} pages, one per {seen.pages / faults:.1f} pages "
                "instead of one per page: a write fault maps a whole large folio of the page cache"
            ]
        return []
    if faults <= WARMED_FAULT_FRACTION * seen.pages:
        return []
    what = f"the append pass still faulted {faults:,} times ({_per_100(faults, seen.pages)})"
    if seen.append_major_faults == 0 and seen.append_write_faults is not None:
        writes = (
            "all of them writes"
            if seen.append_write_faults >= faults
            else f"{seen.append_write_faults:,} writes"
        )
        return [
            f"{what}, {writes} to pages already cached (minor): the kernel pre-faults a shared file mapping "
            "read-only, so first writes still fault to make the pages writable and dirty"
        ]
    if seen.append_major_faults == 0:
        return [
            f"{what}, all minor (pages already cached): the warm-up left the mapping's pages unwritable or "
            "unmapped, so first writes still fault"
        ]
    return [f"{what}, {seen.append_major_faults:,} of them major: the warm-up did not keep the pages cached"]


def _dirty_findings(expected: Expectation, seen: Observed) -> list[str]:
    dirty = seen.warmup_dirty_pages
    if dirty is None or seen.pages <= 0:
        return []
    if expected.dirties_all and dirty < WHOLE_FRACTION * seen.pages:
        return [f"warm-up dirtied only {dirty:,} of {seen.pages:,} pages"]
    if not expected.dirties_all and dirty > (1 - WHOLE_FRACTION) * seen.pages:
        return [f"warm-up dirtied {dirty:,} of {seen.pages:,} pages: write-back will write zeros it need not"]
    return []


def _lock_findings(expected: Expectation, seen: Observed) -> list[str]:
    locked = seen.locked_bytes
    if not expected.locks or locked is None:
        return []
    if locked >= WHOLE_FRACTION * seen.segment_bytes:
        return []
    refused = next((problem for problem in seen.problems if "mlock" in problem), None)
    if refused:
        return [f"the segment is not locked: {refused}"]
    return [f"only {locked:,} of {seen.segment_bytes:,} bytes are locked"]


def verdict(expected: Expectation, seen: Observed) -> str:
    """One sentence: the first disagreement, or what the measurement confirms."""
    found = findings(expected, seen)
    if found:
        return found[0][0].upper() + found[0][1:] + "."
    if seen.append_faults is None:
        return "Not measured."
    parts = []
    if expected.append_faults:
        parts.append(f"first writes fault ({_per_100(seen.append_faults, seen.pages)})")
    elif seen.append_faults == 0:
        parts.append("appends took no faults on the segment")
    else:
        parts.append(
            f"appends took {seen.append_faults:,} faults ({_per_100(seen.append_faults, seen.pages)})"
        )
    if expected.dirties_all and seen.warmup_dirty_pages:
        parts.append(
            f"warm-up dirtied all {seen.warmup_dirty_pages:,} pages with zeros that write-back writes before "
            "the data (RocketMQ #522's double IO)"
        )
    return "As the model says: " + "; ".join(parts) + "."
