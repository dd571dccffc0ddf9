"""`store verify`'s block walk against the exact walk (scan_commitlog, record by record), and the checks it
feeds: the same records, blanks, end and findings, on clean and damaged stores and the fixtures of other
writers; and the CommitLog read in blocks, not one pread per ConsumeQueue entry."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from store_builder import StoreBuilder, flip_byte, overwrite_cq_entry, write_at, zero_range
from support import strace_calls

from store import codec
from store.inspection.rocketmq import verify as verify_module
from store.inspection.rocketmq.reading import loadable_commitlog, walk_commitlog
from store.inspection.rocketmq.verify import Check, verify_store
from store.inspection.rocketmq.verify_walk import BLOCK_BYTES, properties_of, record_fields, walk_for_verify
from store.layout import discover_store

JAVA_FIXTURE = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "rocketmq-java-unit-test-store"
MQINSPECT = Path(sys.executable).with_name("mqinspect")


def build(root: Path, count: int = 600, queues: int = 3) -> tuple:
    """`count` messages of 200-1,000 B over `queues` queues, with keys and tags, in 64 KiB segments."""
    builder = StoreBuilder(
        root, segment_size=64 << 10, cq_entries_per_file=100, index_slots=512, index_entries=2048
    )
    for number in range(count):
        builder.add(
            "TopicV",
            bytes([65 + number % 26]) * (200 + number * 37 % 800),
            queue_id=number % queues,
            keys=f"k{number} other{number % 7}",
            tags=f"tag{number % 4}",
        )
    return builder.build()


def both_walks(root: Path, block_bytes: int) -> tuple:
    queue = loadable_commitlog(discover_store(root))
    exact: list = []
    exact_walk = walk_commitlog(
        queue,
        queue.segments[0].file_from_offset,
        check_crc=True,
        on_record=lambda e: exact.append(record_fields(e)),
    )
    fast: list = []
    fast_walk = walk_for_verify(queue, fast.extend, block_bytes=block_bytes)
    # the block walk leaves the properties as their bytes, which say what the exact walk's dict says
    fast = [(*fields[:-1], properties_of(fields[-1])) for fields in fast]
    return (exact, exact_walk.records, exact_walk.blanks, exact_walk.end), (
        fast,
        fast_walk.records,
        fast_walk.blanks,
        fast_walk.end,
    )


def damage(built, kind: str) -> None:
    """One kind of damage to the record in the middle of the log."""
    record = built.records[len(built.records) // 2]
    if kind == "body-byte":
        flip_byte(record.segment, record.body_position + 3)
    elif kind == "total-size":
        write_at(record.segment, record.position, (record.size_bytes + 4).to_bytes(4, "big"))
    elif kind == "torn-tail":
        zero_range(
            record.segment, record.position + record.size_bytes - 30, record.position + record.size_bytes
        )
    elif kind == "magic":
        flip_byte(record.segment, record.position + 5)
    elif kind == "file-cut":  # the segment truncated mid-record, as an owner cutting its log does
        os.truncate(record.segment, record.position + record.size_bytes // 2)
    elif kind == "topic-utf8":
        topic_at = record.body_position + len(record.body) + 1
        write_at(record.segment, topic_at, b"\xff")


@pytest.mark.parametrize("block_bytes", [BLOCK_BYTES, 1500, 333])
@pytest.mark.parametrize(
    "kind", ["clean", "body-byte", "total-size", "torn-tail", "magic", "topic-utf8", "file-cut"]
)
def test_the_block_walk_gives_the_exact_walks_records_blanks_and_end(
    tmp_path: Path, kind: str, block_bytes: int
):
    built = build(tmp_path / "store")
    damage(built, kind)
    exact, fast = both_walks(built.root, block_bytes)
    assert fast == exact
    if kind != "clean":
        middle = built.records[len(built.records) // 2]
        assert exact[3].physical_offset == middle.physical_offset
        assert exact[3].reason.value == ("shrunk" if kind == "file-cut" else "corrupt")


def test_a_record_with_a_crc32_tail_and_a_damaged_header_is_found(tmp_path: Path):
    """enabledAppendPropCRC: a header byte BODYCRC does not cover is caught by the whole-record CRC."""
    segment = tmp_path / "store" / "commitlog" / f"{0:020d}"
    segment.parent.mkdir(parents=True)
    data, starts = bytearray(), []
    for number in range(40):
        message = codec.Message("TopicC", body=f"body-{number}".encode(), properties={"KEYS": f"k{number}"})
        starts.append(len(data))
        data += codec.encode_record(
            message,
            queue_offset=number,
            physical_offset=len(data),
            store_timestamp_ms=1_700_000_000_000,
            append_property_crc=True,
        )
    segment.write_bytes(data.ljust(64 << 10, b"\0"))
    assert both_walks(segment.parents[1], BLOCK_BYTES)[1][1] == 40
    flip_byte(segment, starts[17] + 13)  # QUEUEID
    exact, fast = both_walks(segment.parents[1], BLOCK_BYTES)
    assert fast == exact and exact[1] == 17 and exact[3].physical_offset == starts[17]
    assert "__CRC32#" in exact[3].detail


@pytest.mark.parametrize("fixture", ["rust", "java"])
def test_the_block_walk_reads_other_writers_stores_as_the_exact_walk(rust_store: Path, fixture: str):
    root = rust_store if fixture == "rust" else JAVA_FIXTURE
    exact, fast = both_walks(root, BLOCK_BYTES)
    assert exact[1] > 0 and fast == exact


def test_a_damaged_entry_mid_queue_is_the_one_finding_and_every_entry_is_counted(tmp_path: Path):
    built = build(tmp_path / "store")
    record = [r for r in built.records if r.queue_id == 1][120]
    overwrite_cq_entry(
        built.cq_file("TopicV", 1, 1),
        record.queue_offset - 100,
        physical_offset=record.physical_offset + 10,
        size=record.size_bytes,
    )
    report = verify_store(built.root)
    [bad] = report.findings
    assert (bad.check, bad.file, bad.offset) == (
        Check.CQ_ENTRY,
        built.cq_file("TopicV", 1, 1),
        record.queue_offset,
    )
    assert "no record starts there" in bad.message
    assert report.counts.consume_queue_entries_checked == len(built.records)


def test_records_missing_from_their_queue_are_one_finding_with_their_count(tmp_path: Path):
    built = build(tmp_path / "store")
    queue_records = [r for r in built.records if r.queue_id == 2]
    cq_file = built.cq_file("TopicV", 2, 1)
    zero_range(cq_file, 50 * 20, 100 * 20)  # entries 150..199: the queue now ends at 150
    report = verify_store(built.root)
    [bad] = [finding for finding in report.findings if finding.check is Check.CQ_UNREACHABLE]
    assert (bad.file, bad.offset, bad.count) == (cq_file, 150, len(queue_records) - 150)
    assert "entry 150 is missing (the queue ends at 150)" in bad.message
    assert report.counts.consume_queue_entries_checked == len(built.records) - (len(queue_records) - 150)


def test_an_index_entry_naming_another_record_is_reported(tmp_path: Path):
    built = build(tmp_path / "store", count=200)
    index_file = next((built.root / "index").iterdir())
    entry_at = (
        40 + 512 * 4 + 20 * 10
    )  # header, slots, then entry 10 (entry 0 is never used): its phy offset field
    write_at(index_file, entry_at + 4, built.records[3].physical_offset.to_bytes(8, "big"))
    findings = [f for f in verify_store(built.root).findings if f.check is Check.INDEX_ENTRY]
    assert [(f.file, f.offset) for f in findings] == [(index_file, 10)]


def test_verify_reads_the_commitlog_in_blocks_not_a_pread_per_entry(tmp_path: Path):
    """On main every ConsumeQueue entry cost a pread of its record (and each sampled index entry another):
    strace counted more preads than the store has records."""
    builder = StoreBuilder(
        tmp_path / "store",
        segment_size=4 << 20,
        cq_entries_per_file=10_000,
        index_slots=1024,
        index_entries=8192,
    )
    for number in range(3000):
        builder.add("TopicP", b"x" * 1000, queue_id=number % 4, keys=f"k{number}", tags="t")
    built = builder.build()
    trace = tmp_path / "strace.txt"
    done = subprocess.run(
        [
            "strace",
            "-f",
            "-c",
            "-e",
            "trace=pread64",
            "-o",
            str(trace),
            str(MQINSPECT),
            "store",
            "verify",
            str(built.root),
            "--index-checks",
            "10",
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["counts"]["commitlog_records"] == 3000
    assert strace_calls(trace.read_text()).get("pread64", 0) < 300


# ---- the checks' fast path (ConsumeQueue runs compared as bytes, properties read from their bytes) against
# ---- the entry-by-entry path, record by record with every property parsed

INDEX_SLOTS = 512


def build_varied(root: Path, shape_run: int = 1) -> tuple:
    """Records of every property shape the fast path reads from bytes: tags and keys in either order, UTF-8
    tags, keys of spaces only, UNIQ_KEY alone, properties named like TAGS and KEYS, none at all, a delayed
    record of SCHEDULE_TOPIC_XXXX; over three queues of two topics. `shape_run` records of a shape in a
    row (as a producer's batch writes them)."""
    builder = StoreBuilder(
        root, segment_size=64 << 10, cq_entries_per_file=100, index_slots=INDEX_SLOTS, index_entries=4096
    )
    shapes = [
        {"keys": "k{n} other{m}", "tags": "tag{m}"},
        {"properties": {"TAGS": "first{m}", "KEYS": "after{n}"}},
        {"keys": "k{n}", "tags": "标签{m}"},
        {"keys": "   ", "tags": "spaces"},
        {"properties": {"UNIQ_KEY": "U{n:08d}"}},
        {"properties": {"XTAGS": "not-tags", "XKEYS": "not-keys"}, "tags": "real{m}"},
        {"properties": {"MYKEYS": "k", "TAGSX": "t"}},
        {},
    ]
    for number in range(480):
        shape = shapes[number // shape_run % len(shapes)]
        fill = {"n": number, "m": number % 3}
        builder.add(
            "TopicV" if number % 5 else "TopicW",
            bytes([65 + number % 26]) * (100 + number * 37 % 700),
            queue_id=number % 3,
            keys=shape["keys"].format(**fill) if "keys" in shape else None,
            tags=shape["tags"].format(**fill) if "tags" in shape else None,
            properties={name: value.format(**fill) for name, value in shape.get("properties", {}).items()},
        )
        if number % 97 == 0:
            builder.add(codec.SCHEDULE_TOPIC, b"later", queue_id=2, tags="delayed", properties={"DELAY": "3"})
    return builder.build()


def _record_bytes(record) -> bytes:
    with open(record.segment, "rb") as handle:
        handle.seek(record.position)
        return handle.read(record.size_bytes)


def _index_entry_position(number: int) -> int:
    return 40 + INDEX_SLOTS * 4 + 20 * number  # header, slots, then entries of 20 bytes (entry 0 unused)


def damage_checked(built, kind: str) -> None:
    """One kind of damage the checks find (the walk goes on), to a record in the middle of the log."""
    candidates = [r for r in built.records if r.topic == "TopicV" and r.queue_id == 1][60:]
    middle = candidates[0]
    if kind in ("keys-renamed-tags", "tags-value-emptied", "tags-renamed"):  # one with both properties
        middle = next(
            r for r in candidates if b"KEYS\x01" in (data := _record_bytes(r)) and b"TAGS\x01" in data
        )
    cq_file = built.cq_file("TopicV", 1, middle.queue_offset // 100)
    slot = middle.queue_offset % 100
    index_file = next((built.root / "index").iterdir())
    if kind == "cq-size":
        overwrite_cq_entry(cq_file, slot, physical_offset=middle.physical_offset, size=middle.size_bytes + 1)
    elif kind == "cq-tags":
        overwrite_cq_entry(
            cq_file, slot, physical_offset=middle.physical_offset, size=middle.size_bytes, tags_code_value=7
        )
    elif kind == "cq-zeroed":
        zero_range(cq_file, slot * 20, (slot + 5) * 20)
    elif kind == "index-offset":
        write_at(
            index_file, _index_entry_position(25) + 4, built.records[3].physical_offset.to_bytes(8, "big")
        )
    elif kind == "index-hash":
        # another hash in the same slot (the file's geometry is told from its slots and chains)
        position = _index_entry_position(40)
        key_hash = int.from_bytes(index_file.read_bytes()[position : position + 4], "big")
        write_at(index_file, position, (key_hash + INDEX_SLOTS * 3).to_bytes(4, "big"))
    elif kind == "body-crc":
        flip_byte(middle.segment, middle.body_position + 3)
    elif kind in ("prepared", "rollback"):  # a transaction's half (no ConsumeQueue entry due) or rollback
        sysflag = codec.TRANSACTION_PREPARED_TYPE if kind == "prepared" else codec.TRANSACTION_ROLLBACK_TYPE
        for record in built.records[100:300:7]:
            write_at(record.segment, record.position + codec.SYSFLAG_POSITION, sysflag.to_bytes(4, "big"))
    elif kind in ("keys-renamed-tags", "tags-value-emptied", "tags-renamed"):
        data = _record_bytes(middle)
        if kind == "keys-renamed-tags":  # two TAGS properties: the last one counts, the keys are gone
            write_at(middle.segment, middle.position + data.rindex(b"KEYS\x01"), b"TAGS")
        elif kind == "tags-value-emptied":  # TAGS with no value is dropped, the rest is no property
            write_at(middle.segment, middle.position + data.rindex(b"TAGS\x01") + 5, b"\x02")
        else:  # "TAGS" inside a value, not at a property's start
            write_at(middle.segment, middle.position + data.rindex(b"TAGS\x01") - 1, b"x")
    else:
        raise AssertionError(kind)


def verify_both_ways(root: Path, monkeypatch: pytest.MonkeyPatch, **options) -> tuple:
    fast = verify_store(root, **options)
    monkeypatch.setattr(verify_module, "_BULK_CHECKS", False)
    one_by_one = verify_store(root, **options)
    monkeypatch.setattr(verify_module, "_BULK_CHECKS", True)
    return fast, one_by_one


@pytest.mark.parametrize(
    "kind",
    [
        "clean",
        "cq-size",
        "cq-tags",
        "cq-zeroed",
        "index-offset",
        "index-hash",
        "body-crc",
        "keys-renamed-tags",
        "tags-value-emptied",
        "tags-renamed",
        "prepared",
        "rollback",
    ],
)
@pytest.mark.parametrize("shape_run", [1, 96])
def test_the_checks_fast_path_reports_what_the_entry_by_entry_path_reports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, shape_run: int
):
    built = build_varied(tmp_path / "store", shape_run)
    if kind != "clean":
        damage_checked(built, kind)
    fast, one_by_one = verify_both_ways(built.root, monkeypatch)
    assert fast == one_by_one
    if kind not in ("prepared", "rollback"):
        assert fast.ok is (kind == "clean"), fast.findings
    if kind in ("cq-size", "cq-tags"):
        assert [finding.check for finding in fast.findings] == [Check.CQ_ENTRY]
    # sampled index checks take the same records and entries on both paths
    fast, one_by_one = verify_both_ways(built.root, monkeypatch, index_check_limit=50)
    assert fast == one_by_one and fast.index_sampled


def test_the_checks_fast_path_on_other_writers_stores(rust_store: Path, monkeypatch: pytest.MonkeyPatch):
    for root in (rust_store, JAVA_FIXTURE):
        fast, one_by_one = verify_both_ways(root, monkeypatch)
        assert fast == one_by_one and fast.counts.commitlog_records > 0


def test_verify_parses_properties_only_where_a_check_needs_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """On f3236c9 every record's properties were parsed into a dict (and each record's ConsumeQueue entry
    read alone); now a record's tags and keys are read from its bytes, and only the records sampled for
    the index checks are parsed."""
    built = build(tmp_path / "store")
    parsed, entries_read = [], []
    real_parse, real_fields = codec.string_to_properties, verify_module._EntryFields.fields
    monkeypatch.setattr(codec, "string_to_properties", lambda text: parsed.append(text) or real_parse(text))
    monkeypatch.setattr(
        verify_module._EntryFields,
        "fields",
        lambda self, queue_offset: entries_read.append(queue_offset) or real_fields(self, queue_offset),
    )
    report = verify_store(built.root, index_check_limit=60)
    assert report.ok and report.counts.commitlog_records == len(built.records) == 600
    assert report.counts.consume_queue_entries_checked == 600
    sampled = report.counts.keyed_records_checked_through_index + report.counts.index_entries_checked
    assert 0 < len(parsed) <= sampled
    assert entries_read == []


@pytest.mark.parametrize("kind", ["cq-size", "cq-zeroed"])
def test_runs_compared_block_by_block_report_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
):
    """Runs compared after every block (as with many queues, whose runs are held back only up to a bound)
    and in small blocks report what whole runs report."""
    built = build_varied(tmp_path / "store")
    damage_checked(built, kind)
    whole = verify_store(built.root)
    monkeypatch.setattr(verify_module, "_PENDING_ENTRIES", 0)
    monkeypatch.setattr(
        verify_module, "walk_for_verify", functools.partial(walk_for_verify, block_bytes=2000)
    )
    assert verify_store(built.root) == whole
