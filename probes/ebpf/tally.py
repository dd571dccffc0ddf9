"""Adding up a probe's counts: into rows while an interval is assembled (`Tally`), and interval after interval
into the session's summary (`summed_snapshot`, `merge_rows`, `add_counts`).

A `Tally` serves every probe, for whatever its rows count: a process's faults, a page range's added pages, a
file's dirtied pages, a descriptor's bytes by send path, a syscall's calls and latency histogram.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import Any


class Tally(dict):
    """The counts of one row (a process, a file, a page range, a syscall) while an interval or the summary is
    assembled; a count not counted yet is 0.

    A count is keyed by its name ("faults", "written_pages"), or by a (part, key) pair where a row keeps a
    count per key: ("calls", "read") for the calls of each syscall, ("slot", 12) for a histogram's buckets.
    `tally[name] += n` counts one, `add` sums another tally or named counts, `add_fields` the named fields of
    a record (a BPF map value, a snapshot row), and `named` and `part` give the counts back for a row's
    fields. A dict, not a Counter: the probes count tens of thousands of records per interval, and
    Counter.update costs about a microsecond more per call."""

    __slots__ = ()

    def __missing__(self, key: Hashable) -> int:
        return 0

    def add(self, other: Mapping[Hashable, int] | None = None, /, **counts: int) -> None:
        for source in (other or {}, counts):
            for key, count in source.items():
                self[key] = self.get(key, 0) + count

    def add_fields(self, record: Any, names: Iterable[str]) -> None:
        for name in names:
            self[name] += getattr(record, name)

    @classmethod
    def of_fields(cls, record: Any, names: Iterable[str]) -> Tally:
        tally = cls()
        tally.add_fields(record, names)
        return tally

    def named(self, names: Iterable[str]) -> dict[str, int]:
        """The counts of `names`, as keyword arguments of a row."""
        return {name: self[name] for name in names}

    def part(self, part: str) -> dict[Hashable, int]:
        """The counts kept per key under `part`, by key, in the order they were first counted."""
        return {key[1]: count for key, count in self.items() if isinstance(key, tuple) and key[0] == part}


# --- the summary: snapshots and their rows folded together -------------------------------------------


def add_optional(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else a + b


def add_counts(a: Any, b: Any, fixed: Sequence[str]) -> Any:
    """`a` with every numeric field of `b` added, except the `fixed` ones (None + None stays None)."""
    changes = {}
    for item in dataclasses.fields(a):
        left, right = getattr(a, item.name), getattr(b, item.name)
        if item.name not in fixed and (isinstance(left, int) or isinstance(right, int)):
            changes[item.name] = add_optional(left, right)
    return dataclasses.replace(a, **changes)


def merge_rows(
    earlier: Sequence[Any],
    later: Sequence[Any],
    identity: Sequence[str],
    combine: Callable[[Any, Any], Any] | None = None,
) -> list[Any]:
    """Rows of two intervals, those with the same `identity` fields combined: by `combine(before, row)`,
    else by adding their counts."""
    merged: dict[tuple, Any] = {}
    for row in (*earlier, *later):
        key = tuple(getattr(row, name) for name in identity)
        if key not in merged:
            merged[key] = row
        elif combine is None:
            merged[key] = add_counts(merged[key], row, identity)
        else:
            merged[key] = combine(merged[key], row)
    return list(merged.values())


def merged_pids(earlier: Iterable[int], later: Iterable[int]) -> tuple[int, ...]:
    """Two snapshots' pid lists (exited, followed) together, sorted."""
    return tuple(sorted({*earlier, *later}))


def merged_late_store_files(summary: Any, snapshot: Any) -> dict[str, Any]:
    """The store's files followed late (ScopedProbe.late_store_files) of two snapshots together."""
    return {
        "late_store_files": (*summary.late_store_files, *snapshot.late_store_files),
        "late_store_files_reason": snapshot.late_store_files_reason or summary.late_store_files_reason,
    }


def summed_snapshot(
    summary: Any, snapshot: Any, summed: Sequence[str], optional: Sequence[str], **merged: Any
) -> Any:
    """`summary` with `snapshot` folded in: the `summed` counts added, the `optional` ones added where either
    has one (None + None stays None), the end time of `snapshot`, the exited and followed pids of both, and
    the `merged` fields (the rows, merged by the probe) as given."""
    return dataclasses.replace(
        summary,
        **{name: getattr(summary, name) + getattr(snapshot, name) for name in summed},
        **{name: add_optional(getattr(summary, name), getattr(snapshot, name)) for name in optional},
        end_time_unix_s=snapshot.end_time_unix_s,
        exited_pids=merged_pids(summary.exited_pids, snapshot.exited_pids),
        followed_pids=merged_pids(summary.followed_pids, snapshot.followed_pids),
        **merged,
    )
