"""Capability gates shared by the tests: skip where a capability is missing, fail under CI=true.

CI runs as root on a machine set up by scripts/bootstrap, so a skip there would hide a broken setup.
A plain module (not conftest) so that test modules in any directory can import it.
"""

from __future__ import annotations

import functools
import os

import pytest

from probes.capabilities import gather_facts
from probes.privileges import can_trace

IN_CI = os.environ.get("CI") == "true"


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
