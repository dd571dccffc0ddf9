"""`mqinspect lab warmup`. Without root: the arithmetic (percentiles, histograms, spreads, verdicts), mode
parsing, the tmpfs refusal and the table drawn from a report whose eBPF figures are missing. As root: the
append pass after RocketMQ's and MADV_POPULATE_WRITE's warm-up faults on at most 1 % of pages; with BPF
and perf: the worker's fault counts and the probe's against `perf stat` gated to the same phase of the
same run."""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from rich.console import Console
from support import skip_or_fail
from typer.testing import CliRunner

from mqinspect.cli.app import app
from mqinspect.errors import BadInput
from mqinspect.labs import warmup_worker
from mqinspect.labs.stats import spread
from mqinspect.labs.warmup import (
    MODELS,
    SCHEMA,
    FaultTracer,
    LabSettings,
    ModeRun,
    PhaseFaults,
    WarmupLabMode,
    WarmupReport,
    check_directory,
    filesystem_magic,
    parse_modes,
    run_mode,
    summarize_mode,
)
from mqinspect.labs.warmup_stats import (
    Expectation,
    Observed,
    findings,
    latency_histogram,
    merge_histograms,
    percentile,
    sparkline,
    summarize_latencies,
    used_bins,
    verdict,
)
from mqinspect.render.lab_warmup import warmup_view

PAGE = os.sysconf("SC_PAGESIZE")
SMALL = 32 << 20  # 8192 pages: each worker runs in well under a second
TMPFS_MAGIC = 0x01021994


# --- arithmetic ---------------------------------------------------------------------------------------------


def test_percentiles_are_nearest_rank_and_always_a_measured_value():
    values = list(range(1, 101))
    assert percentile(values, 0.50) == 50
    assert percentile(values, 0.99) == 99
    assert percentile(values, 1.0) == 100
    assert percentile([7], 0.99) == 7
    assert percentile([10, 20, 30, 40], 0.5) == 20
    with pytest.raises(ValueError):
        percentile([], 0.5)


def test_latency_summary_and_power_of_two_histogram():
    latencies = [300, 600, 600, 1500, 40_000, 20_000_000]
    summary = summarize_latencies(latencies)
    assert (summary.appends, summary.p50_ns, summary.p99_ns, summary.max_ns) == (
        6,
        600,
        20_000_000,
        20_000_000,
    )
    bins = {(b.lower_ns, b.upper_ns): b.count for b in summary.histogram if b.count}
    assert bins == {(0, 512): 1, (512, 1024): 2, (1024, 2048): 1, (32768, 65536): 1, (1 << 24, None): 1}
    assert sum(b.count for b in summary.histogram) == len(latencies)
    merged = merge_histograms([summary.histogram, latency_histogram([600])])
    assert {(b.lower_ns, b.count) for b in merged if b.count} >= {(512, 3)}


def test_sparklines_share_one_scale_across_modes():
    fast = latency_histogram([600] * 100)
    slow = latency_histogram([600] * 10 + [5000] * 100)
    bins = used_bins([fast, slow])
    assert bins is not None
    line_fast, line_slow = sparkline(fast, bins), sparkline(slow, bins)
    assert len(line_fast) == len(line_slow) == bins[1] - bins[0] + 1
    assert line_fast[0] == "█" and line_fast[-1] == " "
    assert line_slow[-1] == "█" and line_slow[0] not in (" ", "█")
    assert sparkline(latency_histogram([])) == ""


def test_spread_keeps_a_measured_median_and_ignores_missing_values():
    result = spread([3, None, 1, 2, 10])
    assert result is not None
    assert (result.median, result.minimum, result.maximum, result.samples) == (2, 1, 10, 4)
    assert spread([4, 6]).median == 4  # the lower middle, not an average nobody measured
    assert spread([None, None]) is None


# --- verdicts -----------------------------------------------------------------------------------------------

PAGES = 8192


def _seen(**figures) -> Observed:
    base = dict(
        pages=PAGES,
        append_faults=0,
        append_major_faults=0,
        append_write_faults=0,
        warmup_dirty_pages=0,
        locked_bytes=0,
        segment_bytes=PAGES * PAGE,
    )
    return Observed(**{**base, **figures})


