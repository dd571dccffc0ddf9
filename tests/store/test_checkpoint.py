"""checkpoint, abort and lock: the store root's state files, against real files and real processes."""

from __future__ import annotations

import fcntl
import os
import struct
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

from store.checkpoint import (
    CHECKPOINT_FILE_SIZE,
    AbortFileState,
    StoreCheckpoint,
    StoreInUse,
    StoreRunState,
    abort_file_state,
    acquire_store_lock,
    create_abort_file,
    is_store_locked,
    pid_is_alive,
    probe_store_lock,
    read_checkpoint,
    remove_abort_file,
    store_run_state,
)
from store.errors import CorruptRecord

FIXTURE_CHECKPOINT = Path("/work/shared/fixtures/rocketmq-rust-0.9.0-store/local-file/checkpoint")
REPO = Path(__file__).resolve().parents[2]


# --- checkpoint -------------------------------------------------------------------------------------------


def test_fixture_checkpoint_decodes():
    values = read_checkpoint(FIXTURE_CHECKPOINT)
    assert values.file_size == 4096
    assert values.physic_msg_timestamp == 0
    assert values.logics_msg_timestamp == 1786727751704  # the second message's store time
    assert values.index_msg_timestamp == 0
    assert values.master_flushed_offset == 0
    assert values.confirm_phy_offset == 0
    assert values.min_timestamp() == 0  # min(0, ...) - 3000 clamps to 0
    assert values.min_timestamp_index() == 0


def test_checkpoint_round_trip_writes_the_page_rocketmq_writes(tmp_path):
    path = tmp_path / "checkpoint"
    with StoreCheckpoint(path) as checkpoint:
        checkpoint.physic_msg_timestamp = 1_700_000_000_500
        checkpoint.logics_msg_timestamp = 1_700_000_000_400
        checkpoint.index_msg_timestamp = 1_699_999_000_000
        checkpoint.master_flushed_offset = 4096
        checkpoint.confirm_phy_offset = 282
        checkpoint.flush()
    content = path.read_bytes()
    assert len(content) == CHECKPOINT_FILE_SIZE
    assert content[:40] == struct.pack(
        ">qqqqq", 1_700_000_000_500, 1_700_000_000_400, 1_699_999_000_000, 4096, 282
    )
    assert content[40:] == bytes(CHECKPOINT_FILE_SIZE - 40)
    values = read_checkpoint(path)
    assert (values.master_flushed_offset, values.confirm_phy_offset) == (4096, 282)
    with StoreCheckpoint(path) as reopened:
        assert reopened.values() == values


@pytest.mark.parametrize(
    ("length", "master_flushed", "confirm"),
    [(24, None, None), (32, 7, None), (40, 7, 9), (4096, 7, 9)],
)
def test_fields_beyond_a_short_file_are_none(tmp_path, length, master_flushed, confirm):
    path = tmp_path / "checkpoint"
    path.write_bytes(struct.pack(">qqqqq", 11, 22, 33, 7, 9).ljust(4096, b"\0")[:length])
    values = read_checkpoint(path)
    timestamps = (values.physic_msg_timestamp, values.logics_msg_timestamp, values.index_msg_timestamp)
    assert timestamps == (11, 22, 33)
    assert (values.master_flushed_offset, values.confirm_phy_offset) == (master_flushed, confirm)


def test_checkpoint_shorter_than_three_fields_is_corrupt(tmp_path):
    path = tmp_path / "checkpoint"
    path.write_bytes(bytes(16))
    with pytest.raises(CorruptRecord, match="at least 24"):
        read_checkpoint(path)


def test_opening_an_old_short_checkpoint_grows_it_to_a_page(tmp_path):
    path = tmp_path / "checkpoint"
    path.write_bytes(struct.pack(">qqq", 5_000, 6_000, 7_000))
    with StoreCheckpoint(path) as checkpoint:
        assert (checkpoint.physic_msg_timestamp, checkpoint.master_flushed_offset) == (5_000, 0)
    assert path.stat().st_size == CHECKPOINT_FILE_SIZE
    assert read_checkpoint(path).confirm_phy_offset == 0


def test_min_timestamp(tmp_path):
    with StoreCheckpoint(tmp_path / "checkpoint") as checkpoint:
        checkpoint.physic_msg_timestamp = 10_000
        checkpoint.logics_msg_timestamp = 5_000
        checkpoint.index_msg_timestamp = 1_000
        assert checkpoint.min_timestamp() == 2_000  # min(10000, 5000) - 3000
        assert checkpoint.min_timestamp_index() == 1_000
        checkpoint.index_msg_timestamp = 9_000
        assert checkpoint.min_timestamp_index() == 2_000
        checkpoint.logics_msg_timestamp = 2_999
        assert checkpoint.min_timestamp() == 0


def test_read_checkpoint_does_not_modify_the_file(tmp_path):
    path = tmp_path / "checkpoint"
    path.write_bytes(struct.pack(">qqq", 1, 2, 3))
    before = path.stat()
    read_checkpoint(path)
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)


# --- abort file -------------------------------------------------------------------------------------------


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_abort_file_absent(tmp_path):
    assert abort_file_state(tmp_path) == AbortFileState(present=False)
    assert abort_file_state(tmp_path).written_by == ""
    assert not remove_abort_file(tmp_path)


