"""Where a traced event lands: from a user address or a (device, inode) to a file, and to a store segment.

Three encodings of "which file" meet here, and `FileId` is the one they are all turned into:
- tracepoints give `s_dev` in the kernel's internal dev_t (major << 20 | minor) and `i_ino`;
- /proc/PID/maps gives "major:minor" in hex and the inode in decimal for each mapping;
- os.stat gives st_dev in the C library's encoding (decoded by os.major / os.minor) and st_ino.

`AddressSpaces` keeps a /proc/PID/maps snapshot per process and reads it again when an address falls outside
every known mapping (new mappings appear as a process runs), at most once per interval and process, so
a burst of faults in unmapped memory costs one read, not one per fault.

`FileNames` names a file seen by (device, inode) from the store, else from the /proc/PID/fd and /proc/PID/maps
of a process that used it; `FdNames` names what a process's descriptor refers to (a file, a socket by its
addresses, a pipe end) from /proc/PID/fd.

`store_files()` names a store's files (a RocketMQ store's CommitLog, ConsumeQueue and index files) by inode,
as its format labels them (store.inspection.formats), so events on them are reported as
"commitlog/00000000001073741824" rather than as a path or an inode.
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import ipaddress
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from stat import S_IFIFO, S_IFMT, S_IFREG, S_IFSOCK

from probes.process_files import DELETED_SUFFIX, MapsEntry, parse_maps
from probes.procfs import PROC_ROOT, ProcessGone
from store.inspection.formats import store_files as format_store_files

PAGE_SIZE_BYTES = os.sysconf("SC_PAGE_SIZE")
PAGE_SHIFT = PAGE_SIZE_BYTES.bit_length() - 1
_KERNEL_MINOR_BITS = 20


@dataclass(frozen=True, order=True)
class FileId:
    """A file as the kernel knows it: its device (major, minor) and inode number."""

    major: int
    minor: int
    inode: int

    @classmethod
    def from_kernel(cls, s_dev: int, inode: int) -> FileId:
        return cls(s_dev >> _KERNEL_MINOR_BITS, s_dev & ((1 << _KERNEL_MINOR_BITS) - 1), inode)

    @classmethod
    def from_stat(cls, stat: os.stat_result) -> FileId:
        return cls(os.major(stat.st_dev), os.minor(stat.st_dev), stat.st_ino)

    @property
    def kernel_dev(self) -> int:
        """The device as tracepoints report it (s_dev), for BPF map keys."""
        return self.major << _KERNEL_MINOR_BITS | self.minor

    @property
    def device(self) -> str:
        return f"{self.major}:{self.minor}"


@dataclass(frozen=True)
class FileLabel:
    """How a file is shown: its store segment name if it belongs to the store, else its path."""

    file: FileId
    name: str
    path: str | None
    segment_kind: str | None = None  # "commitlog", "consumequeue" or "index" for store files
    size_bytes: int | None = None

    @property
    def size_pages(self) -> int | None:
        return None if self.size_bytes is None else -(-self.size_bytes // PAGE_SIZE_BYTES)


def unnamed_file(file: FileId) -> FileLabel:
    return FileLabel(file, f"inode {file.inode} on {file.device}", None)


# Page ranges: the probes break a file's events down by ranges of `chunk` pages.
BUCKETS_PER_FILE = 64
UNKNOWN_SIZE_CHUNK_PAGES = 256


def default_chunk_pages(label: FileLabel) -> int:
    """Pages per page range of a file: 1/64 of its size, else 256 when its size is unknown."""
    if label.size_pages:
        return max(1, -(-label.size_pages // BUCKETS_PER_FILE))
    return UNKNOWN_SIZE_CHUNK_PAGES


def page_range_bounds(bucket: int, chunk: int, size_pages: int | None) -> tuple[int, int]:
    """The first and last page of page range `bucket`, the last one cut at the end of the file."""
    first, last = bucket * chunk, (bucket + 1) * chunk - 1
    if size_pages:
        last = min(last, max(size_pages - 1, first))
    return first, last


# --- /proc/PID/maps -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MappedRange:
    """One line of /proc/PID/maps: [start, end) mapped from `file` at byte `offset` (file None: anonymous)."""

    start: int
    end: int
    offset: int
    file: FileId | None
    path: str | None  # the file's path, or a pseudo-name such as [heap]; None for plain anonymous memory
    deleted: bool = False  # the file was deleted (maps shows its path with " (deleted)" after it)

    def file_page(self, address: int) -> int:
        return (self.offset + address - self.start) >> PAGE_SHIFT

    @property
    def shown_path(self) -> str | None:
        """The path as maps shows it: a deleted file's with " (deleted)" after it."""
        return f"{self.path}{DELETED_SUFFIX}" if self.deleted else self.path


