"""The dispatcher reads runs of records a block at a time; what it writes must be what the record-by-record
walk (`checkMessageAndReturnSize` on each record, then one consume-queue entry and buildIndex per record:
the dispatcher before runs) writes for the same CommitLog, byte for byte, and it must stop where that walk
stops."""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import pytest

from store import codec
from store import commitlog as commitlog_module
from store import dispatch as dispatch_module
from store.commitlog import CommitLog
from store.config import StoreConfig, WarmupMode
from store.consume_queue import ConsumeQueue, ConsumeQueueStore
from store.consume_queue_format import enters_consume_queue
from store.dispatch import Dispatcher
from store.errors import CorruptRecord
from store.index_file import IndexRequest, IndexService
from store.layout import offset_to_file_name
from store.message_store import MessageStore

SEGMENT_BYTES = 64 * 1024
CONFIG = StoreConfig(
    mapped_file_size_commitlog=SEGMENT_BYTES,
    consume_queue_entries_per_file=100,  # entry blocks straddle consume-queue files too
    max_hash_slot_num=64,
    max_index_num=400,  # and the index rolls
)
RUST_FIXTURE = Path("/work/shared/fixtures/rocketmq-rust-0.9.0-store/local-file")


def _fixed_clock():
    now = [1_700_000_000_000]

    def clock_ms() -> int:
        now[0] += 1
        return now[0]

    return clock_ms


def _messages() -> list[list[codec.Message]]:
    """Batches of every shape the run reader meets: equal-size runs, sizes changing inside a batch, queues
    and topics alternating, keys per message or shared, no properties, a V2 topic (longer than 127
    characters), IPv6 hosts, transaction halves, and a batch with properties the parser must keep apart."""
    batches: list[list[codec.Message]] = []
    for number in range(12):
        batches.append(
            [
                codec.Message(f"Topic{number % 3}", body=bytes([number]) * 100, queue_id=number % 2,
                              properties={"TAGS": f"Tag{number % 2}"})
                for _ in range(40)
            ]
        )  # fmt: skip
    batches.append(
        [
            codec.Message("Keyed", body=os.urandom(size), properties={"KEYS": f"k{size} order-{size}"})
            for size in range(1, 90)
        ]
    )
    batches.append(
        [
            codec.Message("Keyed", body=b"x" * 64, properties={"KEYS": f"key-{n:04d}", "UNIQ_KEY": f"{n:9X}"})
            for n in range(150)
        ]
    )  # fmt: skip
    for topic in ("TopicX", "TopicY", "TopicX"):  # one run, two topics of one queue id
        batches.append([codec.Message(topic, body=b"same size", properties={"TAGS": topic})] * 30)
    batches.append([codec.Message("Bare", body=b"") for _ in range(30)])
    batches.append([codec.Message("V2" + "t" * 140, body=b"long topic", properties={"TAGS": "t"})] * 20)
    batches.append(
        [codec.Message("Six", body=b"v6", born_host=("::1", 1234), store_host=("fe80::1", 10911))] * 25
    )
    for kind in (
        codec.TRANSACTION_PREPARED_TYPE,
        codec.TRANSACTION_COMMIT_TYPE,
        codec.TRANSACTION_ROLLBACK_TYPE,
    ):
        batches.append([codec.Message("Tx", body=b"half", sysflag=kind, properties={"KEYS": "tx"})] * 3)
    batches.append(
        [codec.Message("Props", body=b"p", properties={"TAGS": "é€😀", "KEYS": " spaced  keys ", "X": "="})]
        * 10
    )
    return batches


def _write_commitlog(root: Path, rounds: int = 3) -> int:
    commit_log = CommitLog(root, CONFIG)
    commit_log.load()
    for _ in range(rounds):
        for batch in _messages():
            commit_log.put_messages(batch)
    end = commit_log.max_offset
    commit_log.mapped_file_queue.flush(0)
    commit_log.mapped_file_queue.close()
    return end


def _open_for_dispatch(root: Path) -> tuple[CommitLog, ConsumeQueueStore, IndexService]:
    commit_log = CommitLog(root, CONFIG)
    commit_log.load()
    last = commit_log.mapped_file_queue.last_file
    _end_of_records(commit_log, last)
    queues = ConsumeQueueStore(root, CONFIG)
    queues.load()
    index = IndexService(root / "index", CONFIG, clock_ms=_fixed_clock())
    index.load(read_only=False)
    return commit_log, queues, index


