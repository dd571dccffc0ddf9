"""`store verify`: everything a broker relies on, checked, each problem with its file and offset
(`VerifyReport`): the layout, every CommitLog record (CRC), every ConsumeQueue and index entry against its
record, every record reachable through its ConsumeQueue and each key through the index, the checkpoint."""

from __future__ import annotations

import bisect
import functools
import math
import operator
import struct
from collections import Counter, deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType

from store import codec
from store.checkpoint import StoreRunState, read_checkpoint, store_run_state
from store.commitlog_scan import SegmentEnd
from store.config import CQ_STORE_UNIT_SIZE
from store.consume_queue_format import (
    ENTRIES_PER_WINDOW,
    ENTRY,
    PRE_BLANK_SIZE,
    ConsumeQueueEntry,
    QueueEntryReader,
    entries_per_file,
    expected_tags_code,
    is_valid_entry,
    iter_entries,
    recovered_queue_end,
)
from store.errors import CorruptRecord, StoreError
from store.index_file import (
    INDEX_ENTRY_SIZE,
    KEY_SEPARATOR,
    TRANSACTION_MASK,
    TRANSACTION_ROLLBACK_TYPE,
    IndexFile,
    IndexService,
    index_keys,
)
from store.inspection.log_format import vanishing_files_are_store_changes
from store.inspection.rocketmq.reading import (
    LogEnd,
    LogEndReason,
    NoRecordAt,
    RecordReader,
    layout_problems,
    loadable_commitlog,
)
from store.inspection.rocketmq.verify_walk import (
    RecordFields,
    RecordsCallback,
    properties_of,
    walk_for_verify,
)
from store.java_checksums import index_key_hash, tags_code
from store.layout import ConsumeQueueDir, SegmentQueue, StoreLayout, discover_store, file_name_to_offset
from store.safe_read import PreadFile

# verify keeps this many findings per check; the rest are only counted, so a log cut short early does not
# print one line per ConsumeQueue entry after the cut.
FINDINGS_SHOWN_PER_CHECK = 50
DEFAULT_INDEX_CHECKS = 100_000
# Entries of a ConsumeQueue read at once where the walk did not match them to their records.
_ENTRIES_PER_READ = 16_384
# Index entries checked per read of an index file (every `stride`-th of the entries read).
_INDEX_ENTRIES_PER_READ = 4096
_INDEX_HASH_AND_OFFSET = struct.Struct(">iq")  # an index entry's key hash and physical offset


class Check(StrEnum):
    LAYOUT = "layout"
    COMMITLOG_RECORD = "commitlog-record"
    COMMITLOG_PHYSICAL_OFFSET = "commitlog-physical-offset"
    COMMITLOG_BLANK = "commitlog-blank"
    DATA_AFTER_END = "data-after-end"
    CQ_ENTRY = "cq-entry"
    CQ_BEYOND_LOG = "cq-beyond-log"
    CQ_UNREACHABLE = "cq-unreachable"  # a record its ConsumeQueue does not lead to
    INDEX_FILE = "index-file"
    INDEX_ENTRY = "index-entry"
    INDEX_BEYOND_LOG = "index-beyond-log"
    INDEX_UNREACHABLE = "index-unreachable"  # a key of a record that a query through the index does not find
    CHECKPOINT = "checkpoint"


class OffsetKind(StrEnum):
    PHYSICAL_OFFSET = "physical_offset"  # byte offset in the whole CommitLog
    FILE_POSITION = "file_position"  # byte offset inside `file`
    QUEUE_OFFSET = "queue_offset"  # entry number in the consume queue
    INDEX_ENTRY = "index_entry"  # entry number in the index file


@dataclass(frozen=True)
class Finding:
    check: Check
    file: Path | None
    offset: int | None  # the first one, when `count` > 1
    offset_kind: OffsetKind | None
    message: str
    count: int = 1  # entries this finding stands for (entries past the end of the log are reported together)


@dataclass(frozen=True)
class VerifyCounts:
    commitlog_segments: int
    commitlog_records: int
    commitlog_blanks: int
    commitlog_bytes_walked: int
    consume_queues: int
    consume_queue_entries_checked: int
    consume_queue_entries_below_min_offset: int  # their CommitLog segment was deleted by retention: fine
    index_files: int
    index_entries: int
    index_entries_checked: int
    index_entries_below_min_offset: int
    checkpoint_checked: bool
    records_checked_through_queues: int  # records looked up through their ConsumeQueue entry
    keyed_records_checked_through_index: int  # records whose every key was looked up through the index
    records_not_yet_dispatched: int  # a running store's tail its broker has not dispatched yet: not checked


@dataclass(frozen=True, kw_only=True)
class VerifyReport:
    schema: str = "mqinspect.store.verify/v1"
    root: Path
    ok: bool
    min_physical_offset: int
    max_physical_offset: int
    end: LogEnd
    counts: VerifyCounts
    index_check_limit: int | None  # None: every index entry was checked
    index_sampled: bool  # True: only every Nth entry was checked, to stay within the limit
    findings: tuple[Finding, ...]
    findings_not_shown: Mapping[str, int]  # per check, beyond FINDINGS_SHOWN_PER_CHECK


def _segment_path(queue: SegmentQueue, offset: int) -> Path | None:
    at = bisect.bisect_right([s.file_from_offset for s in queue.segments], offset) - 1
    return queue.segments[at].path if at >= 0 else None


def _position_in_segment(event: SegmentEnd) -> int:
    """Where in its file an event lies; from the file's name, which holds even when a misplaced segment
    breaks the "start is a multiple of the size" rule."""
    return event.physical_offset - file_name_to_offset(event.segment.name)


