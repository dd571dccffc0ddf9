"""`mqinspect store dump`: its four forms agree record by record, it streams, it reads no more than asked.

Ground truth: the stores RocketMQ (Java) and rocketmq-rust wrote, stores made by `store_builder` (which knows
where each record landed), and `codec.decode_record`, the one-record decoder every other reader uses, against
which the run decoder behind the dump is held.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from store_builder import BuiltStore, StoreBuilder, flip_byte, segment_name, write_at
from support import run_mqinspect

from mqinspect.errors import ExitStatus
from mqinspect.jsonable import json_line, to_jsonable
from mqinspect.render import dump as dump_renderer
from mqinspect.render.dump import record_json, run_json_lines, write_jsonl
from store import codec, run_columns
from store.inspection.rocketmq import dump as dump_module
from store.inspection.rocketmq.dump import DumpStream, RecordRun, dump_records
from store.inspection.rocketmq.reading import commitlog_of
from store.inspection.rocketmq.record_views import RecordView, record_view
from store.safe_read import PreadFile

JAVA_FIXTURE = (
    Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "rocketmq-java-unit-test-store"
)
DUMP = [sys.executable, "-m", "mqinspect", "store", "dump"]
LINE_FIELD = re.compile(r"(\w+(?: \(\w+\))?): (\S+(?: \S+)*?)(?= \w+(?: \(\w+\))?: |$)")


@pytest.fixture
def java_store(tmp_path: Path) -> Path:
    if not JAVA_FIXTURE.is_dir():
        pytest.fail(f"the shared fixture is missing: {JAVA_FIXTURE}")
    return Path(shutil.copytree(JAVA_FIXTURE, tmp_path / "java-store"))


def build_varied_store(builder: StoreBuilder, count: int = 60) -> BuiltStore:
    """Records of several topics, queues, keys and tags (some without), a non-ASCII topic, an empty body
    and a binary one, over segments that end in blanks."""
    for number in range(count):
        body = b"" if number == 7 else bytes([0xFF, number]) if number == 9 else f"body {number} " * 5
        builder.add(
            "Topic-é" if number % 5 == 0 else f"Topic{number % 3}",
            body,
            queue_id=number % 4,
            keys=None if number % 6 == 0 else f"key-{number} shared",
            tags=None if number % 4 == 0 else f"Tag{number % 2}",
            properties={"user": f"value {number}"} if number % 3 == 0 else None,
        )
    return builder.build()


def dump_forms(target: Path, *extra: object, status: int = ExitStatus.OK) -> dict[str, str]:
    """The table, verbose, jsonl and json forms of one dump, through the CLI."""
    forms = {
        "table": [], "verbose": ["--verbose"], "jsonl": ["--format", "jsonl"], "json": ["--format", "json"],
    }  # fmt: skip
    outputs = {}
    for name, options in forms.items():
        result = run_mqinspect("store", "dump", target, *extra, *options, columns=400)
        assert result.exit_code == status, (name, result.stderr)
        outputs[name] = result.stdout
    return outputs


def line_fields(line: str) -> dict[str, str]:
    """A compact line's `name: value` pairs."""
    return dict(LINE_FIELD.findall(line))


def assert_forms_agree(outputs: dict[str, str]) -> dict:
    """Every form says the same, record by record; returns the JSON document."""
    document = json.loads(outputs["json"])
    lines = [json.loads(line) for line in outputs["jsonl"].splitlines()]
    assert lines[0] == {"kind": "dump", **{k: document[k] for k in list(document)[:6]}}
    assert lines[-1] == {"kind": "end", **{k: document[k] for k in list(document)[7:]}}
    assert lines[1:-1] == document["events"]
    table = outputs["table"].splitlines()
    assert len(table) == len(document["events"]) + 2  # the start's line, one per event, the finish's
    for event, line in zip(document["events"], table[1:-1], strict=True):
        if event["kind"] == "blank":
            assert line.startswith(f"blank @ {event['physical_offset']}: {event['size_bytes']} B of filler")
            continue
        fields = line_fields(line)
        assert (
            fields["offset"] == str(event["physical_offset"]) and fields["size"] == f"{event['size_bytes']}B"
        )
        assert fields["queue"] == f"{event['topic']}/{event['queue_id']}"
        assert fields["queueOffset"] == str(event["queue_offset"])
        assert fields["stored"] == event["store_time_iso"]
        assert fields.get("keys") == event["keys"] and fields.get("tags") == event["tags"]
    cards = re.findall(r"^message @ (\d+) \((\d+) B\) *$", outputs["verbose"], re.MULTILINE)
    messages = [event for event in document["events"] if event["kind"] == "message"]
    assert cards == [(str(m["physical_offset"]), str(m["size_bytes"])) for m in messages]
    finish = table[-1]
    assert outputs["verbose"].splitlines()[-1] == finish
    assert finish.startswith(f"{document['message_count']} message")
    return document


