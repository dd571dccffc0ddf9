"""The workloads probe_overhead.py times, each in a child process of its own, and the parent's side of one.

- append: a child process starts a MessageStore (ASYNC flush, POPULATE warm-up, 256 MiB CommitLog segments,
  dispatcher and index running) in a temporary directory on the real disk, then times N puts of 1 KiB
  messages through the batch API (put_messages, 256 per batch). Segment rolls, with the next segment
  preallocated and warmed in the background, happen inside the timed loop as they do in the broker.
- append-cold: the same without warm-up: the producer faults in every page of every new segment.
- faults: a child maps fresh sparse files on the real disk (MAP_SHARED) and writes one byte per page, one new
  mapping per pass: every page is a write fault that adds a page-cache folio and dirties it.

The child runs as `python -m benchmarks.overhead.workloads WORKLOAD PARAMETERS` from the repository.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import itertools
import json
import mmap
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from benchmarks.overhead.loop_profile import ThreadProfiler
    from benchmarks.overhead.settings import Settings

REPO = Path(__file__).resolve().parents[2]
PAGE_SIZE = mmap.PAGESIZE
MiB = 1 << 20
CHILD_TIMEOUT_S = 300.0
WORKLOADS = ("append", "append-cold", "faults")
# The targets: the slowdown all probes may cost each workload.
TARGET_SLOWDOWN = {"append": 0.03, "append-cold": 0.10, "faults": 0.10}
# The probes' computed slowdown at most this many times the floor's (issue 16, item 5: the fault loop).
TARGET_FLOOR_RATIO = {"faults": 1.25}


# ---- the workloads, each in a child process --------------------------------------------------------------
#
# Protocol on the child's stdin/stdout, one JSON object or word per line: the child sets up (outside the
# timing and before any probe is attached, so set-up events are not counted), prints {"pid": ...}, waits for
# "go", runs and times its loop, prints its result, then waits for "exit" before tearing down, so that the
# teardown (store shutdown, unlinking dirty files) happens after the probes are detached.


def run_child(workload: str, parameters: dict) -> None:
    setup, timed_loop = CHILD_WORKLOADS[workload](parameters)
    with setup as state:
        gc.collect()
        reply({"pid": os.getpid()})
        wait_for_word("prepare")
        back_guest_memory(parameters["fresh_memory_mib"], parameters["dir"])
        reply({"ready": True})
        ready = time.perf_counter()
        wait_for_word("go")
        faults_before = page_faults_so_far()
        clocks_before = LoopClocks.now()
        started = time.perf_counter()
        units = timed_loop(state)
        seconds = time.perf_counter() - started
        spent = LoopClocks.now().since(clocks_before)
        reply({
            "seconds": seconds,
            "units": units,
            "page_faults": page_faults_so_far() - faults_before,
            "waited_after_backing_s": started - ready,
            "loop": spent._asdict(),
        })  # fmt: skip
        wait_for_word("exit")


def back_guest_memory(mib: int, directory: str) -> None:
    """Fill and drop as much page cache as the loop takes fresh pages, on its filesystem, just before the
    clock starts.

    In a virtual machine the host backs guest memory lazily and takes back what the guest frees (this VM:
    virtio-balloon free page reporting of free 2 MiB blocks, and DAMON), so zeroing a page the host took
    back costs a host fault: measured here, the kernel's memset of new page-cache folios took 3-5x longer
    and a cold append ran 1.6x slower after the child had merely waited 12 s (as the probed side waits for
    five compilers) than right after its set-up. Without this step the comparison measured where the pages
    came from. The pages written here are page-cache folios of the sizes the loop's own will have, and single
    anonymous pages; freed, they go to the head of the free lists (reported ones to the tail), where the
    loop's allocations find them first. A forked process does it, so that the sessions' counts of the
    workload's process (the events table) do not include these faults and page-cache events."""
    helper = os.fork()
    if helper == 0:
        try:
            fill_and_free(mib, directory)
        finally:
            os._exit(0)
    os.waitpid(helper, 0)


def fill_and_free(mib: int, directory: str) -> None:
    block = bytes(MiB)
    with tempfile.TemporaryFile(dir=directory) as scratch:
        for _ in range(mib):
            scratch.write(block)
        scratch.flush()
    # closing it truncated the unwritten, dirty pages: no disk I/O. Then single pages, last so first reused:
    # the fault loop's 4 KiB folios come from them.
    size = mib * MiB
    with mmap.mmap(-1, size, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS) as memory:
        memory.madvise(mmap.MADV_NOHUGEPAGE)
        for offset in range(0, size, PAGE_SIZE):
            memory[offset] = 1


