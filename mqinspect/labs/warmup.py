"""`mqinspect lab warmup`: does warm-up pre-fault the next segment, or does the producer pay the faults?

For each warm-up mode, on a fresh segment file in a fresh worker process (mqinspect/labs/warmup_worker.py):

1. warm-up: the mode's mechanism, timed, with the worker's own getrusage fault deltas;
2. the lab reads, while the worker stands still: cachestat(2) of the segment (pages dirtied by warm-up),
   /proc/PID/status VmLck (memory locked), and the eBPF faults probe's counts of the phase;
3. append pass: 4 KiB records appended back to back through the mapping with MappedFile.append, each timed
   with perf_counter_ns; its faults counted the same two ways.

Fault sources: getrusage minflt/majflt deltas always (they count the kernel's populate faults inside mlock,
MADV_POPULATE_WRITE and MAP_POPULATE as well as CPU exceptions; mlock and MAP_POPULATE ones as minor even
when they read the disk); with BPF (root + bcc) the faults probe (probes/ebpf/faults.py) traced to the
worker's pid, which tells CPU exceptions (what `perf stat -e page-faults` counts) from populate faults and
attributes both to the segment file. Without BPF those fields are None with the reason. (psutil has neither
minflt/majflt nor VmLck: the counts come from getrusage and /proc/PID/status.)

Everything is a frozen dataclass; `WarmupReport` is what `--format json` writes (schema SCHEMA).
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import select
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from mqinspect.errors import BadInput
from mqinspect.labs.stats import Spread, spread
from mqinspect.labs.warmup_stats import (
    Expectation,
    HistogramBin,
    LatencySummary,
    Observed,
    findings,
    merge_histograms,
    summarize_latencies,
    verdict,
)
from mqinspect.signals import signals_interrupt
from probes.ebpf.faults import FaultsProbe, FaultsSnapshot
from probes.ebpf.inodes import FileId
from probes.ebpf.loader import IntSetMap, LoadedProgram, Parameters, ProgramSpec, load_program
from probes.ebpf.session import TraceSession
from probes.errors import ProbeError
from probes.procfs import read_process_status
from probes.residency.cachestat import cachestat

SCHEMA = "mqinspect.lab.warmup/v1"
PAGE_SIZE = os.sysconf("SC_PAGESIZE")
DEFAULT_SEGMENT_BYTES = 256 << 20
DEFAULT_RECORD_BYTES = 4096
DEFAULT_REPEAT = 3
WORKER_MODULE = "mqinspect.labs.warmup_worker"
SEGMENT_NAME = f"{0:020d}"  # a CommitLog segment's name: its start offset, 20 digits
_REPO = Path(__file__).resolve().parents[2]
_BPF_FIX = "run as root with bcc installed; see `mqinspect doctor`"
# Filesystems whose pages are shmem: their faults are shmem faults, not the page-cache faults of a disk file.
_SHMEM_FILESYSTEMS = {0x01021994: "tmpfs", 0x858458F6: "ramfs", 0x958458F6: "hugetlbfs"}
_KNOWN_FILESYSTEMS = {
    0xEF53: "ext4",
    0x58465342: "xfs",
    0x9123683E: "btrfs",
    0x794C7630: "overlayfs",
    0x2FC12FC1: "zfs",
    0x6969: "nfs",
    0xF2F52010: "f2fs",
}


class WarmupLabMode(StrEnum):
    NONE = "none"
    ROCKETMQ = "rocketmq"
    POPULATE_WRITE = "populate_write"
    MAP_POPULATE = "map_populate"
    MLOCK = "mlock"


@dataclass(frozen=True)
class ModeModel:
    """What a mode does (`mechanism`) and what the textbook says it achieves (`model`)."""

    mode: WarmupLabMode
    mechanism: str
    model: str
    expectation: Expectation


MODELS: dict[WarmupLabMode, ModeModel] = {
    model.mode: model
    for model in (
        ModeModel(
            WarmupLabMode.NONE,
            "no warm-up: the fresh segment is mapped and appended to",
            "every first write to a page faults: about one fault per page",
            Expectation(append_faults=True, dirties_all=False, locks=False),
        ),
        ModeModel(
            WarmupLabMode.ROCKETMQ,
            "RocketMQ warmMappedFile: a 0 written to every page, then mlock + madvise(WILLNEED) "
            "(store WarmupMode.TOUCH)",
            "appends take no faults; warm-up dirties every page with zeros (#522 double IO) and locks it",
            Expectation(append_faults=False, dirties_all=True, locks=True),
        ),
        ModeModel(
            WarmupLabMode.POPULATE_WRITE,
            "madvise(MADV_POPULATE_WRITE) in one call, alone (store WarmupMode.POPULATE adds mlock + "
            "WILLNEED, as RocketMQ's)",
            "appends take no faults; one syscall instead of a fault per page; dirties every page too",
            Expectation(append_faults=False, dirties_all=True, locks=False),
        ),
        ModeModel(
            WarmupLabMode.MAP_POPULATE,
            "mmap(MAP_SHARED | MAP_POPULATE): the kernel pre-faults the mapping inside mmap",
            "appends take no faults; nothing dirtied",
            Expectation(append_faults=False, dirties_all=False, locks=False),
        ),
        ModeModel(
            WarmupLabMode.MLOCK,
            "mlock(2) of the whole segment alone, no touch (the rejected proposal in RocketMQ #522)",
            "pins and pre-faults every page: appends take no faults; nothing dirtied",
            Expectation(append_faults=False, dirties_all=False, locks=True),
        ),
    )
}


@dataclass(frozen=True)
class LabSettings:
    """What to run. `directory`: where the per-run temporary directory with the segments goes."""

    segment_bytes: int = DEFAULT_SEGMENT_BYTES
    modes: tuple[WarmupLabMode, ...] = tuple(WarmupLabMode)
    repeat: int = DEFAULT_REPEAT
    directory: Path | None = None
    record_bytes: int = DEFAULT_RECORD_BYTES
    trace: bool = True  # use the eBPF faults probe when it can load
    timeout_s: float = 300.0  # per worker step; a 1 GiB segment's unwarmed append pass takes seconds


# --- results ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TracedFaults:
    """One phase of one worker as the eBPF faults probe saw it.

    faults/minor_faults/major_faults: CPU page-fault exceptions of the worker (what perf's page-faults,
    minor-faults and major-faults count). populate_faults: file faults the kernel took inside a syscall
    (mlock, MADV_POPULATE_WRITE, MAP_POPULATE) that reached filemap_fault(). segment_*: those on the segment
    file; segment_fault_around_pages: pages fault-around mapped around read faults there.
    """

    faults: int
    minor_faults: int
    major_faults: int
    write_faults: int | None
    populate_faults: int
    populate_major_faults: int
    anonymous_faults: int
    segment_faults: int
    segment_major_faults: int
    segment_write_faults: int
    segment_populate_faults: int
    segment_fault_around_pages: int
    lost_records: int


@dataclass(frozen=True)
class PhaseFaults:
    """Faults of one phase: the worker's own getrusage deltas (minor includes populate faults), and the
    eBPF view (None when unavailable: see the report's ebpf_unavailable)."""

    proc_minor_faults: int
    proc_major_faults: int
    traced: TracedFaults | None


@dataclass(frozen=True)
class ModeRun:
    """One repeat of one mode. `error` set: the mode failed and its figures are None."""

    mode: WarmupLabMode
    repeat: int
    worker_pid: int | None
    error: str | None
    problems: tuple[str, ...]
    warmup_s: float | None
    warmup_faults: PhaseFaults | None
    warmup_dirty_pages: int | None  # cachestat right after warm-up
    warmup_cached_pages: int | None
    locked_bytes: int | None  # VmLck of the worker right after warm-up
    append_s: float | None
    append_throughput_bytes_per_s: float | None
    append_faults: PhaseFaults | None
    latency: LatencySummary | None
    unavailable: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ModeSummary:
    """A mode over its repeats: medians with minimum and maximum (Spread), None where not measured."""

    mode: WarmupLabMode
    mechanism: str
    model: str
    runs: int
    failed_runs: int
    errors: tuple[str, ...]
    problems: tuple[str, ...]
    warmup_s: Spread | None
    warmup_proc_minor_faults: Spread | None
    warmup_proc_major_faults: Spread | None
    warmup_exception_faults: Spread | None
    warmup_populate_faults: Spread | None
    warmup_segment_faults: Spread | None
    warmup_dirty_pages: Spread | None
    locked_bytes: Spread | None
    append_proc_minor_faults: Spread | None
    append_proc_major_faults: Spread | None
    append_exception_faults: Spread | None
    append_segment_faults: Spread | None
    append_faults_source: str | None  # which count the verdict used: "ebpf segment" or "getrusage"
    append_faults_per_100_pages: float | None
    append_s: Spread | None
    append_throughput_bytes_per_s: Spread | None
    append_p50_ns: Spread | None
    append_p99_ns: Spread | None
    append_max_ns: Spread | None
    latency_histogram: tuple[HistogramBin, ...]
    findings: tuple[str, ...]
    verdict: str


@dataclass(frozen=True)
class WarmupReport:
    schema: str
    segment_bytes: int
    segment_pages: int
    record_bytes: int
    appends_per_pass: int
    repeat: int
    directory: str
    filesystem: str
    kernel: str
    fault_source: str  # "ebpf+getrusage" or "getrusage"
    ebpf_unavailable: str | None
    elapsed_s: float
    modes: tuple[ModeSummary, ...]
    runs: tuple[ModeRun, ...]


# --- checking where the segments go -------------------------------------------------------------------------


class _StatFs(ctypes.Structure):
    _fields_ = [("f_type", ctypes.c_long), ("rest", ctypes.c_byte * 256)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.statfs.argtypes = [ctypes.c_char_p, ctypes.POINTER(_StatFs)]
_libc.statfs.restype = ctypes.c_int


def filesystem_magic(path: Path) -> int:
    result = _StatFs()
    if _libc.statfs(os.fsencode(path), ctypes.byref(result)) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(path))
    return result.f_type & 0xFFFFFFFF


def filesystem_name(magic: int) -> str:
    return _SHMEM_FILESYSTEMS.get(magic) or _KNOWN_FILESYSTEMS.get(magic) or f"magic {magic:#x}"


def check_directory(directory: Path, segment_bytes: int) -> str:
    """The filesystem's name if `directory` can hold the segments; BadInput saying why not otherwise."""
    if not directory.is_dir():
        raise BadInput(f"{directory} is not a directory", fix="give --dir an existing directory on a disk")
    magic = filesystem_magic(directory)
    if magic in _SHMEM_FILESYSTEMS:
        raise BadInput(
            f"{directory} is on {_SHMEM_FILESYSTEMS[magic]}: its pages are shared memory, so its faults are "
            "shmem faults, not the page-cache faults of a log segment on disk",
            fix="give --dir a directory on a disk filesystem (ext4, xfs)",
        )
    if not os.access(directory, os.W_OK | os.X_OK):
        raise BadInput(f"{directory} is not writable", fix="give --dir a directory you may write to")
    status = os.statvfs(directory)
    free = status.f_bavail * status.f_frsize
    if free < 2 * segment_bytes:
        raise BadInput(
            f"{directory} has {free:,} bytes free; a {segment_bytes:,}-byte segment needs twice that",
            fix="free space, lower --segment-size or choose another --dir",
        )
    return filesystem_name(magic)


def check_settings(settings: LabSettings) -> None:
    if settings.segment_bytes < PAGE_SIZE or settings.segment_bytes % PAGE_SIZE:
        raise BadInput(f"--segment-size must be a positive multiple of {PAGE_SIZE} bytes")
    if not 0 < settings.record_bytes <= settings.segment_bytes:
        raise BadInput("the record size must be positive and no larger than the segment")
    if settings.repeat < 1:
        raise BadInput("--repeat must be at least 1")
    if not settings.modes:
        raise BadInput("no mode to run", fix=f"--modes takes some of: {', '.join(WarmupLabMode)}")


# --- the worker process -------------------------------------------------------------------------------------


class WorkerFailed(Exception):
    """The worker reported an error, died, or did not answer in time."""


class _Worker:
    """One worker process and its line protocol (see warmup_worker.py)."""

    def __init__(self, argv: Sequence[str], timeout_s: float):
        self._stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - lives as long as the worker
        self.process = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            cwd=_REPO,
        )
        self._timeout_s = timeout_s

    def expect(self, event: str) -> dict[str, Any]:
        stdout = self.process.stdout
        assert stdout is not None
        ready, _, _ = select.select([stdout], [], [], self._timeout_s)
        if not ready:
            raise WorkerFailed(f"no answer within {self._timeout_s:.0f} s while waiting for '{event}'")
        line = stdout.readline()
        if not line:
            raise WorkerFailed(f"the worker ended before '{event}': {self._last_error()}")
        try:
            message = json.loads(line)
        except json.JSONDecodeError:
            raise WorkerFailed(f"the worker said something unexpected: {line[:200].strip()!r}") from None
        if message.get("event") == "error":
            raise WorkerFailed(message.get("error", "unknown error"))
        if message.get("event") != event:
            raise WorkerFailed(f"expected '{event}', got '{message.get('event')}'")
        return message

    def go(self) -> None:
        stdin = self.process.stdin
        assert stdin is not None
        try:
            stdin.write("go\n")
            stdin.flush()
        except BrokenPipeError:
            raise WorkerFailed(f"the worker ended early: {self._last_error()}") from None

    def _last_error(self) -> str:
        with suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
        self._stderr.seek(0)
        lines = [line.strip() for line in self._stderr.read().splitlines() if line.strip()]
        return lines[-1] if lines else f"exit status {self.process.returncode}"

    def close(self) -> None:
        """Ends the worker: closing stdin makes it delete its segment and exit; a stuck one is killed."""
        if self.process.stdin:
            with suppress(BrokenPipeError):
                self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout:
            self.process.stdout.close()
        self._stderr.close()


