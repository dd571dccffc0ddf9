"""The cells every renderer shares: what stands for a value that is absent, numbers as cells, and the heat
strip of a file's pages.

- UNAVAILABLE ("unavailable") for a value that was not measured, with the reason beside it or in a note;
  NONE ("-") in a cell whose reason the panel gives once, or where there is nothing to show. Never 0.
- count_text, bytes_text, pages_text, rate_text, byte_rate_text, interval_rate_text, percent_text: a value
  written by the units convention (render/units.py), or NONE when it is None.
- unavailable_text: the yellow "unavailable: reason; fix: ..." line.
- The heat strip: one cell per chunk of a file (chunk_cell), the glyph saying how much of the chunk is
  cached and the colour what state its pages are in. `mqinspect cache`, `store segments` and the dashboard
  draw it alike; the dashboard marks its write and flush positions on it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from rich.text import Text

from mqinspect.render.units import UNAVAILABLE, human_bytes, human_rate, per_second, residency_percent

NONE = "-"

# The cached share of a chunk, floored to the glyph's bound; a chunk with no cached page reads ABSENT_GLYPH.
HEAT_GLYPHS = ((1.0, "█"), (0.5, "▓"), (0.25, "▒"), (0.0, "░"))
ABSENT_GLYPH = "·"
HEAT_LEGEND = (
    "heat: one cell per chunk of the file; cached pages of the chunk: █ all, ▓ half or more, ▒ a quarter "
    "or more, ░ some, · none; red = the chunk holds dirty pages, magenta = pages under writeback, "
    "green = clean"
)


# --- values as cells


def count_text(value: int | float | None) -> str:
    if value is None:
        return NONE
    return f"{value:,.0f}" if isinstance(value, int) or value >= 100 else f"{value:,.1f}"


def bytes_text(value: int | float | None) -> str:
    return NONE if value is None else human_bytes(value)


def pages_text(pages: int | None, page_size_bytes: int) -> str:
    return NONE if pages is None else human_bytes(pages * page_size_bytes)


def rate_text(value: float | None, unit: str = "/s") -> str:
    return NONE if value is None else f"{count_text(value)}{unit}"


def byte_rate_text(value: float | None) -> str:
    return NONE if value is None else human_rate(value)


def interval_rate_text(amount: int | None, interval_s: float | None) -> str:
    """Bytes counted over an interval, drawn as the rate they make."""
    return byte_rate_text(per_second(amount, interval_s))


def percent_text(part: int | None, whole: int | None) -> str:
    return residency_percent(part, whole) or NONE


def unavailable_text(reason: str | None, fix: str | None = None) -> Text:
    message = f"{UNAVAILABLE}: {reason or 'not measured'}"
    return Text(message + (f"; fix: {fix}" if fix else ""), style="yellow")


# --- the heat strip


class ChunkPages(Protocol):
    """Pages [first_page, end_page) of a file and how many of them are cached, dirty and under writeback
    (None where the source, mincore, cannot see them)."""

    @property
    def first_page(self) -> int: ...

    @property
    def end_page(self) -> int: ...

    @property
    def cached_pages(self) -> int: ...

    @property
    def dirty_pages(self) -> int | None: ...

    @property
    def writeback_pages(self) -> int | None: ...


def chunk_cell(chunk: ChunkPages) -> tuple[str, str]:
    """The glyph and style of one chunk: its cached share (HEAT_GLYPHS), red when it holds dirty pages,
    magenta when some are under writeback, green when clean; a dim dot when none is cached."""
    if chunk.cached_pages == 0:
        return ABSENT_GLYPH, "dim"
    fraction = chunk.cached_pages / max(chunk.end_page - chunk.first_page, 1)
    glyph = next(glyph for floor, glyph in HEAT_GLYPHS if fraction >= floor)
    style = "magenta" if chunk.writeback_pages else "red" if chunk.dirty_pages else "green"
    return glyph, style


def heat_strip(
    chunks: Sequence[ChunkPages] | None, *, width: int = 0, marks: Mapping[int, str] | None = None
) -> Text:
    """One cell per chunk, padded with spaces to `width`; UNAVAILABLE when there is no chunk map.

    `marks` ({chunk index: letter}) draws a letter instead of that chunk's glyph, reversed in its colour:
    the dashboard's write (W) and flush (F) positions."""
    if chunks is None:
        return Text(UNAVAILABLE.ljust(width), style="yellow")
    strip = Text()
    for index, chunk in enumerate(chunks):
        glyph, style = chunk_cell(chunk)
        if marks and index in marks:
            glyph, style = marks[index], "bold reverse " + style.replace("dim", "white")
        strip.append(glyph, style=style)
    strip.append(" " * (width - len(chunks)))
    return strip
