"""`mqinspect lab sendpath`. Without root: the textbook model against the reference's numbers, medians and
spread, the contradiction sentences, --paths parsing, bad input, and the table and JSON of a report whose
copies are unavailable. As root with BPF: one cold lab over every path (4 MiB each) with `strace -c` attached
to the sender around each run, held against the path model (bytes across the user/kernel boundary), the page
cache (O_DIRECT leaves residency unchanged) and strace (the same syscall counts). As nobody: the lab still
runs and says why the copies are unavailable and how to fix it."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from rich.console import Console
from sendpath_reports import PAGES, PAYLOAD, report_without_bpf
from support import AS_NOBODY, skip_or_fail, strace_calls
from typer.testing import CliRunner

from mqinspect.cli.app import app
from mqinspect.cli.lab_sendpath import parse_paths
from mqinspect.errors import BadInput, ExitStatus
from mqinspect.labs.sendpath import (
    SCHEMA,
    LabOptions,
    PathRun,
    SendpathLab,
    SendpathLabReport,
)
from mqinspect.labs.sendpath_model import (
    MODELS,
    PathEvidence,
    findings,
    median_measured,
)
from mqinspect.labs.stats import spread
from mqinspect.render.lab_sendpath import sendpath_view
from mqinspect.render.machine import to_jsonable
from store.transfer import COUNTED_SYSCALLS, SendPath

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


# ---- the model ---------------------------------------------------------------------------------------------


def test_the_model_has_the_reference_numbers_for_every_path():
    cpu = {path: model.cpu_copies_per_byte for path, model in MODELS.items()}
    assert cpu == {
        SendPath.READ_WRITE: 2,
        SendPath.MMAP_WRITE: 1,
        SendPath.SENDFILE: 0,
        SendPath.SPLICE: 0,
        SendPath.ZEROCOPY: 0,
        SendPath.DIRECT_READ_WRITE: 1,
    }
    for model in MODELS.values():
        assert model.dma_copies_per_byte == 2
        assert model.mode_switches_per_chunk == 2 * model.syscalls_per_chunk


def test_medians_are_measured_values_and_a_missing_run_makes_the_median_missing():
    result = spread([1.0, 4.0, 2.0])
    assert (result.median, result.minimum, result.maximum, result.spread_percent) == (2.0, 1.0, 4.0, 150.0)
    assert spread([0.0, 0.0]).spread_percent is None
    assert median_measured([4, 1, 3, 2]) == 2  # the lower middle: a count one run really had
    assert median_measured([1, None, 3]) is None
    assert median_measured([]) is None


def _evidence(path: SendPath, **changes) -> PathEvidence:
    values = dict(
        path=path,
        payload_bytes=PAYLOAD,
        sender_crossings_per_byte=float(MODELS[path].user_kernel_crossings_per_byte),
        receiver_copies_per_byte=1.0,
        zerocopy_fell_back_to_copy=None,
        cached_pages_before=0,
        cached_pages_after=0,
        range_pages=PAGES,
    )
    return PathEvidence(**(values | changes))


def test_a_path_that_behaves_as_its_model_says_has_no_finding():
    assert findings(_evidence(SendPath.READ_WRITE)) == ()
    assert findings(_evidence(SendPath.MMAP_WRITE, receiver_copies_per_byte=None)) == ()


def test_zero_copy_paths_are_told_that_the_loopback_receiver_copies_anyway():
    (sentence,) = findings(_evidence(SendPath.SENDFILE))
    assert "receiver copies anyway" in sentence and "sendfile" in sentence and "not 0" in sentence
    assert findings(_evidence(SendPath.SPLICE, receiver_copies_per_byte=None)) == ()  # not measured: silent


def test_msg_zerocopy_falling_back_to_a_copy_is_said():
    sentences = findings(_evidence(SendPath.ZEROCOPY, zerocopy_fell_back_to_copy=True))
    assert any("SO_EE_CODE_ZEROCOPY_COPIED" in sentence for sentence in sentences)
    assert not any(
        "SO_EE" in s for s in findings(_evidence(SendPath.ZEROCOPY, zerocopy_fell_back_to_copy=False))
    )


def test_unexpected_boundary_crossings_and_a_filled_cache_under_o_direct_are_said():
    (crossing,) = findings(_evidence(SendPath.MMAP_WRITE, sender_crossings_per_byte=2.0))
    assert "2.00 × the payload" in crossing and "expects 1" in crossing
    (filled,) = findings(_evidence(SendPath.DIRECT_READ_WRITE, cached_pages_after=PAGES))
    assert f"from 0 to {PAGES}" in filled


# ---- options -----------------------------------------------------------------------------------------------


def test_paths_are_parsed_with_plus_or_underscore_once_each_in_order():
    assert parse_paths("read+write, sendfile,read_write") == (SendPath.READ_WRITE, SendPath.SENDFILE)
    assert parse_paths("all") == tuple(SendPath)
    with pytest.raises(BadInput, match="unknown send path 'nope'"):
        parse_paths("sendfile,nope")
    with pytest.raises(BadInput):
        parse_paths(" , ")


def test_an_existing_store_is_never_evicted_and_tiny_sizes_are_refused(tmp_path: Path):
    with pytest.raises(BadInput, match="--cold"):
        LabOptions(cold=True, store_dir=tmp_path)
    with pytest.raises(BadInput, match="--bytes"):
        LabOptions(payload_bytes=1024)


def test_options_take_path_names_as_well_as_send_paths():
    assert LabOptions(paths=("sendfile", SendPath.SPLICE, "sendfile")).paths == (
        SendPath.SENDFILE,
        SendPath.SPLICE,
    )
    with pytest.raises(BadInput, match="nope"):
        LabOptions(paths=("nope",))


@pytest.mark.parametrize("arguments", [["--paths", "nope"], ["--bytes", "1k"], ["--repeat", "0"]])
def test_bad_input_is_exit_2_with_one_line(arguments):
    result = runner.invoke(app, ["lab", "sendpath", *arguments])
    assert result.exit_code == ExitStatus.BAD_INPUT
    assert result.stdout == "" and "Traceback" not in result.stderr


# ---- drawing a report whose copies are unavailable ---------------------------------------------------------


def test_without_bpf_the_copy_columns_are_unavailable_with_the_reason_and_the_fix(tmp_path: Path):
    report, gap = report_without_bpf(tmp_path)
    (result,) = report.paths
    assert result.sender_bytes_in_kernel is None and result.sender_crossings_per_byte is None
    assert result.findings == ()  # nothing measured, nothing claimed
    assert result.sender_syscalls == 16 and result.sender_mode_switches == 32
    console = Console(width=200, record=True, color_system=None)
    console.print(sendpath_view(report))
    text = console.export_text()
    assert f"copies unavailable: {gap.reason}; fix: {gap.fix}" in text
    copies_table = text.split("Copies per payload byte")[1]
    (sendfile_row,) = [line for line in copies_table.splitlines() if line.strip().startswith("sendfile")][:1]
    assert "unavailable" in sendfile_row
    document = json.loads(json.dumps(to_jsonable(report)))
    assert document["schema"] == "mqinspect.lab.sendpath/v1"
    assert document["copies_unavailable"] == {"reason": gap.reason, "fix": gap.fix}
    assert document["paths"][0]["sender_bytes_user_to_kernel"] is None
    assert document["paths"][0]["throughput_bytes_per_s"]["median"] == PAYLOAD / 0.004


# ---- as root with BPF: one cold lab, strace around each run ------------------------------------------------


STRACED = ",".join(COUNTED_SYSCALLS)
PROBE_NAMES = {"sendfile64": "sendfile"}  # the tracepoint's name -> strace's


@contextlib.contextmanager
def straced(pid: int, output: Path) -> Iterator[dict[str, int]]:
    """`strace -c` attached to `pid` for the block only; its counts fill the yielded dict afterwards."""
    tracer = subprocess.Popen(
        ["strace", "-c", "-f", "-e", f"trace={STRACED}", "-o", str(output), "-p", str(pid)],
        stderr=subprocess.DEVNULL,
    )
    counts: dict[str, int] = {}
    try:
        deadline = time.monotonic() + 30
        while _tracer_of(pid) == 0:
            assert time.monotonic() < deadline, "strace did not attach"
            time.sleep(0.01)
        yield counts
    finally:
        tracer.send_signal(signal.SIGINT)  # detach and write the summary
        tracer.wait(timeout=30)
    counts.update(strace_calls(output.read_text()))


def _tracer_of(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("TracerPid:")))


def _bpf_programs_held() -> int:
    """BPF program descriptors this process holds (other sessions on the machine do not count)."""
    held = 0
    for fd in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(OSError):
            held += os.readlink(fd) == "anon_inode:bpf-prog"
    return held


@dataclass
class ColdLab:
    report: SendpathLabReport
    straced: dict[SendPath, dict[str, int]]
    programs_held_during: int
    programs_held_after: int
    workers_exited: bool
    left_in_work_dir: list[str]


@pytest.fixture(scope="module")
def cold_lab(tmp_path_factory) -> ColdLab:
    if shutil.which("strace") is None:
        skip_or_fail("needs strace (apt-get install strace)")
    directory = tmp_path_factory.mktemp("lab")
    options = LabOptions(payload_bytes=PAYLOAD, repeat=1, cold=True, work_dir=directory)
    counted: dict[SendPath, dict[str, int]] = {}
    runs: dict[SendPath, list[PathRun]] = {}
    traces = tmp_path_factory.mktemp("strace")
    with SendpathLab(options) as lab:
        assert lab.copies is not None and lab.copies.unavailable is None, lab.copies.unavailable
        for path in options.paths:
            with straced(lab.sender.pid, traces / f"{path}.strace") as counts:
                runs[path] = [lab.run_once(path, 1)]
            counted[path] = counts
        report = lab.report(runs, {})
        held_during = _bpf_programs_held()
    workers = (lab.sender.process, lab.receiver.process)
    return ColdLab(
        report,
        counted,
        held_during,
        _bpf_programs_held(),
        all(process.poll() is not None for process in workers),
        sorted(entry.name for entry in directory.iterdir()),
    )


def _result(report: SendpathLabReport, path: SendPath):
    (result,) = (result for result in report.paths if result.path is path)
    return result


@pytest.mark.requires_bpf
@pytest.mark.parametrize(
    ("path", "in_kernel"), [(SendPath.SENDFILE, PAYLOAD), (SendPath.SPLICE, 2 * PAYLOAD)]
)
def test_sendfile_and_splice_move_nothing_through_user_space(cold_lab, path, in_kernel):
    result = _result(cold_lab.report, path)
    assert (result.sender_bytes_kernel_to_user, result.sender_bytes_user_to_kernel) == (0, 0)
    assert result.sender_bytes_in_kernel == in_kernel  # splice: file → pipe, then pipe → socket
    assert result.receiver_bytes_kernel_to_user == PAYLOAD  # but the loopback receiver copies
    (run,) = result.runs  # and the socket layer agrees (skb:skb_copy_datagram_iovec)
    assert run.receiver_copies.socket_bytes_copied_to_user == PAYLOAD
    assert any("receiver copies anyway" in sentence for sentence in result.findings)


@pytest.mark.requires_bpf
def test_read_write_moves_twice_the_payload_across_the_boundary(cold_lab):
    result = _result(cold_lab.report, SendPath.READ_WRITE)
    assert result.sender_bytes_kernel_to_user == result.sender_bytes_user_to_kernel == PAYLOAD
    assert result.sender_crossings_per_byte == 2.0 and result.findings == ()


@pytest.mark.requires_bpf
def test_mmap_write_moves_the_payload_once(cold_lab):
    result = _result(cold_lab.report, SendPath.MMAP_WRITE)
    assert (result.sender_bytes_kernel_to_user, result.sender_bytes_user_to_kernel) == (0, PAYLOAD)
    assert result.sender_bytes_in_kernel == 0 and result.sender_crossings_per_byte == 1.0


@pytest.mark.requires_bpf
def test_o_direct_leaves_the_source_residency_unchanged_while_buffered_paths_fill_it(cold_lab):
    report = cold_lab.report
    direct = _result(report, SendPath.DIRECT_READ_WRITE)
    assert direct.cached_pages_before == direct.cached_pages_after == 0  # evicted before, still evicted
    buffered = _result(report, SendPath.READ_WRITE)
    assert buffered.cached_pages_before == 0
    assert buffered.cached_pages_after > 0.9 * PAGES  # the read filled it (less only if memory was reclaimed)


@pytest.mark.requires_bpf
def test_msg_zerocopy_falls_back_to_a_copy_over_loopback_and_says_so(cold_lab):
    result = _result(cold_lab.report, SendPath.ZEROCOPY)
    assert result.zerocopy_fell_back_to_copy is True
    assert result.sender_bytes_user_to_kernel == PAYLOAD
    assert any("SO_EE_CODE_ZEROCOPY_COPIED" in sentence for sentence in result.findings)


@pytest.mark.requires_bpf
@pytest.mark.parametrize("path", list(SendPath))
def test_syscall_figures_agree_with_strace_and_the_probe_on_the_same_run(cold_lab, path):
    report, counted = cold_lab.report, cold_lab.straced
    (run,) = _result(report, path).runs
    assert dict(run.sender_syscalls) == counted[path]
    assert run.bytes_received == run.bytes_sent == PAYLOAD
    probed = {PROBE_NAMES.get(name, name): calls for name, calls in run.sender_copies.per_syscall.items()}
    traced_by_both = set(COUNTED_SYSCALLS) - {"poll"}  # poll is not a send-path syscall for the probe
    assert {n: c for n, c in probed.items() if n in traced_by_both} == {
        n: c for n, c in counted[path].items() if n in traced_by_both
    }
    assert run.receiver_copies.per_syscall["recvfrom"] == run.receiver_syscalls["recvfrom"]


@pytest.mark.requires_bpf
def test_the_lab_detaches_its_probe_stops_its_workers_and_removes_its_store(cold_lab):
    assert cold_lab.programs_held_during > 0 and cold_lab.programs_held_after == 0
    assert cold_lab.workers_exited
    assert cold_lab.left_in_work_dir == []


# ---- as nobody: it still runs ------------------------------------------------------------------------------


@pytest.mark.requires_root
def test_without_privileges_the_lab_runs_and_names_the_fix_for_the_copies():
    completed = subprocess.run(
        [*AS_NOBODY, sys.executable, "-m", "mqinspect", "lab", "sendpath", "--bytes", "1M", "--repeat", "1",
         "--paths", "sendfile,read_write", "--format", "json"],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    document = json.loads(completed.stdout)
    assert document["schema"] == SCHEMA
    gap = document["copies_unavailable"]
    assert "root" in gap["reason"] and gap["fix"]
    assert "copies unavailable:" in completed.stderr and "fix:" in completed.stderr
    for result in document["paths"]:
        assert (
            result["sender_bytes_kernel_to_user"] is None and result["receiver_bytes_kernel_to_user"] is None
        )
        assert result["throughput_bytes_per_s"]["median"] > 0 and result["sender_syscalls"] > 0
        assert result["cached_pages_after"] is not None  # cachestat needs no privilege on one's own file
