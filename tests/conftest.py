"""Capability markers: `requires_root` and `requires_bpf` skip with the reason on a machine without them.

Under CI=true a missing capability fails the test instead: CI runs as root on a machine set up by
scripts/bootstrap, so a skip there would hide a broken setup.
"""

from __future__ import annotations

import functools
import os
import shutil
from pathlib import Path

import pytest

from probes.capabilities import gather_facts
from probes.privileges import can_trace

IN_CI = os.environ.get("CI") == "true"
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


def skip_or_fail(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"CI=true, so this must run, but: {reason}", pytrace=False)
    pytest.skip(reason)


@functools.cache
def bpf_gap() -> str | None:
    """Why BPF programs cannot be loaded here, or None if they can (cheap facts only: no test load)."""
    facts = gather_facts(quick=True)
    if not can_trace(facts.capabilities, facts.euid):
        return "needs root or CAP_BPF+CAP_PERFMON"
    if facts.bcc_version is None:
        return f"needs bcc ({facts.bcc_error}); run scripts/bootstrap"
    if facts.headers_build is None:
        return "needs kernel headers at /lib/modules/$(uname -r)/build; run scripts/bootstrap"
    if facts.tracefs is None:
        return "needs tracefs mounted at /sys/kernel/tracing"
    return None


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("requires_root") and os.geteuid() != 0:
        skip_or_fail("needs root")
    if item.get_closest_marker("requires_bpf") and (gap := bpf_gap()):
        skip_or_fail(gap)
