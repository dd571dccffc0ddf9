"""Machine formats (JSON, JSONL, CSV) for the dataclass snapshots the store and probes produce.

Keys are the dataclass field names, which carry their unit (`size_bytes`, `interval_s`), in declaration order.
"""

from __future__ import annotations

import csv
import dataclasses
import enum
import json
import math
from collections.abc import Iterable, Mapping
from pathlib import PurePath
from typing import Any, TextIO


def to_jsonable(value: Any) -> Any:
    """Turn a snapshot (dataclasses, enums, paths, tuples) into plain JSON values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: to_jsonable(getattr(value, field.name)) for field in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, Mapping):
        return {str(key): to_jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(item) for item in value]
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN or infinity; an absent measurement is null, never a fake number
    return value


def write_json(value: Any, stream: TextIO) -> None:
    json.dump(to_jsonable(value), stream, indent=2, ensure_ascii=False)
    stream.write("\n")


def write_jsonl(value: Any, stream: TextIO) -> None:
    """One object per line, flushed at once so a consumer of a stream sees each interval as it ends."""
    stream.write(json.dumps(to_jsonable(value), ensure_ascii=False, separators=(",", ":")))
    stream.write("\n")
    stream.flush()


def write_csv(rows: Iterable[Any], stream: TextIO) -> None:
    """Flat rows (dataclasses or mappings) as CSV with a header taken from the first row."""
    writer: csv.DictWriter | None = None
    for row in rows:
        record = to_jsonable(row)
        if writer is None:
            writer = csv.DictWriter(stream, fieldnames=list(record), extrasaction="ignore")
            writer.writeheader()
        writer.writerow({key: _csv_cell(item) for key, item in record.items()})


def _csv_cell(value: Any) -> Any:
    if isinstance(value, list | dict):
        return json.dumps(value, separators=(",", ":"))
    return "" if value is None else value
