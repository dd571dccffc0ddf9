"""`mqinspect demo` as a user runs it, without a terminal: the final report (JSON), a SIGTERM in the middle
(children stopped, temporary directory removed, exit 130), and bad input (exit 2)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from demo_processes import alive

from store.transfer import SendPath

REPO = Path(__file__).resolve().parents[2]
MQINSPECT = REPO / ".venv" / "bin" / "mqinspect"
DEMO_PATHS = {SendPath.READ_WRITE, SendPath.MMAP_WRITE, SendPath.SENDFILE, SendPath.SPLICE}


def demo(*arguments: str, **options) -> subprocess.Popen:
    return subprocess.Popen(
        [str(MQINSPECT), "demo", *arguments],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "NO_COLOR": "1"},
        **options,
    )


def announced_pids(stderr_line: str) -> list[int]:
    """The pids the demo names on stderr when its processes are up."""
    return [
        int(pid)
        for pid in re.findall(r"(?:broker pid|read_write|mmap_write|sendfile|splice) (\d+)", stderr_line)
    ]


def test_a_sigterm_stops_the_children_and_removes_the_temporary_directory():
    process = demo("--no-ui", "--duration", "60")
    line = process.stderr.readline()
    while "broker pid" not in line:
        assert line, "the demo ended before its processes were up"
        line = process.stderr.readline()
    pids = announced_pids(line)
    directory = Path(re.search(r"store (\S+)/store ", line).group(1))
    assert len(pids) == 5 and all(alive(pid) for pid in pids) and directory.is_dir()
    time.sleep(1.0)
    process.send_signal(signal.SIGTERM)
    _out, err = process.communicate(timeout=30)
    assert process.returncode == 130, err
    assert f"removed {directory}" in err
    assert not [pid for pid in pids if alive(pid)]
    assert not directory.exists()


def test_a_directory_that_is_not_a_demo_is_refused(tmp_path: Path):
    (tmp_path / "precious.txt").write_text("keep me")
    process = demo("--no-ui", "--dir", str(tmp_path))
    _out, err = process.communicate(timeout=30)
    assert process.returncode == 2
    assert "not empty and holds no demo store" in err and err.count("\n") == 1
    assert (tmp_path / "precious.txt").read_text() == "keep me"


@pytest.mark.requires_root
@pytest.mark.requires_bpf
def test_without_a_terminal_it_runs_for_the_duration_and_reports_live_view_and_labs():
    process = demo("--duration", "5", "--format", "json")  # stdin and stdout are pipes: no dashboard
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    report = json.loads(out)  # stdout is the report alone; progress went to stderr
    assert "running the workload for 5 s" in err and "removed " in err

    workload = report["workload"]
    assert all(child["exit_code"] == 0 and child["reported"] for child in workload["children"])
    assert {consumer["path"] for consumer in workload["consumers"]} == DEMO_PATHS
    assert all(consumer["bytes_received"] > 0 for consumer in workload["consumers"])

    live = report["live"]["data"]
    assert any(segment["name"].startswith("commitlog/") for segment in live["store"]["segments"])
    broker = next(row for row in live["sendpaths"]["processes"] if row["comm"] == "demo-broker")
    assert broker["pid"] == workload["broker"]["pid"]
    path_bytes = [broker[f"{path}_bytes"] for path in ("read_write", "mmap_write", "sendfile", "splice")]
    assert sum(count > 0 for count in path_bytes) >= 2
    assert broker["other_socket_write_bytes"] > 0  # the pull server's protocol headers: no send path
    assert (
        broker["bytes_to_sockets"]
        == sum(path_bytes) + broker["other_socket_write_bytes"] + broker["unresolved_socket_write_bytes"]
    )

    warmup, sendpath = (section["data"] for section in report["labs"])
    assert [mode["mode"] for mode in warmup["modes"]] == ["none", "rocketmq"]
    assert {path["path"] for path in sendpath["paths"]} == DEMO_PATHS
