"""System memory, dirty-page writeback, pressure and per-process faults and I/O, read from /proc.

Where the numbers come from:

    /proc/meminfo                     -> MemInfo         bytes (the file's "kB" is KiB)
    /proc/vmstat                      -> VmStat          page counts, and event counters since boot
    /proc/sys/vm/dirty_*              -> DirtySettings   the writeback sysctls
    /proc/pressure/{memory,io,cpu}    -> Pressure        PSI (Linux >= 4.20 built with CONFIG_PSI)
    VmStat (+ MemInfo)                -> WritebackState  where the system stands against the dirty limits
    /proc/PID/stat, io, status        -> ProcessFaults, ProcessIo, ProcessStatus
    two snapshots and an interval     -> rates(): per-second rates of the counters

Every reader takes `proc_root` (default /proc; sysctls are read from proc_root/sys) so tests can point it at
canned trees. A number that could not be read is None and the snapshot's `unavailable` maps the field name
to the reason: readers never substitute 0 and never raise for a missing field or file. Only a process that
no longer exists raises, with ProcessGone.

Why these files are parsed here rather than through psutil: psutil has no dirty thresholds, vmstat event
counters or PSI, no per-process minflt/majflt; its io_counters() has no cancelled_write_bytes and raises
AccessDenied for the whole call, where a field-level report is wanted; memory_info() neither gives VmLck nor
splits RSS into RssFile/RssAnon/RssShmem. And psutil takes its /proc root from the process-wide global
psutil.PROCFS_PATH, which must not be changed (other modules and threads share it), so it cannot read a
canned tree. What psutil does cover well (the list of processes and their start times, which tell a
process from a later one with the same pid) the readers of processes take from it, through
probes.processes; psutil is also the independent ground truth the tests compare these readers with
(virtual_memory, io_counters, cpu_times).
"""

from __future__ import annotations

import functools
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from probes.errors import AccessDenied, ProbeError

PROC_ROOT = Path("/proc")
PAGE_SIZE_BYTES = os.sysconf("SC_PAGE_SIZE")
CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
KIB = 1024

Unavailable = dict[str, str]


class ProcessGone(ProbeError):
    """The process exited (or never existed) before or while its /proc files were read."""

    def __init__(self, pid: int | str, proc_root: Path = PROC_ROOT):
        super().__init__(f"process {pid} is gone: {proc_root / str(pid)} does not exist")
        self.pid = pid


# --- reading and parsing /proc text


class _Unreadable(Exception):
    """One /proc file could not be read; the message is the reason given for every field it would fill."""

    def __init__(self, reason: str, *, absent: bool = False):
        super().__init__(reason)
        self.absent = absent  # the file does not exist: this kernel does not provide it


def _read(path: Path, denied_reason: str | None = None) -> str:
    # /proc text is ASCII except process names (comm, Name), which may be any bytes: never fail on those.
    try:
        return path.read_bytes().decode("utf-8", errors="replace")
    except FileNotFoundError:
        raise _Unreadable(f"{path}: not present", absent=True) from None
    except PermissionError:
        raise _Unreadable(denied_reason or f"permission denied: {path}") from None
    except ProcessLookupError:
        raise  # the process exited while its file was open: the caller turns this into ProcessGone
    except OSError as err:
        raise _Unreadable(f"{path}: {err.strerror or err}") from None


def parse_proc_counters(text: str) -> dict[str, int]:
    """The integer lines of a /proc key-value file, as {key: value}.

    Reads both layouts: "Key:  value [kB]" (meminfo, PID/status, PID/io) and "key value" (vmstat). A "kB"
    value is returned in bytes (the kernel's kB is KiB). Lines whose value is not one integer, such as
    status's "Name:", "Uid:" or "Cpus_allowed_list:", are left out.
    """
    counters: dict[str, int] = {}
    for line in text.splitlines():
        key, colon, rest = line.partition(":")
        if not colon:
            key, _, rest = line.partition(" ")
        tokens = rest.split()
        if not tokens or len(tokens) > 2 or (len(tokens) == 2 and tokens[1] != "kB"):
            continue
        try:
            value = int(tokens[0])
        except ValueError:
            continue
        counters[key.strip()] = value * KIB if len(tokens) == 2 else value
    return counters


def _pick(
    counters: Mapping[str, int], keys: Mapping[str, str], source: Path, hints: Mapping[str, str]
) -> tuple[dict[str, int | None], Unavailable]:
    """Fields named in `keys` ({field: file key}) from parsed counters; absent keys become unavailable."""
    values: dict[str, int | None] = {}
    unavailable: Unavailable = {}
    for name, key in keys.items():
        values[name] = counters.get(key)
        if key not in counters:
            unavailable[name] = f"{source}: no {key} line{hints.get(key, '')}"
    return values, unavailable


def _all_unavailable(names: Mapping[str, object], reason: str) -> tuple[dict[str, None], Unavailable]:
    return dict.fromkeys(names), dict.fromkeys(names, reason)


def _read_fields(
    path: Path, keys: Mapping[str, str], hints: Mapping[str, str] | None = None
) -> tuple[dict[str, int | None], Unavailable]:
    try:
        counters = parse_proc_counters(_read(path))
    except _Unreadable as err:
        return _all_unavailable(keys, str(err))
    return _pick(counters, keys, path, hints or {})


