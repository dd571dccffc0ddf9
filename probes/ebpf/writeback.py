"""The writeback probe: pages dirtied and written back per file (or store segment) and per process, the
flusher's work per device, the system's dirty pages against the dirty thresholds, and writers throttled by
balance_dirty_pages().

Kernel side: programs/writeback.bpf.c (its header explains each tracepoint). This module turns the program's
maps into one `WritebackSnapshot` per interval:

- mqi_totals (cumulative) -> the interval's totals, as differences from the previous read;
- mqi_dirtiers, mqi_files, mqi_flushes (drained) -> rows per process, per file, per device and reason;
- mqi_throttles (drained, per process and CPU) -> one row per throttled process;
- mqi_dirty_state (drained, per CPU) -> the last sample and the max of the interval;
- /proc/vmstat nr_dirtied and nr_written, and /proc/PID/io write_bytes of the traced processes: the
  kernel's own counts beside the traced ones.

With --store the store's files are followed from their creation (programs/store_files.h, scope.StoreFollower):
the pages a rolled segment's warm-up dirties are counted in the interval it happens in. A file the kernel
counted in a store directory that is not one of the store's files is left out, rows and written_pages alike.

What the counts mean (pages of PAGE_SIZE_BYTES):
  dirtied_pages         pages the traced processes made dirty (write(), or writes through a shared mapping):
                        the pages of each folio that went from clean to dirty. dirtied_folios: those folios.
  unsized_folios        dirtied folios whose size was unknown (their insertion into the page cache was not
                        seen: cached before the session), each counted as one page, so dirtied_pages is a
                        lower bound when this is not 0. vmstat_dirtied_pages has the exact total.
  written_pages         pages sent to the disk for the files in view, whoever wrote them (mostly the flusher
                        threads, or fsync in the writer): with --pid the files the traced processes dirtied
                        during the session, with --store the store's files, else every file. Per file from
                        ext4's own event (every path, fsync included) and, for other filesystems, from the
                        generic per-inode event, which sees the flusher and sync(2) but not fsync.
  written_pages_all_files  the same, every file.
  flusher_written_pages pages the flusher threads wrote, from their work units per device and reason.
  vmstat_dirtied_pages, vmstat_written_pages  /proc/vmstat nr_dirtied and nr_written over the interval: every
                        process and file; written counts when the disk completes the write.
  proc_dirtied_pages    /proc/PID/io write_bytes of the traced processes over the interval, in pages: the
                        kernel's count of what they dirtied (plus direct I/O). None without --pid.
  dirty_state           writeback:global_dirty_state samples: dirty and under-writeback pages and the
                        background threshold, dirty threshold and dirty limit, the last sample of the
                        interval and the max. None when the kernel computed no sample (nobody wrote).
  throttled             per process: rounds of balance_dirty_pages(), the pauses it slept (count, total and
                        longest ms), and at the longest pause the dirty pages against the setpoint and the
                        limit. A pause is the kernel making the writer wait for writeback: what a RocketMQ
                        broker reports as "[PC_SYNCHRONIZED] broker busy" when a put waits too long.
  lost_records          records the maps could not hold this interval: the rows miss them, the totals do not.
  late_store_files      the store's new files the kernel did not see created, counted from the end of the
                        interval they appeared in (late_store_files_reason: why).
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from probes.ebpf import registry
from probes.ebpf.inodes import PAGE_SIZE_BYTES, FileId, FileLabel, FileNames, InodeDevices
from probes.ebpf.loader import LoadedProgram, Parameters, program_spec
from probes.ebpf.scope import (
    CREATION_FUNCTIONS,
    FOLLOWING_FUNCTIONS,
    CumulativeTotals,
    HalvedMaps,
    ScopedProbe,
    ScopeLimits,
    SnapshotHeader,
    handler_defines,
    scalar,
)
from probes.ebpf.tally import Tally, merge_rows, merged_late_store_files, summed_snapshot
from probes.procfs import ProcessGone, parse_proc_counters, read_process_io

_FUNCTIONS = {
    "writeback:writeback_dirty_folio": "mqi_wb_dirtied",
    "filemap:mm_filemap_add_to_page_cache": "mqi_wb_added",
    "filemap:mm_filemap_delete_from_page_cache": "mqi_wb_deleted",
    "writeback:writeback_single_inode_start": "mqi_wb_ino_beg",
    "writeback:writeback_single_inode": "mqi_wb_ino_end",
    "writeback:writeback_start": "mqi_wb_work_beg",
    "writeback:writeback_written": "mqi_wb_work_end",
    "writeback:global_dirty_state": "mqi_wb_dirty_st",
    "writeback:balance_dirty_pages": "mqi_wb_throttle",
    "ext4:ext4_writepages_result": "mqi_wb_ext4_res",
    **CREATION_FUNCTIONS,
    **FOLLOWING_FUNCTIONS,
}
_HANDLER_DEFINES = {"ext4:ext4_writepages_result": "HAVE_EXT4_WRITEPAGES"}
# enum wb_reason, as the format of writeback:writeback_written prints it.
WRITEBACK_REASONS = {
    0: "background",
    1: "vmscan",
    2: "sync",
    3: "periodic",
    4: "laptop_timer",
    5: "fs_free_space",
    6: "forker_thread",
    7: "foreign_flush",
}

# Per-CPU entries are keyed by CPU id, which stays below the kernel's NR_CPUS (8192 on Debian's kernels); the
# map allocates only the entries CPUs use.
MAX_CPU_IDS = 8192

PROGRAM = program_spec(registry.WRITEBACK, _FUNCTIONS)


@dataclass(frozen=True)
class MapLimits(ScopeLimits):
    """Entries each map may hold. mqi_folio_sizes holds the cached folios whose size is remembered: slots of a
    8-way set-associative table (rounded up to a power of two, at least 256), where a folio loses its slot
    when eight later insertions land in its set before it is dirtied."""

    folios: int = 262144


# --- snapshots ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileWriteback:
    """One file: `name` is its store segment, its path, or "inode N on M:m" (device "0:0": not known)."""

    name: str
    path: str | None
    segment_kind: str | None
    device: str
    inode: int
    dirtied_pages: int
    dirtied_folios: int
    unsized_folios: int
    written_pages: int


@dataclass(frozen=True)
class ProcessDirtying:
    """One traced process: what it dirtied, beside its /proc/PID/io write_bytes in pages (None: unread)."""

    pid: int
    comm: str | None
    dirtied_pages: int
    dirtied_folios: int
    unsized_folios: int
    proc_dirtied_pages: int | None


@dataclass(frozen=True)
class ThrottledProcess:
    """balance_dirty_pages() for one process: its pauses, and the dirty state at the longest one."""

    pid: int
    comm: str | None
    throttle_checks: int
    pauses: int
    pause_ms_total: int
    pause_ms_max: int
    dirty_pages_at_max_pause: int
    setpoint_pages_at_max_pause: int
    limit_pages_at_max_pause: int
    device_dirty_pages_at_max_pause: int
    task_ratelimit_kib_s_at_max_pause: int
    dirty_ratelimit_kib_s_at_max_pause: int


@dataclass(frozen=True)
class DirtyState:
    """writeback:global_dirty_state over an interval: the last sample and the max of each value."""

    samples: int
    dirty_pages_last: int
    dirty_pages_max: int
    writeback_pages_last: int
    writeback_pages_max: int
    background_threshold_pages_last: int
    background_threshold_pages_max: int
    dirty_threshold_pages_last: int
    dirty_threshold_pages_max: int
    dirty_limit_pages_last: int
    dirty_limit_pages_max: int


@dataclass(frozen=True)
class FlusherWork:
    """Flusher work units on one device (its backing-device name, "MAJOR:MINOR") for one reason."""

    device: str
    reason: str
    works: int
    written_pages: int


@dataclass(frozen=True)
class WritebackSnapshot(SnapshotHeader):
    """Dirtying and writeback over one interval (kind "interval") or the whole session (kind "summary")."""

    dirtied_pages: int
    dirtied_folios: int
    unsized_folios: int
    written_pages: int
    written_pages_all_files: int
    flusher_written_pages: int
    vmstat_dirtied_pages: int | None
    vmstat_written_pages: int | None
    proc_dirtied_pages: int | None
    dirty_state: DirtyState | None
    throttled: tuple[ThrottledProcess, ...]
    processes: tuple[ProcessDirtying, ...]
    files: tuple[FileWriteback, ...]
    flusher: tuple[FlusherWork, ...]
    lost_records: int
    exited_pids: tuple[int, ...] = ()
    followed_pids: tuple[int, ...] = ()  # processes started by traced ones, followed (scope.h)
    late_store_files: tuple[str, ...] = ()  # the store's new files counted only from the interval's end
    late_store_files_reason: str | None = None


# --- counting ----------------------------------------------------------------------------------------------

_TOTAL_FIELDS = (
    "dirtied_folios",
    "dirtied_pages",
    "unsized_folios",
    "written_pages",
    "written_pages_all",
    "lost_records",
)
_DIRTY_STATE_FIELDS = {  # DirtyState name -> struct dirty_state field (last; max_ prefixed for the max)
    "dirty_pages": "nr_dirty",
    "writeback_pages": "nr_writeback",
    "background_threshold_pages": "background_thresh",
    "dirty_threshold_pages": "dirty_thresh",
    "dirty_limit_pages": "dirty_limit",
}
# What the kernel counts per file (struct file_counts), each a FileWriteback field of the same name.
_DRAINED_MAPS = ("mqi_dirtiers", "mqi_files", "mqi_throttles", "mqi_dirty_state", "mqi_flushes")
_FILE_COUNTS = ("dirtied_pages", "dirtied_folios", "unsized_folios", "written_pages")


class WritebackProbe(ScopedProbe):
    """`mqinspect trace writeback`: see the module docstring. Construct, then run in a TraceSession."""

    name = registry.WRITEBACK.name
    program = PROGRAM
    map_limits = MapLimits
    filters_files = True

    def __init__(self, pids: Sequence[int] = (), **scope: Any):
        super().__init__(pids, **scope)
        self._names = FileNames(self._store_files, self._proc_root)
        self._devices = InodeDevices(self._store_files)
        self._totals = CumulativeTotals("mqi_totals", _TOTAL_FIELDS)
        self._drained = HalvedMaps(_DRAINED_MAPS)
        self._vmstat_before: tuple[int, int] | None = None
        self._io_before: dict[int, int] = {}

    # --- what the session needs before loading

    def parameters(self) -> Parameters:
        return self.scope_parameters(
            # at least 8: the low bits of a slot hold the folio's order beside the tag (writeback.bpf.c)
            FOLIO_SLOT_BITS=max(8, (self.limits.folios - 1).bit_length()),
            MAX_CPUS=MAX_CPU_IDS,
            **handler_defines(_HANDLER_DEFINES),
        )

    def subject(self) -> str:
        who = self.processes.subject()
        dirtied_by = "it" if len(self.pids) == 1 else "they"
        written = "of every file" if not self.pids else f"of the files {dirtied_by} dirtied"
        return (
            f"pages dirtied and writers throttled ({who}), pages written back {written}, and the dirty "
            f"state, {self.per_segment('per file')}"
        )

    # --- the session's calls

    def start(self, program: LoadedProgram) -> None:
        self._tell_devices(program, self._store_files)
        self.processes.remember_comms()
        self._vmstat_before = self._vmstat_counts()
        for pid in self.pids:
            written = self._io_write_bytes(pid)
            if written is not None:
                self._io_before[pid] = written

    def collect(self, program: LoadedProgram, interval_s: float) -> WritebackSnapshot:
        # Switch the handlers to the other half of the drained maps, then read the totals and /proc, all
        # within a moment so that they cover the same interval; only then empty the old half (halves.h).
        self._drained.switch(program)
        totals = self._totals.since_last_read(program)
        vmstat_dirtied, vmstat_written = self._vmstat_since_last_read()
        proc_dirtied = self._io_since_last_read()
        exited = self.processes.exited(program)
        drained = self._drained.drain(program)
        dirtiers, files, throttles = drained["mqi_dirtiers"], drained["mqi_files"], drained["mqi_throttles"]
        dirty_state, flushes = drained["mqi_dirty_state"], drained["mqi_flushes"]
        # Only now list the store: every file the maps counted exists by then, so it can be named.
        self._follow_store(program)

        self._names.new_interval()
        flusher = _flusher_rows(flushes)
        file_rows, outside = self._file_rows(files)
        return WritebackSnapshot(
            **self.interval_header(interval_s, program),
            dirtied_pages=totals["dirtied_pages"],
            dirtied_folios=totals["dirtied_folios"],
            unsized_folios=totals["unsized_folios"],
            written_pages=totals["written_pages"] - outside["written_pages"],
            written_pages_all_files=totals["written_pages_all"],
            flusher_written_pages=sum(row.written_pages for row in flusher),
            vmstat_dirtied_pages=vmstat_dirtied,
            vmstat_written_pages=vmstat_written,
            proc_dirtied_pages=sum(proc_dirtied.values()) if self.pids and proc_dirtied else None,
            dirty_state=_dirty_state(dirty_state),
            throttled=self._throttled_rows(throttles),
            processes=self._process_rows(dirtiers, proc_dirtied),
            files=file_rows,
            flusher=flusher,
            lost_records=totals["lost_records"],
            exited_pids=exited,
            **self.late_store_files(),
        )

    def combine(self, summary: WritebackSnapshot | None, snapshot: WritebackSnapshot) -> WritebackSnapshot:
        return combine_snapshots(summary, snapshot)

    # --- /proc

    def _vmstat_counts(self) -> tuple[int, int] | None:
        try:
            counters = parse_proc_counters((self._proc_root / "vmstat").read_text())
            return counters["nr_dirtied"], counters["nr_written"]
        except (OSError, KeyError):
            return None

    def _vmstat_since_last_read(self) -> tuple[int | None, int | None]:
        now, before = self._vmstat_counts(), self._vmstat_before
        self._vmstat_before = now
        if now is None or before is None:
            return None, None
        return now[0] - before[0], now[1] - before[1]

    def _io_write_bytes(self, pid: int) -> int | None:
        try:
            return read_process_io(pid, self._proc_root).write_bytes
        except ProcessGone:
            return None

    def _io_since_last_read(self) -> dict[int, int]:
        """Per traced process, its write_bytes gained since the last read, in pages."""
        gained = {}
        for pid in self.pids:
            now = self._io_write_bytes(pid)
            before = self._io_before.get(pid)
            if now is None:
                continue
            self._io_before[pid] = now
            if before is not None:
                gained[pid] = (now - before) // PAGE_SIZE_BYTES
        return gained

    # --- rows

    def _process_rows(
        self, records: Iterable[tuple[Any, Any]], proc_dirtied: Mapping[int, int]
    ) -> tuple[ProcessDirtying, ...]:
        counts = {scalar(key): value for key, value in records}
        rows = []
        for pid in sorted(set(counts) | set(proc_dirtied)):
            value = counts.get(pid)
            rows.append(
                ProcessDirtying(
                    pid=pid,
                    comm=self.processes.comm(pid, value.comm if value else b""),
                    dirtied_pages=value.dirtied_pages if value else 0,
                    dirtied_folios=value.dirtied_folios if value else 0,
                    unsized_folios=value.unsized_folios if value else 0,
                    proc_dirtied_pages=proc_dirtied.get(pid),
                )
            )
        return tuple(sorted(rows, key=lambda row: (-row.dirtied_pages, row.pid)))

    def _file_rows(self, records: Sequence[tuple[Any, Any]]) -> tuple[tuple[FileWriteback, ...], Tally]:
        """One row per file, and what the kernel counted for files in view that turn out not to be the
        store's (created in a store directory, not a segment): not shown, and taken out of the totals of the
        files in view. A file is named as of the generation the kernel counted it under, so a segment
        retention deleted and the next one, made with its freed inode number in the same interval, keep
        their own rows. The kernel keys a dirtied folio it could not place by inode alone (device 0): it
        joins the row of the same inode on the device learnt for it (from the store or another record)."""
        self._devices.learn(FileId.from_kernel(key.dev, key.ino) for key, _counts in records if key.dev)
        tallies: dict[tuple[FileId, int], Tally] = defaultdict(Tally)
        users: dict[tuple[FileId, int], int] = {}  # a traced process that used the file, to name it by
        for key, counts in records:
            counted = (self._devices.file(key.dev, key.ino), key.generation)
            tallies[counted].add_fields(counts, _FILE_COUNTS)
            users[counted] = counts.last_tgid or users.get(counted, 0)
        rows, outside = [], Tally()
        for (file, generation), tally in tallies.items():
            label = (
                self.store_label(file, generation)
                if self.store
                else self._names.label(file, users[file, generation])
            )
            if label is None:
                outside.add(tally)
            else:
                rows.append(self._file_row(file, label, tally))
        return tuple(sorted(rows, key=_file_order)), outside

    def _file_row(self, file: FileId, label: FileLabel, tally: Tally) -> FileWriteback:
        return FileWriteback(
            name=label.name,
            path=label.path,
            segment_kind=label.segment_kind,
            device=file.device,
            inode=file.inode,
            **tally.named(_FILE_COUNTS),
        )

    def _throttled_rows(self, records: Iterable[tuple[Any, Any]]) -> tuple[ThrottledProcess, ...]:
        per_process: dict[int, list[Any]] = defaultdict(list)
        for key, value in records:
            per_process[key.tgid].append(value)
        rows = [
            _throttled_row(pid, self.processes.comm(pid, cpus[0].comm), cpus)
            for pid, cpus in per_process.items()
        ]
        return tuple(sorted(rows, key=_throttle_order))

    # --- devices and the store

    def _tell_devices(self, program: LoadedProgram, files: Mapping[FileId, FileLabel]) -> None:
        """The store's devices, for the kernel to place dirtied folios whose insertion it did not see."""
        for file in files:
            program.put("mqi_inode_devs", (file.inode,), (file.kernel_dev,))

    def _follow_store(self, program: LoadedProgram) -> None:
        """The store's new segments, also for the kernel to place their dirtied folios."""
        current, new = self.follow_store(program)
        self._tell_devices(program, new)
        self._devices.learn(new)
        self._names.learn(current)


