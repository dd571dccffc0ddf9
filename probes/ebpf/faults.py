"""The faults probe: page faults per process, per file (or store segment) and per page range, minor or major.

Kernel side: programs/faults.bpf.c (its header explains each tracepoint and the minor/major rule). This module
turns the program's maps into one `FaultsSnapshot` per interval:

- mqi_totals (cumulative per process) -> the interval's counts, as differences from the previous read;
- mqi_file_pages and mqi_fault_around (file pages, drained) -> the faults the kernel placed on a file page
  at the time (filemap_fault, fault-around, a dirtied folio: programs/faults.bpf.c says how), major faults,
  populate faults and fault-around windows per file page. A placement by dirtying comes without the device:
  it is the one learnt for the inode (`InodeDevices`);
- mqi_fault_pages (fault addresses, drained) -> the faults the kernel could not place (anonymous memory, and
  the file faults no event names), through /proc/PID/maps snapshots (`AddressSpaces` re-reads a process's maps
  when an address falls outside every mapping it knows). Only these need the process alive: a process that
  exits within the interval keeps its placed file faults, and its others are "unresolved";
  (the two per-page maps hold records of GROUP_PAGES consecutive pages with a counter per page: exact per
  page, and a fraction of the kernel-side cost of one record per page);
- /proc/PID/stat minflt and majflt differences of the traced processes (or /proc/vmstat pgfault and
  pgmajfault when every process is traced): the kernel's own counts beside the traced ones.

What the counts mean:
  faults                page-fault exceptions: in user mode, and in kernel mode on user addresses. This is
                        what `perf stat -e page-faults` counts.
  major_faults          those of them whose page was not in the page cache (or that were retried after
                        waiting for I/O): the kernel's VM_FAULT_MAJOR rule, as /proc/PID/stat majflt.
  minor_faults          faults - major_faults.
  kernel_placed_faults  faults on file pages the kernel named when they happened (needs nothing afterwards).
  maps_placed_faults    faults on file pages placed by their address in /proc/PID/maps.
  anonymous_faults      faults in memory that is not a file mapping; unresolved_faults: at addresses in no
                        mapping known (the process exited before its maps showed them). faults is
                        kernel_placed + maps_placed + anonymous + unresolved, but for lost records.
  file_faults           faults that ran filemap_fault() (the page was not mapped by fault-around).
  populate_faults       file faults the kernel took for the process inside a syscall, without an exception
                        (mlock, MADV_POPULATE_*, MAP_POPULATE, get_user_pages): told apart by the populating
                        syscall running, else by a fresh exception to claim, else by the kernel stack of
                        filemap_fault() (programs/faults.bpf.c). Only those that reached filemap_fault() are
                        counted; the rest were served by fault-around (fault_around_pages). /proc
                        minflt/majflt count them all, perf does not. populate_major_faults: those whose page
                        was not in the page cache (the kernel's majflt counts MAP_POPULATE and mlock ones as
                        minor even then: they retry without FAULT_FLAG_TRIED; MADV_POPULATE_* ones as major).
  fault_around_pages    distinct file pages inside the windows fault-around mapped from around read faults
                        in the interval. An upper bound of the pages it mapped: the tracepoint gives the
                        window, and the kernel maps only its cached, up-to-date, not yet mapped pages. Each
                        page it does map saves a later fault. fault_around_events: windows.
  lost_records          per-page records the maps could not hold this interval: the per-file breakdown misses
                        that many events (the totals do not).
  late_store_files      with --store, the store's new files the kernel did not see created, counted from the
                        end of the interval they appeared in (late_store_files_reason: why).
Page ranges: each file's pages are bucketed by `chunk_pages`: the --chunk-pages given, else 1/64 of the file
(store segment size, or the file's size), else 256 pages when the size is unknown (a file named by inode
only: no path of it was found, as for one mapped only by a process that has exited).
"""

from __future__ import annotations

