"""What every probe shares: what it traces, and how it reads its program's cumulative maps.

`ScopedProbe` is the base of every registered probe (probes/ebpf/registry.py). It holds the scope of one
trace: every process or the given pids (`ProcessWatch`: checked to be live processes, named, and watched for
their exit) and, with --store, the store's files. From the scope it builds the kernel-side filter every
program takes (programs/scope.h): the set mqi_tgids and the defines FILTER_TGIDS, MAX_TGIDS, MAX_THREADS and
IGNORE_TGID (the tracer itself); for programs that filter files (programs/store_files.h) also FILTER_INODES,
MAX_INODES, MAX_STORE_DIRS and FOLLOW_CREATION, with the sets of the store's files and directories.

`StoreFollower` follows the store's files for those programs: where the kernel reports inode creation (ext4),
the program itself takes each file created in a store directory for the store's from its first page; at the
end of every interval the follower lists the store, adds what the kernel could not see created, and names the
files the kernel counted (a generation tells apart two files that had the same inode number in one interval).
`follow_store()` is what every probe calls once per interval; `current_store_files()` is one listing shared
for STORE_LISTING_REUSE_S by the probes of one session.

The map readers: `CounterDifferences` (per-key cumulative maps) and `CumulativeTotals` (one-entry arrays) turn
cumulative counters into what each interval gained; probes/ebpf/tally.py adds them up into rows and summaries.
`HalvedMaps` empties per-interval maps kept in two halves (programs/halves.h), so that no event is lost at an
interval's end.
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
import platform
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from stat import S_ISREG
from typing import Any, ClassVar

from probes.directory_watch import DirectoryWatch, EntryEvent
from probes.ebpf.inodes import FileId, FileLabel, kernel_inode_keys, store_files
from probes.ebpf.loader import TRACEFS, IntSetMap, LoadedProgram, Parameters, checked_int
from probes.ebpf.tracepoints import tracepoint_format_path
from probes.procfs import PROC_ROOT, ProcessFaults, ProcessGone, read_process_faults
from store.errors import StoreError
from store.inspection.formats import detect_format, store_directories

_ENDED_STATES = ("Z", "X")  # a zombie has done all it will do: its counts are final
LISTED_GENERATION = 1  # programs/store_files.h: a file user space listed (the kernel did not see it created)
# The tracepoints that show a file's creation and its end, per filesystem (programs/store_files.h).
CREATION_DEFINES = {"ext4:ext4_allocate_inode": "HAVE_EXT4_ALLOC", "ext4:ext4_free_inode": "HAVE_EXT4_FREE"}
CREATION_FUNCTIONS = {"ext4:ext4_allocate_inode": "mqi_store_new", "ext4:ext4_free_inode": "mqi_store_gone"}
FOLLOWED_FILESYSTEMS = frozenset({"ext4"})
# The tracepoints that show a traced process starting another and a followed one ending (programs/scope.h).
FOLLOWING_DEFINES = {"task:task_newtask": "HAVE_NEWTASK", "sched:sched_process_exit": "HAVE_PROCESS_EXIT"}
FOLLOWING_FUNCTIONS = {"task:task_newtask": "mqi_child_new", "sched:sched_process_exit": "mqi_child_exit"}
_STORE_SETS = ("mqi_store_dirs", "mqi_topic_dirs", "mqi_queue_roots")

# --- the traced processes ---------------------------------------------------------------------------------


def validated_pids(pids: Sequence[int], proc_root: Path = PROC_ROOT) -> tuple[int, ...]:
    """The pids, sorted and unique, once each is an int naming a live process (ProcessGone otherwise)."""
    checked = tuple(sorted({checked_int(pid, "pid") for pid in pids}))
    for pid in checked:
        if pid <= 0:
            raise ValueError(f"{pid} is not a process id")
        if not process_exists(pid, proc_root):
            raise ProcessGone(pid, proc_root)
    return checked


def process_exists(pid: int, proc_root: Path = PROC_ROOT) -> bool:
    return (proc_root / str(pid)).is_dir()


def has_ended(stat: ProcessFaults | None) -> bool:
    """Whether a process whose /proc/PID/stat read gave `stat` (None: it is gone) has exited."""
    return stat is None or stat.state in _ENDED_STATES


class ProcessWatch:
    """The traced processes (`pids`; none: every process), the names of the processes a probe reports, and
    which of them exited: each exit is reported once, and a pid given to trace stays ended, so that a new
    process reusing it is not taken for ours."""

    def __init__(self, pids: Sequence[int], proc_root: Path = PROC_ROOT):
        self.pids = validated_pids(pids, proc_root)
        self._proc_root = proc_root
        self._comms: dict[int, str | None] = {}
        self._ended: set[int] = set()

    def subject(self) -> str:
        """Who is traced, for the startup line: "every process", "pid 12" or "pids 12, 34"."""
        if not self.pids:
            return "every process"
        return f"pid {self.pids[0]}" if len(self.pids) == 1 else "pids " + ", ".join(map(str, self.pids))

    def comm(self, pid: int, seen: bytes = b"") -> str | None:
        """The name of `pid`: as the kernel saw it (`seen`, a NUL-padded comm), else the one kept for it, else
        read from /proc now and kept (until `forget`)."""
        name = bytes(seen).split(b"\0", 1)[0]
        if name:
            return name.decode(errors="replace")
        if pid not in self._comms:
            try:
                self._comms[pid] = (self._proc_root / str(pid) / "comm").read_text().strip()
            except OSError:
                self._comms[pid] = None
        return self._comms[pid]

    def remember_comms(self) -> None:
        """Read the traced processes' names now, while they surely exist."""
        for pid in self.pids:
            self.comm(pid)

    def stat(self, pid: int) -> ProcessFaults | None:
        """/proc/PID/stat of `pid` now (None: it is gone), keeping its name if none is kept yet."""
        try:
            stat = read_process_faults(pid, self._proc_root)
        except ProcessGone:
            return None
        self._comms.setdefault(pid, stat.comm)
        return stat

    def running(self) -> tuple[int, ...]:
        """The traced pids not yet seen to exit."""
        return tuple(pid for pid in self.pids if pid not in self._ended)

    def all_ended(self) -> bool:
        """Whether pids were given and every one has been seen to exit: nothing of theirs is left to trace."""
        return bool(self.pids) and not self.running()

    def newly_ended(self, pids: Iterable[int]) -> set[int]:
        """Those of `pids` that have exited (gone, or a zombie whose counts are final) since the last call."""
        return self.note_ended({pid: self.stat(pid) for pid in set(pids) - self._ended})

    def note_ended(self, stats: Mapping[int, ProcessFaults | None]) -> set[int]:
        """Those of the processes whose /proc/PID/stat was just read (`stats`) that have exited, noted as
        ended so that newly_ended() and running() leave them out from now on."""
        ended = {pid for pid, stat in stats.items() if has_ended(stat)}
        self._ended |= ended
        return ended

    def exited(self, program: LoadedProgram) -> tuple[int, ...]:
        """The traced processes that exited since the last call, dropped from the kernel's set mqi_tgids."""
        gone = tuple(sorted(self.newly_ended(self.pids)))
        for pid in gone:
            program.delete("mqi_tgids", (pid,))
        return gone

    def forget(self, pid: int) -> None:
        """Drop what is kept for `pid`. A pid given to trace stays ended: a new process reusing it is not
        ours; without given pids any process is ours, so a reused pid can end again."""
        self._comms.pop(pid, None)
        if pid not in self.pids:
            self._ended.discard(pid)


