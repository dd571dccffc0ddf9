"""Reading files another process may be truncating, without ever risking SIGBUS.

A mapped page past a file's new end raises SIGBUS and kills the reader. pread instead returns fewer bytes,
so every inspection path reads through here and treats a short read as "the file ended here".
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

_MAX_CHUNK_BYTES = 1 << 20  # a search window of at most 1 MiB: its bytes become one int


class PreadFile:
    """An O_RDONLY file read only with pread. Usable as a context manager."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        # No readahead: inspecting a broker's store must not pull its cold segments into the page cache.
        # Every read here names its range (windows of up to 4 MiB), so readahead would only add pages.
        os.posix_fadvise(self._fd, 0, 0, os.POSIX_FADV_RANDOM)

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

    def end_of_nonzero_data(self, max_chunk_bytes: int = 1 << 20) -> int:
        """One past the last non-zero byte, searching backwards and skipping holes (SEEK_DATA).

        Chunks start at one page and double: the data usually ends close to the end of the file, so this
        reads (and brings into the page cache) a page or two, not the whole file.
        """
        end = self.size()
        chunk = 4096
        max_chunk_bytes = min(max_chunk_bytes, _MAX_CHUNK_BYTES)
        while end > 0:
            start = max(0, end - chunk)
            if self._has_data(start, end):
                # The length without trailing zeros, as rstrip(b"\0") gives it: as a little-endian number,
                # the data's highest non-zero byte is its last one (C speed; rstrip steps byte by byte).
                data_length = (int.from_bytes(self.read(start, end - start), "little").bit_length() + 7) // 8
                if data_length:
                    return start + data_length
            end = start
            chunk = min(chunk * 2, max_chunk_bytes)
        return 0

    def will_need(self, offset: int, length: int) -> None:
        """Ask the kernel to start reading this range now (POSIX_FADV_WILLNEED), for a reader that will read
        it next: the disk works while the reader decodes what it has. Only ever a hint."""
        os.posix_fadvise(self._fd, offset, length, os.POSIX_FADV_WILLNEED)

    def data_end(self, position: int) -> int | None:
        """Where the data around `position` ends: the next hole (SEEK_HOLE), or the file's end; `position`
        itself when it lies in a hole. None when unknown: past the file's end, or no SEEK_HOLE here."""
        try:
            return os.lseek(self._fd, position, os.SEEK_HOLE)
        except OSError:
            return None

    def _has_data(self, start: int, end: int) -> bool:
        try:
            return os.lseek(self._fd, start, os.SEEK_DATA) < end
        except OSError as error:
            # ENXIO: nothing but a hole after `start`. Anything else (no SEEK_DATA here): read to find out.
            return error.errno != errno.ENXIO

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