def slow_path_events(target: Path, document: dict, include_body: bool) -> list[dict]:
    """The document's messages decoded again one by one with codec.decode_record, as `store query` does."""
    queue = commitlog_of(target)
    views = []
    for event in document["events"]:
        if event["kind"] != "message":
            views.append(event)
            continue
        segment = Path(event["segment"])
        start = next(s.file_from_offset for s in queue.segments if s.path == segment)
        with PreadFile(segment) as file:
            data = file.read(event["physical_offset"] - start, event["size_bytes"])
        record = codec.decode_record(data, check_crc=True)
        view = record_view(event["physical_offset"], record, segment, include_body=include_body)
        views.append(to_jsonable(view))
    return views


# ==========================================================================================================
# The forms agree, with each other and with the stores other software wrote
# ==========================================================================================================


def test_the_forms_agree_on_the_java_fixture(java_store: Path):
    outputs = dump_forms(java_store, "--count", "100", "--body")
    document = assert_forms_agree(outputs)
    messages = [event for event in document["events"] if event["kind"] == "message"]
    assert len(messages) == 47 and {m["topic"] for m in messages} == {"abc"}  # the fixture's README
    assert all(m["keys"] and m["tags"] and m["message_version"] == 1 for m in messages)
    assert (
        document["events"][-1]["kind"] == "blank" and document["events"][-1]["next_physical_offset"] == 8192
    )
    assert document["events"] == slow_path_events(java_store, document, include_body=True)
    assert "body: " in outputs["table"].splitlines()[1]


def test_the_forms_agree_on_the_rust_fixture(rust_store: Path):
    outputs = dump_forms(rust_store, "--body")
    document = assert_forms_agree(outputs)
    expected = json.loads((rust_store.parent / "expected-records.json").read_text())
    messages = document["events"]
    assert [m["body"]["utf8"] for m in messages] == expected["message_bodies"]
    assert {(m["topic"], m["queue_id"], m["keys"]) for m in messages} == {
        (expected["topic"], expected["queue_id"], expected["message_key"])
    }
    assert messages == slow_path_events(rust_store, document, include_body=True)
    assert outputs["table"].splitlines()[-1] == "2 messages (282 B); end of log at 282: zeros"


def test_the_forms_agree_on_a_rolled_store_of_varied_records(make_store):
    built = build_varied_store(make_store(segment_size=2048))
    outputs = dump_forms(built.root, "--count", "1000", "--body")
    document = assert_forms_agree(outputs)
    messages = [event for event in document["events"] if event["kind"] == "message"]
    assert [(m["physical_offset"], m["topic"], m["queue_offset"]) for m in messages] == [
        (r.physical_offset, r.topic, r.queue_offset) for r in built.records
    ]
    assert [m["body"] for m in messages][7:10:2] == [{"utf8": ""}, {"hex": "ff09"}]
    blanks = [event["physical_offset"] for event in document["events"] if event["kind"] == "blank"]
    assert blanks == list(built.blanks)
    assert document["events"] == slow_path_events(built.root, document, include_body=True)
    assert document["end"]["reason"] == "zeros"


def test_a_line_never_breaks_on_what_a_record_holds(make_store):
    builder = make_store()
    builder.add("T", "x", keys="two\nlines", tags="tab\there")
    built = builder.build()
    table = run_mqinspect("store", "dump", built.root).stdout.splitlines()
    assert len(table) == 3
    assert line_fields(table[1])["keys"] == "two\\nlines" and line_fields(table[1])["tags"] == "tab\\there"