# --- the scope of a probe ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScopeLimits:
    """Entries of the maps every program has: mqi_tgids and the per-process maps (`tgids`), the per-thread
    state of a call or fault in flight (`threads`), and, in the programs that filter files, mqi_inodes with
    the per-file maps (`inodes`) and the store's directories (`store_dirs`, programs/store_files.h). Each
    probe's MapLimits adds its own maps."""

    tgids: int = 16384
    inodes: int = 65536
    threads: int = 32768
    store_dirs: int = 16384


@dataclass(frozen=True)
class SnapshotHeader:
    """The fields every probe's snapshot starts with (ScopedProbe.interval_header fills them): one interval
    (kind "interval") or the whole session (kind "summary"), its length and end, and what was traced."""

    kind: str
    interval_s: float
    end_time_unix_s: float
    pids: tuple[int, ...]  # traced processes; () means every process
    store: str | None


class ScopedProbe:
    """The base of every probe: its scope (every process or the given `pids`; with a `store`, the store's
    files) and the kernel-side filter built from it (programs/scope.h). A subclass sets `map_limits` to its
    MapLimits (the sizes of its maps; `limits` overrides them), and `filters_files` when its program includes
    programs/store_files.h (FILTER_INODES: only the store's files, with --store, followed by a StoreFollower
    from their creation). A subclass that keeps state of its own takes the scope as `**scope` and hands it
    on."""

    map_limits: ClassVar[type[ScopeLimits]] = ScopeLimits
    filters_files: ClassVar[bool] = False

    def __init__(
        self,
        pids: Sequence[int] = (),
        *,
        store: Path | None = None,
        limits: ScopeLimits | None = None,
        proc_root: Path = PROC_ROOT,
        follow_children: bool = False,
    ):
        self.processes = ProcessWatch(pids, proc_root)
        self.pids = self.processes.pids
        # the kernel adds the processes the traced ones start to mqi_tgids (programs/scope.h)
        self.follow_children = bool(follow_children and self.pids)
        self._followed: set[int] = set()
        self.store = store
        self.limits: Any = self.map_limits() if limits is None else limits
        self._proc_root = proc_root
        # the listing the session's probes share: their dicts of the store's files then hold the very FileIds
        # of the listings that follow (one dict lookup by identity per file, not a FileId.__eq__ call)
        listing = (current_store_listing(store, fresh=True) or list_store(store)) if store else None
        self._store_files: dict[FileId, FileLabel] = dict(listing.files) if listing else {}
        self._learnt_files: Mapping[FileId, FileLabel] | None = listing.files if listing else None
        self.follower = (
            StoreFollower(store, listing, proc_root) if store and listing and self.filters_files else None
        )

    def interval_header(self, interval_s: float, program: LoadedProgram | None = None) -> dict[str, Any]:
        """The fields every interval snapshot starts with: kind, length, end time, and what was traced; with
        the `program`, also followed_pids (the processes followed so far: `followed_pids`)."""
        header = {
            "kind": "interval",
            "interval_s": round(interval_s, 6),
            "end_time_unix_s": time.time(),
            "pids": self.pids,
            "store": str(self.store) if self.store else None,
        }
        if program is not None:
            header["followed_pids"] = self.followed_pids(program)
        return header

    def followed_pids(self, program: LoadedProgram) -> tuple[int, ...]:
        """The processes the kernel followed since the session began (started by a traced process, or by one
        it followed: programs/scope.h), sorted; () unless following children."""
        if self.follow_children:
            self._followed.update(scalar(key) for key, _parent in program.read("mqi_followed"))
        return tuple(sorted(self._followed))

    def per_segment(self, otherwise: str) -> str:
        """How the subject line says where events are broken down: per store segment with --store."""
        return f"per segment of the store {self.store}" if self.store else otherwise

    def sets(self) -> tuple[IntSetMap, ...]:
        sets = []
        if self.pids:
            sets.append(IntSetMap.of_ints("mqi_tgids", self.pids))
        if self.follower:
            sets += self.follower.sets()
        return tuple(sets)

    def scope_parameters(self, **defines: int) -> Parameters:
        """The program's defines: the filters, then the probe's own `defines`, then the sizes of the maps
        every program has, the tracer's own tgid (left out when every process is traced), and how the
        store's files are followed (programs/store_files.h)."""
        filters = {"FILTER_TGIDS": int(bool(self.pids))}
        sizes = {"MAX_TGIDS": self.limits.tgids}
        if self.filters_files:
            filters["FILTER_INODES"] = int(bool(self.store))
            sizes["MAX_INODES"] = self.limits.inodes
        sizes |= {"MAX_THREADS": self.limits.threads, "IGNORE_TGID": os.getpid()}
        sizes |= {"FOLLOW_CHILDREN": int(self.follow_children), **following_defines()}
        if self.filters_files:
            creation = handler_defines(CREATION_DEFINES)
            following = bool(self.follower and self.follower.follows_creation(creation))
            sizes |= {"MAX_STORE_DIRS": self.limits.store_dirs, "FOLLOW_CREATION": int(following), **creation}
        return Parameters.of(**filters, **defines, **sizes)

    def follow_store(
        self, program: LoadedProgram
    ) -> tuple[Mapping[FileId, FileLabel], Mapping[FileId, FileLabel]]:
        """List the store again. Returns its files now and those of them that are new since the last look (a
        rolled CommitLog, a new ConsumeQueue file); both are not to be changed: while the store has the same
        files, its files now are the very mapping of the last call (what is learnt from it need not be learnt
        again). A probe that filters files also has its follower bring the kernel's sets up to date
        (StoreFollower.follow)."""
        if self.follower:
            current, new = self.follower.follow(program)
        else:
            current = current_store_files(self.store)
            if current is self._learnt_files:
                return current, {}
            new = {file: label for file, label in current.items() if file not in self._store_files}
        if current is not self._learnt_files:
            self._store_files.update(current)  # a deleted segment keeps its name for its last events
            self._learnt_files = current
        return current, new

    def store_label(self, file: FileId, generation: int | None = None) -> FileLabel | None:
        """The store's name of `file` (as of the `generation` the kernel gave it, where the probe keys files
        by it: see StoreFollower.label), or None when it is not one of the store's files."""
        if self.follower:
            return self.follower.label(file, generation)
        return self._store_files.get(file)

    def late_store_files(self) -> dict[str, Any]:
        """The snapshot fields that say which of the store's files were counted only from the end of the
        interval they appeared in (not from their creation), and why: empty without a follower."""
        if not self.follower or not self.follower.late:
            return {"late_store_files": (), "late_store_files_reason": None}
        return {
            "late_store_files": tuple(label.name for label in self.follower.late),
            "late_store_files_reason": self.follower.late_reason(),
        }


