"""The inspection commands survive a store that changes under them.

A child process truncates, re-extends and rewrites the last CommitLog segment and deletes and recreates a
middle one, while this process runs every inspection command in a loop, in-process: one SIGBUS would kill
pytest itself. Every run must either succeed or fail with a StoreError (a clean one-line message from the
CLI). The last test shows that the same churn does kill a reader that maps the file, so the first one
proves something.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest
from store_builder import BuiltStore, StoreBuilder
from typer.testing import CliRunner

from mqinspect.cli.app import app
from mqinspect.errors import ExitStatus
from store.errors import StoreError
from store.inspection.formats import list_segments, store_stat
from store.inspection.rocketmq.cq import consume_queue_view
from store.inspection.rocketmq.dump import dump_records
from store.inspection.rocketmq.query import query_by_key, query_by_msg_id, query_by_offset
from store.inspection.rocketmq.reading import open_layout
from store.inspection.rocketmq.verify import verify_store

MIN_ROUNDS = 3  # every inspection call at least this often under the churn
CHURN_LIMIT_S = 120.0  # a deadline for a loop that should end in seconds, not a duration
runner = CliRunner()

# Rewrites the store's files as fast as it can until the deadline, holding each half-done state for a
# moment so readers land in it. Prints how many rounds it made.
CHURN = textwrap.dedent(
    """
    import os, random, sys, time
    last, middle, deadline = sys.argv[1], sys.argv[2], float(sys.argv[3])
    last_bytes, middle_bytes = open(last, "rb").read(), open(middle, "rb").read()
    size, rng, rounds = len(last_bytes), random.Random(7), 0
    print("ready", flush=True)
    while time.time() < deadline:
        fd = os.open(last, os.O_RDWR)
        os.ftruncate(fd, rng.randrange(0, size))      # truncated: reads past here come back short
        time.sleep(rng.random() / 1000)
        os.ftruncate(fd, size)                          # re-extended: a hole of zeros
        time.sleep(rng.random() / 1000)
        os.pwrite(fd, last_bytes[: rng.randrange(0, size)], 0)   # rewritten part of the way
        time.sleep(rng.random() / 1000)
        os.pwrite(fd, last_bytes, 0)
        os.close(fd)
        os.unlink(middle)                               # a middle segment vanishes...
        time.sleep(rng.random() / 1000)
        with open(middle, "wb") as handle:              # ...and comes back, empty at first
            handle.write(middle_bytes[: size // 2])
            handle.flush()
            time.sleep(rng.random() / 1000)
            handle.write(middle_bytes[size // 2 :])
        rounds += 1
    print(rounds, flush=True)
    """
)

# Maps a segment, lets the parent truncate it, then touches the last mapped page.
MAPPING_READER = textwrap.dedent(
    """
    import mmap, sys
    with open(sys.argv[1], "rb") as handle:
        mapping = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    print("mapped", flush=True)
    sys.stdin.readline()
    print(mapping[len(mapping) - 1])
    """
)


def build_live_store(builder: StoreBuilder) -> BuiltStore:
    for number in range(600):
        builder.add(f"Topic{number % 2}", f"message {number} " + "y" * 300, queue_id=number % 4,
                    keys=f"key-{number} live")  # fmt: skip
    built = builder.build()
    assert len(built.segments) >= 4
    return built


@pytest.fixture
def live_store(make_store) -> BuiltStore:
    return build_live_store(make_store(segment_size=64 << 10, cq_entries_per_file=64, index_entries=2048))


def library_calls(built: BuiltStore):
    """Every inspection entry point, on the store and on the segment being rewritten."""
    root, victim = built.root, built.records[-5]
    return {
        "stat": lambda: store_stat(root),
        "segments": lambda: list_segments(root),
        "dump": lambda: dump_records(root, None, 50, include_body=True, check_crc=True),
        "dump-last-file": lambda: dump_records(
            built.segments[-1], None, 1000, include_body=False, check_crc=True
        ),
        "dump-from": lambda: dump_records(
            root, victim.physical_offset, 5, include_body=False, check_crc=False
        ),
        "verify": lambda: verify_store(root),
        "cq": lambda: consume_queue_view(open_layout(root), "Topic0", 0, None, 500),
        "query-key": lambda: query_by_key(
            root, "live", topic=None, begin_ms=None, end_ms=None, max_hits=64, include_body=False
        ),
        "query-offset": lambda: query_by_offset(root, victim.physical_offset, include_body=True),
        "query-msg-id": lambda: query_by_msg_id(root, victim.offset_msg_id, include_body=False),
    }


def cli_calls(built: BuiltStore) -> list[list[str]]:
    root = str(built.root)
    return [
        ["store", "stat", root],
        ["store", "segments", root],
        ["store", "dump", str(built.segments[-1]), "--count", "50", "--format", "json"],
        ["store", "verify", root],
        ["store", "cq", root, "--topic", "Topic1", "--queue", "1"],
        ["store", "query", root, "--key", "live", "--format", "json"],
        ["store", "query", root, "--msg-id", built.records[-5].offset_msg_id],
    ]


def start_churn(built: BuiltStore, seconds: float) -> subprocess.Popen:
    churn = subprocess.Popen(
        [sys.executable, "-c", CHURN, str(built.segments[-1]), str(built.segments[1]),
         str(time.time() + seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert churn.stdout.readline().strip() == "ready"
    return churn


def assert_clean_cli_result(result, args: list[str]) -> None:
    assert result.exit_code in (ExitStatus.OK, ExitStatus.FINDINGS, ExitStatus.BAD_INPUT), (args, result)
    if result.exit_code == ExitStatus.BAD_INPUT or result.stderr:
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("mqinspect: error: "), (args, result.stderr)
        assert "internal error" not in lines[0], (args, result.stderr)


def test_inspection_survives_a_store_rewritten_underneath(live_store: BuiltStore):
    built = live_store
    churn = start_churn(built, CHURN_LIMIT_S)  # killed below once the loop has seen enough
    # A few real processes at the same time, so a SIGBUS would show as a negative return code.
    processes = [
        subprocess.Popen([sys.executable, "-m", "mqinspect", *args], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
        for args in cli_calls(built)[:4]
    ]  # fmt: skip
    outcomes: Counter[str] = Counter()
    calls, cli_args = library_calls(built), cli_calls(built)
    rounds, deadline = 0, time.monotonic() + CHURN_LIMIT_S
    try:
        # Rounds, not seconds: a loaded machine makes fewer calls per second, not different ones. The loop
        # ends once the churn has broken a call and calls still succeed in between (or at the deadline).
        while rounds < MIN_ROUNDS or not _broken_and_answered(outcomes):
            assert time.monotonic() < deadline, outcomes
            for name, call in calls.items():
                try:
                    call()
                    outcomes[f"{name}: ok"] += 1
                except StoreError:
                    outcomes[f"{name}: StoreError"] += 1
            for args in cli_args:
                result = runner.invoke(app, args, env={"COLUMNS": "120"})
                assert_clean_cli_result(result, args)
                outcomes[f"cli exit {result.exit_code}"] += 1
            rounds += 1
        for process, args in zip(processes, cli_calls(built), strict=False):
            _, stderr = process.communicate(timeout=60)
            assert process.returncode != -signal.SIGBUS, args
            assert process.returncode in (0, 1, 2), (args, process.returncode, stderr)
            assert "internal error" not in stderr and "Traceback" not in stderr, stderr
    finally:
        churn.kill()
        churn.wait()


def _broken_and_answered(outcomes: Counter[str]) -> bool:
    """The churn really did break calls under us, and we still got answers in between."""
    return any(key.endswith("StoreError") for key in outcomes) and any(
        key.endswith(": ok") for key in outcomes
    )


def test_a_mapping_reader_dies_of_sigbus_under_the_same_churn(live_store: BuiltStore):
    last = live_store.segments[-1]
    reader = subprocess.Popen(
        [sys.executable, "-c", MAPPING_READER, str(last)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert reader.stdout.readline().strip() == "mapped"
        last.write_bytes(b"")  # what the churn does first: truncate the segment
        reader.stdin.write("\n")
        reader.stdin.flush()
        reader.wait(timeout=30)
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.wait()
    assert reader.returncode == -signal.SIGBUS
    # ...while the pread path reads the same store and only sees that its last file is empty now.
    stat = store_stat(live_store.root)
    assert stat.commitlog.max_physical_offset == live_store.blanks[-1]


def test_the_churned_store_is_whole_again_afterwards(live_store: BuiltStore):
    """The churn restores every byte it touches, so a final verify is clean: the failures above came from
    the churn, not from damage the test left behind."""
    churn = start_churn(live_store, 0.3)
    churn.wait(timeout=30)
    rounds = int(churn.stdout.read().strip())
    assert rounds > 0
    assert verify_store(live_store.root).ok
    assert Path(live_store.segments[1]).stat().st_size == live_store.segment_size
