"""The files one process uses: those it has mapped and those it holds open, one row per file.

Both lists count. A RocketMQ broker maps its CommitLog and ConsumeQueue files, but a Kafka broker reads
log segments with sendfile() and maps only its index files, so a segment a Kafka consumer is being served
from shows up in /proc/PID/fd and nowhere in /proc/PID/maps (pcstat and hcache read maps only and miss it;
pgcacher reads both).

Where the data comes from:

    /proc/PID/maps     the mappings; file-backed ones are kept (inode != 0 and an absolute path), minus
                       anonymous shared memory that the kernel names like a file (/dev/zero, SysV shm,
                       memfd), and minus mapped device files (a GPU's /dev/dri/card0)
    /proc/PID/smaps    Rss, Private_Dirty and Shared_Dirty of each mapping (kB in the file, bytes here),
                       summed per file over its mappings; the locked bytes of the mappings whose VmFlags
                       has "lo" (LockedRanges: smaps "Locked" is a PSS in whole kB)
    /proc/PID/fd/N     readlink: the open files; regular files only (no sockets, pipes, devices)

A file the process deleted keeps its pages and its place in both lists, with " (deleted)" after the name;
it is listed with `deleted=True` and the bare name. `open_path` is where this process (mqinspect) can open
the very inode the target process uses, also for a deleted file or one in another mount namespace:
/proc/PID/fd/N when the file is open, else /proc/PID/map_files/START-END (root only) for a deleted
mapping, else /proc/PID/root/PATH.

Why /proc and not psutil: psutil's open_files() leaves out deleted files (the ones whose pages a broker
still holds after retention removed them) and gives no path to reach the inode; its memory_maps() has
neither the Locked counter nor the device and inode of a mapping.

Every reader takes `proc_root` (default /proc) so tests can point it at canned trees. A file that cannot be
read (permission: reading another user's maps or fd needs ptrace access to the process) leaves its fields
None, with the reason in `unavailable`; only a process that no longer exists raises, with ProcessGone.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from probes.procfs import (
    PROC_ROOT,
    ProcessGone,
    Unavailable,
    _read_process_file,
    _Unreadable,
    parse_proc_counters,
)

DELETED_SUFFIX = " (deleted)"
# Shared anonymous memory appears in maps under a made-up file name (mm/shmem.c, ipc/shm.c, mm/memfd.c).
_ANONYMOUS_SHARED_MEMORY = re.compile(r"/(?:dev/zero|SYSV[0-9a-f]{8}|memfd:.*|\[aio\])")
_MAPS_LINE = re.compile(
    r"(?P<start>[0-9a-f]+)-(?P<end>[0-9a-f]+)\s+(?P<permissions>\S+)\s+(?P<offset>[0-9a-f]+)\s+"
    r"(?P<device>[0-9a-f]+:[0-9a-f]+)\s+(?P<inode>\d+)(?:\s+(?P<path>.*))?"
)


@dataclass(frozen=True)
class MapsEntry:
    """One line of /proc/PID/maps. `path` is "" for anonymous memory, "[heap]", "[vdso]", ... for the
    kernel's special mappings, and the file name (without " (deleted)") for a file mapping."""

    start_address: int
    end_address: int
    permissions: str
    offset_bytes: int
    device: str
    inode: int
    path: str
    deleted: bool

    @property
    def size_bytes(self) -> int:
        return self.end_address - self.start_address

    @property
    def address_range(self) -> str:
        """START-END as in maps: the name of the mapping's entry in /proc/PID/map_files."""
        return f"{self.start_address:x}-{self.end_address:x}"

    @property
    def file_backed(self) -> bool:
        if self.inode == 0 or not self.path.startswith("/"):
            return False
        return not (self.deleted and _ANONYMOUS_SHARED_MEMORY.fullmatch(self.path))


@dataclass(frozen=True)
class MappingMemory:
    """The smaps counters of one mapping, in bytes (PROC_KEYS names the smaps line behind each)."""

    rss_bytes: int | None
    private_dirty_bytes: int | None
    shared_dirty_bytes: int | None
    locked_bytes: int | None  # a PSS in whole kB: a page locked and mapped by 5 processes shows 0
    vm_flags: frozenset[str] = frozenset()  # the VmFlags line's two-letter flags (man 5 proc)

    PROC_KEYS: ClassVar[Mapping[str, str]] = {
        "rss_bytes": "Rss",
        "private_dirty_bytes": "Private_Dirty",
        "shared_dirty_bytes": "Shared_Dirty",
        "locked_bytes": "Locked",
    }

    @property
    def locked(self) -> bool:
        """VM_LOCKED (mlock, mlockall, MAP_LOCKED): VmFlags "lo", whatever Locked's rounded PSS says (a
        kernel before 3.8 has no VmFlags line: there a non-zero Locked is all that tells)."""
        return "lo" in self.vm_flags if self.vm_flags else bool(self.locked_bytes)


