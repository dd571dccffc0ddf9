"""benchmarks/inspect_scale.py at the suite's size: it builds its store, runs every inspection command through
the CLI, and prints its table and targets. No timing is checked here (the benchmark is the place for that)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

INSPECT_SCALE = Path(__file__).resolve().parents[2] / "benchmarks" / "inspect_scale.py"


def quick_run(store: Path, *options: str) -> str:
    """The benchmark's output on a 5 MiB store of its own, at the suite's counts."""
    done = subprocess.run(
        [sys.executable, str(INSPECT_SCALE), "--gib", "0.005", "--quick", *options, "--store", str(store)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_quick_run_times_every_command_and_prints_the_targets(tmp_path: Path):
    store = tmp_path / "store"
    out = quick_run(store, "--no-cold")
    assert (store / "inspect_scale.json").is_file()
    for row in ("store stat", "store segments", "store cq", "store query --key", "store query --offset",
                "store recover --dry-run", "top --once --no-ebpf", "cache -r", "store verify",
                "store dump first record", "pread 1 MiB blocks", "zlib.crc32", "fincore"):  # fmt: skip
        assert f"  {row}" in out, row
    targets = out[out.index("== targets") :]
    assert "store verify >= 25% of the read+CRC floor" in targets
    assert targets.count("PASS") + targets.count("MISS") + targets.count("n/a") >= 10


def test_only_verify_times_verify_beside_the_floor_and_the_minimal_walk(tmp_path: Path):
    """--only-verify runs store verify alone (the loop of whoever works on it) and says what bounds it: the
    least a Python walk does per record (unpack + crc32), timed in the same run, in CPU seconds."""
    out = quick_run(tmp_path / "store", "--only-verify")
    assert "  minimal walk " in out and "s CPU" in out
    assert "  store verify " in out
    assert "  store stat" not in out and "store dump" not in out and "== cold" not in out
    [verdict] = [line for line in out.splitlines() if "store verify >= 25% of the read+CRC floor" in line]
    assert "s CPU against" in verdict
    assert verdict.strip().startswith("PASS") or "bounded by Python per record" in verdict


def test_only_dump_times_the_dump_forms_in_cpu_time_beside_their_bound(tmp_path: Path):
    """--only-dump runs the dump rows alone (the loop of whoever works on the dump) and judges their rates in
    CPU time beyond start-up, the wall-time rate beside it; a jsonl MISS says what decoding alone takes."""
    out = quick_run(tmp_path / "store", "--only-dump")
    assert "  store dump --format jsonl --count 2,000" in out and "  store dump --format table" in out
    assert "  store verify" not in out and "  store stat" not in out and "== cold" not in out
    [jsonl] = [line for line in out.splitlines() if "store dump jsonl >= 200,000 records/s" in line]
    assert "CPU time; wall " in jsonl
    assert jsonl.strip().startswith("PASS") or "bound: decoding alone" in jsonl
    assert "store dump table >= 50,000 records/s" in out and "store verify >=" not in out
