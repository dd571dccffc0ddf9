"""MappedFile against the real kernel: positions, zero-copy reads and writes, flush (dirty pages counted by
cachestat), warm-up (minor faults and VmLck), the transient store pool, hold/release around destroy, and
ENOSPC on a tiny tmpfs."""

from __future__ import annotations

import errno
import mmap
import os
import struct
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from support import skip_or_fail

from probes.residency.cachestat import cachestat
from store import _libc
from store.config import OS_PAGE_SIZE, WarmupMode
from store.errors import StoreError, StoreLayoutError
from store.layout import file_name_to_offset, offset_to_file_name
from store.mapped_file import (
    MappedFile,
    MappedFileClosedError,
    NoSpaceForSegmentError,
    ReadOnlyStoreError,
)
from store.transient_pool import TransientStorePool, TransientStorePoolDeficient

KiB = 1024
MiB = 1024 * KiB
FIRST = offset_to_file_name(0)


def minor_faults() -> int:
    """Field 10 (minflt) of /proc/self/stat; the fields after the parenthesised command name start at 3."""
    stat = Path("/proc/self/stat").read_text()
    return int(stat[stat.rindex(")") + 2 :].split()[10 - 3])


def locked_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmLck:"):
            return int(line.split()[1])
    raise AssertionError("no VmLck in /proc/self/status")


def dirty_pages(mapped_file: MappedFile, offset: int = 0, length: int = 0) -> int:
    return cachestat(mapped_file.fileno(), offset, length).dirty_pages


@pytest.fixture
def new_file(tmp_path):
    created: list[MappedFile] = []

    def make(size: int = 64 * KiB, offset: int = 0, pool: TransientStorePool | None = None) -> MappedFile:
        mapped_file = MappedFile.create(tmp_path / offset_to_file_name(offset), size, transient_pool=pool)
        created.append(mapped_file)
        return mapped_file

    yield make
    for mapped_file in created:
        mapped_file.destroy(0.0)


# ---- libc wrappers -------------------------------------------------------------------------------


def test_libc_helpers_work_on_read_only_mappings_and_leave_them_closable(new_file, tmp_path):
    new_file(size=256 * KiB).close()
    fd = os.open(tmp_path / FIRST, os.O_RDONLY)
    try:
        mapping = mmap.mmap(fd, 256 * KiB, prot=mmap.PROT_READ)
        assert _libc.mapping_address(mapping) % _libc.PAGE_SIZE == 0
        _libc.advise_mapping(mapping, _libc.MADV_POPULATE_READ)
        assert cachestat(fd).cached_pages == 256 * KiB // OS_PAGE_SIZE
        locked_before = locked_kib()
        _libc.lock_mapping(mapping, 4096, 8192)
        assert locked_kib() - locked_before == 8
        _libc.unlock_mapping(mapping)
        assert locked_kib() == locked_before
        mapping.close()  # the address lookup left no buffer export behind
    finally:
        os.close(fd)


def test_libc_errors_carry_the_errno():
    with pytest.raises(OSError) as caught:
        _libc.madvise(_libc.PAGE_SIZE + 1, _libc.PAGE_SIZE, _libc.MADV_WILLNEED)  # unaligned start
    assert caught.value.errno == errno.EINVAL
    with pytest.raises(ValueError):
        _libc.lock_mapping(mmap.mmap(-1, 4096), 0, 8192)


# ---- names and creation ---------------------------------------------------------------------------


def test_file_names_are_20_digit_zero_padded_offsets():
    assert offset_to_file_name(0) == "00000000000000000000"
    assert offset_to_file_name(1 << 30) == "00000000001073741824"
    assert file_name_to_offset("00000000002147483648") == 2 << 30
    for foreign in ("123", "0000000000000000000a", "٠" * 20, "000000000000000000000", "checkpoint"):
        with pytest.raises(StoreLayoutError, match="20-digit"):
            file_name_to_offset(foreign)
    with pytest.raises(ValueError):
        offset_to_file_name(-1)


