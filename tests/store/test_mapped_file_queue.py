"""MappedFileQueue: load rules, lookups, rolling, flush/commit, truncation, deletion by time and by offset;
and AllocateMappedFileService making the next file ahead of the writer."""

from __future__ import annotations

import os
import struct
import threading
import time
from pathlib import Path

import pytest
from support import fincore_pages

from store import _libc, mapped_file_queue
from store.config import StoreConfig, WarmupMode
from store.errors import StoreLayoutError
from store.layout import offset_to_file_name
from store.mapped_file import WARM_STRIDE_BYTES, MappedFile, ReadOnlyStoreError
from store.mapped_file_queue import AllocateMappedFileService, MappedFileAllocationError, MappedFileQueue
from store.transient_pool import TransientStorePool

SIZE = 16 * 1024
CQ_UNIT = struct.Struct(">qiq")  # ConsumeQueue entry: commitlog offset, size, tags code


def write_segments(directory: Path, *offsets: int, size: int = SIZE) -> None:
    """Segment files as a broker would leave them: full size, named by offset, a marker at the start."""
    directory.mkdir(parents=True, exist_ok=True)
    for offset in offsets:
        path = directory / offset_to_file_name(offset)
        path.write_bytes(offset.to_bytes(8, "big"))
        os.truncate(path, size)


def fill(mapped_file: MappedFile) -> None:
    mapped_file.append(bytes(mapped_file.file_size - mapped_file.wrote_position))


@pytest.fixture
def queue(tmp_path):
    queues: list[MappedFileQueue] = []

    def make(directory: Path | None = None, size: int = SIZE, **options) -> MappedFileQueue:
        made = MappedFileQueue(directory or tmp_path / "commitlog", size, **options)
        queues.append(made)
        return made

    yield make
    for made in queues:
        made.close()


# ---- load ----------------------------------------------------------------------------------------


def test_load_maps_the_files_in_order_with_every_position_at_the_file_size(tmp_path, queue):
    write_segments(tmp_path / "commitlog", 2 * SIZE, 0, SIZE)
    loaded = queue()
    loaded.load()
    assert [f.file_from_offset for f in loaded.mapped_files] == [0, SIZE, 2 * SIZE]
    for mapped_file in loaded.mapped_files:
        assert (mapped_file.wrote_position, mapped_file.committed_position, mapped_file.flushed_position) == (
            SIZE,
            SIZE,
            SIZE,
        )
        assert bytes(mapped_file.select(0, 8)) == mapped_file.file_from_offset.to_bytes(8, "big")
    assert (loaded.min_offset, loaded.max_offset, loaded.max_wrote_offset) == (0, 3 * SIZE, 3 * SIZE)


def test_load_of_a_missing_directory_is_an_empty_queue(tmp_path, queue):
    empty = queue(tmp_path / "nothing-here")
    empty.load()
    assert empty.mapped_files == () and empty.min_offset == -1 and empty.max_offset == 0


@pytest.mark.parametrize(
    ("layout", "culprit", "message"),
    [
        ({0: SIZE, 2 * SIZE: SIZE}, 2 * SIZE, "segments must be contiguous"),
        ({0: SIZE, SIZE: SIZE - 1, 2 * SIZE: SIZE}, SIZE, "length not matched message store config value"),
        ({0: 0, SIZE: SIZE}, 0, "length not matched"),
        ({100: SIZE}, 100, "not a multiple of the segment size"),
    ],
    ids=["gap", "wrong-size", "empty-but-not-last", "misaligned"],
)
def test_load_refuses_a_broken_layout_naming_the_file(tmp_path, queue, layout, culprit, message):
    directory = tmp_path / "commitlog"
    for offset, size in layout.items():
        write_segments(directory, offset, size=size)
    with pytest.raises(StoreLayoutError, match=message) as caught:
        queue().load()
    assert offset_to_file_name(culprit) in str(caught.value)


def test_load_refuses_foreign_files_but_ignores_directories(tmp_path, queue):
    directory = tmp_path / "commitlog"
    write_segments(directory, 0)
    (directory / "subdir").mkdir()
    (directory / "notes.txt").write_text("not a segment")
    with pytest.raises(StoreLayoutError, match=r"notes\.txt: not a segment of this store"):
        queue().load()
    (directory / "notes.txt").unlink()
    loaded = queue()
    loaded.load()
    assert len(loaded.mapped_files) == 1


