"""benchmarks/inspect_scale.py at the suite's size: it builds its store, runs every inspection command through
the CLI, and prints its table and targets. No timing is checked here (the benchmark is the place for that)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

INSPECT_SCALE = Path(__file__).resolve().parents[2] / "benchmarks" / "inspect_scale.py"


def test_the_quick_run_times_every_command_and_prints_the_targets(tmp_path: Path):
    store = tmp_path / "store"
    done = subprocess.run(
        [sys.executable, str(INSPECT_SCALE), "--gib", "0.005", "--quick", "--no-cold", "--store", str(store)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert (store / "inspect_scale.json").is_file()
    for row in ("store stat", "store segments", "store cq", "store query --key", "store query --offset",
                "store recover --dry-run", "top --once --no-ebpf", "cache -r", "store verify",
                "store dump first record", "pread 1 MiB blocks", "zlib.crc32", "fincore"):  # fmt: skip
        assert f"  {row}" in out, row
    targets = out[out.index("== targets") :]
    assert "store verify >= 25% of the read+CRC floor" in targets
    assert targets.count("PASS") + targets.count("MISS") + targets.count("n/a") >= 10