class LoopClocks(NamedTuple):
    """Where the loop thread's time goes, by its own counters: on a CPU in user space or in the kernel
    (getrusage RUSAGE_THREAD: the kernel part holds the page faults, the page-cache folios they allocate and
    zero, and the probes' programs run for its events), runnable but waiting for a CPU (schedstat run_delay:
    other processes, the sessions among them, on the two CPUs); the rest of its wall time it was off a CPU,
    blocked (locks, I/O, sleeps). Beside them the CPU of the process's other threads (the store's dispatcher
    and flush threads) and its major faults."""

    user_s: float
    system_s: float
    run_queue_s: float | None  # None where /proc/thread-self/schedstat is missing (no CONFIG_SCHED_INFO)
    other_threads_cpu_s: float
    major_faults: int

    @classmethod
    def now(cls) -> LoopClocks:
        thread = resource.getrusage(resource.RUSAGE_THREAD)
        process = resource.getrusage(resource.RUSAGE_SELF)
        own = thread.ru_utime + thread.ru_stime
        others = process.ru_utime + process.ru_stime - own
        return cls(thread.ru_utime, thread.ru_stime, run_queue_wait_s(), others, process.ru_majflt)

    def since(self, before: LoopClocks) -> LoopClocks:
        waited = None
        if self.run_queue_s is not None and before.run_queue_s is not None:
            waited = self.run_queue_s - before.run_queue_s
        return LoopClocks(
            self.user_s - before.user_s,
            self.system_s - before.system_s,
            waited,
            self.other_threads_cpu_s - before.other_threads_cpu_s,
            self.major_faults - before.major_faults,
        )

    def blocked_s(self, wall_s: float) -> float | None:
        """Off a CPU and not waiting for one, of `wall_s`: what the loop thread's clocks leave."""
        if self.run_queue_s is None:
            return None
        return max(0.0, wall_s - self.user_s - self.system_s - self.run_queue_s)


