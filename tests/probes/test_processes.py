"""probes.processes: psutil's answers (LiveProcesses) against the same questions read from /proc as a canned
tree is read (ProcTree), and the readers that take a process source: a pid reused by another process starts
its rates again, and the holder scan finds a canned tree's holders."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import pytest

from mqinspect.sampling.process_reader import (
    FIRST_INTERVAL,
    FOUND_IN_FDS,
    FOUND_IN_MAPS,
    ProcessReader,
    scan_store_holders,
)
from probes.processes import LiveProcesses, ProcTree, process_source
from probes.procfs import CLOCK_TICKS_PER_S, PROC_ROOT, ProcessGone

THIS_MACHINE = Path(__file__).parent / "procfs_samples" / "this_machine" / "self"
PID = 4242


@pytest.fixture
def sleeper():
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    yield child
    child.stdin.close()
    child.wait()


def test_process_source_is_psutil_for_the_real_proc_and_the_tree_for_any_other(tmp_path: Path):
    assert isinstance(process_source(), LiveProcesses)
    assert isinstance(process_source(PROC_ROOT), LiveProcesses)
    canned = process_source(tmp_path)
    assert isinstance(canned, ProcTree) and canned.proc_root == tmp_path


def test_psutil_and_the_proc_tree_agree_on_a_live_process(sleeper):
    live, tree = LiveProcesses(), ProcTree(PROC_ROOT)
    # psutil counts from the epoch (boot time + the start ticks), the tree from boot: the same ticks.
    assert live.started(sleeper.pid) - psutil.boot_time() == pytest.approx(
        tree.started(sleeper.pid), abs=1e-6
    )
    assert sleeper.pid in live.pids() and sleeper.pid in tree.pids()


def test_a_process_that_is_gone_raises_process_gone(sleeper):
    sleeper.stdin.close()
    sleeper.wait()
    for source in (LiveProcesses(), ProcTree(PROC_ROOT)):
        with pytest.raises(ProcessGone):
            source.started(sleeper.pid)


# --- a canned tree: one process, then another that reuses its pid


def canned_process(root: Path, *, start_ticks: int, minor_faults: int, rchar: int) -> None:
    """/proc/PID/{stat,io,status} of one process under `root`, from this machine's sample."""
    directory = root / str(PID)
    directory.mkdir(parents=True, exist_ok=True)
    fields = (THIS_MACHINE / "stat").read_text().split()
    fields[9], fields[21] = str(minor_faults), str(start_ticks)  # proc(5) fields 10 and 22
    (directory / "stat").write_text(" ".join(fields) + "\n")
    (directory / "io").write_text(
        (THIS_MACHINE / "io").read_text().replace("rchar: 721831", f"rchar: {rchar}")
    )
    shutil.copy(THIS_MACHINE / "status", directory / "status")


def test_a_pid_reused_by_another_process_starts_its_rates_again(tmp_path: Path):
    canned_process(tmp_path, start_ticks=95_656, minor_faults=1_000, rchar=10_000)
    reader = ProcessReader((PID,), proc_root=tmp_path)
    reader.baseline()
    canned_process(tmp_path, start_ticks=95_656, minor_faults=1_500, rchar=30_000)
    (view,) = reader.read(2.0, {})
    assert (view.minor_faults_per_s, view.rchar_bytes_per_s) == (250.0, 10_000.0)
    # The process exits and a new one gets its pid, with counters of its own: no rate between the two.
    canned_process(tmp_path, start_ticks=99_000, minor_faults=2_000, rchar=40_000)
    (view,) = reader.read(2.0, {})
    assert view.minor_faults_per_s is None and view.rchar_bytes_per_s is None
    assert view.unavailable["minor_faults_per_s"] == FIRST_INTERVAL
    assert view.minor_fault_rate_history == (None,)  # the other process's history is not its own
    canned_process(tmp_path, start_ticks=99_000, minor_faults=2_100, rchar=41_000)
    (view,) = reader.read(2.0, {})
    assert (view.minor_faults_per_s, view.rchar_bytes_per_s) == (50.0, 500.0)


def test_the_tree_reads_start_time_from_stat_field_22(tmp_path: Path):
    canned_process(tmp_path, start_ticks=95_656, minor_faults=0, rchar=0)
    assert ProcTree(tmp_path).started(PID) == 95_656 / CLOCK_TICKS_PER_S
    assert ProcTree(tmp_path).pids() == [PID]


def test_the_holders_of_a_canned_tree_are_found_by_maps_inode_and_by_descriptor(tmp_path: Path):
    store = Path(tempfile.mkdtemp(dir=tmp_path))
    mapped, opened = store / "00000000000000000000", store / "00000000001073741824"
    for segment in (mapped, opened):
        segment.write_bytes(bytes(4096))
    status = mapped.stat()
    device = f"{os.major(status.st_dev):02x}:{os.minor(status.st_dev):02x}"
    proc = tmp_path / "proc"
    (proc / "100").mkdir(parents=True)
    # Mapped under another name: the device and inode tell it is the segment.
    (proc / "100" / "maps").write_text(
        f"7f0000000000-7f0000001000 r--s 00000000 {device} {status.st_ino}    {store}/renamed\n"
    )
    (proc / "200" / "fd").mkdir(parents=True)
    (proc / "200" / "maps").write_text("")
    (proc / "200" / "fd" / "7").symlink_to(opened)
    (proc / "300" / "fd").mkdir(parents=True)
    (proc / "300" / "maps").write_text("")
    (proc / "300" / "fd" / "3").symlink_to("socket:[123]")
    scan = scan_store_holders([str(mapped), str(opened)], proc_root=proc)
    assert scan.holders == {100: FOUND_IN_MAPS, 200: FOUND_IN_FDS}
    assert scan.unreadable == ()
