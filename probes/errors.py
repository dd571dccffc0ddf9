"""Errors raised by the probes. Each carries the fix a user can apply."""

from __future__ import annotations


class ProbeError(Exception):
    """A probe could not produce its measurement."""


class CapabilityMissing(ProbeError):
    """The machine or the caller lacks something a probe needs: privileges, bcc, headers, a syscall."""

    def __init__(
        self, message: str, *, fix: str = "run `mqinspect doctor` to see what is missing and how to fix it"
    ):
        super().__init__(message)
        self.fix = fix


class AccessDenied(ProbeError):
    """Reading one field was refused (like psutil's AccessDenied): the field is shown as unavailable."""
