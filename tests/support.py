"""Capability gates shared by the tests: skip where a capability is missing, fail under CI=true.

CI runs as root on a machine set up by scripts/bootstrap, so a skip there would hide a broken setup.
A plain module (not conftest) so that test modules in any directory can import it.
"""

from __future__ import annotations

import contextlib
import functools
import json
import mmap
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from probes.capabilities import gather_facts
from probes.privileges import can_trace

IN_CI = os.environ.get("CI") == "true"


def skip_or_fail(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"CI=true, so this must run, but: {reason}", pytrace=False)
    pytest.skip(reason)


@functools.cache
def bpf_gap() -> str | None:
    """Why BPF programs cannot be loaded here, or None if they can (cheap facts only: no test load)."""
    facts = gather_facts(quick=True)
    if not can_trace(facts.capabilities, facts.euid):
        return "needs root or CAP_BPF+CAP_PERFMON"
    if facts.bcc_version is None:
        return f"needs bcc ({facts.bcc_error}); run scripts/bootstrap"
    if facts.headers_build is None:
        return "needs kernel headers at /lib/modules/$(uname -r)/build; run scripts/bootstrap"
    if facts.tracefs is None:
        return "needs tracefs mounted at /sys/kernel/tracing"
    return None


# --- which BPF programs a process holds ---------------------------------------------------------------------
# Other sessions (another test run, a tool the user runs) load programs with the same mqi_* names, so "nothing
# of ours is left loaded" is checked by id: the programs a process held, gone once it has ended.


def loaded_programs() -> dict[int, str]:
    """Every BPF program loaded on the machine: id -> name (`bpftool -j prog list`)."""
    listing = subprocess.run(["bpftool", "-j", "prog", "list"], capture_output=True, text=True, check=True)
    return {program["id"]: program.get("name", "") for program in json.loads(listing.stdout)}


def programs_held_by(pid: int) -> set[int]:
    """Ids of the BPF programs process `pid` holds a descriptor of (prog_id in /proc/PID/fdinfo)."""
    held = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            if os.readlink(fd) == "anon_inode:bpf-prog":
                info = Path(f"/proc/{pid}/fdinfo/{fd.name}").read_text()
                (line,) = (line for line in info.splitlines() if line.startswith("prog_id:"))
                held.add(int(line.split()[1]))
    return held


@dataclass
class FollowedTrace:
    """A `mqinspect trace PROBE --pid PID --follow --interval 0.2 --format jsonl` session, once its first
    interval has ended (the probe is attached): its first line, and the BPF programs it held then, by name."""

    process: subprocess.Popen
    first: dict
    held: dict[int, str]

    def stop(self) -> tuple[list[dict], str]:
        """SIGTERM, as a user's kill: every JSONL line (the first included) and what it said on stderr."""
        self.process.send_signal(signal.SIGTERM)
        rest, errors = self.process.communicate(timeout=30)
        return [self.first, *map(json.loads, rest.splitlines())], errors

    def programs_gone(self) -> bool:
        """The session held programs of its own (named with the loader's prefix), and none is loaded now;
        others may run sessions at the same time, so only its own are looked for."""
        from probes.ebpf.loader import FUNCTION_PREFIX

        named = bool(self.held) and all(name.startswith(FUNCTION_PREFIX) for name in self.held.values())
        return named and self.held.keys().isdisjoint(loaded_programs())