import dataclasses
import platform
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from probes.ebpf import registry
from probes.ebpf.inodes import (
    PAGE_SHIFT,
    AddressSpaces,
    FileId,
    FileLabel,
    InodeDevices,
    MappedRange,
    default_chunk_pages,
    label_from_maps,
    page_range_bounds,
    unnamed_file,
)
from probes.ebpf.loader import LoadedProgram, Parameters, checked_int, program_spec
from probes.ebpf.registry import POPULATE_SYSCALLS
from probes.ebpf.scope import (
    CREATION_FUNCTIONS,
    FOLLOWING_FUNCTIONS,
    CounterDifferences,
    ScopedProbe,
    ScopeLimits,
    SnapshotHeader,
    handler_defines,
    process_exists,
    scalar,
)
from probes.ebpf.tally import Tally, add_counts, merge_rows, merged_late_store_files, summed_snapshot
from probes.procfs import ProcessFaults, read_vmstat

OTHER_TGIDS = 0xFFFFFFFF  # mqi_totals key of the processes that found the map full
# An exception's first filemap_fault() pass comes within microseconds of it (measured here: 99.9 % within
# 4 us, the rest within 130 us), so within the same or the next timer tick (CLAIM_WINDOW_TICKS: 4-8 ms at
# HZ=250, 1-2 ms at HZ=1000). When no populating syscall runs and no such fresh exception is there to claim,
# the page-fault exception handler's presence on the kernel stack of filemap_fault() tells an exception's
# file fault from the kernel populating memory (get_user_pages in other syscalls).
EXCEPTION_HANDLERS = {"x86_64": "exc_page_fault"}
KALLSYMS = Path("/proc/kallsyms")
STACK_FRAMES = 16
CLAIM_WINDOW_TICKS = 1
# x86's error code marks a write with bit 1 (X86_PF_WRITE) and a fault on a present page with bit 0
# (X86_PF_PROT); elsewhere the code means something else.
_X86 = platform.machine() in ("x86_64", "i686", "i386")
WRITE_FAULT_MASK = 2 if _X86 else 0
PRESENT_FAULT_MASK = 1 if _X86 else 0
# The kernel maps read faults' neighbours in blocks of fault_around_bytes (64 KiB unless changed in debugfs).
FAULT_AROUND_BYTES = Path("/sys/kernel/debug/fault_around_bytes")
DEFAULT_FAULT_AROUND_BYTES = 65536
GROUP_SHIFT = 4  # the per-page maps keep records of 16 consecutive pages (programs/faults.bpf.c says why)
GROUP_PAGES = 1 << GROUP_SHIFT

_FUNCTIONS = {
    "exceptions:page_fault_user": "mqi_fault_user",
    "exceptions:page_fault_kernel": "mqi_fault_kern",
    "filemap:mm_filemap_fault": "mqi_filemap_flt",
    "filemap:mm_filemap_add_to_page_cache": "mqi_pcache_add",
    "filemap:mm_filemap_map_pages": "mqi_map_pages",
    "writeback:writeback_dirty_folio": "mqi_dirtied",
    **{f"syscalls:sys_enter_{name}": "mqi_popl_enter" for name in POPULATE_SYSCALLS},
    **{f"syscalls:sys_exit_{name}": "mqi_popl_exit" for name in POPULATE_SYSCALLS},
    **CREATION_FUNCTIONS,
    **FOLLOWING_FUNCTIONS,
}
_HANDLER_DEFINES = {"writeback:writeback_dirty_folio": "HAVE_DIRTY_FOLIO"}

PROGRAM = program_spec(registry.FAULTS, _FUNCTIONS)


@dataclass(frozen=True)
class MapLimits(ScopeLimits):
    """Entries each map may hold. The drained maps hold one interval's distinct pages (fault_pages and
    file_pages in pages: the program holds them in records of GROUP_PAGES)."""

    fault_pages: int = 131072
    file_pages: int = 131072
    fault_around: int = 32768


def fault_around_pages(setting: Path = FAULT_AROUND_BYTES) -> int:
    """The kernel's fault-around block in pages: fault_around_bytes from debugfs where it can be read (root,
    debugfs mounted), else the kernel's default; a power of two, as the kernel rounds it."""
    try:
        fault_around = int(setting.read_text())
    except (OSError, ValueError):
        fault_around = DEFAULT_FAULT_AROUND_BYTES
    pages = max(fault_around >> PAGE_SHIFT, 1)
    return 1 << (pages.bit_length() - 1)