def worker_command(
    mode: WarmupLabMode, path: Path, settings: LabSettings, extra: Sequence[str] = ()
) -> list[str]:
    return [
        sys.executable,
        "-m",
        WORKER_MODULE,
        "--path",
        str(path),
        "--size-bytes",
        str(settings.segment_bytes),
        "--mode",
        mode.value,
        "--record-bytes",
        str(settings.record_bytes),
        *extra,
    ]


# --- eBPF ---------------------------------------------------------------------------------------------------


# Maps of programs/faults.bpf.c that hold per-process state, emptied before the program serves a new worker.
_FAULTS_STATE_MAPS = (
    "mqi_tgids",
    "mqi_totals",
    "mqi_fault_pages",
    "mqi_file_pages",
    "mqi_fault_around",
    "mqi_inflight",
)


class _BorrowedProgram:
    """What one worker's TraceSession gets: the lab's loaded program, whose close() only forgets this
    worker (the lab detaches the program once, at its end)."""

    def __init__(self, program: LoadedProgram, forget: Callable[[], None]):
        self._program = program
        self._forget = forget
        self.attached = program.attached
        self.skipped = program.skipped

    @property
    def closed(self) -> bool:
        return self._program.closed

    def __getattr__(self, name: str) -> Any:  # table, read, drain, put, delete
        return getattr(self._program, name)

    def close(self) -> None:
        self._forget()