def test_abort_file_with_a_live_pid(tmp_path):
    path = create_abort_file(tmp_path)
    assert path.read_bytes() == str(os.getpid()).encode()
    state = abort_file_state(tmp_path)
    assert (state.present, state.pid, state.pid_alive, state.written_by) == (True, os.getpid(), True, "5.x")


def test_abort_file_with_a_dead_pid(tmp_path):
    pid = dead_pid()
    create_abort_file(tmp_path, pid=pid)
    state = abort_file_state(tmp_path)
    assert (state.pid, state.pid_alive) == (pid, False)
    assert remove_abort_file(tmp_path)
    assert not abort_file_state(tmp_path).present


def test_empty_abort_file_is_a_4x_broker(tmp_path):
    (tmp_path / "abort").write_bytes(b"")
    state = abort_file_state(tmp_path)
    assert (state.present, state.pid, state.pid_alive, state.written_by) == (True, None, None, "4.x")


def test_abort_file_with_garbage(tmp_path):
    (tmp_path / "abort").write_bytes(b"not a pid")
    state = abort_file_state(tmp_path)
    assert (state.pid, state.written_by) == (None, "unknown")


def test_pid_is_alive():
    assert pid_is_alive(os.getpid())
    assert not pid_is_alive(dead_pid())
    assert not pid_is_alive(0) and not pid_is_alive(-1)


# --- lock file --------------------------------------------------------------------------------------------

HOLD_LOCK = (
    "import sys\n"
    "from store.checkpoint import acquire_store_lock\n"
    "lock = acquire_store_lock(sys.argv[1])\n"
    "print('locked', flush=True)\n"
    "sys.stdin.read()\n"
)


@contextmanager
def lock_held_by_child(root: Path, code: str = HOLD_LOCK):
    """Another process holding the lock until the block ends (its stdin closes)."""
    child = subprocess.Popen(
        [sys.executable, "-c", code, str(root)],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline().strip() == "locked"
        yield child
    finally:
        child.stdin.close()
        child.wait(timeout=30)


def probe_in_child(root: Path) -> str:
    code = "import sys\nfrom store.checkpoint import probe_store_lock\nprint(probe_store_lock(sys.argv[1]))\n"
    return subprocess.run(
        [sys.executable, "-c", code, str(root)], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout


def test_lock_held_by_another_process_is_refused_then_free(tmp_path):
    with lock_held_by_child(tmp_path) as child:
        with pytest.raises(StoreInUse, match="store is in use by another process") as refused:
            acquire_store_lock(tmp_path)
        assert refused.value.holder_pid == child.pid
        assert probe_store_lock(tmp_path).holder_pid == child.pid
        assert is_store_locked(tmp_path)
    assert not is_store_locked(tmp_path)
    with acquire_store_lock(tmp_path) as lock:
        assert lock.held
        assert (tmp_path / "lock").read_bytes() == b"lock"
    assert not lock.held


def test_a_java_style_lock_excludes_us(tmp_path):
    """Java's FileChannel.tryLock(0, 1, false) is fcntl(F_SETLK, F_WRLCK, start 0, len 1), i.e. this:"""
    java_like = (
        "import fcntl, os, struct, sys\n"
        "fd = os.open(sys.argv[1] + '/lock', os.O_RDWR | os.O_CREAT)\n"
        "flock = struct.pack('@hhqqi4x', fcntl.F_WRLCK, os.SEEK_SET, 0, 1, 0)\n"
        "fcntl.fcntl(fd, fcntl.F_SETLK, flock)\n"
        "print('locked', flush=True)\n"
        "sys.stdin.read()\n"
    )
    with lock_held_by_child(tmp_path, java_like), pytest.raises(StoreInUse):
        acquire_store_lock(tmp_path)


def test_our_lock_is_seen_by_others_and_by_ourselves(tmp_path):
    with acquire_store_lock(tmp_path):
        assert f"holder_pid={os.getpid()}" in probe_in_child(tmp_path)
        assert probe_store_lock(tmp_path).by_this_process
        with pytest.raises(StoreInUse, match="already locked by this process") as refused:
            acquire_store_lock(tmp_path)
        assert refused.value.by_this_process
        # neither the probe nor the refused attempt may have dropped the POSIX lock
        assert f"holder_pid={os.getpid()}" in probe_in_child(tmp_path)
    assert "locked=False" in probe_in_child(tmp_path)


def test_probe_falls_back_to_f_getlk(tmp_path, monkeypatch):
    monkeypatch.delattr(fcntl, "F_OFD_GETLK", raising=False)
    with lock_held_by_child(tmp_path) as child:
        assert probe_store_lock(tmp_path).holder_pid == child.pid


def test_probe_without_a_lock_file(tmp_path):
    assert not is_store_locked(tmp_path)
    assert not (tmp_path / "lock").exists()  # probing creates nothing


# --- run state --------------------------------------------------------------------------------------------


def test_run_state(tmp_path):
    assert store_run_state(tmp_path) is StoreRunState.STOPPED
    create_abort_file(tmp_path, pid=dead_pid())
    assert store_run_state(tmp_path) is StoreRunState.CRASHED
    with lock_held_by_child(tmp_path):
        assert store_run_state(tmp_path) is StoreRunState.RUNNING
