"""The demo's workload as real processes: a broker that owns the store (warming each segment ahead of the
writer, retention keeping the log small) and one consumer process per send path. Checked against what the
kernel says: /proc (parentage, command lines, mlocked memory), fincore (the segment warmed ahead is
resident), ss (each consumer's own TCP connection received bytes), and that every child is gone after stop,
also when the demo itself is SIGKILLed (PR_SET_PDEATHSIG)."""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from demo_processes import alive
from rich.console import Console
from support import expire_all_but_the_last_segment

from mqinspect.demo import workload as demo_workload
from mqinspect.demo.consumer import DemoConsumer
from mqinspect.demo.settings import DemoSettings
from mqinspect.demo.workload import DemoFailed, DemoWorkload
from mqinspect.render.demo import consumers_table, workload_view
from store.config import MiB
from store.message_store import MessageStore
from store.pull_server import PullServer
from store.transfer import SendPath
from store.workload import ProduceSpec, produce

# 8 MiB segments at about 11.6 MiB/s: a segment every 0.7 s, so a few seconds roll through several.
SMALL = DemoSettings(segment_size_bytes=8 * MiB, max_segments=4, stop_grace_s=4.0)
RUN_S = 4.0


def status_field(pid: int, name: str) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no {name} in /proc/{pid}/status")


