"""Where a traced event lands: from a user address or a (device, inode) to a file, and to a store segment.

Three encodings of "which file" meet here, and `FileId` is the one they are all turned into:
- tracepoints give `s_dev` in the kernel's internal dev_t (major << 20 | minor) and `i_ino`;
- /proc/PID/maps gives "major:minor" in hex and the inode in decimal for each mapping;
- os.stat gives st_dev in the C library's encoding (decoded by os.major / os.minor) and st_ino.

`AddressSpaces` keeps a /proc/PID/maps snapshot per process and reads it again when an address falls outside
every known mapping (new mappings appear as a process runs), at most once per interval and process, so
a burst of faults in unmapped memory costs one read, not one per fault.

`store_files()` names the segments of a RocketMQ store (CommitLog, ConsumeQueue and index files) by inode, so
events on them are reported as "commitlog/00000000001073741824" rather than as a path or an inode.
"""

from __future__ import annotations

import bisect
import contextlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from probes.procfs import PROC_ROOT, ProcessGone
from store.layout import SegmentQueue, discover_store

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


# --- /proc/PID/maps -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MappedRange:
    """One line of /proc/PID/maps: [start, end) mapped from `file` at byte `offset` (file None: anonymous)."""

    start: int
    end: int
    offset: int
    file: FileId | None
    path: str | None  # the file's path, or a pseudo-name such as [heap]; None for plain anonymous memory

    def file_page(self, address: int) -> int:
        return (self.offset + address - self.start) >> PAGE_SHIFT


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


def parse_maps(pid: int, text: str) -> AddressSpace:
    """/proc/PID/maps text: "start-end perms offset major:minor inode [path]" (hex except the inode)."""
    mappings = []
    for line in text.splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) < 5:
            continue
        start, end = (int(part, 16) for part in fields[0].split("-"))
        major, minor = (int(part, 16) for part in fields[3].split(":"))
        inode = int(fields[4])
        path = fields[5].strip() if len(fields) == 6 else None
        file = FileId(major, minor, inode) if inode else None
        mappings.append(MappedRange(start, end, int(fields[2], 16), file, path or None))
    mappings.sort(key=lambda mapping: mapping.start)
    return AddressSpace(pid, tuple(mappings))


def read_address_space(pid: int, proc_root: Path = PROC_ROOT) -> AddressSpace:
    """The current mappings of `pid`; ProcessGone when it has exited."""
    try:
        text = (proc_root / str(pid) / "maps").read_text(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        raise ProcessGone(pid, proc_root) from None
    return parse_maps(pid, text)


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
        """The last snapshot of `pid`, read now if there is none yet (or, if `fresh`, if it was not read
        this interval)."""
        if pid not in self._spaces or (fresh and pid not in self._read_this_interval):
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
    return FileLabel(file, mapping.path or "", mapping.path, None, _size_if_same(mapping))


def _size_if_same(mapping: MappedRange) -> int | None:
    try:
        stat = os.stat(mapping.path or "")
    except OSError:  # deleted (" (deleted)" suffix), another mount namespace, or not a path at all
        return None
    return stat.st_size if FileId.from_stat(stat) == mapping.file else None


# --- the store's files ----------------------------------------------------------------------------------


def store_files(root: Path) -> dict[FileId, FileLabel]:
    """The store's CommitLog, ConsumeQueue and index files by inode; NotAStore if `root` is not a store."""
    layout = discover_store(root)
    named: list[tuple[Path, str, str]] = []
    named += _queue_files(layout.commitlog, "commitlog", "commitlog")
    for consume_queue in layout.consume_queues:
        prefix = f"consumequeue/{consume_queue.topic}/{consume_queue.queue_id}"
        named += _queue_files(consume_queue.queue, prefix, "consumequeue")
    named += [(path, f"index/{path.name}", "index") for path in layout.index_files]
    return dict(_labelled(named))


def _queue_files(queue: SegmentQueue, prefix: str, kind: str) -> list[tuple[Path, str, str]]:
    return [(segment.path, f"{prefix}/{segment.path.name}", kind) for segment in queue.segments]


def _labelled(named: Iterable[tuple[Path, str, str]]) -> Iterable[tuple[FileId, FileLabel]]:
    for path, name, kind in named:
        try:
            stat = path.stat()
        except FileNotFoundError:  # deleted by retention since the listing
            continue
        file = FileId.from_stat(stat)
        yield file, FileLabel(file, name, str(path), kind, stat.st_size)


def kernel_inode_keys(files: Mapping[FileId, FileLabel]) -> tuple[tuple[int, int, int], ...]:
    """(inode, s_dev, 0) per file: the key fields of the BPF inode set (struct inode_key, with its pad)."""
    return tuple((file.inode, file.kernel_dev, 0) for file in sorted(files))
