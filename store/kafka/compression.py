"""Kafka's compression codecs, decoded through cramjam (snappy, lz4, zstd) and zlib (gzip).

What each codec puts on disk (clients/.../common/compress/*.java):
- gzip: a gzip stream (Java's GZIPOutputStream);
- snappy: xerial's SnappyOutputStream framing (a 16-byte header `\\x82SNAPPY\\x00`, version and compatible
  version, then [int32 length][raw snappy block]...); very old producers wrote raw snappy, read as such;
- lz4: the LZ4 frame format. Kafka before 0.10 (magic 0) computed the frame descriptor's header checksum
  over the magic number too (KAFKA-1493); Kafka still accepts that for magic 0 (KafkaLZ4BlockInputStream's
  ignoreFlagDescriptorChecksum), and so do we: for magic 0 the checksum byte is recomputed before decoding;
- zstd: a zstd frame.
"""

from __future__ import annotations

import struct
import zlib

import cramjam

from store.kafka.findings import FindingKind, KafkaDecodeError

NONE, GZIP, SNAPPY, LZ4, ZSTD = range(5)
CODEC_NAMES = ("none", "gzip", "snappy", "lz4", "zstd")
CODEC_IDS = {name: codec for codec, name in enumerate(CODEC_NAMES)}

XERIAL_MAGIC = b"\x82SNAPPY\x00"
XERIAL_HEADER_BYTES = 16  # magic (8), version int32, compatible version int32
LZ4_FRAME_MAGIC = b"\x04\x22\x4d\x18"  # 0x184D2204, little-endian
_BLOCK_LENGTH = struct.Struct(">i")
# A batch decompressing to more than this is reported, not decoded: producers cap a batch at batch.size
# (16 KiB by default) and brokers at message.max.bytes (1 MiB) compressed, so only damage gets here, and a
# damaged length must not size an allocation (cramjam aborts the process when one fails).
MAX_DECOMPRESSED_BYTES = 256 << 20
SNAPPY_MAX_RATIO = 32  # a snappy element of 3 bytes copies at most 64: no valid block expands more than ~21x


def codec_name(codec: int) -> str:
    return CODEC_NAMES[codec] if 0 <= codec < len(CODEC_NAMES) else f"unknown codec {codec}"


def decompress(codec: int, payload, *, magic: int) -> bytes:
    """The decompressed bytes of a batch's records (v2) or a wrapper message's value (v0/v1)."""
    try:
        if codec == GZIP:
            return _gunzip(payload)
        if codec == SNAPPY:
            return _unsnappy(payload)
        if codec == LZ4:
            return bytes(cramjam.lz4.decompress(_kafka_1493_fixed(payload) if magic == 0 else payload))
        if codec == ZSTD and magic >= 2:
            return bytes(cramjam.zstd.decompress(payload))
    except (cramjam.DecompressionError, zlib.error, ValueError) as error:
        raise KafkaDecodeError(
            FindingKind.DECOMPRESSION_FAILED, f"{codec_name(codec)} payload does not decompress: {error}"
        ) from error
    raise KafkaDecodeError(FindingKind.UNKNOWN_CODEC, f"{codec_name(codec)} in a magic {magic} batch")


def compress(codec: int, data: bytes) -> bytes:
    """What Kafka's producer writes for `codec` (xerial-framed snappy, lz4 frames with independent blocks)."""
    if codec == GZIP:
        return bytes(cramjam.gzip.compress(data))
    if codec == SNAPPY:
        return xerial_snappy(data)
    if codec == LZ4:
        return bytes(cramjam.lz4.compress(data))
    if codec == ZSTD:
        return bytes(cramjam.zstd.compress(data))
    raise ValueError(f"no compression for {codec_name(codec)}")