# --- following the store's files from their creation ----------------------------------------------------


# A directory whose mtime is this close to a listing's start may have changed again within the same tick
# of its filesystem's clock (a jiffy on ext4, a second or two on older filesystems): such a listing is not
# reused.
SETTLED_AFTER_NS = 2_000_000_000


@dataclass(frozen=True)
class StoreListing:
    """The store at one moment: its files, and its directories by the set of programs/store_files.h each
    belongs to (mqi_store_dirs: its files are the store's; mqi_topic_dirs, mqi_queue_roots: its
    subdirectories are store directories, topic directories). `watched`: the store's root and every
    directory listed, each with its (inode, mtime) before it was read (None: absent); `settled`: none of them
    had changed within SETTLED_AFTER_NS of the listing.

    `watch`: inotify watches on those directories, made before they were read (None where inotify could not
    be had: their mtimes are compared instead). `file_kind`: the format's kind of a path under the store,
    where every file's label is its path under the store (`prefix`), so that a file an event names can be
    labelled without listing the store (None: a Kafka partition directory given alone, whose labels name the
    partition too); `files_in`: the directories whose files are the store's."""

    files: dict[FileId, FileLabel]
    directories: dict[str, frozenset[FileId]]
    watched: tuple[tuple[str, tuple[int, int] | None], ...] = ()
    settled: bool = False
    watch: DirectoryWatch | None = field(default=None, compare=False, repr=False)
    file_kind: Callable[[str], str | None] | None = field(default=None, compare=False, repr=False)
    prefix: str = ""
    files_in: frozenset[str] = frozenset()

    def still_current(self) -> bool:
        """Whether the store has the same files now: no directory of it was created, deleted or had a file
        created, deleted or renamed in it since the listing (their mtimes say so, one stat each, instead of
        a listing with a stat per file: 70 ms for 1,500 files)."""
        return self.settled and all(_version(path) == version for path, version in self.watched)

    def now(self) -> StoreListing | None:
        """The store's files now: this listing when nothing changed since, or (inotify) this listing with the
        files created, deleted and renamed since, each looked at alone (a CommitLog roll costs one stat, not
        a listing of the store); None when the store must be listed again (a directory created or deleted,
        the events incomplete, no inotify and a directory's mtime moved). Asked of the newest listing only:
        the events taken are applied to it."""
        if self.watch is None or self.watch.closed:
            return self if self.still_current() else None
        events = self.watch.take()
        if events is None:
            return None
        listing = self._with_changes(events) if events else self
        return listing._sized() if listing is not None else None

    def _sized(self) -> StoreListing:
        """This listing with the files it has as empty looked at again: a segment is created empty and then
        given its size (RocketMQ preallocates a CommitLog segment, Kafka its index files), which no entry
        event says, and the probes' page ranges follow a file's size."""
        resized = {}
        for label in [label for label in self.files.values() if not label.size_bytes and label.path]:
            stat = _stat(label.path)
            if stat is not None and stat.st_size and FileId.from_stat(stat) == label.file:
                resized[label.file] = dataclasses.replace(label, size_bytes=stat.st_size)
        return dataclasses.replace(self, files={**self.files, **resized}) if resized else self

    def _with_changes(self, events: Sequence[EntryEvent]) -> StoreListing | None:
        """This listing with the entries the `events` name looked at again (as they are now: an entry
        created and deleted since is absent, whichever event comes first)."""
        if self.file_kind is None:
            return None
        files = dict(self.files)
        by_path = {label.path: file for file, label in files.items()}
        for event in events:
            path = os.path.join(event.directory, event.name)
            kind = self.file_kind(path[len(self.prefix) :])
            if event.directory not in self.files_in:
                if kind is None:
                    continue  # not a store file (a lock, a checkpoint): not in any listing
                return None  # a store file where the listing has no files: the format must say
            listed = by_path.pop(path, None)
            if listed is not None:
                files.pop(listed, None)
            label = _labelled_now(path, path[len(self.prefix) :], kind) if kind is not None else None
            if label is not None:
                files[label.file] = label
                by_path[path] = label.file
        return dataclasses.replace(self, files=files)