def exception_handler_text(kallsyms: Path = KALLSYMS) -> tuple[int, int]:
    """[start, end) of the exception handler's text from /proc/kallsyms; (0, 0) where unknown (another
    architecture, or addresses hidden: kallsyms shows zeros to unprivileged readers)."""
    symbol = EXCEPTION_HANDLERS.get(platform.machine())
    if symbol is None:
        return 0, 0
    start = None
    try:
        with kallsyms.open() as lines:
            for line in lines:
                address, _kind, name = line.split()[:3]
                if start is None and name == symbol:
                    start = int(address, 16)
                elif start is not None and int(address, 16) > start:
                    return start, int(address, 16)  # the next symbol ends it (kallsyms is in address order)
    except OSError:
        pass
    return 0, 0


# --- snapshots ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PageRange:
    """Faults on the pages [first_page, last_page] of one file (a page number is file offset / page size)."""

    first_page: int
    last_page: int
    faults: int
    minor_faults: int
    major_faults: int
    fault_around_pages: int
    populate_faults: int
    populate_major_faults: int


@dataclass(frozen=True)
class FileFaults:
    """Faults on one file: `name` is its store segment ("commitlog/000…") or its path."""

    name: str
    path: str | None
    segment_kind: str | None
    device: str
    inode: int
    size_pages: int | None
    chunk_pages: int
    faults: int
    minor_faults: int
    major_faults: int
    write_faults: int
    fault_around_pages: int
    populate_faults: int
    populate_major_faults: int
    page_ranges: tuple[PageRange, ...]


@dataclass(frozen=True)
class ProcessFaultCounts:
    """One traced process over the interval; proc_* are its /proc/PID/stat minflt/majflt differences
    (None when they could not be read: the process is gone, or was never seen alive)."""

    pid: int
    comm: str | None
    faults: int
    minor_faults: int
    major_faults: int
    write_faults: int
    kernel_mode_faults: int
    populate_faults: int
    populate_major_faults: int
    fault_around_pages: int
    proc_minor_faults: int | None
    proc_major_faults: int | None


@dataclass(frozen=True)
class FaultsSnapshot(SnapshotHeader):
    """Page faults over one interval (kind "interval") or over the whole session (kind "summary")."""

    faults: int
    minor_faults: int
    major_faults: int
    write_faults: int | None  # None where the architecture's error code is not decoded
    kernel_mode_faults: int
    file_faults: int  # faults on file pages that fault-around had not mapped (they ran filemap_fault)
    kernel_placed_faults: int  # faults the kernel placed on a file page at the time (see the module doc)
    maps_placed_faults: int  # faults placed on a file page by their address in /proc/PID/maps
    anonymous_faults: int  # faults in memory that is not a file mapping (heap, stacks, [anon])
    unresolved_faults: int  # faults at addresses outside every mapping read from /proc/PID/maps
    populate_faults: int
    populate_major_faults: int
    fault_around_events: int
    fault_around_pages: int
    lost_records: int
    proc_source: str | None  # where proc_* come from: "/proc/PID/stat" or "/proc/vmstat"
    proc_minor_faults: int | None
    proc_major_faults: int | None
    processes: tuple[ProcessFaultCounts, ...]
    files: tuple[FileFaults, ...]
    exited_pids: tuple[int, ...] = ()  # traced processes that exited during the interval
    followed_pids: tuple[int, ...] = ()  # processes started by traced ones, followed (scope.h)
    late_store_files: tuple[str, ...] = ()  # the store's new files counted only from the interval's end
    late_store_files_reason: str | None = None


# --- counting ----------------------------------------------------------------------------------------------

TOTAL_FIELDS = (
    "user_faults",
    "kernel_faults",
    "write_faults",
    "file_faults",
    "major_faults",
    "populate_faults",
    "populate_major_faults",
    "fault_around_events",
    "lost_fault_pages",
    "lost_file_pages",
    "placed_faults",
)


# Per file, per bucket (page // chunk_pages): the tallies of the interval being assembled (faults,
# major_faults, write_faults, fault_around_pages, populate_faults, populate_major_faults).
_FileTallies = dict[FileId, dict[int, Tally]]


