"""One unit convention in every renderer (README, Conventions): sizes in binary units (B, KiB, MiB, GiB),
every rate with "/s", figures counted over an interval drawn as rates, and residency shares that never round
up to 100% (or down to 0%).

The renderers' output is walked for number-and-unit tokens: a decimal or bare-letter size unit (MB, GB, K, M)
fails. The dashboard is drawn from a frame whose rates and per-interval counts are sentinel values, so a rate
drawn without "/s", or a per-interval count drawn as a bare size, shows up as the wrong token.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from mqinspect.cli.app import app
from mqinspect.render.lab_sendpath import sendpath_view
from mqinspect.render.units import human_bytes, human_rate, residency_percent, share_percent

TESTS = Path(__file__).resolve().parent
sys.path[:0] = [str(TESTS / "dashboard"), str(TESTS / "labs"), str(TESTS / "store")]

from fakes import PAGE, frame, memory_sample  # noqa: E402
from store_builder import StoreBuilder  # noqa: E402

MiB = 1 << 20
BINARY_UNITS = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"}
SIZE_LIKE = BINARY_UNITS | {"K", "M", "G", "T", "k", "KB", "kB", "MB", "GB", "TB", "Ki", "Mi", "Gi"}
# a number, then (after at most one space) a word: "12.6MiB", "13,074 KiB/s", "47.4M", "3 GB/s"
NUMBER_AND_UNIT = re.compile(r"(?<![\w.])\d[\d,]*(?:\.\d+)? ?([A-Za-z]+)(/s)?(?![\w])")
runner = CliRunner()


def size_units_not_binary(text: str) -> list[str]:
    """Every number written with a size unit that is not a binary one ("47.4M", "12 MB/s")."""
    return [
        match.group(0)
        for match in NUMBER_AND_UNIT.finditer(text)
        if match.group(1) in SIZE_LIKE and match.group(1) not in BINARY_UNITS
    ]


def rendered(renderable, width: int = 200) -> str:
    console = Console(width=width, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


# --- the formatters ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0B"),
        (1023, "1023B"),
        (1024, "1KiB"),
        (4095, "3.9KiB"),  # cut, never rounded up to 4KiB
        (64 * MiB - 1, "63.9MiB"),  # a segment one byte short of full does not read full
        (64 * MiB, "64MiB"),
        (int(12.63 * MiB), "12.6MiB"),
        (164 * 1024, "164KiB"),
        (3 << 30, "3GiB"),
        (None, "unavailable"),
    ],
)
def test_sizes_are_binary_and_never_rounded_up(size, text):
    assert human_bytes(size) == text


def test_rates_end_in_per_second():
    assert human_rate(12.63 * MiB) == "12.6MiB/s" and human_rate(0.4) == "<1B/s" and human_rate(0) == "0B/s"


@pytest.mark.parametrize(
    ("part", "whole", "decimals", "text"),
    [
        (4084, 4096, 0, "99%"),
        (4095, 4096, 0, "99%"),
        (262_143, 262_144, 1, "99.9%"),
        (4096, 4096, 0, "100%"),
        (4096, 4096, 1, "100.0%"),
        (1, 262_144, 0, "<1%"),
        (1, 262_144, 1, "<0.1%"),
        (0, 4096, 0, "0%"),
        (2048, 4096, 0, "50%"),
        (None, 4096, 0, None),
        (5, 0, 0, None),
    ],
)
def test_residency_shares_are_floored_and_only_exact_at_the_ends(part, whole, decimals, text):
    assert residency_percent(part, whole, decimals) == text


def test_a_share_computed_elsewhere_follows_the_same_rule():
    assert [share_percent(p, 1) for p in (99.99, 100.0, 0.004, 0.0, None)] == [
        "99.9%",
        "100.0%",
        "<0.1%",
        "0.0%",
        None,
    ]


# --- the dashboard, with sentinel values -------------------------------------------------------------------

RATE = 7 * MiB  # every byte rate of the frame: drawn "7MiB/s"
INTERVAL_S = 2.0
PER_INTERVAL = int(RATE * INTERVAL_S)  # every per-interval byte count: drawn as the same rate, never "14MiB"
SIZE = 3 * MiB  # every size: drawn "3MiB", never with "/s"


def sentinel_frame():
    base = frame(1)
    sendpaths = dataclasses.replace(
        base.sendpaths,
        interval_s=INTERVAL_S,
        bytes_to_sockets=PER_INTERVAL,
        processes=tuple(
            dataclasses.replace(
                row,
                bytes_to_sockets=PER_INTERVAL,
                read_write_bytes=PER_INTERVAL,
                mmap_write_bytes=PER_INTERVAL,
                sendfile_bytes=PER_INTERVAL,
                splice_bytes=PER_INTERVAL,
                other_socket_write_bytes=PER_INTERVAL,
                unresolved_socket_write_bytes=0,
            )
            for row in base.sendpaths.processes
        ),
    )
    pages = PER_INTERVAL // PAGE
    writeback = dataclasses.replace(
        base.writeback, dirtied_pages=pages, written_pages=pages, written_pages_all_files=pages
    )
    processes = tuple(
        dataclasses.replace(
            process,
            rchar_bytes_per_s=RATE,
            wchar_bytes_per_s=RATE,
            tcp_received_bytes_per_s=RATE,
            tcp_acked_bytes_per_s=RATE,
            rss_bytes=SIZE,
            locked_bytes=SIZE,
        )
        for process in base.processes
    )
    segments = tuple(
        dataclasses.replace(segment, locked_bytes=SIZE, added_pages=None) for segment in base.store.segments
    )
    return dataclasses.replace(
        base,
        interval_s=INTERVAL_S,
        sendpaths=sendpaths,
        writeback=writeback,
        processes=processes,
        store=dataclasses.replace(base.store, segments=segments),
    )


def test_the_dashboard_draws_rates_with_per_second_and_per_interval_counts_as_rates():
    from mqinspect.render.top import top_view

    text = rendered(top_view(sentinel_frame()), width=250)
    assert size_units_not_binary(text) == []
    rate, size = human_bytes(RATE), human_bytes(SIZE)
    assert text.count(f"{rate}/s") >= 5 * 1 + 3 + 4 * 3  # send paths (4 and other), writeback, process rates
    assert not re.search(rf"(?<![\w.]){re.escape(rate)}(?!/s)", text), "a rate drawn without /s"
    assert human_bytes(PER_INTERVAL) not in text, "a per-interval byte count drawn as a size"
    assert text.count(size) >= 2 * 3 + 4 and f"{size}/s" not in text  # rss, locked; segments' locked


def test_the_memory_view_uses_binary_units():
    from mqinspect.render.mem import mem_view

    text = rendered(mem_view(memory_sample()))
    assert size_units_not_binary(text) == [] and re.search(r"\d(?:\.\d)?[KMG]iB\)", text)
    assert "B/s" in text  # page-in and page-out rates


# --- the commands, on real files ---------------------------------------------------------------------------


@pytest.fixture
def built_store(tmp_path: Path):
    builder = StoreBuilder(tmp_path / "store", segment_size=256 * 1024, cq_entries_per_file=100, index=False)
    for number in range(600):
        builder.add("TopicA", body=bytes(1000), keys=f"k{number}")
    return builder.build()


@pytest.mark.parametrize(
    "arguments",
    [
        ["store", "stat", "{store}"],
        ["store", "segments", "{store}"],
        ["store", "produce", "{store}", "-t", "T", "-n", "50"],
        ["cache", "{segment}", "--chunks", "4"],
        ["cache", "--pid", "{pid}"],
        ["top", "{store}", "--once", "--no-ebpf", "--interval", "0.1", "--pid", "{pid}"],
        ["mem", "--interval", "0.1"],
    ],
)
def test_each_command_writes_sizes_in_binary_units(built_store, arguments):
    values = {"store": built_store.root, "segment": built_store.segments[0], "pid": os.getpid()}
    command = [argument.format(**values) for argument in arguments]
    result = runner.invoke(app, command, env={"COLUMNS": "250", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.stderr
    assert size_units_not_binary(result.stdout + result.stderr) == []


# --- the labs and the demo report --------------------------------------------------------------------------


def test_the_sendpath_lab_gives_its_throughput_as_a_binary_rate(tmp_path: Path, monkeypatch):
    import test_lab_sendpath

    drawn = []

    def drawing(report):
        view = sendpath_view(report)
        drawn.append(rendered(view))
        return view

    # the lab test that draws a report without BPF, with its report drawn here too
    monkeypatch.setattr(test_lab_sendpath, "sendpath_view", drawing)
    test_lab_sendpath.test_without_bpf_the_copy_columns_are_unavailable_with_the_reason_and_the_fix(tmp_path)
    (text,) = drawn
    assert size_units_not_binary(text) == [] and "GB/s" not in text
    (row,) = [line for line in text.splitlines() if line.strip().startswith("sendfile") and "/s" in line]
    assert re.search(r"\d(?:\.\d)?[KMG]iB/s", row)


def test_the_demo_report_uses_binary_units():
    from mqinspect.demo.report import BrokerSummary, ChildExit, ConsumerSummary, PathServed, WorkloadOutcome
    from mqinspect.render.demo import workload_view
    from store.transfer import SendPath

    served = PathServed(SendPath.SENDFILE, 10, 1000, 5 * MiB + 1, 10, {"sendfile": 10}, 0.1)
    broker = BrokerSummary(
        1, 2, "T", 1000, 5 * MiB, 1.0, 5 * MiB, 100.0, 50.0, 0, 3, 1, 2, 0, 5 * MiB, (), (served,), ()
    )
    consumer = ConsumerSummary(3, SendPath.SENDFILE, "g", 10, 1000, 0, 5 * MiB, 0, 1000, 1.0, 5 * MiB, None)
    outcome = WorkloadOutcome(
        Path("/store"), False, 1.0, broker, (consumer,), (ChildExit("broker", 1, 0, False, True, None),)
    )
    text = rendered(workload_view(outcome, 1000.0))
    assert size_units_not_binary(text) == []
    assert text.count("5MiB/s") == 2 and "5MiB" in text.replace("5MiB/s", "")
