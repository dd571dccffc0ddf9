"""What every probe shares: what it traces, and how it reads its program's cumulative maps.

`ScopedProbe` is the base of the probes (faults, pagecache, writeback, sendpath, syscalls). It holds the scope
of one trace: every process or the given pids (`ProcessWatch`: checked to be live processes, named, and
watched for their exit) and, with --store, the store's files. From the scope it builds the kernel-side filter
every program takes: the sets mqi_tgids and (for programs that filter files) mqi_inodes, and the defines
FILTER_TGIDS, FILTER_INODES, MAX_TGIDS, MAX_INODES, MAX_THREADS and IGNORE_TGID (the tracer itself).

The map readers: `CounterDifferences` (per-key cumulative maps) and `CumulativeTotals` (one-entry arrays) turn
cumulative counters into what each interval gained. `summed_snapshot`, `merge_rows` and `add_counts` fold an
interval's snapshot into the session's summary.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from probes.ebpf.inodes import FileId, FileLabel, kernel_inode_keys, store_files
from probes.ebpf.loader import TRACEFS, IntSetMap, LoadedProgram, Parameters, checked_int
from probes.ebpf.tracepoints import tracepoint_format_path
from probes.procfs import PROC_ROOT, ProcessFaults, ProcessGone, read_process_faults
from store.errors import StoreError

_ENDED_STATES = ("Z", "X")  # a zombie has done all it will do: its counts are final

# --- the traced processes ---------------------------------------------------------------------------------


def validated_pids(pids: Sequence[int], proc_root: Path = PROC_ROOT) -> tuple[int, ...]:
    """The pids, sorted and unique, once each is an int naming a live process (ProcessGone otherwise)."""
    checked = tuple(sorted({checked_int(pid, "pid") for pid in pids}))
    for pid in checked:
        if pid <= 0:
            raise ValueError(f"{pid} is not a process id")
        if not process_exists(pid, proc_root):
            raise ProcessGone(pid, proc_root)
    return checked


def process_exists(pid: int, proc_root: Path = PROC_ROOT) -> bool:
    return (proc_root / str(pid)).is_dir()


def has_ended(stat: ProcessFaults | None) -> bool:
    """Whether a process whose /proc/PID/stat read gave `stat` (None: it is gone) has exited."""
    return stat is None or stat.state in _ENDED_STATES


class ProcessWatch:
    """The traced processes (`pids`; none: every process), the names of the processes a probe reports, and
    which of them exited: each exit is reported once, and a pid given to trace stays ended, so that a new
    process reusing it is not taken for ours."""

    def __init__(self, pids: Sequence[int], proc_root: Path = PROC_ROOT):
        self.pids = validated_pids(pids, proc_root)
        self._proc_root = proc_root
        self._comms: dict[int, str | None] = {}
        self._ended: set[int] = set()

    def subject(self) -> str:
        """Who is traced, for the startup line: "every process", "pid 12" or "pids 12, 34"."""
        if not self.pids:
            return "every process"
        return f"pid {self.pids[0]}" if len(self.pids) == 1 else "pids " + ", ".join(map(str, self.pids))

    def comm(self, pid: int, seen: bytes = b"") -> str | None:
        """The name of `pid`: as the kernel saw it (`seen`, a NUL-padded comm), else the one kept for it, else
        read from /proc now and kept (until `forget`)."""
        name = bytes(seen).split(b"\0", 1)[0]
        if name:
            return name.decode(errors="replace")
        if pid not in self._comms:
            try:
                self._comms[pid] = (self._proc_root / str(pid) / "comm").read_text().strip()
            except OSError:
                self._comms[pid] = None
        return self._comms[pid]

    def remember_comms(self) -> None:
        """Read the traced processes' names now, while they surely exist."""
        for pid in self.pids:
            self.comm(pid)

    def stat(self, pid: int) -> ProcessFaults | None:
        """/proc/PID/stat of `pid` now (None: it is gone), keeping its name if none is kept yet."""
        try:
            stat = read_process_faults(pid, self._proc_root)
        except ProcessGone:
            return None
        self._comms.setdefault(pid, stat.comm)
        return stat

    def running(self) -> tuple[int, ...]:
        """The traced pids not yet seen to exit."""
        return tuple(pid for pid in self.pids if pid not in self._ended)

    def all_ended(self) -> bool:
        """Whether pids were given and every one has been seen to exit: nothing of theirs is left to trace."""
        return bool(self.pids) and not self.running()

    def newly_ended(self, pids: Iterable[int]) -> set[int]:
        """Those of `pids` that have exited (gone, or a zombie whose counts are final) since the last call."""
        return self.note_ended({pid: self.stat(pid) for pid in set(pids) - self._ended})

    def note_ended(self, stats: Mapping[int, ProcessFaults | None]) -> set[int]:
        """Those of the processes whose /proc/PID/stat was just read (`stats`) that have exited, noted as
        ended so that newly_ended() and running() leave them out from now on."""
        ended = {pid for pid, stat in stats.items() if has_ended(stat)}
        self._ended |= ended
        return ended

    def exited(self, program: LoadedProgram) -> tuple[int, ...]:
        """The traced processes that exited since the last call, dropped from the kernel's set mqi_tgids."""
        gone = tuple(sorted(self.newly_ended(self.pids)))
        for pid in gone:
            program.delete("mqi_tgids", (pid,))
        return gone

    def forget(self, pid: int) -> None:
        """Drop what is kept for `pid`. A pid given to trace stays ended: a new process reusing it is not
        ours; without given pids any process is ours, so a reused pid can end again."""
        self._comms.pop(pid, None)
        if pid not in self.pids:
            self._ended.discard(pid)


