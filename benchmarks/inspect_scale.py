"""Every inspection command on a production-sized store, cached and cold, beside the floors of the same run.

Builds once (and reuses while its manifest matches) a store written by the project's own MessageStore: 1 KiB
messages on four topics of four queues (98% of the bytes: the verify target is about 1 KiB records) and
128 B messages on two more, each message with its own KEYS and a TAGS, default 4 GiB of CommitLog in
RocketMQ's 1 GiB segments. `--segments-case` builds instead a store of 1,000
small CommitLog segments (1 MiB each by default, through `store init --segment-size`), for the "under 2 s
for 1,000 segments" target.

Then, in one run, each command of COMMANDS runs as a child process through the CLI (`mqinspect ...`, the way
a user types it, output to /dev/null or a pipe), first with the store in the page cache, then after
`mqinspect cache --evict -r STORE`. Each row gives wall time, records/s, MB/s (10^6 bytes of CommitLog),
the child's peak RSS (wait4) and its ratio to the floor. The floors are measured in the same pass, on the same
bytes: a pread loop in 1 MiB blocks over the CommitLog (and `cat` of it), zlib.crc32 over the same blocks,
and `fincore` over every file of the store. The targets of issue 16's item 2 are printed with PASS or MISS
and by how much. In the cold pass the floor is what the disk gives (a pread loop after eviction) and each
command's row says how close it gets.

`store verify`'s target is judged in CPU seconds (the command's, from wait4, against the floor loop's in
this process): on a shared 2-core machine wall time measures the other processes too. Beside it the same
pass times the minimal walk, the least a Python walk does per record (one header unpack, the body's CRC),
and a MISS says what share of the floor that alone reaches and what verify spends per record beyond it.

`store dump` is timed three ways: the first record's latency with a huge --count (against --count 1, so
the interpreter's start-up is not counted), and the jsonl and table rates from the difference between a
run of DUMP_RECORDS records and one of a single record, the best of DUMP_REPEATS of each, in CPU seconds
(wait4; judged so for the reason verify is, the wall-time rate printed beside it). The jsonl target's bound
is the dump's own decoding alone (scan_commitlog as the dump calls it), in this process's CPU seconds. A
dump that prints nothing before its timeout is reported as such, with the rate it then stays below.

    .venv/bin/python benchmarks/inspect_scale.py                      # 4 GiB store under /work/scratch/verify
    .venv/bin/python benchmarks/inspect_scale.py --segments-case      # 1,000 x 1 MiB segments
    .venv/bin/python benchmarks/inspect_scale.py --gib 0.1 --quick    # the suite's smoke test, seconds
    .venv/bin/python benchmarks/inspect_scale.py --store DIR --gib 2 --no-cold
    .venv/bin/python benchmarks/inspect_scale.py --store DIR --only-verify   # verify alone, its target, bound
    .venv/bin/python benchmarks/inspect_scale.py --store DIR --only-dump     # the dump rows and targets alone
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import selectors
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from store import codec  # noqa: E402
from store.config import GiB, MiB  # noqa: E402
from store.layout import discover_store  # noqa: E402
from store.message_store import MessageStore  # noqa: E402
from store.store_sizes import store_config_for  # noqa: E402

MQINSPECT = Path(sys.executable).with_name("mqinspect")  # the CLI of the environment running this
DEFAULT_ROOT = Path("/work/scratch/verify")
MANIFEST = "inspect_scale.json"
BLOCK_BYTES = 1 * MiB
VERIFY_BLOCK_BYTES = 4 * MiB  # what store verify reads at once

# The store: (topic prefix, topics, queues per topic, body bytes, share of the CommitLog's bytes)
MIX = (("Scale1K", 4, 4, 1024, 0.98), ("Scale128", 2, 4, 128, 0.02))
BATCH = 64
BUILD_SHARE_OF_SIZE = 0.999
TAGS = "TagA"

# Issue 16, item 2
VERIFY_FLOOR_SHARE = 0.25  # of the read+CRC floor's rate, at 1 KiB records, cached
DUMP_FIRST_RECORD_S = 0.100
DUMP_JSONL_RECORDS_PER_S = 200_000
DUMP_TABLE_RECORDS_PER_S = 50_000
DUMP_REPEATS = 3  # each dump rate run, and the decoding bound, the best of this many (CPU time)
CONSTANT_AT_4GIB_S = 0.5
CONSTANT_AT_1000_SEGMENTS_S = 2.0
PEAK_RSS_BYTES = 150 * MiB
FIRST_RECORD_HUGE_COUNT = 10_000_000
TOP_INTERVAL_S = 0.1  # top --once sleeps one interval between its two samples; not counted against it


@dataclass(frozen=True)
class StoreSpec:
    log_bytes: int
    segment_bytes: int
    cq_entries: int
    index_slots: int

    def describe(self, written_bytes: int) -> str:
        segments = -(-written_bytes // self.segment_bytes)
        size = f"{self.segment_bytes / MiB:g} MiB"
        return f"{written_bytes / GiB:.2f} GiB of CommitLog in {segments} segments of {size}"


@dataclass
class Manifest:
    spec: StoreSpec
    records: int = 0
    records_1k: int = 0
    log_bytes_1k: int = 0
    written_bytes: int = 0
    sample_topic: str = ""
    sample_queue: int = 0
    sample_key: str = ""
    sample_offset: int = 0  # a record in the middle of the log: `query --offset`, `dump --from`
    build_s: float = 0.0
    sizes: dict = field(default_factory=dict)


# ---- building the store ----------------------------------------------------------------------------------


def queues_of_mix() -> list[tuple[str, int, int, float]]:
    """(topic, queue id, body bytes, share of the bytes) of every queue the store is written to."""
    queues = []
    for prefix, topics, queues_per_topic, body, share in MIX:
        for topic in range(topics):
            for queue in range(queues_per_topic):
                queues.append((f"{prefix}-{topic}", queue, body, share / (topics * queues_per_topic)))
    return queues


def build_store(root: Path, spec: StoreSpec) -> Manifest:
    """The store, written batch by batch in round robin over the queues until the bytes of the spec."""
    if root.exists():
        shutil.rmtree(root)
    run_cli(
        "store", "init", str(root), "--segment-size", str(spec.segment_bytes),
        "--cq-entries", str(spec.cq_entries), "--index-slots", str(spec.index_slots),
    )  # fmt: skip
    queues = queues_of_mix()
    # A little under the size, so that the batches' overshoot and the segments' blanks do not open one more
    goals = [int(spec.log_bytes * BUILD_SHARE_OF_SIZE * share) for *_, share in queues]
    written = [0] * len(queues)
    numbers = [0] * len(queues)
    manifest = Manifest(spec)
    bodies = {body: os.urandom(body) for *_, body, _ in queues}
    started = time.monotonic()
    with MessageStore(root, store_config_for(root)) as store:
        while True:
            pending = [at for at in range(len(queues)) if written[at] < goals[at]]
            if not pending:
                break
            for at in pending:
                topic, queue_id, body, _ = queues[at]
                batch = [
                    codec.Message(
                        topic,
                        body=bodies[body],
                        queue_id=queue_id,
                        properties={
                            codec.PROPERTY_KEYS: f"{topic}-{queue_id}-{numbers[at] + n:08d}",
                            codec.PROPERTY_TAGS: TAGS,
                        },
                        born_timestamp_ms=time.time_ns() // 1_000_000,
                    )
                    for n in range(BATCH)
                ]
                result = store.put_messages(batch)
                numbers[at] += BATCH
                written[at] += result.wrote_bytes
                manifest.records += BATCH
                if body == 1024:
                    manifest.records_1k += BATCH
                    manifest.log_bytes_1k += result.wrote_bytes
                if not manifest.sample_offset and sum(written) >= spec.log_bytes // 2:
                    manifest.sample_offset = result.physical_offset
                    manifest.sample_topic, manifest.sample_queue = topic, queue_id
                    manifest.sample_key = f"{topic}-{queue_id}-{numbers[at] - 1:08d}"
        store.wait_dispatched(store.commit_log.max_offset, timeout_s=600)
    manifest.written_bytes = sum(written)
    manifest.build_s = time.monotonic() - started
    manifest.sizes = {"written_bytes": manifest.written_bytes}
    (root / MANIFEST).write_text(json.dumps(asdict(manifest), indent=2) + "\n")
    return manifest


def load_or_build(root: Path, spec: StoreSpec) -> tuple[Manifest, bool]:
    """The store at `root` if it was built to `spec` (its manifest says so), else a new one."""
    try:
        saved = json.loads((root / MANIFEST).read_text())
        if saved["spec"] == asdict(spec):
            saved["spec"] = spec
            return Manifest(**saved), False
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return build_store(root, spec), True


# ---- running a command -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    wall_s: float
    peak_rss_bytes: int | None  # None: killed at its timeout before it could be measured
    exit_code: int | None  # None: killed at its timeout
    first_line_s: float | None = None  # when the first wanted line came (dump)
    cpu_s: float | None = None  # user + system CPU seconds of the command (wait4)


# Each command runs under this small launcher, which forks it and reports its wall time, exit code and
# ru_maxrss from wait4. A child forked by the harness itself would start with the harness's RSS as its peak
# (Linux keeps the larger of the pre-exec and post-exec high-water marks), the launcher's is a few MiB.
# The launcher ignores SIGTERM (its command gets it) so that a stopped dump is still measured.
LAUNCHER = """
import os, signal, sys, time
report = int(sys.argv[1])
signal.signal(signal.SIGTERM, signal.SIG_IGN)
started = time.perf_counter()
pid = os.fork()
if pid == 0:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        os.execv(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - started
cpu = usage.ru_utime + usage.ru_stime
os.write(report, f"{wall} {usage.ru_maxrss * 1024} {os.waitstatus_to_exitcode(status)} {cpu}".encode())
"""


def run_cli(*args: str) -> None:
    subprocess.run([str(MQINSPECT), *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _env() -> dict[str, str]:
    return {**os.environ, "NO_COLOR": "1", "COLUMNS": "120"}


def _launch(argv: list[str], stdout: int) -> tuple[subprocess.Popen, int]:
    read_end, write_end = os.pipe()
    child = subprocess.Popen(
        [sys.executable, "-S", "-c", LAUNCHER, str(write_end), *argv],
        stdout=stdout,
        stderr=subprocess.DEVNULL,
        env=_env(),
        pass_fds=(write_end,),
        start_new_session=True,
    )
    os.close(write_end)
    return child, read_end


def timed(argv: list[str], timeout_s: float) -> Run:
    """Wall time, peak RSS and exit code of one command, its output discarded."""
    started = time.perf_counter()
    child, report = _launch(argv, subprocess.DEVNULL)
    return _reap(child, report, started, timeout_s)


def timed_first_line(argv: list[str], wanted: Callable[[bytes], bool], timeout_s: float) -> Run:
    """When the first line `wanted` accepts reaches the pipe, from the launch; then the command is stopped."""
    started = time.perf_counter()
    child, report = _launch(argv, subprocess.PIPE)
    first, pending = None, b""
    with selectors.DefaultSelector() as selector:
        selector.register(child.stdout, selectors.EVENT_READ)
        while first is None and time.perf_counter() - started < timeout_s:
            if not selector.select(timeout=0.05):
                continue
            chunk = os.read(child.stdout.fileno(), 1 << 16)
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            if any(wanted(line) for line in lines):
                first = time.perf_counter() - started
    if child.poll() is None:
        os.killpg(child.pid, signal.SIGTERM)
    run = _reap(child, report, started, time.perf_counter() - started + 10)
    child.stdout.close()
    return Run(run.wall_s, run.peak_rss_bytes, run.exit_code, first, run.cpu_s)


def _reap(child: subprocess.Popen, report: int, started: float, timeout_s: float) -> Run:
    try:
        child.wait(timeout=max(0.0, started + timeout_s - time.perf_counter()))
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
        os.close(report)
        return Run(timeout_s, None, None)
    with os.fdopen(report, "rb") as pipe:
        wall, rss, code, cpu = pipe.read().split()
    return Run(float(wall), int(rss), int(code), cpu_s=float(cpu))


# ---- the floors --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Floors:
    read_s: float  # pread loop, 1 MiB blocks
    crc_s: float  # zlib.crc32 over the same blocks, already read
    cat_s: float
    fincore_s: float
    bytes_read: int
    read_cpu_s: float = 0.0  # the same pread loop and crc32, in this process's CPU seconds
    crc_cpu_s: float = 0.0

    @property
    def read_crc_s(self) -> float:
        return self.read_s + self.crc_s

    @property
    def read_crc_cpu_s(self) -> float:
        return self.read_cpu_s + self.crc_cpu_s


def commitlog_extents(root: Path, written: int) -> list[tuple[Path, int]]:
    """(segment, bytes written in it) of every CommitLog segment, up to `written` bytes of the log."""
    layout = discover_store(root)
    extents, left = [], written
    for segment in layout.commitlog.segments:
        size = min(left, segment.size_bytes)
        if size <= 0:
            break
        extents.append((segment.path, size))
        left -= size
    if left > 0:  # the last segment's END_OF_FILE blanks: the writer's bytes span a little more
        extents[-1] = (extents[-1][0], layout.commitlog.segments[len(extents) - 1].size_bytes)
    return extents


def measure_floors(root: Path, extents: list[tuple[Path, int]], *, cold: bool) -> Floors:
    """The floors over the CommitLog's written bytes. Cached: after a first read of them, so that the pread
    loop reads what the page cache holds now (other processes may have taken some of it since)."""
    if not cold:
        _pread_and_crc(extents)
    read_s, crc_s, total, read_cpu_s, crc_cpu_s = _pread_and_crc(extents)
    if cold:
        evict(root)  # cat reads from the disk too
    started = time.perf_counter()
    with open(os.devnull, "wb") as sink:
        subprocess.run(["cat", *(str(path) for path, _ in extents)], stdout=sink, check=True)
    cat_s = time.perf_counter() - started
    files = [str(path) for path in sorted(root.rglob("*")) if path.is_file()]
    started = time.perf_counter()
    subprocess.run(["fincore", *files], stdout=subprocess.DEVNULL, check=True)
    return Floors(read_s, crc_s, cat_s, time.perf_counter() - started, total, read_cpu_s, crc_cpu_s)


def _pread_and_crc(extents: list[tuple[Path, int]]) -> tuple[float, float, int, float, float]:
    """Seconds reading the extents with pread in 1 MiB blocks, seconds of zlib.crc32 over them, bytes; the
    same two in CPU seconds."""
    read_s = crc_s = read_cpu_s = crc_cpu_s = 0.0
    total = 0
    block = bytearray(BLOCK_BYTES)
    view = memoryview(block)
    for path, size in extents:
        fd = os.open(path, os.O_RDONLY)
        try:
            position = 0
            while position < size:
                started, cpu = time.perf_counter(), time.process_time()
                got = os.preadv(fd, [view[: min(BLOCK_BYTES, size - position)]], position)
                read_s += time.perf_counter() - started
                read_cpu_s += time.process_time() - cpu
                if got <= 0:
                    break
                started, cpu = time.perf_counter(), time.process_time()
                zlib.crc32(view[:got])
                crc_s += time.perf_counter() - started
                crc_cpu_s += time.process_time() - cpu
                position += got
                total += got
        finally:
            os.close(fd)
    return read_s, crc_s, total, read_cpu_s, crc_cpu_s


# The fixed header up to the body's length, keeping TOTALSIZE, BODYCRC and the body's length.
_MINIMAL_HEADER = struct.Struct(">i4xi72xi")
_CRC32_MASK = 0x7FFFFFFF


def minimal_walk_cpu_s(extents: list[tuple[Path, int]]) -> tuple[float, int]:
    """CPU seconds of the least a record-by-record walk in Python does, and its records: each record's
    header in one unpack, its body's CRC on a memoryview slice compared with BODYCRC, the next record from
    TOTALSIZE; in blocks as verify reads them. No other check: what bounds a verify written in Python."""
    started, records = time.process_time(), 0
    unpack = _MINIMAL_HEADER.unpack_from
    header_size = _MINIMAL_HEADER.size
    for path, size in extents:
        with open(path, "rb", buffering=0) as file:
            position = 0
            while position < size:
                block = os.pread(file.fileno(), min(VERIFY_BLOCK_BYTES, size - position), position)
                view, at, last = memoryview(block), 0, len(block) - header_size
                while at <= last:
                    total, body_crc, body_length = unpack(block, at)
                    if total <= 0 or at + total > len(block):
                        break
                    body_start = at + header_size
                    if zlib.crc32(view[body_start : body_start + body_length]) & _CRC32_MASK != body_crc:
                        break
                    at += total
                    records += 1
                if not at:
                    break  # a blank or the end of the data
                position += at
    return time.process_time() - started, records


def evict(root: Path) -> None:
    run_cli("cache", "--evict", "-r", str(root))


def warm(root: Path) -> None:
    """The store's files in the page cache (the sparse index file's holes too: `cache --touch` reads them)."""
    run_cli("cache", "--touch", "-r", str(root))


# ---- the commands ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    name: str
    args: tuple[str, ...]
    kind: str  # "walk": reads the whole log; "constant": should not grow with the bytes; "residency"
    timeout_s: float = 300.0


def dump_format_for_jsonl() -> str:
    """jsonl where this tree's dump has it (the dump helper's change); json, one document, before."""
    help_text = subprocess.run(
        [str(MQINSPECT), "store", "dump", "--help"], capture_output=True, text=True, env=_env(), check=True
    ).stdout
    return "jsonl" if "jsonl" in help_text else "json"


def commands(root: Path, manifest: Manifest) -> list[Command]:
    """Every command the harness times, in one place: adapt the dump rows here when its options change."""
    store = str(root)
    return [
        Command("store stat", ("store", "stat", store), "constant"),
        Command("store segments", ("store", "segments", store), "constant"),
        Command(
            "store cq",
            ("store", "cq", store, "-t", manifest.sample_topic, "-q", str(manifest.sample_queue)),
            "constant",
        ),
        Command("store query --key", ("store", "query", store, "--key", manifest.sample_key), "constant"),
        Command(
            "store query --offset",
            ("store", "query", store, "--offset", str(manifest.sample_offset)),
            "constant",
        ),
        Command("store recover --dry-run", ("store", "recover", store, "--dry-run"), "constant"),
        Command(
            "top --once --no-ebpf",
            ("top", store, "--once", "--no-ebpf", "--interval", str(TOP_INTERVAL_S)),
            "constant",
        ),
        Command("cache -r", ("cache", store, "-r"), "residency"),
        Command("store verify", ("store", "verify", store), "walk", timeout_s=900),
    ]


def dump_args(root: Path, form: str, count: int, start: int) -> list[str]:
    """`store dump` as timed: table (the default form) or jsonl/json, `count` records from `start`."""
    args = [str(MQINSPECT), "store", "dump", str(root), "--from", str(start), "--count", str(count)]
    return args if form == "table" else [*args, "--format", form]


# ---- one pass ----------------------------------------------------------------------------------------


@dataclass
class Row:
    name: str
    run: Run
    records: int | None = None
    log_bytes: int | None = None
    floor_s: float | None = None  # the floor's time for the same bytes
    note: str = ""
    kind: str = ""


@dataclass
class Pass:
    cold: bool
    floors: Floors
    rows: list[Row] = field(default_factory=list)
    dump: dict[str, float | None] = field(default_factory=dict)
    minimal_walk: tuple[float, int] | None = None  # (CPU s, records) of minimal_walk_cpu_s, cached only


def run_pass(
    root: Path, manifest: Manifest, *, cold: bool, dump_records: int, quick: bool, only: str | None = None
) -> Pass:
    extents = commitlog_extents(root, manifest.written_bytes)
    if cold:
        evict(root)
    else:
        warm(root)
    floors = measure_floors(root, extents, cold=cold)
    one = Pass(cold, floors)
    if not cold and only != "dump":
        one.minimal_walk = minimal_walk_cpu_s(extents)
    for command in commands(root, manifest):
        if only == "dump" or (only == "verify" and command.name != "store verify"):
            continue
        if cold:
            evict(root)
        run = timed([str(MQINSPECT), *command.args], command.timeout_s)
        row = Row(command.name, run, kind=command.kind)
        if command.kind == "residency":
            row.floor_s = floors.fincore_s
        if command.kind == "walk":
            row.records, row.log_bytes = manifest.records, floors.bytes_read
            row.floor_s = floors.read_s if cold else floors.read_crc_s
        if command.name.startswith("top"):
            row.note = f"includes its {TOP_INTERVAL_S} s interval"
        one.rows.append(row)
    if only != "verify":
        one.rows += time_dump(root, manifest, one, cold=cold, dump_records=dump_records, quick=quick)
    return one


def time_dump(
    root: Path, manifest: Manifest, one: Pass, *, cold: bool, dump_records: int, quick: bool
) -> list[Row]:
    start = manifest.sample_offset
    marks = {str(start).encode(), f"{start:,}".encode()}

    def names_first_record(line: bytes) -> bool:
        return any(mark in line for mark in marks)

    rows = []
    firsts = {}
    huge = dump_records if quick else FIRST_RECORD_HUGE_COUNT
    for count in (1, huge):
        if cold:
            evict(root)
        run = timed_first_line(dump_args(root, "table", count, start), names_first_record, timeout_s=30)
        firsts[count] = run
        rows.append(Row(f"store dump first record (--count {count:,})", run))
    if firsts[1].first_line_s is not None and firsts[huge].first_line_s is not None:
        one.dump["first_record_excess_s"] = firsts[huge].first_line_s - firsts[1].first_line_s
        one.dump["first_record_huge_count"] = huge
    else:
        one.dump["first_record_excess_s"] = None
    table_count = dump_records // 10 if quick else dump_records // 4
    for form, count in ((dump_format_for_jsonl(), dump_records), ("table", table_count)):
        runs = {}
        for n in (1, count):
            for _ in range(1 if cold or quick else DUMP_REPEATS):
                if cold:
                    evict(root)
                run = timed(dump_args(root, form, n, start), timeout_s=120)
                runs[n] = _faster(runs.get(n), run)
            rows.append(Row(f"store dump --format {form} --count {n:,}", runs[n], records=n))
        label = "jsonl" if form != "table" else "table"
        if label == "jsonl" and not cold:
            one.dump["decode_records_per_s"] = decode_rate(root, start, count)
        if runs[count].exit_code == 0 and runs[1].exit_code == 0:
            beyond_cpu_s = (runs[count].cpu_s or 0) - (runs[1].cpu_s or 0)
            one.dump[f"{label}_records_per_s"] = (count - 1) / max(beyond_cpu_s, 1e-6)
            one.dump[f"{label}_wall_records_per_s"] = (count - 1) / max(
                runs[count].wall_s - runs[1].wall_s, 1e-6
            )
            one.dump[f"{label}_form"] = form
        else:
            one.dump[f"{label}_records_per_s"] = None
            one.dump[f"{label}_below_records_per_s"] = count / runs[count].wall_s
    return rows


def _faster(best: Run | None, run: Run) -> Run:
    """The run with less CPU time (a failed one only when there is nothing else)."""
    if best is None or best.exit_code != 0:
        return run
    if run.exit_code != 0 or (run.cpu_s or 0) >= (best.cpu_s or 0):
        return best
    return run


def decode_rate(root: Path, start: int, count: int) -> float:
    """Records/s of the jsonl dump's own walk alone (scan_commitlog decoding runs with CRC, as columns where
    they take that shape, as `store dump --format jsonl` reads), in this process's CPU seconds, the best of
    DUMP_REPEATS: what bounds that form of the dump."""
    from store.commitlog_scan import DecodedColumns, DecodedRun, ScannedRecord, scan_commitlog
    from store.inspection.rocketmq.reading import commitlog_of

    best = None
    for _ in range(DUMP_REPEATS):
        began, decoded = time.process_time(), 0
        scan = scan_commitlog(
            commitlog_of(root),
            start,
            check_crc=True,
            run_records=1024,
            first_window_bytes=4096,
            run_columns=True,
        )
        for event in scan:
            if isinstance(event, DecodedColumns):
                decoded += event.columns.count
            else:
                decoded += (
                    len(event.records) if isinstance(event, DecodedRun) else isinstance(event, ScannedRecord)
                )
            if decoded >= count:
                break
        scan.close()
        rate = decoded / max(time.process_time() - began, 1e-6)
        best = rate if best is None else max(best, rate)
    return best


# ---- the report ------------------------------------------------------------------------------------------


def mib(value: float) -> str:
    return f"{value / MiB:.1f}"


def print_pass(one: Pass) -> None:
    floors = one.floors
    state = "cold (after cache --evict)" if one.cold else "cached"
    mb = floors.bytes_read / 1e6
    print(f"\n== {state}: floors over {mb:,.0f} MB of CommitLog")
    print(f"  pread 1 MiB blocks  {floors.read_s:8.3f} s  {mb / floors.read_s:9.0f} MB/s")
    print(f"  zlib.crc32          {floors.crc_s:8.3f} s  {mb / floors.crc_s:9.0f} MB/s")
    print(f"  read + crc32        {floors.read_crc_s:8.3f} s  {mb / floors.read_crc_s:9.0f} MB/s"
          f"  ({floors.read_crc_cpu_s:.3f} s CPU)")  # fmt: skip
    if one.minimal_walk is not None:
        cpu_s, records = one.minimal_walk
        print(f"  minimal walk        {cpu_s:8.3f} s CPU  {records / cpu_s:9,.0f} records/s (unpack + crc32 "
              f"per record, {cpu_s / records * 1e6:.2f} us; nothing else checked)")  # fmt: skip
    print(f"  cat                 {floors.cat_s:8.3f} s  {mb / floors.cat_s:9.0f} MB/s")
    print(f"  fincore (all files) {floors.fincore_s:8.3f} s")
    print(
        f"  {'command':44} {'wall s':>8} {'records/s':>11} {'MB/s':>8} {'peak MiB':>9} {'x floor':>8}  note"
    )
    for row in one.rows:
        run = row.run
        wall = f"{run.wall_s:8.3f}" if run.exit_code is not None else f">{run.wall_s:7.0f}"
        rate = f"{row.records / run.wall_s:11,.0f}" if row.records and run.exit_code == 0 else f"{'':11}"
        speed = (
            f"{row.log_bytes / run.wall_s / 1e6:8.0f}" if row.log_bytes and run.exit_code == 0 else " " * 8
        )
        ratio = f"{row.floor_s / run.wall_s:8.3f}" if row.floor_s and run.exit_code == 0 else " " * 8
        notes = [row.note] if row.note else []
        if run.exit_code not in (0, None) and not (run.first_line_s is not None and run.exit_code == -15):
            notes.append(f"exit {run.exit_code}")
        if run.exit_code is None:
            notes.append("killed at its timeout")
        if run.first_line_s is not None:
            notes.append(f"first record at {run.first_line_s:.3f} s")
        peak = mib(run.peak_rss_bytes) if run.peak_rss_bytes is not None else "-"
        print(f"  {row.name:44} {wall} {rate} {speed} {peak:>9} {ratio}  {'; '.join(notes)}")


@dataclass(frozen=True)
class Verdict:
    target: str
    passed: bool | None  # None: not measured
    detail: str


def verdicts(
    passes: list[Pass], manifest: Manifest, segments_case: bool, only: str | None = None
) -> list[Verdict]:
    out = []
    cached = next((one for one in passes if not one.cold), None)
    if cached is not None:
        if only != "dump":
            out += _verify_verdicts(cached)
        if only == "dump":
            out += _dump_verdicts(cached)
        elif only is None:
            out += _dump_verdicts(cached) + _constant_verdicts(cached, manifest, segments_case)
    for one in passes:
        state = "cold" if one.cold else "cached"
        measured = [row for row in one.rows if row.run.peak_rss_bytes is not None]
        worst = max(measured, key=lambda row: row.run.peak_rss_bytes)
        over = [row.name for row in measured if row.run.peak_rss_bytes >= PEAK_RSS_BYTES]
        unmeasured = [row.name for row in one.rows if row.run.peak_rss_bytes is None]
        out.append(
            Verdict(
                f"peak RSS < {mib(PEAK_RSS_BYTES)} MiB, every command ({state})",
                not over and not unmeasured,
                f"largest {mib(worst.run.peak_rss_bytes)} MiB ({worst.name})"
                + (f"; over: {', '.join(over)}" if over else "")
                + (f"; killed at their timeout, unmeasured: {', '.join(unmeasured)}" if unmeasured else ""),
            )
        )
    return out


def _verify_verdicts(cached: Pass) -> list[Verdict]:
    """verify against the read+CRC floor in CPU seconds, both measured in this run (wall time on a shared
    2-core machine measures the other processes too; the wall-time ratio is printed beside it). A MISS says
    what bounds it: the minimal walk's share of the floor, and verify's CPU per record beyond it."""
    row = next((row for row in cached.rows if row.name == "store verify"), None)
    target = f"store verify >= {VERIFY_FLOOR_SHARE:.0%} of the read+CRC floor (cached, CPU time)"
    if row is None:
        return []
    if row.run.exit_code != 0:
        return [Verdict(target, False, f"exit {row.run.exit_code}")]
    floors = cached.floors
    share = floors.read_crc_cpu_s / row.run.cpu_s
    detail = (
        f"{share:.1%} of the floor ({row.run.cpu_s:.2f} s CPU against {floors.read_crc_cpu_s:.2f} s; wall "
        f"{row.run.wall_s:.2f} s against {floors.read_crc_s:.2f} s, {floors.read_crc_s / row.run.wall_s:.1%})"
        f"; {share / VERIFY_FLOOR_SHARE:.2f}x the target"
    )
    passed = share >= VERIFY_FLOOR_SHARE
    if not passed and cached.minimal_walk is not None and row.records:
        walk_s, walk_records = cached.minimal_walk
        per_record_us = row.run.cpu_s / row.records * 1e6
        walk_us = walk_s / walk_records * 1e6
        budget_us = floors.read_crc_cpu_s / VERIFY_FLOOR_SHARE / row.records * 1e6
        detail += (
            f"; bounded by Python per record: the minimal walk alone (unpack + crc32, nothing checked) is "
            f"{floors.read_crc_cpu_s / walk_s:.1%} of the floor, {walk_us:.2f} us of the {budget_us:.2f} us "
            f"a record may take; verify takes {per_record_us:.2f} us ({per_record_us - walk_us:.2f} us of "
            f"checks beyond the minimal walk)"
        )
    return [Verdict(target, passed, detail)]


def _dump_verdicts(cached: Pass) -> list[Verdict]:
    out = []
    excess = cached.dump.get("first_record_excess_s")
    target = f"store dump: first record within {DUMP_FIRST_RECORD_S * 1e3:.0f} ms whatever --count"
    if excess is None:
        waited = max(row.run.wall_s for row in cached.rows if row.name.startswith("store dump first record"))
        out.append(Verdict(target, False, f"a huge --count printed no record within {waited:.0f} s"))
    else:
        huge = cached.dump["first_record_huge_count"]
        detail = f"--count {huge:,} prints it {excess * 1e3:+.0f} ms after --count 1 does"
        out.append(Verdict(target, excess <= DUMP_FIRST_RECORD_S, detail))
    for label, target in (("jsonl", DUMP_JSONL_RECORDS_PER_S), ("table", DUMP_TABLE_RECORDS_PER_S)):
        rate = cached.dump.get(f"{label}_records_per_s")
        form = cached.dump.get(f"{label}_form", label)
        if rate is None:
            below = cached.dump.get(f"{label}_below_records_per_s") or 0
            out.append(Verdict(f"store dump {label} >= {target:,} records/s", False,
                               f"did not finish: below {below:,.0f} records/s"))  # fmt: skip
            continue
        wall = cached.dump[f"{label}_wall_records_per_s"]
        detail = (
            f"{rate:,.0f} records/s (--format {form}, beyond start-up, CPU time; wall {wall:,.0f}), "
            f"{rate / target:.2f}x the target"
        )
        decode = cached.dump.get("decode_records_per_s")
        if label == "jsonl" and rate < target and decode:
            detail += (
                f"; bound: decoding alone (scan_commitlog as the dump reads, CRC) {decode:,.0f} records/s "
                f"CPU in this run ({1e6 / decode:.2f} us of the {1e6 / target:.2f} us a record may take; the "
                f"dump takes {1e6 / rate:.2f})"
            )
        out.append(Verdict(f"store dump {label} >= {target:,} records/s", rate >= target, detail))
    return out


def _constant_verdicts(cached: Pass, manifest: Manifest, segments_case: bool) -> list[Verdict]:
    limit = CONSTANT_AT_1000_SEGMENTS_S if segments_case else CONSTANT_AT_4GIB_S
    where = (
        f"{-(-manifest.written_bytes // manifest.spec.segment_bytes)} segments"
        if segments_case
        else f"{manifest.written_bytes / GiB:.2f} GiB (target at 4 GiB)"
    )
    out = []
    for row in cached.rows:
        if row.kind != "constant":
            continue
        spent = row.run.wall_s - (TOP_INTERVAL_S if row.name.startswith("top") else 0)
        ok = row.run.exit_code == 0 and spent < limit
        detail = f"{spent:.3f} s ({spent / limit:.2f}x the limit)"
        if row.run.exit_code != 0:
            detail += f", exit {row.run.exit_code}"
        out.append(Verdict(f"{row.name} < {limit:g} s at {where}", ok, detail))
    return out


def print_verdicts(found: list[Verdict]) -> None:
    print("\n== targets (issue 16, item 2)")
    for verdict in found:
        mark = {True: "PASS", False: "MISS", None: "n/a "}[verdict.passed]
        print(f"  {mark}  {verdict.target}: {verdict.detail}")


def cold_summary(passes: list[Pass]) -> None:
    """What the disk gives, and each command after eviction against its cached run."""
    cached = next((one for one in passes if not one.cold), None)
    cold = next((one for one in passes if one.cold), None)
    if cold is None or cached is None:
        return
    floors = cold.floors
    disk = floors.bytes_read / 1e6 / floors.read_s
    print(f"\n== cold: the disk gives {disk:,.0f} MB/s (pread loop in 1 MiB blocks after eviction: "
          f"{floors.read_s:.2f} s for {floors.bytes_read / 1e6:,.0f} MB of CommitLog)")  # fmt: skip
    warm = {row.name: row.run for row in cached.rows}
    for row in cold.rows:
        before = warm.get(row.name)
        if row.run.exit_code != 0 or before is None or before.exit_code != 0:
            continue
        line = f"  {row.name:44} {row.run.wall_s:8.3f} s cold, {before.wall_s:8.3f} s cached"
        if row.log_bytes:
            speed = row.log_bytes / row.run.wall_s / 1e6
            line += f"; {speed:,.0f} MB/s, {speed / disk:.0%} of the disk"
        print(line)


# ---- main ----------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", type=Path, help=f"the store's directory (default under {DEFAULT_ROOT})")
    parser.add_argument("--gib", type=float, default=4.0, help="GiB of CommitLog (default 4)")
    parser.add_argument("--segments-case", action="store_true", help="1,000 small segments instead")
    parser.add_argument("--segments", type=int, default=1000, help="with --segments-case (default 1000)")
    parser.add_argument("--segment-mib", type=float, default=1.0, help="with --segments-case (default 1)")
    parser.add_argument("--dump-records", type=int, default=200_000, help="records per dump rate run")
    parser.add_argument("--no-cold", action="store_true", help="skip the pass after eviction")
    parser.add_argument("--quick", action="store_true", help="small counts, for the suite's smoke test")
    parser.add_argument("--rebuild", action="store_true", help="build the store again even if it matches")
    parser.add_argument(
        "--only-verify", action="store_true", help="store verify alone, cached, and its target"
    )
    parser.add_argument("--only-dump", action="store_true", help="store dump alone, cached, and its targets")
    return parser.parse_args(argv)


def spec_of(args: argparse.Namespace) -> StoreSpec:
    if args.segments_case:
        segment = int(args.segment_mib * MiB)
        return StoreSpec(segment * args.segments - segment // 2, segment, 300_000, 5_000_000)
    segment = GiB if args.gib >= 1 else max(MiB, 1 << (int(args.gib * GiB).bit_length() - 2))
    slots = 5_000_000 if not args.quick else 100_000
    return StoreSpec(int(args.gib * GiB), segment, 300_000, slots)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)
    spec = spec_of(args)
    name = f"segments-{args.segments}" if args.segments_case else f"store-{args.gib:g}g"
    root = args.store or DEFAULT_ROOT / name
    if args.rebuild and (root / MANIFEST).exists():
        (root / MANIFEST).unlink()
    manifest, built = load_or_build(root, spec)
    print(f"store {root}: {spec.describe(manifest.written_bytes)}; {manifest.records:,} records "
          f"({manifest.records_1k:,} of 1 KiB), {manifest.written_bytes / 1e6:,.0f} MB written; "
          + (f"built in {manifest.build_s:.1f} s ({manifest.records / manifest.build_s:,.0f} msgs/s)" if built
             else "reused"))  # fmt: skip
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    dump_records = 2_000 if args.quick else args.dump_records
    only = "verify" if args.only_verify else "dump" if args.only_dump else None
    passes = [
        run_pass(
            root,
            manifest,
            cold=False,
            dump_records=dump_records,
            quick=args.quick,
            only=only,
        )
    ]
    print_pass(passes[0])
    if not args.no_cold and only is None:
        passes.append(run_pass(root, manifest, cold=True, dump_records=dump_records, quick=args.quick))
        print_pass(passes[1])
        cold_summary(passes)
    print_verdicts(verdicts(passes, manifest, args.segments_case, only))
    print(f"load average {os.getloadavg()[0]:.2f} at the end; own peak RSS "
          f"{mib(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)} MiB")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
