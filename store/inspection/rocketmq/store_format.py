"""RocketMQ's store format as the format-neutral inspection sees it: `ROCKETMQ`, the LogFormat of a store root
(the directory that holds commitlog/, as `storePathRootDir`).

Its files are found and named by store.layout: CommitLog segments and ConsumeQueue files are named by the
20-digit offset they start at, index files by the 17-digit time they were created. A file is labelled by its
path under the root ("commitlog/00000000001073741824", "consumequeue/TopicA/0/00000000000000000000",
"index/20240501120000000"), which is how traced events name it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from store.inspection.log_format import LogFormat, StoreDirectories, StoreFile
from store.layout import (
    INDEX_FILE_NAME,
    SEGMENT_NAME,
    SegmentKind,
    SegmentQueue,
    discover_store,
    why_not_a_store,
)

if TYPE_CHECKING:
    from store.inspection.rocketmq.segments import SegmentListing
    from store.inspection.rocketmq.store_stat import StoreStat

_FILE_SHAPES = (
    (SegmentKind.COMMITLOG, re.compile(f"commitlog/{SEGMENT_NAME.pattern}")),
    (SegmentKind.CONSUMEQUEUE, re.compile(f"consumequeue/[^/]+/[0-9]+/{SEGMENT_NAME.pattern}")),
    (SegmentKind.INDEX, re.compile(f"index/{INDEX_FILE_NAME.pattern}")),
)


class RocketMQFormat(LogFormat):
    name = "rocketmq"
    title = "RocketMQ-format store"

    def recognises(self, path: Path) -> bool:
        return why_not_a_store(Path(path)) is None

    def why_not(self, path: Path) -> str:
        return why_not_a_store(Path(path)) or f"{path}: a {self.title}"

    def store_files(self, root: Path) -> tuple[StoreFile, ...]:
        """The CommitLog's segments, then each ConsumeQueue's files by topic and queue, then index files."""
        layout = discover_store(Path(root))
        files = _queue_files(layout.commitlog, "commitlog", SegmentKind.COMMITLOG)
        for cq in layout.consume_queues:
            files += _queue_files(
                cq.queue, f"consumequeue/{cq.topic}/{cq.queue_id}", SegmentKind.CONSUMEQUEUE
            )
        files += [
            StoreFile(path, f"index/{path.name}", SegmentKind.INDEX.value) for path in layout.index_files
        ]
        return tuple(files)

    def store_directories(self, root: Path) -> StoreDirectories:
        """New CommitLog segments appear in commitlog/, index files in index/, ConsumeQueue files in
        consumequeue/TOPIC/QUEUE/, and a new topic or queue as a directory in consumequeue/ or under it."""
        root = Path(root)
        queue_root = root / "consumequeue"
        topics = _subdirectories(queue_root)
        queues = [queue for topic in topics for queue in _subdirectories(topic)]
        return StoreDirectories(
            files_in=(root / "commitlog", root / "index", *queues),
            directories_in=tuple(topics),
            parents_in=(queue_root,),
        )

    def file_kind(self, relative_path: str) -> str | None:
        return next((kind.value for kind, shape in _FILE_SHAPES if shape.fullmatch(relative_path)), None)

    # The snapshots are imported when asked for: residency and trace --store need only the file names above,
    # and must not pay for the decoders at start-up.

    def list_segments(self, root: Path) -> SegmentListing:
        from store.inspection.rocketmq.segments import list_segments

        return list_segments(root)

    def stat(self, root: Path) -> StoreStat:
        from store.inspection.rocketmq.store_stat import store_stat

        return store_stat(root)


ROCKETMQ = RocketMQFormat()


def _queue_files(queue: SegmentQueue, prefix: str, kind: SegmentKind) -> list[StoreFile]:
    return [
        StoreFile(segment.path, f"{prefix}/{segment.path.name}", kind.value) for segment in queue.segments
    ]


def _subdirectories(directory: Path) -> list[Path]:
    try:
        return [Path(entry.path) for entry in os.scandir(directory) if entry.is_dir(follow_symlinks=False)]
    except OSError:  # not there (yet), or deleted while we looked
        return []