class _Findings:
    def __init__(self, shown_per_check: int = FINDINGS_SHOWN_PER_CHECK):
        self.shown: list[Finding] = []
        self.not_shown: Counter[str] = Counter()
        self._per_check: Counter[str] = Counter()
        self._limit = shown_per_check

    def add(
        self,
        check: Check,
        message: str,
        file: Path | None = None,
        offset: int | None = None,
        offset_kind: OffsetKind | None = None,
        count: int = 1,
    ) -> None:
        self._per_check[check] += 1
        if self._per_check[check] > self._limit:
            self.not_shown[check.value] += 1
        else:
            self.shown.append(Finding(check, file, offset, offset_kind, message, count))

    def add_not_shown(self, check: Check, count: int) -> None:
        """Findings known to be beyond the shown ones of their check (their check has that many shown)."""
        self._per_check[check] += count
        self.not_shown[check.value] += count

    @property
    def count(self) -> int:
        return len(self.shown) + sum(self.not_shown.values())


@dataclass
class _Tally:
    """Counters the checks fill in; frozen into VerifyCounts at the end."""

    commitlog_records: int = 0
    commitlog_blanks: int = 0
    cq_checked: int = 0
    cq_below_min: int = 0
    index_entries: int = 0
    index_checked: int = 0
    index_below_min: int = 0
    index_sampled: bool = False
    index_stride: int = 1


@vanishing_files_are_store_changes
def verify_store(root: Path, *, index_check_limit: int | None = DEFAULT_INDEX_CHECKS) -> VerifyReport:
    """Check everything a broker relies on and report every problem with its file and offset.

    - layout: names, sizes and gaps of every segment directory (RocketMQ refuses to load otherwise);
    - the CommitLog walk, CRC checked, stopping at the first bad record as recovery does; then whether any
      data lies after that end (recovery would delete it);
    - every record is reachable through its ConsumeQueue (the entry at its queue offset names it, within the
      entries the store keeps at start-up), and every ConsumeQueue entry against the record it points at
      (topic, queue, queue offset, size, tagsCode), none past the end of the log;
    - every key of every record (UNIQ_KEY and KEYS) within the index's window (from the oldest index file's
      first record) is found by a query through the index, and index entries match the records they point
      at; both up to `index_check_limit` (an even sample beyond it);
    - the checkpoint is present and readable.
    A running store's tail that its broker has not dispatched yet is not held against it (counted instead).
    """
    layout = discover_store(Path(root))
    findings, tally = _Findings(), _Tally()
    for problem in layout_problems(layout, include_commitlog=True):
        findings.add(Check.LAYOUT, problem.reason, problem.path)
    queue = loadable_commitlog(layout)
    minimum = queue.segments[0].file_from_offset if queue.segments else 0
    index_files = _open_index_files(layout, findings)
    try:
        tally.index_entries = sum(index_file.header.entry_count for index_file in index_files)
        limit = index_check_limit
        tally.index_stride = (
            1 if not limit or tally.index_entries <= limit else math.ceil(tally.index_entries / limit)
        )
        tally.index_sampled = tally.index_stride > 1
        with RecordReader(queue) as reader:
            index_checks = _IndexEntryChecks(index_files, tally, minimum, reader)
            with _Reachability(layout, index_files, tally, minimum, index_checks) as reachability:
                end = _verify_commitlog(queue, findings, tally, reachability.check)
                reachability.report(findings)
            _check_data_after_end(queue, end, findings)
            for cq in layout.consume_queues:
                matched = reachability.matched.get((cq.topic, cq.queue_id), [])
                _verify_consume_queue(cq, reader, matched, (minimum, end.physical_offset), findings, tally)
            index_checks.finish(end.physical_offset, findings)
    finally:
        for index_file in index_files:
            index_file.close()
    _verify_checkpoint(layout, findings)
    counts = VerifyCounts(
        commitlog_segments=len(queue.segments),
        commitlog_records=tally.commitlog_records,
        commitlog_blanks=tally.commitlog_blanks,
        commitlog_bytes_walked=end.physical_offset - minimum,
        consume_queues=len(layout.consume_queues),
        consume_queue_entries_checked=tally.cq_checked,
        consume_queue_entries_below_min_offset=tally.cq_below_min,
        index_files=len(layout.index_files),
        index_entries=tally.index_entries,
        index_entries_checked=tally.index_checked,
        index_entries_below_min_offset=tally.index_below_min,
        checkpoint_checked=layout.checkpoint is not None,
        records_checked_through_queues=reachability.through_queues,
        keyed_records_checked_through_index=reachability.through_index,
        records_not_yet_dispatched=reachability.not_yet_dispatched,
    )
    return VerifyReport(
        root=layout.root,
        ok=findings.count == 0,
        min_physical_offset=minimum,
        max_physical_offset=end.physical_offset,
        end=end,
        counts=counts,
        index_check_limit=index_check_limit,
        index_sampled=tally.index_sampled,
        findings=tuple(findings.shown),
        findings_not_shown=MappingProxyType(dict(findings.not_shown)),
    )


def _open_index_files(layout: StoreLayout, findings: _Findings) -> list[IndexFile]:
    files = []
    for path in layout.index_files:
        try:
            files.append(IndexFile.open(path))
        except StoreError as error:
            findings.add(Check.INDEX_FILE, str(error), path)
    return files


@dataclass
class _Unreached:
    """Records one queue (or the index) does not lead to: reported as one finding with a count."""

    first_physical_offset: int = 0
    first_detail: str = ""
    file: Path | None = None
    offset: int | None = None
    count: int = 0

    def note(self, physical_offset: int, detail: str, file: Path | None, offset: int | None) -> None:
        if not self.count:
            self.first_physical_offset, self.first_detail, self.file, self.offset = (
                physical_offset, detail, file, offset,
            )  # fmt: skip
        self.count += 1


