"""RocketMQ's masked CRC is computed in one place (store/java_checksums.py) and agrees with Java's values."""

from __future__ import annotations

import ast
from pathlib import Path

from store.java_checksums import masked_crc32, masked_crc32s

REPO = Path(__file__).resolve().parents[2]
PRODUCT_PACKAGES = ("store", "probes", "mqinspect")
CHECKSUMS_MODULE = REPO / "store" / "java_checksums.py"


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
        if path != CHECKSUMS_MODULE and (lines := _crc32_calls(path))
    }
    assert elsewhere == {}
    assert _crc32_calls(CHECKSUMS_MODULE)  # the scan does see a crc32 where there is one


def test_the_many_buffer_form_gives_the_one_buffer_values():
    buffers = [b"", b"Hello RocketMQ", bytearray(b"\xff" * 4096), memoryview(b"abc")[1:]]
    assert list(masked_crc32s(buffers)) == [masked_crc32(buffer) for buffer in buffers]
    assert masked_crc32(b"Hello RocketMQ") == 1774740973  # UtilAll.crc32, as RocketMQ's Java writes it
    assert all(0 <= value <= 0x7FFFFFFF for value in masked_crc32s([b"\x00" * n for n in range(64)]))
