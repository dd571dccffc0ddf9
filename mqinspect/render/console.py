"""Rich consoles for human output. Rich itself honours NO_COLOR, TERM=dumb and non-terminal streams."""

from __future__ import annotations

import sys

from rich.console import Console


def stdout_console() -> Console:
    # Looked up at call time so test runners that swap sys.stdout see the output.
    return Console(file=sys.stdout, highlight=False, soft_wrap=False)


def stderr_console() -> Console:
    return Console(file=sys.stderr, highlight=False, soft_wrap=True)
