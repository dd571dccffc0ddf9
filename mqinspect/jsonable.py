"""Snapshots as plain JSON values and back: the one encoding behind `--format json`, JSON Lines streams,
`top --record` files and the demo children's messages.

`to_jsonable` turns the dataclass snapshots the store, the probes and the sampler produce into dicts, lists
and plain values; keys are the dataclass field names, which carry their unit (`size_bytes`, `interval_s`), in
declaration order. `from_jsonable` rebuilds the dataclasses from their field types, so that a recorded frame
read back is equal to the one recorded. Not drawing: the data side writes with it as well as the renderers.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import types
import typing
from collections.abc import Mapping
from functools import cache
from pathlib import PurePath
from typing import Any

_PLAIN_TYPES = frozenset({int, str, bool, type(None)})


def to_jsonable(value: Any) -> Any:
    """Turn a snapshot (dataclasses, enums, paths, tuples) into plain JSON values."""
    if type(value) in _PLAIN_TYPES:  # most values of a big snapshot; enums (subclasses) go on below
        return value
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


def json_line(value: Any) -> str:
    """A snapshot as compact JSON on one line (no newline): one line of a JSON Lines stream or recording."""
    return json.dumps(to_jsonable(value), ensure_ascii=False, separators=(",", ":"))


def from_jsonable(kind: Any, value: Any) -> Any:
    """The inverse of `to_jsonable` for the types snapshots use: dataclasses, tuples, dicts, optionals and
    plain values. Keys the dataclass does not know are dropped; fields the value lacks take their defaults."""
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