class FaultTracer:
    """The eBPF faults probe on each worker in turn. The program is compiled once for the whole lab (a
    compile costs about a second of a core) and each worker's session borrows it with its own pid set.
    After the first refusal (no root, no bcc) it stops trying and keeps the reason."""

    def __init__(self, enabled: bool = True):
        self.unavailable: str | None = None if enabled else "not requested (tracing was turned off)"
        self._program: LoadedProgram | None = None
        self._compiled_with: tuple[ProgramSpec, Parameters] | None = None

    def _borrow(self, spec: ProgramSpec, parameters: Parameters, sets: Sequence[IntSetMap] = ()) -> Any:
        if self._program is None:
            self._program = load_program(spec, parameters, ())
            self._compiled_with = (spec, parameters)
        elif self._compiled_with != (spec, parameters):
            raise ProbeError("the faults probe asked for a differently compiled program")
        self._forget_workers()
        for int_set in sets:
            for member in int_set.members:
                self._program.put(int_set.name, member, (1,))
        return _BorrowedProgram(self._program, self._forget_workers)

    def _forget_workers(self) -> None:
        if self._program is None or self._program.closed:
            return
        for name in _FAULTS_STATE_MAPS:
            with suppress(KeyError):
                self._program.table(name).clear()

    @contextmanager
    def session(self, pid: int) -> Iterator[TraceSession[FaultsSnapshot] | None]:
        """A session traced to `pid`, or None when eBPF is unavailable. A Ctrl-C (or SIGTERM) that the
        session caught is raised as KeyboardInterrupt when the block ends."""
        if self.unavailable:
            yield None
            return
        try:
            session: TraceSession[FaultsSnapshot] = TraceSession(FaultsProbe([pid]), loader=self._borrow)
            session.open()
        except ProbeError as error:
            fix = getattr(error, "fix", None) or _BPF_FIX
            self.unavailable = f"{error}; fix: {fix}"
            yield None
            return
        try:
            yield session
        finally:
            session.close()
            if session.stop_requested:
                raise KeyboardInterrupt

    def close(self) -> None:
        """Detach and free the program."""
        program, self._program = self._program, None
        if program is not None:
            program.close()


