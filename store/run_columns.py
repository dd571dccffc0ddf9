"""Back-to-back CommitLog records decoded as columns: a field's values for a whole run, with no object per
record (`store dump --format jsonl`'s reader).

`decode_columns` accepts a record only where `codec.decode_run` would, and decodes the same values. The
TOTALSIZE chain is followed a stretch of same-size records at a time (strided byte compares); a stretch is
unpacked a whole record at a time by one struct, other runs a field at a time; everything else (the bodies'
CRCs, topics, properties) is one C-level pass per field over the run. It takes the common shape only: one
magic code and host layout, and the same property names in the same order in every record, each
\\x01-separated pair closed by \\x02 (what RocketMQ's producers write). It stops before the first record that
is not a whole valid message or ends in what may be a `__CRC32#` tail, and declines (None) a run whose
records are not of that shape; the caller reads those records otherwise (`decode_run`, `decode_record`),
which say what they are.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import chain, repeat
from operator import add, eq, itemgetter, le, or_, sub

from store import codec
from store.java_checksums import masked_crc32s

_HEAD = codec._RUN_HEAD  # TOTALSIZE, MAGICCODE, SYSFLAG
_LAYOUTS = codec._RUN_LAYOUTS
_SMALLEST_RECORD = codec._SMALLEST_RECORD
_PROPERTIES_LENGTH = codec._PROPERTIES_LENGTH
_PROPERTIES_LENGTH_SIZE = _PROPERTIES_LENGTH.size
_HOST_LAYOUT_BITS = 0x30  # the sysflag's IPv6 bits: which header struct a record has
_BODY_LENGTH = -1  # the header's last value
_NAME_END, _PAIR_END = codec.NAME_VALUE_SEPARATOR, codec.PROPERTY_SEPARATOR
_SEPARATORS_ONLY = bytes(byte for byte in range(256) if byte not in (1, 2))  # bytes.translate's deletions
_PAIR = b"\x01\x02"
_PAIR_END_BYTE = b"\x02"
_LAST_BYTE_MAY_END_TAIL = bytes(0xFF if byte == 2 else 0 for byte in range(256))
_DIGIT = bytes(0xFF if 0x30 <= byte <= 0x39 else 0 for byte in range(256))
_first = itemgetter(0)
_STRETCH_RECORDS = 8  # records of one size in a row, on average, for a run to be unpacked a stretch at a time
_SHAPE_RUN_RECORDS = 64  # records of one shape at least before a run may stop at another shape
_HEADER_VALUES = len(codec._HEADERS[0].unpack(bytes(codec._HEADERS[0].size)))
_SYSFLAG_LAYOUT_BYTE = codec.SYSFLAG_POSITION + 3  # the big-endian SYSFLAG's low byte: its IPv6 bits
_LAYOUT_BITS_ONLY = bytes(byte & _HOST_LAYOUT_BITS for byte in range(256))


@dataclass(frozen=True, slots=True)
class RunColumns:
    """`count` records back to back from `positions[0]` to `end` (offsets into the decoded view): their
    fixed headers' values as columns (`headers[i]` is the i-th value of codec's header: TOTALSIZE first,
    the body length last), where their bodies start, their topics, and their properties: every record has
    the names `property_names` in that order, `property_values[j]` holds name j's values."""

    positions: list[int]
    headers: list[list]
    body_starts: list[int]
    topics: list[str]
    property_names: tuple[str, ...]
    property_values: list[list[str]]
    end: int

    @property
    def count(self) -> int:
        return len(self.positions)

    def head(self, count: int) -> RunColumns:
        """The first `count` records."""
        if count >= self.count:
            return self
        end = self.positions[count]
        return RunColumns(
            self.positions[:count], [column[:count] for column in self.headers], self.body_starts[:count],
            self.topics[:count], self.property_names, [values[:count] for values in self.property_values],
            end,
        )  # fmt: skip

    def records(self) -> list[codec.RunRecord]:
        """The same records as `codec.decode_run` makes them."""
        names = self.property_names
        properties = [
            dict(zip(names, values, strict=True)) for values in zip(*self.property_values, strict=True)
        ]
        if not names:
            properties = [{} for _ in self.positions]
        return list(
            map(
                codec.RunRecord,
                self.positions,
                zip(*self.headers, strict=True),
                self.body_starts,
                self.topics,
                properties,
            )
        )


