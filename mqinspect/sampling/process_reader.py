"""The processes panel's data: the pids given, or those holding the store's files (found in /proc/PID/maps and
/proc/PID/fd, and the broker by its lock on the store's `lock` file), with their fault and I/O rates from
/proc/PID/stat and /proc/PID/io, their TCP traffic from the sockets they hold (probes.socket_bytes: a consumer
that reads with recv(2) has none in rchar), and resident and locked memory from /proc/PID/status.

The list of processes and their start times come from a `probes.processes.ProcessSource` (psutil, or a
canned /proc tree in tests); the rest from the /proc readers, for what psutil lacks (see that module). A pid
whose start time changed names another process: its rates start again from a first interval.

Another user's maps and fd are readable only with CAP_SYS_PTRACE (root has it); the lock, stat and status
are readable by anyone, so a broker is found and shown even by an unprivileged user, and the processes whose
maps were refused are kept to say why nothing else was found.

Finding the holders reads every process's maps and descriptors, so it is done every HOLDER_REFRESH_INTERVALS
intervals, not every one. A field the kernel refuses (another user's /proc/PID/io without the capabilities
to ptrace it) is None with the reason; the process stays listed.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mqinspect.sampling.hits import PAGECACHE_NOT_RUNNING, hit_fields, process_row
from mqinspect.sampling.snapshot import PROBE_FAULTS, PROBE_PAGECACHE, ProcessView
from probes.errors import AccessDenied, CapabilityMissing
from probes.process_files import parse_maps
from probes.processes import ProcessSource, process_source
from probes.procfs import (
    PROC_ROOT,
    ProcessFaults,
    ProcessGone,
    ProcessIo,
    rates,
    read_process_faults,
    read_process_io,
    read_process_status,
)
from probes.socket_bytes import TcpSocketBytes, socket_inodes, tcp_socket_bytes
from store.checkpoint import probe_store_lock
from store.errors import StoreError

HOLDER_REFRESH_INTERVALS = 10
HISTORY_LENGTH = 30
FOUND_BY_PID_OPTION = "--pid"
FOUND_IN_MAPS = "maps"
FOUND_IN_FDS = "fd"
FOUND_BY_LOCK = "lock"


@dataclass(frozen=True)
class HolderScan:
    """Who holds the store's files ({pid: how found}), and the processes whose maps could not be read."""

    holders: dict[int, str]
    unreadable: tuple[int, ...] = ()


TCP_FIELDS = ("tcp_received_bytes_per_s", "tcp_acked_bytes_per_s")
FIRST_INTERVAL = "first interval of this process: no rate yet"


def store_holders(
    paths: Iterable[str], proc_root: Path = PROC_ROOT, exclude: int | None = None
) -> dict[int, str]:
    """{pid: "maps" or "fd"} of the processes that map (matched by inode) or hold open one of `paths`."""
    return scan_store_holders(paths, proc_root=proc_root, exclude=exclude).holders


def scan_store_holders(
    paths: Iterable[str],
    store_root: Path | None = None,
    proc_root: Path = PROC_ROOT,
    exclude: int | None = None,
    processes: ProcessSource | None = None,
) -> HolderScan:
    """The processes that map (matched by inode) or hold open one of `paths`, and the one holding the lock
    of `store_root` (a broker), with the processes whose maps this caller may not read."""
    processes = processes or process_source(proc_root)
    path_set = {str(path) for path in paths}
    identities = _identities(path_set)
    # the directory all of them are under: one substring search per process's maps, not one per ConsumeQueue
    # directory (500 of them were 100,000 searches per scan); the match is by inode below in any case
    directories = (os.path.commonpath({path.rpartition("/")[0] for path in path_set}),) if path_set else ()
    holders: dict[int, str] = {}
    unreadable: list[int] = []
    if identities:
        for pid in processes.pids():
            if pid == exclude:
                continue
            how = _holds(processes.proc_root / str(pid), identities, path_set, directories)
            if how is None:
                unreadable.append(pid)
            elif how:
                holders[pid] = how
    broker = _lock_holder(store_root)
    if broker is not None and broker != exclude:
        holders.setdefault(broker, FOUND_BY_LOCK)
    return HolderScan(holders, tuple(pid for pid in unreadable if pid not in holders))


def _lock_holder(store_root: Path | None) -> int | None:
    """The pid holding the store's lock: the kernel tells anyone who may open the lock file (F_GETLK)."""
    if store_root is None:
        return None
    try:
        return probe_store_lock(store_root).holder_pid
    except (StoreError, OSError):
        return None


def _identities(paths: Iterable[str]) -> set[tuple[int, int]]:
    found = set()
    for path in paths:
        try:
            status = os.stat(path)
        except OSError:
            continue
        found.add((status.st_dev, status.st_ino))
    return found