class _ProcCounts(NamedTuple):
    """The kernel's own fault counters over the interval, beside the traced ones."""

    source: str
    minor: int | None
    major: int | None
    per_pid: dict[int, tuple[int, int]]
    exited: set[int]


class FaultsProbe(ScopedProbe):
    """`mqinspect trace faults`: see the module docstring. Construct, then run in a TraceSession."""

    name = registry.FAULTS.name
    program = PROGRAM
    map_limits = MapLimits
    filters_files = True

    def __init__(self, pids: Sequence[int] = (), *, chunk_pages: int | None = None, **scope: Any):
        super().__init__(pids, **scope)
        if chunk_pages is not None and checked_int(chunk_pages, "chunk pages") <= 0:
            raise ValueError("chunk pages must be positive")
        self.chunk_pages = chunk_pages
        self._labels: dict[FileId, FileLabel] = {}  # files named from /proc/PID/maps (without --store)
        self._devices = InodeDevices(self._store_files)
        self._spaces = AddressSpaces(self._proc_root)
        self._chunks: dict[FileId, int | None] = {}  # per interval: see _chunk_of
        self._totals = CounterDifferences()  # per process: mqi_totals
        self._proc_baseline: dict[int, tuple[int, int]] = {}
        self._vmstat_baseline: tuple[int, int] | None = None

    # --- what the session needs before loading

    def parameters(self) -> Parameters:
        exception_text = exception_handler_text()
        return self.scope_parameters(
            MAX_FAULT_PAGES=_records_for(self.limits.fault_pages),
            MAX_FILE_PAGES=_records_for(self.limits.file_pages),
            GROUP_SHIFT=GROUP_SHIFT,
            MAX_FAULT_AROUND=self.limits.fault_around,
            OTHER_TGIDS=OTHER_TGIDS,
            EXCEPTION_IP_START=exception_text[0],
            EXCEPTION_IP_END=exception_text[1],
            STACK_FRAMES=STACK_FRAMES,
            CLAIM_WINDOW_TICKS=CLAIM_WINDOW_TICKS,
            PAGE_SHIFT=PAGE_SHIFT,
            WRITE_FAULT_MASK=WRITE_FAULT_MASK,
            PRESENT_FAULT_MASK=PRESENT_FAULT_MASK,
            FAULT_AROUND_PAGES=fault_around_pages(),
            **handler_defines(_HANDLER_DEFINES),
        )

    def subject(self) -> str:
        return f"page faults of {self.processes.subject()}, {self.per_segment('per file')}"

    # --- the session's calls

    def start(self, program: LoadedProgram) -> None:
        program.put("mqi_totals", (OTHER_TGIDS,))
        for pid in self.pids:
            self._spaces.snapshot(pid)  # a first picture of the mappings, in case the process exits early
            counts = _fault_counts(self.processes.stat(pid))
            if counts is not None:
                self._proc_baseline[pid] = counts
        if not self.pids:
            self._vmstat_baseline = self._vmstat_faults()

    def collect(self, program: LoadedProgram, interval_s: float) -> FaultsSnapshot:
        # Empty the per-page maps, then read the totals and /proc: all within a moment, so the breakdown,
        # the totals and the kernel's counters cover the same interval.
        fault_pages = program.drain("mqi_fault_pages")
        file_pages = list(program.drain("mqi_file_pages"))
        fault_around = program.drain("mqi_fault_around")
        totals = self._totals_since_last_read(program)
        proc = self._proc_counts()
        # Only now list the store: every file the maps counted exists by then, so it can be named.
        store_now, _new = self.follow_store(program)
        self._devices.learn(store_now)
        self._devices.learn(FileId.from_kernel(key.dev, key.ino) for key, _counts in file_pages if key.dev)

        self._spaces.new_interval()
        self._chunks.clear()
        files: _FileTallies = defaultdict(lambda: defaultdict(Tally))
        by_maps, anonymous, unresolved = self._tally_fault_addresses(fault_pages, files)
        self._tally_file_pages(file_pages, files)
        around_per_process, around_pages = self._tally_fault_around(fault_around, files)
        summed = Tally()
        for gained in totals.values():
            summed.add(gained)
        self._forget_exited(program, proc.exited)
        major = summed["major_faults"]
        faults = summed["user_faults"] + summed["kernel_faults"]
        return FaultsSnapshot(
            **self.interval_header(interval_s, program),
            faults=faults,
            minor_faults=max(faults - major, 0),
            major_faults=major,
            write_faults=summed["write_faults"] if WRITE_FAULT_MASK else None,
            kernel_mode_faults=summed["kernel_faults"],
            file_faults=summed["file_faults"],
            kernel_placed_faults=summed["placed_faults"],
            maps_placed_faults=by_maps,
            anonymous_faults=anonymous,
            unresolved_faults=unresolved,
            populate_faults=summed["populate_faults"],
            populate_major_faults=summed["populate_major_faults"],
            fault_around_events=summed["fault_around_events"],
            fault_around_pages=around_pages,
            lost_records=summed["lost_fault_pages"] + summed["lost_file_pages"],
            proc_source=proc.source,
            proc_minor_faults=proc.minor,
            proc_major_faults=proc.major,
            processes=self._process_rows(totals, proc.per_pid, around_per_process),
            files=self._file_rows(files),
            exited_pids=tuple(sorted(proc.exited)),
            **self.late_store_files(),
        )

    def combine(self, summary: FaultsSnapshot | None, snapshot: FaultsSnapshot) -> FaultsSnapshot:
        return combine_snapshots(summary, snapshot)

    # --- totals and /proc

    def _totals_since_last_read(self, program: LoadedProgram) -> dict[int, Tally]:
        """Per process, what its cumulative counters gained since the previous read."""
        gained = self._totals.gained(
            ((scalar(key),), tuple(getattr(value, name) for name in TOTAL_FIELDS))
            for key, value in program.read("mqi_totals")
        )
        return {key[0]: Tally(dict(zip(TOTAL_FIELDS, change, strict=True))) for key, change in gained.items()}

    def _vmstat_faults(self) -> tuple[int, int] | None:
        vmstat = read_vmstat(self._proc_root)
        if vmstat.faults is None or vmstat.major_faults is None:
            return None
        return vmstat.faults - vmstat.major_faults, vmstat.major_faults

    def _proc_counts(self) -> _ProcCounts:
        if not self.pids:
            now = self._vmstat_faults()
            before, self._vmstat_baseline = self._vmstat_baseline, now
            if now is None or before is None:
                return _ProcCounts("/proc/vmstat", None, None, {}, set())
            return _ProcCounts("/proc/vmstat", now[0] - before[0], now[1] - before[1], {}, set())
        stats = {pid: self.processes.stat(pid) for pid in self.processes.running()}
        exited = self.processes.note_ended(stats)  # gone, or zombies: their counts below are final
        per_pid: dict[int, tuple[int, int]] = {}
        for pid, stat in stats.items():
            now, before = _fault_counts(stat), self._proc_baseline.get(pid)
            if now is None:
                continue
            self._proc_baseline[pid] = now
            if before is not None:
                per_pid[pid] = (now[0] - before[0], now[1] - before[1])
        if not per_pid:
            return _ProcCounts("/proc/PID/stat", None, None, per_pid, exited)
        minor = sum(counts[0] for counts in per_pid.values())
        major = sum(counts[1] for counts in per_pid.values())
        return _ProcCounts("/proc/PID/stat", minor, major, per_pid, exited)

    def _forget_exited(self, program: LoadedProgram, exited: set[int]) -> None:
        """Drop what is kept for processes that are gone (their last counts were just read)."""
        gone = set(exited)
        if not self.pids:
            gone |= {
                tgid
                for (tgid,) in self._totals.known_keys()
                if tgid != OTHER_TGIDS and not process_exists(tgid, self._proc_root)
            }
        for tgid in gone:
            program.delete("mqi_totals", (tgid,))
            program.delete("mqi_tgids", (tgid,))  # a new process reusing the pid is not ours
            self._totals.forget((tgid,))
            self._spaces.forget(tgid)
            self.processes.forget(tgid)

    # --- per file

    def _label(self, file: FileId, pid: int) -> FileLabel:
        """The file's name: from the store, else from the maps of the process that faulted on it, learnt
        once (a file no mapping names stays "inode N on M:m")."""
        if self.store:
            return self.store_label(file) or unnamed_file(file)
        if file not in self._labels:
            space = self._spaces.snapshot(pid)
            label = space and label_from_maps(space, file)
            if not label:  # mapped since the last read of the maps?
                space = self._spaces.snapshot(pid, fresh=True)
                label = space and label_from_maps(space, file)
            self._labels[file] = label or unnamed_file(file)
        return self._labels[file]

    def _reported(self, file: FileId) -> bool:
        """With --store, only the store's files are broken down; other faults count in the totals only."""
        return not self.store or self.store_label(file) is not None

    def _chunk_pages(self, label: FileLabel) -> int:
        return self.chunk_pages or default_chunk_pages(label)

    def _chunk_of(self, file: FileId, pid: int) -> int | None:
        """The size of the page ranges the file's faults are tallied in; None when the file is not reported.
        Worked out once per file and interval: a fault-heavy interval has tens of thousands of records."""
        if file not in self._chunks:
            self._chunks[file] = self._chunk_pages(self._label(file, pid)) if self._reported(file) else None
        return self._chunks[file]

    def _tally_fault_addresses(self, records, files: _FileTallies) -> tuple[int, int, int]:
        """The faults the kernel left placed by address, through /proc/PID/maps: onto the pages of the
        reported files. Returns how many were on file pages, in anonymous memory, and unresolved."""
        on_files = anonymous = unresolved = 0
        for key, counts in records:
            for page, faults, write_faults, mapping in self._address_runs(key, counts):
                if mapping is None:
                    unresolved += faults
                    continue
                if mapping.file is None:
                    anonymous += faults
                    continue
                on_files += faults
                chunk = self._chunk_of(mapping.file, key.tgid)
                if chunk is None:
                    continue
                tally = files[mapping.file][mapping.file_page(page << PAGE_SHIFT) // chunk]
                tally["faults"] += faults
                tally["write_faults"] += write_faults
        return on_files, anonymous, unresolved

    def _address_runs(self, key, counts) -> Iterable[tuple[int, int, int, MappedRange | None]]:
        """(page, faults, write faults, its mapping) of a record: once for the whole record when its pages
        lie in one mapping and one page range (a fault-heavy interval has tens of thousands of records), else
        by page."""
        faults, write_faults = list(counts.faults), list(counts.write_faults)
        first = key.group << GROUP_SHIFT
        mapping = self._spaces.resolve(key.tgid, first << PAGE_SHIFT).mapping
        whole_record = mapping is not None and (first + GROUP_PAGES) << PAGE_SHIFT <= mapping.end
        if whole_record and mapping.file is not None:
            chunk = self._chunk_of(mapping.file, key.tgid)
            whole_record = chunk is None or _one_range(mapping.file_page(first << PAGE_SHIFT), chunk)
        if whole_record:
            return [(first, sum(faults), sum(write_faults), mapping)]
        return (
            (page, page_faults, page_writes, self._spaces.resolve(key.tgid, page << PAGE_SHIFT).mapping)
            for page, page_faults, page_writes in _pages_of(key.group, faults, write_faults)
        )

    def _tally_file_pages(self, records, files: _FileTallies) -> None:
        """The faults the kernel placed on file pages, and the major and populate faults. A fault placed by
        dirtying comes without its device (0): the device is the one learnt for its inode."""
        for key, counts in records:
            file = self._devices.file(key.dev, key.ino)
            chunk = self._chunk_of(file, key.tgid)
            if chunk is None:
                continue
            per_page = (
                counts.faults,
                counts.write_faults,
                counts.major_faults,
                counts.populate_faults,
                counts.populate_major_faults,
            )
            first = key.group << GROUP_SHIFT
            runs = (
                [(first, *map(sum, per_page))]
                if _one_range(first, chunk)
                else _pages_of(key.group, *per_page)
            )
            for index, placed, placed_writes, major, populate, populate_major in runs:
                tally = files[file][index // chunk]
                tally["faults"] += placed
                tally["write_faults"] += placed_writes
                tally["major_faults"] += major
                tally["populate_faults"] += populate
                tally["populate_major_faults"] += populate_major

    def _tally_fault_around(self, records, files: _FileTallies) -> tuple[dict[int, int], int]:
        """Distinct pages inside the interval's fault-around windows: into each reported file's buckets, and
        per process and in all (every file). Windows overlap (a retried fault runs fault-around twice, and
        consecutive faults share pages), so they are merged before counting."""
        windows: dict[FileId, dict[int, list[tuple[int, int]]]] = defaultdict(lambda: defaultdict(list))
        for key, _events in records:
            windows[FileId.from_kernel(key.dev, key.ino)][key.tgid].append((key.index, key.last_index))
        per_process: dict[int, int] = defaultdict(int)
        total = 0
        for file, by_process in windows.items():
            for tgid, spans in by_process.items():
                per_process[tgid] += _pages_in(merged_spans(spans))
            spans = merged_spans([span for spans in by_process.values() for span in spans])
            total += _pages_in(spans)
            if self._reported(file):
                label = self._label(file, next(iter(by_process)))
                self._bucket_fault_around(spans, self._chunk_pages(label), files[file])
        return per_process, total

    @staticmethod
    def _bucket_fault_around(spans: Iterable[tuple[int, int]], chunk: int, buckets) -> None:
        for start, end in spans:
            for bucket in range(start // chunk, end // chunk + 1):
                first, last = max(start, bucket * chunk), min(end, (bucket + 1) * chunk - 1)
                buckets[bucket]["fault_around_pages"] += last - first + 1

    def _file_rows(self, files: _FileTallies) -> tuple[FileFaults, ...]:
        rows = [self._file_row(file, buckets) for file, buckets in files.items()]
        rows.sort(key=lambda row: (-(row.faults + row.populate_faults + row.fault_around_pages), row.name))
        return tuple(rows)

    def _file_row(self, file: FileId, buckets: Mapping[int, Tally]) -> FileFaults:
        label = (self.store_label(file) if self.store else self._labels.get(file)) or unnamed_file(file)
        chunk = self._chunk_pages(label)
        ranges = tuple(
            _page_range(bucket, chunk, label.size_pages, counts) for bucket, counts in sorted(buckets.items())
        )
        whole = Tally()
        for counts in buckets.values():
            whole.add(counts)
        return FileFaults(
            name=label.name,
            path=label.path,
            segment_kind=label.segment_kind,
            device=file.device,
            inode=file.inode,
            size_pages=label.size_pages,
            chunk_pages=chunk,
            minor_faults=max(whole["faults"] - whole["major_faults"], 0),
            write_faults=whole["write_faults"],
            **whole.named(_RANGE_COUNTS),
            page_ranges=ranges,
        )

    def _process_rows(
        self,
        totals: Mapping[int, Tally],
        proc: Mapping[int, tuple[int, int]],
        fault_around_pages: Mapping[int, int],
    ) -> tuple[ProcessFaultCounts, ...]:
        pids = set(totals) | set(proc)
        rows = [
            self._process_row(pid, totals.get(pid, Tally()), proc.get(pid), fault_around_pages.get(pid, 0))
            for pid in pids
        ]
        rows.sort(key=lambda row: (-(row.faults + row.populate_faults), row.pid))
        return tuple(rows)

    def _process_row(
        self, pid: int, gained: Tally, proc: tuple[int, int] | None, fault_around_pages: int
    ) -> ProcessFaultCounts:
        faults = gained["user_faults"] + gained["kernel_faults"]
        major = gained["major_faults"]
        return ProcessFaultCounts(
            pid=pid,
            comm=self._comm(pid),
            faults=faults,
            minor_faults=max(faults - major, 0),
            major_faults=major,
            write_faults=gained["write_faults"],
            kernel_mode_faults=gained["kernel_faults"],
            populate_faults=gained["populate_faults"],
            populate_major_faults=gained["populate_major_faults"],
            fault_around_pages=fault_around_pages,
            proc_minor_faults=proc[0] if proc else None,
            proc_major_faults=proc[1] if proc else None,
        )

    def _comm(self, pid: int) -> str | None:
        if pid == OTHER_TGIDS:
            return "(others: the per-process map was full)"
        return self.processes.comm(pid)


def _records_for(pages: int) -> int:
    return max(1, -(-pages // GROUP_PAGES))


def _one_range(first_page: int, chunk: int) -> bool:
    """Whether GROUP_PAGES pages from `first_page` fall in one page range of `chunk` pages."""
    return first_page // chunk == (first_page + GROUP_PAGES - 1) // chunk


def _pages_of(group: int, *per_page: Sequence[int]) -> Iterator[tuple[int, ...]]:
    """(page, count, ...) for each page of a record of GROUP_PAGES pages that has a non-zero count."""
    first = group << GROUP_SHIFT
    for offset, counts in enumerate(zip(*per_page, strict=True)):
        if any(counts):
            yield (first + offset, *counts)


def _fault_counts(stat: ProcessFaults | None) -> tuple[int, int] | None:
    """(minflt, majflt) from a read of /proc/PID/stat; None when the process is gone or they are unread."""
    if stat is None or stat.minor_faults is None or stat.major_faults is None:
        return None
    return stat.minor_faults, stat.major_faults


def merged_spans(spans: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Inclusive page spans merged where they overlap or touch: [(0, 15), (8, 23), (30, 31)] gives
    [(0, 23), (30, 31)]."""
    merged: list[tuple[int, int]] = []
    for first, last in sorted(spans):
        if merged and first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return merged


def _pages_in(spans: Iterable[tuple[int, int]]) -> int:
    return sum(last - first + 1 for first, last in spans)


# The counts of a page range (and of a whole file) that are a field of the same name in its row.
_RANGE_COUNTS = ("faults", "major_faults", "fault_around_pages", "populate_faults", "populate_major_faults")


def _page_range(bucket: int, chunk: int, size_pages: int | None, counts: Tally) -> PageRange:
    first, last = page_range_bounds(bucket, chunk, size_pages)
    return PageRange(
        first_page=first,
        last_page=last,
        minor_faults=max(counts["faults"] - counts["major_faults"], 0),
        **counts.named(_RANGE_COUNTS),
    )


# --- the session summary ---------------------------------------------------------------------------------

_SUMMED = (
    "interval_s",
    "faults",
    "minor_faults",
    "major_faults",
    "kernel_mode_faults",
    "file_faults",
    "kernel_placed_faults",
    "maps_placed_faults",
    "anonymous_faults",
    "unresolved_faults",
    "populate_faults",
    "populate_major_faults",
    "fault_around_events",
    "fault_around_pages",
    "lost_records",
)
_SUMMED_OPTIONAL = ("write_faults", "proc_minor_faults", "proc_major_faults")


def combine_snapshots(summary: FaultsSnapshot | None, snapshot: FaultsSnapshot) -> FaultsSnapshot:
    """The session so far: every count summed, processes merged by pid, files by inode, ranges by page."""
    if summary is None:
        return dataclasses.replace(snapshot, kind="summary")
    return summed_snapshot(
        summary,
        snapshot,
        _SUMMED,
        _SUMMED_OPTIONAL,
        processes=_merge_processes(summary.processes, snapshot.processes),
        files=_merge_files(summary.files, snapshot.files),
        **merged_late_store_files(summary, snapshot),
    )


def _merge_processes(
    earlier: Sequence[ProcessFaultCounts], later: Sequence[ProcessFaultCounts]
) -> tuple[ProcessFaultCounts, ...]:
    merged = merge_rows(earlier, later, ("pid",))
    return tuple(sorted(merged, key=lambda row: (-(row.faults + row.populate_faults), row.pid)))


def _merge_files(earlier: Sequence[FileFaults], later: Sequence[FileFaults]) -> tuple[FileFaults, ...]:
    merged = merge_rows(earlier, later, ("device", "inode"), _merge_file)
    return tuple(
        sorted(
            merged, key=lambda row: (-(row.faults + row.populate_faults + row.fault_around_pages), row.name)
        )
    )


def _merge_file(a: FileFaults, b: FileFaults) -> FileFaults:
    fixed = ("inode", "size_pages", "chunk_pages")
    combined = add_counts(a, b, fixed)
    ranges = {page_range.first_page: page_range for page_range in a.page_ranges}
    for page_range in b.page_ranges:
        first = page_range.first_page
        ranges[first] = (
            add_counts(ranges[first], page_range, ("first_page", "last_page"))
            if first in ranges
            else page_range
        )
    return dataclasses.replace(combined, page_ranges=tuple(ranges[first] for first in sorted(ranges)))