@dataclass(frozen=True)
class AddressSpace:
    """The mappings of one process at one moment, ordered by start address."""

    pid: int
    mappings: tuple[MappedRange, ...]
    _starts: tuple[int, ...] = field(default=(), repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_starts", tuple(mapping.start for mapping in self.mappings))

    def find(self, address: int) -> MappedRange | None:
        position = bisect.bisect_right(self._starts, address) - 1
        if position < 0:
            return None
        mapping = self.mappings[position]
        return mapping if address < mapping.end else None


def parse_address_space(pid: int, text: str) -> AddressSpace:
    """The mappings of `pid` in the text of its /proc/PID/maps (parsed by probes.process_files.parse_maps),
    each file by its FileId."""
    mappings = sorted((_mapped_range(entry) for entry in parse_maps(text)), key=lambda mapping: mapping.start)
    return AddressSpace(pid, tuple(mappings))


def _mapped_range(entry: MapsEntry) -> MappedRange:
    major, minor = (int(part, 16) for part in entry.device.split(":"))
    file = FileId(major, minor, entry.inode) if entry.inode else None
    return MappedRange(
        entry.start_address, entry.end_address, entry.offset_bytes, file, entry.path or None, entry.deleted
    )


def read_address_space(pid: int, proc_root: Path = PROC_ROOT) -> AddressSpace:
    """The current mappings of `pid`; ProcessGone when it has exited."""
    try:
        text = (proc_root / str(pid) / "maps").read_text(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        raise ProcessGone(pid, proc_root) from None
    return parse_address_space(pid, text)


@dataclass(frozen=True)
class Resolved:
    """Where a user address lies: in `mapping` (None: outside every mapping we know of)."""

    mapping: MappedRange | None

    @property
    def file(self) -> FileId | None:
        return self.mapping.file if self.mapping else None


class AddressSpaces:
    """/proc/PID/maps snapshots of the traced processes, re-read when an address is not in the last one.

    A process that exited keeps its last snapshot, so faults it took before exiting still resolve.
    Unreadable maps (another user's process without root) leave the process unresolved.
    """

    def __init__(self, proc_root: Path = PROC_ROOT):
        self._proc_root = proc_root
        self._spaces: dict[int, AddressSpace] = {}
        self._read_this_interval: set[int] = set()

    def new_interval(self) -> None:
        self._read_this_interval.clear()

    def snapshot(self, pid: int, *, fresh: bool = False) -> AddressSpace | None:
        """The last snapshot of `pid`, read now if there is none yet (or, if `fresh`, a new one), at most
        once per interval: a process that exited before its maps were read has none, and each of its
        thousands of fault records would otherwise try again."""
        if pid not in self._read_this_interval and (fresh or pid not in self._spaces):
            self._refresh(pid)
        return self._spaces.get(pid)

    def resolve(self, pid: int, address: int) -> Resolved:
        space = self.snapshot(pid)
        mapping = space.find(address) if space else None
        if mapping is None and pid not in self._read_this_interval:
            space = self._refresh(pid)
            mapping = space.find(address) if space else None
        return Resolved(mapping)

    def forget(self, pid: int) -> None:
        self._spaces.pop(pid, None)

    def _refresh(self, pid: int) -> AddressSpace | None:
        self._read_this_interval.add(pid)
        with contextlib.suppress(ProcessGone, PermissionError):
            self._spaces[pid] = read_address_space(pid, self._proc_root)
        return self._spaces.get(pid)


def label_from_maps(space: AddressSpace, file: FileId) -> FileLabel | None:
    """The path `space` maps `file` from and, where that path still names the same file, its size."""
    mapping = next((m for m in space.mappings if m.file == file and m.path), None)
    if mapping is None:
        return None
    return FileLabel(file, mapping.shown_path or "", mapping.shown_path, None, _size_if_same(mapping))


def _size_if_same(mapping: MappedRange) -> int | None:
    if mapping.deleted:
        return None
    try:
        stat = os.stat(mapping.path or "")
    except OSError:  # another mount namespace, or not a path at all
        return None
    return stat.st_size if FileId.from_stat(stat) == mapping.file else None


# --- naming files seen in events ---------------------------------------------------------------------------


class InodeDevices:
    """The device of each inode seen with one, for events that name a file by its inode alone (a folio made
    dirty: writeback:writeback_dirty_folio gives no device)."""

    UNKNOWN_DEVICE = 0

    def __init__(self, files: Iterable[FileId] = ()):
        self._devices: dict[int, int] = {}
        self._learnt: object = None
        self.learn(files)

    def learn(self, files: Iterable[FileId]) -> None:
        if files is self._learnt:  # the store's listing of the last interval again: nothing changed
            return
        for file in files:
            self._devices[file.inode] = file.kernel_dev
        if isinstance(files, Mapping):
            self._learnt = files

    def file(self, device: int, inode: int) -> FileId:
        """The file (`device` as tracepoints give it; 0: not given, then the one learnt for the inode)."""
        return FileId.from_kernel(device or self._devices.get(inode, self.UNKNOWN_DEVICE), inode)


class FileNames:
    """How a file is shown: its store segment name, else the path under which a process that used it holds
    it open or mapped (from /proc/PID/fd and /proc/PID/maps, read at most once per process and interval),
    else "inode N on M:m"."""

    def __init__(self, labels: Mapping[FileId, FileLabel], proc_root: Path = PROC_ROOT):
        self._labels = dict(labels)
        self._proc_root = proc_root
        self._paths: dict[int, dict[FileId, tuple[str, int | None]]] = {}

    def new_interval(self) -> None:
        self._paths.clear()

    def learn(self, labels: Mapping[FileId, FileLabel]) -> None:
        self._labels.update(labels)

    def label(self, file: FileId, pid: int = 0) -> FileLabel:
        if file in self._labels:
            return self._labels[file]
        found = self._paths_of(pid).get(file) if pid else None
        if found is None:
            return unnamed_file(file)  # not kept: a later interval may find it open somewhere
        path, size = found
        self._labels[file] = FileLabel(file, path, path, None, size)
        return self._labels[file]

    def _paths_of(self, pid: int) -> dict[FileId, tuple[str, int | None]]:
        if pid not in self._paths:
            paths = self._mapped_paths(pid)
            paths.update(self._open_paths(pid))
            self._paths[pid] = paths
        return self._paths[pid]

    def _open_paths(self, pid: int) -> dict[FileId, tuple[str, int | None]]:
        fd_dir = self._proc_root / str(pid) / "fd"
        paths = {}
        with contextlib.suppress(OSError):
            for name in os.listdir(fd_dir):
                with contextlib.suppress(OSError):  # closed since the listing
                    target = os.readlink(fd_dir / name)
                    if target.startswith("/"):
                        status = os.stat(fd_dir / name)  # the open inode itself, even a deleted one
                        paths[FileId.from_stat(status)] = (target, status.st_size)
        return paths

    def _mapped_paths(self, pid: int) -> dict[FileId, tuple[str, int | None]]:
        try:
            space = read_address_space(pid, self._proc_root)
        except (ProcessGone, PermissionError):
            return {}
        return {
            m.file: (m.shown_path, None) for m in space.mappings if m.file and m.path and m.path[0] == "/"
        }


# --- what a file descriptor is ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FdTarget:
    """What a descriptor referred to: kind "file", "socket", "pipe", "other" or "unknown"."""

    kind: str
    name: str
    write_only: bool = False  # opened O_WRONLY: the write end of a pipe
    file: FileId | None = None
    in_store: bool = False


UNKNOWN_TARGET = FdTarget("unknown", "unknown (closed before it was read)")
_KINDS = {S_IFREG: "file", S_IFSOCK: "socket", S_IFIFO: "pipe"}


def read_fd_target(
    pid: int, fd: int, store: Mapping[FileId, FileLabel], proc_root: Path = PROC_ROOT
) -> FdTarget:
    """What /proc/PID/fd/FD refers to now; UNKNOWN_TARGET when it is closed (or the process is gone)."""
    link = proc_root / str(pid) / "fd" / str(fd)
    try:
        target = os.readlink(link)
        status = os.stat(link)  # follows the magic link to the inode: sockets and pipes too
    except OSError:
        return UNKNOWN_TARGET
    kind = _KINDS.get(S_IFMT(status.st_mode), "other")
    file = FileId.from_stat(status) if kind == "file" else None
    label = store.get(file) if file else None
    access = _access_mode(pid, fd, proc_root)
    name = label.name if label else target
    if kind == "pipe" and access in _PIPE_ENDS:
        name += _PIPE_ENDS[access]
    return FdTarget(kind, name, access == os.O_WRONLY, file, label is not None)


_PIPE_ENDS = {os.O_RDONLY: " (read end)", os.O_WRONLY: " (write end)"}


def _access_mode(pid: int, fd: int, proc_root: Path) -> int | None:
    """O_RDONLY, O_WRONLY or O_RDWR, from the flags in /proc/PID/fdinfo/FD (None if unreadable)."""
    try:
        text = (proc_root / str(pid) / "fdinfo" / str(fd)).read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags:"):
            return int(line.split()[1], 8) & os.O_ACCMODE
    return None


class FdNames:
    """Names of the traced processes' descriptors, read from /proc/PID/fd at most once per interval each.

    A descriptor read in an earlier interval and closed since keeps its last name; one never read while open
    is UNKNOWN_TARGET. Reading again each interval (only those that moved bytes) notices a number reused for
    another file between intervals; a reuse within one interval is not seen. TCP and UDP sockets are named by
    their addresses ("TCP 127.0.0.1:5000 → 127.0.0.1:40112") from the process's /proc/PID/net tables.
    """

    def __init__(self, store: Mapping[FileId, FileLabel], proc_root: Path = PROC_ROOT):
        self._store = store
        self._proc_root = proc_root
        self._known: dict[tuple[int, int], FdTarget] = {}
        self._read_this_interval: set[tuple[int, int]] = set()
        self._sockets = SocketNames(proc_root)

    def new_interval(self) -> None:
        self._read_this_interval.clear()
        self._sockets.new_interval()

    def read_all(self, pid: int) -> None:
        """Name every descriptor `pid` has open now (at the start: it may exit before the first read)."""
        try:
            numbers = [int(name) for name in os.listdir(self._proc_root / str(pid) / "fd")]
        except OSError:
            return
        for fd in numbers:
            self.target(pid, fd)

    def target(self, pid: int, fd: int) -> FdTarget:
        key = (pid, fd)
        if key not in self._read_this_interval:
            self._read_this_interval.add(key)
            now = read_fd_target(pid, fd, self._store, self._proc_root)
            if now.kind == "socket":
                now = dataclasses.replace(now, name=self._sockets.name(pid, now.name) or now.name)
            if now is not UNKNOWN_TARGET:
                self._known[key] = now
        return self._known.get(key, UNKNOWN_TARGET)

    def forget(self, pid: int) -> None:
        for key in [key for key in self._known if key[0] == pid]:
            del self._known[key]


class SocketNames:
    """ "socket:[INODE]" -> "TCP local → remote", from /proc/PID/net/{tcp,tcp6,udp,udp6}: the tables of the
    process's network namespace, read at most once per interval and process, and only for a socket not yet
    named (sockets keep their inode for life, so a name is kept)."""

    TABLES = (("tcp", "TCP"), ("tcp6", "TCP"), ("udp", "UDP"), ("udp6", "UDP"))

    def __init__(self, proc_root: Path = PROC_ROOT):
        self._proc_root = proc_root
        self._names: dict[str, str] = {}
        self._read_this_interval: set[int] = set()

    def new_interval(self) -> None:
        self._read_this_interval.clear()

    def name(self, pid: int, link: str) -> str | None:
        if link not in self._names and pid not in self._read_this_interval:
            self._read_this_interval.add(pid)
            for table, protocol in self.TABLES:
                self._names.update(self._read_table(pid, table, protocol))
        return self._names.get(link)

    def _read_table(self, pid: int, table: str, protocol: str) -> dict[str, str]:
        try:
            lines = (self._proc_root / str(pid) / "net" / table).read_text().splitlines()[1:]
        except OSError:
            return {}
        names = {}
        for line in lines:
            fields = line.split()
            if len(fields) > 9:
                local, remote = (_socket_address(text) for text in fields[1:3])
                ends = local if remote.endswith(":0") else f"{local} → {remote}"
                names[f"socket:[{fields[9]}]"] = f"{protocol} {ends}"
        return names


def _socket_address(text: str) -> str:
    """/proc/net/tcp's "0100007F:1F90" (the address as the kernel stores it, in host order words; the port
    in hex) as "127.0.0.1:8080", and its IPv6 form as "[::1]:8080"."""
    address_hex, port_hex = text.split(":")
    raw = bytes.fromhex(address_hex)
    words = b"".join(raw[start : start + 4][::-1] for start in range(0, len(raw), 4))
    address = ipaddress.ip_address(words)
    address = getattr(address, "ipv4_mapped", None) or address  # a v4 peer of a v6 socket reads as v4
    port = int(port_hex, 16)
    return f"{address}:{port}" if address.version == 4 else f"[{address}]:{port}"


# --- the store's files ----------------------------------------------------------------------------------


def store_files(root: Path) -> dict[FileId, FileLabel]:
    """The store's data and index files by inode, labelled as its format names them; NotAStore if `root` is
    not a store."""
    return dict(_labelled((file.path, file.label, file.kind) for file in format_store_files(root)))


def _labelled(named: Iterable[tuple[Path, str, str]]) -> Iterable[tuple[FileId, FileLabel]]:
    for path, name, kind in named:
        try:
            stat = path.stat()
        except FileNotFoundError:  # deleted by retention since the listing
            continue
        file = FileId.from_stat(stat)
        yield file, FileLabel(file, name, str(path), kind, stat.st_size)


def kernel_inode_keys(files: Iterable[FileId]) -> tuple[tuple[int, int, int], ...]:
    """(inode, s_dev, 0) per file: the key fields of the BPF inode sets (struct inode_key, with its pad)."""
    return tuple((file.inode, file.kernel_dev, 0) for file in sorted(files))
