"""Start-up: each command imports only what it uses. Textual is for the interactive dashboard (top, replay,
demo), bcc for a probe that loads; `mqinspect --version`, `cache`, `store stat` and `top --once --no-ebpf`
import neither. The lazy command table keeps the command line as it was: every command is still listed,
found and suggested. (The time itself is benchmarks/startup.py's: wall time is no test's business.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mqinspect.cli.app import MqinspectGroup, app

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("textual", "bcc")
# Runs `mqinspect ARGS` in a fresh interpreter and writes the modules it imported to the file in argv[1].
_REPORT_MODULES = (
    "import json, sys; from mqinspect.cli.app import app; "
    "status = app(sys.argv[2:], standalone_mode=False); "
    "open(sys.argv[1], 'w').write(json.dumps({'status': status, 'modules': sorted(sys.modules)}))"
)


def imported_by(tmp_path: Path, *arguments: str) -> tuple[int, set[str]]:
    """The exit status of `mqinspect ARGUMENTS` run in a fresh interpreter, and the top-level packages it
    imported."""
    report = tmp_path / "modules.json"
    subprocess.run(
        [sys.executable, "-c", _REPORT_MODULES, str(report), *arguments],
        cwd=REPO,
        env={
            "PYTHONPATH": str(REPO),
            "PATH": "/usr/bin:/bin",
            "NO_COLOR": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
        },
        stdout=subprocess.DEVNULL,
        check=False,
        timeout=60,
    )
    found = json.loads(report.read_text())
    return found["status"], {name.split(".")[0] for name in found["modules"]}


def test_importing_the_cli_imports_no_command():
    code = (
        "import json, sys; import mqinspect.cli.app; "
        "print(json.dumps(sorted(name for name in sys.modules if name.split('.')[0] in "
        "('mqinspect', 'store', 'probes', 'textual', 'bcc', 'rich'))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True, timeout=60
    )
    # The root group and the error ladder, nothing of any command.
    assert set(json.loads(done.stdout)) <= {
        *("mqinspect", "mqinspect.cli", "mqinspect.cli.app", "mqinspect.cli.lazy", "mqinspect.errors"),
        *("probes", "probes.errors", "store", "store.errors"),
    }


@pytest.mark.parametrize(
    "arguments",
    [("--version",), ("cache", "FILE"), ("store", "stat", "STORE"), ("top", "STORE", "--once", "--no-ebpf")],
    ids=["version", "cache", "store-stat", "top-once"],
)
def test_a_command_imports_neither_textual_nor_bcc(tmp_path: Path, rust_store: Path, arguments: tuple):
    measured = tmp_path / "segment"
    measured.write_bytes(b"x" * 8192)
    concrete = [{"FILE": str(measured), "STORE": str(rust_store)}.get(word, word) for word in arguments]
    status, packages = imported_by(tmp_path, *concrete, *(["--interval", "0.1"] if "top" in concrete else []))
    assert status == 0
    assert not packages & set(HEAVY)


def test_store_stat_does_not_import_the_write_path(tmp_path: Path, rust_store: Path):
    status, _packages = imported_by(tmp_path, "store", "stat", str(rust_store))
    assert status == 0
    report = json.loads((tmp_path / "modules.json").read_text())
    assert not {"store.workload", "mqinspect.cli.store_write", "probes.file_locks"} & set(report["modules"])


def test_every_command_is_listed_and_reachable():
    runner = CliRunner()
    listed = runner.invoke(app, ["--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert listed.exit_code == 0
    for name in MqinspectGroup.COMMAND_MODULES:
        assert f" {name} " in listed.stdout
        assert runner.invoke(app, [name, "--help"]).exit_code == 0
    store = runner.invoke(app, ["store", "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    for name in ("stat", "segments", "dump", "verify", "query", "cq", "init", "produce", "recover", "clean"):
        assert f" {name} " in store.stdout
    labs = runner.invoke(app, ["lab", "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert all(f" {name} " in labs.stdout for name in ("warmup", "sendpath", "truncate"))


@pytest.mark.parametrize(
    ("arguments", "suggested"),
    [
        (["cach"], "cache"),
        (["store", "stt"], "stat"),
        (["store", "produc"], "produce"),
        (["lab", "warmp"], "warmup"),
    ],
)
def test_a_mistyped_command_is_still_suggested(arguments: list[str], suggested: str):
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 2
    assert f"No such command '{arguments[-1]}'. Did you mean '{suggested}'?" in result.stderr
