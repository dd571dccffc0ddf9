"""Kafka's primitive encodings: zigzag varints (records), strings and arrays of the message schemas
(classic int16/int32 lengths, and the compact unsigned-varint ones of flexible versions, with their tagged
fields). Every reader checks lengths against the buffer and raises only KafkaDecodeError."""

from __future__ import annotations

import struct

from store.kafka.findings import KafkaDecodeError

INT16 = struct.Struct(">h")
INT32 = struct.Struct(">i")
UINT32 = struct.Struct(">I")
INT64 = struct.Struct(">q")
MAX_VARINT_BYTES = 5
MAX_VARLONG_BYTES = 10


def _truncated(what: str, position: int) -> KafkaDecodeError:
    return KafkaDecodeError("truncated", f"{what} runs past the end of its bytes", position)


def read_unsigned_varint(buf, position: int, max_bytes: int = MAX_VARINT_BYTES) -> tuple[int, int]:
    """An unsigned base-128 varint at `position`: (value, position after it)."""
    value = 0
    shift = 0
    end = len(buf)
    for index in range(position, position + max_bytes):
        if index >= end:
            raise _truncated("a varint", position)
        byte = buf[index]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, index + 1
        shift += 7
    raise KafkaDecodeError("bad-varint", f"a varint longer than {max_bytes} bytes", position)


def read_varint(buf, position: int) -> tuple[int, int]:
    """A zigzag varint (Kafka's ByteUtils.readVarint): (value, position after it)."""
    raw, position = read_unsigned_varint(buf, position)
    return (raw >> 1) ^ -(raw & 1), position


def read_varlong(buf, position: int) -> tuple[int, int]:
    """A zigzag varlong (ByteUtils.readVarlong)."""
    raw, position = read_unsigned_varint(buf, position, MAX_VARLONG_BYTES)
    return (raw >> 1) ^ -(raw & 1), position


def write_unsigned_varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def write_varint(value: int) -> bytes:
    """Zigzag varint (and varlong: the encoding is the same, only the range differs)."""
    return write_unsigned_varint((value << 1) ^ (value >> 63))


class Reader:
    """A cursor over one schema-encoded message (classic or flexible), for the small control, metadata and
    group-coordinator records: not on the hot path of record decoding."""

    __slots__ = ("buf", "position")

    def __init__(self, buf, position: int = 0):
        self.buf = buf
        self.position = position

    def _take(self, size: int, what: str) -> int:
        start = self.position
        if size < 0 or start + size > len(self.buf):
            raise _truncated(what, start)
        self.position = start + size
        return start

    def int8(self) -> int:
        start = self._take(1, "an int8")
        value = self.buf[start]
        return value - 256 if value > 127 else value

    def int16(self) -> int:
        return INT16.unpack_from(self.buf, self._take(2, "an int16"))[0]

    def uint16(self) -> int:
        return self.int16() & 0xFFFF

    def int32(self) -> int:
        return INT32.unpack_from(self.buf, self._take(4, "an int32"))[0]

    def int64(self) -> int:
        return INT64.unpack_from(self.buf, self._take(8, "an int64"))[0]

    def uuid(self) -> bytes:
        start = self._take(16, "a uuid")
        return bytes(self.buf[start : start + 16])

    def unsigned_varint(self) -> int:
        value, self.position = read_unsigned_varint(self.buf, self.position)
        return value

    def raw(self, size: int, what: str = "bytes") -> bytes:
        start = self._take(size, what)
        return bytes(self.buf[start : start + size])

    def _text(self, size: int) -> str:
        start = self.position
        data = self.raw(size, "a string")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as error:
            raise KafkaDecodeError("bad-string", "a string that is not UTF-8", start) from error

    def string(self, *, compact: bool, nullable: bool = False) -> str | None:
        """A STRING (int16 length) or COMPACT_STRING (unsigned varint length + 1); -1 / 0 is null."""
        start = self.position
        size = self.unsigned_varint() - 1 if compact else self.int16()
        if size < 0:
            if nullable and size == -1:
                return None
            raise KafkaDecodeError("bad-string", f"a string of length {size}", start)
        return self._text(size)

    def bytes_field(self, *, compact: bool) -> bytes | None:
        start = self.position
        size = self.unsigned_varint() - 1 if compact else self.int32()
        if size < -1:
            raise KafkaDecodeError("bad-bytes", f"a bytes field of length {size}", start)
        return None if size == -1 else self.raw(size)

    def array_length(self, *, compact: bool) -> int:
        """An array's element count, checked against the bytes left (each element takes one byte at least)."""
        start = self.position
        count = self.unsigned_varint() - 1 if compact else self.int32()
        if count < -1 or count > len(self.buf) - self.position:
            raise KafkaDecodeError("bad-array", f"an array of {count} elements", start)
        return max(count, 0)

    def tagged_fields(self) -> None:
        """Skip a flexible version's tagged fields (none of the ones we read is tagged)."""
        for _ in range(self._tag_count()):
            self.unsigned_varint()  # tag
            size = self.unsigned_varint()
            self._take(size, "a tagged field")

    def _tag_count(self) -> int:
        start = self.position
        count = self.unsigned_varint()
        if count > len(self.buf) - self.position:
            raise KafkaDecodeError("bad-array", f"{count} tagged fields", start)
        return count

    def at_end(self) -> bool:
        return self.position >= len(self.buf)
