"""`config/consumerOffset.json`: each consumer group's next queue offset (`ConsumerOffsetManager`).

The broker writes it with fastjson 1.x (`RemotingSerializable.toJson(this, prettyFormat=true)`), which is not
strict JSON: `Map<Integer, Long>` keys are written unquoted, `{"offsetTable":{"topic@group":{0:123,1:456}}}`.
So the file is read with a small parser that accepts those keys (and strict JSON), never with eval or a
regular-expression rewrite that could reach inside strings.

Loading and saving follow `ConfigManager.load`/`persist`: an empty or unreadable file falls back to
`consumerOffset.json.bak`; saving moves the old file to `.bak`, writes and fsyncs the new one, then fsyncs
the directory.

Decoding (`ConsumerOffsets.from_bytes`, `from_text`, `parse_fastjson`) raises ConsumerOffsetsError for any
content that is not such a file, and nothing else (the contract is in `store.errors`).
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from json.decoder import scanstring
from pathlib import Path
from typing import Any, NoReturn

from store.errors import StoreError

CONSUMER_OFFSET_FILE = "consumerOffset.json"  # BrokerPathConfigHelper.getConsumerOffsetPath
BACKUP_SUFFIX = ".bak"  # ConfigManager.persist / loadBak
TOPIC_GROUP_SEPARATOR = "@"  # ConsumerOffsetManager.TOPIC_GROUP_SEPARATOR
# Getter-derived fields the broker writes but never reads back; kept fresh by not copying them.
_DERIVED_FIELDS = frozenset({"groupTopicMap"})


class ConsumerOffsetsError(StoreError):
    """consumerOffset.json (and its .bak) cannot be read."""


def consumer_offset_path(store_root: Path) -> Path:
    """`BrokerPathConfigHelper.getConsumerOffsetPath`: <root>/config/consumerOffset.json."""
    return Path(store_root) / "config" / CONSUMER_OFFSET_FILE


# --- parsing ----------------------------------------------------------------------------------------------

_WHITESPACE = re.compile(r"[ \t\n\r]*")
_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(\.\d+)?([eE][-+]?\d+)?")
_INTEGER_KEY = re.compile(r"-?\d+")
_LITERALS = {"true": True, "false": False, "null": None}
# The file nests three deep (offsetTable -> "topic@group" -> queue), lmqOffsetTable the same. The limit keeps
# the recursive descent far from Python's recursion limit, whoever calls it.
MAX_NESTING = 64
# ConsumerOffsetManager's table is a Map<Integer, Long>: what a broker can read back.
_JAVA_INT_MIN, _JAVA_INT_MAX = -(2**31), 2**31 - 1
_JAVA_LONG_MIN, _JAVA_LONG_MAX = -(2**63), 2**63 - 1
_JAVA_INT_DIGITS = len(str(_JAVA_INT_MIN))


class _FastjsonReader:
    """Recursive descent over JSON plus fastjson's bare integer object keys (returned as Python ints).

    Also accepted, as fastjson does: a comma before a closing brace or bracket. Not accepted: single quotes
    and bare word keys, which fastjson reads but RocketMQ never writes.
    """

    def __init__(self, text: str):
        self.text = text
        self.position = 0
        self.depth = 0

    def document(self) -> Any:
        value = self.value()
        self.skip_whitespace()
        if self.position != len(self.text):
            self.fail("unexpected text after the document")
        return value

    def skip_whitespace(self) -> None:
        self.position = _WHITESPACE.match(self.text, self.position).end()

    def peek(self) -> str:
        self.skip_whitespace()
        return self.text[self.position : self.position + 1]

    def expect(self, char: str) -> None:
        if self.peek() != char:
            self.fail(f"expected {char!r}")
        self.position += 1

    def fail(self, reason: str) -> NoReturn:
        line = self.text.count("\n", 0, self.position) + 1
        found = self.text[self.position : self.position + 20] or "end of text"
        raise ConsumerOffsetsError(f"{reason} at line {line}, offset {self.position} (found {found!r})")

    def value(self) -> Any:
        char = self.peek()
        if char in ("{", "["):
            return self.nested(self.object if char == "{" else self.array)
        if char == '"':
            return self.string()
        if char == "-" or char.isdigit():
            return self.number()
        for word, literal in _LITERALS.items():
            if self.text.startswith(word, self.position):
                self.position += len(word)
                return literal
        self.fail("expected a value")

    def nested(self, read: Callable[[], Any]) -> Any:
        if self.depth >= MAX_NESTING:
            self.fail(f"nested deeper than {MAX_NESTING} levels")
        self.depth += 1
        value = read()
        self.depth -= 1
        return value

    def object(self) -> dict:
        self.expect("{")
        members: dict = {}
        while self.peek() != "}":
            key = self.key()
            self.expect(":")
            members[key] = self.value()
            if self.peek() != ",":
                break
            self.position += 1
        self.expect("}")
        return members

    def array(self) -> list:
        self.expect("[")
        items = []
        while self.peek() != "]":
            items.append(self.value())
            if self.peek() != ",":
                break
            self.position += 1
        self.expect("]")
        return items

    def key(self) -> str | int:
        if self.peek() == '"':
            return self.string()
        match = _INTEGER_KEY.match(self.text, self.position)
        if not match:
            self.fail("expected a quoted or integer key")
        self.position = match.end()
        return self.integer(match.group())

    def integer(self, digits: str) -> int:
        # int() refuses more than sys.get_int_max_str_digits() digits (4300): a number no Java long holds.
        try:
            return int(digits)
        except ValueError:
            self.fail(f"a number of {len(digits)} digits")

    def string(self) -> str:
        try:
            text, self.position = scanstring(self.text, self.position + 1, True)
        except json.JSONDecodeError as error:
            self.position = error.pos
            self.fail(f"bad string ({error.msg})")
        return text

    def number(self) -> int | float:
        match = _NUMBER.match(self.text, self.position)
        if not match:
            self.fail("bad number")
        self.position = match.end()
        is_integer = match.group(1) is None and match.group(2) is None
        return self.integer(match.group()) if is_integer else float(match.group())


def parse_fastjson(text: str) -> Any:
    """Parse JSON as fastjson writes it. Bare integer keys come back as ints, quoted keys as strings.
    ConsumerOffsetsError for anything else, saying where."""
    return _FastjsonReader(text).document()


# --- writing ----------------------------------------------------------------------------------------------


def to_fastjson(value: Any, depth: int = 0) -> str:
    """fastjson's pretty layout: tab-indented objects, and integer-keyed maps unquoted on one line.

    A Java broker reads quoted integer keys too; unquoted ones are what it writes itself, so a file we save
    differs from the broker's own only where values differ (and entry order, which is a HashMap's there).
    """
    if isinstance(value, dict):
        if value and all(isinstance(key, int) for key in value):
            return "{" + ",".join(f"{key}:{to_fastjson(item)}" for key, item in sorted(value.items())) + "}"
        return _pretty_object(value, depth)
    if isinstance(value, list):
        return "[" + ",".join(to_fastjson(item, depth) for item in value) + "]"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return json.dumps(value)


def _pretty_object(members: dict, depth: int) -> str:
    if not members:
        return "{}"
    inner = "\t" * (depth + 1)
    lines = [f"{inner}{_quoted_key(key)}:{to_fastjson(item, depth + 1)}" for key, item in members.items()]
    return "{\n" + ",\n".join(lines) + "\n" + "\t" * depth + "}"


def _quoted_key(key: str | int) -> str:
    return str(key) if isinstance(key, int) else json.dumps(key, ensure_ascii=False)


# --- model ------------------------------------------------------------------------------------------------


@dataclass
class DataVersion:
    """`DataVersion`: the broker bumps it every consumerOffsetUpdateVersionStep commits; slaves compare it."""

    counter: int = 0
    state_version: int = 0
    timestamp: int = field(default_factory=lambda: int(time.time() * 1000))

    def next_version(self, state_version: int = 0) -> None:
        """`DataVersion.nextVersion`: new timestamp, counter + 1."""
        self.timestamp = int(time.time() * 1000)
        self.state_version = state_version
        self.counter += 1

    def to_json_object(self) -> dict[str, int]:
        return {"counter": self.counter, "stateVersion": self.state_version, "timestamp": self.timestamp}


@dataclass
class ConsumerOffsets:
    """`ConsumerOffsetManager.offsetTable`: "topic@group" -> {queueId: next offset to consume}.

    `other_fields` keeps top-level fields this model does not interpret (for example lmqOffsetTable), so
    saving does not drop them. `loaded_from` and `fallback_reason` say which file a load used and why the
    main file was passed over.
    """

    offset_table: dict[str, dict[int, int]] = field(default_factory=dict)
    data_version: DataVersion = field(default_factory=DataVersion)
    other_fields: dict[str, Any] = field(default_factory=dict)
    loaded_from: Path | None = None
    fallback_reason: str | None = None

    def __post_init__(self) -> None:
        # Not a field: commits (pull server threads) and persists (the store's scheduler, a server's
        # shutdown) take turns, so a save never sees the table change under it or races another save.
        self._lock = threading.RLock()

    @property
    def used_backup(self) -> bool:
        return self.loaded_from is not None and self.loaded_from.name.endswith(BACKUP_SUFFIX)

    @staticmethod
    def key(topic: str, group: str) -> str:
        return f"{topic}{TOPIC_GROUP_SEPARATOR}{group}"

    def get(self, topic: str, group: str, queue_id: int) -> int | None:
        """`ConsumerOffsetManager.queryOffset` without reset offsets; None where the broker answers -1."""
        return self.offset_table.get(self.key(topic, group), {}).get(queue_id)

    def set(self, topic: str, group: str, queue_id: int, offset: int) -> None:
        """`ConsumerOffsetManager.commitOffset` (without the periodic dataVersion bump)."""
        with self._lock:
            self.offset_table.setdefault(self.key(topic, group), {})[queue_id] = offset

    def queues(self, topic: str, group: str) -> dict[int, int]:
        return dict(self.offset_table.get(self.key(topic, group), {}))

    def groups_for(self, topic: str) -> set[str]:
        """`ConsumerOffsetManager.whichGroupByTopic`: only keys with exactly one "@" count."""
        return {group for key_topic, group in self._topic_groups() if key_topic == topic}

    def topics_for(self, group: str) -> set[str]:
        """`ConsumerOffsetManager.whichTopicByConsumer`."""
        return {topic for topic, key_group in self._topic_groups() if key_group == group}

    def _topic_groups(self) -> list[tuple[str, str]]:
        parts = (key.split(TOPIC_GROUP_SEPARATOR) for key in self.offset_table)
        return [(part[0], part[1]) for part in parts if len(part) == 2]

    # serialisation

    @classmethod
    def from_bytes(cls, data: bytes) -> ConsumerOffsets:
        """Decode consumerOffset.json as stored (UTF-8). ConsumerOffsetsError for anything but a non-empty
        file as `from_text` takes it."""
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as error:
            raise ConsumerOffsetsError(f"not UTF-8 ({error.reason} at byte {error.start})") from None
        if not text.strip():
            raise ConsumerOffsetsError("empty")
        return cls.from_text(text)

    @classmethod
    def from_text(cls, text: str) -> ConsumerOffsets:
        """Decode consumerOffset.json content (fastjson's or strict JSON). ConsumerOffsetsError if it is not
        JSON or not the table RocketMQ keeps (integer queue ids and offsets)."""
        document = parse_fastjson(text)
        if not isinstance(document, dict):
            raise ConsumerOffsetsError("consumerOffset.json is not a JSON object")
        other = {
            name: value
            for name, value in document.items()
            if name not in ("offsetTable", "dataVersion") and name not in _DERIVED_FIELDS
        }
        return cls(
            offset_table=_offset_table(document.get("offsetTable", {})),
            data_version=_data_version(document.get("dataVersion")),
            other_fields=other,
        )

    def to_text(self) -> str:
        """The file content, fields in alphabetical order as fastjson writes a bean's properties."""
        members = {
            **self.other_fields,
            "dataVersion": self.data_version.to_json_object(),
            "offsetTable": {key: self.offset_table[key] for key in sorted(self.offset_table)},
        }
        return to_fastjson({name: members[name] for name in sorted(members, key=str)})

    def persist(self, path: Path) -> None:
        """`ConfigManager.persist`: old file renamed to `.bak` (atomically), new file written and fsynced,
        then the directory fsynced so both names survive a crash.

        Between the rename and the write the main file is missing; `load_consumer_offsets` then reads the
        `.bak`, as RocketMQ does.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            if path.exists():
                os.replace(path, _backup_path(path))
                _fsync_directory(path.parent)
            _write_durably(path, self.to_text().encode("utf-8"))
            _fsync_directory(path.parent)


def _offset_table(raw: Any) -> dict[str, dict[int, int]]:
    if raw is None:  # fastjson writes a null map as null
        return {}
    if not isinstance(raw, dict):
        raise ConsumerOffsetsError("offsetTable is not an object")
    table = {}
    for topic_group, queues in raw.items():
        if not isinstance(topic_group, str) or not isinstance(queues, dict):
            raise ConsumerOffsetsError(f'offsetTable entry {topic_group!r} is not "topic@group": {{...}}')
        table[topic_group] = {
            _queue_id(topic_group, queue): _offset(topic_group, offset) for queue, offset in queues.items()
        }
    return table


def _queue_id(topic_group: str, queue: str | int) -> int:
    # Strict JSON has to quote the keys, so "0" is as good as 0. The length check comes first: int() refuses
    # texts of over 4300 digits with a ValueError of its own.
    if isinstance(queue, str) and len(queue) <= _JAVA_INT_DIGITS and _INTEGER_KEY.fullmatch(queue):
        queue = int(queue)
    if isinstance(queue, int) and not isinstance(queue, bool) and _JAVA_INT_MIN <= queue <= _JAVA_INT_MAX:
        return queue
    raise ConsumerOffsetsError(
        f"offsetTable[{topic_group!r}] has a queue id that is not a Java int: {queue!r}"
    )


def _offset(topic_group: str, offset: Any) -> int:
    if (
        isinstance(offset, bool)
        or not isinstance(offset, int)
        or not _JAVA_LONG_MIN <= offset <= _JAVA_LONG_MAX
    ):
        raise ConsumerOffsetsError(
            f"offsetTable[{topic_group!r}] has an offset that is not a Java long: {offset!r}"
        )
    return offset


def _data_version(raw: Any) -> DataVersion:
    if raw is None:
        return DataVersion()
    fields = {"counter": "counter", "stateVersion": "state_version", "timestamp": "timestamp"}
    if not isinstance(raw, dict) or not all(isinstance(raw.get(name, 0), int) for name in fields):
        raise ConsumerOffsetsError(f"dataVersion is not {{counter, stateVersion, timestamp}}: {raw!r}")
    return DataVersion(**{attribute: raw[name] for name, attribute in fields.items() if name in raw})


# --- files ------------------------------------------------------------------------------------------------


def _backup_path(path: Path) -> Path:
    return path.with_name(path.name + BACKUP_SUFFIX)


def load_consumer_offsets(path: Path) -> ConsumerOffsets:
    """`ConfigManager.load`: the file, or its `.bak` when the file is missing, empty or unparsable.

    Unlike RocketMQ this never deletes the bad file (inspection must not change a store). Neither file
    present: an empty table, as a new broker starts with. Both bad: ConsumerOffsetsError naming both.
    """
    path = Path(path)
    try:
        return _load_one(path, fallback_reason=None)
    except (FileNotFoundError, ConsumerOffsetsError) as error:
        main_problem = _describe(path, error)
    backup = _backup_path(path)
    try:
        return _load_one(backup, fallback_reason=main_problem)
    except FileNotFoundError:
        return ConsumerOffsets(fallback_reason=main_problem)
    except ConsumerOffsetsError as error:
        raise ConsumerOffsetsError(f"{main_problem}; {_describe(backup, error)}") from error


def _load_one(path: Path, fallback_reason: str | None) -> ConsumerOffsets:
    offsets = ConsumerOffsets.from_bytes(path.read_bytes())
    offsets.loaded_from = path
    offsets.fallback_reason = fallback_reason
    return offsets


def _describe(path: Path, error: Exception) -> str:
    reason = "missing" if isinstance(error, FileNotFoundError) else str(error)
    return f"{path}: {reason}"


def _write_durably(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_directory(directory: Path) -> None:
    """`MixAll.fsyncDirectory`: makes renames and new names in the directory durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
