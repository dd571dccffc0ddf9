"""`mqinspect trace`: bad input is refused before anything is compiled, --print-bpf of every probe needs no
privileges, no privileges is exit 3 with the fix; a session ends like perf stat and strace: with its last
traced process (unless --follow or --store), or on SIGTERM or Ctrl-C with its summary and exit 130, leaving no
program of ours loaded; one interval is not printed twice, and a lasting warning is said once."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from rich.console import Console
from support import loaded_programs, mqinspect_as_nobody, one_error_line, programs_held_by
from typer.testing import CliRunner

from mqinspect.cli import trace
from mqinspect.cli.app import app
from mqinspect.errors import ExitStatus
from mqinspect.render import trace_cache, trace_io
from mqinspect.render.trace import VIEWS
from mqinspect.render.words import counted, more
from probes.ebpf.registry import PROBES
from probes.ebpf.session import ENDED_BY_COUNT
from probes.ebpf.writeback import WritebackSnapshot

REPO = Path(__file__).resolve().parents[3]
PROBE_NAMES = [entry.name for entry in PROBES]
INJECTION = '1); bpf_trace_printk("owned"); (1'
runner = CliRunner()


def test_an_unknown_probe_is_a_usage_error():
    result = runner.invoke(app, ["trace", "nosuchprobe"])
    assert result.exit_code == ExitStatus.BAD_INPUT
    assert "nosuchprobe" in one_error_line(result)


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
    one_error_line(result)
    assert result.stdout == ""


def test_c_syntax_in_a_store_path_is_a_path_that_is_not_a_store(no_session, tmp_path: Path):
    result = runner.invoke(app, ["trace", "faults", "--store", str(tmp_path / f'x"); {INJECTION}')])
    assert result.exit_code == ExitStatus.BAD_INPUT
    assert "does not exist" in one_error_line(result)


def test_store_on_a_directory_that_is_not_a_store_is_bad_input(no_session, tmp_path: Path):
    result = runner.invoke(app, ["trace", "faults", "--store", str(tmp_path)])
    assert result.exit_code == ExitStatus.BAD_INPUT
    assert "not a RocketMQ store" in one_error_line(result)


@pytest.mark.parametrize("pid", ["0", "-5", str(2**22 + 1)])
@pytest.mark.parametrize("probe", PROBE_NAMES)
def test_a_pid_that_does_not_exist_is_bad_input(no_session, probe, pid):
    result = runner.invoke(app, ["trace", probe, "--pid", pid])
    assert result.exit_code == ExitStatus.BAD_INPUT
    assert "--pid" in one_error_line(result)


def test_count_and_duration_together_are_bad_input(no_session):
    result = runner.invoke(app, ["trace", "faults", "--count", "2", "--duration", "1"])
    assert result.exit_code == ExitStatus.BAD_INPUT
    assert "--count and --duration" in one_error_line(result)


@pytest.mark.parametrize("entry", PROBES, ids=PROBE_NAMES)
def test_print_bpf_prints_defines_and_program_without_a_session(no_session, entry):
    result = runner.invoke(app, ["trace", entry.name, "--pid", str(os.getpid()), "--print-bpf"])
    assert result.exit_code == 0, result.stderr
    assert "//   -DFILTER_TGIDS=1" in result.stdout
    assert f"// map mqi_tgids is filled with: {os.getpid()}" in result.stdout
    for attachment in entry.probe_class().program.attachments:
        assert f"//   {attachment.tracepoint} -> {attachment.function}" in result.stdout
        assert f"int {attachment.function}(" in result.stdout


# --- as nobody ----------------------------------------------------------------------------------------------


# Runs the CLI in-process as the caller, then says whether bcc was imported (--print-bpf must not load it).
@pytest.mark.requires_root
@pytest.mark.parametrize("entry", PROBES, ids=PROBE_NAMES)
def test_print_bpf_works_as_nobody_and_loads_nothing(entry):
    done = mqinspect_as_nobody("trace", entry.name, "--pid", "1", "--print-bpf")
    assert done.returncode == 0, done.stderr
    (first, *_rest) = entry.probe_class().program.attachments
    assert f"int {first.function}(" in done.stdout and "//   -DFILTER_TGIDS=1" in done.stdout
    assert "// map mqi_tgids is filled with: 1" in done.stdout
    # tracefs is root's: an optional tracepoint counts as present, as a privileged run on this kernel has it
    assert all(flag.endswith("=1") for flag in re.findall(r"-DHAVE_\w+=\d+", done.stdout))
    assert "bcc not imported" in done.stderr  # so nothing could be loaded


@pytest.mark.requires_root
@pytest.mark.parametrize("probe", PROBE_NAMES)
def test_tracing_as_nobody_is_exit_3_with_the_fix(probe):
    done = mqinspect_as_nobody("trace", probe, "--pid", "1", "--count", "1")
    assert done.returncode == ExitStatus.MISSING_CAPABILITY
    (error,) = [line for line in done.stderr.splitlines() if line.startswith("mqinspect: error:")]
    assert "root" in error and "fix:" in error and "mqinspect doctor" in error


@pytest.mark.requires_root
def test_tracing_with_bpf_capabilities_but_tracefs_roots_alone_is_exit_3_with_the_fix():
    done = mqinspect_as_nobody("trace", "faults", "--count", "1", capabilities=("bpf", "perfmon"))
    assert done.returncode == ExitStatus.MISSING_CAPABILITY, done.stderr
    (error,) = [line for line in done.stderr.splitlines() if line.startswith("mqinspect: error:")]
    assert "tracefs at /sys/kernel/tracing is readable by root only" in error
    assert "sudo mount -o remount,gid=GROUP,mode=0750 /sys/kernel/tracing" in error


# --- sessions (BPF) -----------------------------------------------------------------------------------------


@contextlib.contextmanager
def busy_child(seconds: float = 30.0, *, keep_mapping: bool = False) -> Iterator[subprocess.Popen]:
    """A process that keeps faulting: it maps fresh shared anonymous memory and touches it, until told to
    stop. With `keep_mapping`, one mapping that stays (its pages dropped with MADV_DONTNEED and touched
    again), so that /proc/PID/maps always places its faults on the file behind it (/dev/zero)."""
    code = (
        "import mmap, time\n"
        f"end = time.monotonic() + {seconds}\n"
        "m = mmap.mmap(-1, 64 * mmap.PAGESIZE)\n"
        "while time.monotonic() < end:\n"
        "    for offset in range(0, len(m), mmap.PAGESIZE): m[offset] = 1\n"
        f"    m.madvise(mmap.MADV_DONTNEED) if {keep_mapping} else m.close()\n"
        f"    m = m if {keep_mapping} else mmap.mmap(-1, 64 * mmap.PAGESIZE)\n"
        "    time.sleep(0.01)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code])
    try:
        yield child
    finally:
        child.kill()
        child.wait()


@contextlib.contextmanager
def child_until_told() -> Iterator[subprocess.Popen]:
    """A process that keeps faulting until its stdin is closed, then exits."""
    code = (
        "import mmap, select, sys, time\n"
        "while not select.select([sys.stdin], [], [], 0)[0]:\n"
        "    m = mmap.mmap(-1, 64 * mmap.PAGESIZE)\n"
        "    for offset in range(0, len(m), mmap.PAGESIZE): m[offset] = 1\n"
        "    m.close(); time.sleep(0.01)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE)
    try:
        yield child
    finally:
        child.kill()
        child.wait()


def _exit_after_first_interval(child: subprocess.Popen, session: subprocess.Popen) -> str:
    """Let the first interval of `session` end with the child alive, then have the child exit."""
    first = session.stdout.readline()
    child.stdin.close()
    child.wait(10)
    return first


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
def test_a_signal_mid_session_prints_the_summary_exits_130_and_unloads(ending):
    with busy_child() as child:
        session = _trace("--pid", str(child.pid), "--interval", "0.2", "--format", "jsonl")
        first = json.loads(session.stdout.readline())  # the first interval has ended
        held = programs_held_by(session.pid)
        session.send_signal(ending)
        rest, errors = session.communicate(timeout=30)
    assert session.returncode == ExitStatus.INTERRUPTED, errors
    lines = [first, *map(json.loads, rest.splitlines())]
    assert [line["kind"] for line in lines[:-1]] == ["interval"] * (len(lines) - 1)
    summary = lines[-1]
    assert summary["kind"] == "summary" and summary["pids"] == [child.pid]
    assert summary["faults"] == sum(line["faults"] for line in lines[:-1]) > 0
    assert summary["interval_s"] == pytest.approx(sum(line["interval_s"] for line in lines[:-1]))
    for key in ("interval_s", "faults", "minor_faults", "major_faults", "fault_around_pages", "files"):
        assert key in first
    assert errors.startswith(
        f"Tracing page faults of pid {child.pid}, per file, every 0.2 s, until it exits. Ctrl-C to end early."
    )
    assert held and held.isdisjoint(loaded_programs())


@pytest.mark.requires_bpf
def test_the_session_ends_with_its_only_process_like_strace_p():
    with child_until_told() as child:
        session = _trace("--pid", str(child.pid), "--interval", "0.25", "--format", "jsonl")
        first = _exit_after_first_interval(child, session)
        held = programs_held_by(session.pid)
        rest, errors = session.communicate(timeout=30)  # it ends by itself
    assert session.returncode == ExitStatus.OK, errors
    assert f"mqinspect: pid {child.pid} exited; no traced process is left, so the session ends" in errors
    lines = [json.loads(first), *map(json.loads, rest.splitlines())]
    assert lines[0]["faults"] > 0 and lines[-2]["exited_pids"] == [child.pid]
    assert [line["kind"] for line in lines] == ["interval"] * (len(lines) - 1) + ["summary"]
    assert held and held.isdisjoint(loaded_programs())


@pytest.fixture
def store_root(tmp_path: Path) -> Path:
    root = tmp_path / "store"
    assert runner.invoke(app, ["store", "init", str(root), "--segment-size", "64k"]).exit_code == 0
    return root


@pytest.mark.requires_bpf
@pytest.mark.parametrize("keeper", ["--follow", "--store"])
def test_follow_and_store_keep_the_session_going_after_its_processes_exit(keeper, store_root: Path):
    keeping = ["--follow"] if keeper == "--follow" else ["--store", str(store_root)]
    with child_until_told() as child:
        session = _trace(
            "--pid", str(child.pid), *keeping, "--interval", "0.25", "--duration", "2", "--format", "jsonl"
        )
        first = _exit_after_first_interval(child, session)
        held = programs_held_by(session.pid)
        rest, errors = session.communicate(timeout=30)
    assert session.returncode == ExitStatus.OK, errors
    assert f"mqinspect: pid {child.pid} exited; the session goes on ({keeper}); Ctrl-C to end" in errors
    *intervals, summary = [json.loads(first), *map(json.loads, rest.splitlines())]
    exited_in = next(n for n, line in enumerate(intervals) if line["exited_pids"] == [child.pid])
    assert exited_in < len(intervals) - 1  # intervals went on after the exit...
    assert summary["kind"] == "summary" and summary["interval_s"] == pytest.approx(
        2.0, abs=0.05
    )  # to the end
    assert held and held.isdisjoint(loaded_programs())


@pytest.mark.requires_bpf
@pytest.mark.parametrize("keep_mapping", [False, True], ids=["fresh_mappings", "a_mapping_that_stays"])
def test_one_interval_is_printed_once_and_jsonl_still_ends_with_its_summary(keep_mapping: bool):
    with busy_child(keep_mapping=keep_mapping) as child:
        table = _trace("--pid", str(child.pid), "--interval", "0.2", "--count", "1")
        jsonl = _trace("--pid", str(child.pid), "--interval", "0.2", "--count", "1", "--format", "jsonl")
        tables, table_errors = table.communicate(timeout=30)
        lines, _jsonl_errors = jsonl.communicate(timeout=30)
    assert table.returncode == ExitStatus.OK, table_errors
    # The interval as measured: 0.20 s asked for, 0.21 s or more when the session's thread runs late.
    assert len(re.findall(r"\binterval \d+\.\d\d s\b", tables)) == 1 and "Summary" not in tables
    # The block's headline, once; faults placed on a file add a table with a faults column, which a fresh
    # mapping's faults get too when /proc/PID/maps is read before the child unmaps it.
    assert sum(line.startswith("faults ") for line in tables.splitlines()) == 1
    assert "/dev/zero" in tables or not keep_mapping
    assert [json.loads(line)["kind"] for line in lines.splitlines()] == ["interval", "summary"]


# --- a session's stderr notes, with a fake session ------------------------------------------------


def _writeback_snapshot(unsized_folios: int) -> WritebackSnapshot:
    return WritebackSnapshot(
        kind="interval",
        interval_s=1.0,
        end_time_unix_s=0.0,
        pids=(),
        store=None,
        dirtied_pages=unsized_folios,
        dirtied_folios=unsized_folios,
        unsized_folios=unsized_folios,
        written_pages=0,
        written_pages_all_files=0,
        flusher_written_pages=0,
        vmstat_dirtied_pages=None,
        vmstat_written_pages=None,
        proc_dirtied_pages=None,
        dirty_state=None,
        throttled=(),
        processes=(),
        files=(),
        flusher=(),
        lost_records=0,
    )


class ScriptedSession:
    """Stands for TraceSession: yields the given snapshots as its intervals, then ends by count."""

    def __init__(self, snapshots):
        self.snapshots = snapshots
        self.summary = snapshots[-1]
        self.ended_by = None

    def __call__(self, probe):
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def intervals(self, interval_s, **kwargs):
        yield from self.snapshots
        self.ended_by = ENDED_BY_COUNT


def test_a_warning_that_lasts_is_said_once_and_again_when_it_comes_back(monkeypatch, capsys):
    """`trace writeback` said "N dirtied folios were cached before the session" every interval."""
    unsized = [18, 12, 1, 0, 7]
    monkeypatch.setattr(trace, "TraceSession", ScriptedSession([_writeback_snapshot(n) for n in unsized]))
    watch = SimpleNamespace(pids=(), running=lambda: (), all_ended=lambda: False)
    probe = SimpleNamespace(processes=watch, store=None, subject=lambda: "writeback of every process")
    options = trace.SessionOptions(1.0, 5, None, "table", False)
    status = trace.run_trace(probe, options, VIEWS["writeback"])
    said = [line for line in capsys.readouterr().err.splitlines() if "dirtied folios" in line]
    assert [line.split()[1] for line in said] == ["18", "7"]  # once, and again after an interval without it
    assert status == ExitStatus.OK


def test_counted_nouns_have_one_helper_and_say_processes():
    assert more(5, "process") == "5 more processes" and more(1, "process") == "1 more process"
    assert [counted(n, noun) for n, noun in ((3, "entry"), (2, "key"), (1, "file"), (0, "hit"))] == [
        "3 entries",
        "2 keys",
        "1 file",
        "0 hits",
    ]
    assert trace_cache._more(5, "process").plain == "… 5 more processes"
    table = trace_io._table(("calls",), "comm")
    trace_io._hidden_row(table, 5, "process")
    rendered = io.StringIO()
    Console(file=rendered, width=80).print(table)
    assert "… 5 more processes" in rendered.getvalue()


# --- the stream forms: bcc's positional INTERVAL COUNT, CSV, `-- COMMAND` (perf stat, strace) --------------


@pytest.fixture
def session_asked(monkeypatch) -> dict:
    """What run_trace was asked for (its options, and the started command's words), without a session."""
    asked: dict = {}

    def record(probe, options, view, workload=None):
        asked.update(options=options, argv=workload.argv if workload else None, pids=probe.pids)
        return ExitStatus.OK

    monkeypatch.setattr(trace, "run_trace", record)
    return asked


def test_positional_interval_and_count_are_the_options(session_asked):
    result = runner.invoke(app, ["trace", "faults", "0.5", "3"])
    assert result.exit_code == ExitStatus.OK, result.stderr
    assert (session_asked["options"].interval_s, session_asked["options"].count) == (0.5, 3)


@pytest.mark.parametrize(
    "arguments", [["0.5", "--interval", "1"], ["0.5", "3", "-c", "4"]], ids=["interval", "count"]
)
def test_positional_and_option_together_are_a_usage_error(no_session, arguments):
    result = runner.invoke(app, ["trace", "faults", *arguments])
    assert result.exit_code == ExitStatus.BAD_INPUT
    assert "give one of them" in one_error_line(result)


@pytest.mark.parametrize(
    "arguments, says",
    [
        (["--", "no-such-command-i15"], "no such command"),
        (["--print-bpf", "--", "true"], "--print-bpf starts nothing"),
        (["--follow", "--", "true"], "--follow goes on"),
        (["-c", "1", "-d", "1", "--", "true"], "--count and --duration"),  # and nothing said of the command
    ],
    ids=["unknown-command", "print-bpf", "follow", "count-and-duration"],
)
def test_a_command_that_cannot_end_the_session_is_bad_input(no_session, arguments, says):
    result = runner.invoke(app, ["trace", "faults", *arguments])
    assert result.exit_code == ExitStatus.BAD_INPUT
    assert says in one_error_line(result)


def test_the_words_after_dashes_are_the_command_s_own_even_debug(session_asked):
    result = runner.invoke(app, ["trace", "faults", "0.2", "--", "true", "--debug", "-J", "1"])
    assert result.exit_code == ExitStatus.OK, result.stderr
    assert session_asked["argv"] == ["true", "--debug", "-J", "1"]
    assert session_asked["options"].interval_s == 0.2 and len(session_asked["pids"]) == 1


def test_help_shows_the_positional_form_and_the_command():
    usage = " ".join(runner.invoke(app, ["trace", "faults", "--help"], env={"COLUMNS": "160"}).stdout.split())
    assert "[INTERVAL] [COUNT] [-- COMMAND [ARGS]...]" in usage
    assert "exit status is the command's" in usage


def test_csv_is_a_header_and_one_row_per_interval_then_the_summary(monkeypatch, capsys):
    snapshots = [_writeback_snapshot(n) for n in (3, 5)]
    session = ScriptedSession(snapshots)
    session.summary = dataclasses.replace(snapshots[-1], kind="summary", interval_s=2.0, dirtied_pages=8)
    monkeypatch.setattr(trace, "TraceSession", session)
    watch = SimpleNamespace(pids=(), running=lambda: (), all_ended=lambda: False)
    probe = SimpleNamespace(processes=watch, store=None, subject=lambda: "writeback of every process")
    options = trace.SessionOptions(1.0, 2, None, "csv", False)
    assert trace.run_trace(probe, options, VIEWS["writeback"]) == ExitStatus.OK
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(row["kind"], row["dirtied_pages"], row["interval_s"]) for row in rows] == [
        ("interval", "3", "1.0"),
        ("interval", "5", "1.0"),
        ("summary", "8", "2.0"),
    ]
    assert "processes" not in rows[0] and rows[0]["vmstat_dirtied_pages"] == ""  # not measured: empty


