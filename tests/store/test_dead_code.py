"""Bookkeeping nothing reads stays out of the store's API: RocketMQ's isOSPageCacheBusy (and the put lock's
begin time that only fed it), MappedFile's file_name and is_available, and TransferResult.syscall_count.
The produce report measures broker-busy puts itself (store.workload), from each put's time in the lock."""

from __future__ import annotations

from pathlib import Path

import pytest

from store import codec
from store.commitlog import CommitLog
from store.config import StoreConfig
from store.mapped_file import MappedFile
from store.message_store import MessageStore
from store.transfer import TransferResult


@pytest.mark.parametrize(
    ("owner", "name"),
    [
        (MessageStore, "is_os_page_cache_busy"),
        (CommitLog, "begin_time_in_lock_ms"),
        (MappedFile, "file_name"),
        (MappedFile, "is_available"),
        (TransferResult, "syscall_count"),
    ],
)
def test_unused_members_are_gone(owner: type, name: str):
    assert not hasattr(owner, name)


def test_a_put_keeps_no_lock_begin_time(tmp_path: Path):
    with MessageStore(tmp_path, StoreConfig(mapped_file_size_commitlog=64 * 1024)) as store:
        result = store.put_message(codec.Message("Orders", body=b"body"))
        assert result.in_lock_ms >= 0
        assert not [name for name in vars(store.commit_log) if "begin_time" in name]