def _file_order(row: FileWriteback) -> tuple[int, str]:
    return -(row.dirtied_pages + row.written_pages), row.name


def _throttle_order(row: ThrottledProcess) -> tuple[int, int]:
    return -row.pause_ms_total, row.pid


def _throttled_row(pid: int, comm: str | None, per_cpu: Sequence[Any]) -> ThrottledProcess:
    """One process's throttling from its per-CPU entries: counts summed, the longest pause's state kept."""
    longest = max(per_cpu, key=lambda value: value.max_pause_ms)
    return ThrottledProcess(
        pid=pid,
        comm=comm,
        throttle_checks=sum(value.checks for value in per_cpu),
        pauses=sum(value.pauses for value in per_cpu),
        pause_ms_total=sum(value.pause_ms for value in per_cpu),
        pause_ms_max=longest.max_pause_ms,
        dirty_pages_at_max_pause=longest.dirty,
        setpoint_pages_at_max_pause=longest.setpoint,
        limit_pages_at_max_pause=longest.limit,
        device_dirty_pages_at_max_pause=longest.wb_dirty,
        task_ratelimit_kib_s_at_max_pause=longest.task_ratelimit,
        dirty_ratelimit_kib_s_at_max_pause=longest.dirty_ratelimit,
    )


def _dirty_state(records: Iterable[tuple[Any, Any]]) -> DirtyState | None:
    """The interval's samples from every CPU: the last one taken anywhere, and the max of each value."""
    per_cpu = [value for _cpu, value in records if value.samples]
    if not per_cpu:
        return None
    last = max(per_cpu, key=lambda value: value.last_ns)
    values: dict[str, int] = {"samples": sum(value.samples for value in per_cpu)}
    for name, field in _DIRTY_STATE_FIELDS.items():
        values[f"{name}_last"] = getattr(last, field)
        values[f"{name}_max"] = max(getattr(value, f"max_{field}") for value in per_cpu)
    return DirtyState(**values)


