"""Reading files another process may be truncating, without ever risking SIGBUS.

A mapped page past a file's new end raises SIGBUS and kills the reader. pread instead returns fewer bytes,
so every inspection path reads through here and treats a short read as "the file ended here".
"""

from __future__ import annotations

import os
from pathlib import Path


class PreadFile:
    """An O_RDONLY file read only with pread. Usable as a context manager."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)

    def read(self, offset: int, length: int) -> bytes:
        """Up to `length` bytes at `offset`; fewer if the file is (now) shorter."""
        chunks = []
        while length > 0:
            chunk = os.pread(self._fd, length, offset)
            if not chunk:
                break
            chunks.append(chunk)
            offset += len(chunk)
            length -= len(chunk)
        return b"".join(chunks) if len(chunks) != 1 else chunks[0]

    def size(self) -> int:
        return os.fstat(self._fd).st_size

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> PreadFile:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
