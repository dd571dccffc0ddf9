"""Every store decoder raises only its documented errors (store.errors), whatever the bytes.

Three layers: directed tests for each input that broke the contract, Hypothesis over arbitrary and
mutated valid inputs (bounded examples, shrinking to a minimal failing input), and a small run of
benchmarks/fuzz_decoders.py itself, whose million-input run is the long proof.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import struct
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from store import codec
from store import index_file as index_file_module
from store.consumer_offsets import ConsumerOffsets, ConsumerOffsetsError
from store.errors import CorruptRecord, StoreLayoutError
from store.index_file import IndexFile, IndexHeader, infer_index_geometry

REPO = Path(__file__).resolve().parents[2]
FUZZER_PATH = REPO / "benchmarks" / "fuzz_decoders.py"


def _load_fuzzer():
    spec = importlib.util.spec_from_file_location("fuzz_decoders", FUZZER_PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


fuzzer = _load_fuzzer()
DECODERS = {decoder.name: decoder for decoder in fuzzer.build_decoders(seed=5)}
T1 = 1_700_000_000_000


# ---- the inputs that broke the contract --------------------------------------------------------------------


def test_a_message_id_with_spaces_is_a_value_error_not_a_key_error():
    with pytest.raises(ValueError, match="not hexadecimal"):
        codec.parse_offset_msg_id("7F 00 00010000000000000000000000")  # bytes.fromhex takes the spaces
    with pytest.raises(ValueError, match="not hexadecimal"):
        codec.parse_offset_msg_id("7F000001\t000000000000000000000000"[:32])


def test_offset_msg_id_says_value_error_for_an_offset_no_java_long_holds():
    with pytest.raises(ValueError, match="does not fit a Java long"):
        codec.offset_msg_id(("10.0.0.1", 10911), 2**63)
    with pytest.raises(ValueError, match="between 0 and 65535"):
        codec.offset_msg_id(("10.0.0.1", 70000), 0)


def test_a_decoded_record_whose_store_port_is_damaged_has_no_offset_msg_id():
    message = codec.Message("T", b"body", store_host=("10.0.0.1", 10911))
    data = bytearray(codec.encode_record(message, queue_offset=0, physical_offset=0, store_timestamp_ms=T1))
    data[68:72] = struct.pack(">i", 70000)  # STOREHOST port: BODYCRC does not cover the header
    record = codec.decode_record(bytes(data), check_crc=True)
    assert record.store_host.port == 70000
    assert record.offset_msg_id is None


@pytest.mark.parametrize("length", [0, 1, 39])
def test_a_short_index_header_is_corrupt_not_a_struct_error(length: int):
    with pytest.raises(CorruptRecord, match="ended early"):
        IndexHeader.unpack(bytes(length))
    with pytest.raises(CorruptRecord) as caught:
        IndexHeader.unpack(bytes(length), path="/idx")
    assert (caught.value.path, caught.value.field) == ("/idx", "header")


def test_an_index_file_that_shrinks_while_its_table_sizes_are_probed_is_a_layout_error(tmp_path: Path):
    with IndexFile.create(tmp_path, hash_slot_num=5, index_num=17) as index_file:  # not the default ratio
        for number in range(6):
            index_file.put_key(f"T#k{number}", 100 * number, T1)
    data = index_file.path.read_bytes()
    header = IndexHeader.unpack(data)

    def read_shrunk(offset: int, length: int) -> bytes:  # the whole-file read sees a file cut in half
        return data[offset : min(offset + length, len(data) // 2 if length > 100 else len(data))]

    with pytest.raises(StoreLayoutError, match="changed while read"):
        infer_index_geometry(len(data), header, read_shrunk)


def test_a_damaged_index_file_that_every_geometry_fits_is_refused_after_a_few_checks(monkeypatch):
    """Zeros with slot 0 used: the newest entry of every candidate geometry reads key hash 0, whose slot
    heads a chain, so all ~50,000 of this 1 MiB file reach it; each full check walks a slot table (a 16 MiB
    file took hours). At most MAX_PROBED_GEOMETRIES are checked before the sizes are asked for."""
    data = bytearray(1 << 20)
    data[:40] = struct.pack(">qqqqii", T1, T1, 0, 0, 1, 2)  # one slot used, one entry
    data[40:44] = struct.pack(">i", 1)
    checks = []
    check = index_file_module._slots_agree_with_entries

    def counted(*args):
        checks.append(args[0])
        assert len(checks) <= 100, "every geometry gets a full check"
        return check(*args)

    monkeypatch.setattr(index_file_module, "_slots_agree_with_entries", counted)
    with pytest.raises(StoreLayoutError, match="geometries reach its newest entry"):
        infer_index_geometry(
            len(data), IndexHeader.unpack(data), lambda offset, length: bytes(data[offset : offset + length])
        )
    assert checks == []


def test_a_damaged_chain_ends_the_walk_at_once_even_when_the_header_claims_2_billion_entries(tmp_path: Path):
    """prevIndex 1 -> 3 closes a loop. The old guard counted steps up to indexCount, which a damaged (or
    refreshed) header can set to 2^31-1: a loop without hits went round two billion times."""
    with IndexFile.create(tmp_path, hash_slot_num=8, index_num=32) as index_file:
        for offset in range(3):
            index_file.put_key("k", offset, T1)  # chain 3 -> 2 -> 1
        entry_1, path = index_file.geometry.entry_position(1), index_file.path
    with open(path, "r+b") as raw:
        raw.seek(entry_1 + 16)
        raw.write((3).to_bytes(4, "big"))
        raw.seek(36)
        raw.write((2**31 - 1).to_bytes(4, "big"))  # indexCount
    reads = []
    with IndexFile.open(path, hash_slot_num=8, index_num=32) as damaged:
        read_entry = damaged.entry

        def counted(number: int):
            reads.append(number)
            assert len(reads) < 1000, "the walk goes round the loop"
            return read_entry(number)

        damaged.entry = counted
        with pytest.raises(CorruptRecord, match="links forward"):
            damaged.select_phy_offsets("k", 64, 0, 1)  # a time window no entry is in: nothing ends the walk
    assert reads == [3, 2, 1]


@pytest.mark.parametrize(
    "text",
    [
        '{"offsetTable":{"t@g":{0:' + "9" * 5000 + "}}}",  # int() refuses over 4300 digits
        '{"offsetTable":{"t@g":{"' + "1" * 5000 + '":1}}}',
        '{"offsetTable":{"t@g":{' + "1" * 5000 + ":1}}}",
        '{"offsetTable":{"t@g":{4294967296:1}}}',  # a queue id no Java int holds
        '{"offsetTable":{"t@g":{0:9223372036854775808}}}',  # an offset no Java long holds
        "[" * 100_000,
    ],
    ids=["long-offset", "long-quoted-queue", "long-bare-queue", "int-overflow", "long-overflow", "deep"],
)
def test_consumer_offsets_refuse_what_a_broker_cannot_read_with_their_own_error(text: str):
    with pytest.raises(ConsumerOffsetsError):
        ConsumerOffsets.from_text(text)


def test_a_2_gib_length_field_allocates_nothing_near_it():
    """TOTALSIZE, the body length and the properties length at their largest: the decoder checks each
    against the bytes it was given before it reads, so its allocations stay those of a small record."""
    message = codec.Message("T", b"x" * 100, properties={"KEYS": "k"})
    valid = codec.encode_record(message, queue_offset=0, physical_offset=0, store_timestamp_ms=T1)
    fields = fuzzer.record_fields(valid)
    tracemalloc.start()
    try:
        for at, width in fields:
            damaged = bytearray(valid)
            damaged[at : at + width] = (2 ** (8 * width - 1) - 1).to_bytes(width, "big")
            with pytest.raises(CorruptRecord):
                codec.decode_record(bytes(damaged), check_crc=True)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024, f"decoding {len(valid)}-byte records allocated {peak} bytes"


# ---- Hypothesis: arbitrary bytes and mutated valid encodings -----------------------------------------------


@st.composite
def mutated(draw, decoder_name: str) -> bytes:
    """A valid encoding changed one to four times, each change shrinking to a smaller one."""
    decoder = DECODERS[decoder_name]
    seed = draw(st.sampled_from(decoder.seeds))
    data = bytearray(seed.data)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        change = draw(st.sampled_from(("flip", "truncate", "extend", "field", "delete", "splice")))
        if change == "flip" and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif change == "truncate":
            del data[at:]
        elif change == "extend":
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        elif change == "field" and seed.fields:
            field_at, width = draw(st.sampled_from(seed.fields))
            value = draw(
                st.sampled_from((0, 1, -1, 2 ** (8 * width - 1) - 1, -(2 ** (8 * width - 1)), len(data)))
            )
            data[field_at : field_at + width] = (value % 2 ** (8 * width)).to_bytes(width, "big")
        elif change == "delete":
            del data[at : at + draw(st.integers(1, 40))]
        elif change == "splice":
            other = draw(st.sampled_from(decoder.seeds)).data
            data[at:] = other[draw(st.integers(0, len(other))) :]
    return bytes(data)


@pytest.mark.parametrize("decoder_name", sorted(DECODERS))
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_each_decoder_raises_only_its_documented_errors(decoder_name: str, data):
    decoder = DECODERS[decoder_name]
    raw = data.draw(st.one_of(mutated(decoder_name), st.binary(max_size=600)), label="input")
    with contextlib.suppress(decoder.documented):
        decoder.decode(raw)


# ---- the fuzzer: it finds what it should, and its small run is clean ---------------------------------------


def test_the_fuzzer_replays_an_input_exactly_from_seed_and_number():
    decoders = fuzzer.build_decoders(seed=5)
    again = fuzzer.build_decoders(seed=5)
    for index in (0, 1, 12_345, 999_999):
        first_decoder, first = fuzzer.input_for(index, 5, decoders)
        second_decoder, second = fuzzer.input_for(index, 5, again)
        assert (first_decoder.name, first) == (second_decoder.name, second)


def test_the_fuzzer_reports_an_undocumented_exception_with_its_input_number(monkeypatch):
    """A harness that cannot fail proves nothing: plant a decoder that raises KeyError on some inputs."""

    def broken(data: bytes) -> None:
        if len(data) % 3 == 0:
            raise KeyError(len(data))
        raise CorruptRecord("fine")

    planted = fuzzer.Decoder("planted", broken, (CorruptRecord,), DECODERS["checkpoint"].seeds)
    monkeypatch.setattr(fuzzer, "decoders_for", lambda seed, names: [planted])
    tally = fuzzer.run_chunk((0, 300, 5, None))
    expected = [index for index in range(300) if len(fuzzer.input_for(index, 5, [planted])[1]) % 3 == 0]
    found = [finding for finding in tally.findings if finding.kind == "undocumented"]
    assert [finding.index for finding in found] == expected and expected
    assert {finding.error for finding in found} == {"KeyError"}
    assert found[0].where.startswith("tests/store/test_fuzz_decoders.py:")
    assert tally.documented["planted"] == 300 - len(expected)


def test_a_small_fuzz_run_finds_nothing_undocumented():
    """What the issue's million-input run checks, on 30,000 inputs (2,000 and more for each of the 13)."""
    result = subprocess.run(
        [sys.executable, str(FUZZER_PATH), "--count", "30000", "--seed", "13", "--jobs", "1", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    report = json.loads(result.stdout)
    assert report["undocumented_kinds"] == [] and report["hang_inputs"] == [], result.stdout
    assert result.returncode == 0, result.stderr
    assert {row["name"] for row in report["decoders"]} == set(DECODERS)
    assert all(row["inputs"] >= 2000 and row["documented_raised"] > 0 for row in report["decoders"])
    assert sum(row["decoded"] for row in report["decoders"]) > 0
    assert report["max_rss_mib"] > 0 and report["largest_traced_allocation"]["bytes"] > 0