def test_create_makes_a_full_size_file_with_its_blocks_reserved(new_file):
    mapped_file = new_file(size=256 * KiB, offset=256 * KiB)
    info = os.stat(mapped_file.path)
    assert mapped_file.file_from_offset == 256 * KiB
    assert info.st_size == 256 * KiB
    assert info.st_blocks * 512 >= 256 * KiB, "posix_fallocate should have reserved every block"
    assert os.pread(mapped_file.fileno(), 256 * KiB, 0) == bytes(256 * KiB)


def test_create_refuses_an_existing_file_and_a_foreign_name(tmp_path, new_file):
    new_file()
    with pytest.raises(FileExistsError):
        MappedFile.create(tmp_path / FIRST, 64 * KiB)
    with pytest.raises(StoreLayoutError):
        MappedFile.create(tmp_path / "segment.log", 64 * KiB)


def test_open_checks_the_size_and_read_only_refuses_writes(tmp_path, new_file):
    new_file(size=64 * KiB).close()
    with pytest.raises(StoreLayoutError, match="length not matched message store config value"):
        MappedFile.open(tmp_path / FIRST, 128 * KiB)
    with MappedFile.open(tmp_path / FIRST, 64 * KiB, read_only=True) as read_only:
        assert read_only.wrote_position == 0
        with pytest.raises(ReadOnlyStoreError):
            read_only.append(b"x")
        with pytest.raises(ReadOnlyStoreError):
            read_only.warm(WarmupMode.TOUCH)


# ---- positions, appends, zero-copy reads and writes -----------------------------------------------


def test_positions_follow_appends_without_a_pool(new_file):
    mapped_file = new_file()
    assert mapped_file.append(b"a" * 100) == 0
    assert mapped_file.append(b"b" * 50) == 100
    assert mapped_file.wrote_position == mapped_file.read_position == 150
    assert mapped_file.commit(0) == 150, "without a pool, commit reports the wrote position"
    assert mapped_file.flushed_position == 0
    assert bytes(mapped_file.select(0)) == b"a" * 100 + b"b" * 50
    assert bytes(mapped_file.select(90, 20)) == b"a" * 10 + b"b" * 10

    mapped_file.append(bytes(OS_PAGE_SIZE - 150 - 3))
    straddling = b"across the page boundary"
    assert mapped_file.append(straddling) == OS_PAGE_SIZE - 3
    assert bytes(mapped_file.select(OS_PAGE_SIZE - 3, len(straddling))) == straddling
    assert os.pread(mapped_file.fileno(), len(straddling), OS_PAGE_SIZE - 3) == straddling


def test_append_returns_none_when_the_record_does_not_fit(new_file):
    mapped_file = new_file(size=4 * KiB)
    assert mapped_file.append(bytes(4 * KiB - 10)) == 0
    assert mapped_file.append(b"x" * 11) is None
    assert mapped_file.wrote_position == 4 * KiB - 10
    assert mapped_file.append_batch([b"12345", b"678901"]) is None, "a batch is all or nothing"
    assert mapped_file.wrote_position == 4 * KiB - 10
    assert mapped_file.append_batch([b"12345", b"67890"]) == 4 * KiB - 10
    assert mapped_file.is_full()
    assert mapped_file.append(b"") == 4 * KiB, "an empty record still fits in a full file"
    assert mapped_file.reserve(1) is None


def test_select_stops_at_the_read_position(new_file):
    mapped_file = new_file()
    mapped_file.append(b"0123456789")
    assert mapped_file.select(10) is None, "RocketMQ returns null at the read position"
    assert mapped_file.select(5, 6) is None, "a range past the read position is not readable yet"
    assert mapped_file.select(-1) is None
    assert bytes(mapped_file.select(5, 5)) == b"56789"
    assert bytes(mapped_file.select(10, 0)) == b""


def test_select_is_a_read_only_view_that_shares_memory_with_the_mapping(new_file):
    mapped_file = new_file()
    mapped_file.append(b"A" * 4096)
    view = mapped_file.select(100, 8)
    assert view.readonly
    os.pwrite(mapped_file.fileno(), b"FILE", 100)  # through the page cache, not through the mapping
    assert bytes(view[:4]) == b"FILE", "the view is the page-cache page itself, not a copy"
    view.release()