class LockedRanges:
    """A file's locked bytes, from its locked mappings (MappingMemory.locked) as they are found.

    A locked mapping's resident pages are all locked. When all of its pages are resident (mlock faults them
    in), the file range it maps is locked, and the file's locked bytes are the union of those ranges (a
    range two mappings or two processes lock counts once). A locked mapping with pages not resident (mlock2
    MLOCK_ONFAULT) adds its Rss; where such mappings overlap, that part is an upper bound.
    """

    def __init__(self) -> None:
        self.ranges: list[tuple[int, int]] = []  # file byte ranges of wholly resident locked mappings
        self.partial_bytes = 0  # Rss of locked mappings not wholly resident

    def add(self, offset_bytes: int, length_bytes: int, memory: MappingMemory) -> bool:
        """Count one mapping of `length_bytes` at file offset `offset_bytes`; True if it locks pages."""
        if not memory.locked or not memory.rss_bytes:
            return False  # not locked, or locked on fault with nothing resident yet
        if memory.rss_bytes >= length_bytes:
            self.ranges.append((offset_bytes, offset_bytes + length_bytes))
        else:
            self.partial_bytes += memory.rss_bytes
        return True

    def bytes(self) -> int:
        covered, reached = 0, 0
        for start, end in sorted(self.ranges):
            start = max(start, reached)
            if end > start:
                covered += end - start
                reached = end
        return covered + self.partial_bytes


@dataclass(frozen=True)
class OpenFile:
    """One regular file in /proc/PID/fd."""

    fd: int
    path: str
    deleted: bool


@dataclass(frozen=True)
class ProcessFile:
    """One file a process has mapped, open, or both.

    `fds` are the descriptors that refer to it; `mappings` and `mapped_bytes` count its VMAs and their
    sizes. The four memory fields come from smaps over those mappings: the file's pages this process has
    mapped in (Rss), dirtied through a private or shared mapping (each a sum), and mlock'ed (LockedRanges
    of its locked mappings). They are 0 for a file the process only holds open, and None when smaps could
    not be read (see `unavailable`).
    """

    path: str
    deleted: bool
    open_path: str
    fds: tuple[int, ...]
    mappings: int
    mapped_bytes: int
    rss_bytes: int | None
    private_dirty_bytes: int | None
    shared_dirty_bytes: int | None
    locked_bytes: int | None
    unavailable: Unavailable = field(default_factory=dict)

    @property
    def mapped(self) -> bool:
        return self.mappings > 0

    @property
    def open(self) -> bool:
        return bool(self.fds)


@dataclass(frozen=True)
class SkippedFile:
    """A mapped or open path that is not a regular file, with what it is."""

    path: str
    reason: str


@dataclass(frozen=True)
class ProcessFiles:
    """The files of process `pid`: mapped ones first (in address order), then open-only ones (by fd).

    `unavailable` says which list could not be read ("mapped_files", "open_files") and why; `skipped`
    lists mapped or open paths left out because they are not regular files.
    """

    pid: int
    comm: str | None
    files: tuple[ProcessFile, ...]
    skipped: tuple[SkippedFile, ...] = ()
    unavailable: Unavailable = field(default_factory=dict)


# --- parsing


def _split_deleted(path: str) -> tuple[str, bool]:
    if path.endswith(DELETED_SUFFIX):
        return path[: -len(DELETED_SUFFIX)], True
    return path, False


def parse_maps(text: str) -> tuple[MapsEntry, ...]:
    """Every mapping in the text of /proc/PID/maps (also the header lines of smaps), in address order."""
    entries = []
    for line in text.splitlines():
        found = _MAPS_LINE.fullmatch(line.rstrip("\n"))
        if found is None:
            continue
        path, deleted = _split_deleted(found["path"] or "")
        entries.append(
            MapsEntry(
                start_address=int(found["start"], 16),
                end_address=int(found["end"], 16),
                permissions=found["permissions"],
                offset_bytes=int(found["offset"], 16),
                device=found["device"],
                inode=int(found["inode"]),
                path=path,
                deleted=deleted,
            )
        )
    return tuple(entries)