def _labelled_now(path: str, name: str, kind: str) -> FileLabel | None:
    """The label of the store file at `path` now, as store_files() labels it; None when there is no regular
    file there (deleted again since the event)."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    if not S_ISREG(stat.st_mode):
        return None
    file = FileId.from_stat(stat)
    return FileLabel(file, name, path, kind, stat.st_size)


def list_store(store: Path, watch: DirectoryWatch | None = None) -> StoreListing:
    """The store's files and directories now; StoreError if `store` is not a store. With a `watch`, its
    directories are watched (before they are read) for the listing's `now()`; where the kernel refuses a
    watch (the per-user limit) the watch is closed and the mtimes serve instead."""
    started_ns = time.time_ns()
    directories = store_directories(store)
    named = {
        "mqi_store_dirs": directories.files_in,
        "mqi_topic_dirs": directories.directories_in,
        "mqi_queue_roots": directories.parents_in,
    }
    # stat'ed (and watched) before their entries are read: a change after this shows at the next look
    looked_at = (store, *(path for paths in named.values() for path in paths))
    if watch is not None:
        try:
            watch.watch(str(path) for path in looked_at)
        except OSError:
            watch.close()
            watch = None
    stats = {str(path): _stat(path) for path in looked_at}
    files = store_files(store)
    ids = {
        name: frozenset(FileId.from_stat(stat) for path in paths if (stat := stats[str(path)]) is not None)
        for name, paths in named.items()
    }
    watched = tuple((path, _version_of(stat)) for path, stat in stats.items())
    settled = all(version is None or version[1] < started_ns - SETTLED_AFTER_NS for _path, version in watched)
    prefix = f"{store}{os.sep}"
    file_kind = detect_format(store).file_kind
    relative = all(_named_by_path(label, prefix, file_kind) for label in files.values())
    return StoreListing(
        files,
        ids,
        watched,
        settled,
        watch,
        file_kind if relative else None,
        prefix,
        frozenset(str(path) for path in directories.files_in),
    )


def _named_by_path(label: FileLabel, prefix: str, file_kind: Callable[[str], str | None]) -> bool:
    """Whether `label` is what StoreListing.now() would make of its path: the path under the store, and the
    kind the format gives that."""
    name = label.name
    return label.path == prefix + name and file_kind(name) == label.segment_kind


def _stat(path: Path | str) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:
        return None


def _version(path: str) -> tuple[int, int] | None:
    return _version_of(_stat(path))


def _version_of(stat: os.stat_result | None) -> tuple[int, int] | None:
    return None if stat is None else (stat.st_ino, stat.st_mtime_ns)


def filesystem_type(path: Path, proc_root: Path = PROC_ROOT) -> str | None:
    """The type of the filesystem `path` is on ("ext4"), from /proc/self/mountinfo; None when unknown."""
    try:
        device = path.stat().st_dev
        mounts = (proc_root / "self" / "mountinfo").read_text().splitlines()
    except OSError:
        return None
    wanted = f"{os.major(device)}:{os.minor(device)}"
    for line in mounts:
        fields, _, filesystem = line.partition(" - ")
        if len(fields.split()) > 2 and fields.split()[2] == wanted and filesystem:
            return filesystem.split()[0]
    return None


class StoreFollower:
    """The user side of programs/store_files.h: which of the kernel's files are the store's, under which name.

    At the start the kernel's sets get the store's files and directories. Where the kernel reports inode
    creation (FOLLOWED_FILESYSTEMS), it adds each file created in a store directory itself, so its events
    count from its first page. `follow()` lists the store at the end of every interval: files the kernel did
    not see created (another filesystem, renamed into the store, or its map was full) are added then, and
    listed in `late`; without creation events, files that disappeared are taken out (with them the
    kernel takes them out when it frees the inode). `label()` names a file, or says it is not the store's.
    """

    def __init__(self, store: Path, listing: StoreListing, proc_root: Path = PROC_ROOT):
        self.store = store
        # Whether creations are followed depends on the filesystem of the store's main data directory.
        self.filesystem = filesystem_type(next(iter(store_directories(store).files_in), store), proc_root)
        self.files = listing.files  # the store's files at the last listing (not to be changed in place)
        self._last_names = dict(listing.files)  # the file each inode was last listed as (kept when deleted)
        self._listed_names = dict(listing.files)  # the file counted under LISTED_GENERATION for each inode
        self._generations: dict[tuple[FileId, int], FileLabel | None] = {}
        self._directories = listing.directories
        self._listing: StoreListing | None = None  # the last one brought into the kernel's sets
        self._from_creation = False
        self._program: LoadedProgram | None = None  # the program of the last follow(), asked by label()
        self._relisted = False
        self.late: list[FileLabel] = []  # new files of the last listing the kernel had not taken itself
        self.unfollowed: list[FileLabel] = []  # of them, those the kernel's full map could not take either
        self.created_while_full = 0  # files the kernel saw created in the last interval but could not hold
        self._lost = CumulativeTotals("mqi_store_lost", ("files_not_followed",))

    def follows_creation(self, creation_defines: Mapping[str, int]) -> bool:
        """Whether the kernel adds new files itself: the store is on a filesystem whose inode creation has a
        tracepoint, and this kernel has them all (`creation_defines`, from handler_defines)."""
        self._from_creation = self.filesystem in FOLLOWED_FILESYSTEMS and all(creation_defines.values())
        return self._from_creation

    def late_reason(self) -> str:
        """Why the files of the last listing in `late` were followed only from it (or, when the kernel's map
        of the store's files is full, not at all)."""
        if self.created_while_full or self.unfollowed:
            return (
                f"the kernel's map of the store's files (MAX_INODES) was full: {self.created_while_full} "
                f"created while it was, {len(self.unfollowed)} not traced at all"
            )
        if not self._from_creation:
            filesystem = self.filesystem or "unknown"
            return f"no tracepoint shows a file's creation on {filesystem} (ext4 has them)"
        return "moved or linked into the store: that creates no inode, so the kernel saw nothing created"

    def sets(self) -> list[IntSetMap]:
        """The store's files (generation LISTED_GENERATION) and directories, for the kernel's sets."""
        sets = [IntSetMap("mqi_inodes", kernel_inode_keys(self.files))]
        sets += [IntSetMap(name, kernel_inode_keys(self._directories[name])) for name in _STORE_SETS]
        return sets

    def follow(self, program: LoadedProgram) -> tuple[dict[FileId, FileLabel], dict[FileId, FileLabel]]:
        """Bring the kernel's sets up to date with a listing of the store, once per interval; returns its
        files now and the new ones. Call it after draining the interval's maps, so that every file with events
        was made before the listing (label() lists again when the shared listing is older than a file)."""
        self.created_while_full = self._lost.since_last_read(program)["files_not_followed"]
        self.late, self.unfollowed = [], []
        self._program, self._relisted = program, False
        return self._update(program, current_store_listing(self.store))

    def _update(
        self, program: LoadedProgram, listing: StoreListing | None
    ) -> tuple[dict[FileId, FileLabel], dict[FileId, FileLabel]]:
        """A file is new when its inode is, or when its inode now has another path: a deleted segment's
        number reused by the next one. Where the kernel took it at its creation it has a generation of its
        own, and what was counted under LISTED_GENERATION for that number keeps the name of the file before
        it."""
        if listing is None or listing is self._listing:  # being deleted or moved, or unchanged: nothing new
            return self.files, {}
        self._listing = listing
        new = {
            file: label
            for file, label in listing.files.items()
            if file not in self.files or self.files[file].path != label.path
        }
        for file, label in new.items():
            self._last_names[file] = label
            if self._taken_at_creation(program, file):
                continue
            self.late.append(label)
            self._listed_names[file] = label
            if not program.try_put("mqi_inodes", _kernel_key(file), (LISTED_GENERATION,)):
                self.unfollowed.append(label)
        if not self._from_creation:  # else the kernel forgets a file when it frees its inode
            for gone in self.files.keys() - listing.files.keys():
                program.delete("mqi_inodes", _kernel_key(gone))
        for name in _STORE_SETS:
            for directory in listing.directories[name] - self._directories[name]:
                program.put(name, _kernel_key(directory), (1,))
        self._directories = listing.directories
        self.files = listing.files  # never changed in place: a listing brought up to date is a new one
        return self.files, new

    def _taken_at_creation(self, program: LoadedProgram, file: FileId) -> bool:
        if not self._from_creation:
            return False
        generation = program.get("mqi_inodes", _kernel_key(file))
        return generation is not None and scalar(generation) != LISTED_GENERATION

    def label(self, file: FileId, generation: int | None = None) -> FileLabel | None:
        """The name of the store's `file`; None when it is not one of the store's files.

        Without a `generation` (a probe that does not key files by it): the file last listed with that inode
        (a deleted segment keeps its name). With one: the file counted under it. LISTED_GENERATION is the file
        user space listed with that inode; a generation the kernel gave at creation is named once, as the file
        the listing shows if the kernel still has that generation for it (the program of the last follow() is
        asked), else it was a file created and gone within the interval, not a segment of the store."""
        if generation is None:
            return self._known(file, lambda: self._last_names)
        if generation == LISTED_GENERATION:
            return self._known(file, lambda: self._listed_names)
        key = (file, generation)
        if key not in self._generations:
            current = self._program.get("mqi_inodes", _kernel_key(file)) if self._program else None
            if current is not None and scalar(current) == generation:
                self._relist()  # made this interval: a shared listing may predate it, or show its predecessor
                self._generations[key] = self.files.get(file)
            else:
                self._generations[key] = None
        return self._generations[key]

    def _known(self, file: FileId, names: Callable[[], Mapping[FileId, FileLabel]]) -> FileLabel | None:
        """`file` in `names()`, listing the store afresh first if it is not there."""
        if file not in names():
            self._relist()
        return names().get(file)

    def allow_relisting(self) -> None:
        """Let label() list afresh once more this interval: another probe sharing this follower drained its
        maps after the interval's listing (probes/ebpf/combined.py)."""
        self._relisted = False

    def _relist(self) -> None:
        """List the store afresh, at most once per interval: the listing shared with the session's other
        probes may predate a file created just before this probe drained its maps."""
        if self._program is not None and not self._relisted:
            self._relisted = True
            self._update(self._program, current_store_listing(self.store, fresh=True))


def _kernel_key(file: FileId) -> tuple[int, int, int]:
    (key,) = kernel_inode_keys((file,))
    return key


# Several probes of one session (the dashboard runs four) follow the same store at the same moment; one
# listing serves them all for this long, which is far below any interval.
STORE_LISTING_REUSE_S = 0.25
_listings: dict[Path, tuple[float, StoreListing]] = {}
_listings_lock = threading.Lock()
WATCHED_STORES = 8
_watches: dict[Path, DirectoryWatch] = {}


def current_store_listing(store: Path, *, fresh: bool = False) -> StoreListing | None:
    """The store's files and directories now: without inotify the last listing while it is up to
    STORE_LISTING_REUSE_S old (unless `fresh`: a file may have been created within that time); else the last
    listing brought up to date (StoreListing.now: inotify's events, or the directories' mtimes saying
    nothing changed); else a new listing. None while the store is being deleted or moved."""
    with _listings_lock:
        listed = _listings.get(store)
        if listed is not None:
            watched = listed[1].watch is not None and not listed[1].watch.closed  # asking costs one read()
            if not fresh and not watched and time.monotonic() - listed[0] < STORE_LISTING_REUSE_S:
                return listed[1]
            now = listed[1].now()  # checked now: the session's other probes take it as it is
            if now is not None:
                _listings[store] = (time.monotonic(), now)
                return now
        try:
            listing = list_store(store, _watch_for(store))
        except (StoreError, OSError):
            return None
        _listings[store] = (time.monotonic(), listing)
        return listing


def _watch_for(store: Path) -> DirectoryWatch | None:
    """The inotify watch of `store`'s directories, its pending events dropped (the listing about to be made
    sees what they say); None where inotify cannot be had. At most WATCHED_STORES stores are watched (each
    watch is one of the user's fs.inotify.max_user_instances, 128 by default, shared with every process of
    the user): the longest unasked is closed."""
    watch = _watches.pop(store, None)
    if watch is None or watch.closed:
        try:
            watch = DirectoryWatch.open()
        except OSError:
            return None
    else:
        watch.take()
    _watches[store] = watch  # the most recent last
    while len(_watches) > WATCHED_STORES:
        oldest = next(iter(_watches))
        _watches.pop(oldest).close()
        _listings.pop(oldest, None)
    return watch


def current_store_files(store: Path | None) -> Mapping[FileId, FileLabel]:
    """The store's files now (not to be changed: the same mapping while the store has the same files);
    nothing when there is no store, or while it is being deleted or moved."""
    listing = current_store_listing(store) if store is not None else None
    return listing.files if listing else {}


def handler_defines(defines: Mapping[str, str], tracefs: Path = TRACEFS) -> dict[str, int]:
    """DEFINE=1 for each optional tracepoint this kernel has, 0 for one it lacks (bcc cannot build the
    argument struct of a tracepoint that does not exist). Where tracefs cannot be read (not root:
    --print-bpf) a tracepoint counts as present, which is what a privileged run on a kernel that has it
    compiles."""
    return {define: int(_tracepoint_present(tp, tracefs)) for tp, define in defines.items()}


def following_defines(tracefs: Path = TRACEFS) -> dict[str, int]:
    """The defines of programs/scope.h's process following: which of its tracepoints this kernel has, and
    whether sched_process_exit says when a whole process is gone (its group_dead field, Linux >= 6.16)."""
    defines = handler_defines(FOLLOWING_DEFINES, tracefs)
    try:
        exit_format = tracepoint_format_path(tracefs, "sched:sched_process_exit").read_text()
        says_group_dead = "group_dead;" in exit_format
    except PermissionError:  # not root (--print-bpf): what a privileged run on this kernel would compile
        says_group_dead = True
    except OSError:
        says_group_dead = False
    defines["EXIT_HAS_GROUP_DEAD"] = int(says_group_dead)
    return defines


def _tracepoint_present(tracepoint: str, tracefs: Path) -> bool:
    try:
        return tracepoint_format_path(tracefs, tracepoint).exists()
    except PermissionError:
        return True


# --- reading cumulative maps -------------------------------------------------------------------------------


def scalar(value: Any) -> int:
    """A scalar map key or value: bcc gives a ctypes number from items(), a plain int from batch reads."""
    return int(getattr(value, "value", value))


class CounterDifferences:
    """What each entry of a cumulative BPF map gained since the previous read (entries are never drained,
    so an event counted while user space reads lands in the next difference instead of being lost)."""

    def __init__(self) -> None:
        self._previous: dict[tuple[int, ...], tuple[int, ...]] = {}

    def gained(self, entries: Iterable[tuple[tuple[int, ...], tuple[int, ...]]]) -> dict[tuple, tuple]:
        differences = {}
        for key, now in entries:
            before = self._previous.get(key, (0,) * len(now))
            self._previous[key] = now
            change = tuple(a - b for a, b in zip(now, before, strict=True))
            if any(change):
                differences[key] = change
        return differences

    def known_keys(self) -> list[tuple[int, ...]]:
        return list(self._previous)

    def forget(self, key: tuple[int, ...]) -> None:
        self._previous.pop(key, None)


# membarrier(2), which glibc does not wrap: MEMBARRIER_CMD_GLOBAL returns after an RCU grace period.
_MEMBARRIER_SYSCALLS = {"x86_64": 324, "aarch64": 283, "riscv64": 283, "ppc64le": 365, "s390x": 356}
_MEMBARRIER_CMD_GLOBAL = 1
# Where membarrier cannot be used (nohz_full, an unknown architecture): a handler runs for microseconds with
# preemption off, so one that read the old half has returned long before this.
HANDLER_SETTLE_S = 0.02
_libc = ctypes.CDLL(None, use_errno=True)


def wait_for_handlers_in_flight() -> None:
    """Return once every BPF handler running now has returned: tracepoint handlers run inside an RCU
    read-side section, and MEMBARRIER_CMD_GLOBAL waits for an RCU grace period (8-24 ms measured here)."""
    number = _MEMBARRIER_SYSCALLS.get(platform.machine())
    if number is None or _libc.syscall(number, _MEMBARRIER_CMD_GLOBAL, 0, 0) != 0:
        time.sleep(HANDLER_SETTLE_S)


class HalvedMaps:
    """The user side of programs/halves.h: maps the handlers fill over one interval, each kept in two halves
    (NAME_0, NAME_1), emptied at the interval's end without losing the events counted meanwhile.

    `switch()` makes the handlers write the other half from now on; `drain()` then waits for the handlers that
    may still write the old half and empties it: {NAME: its (key, value) entries}. The drained entries are
    final: nothing writes that half until the next switch."""

    def __init__(self, names: Sequence[str]):
        self.names = tuple(names)
        self._writing = 0

    def switch(self, program: LoadedProgram) -> None:
        self._writing ^= 1
        program.put("mqi_half", (0,), (self._writing,))

    def drain(self, program: LoadedProgram) -> dict[str, list[tuple[Any, Any]]]:
        wait_for_handlers_in_flight()
        written = self._writing ^ 1
        return {name: list(program.drain(f"{name}_{written}")) for name in self.names}


class LostRecords:
    """mqi_lost of the programs that count lost records apart (programs/lost.h): the
    records the maps could not hold since the last read."""

    def __init__(self) -> None:
        self._differences = CounterDifferences()

    def since_last_read(self, program: LoadedProgram) -> int:
        entries = (((scalar(key),), (scalar(value),)) for key, value in program.read("mqi_lost"))
        return sum(change[0] for change in self._differences.gained(entries).values())


class CumulativeTotals:
    """Differences between successive reads of a one-entry array of cumulative counters."""

    def __init__(self, map_name: str, fields: Sequence[str]):
        self.map_name = map_name
        self.fields = tuple(fields)
        self._previous = (0,) * len(self.fields)

    def since_last_read(self, program: LoadedProgram) -> dict[str, int]:
        entries = program.read(self.map_name)
        now = tuple(getattr(entries[0][1], name) for name in self.fields) if entries else self._previous
        gained = {name: a - b for name, a, b in zip(self.fields, now, self._previous, strict=True)}
        self._previous = now
        return gained
