"""Consumers on the dashboard: each group's committed offset and lag against what `store consume` itself
reads at those offsets (its messages' physical offsets, the queue's max offset), the C marks on the heat
strips in the segments and chunks that hold those positions, what cannot be known said as unavailable, and
the connected consumers made from the sendpath probe's per-descriptor rows."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fakes import T0, FakeFeed, frame
from rich.console import Console
from support import (
    fadvise_out,
    fincore_pages,
    mqinspect_as_nobody,
    run_mqinspect,
    store_nobody_can_read,
)
from textual.widgets import Static

from mqinspect.dashboard.app import DashboardApp
from mqinspect.dashboard.row_table import RowTable
from mqinspect.jsonable import from_jsonable, json_line
from mqinspect.render.top import CONSUMER_MARK, READER_MARK, consumers_panel, segment_strip, top_view
from mqinspect.sampling.consumers import (
    NO_ADDED_PAGES,
    SPLICED,
    ConsumerReader,
    connected_consumers,
    mark_positions,
)
from mqinspect.sampling.sampler import Sampler, SamplerSettings
from mqinspect.sampling.snapshot import DASHBOARD_PROBES, ProbeState, ProbeStatus, TopSnapshot
from mqinspect.sampling.store_reader import StoreReader
from probes.ebpf.sendpath import FdTraffic, SendpathProbe
from probes.ebpf.session import TraceSession
from store.consumer_offsets import consumer_offset_path, load_consumer_offsets

SEGMENT_BYTES = 64 * 1024


def cli(*args: object) -> dict:
    result = run_mqinspect(*args)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout) if "json" in args else {}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """Orders and Payments interleaved in a CommitLog of 64 KiB segments (it rolls), 100 entries per
    ConsumeQueue file; g1 has read 120 Orders and 30 Payments, g2 every Order."""
    root = tmp_path_factory.mktemp("consumers") / "store"
    cli("store", "init", root, "--segment-size", "64k", "--cq-entries", "100", "--index-slots", "64")
    for topic, count, size in (("Orders", 150, 100), ("Payments", 100, 200), ("Orders", 150, 100)):
        cli("store", "produce", root, "-t", topic, "-n", count, "--size", size, "-f", "json")
    cli("store", "consume", root, "-t", "Orders", "-g", "g1", "-n", 120, "-f", "json")
    cli("store", "consume", root, "-t", "Payments", "-g", "g1", "-n", 30, "-f", "json")
    cli("store", "consume", root, "-t", "Orders", "-g", "g2", "-n", 1000, "-f", "json")
    return root


def sample(root: Path) -> TopSnapshot:
    sampler = Sampler(SamplerSettings(root, (), 1.0, ebpf=False))
    sampler.open(background=False)
    try:
        return sampler.sample()
    finally:
        sampler.close()


def consumed_at(root: Path, topic: str, offset: int) -> dict:
    """What `store consume` reads at queue offset `offset` (no group: nothing is committed)."""
    return cli("store", "consume", root, "-t", topic, "--from", offset, "-n", 1, "-f", "json")


def test_lag_matches_the_positions_store_consume_reads(store: Path):
    groups = {(row.group, row.topic): row for row in sample(store).consumers.groups}
    assert set(groups) == {("g1", "Orders"), ("g1", "Payments"), ("g2", "Orders")}
    for (group, topic), row in groups.items():
        committed = load_consumer_offsets(consumer_offset_path(store)).get(topic, group, 0)
        assert row.committed_offset == committed
        at = consumed_at(store, topic, committed)
        last = consumed_at(store, topic, at["max_offset"] - 1)["messages"][0]
        queue_end = last["physical_offset"] + last["size_bytes"]
        assert row.max_offset == at["max_offset"]
        assert row.lag_messages == at["max_offset"] - committed
        assert row.queue_end_physical_offset_bytes == queue_end
        next_message = at["messages"][0]["physical_offset"] if at["messages"] else queue_end
        assert row.committed_physical_offset_bytes == next_message
        assert row.lag_bytes == queue_end - next_message
        assert row.unavailable == {}
    assert groups[("g2", "Orders")].lag_messages == 0 and groups[("g2", "Orders")].lag_bytes == 0
    # g1's Orders lag spans the Payments written between its Orders: more bytes than its own messages
    assert groups[("g1", "Orders")].lag_bytes > 180 * min(
        m["size_bytes"] for m in consumed_at(store, "Orders", 120)["messages"]
    )


def test_the_heat_strips_mark_each_group_in_the_segment_and_chunk_that_hold_it(store: Path):
    snapshot = sample(store)
    by_name = {segment.name: segment for segment in snapshot.store.segments}
    marked = {name: segment.consumer_positions_bytes for name, segment in by_name.items()}
    g1 = next(row for row in snapshot.consumers.groups if (row.group, row.topic) == ("g1", "Orders"))
    holder = by_name[g1.segment]
    assert g1.committed_physical_offset_bytes - holder.start_offset_bytes in marked[g1.segment]
    assert marked["consumequeue/Orders/0/00000000000000002000"] == (120 * 20 - 2000,)
    assert marked["consumequeue/Payments/0/00000000000000000000"] == (30 * 20,)
    # the CommitLog rolled: g1 reads in its first segment, g2 (caught up) at the end of the log
    assert g1.segment == "commitlog/00000000000000000000"
    assert next(r for r in snapshot.consumers.groups if r.group == "g2").segment.endswith("65536")
    strip = segment_strip(holder).plain
    position = g1.committed_physical_offset_bytes - holder.start_offset_bytes
    assert strip[position * len(strip) // holder.size_bytes] == CONSUMER_MARK


def test_the_panel_and_the_json_carry_the_groups(store: Path):
    """At 80 columns too: no number cut."""
    snapshot = sample(store)
    console = Console(width=80, record=True, color_system=None)
    console.print(consumers_panel(snapshot))
    text = console.export_text()
    assert "g1    Orders/0" in text and "lag msgs" in text and "64KiB" in text
    assert "unavailable: sendpath probe: eBPF disabled" in text  # connected consumers need the probe
    console.print(top_view(snapshot))
    assert "C on a heat strip" in console.export_text()
    replayed = from_jsonable(TopSnapshot, json.loads(json_line(snapshot)))
    assert replayed.consumers == snapshot.consumers
    document = cli("top", store, "--once", "--no-ebpf", "--format", "json")
    assert document["consumers"]["groups"][0]["lag_bytes"] == snapshot.consumers.groups[0].lag_bytes


def write_offsets(root: Path, text: str) -> None:
    consumer_offset_path(root).write_text(text)


def groups_of(root: Path):
    view = ConsumerReader().read(StoreReader(root).read({}), None)
    return view


def test_offsets_the_queue_no_longer_holds_are_unavailable_not_zero(tmp_path: Path, store: Path):
    root = tmp_path / "store"
    cli("store", "init", root, "--segment-size", "64k", "--cq-entries", "100", "--index-slots", "64")
    cli("store", "produce", root, "-t", "Orders", "-n", 250, "--size", "100", "-f", "json")
    (root / "consumequeue/Orders/0/00000000000000000000").unlink()  # as retention deletes a queue's file
    write_offsets(root, '{"offsetTable":{"Orders@old":{0:50},"Orders@ahead":{0:900},"Nope@g":{0:1}}}')
    rows = {row.group: row for row in groups_of(root).groups}
    old, ahead, nope = rows["old"], rows["ahead"], rows["g"]
    assert old.lag_messages == 200 and old.lag_bytes is None
    assert "before the first entry on disk (100): retention deleted it" in old.unavailable["lag_bytes"]
    assert ahead.lag_messages is None and "past the queue's end 250" in ahead.unavailable["lag_messages"]
    assert nope.max_offset is None and "no ConsumeQueue for Nope@0" in nope.unavailable["max_offset"]


def test_a_missing_or_broken_offsets_file_says_why(tmp_path: Path, store: Path):
    root = tmp_path / "store"
    cli("store", "init", root, "--segment-size", "64k", "--cq-entries", "100", "--index-slots", "64")
    cli("store", "produce", root, "-t", "Orders", "-n", 10, "--size", "100", "-f", "json")
    view = groups_of(root)
    assert view.groups == () and "no consumer group has committed an offset yet" in view.unavailable["groups"]
    write_offsets(root, '{"offsetTable":{"Orders@g":{0:')
    view = groups_of(root)
    assert view.groups == () and "expected a value" in view.unavailable["groups"]
    assert "no consumerOffset.json.bak to read instead" in view.unavailable["groups"]
    assert view.unavailable["connected"] == "the sendpath probe is not running"
    Path(f"{consumer_offset_path(root)}.bak").write_text('{"offsetTable":{"Orders@g":{0:4}}}')
    view = groups_of(root)  # as the broker does: the .bak when the file is unreadable
    assert [(row.group, row.lag_messages) for row in view.groups] == [("g", 6)]
    assert "consumerOffset.json.bak instead: " in view.unavailable["offsets_file"]


def fd_row(pid: int, peer: str, counted_as: str | None, source: str | None, moved: int, **more) -> FdTraffic:
    in_kernel = counted_as in ("sendfile", "splice") or more.get("fd_kind") == "pipe"  # splice into a pipe
    return FdTraffic(
        pid=pid,
        fd=7,
        fd_kind=more.get("fd_kind", "socket"),
        fd_name=peer,
        source_fd=None,
        source_kind=more.get("source_kind", "file"),
        source_name=source,
        syscalls=1,
        syscall_errors=0,
        mode_switches=2,
        bytes_kernel_to_user=0,
        bytes_user_to_kernel=0 if in_kernel else moved,
        bytes_in_kernel=moved if in_kernel else 0,
        faults_in_syscalls=0,
        per_syscall=(),
        socket_bytes_as=counted_as,
        pages_added_in_syscalls=more.get("cold", 0),
        source_end_bytes=more.get("end"),
    )


PEER = "TCP 127.0.0.1:9 → 127.0.0.1:"


def test_connected_consumers_are_the_sockets_sent_store_bytes(store: Path):
    segments = sample(store).store.segments
    first, second = (s for s in segments if s.kind == "commitlog")
    rows = [
        fd_row(10, f"{PEER}501", "mmap+write", f"{first.name} (mapped)", 4000, cold=3, end=8192),
        fd_row(10, f"{PEER}501", "read+write", second.name, 1000, cold=2, end=4096),
        fd_row(10, f"{PEER}502", "sendfile", second.name, 9000, end=12288),
        fd_row(10, f"{PEER}503", "other", None, 50, source_kind="memory"),
        fd_row(10, f"{PEER}504", "sendfile", "/etc/hostname", 70),  # not the store
        fd_row(10, f"{PEER}505", "splice", "pipe:[1] (read end)", 600, source_kind="pipe", cold=None),
        fd_row(10, f"{PEER}506", "splice", "pipe:[2] (read end)", 800, source_kind="pipe"),
        fd_row(10, "pipe:[2] (write end)", None, second.name, 800, fd_kind="pipe", cold=7, end=20480),
        fd_row(10, "/tmp/copy", None, first.name, 4000, fd_kind="file"),
    ]
    connected = connected_consumers(rows, segments, {10: "broker"})
    assert [row.peer[-3:] for row in connected] == ["502", "501", "506", "505"]
    busiest, mixed, fed, spliced = connected
    # a splice's pipe filled from the store by the same process: the filling splices tell
    assert (fed.main_path, fed.segments, fed.cold_pages) == ("splice", (second.name,), 7)
    assert fed.read_position_bytes == second.start_offset_bytes + 20480 and fed.unavailable == {}
    assert (busiest.main_path, busiest.sendfile_bytes, busiest.segments) == ("sendfile", 9000, (second.name,))
    assert busiest.read_position_bytes == second.start_offset_bytes + 12288 and busiest.cold_pages == 0
    assert (mixed.mmap_write_bytes, mixed.read_write_bytes, mixed.bytes_sent) == (4000, 1000, 5000)
    assert mixed.main_path == "mmap+write" and mixed.segments == (first.name, second.name)
    assert mixed.comm == "broker" and mixed.segment_cached_pages == (first.cached_pages, second.cached_pages)
    # the furthest position reached, in the newer segment; the cold pages of both sends
    assert (mixed.read_position_bytes, mixed.read_segment) == (second.start_offset_bytes + 4096, second.name)
    assert mixed.cold_pages == 5 and mixed.unavailable == {}
    assert spliced.segments == () and spliced.unavailable["segments"] == SPLICED
    assert spliced.read_position_bytes is None and spliced.unavailable["read_position_bytes"] == SPLICED
    assert spliced.cold_pages is None and spliced.unavailable["cold_pages"] == NO_ADDED_PAGES

    view = dataclasses.replace(sample(store).consumers, connected=connected)
    marked = {s.name: s for s in mark_positions(sample(store).store, view).segments}
    assert marked[second.name].reader_positions_bytes == (4096, 12288, 20480)
    strip = segment_strip(marked[second.name]).plain
    assert strip[4096 * len(strip) // second.size_bytes] == READER_MARK


def test_the_dashboard_shows_the_consumers_panel_and_the_marks(store: Path):
    snapshot = sample(store)
    first = next(s.name for s in snapshot.store.segments if s.kind == "commitlog")
    peer = "TCP 127.0.0.1:9 → 127.0.0.1:501"
    connected = connected_consumers(
        [fd_row(10, peer, "sendfile", first, 9000, cold=16, end=8192)],
        snapshot.store.segments,
        {10: "broker"},
    )
    consumers = dataclasses.replace(snapshot.consumers, connected=connected, interval_s=1.0)
    snapshot = dataclasses.replace(
        snapshot,
        consumers=consumers,
        probes=tuple(ProbeStatus(n, ProbeState.RUNNING) for n in DASHBOARD_PROBES),
    )

    async def test():
        app = DashboardApp(feed=FakeFeed(), clock=lambda: T0)
        async with app.run_test(size=(160, 50)) as pilot:
            app.receive(snapshot)
            await pilot.pause()
            panel = app.query_one("#consumers", Static)
            assert panel.display and panel.border_title == "6 Consumers"
            text = plain(panel.content)
            assert "g1    Orders/0" in text and "sent by 10 broker" in text
            assert f"127.0.0.1:501 sendfile 8.7KiB/s 8,192 64KiB 100% {first}" in " ".join(text.split())
            table = app.query_one("#segments", RowTable)
            assert any(CONSUMER_MARK in table.row_plain(row)[1] for row in range(table.row_count))
            assert "C on a heat strip" in plain(app.query_one("#segment-notes", Static).content)
            # the panel takes its rows from the segments: the broker and its consumers stay listed
            assert app.query_one("#processes").region.height >= 9

    asyncio.run(test())


def test_at_80x24_the_consumers_panel_is_a_third_lower_tab_that_6_shows(store: Path):
    """A short screen has one slot for Send paths, Processes and Consumers: 6 shows the Consumers panel on
    screen (it was laid out below the screen's last row), and the tab line names it."""
    snapshot = sample(store)

    async def test():
        app = DashboardApp(feed=FakeFeed(), clock=lambda: T0)
        async with app.run_test(size=(80, 24)) as pilot:
            app.receive(snapshot)
            await pilot.pause()
            assert "6 Consumers" in plain(app.query_one("#lower-tabs", Static).content)
            await pilot.press("6")
            await pilot.pause()
            panel = app.query_one("#consumers", Static)
            assert panel.display and panel.region.height >= 5 and panel.region.bottom <= 24
            assert "Orders/0" in plain(panel.content)
            assert not app.query_one("#processes").display and not app.query_one("#sendpaths").display
            await pilot.press("5")
            await pilot.pause()
            assert app.query_one("#processes").display and not panel.display

    asyncio.run(test())


def test_frames_without_consumers_keep_the_panel_hidden():
    async def test():
        app = DashboardApp(feed=FakeFeed(), clock=lambda: T0)
        async with app.run_test(size=(160, 50)) as pilot:
            app.receive(frame(1))  # as recorded before consumers were read
            await pilot.pause()
            assert not app.query_one("#consumers").display
            assert "C on a heat strip" not in plain(app.query_one("#segment-notes", Static).content)

    asyncio.run(test())


def plain(renderable) -> str:
    console = Console(width=160, file=io.StringIO(), color_system=None)
    console.print(renderable)
    return console.file.getvalue()


SENDER = Path(__file__).parents[1] / "probes" / "ebpf" / "sendpath_workload.py"


def resident_after_eviction(path: Path, deadline_s: float = 20.0) -> int:
    """Drop the file's pages and return how many fincore still finds. Pages a previous send's socket buffers
    still reference cannot be dropped until the kernel lets go of them: asked again until none is left or
    the deadline passes (the test then counts the pages that did go)."""
    deadline = time.monotonic() + deadline_s
    while True:
        fadvise_out(path)
        left = fincore_pages(path)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


@pytest.fixture(scope="module")
def full_segment(tmp_path_factory) -> Path:
    """A store whose first CommitLog segment (1 MiB) is full: the file a consumer is sent."""
    root = tmp_path_factory.mktemp("sent") / "store"
    cli("store", "init", root, "--segment-size", "1m", "--cq-entries", "1000", "--index-slots", "64")
    cli("store", "produce", root, "-t", "Orders", "-n", 1100, "--size", 1000, "-f", "json")
    return root / "commitlog" / "00000000000000000000"


@pytest.mark.requires_bpf
@pytest.mark.parametrize("path_name", ["sendfile", "read+write", "mmap+write", "splice"])
def test_a_consumers_read_position_and_cold_pages_match_what_it_was_sent_and_fincore(
    path_name: str, full_segment: Path
):
    """A segment out of the page cache sent whole to one consumer by one path: its read position is the
    segment's end, and its cold pages are the pages fincore found out of the cache before (every one of
    them had to be read from disk to be sent)."""
    root = full_segment.parents[1]
    pages = full_segment.stat().st_size // os.sysconf("SC_PAGE_SIZE")
    out_before = pages - resident_after_eviction(full_segment)
    assert out_before > pages // 2
    sender = subprocess.Popen(
        [sys.executable, str(SENDER), path_name, str(full_segment)], stdout=subprocess.PIPE, text=True
    )
    try:
        word, pid, _receiver = sender.stdout.readline().split()
        assert word == "ready"
        with TraceSession(SendpathProbe([int(pid)], store=root)) as session:
            os.kill(int(pid), signal.SIGUSR1)
            assert sender.stdout.readline().split()[0] == "received"
            assert sender.wait(timeout=60) == 0
            snapshot = session.snapshot()  # the sender has exited: its counts are final
    finally:
        if sender.poll() is None:
            sender.kill()
        sender.wait(timeout=10)
    segments = StoreReader(root).read({}).segments
    comms = {row.pid: row.comm for row in snapshot.processes}
    (consumer,) = connected_consumers(snapshot.fds, segments, comms)
    size = full_segment.stat().st_size
    print(f"{path_name}: {out_before} pages out before; {consumer}")
    assert consumer.main_path == path_name and consumer.bytes_sent == size
    assert consumer.segments == ("commitlog/00000000000000000000",)
    assert consumer.read_position_bytes == size  # the first segment starts at CommitLog offset 0
    assert consumer.cold_pages == out_before


def test_a_recording_with_consumers_replays_them():
    """Recorded with the four probes running on a store holding two groups, while a process sent a segment
    by read+write and mmap+write (tests/dashboard/test_old_recordings.py says how)."""
    recording = Path(__file__).parent / "recordings" / "top-e187d72.jsonl.gz"
    result = run_mqinspect("replay", recording, columns=160)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.count("Consumers") == 3 and "slow  TopicA/0" in result.stdout
    assert "mmap+write" in result.stdout and "100% commitlog/00000000000000000000" in result.stdout


def test_without_root_the_groups_are_read_or_say_why_not():
    with store_nobody_can_read(messages=300) as root:
        cli("store", "consume", root, "-t", "T", "-g", "g", "-n", 100, "-f", "json")
        offsets = consumer_offset_path(root)
        offsets.parent.chmod(0o755)
        offsets.chmod(0o644)
        result = mqinspect_as_nobody("top", str(root), "--once", "--no-ebpf", "--format", "json")
        assert result.returncode == 0, result.stderr
        (group,) = json.loads(result.stdout)["consumers"]["groups"]
        assert (group["committed_offset"], group["lag_messages"]) == (100, 200) and group["lag_bytes"] > 0
        offsets.chmod(0o600)  # as a broker running as another user may keep it
        result = mqinspect_as_nobody("top", str(root), "--once", "--no-ebpf", "--format", "json")
        view = json.loads(result.stdout)["consumers"]
        assert view["groups"] == []
        assert view["unavailable"]["groups"].endswith(
            "(Permission denied); fix: run as root (sudo mqinspect top ...) or as the store's owner"
        )


def test_at_80_columns_the_consumer_cells_keep_their_numbers_whole():
    recording = next((Path(__file__).parent / "recordings").glob("top-e187d72.jsonl.gz"))
    result = run_mqinspect("replay", recording, columns=80)
    panel = result.stdout.split("Consumers\n", 1)[1].split("source:", 1)[0]
    header = next(line for line in panel.splitlines() if line.startswith("consumer"))
    assert header.split()[:6] == ["consumer", "path", "sent/s", "read", "at", "cold"]
    row = next(line for line in panel.splitlines() if line.startswith("127.0.0.1:"))
    assert row.split()[1:6] == ["mmap+write", "9.7MiB/s", "262,144", "0B", "100%"]
    assert max(map(len, result.stdout.splitlines())) <= 80


def _group_rows(snapshot: TopSnapshot) -> dict[tuple[str, str], object]:
    return {(row.group, row.topic): row for row in snapshot.consumers.groups}


def _open_paths() -> set[str]:
    paths = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # closed since the listing
            paths.add(os.readlink(f"/proc/self/fd/{fd}"))
    return paths


def test_a_long_running_reader_keeps_queue_files_open_and_follows_rolls_new_queues_and_deletions(
    tmp_path: Path, monkeypatch
):
    """One sampler over several intervals, as the dashboard runs it: each ConsumeQueue file is opened once
    while it stays the same file; a queue that rolls into a new file, a new topic's queue and a queue file
    deleted and written again are read as they are now (the lags equal what `store consume` reads)."""
    import mqinspect.sampling.consumers as consumers_module

    opened: list[str] = []
    real = consumers_module.PreadFile

    def counted(path: Path):
        opened.append(str(path))
        return real(path)

    monkeypatch.setattr(consumers_module, "PreadFile", counted)
    root = tmp_path / "store"
    cli("store", "init", root, "--segment-size", "64k", "--cq-entries", "100", "--index-slots", "64")
    cli("store", "produce", root, "-t", "Orders", "-n", 150, "--size", 100, "-f", "json")
    cli("store", "consume", root, "-t", "Orders", "-g", "g1", "-n", 120, "-f", "json")
    sampler = Sampler(SamplerSettings(root, (), 1.0, ebpf=False))
    sampler.open(background=False)
    try:
        for _ in range(3):
            rows = _group_rows(sampler.sample())
        assert rows[("g1", "Orders")].lag_messages == 30
        assert len(opened) == len(set(opened)) <= 2  # each file once, not two per row and interval
        # the queue rolls (100 entries per file) and a new topic's queue appears, with a group on it
        cli("store", "produce", root, "-t", "Orders", "-n", 100, "--size", 100, "-f", "json")
        cli("store", "produce", root, "-t", "Invoices", "-n", 10, "--size", 100, "-f", "json")
        cli("store", "consume", root, "-t", "Invoices", "-g", "g3", "-n", 4, "-f", "json")
        rows = _group_rows(sampler.sample())
        for (group, topic), row in rows.items():
            at = consumed_at(root, topic, row.committed_offset)
            assert row.max_offset == at["max_offset"], (group, topic)
            assert row.committed_physical_offset_bytes == at["messages"][0]["physical_offset"]
        assert rows[("g1", "Orders")].lag_messages == 130 and rows[("g3", "Invoices")].lag_messages == 6
        # a queue file deleted and written again under its name (a queue cut and rebuilt): read anew, and
        # the deleted file's descriptor closed at the interval's end
        invoices = root / "consumequeue" / "Invoices" / "0" / f"{0:020d}"
        content = invoices.read_bytes()
        invoices.unlink()
        assert f"{invoices} (deleted)" in _open_paths()
        invoices.write_bytes(content[: 5 * 20])  # 5 entries now
        rows = _group_rows(sampler.sample())
        assert rows[("g3", "Invoices")].max_offset == 5 and rows[("g3", "Invoices")].lag_messages == 1
        assert f"{invoices} (deleted)" not in _open_paths()
    finally:
        sampler.close()
    assert not any(path.startswith(str(root)) for path in _open_paths())
