"""The checksum and the hashes RocketMQ's format depends on, computed exactly as Java computes them.

- BODYCRC and `__CRC32#`: java.util.zip.CRC32 (= zlib.crc32) with the top bit masked off (`UtilAll.crc32`).
  `masked_crc32` is the one place that masks it; `masked_crc32s` is the same for many buffers in one C loop
  (the batch encoder's per-message cost).
- Java `String.hashCode` over UTF-16 code units with int32 overflow: tagsCode and index key hashes.
"""

from __future__ import annotations

import operator
import sys
import zlib
from collections.abc import Iterable, Iterator

_CRC32_MASK = 0x7FFFFFFF
_mask_crc32 = _CRC32_MASK.__and__  # a bound method map() calls from C, with no Python frame per value

Buffer = bytes | bytearray | memoryview


def masked_crc32(data: Buffer) -> int:
    """`UtilAll.crc32`: CRC-32/IEEE, then `& 0x7FFFFFFF`, so the value is always >= 0."""
    return zlib.crc32(data) & _CRC32_MASK


def masked_crc32s(buffers: Iterable[Buffer]) -> Iterator[int]:
    """`masked_crc32` of each buffer, lazily, computed and masked in C."""
    return map(_mask_crc32, map(zlib.crc32, buffers))


# 31**k mod 2**32, highest power first: hashCode = sum(unit[i] * 31**(n-1-i)) mod 2**32, so a string of n
# UTF-16 units takes the last n of these, and the sum of products runs in C (index keys, tagsCode).
_HASHED_UNITS = 4096
_POWERS_OF_31 = [pow(31, exponent, 1 << 32) for exponent in range(_HASHED_UNITS - 1, -1, -1)]
_UTF16_NATIVE = "utf-16-le" if sys.byteorder == "little" else "utf-16-be"


def java_string_hash(text: str) -> int:
    """Java's `String.hashCode()` as a signed int32."""
    units = memoryview(text.encode(_UTF16_NATIVE)).cast("H")
    count = len(units)
    if count <= _HASHED_UNITS:
        value = sum(map(operator.mul, units, _POWERS_OF_31[_HASHED_UNITS - count :])) & 0xFFFFFFFF
    else:
        value = 0
        for unit in units:
            value = (31 * value + unit) & 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def tags_code(tags: str | None) -> int:
    """The ConsumeQueue tagsCode of a TAGS property: its Java hashCode, 0 when absent or empty."""
    return java_string_hash(tags) if tags else 0


def index_key_hash(key: str) -> int:
    """`IndexFile.indexKeyHashMethod`: abs(hashCode), with Integer.MIN_VALUE mapped to 0."""
    value = abs(java_string_hash(key))
    return 0 if value >= 1 << 31 else value
