"""Record snapshots as JSON Lines (`mqinspect top --record FILE.jsonl`) and read them back for
`mqinspect replay FILE`: one TopSnapshot per line, in the same keys as `top --format json`.

Reading rebuilds the dataclasses from their field types (mqinspect.jsonable), so a replayed frame is equal to
the recorded one and draws the same. The file holds field names, never class or module paths, so moving the
snapshot types between modules leaves old recordings readable; a field added since a file was recorded takes
its default.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import TextIO

from mqinspect.errors import BadInput
from mqinspect.jsonable import from_jsonable, json_line
from mqinspect.sampling.snapshot import SCHEMA, TopSnapshot


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
        self._stream.write(json_line(snapshot) + "\n")
        self._stream.flush()

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