_ENTERS_CONSUME_QUEUE = frozenset((codec.TRANSACTION_NOT_TYPE, codec.TRANSACTION_COMMIT_TYPE))
_UNIQ_KEY, _KEYS, _TAGS = (
    codec.PROPERTY_UNIQ_CLIENT_MESSAGE_ID_KEYIDX,
    codec.PROPERTY_KEYS,
    codec.PROPERTY_TAGS,
)
_SCHEDULE_TOPIC, _DELAY = codec.SCHEDULE_TOPIC, codec.PROPERTY_DELAY_TIME_LEVEL
# The transaction bits of sysflag: a record enters its ConsumeQueue when neither prepared nor rolled back
# (0 or commit), that is when the prepared bit (in both) is clear.
_PREPARED_OR_ROLLBACK = codec.TRANSACTION_PREPARED_TYPE
assert codec.TRANSACTION_ROLLBACK_TYPE & _PREPARED_OR_ROLLBACK
assert not codec.TRANSACTION_COMMIT_TYPE & _PREPARED_OR_ROLLBACK
_TRANSACTION_TYPE_MASK = codec.TRANSACTION_TYPE_MASK


_NO_KEY = frozenset((b"", b" ", b"\x02"))  # how a KEYS value starts that may hold no key
# The fast path of _Reachability.check; False: every record's entry read and compared alone (the tests' way
# of holding the runs to the entry-by-entry checks).
_BULK_CHECKS = True
_RUN_ENTRIES = ENTRIES_PER_WINDOW  # a queue's run is compared after the block it reaches this many in
# Entries all the queues' runs may hold between blocks (a few MiB of ints), whatever the number of queues.
_PENDING_ENTRIES = 1 << 16


# Records of one queue at consecutive queue offsets [start, end), each as (physical offset, size, tagsCode):
# the entries the ConsumeQueue should hold for them, as ENTRY unpacks them. A list, not an object: the walk
# adds one record at a time.
_QueueRun = list  # [start, end, [(physical offset, size, tagsCode), ...]]


def _add_run_to_runs(runs: list[list[int]], first: int, end: int) -> None:
    """_add_to_runs for each of [first, end), in one step when they follow the runs."""
    if runs and runs[-1][1] == first:
        runs[-1][1] = end
    elif not runs or first > runs[-1][1]:
        runs.append([first, end])
    else:
        for number in range(first, end):
            _add_to_runs(runs, number)


class _EntryFields(QueueEntryReader):
    """A QueueEntryReader that also gives an entry as its raw (physical offset, size, tagsCode) fields, with
    no object per entry: the walk asks for one per record."""

    def fields(self, queue_offset: int) -> tuple[int, int, int] | None:
        position = queue_offset - self._window_start
        if 0 <= position < len(self._window) and self.first <= queue_offset < self.end:
            return self._window[position]
        entry = self.entry(queue_offset)
        return None if entry is None else (entry.physical_offset, entry.size_bytes, entry.tags_code)

    def raw(self, queue_offset: int, count: int) -> memoryview | bytes:
        """Up to `count` entries from `queue_offset` as the file holds them, as many as lie before `end` and
        in one read (of one file); none when the first does not."""
        if not self.first <= queue_offset < self.end or not self._per_file:
            return b""
        count = min(count, self.end - queue_offset)
        position = queue_offset - self._raw_start
        if position < 0 or (position + count) * CQ_STORE_UNIT_SIZE > len(self._raw):
            self._raw_start, self._raw, position = queue_offset, self._read_entries(queue_offset), 0
        return self._raw[position * CQ_STORE_UNIT_SIZE : (position + count) * CQ_STORE_UNIT_SIZE]

    _raw_start = 0
    _raw: memoryview | bytes = b""


