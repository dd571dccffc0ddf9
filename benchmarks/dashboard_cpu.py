"""The dashboard's own CPU: `mqinspect top` on a store of sparse segments at a 1 s interval, in a pty.

Builds a store of 64 sparse CommitLog segments (default 64 MiB each) with ~3 % of their pages written in
scattered runs (so the heat strips are mixed, the costly case), a checkpoint, two ConsumeQueues and eight
consumer groups committed on both (config/consumerOffset.json), and starts
a broker stand-in that appends to the newest segment through a mapping (--write-kib-s). Then runs
`mqinspect top STORE` under a 160x50 pty whose output is drained, lets it start (with eBPF: until its probes
trace the writer, then --warmup s), and reads the
process's CPU time (user + system, all threads, from /proc/PID/stat) over the next --seconds; then presses q
and takes the whole run's CPU from wait4. Once without eBPF and, where BPF can be loaded, once with the four
probes (their programs run in the kernel on the traced processes' time; what is counted here is the
dashboard's collection and drawing).

--big-broker is issue 16's case: 1,000 CommitLog segments of 1 GiB (sparse, 0.1 % of each written: 1 GB on
disk) and 500 ConsumeQueues (63 topics of 8 queues).

--kafka-big is the same on a Kafka log directory written by store.kafka.writer: 200 partitions (25 topics of
8) of 7 files each (two segments' .log, .index and .timeindex, 2 MiB segments, and a producer snapshot;
~600 MB), eight consumer groups' commits in __consumer_offsets-0, and a broker stand-in appending 10 KiB
batches by write(2) to its own partition live-0 (1 GiB segments: no roll while measured).

Frame lateness: each frame's status line ("frame N at ...") is timed as it reaches the terminal. The sampler
ticks every interval from its start, so frame N's delay is its arrival minus N intervals, less the smallest
such delay of the run (the quickest frame counts as on time).

Targets: at most 3 % of one core in steady state at the 1 s interval (issue 15, and issue 16 for the big
broker), and every frame on time: none skipped, none more than ON_TIME_S after its tick.

    .venv/bin/python benchmarks/dashboard_cpu.py [--seconds 30] [--warmup 15] [--segments 64]
        [--segment-mib 64] [--consume-queues 2] [--write-kib-s 1024] [--big-broker] [--modes no-ebpf,ebpf]
        [--kafka-big] [--checkout PATH ...]   (several: each checkout's mqinspect in turn on the same store,
        back to back)
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import os
import pty
import random
import re
import select
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mqinspect.sampling.readers import open_store_reader  # noqa: E402
from mqinspect.sampling.store_reader import TURN_INTERVALS  # noqa: E402
from probes.privileges import can_trace, effective_capabilities  # noqa: E402
from probes.residency.scan import path_totals  # noqa: E402
from store.consumer_offsets import ConsumerOffsets, consumer_offset_path  # noqa: E402
from store.inspection.kafka.store_format import KAFKA  # noqa: E402
from store.kafka.consumer_offsets import encode_offset_commit  # noqa: E402
from store.kafka.writer import LogDirWriter, ProducerRecord  # noqa: E402

PAGE = 4096
RUN_PAGES = 64
RESIDENT_SHARE = 0.03
CONSUMER_GROUPS = 8
QUEUES_PER_TOPIC = 8
CQ_FILE_BYTES = 6_000_000  # RocketMQ's: 300,000 entries of 20 bytes
TERMINAL = (50, 160)  # rows, columns
TICKS_PER_S = os.sysconf("SC_CLK_TCK")
INTERVAL_S = 1.0
# A frame is on time when it reaches the terminal within this of its tick (beyond the quickest frame's
# delay), a quarter of the interval; a frame skipped or later than that is a MISS.
ON_TIME_S = 0.25
BIG_BROKER = {"segments": 1000, "segment_mib": 1024, "consume_queues": 500, "resident_share": 0.001}
KAFKA_TOPICS, KAFKA_PARTITIONS_PER_TOPIC = 25, 8
KAFKA_SEGMENT_BYTES = 2 << 20
KAFKA_BATCHES_PER_PARTITION = 300  # of 10 records of 1 KiB: 3 MiB, two segments
KAFKA_RECORD = b"x" * 1000
FRAME_MARK = re.compile(rb"frame (\d+) at ")  # the status line's, drawn with every frame
# The probes line once the probes trace the writer: the warmup starts then (compiling takes seconds of CPU,
# tens of seconds on a loaded machine, and is not the steady state).
PROBES_RUNNING = b"(tracing pid"
PROBES_RUNNING_WITHIN_S = 180.0


def build_store(
    root: Path,
    segments: int,
    segment_bytes: int,
    *,
    consume_queues: int = 2,
    resident_share: float = RESIDENT_SHARE,
    seed: int = 11,
) -> Path:
    """A store whose files follow RocketMQ's names and sizes; contents are scattered runs, not records
    (the dashboard reads residency, the tail of the newest segment and the checkpoint, not the records).
    ConsumeQueues are spread over topics of QUEUES_PER_TOPIC queues (TopicA first)."""
    chooser = random.Random(seed)
    block = os.urandom(RUN_PAGES * PAGE)
    pages = segment_bytes // PAGE
    (root / "commitlog").mkdir(parents=True)
    for index in range(segments):
        runs = max(1, int(pages * resident_share) // RUN_PAGES)
        starts = chooser.sample(range(0, pages - RUN_PAGES, RUN_PAGES), runs)
        if index == segments - 1 and 0 not in starts:
            starts[0] = 0  # the log's newest segment starts with data, as a broker's does
        _sparse_file(root / "commitlog" / f"{index * segment_bytes:020d}", segment_bytes, block, starts)
    for number in range(consume_queues):
        topic, queue = _topic_name(number // QUEUES_PER_TOPIC), number % QUEUES_PER_TOPIC
        directory = root / "consumequeue" / topic / str(queue)
        directory.mkdir(parents=True)
        _sparse_file(directory / f"{0:020d}", CQ_FILE_BYTES, block[: 20 * 1000], [0])
    (root / "checkpoint").write_bytes(struct.pack(">qqqqq", 1, 1, 0, 0, 0).ljust(4096, b"\0"))
    offsets = ConsumerOffsets()  # groups on both queues: the Consumers panel reads an entry for each
    for group in range(CONSUMER_GROUPS):
        for queue in range(min(2, consume_queues)):
            offsets.set("TopicA", f"group{group}", queue, 100 * group)
    offsets.persist(consumer_offset_path(root))
    # On disk before the dashboard starts, as a broker's older segments are: else the kernel writes the
    # build's dirty pages back during the measurement (the big broker's gigabyte, with a writeback event on
    # each of 1,000 files), which no steady state has.
    os.sync()
    return root


def build_kafka_log_dir(root: Path) -> Path:
    """A log dir of KAFKA_TOPICS x KAFKA_PARTITIONS_PER_TOPIC partitions of 7 files each (see --kafka-big),
    with CONSUMER_GROUPS groups' commits on the first topic's partitions."""
    with LogDirWriter(root, segment_bytes=KAFKA_SEGMENT_BYTES) as log_dir:
        for topic in range(KAFKA_TOPICS):
            for number in range(KAFKA_PARTITIONS_PER_TOPIC):
                partition = log_dir.partition(_topic_name(topic), number)
                for _ in range(KAFKA_BATCHES_PER_PARTITION):
                    partition.append([ProducerRecord(b"k", KAFKA_RECORD) for _ in range(10)])
        offsets = log_dir.partition("__consumer_offsets", 0)
        for group in range(CONSUMER_GROUPS):
            for number in range(KAFKA_PARTITIONS_PER_TOPIC):
                key, value = encode_offset_commit(
                    f"group{group}",
                    _topic_name(0),
                    number,
                    100 * group,
                    commit_timestamp=int(time.time() * 1000),
                )
                offsets.append([ProducerRecord(key, value)])
    os.sync()  # written back before the dashboard starts, as build_store's
    return root


def _topic_name(number: int) -> str:
    return "TopicA" if number == 0 else f"Topic{number:03d}"


def _sparse_file(path: Path, size: int, block: bytes, starts: list[int]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.ftruncate(fd, size)
        for start in starts:
            os.pwrite(fd, block, start * PAGE)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Run:
    mode: str
    steady_cpu_s: float
    steady_wall_s: float
    total_cpu_s: float
    total_wall_s: float
    terminal_bytes: int
    exit_status: int
    frames: dict[int, float]  # frame number -> when the terminal first got it (monotonic s), steady part
    main_thread_cpu_s: float = (
        0.0  # of steady_cpu_s, the main thread's (Textual's drawing); the rest: sampler's
    )

    @property
    def steady_percent(self) -> float:
        return 100 * self.steady_cpu_s / self.steady_wall_s

    @property
    def lateness_s(self) -> list[float]:
        """How late each steady frame reached the terminal against its tick. The sampler ticks every
        interval from its start (frame N at start + N intervals), so frame N's lateness is its arrival minus
        N intervals, less the smallest such difference (the frame drawn soonest after its tick counts as on
        time): what is left is the delay of sampling + drawing beyond the quickest frame's."""
        offsets = [arrived - number * INTERVAL_S for number, arrived in self.frames.items()]
        return [offset - min(offsets) for offset in offsets] if offsets else []

    @property
    def missing_frames(self) -> int:
        """Frames of the steady part never drawn (the app draws the newest; one behind is skipped)."""
        if not self.frames:
            return 0
        return max(self.frames) - min(self.frames) + 1 - len(self.frames)

    @property
    def frames_on_time(self) -> bool:
        late = self.lateness_s
        return bool(late) and not self.missing_frames and max(late) <= ON_TIME_S