def test_a_zero_length_last_file_is_deleted_or_skipped_when_read_only(tmp_path, queue):
    directory = tmp_path / "commitlog"
    write_segments(directory, 0, SIZE)
    empty = directory / offset_to_file_name(2 * SIZE)
    empty.touch()

    inspector = queue(read_only=True)
    inspector.load()
    assert empty.exists(), "read-only never deletes"
    assert inspector.skipped_empty_file == empty
    assert len(inspector.mapped_files) == 2

    writer = queue()
    writer.load()
    assert not empty.exists(), "RocketMQ deletes a zero-length last file"
    assert writer.max_offset == 2 * SIZE


def test_a_read_only_queue_changes_nothing_on_disk(tmp_path, queue):
    directory = tmp_path / "commitlog"
    write_segments(directory, 0, SIZE, 2 * SIZE)
    inspector = queue(read_only=True)
    inspector.load()
    with pytest.raises(ReadOnlyStoreError):
        inspector.last_file.append(b"x")
    with pytest.raises(ReadOnlyStoreError):
        inspector.get_last_file()  # the last file is full: this would create the next one
    with pytest.raises(ReadOnlyStoreError):
        inspector.delete_expired_by_time(0, clean_immediately=True)
    inspector.truncate_dirty_files(SIZE + 100)  # recovery's view: positions move, files only drop out
    assert len(inspector.mapped_files) == 2 and inspector.max_offset == SIZE + 100
    assert sorted(p.name for p in directory.iterdir()) == [
        offset_to_file_name(o) for o in (0, SIZE, 2 * SIZE)
    ]


# ---- lookups and rolling -------------------------------------------------------------------------


def test_find_by_offset(tmp_path, queue):
    write_segments(tmp_path / "commitlog", 2 * SIZE, 3 * SIZE, 4 * SIZE)
    loaded = queue()
    loaded.load()
    assert loaded.find_by_offset(2 * SIZE).file_from_offset == 2 * SIZE
    assert loaded.find_by_offset(3 * SIZE - 1).file_from_offset == 2 * SIZE
    assert loaded.find_by_offset(3 * SIZE).file_from_offset == 3 * SIZE
    assert loaded.find_by_offset(5 * SIZE - 1).file_from_offset == 4 * SIZE
    assert loaded.find_by_offset(5 * SIZE) is None
    assert loaded.find_by_offset(SIZE) is None
    assert loaded.find_by_offset(SIZE, return_first_on_not_found=True).file_from_offset == 2 * SIZE


def test_get_last_file_creates_the_first_file_then_rolls_after_a_full_one(tmp_path, queue):
    log = queue()
    log.load()
    assert log.get_last_file(create=False) is None
    first = log.get_last_file(start_offset=3 * SIZE + 77)
    assert first.file_from_offset == 3 * SIZE, "the first file is the one holding start_offset"
    assert log.get_last_file() is first, "not full: keep appending to it"
    fill(first)
    assert log.get_last_file(create=False) is first
    second = log.get_last_file()
    assert second.file_from_offset == 4 * SIZE
    assert (tmp_path / "commitlog" / offset_to_file_name(4 * SIZE)).stat().st_size == SIZE
    second.append(b"abc")
    assert (log.min_offset, log.max_offset) == (3 * SIZE, 4 * SIZE + 3)


def test_flush_and_commit_advance_file_by_file(queue):
    log = queue()
    log.load()
    fill(log.get_last_file())
    log.get_last_file().append(b"x" * 100)
    assert log.commit(0) is False and log.committed_where == SIZE, "without a pool commit follows wrote"
    assert log.flush(0) is False and log.flushed_where == SIZE
    assert log.flush(0) is False and log.flushed_where == SIZE + 100
    assert log.flush(0) is True, "nothing left to flush"


def test_commit_then_flush_with_a_transient_pool(queue):
    with TransientStorePool(pool_size=2, file_size=SIZE) as pool:
        log = queue(transient_pool=pool)
        log.load()
        log.get_last_file().append(b"y" * 5000)
        assert log.max_offset == 0 and log.max_wrote_offset == 5000
        log.flush(0)
        assert log.flushed_where == 0, "nothing committed, nothing to flush"
        log.commit(0)
        assert log.committed_where == log.max_offset == 5000
        log.flush(0)
        assert log.flushed_where == 5000
        log.close()


