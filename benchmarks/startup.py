"""Start-up time of the `mqinspect` command, end to end, beside `python -c pass` and `fincore`.

Times, as a user runs them (the console script next to this interpreter, output to /dev/null):

    python -c pass                          the interpreter alone (with this venv's site, as mqinspect has)
    fincore FILE...                         util-linux, the tool `mqinspect cache` is held against
    mqinspect --version
    mqinspect cache FILE...
    mqinspect store stat DIR                a small store (two 1 MiB CommitLog segments) the script makes
    mqinspect top DIR --once --no-ebpf      includes its one sampling interval (1 s by default)

FILE is four 1 GiB sparse files in a temporary directory (the issue's measurement), with 64 MiB of the
first written so that some pages are cached; `--files` times existing files instead. The commands run round
robin, after one untimed round that warms the page cache and the bytecode, so that a busy moment of the
machine does not land on one command alone. Each row gives the median wall time and the median CPU time
(user + system, from wait4) of its runs: the CPU time hardly moves with other load on the machine, the wall
time does.

The commands run from cached bytecode, as an installed tool does: PYTHONDONTWRITEBYTECODE (set in some
environments, and then every import compiles its module afresh) is dropped from their environment, and the
bytecode the warm-up round writes goes to a temporary PYTHONPYCACHEPREFIX, not into the source tree.

Targets (issue 14): `--version` and `cache FILE` within 150 ms and within 3x `fincore FILE`, end to end;
`store stat` within 250 ms on a small store.

    .venv/bin/python benchmarks/startup.py [--runs 11] [--files FILE ...] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

GIB = 1 << 30
MIB = 1 << 20
FILE_COUNT = 4
WRITTEN_BYTES = 64 * MIB
VERSION_TARGET_S = 0.150
CACHE_TARGET_S = 0.150
STORE_STAT_TARGET_S = 0.250
FINCORE_RATIO_TARGET = 3.0


@dataclass(frozen=True)
class Timed:
    """One command's runs: wall and CPU seconds per run."""

    label: str
    command: tuple[str, ...]
    wall_s: tuple[float, ...]
    cpu_s: tuple[float, ...]

    @property
    def median_wall_s(self) -> float:
        return statistics.median(self.wall_s)

    @property
    def median_cpu_s(self) -> float:
        return statistics.median(self.cpu_s)


def mqinspect_command() -> str:
    """The console script installed beside this interpreter: what `make bootstrap` gives a user."""
    script = Path(sys.executable).with_name("mqinspect")
    if not script.exists():
        sys.exit(f"startup: {script} not found: run `make bootstrap` first")
    return str(script)


def build_files(directory: Path) -> list[Path]:
    """Four sparse 1 GiB files; the first has its first 64 MiB written, so some pages are cached."""
    files = []
    block = os.urandom(MIB)
    for index in range(FILE_COUNT):
        path = directory / f"{index * GIB:020d}"
        with open(path, "wb") as handle:
            handle.truncate(GIB)
            if index == 0:
                for _ in range(WRITTEN_BYTES // MIB):
                    handle.write(block)
        files.append(path)
    return files


def build_store(mqinspect: str, root: Path, environment: dict[str, str]) -> Path:
    """A small store: 1 MiB CommitLog segments, 2,000 messages of 1 KiB (two segments)."""
    store = root / "store"
    sizes = ["--segment-size", "1m", "--cq-entries", "1000", "--index-slots", "1000"]
    run_checked([mqinspect, "store", "init", str(store), *sizes], environment)
    produce = [mqinspect, "store", "produce", str(store), "-t", "bench", "-n", "2000", "--keys", "k{n}"]
    run_checked(produce, environment)
    return store


def run_checked(command: Sequence[str], environment: dict[str, str]) -> None:
    done = subprocess.run(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=environment
    )
    if done.returncode != 0:
        sys.exit(f"startup: {' '.join(command)} failed ({done.returncode}): {done.stderr.strip()}")


def commands_environment(bytecode_dir: Path) -> dict[str, str]:
    """This environment, with bytecode written (to `bytecode_dir`) and read back as an installed tool's is."""
    environment = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}
    environment["PYTHONPYCACHEPREFIX"] = str(bytecode_dir)
    return environment


