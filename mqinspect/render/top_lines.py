"""`mqinspect top`'s compact stream: one line (or CSV row) per interval of the store's and the system's
totals, for `top --count N`, `top [STORE] INTERVAL COUNT` and `top` into a pipe (--once: the dashboard).

Only draws: every number is a TopSnapshot's. A total over segments or processes is the sum of the measured
ones, and unmeasured (empty in CSV, "unavailable" in a line) when none was measured.
"""

from __future__ import annotations

from collections.abc import Iterable

from mqinspect.render.mem import MEM_FIELDS
from mqinspect.render.stream_lines import Field
from mqinspect.render.units import human_bytes, human_rate, per_second
from mqinspect.sampling.snapshot import TopSnapshot


def _measured_sum(values: Iterable[int | float | None]) -> int | float | None:
    measured = [value for value in values if value is not None]
    return sum(measured) if measured else None


def _segment_bytes(snapshot: TopSnapshot, field: str) -> int | None:
    pages = _measured_sum(getattr(segment, field) for segment in snapshot.store.segments)
    return None if pages is None else int(pages) * snapshot.page_size_bytes


def _process_rate(snapshot: TopSnapshot, field: str) -> float | None:
    return _measured_sum(getattr(process, field) for process in snapshot.processes)


def _memory(snapshot: TopSnapshot, key: str) -> object:
    """The system-wide value `mem`'s stream shows under `key` (None without a memory sample)."""
    field = next(field for field in MEM_FIELDS if field.key == key)
    return None if snapshot.memory is None else field.value(snapshot.memory)


def _per_s(value: float) -> str:
    return f"{value:,.0f}/s"


# Most important first: a terminal narrower than all of them keeps the first that fit (at 80 columns: up to
# the system's dirty bytes).
TOP_FIELDS: tuple[Field[TopSnapshot], ...] = (
    Field("store_cached_bytes", "cached", lambda s: _segment_bytes(s, "cached_pages"), human_bytes, width=8),
    Field("store_dirty_bytes", "dirty", lambda s: _segment_bytes(s, "dirty_pages"), human_bytes, width=8),
    Field("minor_faults_per_s", "faults", lambda s: _process_rate(s, "minor_faults_per_s"), _per_s, width=8),
    Field("major_faults_per_s", "major", lambda s: _process_rate(s, "major_faults_per_s"), _per_s, width=7),
    Field(
        "to_sockets_bytes_per_s",
        "to sockets",
        lambda s: per_second(s.sendpaths.bytes_to_sockets, s.sendpaths.interval_s),
        human_rate,
        width=10,
    ),
    Field("system_dirty_bytes", "sys dirty", lambda s: _memory(s, "dirty_bytes"), human_bytes, width=9),
    Field(
        "system_writeback_bytes", "writeback", lambda s: _memory(s, "writeback_bytes"), human_bytes, width=9
    ),
    Field("regime", "regime", lambda s: _memory(s, "regime"), width=16),
)
