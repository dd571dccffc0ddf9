"""The --ebpf counters' bookkeeping without BPF: each scrape's drain adds to totals that only grow, a probe
that has not run leaves its families out with the reason, holders that change recompile the session, and
with --per-segment a segment that is gone takes its series with it."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

from exporter import sample_values
from prometheus_client import generate_latest

from mqinspect.export.collector import export_registry
from mqinspect.export.ebpf import HOLDER_SCAN_INTERVAL_S, EbpfCounters, StoreProbes
from mqinspect.sampling.snapshot import DASHBOARD_PROBES, ProbeState, ProbeStatus
from probes.ebpf.sendpath import SendPaths


class FakeProbeSet:
    """A ProbeSet whose sessions hand out the snapshots a test queues."""

    def __init__(self, state: str = ProbeState.RUNNING, reason: str | None = None):
        self.state, self.reason = state, reason
        self.queued: list[dict] = []
        self.retargeted: list[tuple[int, ...]] = []
        self.closed = False

    def start(self, *, background: bool = True) -> None:
        pass

    def collect(self) -> dict:
        return self.queued.pop(0) if self.queued else {}

    def statuses(self):
        return tuple(ProbeStatus(name, self.state, self.reason, "the fix") for name in DASHBOARD_PROBES)

    def retarget(self, pids) -> None:
        self.retargeted.append(pids)

    def close(self) -> None:
        self.closed = True


def _file(kind: str, name: str, **counts) -> SimpleNamespace:
    fields = dict.fromkeys(
        (
            "minor_faults",
            "major_faults",
            "populate_faults",
            "populate_major_faults",
            "added_pages",
            "deleted_pages",
            "dirtied_pages",
            "written_pages",
        ),
        0,
    )
    return SimpleNamespace(segment_kind=kind, name=name, **(fields | counts))


def _interval(files, *, sendfile: int = 0, pauses: int = 0) -> dict:
    rows = (*tuple(files), SimpleNamespace(**{**vars(_file("x", "x")), "segment_kind": None}))
    throttled = (SimpleNamespace(pauses=pauses, pause_ms_total=pauses * 20),)
    return {
        "faults": SimpleNamespace(lost_records=0, files=rows),
        "pagecache": SimpleNamespace(lost_records=1, files=rows),
        "writeback": SimpleNamespace(lost_records=0, files=rows, throttled=throttled),
        "sendpath": SimpleNamespace(
            lost_records=0,
            paths=SendPaths(0, 0, sendfile, 0),
            other_socket_write_bytes=10,
            unresolved_socket_write_bytes=0,
        ),
    }


def _store_with_segments(tmp_path: Path, count: int) -> Path:
    from store.config import StoreConfig
    from store.message_store import MessageStore
    from store.workload import ProduceSpec, produce

    root = tmp_path / "store"
    config = StoreConfig(mapped_file_size_commitlog=64 * 1024, consume_queue_entries_per_file=1000)
    with MessageStore(root, config) as writer:
        produce(writer, ProduceSpec("T", 0, count=count, body_size_bytes=200, batch=50))
    return root


def _exporter(
    root: Path,
    probes: FakeProbeSet,
    *,
    per_segment: bool = False,
    holders=lambda _root: (7,),
    clock=time.monotonic,
):
    session = StoreProbes(root, probe_set=probes, find_holders=holders, clock=clock)
    counters = EbpfCounters([session], per_segment=per_segment)
    counters.start()
    return export_registry([root], per_segment=per_segment, ebpf=counters), counters


def _scrape(registry) -> str:
    return generate_latest(registry).decode()


def test_each_scrape_adds_what_the_probes_counted_since_the_last(tmp_path: Path):
    root = _store_with_segments(tmp_path, 400)
    probes = FakeProbeSet()
    registry, _counters = _exporter(root, probes)
    commitlog = "commitlog/00000000000000000000"
    probes.queued = [
        _interval(
            [_file("commitlog", commitlog, minor_faults=5, major_faults=2, dirtied_pages=3)], sendfile=100
        ),
        _interval(
            [_file("commitlog", commitlog, minor_faults=1, populate_faults=4, populate_major_faults=1)]
        ),
    ]
    first, second, third = _scrape(registry), _scrape(registry), _scrape(registry)
    store = ("store", str(root))
    faults = {
        text: sample_values(text, "mqinspect_store_page_faults_total") for text in (first, second, third)
    }

    def fault(text, cause, fault_type, kind="commitlog"):
        return faults[text][frozenset({store, ("kind", kind), ("cause", cause), ("type", fault_type)})]

    assert (fault(first, "exception", "minor"), fault(first, "exception", "major")) == (5, 2)
    assert fault(second, "exception", "minor") == 6
    assert (fault(second, "populate", "minor"), fault(second, "populate", "major")) == (3, 1)
    assert fault(third, "exception", "minor") == 6  # nothing counted since: the total stays
    assert fault(third, "exception", "minor", kind="consumequeue") == 0  # a kind the store has, counted 0
    assert (
        sample_values(third, "mqinspect_store_dirtied_bytes_total")[frozenset({store, ("kind", "commitlog")})]
        == 3 * 4096
    )
    sent = sample_values(third, "mqinspect_store_send_bytes_total")
    copied = sample_values(third, "mqinspect_store_send_cpu_copied_bytes_total")
    assert sent[frozenset({store, ("path", "sendfile")})] == 100
    assert copied[frozenset({store, ("path", "sendfile")})] == 0
    assert sent[frozenset({store, ("path", "other")})] == copied[frozenset({store, ("path", "other")})] == 20
    assert (
        sample_values(third, "mqinspect_ebpf_lost_records_total")[frozenset({store, ("probe", "pagecache")})]
        == 2
    )
    assert sample_values(third, "mqinspect_store_dirty_throttle_paused_seconds_total") == {
        frozenset({store}): 0.0
    }
    running = sample_values(third, "mqinspect_ebpf_probe_running")
    assert set(running.values()) == {1.0} and len(running) == len(DASHBOARD_PROBES)


def test_probes_that_wait_leave_their_families_out_with_the_reason(tmp_path: Path):
    root = _store_with_segments(tmp_path, 100)
    probes = FakeProbeSet(ProbeState.WAITING, "no process holds the store's files yet")
    registry, _counters = _exporter(root, probes, holders=lambda _root: ())
    text = _scrape(registry)
    assert not sample_values(text, "mqinspect_store_page_faults_total")
    assert not sample_values(text, "mqinspect_store_send_bytes_total")
    gaps = {
        dict(labels)["metric"]: dict(labels)["reason"]
        for labels in sample_values(text, "mqinspect_unavailable_info")
    }
    assert "faults probe is waiting: no process holds" in gaps["mqinspect_store_page_faults_total"]
    assert "the fix" in gaps["mqinspect_store_send_bytes_total"]
    assert set(sample_values(text, "mqinspect_ebpf_probe_running").values()) == {0.0}


def test_new_holders_recompile_the_session_and_the_totals_go_on(tmp_path: Path):
    root = _store_with_segments(tmp_path, 100)
    probes = FakeProbeSet()
    holders = iter([(7,), (7,), (7, 8), (7, 8)])
    now = [0.0]
    registry, _counters = _exporter(root, probes, holders=lambda _root: next(holders), clock=lambda: now[0])
    probes.queued = [_interval([_file("commitlog", "commitlog/00000000000000000000", minor_faults=2)])] * 3
    _scrape(registry)  # within a minute of the last look: the holders are not looked for
    now[0] = HOLDER_SCAN_INTERVAL_S
    _scrape(registry)
    assert probes.retargeted == []
    now[0] = 2 * HOLDER_SCAN_INTERVAL_S
    text = _scrape(registry)
    assert probes.retargeted == [(7, 8)]
    minor = frozenset(
        {("store", str(root)), ("kind", "commitlog"), ("cause", "exception"), ("type", "minor")}
    )
    assert sample_values(text, "mqinspect_store_page_faults_total")[minor] == 6


def test_per_segment_a_deleted_segment_takes_its_series_with_it(tmp_path: Path):
    root = _store_with_segments(tmp_path, 1000)
    segments = sorted((root / "commitlog").iterdir())
    assert len(segments) >= 3
    probes = FakeProbeSet()
    registry, _counters = _exporter(root, probes, per_segment=True)
    first, last = segments[0].name, segments[-1].name
    probes.queued = [
        _interval([_file("commitlog", f"commitlog/{first}", added_pages=4)]),
        _interval([_file("commitlog", f"commitlog/{last}", added_pages=1)]),
    ]
    before = sample_values(_scrape(registry), "mqinspect_store_page_cache_added_bytes_total")
    segments[0].unlink()  # retention deleted it
    after = sample_values(_scrape(registry), "mqinspect_store_page_cache_added_bytes_total")

    def series(segment):
        return frozenset({("store", str(root)), ("kind", "commitlog"), ("segment", segment)})

    assert before[series(first)] == 4 * 4096
    assert series(first) not in after
    assert after[series(last)] == 4096
    assert {dict(labels)["segment"] for labels in after if dict(labels)["kind"] == "commitlog"} == {
        path.name for path in segments[1:]
    }


def test_closing_the_counters_closes_every_session(tmp_path: Path):
    root = _store_with_segments(tmp_path, 100)
    probes = FakeProbeSet()
    _registry, counters = _exporter(root, probes)
    counters.close()
    assert probes.closed
