"""The store listing the probes' follower shares (probes/ebpf/scope.py): brought up to date when a directory
of the store changed, and then at once: with inotify from the events alone (a new segment is one stat, not a
listing of the store), without it (the watch limit reached) by listing again when a directory's mtime moved.
No BPF: the listing is plain user space."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from probes.directory_watch import DirectoryWatch
from probes.ebpf import scope
from probes.ebpf.inodes import FileId, store_files

PAGE = 4096
AN_HOUR_AGO_S = 3600


def _segment_name(index: int) -> str:
    return f"{index * 64 * PAGE:020d}"


def _store(root: Path) -> Path:
    """A CommitLog segment and two ConsumeQueues of one topic, every directory last changed an hour ago (a
    store the broker has been appending to without creating files)."""
    (root / "commitlog").mkdir(parents=True)
    (root / "commitlog" / _segment_name(0)).write_bytes(b"\0" * PAGE)
    for queue in (0, 1):
        directory = root / "consumequeue" / "TopicA" / str(queue)
        directory.mkdir(parents=True)
        (directory / f"{0:020d}").write_bytes(b"\0" * 20)
    _age_directories(root)
    return root


def _age_directories(root: Path) -> None:
    for directory in [root, *(path for path in root.rglob("*") if path.is_dir())]:
        stat = directory.stat()
        os.utime(directory, ns=(stat.st_atime_ns, stat.st_mtime_ns - AN_HOUR_AGO_S * 10**9))


@pytest.fixture(params=["inotify", "mtimes"])
def watching(request, monkeypatch) -> str:
    """How the store's directories are watched: inotify, or (where it cannot be had) their mtimes."""
    if request.param == "mtimes":

        def refused(_watch, _directories):
            raise OSError(errno.ENOSPC, "inotify_add_watch: No space left on device")

        monkeypatch.setattr(DirectoryWatch, "watch", refused)
    return request.param


@pytest.fixture
def listings(monkeypatch, watching) -> list[Path]:
    """Counts the store's whole listings; no listing is reused for its age alone (STORE_LISTING_REUSE_S)."""
    made: list[Path] = []
    real = scope.list_store

    def counted(store: Path, watch=None) -> scope.StoreListing:
        made.append(store)
        return real(store) if watch is None else real(store, watch)

    monkeypatch.setattr(scope, "list_store", counted)
    monkeypatch.setattr(scope, "STORE_LISTING_REUSE_S", 0.0)
    return made


def _names(listing: scope.StoreListing | None) -> set[str]:
    assert listing is not None
    return {label.name for label in listing.files.values()}


def test_an_unchanged_store_is_listed_once_however_often_it_is_asked_for(tmp_path: Path, listings):
    root = _store(tmp_path / "store")
    first = scope.current_store_listing(root)
    for _ in range(5):
        assert scope.current_store_listing(root) is first
    assert len(listings) == 1
    assert _names(first) == {
        f"commitlog/{_segment_name(0)}",
        f"consumequeue/TopicA/0/{0:020d}",
        f"consumequeue/TopicA/1/{0:020d}",
    }


@pytest.mark.parametrize(
    "change, appears",
    [
        ("segment", f"commitlog/{_segment_name(1)}"),
        ("queue file", f"consumequeue/TopicA/1/{300_000 * 20:020d}"),
        ("queue", f"consumequeue/TopicA/7/{0:020d}"),
        ("topic", f"consumequeue/TopicB/0/{0:020d}"),
    ],
)
def test_a_file_created_in_any_directory_of_the_store_is_in_the_next_listing(
    tmp_path: Path, listings, watching, change: str, appears: str
):
    root = _store(tmp_path / "store")
    assert appears not in _names(scope.current_store_listing(root))
    path = root / appears
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0" * 20)
    listing = scope.current_store_listing(root)
    assert appears in _names(listing)
    assert listing is not None and listing.files == store_files(root)
    new_directory = change in ("queue", "topic")
    assert len(listings) == (2 if new_directory or watching == "mtimes" else 1)


def test_a_deleted_or_renamed_file_is_out_of_the_next_listing(tmp_path: Path, listings, watching):
    root = _store(tmp_path / "store")
    queue_file = root / "consumequeue" / "TopicA" / "0" / f"{0:020d}"
    segment = root / "commitlog" / _segment_name(0)
    before = scope.current_store_listing(root)
    assert before is not None and FileId.from_stat(segment.stat()) in before.files
    queue_file.unlink()
    segment.rename(root / "commitlog" / _segment_name(5))
    after = scope.current_store_listing(root)
    assert _names(after) == {
        f"commitlog/{_segment_name(5)}",
        f"consumequeue/TopicA/1/{0:020d}",
    }
    assert after is not None and after.files == store_files(root)
    assert len(listings) == (1 if watching == "inotify" else 2)


