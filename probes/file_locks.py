"""How much of each file is mlocked, and by which processes, from /proc/PID/maps and /proc/PID/smaps.

Pages are locked per mapping, not per file, so the only place the kernel tells is the smaps of each process
that maps the file. This reads every process's maps (cheap), and the smaps only of processes whose maps show
one of the files (matched by device and inode, so renamed or deleted files still match) and whose VmLck is
not 0.

A locked mapping is one whose smaps VmFlags has "lo" (VM_LOCKED). smaps "Locked" cannot tell: it is
proportional (a PSS: a locked page that another process also maps counts half) and shown in whole kB, so a
locked page mapped by five processes reads 0 kB. A file's locked bytes are process_files.LockedRanges of
its locked mappings in every process: the union of the file ranges (maps gives the file offset) of those
wholly resident, plus the Rss of those locked on fault (mlock2 MLOCK_ONFAULT), an upper bound where those of
several processes overlap.

A process whose maps or smaps the caller may not read could lock pages of any of the files. Its VmLck (in
/proc/PID/status, which every user may read) says whether it locks anything at all: one that locks nothing
changes no count. One of another user that does (a root broker, seen by an unprivileged user) makes every
count unknown: None with the reason and the fix (more privilege would read it), never 0. One of the
caller's own user that the kernel refuses anyway (not dumpable, or holding capabilities the caller lacks:
here root cannot read pid 1) cannot be read by any means: it is named in a note, and the counts are those of
every other process.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from probes.privileges import PROC_ACCESS_FIX, OtherProcess, describe_processes, other_process
from probes.process_files import LockedRanges, MappingMemory, parse_maps, parse_smaps
from probes.procfs import PROC_ROOT


@dataclass(frozen=True)
class FileLocks:
    path: str
    locked_bytes: int | None  # None: a process that locks memory could not be read (LockedFiles.notes)
    locking_pids: tuple[int, ...]


@dataclass(frozen=True)
class LockedFiles:
    files: dict[str, FileLocks]
    processes_scanned: int
    unreadable_processes: int  # maps or smaps denied; `notes` names those that lock memory
    notes: dict[str, str] = field(default_factory=dict)


def locked_bytes_by_file(paths: Iterable[Path | str], proc_root: Path = PROC_ROOT) -> LockedFiles:
    """Bytes mlocked in each of `paths`, summed over every process that maps it."""
    by_identity = _identities(paths)
    totals = {path: _Locked() for path in by_identity.values()}
    scanned = 0
    unreadable: list[int] = []
    for pid in _pids(proc_root):
        maps = _read_or_none(proc_root / str(pid) / "maps")
        if maps is None:
            unreadable.append(pid)
            continue
        scanned += 1
        ranges = _ranges_of_files(maps, by_identity)
        if ranges and not _add_locked(proc_root, pid, ranges, totals):
            unreadable.append(pid)
    lockers = _lockers(unreadable, proc_root)
    hidden = [process for process in lockers if process.of_another_user]
    files = {
        path: FileLocks(path, None if hidden else locked.bytes(), tuple(locked.pids))
        for path, locked in totals.items()
    }
    notes = {"locked_bytes": _lockers_note(hidden or lockers, bool(hidden))} if lockers else {}
    return LockedFiles(files, scanned, len(unreadable), notes)


def _lockers(pids: Iterable[int], proc_root: Path) -> list[OtherProcess]:
    """Those of the unreadable processes that lock memory somewhere (VmLck > 0, or unknown)."""
    described = (other_process(pid, proc_root) for pid in pids)
    return [process for process in described if process is not None and process.locked_bytes != 0]


def _lockers_note(lockers: list[OtherProcess], of_other_users: bool) -> str:
    who = describe_processes(lockers)
    if of_other_users:
        return (
            f"processes with locked memory (VmLck) whose /proc/PID/smaps cannot be read: {who}; they may "
            f"lock pages of these files: {PROC_ACCESS_FIX}"
        )
    return (
        f"not counted: memory locked (VmLck) by {who}, which the kernel does not let this caller inspect "
        "although it runs as the same user (not dumpable, or holding capabilities the caller lacks)"
    )


def _identities(paths: Iterable[Path | str]) -> dict[tuple[int, int], str]:
    identities = {}
    for path in paths:
        try:
            status = os.stat(path)
        except OSError:
            continue
        identities[(status.st_dev, status.st_ino)] = str(path)
    return identities


def _pids(proc_root: Path) -> list[int]:
    return sorted(int(entry.name) for entry in os.scandir(proc_root) if entry.name.isdigit())


def _read_or_none(path: Path) -> str | None:
    """The file's text; "" when the process is gone (nothing to count), None when reading was refused."""
    try:
        return path.read_text(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return ""
    except OSError:
        return None


def _device_number(maps_device: str) -> int:
    major, minor = (int(part, 16) for part in maps_device.split(":"))
    return os.makedev(major, minor)


def _ranges_of_files(
    maps: str, by_identity: dict[tuple[int, int], str]
) -> dict[tuple[int, int], tuple[str, int]]:
    """{(start, end) address: (path, file offset)} of each mapping of one of the files."""
    ranges = {}
    for entry in parse_maps(maps):
        if entry.inode == 0:
            continue
        path = by_identity.get((_device_number(entry.device), entry.inode))
        if path is not None:
            ranges[(entry.start_address, entry.end_address)] = (path, entry.offset_bytes)
    return ranges


class _Locked:
    """One file's locked pages as they are found, process by process (see the module docstring)."""

    def __init__(self) -> None:
        self.locked = LockedRanges()
        self.pids: list[int] = []

    def add(self, pid: int, offset: int, length: int, memory: MappingMemory) -> None:
        if self.locked.add(offset, length, memory) and pid not in self.pids:
            self.pids.append(pid)

    def bytes(self) -> int:
        return self.locked.bytes()


def _add_locked(
    proc_root: Path, pid: int, ranges: dict[tuple[int, int], tuple[str, int]], totals: dict[str, _Locked]
) -> bool:
    if _locks_nothing(proc_root, pid):
        return True  # VmLck 0: no VM_LOCKED mapping, so no VmFlags line has "lo"
    smaps = _read_or_none(proc_root / str(pid) / "smaps")
    if smaps is None:
        return False
    for (start, end), memory in parse_smaps(smaps).items():
        found = ranges.get((start, end))
        if found is not None:
            path, offset = found
            totals[path].add(pid, offset, end - start, memory)
    return True


def _locks_nothing(proc_root: Path, pid: int) -> bool:
    """True when /proc/PID/status says VmLck: 0 kB. smaps costs ~0.1 ms per mapping (a broker that maps
    1,000 segments: ~0.1 s per read); status is one small read. mm->locked_vm (VmLck) counts the whole size
    of every VM_LOCKED mapping, so 0 here means no mapping has VmFlags "lo"."""
    process = other_process(pid, proc_root)
    return process is not None and process.locked_bytes == 0