# (topic, keys, tags, more properties, body): what JSON must escape (quotes, backslashes, control characters
# and U+2028), what it must not (non-ASCII), what a %-template must not take for a directive, and bodies that
# are not UTF-8.
AWKWARD_RECORDS = [
    ('quote"topic', 'key "quoted"', "back\\slash", {"p%": "%s %d %%", 'q"': 'v\\"'}, b'{"json": "body"}'),
    ("ctrl\x1ftopic", "key\nnew\tline\x7f", "tag\x03", {"nul": "a\x00b"}, "é ü 漢字 \u2028 😀".encode()),
    ("Topic-é漢", "ключ", "タグ", {"emoji": "😀"}, b"\xff\xfe not utf-8"),
    ("plain", None, None, None, b""),
    ("plain", "k", "t", {"a": "b"}, b"ok"),
]


def awkward_store(make_store, one_shape: bool) -> BuiltStore:
    """AWKWARD_RECORDS six times over; `one_shape`: every record with the same property names (in the same
    order), its awkward values under them."""
    builder = make_store(segment_size=4096)
    for _round in range(6):
        for number, (topic, keys, tags, properties, body) in enumerate(AWKWARD_RECORDS):
            if one_shape:
                extra = " ".join(f"{name}={value}" for name, value in (properties or {}).items())
                keys, tags, properties = keys or "k%", tags or "t\\", {"p%": extra or "%"}
            builder.add(topic, body, queue_id=number % 2, keys=keys, tags=tags, properties=properties)
    built = builder.build()
    if not one_shape:  # STOREHOST's port out of range (BODYCRC does not cover it): no offsetMsgId
        damaged = built.records[-1]  # alone in the second segment: the first one's run is not damaged
        write_at(damaged.segment, damaged.position + 68, (70000).to_bytes(4, "big"))
    return built


@pytest.mark.parametrize("one_shape", [False, True], ids=["mixed-properties", "one-shape"])
@pytest.mark.parametrize("include_body", [False, True], ids=["no-body", "body"])
def test_jsonl_writes_a_run_of_awkward_records_as_the_json_of_their_views(
    make_store, monkeypatch, include_body: bool, one_shape: bool
):
    """The jsonl fast path (a decoded run a field at a time) against json.loads of its lines and against
    the JSON of each record's RecordView (what the other forms and `store query` show)."""
    built = awkward_store(make_store, one_shape)
    shapes = []
    one_shape_of = dump_renderer._one_shape
    monkeypatch.setattr(dump_renderer, "_one_shape", lambda *a: shapes.append(one_shape_of(*a)) or shapes[-1])
    stream = DumpStream(built.root, None, 1000, include_body=include_body, check_crc=True)
    in_runs = []
    as_columns = []
    for batch in stream.batches(record_runs=True):
        for run in (event for event in batch if type(event) is RecordRun):
            lines, views = run_json_lines(run), run.views()
            assert lines == [record_json(view) for view in views] == [json_line(view) for view in views]
            assert [json.loads(line) for line in lines] == [to_jsonable(view) for view in views]
            in_runs += [view.physical_offset for view in views]
            as_columns += [run.columns is not None] * len(views)
    assert len(in_runs) >= len(built.records) - 2  # all but a window's first records
    # the runs went the ways the store was made for: decoded as columns (one shape), or as records, each
    # with its own names
    if one_shape:
        assert all(as_columns)
    else:
        assert as_columns.count(False) >= len(built.records) - 2 and None in shapes

    body = ["--body"] if include_body else []
    result = run_mqinspect("store", "dump", built.root, "--format", "jsonl", "--count", "1000", *body)
    assert result.exit_code == 0, result.stderr
    old_path = dump_records(built.root, None, 1000, include_body=include_body, check_crc=True).events
    lines = result.stdout.split("\n")  # not splitlines: U+2028 is a line break to it, and JSON keeps it
    assert lines[1:-2] == [json_line(event) for event in old_path] and lines[-1] == ""
    messages = [json.loads(line) for line in lines[1:-2]]
    messages = [m for m in messages if m["kind"] == "message"]
    assert json.loads(lines[-2])["message_bytes"] == sum(m["size_bytes"] for m in messages)
    assert [m["topic"] for m in messages[:5]] == [record[0] for record in AWKWARD_RECORDS]
    assert [m["keys"] for m in messages[:2]] == [record[1] for record in AWKWARD_RECORDS[:2]]
    assert (messages[-1]["offset_msg_id"] is None) != one_shape and messages[-2]["offset_msg_id"] is not None
    if include_body:
        assert messages[2]["body"] == {"hex": b"\xff\xfe not utf-8".hex()}