class _TopicMemo(dict):
    """A topic's bytes -> its text (None: not UTF-8), each decoded once."""

    def __missing__(self, raw: bytes | memoryview) -> str | None:
        try:
            text = str(raw, "utf-8")
        except UnicodeDecodeError:
            text = None
        if len(self) > 4096:  # a store's topics are few; damage must not pile up here
            self.clear()
        self[bytes(raw)] = text
        return text


_TOPICS = _TopicMemo()


def decode_columns(
    view: memoryview,
    position: int,
    end: int,
    *,
    check_crc: bool,
    max_records: int,
    max_record_size: int = codec.DEFAULT_MAX_RECORD_SIZE,
) -> RunColumns | None:
    """The records of the common shape back to back in `view[position:end]`, at most `max_records`, as
    columns; None when the record at `position` is not of that shape (or not whole and valid). `view` must
    be read-only (bytes)."""
    if position > end - _SMALLEST_RECORD or not view.readonly:  # a read-only view's slices hash (topics)
        return None
    _, magic, sysflag = _HEAD.unpack_from(view, position)
    layouts = _LAYOUTS.get(magic)
    if layouts is None:
        return None
    host_layout = sysflag & _HOST_LAYOUT_BITS
    layout = layouts[host_layout >> 4]
    positions, stretches = _chain(
        view, position, end, magic, host_layout, layout[4], max_records, max_record_size
    )
    if not positions:
        return None
    if len(positions) > len(stretches) * _STRETCH_RECORDS:
        of_one_size = _of_one_size(view, positions, stretches, layout, check_crc)
        if of_one_size is not None:
            return of_one_size
    return _Columns(view, positions, layout, check_crc).decoded()


def _of_one_size(
    view: memoryview, positions: list[int], stretches: list[tuple[int, int]], layout: tuple, check_crc: bool
) -> RunColumns | None:
    """The run's records a stretch of one size at a time (`_Columns.of_one_size`), as long as each is whole
    and of the first one's property names; None when the first is not, or when a stretch of another shape
    comes within _SHAPE_RUN_RECORDS (the run is left to `decoded()`: a walk of many short runs would chain
    the rest of its window again for each)."""
    runs, index = [], 0
    for count, size in stretches:
        bounds = positions[index : index + count + 1]
        run = _Columns(view, bounds, layout, check_crc).of_one_size(size)
        if run is None or (runs and run.property_names != runs[0].property_names):
            if index < _SHAPE_RUN_RECORDS:
                return None
            break
        runs.append(run)
        if run.count < count:
            break
        index += count
    if len(runs) < 2:
        return runs[0] if runs else None
    return RunColumns(
        list(chain.from_iterable(run.positions for run in runs)),
        [list(chain.from_iterable(run.headers[field] for run in runs)) for field in range(_HEADER_VALUES)],
        list(chain.from_iterable(run.body_starts for run in runs)),
        list(chain.from_iterable(run.topics for run in runs)),
        runs[0].property_names,
        [
            list(chain.from_iterable(run.property_values[name] for run in runs))
            for name in range(len(runs[0].property_names))
        ],
        runs[-1].end,
    )


