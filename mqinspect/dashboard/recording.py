"""Record snapshots as JSON Lines (`mqinspect top --record FILE.jsonl`) and read them back for
`mqinspect replay FILE`: one TopSnapshot per line, in the same keys as `top --format json`.

Reading rebuilds the dataclasses from their field types, so a replayed frame is equal to the recorded one
and draws the same.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import types
import typing
from functools import cache
from pathlib import Path
from typing import Any, TextIO

from mqinspect.dashboard.snapshot import SCHEMA, TopSnapshot
from mqinspect.errors import BadInput
from mqinspect.render.machine import write_jsonl


def _open(path: Path, mode: str) -> TextIO:
    """A recording named *.gz is gzip-compressed: a store with hundreds of segments records ~1 KiB per segment
    per interval, mostly the same from one interval to the next, which compresses about 20 to 1."""
    if path.suffix == ".gz":
        return gzip.open(path, mode + "t", encoding="utf-8")
    return path.open(mode, encoding="utf-8")


class SnapshotRecorder:
    """Appends each snapshot to a JSONL file (gzip-compressed when named *.gz), flushed per line so a killed
    dashboard loses at most the last one (with gzip, the last block)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._stream: TextIO = _open(self.path, "w")

    def write(self, snapshot: TopSnapshot) -> None:
        write_jsonl(snapshot, self._stream)

    def close(self) -> None:
        self._stream.close()

    def __enter__(self) -> SnapshotRecorder:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def read_recording(path: Path) -> tuple[TopSnapshot, ...]:
    """Every snapshot of a recording; BadInput (with the line number) for anything that is not one."""
    frames = []
    try:
        with _open(Path(path), "r") as lines:
            for number, line in enumerate(lines, start=1):
                if line.strip():
                    frames.append(_frame(path, number, line))
    except (gzip.BadGzipFile, EOFError, UnicodeDecodeError) as error:
        raise BadInput(f"{path}: not a readable recording ({error})") from None
    if not frames:
        raise BadInput(f"{path}: no snapshots in this file (record some with `mqinspect top --record FILE`)")
    return tuple(frames)


def _frame(path: Path, number: int, line: str) -> TopSnapshot:
    try:
        document = json.loads(line)
    except json.JSONDecodeError as error:
        raise BadInput(f"{path}, line {number}: not JSON ({error.msg})") from None
    if not isinstance(document, dict) or document.get("schema") != SCHEMA:
        raise BadInput(f"{path}, line {number}: not a `mqinspect top` snapshot (schema {SCHEMA} expected)")
    try:
        return from_jsonable(TopSnapshot, document)
    except (TypeError, ValueError, KeyError) as error:
        raise BadInput(f"{path}, line {number}: not a valid snapshot ({error})") from None


def from_jsonable(kind: Any, value: Any) -> Any:
    """The inverse of render.machine.to_jsonable for the types snapshots use: dataclasses, tuples,
    dicts, optionals and plain values."""
    if value is None:
        return None
    if dataclasses.is_dataclass(kind):
        hints = _field_types(kind)
        known = {name: from_jsonable(hints[name], item) for name, item in value.items() if name in hints}
        return kind(**known)
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = [option for option in typing.get_args(kind) if option is not type(None)]
        structured = [
            option for option in options if dataclasses.is_dataclass(option) or typing.get_origin(option)
        ]
        return from_jsonable(structured[0], value) if structured and len(options) == 1 else value
    if origin is tuple:
        arguments = typing.get_args(kind)
        item_kind = arguments[0] if len(arguments) == 2 and arguments[1] is Ellipsis else Any
        return tuple(from_jsonable(item_kind, item) for item in value)
    if origin is dict:
        _key_kind, item_kind = typing.get_args(kind)
        return {key: from_jsonable(item_kind, item) for key, item in value.items()}
    if kind is float and isinstance(value, int):
        return float(value)
    return value


@cache
def _field_types(kind: type) -> dict[str, Any]:
    hints = typing.get_type_hints(kind)
    return {field.name: hints[field.name] for field in dataclasses.fields(kind)}
