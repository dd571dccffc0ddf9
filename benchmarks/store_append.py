"""Append and consume throughput of the store, against the raw floor, sqlite3 and lmdb, in one run.

For each body size (default 128 B, 1 KiB, 4 KiB), single-threaded, ASYNC flush, warmed segments:

- mqinspect: CommitLog.put_message and the batch API put_messages (batches of 64 and 256) into one segment
  warmed before the clock starts, with the ASYNC flush service running; x256 again across segment rolls,
  with the allocation service that warms each new segment, as MessageStore wires it; x256 with a KEYS
  property per message, which the batch encoder cannot share; and MessageStore.put_messages with its
  dispatcher and index running, which share the interpreter with the producer, timed until dispatch has
  caught up with the last put, and the Dispatcher alone over a CommitLog written beforehand;
- the raw floor: one pre-encoded record copied again and again into a warmed mapping of the segment size;
- the fresh-page floor of the rolls case: the same records copied 1 MiB at a time into new segments nobody
  warmed, the rate at which the machine hands a writer new zeroed pages;
- sqlite3 (WAL, synchronous=NORMAL, executemany in one transaction per batch) and lmdb (writemap, no sync
  at commit, putmulti with append=True; skipped when the module is missing);
- consuming: MessageStore.get_messages loops over the ConsumeQueue, returning zero-copy memoryviews.

Targets (PASS/MISS): the batch put rates; MessageStore.put_messages with dispatch caught up at >= 500k
msgs/s at 128 B and >= 80% of the CommitLog-only rate at 1 KiB; across rolls >= 90% of the fresh-page
floor; consuming. The rolls case says where its time went: waits in the put lock for a segment, the
writer's kernel time and page faults, how much of each new segment was warmed when the writer took it, how
long a segment's warm-up took against the writer's rate, and the puts over 5 ms by where they wrote (pages
not yet warmed, a roll, warmed pages) with the writer's CPU time in them; and how fast a new segment's
pages come when as many were freed just before and 3 s before, and the allocator thread's CPU, its wait
for a CPU and its time parked ahead of the writer. The +dispatch case gives the writer's and the dispatcher
thread's CPU per message and the writer's page faults; it and its CommitLog-only reference are timed from
SETTLE_BYTES into their segment (see there).

MB/s counts body bytes (1 MB = 10^6 bytes) so the engines compare on payload; records add ~110 bytes of
header, topic and properties each. Everything runs in a temporary directory on the real disk (default
under /tmp, ext4 here), because page-cache behaviour is the point, and is deleted afterwards.

    .venv/bin/python benchmarks/store_append.py            # about 2-3 minutes on 2 cores
    .venv/bin/python benchmarks/store_append.py --quick    # about 30 s
    .venv/bin/python benchmarks/store_append.py --cases store,rolls --sizes 128,1024,4096   # items 3 and 4
    .venv/bin/python benchmarks/store_append.py --profile  # plus where the batch path spends its time
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import dataclasses
import gc
import io
import itertools
import operator
import os
import pstats
import shutil
import sqlite3
import struct
import sys
import tempfile
import time
import timeit
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from store import codec  # noqa: E402
from store.commitlog import CommitLog  # noqa: E402
from store.config import MiB, StoreConfig, WarmupMode  # noqa: E402
from store.consume_queue import ConsumeQueueStore  # noqa: E402
from store.dispatch import Dispatcher  # noqa: E402
from store.index_file import IndexService  # noqa: E402
from store.layout import offset_to_file_name  # noqa: E402
from store.mapped_file import MappedFile  # noqa: E402
from store.mapped_file_queue import AllocateMappedFileService  # noqa: E402
from store.message_store import MessageStore  # noqa: E402

try:
    import lmdb
except ImportError:
    lmdb = None

TOPIC = "BenchTopic"
TAGS = {"TAGS": "TagA"}
BODY_POOL_BYTES = 16 * MiB  # distinct bodies cycled through, so the CPU caches do not hold them all
TARGET_SMALL_MSGS_PER_S = 1_000_000
TARGET_SMALL_FLOOR_SHARE = 0.5
TARGET_LARGE_BYTES_PER_S = 2e9
TARGET_CONSUME_MSGS_PER_S = 2_000_000
TARGET_DISPATCHED_SMALL_MSGS_PER_S = 500_000  # MessageStore.put_messages, dispatch caught up, 128 B
TARGET_DISPATCHED_SHARE_1K = 0.8  # of the CommitLog-only put_messages rate, 1 KiB
TARGET_ROLLS_FRESH_SHARE = 0.9  # across rolls, of writing the same records into fresh, never-touched pages
DISPATCH_CATCH_UP_S = 60.0  # the longest the timed store case waits for dispatch after its last put
# Groups of cases, for --cases: puts into one warmed segment, across rolls (with the fresh-page floor), with
# dispatch (MessageStore), the raw floor, the other engines, consuming.
CASES = ("put", "rolls", "store", "floor", "engines", "consume")
LMDB_MAP_SIZE = 64 << 30  # address space only: the file grows with what is written


@dataclass(frozen=True)
class Result:
    size: int
    case: str
    messages: int
    seconds: float
    note: str = ""
    caught_up: bool = True  # MessageStore: dispatch reached the last put within the time
    cpu_us_per_msg: float | None = None  # CPU time of all the process's threads per message
    bound: str = ""  # across rolls: what the pages cost, for the target's MISS line

    @property
    def msgs_per_s(self) -> float:
        return self.messages / self.seconds

    @property
    def mb_per_s(self) -> float:
        return self.messages * self.size / self.seconds / 1e6


@dataclass(frozen=True)
class Settings:
    sizes: tuple[int, ...]
    batches: tuple[int, ...]
    consume_batches: tuple[int, ...]
    seconds: float
    segment_bytes: int
    warmup: WarmupMode
    directory: Path
    consumed_messages: int  # the queue the consume loops walk over and over
    profile: bool
    cases: frozenset[str] = frozenset(CASES)

    def store_config(self, **changes) -> StoreConfig:
        return StoreConfig(mapped_file_size_commitlog=self.segment_bytes, warmup=self.warmup, **changes)


# ---- workload ------------------------------------------------------------------------------------------


def make_bodies(size: int) -> list[bytes]:
    return [os.urandom(size) for _ in range(max(64, BODY_POOL_BYTES // size))]


def make_batches(
    bodies: list[bytes], batch: int, keys_per_message: bool = False
) -> list[list[codec.Message]]:
    """Batches of messages for one queue cycling through `bodies`; born timestamp shared, as in a
    MessageExtBatch. `keys_per_message` gives each message its own KEYS, as a producer with business keys."""
    born = time.time_ns() // 1_000_000
    messages = [
        codec.Message(
            TOPIC,
            body=body,
            properties={**TAGS, codec.PROPERTY_KEYS: f"order-{number}"} if keys_per_message else TAGS,
            born_timestamp_ms=born,
        )
        for number, body in enumerate(bodies)
    ]
    usable = len(messages) - len(messages) % batch or len(messages)
    return [messages[start : start + batch] for start in range(0, usable, batch)]


def run_for(
    seconds: float, step: Callable[[], int], room_for_more: Callable[[], bool] = lambda: True
) -> tuple[int, float]:
    """Call `step` (which returns how many messages it handled) until `seconds` have passed or
    `room_for_more()` turns false."""
    gc.collect()  # start every case with the same heap: garbage from the last case is not this one's cost
    handled = 0
    started = time.perf_counter()
    deadline = started + seconds
    while time.perf_counter() < deadline and room_for_more():
        handled += step()
    return handled, time.perf_counter() - started


def cycling(items: Sequence) -> Callable[[], object]:
    iterator = itertools.cycle(items)
    return iterator.__next__


# ---- mqinspect: the put path ------------------------------------------------------------------------


@contextlib.contextmanager
def running_commit_log(
    settings: Settings, root: Path
) -> Iterator[tuple[CommitLog, AllocateMappedFileService]]:
    """A CommitLog wired as MessageStore wires it for puts: allocation service (which warms each new
    segment, and the one after it in the background) and the ASYNC flush service, without the dispatcher."""
    config = settings.store_config()
    allocator = AllocateMappedFileService(config).start()
    commit_log = CommitLog(root, config, allocate_service=allocator)
    commit_log.load()
    commit_log.start()
    try:
        yield commit_log, allocator
    finally:
        commit_log.shutdown()
        allocator.shutdown()
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def one_warmed_segment(settings: Settings, root: Path) -> Iterator[CommitLog]:
    """A CommitLog whose first segment is created and warmed before anything is timed, with the ASYNC flush
    service running and no allocation service: nothing else competes for the second core while the put
    path is measured. The caller stops before the segment fills."""
    commit_log = CommitLog(root, settings.store_config())
    commit_log.load()
    commit_log.mapped_file_queue.get_last_file(0, create=True).warm(settings.warmup)
    commit_log.start()
    try:
        yield commit_log
    finally:
        commit_log.shutdown()
        shutil.rmtree(root, ignore_errors=True)


def measure_put(settings: Settings, root: Path, size: int, batches: list, case: str, single: bool) -> Result:
    """Puts into one segment warmed before the clock starts: the encoding and writing path, with the ASYNC
    flush service running but no segment roll (`measure_sustained` has those)."""
    with one_warmed_segment(settings, root) as commit_log:
        probe = batches[0][:1] if single else batches[0]
        first = commit_log.put_messages(probe)
        verify_batch(commit_log, first, probe)
        step = single_putter(commit_log, batches) if single else batch_putter(commit_log, batches)
        step_bytes = first.wrote_bytes // len(probe) * (SINGLES_PER_STEP if single else BATCHED_PER_STEP)
        settled = "" if single else settle(settings, commit_log, step)

        def room_for_more() -> bool:
            return commit_log.max_offset + 2 * step_bytes < settings.segment_bytes

        cpu_began, faults_before = time.process_time(), ThreadTimes.now().minor_faults
        count, elapsed = run_for(settings.seconds, step, room_for_more)
        cpu_s = time.process_time() - cpu_began
        faults = ThreadTimes.now().minor_faults - faults_before
        probe = batches[-1][:1] if single else batches[-1]
        verify_batch(commit_log, commit_log.put_messages(probe), probe)
        note = f"CPU {cpu_s / max(count, 1) * 1e6:.2f} us/msg (all threads), {faults:,} page faults{settled}"
        if not room_for_more():
            note += "; segment full before the time was up"
    return Result(size, case, count, elapsed, note, cpu_us_per_msg=cpu_s / max(count, 1) * 1e6)


SINGLES_PER_STEP = 256
BATCHED_PER_STEP = 1024
# Written before the clock starts, in the CommitLog-only and the +dispatch case alike: the first ~40 MiB of
# a freshly warmed segment sometimes (in either case, at random: 5 of 5 +dispatch runs on 3d9c4d4, 2 of 6
# CommitLog-only ones) take a write-protect fault on every page (traced: error code 7, offsets 0.3-40 MiB,
# ~10 us each, +0.2-0.4 us of the writer's CPU per message over a 1 s window) and the one that got them
# lost 10-30 points of the ratio. Segment starts are the rolls case's to measure.
SETTLE_BYTES = 64 * MiB


def settle(settings: Settings, commit_log: CommitLog, step: Callable[[], int]) -> str:
    """Put untimed until SETTLE_BYTES are written into the segment (when it holds four times that);
    returns what the note says about it."""
    if settings.segment_bytes < 4 * SETTLE_BYTES:
        return ""
    faults_before = ThreadTimes.now().minor_faults
    while commit_log.max_offset < SETTLE_BYTES:
        step()
    faults = ThreadTimes.now().minor_faults - faults_before
    return f"; timed from {SETTLE_BYTES // MiB} MiB into the segment (those took {faults:,} page faults)"


def single_putter(commit_log: CommitLog, batches: list) -> Callable[[], int]:
    next_message = cycling([message for batch in batches for message in batch])
    put = commit_log.put_message

    def step() -> int:
        for _ in range(SINGLES_PER_STEP):
            put(next_message())
        return SINGLES_PER_STEP

    return step


def batch_putter(commit_log: CommitLog, batches: list) -> Callable[[], int]:
    next_batch = cycling(batches)
    put_batch = commit_log.put_messages
    repeats = max(1, BATCHED_PER_STEP // len(batches[0]))

    def step() -> int:
        for _ in range(repeats):
            put_batch(next_batch())
        return repeats * len(batches[0])

    return step


def measure_sustained(settings: Settings, root: Path, size: int, batches: list) -> Result:
    """Batched puts across segment rolls: the writer also waits for the next segment to be allocated and
    warmed, and for the flush service's msync, which holds the GIL in CPython 3.11 (mmap.flush). The note
    says where the time went: waits in the put lock for a segment, the writer's own kernel time (its page
    faults: zeroing the pages the warm-up had not reached), and how far ahead the allocator was."""
    next_batch = cycling(batches)
    stalls = Stalls()
    with running_commit_log(settings, root) as (commit_log, allocator):
        batch_bytes = commit_log.put_messages(batches[0]).wrote_bytes
        allocator.wait_idle(60)  # start with the first segment and the next one warmed
        put_batch = commit_log.put_messages
        segments = commit_log.mapped_file_queue
        stats_before = dataclasses.replace(allocator.stats, lead_bytes=[])
        writer_before = ThreadTimes.now()
        allocator_thread = allocator._thread.native_id
        allocator_before = ThreadTimes.now(allocator_thread)

        def step() -> int:
            segment = segments.last_file
            unwarmed = segment.wrote_position + batch_bytes > segment.warmed_bytes
            began, cpu_began = time.perf_counter(), time.thread_time()
            result = put_batch(next_batch())
            took = time.perf_counter() - began
            if took > STALL_S:
                kind = "roll" if segments.last_file is not segment else "unwarmed" if unwarmed else "warmed"
                stalls.add(kind, took, result.in_lock_ms / 1000, time.thread_time() - cpu_began)
            return len(batches[0])

        cpu_began = time.process_time()
        count, elapsed = run_for(SUSTAINED_RUNS * settings.seconds, step)
        cpu_s = time.process_time() - cpu_began
        writer = ThreadTimes.now() - writer_before
        warmer = ThreadTimes.now(allocator_thread) - allocator_before
        rolls = commit_log.max_offset // settings.segment_bytes
        stats = allocator.stats
        handed = stats.handed_over - stats_before.handed_over
        ready_ahead = stats.ready_ahead - stats_before.ready_ahead
        waited_s = stats.waited_s - stats_before.waited_s
        leads = stats.lead_bytes[stats_before.handed_over :]
        warmed_files = stats.warmed_files - stats_before.warmed_files
        warm_s = stats.warm_s - stats_before.warm_s
        parked_s = stats.parked_s - stats_before.parked_s
    lead = (
        f"lead at each roll {', '.join(f'{b / MiB:.0f}' for b in leads)} MiB warmed" if leads else "no roll"
    )
    written_per_s = count * batch_bytes / len(batches[0]) / elapsed
    warm_up = "no warm-up finished"
    bound = f"the writer wrote {written_per_s / 1e9:.2f} GB/s; {stalls.describe()}"
    if warmed_files and warm_s:
        each_s = warm_s / warmed_files
        warm_up = (
            f"a segment's warm-up took {each_s:.2f} s ({settings.segment_bytes / each_s / 1e9:.2f} GB/s), "
            f"the writer wrote {written_per_s / 1e9:.2f} GB/s"
        )
        bound = (
            f"the allocator's warm-up made new pages at {settings.segment_bytes / each_s / 1e9:.2f} GB/s "
            f"while {bound}; {warmer.describe('allocator thread', elapsed, parked_s)}"
        )
        warm_up += f"; {warmer.describe('allocator thread', elapsed, parked_s)}"
    note = (
        f"CPU {cpu_s / max(count, 1) * 1e6:.2f} us/msg; {settings.segment_bytes // MiB} MiB segments, "
        f"{rolls} rolls, {ready_ahead} of {handed} segments ready ahead; put lock waited {waited_s:.2f} s "
        f"for segments; {lead}; {warm_up}; writer on CPU {writer.user_s + writer.system_s:.2f} of "
        f"{elapsed:.2f} s ({writer.system_s:.2f} s in the kernel, {writer.minor_faults:,} page faults); "
        f"{stalls.describe()}"
    )
    return Result(size, f"put_messages x{len(batches[0])}, across rolls", count, elapsed, note, bound=bound)


@dataclass
class Stalls:
    """Puts over STALL_S by where they wrote: into pages the segment's warm-up had not reached when the put
    began (the writer makes them itself: page faults, zeroing), at a roll (waiting for the next segment),
    or into warmed pages (then the time off CPU is another thread holding the GIL or the CPU taken)."""

    took_s: dict[str, float] = dataclasses.field(default_factory=dict)
    in_lock_s: dict[str, float] = dataclasses.field(default_factory=dict)
    on_cpu_s: dict[str, float] = dataclasses.field(default_factory=dict)

    KINDS: ClassVar[dict[str, str]] = {
        "unwarmed": "into pages not yet warmed",
        "roll": "at rolls",
        "warmed": "into warmed pages",
    }

    def add(self, kind: str, took_s: float, in_lock_s: float, on_cpu_s: float) -> None:
        for table, value in ((self.took_s, took_s), (self.in_lock_s, in_lock_s), (self.on_cpu_s, on_cpu_s)):
            table[kind] = table.get(kind, 0.0) + value

    def describe(self) -> str:
        total = sum(self.took_s.values())
        parts = [
            f"{self.took_s[kind]:.2f} s {label} ({self.in_lock_s[kind]:.2f} s in the put lock, writer on CPU "
            f"{self.on_cpu_s[kind]:.2f} s)"
            for kind, label in self.KINDS.items()
            if kind in self.took_s
        ]
        in_lock_s = sum(self.in_lock_s.values())
        return (
            f"puts over {STALL_S * 1000:.0f} ms took {total:.2f} s ({in_lock_s:.2f} s in the put lock)"
            f"{': ' + ', '.join(parts) if parts else ''}"
        )


@dataclass(frozen=True)
class ThreadTimes:
    """A thread's CPU times and minor page faults (/proc/thread-self/stat, /proc/self/task/TID/stat), and
    the time it waited runnable for a CPU (schedstat's run delay: the machine's cores were taken)."""

    user_s: float
    system_s: float
    minor_faults: int
    runnable_wait_s: float = 0.0

    @classmethod
    def now(cls, thread_id: int | None = None) -> ThreadTimes:
        """The calling thread's, or those of the thread whose native id is `thread_id`."""
        task = "/proc/thread-self" if thread_id is None else f"/proc/self/task/{thread_id}"
        with open(f"{task}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        waited_ns = 0
        with contextlib.suppress(OSError, ValueError, IndexError), open(f"{task}/schedstat") as schedstat:
            waited_ns = int(schedstat.read().split()[1])
        ticks = os.sysconf("SC_CLK_TCK")
        return cls(int(fields[11]) / ticks, int(fields[12]) / ticks, int(fields[7]), waited_ns / 1e9)

    def __sub__(self, other: ThreadTimes) -> ThreadTimes:
        return ThreadTimes(
            self.user_s - other.user_s,
            self.system_s - other.system_s,
            self.minor_faults - other.minor_faults,
            self.runnable_wait_s - other.runnable_wait_s,
        )

    def describe(self, name: str, elapsed_s: float, parked_s: float = 0.0) -> str:
        """On CPU, waiting for one, and the rest of `elapsed_s` (asleep, or blocked in the kernel)."""
        on_cpu_s = self.user_s + self.system_s
        parked = f", parked for the writer {parked_s:.2f} s" if parked_s else ""
        return (
            f"{name} on CPU {on_cpu_s:.2f} s ({self.system_s:.2f} s in the kernel), runnable but waiting "
            f"for a CPU {self.runnable_wait_s:.2f} s{parked}, of {elapsed_s:.2f} s"
        )


def measure_fresh_floor(settings: Settings, root: Path, size: int, record: bytes) -> Result:
    """The rolls' floor: the records' bytes copied, 1 MiB at a time, into freshly created segments that
    nobody warmed (a new one when one fills), as long as the rolls case runs. Every page is a first touch
    and the copy costs next to nothing, so this is the rate at which this machine hands a writer new zeroed
    pages: no writer that needs new pages keeps up a higher one for long, whatever warms them.

    Each file is deleted as the next one is made, so after the first its pages are the ones just freed,
    which may come cheaper than the rolls case's (see measure_page_supply, printed with --cases rolls)."""
    root.mkdir(parents=True)
    per_chunk = max(1, MiB // len(record))
    chunk = record * per_chunk
    last_start = settings.segment_bytes - len(chunk)
    segments = itertools.count()
    state: dict = {}

    def next_segment() -> None:
        drop_segment()
        offset = next(segments) * settings.segment_bytes
        segment = MappedFile.create(root / offset_to_file_name(offset), settings.segment_bytes)
        state.update(segment=segment, view=segment.reserve(settings.segment_bytes).view, position=0)

    def drop_segment() -> None:
        if "segment" in state:
            state.pop("view").release()
            state.pop("segment").destroy(0)

    def step() -> int:
        if state["position"] > last_start:
            next_segment()
        position = state["position"]
        state["view"][position : position + len(chunk)] = chunk
        state["position"] = position + len(chunk)
        return per_chunk

    try:
        next_segment()
        count, elapsed = run_for(SUSTAINED_RUNS * settings.seconds, step)
        filled = next(segments)
    finally:
        drop_segment()
        shutil.rmtree(root, ignore_errors=True)
    note = (
        f"{len(record)}-byte records, {count * len(record) / elapsed / 1e6:,.0f} MB/s into {filled} new files"
    )
    return Result(size, "fresh-page floor: copy into new mmaps", count, elapsed, note)


PAGE_SUPPLY_BYTES = 256 * MiB
PAGE_REPORTING_WAIT_S = 3.0  # Linux reports free pages to the hypervisor 2 s after they are freed


def measure_page_supply(root: Path) -> str:
    """How fast the warm-up (MADV_POPULATE_WRITE, as the allocator does it) gets a new segment's pages when
    as many pages were freed just before, and when they were freed PAGE_REPORTING_WAIT_S before: on a VM
    with free page reporting (this one has virtio-balloon) the second ones may have gone back to the host,
    whose first touch is then a host fault too. The rolls case's segments get pages of the second kind
    unless something freed pages just before; the fresh-page floor recycles its own."""
    root.mkdir(parents=True)
    rates = []
    try:
        for wait_s in (0.0, PAGE_REPORTING_WAIT_S):
            freed = MappedFile.create(root / offset_to_file_name(0), PAGE_SUPPLY_BYTES)
            freed.warm(WarmupMode.POPULATE)
            freed.destroy(0)
            time.sleep(wait_s)
            fresh = MappedFile.create(root / offset_to_file_name(PAGE_SUPPLY_BYTES), PAGE_SUPPLY_BYTES)
            began = time.perf_counter()
            fresh.warm(WarmupMode.POPULATE)
            rates.append(PAGE_SUPPLY_BYTES / (time.perf_counter() - began) / 1e9)
            fresh.destroy(0)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return (
        f"  pages: a new {PAGE_SUPPLY_BYTES // MiB} MiB segment's warm-up makes {rates[0]:.2f} GB/s when as "
        f"many pages were freed just before, {rates[1]:.2f} GB/s when they were freed "
        f"{PAGE_REPORTING_WAIT_S:.0f} s before"
    )


STALL_S = 0.005
SUSTAINED_RUNS = 2  # twice as long as the other cases, so that it spans rolls and several flushes


def verify_batch(commit_log: CommitLog, result, batch: list[codec.Message]) -> None:
    """The batch just written decodes, CRCs checked, to the bodies that were put."""
    position = result.physical_offset
    for message in batch:
        head = commit_log.get_message(position, 8)
        size, _magic = codec.peek_total_size_and_magic(head)
        record = codec.decode_record(commit_log.get_message(position, size), check_crc=True)
        if bytes(record.body) != bytes(message.body) or record.properties != message.properties:
            raise SystemExit(f"record at {position} does not hold the message that was put")
        position += size


def measure_store_put(settings: Settings, root: Path, size: int, batches: list) -> Result:
    """MessageStore.put_messages with the dispatcher and index building running: they share the GIL. The
    time runs until dispatch has caught up with the last put (consumers see every message), or gives up
    after DISPATCH_CATCH_UP_S and says how far behind it was."""
    next_batch = cycling(batches)
    seconds = min(settings.seconds, 1.0)
    with MessageStore(root, settings.store_config()) as store:
        store.put_messages(batches[0])
        store.allocator.wait_idle(60)  # the segment written and the next one warmed, as for CommitLog-only
        put_batch = store.put_messages

        def step() -> int:
            for _ in range(4):
                put_batch(next_batch())
            return 4 * len(batches[0])

        settled = settle(settings, store.commit_log, step)
        store.wait_dispatched(store.commit_log.max_offset, 30)

        dispatcher_thread = store._reput._thread.native_id
        cpu_began = time.process_time()
        writer_before, dispatcher_before = ThreadTimes.now(), ThreadTimes.now(dispatcher_thread)
        count, putting_s = run_for(seconds, step)
        written = store.commit_log.max_offset
        behind_at_last_put = written - store.dispatcher.reput_from_offset
        began = time.perf_counter()
        caught_up = store.wait_dispatched(written, DISPATCH_CATCH_UP_S)
        catching_up_s = time.perf_counter() - began
        cpu_s = time.process_time() - cpu_began
        writer = ThreadTimes.now() - writer_before
        dispatcher = ThreadTimes.now(dispatcher_thread) - dispatcher_before
        behind = written - store.dispatcher.reput_from_offset
    shutil.rmtree(root, ignore_errors=True)
    lag = (
        f"dispatch {behind_at_last_put / MiB:.1f} MiB behind at the last put, "
        f"caught up {catching_up_s:.2f} s later"
        if caught_up
        else f"dispatch NOT caught up: {behind / MiB:.1f} MiB behind {catching_up_s:.0f} s after the last put"
    )
    per_message_us = 1e6 / max(count, 1)
    lag += (
        f"; CPU {cpu_s * per_message_us:.2f} us/msg (all threads): writer "
        f"{(writer.user_s + writer.system_s) * per_message_us:.2f} ({writer.minor_faults:,} page faults), "
        f"dispatcher thread {(dispatcher.user_s + dispatcher.system_s) * per_message_us:.2f}{settled}"
    )
    case = f"MessageStore.put_messages x{len(batches[0])} +dispatch"
    return Result(
        size,
        case,
        count,
        putting_s + catching_up_s,
        lag,
        caught_up=caught_up,
        cpu_us_per_msg=cpu_s * per_message_us,
    )


def measure_dispatch_alone(settings: Settings, root: Path, size: int, batches: list) -> Result:
    """The dispatcher by itself: a CommitLog of `consumed_messages` records written first (no dispatch),
    then one Dispatcher.dispatch_until into new consume queues and a new index, timed: the rate at which
    dispatch catches up when it has the interpreter to itself."""
    config = settings.store_config()
    commit_log = CommitLog(root, config)
    commit_log.load()
    next_batch = cycling(batches)
    while commit_log.max_offset < settings.consumed_messages * (size + 110):
        commit_log.put_messages(next_batch())
    queues = ConsumeQueueStore(root, config)
    index = IndexService(root / "index", config)
    index.load(read_only=False)
    try:
        dispatcher = Dispatcher(commit_log, queues, index)
        gc.collect()
        cpu_began, began = time.process_time(), time.perf_counter()
        count = dispatcher.dispatch_until()
        elapsed, cpu_s = time.perf_counter() - began, time.process_time() - cpu_began
        caught_up = dispatcher.reput_from_offset == commit_log.max_offset
    finally:
        queues.close()
        index.close()
        commit_log.mapped_file_queue.close()
        shutil.rmtree(root, ignore_errors=True)
    state = "caught up" if caught_up else "NOT caught up"
    note = f"{count:,} records, {state}; CPU {cpu_s / count * 1e6:.2f} us/record"
    return Result(size, "Dispatcher.dispatch_until alone", count, elapsed, note, caught_up=caught_up)


# ---- the raw floor -------------------------------------------------------------------------------------


def measure_floor(settings: Settings, root: Path, size: int, record: bytes) -> Result:
    """Copy one pre-encoded record again and again into a warmed mapping of the segment size: no encoding,
    no offsets, no lock. Wraps around at the end, into pages that are still resident."""
    root.mkdir(parents=True)
    segment = MappedFile.create(root / offset_to_file_name(0), settings.segment_bytes)
    try:
        segment.warm(settings.warmup)
        reservation = segment.reserve(settings.segment_bytes)
        with reservation as view:
            length = len(record)
            last_start = settings.segment_bytes - length
            position = 0

            def step() -> int:
                nonlocal position
                for _ in range(1024):
                    view[position : position + length] = record
                    position += length
                    if position > last_start:
                        position = 0
                return 1024

            count, elapsed = run_for(settings.seconds, step)
    finally:
        segment.destroy(0)
        shutil.rmtree(root, ignore_errors=True)
    return Result(size, "raw floor: memcpy into warmed mmap", count, elapsed, f"{length}-byte records")


def encoded_record(message: codec.Message) -> bytes:
    return codec.encode_record(message, queue_offset=0, physical_offset=0, store_timestamp_ms=0)


# ---- other engines -------------------------------------------------------------------------------------


def measure_sqlite(settings: Settings, root: Path, size: int, bodies: list[bytes], batch: int) -> Result:
    root.mkdir(parents=True)
    connection = sqlite3.connect(root / "bench.db", isolation_level=None)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.execute("CREATE TABLE messages (id INTEGER PRIMARY KEY, body BLOB NOT NULL)")
        rows = [(body,) for body in bodies]
        row_batches = [rows[start : start + batch] for start in range(0, len(rows) - batch + 1, batch)]
        next_rows = cycling(row_batches)
        insert = "INSERT INTO messages (body) VALUES (?)"

        def step() -> int:
            connection.execute("BEGIN")
            connection.executemany(insert, next_rows())
            connection.execute("COMMIT")
            return batch

        count, elapsed = run_for(settings.seconds, step)
    finally:
        connection.close()
        shutil.rmtree(root, ignore_errors=True)
    return Result(size, f"sqlite3 WAL executemany x{batch}", count, elapsed, "synchronous=NORMAL")


def measure_lmdb(settings: Settings, root: Path, size: int, bodies: list[bytes], batch: int) -> Result | None:
    if lmdb is None:
        return None
    root.mkdir(parents=True)
    environment = lmdb.open(
        str(root), map_size=LMDB_MAP_SIZE, sync=False, metasync=False, writemap=True, map_async=True
    )
    key = struct.Struct(">Q").pack
    next_key = itertools.count()
    body_batches = [bodies[start : start + batch] for start in range(0, len(bodies) - batch + 1, batch)]
    next_bodies = cycling(body_batches)
    try:

        def step() -> int:
            with environment.begin(write=True) as transaction:
                keys = map(key, itertools.islice(next_key, batch))
                transaction.cursor().putmulti(zip(keys, next_bodies(), strict=True), append=True)
            return batch

        count, elapsed = run_for(settings.seconds, step)
    finally:
        environment.close()
        shutil.rmtree(root, ignore_errors=True)
    return Result(size, f"lmdb putmulti append x{batch}", count, elapsed, "writemap, sync=False")


# ---- consuming -----------------------------------------------------------------------------------------


def measure_consume(settings: Settings, root: Path, size: int, bodies: list[bytes]) -> list[Result]:
    """Fill one queue, let dispatch catch up, then read it front to back again and again."""
    results = []
    with MessageStore(root, settings.store_config(message_index_enable=False)) as store:
        fill_queue(store, bodies, settings.consumed_messages)
        if not store.wait_dispatched(store.commit_log.max_offset, 300):
            raise SystemExit("dispatch did not catch up within 300 s")
        store.flush()  # so that the flush service's msync (which holds the GIL) does not land in the timing
        available = store.consume_queues.find(TOPIC, 0).max_offset_in_queue
        for batch in settings.consume_batches:
            count, elapsed = run_for(settings.seconds, queue_reader(store, batch, available))
            results.append(Result(size, f"get_messages x{batch} (memoryviews)", count, elapsed))
    shutil.rmtree(root, ignore_errors=True)
    return results


def fill_queue(store: MessageStore, bodies: list[bytes], count: int) -> None:
    """Put `count` messages; the Message objects are gone once this returns, so that the garbage collector
    does not walk a producer's heap while the consumer is timed."""
    next_batch = cycling(make_batches(bodies, 256))
    for _ in range(count // 256):
        store.put_messages(next_batch())


def queue_reader(store: MessageStore, batch: int, available: int) -> Callable[[], int]:
    """A step that reads the next `batch` messages of the queue, starting over at its end."""
    get = store.get_messages
    offset = 0

    def step() -> int:
        nonlocal offset
        result = get(TOPIC, 0, offset, batch)
        offset = result.next_begin_offset if result.next_begin_offset < available else 0
        return len(result.messages)

    return step


# ---- one size ------------------------------------------------------------------------------------------


def measure_size(settings: Settings, size: int, scratch: Path) -> list[Result]:
    bodies = make_bodies(size)
    place = itertools.count()

    def fresh() -> Path:
        return scratch / f"{size}-{next(place)}"

    results = measure_puts(settings, size, bodies, fresh)
    record = encoded_record(make_batches(bodies[:1], 1)[0][0])
    if "rolls" in settings.cases:
        rolling = settings_that_roll(settings, results[0], len(record))
        largest = max(settings.batches)
        results.append(measure_sustained(rolling, fresh(), size, make_batches(bodies, largest)))
        results.append(measure_fresh_floor(rolling, fresh(), size, record))
    if "floor" in settings.cases:
        results.append(measure_floor(settings, fresh(), size, record))
    largest = max(settings.batches)
    if "engines" in settings.cases:
        results.append(measure_sqlite(settings, fresh(), size, bodies, largest))
        lmdb_result = measure_lmdb(settings, fresh(), size, bodies, largest)
        results.append(lmdb_result or Result(size, "lmdb: unavailable (pip install lmdb)", 0, 1.0))
    if "consume" in settings.cases:
        results.extend(measure_consume(settings, fresh(), size, bodies))
    return results


def settings_that_roll(settings: Settings, warm: Result, record_bytes: int) -> Settings:
    """Segments small enough for the rolls case to cross three or more at the rate puts reached into one
    warmed segment (64 MiB at least, the configured size at most): at 128 B a 1 GiB segment may not fill
    in the time, and then nothing rolls."""
    expected_bytes = warm.msgs_per_s * SUSTAINED_RUNS * settings.seconds * record_bytes
    segment = max(
        64 * MiB, min(settings.segment_bytes, 1 << max(0, int(expected_bytes / 3).bit_length() - 1))
    )
    return dataclasses.replace(settings, segment_bytes=segment)


def measure_puts(
    settings: Settings, size: int, bodies: list[bytes], fresh: Callable[[], Path]
) -> list[Result]:
    batches = {batch: make_batches(bodies, batch) for batch in settings.batches}
    largest = max(settings.batches)
    results = []
    if settings.cases & {"put", "store", "rolls"}:  # the reference of the store and rolls cases
        results.append(
            measure_put(settings, fresh(), size, batches[largest], f"put_messages x{largest}", False)
        )
    if "put" in settings.cases:
        results.append(
            measure_put(settings, fresh(), size, batches[largest][:64], "put_message", single=True)
        )
        for batch in settings.batches:
            if batch != largest:
                results.append(
                    measure_put(settings, fresh(), size, batches[batch], f"put_messages x{batch}", False)
                )
        keyed = make_batches(bodies, largest, keys_per_message=True)
        results.append(
            measure_put(settings, fresh(), size, keyed, f"put_messages x{largest}, KEYS per msg", False)
        )
    if "store" in settings.cases:
        results.append(measure_store_put(settings, fresh(), size, batches[largest]))
        results.append(measure_dispatch_alone(settings, fresh(), size, batches[largest]))
    return results


# ---- report ----------------------------------------------------------------------------------------------


def print_table(results: list[Result]) -> None:
    print(f"{'body':>6}  {'case':<44} {'msgs/s':>12} {'MB/s':>9}  note")
    for result in results:
        if result.messages == 0:
            print(f"{result.size:>6}  {result.case}")
            continue
        print(
            f"{result.size:>6}  {result.case:<44} {result.msgs_per_s:>12,.0f} {result.mb_per_s:>9,.0f}  "
            f"{result.note}"
        )


def find(results: list[Result], size: int, case: str) -> Result | None:
    return next((r for r in results if r.size == size and r.case.startswith(case) and r.messages), None)


def print_ratios(results: list[Result], settings: Settings) -> None:
    largest = max(settings.batches)
    print(f"\nRatios: mqinspect put_messages x{largest} throughput divided by ...")
    for size in settings.sizes:
        ours = find(results, size, f"put_messages x{largest}")
        if ours is None:
            continue
        parts = []
        for label, prefix in (("raw floor", "raw floor"), ("sqlite3", "sqlite3"), ("lmdb", "lmdb putmulti")):
            other = find(results, size, prefix)
            parts.append(f"{label} {ours.msgs_per_s / other.msgs_per_s:.2f}x" if other else f"{label} n/a")
        print(f"{size:>6} B: " + ", ".join(parts))


def verdict(passed: bool) -> str:
    return "PASS" if passed else "MISS"


def print_targets(results: list[Result], settings: Settings) -> None:
    print("\nTargets")
    batch_rows = [f"put_messages x{batch}" for batch in settings.batches]
    if 128 in settings.sizes and "put" in settings.cases:
        best = max((find(results, 128, row) for row in batch_rows), key=lambda r: r.msgs_per_s)
        floor = find(results, 128, "raw floor")
        print(
            f"  {verdict(best.msgs_per_s >= TARGET_SMALL_MSGS_PER_S)} 128 B batch >= 1,000,000 msgs/s: "
            f"{best.msgs_per_s:,.0f} ({best.case})"
        )
        if floor is not None:
            share = best.msgs_per_s / floor.msgs_per_s
            print(
                f"  {verdict(share >= TARGET_SMALL_FLOOR_SHARE)} 128 B batch >= 50% of the raw floor: "
                f"{100 * share:.0f}% ({best.msgs_per_s:,.0f} of {floor.msgs_per_s:,.0f} msgs/s)"
            )
    if 4096 in settings.sizes and "put" in settings.cases:
        best = max((find(results, 4096, row) for row in batch_rows), key=lambda r: r.mb_per_s)
        print(
            f"  {verdict(best.mb_per_s * 1e6 >= TARGET_LARGE_BYTES_PER_S)} 4 KiB >= 2 GB/s (body bytes): "
            f"{best.mb_per_s / 1000:.2f} GB/s ({best.case})"
        )
    print_dispatch_targets(results, settings)
    print_roll_targets(results, settings)
    for result in results:
        if result.case.startswith("get_messages"):
            print(
                f"  {verdict(result.msgs_per_s >= TARGET_CONSUME_MSGS_PER_S)} consume >= 2,000,000 msgs/s, "
                f"{result.size} B, {result.case}: {result.msgs_per_s:,.0f}"
            )


def print_dispatch_targets(results: list[Result], settings: Settings) -> None:
    """MessageStore.put_messages with dispatch caught up at the end of the timed run."""
    largest = max(settings.batches)
    small = find(results, 128, "MessageStore.put_messages")
    if small is not None:
        passed = small.caught_up and small.msgs_per_s >= TARGET_DISPATCHED_SMALL_MSGS_PER_S
        print(
            f"  {verdict(passed)} 128 B MessageStore.put_messages, dispatch caught up, >= 500,000 msgs/s: "
            f"{small.msgs_per_s:,.0f} ({100 * small.msgs_per_s / TARGET_DISPATCHED_SMALL_MSGS_PER_S:.0f}% "
            f"of the target; {small.note})"
        )
    large = find(results, 1024, "MessageStore.put_messages")
    alone = find(results, 1024, f"put_messages x{largest}")
    if large is not None and alone is not None:
        share = large.msgs_per_s / alone.msgs_per_s
        print(
            f"  {verdict(large.caught_up and share >= TARGET_DISPATCHED_SHARE_1K)} 1 KiB MessageStore."
            f"put_messages, dispatch caught up, >= 80% of CommitLog-only put_messages x{largest}: "
            f"{100 * share:.0f}% ({large.msgs_per_s:,.0f} of {alone.msgs_per_s:,.0f} msgs/s; {large.note})"
        )
        if large.cpu_us_per_msg and alone.cpu_us_per_msg:  # what other processes' load does not skew
            cpu_share = alone.cpu_us_per_msg / large.cpu_us_per_msg
            print(
                f"       by CPU time per message (all threads): {100 * cpu_share:.0f}% "
                f"({alone.cpu_us_per_msg:.2f} us CommitLog-only, {large.cpu_us_per_msg:.2f} us with dispatch)"
            )


def print_roll_targets(results: list[Result], settings: Settings) -> None:
    """Across rolls, against writing the same records into fresh, never-touched pages."""
    for size in settings.sizes:
        rolls = find(results, size, f"put_messages x{max(settings.batches)}, across rolls")
        floor = find(results, size, "fresh-page floor")
        if rolls is None or floor is None:
            continue
        share = rolls.msgs_per_s / floor.msgs_per_s
        print(
            f"  {verdict(share >= TARGET_ROLLS_FRESH_SHARE)} {size} B across rolls >= 90% of the fresh-page "
            f"floor: {100 * share:.0f}% ({rolls.msgs_per_s:,.0f} of {floor.msgs_per_s:,.0f} msgs/s)"
        )
        warm = find(results, size, f"put_messages x{max(settings.batches)}")
        if warm is not None and warm.msgs_per_s < floor.msgs_per_s:
            print(
                f"       bound: into one warmed segment the same puts make {warm.msgs_per_s:,.0f} msgs/s, "
                f"{100 * warm.msgs_per_s / floor.msgs_per_s:.0f}% of the floor: the encoder, not the pages; "
                f"across rolls is {100 * rolls.msgs_per_s / warm.msgs_per_s:.0f}% of that"
            )
        if share < TARGET_ROLLS_FRESH_SHARE and rolls.bound:
            print(f"       pages: {rolls.bound}")


# ---- --profile: where the batch path spends its time ---------------------------------------------------


def profile_batch_path(settings: Settings, size: int, scratch: Path, floor: Result | None) -> None:
    """cProfile of put_messages, then the per-message cost of the steps no Python code can avoid."""
    batch = max(settings.batches)
    batches = make_batches(make_bodies(size), batch)
    next_batch = cycling(batches)
    with running_commit_log(settings, scratch / f"profile-{size}") as (commit_log, _allocator):
        commit_log.put_messages(batches[0])
        profiler = cProfile.Profile()
        count = 0
        started = time.perf_counter()
        profiler.enable()
        while time.perf_counter() - started < settings.seconds:
            commit_log.put_messages(next_batch())
            count += batch
        profiler.disable()
    report = io.StringIO()
    pstats.Stats(profiler, stream=report).sort_stats("tottime").print_stats(12)
    print(
        f"\n--- cProfile, put_messages x{batch}, {size} B bodies, {count:,} messages (profiler overhead "
        "included; C calls made from map() count in their caller, and time the flush thread holds the GIL "
        "(msync) in whichever frame was running) ---"
    )
    print("\n".join(line for line in report.getvalue().splitlines() if line.strip()))
    print_unavoidable_costs(batches[0], size, floor)


def per_message_ns(action: Callable[[], object], messages: int) -> float:
    return min(timeit.repeat(action, number=200, repeat=5)) / 200 / messages * 1e9


def print_unavoidable_costs(batch: list[codec.Message], size: int, floor: Result | None) -> None:
    """What one message costs in each step of the batch path measured alone, next to the cost of bare
    interpreter work, and the bound that puts on any pure-Python encoder."""
    count = len(batch)
    bodies = [message.body for message in batch]
    every_field = operator.attrgetter(*codec.Message.__slots__)
    record = encoded_record(batch[0])
    target = bytearray(len(record) * count)
    prepared = codec.prepare_batch(batch)
    costs = {
        "empty Python loop iteration": lambda: [None for _ in bodies],
        "Python loop iteration with 5 assignments": lambda: [_five_assignments(body) for body in bodies],
        "read the 11 fields of each Message (attrgetter, C)": lambda: list(map(every_field, batch)),
        "zlib.crc32 of each body (map, C)": lambda: list(map(zlib.crc32, bodies)),
        "copy each record into a buffer (the floor's loop)": lambda: _copy_each(target, record, count),
        "codec.prepare_batch: all of encoding but placement": lambda: codec.prepare_batch(batch),
        "PackedBatch.write_into: placement and one pack_into": lambda: prepared.write_into(
            target, 0, queue_offset=0, physical_offset=0, store_timestamp_ms=0),
    }  # fmt: skip
    print(f"\n--- per-message cost of each step alone, {size} B bodies, batches of {count}, in cache ---")
    measured = {label: per_message_ns(action, count) for label, action in costs.items()}
    for label, ns in measured.items():
        print(f"  {ns:7.0f} ns  {label}")
    if floor is None:
        return
    # Any encoder has to read the message's fields, checksum the body and copy the record: the first two
    # measured here, the copy at the floor's own rate.
    floor_ns = 1e9 / floor.msgs_per_s
    bound_ns = measured["read the 11 fields of each Message (attrgetter, C)"]
    bound_ns += measured["zlib.crc32 of each body (map, C)"] + floor_ns
    print(
        f"  bound: fields + crc32 + the floor's copy = {bound_ns:.0f} ns/msg: encoding Message objects in "
        f"Python with zlib.crc32 cannot pass {1e9 / bound_ns:,.0f} msgs/s "
        f"({1e3 * size / bound_ns:,.0f} MB/s), {100 * floor_ns / bound_ns:.0f}% of the floor"
    )
    budgets = [f"50% of the floor leaves {2 * floor_ns:.0f} ns/msg"]
    if size == 128:
        budgets.append("1,000,000 msgs/s leaves 1000 ns/msg")
    if size == 4096:
        budgets.append(f"2 GB/s leaves {size / 2:.0f} ns/msg")
    print("  targets: " + ", ".join(budgets))


def _five_assignments(value: object) -> None:
    a = b = c = d = e = value  # noqa: F841 - the cost of the stores is what is measured


def _copy_each(target: bytearray, record: bytes, count: int) -> None:
    step = len(record)
    for position in range(0, step * count, step):
        target[position : position + step] = record


def profile_consume(settings: Settings, scratch: Path) -> None:
    """The share of the garbage collector in consuming: the same loop with gc disabled."""
    bodies = make_bodies(128)
    root = scratch / "profile-consume"
    plain = measure_consume(settings, root, 128, bodies)
    gc.disable()
    try:
        without_gc = measure_consume(settings, scratch / "profile-consume-nogc", 128, bodies)
    finally:
        gc.enable()
    print(
        "\n--- consume, 128 B: the cyclic garbage collector's share (each message is a tuple and a "
        "memoryview, both GC-tracked) ---"
    )
    for with_gc, no_gc in zip(plain, without_gc, strict=True):
        print(
            f"  {with_gc.case:<36} gc on {with_gc.msgs_per_s:>12,.0f}   "
            f"gc off {no_gc.msgs_per_s:>12,.0f} msgs/s"
        )


# ---- main ------------------------------------------------------------------------------------------------


class OtherProcesses:
    """CPU time that other processes took while the benchmark ran: the machine's busy time minus ours and
    minus kernel threads' (write-back of our dirty pages runs in those). On a 2-core machine other tests
    and tracing probes take cores, memory bandwidth and page faults away from the run."""

    def __init__(self) -> None:
        self._start = self._sample()

    @staticmethod
    def _sample() -> float:
        ticks = os.sysconf("SC_CLK_TCK")
        with open("/proc/stat") as stat:
            user, nice, system = map(int, stat.readline().split()[1:4])
        times = os.times()
        return (user + nice + system - _kernel_thread_ticks()) / ticks - times.user - times.system

    def report(self, elapsed_s: float) -> None:
        others = max(0.0, self._sample() - self._start)
        share = others / elapsed_s / (os.cpu_count() or 1)
        noisy = share > NOISY_SHARE
        print(
            f"{'warning: ' if noisy else ''}other processes used {others:.1f} CPU-seconds during the run "
            f"({100 * share:.0f}% of the machine){'; expect lower and noisier figures' if noisy else ''}"
        )


def _kernel_thread_ticks() -> int:
    """utime + stime of the kernel's threads (children of kthreadd, pid 2)."""
    total = 0
    for stat_path in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat_path.read_text().rsplit(")", 1)[1].split()
            if fields[1] == "2" or stat_path.parent.name == "2":  # fields[1] is the parent's pid
                total += int(fields[11]) + int(fields[12])
    return total


NOISY_SHARE = 0.05


def filesystem_of(path: Path) -> str:
    """The type of the filesystem holding `path`, from /proc/mounts (longest matching mount point)."""
    best, kind = "", "unknown"
    with contextlib.suppress(OSError), open("/proc/mounts") as mounts:
        for line in mounts:
            _device, mount_point, fs_type, *_ = line.split()
            if str(path).startswith(mount_point) and len(mount_point) > len(best):
                best, kind = mount_point, fs_type
    return kind


def parse_args(argv: list[str] | None = None) -> Settings:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs, 256 MiB segments (about 20 s)")
    parser.add_argument("--sizes", default="128,1024,4096", help="body sizes in bytes")
    parser.add_argument("--batches", default="64,256", help="batch sizes for put_messages")
    parser.add_argument("--consume-batches", default="32,1024", help="max_count for get_messages")
    parser.add_argument("--seconds", type=float, default=None, help="timed seconds per case (default 2)")
    parser.add_argument("--segment-mib", type=int, default=None, help="CommitLog segment size (default 1024)")
    parser.add_argument("--warmup", choices=["touch", "populate"], default="populate")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()), help="parent directory")
    parser.add_argument("--profile", action="store_true", help="also show where the batch path spends time")
    parser.add_argument(
        "--cases", default=",".join(CASES), help=f"groups of cases to run, of {', '.join(CASES)}"
    )
    args = parser.parse_args(argv)
    cases = frozenset(args.cases.split(","))
    if not cases <= set(CASES):
        parser.error(f"unknown cases: {', '.join(sorted(cases - set(CASES)))}")
    return Settings(
        sizes=tuple(int(size) for size in args.sizes.split(",")),
        batches=tuple(int(batch) for batch in args.batches.split(",")),
        consume_batches=tuple(int(batch) for batch in args.consume_batches.split(",")),
        seconds=args.seconds if args.seconds is not None else (0.3 if args.quick else 2.0),
        segment_bytes=(args.segment_mib or (256 if args.quick else 1024)) * MiB,
        warmup=WarmupMode(args.warmup),
        directory=args.dir.resolve(),
        consumed_messages=30_000 if args.quick else 200_000,
        profile=args.profile,
        cases=cases,
    )


def main(argv: list[str] | None = None) -> int:
    settings = parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="store-append-", dir=settings.directory))
    fs_type = filesystem_of(scratch)
    print(
        f"store_append: Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {scratch} ({fs_type}), "
        f"{settings.segment_bytes // MiB} MiB segments, warm-up {settings.warmup}, ASYNC flush, "
        f"{settings.seconds:g} s per case"
    )
    if fs_type in ("tmpfs", "ramfs"):
        print("warning: this directory is in memory; page-cache write-back is not being measured")
    others = OtherProcesses()
    began = time.perf_counter()
    results: list[Result] = []
    try:
        for size in settings.sizes:
            results.extend(measure_size(settings, size, scratch))
        print()
        print_table(results)
        print_ratios(results, settings)
        print_targets(results, settings)
        if "rolls" in settings.cases:
            print(measure_page_supply(scratch / "page-supply"))
        if settings.profile:
            for size in settings.sizes:
                profile_batch_path(settings, size, scratch, find(results, size, "raw floor"))
            profile_consume(settings, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    others.report(time.perf_counter() - began)
    print(f"\n({time.perf_counter() - began:.0f} s; {scratch} removed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