def parse_smaps(text: str) -> dict[tuple[int, int], MappingMemory]:
    """{(start, end): MappingMemory} for each mapping in the text of /proc/PID/smaps."""
    memory: dict[tuple[int, int], MappingMemory] = {}
    block: list[str] = []
    current: tuple[int, int] | None = None

    def close_block() -> None:
        if current is not None:
            counters = parse_proc_counters("\n".join(block))
            # VmFlags is a block's last line
            flags = next((line[8:].split() for line in reversed(block) if line.startswith("VmFlags:")), ())
            memory[current] = MappingMemory(
                **{name: counters.get(key) for name, key in MappingMemory.PROC_KEYS.items()},
                vm_flags=frozenset(flags),
            )

    for line in text.splitlines():
        header = _MAPS_LINE.fullmatch(line)
        if header is None:
            block.append(line)
            continue
        close_block()
        current, block = (int(header["start"], 16), int(header["end"], 16)), []
    close_block()
    return memory


# --- reading one process


def read_process_files(pid: int, proc_root: Path = PROC_ROOT) -> ProcessFiles:
    """The regular files process `pid` has mapped or open, with its smaps counters per file.

    Raises ProcessGone if the process does not exist (or exits while its files are read) and
    probes.errors.AccessDenied if /proc hides a running process (hidepid).
    """
    comm, unavailable = _read_comm(pid, proc_root)
    skipped: list[SkippedFile] = []
    mappings, maps_reason = _read_file_mappings(pid, proc_root, skipped)
    memory, smaps_reason = _read_smaps(pid, proc_root) if mappings else ({}, None)
    open_files, fd_reason = _read_open_files(pid, proc_root, skipped)
    if maps_reason:
        unavailable["mapped_files"] = maps_reason
    if fd_reason:
        unavailable["open_files"] = fd_reason
    files = _merge(pid, proc_root, mappings, memory, smaps_reason, open_files, maps_reason)
    return ProcessFiles(pid, comm, files, tuple(dict.fromkeys(skipped)), unavailable)


def _read_comm(pid: int, proc_root: Path) -> tuple[str | None, Unavailable]:
    try:
        return _read_process_file(pid, "comm", proc_root).rstrip("\n"), {}
    except _Unreadable as err:
        return None, {"comm": str(err)}


def _read_file_mappings(
    pid: int, proc_root: Path, skipped: list[SkippedFile]
) -> tuple[list[MapsEntry], str | None]:
    path = proc_root / str(pid) / "maps"
    denied = (
        f"permission denied: {path} is readable only with ptrace access to the process (its owner or root)"
    )
    try:
        entries = parse_maps(_read_process_file(pid, "maps", proc_root, denied))
    except _Unreadable as err:
        return [], str(err)
    kept = []
    not_regular: dict[str, str] = {}
    for entry in entries:
        if not entry.file_backed:
            continue
        kind = _kind_if_not_regular(_mapped_open_path(pid, proc_root, entry))
        if kind:
            not_regular[entry.path] = kind
        else:
            kept.append(entry)
    skipped.extend(SkippedFile(name, f"mapped {kind}") for name, kind in not_regular.items())
    return kept, None


def _read_smaps(pid: int, proc_root: Path) -> tuple[dict[tuple[int, int], MappingMemory], str | None]:
    path = proc_root / str(pid) / "smaps"
    denied = (
        f"permission denied: {path} is readable only with ptrace access to the process (its owner or root)"
    )
    try:
        return parse_smaps(_read_process_file(pid, "smaps", proc_root, denied)), None
    except _Unreadable as err:
        return {}, str(err)


def _read_open_files(
    pid: int, proc_root: Path, skipped: list[SkippedFile]
) -> tuple[list[OpenFile], str | None]:
    fd_dir = proc_root / str(pid) / "fd"
    try:
        names = sorted(os.listdir(fd_dir), key=int)
    except PermissionError:
        return [], f"permission denied: {fd_dir} is readable only by the process's owner or root"
    except FileNotFoundError:
        if not (proc_root / str(pid)).is_dir():
            raise ProcessGone(pid, proc_root) from None
        return [], f"{fd_dir}: not present"
    open_files = []
    for name in names:
        found = _open_file(fd_dir / name, int(name), skipped)
        if found is not None:
            open_files.append(found)
    return open_files, None


def _open_file(link: Path, fd: int, skipped: list[SkippedFile]) -> OpenFile | None:
    # Listing fd/ took the same access check as readlink and stat of its links, so an error here means
    # the descriptor was closed since the listing: it is no longer one of the process's files.
    try:
        target = os.readlink(link)
        if not target.startswith("/"):
            return None  # "socket:[123]", "pipe:[456]", "anon_inode:[eventfd]"
        status = os.stat(link)  # follows the magic link to the inode, even a deleted one
    except OSError:
        return None
    path, deleted = _split_deleted(target)
    if deleted and _ANONYMOUS_SHARED_MEMORY.fullmatch(path):
        return None
    if not stat.S_ISREG(status.st_mode):
        skipped.append(SkippedFile(path, f"open {_describe_kind(status)}"))
        return None
    return OpenFile(fd, path, deleted)


