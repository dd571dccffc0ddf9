"""The one way every renderer writes sizes, rates and residency shares (README, Conventions).

- Sizes use binary units with their IEC names: B, KiB, MiB, GiB, TiB (1 KiB = 1,024 B), written right after
  the number as coreutils' `numfmt --to=iec-i --suffix=B` does ("12.6MiB": one word, so whitespace-separated
  tables stay splittable). One decimal below 100, none above, and never more than was measured: the value
  is cut, not rounded, so 4,095 B reads "3.9KiB", never "4KiB", and a segment short of full never looks full.
- A rate is a size per second and always ends in "/s" ("12.6MiB/s"). A figure counted over an interval is
  either turned into a rate or drawn beside the interval it covers.
- A residency share is floored as well, and only the two ends are exact: "100%" only when every page is
  there, "0%" only when none is; in between it reads at least "<1%" and at most "99%" (or, with a decimal,
  "<0.1%" and "99.9%").

Exact byte counts (offsets, positions, sizes a user compares with `ls -l`) are written as plain integers in a
column whose header says "(B)"; JSON always holds the raw number under a key that names its unit.
"""

from __future__ import annotations

import math

BINARY_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
UNAVAILABLE = "unavailable"


def _cut(value: float, decimals: int) -> float:
    """`value` with its digits after `decimals` dropped (towards zero), free of float noise."""
    scale = 10**decimals
    return math.trunc(round(value * scale, 9)) / scale


def human_bytes(size: int | float | None) -> str:
    """A size in binary units: "512B", "3.9KiB", "12.6MiB", "164KiB", "4GiB" (cut, never rounded up)."""
    if size is None:
        return UNAVAILABLE
    value = float(size)
    magnitude = abs(value)
    for unit in BINARY_UNITS:
        if magnitude < 1024 or unit == BINARY_UNITS[-1]:
            break
        magnitude /= 1024
    if unit == "B":
        text = "<1" if 0 < magnitude < 1 else str(math.trunc(magnitude))
    else:
        decimals = 1 if magnitude < 100 else 0
        text = f"{_cut(magnitude, decimals):.{decimals}f}".removesuffix(".0")
    return f"{'-' if value < 0 and text != '0' else ''}{text}{unit}"


def human_rate(bytes_per_s: int | float | None) -> str:
    """A byte rate: the size of one second's bytes followed by "/s" ("12.6MiB/s")."""
    return UNAVAILABLE if bytes_per_s is None else f"{human_bytes(bytes_per_s)}/s"


def per_second(amount: int | float | None, interval_s: float | None) -> float | None:
    """What was counted over an interval, per second; None if either is unknown (or no time passed)."""
    if amount is None or not interval_s or interval_s <= 0:
        return None
    return amount / interval_s


def residency_percent(part: int | None, whole: int | None, decimals: int = 0) -> str | None:
    """part/whole as a floored percentage that never claims a page it did not see, or none it saw:
    "100%" only when part >= whole, "0%" only when part is 0; None when it cannot be computed."""
    if part is None or not whole:
        return None
    if part >= whole:
        return f"{100:.{decimals}f}%"
    return share_percent(100 * max(part, 0) / whole, decimals)


def share_percent(percent: float | None, decimals: int = 0) -> str | None:
    """A percentage already computed (0-100), drawn by the same rule as `residency_percent`."""
    if percent is None:
        return None
    if percent >= 100:
        return f"{100:.{decimals}f}%"
    if percent <= 0:
        return f"{0:.{decimals}f}%"
    step = 10.0**-decimals
    floored = _cut(percent, decimals)
    if floored < step:
        return f"<{step:.{decimals}f}%"
    return f"{min(floored, 100 - step):.{decimals}f}%"
