"""Inspection is a package with one seam per format: store.inspection.log_format.LogFormat, implemented for
RocketMQ-format stores (store.inspection.rocketmq), chosen by store.inspection.formats.

The RocketMQ format is checked against the files rocketmq-rust wrote and against a walk of a built store's
directories; the seam is checked by plugging a second format (a test double) into FORMATS and seeing
`store stat`, `store segments` with residency, and trace --store's labels and directories serve it with no
other change.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from store_builder import StoreBuilder
from typer.testing import CliRunner

from mqinspect.cli.app import app
from mqinspect.errors import ExitStatus
from probes.ebpf import scope
from probes.ebpf.inodes import FileId, store_files
from probes.ebpf.sendpath import store_label_by_path
from store.errors import NotAStore
from store.inspection import formats
from store.inspection.kafka.store_format import KAFKA
from store.inspection.log_format import LogFormat, StoreDirectories, StoreFile
from store.inspection.rocketmq.store_format import ROCKETMQ
from store.layout import discover_store

runner = CliRunner()
KIND_ORDER = ("commitlog", "consumequeue", "index")
SECTIONS = ("reading", "record_views", "store_stat", "segments", "dump", "verify", "query", "cq")


def test_inspection_is_a_package_of_sections_and_nothing_is_named_inspect():
    assert importlib.util.find_spec("store.inspect") is None
    for section in SECTIONS:
        assert importlib.util.find_spec(f"store.inspection.rocketmq.{section}") is not None, section
    import inspect

    assert Path(inspect.__file__).parent != Path(formats.__file__).parents[1]  # the standard library's


def test_formats_lists_rocketmq_once_and_it_provides_the_whole_interface():
    assert formats.FORMATS == (ROCKETMQ, KAFKA)
    assert isinstance(ROCKETMQ, LogFormat) and not getattr(type(ROCKETMQ), "__abstractmethods__", None)
    assert (ROCKETMQ.name, ROCKETMQ.title) == ("rocketmq", "RocketMQ-format store")


def test_the_format_seam_loads_no_decoder_for_residency_and_trace(rust_store: Path):
    """trace --store and residency ask only for file names: importing what they import (and listing a store's
    files) must not load the record, queue and index decoders that `stat` and `segments` need."""
    code = (
        "import sys; import probes.ebpf.inodes, probes.ebpf.scope, store.inspection.formats as formats; "
        "formats.store_files(sys.argv[1]); print(sorted(m for m in sys.modules if m.startswith('store.')))"
    )
    shown = subprocess.run(
        [sys.executable, "-c", code, str(rust_store)], capture_output=True, text=True, check=True
    )
    loaded = set(ast.literal_eval(shown.stdout))
    assert "store.inspection.rocketmq.store_format" in loaded
    assert not loaded & {
        "store.codec",
        "store.index_file",
        "store.consume_queue_format",
        "store.commitlog_scan",
    }


def test_rocketmq_names_the_files_rocketmq_rust_wrote(rust_store: Path):
    assert formats.detect_format(rust_store) is ROCKETMQ
    files = formats.store_files(rust_store)
    assert [(file.label, file.kind) for file in files] == [
        ("commitlog/00000000000000000000", "commitlog"),
        ("consumequeue/V1UpgradeTopic/0/00000000000000000000", "consumequeue"),
        ("index/20260815011551705", "index"),
    ]
    assert all(file.path == rust_store / file.label for file in files)
    assert formats.store_file_paths(rust_store) == tuple(file.path for file in files)


def test_every_data_and_index_file_of_a_store_is_listed_and_its_kind_known_by_path(tmp_path: Path):
    builder = StoreBuilder(tmp_path / "store", segment_size=512, cq_entries_per_file=2)
    for number in range(24):
        builder.add(f"Topic{number % 2}", f"body {number}", queue_id=number % 3, keys=f"key-{number}")
    root = builder.build().root
    walked = {
        str(Path(directory, name).relative_to(root))
        for directory, _, names in os.walk(root)
        for name in names
        if Path(directory).relative_to(root).parts[:1] in (("commitlog",), ("consumequeue",), ("index",))
    }
    files = formats.store_files(root)
    assert {file.label for file in files} == walked and len(files) == len(walked) > 15
    kinds = [file.kind for file in files]
    assert kinds == sorted(kinds, key=KIND_ORDER.index)  # the CommitLog, then the queues, then the index
    for file in files:
        assert ROCKETMQ.file_kind(file.label) == file.kind
    for foreign in ("checkpoint", "config/topics.json", "commitlog/123", "consumequeue/T/x/" + "0" * 20,
                    "index/2024", "lock", "abort"):  # fmt: skip
        assert ROCKETMQ.file_kind(foreign) is None, foreign


def test_a_store_s_new_files_appear_in_its_log_index_and_queue_directories(tmp_path: Path):
    builder = StoreBuilder(tmp_path / "store")
    builder.add("TopicA", "a", queue_id=0)
    builder.add("TopicA", "b", queue_id=3)
    builder.add("TopicB", "c", queue_id=1)
    root = builder.build().root
    directories = formats.store_directories(root)
    cq = root / "consumequeue"
    assert directories.files_in[:2] == (root / "commitlog", root / "index")
    assert set(directories.files_in[2:]) == {cq / "TopicA" / "0", cq / "TopicA" / "3", cq / "TopicB" / "1"}
    assert set(directories.directories_in) == {cq / "TopicA", cq / "TopicB"}
    assert directories.parents_in == (cq,)


@pytest.mark.parametrize("shape", ["missing", "file", "no-commitlog", "nested"])
def test_a_path_no_format_recognises_gets_the_store_layout_s_one_line(tmp_path: Path, shape: str):
    path = {"missing": tmp_path / "nothing", "file": tmp_path / "a-file", "no-commitlog": tmp_path}[
        "no-commitlog" if shape == "nested" else shape
    ]
    if shape == "file":
        path.write_text("x")
    if shape == "nested":
        (tmp_path / "store" / "commitlog").mkdir(parents=True)
    with pytest.raises(NotAStore) as layout_says:
        discover_store(path)
    with pytest.raises(NotAStore) as formats_say:
        formats.detect_format(path)
    # RocketMQ's line first, then what Kafka looked for ("does not exist" said once)
    assert str(formats_say.value).startswith(str(layout_says.value))
    assert ("Kafka" in str(formats_say.value)) == (shape != "missing")
    assert ("did you mean" in str(formats_say.value)) == (shape == "nested")


# --- a second format, plugged in without touching stat, segments, residency or trace --store ---------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class ToyListing:
    root: Path
    files: tuple[str, ...]
    residency: object = None  # the CLI adds page-cache residency, as for any format's listing


@dataclasses.dataclass(frozen=True, kw_only=True)
class ToyStat:
    root: Path
    log_files: int


class ToyFormat(LogFormat):
    """A directory marked by a `toy.format` file, whose data files are `*.toylog`."""

    name = "toy"
    title = "toy log directory"

    def recognises(self, path: Path) -> bool:
        return (Path(path) / "toy.format").is_file()

    def why_not(self, path: Path) -> str:
        return f"{path}: not a {self.title} (no toy.format)"

    def store_files(self, root: Path) -> tuple[StoreFile, ...]:
        return tuple(StoreFile(path, path.name, "toylog") for path in sorted(Path(root).glob("*.toylog")))

    def store_directories(self, root: Path) -> StoreDirectories:
        return StoreDirectories(files_in=(Path(root),))

    def file_kind(self, relative_path: str) -> str | None:
        return "toylog" if relative_path.endswith(".toylog") and "/" not in relative_path else None

    def list_segments(self, root: Path) -> ToyListing:
        return ToyListing(root=Path(root), files=tuple(file.label for file in self.store_files(root)))

    def stat(self, root: Path) -> ToyStat:
        return ToyStat(root=Path(root), log_files=len(self.store_files(root)))


@pytest.fixture
def toy_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(formats, "FORMATS", (ROCKETMQ, ToyFormat()))
    root = tmp_path / "toy"
    root.mkdir()
    (root / "toy.format").write_text("1")
    (root / "00.toylog").write_bytes(os.urandom(3 * 4096))
    (root / "01.toylog").write_bytes(b"x" * 100)
    return root


def test_stat_and_segments_with_residency_serve_a_second_format_unchanged(toy_store: Path):
    stat = runner.invoke(app, ["store", "stat", str(toy_store), "--format", "json"])
    assert stat.exit_code == ExitStatus.OK, stat.output
    assert json.loads(stat.stdout) == {"root": str(toy_store), "log_files": 2}
    listing = runner.invoke(app, ["store", "segments", str(toy_store), "--chunks", "2", "--format", "json"])
    assert listing.exit_code == ExitStatus.OK, listing.output
    shown = json.loads(listing.stdout)
    assert shown["files"] == ["00.toylog", "01.toylog"]
    measured = {Path(segment["path"]).name: segment for segment in shown["residency"]["segments"]}
    page = shown["residency"]["page_size_bytes"]
    for name in ("00.toylog", "01.toylog"):
        assert measured[name]["pages"] == -(-(toy_store / name).stat().st_size // page)  # fincore's count


def test_trace_store_labels_and_follows_a_second_format_s_files(toy_store: Path):
    labels = store_files(toy_store)
    log = toy_store / "00.toylog"
    assert {(label.name, label.segment_kind) for label in labels.values()} == {
        ("00.toylog", "toylog"),
        ("01.toylog", "toylog"),
    }
    assert labels[FileId.from_stat(log.stat())].path == str(log)
    listing = scope.list_store(toy_store)
    assert listing.directories["mqi_store_dirs"] == {FileId.from_stat(toy_store.stat())}
    assert listing.directories["mqi_topic_dirs"] == listing.directories["mqi_queue_roots"] == frozenset()
    gone = store_label_by_path(
        FileId(0, 0, 7), f"{log} (deleted)", f"{toy_store}{os.sep}", ToyFormat().file_kind
    )
    assert gone is not None and (gone.name, gone.segment_kind) == ("00.toylog", "toylog")


def test_a_path_neither_format_recognises_is_bad_input_naming_both(toy_store: Path):
    result = runner.invoke(app, ["store", "stat", str(toy_store.parent), "--format", "json"])
    assert result.exit_code == ExitStatus.BAD_INPUT and result.stdout == ""
    assert "not a RocketMQ store" in result.stderr and "not a toy log directory" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
