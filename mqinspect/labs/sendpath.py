"""`mqinspect lab sendpath`: the same byte range of a CommitLog segment sent over loopback TCP by each send
path, a few times, measured beside the textbook model of that path (mqinspect.labs.sendpath_model).

Per run the lab measures:
  throughput      payload / (sender starts → receiver reads end of stream), CLOCK_MONOTONIC in both processes
  CPU, ctx        getrusage(RUSAGE_SELF) of the sender around its transfer and of the receiver around its
                  drain (user and system seconds, voluntary and involuntary context switches)
  syscalls        the sender's own count, by strace's name (store.transfer counts every call it makes; the
                  tests hold it against `strace -c`); the receiver's recvfrom calls
  copies          the eBPF sendpath probe, filtered to the two worker processes, one interval per run: bytes
                  kernel → user, user → kernel and moved inside the kernel, per process. Null, with the
                  reason and the fix, where BPF cannot be used (no root, no bcc)
  residency       cachestat (mincore where refused) of the range just before and just after the run

Sender and receiver are two long-lived child processes (mqinspect.labs.sendpath_worker), started before the
probe so that it can trace exactly them, and one program is compiled for the whole lab. Runs go round-robin
over the paths (run 1 of every path, then run 2, ...) so that a slow moment of the machine does not land on
one path alone.

Source: a temporary store the lab creates and removes (a CommitLog segment filled with records by
store.workload.produce), or with `store_dir` the newest CommitLog segment of an existing store, only read;
or a Kafka log directory's segment, only read: the newest non-empty .log of its partition with the most log
bytes (of the partition, or the one segment, when `store_dir` is a partition directory or a .log file). A
Kafka broker serves fetches by sendfile (FileRecords.writeTo: FileChannel.transferTo), from offset 0 of the
segment here, as a consumer reading it from its start is sent.
Hot (default): the range is read into the page cache once before the first run. Cold: the lab's own source
is evicted (fsync + POSIX_FADV_DONTNEED) before every run, so each run reads the disk; an existing store's
pages are never evicted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import mmap
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from mqinspect.errors import BadInput, MqinspectError
from mqinspect.labs.sendpath_model import (
    GENERAL_NOTES,
    LABELS,
    MODELS,
    PathEvidence,
    PathModel,
    findings,
    median_measured,
    median_seconds,
    per_byte,
)
from mqinspect.labs.stats import Spread, spread
from mqinspect.labs.worker_lines import LineReader, last_words
from mqinspect.render.units import human_bytes, human_rate
from probes.ebpf.sendpath import SendpathProbe, SendpathSnapshot
from probes.ebpf.session import TraceSession
from probes.errors import CapabilityMissing, ProbeError
from probes.residency.actions import evict
from probes.residency.scan import residency_of_range
from store.config import StoreConfig
from store.inspection.formats import detect_format
from store.inspection.kafka.target import file_label, kafka_target, segments_to_read
from store.inspection.rocketmq.segments import list_segments
from store.layout import SegmentKind, offset_to_file_name
from store.message_store import MessageStore
from store.transfer import SendPath, TransferOptions
from store.workload import ProduceSpec, produce

SCHEMA = "mqinspect.lab.sendpath/v1"
MiB = 1 << 20
DEFAULT_PAYLOAD_BYTES = 64 * MiB  # the test size: 6 paths x 3 runs in well under a minute here
DEFAULT_REPEAT = 3
DEFAULT_CHUNK_BYTES = TransferOptions().chunk_bytes
MIN_PAYLOAD_BYTES = 64 * 1024
MAX_PAYLOAD_BYTES = 4 << 30
RECEIVE_BUFFER_BYTES = 256 * 1024
BODY_BYTES = 4096  # message body size of the records the lab writes
CONTROL_FDS = frozenset({0, 1, 2})  # the workers' protocol pipes: not part of any transfer
WORKER_START_TIMEOUT_S = 30.0
LOOPBACK = "127.0.0.1"
COPIES_SOURCE = "eBPF sendpath probe (syscalls:sys_enter/sys_exit_* tracepoints), one interval per run"
USAGE_SOURCE = (
    "getrusage(RUSAGE_SELF) in the sender around its transfer and in the receiver around its drain (the "
    "total is exact; the kernel splits it into user and sys by tick samples, so over tens of ms the split "
    "is rough)"
)
RESIDENCY_SOURCE = "cachestat(2) of the range (mincore where refused), just before and just after each run"


class LabFailed(MqinspectError):
    """A worker died, hung or failed in a way that is not the path's limitation."""


