"""probes.procfs: exact values from canned /proc trees, and the real /proc against independent ground truth
(psutil, `free -b`, `perf stat`, a child that counts its own faults, a file we dirty ourselves)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from page_cache_files import STATE_LIMIT_S

from probes import procfs
from probes.errors import AccessDenied
from probes.procfs import (
    CLOCK_TICKS_PER_S,
    PAGE_SIZE_BYTES,
    MemInfo,
    PressureLine,
    ProcessGone,
    VmStat,
    WritebackState,
    parse_proc_counters,
    rates,
    read_dirty_settings,
    read_meminfo,
    read_pressure,
    read_process_faults,
    read_process_io,
    read_process_status,
    read_vmstat,
    read_vmstat_counters,
    take_system_snapshot,
    writeback_state,
)
from probes.residency.cachestat import cachestat

REPO = Path(__file__).resolve().parents[2]
SAMPLES = Path(__file__).parent / "procfs_samples"
THIS_MACHINE = SAMPLES / "this_machine"  # copied from the project's Debian 12 / Linux 6.18 VM
KERNEL_5_4 = SAMPLES / "kernel_5_4"  # legacy workingset_refault, cpu PSI without "full", dirty_bytes set
OLD_KERNEL = SAMPLES / "old_kernel"  # 2.6.32-like: per-zone pgscan/pgsteal, no thresholds, no PSI
ODD_COMM = SAMPLES / "odd_comm"  # pid 4242 named "a) (b\xff c) d"
KIB = 1024
MIB = 1024 * KIB


# --- canned trees: exact values


def test_parser_reads_both_layouts_and_converts_kb_to_bytes():
    text = "MemTotal:   24684084 kB\nHugePages_Total:       0\nnr_dirty 47\nName:\tpython\nUid:\t0\t0\t0\t0\n"
    assert parse_proc_counters(text) == {"MemTotal": 24684084 * KIB, "HugePages_Total": 0, "nr_dirty": 47}


def test_meminfo_of_this_machine():
    assert read_meminfo(THIS_MACHINE) == MemInfo(
        total_bytes=24684084 * KIB,
        free_bytes=24373144 * KIB,
        available_bytes=24348024 * KIB,
        cached_bytes=102668 * KIB,
        dirty_bytes=188 * KIB,
        writeback_bytes=0,
        mapped_bytes=11224 * KIB,
        mlocked_bytes=15216 * KIB,
        active_file_bytes=16904 * KIB,
        inactive_file_bytes=78464 * KIB,
        shmem_bytes=8872 * KIB,
        buffers_bytes=1748 * KIB,
    )


def test_meminfo_without_memavailable_says_why():
    meminfo = read_meminfo(OLD_KERNEL)
    assert meminfo.available_bytes is None
    assert meminfo.unavailable == {
        "available_bytes": f"{OLD_KERNEL}/meminfo: no MemAvailable line (added in Linux 3.14)"
    }
    assert (meminfo.total_bytes, meminfo.dirty_bytes, meminfo.active_file_bytes) == (
        3924924 * KIB,
        528 * KIB,
        1451620 * KIB,
    )


def test_vmstat_of_this_machine():
    vmstat = read_vmstat(THIS_MACHINE)
    assert vmstat == VmStat(
        faults=2818046,
        major_faults=2558,
        pgpgin_kib=3311181,
        pgpgout_kib=671992,
        dirty_pages=47,
        writeback_pages=0,
        dirty_threshold_pages=1217053,
        dirty_background_threshold_pages=607783,
        file_pages=26104,
        mapped_pages=2806,
        file_refaults=580779,
        scanned_pages=0,
        reclaimed_pages=0,
        sources={
            "scanned_pages": ("pgscan_kswapd", "pgscan_direct", "pgscan_khugepaged", "pgscan_proactive"),
            "reclaimed_pages": (
                "pgsteal_kswapd",
                "pgsteal_direct",
                "pgsteal_khugepaged",
                "pgsteal_proactive",
            ),
            "file_refaults": ("workingset_refault_file",),
        },
    )


def test_vmstat_sums_reclaim_without_throttle_events_and_reads_legacy_refaults():
    vmstat = read_vmstat(KERNEL_5_4)
    assert vmstat.scanned_pages == 912345 + 3456  # pgscan_direct_throttle 7 is a count of events, not pages
    assert vmstat.reclaimed_pages == 812345 + 2345
    assert vmstat.file_refaults == 98765
    assert vmstat.sources == {
        "scanned_pages": ("pgscan_kswapd", "pgscan_direct"),
        "reclaimed_pages": ("pgsteal_kswapd", "pgsteal_direct"),
        "file_refaults": ("workingset_refault",),
    }
    assert vmstat.unavailable == {}


def test_vmstat_of_an_old_kernel_sums_per_zone_counters_and_reports_what_is_missing():
    vmstat = read_vmstat(OLD_KERNEL)
    assert vmstat.scanned_pages == 50000 + 60000 + 1000 + 2000
    assert vmstat.reclaimed_pages == 44000 + 56000
    assert set(vmstat.sources["scanned_pages"]) == {
        f"pgscan_{who}_{zone}"
        for who in ("kswapd", "direct")
        for zone in ("dma", "dma32", "normal", "movable")
    }
    assert set(vmstat.sources["reclaimed_pages"]) == {
        f"pgsteal_{z}" for z in ("dma", "dma32", "normal", "movable")
    }
    assert (vmstat.faults, vmstat.major_faults, vmstat.dirty_pages) == (987654321, 12345, 132)
    assert (
        vmstat.dirty_threshold_pages
        is vmstat.dirty_background_threshold_pages
        is vmstat.file_refaults
        is None
    )
    assert set(vmstat.unavailable) == {
        "dirty_threshold_pages",
        "dirty_background_threshold_pages",
        "file_refaults",
    }
    assert "no nr_dirty_threshold line" in vmstat.unavailable["dirty_threshold_pages"]
    assert "workingset_refault" in vmstat.unavailable["file_refaults"]


def test_dirty_settings_say_which_limit_is_in_force():
    ratios = read_dirty_settings(THIS_MACHINE)
    assert (ratios.dirty_ratio_percent, ratios.dirty_background_ratio_percent) == (20, 10)
    assert (ratios.dirty_bytes, ratios.dirty_background_bytes) == (0, 0)
    assert (ratios.dirty_expire_centisecs, ratios.dirty_writeback_centisecs) == (3000, 500)
    assert (ratios.throttle_limit_setting, ratios.background_limit_setting) == (
        "dirty_ratio",
        "dirty_background_ratio",
    )

    with_bytes = read_dirty_settings(KERNEL_5_4)
    assert (with_bytes.dirty_bytes, with_bytes.dirty_ratio_percent) == (512 * MIB, 0)
    assert (with_bytes.throttle_limit_setting, with_bytes.background_limit_setting) == (
        "dirty_bytes",
        "dirty_background_ratio",
    )

    # Before the *_bytes sysctls existed only the ratios could be in force.
    old = read_dirty_settings(OLD_KERNEL)
    assert old.dirty_bytes is old.dirty_background_bytes is None
    assert old.unavailable == {
        "dirty_bytes": f"{OLD_KERNEL}/sys/vm/dirty_bytes: not present",
        "dirty_background_bytes": f"{OLD_KERNEL}/sys/vm/dirty_background_bytes: not present",
    }
    assert (old.throttle_limit_setting, old.background_limit_setting) == (
        "dirty_ratio",
        "dirty_background_ratio",
    )


def test_pressure_of_this_machine():
    pressure = read_pressure(THIS_MACHINE)
    assert pressure.io_some == PressureLine(0.30, 0.27, 0.32, 7082589)
    assert pressure.io_full == PressureLine(0.30, 0.27, 0.31, 6848084)
    assert pressure.cpu_some == PressureLine(0.00, 0.03, 0.12, 5809125)
    assert pressure.memory_some == pressure.memory_full == PressureLine(0.0, 0.0, 0.0, 0)
    assert pressure.unavailable == {}


def test_pressure_without_cpu_full_line_or_without_psi():
    pressure = read_pressure(KERNEL_5_4)
    assert pressure.memory_full == PressureLine(0.0, 0.0, 0.0, 1234567)
    assert pressure.io_some == PressureLine(12.34, 8.21, 3.03, 98765432)
    assert pressure.cpu_some == PressureLine(1.50, 0.75, 0.20, 123456789)
    assert pressure.cpu_full is None
    assert pressure.unavailable["cpu_full"] == (
        f"{KERNEL_5_4}/pressure/cpu: no 'full' line (kernels before 5.13 report only 'some' for cpu)"
    )
    assert set(pressure.unavailable) == {"cpu_full"}

    none = read_pressure(OLD_KERNEL)
    assert {name: getattr(none, name) for name in none.unavailable} == dict.fromkeys(none.unavailable)
    assert len(none.unavailable) == 6
    assert none.unavailable["memory_some"] == (
        f"{OLD_KERNEL}/pressure/memory: not present"
        " (kernel older than 4.20, built without CONFIG_PSI, or booted with psi=0)"
    )


def test_writeback_state_below_background_on_this_machine():
    state = writeback_state(read_vmstat(THIS_MACHINE), read_meminfo(THIS_MACHINE), page_size_bytes=4096)
    assert state == WritebackState(
        dirty_pages=47,
        writeback_pages=0,
        background_threshold_pages=607783,
        throttle_threshold_pages=1217053,
        freerun_ceiling_pages=(1217053 + 607783) // 2,
        dirty_fraction_of_throttle=47 / 1217053,
        background_writeback_due=False,
        writers_throttled=False,
        over_throttle_threshold=False,
        regime="below-background",
        page_size_bytes=4096,
    )


def test_writeback_state_throttles_writers_above_the_freerun_ceiling():
    # 121000 dirty + 6000 under writeback = 127000 > freerun (131072 + 119859) // 2 = 125465 <= limit 131072.
    state = writeback_state(read_vmstat(KERNEL_5_4))
    assert state.freerun_ceiling_pages == 125465
    assert state.dirty_fraction_of_throttle == 127000 / 131072
    assert (state.background_writeback_due, state.writers_throttled, state.over_throttle_threshold) == (
        True,
        True,
        False,
    )
    assert state.regime == "throttled"


@pytest.mark.parametrize(
    ("dirty", "writeback", "regime"),
    [
        (119859, 0, "below-background"),  # the flusher starts only when dirty EXCEEDS bg_thresh
        (119860, 0, "background-writeback"),
        (119000, 6465, "below-background"),  # == freerun ceiling: writers still run free
        (100000, 25466, "throttled"),  # writeback counts toward throttling, not toward the flusher's start
        (131000, 73, "over-limit"),
    ],
)
def test_writeback_regimes_follow_the_kernel_comparisons(dirty: int, writeback: int, regime: str):
    vmstat = dataclasses.replace(read_vmstat(KERNEL_5_4), dirty_pages=dirty, writeback_pages=writeback)
    assert writeback_state(vmstat).regime == regime


def test_writeback_state_falls_back_to_meminfo_counts_and_explains_missing_thresholds():
    vmstat = dataclasses.replace(
        read_vmstat(OLD_KERNEL),
        dirty_pages=None,
        unavailable={"dirty_pages": "gone", **read_vmstat(OLD_KERNEL).unavailable},
    )
    state = writeback_state(vmstat, read_meminfo(OLD_KERNEL), page_size_bytes=4096)
    assert state.dirty_pages == 528 * KIB // 4096
    assert state.throttle_threshold_pages is state.freerun_ceiling_pages is state.regime is None
    assert state.dirty_fraction_of_throttle is state.writers_throttled is None
    assert "no nr_dirty_threshold line" in state.unavailable["regime"]
    assert "no nr_dirty_background_threshold line" in state.unavailable["regime"]
    assert "dirty_pages" not in state.unavailable


def test_every_writeback_number_has_a_meaning_and_every_regime_an_explanation():
    numbers = {f.name for f in dataclasses.fields(WritebackState)} - {"page_size_bytes", "unavailable"}
    assert set(WritebackState.MEANINGS) == numbers
    assert set(WritebackState.REGIMES) == {
        "below-background",
        "background-writeback",
        "throttled",
        "over-limit",
    }


def test_process_files_of_this_machine():
    faults = read_process_faults("self", THIS_MACHINE)
    assert (faults.comm, faults.state) == ("python", "R")
    assert (
        faults.minor_faults,
        faults.children_minor_faults,
        faults.major_faults,
        faults.children_major_faults,
    ) == (
        1328,
        0,
        4,
        0,
    )
    assert (faults.user_s, faults.system_s) == (1 / CLOCK_TICKS_PER_S, 1 / CLOCK_TICKS_PER_S)
    assert faults.start_ticks == 95656

    io = read_process_io("self", THIS_MACHINE)
    assert (io.rchar_bytes, io.wchar_bytes, io.read_syscalls, io.write_syscalls) == (721831, 467, 285, 2)
    assert (io.read_bytes, io.write_bytes, io.cancelled_write_bytes) == (626688, 4096, 0)

    status = read_process_status("self", THIS_MACHINE)
    assert (status.vm_rss_bytes, status.vm_lck_bytes) == (10376 * KIB, 0)
    assert (status.rss_anon_bytes, status.rss_file_bytes, status.rss_shmem_bytes) == (
        4704 * KIB,
        5672 * KIB,
        0,
    )
    assert faults.unavailable == io.unavailable == status.unavailable == {}


def test_stat_is_parsed_from_the_last_parenthesis():
    faults = read_process_faults(4242, ODD_COMM)
    assert faults.comm == "a) (b\ufffd c) d"
    assert faults.state == "S"
    assert (
        faults.minor_faults,
        faults.children_minor_faults,
        faults.major_faults,
        faults.children_major_faults,
    ) == (
        5120,
        300,
        7,
        2,
    )
    assert (faults.user_s, faults.system_s) == (250 / CLOCK_TICKS_PER_S, 130 / CLOCK_TICKS_PER_S)


def test_old_kernel_process_files_report_missing_lines_and_files():
    status = read_process_status("self", OLD_KERNEL)
    assert (status.vm_rss_bytes, status.vm_lck_bytes) == (1048576 * KIB, 65536 * KIB)
    assert status.rss_file_bytes is None
    assert (
        status.unavailable["rss_file_bytes"]
        == f"{OLD_KERNEL}/self/status: no RssFile line (added in Linux 4.5)"
    )

    io = read_process_io("self", OLD_KERNEL)  # a kernel built without CONFIG_TASK_IO_ACCOUNTING
    assert io.rchar_bytes is io.cancelled_write_bytes is None
    assert set(io.unavailable.values()) == {f"{OLD_KERNEL}/self/io: not present"}

    assert read_process_faults("self", OLD_KERNEL).minor_faults == 91234


def test_kernel_threads_have_no_memory_lines():
    status = read_process_status(2, KERNEL_5_4)
    assert status.vm_rss_bytes is status.rss_anon_bytes is None
    assert set(status.unavailable.values()) == {
        f"{KERNEL_5_4}/2/status: no memory lines (kernel thread or zombie)"
    }
    assert read_process_faults(2, KERNEL_5_4).system_s == 31 / CLOCK_TICKS_PER_S


@pytest.mark.parametrize("reader", [read_process_faults, read_process_io, read_process_status])
def test_a_missing_process_directory_is_a_gone_process(reader):
    with pytest.raises(ProcessGone) as gone:
        reader(999999, THIS_MACHINE)
    assert gone.value.pid == 999999


def test_snapshots_of_canned_trees_never_crash():
    for root in (THIS_MACHINE, KERNEL_5_4, OLD_KERNEL, ODD_COMM):
        snapshot = take_system_snapshot(root)
        assert snapshot.writeback.page_size_bytes == PAGE_SIZE_BYTES
    empty = take_system_snapshot(ODD_COMM)  # no meminfo, vmstat, sysctls or PSI at all
    assert empty.meminfo.total_bytes is None
    assert empty.meminfo.unavailable["total_bytes"] == f"{ODD_COMM}/meminfo: not present"
    assert empty.writeback.regime is None and "not present" in empty.writeback.unavailable["regime"]


def test_psutil_global_root_is_left_alone():
    read_process_faults("self", THIS_MACHINE)
    assert psutil.PROCFS_PATH == "/proc"


# --- rates


def test_vmstat_rates_per_second():
    before = read_vmstat(KERNEL_5_4)
    after = dataclasses.replace(before, faults=before.faults + 500, pgpgin_kib=before.pgpgin_kib + 2048)
    per_s = rates(before, after, 2.0)
    assert (per_s.faults_per_s, per_s.pgpgin_kib_per_s, per_s.major_faults_per_s) == (250.0, 1024.0, 0.0)
    assert per_s.interval_s == 2.0 and per_s.unavailable == {}


def test_a_counter_that_goes_backwards_or_was_not_measured_has_no_rate():
    before = read_vmstat(OLD_KERNEL)
    after = dataclasses.replace(before, faults=before.faults - 1)
    per_s = rates(before, after, 1.0)
    assert per_s.faults_per_s is None
    assert (
        per_s.unavailable["faults_per_s"]
        == "faults went backwards (987654321 -> 987654320): the counter was reset"
    )
    assert per_s.file_refaults_per_s is None
    assert per_s.unavailable["file_refaults_per_s"] == before.unavailable["file_refaults"]
    with pytest.raises(ValueError, match="positive"):
        rates(before, after, 0)


def test_pressure_rates_are_stall_percent_of_the_interval():
    before = read_pressure(KERNEL_5_4)
    io_some = dataclasses.replace(before.io_some, total_us=before.io_some.total_us + 250_000)
    per_s = rates(before, dataclasses.replace(before, io_some=io_some), 0.5)
    assert per_s.io_some_stalled_percent == pytest.approx(50.0)
    assert per_s.cpu_full_stalled_percent is None and "5.13" in per_s.unavailable["cpu_full_stalled_percent"]


def test_process_rates_and_their_preconditions():
    before = read_process_faults(4242, ODD_COMM)
    after = dataclasses.replace(before, minor_faults=5120 + 1000, user_s=before.user_s + 0.5)
    per_s = rates(before, after, 0.5)
    assert (per_s.minor_faults_per_s, per_s.major_faults_per_s) == (2000.0, 0.0)
    assert per_s.user_cpu_s_per_s == pytest.approx(1.0)
    with pytest.raises(ValueError, match="different processes"):
        rates(before, dataclasses.replace(after, pid=1), 1.0)
    with pytest.raises(TypeError):
        rates(object(), object(), 1.0)
    io = read_process_io("self", THIS_MACHINE)
    io_rates = rates(io, dataclasses.replace(io, write_bytes=io.write_bytes + 8192), 2.0)
    assert io_rates.write_bytes_per_s == 4096.0


# --- the real /proc, against independent ground truth

BRACKET_TOLERANCE_BYTES = 16 * MIB


def _free_b() -> dict[str, int]:
    header, memory = subprocess.run(
        ["free", "-b"], capture_output=True, text=True, check=True
    ).stdout.splitlines()[:2]
    return dict(zip(header.split(), map(int, memory.split()[1:]), strict=True))


def _bracketed(value: int, first: int | None, second: int | None) -> bool:
    """Whether `value`, read between our two readings, lies between them (give or take the tolerance)."""
    assert first is not None and second is not None
    return (
        min(first, second) - BRACKET_TOLERANCE_BYTES <= value <= max(first, second) + BRACKET_TOLERANCE_BYTES
    )


def test_meminfo_agrees_with_free_and_psutil():
    first = read_meminfo()
    memory = psutil.virtual_memory()
    free = _free_b()
    second = read_meminfo()
    assert first.unavailable == {} and second.unavailable == {}
    assert first.total_bytes == memory.total == free["total"]
    for theirs, ours in (
        (memory.available, "available_bytes"),
        (free["available"], "available_bytes"),
        (memory.free, "free_bytes"),
        (free["free"], "free_bytes"),
        (memory.buffers, "buffers_bytes"),
        (memory.shared, "shmem_bytes"),
        (free["shared"], "shmem_bytes"),
    ):
        assert _bracketed(theirs, getattr(first, ours), getattr(second, ours)), (ours, theirs, first, second)


def test_vmstat_dirty_pages_are_meminfo_dirty_and_thresholds_follow_the_ratios():
    settings = read_dirty_settings()
    vmstat = read_vmstat()
    meminfo = read_meminfo()
    assert vmstat.unavailable == {}
    assert _bracketed(vmstat.dirty_pages * PAGE_SIZE_BYTES, meminfo.dirty_bytes, meminfo.dirty_bytes)
    if (
        settings.throttle_limit_setting != "dirty_ratio"
        or settings.background_limit_setting != "dirty_background_ratio"
    ):
        pytest.skip(f"the byte limits are in force here: {settings}")
    # domain_dirty_limits() applies both ratios to the same dirtyable memory (in 1/PAGE_SIZE steps).
    expected = settings.dirty_background_ratio_percent / settings.dirty_ratio_percent
    measured = vmstat.dirty_background_threshold_pages / vmstat.dirty_threshold_pages
    assert measured == pytest.approx(expected, rel=0.01)


TOUCH_PAGES = 16384  # 64 MiB of 4 KiB pages
TOUCHING_CHILD = r"""
import mmap, sys

