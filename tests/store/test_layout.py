"""Store discovery and RocketMQ's load rules, on the rocketmq-rust fixture and on hand-made directories."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from store.consume_queue_format import PRE_BLANK_SIZE, iter_entries, queue_bounds
from store.errors import NotAStore, StoreLayoutError
from store.layout import discover_store, offset_to_file_name, scan_segment_dir


def test_fixture_layout_takes_sizes_from_the_files(rust_store: Path):
    layout = discover_store(rust_store)
    assert [s.file_from_offset for s in layout.commitlog.segments] == [0]
    assert layout.commitlog.file_size == 4096
    assert layout.topics == ("V1UpgradeTopic",)
    queue = layout.consume_queue("V1UpgradeTopic", 0)
    assert queue is not None and queue.queue.file_size == 200
    assert [p.name for p in layout.index_files] == ["20260815011551705"]
    assert layout.checkpoint == rust_store / "checkpoint"
    assert layout.problems == () and layout.commitlog.problems == ()


def test_the_fixture_consume_queue_has_both_entries(rust_store: Path):
    queue = discover_store(rust_store).consume_queue("V1UpgradeTopic", 0).queue
    entries = list(iter_entries(queue))
    assert [(e.queue_offset, e.physical_offset, e.size_bytes) for e in entries] == [
        (0, 0, 141),
        (1, 141, 141),
    ]
    assert queue_bounds(queue) == (0, 2)


def test_not_a_store_points_to_the_nested_store(rust_store: Path):
    with pytest.raises(NotAStore, match=r"did you mean .*local-file"):
        discover_store(rust_store.parent)
    with pytest.raises(NotAStore, match="not a directory"):
        discover_store(rust_store / "checkpoint")


def _segments(directory: Path, *files: tuple[int, int]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for offset, size in files:
        with open(directory / offset_to_file_name(offset), "wb") as handle:
            handle.truncate(size)
    return directory


def test_a_gap_between_segments_is_refused(tmp_path: Path):
    queue = scan_segment_dir(_segments(tmp_path / "commitlog", (0, 1024), (2048, 1024)))
    with pytest.raises(StoreLayoutError, match=r"00000000000000002048: starts at 2048.*ends at 1024"):
        queue.require_valid()


def test_a_wrong_size_is_refused_and_a_foreign_file_is_named(tmp_path: Path):
    directory = _segments(tmp_path / "commitlog", (0, 1024), (1024, 1000))
    with pytest.raises(StoreLayoutError, match="size 1000 does not match the segment size 1024"):
        scan_segment_dir(directory).require_valid()
    (directory / "00000000000000001024").unlink()
    (directory / "notes.txt").write_text("hello")
    with pytest.raises(StoreLayoutError, match=r"notes\.txt: not a segment"):
        scan_segment_dir(directory).require_valid()


def test_an_empty_last_file_is_tolerated_but_reported(tmp_path: Path):
    queue = scan_segment_dir(_segments(tmp_path / "commitlog", (0, 1024), (1024, 0)))
    assert queue.require_valid().file_size == 1024
    assert [p.fatal for p in queue.problems] == [False]


def _cq_file(directory: Path, first_entry: int, entries: list[tuple[int, int, int]], per_file: int) -> None:
    data = b"".join(struct.pack(">qiq", *entry) for entry in entries).ljust(per_file * 20, b"\0")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / offset_to_file_name(first_entry * 20)).write_bytes(data)


def test_consume_queue_reads_across_files_and_skips_pre_blank_slots(tmp_path: Path):
    directory = tmp_path / "consumequeue" / "T" / "3"
    pre_blank = (0, PRE_BLANK_SIZE, 0)
    _cq_file(directory, 0, [pre_blank, pre_blank, (100, 10, 7), (110, 10, 7)], per_file=4)
    _cq_file(directory, 4, [(120, 10, 7), (130, 10, 7)], per_file=4)
    queue = scan_segment_dir(directory)
    assert [e.queue_offset for e in iter_entries(queue)] == [2, 3, 4, 5]
    assert [e.physical_offset for e in iter_entries(queue, 3)] == [110, 120, 130]
    assert queue_bounds(queue) == (2, 6)