def _end_of_records(commit_log: CommitLog, last) -> None:
    """A loaded segment is writable to its end; the readable end is where its records stop."""
    position = 0
    with last.select(0, last.file_size) as view:
        while position + 8 <= len(view):
            size, magic = codec.peek_total_size_and_magic(view, position)
            if size <= 0 or magic == 0:
                break
            position += size
    last.set_positions(position)


class _RecordByRecord:
    """The reference: every record through the full decoder, one entry and one buildIndex each."""

    def __init__(self, commit_log: CommitLog, queues: ConsumeQueueStore, index: IndexService):
        self.commit_log, self.queues, self.index = commit_log, queues, index
        self.offset = 0
        self.error: CorruptRecord | None = None

    def run(self) -> None:
        while self.offset < self.commit_log.max_offset:
            found = self.commit_log.get_data(self.offset)
            if found is None:
                return
            view, _start = found
            with view:
                try:
                    info = codec.decode_dispatch_info(view, 0, base_offset=self.offset)
                except CorruptRecord as error:
                    self.error = error
                    return
            if isinstance(info, codec.BlankRecord):
                self.offset = self.commit_log.roll_next_file(self.offset)
                continue
            if enters_consume_queue(info.sysflag):
                queue = self.queues.find_or_create(info.topic, info.queue_id)
                queue.put_message_position_info(
                    info.physical_offset, info.size, info.tags_code, info.queue_offset
                )
            self.index.build_index(
                IndexRequest(
                    info.topic, info.keys, info.uniq_key, info.physical_offset, info.store_timestamp_ms,
                    info.sysflag,
                )
            )  # fmt: skip
            self.offset += info.size


def _files(root: Path) -> dict[str, bytes]:
    """Every consume-queue and index file's bytes, by path (index files by their order: names are times)."""
    files = {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted((root / "consumequeue").rglob("*"))
        if path.is_file()
    }
    for number, path in enumerate(sorted((root / "index").iterdir())):
        files[f"index #{number}"] = path.read_bytes()
    return files


def _close(queues: ConsumeQueueStore, index: IndexService, commit_log: CommitLog) -> None:
    queues.flush(0)
    queues.close()
    index.close()
    commit_log.mapped_file_queue.close()


def _dispatch_both(tmp_path: Path, damage=None) -> tuple[Path, Dispatcher, Path, _RecordByRecord]:
    ours, reference = tmp_path / "runs", tmp_path / "records"
    _write_commitlog(ours)
    if damage is not None:
        damage(ours)
    shutil.copytree(ours, reference)
    commit_log, queues, index = _open_for_dispatch(ours)
    dispatcher = Dispatcher(commit_log, queues, index)
    dispatcher.dispatch_until()
    _close(queues, index, commit_log)
    commit_log, queues, index = _open_for_dispatch(reference)
    walk = _RecordByRecord(commit_log, queues, index)
    walk.run()
    _close(queues, index, commit_log)
    return ours, dispatcher, reference, walk


def test_consume_queues_and_index_are_byte_identical_to_the_record_by_record_walk(tmp_path):
    ours, dispatcher, reference, walk = _dispatch_both(tmp_path)
    assert dispatcher.error is None and walk.error is None
    assert dispatcher.reput_from_offset == walk.offset
    assert len(list((ours / "commitlog").iterdir())) > 3  # across rolls
    assert len(list((ours / "index").iterdir())) > 1  # and an index roll
    ours_files, reference_files = _files(ours), _files(reference)
    assert ours_files.keys() == reference_files.keys()
    for name, data in reference_files.items():
        assert ours_files[name] == data, name


