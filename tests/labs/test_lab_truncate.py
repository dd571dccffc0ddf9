"""`mqinspect lab truncate` (issue 13 C2): each way of reading or sending a file while another process
truncates it, run for real in child processes, against independent ground truth: the sender's exit status
(a SIGBUS death is -7, whatever the sender could say), the bytes the lab's receiver counted against what the
sender's calls returned, and the file's size afterwards (the truncation happened). The comparison with the
textbook is checked on its own (pure), the table at 80 columns, a run as nobody (leases need no root for the
files' owner), and a holder that never releases, which must not hang the lab.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
from pathlib import Path

import pytest
from rich.console import Console
from support import mqinspect_as_nobody, skip_or_fail
from typer.testing import CliRunner

from mqinspect.cli.app import app
from mqinspect.cli.lab_truncate import parse_ways
from mqinspect.errors import BadInput
from mqinspect.labs import truncate as lab
from mqinspect.labs.truncate import LabSettings, TruncateLabReport, WayRun, summarize_way
from mqinspect.labs.truncate_model import MODELS, Ending, Observed, TruncateWay, finding
from mqinspect.render.lab_truncate import truncate_view
from store.lease import lease_break_time_s

runner = CliRunner()
SMALL = 4 << 20  # a 4 MiB file: a run takes a fraction of a second
KERNEL = platform.release()


# ---- the comparison with the textbook (pure) -------------------------------------------------------------


def observed(ending: Ending, **fields) -> Observed:
    defaults = dict(
        signal=None,
        errno_name=None,
        errno_text=None,
        delivered_bytes=262144.0,
        truncator_wait_s=0.001,
        truncator_blocked=False,
        lease_break_time_s=45.0,
        kernel_release="6.18.0",
    )
    return Observed(ending, **{**defaults, **fields})


def test_efault_where_the_textbook_says_sigbus_is_one_sentence_naming_both():
    seen = observed(Ending.ERRNO, errno_name="EFAULT", errno_text="Bad address")
    sentence = finding(MODELS[TruncateWay.WRITE_MAPPING], seen)
    assert sentence.startswith(
        "write from the mapping: the textbook says that the write is interrupted by SIGBUS"
    )
    assert "on kernel 6.18.0 the call failed with EFAULT (Bad address) after 262,144 bytes" in sentence
    assert "no signal was sent" in sentence and ". " not in sentence and sentence.endswith(".")


def test_agreement_and_the_lease_waits_are_judged():
    leased = MODELS[TruncateWay.WRITE_MAPPING_LEASED]
    assert finding(MODELS[TruncateWay.READ_MAPPING], observed(Ending.SIGNAL, signal="SIGBUS")) is None
    assert finding(MODELS[TruncateWay.SENDFILE], observed(Ending.SHORT_COUNT)) is None
    assert finding(leased, observed(Ending.CLEAN_STOP)) is None
    waited_out = finding(leased, observed(Ending.CLEAN_STOP, truncator_wait_s=44.0))
    assert "waited 44.0 s, about the whole lease-break-time (45 s)" in waited_out
    assert "still blocked" in finding(leased, observed(Ending.CLEAN_STOP, truncator_blocked=True))
    assert "ended by SIGBUS" in finding(leased, observed(Ending.SIGNAL, signal="SIGBUS"))
    assert finding(leased, observed(Ending.MIXED)) is None  # the runs are shown instead


def run(way: TruncateWay, number: int, ending: Ending, **fields) -> WayRun:
    defaults = dict(
        signal=None,
        errno_name=None,
        errno_text=None,
        detail="",
        delivered_bytes=1 << 20,
        sender_sent_bytes=1 << 20,
        truncator_wait_s=0.002,
        truncator_blocked=False,
        last_call_interrupted=None,
        sender_exit_status=0,
        file_size_after_bytes=4096,
        error=None,
    )
    return WayRun(way, number, ending, **{**defaults, **fields})


def test_runs_that_end_differently_are_mixed_and_said_so():
    way = TruncateWay.WRITE_MAPPING
    runs = [run(way, 1, Ending.SIGNAL, signal="SIGBUS"), run(way, 2, Ending.ERRNO, errno_name="EFAULT")]
    result = summarize_way(MODELS[way], runs, KERNEL, 45.0)
    assert result.ending is Ending.MIXED and result.agrees is None and result.contradiction is None
    assert result.verdict == "The runs ended differently (1 x signal, 1 x errno): see each run."


def test_ways_parse_like_the_other_labs_and_bad_ones_are_refused():
    assert parse_ways("all") == tuple(TruncateWay)
    assert parse_ways("sendfile, pread+write,sendfile") == (TruncateWay.SENDFILE, TruncateWay.PREAD_WRITE)
    with pytest.raises(BadInput, match="unknown way 'mmap'"):
        parse_ways("mmap")
    with pytest.raises(BadInput):
        LabSettings(file_size_bytes=100_000)


def test_a_bad_way_is_one_line_and_exit_2():
    result = runner.invoke(app, ["lab", "truncate", "--ways", "nonsense"])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"mqinspect: error: --ways: unknown way 'nonsense' (known: {', '.join(TruncateWay)})"
    ]


def report_of(ways: dict[TruncateWay, list[WayRun]]) -> TruncateLabReport:
    results = tuple(summarize_way(MODELS[way], runs, KERNEL, 45.0) for way, runs in ways.items())
    return TruncateLabReport(
        lab.SCHEMA, KERNEL, 45.0, SMALL, 4096, 262144, 1, "/tmp", "e", "d", "w", results,
        tuple(r.contradiction for r in results if r.contradiction), 0.0, 1.5,
    )  # fmt: skip


def test_the_table_fits_80_columns_and_says_blocked_and_unavailable():
    write, leased, sendfile = (
        TruncateWay.WRITE_MAPPING,
        TruncateWay.WRITE_MAPPING_LEASED,
        TruncateWay.SENDFILE,
    )
    failure = "the sender said nothing"
    report = report_of(
        {
            write: [run(write, 1, Ending.ERRNO, errno_name="EFAULT", errno_text="Bad address")],
            leased: [run(leased, 1, Ending.CLEAN_STOP, truncator_wait_s=None, truncator_blocked=True)],
            sendfile: [
                run(sendfile, 1, Ending.FAILED, error=failure, detail=failure, delivered_bytes=None,
                    truncator_wait_s=None)
            ],
        }
    )  # fmt: skip
    console = Console(width=80, record=True, color_system=None)
    console.print(truncate_view(report))
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80

    def row(label: str) -> str:
        return next(line for line in text.splitlines() if line.startswith(label + "  "))

    assert "EFAULT" in row("write from the mapping") and "SIGBUS" in row("write from the mapping")
    assert "blocked" in row("write from the mapping, leased")
    assert "unavailable" in row("sendfile")
    assert "sendfile, run 1: failed: the sender said nothing" in " ".join(text.split())
    assert "still blocked when the lab gave up on it" in " ".join(text.split())


# ---- the lab for real ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def measured() -> dict:
    """One run of every way through the CLI, in a process of its own (a SIGBUS there would show)."""
    import subprocess

    command = ["lab", "truncate", "-n", "1", "--file-size", str(SMALL), "-f", "json"]
    done = subprocess.run(
        [sys.executable, "-m", "mqinspect", *command], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def ways_of(report: dict) -> dict[str, dict]:
    return {way["way"]: way for way in report["ways"]}


def test_the_report_names_this_kernel_and_its_lease_break_time(measured):
    assert measured["schema"] == "mqinspect.lab.truncate/v1"
    assert measured["kernel_release"] == KERNEL
    assert measured["lease_break_time_s"] == lease_break_time_s()
    assert [way["way"] for way in measured["ways"]] == list(TruncateWay)


def test_every_run_truncated_the_file_and_delivered_what_the_sender_counted(measured):
    for way in measured["ways"]:
        (only,) = way["runs"]
        assert only["error"] is None, (way["way"], only)
        assert only["file_size_after_bytes"] == 4096, way["way"]
        assert only["delivered_bytes"] > 0, way["way"]
        if only["sender_sent_bytes"] is not None:  # the sender lived to say how much its calls sent
            assert only["delivered_bytes"] == only["sender_sent_bytes"], way["way"]


def test_only_a_user_space_read_of_the_mapping_dies_of_sigbus(measured):
    ways = ways_of(measured)
    killed = ways["read_mapping"]["runs"][0]
    assert (
        killed["ending"] == "signal" and killed["signal"] == "SIGBUS" and killed["sender_exit_status"] == -7
    )
    assert killed["sender_sent_bytes"] is None
    for name in ("write_mapping", "send_mapping"):
        (only,) = ways[name]["runs"]
        assert (only["ending"], only["errno_name"], only["sender_exit_status"]) == ("errno", "EFAULT", 0)
        assert ways[name]["agrees"] is False and ways[name]["contradiction"] in measured["contradictions"]
        assert (
            "EFAULT (Bad address)" in ways[name]["contradiction"] and "SIGBUS" in ways[name]["contradiction"]
        )
    for name in ("sendfile", "splice", "pread_write"):
        assert ways[name]["runs"][0]["ending"] == "short_count" and ways[name]["agrees"] is True


def test_under_a_read_lease_the_holder_stops_cleanly_and_the_truncation_waits_only_for_it(measured):
    for name in ("read_mapping_leased", "write_mapping_leased"):
        way = ways_of(measured)[name]
        (only,) = way["runs"]
        assert only["ending"] == "clean_stop" and only["sender_exit_status"] == 0, only
        assert not only["truncator_blocked"] and only["truncator_wait_s"] < lease_break_time_s() / 2
        assert way["agrees"] is True and "not lease-break-time" in way["verdict"]


def test_without_root_the_owner_of_the_files_takes_the_lease_and_bcc_is_never_loaded():
    if os.geteuid() != 0:
        skip_or_fail("needs root to run a child as nobody")
    with tempfile.TemporaryDirectory(prefix="mqinspect-truncate-nobody-") as name:
        os.chmod(name, 0o777)
        done = mqinspect_as_nobody(
            "lab", "truncate", "-n", "1", "--ways", "write_mapping_leased,read_mapping", "--file-size",
            str(SMALL), "--dir", name, "-f", "json",
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().endswith("bcc not imported")
    ways = ways_of(json.loads(done.stdout))
    assert ways["write_mapping_leased"]["runs"][0]["ending"] == "clean_stop"
    assert ways["read_mapping"]["runs"][0]["signal"] == "SIGBUS"


FAKE_HOLDER = """
import fcntl, os, signal, socket, sys, time
sys.path.insert(0, {repo!r})
from mqinspect.labs import truncate_worker
from store.lease import F_SETLEASE
if sys.argv[1] != "sender":
    sys.exit(truncate_worker.main(sys.argv[1:]))