class PathSkipped(Exception):
    """The path cannot run here (O_DIRECT refused by the filesystem, SO_ZEROCOPY refused)."""


# ---- options and results -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabOptions:
    payload_bytes: int = DEFAULT_PAYLOAD_BYTES
    paths: tuple[SendPath, ...] = tuple(SendPath)
    repeat: int = DEFAULT_REPEAT
    cold: bool = False
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    store_dir: Path | None = None  # serve the newest CommitLog segment of this store, read-only
    work_dir: Path | None = None  # where the temporary store goes (default: the system's temp directory)

    def __post_init__(self) -> None:
        if not MIN_PAYLOAD_BYTES <= self.payload_bytes <= MAX_PAYLOAD_BYTES:
            raise BadInput(
                f"--bytes must be between {MIN_PAYLOAD_BYTES} and {MAX_PAYLOAD_BYTES} "
                f"({self.payload_bytes} given)"
            )
        try:  # names are welcome too ("sendfile"): SendPath is a StrEnum
            object.__setattr__(self, "paths", tuple(dict.fromkeys(SendPath(path) for path in self.paths)))
        except ValueError as error:
            raise BadInput(f"--paths: {error}") from None
        if not self.paths:
            raise BadInput("--paths names no send path")
        if self.repeat < 1:
            raise BadInput("--repeat must be at least 1")
        if self.cold and self.store_dir is not None:
            raise BadInput(
                "--cold evicts the source's pages before each run: only the lab's own temporary store may be "
                "evicted, not the store given with --store (use --hot, or leave out --store)"
            )


@dataclass(frozen=True)
class Unavailable:
    reason: str
    fix: str


@dataclass(frozen=True)
class LabSource:
    """The byte range every path serves."""

    path: Path  # the CommitLog segment
    store_dir: Path
    temporary: bool  # created by the lab, removed at the end
    offset_bytes: int
    length_bytes: int
    segment_size_bytes: int
    messages: int | None  # records the lab wrote (None for an existing store)
    range_pages: int
    page_size_bytes: int
    log_format: str = (
        "rocketmq"  # the segment's: rocketmq (a CommitLog segment) or kafka (a partition's .log)
    )
    label: str | None = None  # how tables name the segment: "commitlog/000...", "orders-0/000....log"


@dataclass(frozen=True)
class ProcessUsage:
    user_s: float
    sys_s: float
    voluntary_ctx_switches: int
    involuntary_ctx_switches: int


@dataclass(frozen=True)
class MeasuredCopies:
    """One process over one run, by the sendpath probe (descriptors 0-2 left out)."""

    bytes_kernel_to_user: int
    bytes_user_to_kernel: int
    bytes_in_kernel: int
    syscalls: int
    per_syscall: Mapping[str, int]  # tracepoint names (sendfile64)
    faults_in_syscalls: int
    socket_bytes_copied_to_user: int | None  # skb:skb_copy_datagram_iovec, where the kernel has it


@dataclass(frozen=True)
class PathRun:
    path: SendPath
    run: int
    bytes_sent: int
    bytes_received: int
    send_s: float  # the sender's transfer call
    delivery_s: float  # sender starts → receiver reads end of stream
    throughput_bytes_per_s: float  # payload / delivery_s
    sender_usage: ProcessUsage
    receiver_usage: ProcessUsage
    sender_syscalls: Mapping[str, int]  # strace's names, from the transfer's own count
    receiver_syscalls: Mapping[str, int]
    sender_copies: MeasuredCopies | None
    receiver_copies: MeasuredCopies | None
    probe_lost_records: int | None
    zerocopy_fell_back_to_copy: bool | None  # MSG_ZEROCOPY only
    zerocopy_notifications: int | None
    cached_pages_before: int | None
    cached_pages_after: int | None
    evicted_before: bool


