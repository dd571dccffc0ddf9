"""How much of each file is mlocked, and by which processes: /proc/PID/smaps "Locked" summed per file.

Pages are locked per mapping, not per file, so the only place the kernel tells is the smaps of each process
that maps the file. This reads every process's maps (cheap), and the smaps only of processes whose maps show
one of the files (matched by device and inode, so renamed or deleted files still match).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from probes.process_files import parse_maps, parse_smaps
from probes.procfs import PROC_ROOT


@dataclass(frozen=True)
class FileLocks:
    path: str
    locked_bytes: int  # over the processes that could be read: a lower bound when `unreadable_processes`
    locking_pids: tuple[int, ...]


@dataclass(frozen=True)
class LockedFiles:
    files: dict[str, FileLocks]
    processes_scanned: int
    unreadable_processes: int  # maps or smaps denied (e.g. pid 1 here): locks they hold are not counted
    notes: dict[str, str] = field(default_factory=dict)


def locked_bytes_by_file(paths: Iterable[Path | str], proc_root: Path = PROC_ROOT) -> LockedFiles:
    """Bytes mlocked in each of `paths`, summed over every process that maps it."""
    by_identity = _identities(paths)
    totals = {path: [0, []] for path in by_identity.values()}
    scanned = unreadable = 0
    for pid in _pids(proc_root):
        maps = _read_or_none(proc_root / str(pid) / "maps")
        if maps is None:
            unreadable += 1
            continue
        scanned += 1
        ranges = _ranges_of_files(maps, by_identity)
        if ranges and not _add_locked(proc_root, pid, ranges, totals):
            unreadable += 1
    files = {path: FileLocks(path, locked, tuple(pids)) for path, (locked, pids) in totals.items()}
    notes = {}
    if unreadable:
        notes["locked_bytes"] = (
            f"{unreadable} processes could not be read (their maps/smaps need ptrace access): "
            "pages they lock are not counted"
        )
    return LockedFiles(files, scanned, unreadable, notes)


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


def _ranges_of_files(maps: str, by_identity: dict[tuple[int, int], str]) -> dict[tuple[int, int], str]:
    ranges = {}
    for entry in parse_maps(maps):
        if entry.inode == 0:
            continue
        path = by_identity.get((_device_number(entry.device), entry.inode))
        if path is not None:
            ranges[(entry.start_address, entry.end_address)] = path
    return ranges


def _add_locked(proc_root: Path, pid: int, ranges: dict[tuple[int, int], str], totals: dict) -> bool:
    smaps = _read_or_none(proc_root / str(pid) / "smaps")
    if smaps is None:
        return False
    for span, memory in parse_smaps(smaps).items():
        path = ranges.get(span)
        if path is None or not memory.locked_bytes:
            continue
        totals[path][0] += memory.locked_bytes
        if pid not in totals[path][1]:
            totals[path][1].append(pid)
    return True