def test_plain_records_are_not_given_to_the_full_decoder(tmp_path, monkeypatch):
    """Runs are read from their header fields and tails: only BLANKs and the records a run does not take
    (transaction halves here) reach `decode_dispatch_info`, once each."""
    root = tmp_path / "store"
    _write_commitlog(root, rounds=1)
    commit_log, queues, index = _open_for_dispatch(root)
    decoded = []
    full_decoder = codec.decode_dispatch_info

    def counting(view, position=0, **kwargs):
        info = full_decoder(view, position, **kwargs)
        decoded.append(info)
        return info

    monkeypatch.setattr(codec, "decode_dispatch_info", counting)
    dispatched = Dispatcher(commit_log, queues, index).dispatch_until()
    _close(queues, index, commit_log)
    transaction_halves = 9
    blanks = sum(isinstance(info, codec.BlankRecord) for info in decoded)
    assert dispatched == sum(len(batch) for batch in _messages())
    assert len(decoded) == blanks + transaction_halves
    assert 0 < blanks < len(list((root / "commitlog").iterdir()))


def _record_offsets(root: Path) -> list[int]:
    commit_log, queues, index = _open_for_dispatch(root)
    offsets = []
    offset = 0
    while offset < commit_log.max_offset:
        view, _start = commit_log.get_data(offset)
        with view:
            size, magic = codec.peek_total_size_and_magic(view)
        if magic == codec.BLANK_MAGIC_CODE:
            offset = commit_log.roll_next_file(offset)
            continue
        offsets.append(offset)
        offset += size
    _close(queues, index, commit_log)
    return offsets


def _segment_and_position(root: Path, offset: int) -> tuple[Path, int]:
    return root / "commitlog" / f"{offset - offset % SEGMENT_BYTES:020d}", offset % SEGMENT_BYTES


def _bad_magic(data: bytearray, at: int, size: int) -> None:
    data[at + 4 : at + 8] = b"\x12\x34\x56\x78"


def _longer_total(data: bytearray, at: int, size: int) -> None:
    data[at : at + 4] = (size + 1).to_bytes(4, "big")


def _invalid_utf8_property(data: bytearray, at: int, size: int) -> None:
    data[at + size - 2] = 0xFF


def _body_past_the_topic(data: bytearray, at: int, size: int) -> None:
    data[at + 84 : at + 88] = (size - 90).to_bytes(4, "big")  # BODY length: the topic length lands elsewhere


@pytest.mark.parametrize("damage", [_bad_magic, _longer_total, _invalid_utf8_property, _body_past_the_topic])
def test_a_damaged_record_inside_a_run_stops_dispatch_where_the_full_decoder_stops(tmp_path, damage):
    """The 101st record (in the middle of a run of 40-message batches of one size and queue): the run is
    cut before it, and the full decoder reports it, as the record-by-record walk does."""

    def damage_record(root: Path) -> None:
        target = _record_offsets(root)[101]
        segment, position = _segment_and_position(root, target)
        data = bytearray(segment.read_bytes())
        size = int.from_bytes(data[position : position + 4], "big")
        damage(data, position, size)
        segment.write_bytes(bytes(data))

    ours, dispatcher, reference, walk = _dispatch_both(tmp_path, damage_record)
    assert isinstance(dispatcher.error, CorruptRecord)
    assert walk.error is not None
    assert (dispatcher.error.offset, str(dispatcher.error)) == (walk.error.offset, str(walk.error))
    assert dispatcher.reput_from_offset == walk.offset == _record_offsets(reference)[101]
    assert _files(ours) == _files(reference)


def test_the_rust_fixture_dispatched_again_gives_its_own_consume_queue(tmp_path):
    """rocketmq-rust 0.9.0 wrote this store's consume queue; dispatching its CommitLog anew gives the same
    bytes (the index is not compared: its hash-slot count, 1 or 32, is not one a writer can be told)."""
    root = tmp_path / "store"
    shutil.copytree(RUST_FIXTURE / "commitlog", root / "commitlog")
    os.chmod(root / "commitlog" / "00000000000000000000", 0o644)
    os.chmod(root / "commitlog", 0o755)
    config = StoreConfig(mapped_file_size_commitlog=4096, consume_queue_entries_per_file=10)
    commit_log = CommitLog(root, config)
    commit_log.load()
    _end_of_records(commit_log, commit_log.mapped_file_queue.last_file)
    queues = ConsumeQueueStore(root, config)
    dispatcher = Dispatcher(commit_log, queues, None)
    assert dispatcher.dispatch_until() == 2
    queues.flush(0)
    queues.close()
    commit_log.mapped_file_queue.close()
    relative = Path("consumequeue/V1UpgradeTopic/0/00000000000000000000")
    assert (root / relative).read_bytes() == (RUST_FIXTURE / relative).read_bytes()


