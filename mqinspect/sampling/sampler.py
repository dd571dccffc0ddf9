"""The one sampler behind every renderer: each interval it reads the store (residency, positions, locks),
/proc (memory, writeback thresholds, PSI, the processes) and the eBPF sessions, and builds one TopSnapshot.

`Sampler.sample()` takes one snapshot; `SamplerThread` calls it every interval off the UI thread and hands
each snapshot to a callback (the Textual app passes one that goes through `call_from_thread`). The sampler
owns the eBPF sessions: `close()` detaches them, and SamplerThread closes on every way out.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mqinspect.sampling.probe_set import NO_PROCESS_FIX, NO_PROCESS_REASON, ProbeSet
from mqinspect.sampling.process_reader import ProcessReader
from mqinspect.sampling.readers import mark_positions, open_consumer_reader, open_store_reader
from mqinspect.sampling.snapshot import (
    PROBE_SENDPATH,
    PROBE_WRITEBACK,
    SendPathRow,
    SendPathsView,
    StoreView,
    ThrottledWriter,
    TopSnapshot,
    WritebackEvents,
)
from mqinspect.sampling.store_reader import NO_EBPF_EVENTS
from probes.memory import MemorySample
from probes.privileges import PROC_ACCESS_FIX, describe_processes, other_process
from probes.procfs import PAGE_SIZE_BYTES, SystemMemorySnapshot, rates, take_system_snapshot

NO_STORE = "no STORE_DIR given: `mqinspect top STORE_DIR` shows its segments"
NO_PROCESSES = "no process to watch: give --pid, or a STORE_DIR whose files a process maps or holds open"
HIDDEN_HOLDERS_FIX = f"{PROC_ACCESS_FIX}, or give --pid"


@dataclass(frozen=True)
class SamplerSettings:
    store_dir: Path | None
    pids: tuple[int, ...]
    interval_s: float
    ebpf: bool


class Sampler:
    """Builds one TopSnapshot per call of `sample()`; rates are over the time since the previous call."""

    def __init__(
        self,
        settings: SamplerSettings,
        *,
        probes: ProbeSet | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ):
        self.settings = settings
        self.store = open_store_reader(settings.store_dir) if settings.store_dir else None
        self.consumers = open_consumer_reader(settings.store_dir) if settings.store_dir else None
        self.processes = ProcessReader(settings.pids)
        # With a store and no --pid, the probes trace whoever holds the store's files, and follow them as
        # they come and go: tracing every process's faults costs this process far more CPU on a busy
        # machine (half a core measured here), for events that are mostly not about the store.
        self._follow_holders = settings.store_dir is not None and not settings.pids
        self.probes = probes or ProbeSet(
            settings.pids,
            settings.store_dir,
            enabled=settings.ebpf,
            every_process_when_no_pids=not self._follow_holders,
        )
        self._clock = clock
        self._wall_clock = wall_clock
        self._focus: tuple[str, str] | None = None
        self._drawn: frozenset[str] | None = None  # the segment rows a dashboard draws (None: all are used)
        self._focus_lock = threading.Lock()
        self._sequence = 0
        self._system: SystemMemorySnapshot | None = None
        self._segment_paths: list[str] = []

    def open(self, *, background: bool = True) -> None:
        """Start the eBPF probes (on their own thread unless `background` is False) and take baselines."""
        if self.store is not None:
            self._segment_paths = self.store.segment_paths()
        self._find_holders()
        if self._follow_holders:
            self.probes.trace_pids(self.processes.watched())
        self.probes.start(background=background)
        self.processes.baseline()
        self._system = take_system_snapshot()

    def close(self) -> None:
        self.probes.close()
        if self.consumers is not None:
            self.consumers.close()

    def focus(self, path: str | None, name: str | None = None) -> None:
        """Ask for the drill-down map of one segment in the next snapshots (None: no drill-down)."""
        with self._focus_lock:
            self._focus = (path, name or path) if path else None

    def draw_only(self, paths: frozenset[str] | None) -> None:
        """The segments whose rows a dashboard draws (a plain hint from the app): only their heat strips are
        measured every interval, the other rows by turns (None: every row is used, the default)."""
        with self._focus_lock:
            self._drawn = paths

    def sample(self) -> TopSnapshot:
        events = self.probes.collect()
        system = take_system_snapshot()
        before = self._system or system
        elapsed = max(system.monotonic_s - before.monotonic_s, 1e-9)
        self._system = system
        memory = (
            MemorySample(elapsed, system, rates(before, system, elapsed)) if before is not system else None
        )
        with self._focus_lock:
            drawn = self._drawn
        store = (
            self.store.read(events, drawn)
            if self.store
            else StoreView(None, None, (), {"segments": NO_STORE})
        )
        self._segment_paths = [segment.path for segment in store.segments]
        consumers = self.consumers.read(store, events.get(PROBE_SENDPATH)) if self.consumers else None
        store = mark_positions(store, consumers) if consumers else store
        hidden = self._find_holders()
        if self._follow_holders:
            self.probes.retarget(self.processes.watched())
        processes = self.processes.read(elapsed, events)
        self._sequence += 1
        unavailable = {}
        if not processes:
            unavailable["processes"] = f"no process to watch: {hidden}" if hidden else NO_PROCESSES
        return TopSnapshot(
            sequence=self._sequence,
            time_unix_s=round(self._wall_clock(), 3),
            interval_s=round(elapsed, 6),
            page_size_bytes=PAGE_SIZE_BYTES,
            store=store,
            memory=memory,
            writeback=writeback_events(events.get(PROBE_WRITEBACK)),
            sendpaths=sendpaths_view(events.get(PROBE_SENDPATH)),
            processes=processes,
            probes=self.probes.statuses(),
            detail=self._detail(),
            unavailable=unavailable,
            consumers=consumers,
        )

    def _find_holders(self) -> str | None:
        """Look for the store's holders (every few intervals). When none is found but the maps of other users'
        processes could not be read, one of them may be the broker: returns why there is no process to
        watch, which the waiting probes say too, instead of claiming that nothing holds the store."""
        self.processes.follow_store(self._segment_paths, self.settings.store_dir)
        described = () if self.processes.watched() else map(other_process, self.processes.unreadable())
        hidden = [process for process in described if process is not None and process.of_another_user]
        if not hidden:
            self.probes.waiting_for(NO_PROCESS_REASON, NO_PROCESS_FIX)
            return None
        # the processes with the most file pages resident first: a broker maps its segments
        hidden.sort(key=lambda process: -(process.rss_file_bytes or 0))
        who = describe_processes(hidden)
        reason = f"cannot read /proc/PID/maps of {who}: any of them may hold the store's files"
        self.probes.waiting_for(
            f"no process this user may inspect holds the store's files; {reason}", HIDDEN_HOLDERS_FIX
        )
        return f"{reason}; {HIDDEN_HOLDERS_FIX}"

    def _detail(self):
        with self._focus_lock:
            focus = self._focus
        if focus is None or self.store is None:
            return None
        return self.store.detail(focus[0], focus[1], PAGE_SIZE_BYTES)


def writeback_events(snapshot: Any) -> WritebackEvents:
    if snapshot is None:
        reason = NO_EBPF_EVENTS.format(probe=PROBE_WRITEBACK)
        return WritebackEvents(None, None, None, (), dict.fromkeys(("dirtied_pages", "throttled"), reason))
    throttled = tuple(
        ThrottledWriter(
            row.pid,
            row.comm,
            row.pauses,
            row.pause_ms_total,
            row.pause_ms_max,
            row.dirty_pages_at_max_pause,
            row.limit_pages_at_max_pause,
        )
        for row in snapshot.throttled
    )
    return WritebackEvents(
        snapshot.dirtied_pages, snapshot.written_pages, snapshot.written_pages_all_files, throttled
    )


def sendpaths_view(snapshot: Any) -> SendPathsView:
    if snapshot is None:
        reason = NO_EBPF_EVENTS.format(probe=PROBE_SENDPATH)
        return SendPathsView(None, None, None, (), {"processes": reason})
    rows = tuple(
        SendPathRow(
            pid=row.pid,
            comm=row.comm,
            main_path=row.main_path,
            bytes_to_sockets=row.bytes_to_sockets,
            read_write_bytes=row.paths.read_write_bytes,
            mmap_write_bytes=row.paths.mmap_write_bytes,
            sendfile_bytes=row.paths.sendfile_bytes,
            splice_bytes=row.paths.splice_bytes,
            syscalls=row.syscalls,
            cpu_copies_per_socket_byte=row.cpu_copies_per_socket_byte,
            other_socket_write_bytes=row.other_socket_write_bytes,
            unresolved_socket_write_bytes=row.unresolved_socket_write_bytes,
        )
        for row in snapshot.processes
        if row.bytes_to_sockets
    )
    return SendPathsView(
        snapshot.interval_s, snapshot.bytes_to_sockets, snapshot.cpu_copies_per_socket_byte, rows
    )


class SamplerThread:
    """Calls `sampler.sample()` every interval (timed against the start, so slow frames do not drift) and
    passes each snapshot to `deliver`, and to `record` when recording. Stops on `stop()`; the sampler's
    probes are closed on the way out whatever happens."""

    def __init__(
        self,
        sampler: Sampler,
        interval_s: float,
        deliver: Callable[[TopSnapshot], None],
        *,
        record: Callable[[TopSnapshot], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
    ):
        self.sampler = sampler
        self.interval_s = interval_s
        self._deliver = deliver
        self._record = record
        self._on_error = on_error
        self._stopped = False
        self._changed = threading.Condition()  # notified on stop() and set_interval()
        self._thread = threading.Thread(target=self._run, name="mqinspect-sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def set_interval(self, interval_s: float) -> None:
        """Sample every `interval_s` from the next tick on: the one after the last snapshot, at its time plus
        the new interval (a wait under way is cut short or drawn out)."""
        with self._changed:
            self.interval_s = interval_s
            self._changed.notify_all()

    def stop(self, timeout_s: float | None = None) -> None:
        with self._changed:
            self._stopped = True
            self._changed.notify_all()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)

    def _run(self) -> None:
        try:
            self.sampler.open()
            tick = time.monotonic()
            while (tick := self._wait_for_tick(tick)) is not None:
                snapshot = self.sampler.sample()
                if self._record is not None:
                    self._record(snapshot)
                self._deliver(snapshot)
        except BaseException as error:  # reported to the app, which exits with it; probes are closed below
            if self._on_error is not None:
                self._on_error(error)
        finally:
            self.sampler.close()

    def _wait_for_tick(self, previous_tick: float) -> float | None:
        """Wait until one interval after the previous tick (timed from the ticks, not from when sampling
        ended, so slow frames do not drift) and return the tick's time; None once stopped."""
        with self._changed:
            while not self._stopped:
                tick = previous_tick + self.interval_s
                remaining = tick - time.monotonic()
                if remaining <= 0:
                    return tick
                self._changed.wait(remaining)
        return None