class _Reachability:
    """Each record of the walk looked up the way a consumer and a query find it: through the entry at its
    queue offset in its ConsumeQueue, and each of its keys through the index's hash chains."""

    def __init__(
        self,
        layout: StoreLayout,
        index_files: list[IndexFile],
        tally: _Tally,
        log_min: int,
        index_checks: _IndexEntryChecks,
    ):
        self._layout = layout
        self._index_checks = index_checks
        self._log_min = log_min
        self._readers: dict[tuple[str, int], _EntryFields | None] = {}
        # Per queue, the runs [first, end) of queue offsets whose entry the walk found naming its record:
        # those entries are checked, and the entry checks after the walk read only what lies outside them.
        self.matched: dict[tuple[str, int], list[list[int]]] = {}
        self._tags_codes: dict[str | None, int] = {}
        self._tags_codes_of_bytes: dict[bytes, int] = {}
        self._runs: dict[tuple[str, int], _QueueRun] = {}  # per queue, the records not compared yet
        self._tags_tail: tuple[bytes, int | None] = (b"\x00", None)  # (the last TAGS property, its code)
        self._queue_misses: dict[tuple[str, int], _Unreached] = {}
        self._index_misses = _Unreached()
        # From the oldest index file's first record on, every key must be indexed: a file that holds nothing
        # yet (begin 0, or the previous file's end) still says where its keys would start.
        self._index_files = index_files
        self._index_window_start = index_files[0].begin_phy_offset if index_files else None
        self._stride = tally.index_stride
        self._keyed_seen = 0
        run_state = store_run_state(layout.root)
        self._crashed = run_state is StoreRunState.CRASHED
        self._queue_frontier, self._index_frontier = (
            self._frontiers(layout, index_files) if run_state is StoreRunState.RUNNING else (None, None)
        )
        # Records in [from, to] have their keys looked up (none without an index file).
        self._index_checked_range = (
            math.inf if self._index_window_start is None else self._index_window_start,
            math.inf if self._index_frontier is None else self._index_frontier,
        )
        self.through_queues = 0
        self.through_index = 0
        self.not_yet_dispatched = 0

    @staticmethod
    def _frontiers(layout: StoreLayout, index_files: list[IndexFile]) -> tuple[int, int | None]:
        """On a running store, where what its broker has dispatched ends: in the ConsumeQueues (the largest
        end any of them points to) and in the index (the record it ends with)."""
        ends = []
        for cq in layout.consume_queues:
            with QueueEntryReader(cq.queue, recovered_queue_end(cq.queue)) as reader:
                ends.append(reader.last_record_end())
        return max(ends, default=0), index_files[-1].end_phy_offset if index_files else None

    def check(self, records: list[RecordFields]) -> None:
        """The records of a block of the walk: each through its ConsumeQueue entry and its keys. One loop,
        everything a record needs inline: it runs once per record of the log. A record's ConsumeQueue entry
        is what it expects in a run of its queue's (`_QueueRun`), compared with the file's bytes at once;
        its tags and keys are read from its properties' bytes, parsed whole only where that is not sure."""
        if not records:
            return
        frontier = self._queue_frontier if self._queue_frontier is not None else math.inf
        if not _BULK_CHECKS or records[-1][0] >= frontier or type(records[0][7]) is not bytes:
            self._flush_runs()  # the exact path's records come alone, with their properties parsed
            self._check_one_by_one(records)
            return
        through_queues, keyed_seen, stride = 0, self._keyed_seen, self._stride
        runs, codes = self._runs, self._tags_codes_of_bytes
        index_from, index_to = self._index_checked_range
        index_checks = self._index_checks
        entries_due = index_checks.due
        tags_tail, tags_tail_code = self._tags_tail
        run, run_key = None, None
        no_key, transaction, rollback = _NO_KEY, TRANSACTION_MASK, TRANSACTION_ROLLBACK_TYPE
        parsed_at, parsed = -1, {}  # the last record whose properties were parsed: the index checks share it
        for offset, _, topic, queue_id, queue_offset, size, sysflag, properties in records:
            if offset >= entries_due:
                parsed_at, parsed = offset, properties_of(properties)
                index_checks.reached(offset, topic, parsed)
                entries_due = index_checks.due
            if not sysflag & _PREPARED_OR_ROLLBACK:  # it enters its ConsumeQueue
                through_queues += 1
                # tags_code(string_to_properties(...).get("TAGS")), where the bytes say it for sure: the
                # last "TAGS\x01" starts a property and its value is not empty (an empty one is dropped);
                # the properties usually end as the last record's did, with that property
                if properties.endswith(tags_tail):
                    code = tags_tail_code
                else:
                    code = 0
                    at = properties.rfind(b"TAGS\x01")
                    if at >= 0:
                        code = None
                        if not at or properties[at - 1] == 2:
                            value_end = properties.find(b"\x02", at)
                            value = properties[at + 5 : value_end] if value_end >= 0 else properties[at + 5 :]
                            code = codes.get(value) if value else None
                            if code is None and value:
                                code = codes[value] = tags_code(value.decode())
                            if at and value and value_end == len(properties) - 1 and b"\x01" not in value:
                                tags_tail, tags_tail_code = properties[at - 1 :], code
                if code is None or topic == _SCHEDULE_TOPIC:
                    key = (topic, queue_id)
                    if key in runs:
                        self._flush_run(key, runs[key])
                    self._check_through_queue(key, offset, queue_offset, size, properties_of(properties))
                    run = None
                elif (
                    run is not None
                    and run[1] == queue_offset
                    and topic is run_key[0]
                    and queue_id == run_key[1]
                ):
                    run[1] = queue_offset + 1
                    run[2].append((offset, size, code))
                else:
                    run_key = (topic, queue_id)
                    run = runs.get(run_key)
                    if run is not None and run[1] == queue_offset:
                        run[1] = queue_offset + 1
                        run[2].append((offset, size, code))
                    else:
                        if run is not None:
                            self._flush_run(run_key, run)
                        run = runs[run_key] = [queue_offset, queue_offset + 1, [(offset, size, code)]]
            if index_from <= offset <= index_to and sysflag & transaction != rollback:
                # whether index_keys(...) is empty, from the bytes when they say it for sure (the last
                # "KEYS\x01" starts a property whose value starts with a key), else from the parsed properties
                at = properties.rfind(b"KEYS\x01")
                if (
                    at >= 0
                    and (not at or properties[at - 1] == 2)
                    and properties[at + 5 : at + 6] not in no_key
                ):
                    keyed = True
                elif at < 0 and b"UNIQ_KEY\x01" not in properties:
                    keyed = False
                else:
                    if parsed_at != offset:
                        parsed_at, parsed = offset, properties_of(properties)
                    keys = parsed.get(_KEYS)
                    keyed = _UNIQ_KEY in parsed or bool(keys and keys.strip(KEY_SEPARATOR))
                if keyed:
                    keyed_seen += 1
                    if not (keyed_seen - 1) % stride:
                        if parsed_at != offset:
                            parsed_at, parsed = offset, properties_of(properties)
                        uniq_key, keys = parsed.get(_UNIQ_KEY), parsed.get(_KEYS)
                        self._check_keys(topic, index_keys(uniq_key, keys, sysflag), offset)
        self.through_queues += through_queues
        self._keyed_seen = keyed_seen
        self._tags_tail = tags_tail, tags_tail_code
        pending = [(run[1] - run[0], key) for key, run in runs.items()]
        held_back = sum(count for count, _ in pending)
        for count, key in pending:
            if count >= _RUN_ENTRIES or held_back > _PENDING_ENTRIES:
                self._flush_run(key, runs[key])

    def _check_one_by_one(self, records: list[RecordFields]) -> None:
        """check(records), each record's entry read and compared alone: for a running store's tail (and the
        tests, which hold check's runs to it)."""
        frontier = self._queue_frontier if self._queue_frontier is not None else math.inf
        keyed_seen, stride = self._keyed_seen, self._stride
        index_from, index_to = self._index_checked_range
        index_checks = self._index_checks
        for offset, _, topic, queue_id, queue_offset, size, sysflag, raw_properties in records:
            properties = properties_of(raw_properties)
            if offset >= index_checks.due:
                index_checks.reached(offset, topic, properties)
            if offset >= frontier:
                self.not_yet_dispatched += 1
                continue
            if sysflag & _TRANSACTION_TYPE_MASK in _ENTERS_CONSUME_QUEUE:
                self.through_queues += 1
                self._check_through_queue((topic, queue_id), offset, queue_offset, size, properties)
            if index_from <= offset <= index_to:
                # whether index_keys(...) is empty, without building it: only sampled records need it
                uniq_key, keys = properties.get(_UNIQ_KEY), properties.get(_KEYS)
                if (uniq_key is not None or (keys and keys.strip(KEY_SEPARATOR))) and (
                    sysflag & TRANSACTION_MASK != TRANSACTION_ROLLBACK_TYPE
                ):
                    keyed_seen += 1
                    if not (keyed_seen - 1) % stride:
                        self._check_keys(topic, index_keys(uniq_key, keys, sysflag), offset)
        self._keyed_seen = keyed_seen

    def _check_through_queue(
        self, key: tuple[str, int], offset: int, queue_offset: int, size: int, properties: dict
    ) -> None:
        """The record's entry, read alone: matched (consume_queue_format.entry_matches), or why not."""
        reader = self._readers[key] if key in self._readers else self._reader(key)
        entry = reader.fields(queue_offset) if reader is not None else None
        if entry is not None and entry[0] == offset and entry[1] == size:
            tags = properties.get(_TAGS)
            code = self._tags_codes.get(tags)
            if code is None:
                code = self._tags_codes[tags] = tags_code(tags)
            if entry[2] == code or (key[0] == _SCHEDULE_TOPIC and _DELAY in properties):
                _add_to_runs(self.matched[key], queue_offset)
                return
        self._note_queue_miss(key, reader, queue_offset, offset)

    def _flush_run(self, key: tuple[str, int], run: _QueueRun) -> None:
        """The run's entries against the file's, each read's worth in one comparison (in C); entry by entry
        where they differ (or the queue holds none), so that each finding is the one the entry alone gives."""
        del self._runs[key]
        reader = self._readers[key] if key in self._readers else self._reader(key)
        start, end, fields = run
        matched = self.matched[key]
        first = start
        while first < end:
            stored = reader.raw(first, end - first) if reader is not None else b""
            count = len(stored) // CQ_STORE_UNIT_SIZE or end - first
            chunk = fields[first - start : first - start + count]
            if stored and list(ENTRY.iter_unpack(stored)) == chunk:
                _add_run_to_runs(matched, first, first + count)
            else:
                for number, expected in enumerate(chunk):
                    entry = reader.fields(first + number) if reader is not None else None
                    if entry == expected:
                        _add_to_runs(matched, first + number)
                    else:
                        self._note_queue_miss(key, reader, first + number, expected[0])
            first += count

    def _flush_runs(self) -> None:
        for key, run in list(self._runs.items()):
            self._flush_run(key, run)

    def _reader(self, key: tuple[str, int]) -> _EntryFields | None:
        cq = self._layout.consume_queue(*key)
        reader = self._readers[key] = _EntryFields(cq.queue, recovered_queue_end(cq.queue)) if cq else None
        self.matched[key] = []
        return reader

    def _note_queue_miss(
        self, key: tuple[str, int], reader: _EntryFields | None, queue_offset: int, offset: int
    ) -> None:
        misses = self._queue_misses
        if reader is None:
            misses.setdefault(key, _Unreached()).note(
                offset, "no ConsumeQueue for this queue", None, queue_offset
            )
            return
        detail = self._queue_miss(reader.entry(queue_offset), queue_offset, reader.end)
        if detail is not None:
            file = _segment_path_for_queue_offset(reader.queue, queue_offset)
            misses.setdefault(key, _Unreached()).note(offset, detail, file, queue_offset)

    def _queue_miss(self, entry: ConsumeQueueEntry | None, queue_offset: int, end: int) -> str | None:
        """Why the entry at a record's queue offset does not lead to it; None for a wrong entry the entry
        checks report (they say what it names instead), so one damage is one finding."""
        if entry is None:
            return f"entry {queue_offset} is missing (the queue ends at {end})"
        if not entry.names_a_record:
            return f"entry {queue_offset} is not an entry ({entry.physical_offset}, {entry.size_bytes} B)"
        if entry.physical_offset < self._log_min:
            return f"entry {queue_offset} names {entry.physical_offset}, below the start of the log"
        return None

    def _check_keys(self, topic: str, keys: list[str], offset: int) -> None:
        """Each key of the record at `offset` through the index's hash chains, as a query finds it."""
        self.through_index += 1
        for key in keys:
            key_hash = _key_hash(topic, key)
            holders = [f for f in self._index_files if f.begin_phy_offset <= offset <= f.end_phy_offset]
            if not any(index_file.holds_key(key_hash, offset) for index_file in holders):
                where = holders[-1].path if holders else self._index_files[-1].path
                self._index_misses.note(offset, f"key {key!r} of topic {topic}", where, offset)
                return

    def report(self, findings: _Findings) -> None:
        self._flush_runs()
        hint = "; recovery rebuilds them" if self._crashed else ""
        for (topic, queue_id), miss in sorted(self._queue_misses.items()):
            records = "1 record is" if miss.count == 1 else f"{miss.count} records are"
            findings.add(
                Check.CQ_UNREACHABLE,
                f"{topic}/{queue_id}: {records} not reachable through the ConsumeQueue, the first at "
                f"{miss.first_physical_offset} (queue offset {miss.offset}): {miss.first_detail}{hint}",
                miss.file or self._layout.root / "consumequeue" / topic / str(queue_id),
                miss.offset,
                OffsetKind.QUEUE_OFFSET,
                miss.count,
            )
        miss = self._index_misses
        if miss.count:
            records = "1 record has" if miss.count == 1 else f"{miss.count} records have"
            findings.add(
                Check.INDEX_UNREACHABLE,
                f"{records} a key a query through the index does not find, the first at "
                f"{miss.first_physical_offset}: {miss.first_detail}{hint}",
                miss.file,
                miss.offset,
                OffsetKind.PHYSICAL_OFFSET,
                miss.count,
            )

    def __enter__(self) -> _Reachability:
        return self

    def __exit__(self, *exc_info) -> None:
        for reader in self._readers.values():
            if reader is not None:
                reader.close()