# --- /proc/meminfo


@dataclass(frozen=True)
class MemInfo:
    """System memory from /proc/meminfo, in bytes; PROC_KEYS names the line behind each field.

    cached_bytes is meminfo "Cached": the page cache including tmpfs/shmem pages, excluding Buffers and
    SwapCache. dirty_bytes and writeback_bytes are the same kernel counters as vmstat nr_dirty and
    nr_writeback. available_bytes is the kernel's estimate of memory usable without swapping (Linux 3.14+).
    """

    total_bytes: int | None
    free_bytes: int | None
    available_bytes: int | None
    cached_bytes: int | None
    dirty_bytes: int | None
    writeback_bytes: int | None
    mapped_bytes: int | None
    mlocked_bytes: int | None
    active_file_bytes: int | None
    inactive_file_bytes: int | None
    shmem_bytes: int | None
    buffers_bytes: int | None
    unavailable: Unavailable = field(default_factory=dict)

    PROC_KEYS: ClassVar[Mapping[str, str]] = {
        "total_bytes": "MemTotal",
        "free_bytes": "MemFree",
        "available_bytes": "MemAvailable",
        "cached_bytes": "Cached",
        "dirty_bytes": "Dirty",
        "writeback_bytes": "Writeback",
        "mapped_bytes": "Mapped",
        "mlocked_bytes": "Mlocked",
        "active_file_bytes": "Active(file)",
        "inactive_file_bytes": "Inactive(file)",
        "shmem_bytes": "Shmem",
        "buffers_bytes": "Buffers",
    }


_MEMINFO_HINTS = {"MemAvailable": " (added in Linux 3.14)"}


def read_meminfo(proc_root: Path = PROC_ROOT) -> MemInfo:
    """System memory in bytes from proc_root/meminfo; MemInfo.PROC_KEYS names the line behind each field."""
    values, unavailable = _read_fields(proc_root / "meminfo", MemInfo.PROC_KEYS, _MEMINFO_HINTS)
    return MemInfo(**values, unavailable=unavailable)


# --- /proc/vmstat


@dataclass(frozen=True)
class VmStat:
    """Page counts (now) and event counters (since boot) from /proc/vmstat.

    PROC_KEYS names the vmstat line behind each plain field. Three fields are derived, and `sources` names
    the vmstat lines each one was computed from on this kernel:
    - scanned_pages: sum of pgscan_{kswapd,direct,khugepaged,proactive}, or their per-zone forms before
      Linux 4.8 (pgscan_kswapd_normal, ...). pgscan_direct_throttle (a count of throttling events) and
      pgscan_anon/pgscan_file (the same scans split by LRU type) are not added.
    - reclaimed_pages: the same sum over pgsteal_* (pgsteal_<zone> before Linux 3.4).
    - file_refaults: workingset_refault_file; before Linux 5.9 the line was workingset_refault, which then
      counted file pages only.
    pgpgin_kib / pgpgout_kib are KiB read from / written to block devices (the kernel halves its sector
    count to print them).
    """

    faults: int | None
    major_faults: int | None
    pgpgin_kib: int | None
    pgpgout_kib: int | None
    dirty_pages: int | None
    writeback_pages: int | None
    dirty_threshold_pages: int | None
    dirty_background_threshold_pages: int | None
    file_pages: int | None
    mapped_pages: int | None
    file_refaults: int | None
    scanned_pages: int | None
    reclaimed_pages: int | None
    sources: dict[str, tuple[str, ...]] = field(default_factory=dict)
    unavailable: Unavailable = field(default_factory=dict)

    PROC_KEYS: ClassVar[Mapping[str, str]] = {
        "faults": "pgfault",
        "major_faults": "pgmajfault",
        "pgpgin_kib": "pgpgin",
        "pgpgout_kib": "pgpgout",
        "dirty_pages": "nr_dirty",
        "writeback_pages": "nr_writeback",
        "dirty_threshold_pages": "nr_dirty_threshold",
        "dirty_background_threshold_pages": "nr_dirty_background_threshold",
        "file_pages": "nr_file_pages",
        "mapped_pages": "nr_mapped",
    }


_VMSTAT_HINTS = {
    "nr_dirty_threshold": " (older kernels do not export the computed dirty limits)",
    "nr_dirty_background_threshold": " (older kernels do not export the computed dirty limits)",
}
_RECLAIMERS = "kswapd|direct|khugepaged|proactive"
# Zone suffixes of the per-zone counters kernels before 4.8 printed (mm/vmstat.c TEXTS_FOR_ZONES).
_ZONES = "dma|dma32|normal|high|movable|device"
_SUMMED_COUNTERS = {"scanned_pages": "pgscan", "reclaimed_pages": "pgsteal"}


@functools.cache
def _reclaim_counter(prefix: str) -> re.Pattern[str]:
    """Matches pgscan_kswapd, pgscan_direct_normal, pgsteal_dma32; not pgscan_direct_throttle, pgscan_anon."""
    return re.compile(rf"{prefix}_(?:(?:{_RECLAIMERS})(?:_(?:{_ZONES}))?|(?:{_ZONES}))")


_REFAULT_KEYS = ("workingset_refault_file", "workingset_refault")


