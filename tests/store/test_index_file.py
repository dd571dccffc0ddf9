"""IndexFile / IndexService: bytes as RocketMQ writes them, queries as it answers them, and the rocketmq-rust
fixture as an independent check."""

from __future__ import annotations

import mmap
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from store.checkpoint import StoreCheckpoint
from store.config import StoreConfig
from store.errors import CorruptRecord, StoreError, StoreLayoutError
from store.index_file import (
    IndexFile,
    IndexHeader,
    IndexRequest,
    IndexService,
    index_file_name,
    index_file_size,
    is_index_file_name,
    parse_index_file_name,
)
from store.java_checksums import index_key_hash
from store.mapped_file import NoSpaceForSegmentError

FIXTURE = Path("/work/shared/fixtures/rocketmq-rust-0.9.0-store/local-file")
FIXTURE_INDEX = FIXTURE / "index" / "20260815011551705"
EVERYTHING = (0, 2**62)  # a query time range that contains every timestamp
T1 = 1_700_000_000_000  # 0x0000018bcfe56800


def small_config(slots: int = 4, entries: int = 5) -> StoreConfig:
    return StoreConfig(max_hash_slot_num=slots, max_index_num=entries)


def ticking_clock(start_ms: int = T1):
    """A clock that moves 1 ms per call, so file names are distinct and ascending without sleeping."""
    now = [start_ms]

    def clock() -> int:
        now[0] += 1
        return now[0]

    return clock


# --- the rocketmq-rust fixture ----------------------------------------------------------------------------


def test_fixture_index_header_decodes():
    with IndexFile.open(FIXTURE_INDEX) as index_file:
        assert index_file.header == IndexHeader(
            begin_timestamp_ms=1786727751703,
            end_timestamp_ms=1786727751704,
            begin_phy_offset=0,
            end_phy_offset=141,
            hash_slot_count=1,
            index_count=3,
        )
        # 2728 bytes = 40 + 32*4 + 128*20: RocketMQ's 1:4 ratio, although the header says 1 slot (used).
        assert (index_file.geometry.hash_slot_num, index_file.geometry.index_num) == (32, 128)
        assert index_file.geometry.source == "default-ratio"
        entries = list(index_file.iter_entries())
    assert [(e.phy_offset, e.prev_index) for e in entries] == [(0, 0), (141, 1)]
    assert {e.key_hash for e in entries} == {index_key_hash("V1UpgradeTopic#v1-upgrade-key")}


def test_fixture_query_finds_both_messages():
    with IndexService(FIXTURE / "index") as service:
        service.load(read_only=True)
        offsets = service.query("V1UpgradeTopic", "v1-upgrade-key", 64, *EVERYTHING)
        assert service.foreign_names == []
    assert offsets == [141, 0]  # newest first
    assert sorted(offsets) == [0, 141]


def test_fixture_query_for_another_key_finds_nothing():
    with IndexService(FIXTURE / "index") as service:
        service.load()
        assert service.query("V1UpgradeTopic", "other-key", 64, *EVERYTHING) == []
        assert service.query("OtherTopic", "v1-upgrade-key", 64, *EVERYTHING) == []