def test_no_warmup_with_large_folios_disagrees_with_one_fault_per_page():
    expected = MODELS[WarmupLabMode.NONE].expectation
    sentence = verdict(expected, _seen(append_faults=700, append_write_faults=700))
    assert "one per 11.7 pages" in sentence and "large folio" in sentence
    assert findings(expected, _seen(append_faults=PAGES)) == ()


def test_touch_warmup_agrees_and_names_the_double_io():
    expected = MODELS[WarmupLabMode.ROCKETMQ].expectation
    seen = _seen(append_faults=3, warmup_dirty_pages=PAGES, locked_bytes=PAGES * PAGE)
    assert findings(expected, seen) == ()
    sentence = verdict(expected, seen)
    assert sentence.startswith("As the model says") and "#522" in sentence


def test_populating_read_only_is_reported_where_appends_still_fault():
    expected = MODELS[WarmupLabMode.MAP_POPULATE].expectation
    sentence = verdict(expected, _seen(append_faults=2000, append_write_faults=2000))
    assert "still faulted 2,000 times" in sentence and "read-only" in sentence


def test_a_refused_mlock_is_a_finding_with_its_fix():
    expected = MODELS[WarmupLabMode.MLOCK].expectation
    refused = "mlock failed: Cannot allocate memory. RLIMIT_MEMLOCK is 8388608 bytes ... raise it (ulimit -l)"
    found = findings(expected, _seen(locked_bytes=0, problems=(refused,)))
    assert found == (f"the segment is not locked: {refused}",)
    assert findings(Expectation(False, False, True), _seen(locked_bytes=None)) == ()  # unmeasured: no claim


# --- inputs ---------------------------------------------------------------------------------------------


def test_modes_parse_in_order_and_unknown_ones_are_bad_input():
    assert parse_modes("rocketmq, none,map-populate") == (
        WarmupLabMode.ROCKETMQ,
        WarmupLabMode.NONE,
        WarmupLabMode.MAP_POPULATE,
    )
    with pytest.raises(BadInput, match="touchy"):
        parse_modes("none,touchy")


def test_the_worker_knows_every_mode_of_the_lab():
    assert set(warmup_worker.MODES) == {mode.value for mode in WarmupLabMode}


def _tmpfs_directory() -> Path:
    shm = Path("/dev/shm")
    if not shm.is_dir() or filesystem_magic(shm) != TMPFS_MAGIC:
        pytest.skip("no tmpfs at /dev/shm")
    return shm


def test_tmpfs_is_refused_with_the_reason():
    with pytest.raises(BadInput, match=r"tmpfs.*shmem faults"):
        check_directory(_tmpfs_directory(), SMALL)


def test_cli_refuses_tmpfs_and_unknown_modes_with_exit_status_2():
    runner = CliRunner()
    result = runner.invoke(app, ["lab", "warmup", "--dir", str(_tmpfs_directory())])
    assert result.exit_code == 2, result.output
    assert "tmpfs" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["lab", "warmup", "--modes", "none,bogus"])
    assert result.exit_code == 2 and "bogus" in result.output


# --- drawing a report without eBPF ------------------------------------------------------------------------


def _run_without_ebpf(mode: WarmupLabMode, append_faults: int) -> ModeRun:
    return ModeRun(
        mode=mode,
        repeat=0,
        worker_pid=1234,
        error=None,
        problems=(),
        warmup_s=0.03,
        warmup_faults=PhaseFaults(700, 0, None),
        warmup_dirty_pages=PAGES if mode == WarmupLabMode.ROCKETMQ else 0,
        warmup_cached_pages=PAGES,
        locked_bytes=PAGES * PAGE if mode == WarmupLabMode.ROCKETMQ else 0,
        append_s=0.05,
        append_throughput_bytes_per_s=PAGES * PAGE / 0.05,
        append_faults=PhaseFaults(append_faults, 0, None),
        latency=summarize_latencies([500, 600, 700, 9000]),
        unavailable={"traced": "tracing needs root; fix: run as root"},
    )