def read_vmstat(proc_root: Path = PROC_ROOT) -> VmStat:
    """Counters from proc_root/vmstat; see VmStat for the lines behind each field and the derived sums."""
    path = proc_root / "vmstat"
    derived = (*_SUMMED_COUNTERS, "file_refaults")
    try:
        counters = parse_proc_counters(_read(path))
    except _Unreadable as err:
        values, unavailable = _all_unavailable({**VmStat.PROC_KEYS, **dict.fromkeys(derived)}, str(err))
        return VmStat(**values, unavailable=unavailable)
    values, unavailable = _pick(counters, VmStat.PROC_KEYS, path, _VMSTAT_HINTS)
    sources: dict[str, tuple[str, ...]] = {}
    for name, prefix in _SUMMED_COUNTERS.items():
        parts = tuple(key for key in counters if _reclaim_counter(prefix).fullmatch(key))
        sources[name] = parts
        values[name] = sum(counters[key] for key in parts) if parts else None
        if not parts:
            unavailable[name] = f"{path}: no {prefix}_kswapd, {prefix}_direct or per-zone {prefix} lines"
    refault_key = next((key for key in _REFAULT_KEYS if key in counters), None)
    values["file_refaults"] = counters[refault_key] if refault_key else None
    sources["file_refaults"] = (refault_key,) if refault_key else ()
    if refault_key is None:
        unavailable["file_refaults"] = (
            f"{path}: no workingset_refault_file line (added in Linux 3.15 as workingset_refault)"
        )
    return VmStat(**values, sources=sources, unavailable=unavailable)


def read_vmstat_counters(
    names: Sequence[str], proc_root: Path = PROC_ROOT
) -> tuple[dict[str, int], Unavailable]:
    """The /proc/vmstat lines `names` that VmStat does not carry (nr_dirtied, nr_written ...), and why each
    one missing is unavailable."""
    path = proc_root / "vmstat"
    try:
        counters = parse_proc_counters(_read(path))
    except _Unreadable as err:
        return {}, dict.fromkeys(names, str(err))
    found = {name: counters[name] for name in names if name in counters}
    return found, {name: f"{path}: no {name} line" for name in names if name not in found}


# --- /proc/sys/vm/dirty_*


@dataclass(frozen=True)
class DirtySettings:
    """The writeback sysctls from /proc/sys/vm (each field is the file of the same name, unit in the suffix).

    Of each ratio/bytes pair the kernel applies bytes when it is non-zero, else the ratio (of "dirtyable"
    memory: free + file LRU pages minus reserves); writing one of the pair zeroes the other.
    throttle_limit_setting and background_limit_setting name the sysctl in force ("dirty_bytes" or
    "dirty_ratio", "dirty_background_bytes" or "dirty_background_ratio"), or are None when unreadable.
    """

    dirty_ratio_percent: int | None
    dirty_background_ratio_percent: int | None
    dirty_bytes: int | None
    dirty_background_bytes: int | None
    dirty_expire_centisecs: int | None
    dirty_writeback_centisecs: int | None
    throttle_limit_setting: str | None
    background_limit_setting: str | None
    unavailable: Unavailable = field(default_factory=dict)

    SYSCTL_FILES: ClassVar[Mapping[str, str]] = {
        "dirty_ratio_percent": "dirty_ratio",
        "dirty_background_ratio_percent": "dirty_background_ratio",
        "dirty_bytes": "dirty_bytes",
        "dirty_background_bytes": "dirty_background_bytes",
        "dirty_expire_centisecs": "dirty_expire_centisecs",
        "dirty_writeback_centisecs": "dirty_writeback_centisecs",
    }


def _read_sysctl_int(path: Path) -> int:
    text = _read(path)
    try:
        return int(text.split()[0])
    except (IndexError, ValueError):
        raise _Unreadable(f"{path}: not an integer: {text.strip()!r}") from None


def _setting_in_force(
    bytes_value: int | None, bytes_absent: bool, bytes_name: str, ratio_name: str
) -> str | None:
    # domain_dirty_limits(): `if (bytes) thresh = DIV_ROUND_UP(bytes, PAGE_SIZE); else thresh = ratio*avail`.
    # A kernel without the *_bytes file (before 2.6.29) has only the ratio.
    if bytes_value:
        return bytes_name
    if bytes_value == 0 or bytes_absent:
        return ratio_name
    return None


def read_dirty_settings(proc_root: Path = PROC_ROOT) -> DirtySettings:
    """The dirty_* sysctls from proc_root/sys/vm, and which of each ratio/bytes pair is in force."""
    values: dict[str, int | None] = {}
    unavailable: Unavailable = {}
    absent: set[str] = set()
    for name, sysctl in DirtySettings.SYSCTL_FILES.items():
        try:
            values[name] = _read_sysctl_int(proc_root / "sys" / "vm" / sysctl)
        except _Unreadable as err:
            values[name] = None
            unavailable[name] = str(err)
            if err.absent:
                absent.add(name)
    in_force: dict[str, str | None] = {}
    for setting, bytes_name, ratio_name in (
        ("throttle_limit_setting", "dirty_bytes", "dirty_ratio"),
        ("background_limit_setting", "dirty_background_bytes", "dirty_background_ratio"),
    ):
        in_force[setting] = _setting_in_force(
            values[bytes_name], bytes_name in absent, bytes_name, ratio_name
        )
        if in_force[setting] is None:
            unavailable[setting] = unavailable[bytes_name]
    return DirtySettings(**values, **in_force, unavailable=unavailable)