def _holds(
    process_dir: Path, identities: set[tuple[int, int]], paths: set[str], directories: tuple[str, ...]
) -> str | None:
    """ "maps" or "fd" when the process holds one of the files, "" when it holds none, None when its maps
    cannot be read (another user's process without CAP_SYS_PTRACE), so nobody can tell."""
    try:
        maps = (process_dir / "maps").read_text(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return ""
    except OSError:
        return None
    # Parsing every process's maps is the costly part: only those naming a store directory are parsed.
    if any(directory in maps for directory in directories):
        for mapping in parse_maps(maps):
            if mapping.inode and (_maps_device(mapping.device), mapping.inode) in identities:
                return FOUND_IN_MAPS
    # The descriptors' link names are compared with the store's paths, stopping at the first: psutil's
    # open_files() would also stat every target and read its fdinfo (23 % more CPU per scan here).
    try:
        descriptors = os.scandir(process_dir / "fd")
    except OSError:
        return ""
    with descriptors:
        for descriptor in descriptors:
            try:
                if os.readlink(descriptor.path) in paths:
                    return FOUND_IN_FDS
            except OSError:
                continue
    return ""


def _maps_device(text: str) -> int:
    major, minor = (int(part, 16) for part in text.split(":"))
    return os.makedev(major, minor)


class ProcessReader:
    """Per-interval rates of the watched processes, keeping each one's previous counters and history."""

    def __init__(
        self, pids: tuple[int, ...], proc_root: Path = PROC_ROOT, processes: ProcessSource | None = None
    ):
        self._given = pids
        self._processes = processes or process_source(proc_root)
        self._proc_root = self._processes.proc_root
        self._found: dict[int, str] = {pid: FOUND_BY_PID_OPTION for pid in pids}
        self._unreadable: tuple[int, ...] = ()
        self._started: dict[int, float | None] = {}
        self._previous: dict[int, tuple[ProcessFaults, ProcessIo]] = {}
        self._history: dict[int, deque[float | None]] = {}
        self._tcp = TcpTraffic(self._proc_root)
        self._intervals = 0

    def follow_store(self, paths: list[str], store_root: Path | None = None) -> None:
        """With no --pid, watch whoever holds the store's files or its lock (looked up every few
        intervals)."""
        if self._given or (self._intervals % HOLDER_REFRESH_INTERVALS and self._intervals):
            return
        scan = scan_store_holders(paths, store_root, exclude=os.getpid(), processes=self._processes)
        self._found, self._unreadable = scan.holders, scan.unreadable

    def watched(self) -> tuple[int, ...]:
        return tuple(sorted(self._found))

    def unreadable(self) -> tuple[int, ...]:
        """The processes whose maps the last look for holders could not read: any may hold the store."""
        return self._unreadable

    def baseline(self) -> None:
        self._tcp.sample(self._found)
        for pid in list(self._found):
            self._counters(pid)
            self._tcp.rates(pid, 0.0)

    def read(self, interval_s: float, events: Mapping[str, Any]) -> tuple[ProcessView, ...]:
        traced = {row.pid: row for row in getattr(events.get(PROBE_FAULTS), "processes", ())}
        faults_running = PROBE_FAULTS in events
        if self._found:
            self._tcp.sample(self._found)
        views = []
        for pid, found_by in sorted(self._found.items()):
            view = self._view(pid, found_by, interval_s, traced.get(pid), faults_running)
            if view is not None:
                views.append(_with_hits(view, events.get(PROBE_PAGECACHE)))
        for gone in set(self._previous) - set(self._found):
            self._forget(gone)
        self._intervals += 1
        return tuple(views)

    def _counters(self, pid: int) -> tuple[ProcessFaults, ProcessIo] | None:
        try:
            started = self._processes.started(pid)
            counters = (read_process_faults(pid, self._proc_root), read_process_io(pid, self._proc_root))
        except ProcessGone:
            self._forget(pid)
            return None
        if self._started.get(pid, started) != started:  # the pid was reused: these are another's counters
            self._forget(pid)
        self._started[pid] = started
        previous = self._previous.get(pid)
        self._previous[pid] = counters
        return previous

    def _view(
        self, pid: int, found_by: str, interval_s: float, traced, faults_running: bool
    ) -> ProcessView | None:
        try:
            before = self._counters(pid)
            status = read_process_status(pid, self._proc_root)
        except ProcessGone:
            self._forget(pid)
            return None
        if pid not in self._previous:
            return None
        faults_now, io_now = self._previous[pid]
        unavailable = {**status.unavailable}
        if before is None:
            fault_rates = io_rates = None
            unavailable["minor_faults_per_s"] = FIRST_INTERVAL
        else:
            fault_rates = rates(before[0], faults_now, interval_s)
            io_rates = rates(before[1], io_now, interval_s)
            unavailable.update(fault_rates.unavailable)
            unavailable.update(io_rates.unavailable)
        tcp_received, tcp_acked, tcp_problem = self._tcp.rates(pid, interval_s)
        if tcp_problem:
            unavailable.update(dict.fromkeys(TCP_FIELDS, tcp_problem))
        minor = fault_rates.minor_faults_per_s if fault_rates else None
        history = self._history.setdefault(pid, deque(maxlen=HISTORY_LENGTH))
        history.append(minor)
        if not faults_running:
            unavailable["traced_faults"] = "the faults probe is not running"
        return ProcessView(
            pid=pid,
            comm=faults_now.comm,
            found_by=found_by,
            minor_faults_per_s=minor,
            major_faults_per_s=fault_rates.major_faults_per_s if fault_rates else None,
            rchar_bytes_per_s=io_rates.rchar_bytes_per_s if io_rates else None,
            wchar_bytes_per_s=io_rates.wchar_bytes_per_s if io_rates else None,
            rss_bytes=status.vm_rss_bytes,
            locked_bytes=status.vm_lck_bytes,
            traced_faults=(traced.faults if traced else 0) if faults_running else None,
            traced_major_faults=(traced.major_faults if traced else 0) if faults_running else None,
            minor_fault_rate_history=tuple(history),
            unavailable=unavailable,
            tcp_received_bytes_per_s=tcp_received,
            tcp_acked_bytes_per_s=tcp_acked,
        )

    def _forget(self, pid: int) -> None:
        self._started.pop(pid, None)
        self._previous.pop(pid, None)
        self._history.pop(pid, None)
        self._tcp.forget(pid)


class TcpTraffic:
    """Per-process TCP byte rates: the byte counters of the sockets each process holds, one sock_diag dump per
    interval. A socket that was there at the previous sample counts what it moved since; one that was not
    (opened since) counts all it moved; one closed since is gone with its last bytes."""

    def __init__(self, proc_root: Path = PROC_ROOT):
        self._proc_root = proc_root
        self._sockets: dict[int, dict[int, TcpSocketBytes]] = {}
        self._held: dict[int, frozenset[int] | str] = {}  # pid -> its socket inodes, or why unknown
        self._table: dict[int, TcpSocketBytes] = {}
        self._table_problem: str | None = None
        self._own_netns = _network_namespace(Path("/proc/self"))

    def sample(self, pids: Iterable[int]) -> None:
        """Find the sockets `pids` hold and read their counters (once per interval, before `rates`)."""
        self._held = {pid: self._sockets_of(pid) for pid in pids}
        wanted = set().union(*(held for held in self._held.values() if not isinstance(held, str)))
        try:
            self._table, self._table_problem = (tcp_socket_bytes(wanted) if wanted else {}), None
        except CapabilityMissing as error:
            self._table, self._table_problem = {}, f"{error}; fix: {error.fix}"

    def rates(self, pid: int, interval_s: float) -> tuple[float | None, float | None, str | None]:
        """(received, acked) bytes per second of `pid` since its previous call, or Nones and the reason."""
        held = self._held.get(pid, "the process was not sampled")
        problem = held if isinstance(held, str) else self._table_problem
        if problem is not None:
            self.forget(pid)
            return None, None, problem
        now = {inode: self._table[inode] for inode in held if inode in self._table}
        before = self._sockets.get(pid)
        self._sockets[pid] = now
        if before is None or interval_s <= 0:
            return None, None, FIRST_INTERVAL
        received = sum(
            _moved(now[inode].received_bytes, before.get(inode), "received_bytes") for inode in now
        )
        acked = sum(_moved(now[inode].acked_bytes, before.get(inode), "acked_bytes") for inode in now)
        return received / interval_s, acked / interval_s, None

    def _sockets_of(self, pid: int) -> frozenset[int] | str:
        theirs = _network_namespace(self._proc_root / str(pid))
        if theirs is not None and self._own_netns is not None and theirs != self._own_netns:
            return (
                f"the process is in another network namespace ({theirs}): sock_diag sees this one's sockets "
                "only; fix: run mqinspect in its namespace (nsenter --net)"
            )
        try:
            return socket_inodes(pid, self._proc_root)
        except (AccessDenied, ProcessGone) as error:
            return str(error)

    def forget(self, pid: int) -> None:
        self._sockets.pop(pid, None)


def _moved(total: int, before: TcpSocketBytes | None, counter: str) -> int:
    """What one socket moved since `before` (all of it if it is new, or its inode was reused)."""
    previous = getattr(before, counter) if before is not None else 0
    return total - previous if total >= previous else total


def _network_namespace(process_dir: Path) -> str | None:
    try:
        return os.readlink(process_dir / "ns" / "net")
    except OSError:
        return None


def _with_hits(view: ProcessView, pagecache: Any) -> ProcessView:
    """The view with its page-cache hits and misses (pagecache probe) and the reason where they are None."""
    hits, gaps = hit_fields(pagecache, process_row(pagecache, view.pid), PAGECACHE_NOT_RUNNING)
    return replace(view, **hits, unavailable={**view.unavailable, **gaps})
