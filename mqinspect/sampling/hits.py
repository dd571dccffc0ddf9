"""The page-cache hit ratio of the dashboard's segments and processes, from the pagecache probe's snapshot.

The probe counts the read path's lookups of the store's files by the traced processes
(probes/ebpf/pagecache.py, `hit_ratio_fields`); this picks one segment's or one process's share of them.
A row the probe did not report had no lookup this interval: 0 hits, 0 misses and no ratio. Where the probe is
not running, or this kernel lacks the lookup tracepoint, the fields are None with the reason.
"""

from __future__ import annotations

from typing import Any

from probes.ebpf.pagecache import NO_LOOKUPS

HIT_FIELDS = ("hit_pages", "miss_pages", "hit_ratio_percent")
PAGECACHE_NOT_RUNNING = "the pagecache probe is not running"
NO_LOOKUP_ROW = {"hit_pages": 0, "miss_pages": 0, "hit_ratio_percent": None}


def hit_fields(snapshot: Any, row: Any, not_running: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The hit fields for one segment or process (`row`: its row in the pagecache `snapshot`, or None) and the
    reasons of those that are None. `snapshot` None: the probe is not running (`not_running` says so)."""
    if snapshot is None:
        return dict.fromkeys(HIT_FIELDS), dict.fromkeys(("hit_pages", "miss_pages"), not_running)
    if snapshot.hit_pages is None:
        return dict.fromkeys(HIT_FIELDS), dict.fromkeys(("hit_pages", "miss_pages"), NO_LOOKUPS)
    if row is None:
        return dict(NO_LOOKUP_ROW), {}
    return {name: getattr(row, name) for name in HIT_FIELDS}, {}


def process_row(snapshot: Any, pid: int) -> Any:
    """The process's row in the pagecache snapshot, or None."""
    return next((row for row in getattr(snapshot, "processes", ()) if row.pid == pid), None)
