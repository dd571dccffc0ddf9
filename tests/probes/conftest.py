"""Fixtures of the probe tests: directories on ext4 and for user nobody, and a process mapping known files."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from page_cache_files import MappingChild


@pytest.fixture
def on_ext4(tmp_path: Path) -> Path:
    kind = subprocess.run(["stat", "-f", "-c", "%T", str(tmp_path)], capture_output=True, text=True).stdout
    if "tmpfs" in kind:
        pytest.skip("tmp_path is on tmpfs, whose page cache keeps no dirty or writeback state")
    return tmp_path


@pytest.fixture
def world_dir() -> Iterator[Path]:
    """A directory user nobody can enter (pytest's tmp_path is private to root), on the ext4 /tmp."""
    directory = Path(tempfile.mkdtemp(prefix="mqinspect-residency-", dir="/tmp"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory)


@pytest.fixture
def mapping_child(tmp_path: Path) -> Iterator[MappingChild]:
    child = MappingChild(tmp_path)
    yield child
    child.stop()
