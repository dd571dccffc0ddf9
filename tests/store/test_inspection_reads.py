"""What `store segments` and `store stat` read to count ConsumeQueue entries and find where data ends: the
same numbers as walking every entry (`decode_entries`, the ground truth), from a few reads per file, so a
listing costs the same whatever the queues' length."""

from __future__ import annotations

import io
import json
import random
from collections import Counter
from pathlib import Path

import pytest

from mqinspect.render.machine import write_json
from store.config import CQ_STORE_UNIT_SIZE
from store.consume_queue_format import (
    ENTRY,
    FIRST_WINDOW_ENTRIES,
    PRE_BLANK_SIZE,
    count_segment_entries,
    decode_entries,
    iter_segment_entries,
    valid_prefix_length,
)
from store.inspection.rocketmq.cq import consume_queue_view
from store.inspection.rocketmq.segments import EntriesMeasuredBy, WrittenMeasuredBy, list_segments
from store.layout import SegmentFile, discover_store
from store.safe_read import PreadFile


def random_entry(rng: random.Random) -> bytes:
    roll = rng.random()
    if roll < 0.05:
        return ENTRY.pack(0, PRE_BLANK_SIZE, rng.randrange(-5, 5))
    if roll < 0.06:
        return ENTRY.pack(rng.randrange(-(2**63), 0), rng.randrange(1, 100), 0)  # negative offset
    if roll < 0.07:  # sizes zero, negative, or zero in some of their bytes only
        return ENTRY.pack(rng.randrange(2**40), rng.choice([0, -1, -(2**31), 256, 65536, 1 << 24]), 0)
    if roll < 0.08:
        return rng.randbytes(20)
    return ENTRY.pack(rng.randrange(2**40), rng.randrange(1, 2**31), rng.randrange(-(2**63), 2**63))


def test_the_valid_prefix_is_what_decoding_entry_by_entry_finds():
    rng = random.Random(16)
    for _ in range(2000):
        data = b"".join(random_entry(rng) for _ in range(rng.randrange(60))) + rng.randbytes(
            rng.randrange(20)
        )
        walked = list(decode_entries(data))
        assert valid_prefix_length(data) == len(walked)


def test_a_segments_count_is_the_walks_across_read_windows(tmp_path: Path, monkeypatch):
    """Windows of 7 entries (and of 3, 6, 12... when iterating): an invalid entry, a pre-blank or a torn
    entry lands in any window."""
    monkeypatch.setattr("store.consume_queue_format.COUNT_WINDOW_ENTRIES", 7)
    monkeypatch.setattr("store.consume_queue_format.FIRST_WINDOW_ENTRIES", 3)
    rng = random.Random(61)
    for trial in range(200):
        path = tmp_path / f"{trial:020d}"
        entries = [random_entry(rng) for _ in range(rng.randrange(40))]
        path.write_bytes(b"".join(entries) + rng.randbytes(rng.randrange(20)))
        [segment] = discover_store_segment(path)
        walked = list(decode_entries(path.read_bytes()))
        counted = count_segment_entries(segment)
        assert (counted.valid, counted.pre_blanks) == (len(walked), sum(e.is_pre_blank for e in walked))
        assert list(iter_segment_entries(segment)) == walked


def discover_store_segment(path: Path) -> list[SegmentFile]:
    stat = path.stat()
    return [SegmentFile(path, 0, stat.st_size, stat.st_mtime)]


def built_queue_store(make_store, count: int = 60):
    """One queue of `count` messages, 8 entries per ConsumeQueue file: 7 full files and a last partial one."""
    builder = make_store(segment_size=64 * 1024, cq_entries_per_file=8)
    for number in range(count):
        builder.add("Orders", f"order-{number}", keys=f"k{number}")
    return builder.build()


class ReadSpy:
    """Bytes read with PreadFile, by file name."""

    def __init__(self, monkeypatch):
        self.bytes_by_file: Counter[str] = Counter()
        original = PreadFile.read

        def read(file: PreadFile, offset: int, length: int) -> bytes:
            data = original(file, offset, length)
            self.bytes_by_file[str(file.path)] += len(data)
            return data

        monkeypatch.setattr(PreadFile, "read", read)


def test_segments_counts_a_queues_full_files_by_their_ends_and_reads_only_those(make_store, monkeypatch):
    built = built_queue_store(make_store)
    queue = discover_store(built.root).consume_queue("Orders", 0).queue
    spy = ReadSpy(monkeypatch)
    rows = [row for row in list_segments(built.root).rows if row.kind == "consumequeue"]
    assert [row.entry_count for row in rows] == [8] * 7 + [4]  # ground truth: 60 messages, 8 a file
    assert [row.entries_measured_by for row in rows] == [EntriesMeasuredBy.FULL_FILE_ENDS] * 7 + [
        EntriesMeasuredBy.ENTRY_WALK
    ]
    # the first entry and the last slot, nothing between (the first file is read from its start too: the
    # queue's min offset is its first entry whose record the CommitLog still holds)
    for segment in queue.segments[1:-1]:
        assert spy.bytes_by_file[str(segment.path)] == 2 * CQ_STORE_UNIT_SIZE


