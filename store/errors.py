"""Errors raised by the store library. Each names the file and, where it matters, the offset and field."""

from __future__ import annotations


class StoreError(Exception):
    """Something about a store's files is not as RocketMQ's format requires."""


class NotAStore(StoreError):
    """The directory holds no commitlog/ (or holds files a store never writes)."""


class StoreLayoutError(StoreError):
    """Segment names, sizes or order break MappedFileQueue's load rules (gaps, wrong sizes, foreign names)."""


class CorruptRecord(StoreError):
    """A record that cannot be decoded. Carries the file, the absolute offset and the field at fault."""

    def __init__(
        self, reason: str, *, path: str | None = None, offset: int | None = None, field: str | None = None
    ):
        self.reason = reason
        self.path = path
        self.offset = offset
        self.field = field
        super().__init__(self._render())

    def _render(self) -> str:
        where = [
            part for part in (self.path, None if self.offset is None else f"offset {self.offset}") if part
        ]
        prefix = f"{', '.join(where)}: " if where else ""
        field = f" (field {self.field})" if self.field else ""
        return f"{prefix}{self.reason}{field}"