# --- /proc/pressure


@dataclass(frozen=True)
class PressureLine:
    """One PSI line: the share of wall time tasks stalled on the resource, and the total stall time.

    "some": at least one runnable task stalled; "full": all non-idle tasks stalled at once.
    """

    avg10_percent: float
    avg60_percent: float
    avg300_percent: float
    total_us: int


@dataclass(frozen=True)
class Pressure:
    """Pressure stall information from proc_root/pressure/{memory,io,cpu}, one field per resource and line."""

    memory_some: PressureLine | None
    memory_full: PressureLine | None
    io_some: PressureLine | None
    io_full: PressureLine | None
    cpu_some: PressureLine | None
    cpu_full: PressureLine | None
    unavailable: Unavailable = field(default_factory=dict)

    RESOURCES: ClassVar[tuple[str, ...]] = ("memory", "io", "cpu")
    LINES: ClassVar[tuple[str, ...]] = ("some", "full")


_PSI_ABSENT = " (kernel older than 4.20, built without CONFIG_PSI, or booted with psi=0)"
_PSI_LINE_ABSENT = {"cpu": " (kernels before 5.13 report only 'some' for cpu)"}


def _parse_pressure(text: str) -> dict[str, PressureLine]:
    lines: dict[str, PressureLine] = {}
    for line in text.splitlines():
        kind, *pairs = line.split()
        values = dict(pair.split("=", 1) for pair in pairs)
        lines[kind] = PressureLine(
            float(values["avg10"]), float(values["avg60"]), float(values["avg300"]), int(values["total"])
        )
    return lines


def read_pressure(proc_root: Path = PROC_ROOT) -> Pressure:
    """PSI for memory, io and cpu from proc_root/pressure/*: avg10/avg60/avg300 in percent, total in µs."""
    values: dict[str, PressureLine | None] = {}
    unavailable: Unavailable = {}
    for resource in Pressure.RESOURCES:
        path = proc_root / "pressure" / resource
        try:
            lines = _parse_pressure(_read(path))
            failure = None
        except _Unreadable as err:
            lines, failure = {}, str(err) + (_PSI_ABSENT if err.absent else "")
        except (KeyError, ValueError) as err:
            lines, failure = {}, f"{path}: unexpected format ({err})"
        for kind in Pressure.LINES:
            name = f"{resource}_{kind}"
            values[name] = lines.get(kind)
            if values[name] is None:
                unavailable[name] = failure or f"{path}: no '{kind}' line{_PSI_LINE_ABSENT.get(resource, '')}"
    return Pressure(**values, unavailable=unavailable)


# --- dirty throttling, derived


@dataclass(frozen=True)
class WritebackState:
    """Where the system's dirty pages stand against the kernel's global writeback and throttle limits.

    The rule, from mm/page-writeback.c (torvalds/linux, read as stored at commit 8e9d5ead865a):
    - balance_dirty_pages() counts dirty = NR_FILE_DIRTY + NR_WRITEBACK (vmstat nr_dirty + nr_writeback)
      and lets a writer run free while dirty <= dirty_freerun_ceiling(thresh, bg_thresh), which is
      (thresh + bg_thresh) / 2. Above it the writer is paused after each batch of pages it dirties;
      wb_position_ratio() sets the pause so dirtying matches the disk's write-back rate at the setpoint,
      halfway between the freerun ceiling and the limit, and stops writers (pos_ratio 0) at the limit,
      max(thresh, a smoothed recent thresh). dirty > thresh sets dirty_exceeded (rate-limit checks tighten).
    - Background writeback starts, and wb_over_bg_thresh() keeps the flusher going, while NR_FILE_DIRTY
      alone (pages under writeback not counted) exceeds bg_thresh.
    - thresh and bg_thresh are what /proc/vmstat prints as nr_dirty_threshold and
      nr_dirty_background_threshold: vmstat_start() (mm/vmstat.c) fills them with global_dirty_limits(),
      i.e. domain_dirty_limits() of the global domain, computed at the moment the file is read.
    This is the global domain only: a writer in a memory-limited cgroup (memcg domain), on a strictlimit
    device (FUSE), or running real-time (limits +1/4) meets other limits than the ones shown here.
    """

    dirty_pages: int | None
    writeback_pages: int | None
    background_threshold_pages: int | None
    throttle_threshold_pages: int | None
    freerun_ceiling_pages: int | None
    dirty_fraction_of_throttle: float | None
    background_writeback_due: bool | None
    writers_throttled: bool | None
    over_throttle_threshold: bool | None
    regime: str | None
    page_size_bytes: int = PAGE_SIZE_BYTES
    unavailable: Unavailable = field(default_factory=dict)

    MEANINGS: ClassVar[Mapping[str, str]] = {
        "dirty_pages": "page-cache pages modified and not yet queued for writing to disk",
        "writeback_pages": "pages being written to disk right now",
        "background_threshold_pages": "above this many dirty pages the flusher threads start writing back",
        "throttle_threshold_pages": "the dirty limit: writers are held as dirty + writeback approaches it",
        "freerun_ceiling_pages": "below this many dirty + writeback pages writers are never slowed",
        "dirty_fraction_of_throttle": "dirty + writeback pages as a fraction of the dirty limit",
        "background_writeback_due": "dirty pages exceed the background threshold, so the flusher is writing",
        "writers_throttled": "dirty + writeback exceed the freerun ceiling, so writers are being paused",
        "over_throttle_threshold": "dirty + writeback exceed the dirty limit: writers wait for the disk",
        "regime": "which of the four writeback regimes the system is in",
    }
    REGIMES: ClassVar[Mapping[str, str]] = {
        "below-background": "dirty data is flushed once older than dirty_expire_centisecs; writers run free",
        "background-writeback": "flusher threads are writing back; writers still run free",
        "throttled": "writers are paused so that dirtying keeps pace with write-back",
        "over-limit": "writers are held (up to 200 ms per pause) until write-back catches up",
    }


