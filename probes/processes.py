"""Which processes there are and which is which: from psutil on the live system, from a canned /proc tree
in tests.

`ProcessSource` is what the readers of processes (the dashboard's holder scan and its per-process rates) ask:

    pids()            the processes now                  psutil.pids()
    started(pid)      when it started: with the pid, it  psutil.Process(pid).create_time() (/proc/PID/stat
                      names one process, also after the  field 22, read afresh each call)
                      pid is reused
    proc_root         where the /proc readers read the rest

`LiveProcesses` answers from psutil. psutil takes its /proc root from the process-wide global
psutil.PROCFS_PATH, which must not be changed (other modules and threads share it), so it cannot read a
canned tree: `ProcTree(root)` answers the same questions from the files under `root`, as psutil reads them
under /proc. `process_source(proc_root)` picks the one for a root.

What psutil does not cover, or covers at a cost, stays with the /proc readers (probes.procfs,
probes.process_files), read under `proc_root`:
- minor and major faults (/proc/PID/stat): psutil has no minflt/majflt;
- VmLck and RssFile (/proc/PID/status): psutil's memory_info has neither;
- /proc/PID/io with a reason per field: psutil's io_counters has no cancelled_write_bytes and refuses the
  whole call, and the dashboard reports why each counter is missing;
- the device and inode of each mapping (/proc/PID/maps): psutil's memory_maps reads smaps (eight times the
  CPU over this host's processes) and gives paths only, so a store mapped under another name would be missed;
- whether a process holds a store file open (the link names in /proc/PID/fd, compared with the store's paths,
  stopping at the first): psutil's open_files also stats every target and reads its fdinfo, 23 % more CPU
  per holder scan here, growing with every file any process holds open;
- the files of one process for `cache --pid` (probes.process_files): psutil's open_files leaves out deleted
  files, whose pages a broker still holds, and memory_maps has no Locked counter.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

import psutil

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


class LiveProcesses:
    """The processes of this system, through psutil."""

    proc_root = PROC_ROOT

    def pids(self) -> list[int]:
        return psutil.pids()

    def started(self, pid: int) -> float | None:
        try:
            return psutil.Process(pid).create_time()
        except psutil.NoSuchProcess:
            raise ProcessGone(pid) from None
        except psutil.AccessDenied:
            return None


class ProcTree:
    """The processes of a /proc tree at `proc_root` (a canned one in tests), read as psutil reads /proc."""

    def __init__(self, proc_root: Path):
        self.proc_root = proc_root

    def pids(self) -> list[int]:
        return sorted(int(entry.name) for entry in os.scandir(self.proc_root) if entry.name.isdigit())

    def started(self, pid: int) -> float | None:
        start_ticks = read_process_faults(pid, self.proc_root).start_ticks
        return None if start_ticks is None else start_ticks / CLOCK_TICKS_PER_S


def process_source(proc_root: Path = PROC_ROOT) -> ProcessSource:
    """psutil for the real /proc, the tree's own files for any other root."""
    return LiveProcesses() if proc_root == PROC_ROOT else ProcTree(proc_root)