def _mapped_open_path(pid: int, proc_root: Path, entry: MapsEntry) -> Path:
    process_dir = proc_root / str(pid)
    if entry.deleted:
        return process_dir / "map_files" / entry.address_range
    return process_dir / "root" / entry.path.lstrip("/")


def _kind_if_not_regular(path: Path) -> str | None:
    """What `path` is when it is plainly not a regular file; None for a regular or unknown file."""
    try:
        status = os.stat(path)
    except OSError:
        return None  # e.g. map_files needs CAP_SYS_ADMIN: keep the file and let the measurement explain
    return None if stat.S_ISREG(status.st_mode) else _describe_kind(status)


def _describe_kind(status: os.stat_result) -> str:
    kinds = {
        stat.S_IFDIR: "a directory",
        stat.S_IFCHR: "a character device",
        stat.S_IFBLK: "a block device",
        stat.S_IFIFO: "a FIFO",
        stat.S_IFSOCK: "a socket",
    }
    return kinds.get(stat.S_IFMT(status.st_mode), "not a regular file")


# --- one row per file


@dataclass
class _FileBuilder:
    path: str
    deleted: bool
    open_path: str
    fds: list[int] = field(default_factory=list)
    mappings: list[MapsEntry] = field(default_factory=list)


def _merge(
    pid: int,
    proc_root: Path,
    mappings: Iterable[MapsEntry],
    memory: Mapping[tuple[int, int], MappingMemory],
    smaps_reason: str | None,
    open_files: Iterable[OpenFile],
    maps_reason: str | None,
) -> tuple[ProcessFile, ...]:
    # One file is one (name, deleted) pair: a deleted file and a new file of the same name are two files.
    builders: dict[tuple[str, bool], _FileBuilder] = {}
    for entry in mappings:
        key = (entry.path, entry.deleted)
        if key not in builders:
            builders[key] = _FileBuilder(
                entry.path, entry.deleted, str(_mapped_open_path(pid, proc_root, entry))
            )
        builders[key].mappings.append(entry)
    for opened in open_files:
        key = (opened.path, opened.deleted)
        builder = builders.setdefault(key, _FileBuilder(opened.path, opened.deleted, ""))
        if not builder.fds:
            # The descriptor reaches the very inode without CAP_SYS_ADMIN, deleted or not.
            builder.open_path = str(proc_root / str(pid) / "fd" / str(opened.fd))
        builder.fds.append(opened.fd)
    return tuple(_process_file(builder, memory, smaps_reason, maps_reason) for builder in builders.values())


def _process_file(
    builder: _FileBuilder,
    memory: Mapping[tuple[int, int], MappingMemory],
    smaps_reason: str | None,
    maps_reason: str | None,
) -> ProcessFile:
    # Without maps nobody knows whether the file is mapped; without smaps, how much of a mapped one is.
    failure = maps_reason or (smaps_reason if builder.mappings else None)
    if failure:
        sums, unavailable = (
            dict.fromkeys(MappingMemory.PROC_KEYS),
            dict.fromkeys(MappingMemory.PROC_KEYS, failure),
        )
    else:
        sums, unavailable = _summed_memory(builder.mappings, memory)
    return ProcessFile(
        path=builder.path,
        deleted=builder.deleted,
        open_path=builder.open_path,
        fds=tuple(builder.fds),
        mappings=len(builder.mappings),
        mapped_bytes=sum(entry.size_bytes for entry in builder.mappings),
        **sums,
        unavailable=unavailable,
    )


def _summed_memory(
    mappings: list[MapsEntry], memory: Mapping[tuple[int, int], MappingMemory]
) -> tuple[dict[str, int | None], Unavailable]:
    """The smaps counters summed over a file's mappings, and its locked bytes (LockedRanges, not the sum
    of "Locked", a PSS); a counter any mapping lacks is unavailable."""
    sums: dict[str, int | None] = dict.fromkeys(MappingMemory.PROC_KEYS, 0)
    unavailable: Unavailable = {}
    locked = LockedRanges()
    for entry in mappings:
        counters = memory.get((entry.start_address, entry.end_address))
        if counters:
            locked.add(entry.offset_bytes, entry.size_bytes, counters)
        for name, key in MappingMemory.PROC_KEYS.items():
            value = getattr(counters, name) if counters else None
            if value is None:
                sums[name] = None
                unavailable[name] = (
                    f"smaps has no {key} line for mapping {entry.address_range}"
                    if counters
                    else f"mapping {entry.address_range} changed between reading maps and smaps"
                )
            elif sums[name] is not None:
                sums[name] += value
    if sums["locked_bytes"] is not None:
        sums["locked_bytes"] = locked.bytes()
    return sums, unavailable
