"""The probe registry (probes/ebpf/registry.py) is the one list of probes: each probe's program attaches what
its entry lists and shares programs/scope.h, the trace CLI makes one command per entry with the entry's
options, nothing else in the tree spells out the list of probes, and doctor's load test lives apart from the
loader."""

from __future__ import annotations

import ast
import re
import tomllib
from fnmatch import fnmatch
from pathlib import Path
from typing import ClassVar

import pytest
import typer
from typer.testing import CliRunner

from mqinspect.cli import trace
from mqinspect.cli.app import app
from mqinspect.render.trace import VIEWS
from probes.ebpf import loader
from probes.ebpf.loader import FUNCTION_PREFIX, PROGRAMS_DIR, program_spec
from probes.ebpf.registry import PROBES, ProbeEntry, ProbeOption, UnknownProbe, probe_entry

REPO = Path(__file__).resolve().parents[2]
SOURCE_TREES = ("mqinspect", "probes", "store", "benchmarks")
runner = CliRunner()


def _ids(entry: ProbeEntry) -> str:
    return entry.name


# --- each program against its entry -------------------------------------------------------------------------


@pytest.mark.parametrize("entry", PROBES, ids=_ids)
def test_each_program_attaches_what_its_entry_lists_with_short_function_names(entry: ProbeEntry):
    probe = entry.probe_class()()
    assert probe.name == entry.name and probe.program.source_name == entry.program
    attachments = probe.program.attachments
    assert {a.tracepoint for a in attachments if a.required} == set(entry.required)
    assert {a.tracepoint for a in attachments if not a.required} == set(entry.optional)
    source = probe.program.source_text()
    for attachment in attachments:
        assert attachment.function.startswith(FUNCTION_PREFIX)
        assert len(attachment.function) < 16  # the kernel keeps 15 characters of a program's name
        assert f"int {attachment.function}(" in source


@pytest.mark.parametrize("entry", PROBES, ids=_ids)
def test_each_program_takes_the_shared_helpers_from_scope_h(entry: ProbeEntry):
    own_text = (PROGRAMS_DIR / entry.program).read_text()
    assert '#include "scope.h"' in own_text
    assert "int tgid_traced(" not in own_text and "(mqi_tgids," not in own_text  # not a copy of its own
    compiled = entry.probe_class()().program.source_text()
    assert compiled.count("static __always_inline int tgid_traced(u32 tgid)") == 1  # inlined once
    assert "#include" not in compiled  # every header of programs/ inlined: --print-bpf shows what is compiled


@pytest.mark.parametrize("entry", PROBES, ids=_ids)
def test_every_syscall_id_a_program_uses_is_defined_for_its_own_tracepoints(entry: ProbeEntry):
    probe = entry.probe_class()()
    used = set(re.findall(r"\bSYSCALL_[A-Z][A-Z0-9]*\b", probe.program.source_text()))
    defined = dict(re.findall(r"^-D(SYSCALL_[A-Z0-9]+)=(\d+)$", "\n".join(probe.parameters().cflags()), re.M))
    assert used <= defined.keys()
    assert len(set(defined.values())) == len(defined)  # one id per syscall
    for define in defined:
        assert f"syscalls:sys_enter_{define.removeprefix('SYSCALL_').lower()}" in entry.required


def test_a_program_that_does_not_cover_its_entry_is_refused():
    entry = probe_entry("pagecache")
    functions = {tracepoint: "mqi_x" for tracepoint in entry.tracepoints}
    assert program_spec(entry, functions).source_name == "pagecache.bpf.c"
    del functions[entry.optional[0]]
    with pytest.raises(ValueError, match="the registry lists"):
        program_spec(entry, functions)


def test_an_unknown_name_is_said_with_the_known_ones():
    with pytest.raises(UnknownProbe, match="faults, pagecache, writeback, sendpath, syscalls"):
        probe_entry("nosuchprobe")


def test_every_file_of_programs_is_installed_with_the_package():
    """The headers the loader inlines must ship beside the programs (store_files.h did not)."""
    package_data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    patterns = package_data["probes"]
    for path in PROGRAMS_DIR.iterdir():
        relative = path.relative_to(REPO / "probes").as_posix()
        assert any(fnmatch(relative, pattern) for pattern in patterns), relative