def _segment_path_for_queue_offset(queue: SegmentQueue, queue_offset: int) -> Path | None:
    segment = queue.segment_for(queue_offset * CQ_STORE_UNIT_SIZE)
    return segment.path if segment else (queue.segments[-1].path if queue.segments else None)


_FIRST, _SECOND = operator.itemgetter(0), operator.itemgetter(1)


def _verify_commitlog(
    queue: SegmentQueue, findings: _Findings, tally: _Tally, on_records: RecordsCallback
) -> LogEnd:
    if not queue.segments:
        return LogEnd(0, LogEndReason.NO_SEGMENTS, None)

    def check_records(records: list[RecordFields]) -> None:
        on_records(records)
        if list(map(_FIRST, records)) == list(map(_SECOND, records)):
            return  # every record's PHYSICALOFFSET field says where it lies (compared in C)
        for offset, stored, *_ in records:
            if stored != offset:
                findings.add(
                    Check.COMMITLOG_PHYSICAL_OFFSET,
                    f"the record's PHYSICALOFFSET field says {stored}, but it lies at {offset} "
                    "(a misnamed or moved segment?)",
                    _segment_path(queue, offset),
                    offset,
                    OffsetKind.PHYSICAL_OFFSET,
                )

    walk = walk_for_verify(queue, check_records)
    tally.commitlog_records, tally.commitlog_blanks = walk.records, len(walk.blanks)
    for blank in walk.blanks:
        left = queue.file_size - _position_in_segment(blank)
        if blank.blank_bytes != left:
            findings.add(
                Check.COMMITLOG_BLANK,
                f"the END_OF_FILE blank claims {blank.blank_bytes} bytes, but {left} are left in the segment",
                blank.segment,
                blank.physical_offset,
                OffsetKind.PHYSICAL_OFFSET,
            )
    end = walk.end
    if end.reason is LogEndReason.CORRUPT:
        findings.add(
            Check.COMMITLOG_RECORD,
            f"{end.detail}; the log ends here, as recovery would truncate it",
            end.segment,
            end.physical_offset,
            OffsetKind.PHYSICAL_OFFSET,
        )
    elif end.reason is LogEndReason.SHRUNK:
        findings.add(
            Check.COMMITLOG_RECORD,
            "the segment became shorter while it was read (truncated by its owner); the walk stopped here",
            end.segment,
            end.physical_offset,
            OffsetKind.PHYSICAL_OFFSET,
        )
    return end