def _pages_from(
    vmstat: VmStat, vmstat_field: str, meminfo: MemInfo | None, meminfo_field: str, page_size_bytes: int
) -> tuple[int | None, str | None]:
    """A page count from vmstat, else from the same kernel counter in meminfo; or None and the reason."""
    pages = getattr(vmstat, vmstat_field)
    if pages is not None:
        return pages, None
    size = getattr(meminfo, meminfo_field) if meminfo is not None else None
    if size is not None:
        return size // page_size_bytes, None
    return None, vmstat.unavailable.get(vmstat_field)


def _regime(dirty: int, writeback: int, background: int, freerun: int, throttle: int) -> str:
    not_clean = dirty + writeback
    if not_clean > throttle:
        return "over-limit"
    if not_clean > freerun:
        return "throttled"
    if dirty > background:
        return "background-writeback"
    return "below-background"


_POSITION_FIELDS = (
    "dirty_fraction_of_throttle",
    "background_writeback_due",
    "writers_throttled",
    "over_throttle_threshold",
    "regime",
)


def _throttle_position(
    dirty: int, writeback: int, background: int, throttle: int
) -> tuple[dict[str, object], Unavailable]:
    """The comparisons balance_dirty_pages() and wb_over_bg_thresh() make, on the four kernel numbers."""
    not_clean = dirty + writeback
    freerun = (throttle + background) // 2  # dirty_freerun_ceiling()
    position: dict[str, object] = {
        "freerun_ceiling_pages": freerun,
        "dirty_fraction_of_throttle": not_clean / throttle if throttle > 0 else None,
        "background_writeback_due": dirty > background,  # NR_FILE_DIRTY alone, writeback not counted
        "writers_throttled": not_clean > freerun,
        "over_throttle_threshold": not_clean > throttle,
        "regime": _regime(dirty, writeback, background, freerun, throttle),
    }
    unavailable = {} if throttle > 0 else {"dirty_fraction_of_throttle": "the dirty limit is 0 pages"}
    return position, unavailable


def writeback_state(
    vmstat: VmStat, meminfo: MemInfo | None = None, page_size_bytes: int = PAGE_SIZE_BYTES
) -> WritebackState:
    """Derive WritebackState from vmstat nr_dirty, nr_writeback and the two computed thresholds.

    Dirty and writeback counts fall back to meminfo Dirty/Writeback (the same kernel counters) when vmstat
    lacks them. The thresholds exist only in vmstat; without them every derived figure is unavailable.
    """
    unavailable: Unavailable = {}
    dirty, dirty_reason = _pages_from(vmstat, "dirty_pages", meminfo, "dirty_bytes", page_size_bytes)
    writeback, writeback_reason = _pages_from(
        vmstat, "writeback_pages", meminfo, "writeback_bytes", page_size_bytes
    )
    background = vmstat.dirty_background_threshold_pages
    throttle = vmstat.dirty_threshold_pages
    for name, reason in (
        ("dirty_pages", dirty_reason),
        ("writeback_pages", writeback_reason),
        ("background_threshold_pages", vmstat.unavailable.get("dirty_background_threshold_pages")),
        ("throttle_threshold_pages", vmstat.unavailable.get("dirty_threshold_pages")),
    ):
        if reason:
            unavailable[name] = reason
    if dirty is None or writeback is None or background is None or throttle is None:
        missing = "; ".join(dict.fromkeys(unavailable.values())) or "an input was not measured"
        position: dict[str, object] = dict.fromkeys(("freerun_ceiling_pages", *_POSITION_FIELDS))
        unavailable.update(dict.fromkeys(position, missing))
    else:
        position, position_unavailable = _throttle_position(dirty, writeback, background, throttle)
        unavailable.update(position_unavailable)
    return WritebackState(
        dirty_pages=dirty,
        writeback_pages=writeback,
        background_threshold_pages=background,
        throttle_threshold_pages=throttle,
        **position,  # type: ignore[arg-type]
        page_size_bytes=page_size_bytes,
        unavailable=unavailable,
    )


# --- per process: /proc/PID/{stat,io,status}


def _pid_is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _vanished(pid: int | str, proc_root: Path) -> ProbeError:
    # /proc mounted with hidepid=invisible hides other users' processes entirely: the directory is missing
    # although the process runs. Only the real /proc can be checked against the kernel's pid table.
    if proc_root == PROC_ROOT and isinstance(pid, int) and _pid_is_running(pid):
        return AccessDenied(f"process {pid} is running but {proc_root / str(pid)} is hidden (hidepid)")
    return ProcessGone(pid, proc_root)