def test_the_table_says_unavailable_for_ebpf_figures_and_shows_the_kernels_counts():
    settings = LabSettings(segment_bytes=PAGES * PAGE, repeat=1)
    modes = (WarmupLabMode.NONE, WarmupLabMode.ROCKETMQ)
    runs = (_run_without_ebpf(WarmupLabMode.NONE, 700), _run_without_ebpf(WarmupLabMode.ROCKETMQ, 2))
    summaries = tuple(summarize_mode(mode, [r for r in runs if r.mode == mode], settings) for mode in modes)
    assert summaries[0].append_exception_faults is None and summaries[0].append_faults_source == "getrusage"
    report = WarmupReport(
        SCHEMA, settings.segment_bytes, PAGES, 4096, PAGES, 1, "/x", "ext4", "6.18", "getrusage",
        "tracing needs root; fix: run as root", 1.0, summaries, runs,
    )  # fmt: skip
    console = Console(width=240, record=True, color_system=None)
    console.print(warmup_view(report))
    text = console.export_text()
    assert "eBPF columns unavailable: tracing needs root; fix: run as root" in text
    assert "unavailable" in text.split("Append pass")[1]
    assert "700" in text and "one per 11.7 pages" in text


def test_a_failing_worker_fails_its_mode_not_the_lab(tmp_path: Path):
    failing = 'import json; print(json.dumps({"event": "error", "error": "no space left"}))'
    settings = _settings(tmp_path)
    tracer = FaultTracer(enabled=False)
    run = run_mode(
        WarmupLabMode.NONE,
        settings,
        tmp_path,
        tracer,
        wrap_command=lambda _argv: [sys.executable, "-c", failing],
    )
    assert run.error == "no space left" and run.latency is None and run.append_faults is None
    summary = summarize_mode(WarmupLabMode.NONE, [run], settings)
    assert (summary.runs, summary.failed_runs, summary.warmup_s) == (0, 1, None)
    assert summary.verdict == "Every run failed: no space left"
    silent = run_mode(WarmupLabMode.NONE, settings, tmp_path, tracer, wrap_command=lambda _argv: ["true"])
    assert silent.error is not None and "ended before 'ready'" in silent.error


# --- as root: real workers ----------------------------------------------------------------------------------


def _settings(tmp_path: Path) -> LabSettings:
    return LabSettings(segment_bytes=SMALL, repeat=1, directory=tmp_path)


@pytest.mark.requires_root
@pytest.mark.parametrize("mode", [WarmupLabMode.ROCKETMQ, WarmupLabMode.POPULATE_WRITE])
def test_after_warmup_the_append_pass_faults_on_at_most_1_percent_of_pages(tmp_path: Path, mode):
    run = run_mode(mode, _settings(tmp_path), tmp_path, FaultTracer(enabled=False))
    assert run.error is None, run.error
    pages = SMALL // PAGE
    faults = run.append_faults.proc_minor_faults + run.append_faults.proc_major_faults
    print(f"{mode}: append faults {faults} for {pages} pages; dirtied {run.warmup_dirty_pages}")
    assert faults <= 0.01 * pages
    assert run.warmup_dirty_pages >= 0.99 * pages  # the zeros write-back will write (RocketMQ #522)
    if mode == WarmupLabMode.ROCKETMQ:
        assert run.locked_bytes >= SMALL  # VmLck: warm() mlocked the segment
    else:
        assert run.locked_bytes == 0  # MADV_POPULATE_WRITE alone locks nothing
    assert not list(tmp_path.iterdir())  # the worker deleted its segment


def _perf_wrapper(tmp_path: Path, phase: str) -> tuple[Callable[[list[str]], list[str]], list[str], Path]:
    """perf stat around the worker, its counters enabled by the worker for `phase` only."""
    if shutil.which("perf") is None:
        skip_or_fail("perf is not installed (Debian: linux-perf)")
    control, acknowledge, output = tmp_path / "perf-ctl", tmp_path / "perf-ack", tmp_path / "perf.out"
    os.mkfifo(control)
    os.mkfifo(acknowledge)
    events = "page-faults,minor-faults,major-faults"
    prefix = ["perf", "stat", "-x,", "-e", events, "-D", "-1", "--control", f"fifo:{control},{acknowledge}"]
    prefix += ["-o", str(output), "--"]
    options = ["--perf-control", f"{control}:{acknowledge}", "--perf-phase", phase]
    return lambda argv: [*prefix, *argv], options, output


