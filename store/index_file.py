"""RocketMQ's IndexFile and IndexService: the `index/` hash index from message key to CommitLog offset.

Byte layout (`index/IndexHeader.java`, `index/IndexFile.java`), all integers big-endian:

- a 40-byte header `>qqqqii`: beginTimestamp, endTimestamp, beginPhyOffset, endPhyOffset, hashSlotCount (slots
  ever used, *not* the table size), indexCount (next free entry number, starts at 1);
- `hashSlotNum` int32 slots, each the number of the newest entry whose key hash lands there (0 = empty);
- `indexNum` 20-byte entries `>iqii`: keyHash, phyOffset, timeDiff (seconds since beginTimestamp), prevIndex.
  Entry 0 is never used, so 0 can mean "no entry" in slots and chains.

The writer maps the file (as RocketMQ does); read-only access goes through pread only, so a file truncated or
deleted by a broker at the same time can shorten a read but never raise SIGBUS in this process.

Decoding (`IndexHeader.unpack`, `unpack_slot`, `IndexEntry.unpack`) raises CorruptRecord for input shorter
than the field, nothing else; reading a file adds CorruptRecord where it ended early or a hash chain is
damaged, and StoreLayoutError where its table sizes cannot be told (the contract is in `store.errors`).
"""

from __future__ import annotations

import itertools
import logging
import mmap
import os
import struct
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from store.config import StoreConfig
from store.errors import CorruptRecord, StoreError, StoreLayoutError
from store.java_checksums import index_key_hash
from store.mapped_file import reserve_blocks
from store.safe_read import PreadFile

if TYPE_CHECKING:
    from store.checkpoint import StoreCheckpoint

log = logging.getLogger(__name__)

INDEX_HEADER_SIZE = 40  # IndexHeader.INDEX_HEADER_SIZE
HASH_SLOT_SIZE = 4  # IndexFile.hashSlotSize
INDEX_ENTRY_SIZE = 20  # IndexFile.indexSize
INVALID_INDEX = 0  # IndexFile.invalidIndex
JAVA_INT_MAX = 2**31 - 1
# MessageStoreConfig.maxMsgsNumBatch: IndexService.queryOffset never returns more offsets than this.
MAX_MSGS_NUM_BATCH = 64
# RocketMQ's default geometry: maxIndexNum = maxHashSlotNum * 4 (MessageStoreConfig).
DEFAULT_ENTRIES_PER_SLOT = 4
# Solving the file size for other geometries reads the whole file; beyond this we ask for explicit sizes.
PROBE_LIMIT_BYTES = 16 << 20
# Checking one geometry's slots against its entries walks its whole slot table. A real file has one or two
# geometries whose newest entry heads its slot; a damaged one (mostly zeros, slot 0 used) can have every one
# of ~800,000 do so, and checking them all took hours. Past this many, the sizes must be given.
MAX_PROBED_GEOMETRIES = 16
# MessageSysFlag: the two transaction bits, and their value for a rolled-back transaction.
TRANSACTION_MASK = 0xC
TRANSACTION_ROLLBACK_TYPE = 0xC
KEY_SEPARATOR = " "  # MessageConst.KEY_SEPARATOR
INDEX_FILE_NAME_LENGTH = 17

_HEADER = struct.Struct(">qqqqii")
_ENTRY = struct.Struct(">iqii")
_SLOT = struct.Struct(">i")


# --- file names -------------------------------------------------------------------------------------------


