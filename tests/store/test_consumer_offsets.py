"""consumerOffset.json as fastjson writes it, its .bak fallback and its atomic persist."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from store.consumer_offsets import (
    ConsumerOffsets,
    ConsumerOffsetsError,
    DataVersion,
    consumer_offset_path,
    load_consumer_offsets,
    parse_fastjson,
)

# As a 5.x broker writes it (fastjson PrettyFormat, tabs), including the getter-only groupTopicMap and a
# queue map whose closing brace landed on its own line, as seen in 4.x files.
BROKER_FILE = """{
\t"dataVersion":{
\t\t"counter":1448,
\t\t"stateVersion":0,
\t\t"timestamp":1736661762584
\t},
\t"groupTopicMap":{
\t\t"pull_test_asg":["test"]
\t},
\t"lmqOffsetTable":{},
\t"offsetTable":{
\t\t"test@pull_test_asg":{0:37960,1:37961,2:37959,3:37959},
\t\t"test@push_test@broadcast":{0:100831,1:100832},
\t\t"RMQ_SYS_TRANS_OP_HALF_TOPIC@CID_RMQ_SYS_TRANS":{0:7
\t\t}
\t}
}"""

STRICT_FILE = '{"offsetTable": {"orders@billing": {"0": 12, "3": 40}}}'


def write_config(directory: Path, main: str | bytes | None, backup: str | bytes | None = None) -> Path:
    path = directory / "consumerOffset.json"
    for target, content in ((path, main), (path.with_name(path.name + ".bak"), backup)):
        if content is not None:
            target.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


# --- parsing ----------------------------------------------------------------------------------------------


def test_broker_file_with_unquoted_integer_keys():
    offsets = ConsumerOffsets.from_text(BROKER_FILE)
    assert offsets.get("test", "pull_test_asg", 2) == 37959
    assert offsets.get("RMQ_SYS_TRANS_OP_HALF_TOPIC", "CID_RMQ_SYS_TRANS", 0) == 7
    assert offsets.queues("test", "push_test@broadcast") == {0: 100831, 1: 100832}
    assert offsets.data_version == DataVersion(counter=1448, state_version=0, timestamp=1736661762584)
    assert offsets.other_fields == {"lmqOffsetTable": {}}  # groupTopicMap is derived, not kept
    # whichGroupByTopic only counts keys that split into exactly topic and group
    assert offsets.groups_for("test") == {"pull_test_asg"}
    assert offsets.topics_for("CID_RMQ_SYS_TRANS") == {"RMQ_SYS_TRANS_OP_HALF_TOPIC"}


def test_strict_json_with_quoted_keys():
    offsets = ConsumerOffsets.from_text(STRICT_FILE)
    assert offsets.queues("orders", "billing") == {0: 12, 3: 40}
    assert offsets.get("orders", "billing", 1) is None
    assert offsets.get("orders", "nobody", 0) is None


def test_text_that_looks_like_keys_inside_strings_is_untouched():
    tricky_topic = 'we{0:1,"x":2}ird'
    text = (
        '{"note":"{0:1,2:3} and \\"{4:5}\\"","offsetTable":{"'
        + tricky_topic.replace('"', '\\"')
        + '@g":{0:5},"t@g":{ 7 : 8 ,}}}'
    )
    offsets = ConsumerOffsets.from_text(text)
    assert offsets.other_fields == {"note": '{0:1,2:3} and "{4:5}"'}
    assert offsets.get(tricky_topic, "g", 0) == 5
    assert offsets.get("t", "g", 7) == 8  # whitespace around a bare key, comma before "}" (fastjson allows)
    assert ConsumerOffsets.from_text(offsets.to_text()) == offsets


def test_parser_keeps_integer_and_string_keys_apart():
    parsed = parse_fastjson('{0:"a","0":"b",-3:[1,2.5,true,null]}')
    assert parsed == {0: "a", "0": "b", -3: [1, 2.5, True, None]}


@pytest.mark.parametrize(
    "bad",
    ["", "{", '{"offsetTable":{"t@g":{0:}}}', "{a:1}", '{"offsetTable":[]}', '{"x":1} trailing', "[1,2]"],
)
def test_malformed_documents_are_rejected(bad):
    with pytest.raises(ConsumerOffsetsError):
        ConsumerOffsets.from_text(bad)


def test_absurd_nesting_is_an_error_not_a_crash():
    with pytest.raises(ConsumerOffsetsError, match="nested"):
        ConsumerOffsets.from_text("[" * 100_000)


def test_wrong_types_are_rejected():
    for text in (
        '{"offsetTable":{"t@g":{0:"12"}}}',
        '{"offsetTable":{"t@g":{"zero":12}}}',
        '{"offsetTable":{"t@g":{0:true}}}',
        '{"dataVersion":{"counter":"x"}}',
    ):
        with pytest.raises(ConsumerOffsetsError):
            ConsumerOffsets.from_text(text)


def test_error_says_where():
    with pytest.raises(ConsumerOffsetsError, match="line 2"):
        ConsumerOffsets.from_text('{"offsetTable":{\n"t@g":{0:}}}')


# --- writing ----------------------------------------------------------------------------------------------


def test_output_is_fastjson_pretty_with_unquoted_queue_ids():
    offsets = ConsumerOffsets(data_version=DataVersion(counter=3, state_version=0, timestamp=1700000000000))
    offsets.set("TopicB", "g1", 1, 456)
    offsets.set("TopicA", "g2", 0, 123)
    offsets.set("TopicB", "g1", 0, 455)
    assert offsets.to_text() == (
        "{\n"
        '\t"dataVersion":{\n'
        '\t\t"counter":3,\n'
        '\t\t"stateVersion":0,\n'
        '\t\t"timestamp":1700000000000\n'
        "\t},\n"
        '\t"offsetTable":{\n'
        '\t\t"TopicA@g2":{0:123},\n'
        '\t\t"TopicB@g1":{0:455,1:456}\n'
        "\t}\n"
        "}"
    )


def test_unknown_fields_survive_in_alphabetical_place():
    offsets = ConsumerOffsets.from_text(BROKER_FILE)
    text = offsets.to_text()
    assert text.index('"dataVersion"') < text.index('"lmqOffsetTable"') < text.index('"offsetTable"')
    assert '"groupTopicMap"' not in text


NAMES = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="@"), min_size=1, max_size=8)


@settings(max_examples=80, deadline=None)
@given(
    table=st.dictionaries(
        st.tuples(NAMES, NAMES),
        st.dictionaries(st.integers(0, 1023), st.integers(-1, 2**63 - 1), max_size=5),
        max_size=6,
    ),
    counter=st.integers(0, 2**40),
)
def test_text_round_trip(table, counter):
    offsets = ConsumerOffsets(data_version=DataVersion(counter=counter, timestamp=1))
    for (topic, group), queues in table.items():
        offsets.offset_table[ConsumerOffsets.key(topic, group)] = dict(queues)
    assert ConsumerOffsets.from_text(offsets.to_text()) == offsets


# --- files ------------------------------------------------------------------------------------------------


def test_consumer_offset_path():
    assert consumer_offset_path(Path("/store")) == Path("/store/config/consumerOffset.json")


def test_main_file_is_used_when_readable(tmp_path):
    path = write_config(tmp_path, BROKER_FILE, backup=STRICT_FILE)
    offsets = load_consumer_offsets(path)
    assert (offsets.loaded_from, offsets.used_backup, offsets.fallback_reason) == (path, False, None)


@pytest.mark.parametrize(
    ("main", "reason"),
    [("", "empty"), ("  \n", "empty"), ('{"offsetTable":{"t@g":{0:', "expected"), (b"\xff\xfe", "UTF-8")],
)
def test_bak_is_used_when_the_main_file_is_empty_or_corrupt(tmp_path, main, reason):
    path = write_config(tmp_path, main, backup=STRICT_FILE)
    offsets = load_consumer_offsets(path)
    assert offsets.used_backup
    assert offsets.loaded_from == tmp_path / "consumerOffset.json.bak"
    assert reason in offsets.fallback_reason and str(path) in offsets.fallback_reason
    assert offsets.get("orders", "billing", 3) == 40
    # unlike the broker, reading never deletes the bad file
    assert path.read_bytes() == (main.encode() if isinstance(main, str) else main)


def test_bak_is_used_when_the_main_file_is_missing(tmp_path):
    path = write_config(tmp_path, None, backup=STRICT_FILE)
    offsets = load_consumer_offsets(path)
    assert offsets.used_backup and "missing" in offsets.fallback_reason


def test_neither_file_means_an_empty_table(tmp_path):
    offsets = load_consumer_offsets(tmp_path / "consumerOffset.json")
    assert offsets.offset_table == {} and offsets.loaded_from is None


def test_both_files_bad_is_an_error_naming_both(tmp_path):
    path = write_config(tmp_path, "{", backup="also bad")
    with pytest.raises(ConsumerOffsetsError) as error:
        load_consumer_offsets(path)
    assert "consumerOffset.json:" in str(error.value) and "consumerOffset.json.bak:" in str(error.value)


def test_persist_moves_the_old_file_to_bak(tmp_path):
    path = write_config(tmp_path, BROKER_FILE)
    offsets = load_consumer_offsets(path)
    offsets.set("test", "pull_test_asg", 0, 40000)
    offsets.data_version.next_version()
    offsets.persist(path)
    assert (tmp_path / "consumerOffset.json.bak").read_text() == BROKER_FILE
    reloaded = load_consumer_offsets(path)
    assert reloaded.get("test", "pull_test_asg", 0) == 40000
    assert reloaded.data_version.counter == 1449
    assert reloaded.offset_table == offsets.offset_table
    assert "{0:40000,1:37961,2:37959,3:37959}" in path.read_text()


def test_first_persist_creates_the_directory_and_no_bak(tmp_path):
    path = tmp_path / "config" / "consumerOffset.json"
    offsets = ConsumerOffsets()
    offsets.set("t", "g", 0, 1)
    offsets.persist(path)
    assert load_consumer_offsets(path).get("t", "g", 0) == 1
    assert not (tmp_path / "config" / "consumerOffset.json.bak").exists()


def test_persist_fsyncs_the_file_then_the_directory(tmp_path, monkeypatch):
    path = write_config(tmp_path, STRICT_FILE)
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    ConsumerOffsets.from_text(STRICT_FILE).persist(path)
    # directory after the rename to .bak, the new file, then the directory again
    assert synced == [str(tmp_path), str(path), str(tmp_path)]
