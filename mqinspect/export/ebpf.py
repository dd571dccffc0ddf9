"""`mqinspect export --ebpf`: what the eBPF probes count for each store, as counters that only grow.

Each store of the command line gets the dashboard's combined probe session (mqinspect.sampling.probe_set:
faults, pagecache, writeback and sendpath compiled into ONE program), tracing the processes that hold the
store's files (found as the dashboard finds them: their maps, descriptors and the store's lock). Tracing every
process instead would cost this exporter far more CPU on a busy host, for events mostly not about the store.

A scrape is a measurement: each one drains the session (the events since the previous scrape) and adds them
to totals kept here, so the counters grow across scrapes, across CommitLog rolls and across a holder that
restarts (the session is compiled again for the new pids: events in the few seconds that takes are not
counted, and `mqinspect_ebpf_probe_running` shows the gap). With --per-segment the totals of a segment that
is no longer in the store are dropped with it; the per-kind totals keep what it counted.

Families (labels `store` and `kind`, `segment` only with --per-segment; never a pid):
  mqinspect_store_page_faults_total{cause, type}   faults on the store's file pages: cause "exception" (a CPU
                        page fault) or "populate" (the kernel faulting for the process inside mlock,
                        MADV_POPULATE, MAP_POPULATE), type "minor" or "major" (the page had to be read)
  mqinspect_store_page_cache_added_bytes_total     bytes of the store's files the holders brought into the
                        page cache (reads and faults that missed it, readahead, writes)
  mqinspect_store_page_cache_removed_bytes_total   bytes of the store's files that left the page cache, by any
                        process: reclaim, fadvise DONTNEED, truncation and deletion
  mqinspect_store_dirtied_bytes_total / _written_bytes_total   bytes the holders dirtied, bytes written back
  mqinspect_store_send_bytes_total{path} (store only)   bytes the holders delivered to sockets, by send path
                        (read+write, mmap+write, sendfile, splice; other, unresolved: probes/ebpf/sendpath.py)
  mqinspect_store_send_cpu_copied_bytes_total{path}     the CPU copies between user and kernel memory
                        those bytes cost, as the path model counts them: rate(copied) / rate(sent) is copies
                        per byte
  mqinspect_store_dirty_throttle_pauses_total, _paused_seconds_total (store only)   balance_dirty_pages()
                        pauses of the holders: the kernel making a writer wait for writeback
  mqinspect_ebpf_lost_records_total{probe}         records a probe's maps could not hold: its per-file
                        counts above miss that many events (a long scrape interval on a busy store)
  mqinspect_ebpf_probe_running{probe}              1 while the probe runs, 0 while it waits or is unavailable
"""

from __future__ import annotations

import importlib.util
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from mqinspect.errors import MissingCapability
from mqinspect.export.measure import EbpfMeasurement, Gap, Labels, StoreMeasurement
from mqinspect.sampling.probe_set import DOCTOR_FIX, ProbeSet
from mqinspect.sampling.process_reader import scan_store_holders
from mqinspect.sampling.snapshot import (
    PROBE_FAULTS,
    PROBE_PAGECACHE,
    PROBE_SENDPATH,
    PROBE_WRITEBACK,
    ProbeState,
)
from probes.ebpf.inodes import PAGE_SIZE_BYTES
from probes.ebpf.loader import TRACEFS, require_bpf_privileges
from probes.ebpf.scope import StoreListing, current_store_files, current_store_listing
from probes.ebpf.sendpath import COPIES_PER_BYTE, OTHER, PATHS, UNRESOLVED
from probes.errors import CapabilityMissing
from store.inspection.log_format import LogFormat, StoreFile

