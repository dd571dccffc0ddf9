"""Where a store's files are and whether their names and sizes obey RocketMQ's load rules.

Read-only and mapping-free: it only lists directories and stats files, so it is safe on a store that a broker
is writing, rolling or truncating. Sizes are taken from the files themselves (a store may be scaled down).
"""

from __future__ import annotations

import itertools
import os
import re
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from store.errors import NotAStore, StoreLayoutError

FILE_NAME_DIGITS = 20
SEGMENT_NAME = re.compile(r"[0-9]{20}")
INDEX_FILE_NAME = re.compile(r"[0-9]{17}")


def offset_to_file_name(offset: int) -> str:
    """`UtilAll.offset2FileName`: the start offset as 20 zero-padded decimal digits."""
    if not 0 <= offset < 10**FILE_NAME_DIGITS:
        raise ValueError(f"offset {offset} cannot be a segment name")
    return f"{offset:0{FILE_NAME_DIGITS}d}"


def file_name_to_offset(name: str) -> int:
    """The start offset a segment's file name encodes; StoreLayoutError for any other name."""
    if not SEGMENT_NAME.fullmatch(name):
        raise StoreLayoutError(f"{name}: not a segment of this store (the name is not a 20-digit offset)")
    return int(name)


class SegmentKind(StrEnum):
    """Which part of a store a file belongs to: how listings and traced events name its kind."""

    COMMITLOG = "commitlog"
    CONSUMEQUEUE = "consumequeue"
    INDEX = "index"


@dataclass(frozen=True)
class SegmentFile:
    """One fixed-size segment: a CommitLog or ConsumeQueue file named by its start offset."""

    path: Path
    file_from_offset: int
    size_bytes: int
    mtime_s: float


@dataclass(frozen=True)
class LayoutProblem:
    """A file that breaks a load rule. `fatal` problems make RocketMQ refuse to start."""

    path: Path
    reason: str
    fatal: bool = True


@dataclass(frozen=True)
class SegmentQueue:
    """The segments of one directory, in offset order, with the segment size they share."""

    directory: Path
    segments: tuple[SegmentFile, ...]
    file_size: int | None  # None: no segment to take it from
    problems: tuple[LayoutProblem, ...] = ()

    @property
    def empty_last_file(self) -> Path | None:
        """A zero-length last file: a segment whose creation a crash cut short (RocketMQ deletes it)."""
        last = self.segments[-1] if self.segments else None
        return last.path if last is not None and last.size_bytes == 0 and self.file_size else None

    @property
    def loadable_segments(self) -> tuple[SegmentFile, ...]:
        """The segments RocketMQ maps at load: all but an empty last file."""
        return self.segments[:-1] if self.empty_last_file else self.segments

    def require_valid(self) -> SegmentQueue:
        """Raise the first fatal problem, as MappedFileQueue.load does."""
        fatal = next((problem for problem in self.problems if problem.fatal), None)
        if fatal:
            raise StoreLayoutError(f"{fatal.path}: {fatal.reason}")
        return self

    def segment_for(self, offset: int) -> SegmentFile | None:
        for segment in self.segments:
            if segment.file_from_offset <= offset < segment.file_from_offset + (self.file_size or 0):
                return segment
        return None


@dataclass(frozen=True)
class ConsumeQueueDir:
    topic: str
    queue_id: int
    queue: SegmentQueue


@dataclass(frozen=True)
class StoreLayout:
    root: Path
    commitlog: SegmentQueue
    consume_queues: tuple[ConsumeQueueDir, ...]
    index_files: tuple[Path, ...]
    checkpoint: Path | None
    abort_file: Path | None
    lock_file: Path | None
    config_dir: Path | None
    problems: tuple[LayoutProblem, ...] = field(default=())

    def consume_queue(self, topic: str, queue_id: int) -> ConsumeQueueDir | None:
        return next((cq for cq in self.consume_queues if cq.topic == topic and cq.queue_id == queue_id), None)

    @property
    def topics(self) -> tuple[str, ...]:
        return tuple(sorted({cq.topic for cq in self.consume_queues}))


def scan_segment_dir(directory: Path, expected_size: int | None = None) -> SegmentQueue:
    """List a directory of segments and check RocketMQ's load rules without opening any file.

    Rules (`MappedFileQueue.doLoad` / `checkSelf`): names are 20-digit offsets; every file has the configured
    size, except that a zero-length last file is tolerated (RocketMQ deletes it); consecutive files are
    exactly one size apart. With no `expected_size`, the size of the first non-empty file is the rule.
    """
    entries = _list_files(directory)
    problems = [
        LayoutProblem(
            directory / name, "not a segment of this store (the name is not a 20-digit start offset)"
        )
        for name in sorted(entries)
        if not SEGMENT_NAME.fullmatch(name)
    ]
    segments = tuple(
        sorted(
            (
                _segment(directory / name, stat)
                for name, stat in entries.items()
                if SEGMENT_NAME.fullmatch(name)
            ),
            key=lambda segment: segment.file_from_offset,
        )
    )
    file_size = expected_size or next((s.size_bytes for s in segments if s.size_bytes), None)
    problems += _size_problems(segments, file_size) + _gap_problems(segments, file_size)
    return SegmentQueue(directory, segments, file_size, tuple(problems))


