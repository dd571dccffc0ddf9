"""The conventions every command shares: exit statuses, stdout for data and stderr for one-line errors,
--debug tracebacks, NO_COLOR, --version and the command groups in --help."""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from mqinspect import __version__
from mqinspect.cli.app import app, run_with_error_ladder
from mqinspect.errors import BadInput, ExitStatus, MissingCapability
from probes.errors import CapabilityMissing
from store.errors import CorruptRecord, NotAStore

runner = CliRunner()


def test_version_goes_to_stdout():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"mqinspect {__version__}"
    assert result.stderr == ""


def test_help_lists_the_command_groups():
    result = runner.invoke(app, ["--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0
    assert "doctor" in result.stdout


def test_unknown_command_is_one_line_on_stderr_with_exit_2():
    result = runner.invoke(app, ["frobnicate"])
    assert result.exit_code == ExitStatus.BAD_INPUT
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("mqinspect: error: ") and "frobnicate" in lines[0]


def test_bad_format_choice_is_a_usage_error():
    result = runner.invoke(app, ["doctor", "--format", "xml"])
    assert result.exit_code == ExitStatus.BAD_INPUT
    assert "xml" in result.stderr and "mqinspect doctor --help" in result.stderr


def _raise(error: BaseException):
    def command():
        raise error

    return command


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (BadInput("no such topic"), ExitStatus.BAD_INPUT),
        (MissingCapability("needs root"), ExitStatus.MISSING_CAPABILITY),
        (CapabilityMissing("bcc is not importable"), ExitStatus.MISSING_CAPABILITY),
        (NotAStore("/tmp/x has no commitlog/"), ExitStatus.BAD_INPUT),
        (CorruptRecord("bad magic", path="f", offset=12, field="MAGICCODE"), ExitStatus.BAD_INPUT),
        (FileNotFoundError(errno.ENOENT, "No such file or directory", "/nope"), ExitStatus.BAD_INPUT),
        (PermissionError(errno.EACCES, "Permission denied", "/root/x"), ExitStatus.MISSING_CAPABILITY),
        (OSError(errno.ENOSPC, "No space left on device"), ExitStatus.FINDINGS),
        (RuntimeError("a bug"), ExitStatus.FINDINGS),
        (KeyboardInterrupt(), ExitStatus.INTERRUPTED),
    ],
)
def test_error_ladder_maps_each_error_to_its_status_and_one_line(error, status, capsys):
    assert run_with_error_ladder(_raise(error), debug=False) == status
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.strip().splitlines()) == 1
    assert captured.err.startswith("mqinspect: error: ")
    assert "Traceback" not in captured.err


def test_error_line_names_the_file_and_the_fix(capsys):
    run_with_error_ladder(
        _raise(CapabilityMissing("bcc is not importable", fix="apt-get install python3-bpfcc")), debug=False
    )
    assert "bcc is not importable (fix: apt-get install python3-bpfcc)" in capsys.readouterr().err
    run_with_error_ladder(
        _raise(FileNotFoundError(errno.ENOENT, "No such file or directory", "/nope")), debug=False
    )
    assert capsys.readouterr().err.strip() == "mqinspect: error: No such file or directory: /nope"
    run_with_error_ladder(
        _raise(CorruptRecord("bad magic", path="seg", offset=141, field="MAGICCODE")), debug=False
    )
    assert "seg, offset 141: bad magic (field MAGICCODE)" in capsys.readouterr().err


def test_unexpected_error_points_to_debug_and_debug_shows_the_traceback(capsys):
    run_with_error_ladder(_raise(RuntimeError("a bug")), debug=False)
    assert "internal error: RuntimeError: a bug (run again with --debug" in capsys.readouterr().err
    run_with_error_ladder(_raise(RuntimeError("a bug")), debug=True)
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and err.rstrip().endswith(
        "a bug (run again with --debug for the traceback)"
    )


def test_debug_is_accepted_after_the_subcommand():
    result = runner.invoke(app, ["doctor", "--quick", "--debug", "--format", "json"])
    assert result.exit_code in (ExitStatus.OK, ExitStatus.MISSING_CAPABILITY)
    assert result.stdout.lstrip().startswith("{")