# ---- truncation and deletion ---------------------------------------------------------------------


def test_truncate_dirty_files_cuts_inside_a_file_and_destroys_later_ones(tmp_path, queue):
    directory = tmp_path / "commitlog"
    write_segments(directory, 0, SIZE, 2 * SIZE)
    log = queue()
    log.load()
    log.truncate_dirty_files(SIZE + 123)
    assert [f.file_from_offset for f in log.mapped_files] == [0, SIZE]
    assert not (directory / offset_to_file_name(2 * SIZE)).exists()
    assert log.mapped_files[0].wrote_position == SIZE, "files before the cut stay full"
    middle = log.mapped_files[1]
    assert (middle.wrote_position, middle.committed_position, middle.flushed_position) == (123, 123, 123)
    assert bytes(middle.select(0, 8)) == SIZE.to_bytes(8, "big"), "bytes before the cut are untouched"
    assert log.max_offset == SIZE + 123
    assert log.get_last_file() is middle, "appends resume at the cut"

    log.truncate_dirty_files(SIZE)  # exactly at a boundary: the file starting there becomes empty
    assert [f.wrote_position for f in log.mapped_files] == [SIZE, 0]


def age(mapped_file: MappedFile, hours: float) -> None:
    then = time.time() - hours * 3600
    os.utime(mapped_file.path, (then, then))


def test_delete_expired_by_time_stops_at_the_first_unexpired_file_and_keeps_the_last(tmp_path, queue):
    write_segments(tmp_path / "commitlog", *(i * SIZE for i in range(6)))
    log = queue()
    log.load()
    files = log.mapped_files
    for mapped_file, hours in zip(files, [100, 100, 1, 100, 100, 100], strict=True):
        age(mapped_file, hours)
    expired_ms = 72 * 3600 * 1000

    assert log.delete_expired_by_time(expired_ms, delete_interval_s=0) == 2
    assert log.min_offset == 2 * SIZE and not files[0].path.exists() and not files[1].path.exists()

    assert log.delete_expired_by_time(expired_ms, delete_interval_s=0) == 0, "file 2 is young: no holes"

    age(files[2], 100)
    assert log.delete_expired_by_time(expired_ms, delete_interval_s=0, batch_max=1) == 1
    assert log.delete_expired_by_time(expired_ms, delete_interval_s=0) == 2
    assert log.mapped_files == (files[5],), "never the last file, however old"
    assert files[5].path.exists()


def test_delete_expired_by_time_cleans_immediately_but_still_not_the_last(tmp_path, queue):
    write_segments(tmp_path / "commitlog", 0, SIZE, 2 * SIZE)
    log = queue()
    log.load()
    began = time.monotonic()
    assert log.delete_expired_by_time(72 * 3600 * 1000, delete_interval_s=0.05, clean_immediately=True) == 2
    assert time.monotonic() - began >= 0.05, "files are deleted delete_interval_s apart"
    assert [f.file_from_offset for f in log.mapped_files] == [2 * SIZE]


def test_delete_expired_by_offset_reads_the_last_entry_of_each_file(tmp_path, queue):
    entries_per_file = 4
    cq_size = entries_per_file * CQ_UNIT.size
    cq = queue(tmp_path / "consumequeue" / "TopicTest" / "0", size=cq_size)
    cq.load()
    for entry in range(entries_per_file * 3 + 1):  # three full files and one entry in a fourth
        cq.get_last_file().append(CQ_UNIT.pack(entry * 100, 100, 0))
    assert [f.file_from_offset for f in cq.mapped_files] == [0, cq_size, 2 * cq_size, 3 * cq_size]

    def last_entry_offset(entry: memoryview) -> int:
        return CQ_UNIT.unpack_from(entry)[0]

    # file 0 ends with an entry at 300, file 1 at 700, file 2 at 1100
    assert cq.delete_expired_by_offset(701, CQ_UNIT.size, last_entry_offset) == 2
    assert cq.min_offset == 2 * cq_size
    assert cq.delete_expired_by_offset(10_000, CQ_UNIT.size, last_entry_offset) == 1
    assert len(cq.mapped_files) == 1, "never the last file"