def _list_files(directory: Path) -> dict[str, os.stat_result]:
    files = {}
    with os.scandir(directory) as listing:
        for entry in listing:
            try:
                if entry.is_file(follow_symlinks=True):
                    files[entry.name] = entry.stat(follow_symlinks=True)
            except FileNotFoundError:  # deleted by retention while we listed
                continue
    return files


def _segment(path: Path, stat: os.stat_result) -> SegmentFile:
    return SegmentFile(path, int(path.name), stat.st_size, stat.st_mtime)


def _size_problems(segments: tuple[SegmentFile, ...], file_size: int | None) -> list[LayoutProblem]:
    problems = []
    for position, segment in enumerate(segments):
        if segment.size_bytes == file_size:
            continue
        if segment.size_bytes == 0 and position == len(segments) - 1:
            problems.append(
                LayoutProblem(segment.path, "empty last file (RocketMQ deletes it at load)", False)
            )
            continue
        problems.append(
            LayoutProblem(
                segment.path,
                f"size {segment.size_bytes} does not match the segment size {file_size} "
                "(length not matched message store config value)",
            )
        )
    return problems


def _gap_problems(segments: tuple[SegmentFile, ...], file_size: int | None) -> list[LayoutProblem]:
    if not file_size:
        return []
    problems = []
    for before, after in itertools.pairwise(segments):
        if after.file_from_offset - before.file_from_offset != file_size:
            problems.append(
                LayoutProblem(
                    after.path,
                    f"starts at {after.file_from_offset}, but the previous segment ends at "
                    f"{before.file_from_offset + file_size}: segments must be contiguous",
                )
            )
    for segment in segments:
        if segment.file_from_offset % file_size:
            problems.append(
                LayoutProblem(segment.path, f"start offset is not a multiple of the segment size {file_size}")
            )
    return problems


def discover_store(
    root: Path, *, commitlog_size: int | None = None, cq_size: int | None = None
) -> StoreLayout:
    """Find a store's files under `root` (a RocketMQ store root: the directory that holds commitlog/)."""
    root = Path(root)
    problem = why_not_a_store(root)
    if problem is not None:
        raise NotAStore(problem)
    commitlog = scan_segment_dir(root / "commitlog", commitlog_size)
    consume_queues, cq_problems = _scan_consume_queues(root / "consumequeue", cq_size)
    return StoreLayout(
        root=root,
        commitlog=commitlog,
        consume_queues=consume_queues,
        index_files=_index_files(root / "index"),
        checkpoint=_existing(root / "checkpoint"),
        abort_file=_existing(root / "abort"),
        lock_file=_existing(root / "lock"),
        config_dir=root / "config" if (root / "config").is_dir() else None,
        problems=tuple(cq_problems),
    )


def why_not_a_store(root: Path) -> str | None:
    """None when `root` is a store root (a directory that holds commitlog/), else the one line that says why
    it is not one."""
    if not root.is_dir():
        return f"{root}: {'not a directory' if root.exists() else 'does not exist'}"
    return None if (root / "commitlog").is_dir() else _not_a_store_message(root)


def _not_a_store_message(root: Path) -> str:
    nested = (
        sorted(child.name for child in root.iterdir() if (child / "commitlog").is_dir())
        if root.is_dir()
        else []
    )
    hint = f"; did you mean {root / nested[0]}?" if nested else ""
    return f"{root}: not a RocketMQ store (no commitlog/ directory){hint}"


def _scan_consume_queues(cq_root: Path, cq_size: int | None) -> tuple[tuple[ConsumeQueueDir, ...], list]:
    if not cq_root.is_dir():
        return (), []
    queues, problems = [], []
    for topic_dir in sorted(p for p in cq_root.iterdir() if p.is_dir()):
        for queue_dir in sorted(p for p in topic_dir.iterdir() if p.is_dir()):
            if not queue_dir.name.isdigit():
                problems.append(LayoutProblem(queue_dir, "not a queue directory: names are queue ids", False))
                continue
            queue = scan_segment_dir(queue_dir, cq_size)
            queues.append(ConsumeQueueDir(topic_dir.name, int(queue_dir.name), queue))
    queues.sort(key=lambda cq: (cq.topic, cq.queue_id))
    return tuple(queues), problems


def _index_files(index_dir: Path) -> tuple[Path, ...]:
    if not index_dir.is_dir():
        return ()
    return tuple(sorted(p for p in index_dir.iterdir() if p.is_file() and INDEX_FILE_NAME.fullmatch(p.name)))


def _existing(path: Path) -> Path | None:
    return path if path.exists() else None