def _flusher_rows(records: Iterable[tuple[Any, Any]]) -> tuple[FlusherWork, ...]:
    rows = [
        FlusherWork(
            device=bytes(key.bdi).split(b"\0", 1)[0].decode(errors="replace"),
            reason=WRITEBACK_REASONS.get(key.reason, f"reason {key.reason}"),
            works=counts.works,
            written_pages=counts.written_pages,
        )
        for key, counts in records
    ]
    return tuple(sorted(rows, key=lambda row: (-row.written_pages, row.device, row.reason)))


# --- the session summary -----------------------------------------------------------------------------------

_SUMMED = (
    "interval_s",
    "dirtied_pages",
    "dirtied_folios",
    "unsized_folios",
    "written_pages",
    "written_pages_all_files",
    "flusher_written_pages",
    "lost_records",
)
_SUMMED_OPTIONAL = ("vmstat_dirtied_pages", "vmstat_written_pages", "proc_dirtied_pages")


def combine_snapshots(summary: WritebackSnapshot | None, snapshot: WritebackSnapshot) -> WritebackSnapshot:
    """The session so far: counts summed, rows merged by pid, file or device, the dirty state's last sample
    and max over all intervals."""
    if summary is None:
        return dataclasses.replace(snapshot, kind="summary")
    return summed_snapshot(
        summary,
        snapshot,
        _SUMMED,
        _SUMMED_OPTIONAL,
        dirty_state=_combine_dirty_state(summary.dirty_state, snapshot.dirty_state),
        throttled=tuple(sorted(_merge_throttled(summary.throttled, snapshot.throttled), key=_throttle_order)),
        processes=tuple(
            sorted(
                merge_rows(summary.processes, snapshot.processes, ("pid",)),
                key=lambda row: (-row.dirtied_pages, row.pid),
            )
        ),
        files=tuple(sorted(merge_rows(summary.files, snapshot.files, ("device", "inode")), key=_file_order)),
        **merged_late_store_files(summary, snapshot),
        flusher=tuple(
            sorted(
                merge_rows(summary.flusher, snapshot.flusher, ("device", "reason")),
                key=lambda row: (-row.written_pages, row.device, row.reason),
            )
        ),
    )


def _combine_dirty_state(earlier: DirtyState | None, later: DirtyState | None) -> DirtyState | None:
    if earlier is None or later is None:
        return later or earlier
    values: dict[str, int] = {"samples": earlier.samples + later.samples}
    for name in _DIRTY_STATE_FIELDS:
        values[f"{name}_last"] = getattr(later, f"{name}_last")
        values[f"{name}_max"] = max(getattr(earlier, f"{name}_max"), getattr(later, f"{name}_max"))
    return DirtyState(**values)


def _merge_throttled(
    earlier: Sequence[ThrottledProcess], later: Sequence[ThrottledProcess]
) -> list[ThrottledProcess]:
    return merge_rows(earlier, later, ("pid",), _merge_throttle)


def _merge_throttle(before: ThrottledProcess, row: ThrottledProcess) -> ThrottledProcess:
    """Counts summed; the dirty state at the longest pause of the two."""
    longest = row if row.pause_ms_max > before.pause_ms_max else before
    return dataclasses.replace(
        longest,
        comm=before.comm or row.comm,
        throttle_checks=before.throttle_checks + row.throttle_checks,
        pauses=before.pauses + row.pauses,
        pause_ms_total=before.pause_ms_total + row.pause_ms_total,
    )