def traced_faults(snapshot: FaultsSnapshot, pid: int, segment: FileId) -> TracedFaults:
    """The worker's and the segment's rows of one probe interval (zeros where the probe saw nothing)."""
    process = next((row for row in snapshot.processes if row.pid == pid), None)
    file = next(
        (row for row in snapshot.files if row.inode == segment.inode and row.device == segment.device), None
    )
    return TracedFaults(
        faults=process.faults if process else 0,
        minor_faults=process.minor_faults if process else 0,
        major_faults=process.major_faults if process else 0,
        write_faults=process.write_faults if process and snapshot.write_faults is not None else None,
        populate_faults=process.populate_faults if process else 0,
        populate_major_faults=process.populate_major_faults if process else 0,
        anonymous_faults=snapshot.anonymous_faults,
        segment_faults=file.faults if file else 0,
        segment_major_faults=file.major_faults if file else 0,
        segment_write_faults=file.write_faults if file else 0,
        segment_populate_faults=file.populate_faults if file else 0,
        segment_fault_around_pages=file.fault_around_pages if file else 0,
        lost_records=snapshot.lost_records,
    )


# --- one run ------------------------------------------------------------------------------------------------


CommandWrapper = Callable[[list[str]], list[str]]


def run_mode(
    mode: WarmupLabMode,
    settings: LabSettings,
    workdir: Path,
    tracer: FaultTracer,
    *,
    repeat: int = 0,
    wrap_command: CommandWrapper | None = None,
    worker_options: Sequence[str] = (),
) -> ModeRun:
    """One mode on a fresh segment in `workdir`, in a fresh worker. `wrap_command` may prefix the worker's
    command (e.g. with `perf stat ... --`), `worker_options` add worker flags (e.g. --perf-control)."""
    path = workdir / SEGMENT_NAME
    argv = worker_command(mode, path, settings, worker_options)
    worker = _Worker(wrap_command(argv) if wrap_command else argv, settings.timeout_s)
    try:
        return _drive(mode, repeat, settings, path, worker, tracer)
    except WorkerFailed as error:
        return _failed_run(mode, repeat, str(error))
    finally:
        worker.close()
        path.unlink(missing_ok=True)