def index_file_name(timestamp_ms: int) -> str:
    """`UtilAll.timeMillisToHumanString`: `yyyyMMddHHmmssSSS` in local time, the name of a new IndexFile."""
    moment = datetime.fromtimestamp(timestamp_ms // 1000)
    return f"{moment:%Y%m%d%H%M%S}{timestamp_ms % 1000:03d}"


def parse_index_file_name(name: str) -> int:
    """The creation time (epoch ms, local time) an IndexFile name encodes; ValueError if it is not one."""
    if len(name) != INDEX_FILE_NAME_LENGTH or not name.isdigit():
        raise ValueError(f"{name!r} is not an index file name (17 digits, yyyyMMddHHmmssSSS)")
    moment = datetime.strptime(name[:14], "%Y%m%d%H%M%S")
    return int(moment.timestamp()) * 1000 + int(name[14:])


def is_index_file_name(name: str) -> bool:
    try:
        parse_index_file_name(name)
    except ValueError:
        return False
    return True


# --- header and geometry ----------------------------------------------------------------------------------


@dataclass
class IndexHeader:
    """`IndexHeader`: the first 40 bytes of an IndexFile."""

    begin_timestamp_ms: int = 0
    end_timestamp_ms: int = 0
    begin_phy_offset: int = 0
    end_phy_offset: int = 0
    hash_slot_count: int = 0
    index_count: int = 1

    SIZE = INDEX_HEADER_SIZE

    def pack(self) -> bytes:
        return _HEADER.pack(
            self.begin_timestamp_ms,
            self.end_timestamp_ms,
            self.begin_phy_offset,
            self.end_phy_offset,
            self.hash_slot_count,
            self.index_count,
        )

    @classmethod
    def unpack(cls, data: bytes | bytearray | memoryview, *, path: str | None = None) -> IndexHeader:
        """Decode as `IndexHeader.load`, which reads an indexCount <= 0 as 1 (an all-zero new file).
        CorruptRecord if `data` holds fewer than 40 bytes."""
        _require_bytes(data, INDEX_HEADER_SIZE, 0, "header", path)
        header = cls(*_HEADER.unpack_from(data))
        if header.index_count <= 0:
            header.index_count = 1
        return header

    @property
    def entry_count(self) -> int:
        return self.index_count - 1


@dataclass(frozen=True)
class IndexGeometry:
    """The table sizes of one IndexFile. They are not in the file: RocketMQ takes them from its config."""

    hash_slot_num: int
    index_num: int
    source: str = "explicit"  # how they were found: explicit, config, default-ratio or probed

    @property
    def file_size(self) -> int:
        return index_file_size(self.hash_slot_num, self.index_num)

    def slot_position(self, slot: int) -> int:
        return INDEX_HEADER_SIZE + slot * HASH_SLOT_SIZE

    def entry_position(self, entry_number: int) -> int:
        return INDEX_HEADER_SIZE + self.hash_slot_num * HASH_SLOT_SIZE + entry_number * INDEX_ENTRY_SIZE


def index_file_size(hash_slot_num: int, index_num: int) -> int:
    """`IndexFile` constructor: fileTotalSize = 40 + hashSlotNum*4 + indexNum*20."""
    return INDEX_HEADER_SIZE + hash_slot_num * HASH_SLOT_SIZE + index_num * INDEX_ENTRY_SIZE


@dataclass(frozen=True)
class IndexEntry:
    """One 20-byte entry. `time_diff_s` is seconds after the file's beginTimestamp."""

    number: int
    key_hash: int
    phy_offset: int
    time_diff_s: int
    prev_index: int

    @classmethod
    def unpack(
        cls, data: bytes | bytearray | memoryview, number: int, *, path: str | None = None, offset: int = 0
    ) -> IndexEntry:
        """Entry `number` from its 20 bytes at the start of `data` (`offset`: where they lie in the file, for
        the error). CorruptRecord if fewer than 20 bytes are given."""
        _require_bytes(data, INDEX_ENTRY_SIZE, offset, "index entry", path)
        return cls(number, *_ENTRY.unpack_from(data))


def unpack_slot(data: bytes | bytearray | memoryview, *, path: str | None = None, offset: int = 0) -> int:
    """A hash slot's value (the newest entry of its chain, 0 for none) from the start of `data`.
    CorruptRecord if fewer than 4 bytes are given."""
    _require_bytes(data, HASH_SLOT_SIZE, offset, "hash slot", path)
    return _SLOT.unpack_from(data)[0]


def _require_bytes(
    data: bytes | bytearray | memoryview, size: int, offset: int, field: str, path: str | None
):
    if len(data) < size:
        raise CorruptRecord(
            f"index file ended early (truncated?): {len(data)} bytes where the {size}-byte {field} lies",
            path=path,
            offset=offset,
            field=field,
        )


ReadAt = Callable[[int, int], bytes]


def infer_index_geometry(
    file_size: int,
    header: IndexHeader,
    read_at: ReadAt,
    *,
    config: StoreConfig | None = None,
    hash_slot_num: int | None = None,
    index_num: int | None = None,
) -> IndexGeometry:
    """Find (hashSlotNum, indexNum) for a file, since the header only holds the number of slots *used*.

    In order: explicit values (one is enough, the other is solved from the size); the config's
    maxHashSlotNum/maxIndexNum if they give this size; RocketMQ's default ratio indexNum = 4 * hashSlotNum,
    i.e. size = 40 + 84 * slots; and last, for files up to PROBE_LIMIT_BYTES, every geometry that gives this
    size, keeping the one whose slots and entries agree with each other. Config and ratio candidates must
    pass the same (cheap) consistency check, so a size that matches by accident is not trusted blindly.
    """
    if hash_slot_num is not None or index_num is not None:
        return _explicit_geometry(file_size, hash_slot_num, index_num)
    for candidate in _size_candidates(file_size, config or StoreConfig()):
        if _newest_entry_is_reachable(candidate, header, read_at):
            return candidate
    return _probe_geometry(file_size, header, read_at)


def _explicit_geometry(file_size: int, hash_slot_num: int | None, index_num: int | None) -> IndexGeometry:
    body = file_size - INDEX_HEADER_SIZE
    if hash_slot_num is not None and index_num is None:
        index_num, remainder = divmod(body - hash_slot_num * HASH_SLOT_SIZE, INDEX_ENTRY_SIZE)
    elif index_num is not None and hash_slot_num is None:
        hash_slot_num, remainder = divmod(body - index_num * INDEX_ENTRY_SIZE, HASH_SLOT_SIZE)
    else:
        remainder = 0
    geometry = IndexGeometry(hash_slot_num, index_num, "explicit")
    if remainder or hash_slot_num < 1 or index_num < 1 or geometry.file_size != file_size:
        raise StoreLayoutError(
            f"an index file of {file_size} bytes cannot have hashSlotNum={hash_slot_num}, "
            f"indexNum={index_num} (size must be 40 + slots*4 + entries*20)"
        )
    return geometry


def _size_candidates(file_size: int, config: StoreConfig) -> list[IndexGeometry]:
    candidates = []
    if config.index_file_size == file_size:
        candidates.append(IndexGeometry(config.max_hash_slot_num, config.max_index_num, "config"))
    per_slot = HASH_SLOT_SIZE + DEFAULT_ENTRIES_PER_SLOT * INDEX_ENTRY_SIZE
    slots, remainder = divmod(file_size - INDEX_HEADER_SIZE, per_slot)
    ratio = IndexGeometry(slots, slots * DEFAULT_ENTRIES_PER_SLOT, "default-ratio")
    if slots > 0 and not remainder and ratio not in candidates:
        candidates.append(ratio)
    return candidates


def _newest_entry_is_reachable(geometry: IndexGeometry, header: IndexHeader, read_at: ReadAt) -> bool:
    """The newest entry's slot must point at it or (a writer racing us) at a newer entry."""
    if header.index_count > geometry.index_num or header.hash_slot_count > geometry.hash_slot_num:
        return False
    newest = header.index_count - 1
    if newest < 1:
        return True
    entry = read_at(geometry.entry_position(newest), INDEX_ENTRY_SIZE)
    if len(entry) < INDEX_ENTRY_SIZE:
        return False
    key_hash = _ENTRY.unpack(entry)[0]
    if key_hash < 0:
        return False
    slot = read_at(geometry.slot_position(key_hash % geometry.hash_slot_num), HASH_SLOT_SIZE)
    return len(slot) == HASH_SLOT_SIZE and _SLOT.unpack(slot)[0] >= newest


def _probe_geometry(file_size: int, header: IndexHeader, read_at: ReadAt) -> IndexGeometry:
    if header.index_count <= 1 or file_size > PROBE_LIMIT_BYTES:
        raise StoreLayoutError(
            f"cannot tell the slot table size of this {file_size}-byte index file "
            f"({header.entry_count} entries): pass hash_slot_num/index_num (maxHashSlotNum/maxIndexNum)"
        )
    content = read_at(0, file_size)
    if len(content) != file_size:
        raise StoreLayoutError(f"read {len(content)} bytes of a {file_size}-byte file: it changed while read")
    reaching = list(
        itertools.islice(
            _geometries_reaching_newest_entry(file_size, header, content), MAX_PROBED_GEOMETRIES + 1
        )
    )
    if len(reaching) > MAX_PROBED_GEOMETRIES:
        raise StoreLayoutError(
            f"cannot tell the slot table size of this {file_size}-byte index file (over "
            f"{MAX_PROBED_GEOMETRIES} geometries reach its newest entry): pass hash_slot_num/index_num "
            "(maxHashSlotNum/maxIndexNum)"
        )
    matches = [geometry for geometry in reaching if _slots_agree_with_entries(geometry, header, content)]
    if len(matches) != 1:
        found = ", ".join(f"{g.hash_slot_num}/{g.index_num}" for g in matches) or "none"
        raise StoreLayoutError(
            f"cannot tell the slot table size of this {file_size}-byte index file (consistent slots/entries: "
            f"{found}): pass hash_slot_num/index_num (maxHashSlotNum/maxIndexNum)"
        )
    return matches[0]


def _geometries_reaching_newest_entry(
    file_size: int, header: IndexHeader, content: bytes
) -> Iterator[IndexGeometry]:
    """Each (slots, entries) giving file_size (40 + 4*slots + 20*entries) whose newest entry heads its slot.

    Plain arithmetic instead of `_newest_entry_is_reachable`: a 16 MiB file has ~800,000 candidates.
    """
    body = file_size - INDEX_HEADER_SIZE
    if body % HASH_SLOT_SIZE:
        return
    newest = header.index_count - 1
    # 4*slots + 20*entries = body  =>  slots = body/4 (mod 5); more slots than `last` leave too few entries.
    first = max(1, header.hash_slot_count)
    first += (body // HASH_SLOT_SIZE - first) % 5
    last = (body - header.index_count * INDEX_ENTRY_SIZE) // HASH_SLOT_SIZE
    read_int = _SLOT.unpack_from  # the loop runs up to 800,000 times: no slices, no attribute lookups
    newest_entry_at = INDEX_HEADER_SIZE + newest * INDEX_ENTRY_SIZE
    for slots in range(first, last + 1, 5):
        key_hash = read_int(content, newest_entry_at + slots * HASH_SLOT_SIZE)[0]
        if (
            key_hash >= 0
            and read_int(content, INDEX_HEADER_SIZE + key_hash % slots * HASH_SLOT_SIZE)[0] >= newest
        ):
            yield IndexGeometry(slots, (body - slots * HASH_SLOT_SIZE) // INDEX_ENTRY_SIZE, "probed")


def _slots_agree_with_entries(geometry: IndexGeometry, header: IndexHeader, content: bytes) -> bool:
    """Every used slot heads a chain whose first entry hashes to that slot, and the used count fits."""
    slots = struct.unpack_from(f">{geometry.hash_slot_num}i", content, INDEX_HEADER_SIZE)
    used = 0
    for slot, head in enumerate(slots):
        if head == INVALID_INDEX:
            continue
        if not 0 < head < header.index_count:
            return False
        key_hash = _ENTRY.unpack_from(content, geometry.entry_position(head))[0]
        if key_hash < 0 or key_hash % geometry.hash_slot_num != slot:
            return False
        used += 1
    # Before RocketMQ 4.7.1 hashSlotCount grew on every put; since then only when a slot was empty.
    return header.hash_slot_count in (used, header.entry_count)


# --- one file ---------------------------------------------------------------------------------------------


class IndexFile:
    """`IndexFile`: one file of the index. Create with `create`, open an existing one with `open`."""

    def __init__(
        self,
        path: Path,
        geometry: IndexGeometry,
        header: IndexHeader,
        *,
        reader: PreadFile | None = None,
        fd: int | None = None,
        mapping: mmap.mmap | None = None,
    ):
        self.path = Path(path)
        self.geometry = geometry
        self.header = header
        self._reader = reader
        self._fd = fd
        self._mapping = mapping

    # construction

    @classmethod
    def create(
        cls,
        directory: Path,
        *,
        hash_slot_num: int,
        index_num: int,
        name: str | None = None,
        end_phy_offset: int = 0,
        end_timestamp_ms: int = 0,
    ) -> IndexFile:
        """A new, zero-filled IndexFile, mapped for writing (`IndexFile` constructor).

        A file that follows a full one inherits that file's end values as its begin and end values (only the
        positive ones, as in RocketMQ), so its first entry's timeDiff is measured from there.
        """
        geometry = IndexGeometry(hash_slot_num, index_num, "explicit")
        _check_writable_geometry(geometry)
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / (name or index_file_name(int(time.time() * 1000)))
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            reserve_blocks(fd, geometry.file_size, path)  # a full disk is an error here, not a SIGBUS later
            mapping = mmap.mmap(fd, geometry.file_size)
        except BaseException:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        index_file = cls(path, geometry, IndexHeader(), fd=fd, mapping=mapping)
        index_file._inherit_end_values(end_phy_offset, end_timestamp_ms)
        return index_file

    @classmethod
    def open(
        cls,
        path: Path,
        read_only: bool = True,
        *,
        config: StoreConfig | None = None,
        hash_slot_num: int | None = None,
        index_num: int | None = None,
    ) -> IndexFile:
        """Open an existing IndexFile (`IndexFile` + `load`).

        Read-only files are read with pread and their table sizes are inferred (see `infer_index_geometry`).
        Writable files are mapped and must have exactly the configured (or given) size, as RocketMQ maps them
        with its configured sizes.
        """
        if read_only:
            return cls._open_read_only(Path(path), config, hash_slot_num, index_num)
        return cls._open_writable(Path(path), config or StoreConfig(), hash_slot_num, index_num)

    @classmethod
    def _open_read_only(
        cls, path: Path, config: StoreConfig | None, hash_slot_num: int | None, index_num: int | None
    ) -> IndexFile:
        reader = PreadFile(path)
        try:
            size = reader.size()
            raw_header = reader.read(0, INDEX_HEADER_SIZE)
            if len(raw_header) < INDEX_HEADER_SIZE:
                raise CorruptRecord(
                    f"index file is {size} bytes, shorter than its 40-byte header", path=str(path), offset=0
                )
            header = IndexHeader.unpack(raw_header, path=str(path))
            geometry = infer_index_geometry(
                size, header, reader.read, config=config, hash_slot_num=hash_slot_num, index_num=index_num
            )
        except StoreLayoutError as error:
            reader.close()
            raise StoreLayoutError(f"{path}: {error}") from error
        except BaseException:
            reader.close()
            raise
        return cls(path, geometry, header, reader=reader)

    @classmethod
    def _open_writable(
        cls, path: Path, config: StoreConfig, hash_slot_num: int | None, index_num: int | None
    ) -> IndexFile:
        geometry = IndexGeometry(
            hash_slot_num or config.max_hash_slot_num, index_num or config.max_index_num, "config"
        )
        _check_writable_geometry(geometry)
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        try:
            size = os.fstat(fd).st_size
            if size != geometry.file_size:
                raise StoreLayoutError(
                    f"{path}: index file is {size} bytes, but hashSlotNum={geometry.hash_slot_num} and "
                    f"indexNum={geometry.index_num} make {geometry.file_size}; refusing to write into it"
                )
            mapping = mmap.mmap(fd, size)
        except BaseException:
            os.close(fd)
            raise
        return cls(path, geometry, IndexHeader.unpack(mapping[:INDEX_HEADER_SIZE]), fd=fd, mapping=mapping)

    def _inherit_end_values(self, end_phy_offset: int, end_timestamp_ms: int) -> None:
        if end_phy_offset > 0:
            self.header.begin_phy_offset = self.header.end_phy_offset = end_phy_offset
        if end_timestamp_ms > 0:
            self.header.begin_timestamp_ms = self.header.end_timestamp_ms = end_timestamp_ms
        # Only the four 8-byte fields: Java's constructor leaves the two counts at 0 on disk until a put or
        # flush writes them (IndexHeader.load reads indexCount 0 as 1).
        self._write(0, self.header.pack()[:32])

    # properties

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def read_only(self) -> bool:
        return self._mapping is None

    @property
    def begin_timestamp(self) -> int:
        return self.header.begin_timestamp_ms

    @property
    def end_timestamp(self) -> int:
        return self.header.end_timestamp_ms

    @property
    def begin_phy_offset(self) -> int:
        return self.header.begin_phy_offset

    @property
    def end_phy_offset(self) -> int:
        return self.header.end_phy_offset

    def is_full(self) -> bool:
        """`IndexFile.isWriteFull`: indexCount >= indexNum (so a file holds indexNum - 1 entries)."""
        return self.header.index_count >= self.geometry.index_num

    def is_time_matched(self, begin_ms: int, end_ms: int) -> bool:
        """`IndexFile.isTimeMatched`: [begin, end] overlaps [beginTimestamp, endTimestamp]."""
        first, last = self.header.begin_timestamp_ms, self.header.end_timestamp_ms
        return (
            (begin_ms < first and end_ms > last) or (first <= begin_ms <= last) or (first <= end_ms <= last)
        )

    # raw access

    def _read(self, offset: int, size: int, field: str) -> bytes:
        if self._mapping is not None:
            return self._mapping[offset : offset + size]
        if self._reader is None:
            raise StoreError(f"{self.path}: index file is closed")
        data = self._reader.read(offset, size)
        if len(data) < size:
            raise CorruptRecord(
                "index file ended early (truncated?)", path=str(self.path), offset=offset, field=field
            )
        return data

    def _write(self, offset: int, data: bytes) -> None:
        if self._mapping is None:
            raise StoreError(f"{self.path}: index file is open read-only")
        self._mapping[offset : offset + len(data)] = data

    def refresh_header(self) -> IndexHeader:
        """Re-read the header from the file: a broker may have added entries since we opened it."""
        if self._mapping is None:
            self.header = IndexHeader.unpack(self._read(0, INDEX_HEADER_SIZE, "header"), path=str(self.path))
        return self.header

    def slot_value(self, slot: int) -> int:
        position = self.geometry.slot_position(slot)
        return unpack_slot(
            self._read(position, HASH_SLOT_SIZE, "hash slot"), path=str(self.path), offset=position
        )

    def entry(self, number: int) -> IndexEntry:
        position = self.geometry.entry_position(number)
        raw = self._read(position, INDEX_ENTRY_SIZE, "index entry")
        return IndexEntry.unpack(raw, number, path=str(self.path), offset=position)

    def iter_entries(self) -> Iterator[IndexEntry]:
        """Entries 1 .. indexCount-1 in write order."""
        for number in range(1, self.header.index_count):
            yield self.entry(number)

    # writing

    def put_key(self, key: str, phy_offset: int, store_timestamp_ms: int) -> bool:
        """`IndexFile.putKey`: add `key` -> `phy_offset`; False when the file is full."""
        return self.put_keys([(key, phy_offset, store_timestamp_ms)]) == 1

    def put_keys(self, entries: Sequence[tuple[str, int, int]]) -> int:
        """`putKey` for each (key, phy_offset, store_timestamp_ms) in order until the file is full; returns
        how many went in. The bytes are those of one putKey after another; the header is written once."""
        if self._mapping is None:
            raise StoreError(f"{self.path}: index file is open read-only")
        mapping, header, geometry = self._mapping, self.header, self.geometry
        slots, first_entry = geometry.hash_slot_num, geometry.entry_position(0)
        count, used_slots = header.index_count, header.hash_slot_count
        put = 0
        for key, phy_offset, store_timestamp_ms in entries:
            if count >= geometry.index_num:
                break
            key_hash = index_key_hash(key)
            slot_position = geometry.slot_position(key_hash % slots)
            previous_head = _SLOT.unpack_from(mapping, slot_position)[0]
            if previous_head <= INVALID_INDEX or previous_head > count:
                previous_head = INVALID_INDEX
            time_diff = _time_diff_seconds(store_timestamp_ms, header.begin_timestamp_ms)
            _ENTRY.pack_into(
                mapping,
                first_entry + count * INDEX_ENTRY_SIZE,
                key_hash,
                phy_offset,
                time_diff,
                previous_head,
            )
            _SLOT.pack_into(mapping, slot_position, count)
            # The first entry's timeDiff was computed above against the inherited begin timestamp; only now
            # is the begin reset to this message (IndexFile.putKey does the same, in the same order).
            if count <= 1:
                header.begin_phy_offset = phy_offset
                header.begin_timestamp_ms = store_timestamp_ms
            used_slots += previous_head == INVALID_INDEX
            count += 1
            put += 1
            header.end_phy_offset = phy_offset
            header.end_timestamp_ms = store_timestamp_ms
        if put:
            header.index_count, header.hash_slot_count = count, used_slots
            self._write(0, header.pack())
        return put

    # reading

    def select_phy_offsets(self, key: str, max_num: int, begin_ms: int, end_ms: int) -> list[int]:
        """`IndexFile.selectPhyOffset`: offsets of entries whose key *hash* matches, newest first.

        Only hashes are compared, so keys that collide come back too: the caller must read each message
        and check its real key. Entries outside [begin_ms, end_ms] are skipped, and the walk stops at the
        first entry older than begin_ms (chains run newest to oldest). At most `max_num` offsets.
        """
        found: list[int] = []
        header = self.header
        key_hash = index_key_hash(key)
        head = self.slot_value(key_hash % self.geometry.hash_slot_num)
        if head <= INVALID_INDEX or head > header.index_count or header.index_count <= 1:
            return found
        current = head
        while len(found) < max_num:
            entry = self.entry(current)
            if entry.time_diff_s < 0:
                break
            time_read = header.begin_timestamp_ms + entry.time_diff_s * 1000
            if entry.key_hash == key_hash and begin_ms <= time_read <= end_ms:
                found.append(entry.phy_offset)
            prev = entry.prev_index
            if prev <= INVALID_INDEX or prev > header.index_count or prev == current or time_read < begin_ms:
                break
            if prev > current:
                # A writer links each entry to an older one, so numbers fall along a chain and the walk ends
                # within `head` steps. One that rises is damage, and following it could go round forever.
                raise CorruptRecord(
                    f"index chain can loop: entry {current} links forward to entry {prev}",
                    path=str(self.path),
                    offset=self.geometry.entry_position(current),
                    field="prevIndex",
                )
            current = prev
        return found

    def holds_key(self, key_hash: int, phy_offset: int) -> bool:
        """Whether a query for `key_hash` reaches an entry for the record at `phy_offset`: its slot's chain,
        walked as `select_phy_offsets` walks it, holds (key_hash, phy_offset).

        Entries are appended in CommitLog order, so a chain (newest first) is only walked down to the first
        entry below `phy_offset`. A chain that does not lead to older entries is damage: False."""
        current = self.slot_value(key_hash % self.geometry.hash_slot_num)
        newest = self.header.index_count - 1
        while INVALID_INDEX < current <= newest:
            entry = self.entry(current)
            if entry.phy_offset < phy_offset:
                return False
            if entry.key_hash == key_hash and entry.phy_offset == phy_offset:
                return True
            if entry.prev_index >= current:
                return False
            current = entry.prev_index
        return False

    # lifecycle

    def flush(self) -> None:
        """`IndexFile.flush`: header written, then msync (`MappedByteBuffer.force`)."""
        if self._mapping is not None:
            self._write(0, self.header.pack())
            self._mapping.flush()

    def close(self) -> None:
        if self._mapping is not None:
            self.flush()
            self._mapping.close()
            self._mapping = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def destroy(self) -> None:
        """`IndexFile.destroy`: close and delete the file."""
        self.close()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> IndexFile:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "read-only" if self.read_only else "writable"
        return f"IndexFile({self.path}, {mode}, {self.geometry}, {self.header})"


def _time_diff_seconds(store_timestamp_ms: int, begin_timestamp_ms: int) -> int:
    """IndexFile.putKey's timeDiff: seconds since begin, clamped to [0, Integer.MAX_VALUE], 0 if no begin.

    Java's long division truncates toward zero where Python's floors, but both only differ for negative
    differences, which are clamped to 0 anyway.
    """
    if begin_timestamp_ms <= 0:
        return 0
    difference = store_timestamp_ms - begin_timestamp_ms
    if difference < 0:
        return 0
    return min(difference // 1000, JAVA_INT_MAX)


def _check_writable_geometry(geometry: IndexGeometry) -> None:
    # indexCount starts at 1, so indexNum 1 makes a file that is full at birth and a roll that never ends.
    if geometry.hash_slot_num < 1 or geometry.index_num < 2:
        raise StoreError(
            f"index geometry hashSlotNum={geometry.hash_slot_num}, indexNum={geometry.index_num} cannot hold "
            f"an entry (need at least 1 slot and 2 entries, entry 0 being unused)"
        )


# --- the index directory ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class IndexRequest:
    """What `IndexService.buildIndex` takes from a `DispatchRequest`.

    `keys` is the KEYS property (space-separated), `uniq_key` the UNIQ_KEY property (None when absent),
    `sysflag` the record's SYSFLAG (its transaction bits decide whether the message is indexed).
    """

    topic: str
    keys: str | None
    uniq_key: str | None
    phy_offset: int
    store_timestamp_ms: int
    sysflag: int = 0


class IndexService:
    """`IndexService`: the `index/` directory, one IndexFile per time slice, the newest being written.

    `checkpoint` (a StoreCheckpoint) receives the end timestamp of each file flushed when full, as
    `IndexService.flush` does with `indexMsgTimestamp`. `clock_ms` names new files (tests pass their own).
    """

    def __init__(
        self,
        index_dir: Path,
        config: StoreConfig | None = None,
        *,
        checkpoint: StoreCheckpoint | None = None,
        clock_ms: Callable[[], int] | None = None,
    ):
        self.index_dir = Path(index_dir)
        self.config = config or StoreConfig()
        self.checkpoint = checkpoint
        self._clock_ms = clock_ms or (lambda: int(time.time() * 1000))
        self.files: list[IndexFile] = []
        self.foreign_names: list[str] = []
        self.read_only = True

    def load(self, read_only: bool = True) -> None:
        """`IndexService.load`: open the files in ascending name order.

        Names that are not 17-digit timestamps, and directories, are skipped and listed in `foreign_names`
        (RocketMQ would try to open them as index files). When writable, only the newest file is mapped for
        writing; older files are full and only ever read, so they are opened read-only.
        """
        self.close()
        self.read_only = read_only
        self.foreign_names = []
        entries = sorted(os.scandir(self.index_dir), key=lambda e: e.name) if self.index_dir.is_dir() else []
        index_names = []
        for entry in entries:
            is_index = entry.is_file() and is_index_file_name(entry.name)
            (index_names if is_index else self.foreign_names).append(entry.name)
        for name in self.foreign_names:
            log.warning("%s: not an index file name (yyyyMMddHHmmssSSS), skipped", self.index_dir / name)
        for position, name in enumerate(index_names):
            writable = not read_only and position == len(index_names) - 1
            self.files.append(
                IndexFile.open(self.index_dir / name, read_only=not writable, config=self.config)
            )

    @staticmethod
    def build_key(topic: str, key: str) -> str:
        """`IndexService.buildKey`: topic + "#" + key, the string whose hash is indexed."""
        return f"{topic}#{key}"

    @property
    def end_phy_offset(self) -> int:
        """The newest file's endPhyOffset (`QueryOffsetResult.indexLastUpdatePhyoffset`), 0 without files."""
        return self.files[-1].end_phy_offset if self.files else 0

    @property
    def end_timestamp(self) -> int:
        """The newest file's endTimestamp (`QueryOffsetResult.indexLastUpdateTimestamp`), 0 without files."""
        return self.files[-1].end_timestamp if self.files else 0

    # writing

    def build_index(self, request: IndexRequest) -> int:
        """`IndexService.buildIndex`: index UNIQ_KEY and each KEYS token; returns how many keys were put.

        Rolled-back transactions are not indexed, nor messages below the newest file's endPhyOffset (already
        indexed: abnormal recovery re-dispatches them).
        """
        return self.build_indexes([request])

    def build_indexes(self, requests: Sequence[IndexRequest]) -> int:
        """`build_index` for each request, in CommitLog order, with the keys put file by file in one
        `put_keys` each: the same files and bytes as one build_index after another."""
        index_file = self._last_writable_file()
        indexed_to = index_file.end_phy_offset  # as each build_index would find it after the ones before
        pending: list[tuple[str, int, int]] = []
        last_keyed = -1
        for number, request in enumerate(requests):
            if request.phy_offset < indexed_to:
                continue
            keys = [
                self.build_key(request.topic, key)
                for key in index_keys(request.uniq_key, request.keys, request.sysflag)
            ]
            if request.phy_offset == indexed_to:
                # Recovery re-dispatches from the record the index ends with (its keys may straddle a full
                # file and the next one, which a crash lost): put only the keys no query reaches yet.
                keys = [key for key in keys if not self._is_indexed(key, request.phy_offset)]
            if keys:
                pending += [(key, request.phy_offset, request.store_timestamp_ms) for key in keys]
                indexed_to, last_keyed = request.phy_offset, number
        put = index_file.put_keys(pending) if pending else 0
        while put < len(pending):  # a new file always takes at least one key
            log.info("index file %s is full, creating another one", index_file.path)
            index_file = self._last_writable_file()
            put += index_file.put_keys(pending[put:])
        if index_file.is_full() and last_keyed < len(requests) - 1:
            self._last_writable_file()  # the next build_index would roll to a new file, keys or not
        return len(pending)

    def _is_indexed(self, key: str, phy_offset: int) -> bool:
        key_hash = index_key_hash(key)
        for index_file in reversed(self.files):
            if index_file.end_phy_offset < phy_offset:
                return False
            if index_file.begin_phy_offset <= phy_offset and index_file.holds_key(key_hash, phy_offset):
                return True
        return False

    def writable_file(self) -> IndexFile:
        """The file the next key goes to (made now if there is none, or the newest is full), as
        `build_index` makes it for every message, keys or not."""
        return self._last_writable_file()

    def _last_writable_file(self) -> IndexFile:
        """`IndexService.getAndCreateLastIndexFile`: the newest file, or a new one when it is full."""
        if self.read_only:
            raise StoreError(f"{self.index_dir}: index loaded read-only")
        previous = self.files[-1] if self.files else None
        if previous is not None and not previous.is_full():
            return previous if not previous.read_only else self._reopen_writable(previous)
        new_file = IndexFile.create(
            self.index_dir,
            hash_slot_num=self.config.max_hash_slot_num,
            index_num=self.config.max_index_num,
            name=self._new_file_name(),
            end_phy_offset=previous.end_phy_offset if previous else 0,
            end_timestamp_ms=previous.end_timestamp if previous else 0,
        )
        self.files.append(new_file)
        if previous is not None:
            self._retire_full_file(previous)
        return new_file

    def _reopen_writable(self, index_file: IndexFile) -> IndexFile:
        """The newest file left read-only after newer ones were destroyed: map it to keep filling it."""
        index_file.close()
        writable = IndexFile.open(index_file.path, read_only=False, config=self.config)
        self.files[self.files.index(index_file)] = writable
        return writable

    def _new_file_name(self) -> str:
        """A timestamp name, later than the newest file's and not taken.

        RocketMQ uses the current time as is; two rolls within one millisecond (tiny test files) or a clock
        stepping back would reuse or misorder names, and files load in name order.
        """
        timestamp_ms = self._clock_ms()
        if self.files and index_file_name(timestamp_ms) <= self.files[-1].name:
            timestamp_ms = parse_index_file_name(self.files[-1].name) + 1
        while (self.index_dir / index_file_name(timestamp_ms)).exists():
            timestamp_ms += 1
        return index_file_name(timestamp_ms)

    def _retire_full_file(self, full_file: IndexFile) -> None:
        """Flush a full file and keep it for queries only (RocketMQ flushes it on a background thread)."""
        self._flush_file(full_file)
        position = self.files.index(full_file)
        geometry = full_file.geometry
        full_file.close()
        self.files[position] = IndexFile.open(
            full_file.path, hash_slot_num=geometry.hash_slot_num, index_num=geometry.index_num
        )

    def _flush_file(self, index_file: IndexFile) -> None:
        """`IndexService.flush(f)`: a full file's endTimestamp becomes the checkpoint's indexMsgTimestamp."""
        if index_file.read_only:
            return
        index_file.flush()
        if index_file.is_full() and index_file.end_timestamp > 0 and self.checkpoint is not None:
            self.checkpoint.index_msg_timestamp = index_file.end_timestamp
            self.checkpoint.flush()

    def flush(self) -> None:
        for index_file in self.files:
            self._flush_file(index_file)

    # reading

    def query(
        self,
        topic: str,
        key: str,
        max_num: int,
        begin_ms: int,
        end_ms: int,
        *,
        max_msgs_num_batch: int = MAX_MSGS_NUM_BATCH,
    ) -> list[int]:
        """`IndexService.queryOffset`: CommitLog offsets for `key`, newest file first.

        `max_num` is capped at `max_msgs_num_batch` (MessageStoreConfig.maxMsgsNumBatch, 64). A file is
        searched when its time range overlaps [begin_ms, end_ms]; the walk stops after the first file that
        begins before begin_ms, or once max_num offsets are found. Hash matches only: see select_phy_offsets.
        """
        max_num = min(max_num, max_msgs_num_batch)
        index_key = self.build_key(topic, key)
        found: list[int] = []
        for index_file in reversed(self.files):
            index_file.refresh_header()
            if index_file.is_time_matched(begin_ms, end_ms):
                found += index_file.select_phy_offsets(index_key, max_num - len(found), begin_ms, end_ms)
            if index_file.begin_timestamp < begin_ms or len(found) >= max_num:
                break
        return found

    # deletion

    def delete_expired_by_offset(self, min_phy_offset: int) -> list[str]:
        """`IndexService.deleteExpiredFile(offset)`: delete the oldest files whose entries all lie below
        the CommitLog's minimum offset. The newest file is never deleted. Returns the names deleted."""
        if not self.files or self.files[0].end_phy_offset >= min_phy_offset:
            return []
        expired = []
        for index_file in self.files[:-1]:
            if index_file.end_phy_offset >= min_phy_offset:
                break
            expired.append(index_file)
        return self._destroy(expired)

    def destroy_files(self, paths: Iterable[Path]) -> list[str]:
        """Delete these files (recovery drops the ones it does not trust); returns the names deleted."""
        doomed = {Path(path).name for path in paths}
        return self._destroy([f for f in self.files if f.name in doomed])

    def destroy_files_newer_than(self, timestamp_ms: int) -> list[str]:
        """What `IndexService.load(lastExitOK=false)` does after a crash: delete every file whose endTimestamp
        is after the checkpoint's indexMsgTimestamp, since its tail may not have reached the disk."""
        return self._destroy([f for f in self.files if f.end_timestamp > timestamp_ms])

    def _destroy(self, doomed: list[IndexFile]) -> list[str]:
        if doomed and self.read_only:
            raise StoreError(f"{self.index_dir}: index loaded read-only, not deleting files")
        for index_file in doomed:
            index_file.destroy()
            self.files.remove(index_file)
        return [index_file.name for index_file in doomed]

    def close(self) -> None:
        for index_file in self.files:
            index_file.close()
        self.files = []

    def __enter__(self) -> IndexService:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def index_keys(uniq_key: str | None, keys: str | None, sysflag: int = 0) -> list[str]:
    """The keys `IndexService.buildIndex` puts for a message: UNIQ_KEY when present (even empty: RocketMQ
    only checks for null), then each non-empty KEYS token; none for a rolled-back transaction."""
    if sysflag & TRANSACTION_MASK == TRANSACTION_ROLLBACK_TYPE:
        return []
    found = [] if uniq_key is None else [uniq_key]
    if keys:
        found += [token for token in keys.split(KEY_SEPARATOR) if token]
    return found
