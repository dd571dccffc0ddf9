"""What the labs say about a figure measured over repeated runs."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Spread:
    """One figure over the runs that measured it: the median (the lower middle value, so always a value one
    run really had), the smallest and the largest, how many runs, and the range as a percentage of the
    median (None when the median is 0)."""

    median: float
    minimum: float
    maximum: float
    samples: int
    spread_percent: float | None


def spread(values: Sequence[float | int | None]) -> Spread | None:
    """The spread of the measured values; None when none was measured (None entries are not zeros)."""
    measured = [value for value in values if value is not None]
    if not measured:
        return None
    middle, low, high = statistics.median_low(measured), min(measured), max(measured)
    percent = round((high - low) / middle * 100, 2) if middle else None
    return Spread(middle, low, high, len(measured), percent)