def _check_data_after_end(queue: SegmentQueue, end: LogEnd, findings: _Findings) -> None:
    """Non-zero bytes past the end of the log: records recovery would truncate, or whole files it would
    delete. They are what a corrupt record or a hole (pages that never reached the disk) cost."""
    if end.reason in (LogEndReason.NO_SEGMENTS, LogEndReason.SHRUNK) or not queue.file_size:
        return
    for segment in queue.segments:
        if segment.file_from_offset + queue.file_size <= end.physical_offset:
            continue
        holds_end = segment.file_from_offset <= end.physical_offset
        after = end.physical_offset - segment.file_from_offset if holds_end else 0
        # A final blank's 8 bytes, or the bad record's head, sit at the end itself: only what follows counts.
        ignored = codec.END_FILE_MIN_BLANK_LENGTH if holds_end and end.reason is not LogEndReason.ZEROS else 0
        with PreadFile(segment.path) as file:
            data_end = file.end_of_nonzero_data()
        if data_end > after + ignored:
            fate = "truncate them" if holds_end else "delete this file"
            findings.add(
                Check.DATA_AFTER_END,
                f"{data_end - after} bytes up to position {data_end} hold data after the end of the log at "
                f"{end.physical_offset} ({end.reason.value}); recovery would {fate}",
                segment.path,
                after,
                OffsetKind.FILE_POSITION,
            )


@dataclass
class _PastTheEnd:
    """Entries of one queue or index file that point past the end of the log. They are reported as one
    finding with a count: after a log cut short they all follow from that one cut."""

    first_number: int | None = None  # queue offset or index entry number
    first_physical_offset: int = 0
    count: int = 0

    def note(self, number: int, physical_offset: int) -> None:
        if self.first_number is None:
            self.first_number, self.first_physical_offset = number, physical_offset
        self.count += 1

    def describe(self, what: str, log_end: int) -> str:
        entries = "1 entry" if self.count == 1 else f"{self.count} entries"
        return (
            f"{what}: {entries} point past the end of the log at {log_end}, the first at "
            f"{self.first_physical_offset}"
        )


def _verify_consume_queue(
    cq: ConsumeQueueDir,
    reader: RecordReader,
    matched: list[list[int]],
    log_range: tuple[int, int],
    findings: _Findings,
    tally: _Tally,
) -> None:
    """Every entry of the queue against its record; those the walk matched to their record already are only
    counted (`matched`: runs of queue offsets)."""
    minimum, log_end = log_range
    past_the_end = _PastTheEnd()
    matched_count = [0]
    for entry in _entries_outside(cq.queue, matched, matched_count):
        if entry.physical_offset < minimum:
            tally.cq_below_min += 1
            continue
        tally.cq_checked += 1
        if entry.physical_offset + entry.size_bytes > log_end:
            past_the_end.note(entry.queue_offset, entry.physical_offset)
            continue
        mismatch = _cq_entry_mismatch(cq, entry, reader)
        if mismatch:
            where = _cq_segment_path(cq, entry.queue_offset)
            findings.add(Check.CQ_ENTRY, mismatch, where, entry.queue_offset, OffsetKind.QUEUE_OFFSET)
    tally.cq_checked += matched_count[0]
    if past_the_end.count:
        findings.add(
            Check.CQ_BEYOND_LOG,
            past_the_end.describe(f"{cq.topic}/{cq.queue_id} from queue offset {past_the_end.first_number}",
                                  log_end),
            _cq_segment_path(cq, past_the_end.first_number),
            past_the_end.first_number,
            OffsetKind.QUEUE_OFFSET,
            past_the_end.count,
        )  # fmt: skip


