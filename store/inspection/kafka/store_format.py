"""Kafka's log format as the format-neutral inspection sees it: `KAFKA`, the LogFormat of any of three paths:

- a `log.dirs` root: it has meta.properties, or `topic-N` directories holding segment files;
- a partition directory: `topic-N` holding segment files (`.log`, `.index`, ...);
- one `.log` segment file (its sibling index files with the same base offset go with it).

Files are found and named by store.kafka.layout, from names alone. A file is labelled by its path under the
log dir, the partition directory's name first ("foo-0/00000000000000000000.log") whatever the path given,
so a partition's files are named alike from its log dir and from itself.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from store.inspection.kafka.target import (
    FILE_KIND_NAMES,
    TargetKind,
    has_partitions,
    is_segment_log,
    kafka_store_files,
    kafka_target,
)
from store.inspection.log_format import LogFormat, StoreDirectories, StoreFile
from store.kafka.layout import (
    is_log_dir,
    is_partition_dir,
    parse_file_name,
    parse_partition_dir,
)

if TYPE_CHECKING:
    from store.inspection.kafka.segments import KafkaSegmentListing
    from store.inspection.kafka.stat import KafkaStoreStat


class KafkaFormat(LogFormat):
    name = "kafka"
    title = "Kafka log directory"

    def recognises(self, path: Path) -> bool:
        path = Path(path)
        if path.is_file():
            return is_segment_log(path)
        if not path.is_dir():
            return False
        return is_log_dir(path) or is_partition_dir(path) or has_partitions(path)

    def why_not(self, path: Path) -> str:
        path = Path(path)
        if not path.exists():
            return f"{path}: does not exist"
        if path.is_file():
            return f"{path}: not a Kafka segment file (looked for a 20-digit base offset and .log)"
        return (
            f"{path}: not a Kafka log directory (looked for meta.properties, topic-N directories holding "
            "segment files, or a 20-digit .log segment file)"
        )

    def store_files(self, root: Path) -> tuple[StoreFile, ...]:
        return kafka_store_files(root)

    def store_directories(self, root: Path) -> StoreDirectories:
        """New segments appear in each partition directory, new partitions as directories of the log dir."""
        target = kafka_target(root)
        if target.kind != TargetKind.LOG_DIR:
            return StoreDirectories(files_in=(target.segment.parent if target.segment else target.path,))
        return StoreDirectories(
            files_in=target.partitions or (target.path,),  # not the root: its checkpoints are no segments
            directories_in=(target.path,),
        )

    def file_kind(self, relative_path: str) -> str | None:
        """`topic-N/<offset>.<suffix>` (or the file name alone) names a segment or snapshot file."""
        directory, _, name = relative_path.rpartition("/")
        if directory and (os.sep in directory or "/" in directory or parse_partition_dir(directory) is None):
            return None
        parsed = parse_file_name(name)
        return FILE_KIND_NAMES[parsed.kind] if parsed is not None else None

    # The snapshots are imported when asked for: residency and trace --store need only the names above.

    def list_segments(self, root: Path) -> KafkaSegmentListing:
        from store.inspection.kafka.segments import list_segments

        return list_segments(root)

    def stat(self, root: Path) -> KafkaStoreStat:
        from store.inspection.kafka.stat import kafka_stat

        return kafka_stat(root)


KAFKA = KafkaFormat()