@pytest.mark.parametrize("include_body", [False, True], ids=["no-body", "body"])
def test_jsonl_writes_runs_of_one_record_size_as_the_json_of_their_views(
    make_store, monkeypatch, include_body: bool
):
    """Records of one size (decoded a whole record at a time) with awkward fixed-width keys, tags, topics
    and bodies, several topics, queues and milliseconds, over two segments, until a damaged body: the jsonl
    lines are json_line's of the record-by-record walk's views, and the dump ends at the damage."""
    builder = make_store(segment_size=64 << 10)
    for number in range(300):
        body = f"é{number:04d}\u2028".encode() if number % 3 else b"\xff" + bytes([number % 256]) * 8
        topic = ("T%a", 'T"b', "T\\c")[number % 3]
        tags = ("t%s", "t\x1f!")[number % 2]
        builder.add(topic, body, queue_id=number % 4, keys=f'k"{number:04d}\\', tags=tags)
    built = builder.build()
    damaged = built.records[250]
    flip_byte(damaged.segment, damaged.segment.read_bytes().index(damaged.body, damaged.position))
    body = ["--body"] if include_body else []
    result = run_mqinspect("store", "dump", built.root, "--format", "jsonl", "--count", "1000", *body)
    assert result.exit_code == ExitStatus.FINDINGS, result.stderr
    lines = result.stdout.split("\n")
    old_path = dump_records(built.root, None, 1000, include_body=include_body, check_crc=True)
    assert lines[1:-2] == [json_line(event) for event in old_path.events] and lines[-1] == ""
    finish = json.loads(lines[-2])
    assert (finish["message_count"], finish["message_bytes"], finish["end"]) == (
        old_path.message_count, old_path.message_bytes, to_jsonable(old_path.end)
    )  # fmt: skip
    assert finish["end"]["reason"] == "corrupt"
    messages = [json.loads(line) for line in lines[1:-2] if '"kind":"message"' in line]
    assert len(messages) == 250 and len({m["size_bytes"] for m in messages}) == 1
    assert messages[-1]["physical_offset"] == built.records[249].physical_offset
    # in this process too, and the runs were read a whole record at a time
    whole_records = []
    of_one_size = run_columns._Columns.of_one_size
    monkeypatch.setattr(
        run_columns._Columns,
        "of_one_size",
        lambda *a: whole_records.append(of_one_size(*a)) or whole_records[-1],
    )
    out = io.StringIO()
    write_jsonl(DumpStream(built.root, None, 1000, include_body=include_body, check_crc=True), out)
    assert out.getvalue() == result.stdout
    assert sum(run.count for run in whole_records if run is not None) >= 240
    # stopped inside a run by --count or --max-bytes: where the record walk stops
    for count, max_bytes in ((123, None), (1000, built.records[200].physical_offset + 5)):
        out = io.StringIO()
        stream = DumpStream(
            built.root, None, count, include_body=include_body, check_crc=True, max_bytes=max_bytes
        )
        write_jsonl(stream, out)
        old_path = dump_records(
            built.root, None, count, include_body=include_body, check_crc=True, max_bytes=max_bytes
        )
        lines = out.getvalue().split("\n")
        assert lines[1:-2] == [json_line(event) for event in old_path.events]
        finish = stream.finish
        assert (finish.message_count, finish.message_bytes, finish.next_physical_offset) == (
            old_path.message_count, old_path.message_bytes, old_path.next_physical_offset
        )  # fmt: skip
        assert old_path.message_count == (123 if max_bytes is None else 200)


# ==========================================================================================================
# The run decoder says what decode_record says
# ==========================================================================================================


def encoded(message: codec.Message, offset: int = 0, **options) -> bytes:
    return codec.encode_record(
        message, queue_offset=3, physical_offset=offset, store_timestamp_ms=1, **options
    )