def _crash_losing_queues_and_index(store: MessageStore) -> None:
    """A crash (nothing else is flushed, closed or removed: the abort file stays) that lost the consume
    queues and the index."""
    store._scheduler.stop()
    store._reput.stop()
    store.commit_log.shutdown()
    store._allocator.shutdown()
    store.consume_queues.close()
    store.index_service.close()
    store._lock.release()
    shutil.rmtree(store.root / "consumequeue")
    shutil.rmtree(store.root / "index")


@pytest.mark.parametrize("warmup", [WarmupMode.NONE, WarmupMode.POPULATE])
def test_dispatch_reaches_the_end_after_rolls_and_after_a_crash(tmp_path, warmup):
    """A running store dispatches across segment rolls (with POPULATE, segments the writer may take while
    they are warmed); after a crash (no shutdown: the abort file stays) with the consume queues and the
    index deleted, recovery rebuilds them to the same bytes."""
    root = tmp_path / "store"
    config = dataclasses.replace(CONFIG, warmup=warmup)
    store = MessageStore(root, config).start()
    for batch in _messages() * 3:
        store.put_messages(batch)
    end = store.commit_log.max_offset
    assert store.wait_dispatched(end, timeout_s=60)
    assert end > 3 * SEGMENT_BYTES
    store.flush()
    before = {name: data for name, data in _files(root).items() if name.startswith("consumequeue")}
    _crash_losing_queues_and_index(store)
    with MessageStore(root, config) as recovered:
        assert recovered.recovery.mode == "abnormal"
        assert recovered.dispatcher.reput_from_offset == end
        recovered.flush()
    after = {name: data for name, data in _files(root).items() if name.startswith("consumequeue")}
    assert after == before


# ---- batches handed over by the writer -------------------------------------------------------------------


def _count_records_read_from_the_log(monkeypatch) -> list[int]:
    """Records dispatched by reading the log (runs and the full decoder), as the dispatcher counts them."""
    read = []
    reading = Dispatcher._dispatch_view

    def counting(self, view, file_from_offset, end):
        dispatched = reading(self, view, file_from_offset, end)
        read.append(dispatched)
        return dispatched

    monkeypatch.setattr(Dispatcher, "_dispatch_view", counting)
    return read


def _walked_reference(root: Path, reference: Path) -> dict[str, bytes]:
    """The record-by-record walk's consume queues and index over a copy of `root`'s CommitLog."""
    shutil.copytree(root / "commitlog", reference / "commitlog")
    commit_log, queues, index = _open_for_dispatch(reference)
    walk = _RecordByRecord(commit_log, queues, index)
    walk.run()
    _close(queues, index, commit_log)
    assert walk.error is None
    return _files(reference)


def _put_every_shape(store: MessageStore, rounds: int = 3) -> int:
    for batch in _messages() * rounds:
        store.put_messages(batch)
    end = store.commit_log.max_offset
    assert store.wait_dispatched(end, timeout_s=60)
    return end


def _records_never_handed_over() -> int:
    """Records of one round of `_messages()` that the dispatcher reads from the log: transaction records
    and batches of fewer than WRITTEN_BATCH_MIN_RECORDS."""
    return sum(
        len(batch)
        for batch in _messages()
        if batch[0].sysflag & codec.TRANSACTION_TYPE_MASK
        or len(batch) < commitlog_module.WRITTEN_BATCH_MIN_RECORDS
    )


@pytest.mark.parametrize("warmup", [WarmupMode.NONE, WarmupMode.POPULATE])
def test_a_running_store_builds_from_what_it_wrote_the_bytes_the_log_gives(tmp_path, monkeypatch, warmup):
    """MessageStore's dispatcher takes the packed batches from the writer instead of reading them back:
    across segment, consume-queue and index rolls, its consume queues and index are byte for byte what the
    record-by-record walk of the same CommitLog builds, and only transaction records and small batches
    were read."""
    read = _count_records_read_from_the_log(monkeypatch)
    root = tmp_path / "store"
    with MessageStore(root, dataclasses.replace(CONFIG, warmup=warmup)) as store:
        end = _put_every_shape(store)
    assert end > 3 * SEGMENT_BYTES
    assert 0 < sum(read) == 3 * _records_never_handed_over() < 3 * sum(map(len, _messages())) / 2
    ours, reference = _files(root), _walked_reference(root, tmp_path / "reference")
    assert len([name for name in ours if name.startswith("index")]) > 1
    assert ours.keys() == reference.keys()
    for name, data in reference.items():
        assert ours[name] == data, name


