"""The dashboard of a user who may not inspect a root broker: every panel says the real reason (no BPF
privileges, maps that cannot be read, smaps of a process that locks memory), never "waiting for a broker"
and never 0. The broker is still found through its lock on the store, which anyone may query."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
from pathlib import Path

import pytest
from support import AS_NOBODY, mqinspect_as_nobody, store_holder, store_nobody_can_read, wait_for

from mqinspect.sampling import process_reader
from mqinspect.sampling.probe_set import ProbeSet
from mqinspect.sampling.process_reader import HolderScan
from mqinspect.sampling.sampler import Sampler, SamplerSettings
from mqinspect.sampling.snapshot import DASHBOARD_PROBES, ProbeState

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fakes import FakeProbe, FakeSession

ONCE = ["--once", "--format", "json", "--interval", "0.2"]
BPF = ("bpf", "perfmon")


def top_as_nobody(root: Path, capabilities: tuple[str, ...] = ()) -> dict:
    done = mqinspect_as_nobody("top", str(root), *ONCE, capabilities=capabilities)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.requires_root
def test_a_root_broker_is_found_by_its_lock_and_each_panel_says_why_it_is_unavailable():
    with store_nobody_can_read() as root:
        segments = sorted((root / "commitlog").iterdir())[:3]
        with store_holder(root, segments, locked_pages=16) as broker:
            frame = top_as_nobody(root)
    processes = {row["pid"]: row for row in frame["processes"]}
    assert processes[broker.pid]["found_by"] == "lock"
    assert processes[broker.pid]["minor_faults_per_s"] is not None  # /proc/PID/stat is anyone's to read
    for status in frame["probes"]:  # not "waiting for the broker": it is there, but BPF is not allowed
        assert status["state"] == ProbeState.UNAVAILABLE, status
        assert "CAP_BPF and CAP_PERFMON" in status["reason"] and "doctor" in status["fix"]
    for segment in frame["store"]["segments"]:
        assert segment["locked_bytes"] is None  # root sees 16 pages on three of them
        assert segment["unavailable"]["locked_bytes"].endswith("run as root or with CAP_SYS_PTRACE")


@pytest.mark.requires_root
def test_a_holder_that_nobody_may_inspect_is_the_reason_given_for_no_process():
    with store_nobody_can_read() as root:
        segments = sorted((root / "commitlog").iterdir())[:1]
        with store_holder(None, segments, locked_pages=1):  # maps the store, holds no lock
            frame = top_as_nobody(root)
    assert frame["processes"] == []
    reason = frame["unavailable"]["processes"]
    assert reason.startswith("no process to watch: cannot read /proc/PID/maps of pid")
    assert "owned by root" in reason and reason.endswith("run as root or with CAP_SYS_PTRACE, or give --pid")


@pytest.mark.requires_bpf
def test_a_user_granted_bpf_is_told_why_the_probes_cannot_attach():
    """CAP_BPF and CAP_PERFMON without root, and tracefs root's alone (the default). CAP_PERFMON lets it read
    the maps of a root holder, so the holder is found even without the lock."""
    with store_nobody_can_read() as root:
        segments = sorted((root / "commitlog").iterdir())[:1]
        with store_holder(None, segments, locked_pages=1) as holder:
            frame = top_as_nobody(root, capabilities=BPF)
    assert holder.pid in {row["pid"] for row in frame["processes"]}
    for status in frame["probes"]:
        assert status["state"] == ProbeState.UNAVAILABLE
        assert "tracefs at /sys/kernel/tracing is readable by root only" in status["reason"]
        assert "mount -o remount,gid=GROUP,mode=0750" in status["fix"]


@pytest.mark.requires_root
def test_probes_that_could_run_wait_with_the_real_reason_when_the_holders_cannot_be_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A user who may load BPF programs, beside a holder of another user whose maps it may not read: the
    probes could trace it, but cannot see it. (The scan is faked: root reads every maps.)"""
    (tmp_path / "commitlog").mkdir()
    (tmp_path / "commitlog" / "00000000000000000000").write_bytes(bytes(4096))
    hidden = subprocess.Popen([*AS_NOBODY, sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        # setpriv runs as root until it changes its user: until then the holder is not another user's
        nobody = pwd.getpwnam("nobody").pw_uid
        wait_for(lambda: Path(f"/proc/{hidden.pid}").stat().st_uid == nobody, "the holder to run as nobody")
        monkeypatch.setattr(
            process_reader, "scan_store_holders", lambda *args, **kwargs: HolderScan({}, (hidden.pid,))
        )
        probes = ProbeSet(
            (),
            tmp_path,
            every_process_when_no_pids=False,
            session_factory=FakeSession,
            probe_factory=lambda name, pids, store: FakeProbe(name),
        )
        watcher = Sampler(SamplerSettings(tmp_path, (), 0.1, ebpf=True), probes=probes)
        watcher.open(background=False)
        statuses = watcher.probes.statuses()
        snapshot = watcher.sample()
        watcher.close()
    finally:
        hidden.kill()
        hidden.wait()
    assert [status.name for status in statuses] == list(DASHBOARD_PROBES)
    for status in statuses:
        assert status.state == ProbeState.WAITING
        assert status.reason.startswith("no process this user may inspect holds the store's files; ")
        assert f"cannot read /proc/PID/maps of pid {hidden.pid} (python" in status.reason
        assert "owned by nobody" in status.reason
        assert status.fix == "run as root or with CAP_SYS_PTRACE, or give --pid"
    assert f"pid {hidden.pid} (" in snapshot.unavailable["processes"]
    assert os.getpid() not in (process.pid for process in snapshot.processes)