def run_queue_wait_s() -> float | None:
    """The calling thread's time runnable but not running, in s (/proc/thread-self/schedstat run_delay)."""
    try:
        return int(Path("/proc/thread-self/schedstat").read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return None


def page_faults_so_far() -> int:
    """The kernel's own count (minor + major: a write fault on a hole of a sparse file is a major one)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_minflt + usage.ru_majflt


def reply(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def wait_for_word(word: str) -> None:
    line = sys.stdin.readline()
    if line.strip() != word:
        raise SystemExit(f"child: expected {word!r} on stdin, got {line!r}")


APPEND_BODY_BYTES = 1024
APPEND_BATCH = 256
APPEND_BODY_POOL_BYTES = 4 * MiB  # distinct bodies, cycled, so that the CPU caches do not hold them all
APPEND_SEGMENT_BYTES = 256 * MiB


@contextlib.contextmanager
def append_store(parameters: dict) -> Iterator[tuple]:
    from store import codec
    from store.config import FlushDiskType, StoreConfig, WarmupMode
    from store.message_store import MessageStore

    root = Path(tempfile.mkdtemp(prefix="probe-overhead-append-", dir=parameters["dir"]))
    config = StoreConfig(
        mapped_file_size_commitlog=APPEND_SEGMENT_BYTES,
        warmup=WarmupMode(parameters["warmup"]),
        flush_disk_type=FlushDiskType.ASYNC,
    )
    born = time.time_ns() // 1_000_000
    messages = [
        codec.Message("ProbeOverhead", body=os.urandom(APPEND_BODY_BYTES), properties={"TAGS": "TagA"},
                      born_timestamp_ms=born)
        for _ in range(APPEND_BODY_POOL_BYTES // APPEND_BODY_BYTES)
    ]  # fmt: skip
    batches = [messages[start : start + APPEND_BATCH] for start in range(0, len(messages), APPEND_BATCH)]
    try:
        with MessageStore(root, config) as store:
            store.put_messages(batches[0])  # creates and warms the first segment before the clock starts
            store.wait_dispatched(store.commit_log.max_offset, 30)
            yield store, batches, parameters["messages"]
    finally:
        shutil.rmtree(root, ignore_errors=True)


def append_loop(state: tuple) -> int:
    store, batches, messages = state
    put_batch = store.put_messages
    next_batch = itertools.cycle(batches).__next__
    for _ in range(messages // APPEND_BATCH):
        put_batch(next_batch())
    return messages // APPEND_BATCH * APPEND_BATCH


@contextlib.contextmanager
def fault_mappings(parameters: dict) -> Iterator[tuple]:
    """One way to open a fresh mapping per pass; files are created (not mapped) before the clock starts."""
    size = parameters["pass_mib"] * MiB
    if parameters["backing"] == "shmem":
        yield [functools.partial(mmap.mmap, -1, size, mmap.MAP_SHARED)] * parameters["passes"], size
        return
    root = Path(tempfile.mkdtemp(prefix="probe-overhead-faults-", dir=parameters["dir"]))
    descriptors = []
    try:
        for number in range(parameters["passes"]):
            descriptor = os.open(root / f"pass-{number}", os.O_RDWR | os.O_CREAT, 0o600)
            descriptors.append(descriptor)
            os.ftruncate(descriptor, size)
        yield [functools.partial(map_without_readahead, descriptor, size) for descriptor in descriptors], size
    finally:
        for descriptor in descriptors:
            os.close(descriptor)
        shutil.rmtree(root, ignore_errors=True)  # drops the dirty pages unwritten


def map_without_readahead(descriptor: int, size: int) -> mmap.mmap:
    mapping = mmap.mmap(descriptor, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    # With readahead, ext4 fills the holes with large folios and one fault maps dozens of pages (measured:
    # 2,964 faults for 131,072 pages). MADV_RANDOM keeps 4 KiB folios: one fault, one page-cache insertion
    # and one dirtied folio per page, as RocketMQ's TOUCH warm-up of a new segment on a small-folio kernel.
    mapping.madvise(mmap.MADV_RANDOM)
    return mapping


def fault_loop(state: tuple) -> int:
    openers, size = state
    for open_mapping in openers:
        with open_mapping() as mapping:
            for offset in range(0, size, PAGE_SIZE):
                mapping[offset] = 1
    return len(openers) * (size // PAGE_SIZE)


CHILD_WORKLOADS: dict[str, Callable[[dict], tuple]] = {
    "append": lambda parameters: (append_store(parameters), append_loop),
    "append-cold": lambda parameters: (append_store(parameters), append_loop),
    "faults": lambda parameters: (fault_mappings(parameters), fault_loop),
}
WORKLOAD_UNITS = {"append": "msgs/s", "append-cold": "msgs/s", "faults": "pages/s"}
WORKLOAD_TITLES = {
    "append": "append (MessageStore.put_messages x256, 1 KiB, ASYNC flush, POPULATE warm-up)",
    "append-cold": "cold append (the same without warm-up: the producer faults in every new page)",
    "faults": "page-fault heavy (MAP_SHARED {backing}, 1 byte per 4 KiB page, a new mapping per pass)",
}


def child_parameters(workload: str, settings: Settings) -> dict:
    """What the child of `workload` is given (its set-up and the memory it backs before its clock starts)."""
    if workload.startswith("append"):
        warmup = "none" if workload == "append-cold" else "populate"
        fresh_mib = settings.append_messages * 1200 // MiB + 2 * APPEND_SEGMENT_BYTES // MiB
        return {
            "dir": str(settings.directory),
            "messages": settings.append_messages,
            "warmup": warmup,
            "fresh_memory_mib": fresh_mib,
        }
    return {
        "dir": str(settings.directory),
        "pass_mib": settings.fault_pass_mib,
        "passes": settings.fault_passes,
        "backing": settings.fault_backing,
        "fresh_memory_mib": settings.fault_pass_mib * settings.fault_passes,
    }


# ---- the parent's side of a workload ----------------------------------------------------------------------


@dataclass(frozen=True)
class WorkloadResult:
    seconds: float
    units: int
    page_faults: int  # the child's own ru_minflt + ru_majflt over the timed loop
    loop: LoopClocks | None = None  # where the loop thread's time went
    waited_after_backing_s: float = 0.0  # from back_guest_memory's end to the clock's start

    @property
    def rate(self) -> float:
        return self.units / self.seconds


class Workload:
    """A workload child between "set up" and "torn down"."""

    def __init__(self, name: str, parameters: dict):
        command = [sys.executable, "-m", "benchmarks.overhead.workloads", name, json.dumps(parameters)]
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO
        )
        self.pid = self._read()["pid"]
        self.profiler: ThreadProfiler | None = None  # sampling the loop thread (the child's main thread)

    def prepare(self) -> None:
        """Have the child back the memory its loop will take (back_guest_memory), just before run()."""
        self._send("prepare")
        self._read()

    def run(self) -> WorkloadResult:
        if self.profiler is not None:
            self.profiler.enable()
        self._send("go")
        result = self._read()
        if self.profiler is not None:
            self.profiler.disable()
        return WorkloadResult(
            result["seconds"],
            result["units"],
            result["page_faults"],
            LoopClocks(**result["loop"]),
            result["waited_after_backing_s"],
        )

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            self._send("exit")
        wait_or_kill(self.process, CHILD_TIMEOUT_S)

    def _send(self, word: str) -> None:
        self.process.stdin.write(word + "\n")
        self.process.stdin.flush()

    def _read(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"workload child exited with status {self.process.wait()}")
        return json.loads(line)


def wait_or_kill(process: subprocess.Popen, timeout_s: float) -> None:
    """Wait for `process` to end; kill it if it has not within `timeout_s`."""
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):  # a terminal's Ctrl-C reaches the child too: no traceback
        run_child(sys.argv[1], json.loads(sys.argv[2]))
        sys.exit(0)
    sys.exit(130)