def test_doctors_load_test_is_not_in_the_loader():
    """It lives in probes/ebpf/smoke.py, beside the other proofs that programs load; nothing in the loader
    looks like a test to pytest."""
    assert not [name for name in vars(loader) if name.startswith("test")]


# --- the trace CLI ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("entry", PROBES, ids=_ids)
def test_each_probe_has_a_trace_command_with_its_help_and_options(entry: ProbeEntry):
    result = runner.invoke(app, ["trace", entry.name, "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())
    assert entry.summary in text and entry.description in text
    shared = (
        "--pid",
        "--store",
        "--interval",
        "--count",
        "--duration",
        "--format",
        "--follow",
        "--print-bpf",
    )
    for flag in shared:
        assert flag in text
    for option in entry.options:
        assert option.flag in text and option.help in text


class RecordingProbe:
    """A probe class that keeps what it was built with."""

    built: ClassVar[list[tuple]] = []

    def __init__(self, pids, **options):
        self.built.append((tuple(pids), options))


def test_a_registry_entry_becomes_a_command_that_builds_its_probe_with_its_options(monkeypatch, tmp_path):
    entry = ProbeEntry(
        name="recording",
        module=__name__,
        class_name="RecordingProbe",
        program="recording.bpf.c",
        required=(),
        optional=(),
        summary="Records how it was built.",
        description="Nothing is traced.",
        store_help="given to the probe.",
        process_events=(),
        total_events=(),
        options=(ProbeOption("window_pages", "--window-pages", "Pages per window.", minimum=2),),
    )
    sessions = []
    monkeypatch.setitem(VIEWS, entry.name, VIEWS["faults"])
    monkeypatch.setattr(
        trace, "run_trace", lambda _probe, options, view: sessions.append((options, view)) or 0
    )
    RecordingProbe.built.clear()
    cli = typer.Typer()
    cli.command()(trace.probe_command(entry))
    cli.command()(lambda: None)  # a second command: typer then needs the command's name, as trace does

    given = ["-p", "1", "--store", str(tmp_path), "--window-pages", "8", "-i", "0.5", "-c", "3"]
    result = runner.invoke(cli, ["recording", *given])
    assert result.exit_code == 0, result.output
    assert RecordingProbe.built == [((1,), {"store": tmp_path, "window_pages": 8})]
    assert sessions == [(trace.SessionOptions(0.5, 3, None, "table", False, False), VIEWS["faults"])]
    refused = runner.invoke(cli, ["recording", "--window-pages", "1"])
    assert refused.exit_code == 2 and len(RecordingProbe.built) == 1  # below its minimum: not built


# --- nothing else lists the probes --------------------------------------------------------------------------


def _python_sources():
    for tree in SOURCE_TREES:
        yield from sorted((REPO / tree).rglob("*.py"))


def test_no_probes_name_is_spelled_out_beyond_the_registry_and_the_probes_own_module():
    """ "pagecache" means nothing but the probe (the other names are also words: faults, syscalls); it stands
    as a string only in the registry and in probes/ebpf/pagecache.py. Tests and documents are not scanned."""
    allowed = {REPO / "probes/ebpf/registry.py", REPO / "probes/ebpf/pagecache.py"}
    spelled = [
        f"{path.relative_to(REPO)}:{node.lineno}"
        for path in _python_sources()
        if path not in allowed
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and node.value == "pagecache"
    ]
    assert spelled == []


def test_no_module_but_the_registry_imports_the_probes_one_by_one():
    """A module that imports three or more probe modules holds a list of probes of its own (the trace CLI and
    the dashboard did); one that draws or measures one or two probes imports just those."""
    probe_modules = {entry.module for entry in PROBES}
    listing = {}
    for path in _python_sources():
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module in probe_modules:
                imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names if alias.name in probe_modules}
        if len(imported) >= 3:
            listing[str(path.relative_to(REPO))] = sorted(imported)
    assert listing == {}