def xerial_snappy(data: bytes, block_bytes: int = 32 * 1024) -> bytes:
    """SnappyOutputStream's framing, as Kafka's producer writes it (32 KiB blocks by default)."""
    parts = [XERIAL_MAGIC, struct.pack(">ii", 1, 1)]
    for start in range(0, len(data), block_bytes):
        block = bytes(cramjam.snappy.compress_raw(data[start : start + block_bytes]))
        parts += [_BLOCK_LENGTH.pack(len(block)), block]
    return b"".join(parts)


def _gunzip(payload) -> bytes:
    decompressor = zlib.decompressobj(zlib.MAX_WBITS | 16)
    data = decompressor.decompress(payload, MAX_DECOMPRESSED_BYTES)
    if decompressor.unconsumed_tail:
        raise ValueError(f"it holds more than {MAX_DECOMPRESSED_BYTES} bytes")
    if not decompressor.eof:
        raise ValueError("the gzip stream ends early")
    return data


def _snappy_block(block) -> bytes:
    """A raw snappy block, once its declared length (the varint it starts with) is one it can hold."""
    declared = cramjam.snappy.decompress_raw_len(block)
    if declared > min(MAX_DECOMPRESSED_BYTES, SNAPPY_MAX_RATIO * len(block) + 64):
        raise ValueError(f"a snappy block of {len(block)} bytes declares {declared} bytes")
    return bytes(cramjam.snappy.decompress_raw(block))


def _unsnappy(payload) -> bytes:
    if bytes(payload[: len(XERIAL_MAGIC)]) != XERIAL_MAGIC:
        return _snappy_block(payload)
    if len(payload) < XERIAL_HEADER_BYTES:
        raise ValueError("a xerial header cut short")
    blocks = []
    position = XERIAL_HEADER_BYTES
    while position < len(payload):
        if position + 4 > len(payload):
            raise ValueError(f"a xerial block length cut short at {position}")
        (size,) = _BLOCK_LENGTH.unpack_from(payload, position)
        position += 4
        if size < 0 or position + size > len(payload):
            raise ValueError(f"a xerial block of {size} bytes at {position - 4} runs past the payload")
        blocks.append(_snappy_block(payload[position : position + size]))
        position += size
    return b"".join(blocks)


def _kafka_1493_fixed(payload) -> bytes:
    """An lz4 frame whose header checksum is recomputed over the frame descriptor alone (KAFKA-1493)."""
    data = bytes(payload)
    if len(data) < 7 or data[:4] != LZ4_FRAME_MAGIC:
        return data  # not a frame: cramjam says why
    flags = data[4]
    descriptor_end = 6 + (8 if flags & 0x08 else 0) + (4 if flags & 0x01 else 0)
    if len(data) <= descriptor_end:
        return data
    checksum = (xxh32(data[4:descriptor_end]) >> 8) & 0xFF
    return data[:descriptor_end] + bytes((checksum,)) + data[descriptor_end + 1 :]


_P1, _P2, _P3, _P4, _P5 = 2654435761, 2246822519, 3266489917, 668265263, 374761393
_MASK = 0xFFFFFFFF


def _rotl(value: int, bits: int) -> int:
    return ((value << bits) | (value >> (32 - bits))) & _MASK


def xxh32(data: bytes, seed: int = 0) -> int:
    """XXH32 of a short input (an lz4 frame descriptor: 2 to 14 bytes); the lz4 header checksum is its
    second byte. Only inputs under 16 bytes occur, so the 16-byte stripe loop is not needed."""
    if len(data) >= 16:
        raise ValueError("xxh32 here hashes frame descriptors only (under 16 bytes)")
    acc = (seed + _P5 + len(data)) & _MASK
    position = 0
    while position + 4 <= len(data):
        (word,) = struct.unpack_from("<I", data, position)
        acc = (_rotl((acc + word * _P3) & _MASK, 17) * _P4) & _MASK
        position += 4
    for byte in data[position:]:
        acc = (_rotl((acc + byte * _P5) & _MASK, 11) * _P1) & _MASK
    acc ^= acc >> 15
    acc = (acc * _P2) & _MASK
    acc ^= acc >> 13
    acc = (acc * _P3) & _MASK
    return acc ^ (acc >> 16)
