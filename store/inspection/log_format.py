"""What one on-disk log format provides to the inspection that works on any format: `LogFormat`.

`store stat`, `store segments` (with the page-cache residency of a store's files) and `trace --store` never
look at a format's files themselves. They ask `store.inspection.formats` which format a path holds, and that
format's LogFormat answers. RocketMQ-format stores are the one format today (`store.inspection.rocketmq`);
the format is what knows how its segments are found and named, how a record is decoded and checked, and
which index files exist. (The dashboard's store side, `mqinspect top`, still reads a RocketMQ layout itself:
it is the one consumer not yet behind this seam.)

What a second format (Kafka log directories, say) provides, and all it has to provide:

1. A package beside `rocketmq/` that reads the format's files read-only, with pread and never mmap (a file its
   owner truncates must end a read early, never raise SIGBUS), and whose public functions raise
   `StoreChanged` when a file listed a moment ago vanishes (wrap them in `vanishing_files_are_store_changes`).
2. A LogFormat subclass in that package, listed once in `store.inspection.formats.FORMATS`. Its members:
   - `name` and `title`: how JSON and messages name the format ("rocketmq", "RocketMQ-format store").
   - `recognises(path)`: whether a directory (or a single data file) is laid out as this format's, from
     names alone; `why_not(path)`: the one line that says what was looked for when it is not. A path no
     format recognises is bad input (exit 2) with each format's line.
   - `store_files(root)`: how segments are found and named, and which index files exist: every data and
     index file, from names and sizes alone (nothing is read, so residency is measured before any read
     can bring pages in), each with its kind and the label tables and traced events show it by.
     `store segments` measures residency of these files, and `trace --store` names events with them.
   - `store_directories(root)`: the directories the format's new files appear in, so that `trace --store`
     takes each new segment for the store's from its creation (`StoreDirectories`).
   - `file_kind(relative_path)`: the kind of a file known only by its path under the root (a segment
     deleted while a process still maps it), or None when that path is not one of the format's files.
   - `list_segments(root)` and `stat(root)`: the snapshots behind `store segments` and `store stat`, where
     records are decoded and checked the format's own way (a CommitLog segment's written bytes, the end of
     the log). They are the format's own dataclasses, drawn by renderers for them in `mqinspect/render`.
   Every member but these two needs names and directories only, and the format's module imports no more:
   trace and residency import every format, and must not load its decoders at start-up.
Nothing else changes for a new format: `formats.py` dispatches each question to the format that
recognised the path, and the callers (the CLI's `stat` and `segments`, residency, `trace --store`) only
ever call `formats.py`.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, ParamSpec, TypeVar

from store.errors import StoreError

P = ParamSpec("P")
R = TypeVar("R")


class StoreChanged(StoreError):
    """A file vanished between listing the store and reading it: its owner deleted, rolled or replaced it."""


def vanishing_files_are_store_changes(function: Callable[P, R]) -> Callable[P, R]:
    """Turn "No such file" for a file we listed a moment ago into StoreChanged: on a live store that is
    retention or a roll, not a user error, and running again sees the new state."""

    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return function(*args, **kwargs)
        except FileNotFoundError as error:
            raise StoreChanged(
                f"{error.filename}: vanished while being read (the store changed; run again)"
            ) from error

    return wrapper


@dataclass(frozen=True)
class StoreFile:
    """One data or index file of a store, as its format names it."""

    path: Path
    label: str  # the name tables and traced events show: its path under the store root
    kind: str  # what it holds, in the format's words: "commitlog", "consumequeue", "index"


@dataclass(frozen=True)
class StoreDirectories:
    """Where a store's new files appear, for a tracer that takes each one for the store's from its creation.

    A new file in one of `files_in` is the store's; a new directory in one of `directories_in` is one more
    of `files_in`; a new directory in one of `parents_in` is one more of `directories_in`. A directory
    may not exist yet (a store's first index file creates index/). The first of `files_in` holds the log's
    data (a RocketMQ store's commitlog/): its filesystem is the one a tracer checks for creation events."""

    files_in: tuple[Path, ...]
    directories_in: tuple[Path, ...] = ()
    parents_in: tuple[Path, ...] = ()


class LogFormat(ABC):
    """One on-disk log format, as the format-neutral inspection sees it (see the module docstring)."""

    name: ClassVar[str]
    title: ClassVar[str]

    @abstractmethod
    def recognises(self, path: Path) -> bool:
        """Whether `path` is one of this format's stores (or a data file of one), from names alone."""

    @abstractmethod
    def why_not(self, path: Path) -> str:
        """One line: why `path` is not one of this format's stores, and what was looked for."""

    @abstractmethod
    def store_files(self, root: Path) -> tuple[StoreFile, ...]:
        """Every data and index file, in the order `store segments` lists them; nothing is read."""

    @abstractmethod
    def store_directories(self, root: Path) -> StoreDirectories:
        """The directories new files of the store appear in."""

    @abstractmethod
    def file_kind(self, relative_path: str) -> str | None:
        """The kind of the file at `relative_path` under a store root, None if not one of this format's."""

    @abstractmethod
    def list_segments(self, root: Path) -> Any:
        """The `store segments` snapshot: one row per file of `store_files`, in that order."""

    @abstractmethod
    def stat(self, root: Path) -> Any:
        """The `store stat` snapshot: the store at a glance."""