def process_cpu_s(pid: int, thread: int | None = None) -> float:
    """The process's CPU time, all threads (or of one `thread`: the main thread's is the pid's)."""
    stat = f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat"
    fields = Path(stat).read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS_PER_S  # utime, stime: fields 14 and 15


WRITER = """
import mmap, os, sys, time
path, rate = sys.argv[1], int(sys.argv[2])
fd = os.open(path, os.O_RDWR)
area = mmap.mmap(fd, 0)
block, position = os.urandom(4096), len(area) // 2
while True:
    started = time.monotonic()
    for _ in range(rate // 4096 // 10):
        if position + 4096 > len(area):
            position = len(area) // 2  # wrap: the same pages again, dirty again
        area[position : position + 4096] = block
        position += 4096
    time.sleep(max(0.0, 0.1 - (time.monotonic() - started)))
"""


def start_writer(store: Path, bytes_per_s: int):
    """A broker stand-in: maps the newest segment and appends to it through the mapping at a steady rate,
    so the dashboard has a process to find and trace, faults to count and dirty pages to show."""
    newest = sorted((store / "commitlog").iterdir())[-1]
    return subprocess.Popen([sys.executable, "-c", WRITER, str(newest), str(bytes_per_s)])


def kafka_due_floor(log_dir: Path, repeats: int = 20) -> tuple[int, float]:
    """(files, CPU s): measuring, by the reader's own call (path_totals: one cachestat of the whole file),
    the files a dashboard on this log dir measures every interval at the least: each partition's active
    .log and a turn (1/TURN_INTERVALS) of the others; the quickest of `repeats` passes."""
    files = [str(file.path) for file in KAFKA.store_files(log_dir)]
    newest: dict[str, str] = {}
    for path in files:
        if path.endswith(".log"):
            newest[os.path.dirname(path)] = max(path, newest.get(os.path.dirname(path), path))
    share = -(-len(files) // TURN_INTERVALS)
    due = list(dict.fromkeys([*newest.values(), *files[:share]]))
    quickest = float("inf")
    for _ in range(repeats):
        started = time.thread_time()
        for path in due:
            path_totals(path)
        quickest = min(quickest, time.thread_time() - started)
    return len(due), quickest


def kafka_reader_cpu_s(log_dir: Path, drawn_rows: int = 40, reads: int = 20) -> float:
    """The store reader's CPU per interval on this log dir, as a dashboard's with `drawn_rows` rows on
    screen (the median of `reads`, 0.2 s apart, while the writer appends)."""
    reader = open_store_reader(log_dir)
    drawn = frozenset(reader.segment_paths()[:drawn_rows])
    costs = []
    for _ in range(reads + 5):
        started = time.thread_time()
        reader.read({}, drawn)
        costs.append(time.thread_time() - started)
        time.sleep(0.2)
    return statistics.median(costs[5:])


KAFKA_WRITER = """
import sys, time
from store.kafka.writer import PartitionWriter, ProducerRecord
path, rate = sys.argv[1], int(sys.argv[2])
writer = PartitionWriter(path)  # 1 GiB segments: no roll while measured
batch = [ProducerRecord(b"k", b"x" * 1000) for _ in range(10)]
while True:
    started = time.monotonic()
    for _ in range(max(1, rate // 10240 // 10)):
        writer.append(batch)
    time.sleep(max(0.0, 0.1 - (time.monotonic() - started)))
"""


def start_kafka_writer(log_dir: Path, bytes_per_s: int):
    """A broker stand-in: appends 10 KiB batches to its own partition, live-0, by write(2)."""
    return subprocess.Popen(
        [sys.executable, "-c", KAFKA_WRITER, str(log_dir / "live-0"), str(bytes_per_s)],
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def run_dashboard(store: Path, mode: str, warmup_s: float, seconds: float, checkout: Path = REPO) -> Run:
    python = sys.executable if checkout == REPO else str(checkout / ".venv" / "bin" / "python")
    arguments = [python, "-m", "mqinspect", "top", str(store), "--interval", f"{INTERVAL_S:g}"]
    if mode == "no-ebpf":
        arguments.append("--no-ebpf")
    started = time.monotonic()
    pid, fd = pty.fork()
    if pid == 0:
        os.environ["TERM"] = "xterm-256color"
        os.chdir(checkout)
        os.execv(python, arguments)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", *TERMINAL, 0, 0))
    written = 0
    if mode == "ebpf":  # the probes compile (twice: again once the writer is found) before the warmup
        written += _drain(fd, PROBES_RUNNING_WITHIN_S, {}, until=PROBES_RUNNING)
    written += _drain(fd, warmup_s, {})
    cpu_before, wall_before, main_before = (
        process_cpu_s(pid),
        time.monotonic(),
        process_cpu_s(pid, thread=pid),
    )
    frames: dict[int, float] = {}
    written += _drain(fd, seconds, frames)
    cpu_after, wall_after, main_after = process_cpu_s(pid), time.monotonic(), process_cpu_s(pid, thread=pid)
    os.write(fd, b"q")
    written += _drain(fd, 10, {}, until_closed=True)
    _, status, usage = os.wait4(pid, 0)
    os.close(fd)
    return Run(
        mode,
        cpu_after - cpu_before,
        wall_after - wall_before,
        usage.ru_utime + usage.ru_stime,
        time.monotonic() - started,
        written,
        os.waitstatus_to_exitcode(status),
        frames,
        main_after - main_before,
    )


def _drain(
    fd: int, seconds: float, frames: dict[int, float], until_closed: bool = False, until: bytes | None = None
) -> int:
    """Read what the dashboard draws, as a terminal would, for `seconds` (or until the pty closes, or until
    `until` is drawn); note in `frames` when each frame's status line first arrived."""
    end, total, carried = time.monotonic() + seconds, 0, b""
    while (left := end - time.monotonic()) > 0:
        if until is not None and until in carried:
            break
        if not select.select([fd], [], [], min(left, 0.5))[0]:
            continue
        try:
            data = os.read(fd, 1 << 16)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data and until_closed:
            break
        arrived, total = time.monotonic(), total + len(data)
        for match in FRAME_MARK.finditer(carried + data):
            frames.setdefault(int(match.group(1)), arrived)
        if until is not None and until in carried + data:
            carried = until
            continue
        carried = data[-32:]  # a mark split between two reads
    return total


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument(
        "--warmup", type=float, default=8.0, help="seconds of start-up left out of the figure"
    )
    parser.add_argument("--segments", type=int, default=64)
    parser.add_argument("--segment-mib", type=int, default=64)
    parser.add_argument("--consume-queues", type=int, default=2)
    parser.add_argument(
        "--resident-share", type=float, default=RESIDENT_SHARE, help="share of each segment's pages written"
    )
    parser.add_argument(
        "--big-broker",
        action="store_true",
        help=f"the issue's big broker: {BIG_BROKER['segments']} segments of {BIG_BROKER['segment_mib']} MiB "
        f"(sparse, {BIG_BROKER['resident_share'] * 100:.1f}%% of each written) and "
        f"{BIG_BROKER['consume_queues']} ConsumeQueues",
    )
    parser.add_argument(
        "--kafka-big",
        action="store_true",
        help=f"a Kafka log dir of {KAFKA_TOPICS * KAFKA_PARTITIONS_PER_TOPIC} partitions x 7 files and a "
        "partition being written (see above)",
    )
    parser.add_argument("--modes", default="no-ebpf,ebpf", help="which runs: no-ebpf, ebpf or both")
    parser.add_argument(
        "--dir", type=Path, default=None, help="where to build the store (default: a temp dir)"
    )
    parser.add_argument(
        "--write-kib-s", type=int, default=1024, help="append rate of the broker stand-in (0: no writer)"
    )
    parser.add_argument(
        "--checkout",
        type=Path,
        action="append",
        default=None,
        help="run the mqinspect of this checkout (its .venv); repeated, each in turn on the same store, back "
        "to back (default: this one)",
    )
    args = parser.parse_args()
    if args.big_broker:
        for name, value in BIG_BROKER.items():
            setattr(args, name, value)
    wanted = args.modes.split(",")
    modes = [
        m
        for m in ("no-ebpf", "ebpf")
        if m in wanted and (m == "no-ebpf" or can_trace(effective_capabilities()))
    ]
    directory = Path(tempfile.mkdtemp(prefix="mqinspect-dashboard-", dir=args.dir))
    try:
        if args.kafka_big:
            store = build_kafka_log_dir(directory / "kafka-logs")
            start = start_kafka_writer
        else:
            store = build_store(
                directory / "store",
                args.segments,
                args.segment_mib << 20,
                consume_queues=args.consume_queues,
                resident_share=args.resident_share,
            )
            start = start_writer
        writer = start(store, args.write_kib_s * 1024) if args.write_kib_s else None
        kafka_bound = (*kafka_due_floor(store), kafka_reader_cpu_s(store)) if args.kafka_big else None
        load_before = os.getloadavg()
        try:
            checkouts = [path.resolve() for path in args.checkout or [REPO]]
            runs = [
                _named(
                    run_dashboard(store, mode, args.warmup, args.seconds, checkout), checkout, len(checkouts)
                )
                for checkout in checkouts
                for mode in modes
            ]
        finally:
            if writer is not None:
                writer.kill()
                writer.wait()
        load_after = os.getloadavg()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    if args.kafka_big:
        what = (
            f"a Kafka log dir of {KAFKA_TOPICS * KAFKA_PARTITIONS_PER_TOPIC} partitions x 7 files "
            f"({KAFKA_SEGMENT_BYTES >> 20} MiB segments) and __consumer_offsets-0"
        )
        how = "by write(2) to its own partition"
    else:
        what = f"{args.segments} segments x {args.segment_mib} MiB and {args.consume_queues} ConsumeQueues"
        how = "through a mapping"
    print(
        f"mqinspect top on {what}, interval {INTERVAL_S:g} s, {TERMINAL[1]}x{TERMINAL[0]} pty, "
        f"{os.cpu_count()} CPUs, a writer appending {args.write_kib_s} KiB/s {how}; load average "
        f"{load_before[0]:.2f} before, {load_after[0]:.2f} after"
    )
    print(
        f"{'mode':<22} {'steady CPU':>11} {'over':>7} {'whole run CPU':>14} {'wall':>7} "
        f"{'drawn':>9} {'exit':>5} {'frames':>7} {'missed':>7} {'late p50':>9} {'p95':>7} {'max':>7}"
    )
    for run in runs:
        late = sorted(run.lateness_s) or [float("nan")]
        print(
            f"{run.mode:<22} {run.steady_percent:>10.2f}% {run.steady_wall_s:>6.1f}s "
            f"{run.total_cpu_s:>13.2f}s {run.total_wall_s:>6.1f}s "
            f"{run.terminal_bytes / 1024:>7.0f}KiB {run.exit_status:>5} {len(run.frames):>7} "
            f"{run.missing_frames:>7} {_ms(late[len(late) // 2])} {_ms(late[int(0.95 * (len(late) - 1))])} "
            f"{_ms(late[-1])}"
        )
    floors = {run.mode: run for run in runs if run.mode.endswith("no-ebpf")}
    for run in runs:
        cpu = "PASS" if run.steady_percent <= 3.0 else "MISS"
        frames = "PASS" if run.frames_on_time else "MISS"
        main_share = 100 * run.main_thread_cpu_s / run.steady_wall_s
        split = (
            f"; main thread (drawing) {main_share:.2f} %, "
            f"sampler and the rest {run.steady_percent - main_share:.2f} %"
        )
        reader_note = ""
        # the Kafka bound is this checkout's reader's
        this_checkout = len(checkouts) == 1 or run.mode.startswith(f"{REPO.name}:")
        if kafka_bound is not None and cpu == "MISS" and this_checkout:
            files, measuring_s, reader_s = kafka_bound
            reader_note = (
                f"; bound: the store reader alone takes {reader_s * 1000:.1f} ms CPU per interval here "
                f"({100 * reader_s / INTERVAL_S:.2f} % of a core), of which measuring the {files} files due "
                f"every interval at the least (each partition's active .log, a turn of the others) by "
                f"cachestat alone {measuring_s * 1000:.1f} ms ({100 * measuring_s / INTERVAL_S:.2f} %)"
            )
        floor = None if run.mode in floors else floors.get(run.mode.removesuffix("ebpf") + "no-ebpf")
        bound = (
            f"; bounded by the same dashboard without eBPF in this run: {floor.steady_percent:.2f} %, the "
            f"probes add {run.steady_percent - floor.steady_percent:+.2f} points"
            if cpu == "MISS" and floor is not None
            else ""
        )
        steady = f"steady CPU {run.steady_percent:.2f} % of one core (target <= 3 %)"
        print(f"{cpu} {run.mode}: {steady}{split}{reader_note}{bound}")
        print(
            f"{frames} {run.mode}: every frame on time ({len(run.frames)} frames, {run.missing_frames} "
            f"skipped, latest {max(run.lateness_s, default=float('nan')) * 1000:.0f} ms after its tick "
            f"beyond the quickest frame; target <= {ON_TIME_S * 1000:.0f} ms, none skipped)"
        )


def _named(run: Run, checkout: Path, checkouts: int) -> Run:
    """A run's mode with its checkout's name when several checkouts are compared."""
    return run if checkouts == 1 else dataclasses.replace(run, mode=f"{checkout.name}:{run.mode}")


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:>7.0f}ms"


if __name__ == "__main__":
    main()