def _doctor_table(env: dict[str, str]) -> str:
    return subprocess.run(
        [sys.executable, "-m", "mqinspect", "doctor", "--quick"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    ).stdout


# An SGR sequence that sets a foreground colour (30-38, 90-97). NO_COLOR forbids colour, not bold.
COLOUR_SGR = re.compile(r"\x1b\[(?:[0-9;]*;)?(?:3[0-8]|9[0-7])(?:;[0-9;]*)?m")


def test_no_color_is_honoured():
    base = {key: value for key, value in os.environ.items() if key not in ("NO_COLOR", "FORCE_COLOR")}
    assert COLOUR_SGR.search(_doctor_table({**base, "FORCE_COLOR": "1"}))  # so the check below can fail
    assert not COLOUR_SGR.search(_doctor_table({**base, "FORCE_COLOR": "1", "NO_COLOR": "1"}))


def test_the_installed_entry_point_runs():
    done = subprocess.run(
        ["mqinspect", "--version"],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": f"{sys.prefix}/bin:/usr/bin:/bin"},
    )
    assert done.returncode == 0 and done.stdout.startswith("mqinspect ")


@pytest.mark.parametrize("ending", [signal.SIGINT, signal.SIGTERM], ids=["Ctrl-C", "SIGTERM"])
@pytest.mark.parametrize("command", ["mem", "top"])
def test_a_stream_ended_by_ctrl_c_or_sigterm_exits_130_after_whole_lines(command, ending):
    """The README's 130 (interrupted): `trace` sessions, `mem` and `top` streams alike."""
    arguments = {
        "mem": ["mem", "--count", "0"],
        "top": ["top", "--pid", str(os.getpid()), "--no-ebpf"],
    }[command]
    stream = subprocess.Popen(
        [sys.executable, "-m", "mqinspect", *arguments, "--interval", "0.2", "--format", "jsonl"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    first = stream.stdout.readline()
    stream.send_signal(ending)
    rest, errors = stream.communicate(timeout=30)
    assert stream.returncode == ExitStatus.INTERRUPTED, errors
    assert all(json.loads(line) for line in [first, *rest.splitlines()])


def test_a_reader_that_goes_away_is_exit_0_and_silent():
    """`mqinspect ... | head -c 1`: the pipe closes under the writer, as with every Unix filter. (A stream:
    --help fits in the pipe's buffer and would never see the broken pipe.)"""
    arguments = ["mem", "--count", "3", "--interval", "0.05", "--format", "jsonl"]
    reader, writer = os.pipe()
    command = subprocess.Popen(
        [sys.executable, "-m", "mqinspect", *arguments], stdout=writer, stderr=subprocess.PIPE
    )
    os.close(writer)
    os.read(reader, 1)
    os.close(reader)  # what head does after its first bytes
    _, errors = command.communicate(timeout=30)
    assert command.returncode == ExitStatus.OK
    assert errors == b""


def test_arguments_show_their_help():
    """typer fills an argument's help itself; a click that sets its own (8.5) erased it."""
    result = runner.invoke(app, ["top", "--help"], env={"COLUMNS": "150"})
    assert "A RocketMQ store root" in result.stdout


@pytest.mark.parametrize("command", [["mem"], ["trace", "faults"], ["store", "verify"], ["cache"]])
def test_help_paragraphs_break_where_the_terminal_ends(command):
    """A docstring's paragraph is one paragraph in --help: at 300 columns a line of it ends only where the
    terminal does (typer kept the source's line breaks, which cut lines in odd places at any other width)."""
    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "300", "NO_COLOR": "1"})
    assert result.exit_code == 0
    prose = result.stdout.split("╭")[0]  # the description, above the argument and option panels
    paragraphs = [block for block in re.split(r"\n\s*\n", prose) if block.strip() and "Usage:" not in block]
    cut_early = [line for block in paragraphs for line in block.splitlines()[:-1] if len(line.strip()) < 250]
    assert paragraphs and cut_early == []