def _chain(
    view, position, end, magic, host_layout, fixed, max_records, max_record_size
) -> tuple[list[int], list[tuple[int, int]]]:
    """Where the records of this magic code and host layout start, back to back from `position`, each with
    a TOTALSIZE that fits (its layout's minimum, the maximum, `end`); the end of the last one last. And
    the stretches of records of one size: (how many, their size).

    Records of one size follow each other in a producer's runs: they are found a stretch at a time
    (`_same_size`), with no Python step per record."""
    positions = [position]
    head, last_start, left, stretches = _HEAD.unpack_from, end - _SMALLEST_RECORD, max_records, []
    smallest = max(fixed, _SMALLEST_RECORD)
    while left and position <= last_start:
        total, record_magic, sysflag = head(view, position)
        if (
            record_magic != magic
            or sysflag & _HOST_LAYOUT_BITS != host_layout
            or not smallest <= total <= max_record_size
            or position + total > end
        ):
            break
        same = _same_size(view, position, total, min(left, (end - position) // total))
        positions += range(position + total, position + (same + 1) * total, total)
        position += same * total
        left -= same
        stretches.append((same, total))
    return (positions, stretches) if len(positions) > 1 else ([], [])


def _same_size(view: memoryview, position: int, total: int, most: int) -> int:
    """How many records (1 at least, `most` at most) from `position` on start as the one there does: the
    same TOTALSIZE, MAGICCODE and host layout bits, so the same size. Each of those bytes is compared for
    the whole stretch at once (a strided slice)."""
    if most < 2 or view[position + total : position + total + 8] != view[position : position + 8]:
        return 1
    stop = position + most * total
    same = most
    for byte in range(_SYSFLAG_LAYOUT_BYTE + 1):
        if 8 <= byte < _SYSFLAG_LAYOUT_BYTE:
            continue
        column = bytes(view[position + byte : stop : total])
        if byte == _SYSFLAG_LAYOUT_BYTE:
            column = column.translate(_LAYOUT_BITS_ONLY)
        expected = column[:1] * len(column)
        if column != expected:
            same = min(same, _common_prefix(column, expected))
    return same


def _common_prefix(first: bytes, second: bytes) -> int:
    """How many leading bytes two bytes objects of one length share (binary search, C comparisons)."""
    low, high = 0, len(first)  # first[:low] == second[:low]; first[:high + 1] differs
    while low < high:
        middle = (low + high + 1) // 2
        if first[:middle] == second[:middle]:
            low = middle
        else:
            high = middle - 1
    return low


@functools.lru_cache(maxsize=64)
def _record_struct(
    header: str, body_length: int, topic_length_format: str, topic_length: int, properties_length: int
) -> struct.Struct:
    """A whole record: the header's values, the body, the topic's length and bytes, the properties' length
    and bytes (copying a body costs less than slicing a view of it)."""
    return struct.Struct(
        f"{header}{body_length}s{topic_length_format.lstrip('>')}{topic_length}s"
        f"{_PROPERTIES_LENGTH.format.lstrip('>')}{properties_length}s"
    )


class _Columns:
    """The column passes of one run. Each check keeps the records before the first that fails it: every
    per-record list here is cut there."""

    def __init__(self, view: memoryview, bounds: list[int], layout: tuple, check_crc: bool):
        self.view, self.check_crc = view, check_crc
        self.header, self.header_size, self.topic_length, self.topic_length_size, self.fixed = layout
        self.columns = {"starts": bounds[:-1], "ends": bounds[1:]}
        self.headers: list[list] = []  # the header's values as columns

    def __getattr__(self, name: str) -> list:  # a column, by its name
        return self.columns[name]

    def add(self, **columns: list) -> None:
        count = len(self.columns["starts"])
        for name, values in columns.items():
            self.columns[name] = values if len(values) == count else values[:count]

    def keep(self, checks: Callable[[], Iterable[bool]]) -> int:
        """How many records pass `checks()` (all before the first False; made again to find it)."""
        if not all(checks()):
            kept = list(checks()).index(False)
            self.columns = {name: values[:kept] for name, values in self.columns.items()}
            self.headers = [column[:kept] for column in self.headers]
        return len(self.columns["starts"])

    def decoded(self) -> RunColumns | None:
        view = self.view
        # the header's values in one list, record after record, sliced into columns (zip(*) is slower)
        values = list(chain.from_iterable(map(self.header.unpack_from, repeat(view), self.starts)))
        width = _HEADER_VALUES
        self.headers = [values[index::width] for index in range(width)]
        if not self.keep(lambda: map(le, repeat(0), self.headers[_BODY_LENGTH])) or not self.keep(
            lambda: map(le, self.headers[_BODY_LENGTH], map(sub, self.headers[0], repeat(self.fixed)))
        ):
            return None
        body_lengths = self.headers[_BODY_LENGTH]
        self.add(body_starts=list(map(add, self.starts, repeat(self.header_size))))
        self.add(body_ends=list(map(add, self.body_starts, body_lengths)))
        self.add(topic_starts=list(map(add, self.body_ends, repeat(self.topic_length_size))))
        topic_lengths = map(_first, map(self.topic_length.unpack_from, repeat(view), self.body_ends))
        self.add(topic_ends=list(map(add, self.topic_starts, topic_lengths)))
        self.add(properties_starts=list(map(add, self.topic_ends, repeat(_PROPERTIES_LENGTH_SIZE))))
        if not self.keep(lambda: map(le, self.topic_starts, self.topic_ends)) or not self.keep(
            lambda: map(le, self.properties_starts, self.ends)
        ):
            return None
        properties_ends = list(
            map(
                add,
                self.properties_starts,
                map(_first, map(_PROPERTIES_LENGTH.unpack_from, repeat(view), self.topic_ends)),
            )
        )
        if properties_ends != self.ends and not self.keep(lambda: map(eq, properties_ends, self.ends)):
            return None
        self.add(lasts=bytes(map(view.__getitem__, map(sub, self.ends, repeat(1)))))  # a bytes "column"
        if self.check_crc and not (self.keep(self.crc_checks) and self.keep(self.tail_checks)):
            return None
        topics = map(
            _TOPICS.__getitem__, map(view.__getitem__, map(slice, self.topic_starts, self.topic_ends))
        )
        self.add(topics=list(topics))
        if None in self.topics and not self.keep(lambda: [topic is not None for topic in self.topics]):
            return None
        properties = map(view.__getitem__, map(slice, self.properties_starts, self.ends))
        return self.finished(list(map(bytes, properties)))

    def finished(self, property_blobs: list[bytes]) -> RunColumns | None:
        shape = self.properties(property_blobs)
        if shape is None:
            return None
        return RunColumns(
            list(self.starts), self.headers, list(self.body_starts), self.topics, *shape, self.ends[-1]
        )

    def of_one_size(self, size: int) -> RunColumns | None:
        """`decoded()` of records all `size` bytes long, when their body, topic and properties lengths are
        the first one's too: one struct unpacks each whole record (header, lengths, topic, properties) and
        each field's positions are ranges. None when they are not all of that shape."""
        view, start, count = self.view, self.starts[0], len(self.starts)
        shape = self.record_shape(size)
        if shape is None:
            return None
        record, body_length, topic_length, properties_length = shape
        stop = start + count * size
        values = list(chain.from_iterable(record.iter_unpack(view[start:stop])))
        width = _HEADER_VALUES + 5  # the body, the topic's length and bytes, the properties' length and bytes
        columns = [values[index::width] for index in range(width)]
        body_lengths, bodies, topic_lengths, topics, properties_lengths, blobs = columns[_HEADER_VALUES - 1 :]
        if (
            body_lengths != [body_length] * count
            or topic_lengths != [topic_length] * count
            or properties_lengths != [properties_length] * count
        ):
            return None
        self.headers = columns[:_HEADER_VALUES]
        body_start = start + self.header_size
        properties_start = body_start + body_length + self.topic_length_size + topic_length
        properties_start += _PROPERTIES_LENGTH_SIZE
        self.add(
            body_starts=range(body_start, body_start + count * size, size),
            body_ends=range(body_start + body_length, body_start + body_length + count * size, size),
            properties_starts=range(properties_start, properties_start + count * size, size),
            lasts=bytes(view[start + size - 1 : stop : size]),
            bodies=bodies,
        )
        if self.check_crc and not (self.keep(self.crc_checks) and self.keep(self.tail_checks)):
            return None
        self.add(topics=list(map(_TOPICS.__getitem__, topics)))
        if None in self.topics and not self.keep(lambda: [topic is not None for topic in self.topics]):
            return None
        return self.finished(blobs)

    def record_shape(self, size: int) -> tuple[struct.Struct, int, int, int] | None:
        """The struct of a whole record like the first (`size` bytes), its body, topic and properties
        lengths; None when the first record's lengths do not add up to its size."""
        view, start = self.view, self.starts[0]
        body_length = self.header.unpack_from(view, start)[_BODY_LENGTH]
        if not 0 <= body_length <= size - self.fixed:
            return None
        topic_start = start + self.header_size + body_length + self.topic_length_size
        topic_length = self.topic_length.unpack_from(view, topic_start - self.topic_length_size)[0]
        properties_start = topic_start + topic_length + _PROPERTIES_LENGTH_SIZE
        if topic_length < 0 or properties_start > start + size:
            return None
        length_at = properties_start - _PROPERTIES_LENGTH_SIZE
        properties_length = _PROPERTIES_LENGTH.unpack_from(view, length_at)[0]
        if properties_start + properties_length != start + size:
            return None
        record = _record_struct(
            self.header.format, body_length, self.topic_length.format, topic_length, properties_length
        )
        return record, body_length, topic_length, properties_length

    def crc_checks(self) -> Iterable[bool]:
        """Each body's CRC is BODYCRC's (an empty body's is not checked)."""
        bodies = self.columns.get("bodies") or map(
            self.view.__getitem__, map(slice, self.body_starts, self.body_ends)
        )
        crcs = list(masked_crc32s(bodies))
        if crcs == self.headers[2]:
            return ()
        return map(or_, map(eq, crcs, self.headers[2]), map(eq, self.headers[_BODY_LENGTH], repeat(0)))

    def tail_checks(self) -> Iterable[bool]:
        """No record's properties end in a zero byte or what may be a `__CRC32#` tail (`decode_record` checks
        those): the last two bytes of each record, compared a run at a time."""
        view, ends, lasts = self.view, self.ends, self.lasts
        digits_before = bytes(map(view.__getitem__, map(sub, ends, repeat(2)))).translate(_DIGIT)
        if 0 not in lasts and not int.from_bytes(lasts.translate(_LAST_BYTE_MAY_END_TAIL)) & int.from_bytes(
            digits_before
        ):
            return ()
        return [
            not (last in (0, 2) and codec._tail_to_check(view, start, end))
            for last, start, end in zip(lasts, self.properties_starts, ends, strict=True)
        ]

    def properties(self, blobs: list[bytes]) -> tuple[tuple[str, ...], list[list[str]]] | None:
        """The property names every record has, in order, and each name's values (`blobs`: the records'
        properties); None when they are not all of the first one's shape (the run is not cut for it)."""
        count = len(self.starts)
        blobs = blobs[:count]
        joined = b"".join(blobs)
        if not joined:
            return (), []
        pairs = blobs[0].count(_PAIR_END_BYTE)
        if (
            not pairs
            or list(map(bytes.count, blobs, repeat(_PAIR_END_BYTE))).count(pairs) != count
            or joined.translate(None, _SEPARATORS_ONLY) != _PAIR * (pairs * count)
            or _PAIR in joined  # an empty value
            or b"\x02\x01" in joined  # an empty name
            or joined[0] == 1
            or self.lasts != _PAIR_END_BYTE * count
        ):
            return None
        try:
            text = joined.decode("utf-8")  # each blob ends in \x02: no character spans two records
        except UnicodeDecodeError:
            return None
        items = text.replace(_PAIR_END, _NAME_END).split(_NAME_END)
        step = 2 * pairs
        names = tuple(items[0:step:2])
        if len(set(names)) != pairs or any(
            items[index:-1:step].count(name) != count
            for index, name in zip(range(0, step, 2), names, strict=True)
        ):
            return None
        return names, [items[index:-1:step] for index in range(1, step, 2)]