def test_reserve_lets_an_encoder_pack_in_place_and_advance_publishes(new_file):
    mapped_file = new_file()
    mapped_file.append(b"head")
    reservation = mapped_file.reserve(12)
    assert reservation.position == 4
    with reservation as view:
        struct.pack_into(">iq", view, 0, 12, 0x1122334455667788)
    assert mapped_file.select(4) is None, "nothing is visible before advance"
    assert mapped_file.advance(12) == 16
    assert struct.unpack_from(">iq", mapped_file.select(4, 12)) == (12, 0x1122334455667788)

    with mapped_file.reserve(8) as view:  # an encoder that gives up: no advance, so nothing happened
        view[:] = b"GARBAGE!"
    assert mapped_file.wrote_position == 16
    assert mapped_file.reserve(4).position == 16
    with pytest.raises(ValueError):
        mapped_file.advance(64 * KiB)


# ---- flush ---------------------------------------------------------------------------------------


def test_flush_waits_for_least_pages_then_leaves_no_dirty_page(new_file):
    mapped_file = new_file(size=64 * KiB)
    mapped_file.append(b"x" * (3 * OS_PAGE_SIZE))
    assert dirty_pages(mapped_file) >= 3
    assert mapped_file.flush(4) == 0, "3 pages written, 4 required"
    assert dirty_pages(mapped_file) >= 3

    mapped_file.append(b"y" * OS_PAGE_SIZE)
    assert mapped_file.flush(4) == 4 * OS_PAGE_SIZE
    assert dirty_pages(mapped_file) == 0

    mapped_file.append(b"z" * 100)
    assert mapped_file.flush(1) == 4 * OS_PAGE_SIZE, "100 bytes do not make a whole page"
    assert dirty_pages(mapped_file) == 1
    assert mapped_file.flush(0) == 4 * OS_PAGE_SIZE + 100
    assert dirty_pages(mapped_file) == 0


def test_flush_msyncs_only_the_range_it_has_not_flushed_yet(new_file):
    mapped_file = new_file(size=64 * KiB)
    mapped_file.append(b"x" * (2 * OS_PAGE_SIZE))
    mapped_file.flush(0)
    os.pwrite(mapped_file.fileno(), b"behind the flushed position", 0)  # dirties page 0 again
    mapped_file.append(b"y" * OS_PAGE_SIZE)
    mapped_file.flush(0)
    assert dirty_pages(mapped_file, 0, OS_PAGE_SIZE) == 1, "page 0 lies before the flushed position"
    assert dirty_pages(mapped_file, OS_PAGE_SIZE, 0) == 0


# ---- warm-up -------------------------------------------------------------------------------------

WARM_FILE_SIZE = 64 * MiB
WARM_PAGES = WARM_FILE_SIZE // OS_PAGE_SIZE


@pytest.mark.parametrize("mode", [WarmupMode.NONE, WarmupMode.TOUCH, WarmupMode.POPULATE])
def test_warm_up_takes_the_page_faults_off_the_append_path(new_file, mode, record_property):
    mapped_file = new_file(size=WARM_FILE_SIZE)
    locked_before = locked_kib()
    result = mapped_file.warm(mode)
    assert result.requested == mode

    page = b"m" * OS_PAGE_SIZE
    faults_before = minor_faults()
    while mapped_file.append(page) is not None:
        pass
    faults = minor_faults() - faults_before

    record_property(f"minor_faults_{mode}", faults)
    print(f"\n{mode}: {faults} minor faults appending {WARM_PAGES} pages ({faults / WARM_PAGES:.1%})")
    if mode == WarmupMode.NONE:
        assert faults >= WARM_PAGES // 10, "a fresh mapping faults about once per page or folio"
        assert locked_kib() == locked_before
        return
    assert result.mode == mode, result.problems
    assert result.pages == WARM_PAGES
    assert faults <= WARM_PAGES // 100
    if os.geteuid() == 0:
        assert result.locked, result.problems
    if not result.locked:  # an unprivileged user under a small RLIMIT_MEMLOCK: reported, not raised
        assert "RLIMIT_MEMLOCK" in result.problems[-1]
        return
    assert locked_kib() - locked_before >= WARM_FILE_SIZE // KiB, "warm-up mlocks the whole mapping"
    mapped_file.munlock()
    assert locked_kib() == locked_before
    assert not mapped_file.is_locked


