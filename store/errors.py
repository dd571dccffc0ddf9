"""Errors raised by the store library. Each names the file and, where it matters, the offset and field.

The decoders' error contract
----------------------------
Everything that turns bytes or text from a store (or from a user) into values promises to raise only these,
whatever the input:

- `CorruptRecord` for bytes that are not what the format says: a record, a BLANK, a ConsumeQueue entry, an
  IndexFile header, hash slot or entry, the checkpoint (`store.codec.decode_record`,
  `decode_dispatch_info`, `peek_total_size_and_magic`; `store.consume_queue_format.decode_entry`;
  `store.index_file.IndexHeader.unpack`, `IndexEntry.unpack`, `unpack_slot`; `store.checkpoint.
  decode_checkpoint`). `store.codec.UnwrittenSpace`, a subclass, is the clean end of a log.
- `StoreLayoutError` where the sizes of an IndexFile's tables cannot be told from the file
  (`store.index_file.infer_index_geometry`).
- `ConsumerOffsetsError` for a `consumerOffset.json` that is not JSON as fastjson writes it, or not the
  table RocketMQ keeps in it (`store.consumer_offsets.ConsumerOffsets.from_bytes`, `from_text`).
- `ValueError` for an argument outside what the function takes: a negative buffer position, an
  offsetMsgId that is not 32 or 56 hex digits with a port in 0..65535 (`store.codec.parse_offset_msg_id`),
  a host or offset no message id can hold (`store.codec.offset_msg_id`).

So struct.error, IndexError, KeyError, UnicodeDecodeError, OverflowError, RecursionError and MemoryError
never come out of a decoder: lengths and fields are checked where the format defines them, before they
are used, and a length field never sizes an allocation beyond the bytes the decoder was given (a
TOTALSIZE of 2 GiB in a 100-byte buffer is a CorruptRecord, not a 2 GiB read). OSError still comes out of
the functions that read files (a missing file, EIO): they read, they do not decode. `benchmarks/
fuzz_decoders.py` holds every decoder above to this contract with a million mutated inputs.
"""

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
