"""Fixtures of the probes' tests."""

from __future__ import annotations

import os
import sys

import pytest

from mqinspect.cli import trace


@pytest.fixture
def no_session(monkeypatch):
    """Fails the test if a command gets as far as opening a tracing session (compiling the program)."""

    def refuse(*_args, **_kwargs):
        raise AssertionError("a session was opened")

    monkeypatch.setattr(trace, "TraceSession", refuse)


# With MQINSPECT_COMBINED=1, the probes' tests trace each probe inside a combined program with the dashboard's
# other probes (combined_session.py): the same assertions against the same ground truth.
COMBINED = os.environ.get("MQINSPECT_COMBINED") == "1"
_PROBE_TEST_MODULES = ("test_faults", "test_pagecache", "test_sendpath", "test_syscalls", "test_writeback")


@pytest.fixture(autouse=True)
def combined_when_asked(request, monkeypatch):
    module = request.module
    if COMBINED and module.__name__.rsplit(".", 1)[-1] in _PROBE_TEST_MODULES:
        from combined_session import CombinedTraceSession

        monkeypatch.setattr(module, "TraceSession", CombinedTraceSession)
        for helper in ("store_roll",):
            if helper in sys.modules:
                monkeypatch.setattr(sys.modules[helper], "TraceSession", CombinedTraceSession)