def run_once(command: Sequence[str], environment: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the child) of one run; exits when the command fails."""
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=environment)
    _pid, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    error = child.stderr.read().decode(errors="replace") if child.stderr else ""
    if child.stderr:
        child.stderr.close()
    if child.returncode != 0:
        sys.exit(f"startup: {' '.join(command)} failed ({child.returncode}): {error.strip()}")
    return wall, usage.ru_utime + usage.ru_stime


def time_round_robin(
    commands: dict[str, tuple[str, ...]], runs: int, environment: dict[str, str]
) -> list[Timed]:
    for command in commands.values():  # warm-up round: page cache, bytecode, the store's pages
        run_once(command, environment)
    samples: dict[str, list[tuple[float, float]]] = {label: [] for label in commands}
    for _ in range(runs):
        for label, command in commands.items():
            samples[label].append(run_once(command, environment))
    return [
        Timed(label, command, tuple(w for w, _ in samples[label]), tuple(c for _, c in samples[label]))
        for label, command in commands.items()
    ]


def verdicts(by_label: dict[str, Timed]) -> list[tuple[str, str, bool]]:
    """(target, measured, met) for each of the issue's targets."""
    fincore = by_label["fincore FILE"].median_wall_s
    rows = []
    for label, limit in (("mqinspect --version", VERSION_TARGET_S), ("mqinspect cache FILE", CACHE_TARGET_S)):
        wall = by_label[label].median_wall_s
        rows.append((f"{label} <= {limit * 1000:.0f} ms", f"{wall * 1000:.0f} ms", wall <= limit))
        ratio = wall / fincore
        rows.append(
            (f"{label} <= {FINCORE_RATIO_TARGET:g}x fincore", f"{ratio:.1f}x", ratio <= FINCORE_RATIO_TARGET)
        )
    wall = by_label["mqinspect store stat DIR"].median_wall_s
    rows.append(
        (
            f"mqinspect store stat DIR <= {STORE_STAT_TARGET_S * 1000:.0f} ms",
            f"{wall * 1000:.0f} ms",
            wall <= STORE_STAT_TARGET_S,
        )
    )
    return rows


def print_report(timed: list[Timed], runs: int, files: list[Path], load: tuple[float, float]) -> bool:
    cpus = os.cpu_count()
    print(f"start-up, median of {runs} runs each (round robin); {len(files)} files for FILE; {cpus} CPUs")
    print(f"load average (1 min) before / after: {load[0]:.2f} / {load[1]:.2f}")
    print()
    width = max(len(row.label) for row in timed)
    print(f"{'command':<{width}}  {'wall ms':>8}  {'cpu ms':>7}  {'min..max wall ms':>17}")
    for row in timed:
        spread = f"{min(row.wall_s) * 1000:.0f}..{max(row.wall_s) * 1000:.0f}"
        print(
            f"{row.label:<{width}}  {row.median_wall_s * 1000:>8.1f}  {row.median_cpu_s * 1000:>7.1f}  "
            f"{spread:>17}"
        )
    print()
    results = verdicts({row.label: row for row in timed})
    width = max(len(target) for target, _, _ in results)
    for target, measured, met in results:
        print(f"{'PASS' if met else 'MISS'}  {target:<{width}}  {measured}")
    return all(met for _, _, met in results)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=11, help="timed runs per command (default 11)")
    parser.add_argument("--files", nargs="+", type=Path, help="existing files for FILE (default: 4 x 1 GiB)")
    parser.add_argument("--dir", type=Path, default=None, help="where the temporary files and store go")
    options = parser.parse_args(argv)
    fincore = shutil.which("fincore")
    if fincore is None:
        sys.exit("startup: fincore not found (util-linux): run `make bootstrap`")
    mqinspect = mqinspect_command()
    work = Path(tempfile.mkdtemp(prefix="mqinspect-startup-", dir=options.dir))
    environment = commands_environment(work / "bytecode")
    try:
        files = options.files or build_files(work)
        store = build_store(mqinspect, work, environment)
        names = tuple(map(str, files))
        commands = {
            "python -c pass": (sys.executable, "-c", "pass"),
            "fincore FILE": (fincore, *names),
            "mqinspect --version": (mqinspect, "--version"),
            "mqinspect cache FILE": (mqinspect, "cache", *names),
            "mqinspect store stat DIR": (mqinspect, "store", "stat", str(store)),
            "mqinspect top DIR --once --no-ebpf": (mqinspect, "top", str(store), "--once", "--no-ebpf"),
        }
        load_before = os.getloadavg()[0]
        timed = time_round_robin(commands, options.runs, environment)
        met = print_report(timed, options.runs, files, (load_before, os.getloadavg()[0]))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