def test_after_a_crash_recovery_rebuilds_from_the_log_what_the_batches_handed_over_built(tmp_path):
    """The batches handed over live only in memory: after a crash, with the consume queues and the index
    lost, recovery reads the CommitLog and builds the same bytes as the running store and the walk did."""
    root = tmp_path / "store"
    store = MessageStore(root, CONFIG).start()
    end = _put_every_shape(store)
    store.flush()
    before = _files(root)
    _crash_losing_queues_and_index(store)
    with MessageStore(root, CONFIG) as recovered:
        assert recovered.recovery.mode == "abnormal"
        assert recovered.dispatcher.reput_from_offset == end
        assert not recovered.dispatcher._written  # nothing was put: all of it came from the log
    assert _files(root) == before == _walked_reference(root, tmp_path / "reference")


@pytest.mark.parametrize("kept", [0, 3])
def test_batches_not_handed_over_are_read_from_the_log(tmp_path, monkeypatch, kept):
    """The writer hands over at most WRITTEN_BATCHES_KEPT batches the dispatcher has not taken; a
    dispatcher further behind reads the others (before, between and after those) from the log."""
    monkeypatch.setattr(commitlog_module, "WRITTEN_BATCHES_KEPT", kept)
    read = _count_records_read_from_the_log(monkeypatch)
    root = tmp_path / "store"
    commit_log = CommitLog(root, CONFIG)
    commit_log.load()
    queues = ConsumeQueueStore(root, CONFIG)
    index = IndexService(root / "index", CONFIG, clock_ms=_fixed_clock())
    index.load(read_only=False)
    dispatcher = Dispatcher(commit_log, queues, index)
    batches = _messages()
    for number, batch in enumerate(batches * 2):
        commit_log.put_messages(batch)
        if number == len(batches):  # dispatch halfway: the next ones are handed over again
            dispatcher.dispatch_until()
    assert dispatcher.dispatch_until() and dispatcher.reput_from_offset == commit_log.max_offset
    _close(queues, index, commit_log)
    handed_over = 2 * kept * 40  # the first batches hold 40 records each
    assert commitlog_module.WRITTEN_BATCH_MIN_RECORDS <= 40
    assert sum(read) == 2 * sum(map(len, batches)) - handed_over
    assert _files(root) == _walked_reference(root, tmp_path / "reference")


def test_records_with_a_crc_property_are_read_from_the_log(tmp_path, monkeypatch):
    """With enabledAppendPropCRC the writer fills each record's __CRC32# as it writes: nothing is handed
    over, and the consume queues and the index are still the walk's."""
    read = _count_records_read_from_the_log(monkeypatch)
    root = tmp_path / "store"
    with MessageStore(root, dataclasses.replace(CONFIG, enabled_append_prop_crc=True)) as store:
        _put_every_shape(store, rounds=1)
    assert sum(read) == sum(map(len, _messages()))
    assert _files(root) == _walked_reference(root, tmp_path / "reference")


@pytest.mark.parametrize("tags_code", [0, 1, -1, -(1 << 63), (1 << 63) - 1])
def test_entries_of_back_to_back_records_are_the_one_by_one_entries(tmp_path, tags_code):
    """Consume-queue entries of a run of equal-size records (packed from a cached block) are what one
    entry per record writes: physical offsets far past 4 GiB, any tags code (negative ones too)."""
    size, first = 1_171, (5 << 40) + 12_345
    blocks, one_by_one = (ConsumeQueue(tmp_path / name, "T", 0, CONFIG) for name in ("blocks", "one"))
    for start in (0, 300):  # the second run straddles a file of 100 entries
        offsets = range(first + start * size, first + (start + 300) * size, size)
        blocks.put_positions(range(start, start + 300), offsets, size, [tags_code] * 300)
        for queue_offset, physical_offset in enumerate(offsets, start):
            one_by_one.put_message_position_info(physical_offset, size, tags_code, queue_offset)
    for queue in (blocks, one_by_one):
        queue.mapped_file_queue.flush(0)
        queue.mapped_file_queue.close()
    files = {
        name: sorted((path.name, path.read_bytes()) for path in (tmp_path / name).rglob("0000*"))
        for name in ("blocks", "one")
    }
    assert files["blocks"] == files["one"]
    assert len(files["one"]) == 6