SEND_PATHS = (*PATHS, OTHER, UNRESOLVED)
FAULTS = "mqinspect_store_page_faults"
ADDED = "mqinspect_store_page_cache_added_bytes"
REMOVED = "mqinspect_store_page_cache_removed_bytes"
DIRTIED = "mqinspect_store_dirtied_bytes"
WRITTEN = "mqinspect_store_written_bytes"
SENT = "mqinspect_store_send_bytes"
COPIED = "mqinspect_store_send_cpu_copied_bytes"
PAUSES = "mqinspect_store_dirty_throttle_pauses"
PAUSED = "mqinspect_store_dirty_throttle_paused_seconds"
LOST = "mqinspect_ebpf_lost_records"
# The counters' HELP text, by family (their names without _total, as prometheus_client takes them).
COUNTER_HELP = {
    FAULTS: "Page faults on the store's file pages by the processes that hold it: cause exception (a CPU "
    "page fault) or populate (the kernel faulting inside mlock, MADV_POPULATE, MAP_POPULATE), type minor or "
    "major (the page had to be read in)",
    ADDED: "Bytes of the store's files the processes holding it brought into the page cache (misses, "
    "readahead, writes)",
    REMOVED: "Bytes of the store's files that left the page cache, by any process (reclaim, fadvise, "
    "truncation)",
    DIRTIED: "Bytes of the store's files the processes holding it made dirty",
    WRITTEN: "Bytes of the store's files written back to the disk",
    SENT: "Bytes the processes holding the store delivered to sockets, by send path (read+write and "
    "mmap+write from the store's files; sendfile, splice; other: from memory; unresolved: unplaced buffers)",
    COPIED: "CPU copies between user and kernel memory of the bytes sent, by send path (2 per byte for "
    "read+write, 1 for mmap+write and other writes, 0 for sendfile and splice): over send_bytes, copies per "
    "byte",
    PAUSES: "Pauses balance_dirty_pages() made the processes holding the store sleep for writeback",
    PAUSED: "Seconds the processes holding the store slept in balance_dirty_pages() pauses",
    LOST: "Records a probe's maps could not hold: its per-file counts miss that many events",
}
FAULT_TYPES = (("exception", "minor"), ("exception", "major"), ("populate", "minor"), ("populate", "major"))
# The families each probe feeds (a probe not running leaves them out, and mqinspect_unavailable says why).
PROBE_FAMILIES = {
    PROBE_FAULTS: (FAULTS,),
    PROBE_PAGECACHE: (ADDED, REMOVED),
    PROBE_WRITEBACK: (DIRTIED, WRITTEN, PAUSES, PAUSED),
    PROBE_SENDPATH: (SENT, COPIED),
}
HOLDER_SCAN_INTERVAL_S = 60.0
PER_KIND = (FAULTS, ADDED, REMOVED, DIRTIED, WRITTEN)  # the families with kind (and segment) labels
RUNNING = "mqinspect_ebpf_probe_running"
# Every family --ebpf adds, as scraped (counters with _total): what a scrape without --ebpf never has.
EBPF_FAMILIES = (
    *(f"{name}_total" for names in PROBE_FAMILIES.values() for name in names),
    f"{LOST}_total",
    RUNNING,
)


def require_ebpf() -> None:
    """MissingCapability (exit 3), with the fix, when this host cannot run the probes at all: checked before
    the exporter listens, so that `--ebpf` never serves a scrape that silently lacks them."""
    try:
        require_bpf_privileges()
    except CapabilityMissing as missing:
        raise MissingCapability(f"--ebpf: {missing}", fix=missing.fix) from None
    bootstrap = "run scripts/bootstrap, or leave out --ebpf; `mqinspect doctor` shows what is missing"
    if importlib.util.find_spec("bcc") is None:
        raise MissingCapability("--ebpf: bcc cannot be imported (Debian's python3-bpfcc)", fix=bootstrap)
    build = Path("/lib/modules") / os.uname().release / "build"
    if not build.exists():
        raise MissingCapability(
            f"--ebpf: no kernel headers at {build} for bcc to compile with", fix=bootstrap
        )
    if not (TRACEFS / "events").is_dir():
        raise MissingCapability(f"--ebpf: tracefs is not mounted at {TRACEFS}", fix=bootstrap)