def _drive(
    mode: WarmupLabMode, repeat: int, settings: LabSettings, path: Path, worker: _Worker, tracer: FaultTracer
) -> ModeRun:
    pid = int(worker.expect("ready")["pid"])
    segment = FileId.from_stat(path.stat())
    unavailable: dict[str, str] = {}
    with tracer.session(pid) as session:
        worker.go()
        warmed = worker.expect("warmed")
        warm_traced = _phase_snapshot(session, pid, segment)
        dirty, cached = _cache_state(path, unavailable)
        locked = _locked_bytes(pid, unavailable)
        worker.go()
        appended = worker.expect("appended")
        append_traced = _phase_snapshot(session, pid, segment)
    worker.go()
    latencies = worker.expect("latencies")["latencies_ns"]
    worker.go()
    worker.expect("done")
    if tracer.unavailable:
        unavailable["traced"] = tracer.unavailable
    append_s = appended["elapsed_ns"] / 1e9
    return ModeRun(
        mode=mode,
        repeat=repeat,
        worker_pid=pid,
        error=None,
        problems=tuple(warmed["problems"]),
        warmup_s=warmed["elapsed_ns"] / 1e9,
        warmup_faults=PhaseFaults(warmed["minor_faults"], warmed["major_faults"], warm_traced),
        warmup_dirty_pages=dirty,
        warmup_cached_pages=cached,
        locked_bytes=locked,
        append_s=append_s,
        append_throughput_bytes_per_s=(
            round(len(latencies) * settings.record_bytes / append_s, 1) if append_s > 0 else None
        ),
        append_faults=PhaseFaults(appended["minor_faults"], appended["major_faults"], append_traced),
        latency=summarize_latencies(latencies) if latencies else None,
        unavailable=unavailable,
    )