def test_dispatch_from_records_retention_deleted_goes_on_at_the_first_segment(tmp_path, caplog):
    """RocketMQ's doReput: a reput offset below the CommitLog's first segment (recovery's plan after
    retention deleted the oldest ones, as in a demo's second run) moves up to it. Dispatch stood still
    there: get_data finds no segment, so nothing was ever dispatched again."""
    root = tmp_path / "store"
    _write_commitlog(root, rounds=1)
    (root / "commitlog" / offset_to_file_name(0)).unlink()
    commit_log, queues, index = _open_for_dispatch(root)
    assert commit_log.min_offset == SEGMENT_BYTES
    dispatcher = Dispatcher(commit_log, queues, index)
    assert dispatcher.reput_from_offset == 0
    assert dispatcher.dispatch_until() > 0
    assert dispatcher.reput_from_offset == commit_log.max_offset and dispatcher.error is None
    _close(queues, index, commit_log)
    assert f"dispatch goes on at {SEGMENT_BYTES}" in caplog.text


def test_with_a_transient_store_pool_batches_are_dispatched_once_committed(tmp_path, monkeypatch):
    """With a transient store pool a batch is handed over when written into the pool buffer, before it is
    committed to the file readers see: dispatch waits for the commit (no entry points past the readable
    end), a clean shutdown commits and dispatches the last puts (it left them to the next recovery), and
    the consume queues and the index are the walk's."""
    entries_past_the_readable_end = []
    put_positions = ConsumeQueue.put_positions

    def checking(self, queue_offsets, physical_offsets, sizes, tags_codes):
        last_end = physical_offsets[-1] + (sizes if isinstance(sizes, int) else sizes[-1])
        if last_end > store.commit_log.max_offset:
            entries_past_the_readable_end.append(last_end)
        return put_positions(self, queue_offsets, physical_offsets, sizes, tags_codes)

    monkeypatch.setattr(ConsumeQueue, "put_positions", checking)
    root = tmp_path / "store"
    # a buffer for every segment the puts fill: the pool never runs out, whenever the commits come
    config = dataclasses.replace(CONFIG, transient_store_pool_enable=True, transient_store_pool_size=16)
    with MessageStore(root, config) as store:
        _put_every_shape(store, rounds=2)
    assert not entries_past_the_readable_end
    assert not (root / "abort").exists(), "dispatch reached the end of the log at shutdown"
    assert _files(root) == _walked_reference(root, tmp_path / "reference")


class _CountingDispatcher:
    """Stands in for a Dispatcher: each pass finds the next of `found` records."""

    def __init__(self, found: list[int]):
        self.found = found
        self.passes = 0

    def dispatch_until(self) -> int:
        self.passes += 1
        return self.found.pop(0) if self.found else 0


def test_behind_a_busy_writer_the_reput_thread_takes_a_slice_of_puts_per_pass(monkeypatch):
    """Woken after every put, the reput thread took the GIL from the writer every switch interval (~100-140
    passes a second at 1 KiB): a pass that found BUSY_PASS_RECORDS or more waits DISPATCH_SLICE_S before the
    next (on the stop event: stop() cuts it short, then dispatches the rest), a pass that found fewer goes
    back to waiting for the next put at once."""
    service = dispatch_module.ReputMessageService(_CountingDispatcher([dispatch_module.BUSY_PASS_RECORDS, 3]))
    waits = []
    monkeypatch.setattr(service._stopped, "wait", lambda seconds: waits.append(seconds))
    service.wakeup()
    service.run_once()  # a busy pass: a slice follows
    assert waits == [dispatch_module.DISPATCH_SLICE_S]
    service.wakeup()
    service.run_once()  # 3 records: no slice
    assert waits == [dispatch_module.DISPATCH_SLICE_S]
    assert service.dispatcher.passes == 2