def test_delete_expired_by_offset_stops_at_a_file_not_filled_to_its_last_entry(tmp_path, queue):
    cq = queue(tmp_path / "cq", size=2 * CQ_UNIT.size)
    cq.load()
    for entry in range(5):
        cq.get_last_file().append(CQ_UNIT.pack(entry, 1, 0))
    cq.mapped_files[0].wrote_position = CQ_UNIT.size  # as after a recovery that kept one entry of file 0
    assert cq.delete_expired_by_offset(1_000, CQ_UNIT.size, lambda entry: CQ_UNIT.unpack_from(entry)[0]) == 0
    assert len(cq.mapped_files) == 3


# ---- AllocateMappedFileService -------------------------------------------------------------------


def wait_for(condition, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def test_allocate_service_makes_the_next_file_before_it_is_needed(tmp_path, queue):
    directory = tmp_path / "commitlog"
    config = StoreConfig(mapped_file_size_commitlog=SIZE, warmup=WarmupMode.TOUCH)
    service = AllocateMappedFileService(config).start()
    try:
        log = queue(allocate_service=service)
        log.load()
        first = log.get_last_file(0)
        ahead = directory / offset_to_file_name(SIZE)
        assert wait_for(ahead.exists), "N+1 is created before anyone asks for it"
        assert first.warmup is not None and first.warmup.locked, "the service warms commitlog-sized files"

        fill(first)
        second = log.get_last_file()
        assert second.path == ahead and second.file_from_offset == SIZE
        assert wait_for((directory / offset_to_file_name(2 * SIZE)).exists)
    finally:
        service.shutdown()
    assert not service.running
    assert not (directory / offset_to_file_name(2 * SIZE)).exists(), "files made ahead but never taken go"
    assert first.path.exists() and second.path.exists()
    with pytest.raises(MappedFileAllocationError, match="not running"):
        service.put_request_and_return_mapped_file(directory / "x", directory / "y", SIZE)


def test_allocate_service_hands_creation_errors_to_the_requester(tmp_path):
    directory = tmp_path / "commitlog"
    (directory / offset_to_file_name(0)).mkdir(parents=True)  # something already sits where file 0 goes
    with AllocateMappedFileService(StoreConfig(allocate_wait_timeout_ms=2000)) as service:
        log = MappedFileQueue(directory, SIZE, allocate_service=service)
        with pytest.raises(MappedFileAllocationError, match="cannot create") as caught:
            log.get_last_file(0)
        assert isinstance(caught.value.__cause__, FileExistsError)
        assert service.running, "one failure does not stop the service"

        (directory / offset_to_file_name(0)).rmdir()
        created = log.get_last_file(0)
        assert created.file_from_offset == 0, "a failed request is retried when asked for again"
        log.close()


def test_a_requester_that_times_out_gets_the_same_file_when_it_asks_again(tmp_path):
    big = 64 * 1024 * 1024  # warming 64 MiB takes far longer than the 1 ms the requester waits
    config = StoreConfig(mapped_file_size_commitlog=big, warmup=WarmupMode.TOUCH, allocate_wait_timeout_ms=1)
    with AllocateMappedFileService(config) as service:
        log = MappedFileQueue(tmp_path / "commitlog", big, allocate_service=service)
        with pytest.raises(MappedFileAllocationError, match="timed out"):
            log.get_last_file(0)
        deadline = time.monotonic() + 10
        while True:  # each retry waits on the same request: no second file 0 is attempted
            try:
                first = log.get_last_file(0)
                break
            except MappedFileAllocationError:
                assert time.monotonic() < deadline
                time.sleep(0.01)
        assert first.file_from_offset == 0 and first.warmup.mode == WarmupMode.TOUCH
        log.close()


def test_allocate_service_respects_the_transient_pool(tmp_path):
    directory = tmp_path / "commitlog"
    with (
        TransientStorePool(pool_size=1, file_size=SIZE) as pool,
        AllocateMappedFileService(StoreConfig(), transient_pool=pool) as service,
    ):
        log = MappedFileQueue(directory, SIZE, allocate_service=service)
        first = log.get_last_file(0)
        assert first.has_write_buffer and pool.available == 0
        time.sleep(0.1)
        assert not (directory / offset_to_file_name(SIZE)).exists(), "no free buffer: nothing made ahead"
        log.close()


# ---- a writer faster than the warm-up (issue 16: rolls without stalls) ------------------------------------

BIG = 2 * WARM_STRIDE_BYTES  # two populate strides: the warm-up can be held between them


@pytest.fixture
def held_populate(monkeypatch):
    """MADV_POPULATE_WRITE calls wait until the returned event is set: a warm-up as slow as we like."""
    release = threading.Event()
    advise = _libc.advise_mapping

    def held(mapping, advice, offset=0, length=None):
        if advice == _libc.MADV_POPULATE_WRITE:
            assert release.wait(30), "the test never released the warm-up"
        return advise(mapping, advice, offset, length)

    monkeypatch.setattr(_libc, "advise_mapping", held)
    yield release
    release.set()


def test_a_writer_that_caught_up_takes_a_populating_segment_before_its_warm_up_ends(tmp_path, held_populate):
    config = StoreConfig(
        mapped_file_size_commitlog=BIG, warmup=WarmupMode.POPULATE, allocate_wait_timeout_ms=5000
    )
    with AllocateMappedFileService(config) as service:
        log = MappedFileQueue(tmp_path / "commitlog", BIG, allocate_service=service)
        first = log.get_last_file(0)  # the warm-up is held: before, this waited for it and timed out
        assert first.warmed_bytes == 0 and first.warmup is None
        first.append(b"written while warming" * 1000)
        assert service.stats.handed_over == 1 and service.stats.ready_ahead == 0
        assert service.stats.lead_bytes == [0]

        held_populate.set()
        assert service.wait_idle(30)
        assert first.warmed_bytes == BIG and first.warmup.mode == WarmupMode.POPULATE
        with first.select(0, 21 * 1000) as view:
            assert bytes(view) == b"written while warming" * 1000, "the warm-up changed no byte"
        log.close()


def test_when_the_allocator_is_ahead_the_roll_takes_a_warmed_segment_without_waiting(tmp_path):
    config = StoreConfig(mapped_file_size_commitlog=BIG, warmup=WarmupMode.POPULATE)
    with AllocateMappedFileService(config) as service:
        log = MappedFileQueue(tmp_path / "commitlog", BIG, allocate_service=service)
        fill(log.get_last_file(0))
        assert service.wait_idle(60), "segment 1 made and warmed ahead"
        second = log.get_last_file()
        assert second.file_from_offset == BIG and second.warmed_bytes == BIG
        assert service.stats.ready_ahead == 1 and service.stats.lead_bytes[-1] == BIG
        assert service.wait_idle(60)
        assert (tmp_path / "commitlog" / offset_to_file_name(2 * BIG)).exists(), "and segment 2 after it"
        log.close()


def test_a_touch_warmed_segment_is_handed_over_only_once_warm(tmp_path, monkeypatch):
    """TOUCH writes a zero into every page: a writer must never have the file while that runs."""
    release = threading.Event()
    touch = MappedFile._touch

    def held_touch(self, *args):
        assert release.wait(30)
        return touch(self, *args)

    monkeypatch.setattr(MappedFile, "_touch", held_touch)
    config = StoreConfig(
        mapped_file_size_commitlog=SIZE, warmup=WarmupMode.TOUCH, allocate_wait_timeout_ms=200
    )
    try:
        with AllocateMappedFileService(config) as service:
            log = MappedFileQueue(tmp_path / "commitlog", SIZE, allocate_service=service)
            with pytest.raises(MappedFileAllocationError, match="timed out"):
                log.get_last_file(0)
            release.set()
            assert service.wait_idle(30)
            first = log.get_last_file(0)
            assert first.warmup.mode == WarmupMode.TOUCH and first.warmed_bytes == SIZE
            log.close()
    finally:
        release.set()


def test_populating_a_file_the_writer_overtook_goes_on_a_stride_ahead_of_it_and_keeps_its_bytes(
    tmp_path, monkeypatch
):
    """Where the writer is past the warm-up, it faults the pages in front of it itself: populating those
    too would have each wait for the other's page locks, so the warm-up goes on one stride further, and
    the two make new pages at once. No written byte changes."""
    populated = []
    advise = _libc.advise_mapping

    def recording(mapping, advice, offset=0, length=None):
        if advice == _libc.MADV_POPULATE_WRITE:
            populated.append((offset, length))
        return advise(mapping, advice, offset, length)

    monkeypatch.setattr(_libc, "advise_mapping", recording)
    size = 4 * WARM_STRIDE_BYTES
    mapped_file = MappedFile.create(tmp_path / offset_to_file_name(0), size)
    try:
        written = os.urandom(WARM_STRIDE_BYTES + 4096 * 3 + 100)
        mapped_file.append(written)
        result = mapped_file.warm(WarmupMode.POPULATE, while_written=True)
        assert result.mode == WarmupMode.POPULATE and mapped_file.warmed_bytes == size
        writer_page = WARM_STRIDE_BYTES + 4096 * 3
        assert populated == [
            (writer_page + WARM_STRIDE_BYTES, WARM_STRIDE_BYTES),
            (writer_page + 2 * WARM_STRIDE_BYTES, size - writer_page - 2 * WARM_STRIDE_BYTES),
        ]
        with mapped_file.select(0, len(written)) as view:
            assert bytes(view) == written
        with pytest.raises(ValueError, match="only POPULATE"):
            mapped_file.warm(WarmupMode.TOUCH, while_written=True)
    finally:
        mapped_file.destroy(0)


def resident_bytes(path: Path) -> int:
    """The file's bytes in the page cache (fincore): a warm-up's pages are, a fallocated file's untouched
    ones are not."""
    return fincore_pages(path) * os.sysconf("SC_PAGE_SIZE")


@pytest.fixture
def small_lead(monkeypatch):
    monkeypatch.setattr(mapped_file_queue, "WARM_LEAD_BYTES", WARM_STRIDE_BYTES, raising=False)
    return WARM_STRIDE_BYTES


def test_the_next_segment_is_warmed_only_a_lead_ahead_of_the_writer_and_goes_on_as_it_moves(
    tmp_path, small_lead
):
    """The whole next segment warmed at once dirtied a second segment's worth of zero pages, which took the
    machine past the kernel's background-writeback threshold: the flusher wrote them back and the writer
    faulted on each again. Now the next segment's warm-up stays WARM_LEAD_BYTES ahead of the writer in
    the log, parked (wait_idle counts that as idle), and goes on as the writer moves."""
    size = 4 * WARM_STRIDE_BYTES
    config = StoreConfig(mapped_file_size_commitlog=size, warmup=WarmupMode.POPULATE)
    with AllocateMappedFileService(config) as service:
        log = MappedFileQueue(tmp_path / "commitlog", size, allocate_service=service)
        first = log.get_last_file(0)
        first.append(bytes(size - 2 * WARM_STRIDE_BYTES))  # the writer two strides before the end
        assert service.wait_idle(60)
        following = tmp_path / "commitlog" / offset_to_file_name(size)
        assert following.exists(), "the next segment is made ahead"
        assert first.warmed_bytes == size, "the writer's own segment is warmed whole, at once"
        # Strides that start less than a lead (one stride) past the writer: none of the next segment's.
        assert resident_bytes(following) == 0

        first.append(bytes(WARM_STRIDE_BYTES + 4096))  # now less than a stride before the end
        assert wait_for(lambda: resident_bytes(following) >= WARM_STRIDE_BYTES, 30)
        assert service.wait_idle(60)
        # One stride populated (the kernel may read a little ahead around it), not the whole segment.
        assert WARM_STRIDE_BYTES <= resident_bytes(following) < 2 * WARM_STRIDE_BYTES

        fill(first)
        second = log.get_last_file()  # the writer takes it: the rest is warmed at once
        assert second.path == following
        assert wait_for(lambda: second.warmed_bytes == resident_bytes(following) == size, 30)
        log.close()


def test_shutdown_stops_a_warm_up_parked_for_the_writer(tmp_path, small_lead):
    size = 4 * WARM_STRIDE_BYTES
    config = StoreConfig(mapped_file_size_commitlog=size, warmup=WarmupMode.POPULATE)
    service = AllocateMappedFileService(config).start()
    log = MappedFileQueue(tmp_path / "commitlog", size, allocate_service=service)
    log.get_last_file(0)
    assert service.wait_idle(60)
    began = time.monotonic()
    service.shutdown(timeout_s=30)
    assert not service._thread.is_alive() and service.stats.parked_s > 0
    assert time.monotonic() - began < 10, "the parked warm-up heard the shutdown"
    assert not (tmp_path / "commitlog" / offset_to_file_name(size)).exists(), "the file made ahead is gone"
    log.close()