def test_decode_run_stops_where_decode_record_would_not_decode_a_plain_record():
    ipv6 = codec.Message(topic="T6", body=b"v6", born_host=("::1", 9), store_host=("fe80::2", 10911))
    plain = codec.Message(topic="T", body=b"plain", properties={"KEYS": "k1"})
    digits = codec.Message(topic="T", body=b"d", properties={"KEYS": "1234567890"})  # ends in 10 digits
    records = [encoded(plain), encoded(ipv6), encoded(digits), encoded(plain, append_property_crc=True)]
    data = memoryview(b"".join(records) + bytes(16))
    run, end = codec.decode_run(data, 0, len(data), check_crc=True, max_records=100)
    assert [record.position for record in run] == [0, len(records[0]), len(records[0]) + len(records[1])]
    assert end == sum(map(len, records[:3]))  # stops at the __CRC32# tail: decode_record checks it
    for record in run:
        reference = codec.decode_record(data, record.position, check_crc=True)
        assert (record.topic, record.properties, record.header[0]) == (
            reference.topic, reference.properties, reference.total_size
        )  # fmt: skip
        assert codec.host_from_packed(record.header[12], record.header[13]) == reference.store_host
    # Past the CRC tail the run goes on; at the zeros it stops, and decode_record says why.
    rest, end = codec.decode_run(data, end + len(records[3]), len(data), check_crc=True, max_records=100)
    assert rest == []
    with pytest.raises(codec.UnwrittenSpace):
        codec.decode_record(data, end)


@pytest.mark.parametrize(
    "damage", ["body", "totalsize", "magic", "topic-utf8", "torn-tail", "crc-name"], ids=str
)
def test_decode_run_stops_before_damage_that_decode_record_rejects(damage):
    good = encoded(codec.Message(topic="T", body=b"good body", properties={"KEYS": "k"}))
    bad = bytearray(encoded(codec.Message(topic="TT", body=b"bad body", properties={"KEYS": "k"}), len(good)))
    if damage == "body":
        bad[-20] ^= 1  # in the body... or properties: either way a check fails
        bad = bytearray(encoded(codec.Message(topic="TT", body=b"bad body"), len(good)))
        bad[bad.index(b"bad body")] ^= 1
    elif damage == "totalsize":
        bad[3] += 1
    elif damage == "magic":
        bad[7] ^= 0x10
    elif damage == "topic-utf8":
        bad[bad.index(b"TT")] = 0xFF
    elif damage == "torn-tail":
        bad[-1] = 0
    else:
        bad = bytearray(encoded(codec.Message(topic="TT", body=b"b"), len(good), append_property_crc=True))
        bad[bad.index(b"__CRC32#")] = ord("X")
    data = memoryview(good + bytes(bad) + good)
    run, end = codec.decode_run(data, 0, len(data), check_crc=True, max_records=10)
    assert [record.position for record in run] == [0] and end == len(good)
    with pytest.raises(codec.CorruptRecord):
        codec.decode_record(data, end, check_crc=True)


# ==========================================================================================================
# Streaming: the first records go out before the walk ends; | head is quiet; Ctrl-C is 130
# ==========================================================================================================


@pytest.fixture
def big_store(make_store) -> BuiltStore:
    """30 segments of 64 KiB holding 1 KiB records: any form of their dump overflows a pipe's buffer many
    times. Each record's key (rec00042) names it."""
    builder = make_store(segment_size=64 << 10, cq_entries_per_file=4096, index=False)
    for number in range(1900):
        builder.add(f"Topic{number % 2}", f"message {number} " + "z" * 1000, queue_id=number % 4,
                    keys=f"rec{number:05d}")  # fmt: skip
    built = builder.build()
    assert len(built.segments) >= 30
    return built


FORMS = {"table": [], "verbose": ["--verbose"], "jsonl": ["--format", "jsonl"], "json": ["--format", "json"]}
# The first segment zeroed: well past what the dump can have read when it blocks on the full pipe (64 KiB
# of lines, ~150 B a line, ~1 KiB a verbose card, 58 records a segment), and early enough to keep it short.
ZEROED_FROM = {"table": 15, "verbose": 4, "jsonl": 8, "json": 8}
MESSAGE_MARK = {"table": b"queueOffset: ", "verbose": b"message @ ", "jsonl": b'"kind":"message"',
                "json": b'"kind":"message"'}  # fmt: skip