def test_fixture_read_never_maps(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("read-only index access must not mmap")

    monkeypatch.setattr(mmap, "mmap", refuse)
    with IndexService(FIXTURE / "index") as service:
        service.load(read_only=True)
        assert len(service.query("V1UpgradeTopic", "v1-upgrade-key", 64, *EVERYTHING)) == 2


def test_fixture_geometry_can_be_given_explicitly():
    with IndexFile.open(FIXTURE_INDEX, hash_slot_num=32) as index_file:
        assert (index_file.geometry.index_num, index_file.geometry.source) == (128, "explicit")
    with pytest.raises(StoreLayoutError):
        IndexFile.open(FIXTURE_INDEX, hash_slot_num=33)


# --- bytes ------------------------------------------------------------------------------------------------

# Java hashCode: "T#a" = (84*31 + 35)*31 + 97 = 81906 = 0x13ff2, "T#e" = 81910 = 0x13ff6; both % 4 = slot 2.
TWO_KEY_FILE = bytes.fromhex(
    # header: beginTimestamp T1, endTimestamp T1+5.5 s, beginPhyOffset 100, endPhyOffset 250,
    # hashSlotCount 1 (one slot used), indexCount 3 (next free entry)
    "0000018bcfe56800"
    "0000018bcfe57d7c"
    "0000000000000064"
    "00000000000000fa"
    "00000001"
    "00000003"
    # 4 slots: slot 2 holds entry 2, the head of its chain
    "00000000"
    "00000000"
    "00000002"
    "00000000"
    # entry 0: never used
    + "00"
    * 20
    # entry 1: hash "T#a", offset 100, timeDiff 0 (begin was 0 when it was written), prev 0
    + "00013ff2"
    "0000000000000064"
    "00000000"
    "00000000"
    # entry 2: hash "T#e", offset 250, timeDiff 5 s (5.5 s truncated), prev 1
     + "00013ff6"
    "00000000000000fa"
    "00000005"
    "00000001"
    # entry 3: free
     + "00" * 20
)


def test_two_keys_make_the_bytes_rocketmq_makes(tmp_path):
    with IndexFile.create(tmp_path, hash_slot_num=4, index_num=4, name="20231114221320000") as index_file:
        assert index_file.put_key("T#a", 100, T1)
        assert index_file.put_key("T#e", 250, T1 + 5_500)
        index_file.flush()
    content = (tmp_path / "20231114221320000").read_bytes()
    assert len(content) == index_file_size(4, 4) == 136
    assert content == TWO_KEY_FILE


def test_first_entry_time_diff_uses_the_inherited_begin(tmp_path):
    """putKey computes the first timeDiff before resetting begin to the message's own timestamp."""
    inherited_end = T1 - 10_000
    index_file = IndexFile.create(
        tmp_path, hash_slot_num=4, index_num=4, end_phy_offset=50, end_timestamp_ms=inherited_end
    )
    header_bytes = index_file.path.read_bytes()[:40]
    # begin = end = the previous file's end values; the counts stay 0 on disk until the first put
    assert header_bytes == bytes.fromhex(
        "0000018bcfe540f00000018bcfe540f0000000000000003200000000000000320000000000000000"
    )
    assert index_file.put_key("T#a", 100, T1)
    entry = index_file.entry(1)
    assert (entry.time_diff_s, entry.phy_offset) == (10, 100)
    assert (index_file.begin_timestamp, index_file.begin_phy_offset) == (T1, 100)
    # the quirk is visible in queries: the entry reads as 10 s after its real store time
    assert index_file.select_phy_offsets("T#a", 10, T1 + 10_000, T1 + 10_000) == [100]
    assert index_file.select_phy_offsets("T#a", 10, T1, T1 + 9_999) == []
    index_file.close()


def test_time_diff_is_clamped(tmp_path):
    with IndexFile.create(tmp_path, hash_slot_num=2, index_num=8) as index_file:
        index_file.put_key("k0", 0, T1)
        index_file.put_key("k1", 1, T1 - 5_000)  # older than begin: clamped to 0
        index_file.put_key("k2", 2, T1 + (2**31 + 7) * 1000)  # beyond Integer.MAX_VALUE seconds
        assert [e.time_diff_s for e in index_file.iter_entries()] == [0, 0, 2**31 - 1]


def test_put_key_refuses_when_full(tmp_path):
    with IndexFile.create(tmp_path, hash_slot_num=2, index_num=3) as index_file:
        assert index_file.put_key("a", 1, T1) and index_file.put_key("b", 2, T1)
        assert index_file.is_full()
        assert not index_file.put_key("c", 3, T1)
        assert index_file.header.index_count == 3  # indexNum - 1 entries fit: entry 0 is unused


def test_hash_slot_count_counts_slots_not_entries(tmp_path):
    with IndexFile.create(tmp_path, hash_slot_num=8, index_num=16) as index_file:
        for offset, key in enumerate(["Aa", "BB", "Aa", "y"]):  # "Aa" and "BB" share a Java hashCode
            index_file.put_key(key, offset, T1)
        assert index_file.header.hash_slot_count == 2
        assert index_file.header.entry_count == 4


def test_index_file_names_round_trip():
    name = index_file_name(T1 + 123)
    assert len(name) == 17 and name.endswith("123")
    assert parse_index_file_name(name) == T1 + 123
    assert is_index_file_name(name)
    for foreign in ("2023111422132000", "abcdefghijklmnopq", "20231314221320000", "lock"):
        assert not is_index_file_name(foreign)


# --- queries ----------------------------------------------------------------------------------------------

# Keys with equal Java hashCodes ("Aa" = "BB") make real collisions; random text fills the small slot table.
KEYS = st.one_of(st.sampled_from(["Aa", "BB", "AaAa", "BBBB", "AaBB", "order-1"]), st.text(max_size=12))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(puts=st.lists(st.tuples(KEYS, st.integers(0, 2**62)), min_size=1, max_size=31))
def test_every_key_is_found_newest_first(puts):
    with (
        tempfile.TemporaryDirectory() as directory,
        IndexFile.create(Path(directory), hash_slot_num=8, index_num=32) as index_file,
    ):
        for key, offset in puts:
            assert index_file.put_key(key, offset, T1)
        for key, offset in puts:
            found = index_file.select_phy_offsets(key, 1000, *EVERYTHING)
            assert offset in found
            # only hashes are compared: everything with this hash, newest first, and nothing else
            same_hash = [o for k, o in reversed(puts) if index_key_hash(k) == index_key_hash(key)]
            assert found == same_hash


@settings(max_examples=60, deadline=None)
@given(
    steps_s=st.lists(st.integers(0, 5), min_size=1, max_size=31),
    keys=st.lists(st.sampled_from(["a", "b", "c", "Aa", "BB"]), min_size=31, max_size=31),
    window=st.tuples(st.integers(0, 160), st.integers(0, 160)),
)
def test_time_range_filters_entries(steps_s, keys, window):
    """Store times on whole seconds after the first, so an entry's read-back time equals its store time."""
    times = [T1 + 1000 * sum(steps_s[: i + 1]) for i in range(len(steps_s))]
    begin, end = T1 + 1000 * min(window), T1 + 1000 * max(window)
    stored = list(enumerate(zip(keys, times, strict=False)))
    with (
        tempfile.TemporaryDirectory() as directory,
        IndexFile.create(Path(directory), hash_slot_num=8, index_num=32) as index_file,
    ):
        for offset, (key, stored_at) in stored:
            index_file.put_key(key, offset, stored_at)
        for key in set(keys):
            expected = [
                offset
                for offset, (k, stored_at) in reversed(stored)
                if index_key_hash(k) == index_key_hash(key) and begin <= stored_at <= end
            ]
            assert index_file.select_phy_offsets(key, 1000, begin, end) == expected


def test_select_stops_at_max_num(tmp_path):
    with IndexFile.create(tmp_path, hash_slot_num=4, index_num=16) as index_file:
        for offset in range(10):
            index_file.put_key("k", offset, T1)
        assert index_file.select_phy_offsets("k", 3, *EVERYTHING) == [9, 8, 7]
        assert index_file.select_phy_offsets("k", 0, *EVERYTHING) == []


def test_is_time_matched_is_interval_overlap(tmp_path):
    with IndexFile.create(tmp_path, hash_slot_num=4, index_num=16) as index_file:
        index_file.put_key("a", 0, T1)
        index_file.put_key("a", 1, T1 + 10_000)
        assert index_file.is_time_matched(T1 - 5, T1 + 20_000)  # contains it
        assert index_file.is_time_matched(T1 + 5_000, T1 + 6_000)  # inside it
        assert index_file.is_time_matched(T1 - 5, T1)  # touches its start
        assert index_file.is_time_matched(T1 + 10_000, T1 + 99_000)  # touches its end
        assert not index_file.is_time_matched(T1 - 9, T1 - 1)
        assert not index_file.is_time_matched(T1 + 10_001, T1 + 20_000)


# --- read-only opening ------------------------------------------------------------------------------------


def written_file(directory: Path, slots: int, entries: int, count: int) -> Path:
    with IndexFile.create(directory, hash_slot_num=slots, index_num=entries) as index_file:
        for offset in range(count):
            index_file.put_key(f"Topic#key-{offset % 7}", offset * 100, T1 + offset * 1000)
        return index_file.path


@pytest.mark.parametrize(
    ("slots", "entries", "config", "source"),
    [
        (8, 32, None, "default-ratio"),
        (16, 40, StoreConfig(max_hash_slot_num=16, max_index_num=40), "config"),
        (5, 7, None, "probed"),
        (13, 50, None, "probed"),
    ],
)
def test_read_only_open_infers_the_table_size(tmp_path, slots, entries, config, source):
    path = written_file(tmp_path, slots, entries, count=min(entries - 1, 20))
    with IndexFile.open(path, read_only=True, config=config) as index_file:
        assert (index_file.geometry.hash_slot_num, index_file.geometry.index_num) == (slots, entries)
        assert index_file.geometry.source == source
        assert 300 in index_file.select_phy_offsets("Topic#key-3", 64, *EVERYTHING)


def test_empty_file_with_odd_size_needs_explicit_sizes(tmp_path):
    path = IndexFile.create(tmp_path, hash_slot_num=5, index_num=7).path
    with pytest.raises(StoreLayoutError, match="hash_slot_num"):
        IndexFile.open(path)
    with IndexFile.open(path, hash_slot_num=5, index_num=7) as index_file:
        assert index_file.select_phy_offsets("anything", 10, *EVERYTHING) == []


def test_truncated_file_raises_instead_of_crashing(tmp_path):
    path = written_file(tmp_path, 8, 32, count=20)
    with IndexFile.open(path) as index_file:
        os.truncate(path, 100)  # a broker deleting or truncating the file under us
        with pytest.raises(CorruptRecord, match="ended early"):
            index_file.select_phy_offsets("Topic#key-3", 64, *EVERYTHING)


def test_chain_loop_is_reported(tmp_path):
    with IndexFile.create(tmp_path, hash_slot_num=8, index_num=32) as index_file:
        for offset in range(3):
            index_file.put_key("k", offset, T1)  # chain 3 -> 2 -> 1
        prev_of_entry_1 = index_file.geometry.entry_position(1) + 16
    with open(index_file.path, "r+b") as raw:
        raw.seek(prev_of_entry_1)
        raw.write((3).to_bytes(4, "big"))  # 1 -> 3 closes a loop RocketMQ's checks let through
    with IndexFile.open(index_file.path) as damaged, pytest.raises(CorruptRecord, match="can loop"):
        damaged.select_phy_offsets("k", 1000, *EVERYTHING)


def test_read_only_file_cannot_be_written(tmp_path):
    path = written_file(tmp_path, 8, 32, count=2)
    with IndexFile.open(path) as index_file, pytest.raises(StoreError, match="read-only"):
        index_file.put_key("x", 1, T1)


# --- IndexService -----------------------------------------------------------------------------------------


def request(offset: int, keys: str | None = None, uniq: str | None = None, sysflag: int = 0, **kw):
    return IndexRequest(
        topic=kw.get("topic", "T"),
        keys=keys,
        uniq_key=uniq,
        phy_offset=offset,
        store_timestamp_ms=kw.get("stored", T1 + offset),
        sysflag=sysflag,
    )


def writable_service(index_dir: Path, config: StoreConfig, **kwargs) -> IndexService:
    service = IndexService(index_dir, config, clock_ms=ticking_clock(), **kwargs)
    service.load(read_only=False)
    return service


def test_build_index_puts_uniq_key_and_each_keys_token(tmp_path):
    with writable_service(tmp_path / "index", small_config(8, 32)) as service:
        assert service.build_index(request(0, keys="k1  k2 ", uniq="U0")) == 3
        assert service.query("T", "U0", 10, *EVERYTHING) == [0]
        assert service.query("T", "k1", 10, *EVERYTHING) == [0]
        assert service.query("T", "k2", 10, *EVERYTHING) == [0]
        assert service.query("Other", "k1", 10, *EVERYTHING) == []


def test_build_index_skips_rollbacks_and_already_indexed_offsets(tmp_path):
    with writable_service(tmp_path / "index", small_config(8, 32)) as service:
        assert service.build_index(request(500, keys="a")) == 1
        assert service.build_index(request(600, keys="rolled-back", sysflag=0xC)) == 0
        assert service.build_index(request(700, keys="committed", sysflag=0x8)) == 1
        assert service.build_index(request(100, keys="old")) == 0  # below endPhyOffset 700
        assert service.build_index(request(700, keys="same")) == 1  # equal is not below
        assert service.query("T", "rolled-back", 10, *EVERYTHING) == []
        assert service.query("T", "old", 10, *EVERYTHING) == []


def test_full_file_rolls_and_new_file_inherits_end_values(tmp_path):
    config = small_config(slots=4, entries=5)  # 4 entries per file
    with (
        StoreCheckpoint(tmp_path / "checkpoint") as checkpoint,
        writable_service(tmp_path / "index", config, checkpoint=checkpoint) as service,
    ):
        for offset in range(10):
            service.build_index(request(offset * 100, keys="k", stored=T1 + offset * 1000))
        assert len(service.files) == 3
        first, second, third = service.files
        assert [f.name for f in service.files] == sorted(f.name for f in service.files)
        assert first.read_only and second.read_only and not third.read_only
        assert (second.begin_phy_offset, second.begin_timestamp) == (400, T1 + 4000)
        # the second file's first entry was timed against the first file's end (T1 + 3 s)
        assert second.entry(1).time_diff_s == 1
        assert checkpoint.index_msg_timestamp == second.end_timestamp == T1 + 7000
        everything = [900, 800, 700, 600, 500, 400, 300, 200, 100, 0]
        assert service.query("T", "k", 64, *EVERYTHING) == everything
        assert service.query("T", "k", 3, *EVERYTHING) == everything[:3]
        assert service.query("T", "k", 64, *EVERYTHING, max_msgs_num_batch=5) == everything[:5]


def test_query_walk_stops_at_a_file_beginning_before_the_range(tmp_path):
    with writable_service(tmp_path / "index", small_config(slots=4, entries=5)) as service:
        for offset in range(12):
            service.build_index(request(offset, keys="k", stored=T1 + offset * 1000))
        # Offset 4 opens the second file: timed against the first file's end (T1 + 3 s) it reads back as
        # T1 + 5 s, inside the range, exactly as RocketMQ would answer. The first file is never searched.
        assert service.query("T", "k", 64, T1 + 5_000, T1 + 9_000) == [9, 8, 7, 6, 5, 4]
        assert service.query("T", "k", 64, T1 + 20_000, T1 + 30_000) == []


def test_query_walk_does_not_reach_past_a_file_that_begins_earlier(tmp_path):
    """A clock stepping back puts old times in a newer file; the walk stops there, as RocketMQ's does."""
    with writable_service(tmp_path / "index", small_config(slots=4, entries=5)) as service:
        for offset in range(4):  # first file: T1 + 10 s .. 13 s
            service.build_index(request(offset, keys="k", stored=T1 + 10_000 + offset * 1000))
        for offset in range(4, 8):  # second file: T1 + 1 s .. 4 s
            service.build_index(request(offset, keys="k", stored=T1 + (offset - 3) * 1000))
        assert len(service.files) == 2
        assert service.query("T", "k", 64, T1 + 10_000, T1 + 13_000) == []
        assert service.files[0].select_phy_offsets("T#k", 64, T1 + 10_000, T1 + 13_000) == [3, 2, 1, 0]


def test_max_num_is_capped_by_max_msgs_num_batch(tmp_path):
    with writable_service(tmp_path / "index", small_config(slots=8, entries=200)) as service:
        for offset in range(100):
            service.build_index(request(offset, keys="k"))
        assert len(service.query("T", "k", 1000, *EVERYTHING)) == 64


@settings(max_examples=30, deadline=None)
@given(messages=st.lists(st.lists(st.sampled_from(["a", "b", "Aa", "BB", "z"]), max_size=3), max_size=40))
def test_service_round_trip_across_rolled_files(messages):
    with tempfile.TemporaryDirectory() as directory:
        index_dir = Path(directory) / "index"
        with writable_service(index_dir, small_config(slots=4, entries=6)) as service:
            for offset, keys in enumerate(messages):
                service.build_index(request(offset, keys=" ".join(keys)))
        with IndexService(index_dir, small_config(slots=4, entries=6)) as reader:
            reader.load(read_only=True)
            for key in {k for keys in messages for k in keys}:
                wanted = index_key_hash(IndexService.build_key("T", key))
                expected = [
                    offset
                    for offset, keys in reversed(list(enumerate(messages)))
                    for k in reversed(keys)
                    if index_key_hash(IndexService.build_key("T", k)) == wanted
                ]
                assert reader.query("T", key, 1000, *EVERYTHING, max_msgs_num_batch=1000) == expected


def test_reload_for_writing_continues_the_last_file(tmp_path):
    config = small_config(slots=4, entries=9)
    with writable_service(tmp_path / "index", config) as service:
        service.build_index(request(0, keys="a"))
    with writable_service(tmp_path / "index", config) as service:
        assert not service.files[-1].read_only
        service.build_index(request(1, keys="a"))
        assert len(service.files) == 1
        assert service.query("T", "a", 10, *EVERYTHING) == [1, 0]


def test_writable_load_refuses_a_file_of_another_size(tmp_path):
    with writable_service(tmp_path / "index", small_config(slots=4, entries=9)) as service:
        service.build_index(request(0, keys="a"))
    with pytest.raises(StoreLayoutError, match="refusing"):
        writable_service(tmp_path / "index", small_config(slots=8, entries=9))


def test_read_only_service_refuses_to_write(tmp_path):
    shutil.copytree(FIXTURE / "index", tmp_path / "index")
    with IndexService(tmp_path / "index") as service:
        service.load(read_only=True)
        with pytest.raises(StoreError, match="read-only"):
            service.build_index(request(1000, keys="x"))


def test_foreign_names_are_skipped_and_listed(tmp_path):
    index_dir = tmp_path / "index"
    shutil.copytree(FIXTURE / "index", index_dir)
    (index_dir / "notes.txt").write_text("not an index")
    (index_dir / "2026081501155170").write_bytes(b"16 digits")
    (index_dir / "20260815011551706").mkdir()  # the right name, but a directory
    with IndexService(index_dir) as service:
        service.load()
        assert service.foreign_names == ["2026081501155170", "20260815011551706", "notes.txt"]
        assert [f.name for f in service.files] == ["20260815011551705"]


def test_delete_expired_by_offset_keeps_the_newest_file(tmp_path):
    with writable_service(tmp_path / "index", small_config(slots=4, entries=5)) as service:
        for offset in range(12):  # files end at offsets 3, 7, 11
            service.build_index(request(offset, keys="k"))
        assert service.delete_expired_by_offset(3) == []  # endPhyOffset 3 is not below 3
        deleted = service.delete_expired_by_offset(8)
        assert len(deleted) == 2 and len(service.files) == 1
        assert not (tmp_path / "index" / deleted[0]).exists()
        assert service.delete_expired_by_offset(10**9) == []  # never the last file
        assert service.query("T", "k", 64, *EVERYTHING) == [11, 10, 9, 8]


def test_destroy_files_newer_than_drops_the_tail_and_writing_resumes(tmp_path):
    with writable_service(tmp_path / "index", small_config(slots=4, entries=5)) as service:
        for offset in range(10):
            service.build_index(request(offset, keys="k", stored=T1 + offset * 1000))
        # as after a crash with checkpoint.indexMsgTimestamp = end of the first file
        assert len(service.destroy_files_newer_than(T1 + 3000)) == 2
        assert len(service.files) == 1
        service.build_index(request(20, keys="k", stored=T1 + 20_000))
        assert len(service.files) == 2
        assert service.query("T", "k", 64, *EVERYTHING) == [20, 3, 2, 1, 0]


def test_a_full_disk_refuses_a_new_index_file_instead_of_a_sigbus_later(tiny_filesystem: Path):
    """Blocks are reserved when the file is made: writing entries through the mapping of a sparse file on a
    full disk would kill the process with SIGBUS."""
    (tiny_filesystem / "filler").write_bytes(b"x" * (448 * 1024))
    with pytest.raises(NoSpaceForSegmentError, match="no space"):
        IndexFile.create(tiny_filesystem / "index", hash_slot_num=4096, index_num=4096)
    assert list((tiny_filesystem / "index").iterdir()) == []  # nothing half-made left behind


def test_re_dispatching_the_record_the_index_ends_with_puts_only_its_missing_keys(tmp_path):
    """Recovery re-dispatches from the record the newest kept file ends with. Its keys may straddle that full
    file and the next one, which a crash lost: the keys already in the index are not put twice."""
    index_dir = tmp_path / "index"
    with writable_service(index_dir, small_config(slots=8, entries=4)) as service:
        service.build_index(request(0, keys="a"))
        service.build_index(request(100, keys="b c d e"))  # b, c fill the first file; d, e open the second
        lost = service.files[1].path
    lost.unlink()  # the crash: the second file is gone
    with writable_service(index_dir, small_config(slots=8, entries=4)) as service:
        assert service.query("T", "d", 10, *EVERYTHING) == []
        assert service.build_index(request(100, keys="b c d e")) == 2  # d and e only
        assert service.build_index(request(100, keys="b c d e")) == 0  # and a second time, none
        for key in "abcde":
            assert len(service.query("T", key, 10, *EVERYTHING)) == 1, key
        assert service.build_index(request(200, keys="b")) == 1  # later records are indexed as before
        assert service.query("T", "b", 10, *EVERYTHING) == [200, 100]


def test_holds_key_follows_the_chain_a_query_walks(tmp_path):
    with writable_service(tmp_path / "index", small_config(slots=1, entries=64)) as service:
        for offset in range(0, 50, 10):  # one slot: every key in one chain
            service.build_index(request(offset, keys=f"k{offset}"))
        index_file = service.files[-1]
        for offset in range(0, 50, 10):
            assert index_file.holds_key(index_key_hash(f"T#k{offset}"), offset)
        assert not index_file.holds_key(index_key_hash("T#k10"), 20)
        assert not index_file.holds_key(index_key_hash("T#k99"), 40)


def _clock_from(start_ms: int):
    now = [start_ms]

    def clock_ms() -> int:
        now[0] += 1
        return now[0]

    return clock_ms


@pytest.mark.parametrize("index_num", [5, 6, 7, 8])
@pytest.mark.parametrize("keyed_every", [1, 2, 3])
def test_build_indexes_writes_the_files_build_index_writes_one_request_at_a_time(
    tmp_path, keyed_every, index_num
):
    """A batch (the dispatcher's runs) gives the same files and bytes as one buildIndex per message: the
    rolls, a file filled by the last keyed message and followed by messages without keys (one build_index
    each would roll then), a rolled-back transaction, messages re-dispatched after recovery."""
    config = StoreConfig(max_hash_slot_num=3, max_index_num=index_num)
    requests = [
        IndexRequest(
            "Topic",
            f"k{number} shared" if number % keyed_every == 0 else None,
            None,
            1000 + 100 * number,
            1_700_000_000_000 + 1500 * number,
            0xC if number == 4 else 0,
        )
        for number in range(40)
    ]
    one_by_one, batched = tmp_path / "one", tmp_path / "batch"
    for directory, batches in (
        (one_by_one, [[request] for request in requests]),
        (batched, [requests[:3], requests[3:17], requests[17:]]),
    ):
        with IndexService(directory, config, clock_ms=_clock_from(1_700_000_000_000)) as service:
            service.load(read_only=False)
            for batch in batches:
                service.build_indexes(batch)
    assert sorted(path.name for path in batched.iterdir()) == sorted(
        path.name for path in one_by_one.iterdir()
    )
    for path in one_by_one.iterdir():
        assert (batched / path.name).read_bytes() == path.read_bytes(), path.name


def test_a_batch_ending_with_messages_without_keys_after_a_full_file_rolls_as_build_index_does(tmp_path):
    config = StoreConfig(max_hash_slot_num=3, max_index_num=3)  # two entries: the first message fills it
    requests = [
        IndexRequest("Topic", "a b", None, 1000, 1_700_000_000_000),
        IndexRequest("Topic", None, None, 1200, 1_700_000_000_500),
    ]
    for directory, batches in (
        (tmp_path / "one", [requests[:1], requests[1:]]),
        (tmp_path / "batch", [requests]),
    ):
        with IndexService(directory, config, clock_ms=_clock_from(1_700_000_000_000)) as service:
            service.load(read_only=False)
            for batch in batches:
                service.build_indexes(batch)
            assert len(service.files) == 2, "the message after the full file made the next one"
