"""Fixtures of the probes' tests."""

from __future__ import annotations

import pytest

from mqinspect.cli import trace


@pytest.fixture
def no_session(monkeypatch):
    """Fails the test if a command gets as far as opening a tracing session (compiling the program)."""

    def refuse(*_args, **_kwargs):
        raise AssertionError("a session was opened")

    monkeypatch.setattr(trace, "TraceSession", refuse)