@dataclass(frozen=True)
class PathResult:
    """One path: its model, its runs, and the medians over the runs (None: not measured)."""

    path: SendPath
    label: str
    model: PathModel
    unsupported: str | None
    runs: tuple[PathRun, ...]
    throughput_bytes_per_s: Spread | None
    sender_user_s: float | None
    sender_sys_s: float | None
    receiver_user_s: float | None
    receiver_sys_s: float | None
    sender_voluntary_ctx_switches: int | None
    sender_involuntary_ctx_switches: int | None
    receiver_voluntary_ctx_switches: int | None
    receiver_involuntary_ctx_switches: int | None
    sender_syscalls: int | None
    sender_mode_switches: int | None  # 2 per syscall: each enters and leaves the kernel once
    receiver_syscalls: int | None
    sender_bytes_kernel_to_user: int | None
    sender_bytes_user_to_kernel: int | None
    sender_bytes_in_kernel: int | None
    sender_faults_in_syscalls: int | None
    receiver_bytes_kernel_to_user: int | None
    sender_crossings_per_byte: float | None  # (kernel → user + user → kernel) / payload
    receiver_copies_per_byte: float | None
    cached_pages_before: int | None  # the last run's
    cached_pages_after: int | None
    zerocopy_fell_back_to_copy: bool | None
    findings: tuple[str, ...]


@dataclass(frozen=True)
class SendpathLabReport:
    schema: str
    payload_bytes: int
    repeat: int
    cache_mode: str  # "hot" or "cold"
    chunk_bytes: int
    loopback: str
    source: LabSource
    sender_pid: int
    receiver_pid: int
    kernel_release: str
    copies_source: str
    copies_unavailable: Unavailable | None
    usage_source: str
    residency_source: str
    paths: tuple[PathResult, ...]
    notes: tuple[str, ...]
    started_unix_s: float
    elapsed_s: float


# ---- the source --------------------------------------------------------------------------------------------