def _perf_counts(output: Path) -> dict[str, int]:
    counts = {}
    for line in output.read_text().splitlines():
        fields = line.split(",")
        if len(fields) > 2 and fields[2] in ("page-faults", "minor-faults", "major-faults"):
            counts[fields[2]] = int(fields[0])
    return counts


def _within(measured: int, reference: int, fraction: float = 0.02) -> bool:
    return abs(measured - reference) <= max(2, fraction * reference)


def _measured_under_perf(tmp_path: Path, mode: WarmupLabMode, phase: str) -> tuple[ModeRun, dict[str, int]]:
    segments = tmp_path / "segments"
    segments.mkdir()
    wrap, options, output = _perf_wrapper(tmp_path, phase)
    tracer = FaultTracer()
    try:
        run = run_mode(mode, _settings(segments), segments, tracer, wrap_command=wrap, worker_options=options)
    finally:
        tracer.close()
    if tracer.unavailable:
        skip_or_fail(f"the faults probe did not load: {tracer.unavailable}")
    assert run.error is None, run.error
    return run, _perf_counts(output)


@pytest.mark.requires_bpf
def test_without_warmup_append_faults_agree_with_perf_and_hit_every_page_or_folio(tmp_path: Path):
    run, perf = _measured_under_perf(tmp_path, WarmupLabMode.NONE, "append")
    faults = run.append_faults
    traced = faults.traced
    print(f"perf {perf}; getrusage {faults.proc_minor_faults}/{faults.proc_major_faults}; traced {traced}")
    assert _within(faults.proc_minor_faults, perf["minor-faults"])
    assert _within(faults.proc_major_faults, perf["major-faults"])
    assert _within(traced.segment_faults, perf["page-faults"])  # what perf saw was the segment's writes
    assert traced.segment_write_faults == traced.segment_faults
    pages = SMALL // PAGE
    # One fault per page, or per large folio: never fewer than one per 2 MiB (the largest folio a PMD maps).
    assert pages // 512 <= traced.segment_faults <= pages


@pytest.mark.requires_bpf
def test_touch_warmup_faults_agree_with_perf(tmp_path: Path):
    run, perf = _measured_under_perf(tmp_path, WarmupLabMode.ROCKETMQ, "warmup")
    faults = run.warmup_faults
    print(f"perf {perf}; getrusage {faults.proc_minor_faults}/{faults.proc_major_faults}")
    print(f"traced {faults.traced}")
    assert _within(faults.proc_minor_faults + faults.proc_major_faults, perf["page-faults"])
    assert _within(faults.traced.faults, perf["page-faults"])
    assert _within(faults.traced.segment_faults, perf["page-faults"])


@pytest.mark.requires_bpf
def test_populate_write_faults_are_the_kernels_not_exceptions_perf_sees(tmp_path: Path):
    run, perf = _measured_under_perf(tmp_path, WarmupLabMode.POPULATE_WRITE, "warmup")
    faults = run.warmup_faults
    print(f"perf {perf}; getrusage {faults.proc_minor_faults}/{faults.proc_major_faults}")
    print(f"traced {faults.traced}")
    proc_total = faults.proc_minor_faults + faults.proc_major_faults
    assert _within(faults.traced.faults, perf["page-faults"])  # exceptions: next to none
    assert perf["page-faults"] < 0.01 * proc_total  # getrusage counts the populate faults, perf does not
    assert _within(faults.traced.segment_populate_faults, proc_total)


@pytest.mark.requires_bpf
def test_the_lab_writes_its_json_and_leaves_no_file_behind(tmp_path: Path):
    result = CliRunner().invoke(
        app, ["lab", "warmup", "--segment-size", "16m", "--repeat", "1", "--dir", str(tmp_path), "-f", "json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["schema"] == SCHEMA and report["fault_source"] == "ebpf+getrusage"
    assert [mode["mode"] for mode in report["modes"]] == [mode.value for mode in WarmupLabMode]
    for mode in report["modes"]:
        assert mode["runs"] == 1 and mode["append_p99_ns"]["median"] > 0, mode
    assert not list(tmp_path.iterdir())