# --- the scope of a probe ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScopeLimits:
    """Entries of the maps every program has: mqi_tgids and the per-process maps (`tgids`), the per-thread
    state of a call or fault in flight (`threads`), and mqi_inodes with the per-file maps (`inodes`; only
    the programs that filter files have them). Each probe's MapLimits adds its own maps."""

    tgids: int = 16384
    inodes: int = 65536
    threads: int = 32768


class ScopedProbe:
    """The base of every probe: its scope (every process or the given pids; with a store, the store's files)
    and the kernel-side filter built from it. A subclass sets `filters_files` when its program has the inode
    set mqi_inodes (FILTER_INODES: only the store's files, with --store)."""

    filters_files: ClassVar[bool] = False

    def __init__(self, pids: Sequence[int], store: Path | None, limits: ScopeLimits, proc_root: Path):
        self.processes = ProcessWatch(pids, proc_root)
        self.pids = self.processes.pids
        self.store = store
        self.limits = limits
        self._proc_root = proc_root
        self._store_files: dict[FileId, FileLabel] = store_files(store) if store else {}

    def interval_header(self, interval_s: float) -> dict[str, Any]:
        """The fields every interval snapshot starts with: kind, length, end time, and what was traced."""
        return {
            "kind": "interval",
            "interval_s": round(interval_s, 6),
            "end_time_unix_s": time.time(),
            "pids": self.pids,
            "store": str(self.store) if self.store else None,
        }

    def per_segment(self, otherwise: str) -> str:
        """How the subject line says where events are broken down: per store segment with --store."""
        return f"per segment of the store {self.store}" if self.store else otherwise

    def sets(self) -> tuple[IntSetMap, ...]:
        sets = []
        if self.pids:
            sets.append(IntSetMap.of_ints("mqi_tgids", self.pids))
        if self.filters_files and self.store:
            sets.append(IntSetMap("mqi_inodes", kernel_inode_keys(self._store_files)))
        return tuple(sets)

    def scope_parameters(self, **defines: int) -> Parameters:
        """The program's defines: the filters, then the probe's own `defines`, then the sizes of the maps
        every program has and the tracer's own tgid (left out when every process is traced)."""
        filters = {"FILTER_TGIDS": int(bool(self.pids))}
        sizes = {"MAX_TGIDS": self.limits.tgids}
        if self.filters_files:
            filters["FILTER_INODES"] = int(bool(self.store))
            sizes["MAX_INODES"] = self.limits.inodes
        sizes |= {"MAX_THREADS": self.limits.threads, "IGNORE_TGID": os.getpid()}
        return Parameters.of(**filters, **defines, **sizes)

    def follow_store(self, program: LoadedProgram) -> tuple[dict[FileId, FileLabel], dict[FileId, FileLabel]]:
        """Add the segments the store created since the last look (a rolled CommitLog, a new ConsumeQueue
        file) to the kernel's inode set: the new segment is where the writes, and warm-up's faults, go.
        Returns the store's files now and those of them that are new."""
        current = current_store_files(self.store)
        new = {file: label for file, label in current.items() if file not in self._store_files}
        for key in kernel_inode_keys(new):
            program.put("mqi_inodes", key, (1,))
        self._store_files.update(current)  # a deleted segment's inode may come back as a new one
        return current, new


