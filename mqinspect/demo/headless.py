"""The demo without a dashboard: run the workload for a while, sample the live view once at its end, stop
it, then run short labs that measure the claims the live view illustrates, and hand back a DemoReport."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from mqinspect.demo.report import DemoReport, Section, SectionKind
from mqinspect.demo.settings import DemoSettings
from mqinspect.demo.workload import DemoFailed, DemoWorkload
from mqinspect.errors import MqinspectError
from probes.errors import ProbeError
from store.errors import StoreError

DEFAULT_DURATION_S = 20.0
LIVE_INTERVAL_S = 2.0  # the live view's interval, taken at the end of the run while the workload still runs
CHILD_CHECK_S = 0.5

Progress = Callable[[str], None]


def run_headless(workload: DemoWorkload, duration_s: float, progress: Progress) -> DemoReport:
    """`workload` is started; it is stopped here (closing it stays the caller's business)."""
    live_at = max(0.0, duration_s - LIVE_INTERVAL_S)
    progress(f"running the workload for {duration_s:g} s")
    _run_for(workload, live_at)
    progress(f"sampling the live view over {LIVE_INTERVAL_S:g} s")
    live = sample_live(workload, LIVE_INTERVAL_S)
    outcome = workload.stop()
    labs = tuple(
        run_lab(workload.directory / "labs", workload.settings, progress) for run_lab in labs_for(workload)
    )
    return DemoReport(workload.settings, outcome, live, labs)


def _run_for(workload: DemoWorkload, seconds: float) -> None:
    """Wait, watching the children: one that dies ends the demo with its story."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(CHILD_CHECK_S, left))
        raise_if_a_child_died(workload)


def raise_if_a_child_died(workload: DemoWorkload) -> None:
    for role, pid, status in workload.exited_children():
        raise DemoFailed(f"the demo's {role} (pid {pid}) ended on its own with status {status}")


def sample_live(workload: DemoWorkload, interval_s: float) -> Section:
    """The `mqinspect top --once` view of the running workload: its store and its processes."""
    from mqinspect.sampling.stream import TopOptions, sample_once

    options = TopOptions(store_dir=workload.store_dir, pids=workload.pids, interval_s=interval_s)
    pids = " ".join(f"--pid {pid}" for pid in workload.pids)
    title = f"live view, as `mqinspect top {workload.store_dir} {pids} --interval {interval_s:g} --once`"
    try:
        return Section(SectionKind.LIVE, title, sample_once(options))
    except _LAB_ERRORS as error:
        return Section(SectionKind.LIVE, title, None, _reason(error))


def _reason(error: BaseException) -> str:
    fix = getattr(error, "fix", None)
    return f"{error}; fix: {fix}" if fix else str(error)


WARMUP_LAB_SEGMENT_BYTES = 64 << 20  # one demo segment
SENDPATH_LAB_PAYLOAD_BYTES = 8 << 20
_LAB_ERRORS = (MqinspectError, ProbeError, StoreError, OSError)


def warmup_lab(directory: Path, settings: DemoSettings, progress: Progress) -> Section:
    """`mqinspect lab warmup` in short: a segment of the demo's size without warm-up and one warmed as
    RocketMQ does, the claim behind the broker's warm-up (its appends take no page faults)."""
    from mqinspect.labs.warmup import LabSettings, ModeRun, WarmupLabMode, WorkerFailed, run_warmup_lab

    modes = (WarmupLabMode.NONE, WarmupLabMode.ROCKETMQ)
    size = f"{WARMUP_LAB_SEGMENT_BYTES >> 20}m"
    title = (
        f"warm-up lab, as `mqinspect lab warmup --segment-size {size} --modes {','.join(modes)} --repeat 1`"
    )
    progress(f"warm-up lab: {' and '.join(modes)} on a {size} segment")

    def ran(run: ModeRun) -> None:
        progress(f"warm-up lab: {run.mode.value} " + (f"failed: {run.error}" if run.error else "measured"))

    directory.mkdir(parents=True, exist_ok=True)
    lab = LabSettings(
        segment_bytes=WARMUP_LAB_SEGMENT_BYTES, modes=modes, repeat=1, directory=directory, timeout_s=60.0
    )
    try:
        return Section(SectionKind.WARMUP_LAB, title, run_warmup_lab(lab, ran))
    except (*_LAB_ERRORS, WorkerFailed) as error:
        return Section(SectionKind.WARMUP_LAB, title, None, _reason(error))


def sendpath_lab(directory: Path, settings: DemoSettings, progress: Progress) -> Section:
    """`mqinspect lab sendpath` in short, on the consumers' paths: what each costs in copies and calls."""
    from mqinspect.labs.sendpath import LabOptions, run_sendpath_lab

    paths = ",".join(settings.paths)
    size = f"{SENDPATH_LAB_PAYLOAD_BYTES >> 20}m"
    title = f"send-path lab, as `mqinspect lab sendpath --bytes {size} --paths {paths} --repeat 1`"
    directory.mkdir(parents=True, exist_ok=True)
    options = LabOptions(
        payload_bytes=SENDPATH_LAB_PAYLOAD_BYTES, paths=settings.paths, repeat=1, work_dir=directory
    )
    try:
        return Section(
            SectionKind.SENDPATH_LAB,
            title,
            run_sendpath_lab(options, lambda line: progress(f"send-path lab: {line}")),
        )
    except _LAB_ERRORS as error:
        return Section(SectionKind.SENDPATH_LAB, title, None, _reason(error))


LABS: tuple[Callable[[Path, DemoSettings, Progress], Section], ...] = (warmup_lab, sendpath_lab)


def labs_for(workload: DemoWorkload) -> tuple[Callable[[Path, DemoSettings, Progress], Section], ...]:
    """The labs of the final report: a Kafka broker does not warm its segments, so its demo has only the
    send-path lab (sendfile is Kafka's own path)."""
    return (sendpath_lab,) if workload.is_kafka else LABS
