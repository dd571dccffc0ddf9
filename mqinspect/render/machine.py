"""Machine formats (JSON, JSONL, CSV) for the dataclass snapshots the store and probes produce.

Keys are the dataclass field names, which carry their unit (`size_bytes`, `interval_s`), in declaration order:
the encoding is mqinspect.jsonable's, shared with the recordings and the demo's children.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from typing import Any, TextIO

from mqinspect.jsonable import json_line, to_jsonable

# write_json joins this many encoder pieces per write: json.dump writes each piece (a key, a comma) with a
# call of its own, which was most of `store segments --format json` on 1,537 files (890,000 writes).
PIECES_PER_WRITE = 8192


def write_json(value: Any, stream: TextIO) -> None:
    pieces: list[str] = []
    for piece in json.JSONEncoder(indent=2, ensure_ascii=False).iterencode(to_jsonable(value)):
        pieces.append(piece)
        if len(pieces) >= PIECES_PER_WRITE:
            stream.write("".join(pieces))
            pieces.clear()
    pieces.append("\n")
    stream.write("".join(pieces))


def write_jsonl(value: Any, stream: TextIO) -> None:
    """One object per line, flushed at once so a consumer of a stream sees each interval as it ends."""
    stream.write(json_line(value) + "\n")
    stream.flush()


def write_csv(rows: Iterable[Any], stream: TextIO) -> None:
    """Flat rows (dataclasses or mappings) as CSV with a header taken from the first row."""
    writer = CsvRows(stream)
    for row in rows:
        writer.write(row)


class CsvRows:
    """CSV written one row at a time, for a stream: the header from the first row (a dataclass or mapping)."""

    def __init__(self, stream: TextIO):
        self._stream = stream
        self._writer: csv.DictWriter | None = None

    def write(self, row: Any) -> None:
        record = to_jsonable(row)
        if self._writer is None:
            self._writer = csv.DictWriter(self._stream, fieldnames=list(record), extrasaction="ignore")
            self._writer.writeheader()
        self._writer.writerow({key: _csv_cell(item) for key, item in record.items()})


def _csv_cell(value: Any) -> Any:
    if isinstance(value, list | dict):
        return json.dumps(value, separators=(",", ":"))
    return "" if value is None else value