def own_minflt():
    with open("/proc/self/stat", "rb") as stat:
        return int(stat.read().rsplit(b")", 1)[1].split()[7])  # field 10; field 3 is index 0

pages, wait = int(sys.argv[1]), len(sys.argv) > 2
area = mmap.mmap(-1, pages * mmap.PAGESIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
area.madvise(mmap.MADV_NOHUGEPAGE)  # one fault per base page, not one per 2 MiB huge page
if wait:
    print("ready", flush=True)
    sys.stdin.readline()
before = own_minflt()
for offset in range(0, pages * mmap.PAGESIZE, mmap.PAGESIZE):
    area[offset] = 1
after = own_minflt()
print(before, after, flush=True)
if wait:
    sys.stdin.readline()
"""


def test_minor_faults_of_a_child_touching_fresh_pages():
    child = subprocess.Popen(
        [sys.executable, "-c", TOUCHING_CHILD, str(TOUCH_PAGES), "wait"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline() == "ready\n"
        ours_before = read_process_faults(child.pid)
        child.stdin.write("\n")
        child.stdin.flush()
        own_before, own_after = map(int, child.stdout.readline().split())
        ours_after = read_process_faults(child.pid)
        child.stdin.write("\n")
        child.stdin.flush()
    finally:
        child.wait(timeout=10)
    assert own_after - own_before >= TOUCH_PAGES
    assert ours_before.minor_faults <= own_before and own_after <= ours_after.minor_faults
    assert ours_after.minor_faults - ours_before.minor_faults >= TOUCH_PAGES
    per_s = rates(ours_before, ours_after, 1.0)
    assert per_s.minor_faults_per_s >= TOUCH_PAGES


def test_minor_faults_agree_with_perf():
    if shutil.which("perf") is None:
        pytest.skip("perf is not installed (Debian package linux-perf)")
    run = subprocess.run(
        [
            "perf",
            "stat",
            "-x,",
            "-e",
            "minor-faults",
            "--",
            sys.executable,
            "-c",
            TOUCHING_CHILD,
            str(TOUCH_PAGES),
        ],
        capture_output=True,
        text=True,
    )
    counted = [line.split(",") for line in run.stderr.splitlines() if ",minor-faults," in line]
    if run.returncode != 0 or not counted or not counted[0][0].isdigit():
        pytest.skip(f"perf stat could not count minor-faults here: {run.stderr.strip()}")
    own_before, own_after = map(int, run.stdout.split())
    assert own_after - own_before >= TOUCH_PAGES
    # perf counts from exec to exit; the child's last reading of its own counter misses only its shutdown.
    assert int(counted[0][0]) == pytest.approx(own_after, rel=0.05)


def _writeback_capable_dir(preferred: Path) -> Path:
    # tmpfs pages never count as Dirty (shmem does not account writeback): dirty a disk-backed file instead.
    for directory in (preferred, Path("/var/tmp")):
        fstype = subprocess.run(
            ["findmnt", "-n", "-o", "FSTYPE", "--target", str(directory)], capture_output=True, text=True
        ).stdout.strip()
        if fstype not in ("tmpfs", "ramfs", ""):
            return directory
    pytest.skip(f"no disk-backed directory to dirty pages in (tried {preferred} and /var/tmp)")


DIRTY_WRITE_BYTES = 256 * MIB
DIRTY_WRITE_PAGES = DIRTY_WRITE_BYTES // PAGE_SIZE_BYTES


def _not_clean_bytes(meminfo: MemInfo) -> int:
    assert meminfo.dirty_bytes is not None and meminfo.writeback_bytes is not None
    return meminfo.dirty_bytes + meminfo.writeback_bytes


def _raw_vmstat() -> dict[str, int]:
    return {name: int(value) for name, value in map(str.split, Path("/proc/vmstat").read_text().splitlines())}


def _counter_drift_pages() -> int:
    """How far one reading of a kernel page counter may be from its exact sum: each CPU holds up to its
    threshold ("vm stats threshold" in /proc/zoneinfo; a node's is its zones' largest) before adding it."""
    zoneinfo = Path("/proc/zoneinfo").read_text().splitlines()
    return max(int(line.split()[-1]) for line in zoneinfo if "threshold" in line) * (os.cpu_count() or 1)


@dataclasses.dataclass(frozen=True)
class _Bracketed:
    """What `read()` returned, and the least and most the kernel's Dirty + Writeback (nr_dirty + nr_writeback
    in /proc/vmstat, read by the test itself just before and just after) can have been meanwhile: it rises
    only as pages are dirtied (nr_dirtied), so it was at most the count before plus the pages dirtied in
    between, and at least the count after less them; each of the six counters read may be off by the
    per-CPU drift."""

    value: object
    least_pages: int
    most_pages: int
    before: dict[str, int]
    after: dict[str, int]

    @staticmethod
    def around(read: Callable[[], object], drift: int) -> _Bracketed:
        before = _raw_vmstat()
        value = read()
        after = _raw_vmstat()
        dirtied = after["nr_dirtied"] - before["nr_dirtied"]
        counted = [vmstat["nr_dirty"] + vmstat["nr_writeback"] for vmstat in (before, after)]
        return _Bracketed(
            value, counted[1] - dirtied - 6 * drift, counted[0] + dirtied + 6 * drift, before, after
        )

    def assert_holds(self, pages: int, what: str) -> None:
        assert self.least_pages <= pages <= self.most_pages, (
            f"{what}: {pages} dirty + writeback pages read, the kernel counted {self.least_pages}"
            f" to {self.most_pages}"
        )


def _writes_dirty_pages_in_one_try(directory: Path, drift: int) -> bool:
    """Dirty DIRTY_WRITE_BYTES of a new file, read Dirty + Writeback, fsync, read them again, and assert what
    holds whatever other processes dirty, write back or drop meanwhile. False when the flusher wrote our
    pages back before they were looked at (dirty data of others above the background threshold)."""
    path = directory / f"mqinspect-dirty-{os.getpid()}"
    chunk = b"\xa5" * MIB
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        before = _Bracketed.around(read_meminfo, drift)
        for _ in range(DIRTY_WRITE_BYTES // MIB):
            os.write(descriptor, chunk)
        written = _Bracketed.around(read_meminfo, drift)
        snapshot = _Bracketed.around(lambda: take_system_snapshot().writeback, drift)
        ours = cachestat(descriptor)  # ours only go from dirty to writeback to clean: at most what was read
        os.fsync(descriptor)
        ours_synced = cachestat(descriptor)
        synced = _Bracketed.around(read_meminfo, drift)
    finally:
        os.close(descriptor)
        path.unlink()
    ours_not_clean = ours.dirty_pages + ours.writeback_pages
    if ours_not_clean < 0.9 * DIRTY_WRITE_PAGES:
        return False
    for reading, what in ((before, "before"), (written, "written"), (synced, "synced")):
        reading.assert_holds(_not_clean_bytes(reading.value) // PAGE_SIZE_BYTES, f"meminfo {what}")
    state = snapshot.value
    snapshot.assert_holds(state.dirty_pages + state.writeback_pages, "the snapshot's writeback state")
    # Our write shows: the machine-wide counts hold at least our file's dirty and writeback pages.
    assert _not_clean_bytes(written.value) >= (ours_not_clean - 2 * drift) * PAGE_SIZE_BYTES
    assert state.dirty_pages + state.writeback_pages >= ours_not_clean - 2 * drift
    # fsync cleans it: our pages are clean, and the count fell by them less what others dirtied meanwhile.
    assert (ours_synced.dirty_pages, ours_synced.writeback_pages) == (0, 0)
    dirtied_meanwhile = synced.after["nr_dirtied"] - written.before["nr_dirtied"]
    fell = (_not_clean_bytes(written.value) - _not_clean_bytes(synced.value)) // PAGE_SIZE_BYTES
    assert fell >= ours_not_clean - dirtied_meanwhile - 6 * drift
    # Writers are throttled above the freerun ceiling, midway between the two thresholds, which the kernel
    # computes from the free memory at each reading (taken at both ends, less 1% for what moved between).
    freerun = (
        min(
            vmstat["nr_dirty_threshold"] + vmstat["nr_dirty_background_threshold"]
            for vmstat in (snapshot.before, snapshot.after)
        )
        // 2
    )
    if snapshot.most_pages <= 0.99 * freerun:
        assert state.regime in ("below-background", "background-writeback") and not state.writers_throttled
    return True


def test_writing_without_fsync_shows_as_dirty_and_fsync_cleans_it(tmp_path: Path):
    """Other processes dirty, write back and drop pages all the time and the counters are machine-wide: each
    reading is checked against the kernel's counters read around it, our file's pages against cachestat.
    A try whose pages the flusher wrote back early is made again, until STATE_LIMIT_S."""
    directory = _writeback_capable_dir(tmp_path)
    drift = _counter_drift_pages()
    deadline = time.monotonic() + STATE_LIMIT_S
    while not _writes_dirty_pages_in_one_try(directory, drift):
        if time.monotonic() > deadline:
            pytest.fail(
                "the flusher wrote our dirty pages back before every look (dirty data over the threshold)"
            )


def test_own_process_readers_agree_with_psutil():
    me = psutil.Process()
    first = read_process_status(os.getpid())
    rss = me.memory_info().rss
    second = read_process_status(os.getpid())
    assert _bracketed(rss, first.vm_rss_bytes, second.vm_rss_bytes)
    assert first.vm_rss_bytes == first.rss_anon_bytes + first.rss_file_bytes + first.rss_shmem_bytes

    faults = read_process_faults(os.getpid())
    cpu = me.cpu_times()
    assert cpu.user >= faults.user_s and cpu.user - faults.user_s < 1.0
    assert faults.comm == me.name()[:15]


def _sleeping_child() -> subprocess.Popen:
    """A child that has done all its reading (loading, imports) and sleeps: its I/O counters hold still."""
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; print('asleep', flush=True); time.sleep(30)"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout.readline().strip() == "asleep"
    return child


def test_root_reads_a_sleeping_childs_io_exactly_as_psutil_does():
    child = _sleeping_child()
    try:
        before = psutil.Process(child.pid).io_counters()
        ours = read_process_io(child.pid)
        theirs = psutil.Process(child.pid).io_counters()
    finally:
        child.kill()
        child.wait()
    assert ours.unavailable == {}
    assert (ours.rchar_bytes, ours.wchar_bytes, ours.read_syscalls, ours.write_syscalls) == (
        theirs.read_chars,
        theirs.write_chars,
        theirs.read_count,
        theirs.write_count,
    )
    # storage I/O also counts pages read in by faults, which a sleeping process can still take (its
    # interpreter's pages reclaimed and read again): between psutil's readings on either side of ours
    assert before.read_bytes <= ours.read_bytes <= theirs.read_bytes
    assert before.write_bytes <= ours.write_bytes <= theirs.write_bytes


AS_NOBODY = ("setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups")
NOBODY_READER = r"""
import json, sys
from probes.procfs import read_process_faults, read_process_io
pid = int(sys.argv[1])
io, faults = read_process_io(pid), read_process_faults(pid)
print(json.dumps({"io": vars(io), "minor_faults": faults.minor_faults}))
"""


@pytest.mark.requires_root
def test_a_reader_without_access_reports_io_unavailable_and_goes_on():
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")
    child = _sleeping_child()  # root's process: its /proc/PID/io is closed to nobody
    try:
        run = subprocess.run(
            [*AS_NOBODY, sys.executable, "-c", NOBODY_READER, str(child.pid)],
            capture_output=True,
            text=True,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            timeout=30,
        )
    finally:
        child.kill()
        child.wait()
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    io = report["io"]
    fields = ("rchar_bytes", "wchar_bytes", "read_syscalls", "write_syscalls", "read_bytes", "write_bytes")
    assert all(io[name] is None for name in (*fields, "cancelled_write_bytes"))
    assert set(io["unavailable"].values()) == {
        f"permission denied: /proc/{child.pid}/io is readable by the owner or root (with ptrace access to it)"
    }
    assert isinstance(report["minor_faults"], int)  # /proc/PID/stat stays world-readable


def test_a_process_that_exited_is_gone():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    for reader in (read_process_faults, read_process_io, read_process_status):
        with pytest.raises(ProcessGone):
            reader(child.pid)


def test_a_running_process_hidden_by_hidepid_is_denied_not_gone(monkeypatch: pytest.MonkeyPatch):
    # hidepid=invisible removes other users' /proc/PID directories; the kernel's pid table still has them.
    beyond_pid_max = 1 << 23  # no /proc directory can exist for it
    monkeypatch.setattr(procfs, "_pid_is_running", lambda pid: True)
    with pytest.raises(AccessDenied, match="hidepid"):
        read_process_faults(beyond_pid_max)


def test_vmstat_counters_are_read_or_unavailable_with_the_reason(tmp_path: Path):
    names = ("nr_dirtied", "nr_written", "nr_no_such_counter")
    found, unavailable = read_vmstat_counters(names, THIS_MACHINE)
    assert found == {"nr_dirtied": 417196, "nr_written": 167822}
    assert unavailable == {"nr_no_such_counter": f"{THIS_MACHINE / 'vmstat'}: no nr_no_such_counter line"}
    found, unavailable = read_vmstat_counters(names, tmp_path)  # no vmstat at all
    assert found == {} and set(unavailable) == set(names) and "not present" in unavailable["nr_dirtied"]