FAULTING_COMMAND = (
    "import mmap, os, sys\n"
    "print(os.getpid(), flush=True)\n"
    "m = mmap.mmap(-1, 256 * mmap.PAGESIZE)\n"
    "for offset in range(0, len(m), mmap.PAGESIZE): m[offset] = 1\n"
    "sys.exit(3)\n"
)


@pytest.mark.requires_bpf
def test_a_command_after_dashes_is_traced_from_its_start_and_ends_the_session_with_its_status():
    session = _trace("0.2", "--format", "jsonl", "--", sys.executable, "-c", FAULTING_COMMAND)
    out, errors = session.communicate(timeout=60)
    assert session.returncode == 3, errors  # the command's status, as perf stat and time give it
    lines = [json.loads(line) for line in out.splitlines()]  # stdout is the trace alone: all JSON
    pid = int(re.search(r"^(\d+)$", errors, re.M).group(1))  # the command's stdout went to stderr
    *intervals, summary = lines
    assert summary["kind"] == "summary" and summary["pids"] == [pid]
    assert intervals[-1]["exited_pids"] == [pid]
    assert summary["faults"] >= 256  # its own page touches, at least
    # From its first instruction: the probe's count is the kernel's own for the process (/proc/PID/stat),
    # less the few faults the forked child takes before it waits for the probe (a probe attached after the
    # exec would miss the loader's and the interpreter's start-up: thousands).
    kernel = summary["proc_minor_faults"] + summary["proc_major_faults"]
    assert 0 <= kernel - summary["faults"] <= max(10, kernel // 100), (summary["faults"], kernel)
    assert f"(pid {pid}) exited; the session ends with it" in errors
    assert "with the processes it starts, until" in errors.splitlines()[0]


# A child that faults on 2,000 pages of its own and then says, on the session's stderr, its pid and its faults
# by the kernel's own count (getrusage: every fault of its life, from its fork).
FAULTING_CHILD = (
    "import json, mmap, os, resource\n"
    "m = mmap.mmap(-1, 2000 * mmap.PAGESIZE)\n"
    "for offset in range(0, len(m), mmap.PAGESIZE): m[offset] = 1\n"
    "usage = resource.getrusage(resource.RUSAGE_SELF)\n"
    "print(json.dumps({'child': os.getpid(), 'faults': usage.ru_minflt + usage.ru_majflt}), flush=True)\n"
)


@pytest.mark.requires_bpf
def test_the_processes_a_command_starts_are_followed_and_their_faults_counted():
    # `; true`: the shell forks the child and waits for it, instead of exec'ing it in its own place
    script = f'{sys.executable} -c "$0"; true'
    session = _trace("0.2", "--format", "jsonl", "--", "sh", "-c", script, FAULTING_CHILD)
    out, errors = session.communicate(timeout=60)
    assert session.returncode == 0, errors
    said = json.loads(re.search(r"^(\{.*\})$", errors, re.M).group(1))
    *_intervals, summary = (json.loads(line) for line in out.splitlines())
    rows = {row["pid"]: row for row in summary["processes"]}
    assert said["child"] in rows, sorted(rows)  # the shell's child is traced
    child = rows[said["child"]]
    # counted from its fork: the kernel's own count, less nothing, plus the few faults of its exit after
    # getrusage (printing, the interpreter's teardown until the kernel takes it out of the traced set)
    assert 2000 <= said["faults"] <= child["faults"] <= said["faults"] + max(50, said["faults"] // 20)
    assert summary["faults"] >= child["faults"] + 1  # the shell's own faults too
    shell = summary["pids"][0]
    assert said["child"] in summary["followed_pids"] and shell not in summary["followed_pids"]
    assert "with the processes it starts, until" in errors.splitlines()[0]


@pytest.mark.requires_bpf
def test_a_session_that_ends_first_stops_its_command_with_sigterm():
    session = _trace("0.2", "1", "--format", "csv", "--", "sleep", "60")
    out, errors = session.communicate(timeout=60)
    assert session.returncode == 128 + signal.SIGTERM, errors
    assert "sent it SIGTERM" in errors
    assert [row["kind"] for row in csv.DictReader(io.StringIO(out))] == ["interval", "summary"]
    pid = re.search(r"Tracing page faults of pid (\d+)", errors).group(1)
    assert not Path(f"/proc/{pid}").exists()  # ended and reaped: no orphan, no zombie


def test_a_table_stream_is_one_line_per_interval_with_units_then_the_summary_block(monkeypatch, capsys):
    snapshots = [dataclasses.replace(_writeback_snapshot(n), end_time_unix_s=1e9 + n) for n in (3, 5)]
    session = ScriptedSession(snapshots)
    session.summary = dataclasses.replace(snapshots[-1], kind="summary", interval_s=2.0, dirtied_pages=8)
    monkeypatch.setattr(trace, "TraceSession", session)
    watch = SimpleNamespace(pids=(), running=lambda: (), all_ended=lambda: False)
    probe = SimpleNamespace(processes=watch, store=None, subject=lambda: "writeback of every process")
    options = trace.SessionOptions(1.0, None, None, "table", False)
    assert trace.run_trace(probe, options, VIEWS["writeback"]) == ExitStatus.OK
    header, *lines = capsys.readouterr().out.splitlines()
    assert header.split()[:3] == ["time", "dirtied", "written"]
    page_kib = os.sysconf("SC_PAGE_SIZE") // 1024
    for line, pages in zip(lines[:2], (3, 5), strict=True):
        clock, dirtied, written, *_ = re.split(r"\s{2,}", line.strip())
        assert re.match(r"^\d\d:\d\d:\d\d$", clock)
        assert (dirtied, written) == (f"{pages * page_kib}KiB", "0B")  # pages shown with their unit
    assert lines[2] == "" and lines[3].startswith("Summary: 2.00 s traced")


@pytest.mark.requires_root
def test_a_command_is_not_run_when_the_session_cannot_start(tmp_path: Path):
    """As nobody the probe cannot load: exit 3 with the fix, and the command held before exec never runs."""
    ran = tmp_path / "ran"
    tmp_path.chmod(0o777)
    done = mqinspect_as_nobody("trace", "faults", "--", "touch", str(ran))
    assert done.returncode == ExitStatus.MISSING_CAPABILITY, done.stderr
    assert "CAP_BPF" in done.stderr and not ran.exists()
