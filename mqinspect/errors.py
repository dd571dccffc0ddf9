"""Exit statuses and the errors the CLI turns into one line on stderr.

The libraries (store/, probes/) raise their own errors and know nothing of exit codes; the ladder in
`mqinspect.cli.app` maps them here, in one place.
"""

from __future__ import annotations

import errno
from enum import IntEnum

from probes.errors import CapabilityMissing
from store.errors import StoreError


class ExitStatus(IntEnum):
    OK = 0
    FINDINGS = 1  # corruption found, some files failed, or an internal error
    BAD_INPUT = 2  # bad usage, or input that is not what it should be
    MISSING_CAPABILITY = 3  # no root, no bcc, an old kernel: `mqinspect doctor` says what and how to fix it
    INTERRUPTED = 130  # 128 + SIGINT


class MqinspectError(Exception):
    """An error meant for the user: its message is the whole story, `fix` (if any) says what to do."""

    exit_status = ExitStatus.FINDINGS

    def __init__(self, message: str, *, fix: str | None = None):
        super().__init__(message)
        self.fix = fix


class BadInput(MqinspectError):
    exit_status = ExitStatus.BAD_INPUT


class MissingCapability(MqinspectError):
    exit_status = ExitStatus.MISSING_CAPABILITY


_BAD_INPUT_ERRNOS = {errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EINVAL, errno.ELOOP, errno.ENAMETOOLONG}
_PERMISSION_ERRNOS = {errno.EACCES, errno.EPERM}


def exit_status_for(error: BaseException) -> ExitStatus:
    """The exit status for any error that reaches the top of a command."""
    if isinstance(error, MqinspectError):
        return error.exit_status
    if isinstance(error, CapabilityMissing):
        return ExitStatus.MISSING_CAPABILITY
    if isinstance(error, StoreError):
        return ExitStatus.BAD_INPUT
    if isinstance(error, OSError) and error.errno in _PERMISSION_ERRNOS:
        return ExitStatus.MISSING_CAPABILITY
    if isinstance(error, OSError) and error.errno in _BAD_INPUT_ERRNOS:
        return ExitStatus.BAD_INPUT
    return ExitStatus.FINDINGS


def describe(error: BaseException) -> str:
    """One line for the user: the message and, where known, the fix. No traceback."""
    if isinstance(error, OSError) and error.strerror:
        where = f": {error.filename}" if error.filename else ""
        message = f"{error.strerror}{where}"
    elif isinstance(error, MqinspectError | StoreError | CapabilityMissing):
        message = str(error)
    else:
        message = (
            f"internal error: {type(error).__name__}: {error} (run again with --debug for the traceback)"
        )
    fix = getattr(error, "fix", None)
    return f"{message} (fix: {fix})" if fix else message