def create_source(directory: Path, payload_bytes: int) -> LabSource:
    """A store in `directory` whose first CommitLog segment holds at least `payload_bytes` of records."""
    messages = math.ceil(payload_bytes / BODY_BYTES)  # each record is its body plus a header: enough bytes
    segment_size = _round_up(payload_bytes + payload_bytes // 4 + 4 * MiB, MiB)
    config = StoreConfig(mapped_file_size_commitlog=segment_size, message_index_enable=False)
    with MessageStore(directory, config) as store:
        report = produce(store, ProduceSpec(topic="sendpath-lab", count=messages, body_size_bytes=BODY_BYTES))
    if report.interrupted:  # produce() takes Ctrl-C as the end of its work; for the lab it ends everything
        raise KeyboardInterrupt
    segment = directory / "commitlog" / offset_to_file_name(0)
    if report.bytes_written < payload_bytes or report.last_physical_offset is None:
        raise LabFailed(f"the lab's store took only {report.bytes_written} of {payload_bytes} bytes")
    return _source(segment, directory, True, payload_bytes, messages)


def store_source(store_dir: Path, payload_bytes: int) -> tuple[LabSource, str | None]:
    """The newest CommitLog segment of `store_dir` that holds records (a Kafka log directory's segment:
    `kafka_source`), only read; and a note when it holds fewer bytes than asked for (the lab then serves
    what it has)."""
    if detect_format(store_dir).name == "kafka":
        return kafka_source(store_dir, payload_bytes)
    listing = list_segments(store_dir)
    written = [
        row for row in listing.rows if row.kind is SegmentKind.COMMITLOG and (row.written_bytes or 0) > 0
    ]
    if not written:
        raise BadInput(f"{store_dir}: no CommitLog segment holds records yet; nothing to send")
    newest = written[-1]
    length = min(payload_bytes, newest.written_bytes or 0)
    note = None
    if length < payload_bytes:
        note = f"{newest.path} holds {length} bytes of records: each run sends those, not {payload_bytes}"
    return _source(Path(newest.path), store_dir, False, length, None), note


def kafka_source(root: Path, payload_bytes: int) -> tuple[LabSource, str | None]:
    """The newest non-empty .log segment of the log dir's partition with the most log bytes (of the partition
    directory given, or the .log file given), only read, from its start; a note when it holds fewer bytes
    than asked for. A Kafka segment holds nothing but batches (the broker never preallocates it)."""
    target = kafka_target(root)
    candidates = []
    for directory in target.partitions:
        logs = [s.log for s in segments_to_read(directory, target.segment) if s.log is not None]
        sizes = [(log, log.stat().st_size) for log in logs]
        written = [(log, size) for log, size in sizes if size]
        if written:
            candidates.append((sum(size for _log, size in sizes), written[-1]))
    if not candidates:
        raise BadInput(f"{root}: no Kafka .log segment holds batches yet; nothing to send")
    _most, (segment, size) = max(candidates, key=lambda candidate: candidate[0])
    length = min(payload_bytes, size)
    note = None
    if length < payload_bytes:
        note = f"{segment} holds {length} bytes of batches: each run sends those, not {payload_bytes}"
    source = _source(segment, root, False, length, None)
    return dataclasses.replace(source, log_format="kafka", label=file_label(segment)), note


def _source(segment: Path, store_dir: Path, temporary: bool, length: int, messages: int | None) -> LabSource:
    return LabSource(
        path=segment,
        store_dir=store_dir,
        temporary=temporary,
        offset_bytes=0,
        length_bytes=length,
        segment_size_bytes=segment.stat().st_size,
        messages=messages,
        range_pages=-(-length // mmap.PAGESIZE),
        page_size_bytes=mmap.PAGESIZE,
    )


def cached_pages(source: LabSource) -> int | None:
    """Resident pages of the range now; None where the kernel would not tell truthfully."""
    fd = os.open(source.path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return residency_of_range(fd, source.offset_bytes, source.length_bytes).cached_pages
    finally:
        os.close(fd)


def read_into_cache(source: LabSource) -> None:
    """Read the range once so it is resident ("hot"). Only the range: a store's segment may be 1 GiB."""
    fd = os.open(source.path, os.O_RDONLY | os.O_CLOEXEC)
    buffer = bytearray(MiB)
    try:
        position, end = source.offset_bytes, source.offset_bytes + source.length_bytes
        while position < end and (count := os.preadv(fd, [memoryview(buffer)[: end - position]], position)):
            position += count
    finally:
        os.close(fd)


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


# ---- the worker processes ----------------------------------------------------------------------------------


class Worker:
    """One child process of mqinspect.labs.sendpath_worker, spoken to one JSON line at a time."""

    def __init__(self, role: str):
        self.role = role
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mqinspect.labs.sendpath_worker", role],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=Path(__file__).resolve().parents[2],
        )
        self.pid = self.process.pid
        assert self.process.stdout is not None
        self._lines = LineReader(self.process.stdout.fileno())

    def tell(self, command: dict) -> None:
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(json.dumps(command).encode() + b"\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            raise self._died() from None

    def answer(self, timeout_s: float) -> dict:
        """The next report line, within `timeout_s`."""
        try:
            message = self._lines.next_message(timeout_s)
        except TimeoutError:
            said = f"the {self.role} (pid {self.pid}) did not answer within {timeout_s:g} s"
            raise LabFailed(said) from None
        if message is None:
            raise self._died()
        return message

    def _died(self) -> LabFailed:
        return LabFailed(f"the {self.role} (pid {self.pid}) ended unexpectedly: {last_words(self.process)}")

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            if self.process.stdin is not None:
                self.process.stdin.close()  # the worker ends at end of input
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


# ---- copies: one probe session for the whole lab -----------------------------------------------------------


class CopyCounter:
    """The sendpath probe on the two workers, or why it cannot run. `mark()` starts a run's interval,
    `measure()` ends it."""

    def __init__(self, pids: Sequence[int]):
        self.pids = tuple(pids)
        self.unavailable: Unavailable | None = None
        self._session: TraceSession[SendpathSnapshot] | None = None

    def open(self) -> None:
        session = TraceSession(SendpathProbe(self.pids))
        try:
            session.open()
        except CapabilityMissing as error:
            self.unavailable = Unavailable(str(error), error.fix)
            return
        except ProbeError as error:
            self.unavailable = Unavailable(
                str(error), "run `mqinspect doctor` to see what fails and how to fix it"
            )
            return
        self._session = session

    @property
    def stop_requested(self) -> bool:
        """SIGINT/SIGTERM arrived: the session's handlers take them while it is open."""
        return self._session is not None and self._session.stop_requested

    def mark(self) -> None:
        if self._session is not None:
            self._session.snapshot()

    def measure(self) -> tuple[tuple[MeasuredCopies, ...], int] | None:
        """The copies of each pid (in the order given) over the interval since `mark()`, and the records the
        probe lost; None if the probe is unavailable."""
        if self._session is None:
            return None
        snapshot = self._session.snapshot()
        return tuple(copies_of(snapshot, pid) for pid in self.pids), snapshot.lost_records

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None


def copies_of(snapshot: SendpathSnapshot, pid: int) -> MeasuredCopies:
    """One process's bytes by direction, summed over its descriptors except the protocol pipes."""
    rows = [
        row
        for row in snapshot.fds
        if row.pid == pid and row.fd not in CONTROL_FDS and row.source_fd not in CONTROL_FDS
    ]
    per_syscall: dict[str, int] = {}
    for row in rows:
        for entry in row.per_syscall:
            per_syscall[entry.syscall] = per_syscall.get(entry.syscall, 0) + entry.calls
    process = next((row for row in snapshot.processes if row.pid == pid), None)
    return MeasuredCopies(
        bytes_kernel_to_user=sum(row.bytes_kernel_to_user for row in rows),
        bytes_user_to_kernel=sum(row.bytes_user_to_kernel for row in rows),
        bytes_in_kernel=sum(row.bytes_in_kernel for row in rows),
        syscalls=sum(row.syscalls for row in rows),
        per_syscall=MappingProxyType(dict(sorted(per_syscall.items()))),
        faults_in_syscalls=sum(row.faults_in_syscalls for row in rows),
        socket_bytes_copied_to_user=(
            process.socket_bytes_copied_to_user
            if process is not None
            else (0 if snapshot.socket_bytes_copied_to_user is not None else None)
        ),
    )


# ---- the lab -----------------------------------------------------------------------------------------------


Say = Callable[[str], None]


class SendpathLab:
    """Use as `with SendpathLab(options) as lab: report = lab.run_all()`; or `lab.run_once(path, n)` for
    single runs (the tests attach strace around one) and `lab.report(runs, unsupported)` to summarize."""

    def __init__(self, options: LabOptions, say: Say = lambda _message: None):
        self.options = options
        self._say = say
        self._stack = contextlib.ExitStack()
        self.source: LabSource | None = None
        self.sender: Worker | None = None
        self.receiver: Worker | None = None
        self.copies: CopyCounter | None = None
        self._port = 0
        self._told_about_eviction = False
        self._started_unix_s = time.time()
        self._started = time.monotonic()

    # --- setting up and tearing down

    def __enter__(self) -> SendpathLab:
        try:
            self._set_up()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stack.close()

    def _set_up(self) -> None:
        self.source = self._make_source()
        if self.options.cold:
            self._say(f"--cold: the lab evicts its own source's pages before each run: {self.source.path}")
        else:
            read_into_cache(self.source)
        self.receiver = self._start_worker("receiver")
        self._port = self.receiver.answer(WORKER_START_TIMEOUT_S)["port"]
        self.sender = self._start_worker("sender")
        self.copies = CopyCounter((self.sender.pid, self.receiver.pid))
        self._stack.callback(self.copies.close)
        self.copies.open()
        if self.copies.unavailable:
            self._say(
                f"copies unavailable: {self.copies.unavailable.reason}; fix: {self.copies.unavailable.fix}"
            )
        else:
            self._say(f"Tracing copies of sender pid {self.sender.pid} and receiver pid {self.receiver.pid}.")

    def _make_source(self) -> LabSource:
        options = self.options
        if options.store_dir is not None:
            source, note = store_source(options.store_dir, options.payload_bytes)
            if note:
                self._say(note)
            return source
        parent = options.work_dir or Path(tempfile.gettempdir())
        needed = options.payload_bytes * 2 + 64 * MiB
        if shutil.disk_usage(parent).free < needed:
            raise BadInput(f"{parent} has less than {needed} bytes free for the lab's temporary store")
        directory = Path(tempfile.mkdtemp(prefix="mqinspect-sendpath-", dir=parent))
        self._stack.callback(shutil.rmtree, directory, True)
        self._say(
            f"Writing a {human_bytes(options.payload_bytes)} CommitLog range to a temporary store: "
            f"{directory}"
        )
        return create_source(directory, options.payload_bytes)

    def _start_worker(self, role: str) -> Worker:
        worker = Worker(role)
        self._stack.callback(worker.stop)
        return worker

    @property
    def run_timeout_s(self) -> float:
        return 60.0 + self.options.payload_bytes / 10e6  # 10 MB/s: far below any path on a working machine

    # --- running

    def run_all(self) -> SendpathLabReport:
        runs: dict[SendPath, list[PathRun]] = {path: [] for path in self.options.paths}
        unsupported: dict[SendPath, str] = {}
        for number in range(1, self.options.repeat + 1):
            for path in self.options.paths:
                if path in unsupported:
                    continue
                try:
                    run = self.run_once(path, number)
                except PathSkipped as skipped:
                    unsupported[path] = str(skipped)
                    self._say(f"{LABELS[path]}: unsupported here: {skipped}")
                    continue
                runs[path].append(run)
                self._say(
                    f"{LABELS[path]} run {number}/{self.options.repeat}: "
                    f"{human_rate(run.throughput_bytes_per_s)}"
                )
        return self.report(runs, unsupported)

    def run_once(self, path: SendPath, number: int) -> PathRun:
        assert self.source and self.sender and self.receiver and self.copies, (
            "use the lab as a context manager"
        )
        path, source = SendPath(path), self.source
        if self.options.cold:
            self._evict(source)
        before = cached_pages(source)
        self.copies.mark()
        self.receiver.tell({"op": "drain", "buffer_bytes": RECEIVE_BUFFER_BYTES})
        self.sender.tell(
            {
                "op": "send",
                "path": path.value,
                "source": str(source.path),
                "offset": source.offset_bytes,
                "length": source.length_bytes,
                "port": self._port,
                "chunk_bytes": self.options.chunk_bytes,
            }
        )
        sent = self.sender.answer(self.run_timeout_s)
        received = self.receiver.answer(self.run_timeout_s)
        measured = self.copies.measure()
        after = cached_pages(source)
        if self.copies.stop_requested:
            raise KeyboardInterrupt
        if "unsupported" in sent:
            raise PathSkipped(sent["unsupported"])
        if "error" in sent or "error" in received:
            raise LabFailed(sent.get("error") or received["error"])
        if received["bytes_received"] != sent["bytes_sent"]:
            raise LabFailed(
                f"{path}: the receiver got {received['bytes_received']} of {sent['bytes_sent']} bytes sent"
            )
        return _path_run(path, number, sent, received, measured, before, after, self.options.cold)

    def _evict(self, source: LabSource) -> None:
        stayed = evict(source.path, sync=True).pages_stayed_resident
        if stayed and not self._told_about_eviction:
            self._told_about_eviction = True
            self._say(
                f"--cold: {stayed} pages of {source.path} stayed in the page cache after eviction (tmpfs "
                "keeps its pages; locked or otherwise mapped pages stay too): those runs are not fully cold"
            )

    # --- summarizing

    def report(
        self, runs: Mapping[SendPath, Sequence[PathRun]], unsupported: Mapping[SendPath, str]
    ) -> SendpathLabReport:
        assert self.source and self.sender and self.receiver and self.copies
        source = self.source
        return SendpathLabReport(
            schema=SCHEMA,
            payload_bytes=source.length_bytes,
            repeat=self.options.repeat,
            cache_mode="cold" if self.options.cold else "hot",
            chunk_bytes=self.options.chunk_bytes,
            loopback=LOOPBACK,
            source=source,
            sender_pid=self.sender.pid,
            receiver_pid=self.receiver.pid,
            kernel_release=platform.release(),
            copies_source=COPIES_SOURCE,
            copies_unavailable=self.copies.unavailable,
            usage_source=USAGE_SOURCE,
            residency_source=RESIDENCY_SOURCE,
            paths=tuple(
                summarize_path(path, runs.get(path, ()), unsupported.get(path), source)
                for path in self.options.paths
            ),
            notes=GENERAL_NOTES,
            started_unix_s=round(self._started_unix_s, 3),
            elapsed_s=round(time.monotonic() - self._started, 3),
        )


def run_sendpath_lab(options: LabOptions, say: Say = lambda _message: None) -> SendpathLabReport:
    with SendpathLab(options, say) as lab:
        return lab.run_all()


def _usage(report: dict) -> ProcessUsage:
    return ProcessUsage(**report["usage"])


def _path_run(
    path: SendPath,
    number: int,
    sent: dict,
    received: dict,
    measured: tuple[tuple[MeasuredCopies, ...], int] | None,
    before: int | None,
    after: int | None,
    evicted: bool,
) -> PathRun:
    delivery_s = max(received["finished_monotonic_s"] - sent["started_monotonic_s"], 1e-9)
    (sender_copies, receiver_copies), lost = measured if measured is not None else ((None, None), None)
    zerocopy = path is SendPath.ZEROCOPY
    return PathRun(
        path=path,
        run=number,
        bytes_sent=sent["bytes_sent"],
        bytes_received=received["bytes_received"],
        send_s=round(sent["finished_monotonic_s"] - sent["started_monotonic_s"], 6),
        delivery_s=round(delivery_s, 6),
        throughput_bytes_per_s=round(received["bytes_received"] / delivery_s, 1),
        sender_usage=_usage(sent),
        receiver_usage=_usage(received),
        sender_syscalls=MappingProxyType(sent["syscalls"]),
        receiver_syscalls=MappingProxyType(received["syscalls"]),
        sender_copies=sender_copies,
        receiver_copies=receiver_copies,
        probe_lost_records=lost,
        zerocopy_fell_back_to_copy=sent["zerocopy_fell_back_to_copy"] if zerocopy else None,
        zerocopy_notifications=sent["zerocopy_notifications"] if zerocopy else None,
        cached_pages_before=before,
        cached_pages_after=after,
        evicted_before=evicted,
    )


def summarize_path(
    path: SendPath, runs: Sequence[PathRun], unsupported: str | None, source: LabSource
) -> PathResult:
    """The medians over a path's runs, and the findings drawn from them."""
    payload = source.length_bytes
    sender_copies = [run.sender_copies for run in runs]
    receiver_copies = [run.receiver_copies for run in runs]

    def sender(field: str) -> int | None:
        return median_measured([getattr(c, field) if c else None for c in sender_copies])

    k_to_u, u_to_k = sender("bytes_kernel_to_user"), sender("bytes_user_to_kernel")
    receiver_k_to_u = median_measured([c.bytes_kernel_to_user if c else None for c in receiver_copies])
    crossings = per_byte(None if k_to_u is None or u_to_k is None else k_to_u + u_to_k, payload)
    receiver_per_byte = per_byte(receiver_k_to_u, payload)
    sender_syscalls = median_measured([sum(run.sender_syscalls.values()) for run in runs])
    last = runs[-1] if runs else None
    fell_back = (
        any(run.zerocopy_fell_back_to_copy for run in runs) if path is SendPath.ZEROCOPY and runs else None
    )
    evidence = PathEvidence(
        path=path,
        payload_bytes=payload,
        sender_crossings_per_byte=crossings,
        receiver_copies_per_byte=receiver_per_byte,
        zerocopy_fell_back_to_copy=fell_back,
        cached_pages_before=last.cached_pages_before if last else None,
        cached_pages_after=last.cached_pages_after if last else None,
        range_pages=source.range_pages,
    )
    return PathResult(
        path=path,
        label=LABELS[path],
        model=MODELS[path],
        unsupported=unsupported,
        runs=tuple(runs),
        throughput_bytes_per_s=spread([run.throughput_bytes_per_s for run in runs]),
        sender_user_s=median_seconds([run.sender_usage.user_s for run in runs]),
        sender_sys_s=median_seconds([run.sender_usage.sys_s for run in runs]),
        receiver_user_s=median_seconds([run.receiver_usage.user_s for run in runs]),
        receiver_sys_s=median_seconds([run.receiver_usage.sys_s for run in runs]),
        sender_voluntary_ctx_switches=median_measured([r.sender_usage.voluntary_ctx_switches for r in runs]),
        sender_involuntary_ctx_switches=median_measured(
            [r.sender_usage.involuntary_ctx_switches for r in runs]
        ),
        receiver_voluntary_ctx_switches=median_measured(
            [r.receiver_usage.voluntary_ctx_switches for r in runs]
        ),
        receiver_involuntary_ctx_switches=median_measured(
            [r.receiver_usage.involuntary_ctx_switches for r in runs]
        ),
        sender_syscalls=sender_syscalls,
        sender_mode_switches=None if sender_syscalls is None else 2 * sender_syscalls,
        receiver_syscalls=median_measured([sum(run.receiver_syscalls.values()) for run in runs]),
        sender_bytes_kernel_to_user=k_to_u,
        sender_bytes_user_to_kernel=u_to_k,
        sender_bytes_in_kernel=sender("bytes_in_kernel"),
        sender_faults_in_syscalls=sender("faults_in_syscalls"),
        receiver_bytes_kernel_to_user=receiver_k_to_u,
        sender_crossings_per_byte=crossings,
        receiver_copies_per_byte=receiver_per_byte,
        cached_pages_before=evidence.cached_pages_before,
        cached_pages_after=evidence.cached_pages_after,
        zerocopy_fell_back_to_copy=fell_back,
        findings=findings(evidence) if runs else (),
    )