def test_segments_counts_a_queues_last_file_once(make_store, monkeypatch):
    """The row's count of the last file also says where the queue's last entry is: the newest dispatched
    record (where the CommitLog's walk starts) costs that one entry, not a second count of the file."""
    built = built_queue_store(make_store)
    last = discover_store(built.root).consume_queue("Orders", 0).queue.segments[-1]
    spy = ReadSpy(monkeypatch)
    listing = list_segments(built.root)
    assert spy.bytes_by_file[str(last.path)] == last.size_bytes + CQ_STORE_UNIT_SIZE
    [commitlog] = [row for row in listing.rows if row.kind == "commitlog"]
    assert commitlog.written_measured_by is WrittenMeasuredBy.WALK_AFTER_DISPATCHED
    assert commitlog.written_bytes == built.records[-1].physical_offset + built.records[-1].size_bytes


@pytest.mark.parametrize("damage", ["last-slot-zeroed", "first-entry-pre-blank", "middle-entry-zeroed"])
def test_a_full_file_that_is_not_full_by_its_ends_is_counted_entry_by_entry(make_store, damage: str):
    built = built_queue_store(make_store)
    second = discover_store(built.root).consume_queue("Orders", 0).queue.segments[1].path
    data = bytearray(second.read_bytes())
    if damage == "last-slot-zeroed":
        data[-CQ_STORE_UNIT_SIZE:] = bytes(CQ_STORE_UNIT_SIZE)
    elif damage == "first-entry-pre-blank":
        data[:CQ_STORE_UNIT_SIZE] = ENTRY.pack(0, PRE_BLANK_SIZE, 0)
    else:
        data[3 * CQ_STORE_UNIT_SIZE : 4 * CQ_STORE_UNIT_SIZE] = bytes(CQ_STORE_UNIT_SIZE)
    second.write_bytes(bytes(data))
    row = next(row for row in list_segments(built.root).rows if row.path == second)
    walked = [entry for entry in decode_entries(bytes(data)) if not entry.is_pre_blank]
    if damage == "middle-entry-zeroed":  # what the two ends cannot see: verify's to find
        assert (row.entry_count, row.entries_measured_by) == (8, EntriesMeasuredBy.FULL_FILE_ENDS)
        assert len(walked) == 3
    else:
        assert (row.entry_count, row.entries_measured_by) == (len(walked), EntriesMeasuredBy.ENTRY_WALK)


def test_the_end_of_data_is_found_past_many_kib_of_zeros(tmp_path: Path):
    """A full segment's blank can be followed by a batch's worth of zeros (70 KiB): several search chunks."""
    rng = random.Random(7)
    for trial in range(50):
        path = tmp_path / f"file{trial}"
        data = rng.randbytes(rng.randrange(1, 5000)) + bytes(rng.randrange(0, 200_000))
        path.write_bytes(data)
        with PreadFile(path) as file:
            assert file.end_of_nonzero_data() == len(data.rstrip(b"\0"))


def test_json_output_is_written_in_few_writes_and_reads_as_before():
    """`--format json` of a listing with many rows: json.dump wrote every key and comma with a call of its
    own (890,000 writes for 1,537 files); the text is the same as json.dumps gives."""
    listing = {
        "rows": [{"name": f"{n:020d}", "size_bytes": n, "chunks": list(range(16))} for n in range(2000)]
    }

    class CountingStream(io.StringIO):
        writes = 0

        def write(self, text: str) -> int:
            CountingStream.writes += 1
            return super().write(text)

    stream = CountingStream()
    write_json(listing, stream)
    assert stream.getvalue() == json.dumps(listing, indent=2, ensure_ascii=False) + "\n"
    assert CountingStream.writes <= 20


def test_cq_reads_the_window_it_prints_not_the_files_before_or_around_it(make_store, monkeypatch):
    """`store cq --from 700 -n 5` on a queue of four 512-entry files: the first file's first window (the
    queue's min), one window at entry 700, the last file counted (the queue's max), nothing else."""
    builder = make_store(segment_size=256 * 1024, cq_entries_per_file=512)
    placed = [builder.add("Orders", f"order-{number}") for number in range(1600)]
    built = builder.build()
    layout = discover_store(built.root)
    files = layout.consume_queue("Orders", 0).queue.segments
    spy = ReadSpy(monkeypatch)
    view = consume_queue_view(layout, "Orders", 0, 700, 5)
    assert (view.min_offset, view.max_offset) == (0, 1600)
    assert [entry.physical_offset for entry in view.entries] == [p.physical_offset for p in placed[700:705]]
    window = FIRST_WINDOW_ENTRIES * CQ_STORE_UNIT_SIZE
    read = [spy.bytes_by_file[str(segment.path)] for segment in files]
    assert read[0] <= window and read[1] <= window and read[2] == 0
    assert read[3] == files[3].size_bytes  # once, in one window: a C pass counts its valid entries
