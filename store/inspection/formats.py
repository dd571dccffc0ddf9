"""The log formats mqinspect reads (`FORMATS`), which one a path holds (`detect_format`), and the inspection
every format answers, for callers that must work on any of them.

`store stat` and `store segments`, the residency of a store's files and `trace --store` call the functions
here and nothing of a format's own modules, so a format added to FORMATS is served by all of them unchanged.
What a format provides is in store.inspection.log_format (LogFormat).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from store.errors import NotAStore
from store.inspection.kafka.store_format import KAFKA
from store.inspection.log_format import LogFormat, StoreDirectories, StoreFile
from store.inspection.rocketmq.store_format import ROCKETMQ

FORMATS: tuple[LogFormat, ...] = (ROCKETMQ, KAFKA)


def detect_format(path: Path) -> LogFormat:
    """The format whose store (or data file) `path` is; NotAStore, with each format's reason, when none."""
    path = Path(path)
    for log_format in FORMATS:
        if log_format.recognises(path):
            return log_format
    reasons = dict.fromkeys(log_format.why_not(path) for log_format in FORMATS)  # "does not exist" once
    raise NotAStore("; ".join(reasons))


def store_stat(root: Path) -> Any:
    """The store at a glance, as its format summarises it."""
    return detect_format(root).stat(Path(root))


def list_segments(root: Path) -> Any:
    """One row per data and index file of the store, in `store_files` order."""
    return detect_format(root).list_segments(Path(root))


def store_files(root: Path) -> tuple[StoreFile, ...]:
    """Every data and index file of the store, labelled and of a kind; found without reading any of them."""
    return detect_format(root).store_files(Path(root))


def store_file_paths(root: Path) -> tuple[Path, ...]:
    """The paths of `store_files`: whose residency `store segments` measures before it reads anything."""
    return tuple(file.path for file in store_files(root))


def store_directories(root: Path) -> StoreDirectories:
    """Where the store's new files appear (for following them from their creation)."""
    return detect_format(root).store_directories(Path(root))
