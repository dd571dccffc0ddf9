"""`mqinspect trace`: bad input is refused before anything is compiled, --print-bpf needs no privileges,
no privileges is exit 3 with the fix, and a session ended by SIGTERM or Ctrl-C prints its summary, exits 0
and leaves no program of ours loaded."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import loaded_programs, mqinspect_as_nobody, programs_held_by, programs_once_attached
from typer.testing import CliRunner

from mqinspect.cli import trace
from mqinspect.cli.app import app
from mqinspect.errors import ExitStatus

REPO = Path(__file__).resolve().parents[2]
INJECTION = '1); bpf_trace_printk("owned"); (1'
runner = CliRunner()


@pytest.fixture
def no_session(monkeypatch):
    """Fails the test if a command gets as far as opening a tracing session (compiling the program)."""

    def refuse(*_args, **_kwargs):
        raise AssertionError("a session was opened")

    monkeypatch.setattr(trace, "TraceSession", refuse)


def _one_error_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("mqinspect: error: ")
    return lines[0]


def test_an_unknown_probe_is_a_usage_error():
    result = runner.invoke(app, ["trace", "nosuchprobe"])
    assert result.exit_code == ExitStatus.BAD_INPUT
    assert "nosuchprobe" in _one_error_line(result)


@pytest.mark.parametrize(
    "arguments",
    [
        ["--pid", INJECTION],
        ["--pid", "123abc"],
        ["--chunk-pages", "64); evil("],
        ["--interval", "1); evil("],
    ],
    ids=["pid", "pid-suffix", "chunk-pages", "interval"],
)
def test_c_syntax_in_an_argument_is_refused_before_any_compile(no_session, arguments):
    result = runner.invoke(app, ["trace", "faults", *arguments])
    assert result.exit_code == ExitStatus.BAD_INPUT
    _one_error_line(result)
    assert result.stdout == ""


def test_c_syntax_in_a_store_path_is_a_path_that_is_not_a_store(no_session, tmp_path: Path):
    result = runner.invoke(app, ["trace", "faults", "--store", str(tmp_path / f'x"); {INJECTION}')])
    assert result.exit_code == ExitStatus.BAD_INPUT
    assert "not a directory" in _one_error_line(result)


def test_store_on_a_directory_that_is_not_a_store_is_bad_input(no_session, tmp_path: Path):
    result = runner.invoke(app, ["trace", "faults", "--store", str(tmp_path)])
    assert result.exit_code == ExitStatus.BAD_INPUT
    assert "not a RocketMQ store" in _one_error_line(result)


@pytest.mark.parametrize("pid", ["0", "-5", str(2**22 + 1)])
def test_a_pid_that_does_not_exist_is_bad_input(no_session, pid):
    result = runner.invoke(app, ["trace", "faults", "--pid", pid])
    assert result.exit_code == ExitStatus.BAD_INPUT
    assert "--pid" in _one_error_line(result)


def test_count_and_duration_together_are_bad_input(no_session):
    result = runner.invoke(app, ["trace", "faults", "--count", "2", "--duration", "1"])
    assert result.exit_code == ExitStatus.BAD_INPUT
    assert "--count and --duration" in _one_error_line(result)


def test_print_bpf_prints_defines_and_program_without_a_session(no_session):
    result = runner.invoke(app, ["trace", "faults", "--pid", str(os.getpid()), "--print-bpf"])
    assert result.exit_code == 0, result.stderr
    assert "//   -DFILTER_TGIDS=1" in result.stdout
    assert f"// map mqi_tgids is filled with: {os.getpid()}" in result.stdout
    assert "int mqi_fault_user(struct tracepoint__exceptions__page_fault_user *args)" in result.stdout


# --- as nobody ----------------------------------------------------------------------------------------------


# Runs the CLI in-process as the caller, then says whether bcc was imported (--print-bpf must not load it).
@pytest.mark.requires_root
def test_print_bpf_works_as_nobody_and_loads_nothing():
    done = mqinspect_as_nobody("trace", "faults", "--pid", "1", "--print-bpf")
    assert done.returncode == 0, done.stderr
    assert "int mqi_filemap_flt(" in done.stdout and "-DFILTER_TGIDS=1" in done.stdout
    assert "bcc not imported" in done.stderr  # so nothing could be loaded


@pytest.mark.requires_root
def test_tracing_as_nobody_is_exit_3_with_the_fix():
    done = mqinspect_as_nobody("trace", "faults", "--pid", "1", "--count", "1")
    assert done.returncode == ExitStatus.MISSING_CAPABILITY
    (error,) = [line for line in done.stderr.splitlines() if line.startswith("mqinspect: error:")]
    assert "root" in error and "fix:" in error and "mqinspect doctor" in error


# --- sessions (BPF) -----------------------------------------------------------------------------------------


@contextlib.contextmanager
def busy_child(seconds: float = 30.0) -> Iterator[subprocess.Popen]:
    """A process that keeps faulting: it maps fresh anonymous memory and touches it, until told to stop."""
    code = (
        "import mmap, time\n"
        f"end = time.monotonic() + {seconds}\n"
        "while time.monotonic() < end:\n"
        "    m = mmap.mmap(-1, 64 * mmap.PAGESIZE)\n"
        "    for offset in range(0, len(m), mmap.PAGESIZE): m[offset] = 1\n"
        "    m.close(); time.sleep(0.01)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code])
    try:
        yield child
    finally:
        child.kill()
        child.wait()


def _trace(*arguments: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "mqinspect", "trace", "faults", *arguments],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )


@pytest.mark.requires_bpf
@pytest.mark.parametrize("ending", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_a_signal_mid_session_prints_the_summary_exits_0_and_unloads(ending):
    with busy_child() as child:
        session = _trace("--pid", str(child.pid), "--interval", "0.2", "--format", "jsonl")
        first = json.loads(session.stdout.readline())  # the first interval has ended
        held = programs_held_by(session.pid)
        session.send_signal(ending)
        rest, errors = session.communicate(timeout=30)
    assert session.returncode == 0, errors
    lines = [first, *map(json.loads, rest.splitlines())]
    assert [line["kind"] for line in lines[:-1]] == ["interval"] * (len(lines) - 1)
    summary = lines[-1]
    assert summary["kind"] == "summary" and summary["pids"] == [child.pid]
    assert summary["faults"] == sum(line["faults"] for line in lines[:-1]) > 0
    assert summary["interval_s"] == pytest.approx(sum(line["interval_s"] for line in lines[:-1]))
    for key in ("interval_s", "faults", "minor_faults", "major_faults", "fault_around_pages", "files"):
        assert key in first
    assert errors.startswith(f"Tracing page faults of pid {child.pid}, per file, every 0.2 s. Ctrl-C to end.")
    assert held and held.isdisjoint(loaded_programs())


@pytest.mark.requires_bpf
def test_a_pid_that_exits_mid_session_is_reported_and_the_session_goes_on():
    with busy_child(seconds=0.5) as child:
        session = _trace("--pid", str(child.pid), "--interval", "0.25", "--duration", "1.5")
        held = programs_once_attached(session.pid)
        output, errors = session.communicate(timeout=30)
    assert session.returncode == 0, errors
    assert f"mqinspect: pid {child.pid} exited; the session goes on" in errors
    assert output.count("interval 0.25 s") >= 4  # intervals went on after the exit
    assert "Summary: 1.50 s traced" in output and "faults" in output
    assert held.isdisjoint(loaded_programs())