def _add_to_runs(runs: list[list[int]], number: int) -> None:
    """Add `number` to ascending runs [first, end); one out of order is left out (and checked again)."""
    if runs and runs[-1][1] == number:
        runs[-1][1] += 1
    elif not runs or number > runs[-1][1]:
        runs.append([number, number + 1])


def _entries_outside(
    queue: SegmentQueue, runs: list[list[int]], inside: list[int]
) -> Iterator[ConsumeQueueEntry]:
    """iter_entries(queue) less the entries in `runs`, which are valid (each names its record) and are not
    read again: only counted, into inside[0]. The queue ends where iter_entries ends it: at the first
    invalid entry, or a file that ends early."""
    per_file = entries_per_file(queue)
    if not runs or any(segment.size_bytes != per_file * CQ_STORE_UNIT_SIZE for segment in queue.segments):
        yield from (entry for entry in iter_entries(queue) if not _in_runs(runs, entry.queue_offset))
        return
    ahead = iter(runs)
    run = next(ahead, None)
    for segment in queue.segments:
        first = segment.file_from_offset // CQ_STORE_UNIT_SIZE
        file_end = first + per_file
        with PreadFile(segment.path) as file:
            number = first
            while number < file_end:
                while run is not None and run[1] <= number:
                    run = next(ahead, None)
                if run is not None and run[0] <= number:
                    upto = min(run[1], file_end)
                    inside[0] += upto - number
                    number = upto
                    continue
                count = (
                    min(run[0] if run is not None else file_end, file_end, number + _ENTRIES_PER_READ)
                    - number
                )
                data = file.read((number - first) * CQ_STORE_UNIT_SIZE, count * CQ_STORE_UNIT_SIZE)
                whole = len(data) // CQ_STORE_UNIT_SIZE
                for at, (physical_offset, size, tags) in enumerate(
                    ENTRY.iter_unpack(data[: whole * CQ_STORE_UNIT_SIZE])
                ):
                    if not is_valid_entry(physical_offset, size):
                        return
                    if not (size == PRE_BLANK_SIZE and physical_offset == 0):
                        yield ConsumeQueueEntry(number + at, physical_offset, size, tags)
                if whole < count:
                    return
                number += count


def _in_runs(runs: list[list[int]], number: int) -> bool:
    at = bisect.bisect_right(runs, [number, math.inf]) - 1
    return at >= 0 and runs[at][0] <= number < runs[at][1]


def _cq_segment_path(cq: ConsumeQueueDir, queue_offset: int) -> Path | None:
    segment = cq.queue.segment_for(queue_offset * CQ_STORE_UNIT_SIZE)
    return segment.path if segment else None


def _cq_entry_mismatch(cq: ConsumeQueueDir, entry: ConsumeQueueEntry, reader: RecordReader) -> str | None:
    label = f"{cq.topic}/{cq.queue_id} entry {entry.queue_offset} -> {entry.physical_offset}"
    try:
        record = reader.record_at(entry.physical_offset, size_hint=entry.size_bytes)
    except (CorruptRecord, NoRecordAt) as error:
        return f"{label}: no record starts there ({error})"
    if isinstance(record, codec.BlankRecord):
        return f"{label}: points at an END_OF_FILE blank, not a message"
    expected = {
        "topic": (cq.topic, record.topic),
        "queue id": (cq.queue_id, record.queue_id),
        "queue offset": (entry.queue_offset, record.queue_offset),
        "size": (entry.size_bytes, record.total_size),
    }
    tags_code = expected_tags_code(record)
    if tags_code is not None:
        expected["tagsCode"] = (entry.tags_code, tags_code)
    wrong = [f"{name} {want!r} vs {got!r}" for name, (want, got) in expected.items() if want != got]
    return f"{label}: entry and record disagree: {', '.join(wrong)} (entry vs record)" if wrong else None