def resident_bytes(path: Path) -> int:
    """fincore's count of the file's bytes in the page cache."""
    output = subprocess.run(
        ["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return int(output.split()[0])


def received_by_pid(port: int) -> dict[int, int]:
    """bytes_received of each established connection to the broker's port, by the socket's pid (ss)."""
    output = subprocess.run(
        ["ss", "-tinpH", "state", "established", f"dport = :{port}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    received: dict[int, int] = {}
    for connection in re.split(r"\n(?=\S)", output.strip()):
        pid = re.search(r"pid=(\d+)", connection)
        count = re.search(r"bytes_received:(\d+)", connection)
        if pid and count:
            received[int(pid.group(1))] = received.get(int(pid.group(1)), 0) + int(count.group(1))
    return received


def test_broker_and_consumers_are_separate_processes_that_all_end_cleanly(tmp_path: Path):
    with DemoWorkload(SMALL, tmp_path / "demo") as workload:
        roles = workload.roles()
        broker = next(pid for pid, role in roles.items() if role == "broker")
        assert sorted(roles.values()) == ["broker", *sorted(f"consumer:{p.value}" for p in SMALL.paths)]
        for pid, role in roles.items():
            assert int(status_field(pid, "PPid")) == os.getpid()
            module = "mqinspect.demo.broker" if role == "broker" else "mqinspect.demo.consumer"
            assert module in Path(f"/proc/{pid}/cmdline").read_text().split("\0")
            comm = "demo-broker" if role == "broker" else f"demo-{role.split(':')[1]}"
            assert Path(f"/proc/{pid}/comm").read_text().strip() == comm  # what top and the dashboard show
        time.sleep(RUN_S)

        # Warm-up mlocks each segment it touched; the segment allocated ahead is wholly resident already.
        assert int(status_field(broker, "VmLck").split()[0]) * 1024 >= SMALL.segment_size_bytes
        segments = sorted((workload.store_dir / "commitlog").iterdir())
        assert resident_bytes(segments[-1]) == SMALL.segment_size_bytes

        # Each consumer has its own connection, and the kernel counted bytes arriving on it.
        received = received_by_pid(workload.broker_port)
        consumers = [pid for pid, role in roles.items() if role != "broker"]
        assert sorted(received) == sorted(consumers)
        assert all(count > 1 * MiB for count in received.values())

        outcome = workload.stop()
    assert outcome.clean_exit, outcome.children
    assert not any(alive(pid) for pid in roles)
    assert {consumer.path for consumer in outcome.consumers} == set(SMALL.paths)

    broker_summary = outcome.broker
    assert broker_summary is not None and broker_summary.pid == broker
    served = {row.path: row for row in broker_summary.served}
    for consumer in outcome.consumers:
        # What the consumer counted equals what the server sent by that path, and no more than the kernel
        # delivered to its socket earlier plus what came since: at least the kernel's earlier count, less
        # the response headers (a few dozen bytes per pull and 12 per message).
        assert consumer.error is None
        assert consumer.bytes_received == served[consumer.path].bytes_sent
        headers = 64 * consumer.pulls + 12 * consumer.messages
        assert consumer.bytes_received >= received[consumer.pid] - headers
        assert consumer.resumed_offset == 0  # a new group
        assert consumer.committed_offset == consumer.messages + consumer.skipped_messages  # committed all
    assert served[SendPath.SENDFILE].syscalls.keys() == {"sendfile"}
    assert served[SendPath.SPLICE].syscalls.keys() == {"splice"}
    assert served[SendPath.READ_WRITE].syscalls.keys() == {"pread64", "sendto"}

    # The report's tables show each process's own account.
    console = Console(width=160, record=True, file=io.StringIO())
    console.print(workload_view(outcome, SMALL.rate_msgs_per_s))
    rows = [line.split() for line in console.export_text().splitlines()]
    for consumer in outcome.consumers:
        row = next(row for row in rows if row[:2] == [consumer.path.value, str(consumer.pid)])
        assert row[3] == f"{consumer.messages:,}"  # path, pid, pulls, messages, MiB, ...
    for child in outcome.children:
        assert [child.role, str(child.pid), "0", "reported"] in rows


def test_warmup_rolls_segments_and_retention_keeps_the_log_small(tmp_path: Path):
    with DemoWorkload(SMALL, tmp_path / "demo") as workload:
        time.sleep(RUN_S)
        outcome = workload.stop()
        left = sorted(path.name for path in (workload.store_dir / "commitlog").iterdir())
    broker = outcome.broker
    assert broker is not None
    assert broker.segments_written >= 4
    warmed = {warmup.segment for warmup in broker.warmups}
    assert {warmup.pages for warmup in broker.warmups} == {SMALL.segment_size_bytes // 4096}
    assert all(warmup.locked for warmup in broker.warmups)
    assert broker.segments_deleted >= 1
    assert int(left[0]) == broker.commitlog_min_offset > 0  # the oldest went first: no hole in the log
    assert len(left) <= SMALL.max_segments + 2  # retention runs every 2 s; up to 2 more may roll meanwhile
    # Every segment was warmed before it was written (the newest may not have been seen by the broker yet).
    assert set(left) - warmed <= {left[-1]}


def test_a_given_directory_is_kept_and_a_second_run_resumes_the_groups(tmp_path: Path):
    directory = tmp_path / "kept"
    with DemoWorkload(SMALL, directory) as workload:
        time.sleep(1.0)
        first = workload.stop()
    assert first.clean_exit, first.children
    assert (directory / "store" / "commitlog").is_dir()
    assert (directory / "logs" / "broker.log").is_file()
    with DemoWorkload(SMALL, directory) as workload:
        time.sleep(1.0)
        second = workload.stop()
    assert second.clean_exit, second.children
    committed = {consumer.path: consumer.committed_offset for consumer in first.consumers}
    assert len(committed) == len(second.consumers) == len(SMALL.paths)
    for consumer in second.consumers:  # each group resumed after its commit, not from 0 again
        assert consumer.resumed_offset == committed[consumer.path] > 0
        # Every offset it moved past was pulled, or deleted by retention first: the previous run's backlog
        # has aged past fileReservedTime (1.4 s here) and goes at the first clean if the consumer, slow to
        # start on a loaded machine, has not caught up yet.
        moved = consumer.committed_offset - consumer.resumed_offset
        assert moved == consumer.messages + consumer.skipped_messages
        assert second.broker is not None
        assert consumer.skipped_messages == 0 or second.broker.segments_deleted > 0


def test_a_group_that_retention_overtook_counts_the_messages_it_lost(tmp_path: Path):
    """What a resumed demo meets on a loaded machine, provoked: the group's backlog is deleted by age before
    the consumer pulls it. The consumer moves up to the queue's new minimum and its summary says how many
    messages the group lost, and the report shows them."""
    settings = DemoSettings(segment_size_bytes=1 * MiB)
    group = f"demo-{SendPath.SENDFILE.value}"
    with MessageStore(tmp_path / "store", settings.store_config()) as store, PullServer(store) as server:
        produce(store, ProduceSpec(settings.topic, count=600, body_size_bytes=settings.body_size_bytes))
        assert store.wait_dispatched(store.commit_log.max_offset, 10)
        stored = store.get_messages(settings.topic, 0, 0, 1 << 20, 1 << 40).messages
        physical_of = {found.queue_offset: found.physical_offset for found in stored}
        end = len(physical_of)
        store.commit_consumer_offset(group, settings.topic, 0, 10)  # the previous run's commit
        new_minimum = expire_all_but_the_last_segment(store)
        lost = sum(1 for offset, physical in physical_of.items() if offset >= 10 and physical < new_minimum)
        assert 0 < lost < end - 10

        consumer = DemoConsumer(server.address[1], SendPath.SENDFILE, settings)
        consumer.run(should_stop=lambda: consumer.member.offset == end)
        summary = consumer.summary()
    assert summary.error is None
    assert (summary.resumed_offset, summary.skipped_messages, summary.committed_offset) == (10, lost, end)
    assert summary.messages == end - 10 - lost
    console = Console(width=160, record=True, file=io.StringIO())
    console.print(consumers_table((summary,)))
    assert (
        f"lost to retention (deleted before they were pulled): {group} {lost:,} msgs" in console.export_text()
    )


def test_repeated_stop_signals_still_end_each_child_cleanly(tmp_path: Path):
    """A dying demo can send several SIGTERMs (PR_SET_PDEATHSIG fires as each of its threads exits)."""
    with DemoWorkload(SMALL, tmp_path / "demo") as workload:
        time.sleep(1.0)
        for _ in range(3):
            for pid in workload.pids:
                os.kill(pid, signal.SIGTERM)
        outcome = workload.stop()
    assert outcome.clean_exit, outcome.children
    assert all(child.reported for child in outcome.children)


STOPPING_CHILD = """
import sys
from mqinspect.demo.child import StopRequest
stop = StopRequest(30.0)
print("ready", flush=True)
while not stop.sleep(0.05):
    pass
print("stopping", flush=True)
sys.stdin.readline()
"""


def ignored_signals(pid: int) -> set[int]:
    mask = int(status_field(pid, "SigIgn"), 16)
    return {signum for signum in range(1, 65) if mask & (1 << (signum - 1))}


def test_a_stopping_child_ignores_further_stop_signals_to_its_very_end():
    """Python puts back the default action of the signals it handles as it finalizes: a repeated SIGTERM then
    killed a consumer that had stopped and reported (exit -15 in 1 suite run of 3). From the first stop on,
    the kernel ignores them; here they keep coming until the child is gone."""
    child = subprocess.Popen(
        [sys.executable, "-c", STOPPING_CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout.readline().strip() == "ready"
        assert signal.SIGTERM not in ignored_signals(child.pid)  # handled, until a stop is asked for
        os.kill(child.pid, signal.SIGTERM)
        assert child.stdout.readline().strip() == "stopping"
        assert {signal.SIGTERM, signal.SIGINT} <= ignored_signals(child.pid)
        child.stdin.close()  # it ends now, while more SIGTERMs arrive
        while child.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGTERM)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.wait() == 0


def test_a_temporary_directory_is_removed(tmp_path: Path):
    with DemoWorkload(SMALL) as workload:
        directory = workload.directory
        assert (directory / "store").is_dir()
    assert not directory.exists()


def test_a_broker_that_cannot_start_is_reported_with_its_log_and_leaves_nothing(tmp_path: Path):
    directory = tmp_path / "demo"
    (directory / "store").mkdir(parents=True)
    (directory / "store" / "commitlog").write_text("not a directory")
    workload = DemoWorkload(SMALL, directory)
    with pytest.raises(DemoFailed, match=r"broker .* exited with status 1 before it was ready"):
        workload.start()
    assert not any(alive(pid) for pid in workload.pids)


def test_children_die_with_a_demo_that_is_killed(tmp_path: Path):
    parent_script = textwrap.dedent(
        f"""
        import time
        from pathlib import Path
        from mqinspect.demo.settings import DemoSettings
        from mqinspect.demo.workload import DemoWorkload
        settings = DemoSettings(segment_size_bytes={SMALL.segment_size_bytes})
        workload = DemoWorkload(settings, Path({str(tmp_path / "demo")!r}))
        workload.start()
        print(*workload.pids, flush=True)
        time.sleep(60)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", parent_script], stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(pid) for pid in parent.stdout.readline().split()]
        assert len(pids) == 1 + len(SMALL.paths) and all(alive(pid) for pid in pids)
    finally:
        parent.send_signal(signal.SIGKILL)  # no finally block runs in the demo: only the kernel can help
        parent.wait()
    deadline = time.monotonic() + SMALL.stop_grace_s + 5
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in pids if alive(pid)]


def test_a_work_directory_whose_demo_is_gone_is_removed_and_the_others_are_kept(tmp_path: Path):
    exited = [sys.executable, "-c", "import os; print(os.getpid())"]
    gone = subprocess.run(exited, capture_output=True, text=True, check=True)
    owners = {
        "dead": f"{int(gone.stdout)} 12345",  # its process exited (or the pid now names another process)
        "running": demo_workload._process_identity(os.getpid()),
        "foreign": None,  # no owner file: not known to be a demo's
    }
    for name, owner in owners.items():
        directory = tmp_path / f"{demo_workload.WORK_DIRECTORY_PREFIX}{name}"
        (directory / "store").mkdir(parents=True)
        if owner is not None:
            (directory / demo_workload.OWNER_FILE).write_text(owner)
    removed = demo_workload.remove_stale_work_directories(tmp_path)
    assert [path.name for path in removed] == [f"{demo_workload.WORK_DIRECTORY_PREFIX}dead"]
    left = sorted(path.name.removeprefix(demo_workload.WORK_DIRECTORY_PREFIX) for path in tmp_path.iterdir())
    assert left == ["foreign", "running"]
