"""The syscalls probe: the memory and flushing syscalls of the traced processes (mmap, munmap, madvise,
mlock, mlock2, munlock, msync, fadvise64, mincore, fsync, fdatasync), counted and timed, so warm-up (mmap,
madvise WILLNEED / POPULATE_*, mlock) and flushing (msync, fsync, fdatasync) show up with their cost.

Kernel side: programs/syscalls.bpf.c. It keeps, cumulatively, per process and syscall a log2 histogram of
durations in nanoseconds (bcc's bpf_log2l buckets: bucket s holds [2^(s-1), 2^s - 1] ns), and per process,
syscall, advice/flags and target: calls, errors, total time and bytes named. This module takes differences
each interval and names the targets.

What the counts mean:
  calls, errors        calls that returned while traced (errors: negative return); as `strace -c` counts them
  total_ns, mean_ns    time from entry to exit, exact (not from the histogram)
  p50_ns_at_most, p99_ns_at_most, max_ns_at_most
                       bucket bounds read from the histogram: the upper bound of the bucket holding the 50th
                       and 99th percentile call and the slowest call. The true value lies in that bucket,
                       at most this and more than half of it.
  length_bytes         the length argument of the calls that succeeded (0 for fsync, fdatasync; fadvise64's
                       0 means "to the end of the file")
  mode_switches        2 x calls: each call enters and leaves the kernel once
Targets: mmap, fadvise64, fsync and fdatasync name a descriptor, resolved through /proc/PID/fd like the
sendpath probe's ("anonymous memory" for mmap without one); the others name an address, resolved through
the mappings the process made while traced (mmap's return value and descriptor, from the program), else
/proc/PID/maps snapshots (read at the start, and again when an address lies outside every known mapping).
An address none of them covers (in practice: a mapping older than the session and removed before its maps
were read, as happens when every process is traced) is "unmapped address". With --store only the store's
segments are listed per target (named by segment); every call counts in the totals.

Cost: only these 11 syscalls go through the syscall tracepoints while attached; they are rare next to reads
and writes (a dd of 4 M one-byte reads and writes ran at the same speed with the probe attached).
"""

from __future__ import annotations

import dataclasses
import time
from collections import defaultdict, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from probes.ebpf import registry
from probes.ebpf.inodes import AddressSpaces, FdNames
from probes.ebpf.loader import LoadedProgram, Parameters, ProgramSpec, program_spec
from probes.ebpf.registry import MEMORY_SYSCALLS
from probes.ebpf.scope import (
    FOLLOWING_FUNCTIONS,
    CounterDifferences,
    LostRecords,
    ScopedProbe,
    ScopeLimits,
    SnapshotHeader,
    scalar,
)
from probes.ebpf.tally import Tally, merge_rows, merged_pids

SYSCALLS = MEMORY_SYSCALLS  # a syscall's position is its id in the program's map keys
_ENTER_FUNCTIONS = {
    "mmap": "mqi_mmap_e",
    "munmap": "mqi_munmap_e",
    "madvise": "mqi_madvise_e",
    "mlock": "mqi_mlock_e",
    "mlock2": "mqi_mlock2_e",
    "munlock": "mqi_munlock_e",
    "msync": "mqi_msync_e",
    "fadvise64": "mqi_fadvise_e",
    "mincore": "mqi_mincore_e",
    "fsync": "mqi_fsync_e",
    "fdatasync": "mqi_fdatasync_e",
}
EXIT_FUNCTION = "mqi_sys_exit"
FD_TARGETS = frozenset({"mmap", "fadvise64", "fsync", "fdatasync"})  # the others aim at an address
RECENT_MAPPINGS = 4096  # per process: the mappings it made while traced, kept to name addresses
LAST_SLOT = 63
PERCENTILES = (0.50, 0.99)

