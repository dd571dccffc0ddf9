"""The cells every renderer shares (mqinspect/render/cells.py): one heat strip, drawn alike by `mqinspect
cache`, `store segments` and the dashboard, and the absent-value word spelled in one place.

The strip's expected cells are the legend's definitions: the glyph is the chunk's cached share floored to
all, half, a quarter or some; the colour red for dirty pages, magenta for pages under writeback, else green.
"""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

from rich.text import Text

from mqinspect.render import cache, store, top
from mqinspect.render.cells import HEAT_LEGEND, heat_strip
from mqinspect.sampling.snapshot import ChunkMap, ChunkState, SegmentView
from probes.residency.scan import ResidencyChunk

RENDER = Path(__file__).resolve().parents[1] / "mqinspect" / "render"
CHUNK_PAGES = 8
# (cached, dirty, writeback) pages of each 8-page chunk, and the cell the legend says it gets
CHUNKS = (
    ((8, 0, 0), ("█", "green")),
    ((4, 0, 0), ("▓", "green")),
    ((2, 0, 0), ("▒", "green")),
    ((1, 0, 0), ("░", "green")),
    ((0, 0, 0), ("·", "dim")),
    ((8, 3, 0), ("█", "red")),
    ((8, 0, 2), ("█", "magenta")),
    ((5, 1, 1), ("▓", "magenta")),
)
EXPECTED = [cell for _counts, cell in CHUNKS]


def cells(strip: Text) -> list[tuple[str, str]]:
    return [(strip.plain[span.start : span.end], str(span.style)) for span in strip.spans]


def residency_chunks() -> tuple[ResidencyChunk, ...]:
    """The chunks as `mqinspect cache` and `store segments` measure them (probes.residency.scan)."""
    return tuple(
        ResidencyChunk(
            index * CHUNK_PAGES,
            (index + 1) * CHUNK_PAGES,
            cached,
            dirty,
            cached / CHUNK_PAGES,
            dirty / CHUNK_PAGES,
            writeback,
        )
        for index, ((cached, dirty, writeback), _cell) in enumerate(CHUNKS)
    )


def segment(**positions) -> SegmentView:
    """The same chunks as the dashboard samples them, in a segment of the store."""
    pages = CHUNK_PAGES * len(CHUNKS)
    required = [
        field.name for field in dataclasses.fields(SegmentView) if field.default is dataclasses.MISSING
    ]
    values = dict.fromkeys(required)
    values.update(
        kind="commitlog",
        name="commitlog/00000000000000000000",
        path="/store/commitlog/00000000000000000000",
        start_offset_bytes=0,
        size_bytes=pages * 4096,
        newest=True,
        pages=pages,
        chunks=ChunkMap.of(
            tuple(
                ChunkState(index * CHUNK_PAGES, (index + 1) * CHUNK_PAGES, *counts)
                for index, (counts, _cell) in enumerate(CHUNKS)
            )
        ),
    )
    return SegmentView(**{**values, **positions})


def test_a_chunk_reads_the_same_in_cache_store_segments_and_the_dashboard():
    assert cells(cache.heat_strip(residency_chunks(), width=len(CHUNKS))) == EXPECTED
    assert cells(store.heat_strip(residency_chunks())) == EXPECTED
    assert cells(top.segment_strip(segment())) == EXPECTED
    assert "magenta = pages under writeback" in HEAT_LEGEND


def test_the_dashboard_marks_its_positions_on_the_same_strip():
    chunk_bytes = CHUNK_PAGES * 4096
    marked = segment(
        wrote_position_bytes=6 * chunk_bytes + 1,
        holds_write_position=True,
        flushed_position_bytes=4 * chunk_bytes,
        holds_flushed_position=True,
    )
    drawn = cells(top.segment_strip(marked))
    assert drawn[6] == ("W", "bold reverse magenta")
    assert drawn[4] == ("F", "bold reverse white")  # on a chunk with no cached page
    assert [cell for index, cell in enumerate(drawn) if index not in (4, 6)] == [
        cell for index, cell in enumerate(EXPECTED) if index not in (4, 6)
    ]


def test_a_strip_without_a_chunk_map_says_unavailable_in_its_width():
    assert heat_strip(None, width=14).plain == "unavailable   "
    assert top.segment_strip(segment(chunks=None)).plain == "unavailable"
    assert heat_strip(residency_chunks()[:2], width=5).plain == "█▓   "


def string_constants(path: Path, value: str) -> list[int]:
    tree = ast.parse(path.read_text())
    return [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Constant) and node.value == value]


def test_the_absent_value_word_and_the_heat_glyphs_are_spelled_in_one_module():
    spelled = {
        (path.name, text): lines
        for path in sorted(RENDER.glob("*.py"))
        for text in ("unavailable", "▓", "▒")  # the glyphs of half and a quarter cached: heat strips only
        if (lines := string_constants(path, text))
    }
    assert sorted(spelled) == [("cells.py", "▒"), ("cells.py", "▓"), ("units.py", "unavailable")]