def trace_following(probe: str, pid: int) -> FollowedTrace:
    """Start `mqinspect trace PROBE` on `pid` with --follow (SIGTERM, not the pid's exit, ends it)."""
    arguments = ["--pid", str(pid), "--follow", "--interval", "0.2", "--format", "jsonl"]
    process = subprocess.Popen(
        [sys.executable, "-m", "mqinspect", "trace", probe, *arguments],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    first = json.loads(process.stdout.readline())
    held = programs_held_by(process.pid)
    return FollowedTrace(
        process, first, {number: name for number, name in loaded_programs().items() if number in held}
    )


def programs_held_by_anyone() -> set[int]:
    """Ids of the BPF programs some live process holds: a loaded program that none holds was left behind
    (pinned, or attached by a link that outlived its owner)."""
    held = set()
    for process in Path("/proc").iterdir():
        if process.name.isdigit():
            with contextlib.suppress(OSError):
                held |= programs_held_by(int(process.name))
    return held


def programs_once_attached(pid: int, timeout_s: float = 60.0) -> set[int]:
    """The programs `pid` holds once it has loaded some (polls: compiling takes seconds)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if held := programs_held_by(pid):
                return held
        time.sleep(0.05)
    raise AssertionError(f"pid {pid} loaded no BPF program within {timeout_s:.0f} s")


# --- running as an unprivileged user ------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[1]
AS_NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--inh-caps=-all"]
_CLI_REPORTING_BCC = (
    "import sys; from mqinspect.cli.app import app; "
    "status = app(sys.argv[1:], standalone_mode=False); "
    "print('bcc imported' if 'bcc' in sys.modules else 'bcc not imported', file=sys.stderr); "
    "sys.exit(status)"
)


def mqinspect_as_nobody(*arguments: str, capabilities: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """`mqinspect ARGUMENTS` as user nobody without capabilities, or with just `capabilities` ("bpf",
    "perfmon": a user granted them, not root); stderr ends with whether bcc was imported (so a test can tell
    that nothing was compiled or loaded)."""
    granted = "".join(f",+{name}" for name in capabilities)
    prefix = [*AS_NOBODY[:-1], f"--inh-caps=-all{granted}", f"--ambient-caps=-all{granted}"]
    return subprocess.run(
        [*(prefix if capabilities else AS_NOBODY), sys.executable, "-c", _CLI_REPORTING_BCC, *arguments],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )


def run_mqinspect(*args: object, columns: int = 120) -> Any:
    """`mqinspect ARGS` in this process (typer's CliRunner), stderr apart, without colour, `columns` wide."""
    from typer.testing import CliRunner

    from mqinspect.cli.app import app

    env = {"COLUMNS": str(columns), "NO_COLOR": "1"}
    return CliRunner().invoke(app, [str(arg) for arg in args], env=env)


def one_error_line(result: Any) -> str:
    """The one line a user error prints: "mqinspect: error: ..." on stderr, no traceback, no internal error,
    nothing on stdout."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mqinspect: error: "), result.stderr
    assert "internal error" not in lines[0]
    assert result.stdout == ""
    return lines[0]


def fadvise_out(path: Path) -> None:
    """Write the file back and drop its pages from the page cache (all of them, unless another process maps
    or locks some)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


# --- ground truth from the standard tools -------------------------------------------------------------------


def fincore_pages(path: Path) -> int:
    """Resident pages by util-linux fincore, checking its byte and page columns against each other."""
    out = subprocess.run(
        ["fincore", "--bytes", "--noheadings", "--raw", "--output", "RES,PAGES,SIZE", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    resident_bytes, pages, size_bytes = (int(word) for word in out.split())
    assert resident_bytes == pages * os.sysconf("SC_PAGE_SIZE") and size_bytes == path.stat().st_size
    return pages


def strace_summary(text: str) -> dict[str, tuple[int, int]]:
    """{syscall: (calls, errors)} from `strace -c` output, by strace's names."""
    counts = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 5 and fields[0][0].isdigit() and fields[-1] != "total":
            errors = int(fields[4]) if len(fields) == 6 else 0
            counts[fields[-1]] = (int(fields[3]), errors)
    return counts


@contextlib.contextmanager
def strace_counts(pid: int, output: Path) -> Iterator[dict[str, tuple[int, int]]]:
    """`strace -c -f -p PID` from when it has attached until the process exits: {syscall: (calls, errors)}
    by strace's names, filled in after the block."""
    strace = subprocess.Popen(
        ["strace", "-c", "-f", "-p", str(pid), "-o", str(output)], stderr=subprocess.PIPE, text=True
    )
    counts: dict[str, tuple[int, int]] = {}
    try:
        assert "attached" in strace.stderr.readline()
        yield counts
    finally:
        strace.wait(timeout=60)  # it ends when the traced process does
    counts.update(strace_summary(output.read_text()))


def strace_calls(text: str) -> dict[str, int]:
    """{syscall: calls} from `strace -c` output (calls is the fourth column, errors or not)."""
    return {name: calls for name, (calls, _errors) in strace_summary(text).items()}


# --- a process holding a store, as a broker does ------------------------------------------------------------

_STORE_HOLDER = """
import mmap, sys
from store import _libc
from store.checkpoint import acquire_store_lock
root, pages, *segments = sys.argv[1:]
lock = acquire_store_lock(root) if root != "-" else None
mappings = []
for path in segments:
    with open(path, "r+b") as file:
        mapping = mmap.mmap(file.fileno(), 0)
    _libc.lock_mapping(mapping, 0, int(pages) * mmap.PAGESIZE)
    mappings.append(mapping)
print("ready", flush=True)
sys.stdin.read()
"""


@contextlib.contextmanager
def store_holder(root: Path | None, segments: list[Path], locked_pages: int):
    """A process of this user (root, in the tests that run others as nobody) that maps `segments` and mlocks
    the first `locked_pages` pages of each, and holds the store's lock as a broker does (unless `root` is
    None), until the block ends. Yields its Popen."""
    with ready_child(_STORE_HOLDER, root or "-", locked_pages, *segments) as holder:
        yield holder


@contextlib.contextmanager
def ready_child(code: str, *args: object, stop_timeout_s: float = 10) -> Iterator[subprocess.Popen]:
    """`python -c CODE ARGS` from the repository, once it has printed "ready"; at the end of the block its
    stdin is closed (the children end when it is) and it is waited for."""
    child = subprocess.Popen(
        [sys.executable, "-c", code, *map(str, args)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert child.stdout.readline().strip() == "ready"
        yield child
    finally:
        with contextlib.suppress(BrokenPipeError):
            child.stdin.close()
        child.wait(timeout=stop_timeout_s)


@contextlib.contextmanager
def store_nobody_can_read(segment_size: str = "256k", messages: int = 3000):
    """A small store (several CommitLog segments) in a directory every user may enter and read, as a broker's
    store usually is: pytest's tmp_path is private to root. Yields the store root."""
    from typer.testing import CliRunner

    from mqinspect.cli.app import app

    directory = Path(tempfile.mkdtemp(prefix="mqinspect-store-", dir="/tmp"))
    try:
        root = directory / "store"
        runner = CliRunner()
        for args in (
            ["init", root, "--segment-size", segment_size, "--cq-entries", "1000", "--index-slots", "64"],
            ["produce", root, "-t", "T", "-n", str(messages), "--size", "200", "--batch", "50"],
        ):
            done = runner.invoke(app, ["store", *map(str, args)])
            assert done.exit_code == 0, done.stderr
        for path in (directory, *directory.rglob("*")):
            path.chmod(0o755 if path.is_dir() else 0o644)
        yield root
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def expire_all_but_the_last_segment(store) -> int:
    """Retention as an old store meets it: every CommitLog segment but the one written last is made 100 h
    old (past the default fileReservedTime of 72 h) and one manual clean deletes them, whatever the consumer
    groups have still to read. The disk reads as nearly empty, so age is the only reason. Returns the
    CommitLog's new minimum offset."""
    store.flush()  # no dirty page left whose writeback would bump an mtime set here
    segments = [mapped_file.path for mapped_file in store.commit_log.mapped_file_queue.mapped_files]
    assert len(segments) >= 2, "the store needs a segment to delete besides the last"
    long_ago = time.time() - 100 * 3600
    for path in segments[:-1]:
        os.utime(path, (long_ago, long_ago))
    store.clean_service.disk_usage = lambda _path: 0.10
    store.clean()
    assert store.commit_log.min_offset == int(segments[-1].name)
    return store.commit_log.min_offset


def wait_for(condition, what: str, timeout_s: float = 10.0, poll_s: float = 0.1):
    """The first truthy value of `condition()`, polled every `poll_s` until `timeout_s`; AssertionError naming
    `what` when it never comes (a test waits for the state it needs, never for a fixed time)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"gave up after {timeout_s} s waiting for {what}")


def read_pages(path: Path, first: int, count: int) -> None:
    """Bring exactly these pages into the page cache: pread with readahead off."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        for page in range(first, first + count):
            os.pread(fd, 1, page * mmap.PAGESIZE)
    finally:
        os.close(fd)