# Linux's values (include/uapi/asm-generic/mman-common.h, mman.h, fadvise.h) for naming a call's detail.
MADVISE_ADVICE = {
    0: "MADV_NORMAL", 1: "MADV_RANDOM", 2: "MADV_SEQUENTIAL", 3: "MADV_WILLNEED", 4: "MADV_DONTNEED",
    8: "MADV_FREE", 9: "MADV_REMOVE", 10: "MADV_DONTFORK", 11: "MADV_DOFORK", 12: "MADV_MERGEABLE",
    13: "MADV_UNMERGEABLE", 14: "MADV_HUGEPAGE", 15: "MADV_NOHUGEPAGE", 16: "MADV_DONTDUMP",
    17: "MADV_DODUMP", 18: "MADV_WIPEONFORK", 19: "MADV_KEEPONFORK", 20: "MADV_COLD", 21: "MADV_PAGEOUT",
    22: "MADV_POPULATE_READ", 23: "MADV_POPULATE_WRITE", 24: "MADV_DONTNEED_LOCKED", 25: "MADV_COLLAPSE",
    100: "MADV_HWPOISON", 101: "MADV_SOFT_OFFLINE", 102: "MADV_GUARD_INSTALL", 103: "MADV_GUARD_REMOVE",
}  # fmt: skip
FADVISE_ADVICE = {
    0: "POSIX_FADV_NORMAL", 1: "POSIX_FADV_RANDOM", 2: "POSIX_FADV_SEQUENTIAL", 3: "POSIX_FADV_WILLNEED",
    4: "POSIX_FADV_DONTNEED", 5: "POSIX_FADV_NOREUSE",
}  # fmt: skip
MSYNC_FLAGS = {1: "MS_ASYNC", 2: "MS_INVALIDATE", 4: "MS_SYNC"}
MLOCK2_FLAGS = {1: "MLOCK_ONFAULT"}
MMAP_SHARING = {0x01: "MAP_SHARED", 0x02: "MAP_PRIVATE", 0x03: "MAP_SHARED_VALIDATE"}  # a 2-bit field
MMAP_FLAGS = {0x20: "MAP_ANONYMOUS", 0x2000: "MAP_LOCKED", 0x8000: "MAP_POPULATE"}
MMAP_FLAGS_SHOWN = 0x03 | sum(MMAP_FLAGS)


def _program() -> ProgramSpec:
    """Every syscall's enter and exit handler, checked against the tracepoint registry."""
    functions = {f"syscalls:sys_enter_{name}": _ENTER_FUNCTIONS[name] for name in SYSCALLS}
    functions |= {f"syscalls:sys_exit_{name}": EXIT_FUNCTION for name in SYSCALLS}
    return program_spec(registry.SYSCALLS, functions | FOLLOWING_FUNCTIONS)


PROGRAM = _program()


@dataclass(frozen=True)
class MapLimits(ScopeLimits):
    threads: int = 65536
    latency_slots: int = 65536  # (process, syscall, bucket) combinations
    records: int = 65536  # (process, syscall, detail, target) combinations
    mappings: int = 65536  # mmaps in one interval


def detail_name(syscall: str, detail: int) -> str | None:
    """The advice or flags a call was made with, by name ("MADV_WILLNEED", "MS_SYNC"); None when none."""
    if syscall == "madvise":
        return MADVISE_ADVICE.get(detail, f"advice {detail}")
    if syscall == "fadvise64":
        return FADVISE_ADVICE.get(detail, f"advice {detail}")
    names = {"msync": MSYNC_FLAGS, "mlock2": MLOCK2_FLAGS, "mmap": MMAP_FLAGS}.get(syscall)
    if names is None:
        return None
    parts = [MMAP_SHARING[detail & 0x03]] if syscall == "mmap" and detail & 0x03 else []
    parts += [name for bit, name in names.items() if detail & bit]
    unknown = detail & ~(sum(names) | (0x03 if syscall == "mmap" else 0))
    parts += [hex(unknown)] if unknown else []
    return "|".join(parts) or None