def test_a_listing_taken_just_after_a_change_is_reused_with_inotify_only(tmp_path: Path, listings, watching):
    """A change within the same tick of the filesystem's clock as the listing would leave the directory's
    mtime as the listing saw it: without inotify such a listing is taken again until the directories have
    settled. With inotify the watch is made before the directories are read, so whatever changes after
    shows as an event: a listing made just after a roll is as good as any (a broker's exporter listed its
    1,017 files again at every scrape after one)."""
    root = _store(tmp_path / "store")
    (root / "commitlog" / _segment_name(1)).write_bytes(b"")  # commitlog/ changed just now
    first = scope.current_store_listing(root)
    assert first is not None and not first.settled
    if watching == "inotify":
        for _ in range(3):
            assert scope.current_store_listing(root) is first
        assert len(listings) == 1
        return
    second = scope.current_store_listing(root)
    assert second is not first and len(listings) == 2
    _age_directories(root)
    settled = scope.current_store_listing(root)
    assert settled is not None and settled.settled
    assert scope.current_store_listing(root) is settled and len(listings) == 3


def test_a_fresh_listing_is_one_that_sees_a_file_created_just_now(
    tmp_path: Path, listings, watching, monkeypatch
):
    """What the follower asks for when a probe's maps name a file the listing lacks: the file may have been
    created since, within the time a listing serves the session's probes; if no directory changed, it is not
    the store's and the store is not listed again. With inotify every listing is fresh (asking costs one
    read of its descriptor)."""
    monkeypatch.setattr(scope, "STORE_LISTING_REUSE_S", 60.0)
    root = _store(tmp_path / "store")
    first = scope.current_store_listing(root)
    assert scope.current_store_listing(root, fresh=True) is first
    assert len(listings) == 1
    (root / "commitlog" / _segment_name(1)).write_bytes(b"")
    within_reuse_time = scope.current_store_listing(root)
    assert (within_reuse_time is first) == (watching == "mtimes")
    assert f"commitlog/{_segment_name(1)}" in _names(scope.current_store_listing(root, fresh=True))
    assert len(listings) == (1 if watching == "inotify" else 2)


def test_a_burst_of_changes_leaves_the_listing_a_whole_listing_would_make(tmp_path: Path, listings, watching):
    """Rolls, retention, a file created and deleted again before it is looked at, a rename, files that are
    not the store's (a lock in the root, a temporary file in commitlog/): the listing brought up to date
    from the events is the one listing the store now makes."""
    root = _store(tmp_path / "store")
    scope.current_store_listing(root)
    commitlog = root / "commitlog"
    for index in (1, 2, 3):
        (commitlog / _segment_name(index)).write_bytes(b"\0" * PAGE)
    (commitlog / _segment_name(0)).unlink()
    (commitlog / _segment_name(4)).write_bytes(b"")
    (commitlog / _segment_name(4)).unlink()
    (commitlog / _segment_name(2)).rename(commitlog / _segment_name(9))
    (commitlog / "tmp.part").write_bytes(b"")
    (root / "lock").write_bytes(b"")
    (commitlog / _segment_name(1)).unlink()
    (commitlog / _segment_name(1)).write_bytes(b"\0" * 2 * PAGE)  # the same name, another file
    listing = scope.current_store_listing(root)
    assert listing is not None and listing.files == store_files(root)
    assert {label.name for label in listing.files.values()} >= {f"commitlog/{_segment_name(9)}"}
    assert len(listings) == (1 if watching == "inotify" else 2)


def test_a_kafka_partition_given_alone_is_listed_again_when_it_changes(tmp_path: Path, listings, watching):
    """A Kafka partition directory given alone labels its files with the partition's name, not their path
    under it: the events cannot name them, so a change lists the partition again."""
    partition = tmp_path / "orders-0"
    partition.mkdir()
    for suffix in ("log", "index", "timeindex"):
        (partition / f"{0:020d}.{suffix}").write_bytes(b"")
    first = scope.current_store_listing(partition)
    assert first is not None and first.file_kind is None
    (partition / f"{100:020d}.log").write_bytes(b"")
    listing = scope.current_store_listing(partition)
    assert listing is not None and listing.files == store_files(partition)
    assert len(listings) == 2


def test_a_segment_created_empty_is_listed_with_the_size_it_is_given_next(tmp_path: Path, listings, watching):
    """A broker creates a segment and then gives it its size (preallocation): no entry event says so, and the
    probes' page ranges follow the size, so the listing looks at its empty files again."""
    root = _store(tmp_path / "store")
    scope.current_store_listing(root)
    segment = root / "commitlog" / _segment_name(1)
    segment.write_bytes(b"")
    created = scope.current_store_listing(root)
    assert created is not None and created.files[FileId.from_stat(segment.stat())].size_bytes == 0
    os.truncate(segment, 64 * PAGE)
    sized = scope.current_store_listing(root)
    assert sized is not None and sized.files == store_files(root)
    assert sized.files[FileId.from_stat(segment.stat())].size_bytes == 64 * PAGE