def _read_process_file(pid: int | str, name: str, proc_root: Path, denied_reason: str | None = None) -> str:
    process_dir = proc_root / str(pid)
    try:
        return _read(process_dir / name, denied_reason)
    except ProcessLookupError:
        raise ProcessGone(pid, proc_root) from None
    except _Unreadable:
        if not process_dir.is_dir():
            raise _vanished(pid, proc_root) from None
        raise


def _process_counters(pid: int | str, name: str, proc_root: Path, denied_reason: str) -> dict[str, int]:
    return parse_proc_counters(_read_process_file(pid, name, proc_root, denied_reason))


@dataclass(frozen=True)
class ProcessFaults:
    """Page faults and CPU time of one process from /proc/PID/stat (proc(5) field numbers in brackets).

    minor_faults [10] and major_faults [12] count faults of the process's own threads since it started;
    children_* [11, 13] those of its waited-for children. user_s [14] and system_s [15] are CPU seconds
    (clock ticks / SC_CLK_TCK). comm [2] is the process name; state [3] its state letter (Z: zombie).
    start_ticks [22] is when it started, in clock ticks after boot: with the pid, it names one process even
    after the pid is reused.
    """

    pid: int | str
    comm: str | None
    state: str | None
    minor_faults: int | None
    major_faults: int | None
    children_minor_faults: int | None
    children_major_faults: int | None
    user_s: float | None
    system_s: float | None
    start_ticks: int | None
    unavailable: Unavailable = field(default_factory=dict)

    # proc(5) field numbers; the fields after comm are split from the text after the last ')'.
    STAT_FIELDS: ClassVar[Mapping[str, int]] = {
        "state": 3,
        "minor_faults": 10,
        "children_minor_faults": 11,
        "major_faults": 12,
        "children_major_faults": 13,
        "user_s": 14,
        "system_s": 15,
        "start_ticks": 22,
    }


def _parse_stat(text: str) -> dict[str, object]:
    # comm may contain spaces and parentheses ("a) (b"): it runs from the first '(' to the LAST ')'.
    opening, closing = text.index("("), text.rindex(")")
    after_comm = text[closing + 1 :].split()  # after_comm[0] is field 3
    raw = {name: after_comm[number - 3] for name, number in ProcessFaults.STAT_FIELDS.items()}
    parsed: dict[str, object] = {"comm": text[opening + 1 : closing], "state": raw.pop("state")}
    for name in ("user_s", "system_s"):
        parsed[name] = int(raw.pop(name)) / CLOCK_TICKS_PER_S
    parsed.update({name: int(value) for name, value in raw.items()})
    return parsed


def read_process_faults(pid: int | str, proc_root: Path = PROC_ROOT) -> ProcessFaults:
    """Fault counts and CPU time of `pid` (or "self") from proc_root/PID/stat; ProcessGone if it exited."""
    names = ("comm", *ProcessFaults.STAT_FIELDS)
    path = proc_root / str(pid) / "stat"
    try:
        text = _read_process_file(
            pid, "stat", proc_root, f"permission denied: {path} (is /proc mounted with hidepid?)"
        )
        parsed = _parse_stat(text)
    except _Unreadable as err:
        values, unavailable = _all_unavailable(dict.fromkeys(names), str(err))
        return ProcessFaults(pid=pid, **values, unavailable=unavailable)
    except (ValueError, IndexError):
        values, unavailable = _all_unavailable(dict.fromkeys(names), f"{path}: unexpected format")
        return ProcessFaults(pid=pid, **values, unavailable=unavailable)
    return ProcessFaults(pid=pid, **parsed)  # type: ignore[arg-type]


@dataclass(frozen=True)
class ProcessIo:
    """I/O counters of one process from /proc/PID/io (PROC_KEYS names the line behind each field).

    rchar/wchar count bytes passed to read/write-like syscalls (page-cache hits included); read_bytes and
    write_bytes count bytes this process caused to be fetched from or sent to storage; cancelled_write_bytes
    is dirty page cache it truncated before write-back. Reading the file needs ptrace-read access to the
    process: its owner or root, and root only if it holds every capability the process has.
    """

    pid: int | str
    rchar_bytes: int | None
    wchar_bytes: int | None
    read_syscalls: int | None
    write_syscalls: int | None
    read_bytes: int | None
    write_bytes: int | None
    cancelled_write_bytes: int | None
    unavailable: Unavailable = field(default_factory=dict)

    PROC_KEYS: ClassVar[Mapping[str, str]] = {
        "rchar_bytes": "rchar",
        "wchar_bytes": "wchar",
        "read_syscalls": "syscr",
        "write_syscalls": "syscw",
        "read_bytes": "read_bytes",
        "write_bytes": "write_bytes",
        "cancelled_write_bytes": "cancelled_write_bytes",
    }


def read_process_io(pid: int | str, proc_root: Path = PROC_ROOT) -> ProcessIo:
    """I/O counters of `pid` (or "self") from proc_root/PID/io; fields unavailable when the file is denied."""
    path = proc_root / str(pid) / "io"
    denied = f"permission denied: {path} is readable by the owner or root (with ptrace access to it)"
    try:
        values, unavailable = _pick(
            _process_counters(pid, "io", proc_root, denied), ProcessIo.PROC_KEYS, path, {}
        )
    except _Unreadable as err:
        values, unavailable = _all_unavailable(ProcessIo.PROC_KEYS, str(err))
    return ProcessIo(pid=pid, **values, unavailable=unavailable)