class StoreProbes:
    """One store's combined probe session, tracing the store's holders, drained at each scrape. The holders
    are looked for again every HOLDER_SCAN_INTERVAL_S (it reads every process's maps): a broker that
    restarts is traced again within that."""

    def __init__(
        self,
        root: Path,
        *,
        probe_set: ProbeSet | None = None,
        find_holders: Callable[[Path], tuple[int, ...]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.root = root
        self.store = str(root)
        self._find_holders = find_holders or store_holder_pids
        self._clock = clock
        self._holders = self._find_holders(root)
        self._scanned_s = clock()
        self.probes = probe_set or ProbeSet(self._holders, root, every_process_when_no_pids=False)
        self.counted: set[str] = set()  # the probes that have delivered counts: their families exist

    def start(self) -> None:
        """Compile and attach (for the holders found now; none: the probes wait for one)."""
        self.probes.start(background=False)

    def drain(self) -> dict[str, Any]:
        """The probes' counts since the last drain; then the holders are looked for again, and the session is
        compiled again (in the background) when they changed."""
        snapshots = self.probes.collect()
        self.counted |= snapshots.keys()
        if self._clock() - self._scanned_s < HOLDER_SCAN_INTERVAL_S:
            return snapshots
        self._scanned_s = self._clock()
        holders = self._find_holders(self.root)
        if holders != self._holders:
            self._holders = holders
            self.probes.retarget(holders)
        return snapshots

    def statuses(self):
        return self.probes.statuses()

    def close(self) -> None:
        self.probes.close()


def store_holder_pids(root: Path) -> tuple[int, ...]:
    """The processes (not this one) that map or hold open the store's files, or hold its lock. The store's
    files are the listing the probes made while draining, where it is recent (probes.ebpf.scope)."""
    paths = [label.path for label in current_store_files(root).values() if label.path]
    return tuple(sorted(scan_store_holders(paths, root, exclude=os.getpid()).holders))


class EbpfCounters:
    """The probe sessions of every store and the counters' totals, which only grow."""

    def __init__(self, sessions: Sequence[StoreProbes], *, per_segment: bool = False):
        self.sessions = tuple(sessions)
        self.per_segment = per_segment
        self._totals: dict[str, dict[Labels, float]] = defaultdict(lambda: defaultdict(float))
        self._listings: dict[Path, StoreListing | None] = {}  # each store's files, listed for the last drain

    @classmethod
    def for_stores(cls, roots: Sequence[Path], *, per_segment: bool = False) -> EbpfCounters:
        return cls([StoreProbes(root) for root in roots], per_segment=per_segment)

    def start(self) -> None:
        """Start every store's session; MissingCapability when a session that had holders to trace could
        not start any probe (what the reason says is missing)."""
        try:
            for session in self.sessions:
                session.start()
                _require_one_probe(session)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for session in self.sessions:
            session.close()

    def drain(self) -> None:
        """Add what every session counted since the last drain to the totals. Each store is listed first:
        the probes, which list it as they are drained, take that listing (probes.ebpf.scope keeps one a
        fraction of a second), and so does this scrape's residency (`list_files`), whatever its age."""
        self._listings = {}
        for session in self.sessions:
            self._listings[session.root] = current_store_listing(session.root, fresh=True)
            self._add(session.store, session.drain())

    def list_files(self, log_format: LogFormat, root: Path) -> tuple[StoreFile, ...]:
        """The store's files as listed for this drain: a scrape with --ebpf lists each store once."""
        listing = self._listings.get(root)
        if listing is None:  # not drained, or being deleted or moved: the format's listing says why
            return tuple(log_format.store_files(root))
        return tuple(
            StoreFile(Path(label.path), label.name, label.segment_kind)
            for label in listing.files.values()
            if label.path and label.segment_kind
        )

    def measurement(self, stores: Iterable[StoreMeasurement]) -> EbpfMeasurement:
        """The totals, with the probes' states and gaps. `stores`: this scrape's measurements, whose files'
        kinds (and segments) a running probe has a series for, 0 until it counts; a segment that is gone has
        none."""
        kinds = _kinds_of(stores)
        running, gaps = {}, []
        for session in self.sessions:
            for status in session.statuses():
                running[(session.store, status.name)] = status.state == ProbeState.RUNNING
                if status.name not in session.counted:
                    why = _why_not(status)
                    gaps += [
                        Gap(f"{family}_total", why, session.store) for family in PROBE_FAMILIES[status.name]
                    ]
            self._fill(session, kinds.get(session.store, set()))
        totals = {family: dict(values) for family, values in self._totals.items()}
        return EbpfMeasurement(totals, running, tuple(gaps))

    # --- the snapshots' counts, added to the totals

    def _add(self, store: str, snapshots: dict[str, Any]) -> None:
        for probe, snapshot in snapshots.items():
            self._totals[LOST][(("store", store), ("probe", probe))] += snapshot.lost_records
            ADDERS[probe](self, store, snapshot)

    def _file_labels(self, store: str, row: Any) -> Labels | None:
        """(store, kind[, segment]) of a probe's file row; None for a file that is not the store's."""
        if row.segment_kind is None:
            return None
        labels: Labels = (("store", store), ("kind", row.segment_kind))
        if self.per_segment:
            labels += (("segment", Path(row.name).name),)
        return labels

    def _add_faults(self, store: str, snapshot: Any) -> None:
        for row in snapshot.files:
            labels = self._file_labels(store, row)
            if labels is None:
                continue
            counts = {
                ("exception", "minor"): row.minor_faults,
                ("exception", "major"): row.major_faults,
                ("populate", "minor"): row.populate_faults - row.populate_major_faults,
                ("populate", "major"): row.populate_major_faults,
            }
            for (cause, fault_type), count in counts.items():
                self._totals[FAULTS][(*labels, ("cause", cause), ("type", fault_type))] += count

    def _add_file_pages(self, store: str, rows: Iterable[Any], fields: dict[str, str]) -> None:
        """Each of the store's file rows' page counts (`fields`: {family: row field}) in bytes."""
        for row in rows:
            labels = self._file_labels(store, row)
            if labels is not None:
                for family, field in fields.items():
                    self._totals[family][labels] += getattr(row, field) * PAGE_SIZE_BYTES

    def _add_pagecache(self, store: str, snapshot: Any) -> None:
        self._add_file_pages(store, snapshot.files, {ADDED: "added_pages", REMOVED: "deleted_pages"})

    def _add_writeback(self, store: str, snapshot: Any) -> None:
        self._add_file_pages(store, snapshot.files, {DIRTIED: "dirtied_pages", WRITTEN: "written_pages"})
        store_only = (("store", store),)
        self._totals[PAUSES][store_only] += sum(row.pauses for row in snapshot.throttled)
        self._totals[PAUSED][store_only] += sum(row.pause_ms_total for row in snapshot.throttled) / 1000

    def _add_sendpath(self, store: str, snapshot: Any) -> None:
        sent = dict(snapshot.paths.by_path())
        sent[OTHER] = snapshot.other_socket_write_bytes
        sent[UNRESOLVED] = snapshot.unresolved_socket_write_bytes
        for path, moved in sent.items():
            labels = (("store", store), ("path", path))
            self._totals[SENT][labels] += moved
            self._totals[COPIED][labels] += moved * COPIES_PER_BYTE[path]

    # --- series that exist from the probe's start, and none for a segment that is gone

    def _fill(self, session: StoreProbes, kinds: set[Labels]) -> None:
        store = (("store", session.store),)
        for probe in session.counted:
            self._totals[LOST][(*store, ("probe", probe))] += 0
        if PROBE_SENDPATH in session.counted:
            for path in SEND_PATHS:
                self._totals[SENT][(*store, ("path", path))] += 0
                self._totals[COPIED][(*store, ("path", path))] += 0
        if PROBE_WRITEBACK in session.counted:
            self._totals[PAUSES][store] += 0
            self._totals[PAUSED][store] += 0
        for family in PER_KIND:
            probe = next(name for name, families in PROBE_FAMILIES.items() if family in families)
            if probe not in session.counted:
                continue
            values = self._totals[family]
            for labels in [labels for labels in values if labels[0] == store[0]]:
                if self.per_segment and labels[:3] not in kinds:
                    del values[labels]  # the segment is gone: its series would claim a file that is not
            for labels in kinds:
                for extra in _FAULT_LABELS if family == FAULTS else ((),):
                    values[(*labels, *extra)] += 0


_FAULT_LABELS = tuple((("cause", cause), ("type", fault_type)) for cause, fault_type in FAULT_TYPES)
ADDERS: dict[str, Callable[[EbpfCounters, str, Any], None]] = {
    PROBE_FAULTS: EbpfCounters._add_faults,
    PROBE_PAGECACHE: EbpfCounters._add_pagecache,
    PROBE_WRITEBACK: EbpfCounters._add_writeback,
    PROBE_SENDPATH: EbpfCounters._add_sendpath,
}


def _why_not(status: Any) -> str:
    state = {ProbeState.WAITING: "waiting", ProbeState.STARTING: "starting"}.get(status.state, "unavailable")
    reason = status.reason or "compiling the probes"
    fix = f" (fix: {status.fix})" if status.fix else ""
    return f"the {status.name} probe is {state}: {reason}{fix}"


def _require_one_probe(session: StoreProbes) -> None:
    statuses = session.statuses()
    if any(status.state != ProbeState.UNAVAILABLE for status in statuses):
        return
    first = statuses[0]
    raise MissingCapability(
        f"--ebpf: no probe could start for {session.store}: {first.reason}", fix=first.fix or DOCTOR_FIX
    )


def _kinds_of(stores: Iterable[StoreMeasurement]) -> dict[str, set[Labels]]:
    """{store: {(store, kind[, segment]) labels}} of the files each store has now."""
    kinds: dict[str, set[Labels]] = defaultdict(set)
    for store in stores:
        for group in store.residency:
            named = dict(group.labels)
            labels = (("store", store.store), ("kind", named["kind"]))
            kinds[store.store].add(labels + ((("segment", named["segment"]),) if "segment" in named else ()))
    return kinds
