"""ConsumeQueue: per topic and queue, the 20-byte index of the CommitLog that consumers read through
(`ConsumeQueue.java`, `ConsumeQueueStore.java`). The entry format lives in `consume_queue_format`."""

from __future__ import annotations

import bisect
import functools
import itertools
import logging
import operator
import struct
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from store.config import CQ_STORE_UNIT_SIZE, StoreConfig
from store.consume_queue_format import ENTRY, PRE_BLANK_SIZE, ConsumeQueueEntry
from store.mapped_file import MappedFile
from store.mapped_file_queue import MappedFileQueue
from store.recovery import erase_after

log = logging.getLogger(__name__)
_PRE_BLANK = ENTRY.pack(0, PRE_BLANK_SIZE, 0)


class ConsumeQueue:
    """One `consumequeue/<topic>/<queueId>/` directory. One dispatcher thread writes; any thread reads."""

    def __init__(self, store_root: Path, topic: str, queue_id: int, config: StoreConfig):
        self.topic = topic
        self.queue_id = queue_id
        self.file_size = config.mapped_file_size_consume_queue
        directory = Path(store_root) / "consumequeue" / topic / str(queue_id)
        self.mapped_file_queue = MappedFileQueue(directory, self.file_size)
        self.max_physic_offset = -1  # end (offset + size) of the newest entry's record
        self.min_logic_offset = 0  # byte offset of the first real entry

    def load(self) -> None:
        self.mapped_file_queue.load()

    # ---- recovery ---------------------------------------------------------------------------------

    def cut(self, end_queue_offset: int) -> int:
        """Recovery's verdict (`store.recovery`): the queue ends before `end_queue_offset`. Later files are
        deleted, and the cut entries are zeroed on disk and flushed, so that neither a reader of the files
        nor a later recovery takes them for live ones. Returns the bytes zeroed."""
        end = end_queue_offset * CQ_STORE_UNIT_SIZE
        queue = self.mapped_file_queue
        queue.flushed_where = queue.committed_where = end
        queue.truncate_dirty_files(end)
        self.max_physic_offset = self._entry_end(end - CQ_STORE_UNIT_SIZE)
        last = queue.last_file
        return 0 if last is None else erase_after(last.path, last.fileno(), last.wrote_position)

    def _entry_end(self, position: int) -> int:
        """The end of the record the entry at byte `position` names; -1 for none (or a pre-blank slot)."""
        mapped_file = self.mapped_file_queue.find_by_offset(position) if position >= 0 else None
        view = (
            mapped_file.select(position - mapped_file.file_from_offset, CQ_STORE_UNIT_SIZE)
            if mapped_file
            else None
        )
        if view is None:
            return -1
        with view:
            entry = ConsumeQueueEntry(position // CQ_STORE_UNIT_SIZE, *ENTRY.unpack(view))
        return entry.physical_offset + entry.size_bytes if entry.names_a_record else -1

    # ---- writing (the dispatcher) ------------------------------------------------------------------

    def put_message_position_info(
        self, physical_offset: int, size: int, tags_code: int, queue_offset: int
    ) -> bool:
        """Append the entry for queue offset `queue_offset`; True when it is in place (now or before)."""
        if physical_offset + size <= self.max_physic_offset:
            return True  # already built: recovery re-dispatches what may already be indexed
        expected = queue_offset * CQ_STORE_UNIT_SIZE
        mapped_file = self.mapped_file_queue.get_last_file(expected, create=True)
        if (
            mapped_file.wrote_position == 0
            and queue_offset
            and mapped_file is self.mapped_file_queue.first_file
        ):
            self._fill_pre_blank(mapped_file, expected)
        current = mapped_file.file_from_offset + mapped_file.wrote_position
        if expected < current:
            log.warning(
                "%s-%d: build consume queue repeatedly at %d", self.topic, self.queue_id, queue_offset
            )
            return True
        if expected != current:
            log.warning(
                "%s-%d: queue offset %d lands at %d: logic queue order may be wrong",
                self.topic,
                self.queue_id,
                queue_offset,
                current // CQ_STORE_UNIT_SIZE,
            )
        self.max_physic_offset = physical_offset + size
        return mapped_file.append(ENTRY.pack(physical_offset, size, tags_code)) is not None

    def put_positions(
        self,
        queue_offsets: Sequence[int],
        physical_offsets: Sequence[int],
        sizes: int | Sequence[int],
        tags_codes: Sequence[int],
    ) -> None:
        """`put_message_position_info` for a run of back-to-back records (`sizes`: one size for all, or each
        one's): the entries that follow the queue's end write as one block per file; any other entry goes
        through the one-entry path."""
        uniform = isinstance(sizes, int)
        # Entries already built (recovery re-dispatches); the records' ends only grow.
        if uniform:
            row = bisect.bisect_right(physical_offsets, self.max_physic_offset - sizes)
        else:
            row = bisect.bisect_right(
                list(map(operator.add, physical_offsets, sizes)), self.max_physic_offset
            )
        count = len(physical_offsets)
        while row < count:
            expected = queue_offsets[row] * CQ_STORE_UNIT_SIZE
            mapped_file = self.mapped_file_queue.get_last_file(expected, create=True)
            current = mapped_file.file_from_offset + mapped_file.wrote_position
            room = (mapped_file.file_size - mapped_file.wrote_position) // CQ_STORE_UNIT_SIZE
            take = _consecutive(queue_offsets, row, min(count, row + room))
            if expected != current or mapped_file.wrote_position == 0 or not take:
                self.put_message_position_info(
                    physical_offsets[row],
                    sizes if uniform else sizes[row],
                    tags_codes[row],
                    queue_offsets[row],
                )
                row += 1
                continue
            stop = row + take
            block = _entries_block(physical_offsets, sizes, tags_codes, row, stop)
            self.max_physic_offset = physical_offsets[stop - 1] + (sizes if uniform else sizes[stop - 1])
            mapped_file.append(block)
            row = stop

    def _fill_pre_blank(self, mapped_file: MappedFile, expected: int) -> None:
        """`fillPreBlank`: a queue whose first file starts mid-file gets placeholder entries before it."""
        self.min_logic_offset = expected
        self.mapped_file_queue.flushed_where = self.mapped_file_queue.committed_where = expected
        blanks = (expected - mapped_file.file_from_offset) // CQ_STORE_UNIT_SIZE
        mapped_file.append_batch([_PRE_BLANK] * blanks)

    # ---- reading ------------------------------------------------------------------------------------

    @property
    def min_offset_in_queue(self) -> int:
        return self.min_logic_offset // CQ_STORE_UNIT_SIZE

    @property
    def max_offset_in_queue(self) -> int:
        """The next queue offset to be written."""
        return self.mapped_file_queue.max_offset // CQ_STORE_UNIT_SIZE

    @property
    def first_offset_on_disk(self) -> int:
        """The queue offset of the first entry of the oldest file still present (retention deletes files)."""
        first = self.mapped_file_queue.first_file
        return first.file_from_offset // CQ_STORE_UNIT_SIZE if first is not None else self.max_offset_in_queue

    def entries(self, from_queue_offset: int, max_count: int) -> Iterator[tuple[int, int, int, int]]:
        """(queue offset, physical offset, size, tags code) from `from_queue_offset`, at most `max_count`."""
        for queue_offset, block in self.entry_blocks(from_queue_offset, max_count):
            with block:
                # Unpack a slice: a caller that stops early leaves the iterator holding the slice, not
                # `block`, so `block` can still be released.
                for number, entry in enumerate(ENTRY.iter_unpack(block[:]), queue_offset):
                    yield (number, *entry)

    def entry_blocks(self, from_queue_offset: int, max_count: int) -> Iterator[tuple[int, memoryview]]:
        """What `entries` yields, one block per file: (queue offset of the block's first entry, a read-only
        view of its whole 20-byte entries), for readers that unpack a block in one call
        (`ENTRY.iter_unpack`). The caller releases each view (`with view:`)."""
        queue_offset = max(from_queue_offset, self.min_offset_in_queue, self.first_offset_on_disk)
        while max_count > 0:
            start = queue_offset * CQ_STORE_UNIT_SIZE
            mapped_file = self.mapped_file_queue.find_by_offset(start)
            if mapped_file is None:
                return
            position = start - mapped_file.file_from_offset
            count = min((mapped_file.read_position - position) // CQ_STORE_UNIT_SIZE, max_count)
            if count <= 0:
                return
            view = mapped_file.select(position, count * CQ_STORE_UNIT_SIZE)
            if view is None:
                return
            yield queue_offset, view
            queue_offset += count
            max_count -= count

    def correct_min_offset(self, commitlog_min_offset: int) -> None:
        """`correctMinOffset`: the first entry whose record the CommitLog still holds becomes the minimum.

        The scan starts at the oldest file still present, not at the old minimum, which may lie in a file
        that retention just deleted."""
        self.min_logic_offset = 0
        for queue_offset, physical_offset, size, _tags in self.entries(self.first_offset_on_disk, 1 << 62):
            if size != PRE_BLANK_SIZE and physical_offset >= commitlog_min_offset:
                self.min_logic_offset = queue_offset * CQ_STORE_UNIT_SIZE
                return
        self.min_logic_offset = self.mapped_file_queue.max_offset

    def delete_expired_files(self, commitlog_min_offset: int) -> int:
        """Delete files whose every entry points below the CommitLog's minimum offset."""
        deleted = self.mapped_file_queue.delete_expired_by_offset(
            commitlog_min_offset, CQ_STORE_UNIT_SIZE, lambda last: ENTRY.unpack_from(last)[0]
        )
        self.correct_min_offset(commitlog_min_offset)
        return deleted

    def flush(self, least_pages: int) -> bool:
        return self.mapped_file_queue.flush(least_pages)

    def close(self) -> None:
        self.mapped_file_queue.close()


def _entries_block(
    physical_offsets: Sequence[int],
    sizes: int | Sequence[int],
    tags_codes: Sequence[int],
    row: int,
    stop: int,
) -> bytes:
    """The entries of rows `row` to `stop`, packed: records back to back with one size and tags code (a
    producer's batch, physical offsets as a range) from a cached block, others by one struct.pack."""
    take = stop - row
    if (
        take <= _CACHED_BLOCK_ENTRIES
        and isinstance(physical_offsets, range)
        and physical_offsets.step == sizes
        and tags_codes[row:stop].count(tags_codes[row]) == take
    ):
        from_zero, offset_fields = _back_to_back_entries(take, sizes, tags_codes[row])
        return (from_zero + physical_offsets[row] * offset_fields).to_bytes(take * CQ_STORE_UNIT_SIZE, "big")
    # interleaved physical offset, size, tags code: slices fill it in C
    fields = [sizes] * (3 * take) if isinstance(sizes, int) else [0] * (3 * take)
    fields[0::3] = physical_offsets[row:stop]
    if not isinstance(sizes, int):
        fields[1::3] = sizes[row:stop]
    fields[2::3] = tags_codes[row:stop]
    return entries_struct(take).pack(*fields)


_CACHED_BLOCK_ENTRIES = 1024  # 64 cached blocks of at most 1,024 entries: under 3 MiB


@functools.lru_cache(maxsize=64)
def _back_to_back_entries(count: int, size: int, tags_code: int) -> tuple[int, int]:
    """`count` entries of records of `size` bytes back to back from physical offset 0, with one tags code,
    as one big-endian integer; and the integer with a 1 in each entry's physical-offset field. The block
    for records starting at `p` is the first plus `p` times the second: each offset field only grows by `p`
    and stays below 2**63, so nothing carries into a neighbouring field."""
    from_zero = entries_struct(count).pack(*itertools.chain.from_iterable(
        (offset, size, tags_code) for offset in range(0, count * size, size)
    ))  # fmt: skip
    ones = entries_struct(count).pack(*[1, 0, 0] * count)
    return int.from_bytes(from_zero, "big"), int.from_bytes(ones, "big")


def _consecutive(queue_offsets: Sequence[int], start: int, stop: int) -> int:
    """How many queue offsets from `start` (before `stop`) count up one by one."""
    if isinstance(queue_offsets, range) and queue_offsets.step == 1:
        return max(0, stop - start)
    first = queue_offsets[start]
    wanted = range(first, first + stop - start)
    if list(queue_offsets[start:stop]) == list(wanted):
        return len(wanted)
    pairs = zip(queue_offsets[start:stop], wanted, strict=False)
    return next(taken for taken, (have, want) in enumerate(pairs) if have != want)


@functools.lru_cache(maxsize=64)
def entries_struct(count: int) -> struct.Struct:
    """`count` entries back to back: a block of them packed or unpacked by one call."""
    return struct.Struct(">" + ENTRY.format.lstrip(">") * count)


class ConsumeQueueStore:
    """All consume queues of a store, created on first use (`findOrCreateConsumeQueue`)."""

    def __init__(self, store_root: Path, config: StoreConfig):
        self.store_root = Path(store_root)
        self.config = config
        self._queues: dict[tuple[str, int], ConsumeQueue] = {}
        self._lock = threading.Lock()

    def load(self) -> None:
        root = self.store_root / "consumequeue"
        if not root.is_dir():
            return
        for topic_dir in sorted(p for p in root.iterdir() if p.is_dir()):
            for queue_dir in sorted(p for p in topic_dir.iterdir() if p.is_dir() and p.name.isdigit()):
                queue = ConsumeQueue(self.store_root, topic_dir.name, int(queue_dir.name), self.config)
                queue.load()
                self._queues[(queue.topic, queue.queue_id)] = queue

    @property
    def queues(self) -> tuple[ConsumeQueue, ...]:
        return tuple(self._queues.values())

    def find(self, topic: str, queue_id: int) -> ConsumeQueue | None:
        return self._queues.get((topic, queue_id))

    def find_or_create(self, topic: str, queue_id: int) -> ConsumeQueue:
        queue = self._queues.get((topic, queue_id))
        if queue is None:
            with self._lock:
                queue = self._queues.setdefault(
                    (topic, queue_id), ConsumeQueue(self.store_root, topic, queue_id, self.config)
                )
        return queue

    def queue_offset_table(self) -> dict[tuple[str, int], int]:
        """`recoverTopicQueueTable`: the next queue offset of every queue."""
        return {(queue.topic, queue.queue_id): queue.max_offset_in_queue for queue in self.queues}

    def flush(self, least_pages: int) -> None:
        for queue in self.queues:
            queue.flush(least_pages)

    def all_flushed(self) -> bool:
        """Whether every entry written so far is durable."""
        return all(
            queue.mapped_file_queue.flushed_where >= queue.mapped_file_queue.max_offset
            for queue in self.queues
        )

    def close(self) -> None:
        for queue in self.queues:
            queue.close()
