"""probes.process_files: exact rows from canned /proc trees (real symlinks in tmp_path), and a real child
process whose mappings, open files and locked pages are known, cross-checked with psutil."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest
from page_cache_files import (
    MappingChild,
    run_as_nobody,
)

from probes.errors import AccessDenied
from probes.process_files import (
    MappingMemory,
    ProcessFile,
    SkippedFile,
    parse_maps,
    parse_smaps,
    read_process_files,
)
from probes.procfs import ProcessGone, read_process_status
from probes.residency.mincore import PAGE_SIZE

REPO = Path(__file__).resolve().parents[2]
KIB = 1024

MAPS = """\
55d0c0a00000-55d0c0a21000 r--p 00000000 fe:00 260131                     /usr/bin/broker
55d0c2000000-55d0c2021000 rw-p 00000000 00:00 0                          [heap]
7f0000000000-7f0000100000 rw-s 00000000 fe:00 4242                       {commitlog}
7f0000100000-7f0000140000 rw-s 00100000 fe:00 4242                       {commitlog}
7f0000140000-7f0000150000 rw-p 00000000 00:00 0{anonymous_end}
7f0000150000-7f0000151000 r--s 00000000 fe:00 77                         {old_segment} (deleted)
7f0000160000-7f0000161000 rw-s 00000000 00:01 1025                       /dev/zero (deleted)
7f0000170000-7f0000171000 rw-s 00000000 00:01 32768                      /SYSV00000000 (deleted)
7f0000180000-7f0000181000 rw-s 00000000 00:01 9                          /memfd:jit (deleted)
7f0000190000-7f0000191000 rw-s 00000000 00:05 4                          /dev/zero
7f00001a0000-7f00001a1000 r--p 00000000 fe:00 99                         {spaced}
7ffc1c5f0000-7ffc1c611000 rw-p 00000000 00:00 0                          [stack]
7ffc1c7d2000-7ffc1c7d6000 r--p 00000000 00:00 0                          [vvar]
7ffc1c7d6000-7ffc1c7d8000 r-xp 00000000 00:00 0                          [vdso]
"""


def fill_maps(**paths: str | Path) -> str:
    # The kernel ends an anonymous mapping's line with a space after the inode.
    return MAPS.format(anonymous_end=" ", **paths)


def smaps_block(
    header: str, rss_kib: int, private_dirty_kib: int, shared_dirty_kib: int, locked_kib: int
) -> str:
    return textwrap.dedent(
        f"""\
        {header}
        Size:               1024 kB
        KernelPageSize:        4 kB
        Rss:                {rss_kib} kB
        Pss:                {rss_kib} kB
        Shared_Clean:          0 kB
        Shared_Dirty:       {shared_dirty_kib} kB
        Private_Clean:         0 kB
        Private_Dirty:      {private_dirty_kib} kB
        Referenced:         {rss_kib} kB
        Anonymous:             0 kB
        Locked:             {locked_kib} kB
        THPeligible:           0
        VmFlags: rd wr sh mr mw me ms
        """
    )


def canned_process(tmp_path: Path, pid: int = 4242) -> tuple[Path, dict[str, Path]]:
    """A /proc tree for one broker-like process; its files are real files under tmp_path."""
    files = tmp_path / "store"
    files.mkdir()
    named = {
        "commitlog": files / "00000000000000000000",
        "old_segment": files / "00000000001073741824",
        "spaced": files / "a name with spaces",
        "index": files / "index",
        "consumequeue": files / "consumequeue",
        "rotated": files / "rotated.log (deleted)",  # a real file named as the kernel names a deleted one
    }
    for path in named.values():
        path.write_bytes(b"x" * PAGE_SIZE)
    proc = tmp_path / "proc"
    process_dir = proc / str(pid)
    (process_dir / "fd").mkdir(parents=True)
    (process_dir / "comm").write_text("broker\n")
    (process_dir / "root").symlink_to("/")
    maps = fill_maps(**named)
    (process_dir / "maps").write_text(maps)
    memory = {
        "7f0000000000-7f0000100000": (1024, 8, 0, 64),
        "7f0000100000-7f0000140000": (256, 0, 12, 0),
        "7f0000150000-7f0000151000": (4, 0, 0, 0),
        "7f00001a0000-7f00001a1000": (4, 0, 0, 4),
    }
    smaps = ""
    for line in maps.splitlines():
        counters = memory.get(line.split()[0], (0, 0, 0, 0))
        block = smaps_block(line, *counters)
        smaps += block.replace("ms\n", "ms lo\n") if counters[3] else block  # Locked only where VM_LOCKED
    (process_dir / "smaps").write_text(smaps)
    fd_targets = {
        0: "/dev/null",
        1: "pipe:[8812]",
        2: "socket:[8813]",
        3: str(named["index"]),
        5: str(named["commitlog"]),
        7: str(named["consumequeue"]),
        9: str(named["rotated"]),
        11: "anon_inode:[eventfd]",
    }
    for fd, target in fd_targets.items():
        (process_dir / "fd" / str(fd)).symlink_to(target)
    return proc, named


# ---------------------------------------------------------------- parsing


def test_maps_keeps_paths_with_spaces_and_marks_deleted_and_special_mappings():
    entries = parse_maps(fill_maps(commitlog="/s/cl", old_segment="/s/old", spaced="/s/a b  c"))
    by_start = {entry.start_address: entry for entry in entries}
    assert len(entries) == 14
    commitlog = by_start[0x7F0000100000]
    assert (commitlog.path, commitlog.offset_bytes, commitlog.size_bytes, commitlog.inode) == (
        "/s/cl",
        0x100000,
        0x40000,
        4242,
    )
    assert (commitlog.permissions, commitlog.device, commitlog.deleted) == ("rw-s", "fe:00", False)
    assert (by_start[0x7F0000150000].path, by_start[0x7F0000150000].deleted) == ("/s/old", True)
    assert by_start[0x7F00001A0000].path == "/s/a b  c"
    assert by_start[0x7F0000140000].path == ""
    file_backed = [entry.path for entry in entries if entry.file_backed]
    # [heap], [vdso], anonymous memory and shared memory that only looks like a file are not files.
    assert file_backed == ["/usr/bin/broker", "/s/cl", "/s/cl", "/s/old", "/dev/zero", "/s/a b  c"]


def test_smaps_counters_are_bytes_per_mapping_with_its_flags():
    text = smaps_block("7f0000000000-7f0000100000 rw-s 00000000 fe:00 4242   /s/cl", 1024, 8, 4, 64)
    text += smaps_block("7f0000100000-7f0000140000 rw-p 00000000 00:00 0 ", 256, 0, 0, 0)
    text = text.replace("ms\n", "ms lo\n", 1)  # the first mapping is locked (VM_LOCKED)
    flags = frozenset(["rd", "wr", "sh", "mr", "mw", "me", "ms"])
    assert parse_smaps(text) == {
        (0x7F0000000000, 0x7F0000100000): MappingMemory(
            1024 * KIB, 8 * KIB, 4 * KIB, 64 * KIB, flags | {"lo"}
        ),
        (0x7F0000100000, 0x7F0000140000): MappingMemory(256 * KIB, 0, 0, 0, flags),
    }
    assert [memory.locked for memory in parse_smaps(text).values()] == [True, False]
    # a kernel without VmFlags lines (before 3.8): a non-zero Locked is all that tells
    without_flags = "\n".join(line for line in text.splitlines() if not line.startswith("VmFlags"))
    assert [memory.locked for memory in parse_smaps(without_flags).values()] == [True, False]
    assert parse_smaps("7f0000000000-7f0000001000 r--p 00000000 fe:00 1 /x\nRss: 4 kB\n") == {
        (0x7F0000000000, 0x7F0000001000): MappingMemory(4 * KIB, None, None, None)
    }


# ---------------------------------------------------------------- canned process


def test_a_canned_process_gives_one_row_per_regular_file(tmp_path: Path):
    proc, named = canned_process(tmp_path)
    found = read_process_files(4242, proc_root=proc)
    process_dir = proc / "4242"
    assert (found.pid, found.comm, found.unavailable) == (4242, "broker", {})
    assert [(file.path, file.deleted, file.fds, file.mappings) for file in found.files] == [
        ("/usr/bin/broker", False, (), 1),
        (str(named["commitlog"]), False, (5,), 2),
        (str(named["old_segment"]), True, (), 1),
        (str(named["spaced"]), False, (), 1),
        (str(named["index"]), False, (3,), 0),
        (str(named["consumequeue"]), False, (7,), 0),
        (str(named["commitlog"].parent / "rotated.log"), True, (9,), 0),
    ]
    commitlog = found.files[1]
    assert commitlog == ProcessFile(
        path=str(named["commitlog"]),
        deleted=False,
        open_path=str(process_dir / "fd" / "5"),
        fds=(5,),
        mappings=2,
        mapped_bytes=0x140000,
        rss_bytes=(1024 + 256) * KIB,
        private_dirty_bytes=8 * KIB,
        shared_dirty_bytes=12 * KIB,
        locked_bytes=1024 * KIB,  # its first mapping is locked and wholly resident (Locked's PSS: 64 kB)
    )
    assert commitlog.mapped and commitlog.open
    # A deleted mapping is reached through map_files; a live one through the process's root.
    assert found.files[2].open_path == str(process_dir / "map_files" / "7f0000150000-7f0000151000")
    assert found.files[3].open_path == str(process_dir / "root" / str(named["spaced"]).lstrip("/"))
    assert found.files[3].locked_bytes == 4 * KIB
    open_only = found.files[4]
    assert (open_only.mapped, open_only.rss_bytes, open_only.locked_bytes, open_only.unavailable) == (
        False,
        0,
        0,
        {},
    )
    # /usr/bin/broker is not on this machine: its type is unknown, so it stays (measuring it will say why).
    assert found.skipped == (
        SkippedFile("/dev/zero", "mapped a character device"),
        SkippedFile("/dev/null", "open a character device"),
    )


def test_a_mapping_missing_from_smaps_leaves_its_file_unmeasured(tmp_path: Path):
    proc, _named = canned_process(tmp_path)
    smaps = proc / "4242" / "smaps"
    blocks = smaps.read_text().split("7f0000100000-7f0000140000")
    smaps.write_text(blocks[0] + "7f0000100000-7f0000140001" + blocks[1])  # the VMA grew between reads
    commitlog = read_process_files(4242, proc_root=proc).files[1]
    assert commitlog.rss_bytes is None and commitlog.locked_bytes is None
    assert "changed between reading maps and smaps" in commitlog.unavailable["rss_bytes"]


def test_a_process_that_is_gone_raises(tmp_path: Path):
    proc, _named = canned_process(tmp_path)
    with pytest.raises(ProcessGone, match="4243"):
        read_process_files(4243, proc_root=proc)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    with pytest.raises(ProcessGone):
        read_process_files(child.pid)


@pytest.mark.requires_root
def test_permission_errors_leave_fields_unavailable_with_the_reason(world_dir: Path):
    proc, _named = canned_process(world_dir)
    process_dir = proc / "4242"
    (process_dir / "smaps").chmod(0o000)
    (process_dir / "fd").chmod(0o000)
    canned = run_as_nobody(
        """
        import dataclasses, json, sys
        from pathlib import Path
        from probes.process_files import read_process_files
        print(json.dumps(dataclasses.asdict(read_process_files(4242, proc_root=Path(sys.argv[1])))))
        """,
        str(proc),
    )
    assert set(canned["unavailable"]) == {"open_files"}
    assert "permission denied" in canned["unavailable"]["open_files"]
    # The mapped files are still listed (maps was readable); their smaps counters are not.
    assert [(Path(file["path"]).name, file["fds"]) for file in canned["files"]] == [
        ("broker", []),
        ("00000000000000000000", []),
        ("00000000001073741824", []),
        ("a name with spaces", []),
    ]
    commitlog = canned["files"][1]
    assert commitlog["rss_bytes"] is None and commitlog["locked_bytes"] is None
    assert "permission denied" in commitlog["unavailable"]["rss_bytes"]
    # The real thing: init's maps and fds are closed to other users (ptrace access check).
    real = run_as_nobody(
        """
        import dataclasses, json
        from probes.process_files import read_process_files
        print(json.dumps(dataclasses.asdict(read_process_files(1))))
        """
    )
    assert real["files"] == []
    assert set(real["unavailable"]) == {"mapped_files", "open_files"}
    assert all("permission denied" in reason for reason in real["unavailable"].values())


def test_hidepid_is_access_denied_not_gone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # /proc mounted with hidepid=invisible hides a running process: procfs tells it from an exited one.
    monkeypatch.setattr("probes.procfs.PROC_ROOT", tmp_path)
    with pytest.raises(AccessDenied, match="hidepid"):
        read_process_files(os.getpid(), proc_root=tmp_path)


# ---------------------------------------------------------------- a real process


def test_a_real_process_maps_one_file_and_holds_others_open(mapping_child: MappingChild):
    child = mapping_child
    found = read_process_files(child.pid)
    by_path = {file.path: file for file in found.files}
    mapped = by_path[str(child.mapped)]
    held_open = by_path[str(child.held_open)]
    deleted = by_path[str(child.deleted)]
    # mlock of the tail split the one mmap into two VMAs (VM_LOCKED is per VMA): the file sums both.
    assert (mapped.mapped, mapped.open, mapped.mappings, mapped.mapped_bytes) == (
        True,
        False,
        2,
        child.PAGES * PAGE_SIZE,
    )
    assert mapped.open_path == f"/proc/{child.pid}/root{child.mapped}"
    assert (held_open.mapped, held_open.open, held_open.deleted) == (False, True, False)
    assert (deleted.mapped, deleted.deleted) == (False, True)
    assert deleted.open_path.startswith(f"/proc/{child.pid}/fd/")
    # Every page was touched through the mapping; mapped pages are not dropped by drop_caches.
    assert mapped.rss_bytes == child.PAGES * PAGE_SIZE
    assert mapped.locked_bytes == child.LOCKED_PAGES * PAGE_SIZE
    assert read_process_status(child.pid).vm_lck_bytes == child.LOCKED_PAGES * PAGE_SIZE
    # The interpreter's libraries are mapped files too; the stdin/stdout pipes are not files at all.
    assert any(Path(path).name.startswith("libc.so") for path in by_path)
    assert found.unavailable == {}


def test_a_real_process_agrees_with_psutil(mapping_child: MappingChild):
    child = mapping_child
    psutil_process = psutil.Process(child.pid)
    for _ in range(5):
        ours = {file.path: file for file in read_process_files(child.pid).files}
        theirs = {entry.path: entry for entry in psutil_process.memory_maps(grouped=True)}
        again = {file.path: file for file in read_process_files(child.pid).files}
        if ours == again:  # no writeback cleaned the dirty pages between the two readings of ours
            break
    mapped_by_psutil = theirs[str(child.mapped)]
    mapped = ours[str(child.mapped)]
    assert (mapped.rss_bytes, mapped.private_dirty_bytes, mapped.shared_dirty_bytes) == (
        mapped_by_psutil.rss,
        mapped_by_psutil.private_dirty,
        mapped_by_psutil.shared_dirty,
    )
    # Pages dirtied through a mapping only this process has count as private dirty (the split is by page
    # mapcount, not by MAP_SHARED) until writeback cleans them, and a write dirties its whole folio, so
    # more pages than were written can count.
    assert 0 <= mapped.private_dirty_bytes <= child.PAGES * PAGE_SIZE and mapped.shared_dirty_bytes == 0
    # psutil lists the files whose path exists, so not the deleted one, and ignores mappings.
    ours_open = {path for path, file in ours.items() if file.open and not file.deleted}
    assert {entry.path for entry in psutil_process.open_files()} == ours_open
    assert str(child.held_open) in ours_open
    # Every file psutil sees mapped is in our list too (psutil also lists [heap], [stack] and the like).
    assert {path for path in theirs if path.startswith("/")} <= set(ours)