# Several probes of one session (the dashboard runs four) follow the same store at the same moment; one
# listing serves them all for this long, which is far below any interval.
STORE_LISTING_REUSE_S = 0.25
_listings: dict[Path, tuple[float, dict[FileId, FileLabel]]] = {}
_listings_lock = threading.Lock()


def current_store_files(store: Path | None) -> dict[FileId, FileLabel]:
    """The store's files now; nothing when there is no store, or while it is being deleted or moved."""
    if store is None:
        return {}
    with _listings_lock:
        listed = _listings.get(store)
        if listed is not None and time.monotonic() - listed[0] < STORE_LISTING_REUSE_S:
            return dict(listed[1])
        try:
            files = store_files(store)
        except (StoreError, OSError):
            return {}
        _listings[store] = (time.monotonic(), files)
        return dict(files)


def handler_defines(defines: Mapping[str, str], tracefs: Path = TRACEFS) -> dict[str, int]:
    """DEFINE=1 for each optional tracepoint this kernel has, 0 for one it lacks (bcc cannot build the
    argument struct of a tracepoint that does not exist). Where tracefs cannot be read (not root:
    --print-bpf) a tracepoint counts as present, which is what a privileged run on a kernel that has it
    compiles."""
    return {define: int(_tracepoint_present(tp, tracefs)) for tp, define in defines.items()}


def _tracepoint_present(tracepoint: str, tracefs: Path) -> bool:
    try:
        return tracepoint_format_path(tracefs, tracepoint).exists()
    except PermissionError:
        return True


# --- reading cumulative maps -------------------------------------------------------------------------------


def scalar(value: Any) -> int:
    """A scalar map key or value: bcc gives a ctypes number from items(), a plain int from batch reads."""
    return int(getattr(value, "value", value))


class CounterDifferences:
    """What each entry of a cumulative BPF map gained since the previous read (entries are never drained,
    so an event counted while user space reads lands in the next difference instead of being lost)."""

    def __init__(self) -> None:
        self._previous: dict[tuple[int, ...], tuple[int, ...]] = {}

    def gained(self, entries: Iterable[tuple[tuple[int, ...], tuple[int, ...]]]) -> dict[tuple, tuple]:
        differences = {}
        for key, now in entries:
            before = self._previous.get(key, (0,) * len(now))
            self._previous[key] = now
            change = tuple(a - b for a, b in zip(now, before, strict=True))
            if any(change):
                differences[key] = change
        return differences

    def known_keys(self) -> list[tuple[int, ...]]:
        return list(self._previous)

    def forget(self, key: tuple[int, ...]) -> None:
        self._previous.pop(key, None)


class CumulativeTotals:
    """Differences between successive reads of a one-entry array of cumulative counters."""

    def __init__(self, map_name: str, fields: Sequence[str]):
        self.map_name = map_name
        self.fields = tuple(fields)
        self._previous = (0,) * len(self.fields)

    def since_last_read(self, program: LoadedProgram) -> dict[str, int]:
        entries = program.read(self.map_name)
        now = tuple(getattr(entries[0][1], name) for name in self.fields) if entries else self._previous
        gained = {name: a - b for name, a, b in zip(self.fields, now, self._previous, strict=True)}
        self._previous = now
        return gained


# --- summing snapshot rows ---------------------------------------------------------------------------------


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
    """The exited pids of two snapshots together, sorted."""
    return tuple(sorted({*earlier, *later}))


def summed_snapshot(
    summary: Any, snapshot: Any, summed: Sequence[str], optional: Sequence[str], **merged: Any
) -> Any:
    """`summary` with `snapshot` folded in: the `summed` counts added, the `optional` ones added where either
    has one (None + None stays None), the end time of `snapshot`, the exited pids of both, and the `merged`
    fields (the rows, merged by the probe) as given."""
    return dataclasses.replace(
        summary,
        **{name: getattr(summary, name) + getattr(snapshot, name) for name in summed},
        **{name: add_optional(getattr(summary, name), getattr(snapshot, name)) for name in optional},
        end_time_unix_s=snapshot.end_time_unix_s,
        exited_pids=merged_pids(summary.exited_pids, snapshot.exited_pids),
        **merged,
    )