@dataclass(frozen=True)
class ProcessStatus:
    """Resident memory of one process from /proc/PID/status, in bytes (PROC_KEYS names each line).

    vm_rss_bytes = rss_anon_bytes + rss_file_bytes + rss_shmem_bytes; vm_lck_bytes is mlock()ed memory.
    Kernel threads and zombies have no memory lines, so all fields are unavailable for them.
    """

    pid: int | str
    vm_rss_bytes: int | None
    vm_lck_bytes: int | None
    rss_file_bytes: int | None
    rss_anon_bytes: int | None
    rss_shmem_bytes: int | None
    unavailable: Unavailable = field(default_factory=dict)

    PROC_KEYS: ClassVar[Mapping[str, str]] = {
        "vm_rss_bytes": "VmRSS",
        "vm_lck_bytes": "VmLck",
        "rss_file_bytes": "RssFile",
        "rss_anon_bytes": "RssAnon",
        "rss_shmem_bytes": "RssShmem",
    }


_STATUS_HINTS = dict.fromkeys(("RssFile", "RssAnon", "RssShmem"), " (added in Linux 4.5)")


def read_process_status(pid: int | str, proc_root: Path = PROC_ROOT) -> ProcessStatus:
    """Resident and locked memory of `pid` (or "self") in bytes from proc_root/PID/status."""
    path = proc_root / str(pid) / "status"
    denied = f"permission denied: {path} (is /proc mounted with hidepid?)"
    try:
        counters = _process_counters(pid, "status", proc_root, denied)
    except _Unreadable as err:
        counters, failure = {}, str(err)
    else:
        # A task without an address space (kernel thread, zombie) gets none of the memory lines.
        failure = None if "VmRSS" in counters else f"{path}: no memory lines (kernel thread or zombie)"
    if failure:
        values, unavailable = _all_unavailable(ProcessStatus.PROC_KEYS, failure)
    else:
        values, unavailable = _pick(counters, ProcessStatus.PROC_KEYS, path, _STATUS_HINTS)
    return ProcessStatus(pid=pid, **values, unavailable=unavailable)


# --- the system snapshot the dashboard and `mqinspect mem` sample


@dataclass(frozen=True)
class SystemMemorySnapshot:
    """Everything system-wide this module reads, taken together; monotonic_s is when (time.monotonic())."""

    meminfo: MemInfo
    vmstat: VmStat
    dirty_settings: DirtySettings
    pressure: Pressure
    writeback: WritebackState
    monotonic_s: float


def take_system_snapshot(proc_root: Path = PROC_ROOT) -> SystemMemorySnapshot:
    """Read meminfo, vmstat, the dirty sysctls and PSI under proc_root, and derive the writeback state."""
    started = time.monotonic()
    meminfo = read_meminfo(proc_root)
    vmstat = read_vmstat(proc_root)
    return SystemMemorySnapshot(
        meminfo=meminfo,
        vmstat=vmstat,
        dirty_settings=read_dirty_settings(proc_root),
        pressure=read_pressure(proc_root),
        writeback=writeback_state(vmstat, meminfo),
        monotonic_s=started,
    )


# --- rates between two snapshots


@dataclass(frozen=True)
class VmStatRates:
    """Per-second rates of the VmStat event counters over interval_s."""

    interval_s: float
    faults_per_s: float | None
    major_faults_per_s: float | None
    pgpgin_kib_per_s: float | None
    pgpgout_kib_per_s: float | None
    file_refaults_per_s: float | None
    scanned_pages_per_s: float | None
    reclaimed_pages_per_s: float | None
    unavailable: Unavailable = field(default_factory=dict)

    COUNTERS: ClassVar[Mapping[str, str]] = {
        "faults": "faults_per_s",
        "major_faults": "major_faults_per_s",
        "pgpgin_kib": "pgpgin_kib_per_s",
        "pgpgout_kib": "pgpgout_kib_per_s",
        "file_refaults": "file_refaults_per_s",
        "scanned_pages": "scanned_pages_per_s",
        "reclaimed_pages": "reclaimed_pages_per_s",
    }


@dataclass(frozen=True)
class PressureRates:
    """Percent of the interval tasks spent stalled, from the PSI total_us counters (exact, unlike avg10)."""

    interval_s: float
    memory_some_stalled_percent: float | None
    memory_full_stalled_percent: float | None
    io_some_stalled_percent: float | None
    io_full_stalled_percent: float | None
    cpu_some_stalled_percent: float | None
    cpu_full_stalled_percent: float | None
    unavailable: Unavailable = field(default_factory=dict)


@dataclass(frozen=True)
class SystemMemoryRates:
    interval_s: float
    vmstat: VmStatRates
    pressure: PressureRates


@dataclass(frozen=True)
class ProcessFaultRates:
    """Per-second fault rates of one process, and CPU seconds used per second of wall time."""

    pid: int | str
    interval_s: float
    minor_faults_per_s: float | None
    major_faults_per_s: float | None
    user_cpu_s_per_s: float | None
    system_cpu_s_per_s: float | None
    unavailable: Unavailable = field(default_factory=dict)

    COUNTERS: ClassVar[Mapping[str, str]] = {
        "minor_faults": "minor_faults_per_s",
        "major_faults": "major_faults_per_s",
        "user_s": "user_cpu_s_per_s",
        "system_s": "system_cpu_s_per_s",
    }