class _IndexEntryChecks:
    """Each index file's entries (every `stride`-th), read in blocks in the order they were written, which
    is the CommitLog's, and checked against their record when the walk reaches the offset they name: no
    pread per entry. An entry the walk passes without a record starting there (or out of order) is read
    the old way, with its record's own pread, so its finding says what it always said. Findings are held
    per file and given in file and entry order at the end, as a check file by file gave them."""

    def __init__(self, files: list[IndexFile], tally: _Tally, minimum: int, reader: RecordReader):
        self._tally, self._minimum, self._reader = tally, minimum, reader
        self._files = [_IndexFileEntries(index_file, tally.index_stride) for index_file in files]
        self.due = math.inf  # the lowest offset an entry waits for
        for entries in self._files:
            self._fill(entries)
        self._update_due()

    def reached(self, offset: int, topic: str, properties: dict) -> None:
        """The walk is at the record at `offset`: judge every entry naming it or an offset before it."""
        for entries in self._files:
            pending = entries.pending
            while pending and pending[0][0] <= offset:
                physical_offset, number, key_hash = pending.popleft()
                if physical_offset == offset:
                    uniq_key, keys = properties.get(_UNIQ_KEY), properties.get(codec.PROPERTY_KEYS)
                    problem = _key_hash_problem(key_hash, topic, index_keys(uniq_key, keys))
                    if problem:
                        entries.hold(Check.INDEX_ENTRY, number, f"entry {number} -> {offset}: {problem}")
                else:
                    self._judge_by_reading(entries, number, physical_offset, key_hash, None)
                if not pending:
                    self._fill(entries)
        self._update_due()

    def finish(self, log_end: int, findings: _Findings) -> None:
        """The entries the walk did not reach, then every file's findings."""
        for entries in self._files:
            while entries.pending:
                while entries.pending:
                    physical_offset, number, key_hash = entries.pending.popleft()
                    self._judge_by_reading(entries, number, physical_offset, key_hash, log_end)
                self._fill(entries)
            entries.report(findings, log_end)

    def _judge_by_reading(
        self,
        entries: _IndexFileEntries,
        number: int,
        physical_offset: int,
        key_hash: int,
        log_end: int | None,
    ) -> None:
        """The entry against the record read at its offset (None: the log ends past it)."""

        def report(check: Check, message: str) -> None:
            entries.hold(check, number, f"entry {number} -> {physical_offset}: {message}")

        if log_end is not None and physical_offset >= log_end:
            entries.past_the_end.note(number, physical_offset)
            return
        try:
            record = self._reader.record_at(physical_offset)
        except (CorruptRecord, NoRecordAt) as error:
            report(Check.INDEX_ENTRY, f"no record starts there ({error})")
            return
        if isinstance(record, codec.BlankRecord):
            report(Check.INDEX_ENTRY, "points at an END_OF_FILE blank, not a message")
            return
        problem = _key_hash_problem(key_hash, record.topic, index_keys(record.uniq_key, record.keys))
        if problem:
            report(Check.INDEX_ENTRY, problem)

    def _fill(self, entries: _IndexFileEntries) -> None:
        """The next block of the file's entries into its pending ones; those below the log's start only
        counted, as a short read's are handed to IndexFile.entry for its error."""
        for number, entry in entries.read_block():
            if entry is None:
                try:
                    entries.index_file.entry(number)
                except CorruptRecord as error:
                    entries.hold(Check.INDEX_FILE, number, str(error))
                continue
            key_hash, physical_offset = entry
            if physical_offset < self._minimum:
                self._tally.index_below_min += 1
                continue
            self._tally.index_checked += 1
            entries.pending.append((physical_offset, number, key_hash))

    def _update_due(self) -> None:
        self.due = min(
            (entries.pending[0][0] for entries in self._files if entries.pending), default=math.inf
        )


class _IndexFileEntries:
    """One index file's entries to check, read a block at a time, and its findings until the end."""

    def __init__(self, index_file: IndexFile, stride: int):
        self.index_file = index_file
        self.numbers = range(1, index_file.header.index_count, stride)
        self._next = 0  # in `numbers`
        self.pending: deque[tuple[int, int, int]] = deque()  # (physical offset, entry number, key hash)
        self.past_the_end = _PastTheEnd()
        self._held: list[tuple[int, Check, str]] = []
        self._not_held: Counter[Check] = Counter()
        self._file: PreadFile | None = None

    def read_block(self) -> Iterator[tuple[int, tuple[int, int] | None]]:
        """(number, (key hash, physical offset)) of the next sampled entries; None for one the file does not
        hold whole (it ended early)."""
        numbers = self.numbers[self._next : self._next + _INDEX_ENTRIES_PER_READ]
        self._next += len(numbers)
        if not numbers:
            return
        if self._file is None:
            self._file = PreadFile(self.index_file.path)
        geometry = self.index_file.geometry
        first = geometry.entry_position(numbers[0])
        data = self._file.read(first, geometry.entry_position(numbers[-1]) + INDEX_ENTRY_SIZE - first)
        for number in numbers:
            at = geometry.entry_position(number) - first
            if at + INDEX_ENTRY_SIZE > len(data):
                yield number, None
            else:
                yield number, _INDEX_HASH_AND_OFFSET.unpack_from(data, at)

    def hold(self, check: Check, number: int, message: str) -> None:
        self._held.append((number, check, message))
        if len(self._held) > 4 * FINDINGS_SHOWN_PER_CHECK:  # only the lowest entries of a check are shown
            self._held.sort(key=lambda held: held[0])
            kept, seen = [], Counter()
            for held in self._held:
                seen[held[1]] += 1
                if seen[held[1]] <= FINDINGS_SHOWN_PER_CHECK:
                    kept.append(held)
                else:
                    self._not_held[held[1]] += 1
            self._held = kept

    def report(self, findings: _Findings, log_end: int) -> None:
        for number, check, message in sorted(self._held, key=lambda held: held[0]):
            findings.add(check, message, self.index_file.path, number, OffsetKind.INDEX_ENTRY)
        for check, count in self._not_held.items():
            findings.add_not_shown(check, count)
        past_the_end = self.past_the_end
        if past_the_end.count:
            findings.add(
                Check.INDEX_BEYOND_LOG,
                past_the_end.describe(f"from entry {past_the_end.first_number}", log_end),
                self.index_file.path,
                past_the_end.first_number,
                OffsetKind.INDEX_ENTRY,
                past_the_end.count,
            )
        if self._file is not None:
            self._file.close()


@functools.lru_cache(maxsize=1024)
def _key_hash(topic: str, key: str) -> int:
    """The index hash of a record's key, cached: a sampled record's keys are looked up through the index
    right after its sampled index entry (entries follow the CommitLog's order) was checked against them."""
    return index_key_hash(IndexService.build_key(topic, key))


def _key_hash_problem(key_hash: int, topic: str, keys: list[str]) -> str | None:
    hashes = {_key_hash(topic, key) for key in keys}
    if key_hash in hashes:
        return None
    listed = ", ".join(keys) or "no keys"
    return f"key hash {key_hash} is the hash of none of the record's keys ({topic}: {listed})"


def _verify_checkpoint(layout: StoreLayout, findings: _Findings) -> None:
    if layout.checkpoint is None:
        findings.add(Check.CHECKPOINT, "missing: recovery has no timestamps to start from", layout.root)
        return
    try:
        read_checkpoint(layout.checkpoint)
    except CorruptRecord as error:
        findings.add(
            Check.CHECKPOINT, error.reason, layout.checkpoint, error.offset, OffsetKind.FILE_POSITION
        )