@pytest.mark.parametrize("mode", [WarmupMode.TOUCH, WarmupMode.POPULATE])
def test_warm_up_with_sync_flush_leaves_no_dirty_page(new_file, mode):
    mapped_file = new_file(size=1 * MiB)
    locked_before = locked_kib()
    result = mapped_file.warm(mode, flush_every_pages=64, sync_flush=True)
    assert result.mode == mode
    assert dirty_pages(mapped_file) == 0
    assert cachestat(mapped_file.fileno()).cached_pages == 1 * MiB // OS_PAGE_SIZE
    mapped_file.close()
    assert locked_kib() == locked_before, "close unlocks"


def test_populate_falls_back_to_touch_where_the_kernel_lacks_it(new_file, monkeypatch):
    real_advise = _libc.advise_mapping

    def kernel_before_5_14(mapping, advice, offset=0, length=None):
        if advice == _libc.MADV_POPULATE_WRITE:
            raise OSError(errno.EINVAL, "madvise: Invalid argument")
        real_advise(mapping, advice, offset, length)

    monkeypatch.setattr(_libc, "advise_mapping", kernel_before_5_14)
    mapped_file = new_file(size=256 * KiB)
    result = mapped_file.warm(WarmupMode.POPULATE)
    assert (result.requested, result.mode, result.locked) == (WarmupMode.POPULATE, WarmupMode.TOUCH, True)
    assert "Linux >= 5.14" in result.problems[0]
    assert cachestat(mapped_file.fileno()).cached_pages == 256 * KiB // OS_PAGE_SIZE


def test_warm_up_reports_an_mlock_failure_instead_of_raising(new_file, monkeypatch):
    def over_the_limit(mapping, offset=0, length=None):
        raise OSError(errno.ENOMEM, "mlock: Cannot allocate memory")

    monkeypatch.setattr(_libc, "lock_mapping", over_the_limit)
    result = new_file().warm(WarmupMode.TOUCH)
    assert result.mode == WarmupMode.TOUCH and not result.locked
    assert "RLIMIT_MEMLOCK" in result.problems[0]


def test_warm_up_none_does_nothing(new_file):
    mapped_file = new_file()
    result = mapped_file.warm(WarmupMode.NONE)
    assert (result.pages, result.locked) == (0, False)
    assert cachestat(mapped_file.fileno()).cached_pages == 0


# ---- transient store pool ------------------------------------------------------------------------


def test_pooled_appends_are_invisible_until_committed_and_durable_after_flush(new_file):
    with TransientStorePool(pool_size=2, file_size=64 * KiB) as pool:
        mapped_file = new_file(pool=pool)
        assert pool.available == 1 and mapped_file.has_write_buffer
        mapped_file.append(b"p" * (2 * OS_PAGE_SIZE))
        assert mapped_file.wrote_position == 2 * OS_PAGE_SIZE
        assert mapped_file.read_position == 0
        assert mapped_file.select(0) is None, "readers use the mapping, which has nothing yet"
        assert os.pread(mapped_file.fileno(), 16, 0) == bytes(16)

        assert mapped_file.commit(4) == 0, "2 pages appended, 4 required"
        assert mapped_file.commit(0) == 2 * OS_PAGE_SIZE
        assert os.pread(mapped_file.fileno(), 16, 0) == b"p" * 16, "commit pwrites into the file"
        assert bytes(mapped_file.select(0, 4)) == b"pppp"
        assert dirty_pages(mapped_file) == 2

        assert mapped_file.flush(0) == 2 * OS_PAGE_SIZE
        assert dirty_pages(mapped_file) == 0, "flush fdatasyncs what commit wrote"
        mapped_file.destroy(0.0)
        assert pool.available == 2, "a destroyed file gives its buffer back"