def _phase_snapshot(
    session: TraceSession[FaultsSnapshot] | None, pid: int, segment: FileId
) -> TracedFaults | None:
    if session is None:
        return None
    return traced_faults(session.snapshot(), pid, segment)


def _cache_state(path: Path, unavailable: dict[str, str]) -> tuple[int | None, int | None]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as error:
        unavailable["warmup_dirty_pages"] = f"cannot open the segment: {error.strerror}"
        return None, None
    try:
        state = cachestat(fd)
    except OSError as error:
        unavailable["warmup_dirty_pages"] = (
            f"cachestat(2) failed: {error.strerror}; fix: Linux >= 6.5 has it, see `mqinspect doctor`"
        )
        return None, None
    finally:
        os.close(fd)
    return state.dirty_pages, state.cached_pages


def _locked_bytes(pid: int, unavailable: dict[str, str]) -> int | None:
    status = read_process_status(pid)
    if status.vm_lck_bytes is None:
        unavailable["locked_bytes"] = status.unavailable.get("vm_lck_bytes", "VmLck unreadable")
    return status.vm_lck_bytes


def _failed_run(mode: WarmupLabMode, repeat: int, error: str) -> ModeRun:
    return ModeRun(
        mode, repeat, None, error, (), None, None, None, None, None, None, None, None, None, {"run": error}
    )


# --- the lab ------------------------------------------------------------------------------------------------


Progress = Callable[[ModeRun], None]


def run_warmup_lab(settings: LabSettings, progress: Progress | None = None) -> WarmupReport:
    """Every mode `settings.repeat` times, each on a fresh segment, then the per-mode summaries."""
    check_settings(settings)
    directory = (settings.directory or Path.cwd()).resolve()
    filesystem = check_directory(directory, settings.segment_bytes)
    tracer = FaultTracer(settings.trace)
    started = time.monotonic()
    runs: list[ModeRun] = []
    workdir = Path(tempfile.mkdtemp(prefix="mqinspect-warmup-", dir=directory))
    try:
        with signals_interrupt():
            for repeat in range(settings.repeat):
                for mode in settings.modes:
                    run = run_mode(mode, settings, workdir, tracer, repeat=repeat)
                    runs.append(run)
                    if progress:
                        progress(run)
    finally:
        tracer.close()
        shutil.rmtree(workdir, ignore_errors=True)
    pages = settings.segment_bytes // PAGE_SIZE
    return WarmupReport(
        schema=SCHEMA,
        segment_bytes=settings.segment_bytes,
        segment_pages=pages,
        record_bytes=settings.record_bytes,
        appends_per_pass=settings.segment_bytes // settings.record_bytes,
        repeat=settings.repeat,
        directory=str(directory),
        filesystem=filesystem,
        kernel=platform.release(),
        fault_source="getrusage" if tracer.unavailable else "ebpf+getrusage",
        ebpf_unavailable=tracer.unavailable,
        elapsed_s=round(time.monotonic() - started, 3),
        modes=tuple(
            summarize_mode(mode, [r for r in runs if r.mode == mode], settings) for mode in settings.modes
        ),
        runs=tuple(runs),
    )


def _traced(faults: PhaseFaults | None, name: str) -> int | None:
    if faults is None or faults.traced is None:
        return None
    return getattr(faults.traced, name)


def _proc(faults: PhaseFaults | None, name: str) -> int | None:
    return None if faults is None else getattr(faults, name)


def _append_fault_count(run: ModeRun) -> tuple[int | None, str | None]:
    """The append pass's faults on the segment: eBPF's segment exceptions, else the worker's getrusage."""
    traced = _traced(run.append_faults, "segment_faults")
    if traced is not None:
        return traced, "ebpf segment"
    faults = run.append_faults
    if faults is None:
        return None, None
    return faults.proc_minor_faults + faults.proc_major_faults, "getrusage"


