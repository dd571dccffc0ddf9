"""The labs' worker processes report one JSON object per line on stdout: reading those lines with a deadline,
and the worker's last words on stderr when it ends unexpectedly."""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import time


class LineReader:
    """Lines from a child's stdout, each within a deadline (select, then os.read: never a blocking read)."""

    def __init__(self, fd: int):
        self.fd = fd
        self._pending = b""

    def next_message(self, timeout_s: float) -> dict | None:
        """The next line as JSON; None at the end of the output; TimeoutError after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self._pending:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no line within {timeout_s:g} s")
            if select.select([self.fd], [], [], left)[0]:
                chunk = os.read(self.fd, 65536)
                if not chunk:
                    return None
                self._pending += chunk
        line, self._pending = self._pending.split(b"\n", 1)
        return json.loads(line)


def last_words(process: subprocess.Popen) -> str:
    """The last line the child wrote on stderr once it has ended (or its exit status, if it said nothing)."""
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)
    said = b""
    if process.stderr is not None and process.poll() is not None:
        said = process.stderr.read() or b""
    lines = (said.decode(errors="replace") if isinstance(said, bytes) else said).strip().splitlines()
    return lines[-1] if lines else f"no message (exit status {process.returncode})"
