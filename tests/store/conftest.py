"""Fixtures for the store tests: `make_store` builds RocketMQ-format stores with `store_builder`."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

# store_builder is a helper module beside the tests, not a package: make it importable in any import mode.
sys.path.insert(0, str(Path(__file__).parent))

from store_builder import StoreBuilder
from support import skip_or_fail


@pytest.fixture
def make_store(tmp_path: Path) -> Callable[..., StoreBuilder]:
    """A StoreBuilder for a new store under tmp_path (call it again for another one)."""
    made = []

    def make(**options) -> StoreBuilder:
        made.append(None)
        return StoreBuilder(tmp_path / f"store{len(made)}", **options)

    return make


@pytest.fixture
def tiny_filesystem(tmp_path: Path):
    """A 512 KiB tmpfs: a disk that fills up within a test."""
    if os.geteuid() != 0:
        skip_or_fail("needs root to mount a tmpfs")
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount_point)], check=True)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "--lazy", str(mount_point)], check=False)