def test_pool_buffer_goes_back_when_the_file_is_fully_committed(new_file):
    with TransientStorePool(pool_size=1, file_size=16 * KiB) as pool:
        mapped_file = new_file(size=16 * KiB, pool=pool)
        with pytest.raises(TransientStorePoolDeficient):
            new_file(size=16 * KiB, offset=16 * KiB, pool=pool)
        mapped_file.append(b"q" * (16 * KiB - 8))
        mapped_file.commit(0)
        assert pool.available == 0, "not fully committed yet"
        mapped_file.append(b"tailtail")
        assert mapped_file.commit(4) == 16 * KiB, "a full file commits whatever least_pages says"
        assert pool.available == 1 and not mapped_file.has_write_buffer
        assert bytes(mapped_file.select(16 * KiB - 8)) == b"tailtail"
        assert mapped_file.append(b"more") is None
        new_file(size=16 * KiB, offset=16 * KiB, pool=pool)
        assert pool.available == 0


def test_pool_refuses_foreign_and_doubly_returned_buffers():
    with TransientStorePool(pool_size=1, file_size=4 * KiB) as pool, TransientStorePool(1, 4 * KiB) as other:
        buffer = pool.borrow()
        assert pool.borrow() is None
        with pytest.raises(ValueError, match="does not belong"):
            other.return_buffer(buffer)
        pool.return_buffer(buffer)
        with pytest.raises(ValueError, match="already returned"):
            pool.return_buffer(buffer)


def test_pool_reports_rlimit_memlock_when_it_cannot_lock():
    child = textwrap.dedent(
        """
        from store.transient_pool import TransientStorePool, TransientStorePoolError
        try:
            TransientStorePool(pool_size=2, file_size=1 << 20)
        except TransientStorePoolError as err:
            print(err)
        """
    )
    command = ["prlimit", "--memlock=65536:65536", sys.executable, "-c", child]
    if os.geteuid() == 0:  # root locks past the limit through CAP_IPC_LOCK: drop it for the child
        command = ["setpriv", "--inh-caps=-ipc_lock", "--bounding-set=-ipc_lock", *command]
    result = subprocess.run(
        command, capture_output=True, text=True, cwd=Path(__file__).parents[2], check=False
    )
    assert result.returncode == 0, result.stderr
    assert "cannot mlock transient store pool buffer 1 of 2" in result.stdout
    assert "RLIMIT_MEMLOCK is 65536 bytes" in result.stdout


# ---- one writer, one committer, one flusher, readers ----------------------------------------------