@pytest.mark.parametrize("form", FORMS)
def test_the_dump_writes_its_first_records_before_it_reads_the_rest(big_store: BuiltStore, form: str):
    """A dump of every record: once its first record has been read from the pipe (the process is still
    running, blocked on the full pipe), the rest of the store is zeroed. A dump that streams has not read
    that part yet, so it ends where the zeros begin; one that read everything before writing would still
    show every record. No timing involved."""
    process = subprocess.Popen(
        [*DUMP, str(big_store.root), "--count", "1000000", *FORMS[form]],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "NO_COLOR": "1"},
    )
    try:
        for _ in range(50):
            line = process.stdout.readline()
            assert line, process.stderr.read().decode()
            if MESSAGE_MARK[form] in line:
                break
        else:
            pytest.fail("no message in the first 50 lines")
        assert str(big_store.records[0].physical_offset).encode() in line
        assert process.poll() is None, "the dump ended before its first record was read"
        zeroed = big_store.segments[ZEROED_FROM[form] :]
        for segment in zeroed:
            size = segment.stat().st_size
            os.truncate(segment, 0)
            os.truncate(segment, size)  # all zeros: the end of the log
        rest, errors = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=60)
    assert process.returncode == ExitStatus.OK, errors.decode()
    first_zeroed = next(r for r in big_store.records if r.segment == zeroed[0])
    last_kept = [r for r in big_store.records if r.physical_offset < first_zeroed.physical_offset][-1]
    assert last_kept.keys.encode() in rest and first_zeroed.keys.encode() not in rest


def test_a_reader_that_goes_away_leaves_the_dump_quiet(big_store: BuiltStore):
    """`mqinspect store dump ... | head -1`: exit 0, nothing on stderr."""
    reader, writer = os.pipe()
    process = subprocess.Popen(
        [*DUMP, str(big_store.root), "-n", "100000"], stdout=writer, stderr=subprocess.PIPE
    )
    os.close(writer)
    assert os.read(reader, 1)
    os.close(reader)
    _, errors = process.communicate(timeout=60)
    assert (process.returncode, errors) == (ExitStatus.OK, b"")


