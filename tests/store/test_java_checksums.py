"""RocketMQ's masked CRC is computed in one place (store/java_checksums.py) and agrees with Java's values, and
so does String.hashCode (tagsCode, index keys)."""

from __future__ import annotations

import ast
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from store.java_checksums import java_string_hash, masked_crc32, masked_crc32s

REPO = Path(__file__).resolve().parents[2]
PRODUCT_PACKAGES = ("store", "probes", "mqinspect")
CHECKSUMS_MODULE = REPO / "store" / "java_checksums.py"
KAFKA_FORMAT = REPO / "store" / "kafka"  # Kafka's own checksums (legacy messages' unmasked CRC-32)


def _crc32_calls(path: Path) -> list[int]:
    """Lines of `path` that call or name zlib's or binascii's crc32."""
    tree = ast.parse(path.read_text(), str(path))
    return [
        node.lineno
        for node in ast.walk(tree)
        if (isinstance(node, ast.Attribute) and node.attr == "crc32")
        or (isinstance(node, ast.ImportFrom) and any(alias.name == "crc32" for alias in node.names))
    ]


def test_only_java_checksums_computes_a_crc32():
    elsewhere = {
        str(path.relative_to(REPO)): lines
        for package in PRODUCT_PACKAGES
        for path in sorted((REPO / package).rglob("*.py"))
        if path != CHECKSUMS_MODULE and KAFKA_FORMAT not in path.parents and (lines := _crc32_calls(path))
    }
    assert elsewhere == {}
    assert _crc32_calls(CHECKSUMS_MODULE)  # the scan does see a crc32 where there is one


def test_the_many_buffer_form_gives_the_one_buffer_values():
    buffers = [b"", b"Hello RocketMQ", bytearray(b"\xff" * 4096), memoryview(b"abc")[1:]]
    assert list(masked_crc32s(buffers)) == [masked_crc32(buffer) for buffer in buffers]
    assert masked_crc32(b"Hello RocketMQ") == 1774740973  # UtilAll.crc32, as RocketMQ's Java writes it
    assert all(0 <= value <= 0x7FFFFFFF for value in masked_crc32s([b"\x00" * n for n in range(64)]))


def _hash_code_unit_by_unit(text: str) -> int:
    """Java's String.hashCode as its definition reads: h = 31 * h + c over the UTF-16 code units, in int32."""
    value = 0
    units = text.encode("utf-16-be")
    for high, low in zip(units[0::2], units[1::2], strict=True):
        value = (31 * value + (high << 8 | low)) & 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


@given(st.text(max_size=64) | st.text(min_size=4090, max_size=4200))
@settings(max_examples=300, deadline=None)
def test_java_string_hash_is_hash_code(text):
    """The sum of products in C gives String.hashCode for any text: astral characters (two code units),
    lengths around the precomputed powers' 4,096 units."""
    assert java_string_hash(text) == _hash_code_unit_by_unit(text)


def test_java_string_hash_known_values():
    # "hello".hashCode() is a well-known Java value; "TagA" = ((84*31 + 97)*31 + 103)*31 + 65; the emoji is
    # the surrogate pair D83D DE00: 55357*31 + 56832.
    assert [java_string_hash(text) for text in ("", "a", "hello", "TagA", "😀")] == [
        0, 97, 99162322, 2598919, 1772899,
    ]  # fmt: skip