def summarize_mode(mode: WarmupLabMode, runs: Sequence[ModeRun], settings: LabSettings) -> ModeSummary:
    model = MODELS[mode]
    good = [run for run in runs if run.error is None]
    pages = settings.segment_bytes // PAGE_SIZE
    counted = [_append_fault_count(run) for run in good]
    append_faults = spread([count for count, _ in counted])
    source = next((where for _, where in counted if where), None)

    def over(get: Callable[[ModeRun], float | int | None]) -> Spread | None:
        return spread([get(run) for run in good])

    latency = lambda name: over(lambda run: getattr(run.latency, name) if run.latency else None)  # noqa: E731
    problems = tuple(dict.fromkeys(problem for run in good for problem in run.problems))
    median = lambda s: None if s is None else int(s.median)  # noqa: E731
    observed = Observed(
        pages=pages,
        append_faults=median(append_faults),
        append_major_faults=median(over(lambda run: _traced(run.append_faults, "segment_major_faults")))
        if source == "ebpf segment"
        else median(over(lambda run: _proc(run.append_faults, "proc_major_faults"))),
        append_write_faults=median(over(lambda run: _traced(run.append_faults, "segment_write_faults"))),
        warmup_dirty_pages=median(over(lambda run: run.warmup_dirty_pages)),
        locked_bytes=median(over(lambda run: run.locked_bytes)),
        segment_bytes=settings.segment_bytes,
        problems=problems,
    )
    return ModeSummary(
        mode=mode,
        mechanism=model.mechanism,
        model=model.model,
        runs=len(good),
        failed_runs=len(runs) - len(good),
        errors=tuple(dict.fromkeys(run.error for run in runs if run.error)),
        problems=problems,
        warmup_s=over(lambda run: run.warmup_s),
        warmup_proc_minor_faults=over(lambda run: _proc(run.warmup_faults, "proc_minor_faults")),
        warmup_proc_major_faults=over(lambda run: _proc(run.warmup_faults, "proc_major_faults")),
        warmup_exception_faults=over(lambda run: _traced(run.warmup_faults, "faults")),
        warmup_populate_faults=over(lambda run: _traced(run.warmup_faults, "populate_faults")),
        warmup_segment_faults=over(lambda run: _traced(run.warmup_faults, "segment_faults")),
        warmup_dirty_pages=over(lambda run: run.warmup_dirty_pages),
        locked_bytes=over(lambda run: run.locked_bytes),
        append_proc_minor_faults=over(lambda run: _proc(run.append_faults, "proc_minor_faults")),
        append_proc_major_faults=over(lambda run: _proc(run.append_faults, "proc_major_faults")),
        append_exception_faults=over(lambda run: _traced(run.append_faults, "faults")),
        append_segment_faults=over(lambda run: _traced(run.append_faults, "segment_faults")),
        append_faults_source=source,
        append_faults_per_100_pages=(
            None if append_faults is None else round(100 * append_faults.median / pages, 2)
        ),
        append_s=over(lambda run: run.append_s),
        append_throughput_bytes_per_s=over(lambda run: run.append_throughput_bytes_per_s),
        append_p50_ns=latency("p50_ns"),
        append_p99_ns=latency("p99_ns"),
        append_max_ns=latency("max_ns"),
        latency_histogram=merge_histograms([run.latency.histogram for run in good if run.latency]),
        findings=findings(model.expectation, observed) if good else (),
        verdict=verdict(model.expectation, observed)
        if good
        else "Every run failed: " + "; ".join(dict.fromkeys(run.error or "" for run in runs)),
    )


def parse_modes(text: str) -> tuple[WarmupLabMode, ...]:
    """`none,rocketmq,...` into modes, in the order given; BadInput naming the valid ones otherwise."""
    names = [name.strip().lower().replace("-", "_") for name in text.split(",") if name.strip()]
    valid = {mode.value: mode for mode in WarmupLabMode}
    unknown = [name for name in names if name not in valid]
    if unknown or not names:
        raise BadInput(
            f"unknown warm-up mode(s): {', '.join(unknown) or '(none given)'}",
            fix=f"--modes takes a comma-separated list of: {', '.join(valid)}",
        )
    return tuple(dict.fromkeys(valid[name] for name in names))
