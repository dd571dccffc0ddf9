"""Test-wide fixtures and the capability markers `requires_root` and `requires_bpf`.

They skip with the reason on a machine without the capability, and fail under CI=true (see support.py).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # `support` is importable from tests in any directory

from support import bpf_gap, skip_or_fail

REPO = Path(__file__).resolve().parents[1]
# shared/ sits beside the repository on developer machines and in CI.
RUST_FIXTURE = REPO.parent / "shared" / "fixtures" / "rocketmq-rust-0.9.0-store"


@pytest.fixture
def rust_store(tmp_path: Path) -> Path:
    """A private copy of the store rocketmq-rust 0.9.0 wrote: the independent test of format compatibility."""
    if not RUST_FIXTURE.is_dir():
        pytest.fail(f"the shared fixture is missing: {RUST_FIXTURE}")
    copy = tmp_path / "rocketmq-rust-store"
    shutil.copytree(RUST_FIXTURE, copy)
    return copy / "local-file"


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("requires_root") and os.geteuid() != 0:
        skip_or_fail("needs root")
    if item.get_closest_marker("requires_bpf") and (gap := bpf_gap()):
        skip_or_fail(gap)
