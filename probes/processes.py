"""Which processes there are, which is which, and which regular files each holds open: from psutil on the
live system, from a canned /proc tree in tests.

`ProcessSource` is what the readers of processes (the dashboard's holder scan and its per-process rates) ask:

    pids()            the processes now                  psutil.pids()
    started(pid)      when it started: with the pid, it  psutil.Process(pid).create_time() (/proc/PID/stat
                      names one process, also after the  field 22, read afresh each call)
                      pid is reused
    open_files(pid)   the regular files it holds open    psutil.Process(pid).open_files() (the links in
                      (their paths)                      /proc/PID/fd that name an existing regular file)
    proc_root         where the /proc readers read the rest

`LiveProcesses` answers from psutil. psutil takes its /proc root from the process-wide global
psutil.PROCFS_PATH, which must not be changed (other modules and threads share it), so it cannot read a
canned tree: `ProcTree(root)` answers the same questions from the files under `root`, as psutil reads them
under /proc. `process_source(proc_root)` picks the one for a root.

What psutil does not cover stays with the /proc readers (probes.procfs, probes.process_files), read under
`proc_root`: minor and major faults (/proc/PID/stat; psutil has no minflt/majflt), VmLck and RssFile
(/proc/PID/status; psutil's memory_info has neither), /proc/PID/io with a reason per field
(psutil's io_counters has no cancelled_write_bytes and refuses the whole call), and the device and inode of
each mapping (/proc/PID/maps: psutil's memory_maps reads smaps, eight times the CPU over this host's
processes, and gives paths only, so a store mapped under another name or in another mount namespace would
be missed). The files of one process for `cache --pid` (probes.process_files) stay there too: psutil's
open_files leaves out deleted files, whose pages a broker still holds, and smaps' Locked counts.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

import psutil

from probes.errors import AccessDenied
from probes.procfs import CLOCK_TICKS_PER_S, PROC_ROOT, ProcessGone, read_process_faults


class ProcessSource(Protocol):
    """The processes of one system (see the module docstring)."""

    proc_root: Path

    def pids(self) -> Iterable[int]:
        """The pids of the processes running now."""
        ...

    def started(self, pid: int) -> float | None:
        """When `pid` started, in seconds of the source's own clock (compare only readings of one source);
        None when that cannot be read. ProcessGone if it no longer exists."""
        ...

    def open_files(self, pid: int) -> frozenset[str]:
        """The paths of the regular files `pid` holds open. ProcessGone if it no longer exists,
        probes.errors.AccessDenied if its descriptors may not be read (another user's process)."""
        ...


class LiveProcesses:
    """The processes of this system, through psutil."""

    proc_root = PROC_ROOT

    def __init__(self) -> None:
        self._listed: dict[int, psutil.Process] = {}

    def pids(self) -> list[int]:
        # process_iter keeps one psutil.Process per pid from call to call, so open_files() of a process
        # listed before builds none (building one reads /proc/PID/stat).
        self._listed = {process.pid: process for process in psutil.process_iter()}
        return list(self._listed)

    def started(self, pid: int) -> float | None:
        try:
            return psutil.Process(pid).create_time()
        except psutil.NoSuchProcess:
            raise ProcessGone(pid) from None
        except psutil.AccessDenied:
            return None

    def open_files(self, pid: int) -> frozenset[str]:
        try:
            process = self._listed.get(pid) or psutil.Process(pid)
            return frozenset(opened.path for opened in process.open_files())
        except psutil.NoSuchProcess:
            raise ProcessGone(pid) from None
        except psutil.AccessDenied:
            raise AccessDenied(
                f"permission denied: {self.proc_root / str(pid) / 'fd'} is readable only by the process's "
                "owner or root"
            ) from None


class ProcTree:
    """The processes of a /proc tree at `proc_root` (a canned one in tests), read as psutil reads /proc."""

    def __init__(self, proc_root: Path):
        self.proc_root = proc_root

    def pids(self) -> list[int]:
        return sorted(int(entry.name) for entry in os.scandir(self.proc_root) if entry.name.isdigit())

    def started(self, pid: int) -> float | None:
        start_ticks = read_process_faults(pid, self.proc_root).start_ticks
        return None if start_ticks is None else start_ticks / CLOCK_TICKS_PER_S

    def open_files(self, pid: int) -> frozenset[str]:
        descriptors = self.proc_root / str(pid) / "fd"
        try:
            names = os.listdir(descriptors)
        except FileNotFoundError:
            raise ProcessGone(pid, self.proc_root) from None
        except PermissionError:
            raise AccessDenied(f"permission denied: {descriptors}") from None
        return frozenset(path for path in map(_link_target, (descriptors / name for name in names)) if path)


def _link_target(link: Path) -> str | None:
    """The file a descriptor link names when it is an existing regular file (as psutil keeps them)."""
    try:
        target = os.readlink(link)
    except OSError:
        return None  # closed since the listing
    return target if target.startswith("/") and os.path.isfile(target) else None


def process_source(proc_root: Path = PROC_ROOT) -> ProcessSource:
    """psutil for the real /proc, the tree's own files for any other root."""
    return LiveProcesses() if proc_root == PROC_ROOT else ProcTree(proc_root)