@dataclass(frozen=True)
class ProcessIoRates:
    """Per-second rates of one process's /proc/PID/io counters."""

    pid: int | str
    interval_s: float
    rchar_bytes_per_s: float | None
    wchar_bytes_per_s: float | None
    read_syscalls_per_s: float | None
    write_syscalls_per_s: float | None
    read_bytes_per_s: float | None
    write_bytes_per_s: float | None
    cancelled_write_bytes_per_s: float | None
    unavailable: Unavailable = field(default_factory=dict)

    COUNTERS: ClassVar[Mapping[str, str]] = {name: f"{name}_per_s" for name in ProcessIo.PROC_KEYS}


def _counter_rates(
    before: Mapping[str, float | None],
    after: Mapping[str, float | None],
    reasons: Mapping[str, str],
    counters: Mapping[str, str],
    interval_s: float,
    scale: float = 1.0,
) -> tuple[dict[str, float | None], Unavailable]:
    """{rate name: (after - before) * scale / interval_s} for counters ({counter: rate name}).

    A counter missing from either side, or one that went backwards (a reset or wrap), gives an unavailable
    rate rather than a made-up one.
    """
    if interval_s <= 0:
        raise ValueError(f"interval_s must be positive, got {interval_s}")
    values: dict[str, float | None] = {}
    unavailable: Unavailable = {}
    for counter, rate_name in counters.items():
        old, new = before.get(counter), after.get(counter)
        values[rate_name] = None
        if old is None or new is None:
            unavailable[rate_name] = reasons.get(counter, f"{counter} was not measured")
        elif new < old:
            unavailable[rate_name] = f"{counter} went backwards ({old} -> {new}): the counter was reset"
        else:
            values[rate_name] = (new - old) * scale / interval_s
    return values, unavailable


def _fields_and_reasons(before: object, after: object) -> tuple[dict, dict, Unavailable]:
    return vars(before), vars(after), {**vars(before)["unavailable"], **vars(after)["unavailable"]}


@functools.singledispatch
def rates(before: object, after: object, interval_s: float) -> object:
    """Per-second rates between two snapshots of the same kind taken interval_s apart.

    VmStat -> VmStatRates, Pressure -> PressureRates, SystemMemorySnapshot -> SystemMemoryRates,
    ProcessFaults -> ProcessFaultRates, ProcessIo -> ProcessIoRates. A counter that was not measured on
    either side, or that went backwards, yields None and an `unavailable` reason.
    """
    raise TypeError(f"no rates for {type(before).__name__}")


@rates.register(VmStat)
def _vmstat_rates(before: VmStat, after: VmStat, interval_s: float) -> VmStatRates:
    values, unavailable = _counter_rates(
        *_fields_and_reasons(before, after), VmStatRates.COUNTERS, interval_s
    )
    return VmStatRates(interval_s=interval_s, **values, unavailable=unavailable)


@rates.register(Pressure)
def _pressure_rates(before: Pressure, after: Pressure, interval_s: float) -> PressureRates:
    def totals(pressure: Pressure) -> dict[str, float | None]:
        return {
            name: line.total_us if line else None
            for name, line in vars(pressure).items()
            if name != "unavailable"
        }

    counters = {name: f"{name}_stalled_percent" for name in totals(before)}
    reasons = {**before.unavailable, **after.unavailable}
    # total_us per second of wall time, as a percentage: µs / (interval_s * 1e6) * 100.
    values, unavailable = _counter_rates(totals(before), totals(after), reasons, counters, interval_s, 1e-4)
    return PressureRates(interval_s=interval_s, **values, unavailable=unavailable)


@rates.register(SystemMemorySnapshot)
def _system_rates(
    before: SystemMemorySnapshot, after: SystemMemorySnapshot, interval_s: float
) -> SystemMemoryRates:
    return SystemMemoryRates(
        interval_s=interval_s,
        vmstat=_vmstat_rates(before.vmstat, after.vmstat, interval_s),
        pressure=_pressure_rates(before.pressure, after.pressure, interval_s),
    )


def _same_process(before: ProcessFaults | ProcessIo, after: ProcessFaults | ProcessIo) -> None:
    if before.pid != after.pid:
        raise ValueError(f"rates between different processes: {before.pid} and {after.pid}")


@rates.register(ProcessFaults)
def _process_fault_rates(before: ProcessFaults, after: ProcessFaults, interval_s: float) -> ProcessFaultRates:
    _same_process(before, after)
    values, unavailable = _counter_rates(
        *_fields_and_reasons(before, after), ProcessFaultRates.COUNTERS, interval_s
    )
    return ProcessFaultRates(pid=after.pid, interval_s=interval_s, **values, unavailable=unavailable)


@rates.register(ProcessIo)
def _process_io_rates(before: ProcessIo, after: ProcessIo, interval_s: float) -> ProcessIoRates:
    _same_process(before, after)
    values, unavailable = _counter_rates(
        *_fields_and_reasons(before, after), ProcessIoRates.COUNTERS, interval_s
    )
    return ProcessIoRates(pid=after.pid, interval_s=interval_s, **values, unavailable=unavailable)