@pytest.mark.parametrize("pooled", [False, True], ids=["mapping", "transient-pool"])
def test_readers_see_every_byte_below_the_read_position_while_others_write(new_file, pooled):
    record = struct.Struct(">II")  # sequence number, and its complement as a check
    size = 1 * MiB
    with TransientStorePool(1, size) as pool:
        mapped_file = new_file(size=size, pool=pool if pooled else None)
        stop = threading.Event()
        failures: list[str] = []

        def writer():
            sequence = 0
            while mapped_file.append(record.pack(sequence, ~sequence & 0xFFFFFFFF)) is not None:
                sequence += 1
            stop.set()

        def background(step):
            while not stop.is_set():
                step()
            step()

        def reader():
            verified, deadline = 0, time.monotonic() + 10
            while verified < size and time.monotonic() < deadline:
                readable = mapped_file.read_position
                with mapped_file.select(verified, readable - verified) as view:
                    for index, (sequence, check) in enumerate(
                        record.iter_unpack(view), verified // record.size
                    ):
                        if (sequence, check) != (index, ~index & 0xFFFFFFFF):
                            failures.append(
                                f"record {index} reads {sequence, check} below position {readable}"
                            )
                            return
                verified = readable

        threads = [
            threading.Thread(target=writer),
            threading.Thread(target=background, args=(lambda: mapped_file.commit(1),)),
            threading.Thread(target=background, args=(lambda: mapped_file.flush(4),)),
            threading.Thread(target=reader),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert not failures
        assert mapped_file.read_position == size
        assert mapped_file.flush(0) == size
        mapped_file.destroy(0.0)


# ---- hold, release, close and destroy ------------------------------------------------------------


def test_destroy_waits_for_a_reader_and_proceeds_after_release(new_file):
    mapped_file = new_file()
    mapped_file.append(b"r" * 64)
    assert mapped_file.hold()
    outcome: list[bool] = []
    destroyer = threading.Thread(target=lambda: outcome.append(mapped_file.destroy(10.0)))
    destroyer.start()
    time.sleep(0.2)
    assert destroyer.is_alive() and mapped_file.path.exists(), "destroy waits while a reader holds the file"
    assert not mapped_file.hold(), "no new reader once destroy has begun"
    assert bytes(mapped_file.select(0, 4)) == b"rrrr", "the holder can still read"
    mapped_file.release()
    destroyer.join(2.0)
    assert outcome == [True]
    assert not mapped_file.path.exists()
    with pytest.raises(MappedFileClosedError):
        mapped_file.select(0)


def test_destroy_proceeds_forcibly_after_the_timeout_without_breaking_the_reader(new_file):
    mapped_file = new_file()
    mapped_file.append(b"s" * 64)
    assert mapped_file.hold()
    view = mapped_file.select(0, 8)
    began = time.monotonic()
    assert mapped_file.destroy(0.2) is False
    assert time.monotonic() - began >= 0.2
    assert not mapped_file.path.exists()
    assert bytes(view) == b"ssssssss", "a view keeps its memory valid after a forced destroy"
    assert mapped_file.fileno() >= 0, "the descriptor stays until the holder lets go"
    mapped_file.release()
    assert mapped_file.fileno() == -1
    view.release()


def test_release_without_hold_is_a_bug(new_file):
    with pytest.raises(RuntimeError, match="without hold"):
        new_file().release()


def test_close_unmaps_but_keeps_the_file(new_file, tmp_path):
    mapped_file = new_file()
    mapped_file.append(b"kept")
    assert mapped_file.close() is True
    with pytest.raises(MappedFileClosedError):
        mapped_file.append(b"x")
    with MappedFile.open(tmp_path / FIRST, 64 * KiB) as reopened:
        reopened.set_positions(4)
        assert bytes(reopened.select(0)) == b"kept"


def test_last_modified_is_the_mtime_in_milliseconds(new_file):
    mapped_file = new_file()
    os.utime(mapped_file.path, (1_700_000_000, 1_700_000_000.5))
    assert mapped_file.last_modified == 1_700_000_000_500


# ---- disk full -----------------------------------------------------------------------------------


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A 1 MiB tmpfs: small enough to fill. Root only; skips (fails under CI=true) where mount is refused."""
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        skip_or_fail(f"cannot mount a tmpfs: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "--lazy", str(mount_point)], check=True)


@pytest.mark.requires_root
def test_a_full_disk_is_a_store_error_at_creation_not_a_sigbus_later(tiny_tmpfs):
    written = MappedFile.create(tiny_tmpfs / FIRST, 512 * KiB)
    written.append(b"w" * (256 * KiB))
    too_big = tiny_tmpfs / offset_to_file_name(512 * KiB)
    with pytest.raises(NoSpaceForSegmentError, match="no space to reserve") as caught:
        MappedFile.create(too_big, 1 * MiB)
    assert isinstance(caught.value, StoreError)
    assert not too_big.exists(), "a segment that cannot be reserved is removed"

    assert bytes(written.select(256 * KiB - 4)) == b"wwww"
    while written.append(b"v" * 4096) is not None:  # its blocks were reserved: filling it cannot fault
        pass
    assert written.is_full() and bytes(written.select(512 * KiB - 1)) == b"v"
    written.destroy(0.0)


@pytest.mark.requires_root
def test_without_reserved_blocks_the_same_write_kills_the_process_with_sigbus(tiny_tmpfs):
    """Why create() fallocates: the sparse way (ftruncate + mmap) dies on the first page it cannot back."""
    child = textwrap.dedent(
        f"""
        import mmap, os
        fd = os.open({str(tiny_tmpfs / FIRST)!r}, os.O_RDWR | os.O_CREAT)
        os.ftruncate(fd, 2 << 20)
        mapping = mmap.mmap(fd, 2 << 20)
        for offset in range(0, 2 << 20, 4096):
            mapping[offset] = 1
        """
    )
    result = subprocess.run([sys.executable, "-c", child], capture_output=True, check=False)
    assert result.returncode == -7, f"expected SIGBUS (-7), got {result.returncode}: {result.stderr!r}"