_role, _way, path, port = sys.argv[1:5]
sock = socket.create_connection(("127.0.0.1", int(port)))
fd = os.open(path, os.O_RDONLY)
fcntl.fcntl(fd, F_SETLEASE, fcntl.F_RDLCK)  # the lease-break signal (SIGIO) is ignored: it never lets go
signal.signal(signal.SIGIO, signal.SIG_IGN)
truncate_worker.say(event="ready", pid=os.getpid())
sys.stdin.readline()
sock.sendall(b"x" * 4096)
truncate_worker.say(event="sending")
time.sleep(1.5)
"""


def test_a_holder_that_never_releases_is_reported_blocked_and_does_not_hang_the_lab(tmp_path, monkeypatch):
    fake = tmp_path / "holder.py"
    fake.write_text(FAKE_HOLDER.format(repo=str(Path(lab.__file__).resolve().parents[2])))
    monkeypatch.setattr(lab, "WORKER", fake)
    settings = LabSettings(
        ways=(TruncateWay.WRITE_MAPPING_LEASED,),
        file_size_bytes=SMALL,
        truncator_timeout_s=1.0,
        max_send_s=1.0,
    )
    with lab.Truncator() as truncator:
        result = lab.run_way(TruncateWay.WRITE_MAPPING_LEASED, 1, settings, tmp_path, truncator)
    assert result.truncator_blocked and result.truncator_wait_s is None
    assert result.ending is Ending.FAILED and "without saying how" in result.error
    assert result.delivered_bytes == 4096
    assert result.file_size_after_bytes == SMALL  # the truncation never happened: the holder kept its lease