# --- histograms ---------------------------------------------------------------------------------------------


def bucket_bounds_ns(slot: int) -> tuple[int, int]:
    """[low, high] ns of a bpf_log2l bucket: slot 0 is 0 ns, slot s is [2^(s-1), 2^s - 1]."""
    return (0, 0) if slot == 0 else (1 << (slot - 1), (1 << slot) - 1)


def percentile_bound_ns(buckets: Mapping[int, int], fraction: float) -> int | None:
    """The upper bound of the bucket that holds the call at `fraction` of the calls (ordered by duration)."""
    total = sum(buckets.values())
    if not total:
        return None
    wanted = max(1, -(-fraction * total // 1))  # the rank of that call, counting from 1
    seen = 0
    for slot in sorted(buckets):
        seen += buckets[slot]
        if seen >= wanted:
            return bucket_bounds_ns(slot)[1]
    raise AssertionError("unreachable: the ranks end at the total")


# --- snapshots ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LatencyBucket:
    low_ns: int
    high_ns: int
    calls: int


@dataclass(frozen=True)
class SyscallLatency:
    """One syscall over the interval: counts, exact total time and the histogram's bucket bounds."""

    syscall: str
    calls: int
    errors: int
    total_ns: int
    mean_ns: float | None
    p50_ns_at_most: int | None
    p99_ns_at_most: int | None
    max_ns_at_most: int | None
    length_bytes: int
    buckets: tuple[LatencyBucket, ...]


@dataclass(frozen=True)
class ProcessSyscalls:
    pid: int
    comm: str | None
    calls: int
    errors: int
    mode_switches: int
    total_ns: int
    per_syscall: tuple[SyscallLatency, ...]


@dataclass(frozen=True)
class TargetCalls:
    """Calls of one process aimed at one target with one advice or set of flags.

    target_kind: "file" (named by store segment or path), "anonymous" (memory not backed by a file),
    "socket", "pipe", "other", "unknown" (a descriptor closed before it was read) or "unmapped" (an address
    no snapshot of the maps covers)."""

    pid: int
    syscall: str
    detail: str | None
    target_kind: str
    target: str
    calls: int
    errors: int
    total_ns: int
    length_bytes: int


@dataclass(frozen=True)
class SyscallsSnapshot(SnapshotHeader):
    """Memory and flushing syscalls over one interval (kind "interval") or the session (kind "summary")."""

    syscalls: int
    syscall_errors: int
    mode_switches: int
    total_ns: int
    per_syscall: tuple[SyscallLatency, ...]  # every traced process together
    lost_records: int
    processes: tuple[ProcessSyscalls, ...]
    targets: tuple[TargetCalls, ...]
    exited_pids: tuple[int, ...] = ()
    followed_pids: tuple[int, ...] = ()  # processes started by traced ones, followed (scope.h)


# --- assembling rows -------------------------------------------------------------------------------------


# A syscall's counts (a Tally), each a SyscallLatency field of the same name; and ("slot", s): the calls whose
# duration fell in bpf_log2l bucket s.
_LATENCY_COUNTS = ("calls", "errors", "total_ns", "length_bytes")


def _tally_of_latency(row: SyscallLatency) -> Tally:
    tally = Tally.of_fields(row, _LATENCY_COUNTS)
    for bucket in row.buckets:
        tally[("slot", _slot_of(bucket.low_ns))] += bucket.calls
    return tally


def _latency_row(syscall: str, tally: Tally) -> SyscallLatency:
    slots = {slot: calls for slot, calls in tally.part("slot").items() if calls}
    p50, p99 = (percentile_bound_ns(slots, fraction) for fraction in PERCENTILES)
    calls, total_ns = tally["calls"], tally["total_ns"]
    return SyscallLatency(
        syscall=syscall,
        **tally.named(_LATENCY_COUNTS),
        mean_ns=round(total_ns / calls, 1) if calls else None,
        p50_ns_at_most=p50,
        p99_ns_at_most=p99,
        max_ns_at_most=bucket_bounds_ns(max(slots))[1] if slots else None,
        buckets=tuple(LatencyBucket(*bucket_bounds_ns(slot), slots[slot]) for slot in sorted(slots)),
    )


def _slot_of(low_ns: int) -> int:
    return low_ns.bit_length()  # inverse of bucket_bounds_ns: 0 -> 0, 2^(s-1) -> s


_ProcessTallies = dict[int, dict[str, Tally]]


def _latency_rows(tallies: Mapping[str, Tally]) -> tuple[SyscallLatency, ...]:
    return tuple(_latency_row(name, tallies[name]) for name in SYSCALLS if name in tallies)


def _summed(tallies: Iterable[Tally]) -> Tally:
    whole = Tally()
    for tally in tallies:
        whole.add(tally)
    return whole


def _process_row(pid: int, comm: str | None, tallies: Mapping[str, Tally]) -> ProcessSyscalls:
    whole = _summed(tallies.values())
    return ProcessSyscalls(
        pid=pid,
        comm=comm,
        calls=whole["calls"],
        errors=whole["errors"],
        mode_switches=2 * whole["calls"],
        total_ns=whole["total_ns"],
        per_syscall=_latency_rows(tallies),
    )


def _snapshot(
    *,
    kind: str,
    interval_s: float,
    pids: tuple[int, ...],
    store: str | None,
    lost_records: int,
    processes: Mapping[int, tuple[str | None, Mapping[str, Tally]]],
    targets: Sequence[TargetCalls],
    exited_pids: tuple[int, ...],
    followed_pids: tuple[int, ...] = (),
    end_time_unix_s: float | None = None,
) -> SyscallsSnapshot:
    everyone: dict[str, Tally] = defaultdict(Tally)
    for _comm, tallies in processes.values():
        for syscall, tally in tallies.items():
            everyone[syscall].add(tally)
    rows = [_process_row(pid, comm, tallies) for pid, (comm, tallies) in processes.items()]
    rows.sort(key=lambda row: (-row.total_ns, row.pid))
    whole = _summed(everyone.values())
    return SyscallsSnapshot(
        kind=kind,
        interval_s=interval_s,
        end_time_unix_s=time.time() if end_time_unix_s is None else end_time_unix_s,
        pids=pids,
        store=store,
        syscalls=whole["calls"],
        syscall_errors=whole["errors"],
        mode_switches=2 * whole["calls"],
        total_ns=whole["total_ns"],
        per_syscall=_latency_rows(everyone),
        lost_records=lost_records,
        processes=tuple(rows),
        targets=tuple(sorted(targets, key=lambda row: (-row.total_ns, row.pid, row.syscall, row.target))),
        exited_pids=exited_pids,
        followed_pids=followed_pids,
    )


def combine_snapshots(summary: SyscallsSnapshot | None, snapshot: SyscallsSnapshot) -> SyscallsSnapshot:
    """The session so far: histograms merged bucket by bucket (so the percentile bounds are the session's),
    processes merged by pid, targets by (pid, syscall, detail, target)."""
    if summary is None:
        return dataclasses.replace(snapshot, kind="summary")
    processes: dict[int, tuple[str | None, dict[str, Tally]]] = {}
    for row in (*summary.processes, *snapshot.processes):
        comm, tallies = processes.setdefault(row.pid, (row.comm, defaultdict(Tally)))
        processes[row.pid] = (row.comm or comm, tallies)
        for latency in row.per_syscall:
            tallies[latency.syscall].add(_tally_of_latency(latency))
    return _snapshot(
        kind="summary",
        interval_s=round(summary.interval_s + snapshot.interval_s, 6),
        pids=summary.pids,
        store=summary.store,
        lost_records=summary.lost_records + snapshot.lost_records,
        processes=processes,
        targets=_merge_targets(summary.targets, snapshot.targets),
        exited_pids=merged_pids(summary.exited_pids, snapshot.exited_pids),
        followed_pids=merged_pids(summary.followed_pids, snapshot.followed_pids),
        end_time_unix_s=snapshot.end_time_unix_s,
    )


# A target row's identity: rows with the same one add up (addresses in one file join).
_TARGET_IDENTITY = ("pid", "syscall", "detail", "target_kind", "target")


def _merge_targets(earlier: Sequence[TargetCalls], later: Sequence[TargetCalls]) -> list[TargetCalls]:
    return merge_rows(earlier, later, _TARGET_IDENTITY)


# --- the probe ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Target:
    kind: str
    name: str
    in_store: bool


ANONYMOUS = _Target("anonymous", "anonymous memory", False)
UNMAPPED = _Target("unmapped", "unmapped address", False)


@dataclass(frozen=True)
class _Mapped:
    """A mapping the process made while traced: [start, end) of `target`."""

    start: int
    end: int
    target: _Target


class SyscallsProbe(ScopedProbe):
    """`mqinspect trace syscalls`: see the module docstring. Construct, then run in a TraceSession."""

    name = registry.SYSCALLS.name
    program = PROGRAM
    map_limits = MapLimits

    def __init__(self, pids: Sequence[int] = (), **scope: Any):
        super().__init__(pids, **scope)
        self._fd_names = FdNames(self._store_files, self._proc_root)
        self._spaces = AddressSpaces(self._proc_root)
        self._mapped: dict[int, deque[_Mapped]] = {}
        self._latency = CounterDifferences()
        self._calls = CounterDifferences()
        self._lost = LostRecords()

    def parameters(self) -> Parameters:
        return self.scope_parameters(
            MAX_LATENCY_SLOTS=self.limits.latency_slots,
            MAX_RECORDS=self.limits.records,
            MAX_MAPPINGS=self.limits.mappings,
            LAST_SLOT=LAST_SLOT,
            MMAP_FLAGS_SHOWN=MMAP_FLAGS_SHOWN,
            **{f"SYSCALL_{name.upper()}": number for number, name in enumerate(SYSCALLS)},
        )

    def subject(self) -> str:
        return f"memory and flush syscalls of {self.processes.subject()}, {self.per_segment('per target')}"

    def start(self, program: LoadedProgram) -> None:
        for pid in self.pids:
            self._spaces.snapshot(pid)  # a first picture of the mappings, for addresses unmapped later
            self._fd_names.read_all(pid)
        self.processes.remember_comms()

    def collect(self, program: LoadedProgram, interval_s: float) -> SyscallsSnapshot:
        latency = self._latency.gained(
            ((key.tgid, key.syscall, key.slot), (scalar(value),))
            for key, value in program.read("mqi_latency")
        )
        calls = self._calls.gained(
            (
                (key.tgid, key.syscall, key.detail, key.target),
                (value.calls, value.errors, value.total_ns, value.length_bytes),
            )
            for key, value in program.read("mqi_calls")
        )
        lost = self._lost.since_last_read(program)
        self._spaces.new_interval()
        self._fd_names.new_interval()
        # Taken after the calls: a call's own mapping is then always known, whenever it was made.
        self._learn_mappings(program.drain("mqi_mappings"))
        seen = {key[0] for key in self._latency.known_keys()}
        ended = self.processes.newly_ended(set(self.pids) | seen)

        processes = self._process_tallies(latency, calls)
        targets = self._target_rows(calls)
        self._forget(program, ended)
        return _snapshot(
            **self.interval_header(interval_s, program),
            lost_records=lost,
            processes=processes,
            targets=targets,
            exited_pids=tuple(sorted(ended & set(self.pids))),
        )

    def combine(self, summary: SyscallsSnapshot | None, snapshot: SyscallsSnapshot) -> SyscallsSnapshot:
        return combine_snapshots(summary, snapshot)

    # --- assembling one interval

    def _process_tallies(
        self, latency: Mapping[tuple, tuple], calls: Mapping[tuple, tuple]
    ) -> dict[int, tuple[str | None, dict[str, Tally]]]:
        tallies: _ProcessTallies = defaultdict(lambda: defaultdict(Tally))
        for (tgid, syscall_id, slot), (count,) in latency.items():
            tallies[tgid][SYSCALLS[syscall_id]][("slot", slot)] += count
        for (tgid, syscall_id, _detail, _target), counts in calls.items():
            tallies[tgid][SYSCALLS[syscall_id]].add(dict(zip(_LATENCY_COUNTS, counts, strict=True)))
        return {pid: (self.processes.comm(pid), per_syscall) for pid, per_syscall in tallies.items()}

    def _target_rows(self, calls: Mapping[tuple, tuple]) -> list[TargetCalls]:
        rows = []
        for (tgid, syscall_id, detail, target_value), (count, errors, total_ns, length) in calls.items():
            syscall = SYSCALLS[syscall_id]
            target = self._target(tgid, syscall, target_value)
            if self.store and not target.in_store:
                continue
            rows.append(
                TargetCalls(
                    pid=tgid,
                    syscall=syscall,
                    detail=detail_name(syscall, detail),
                    target_kind=target.kind,
                    target=target.name,
                    calls=count,
                    errors=errors,
                    total_ns=total_ns,
                    length_bytes=length,
                )
            )
        return merge_rows(rows, (), _TARGET_IDENTITY)

    def _learn_mappings(self, records) -> None:
        """Remember the mappings made this interval, named now, while their descriptor is likely open."""
        for key, value in records:
            mapped = _Mapped(key.address, key.address + value.length, self._fd_target(key.tgid, value.fd))
            self._mapped.setdefault(key.tgid, deque(maxlen=RECENT_MAPPINGS)).append(mapped)

    def _fd_target(self, pid: int, fd: int) -> _Target:
        if fd < 0:
            return ANONYMOUS
        named = self._fd_names.target(pid, fd)
        return _Target(named.kind, named.name, named.in_store)

    def _target(self, pid: int, syscall: str, value: int) -> _Target:
        """What a call aimed at: its descriptor's file, or the mapping holding its address: the latest one the
        process made while traced, else one of /proc/PID/maps."""
        if syscall in FD_TARGETS:
            return self._fd_target(pid, _signed(value))
        for mapped in reversed(self._mapped.get(pid, ())):
            if mapped.start <= value < mapped.end:
                return mapped.target
        mapping = self._spaces.resolve(pid, value).mapping
        if mapping is None:
            return UNMAPPED
        if mapping.file is None:
            return _Target("anonymous", mapping.shown_path or "anonymous memory", False)
        label = self._store_files.get(mapping.file)
        name = label.name if label else mapping.shown_path or str(mapping.file)
        return _Target("file", name, label is not None)

    def _forget(self, program: LoadedProgram, ended: set[int]) -> None:
        """Drop the records of processes that are gone (their last counts were just read)."""
        for differences, map_name in ((self._latency, "mqi_latency"), (self._calls, "mqi_calls")):
            for key in differences.known_keys():
                if key[0] in ended:
                    program.delete(map_name, _padded_key(map_name, key))
                    differences.forget(key)
        for pid in ended:
            program.delete("mqi_tgids", (pid,))
            self._fd_names.forget(pid)
            self._spaces.forget(pid)
            self._mapped.pop(pid, None)
            self.processes.forget(pid)


def _padded_key(map_name: str, key: tuple[int, ...]) -> tuple[int, ...]:
    """The map's key struct field by field: both keys have a pad field, after slot or after detail."""
    if map_name == "mqi_latency":
        return (*key, 0)
    tgid, syscall, detail, target = key
    return (tgid, syscall, detail, 0, target)


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value