def test_ctrl_c_ends_a_dump_with_130(big_store: BuiltStore):
    process = subprocess.Popen(
        [*DUMP, str(big_store.root), "-n", "100000", "--format", "jsonl"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert json.loads(process.stdout.readline())["kind"] == "dump"
    assert json.loads(process.stdout.readline())["kind"] == "message"
    process.send_signal(signal.SIGINT)  # it is blocked writing into the full pipe
    _, errors = process.communicate(timeout=60)
    assert process.returncode == ExitStatus.INTERRUPTED and "Traceback" not in errors


# ==========================================================================================================
# Never reads more than asked
# ==========================================================================================================


@pytest.fixture
def reads(monkeypatch) -> list[tuple[int, int]]:
    """Every pread's (offset, length) that the inspection makes in this process."""
    made: list[tuple[int, int]] = []
    original = PreadFile.read

    def read(self, offset: int, length: int) -> bytes:
        made.append((offset, length))
        return original(self, offset, length)

    monkeypatch.setattr(PreadFile, "read", read)
    return made


def test_a_small_count_reads_a_few_pages_not_a_window(big_store: BuiltStore, reads):
    dump = dump_records(big_store.root, None, 3, include_body=False, check_crc=True)
    assert dump.message_count == 3 and dump.next_physical_offset == big_store.records[3].physical_offset
    dumped = big_store.records[3].physical_offset
    assert sum(length for _, length in reads) <= 4 * dumped + 3 * 4096  # pages, not the 4 MiB window
    assert max(offset + length for offset, length in reads) <= 4 * dumped + 4096


def test_max_bytes_stops_before_the_message_that_would_pass_it(big_store: BuiltStore, reads):
    records = big_store.records
    limit = records[10].physical_offset + 5  # ten messages and a few bytes of the eleventh
    dump = dump_records(big_store.root, None, 1000, include_body=False, check_crc=True, max_bytes=limit)
    assert (dump.message_count, dump.message_bytes) == (10, records[10].physical_offset)
    assert dump.end is None and dump.next_physical_offset == records[10].physical_offset
    assert sum(length for _, length in reads) <= 4 * limit + 3 * 4096
    jsonl = run_mqinspect("store", "dump", big_store.root, "--max-bytes", limit, "--format", "jsonl")
    lines = [json.loads(line) for line in jsonl.stdout.splitlines()]
    assert lines[0]["size_limit_bytes"] == limit and len(lines) == 12
    assert lines[-1]["next_physical_offset"] == records[10].physical_offset
    table = run_mqinspect("store", "dump", big_store.root, "--max-bytes", limit).stdout.splitlines()
    assert table[-1].endswith(f"continue with --from {records[10].physical_offset}")


# ==========================================================================================================
# A corrupt record mid-dump; a store appended while it is dumped
# ==========================================================================================================


def test_a_corrupt_record_mid_dump_ends_every_form_there(make_store):
    built = build_varied_store(make_store(segment_size=2048))
    victim = built.records[25]
    flip_byte(victim.segment, victim.body_position + 2)
    outputs = dump_forms(built.root, "--count", "1000", status=ExitStatus.FINDINGS)
    document = assert_forms_agree(outputs)
    messages = [event for event in document["events"] if event["kind"] == "message"]
    assert [m["physical_offset"] for m in messages] == [r.physical_offset for r in built.records[:25]]
    assert (document["end"]["reason"], document["end"]["physical_offset"]) == (
        "corrupt",
        victim.physical_offset,
    )
    assert "BODYCRC" in document["end"]["detail"]  # decode_record's words: the run stopped before it
    assert (
        outputs["table"]
        .splitlines()[-1]
        .endswith(f"end of log at {victim.physical_offset}: corrupt ({document['end']['detail']})")
    )


APPENDER = """
import sys
from pathlib import Path
from store.codec import Message
from store.config import StoreConfig
from store.message_store import MessageStore
root, count = Path(sys.argv[1]), int(sys.argv[2])
with MessageStore(root, StoreConfig(mapped_file_size_commitlog=256 * 1024)) as store:
    print("ready", flush=True)
    for number in range(count):
        body = (b"live %d " % number) * 20
        store.put_messages([Message(topic="Live", body=body, properties={"KEYS": f"k{number}"})] * 8)
"""


def test_a_store_appended_while_it_is_dumped(tmp_path: Path):
    """Dumps taken while another process appends show a prefix of what the store finally holds, record for
    record, and end where the writer had got to."""
    root = tmp_path / "live"
    appender = subprocess.Popen(
        [sys.executable, "-c", APPENDER, str(root), "600"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert appender.stdout.readline().strip() == "ready", appender.stderr.read()
    snapshots = []
    while appender.poll() is None or len(snapshots) < 3:
        snapshots.append(dump_records(root, None, 1_000_000, include_body=True, check_crc=True))
        if len(snapshots) > 200:
            break
    assert appender.wait(timeout=120) == 0, appender.stderr.read()
    final = dump_records(root, None, 1_000_000, include_body=True, check_crc=True)
    assert final.message_count == 600 * 8 and final.end.reason.value == "zeros"
    whole = [to_jsonable(event) for event in final.events]
    for snapshot in snapshots:
        events = [to_jsonable(event) for event in snapshot.events]
        assert events == whole[: len(events)]
        assert snapshot.end is not None
        assert snapshot.end.physical_offset <= final.end.physical_offset
        if snapshot.end.reason.value == "corrupt":  # a record caught half-copied: only ever the last one
            assert snapshot.end.physical_offset == (events[-1]["physical_offset"] + events[-1]["size_bytes"]
                                                    if events else 0)  # fmt: skip


def test_record_views_are_the_dataclass_they_claim(java_store: Path):
    """The fast construction fills the dataclass's fields, in order: equal to one built by __init__."""
    dump = dump_records(java_store, None, 5, include_body=True, check_crc=True)
    view = dump.events[0]
    assert isinstance(view, RecordView)
    rebuilt = RecordView(**{name: getattr(view, name) for name in RecordView.__dataclass_fields__})
    assert rebuilt == view and list(vars(view)) == list(RecordView.__dataclass_fields__)
    with pytest.raises(AttributeError):
        view.topic = "changed"  # still frozen
    assert dump_module.RUN_RECORDS >= 1


@pytest.mark.parametrize("output", ["table", "jsonl"])
def test_a_store_whose_first_segment_is_being_created_dumps_as_an_empty_log(tmp_path: Path, output: str):
    """A writer creates a segment, then sizes it: between the two, the only segment is zero bytes long."""
    (tmp_path / "commitlog").mkdir()
    (tmp_path / "commitlog" / segment_name(0)).touch()
    done = run_mqinspect("store", "dump", str(tmp_path), "--format", output)
    assert done.exit_code == ExitStatus.OK, done.stderr
    assert "0 messages" in done.stdout or '"message_count":0' in done.stdout
