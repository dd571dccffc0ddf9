"""`mqinspect export --ebpf` as an operator runs it: the counters against ground truth (a holder of the store
faulting a known number of its pages, sending known bytes by each path), monotonic across scrapes and a
CommitLog roll, OpenMetrics and promtool, the probes gone after SIGTERM and Ctrl-C, and exit 3 without BPF."""

from __future__ import annotations

import contextlib
import itertools
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from exporter import running_exporter, sample_values, store_being_written
from support import (
    REPO,
    loaded_programs,
    mqinspect_as_nobody,
    programs_held_by,
    programs_held_by_anyone,
    programs_once_attached,
    ready_child,
    run_mqinspect,
    store_nobody_can_read,
    wait_for,
)

from mqinspect.errors import ExitStatus
from probes.ebpf.loader import FUNCTION_PREFIX

OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
COMPILE_DEADLINE_S = 180  # compiling the combined program takes seconds, more on a loaded machine
PAGE = 4096

# A broker's stand-in: it maps a CommitLog segment and, on command, write-faults pages of it (reporting its
# own minor+major fault count over the loop, from getrusage) or sends bytes of it to a loopback socket by one
# path (a thread of its own receives them).
_HOLDER = """
import mmap, os, resource, socket, sys, threading
path = sys.argv[1]
fd = os.open(path, os.O_RDWR)
mapping = mmap.mmap(fd, 0)
listener = socket.create_server(("127.0.0.1", 0))
sender = socket.create_connection(listener.getsockname())
receiver, _ = listener.accept()
def drain():
    while receiver.recv(1 << 20):
        pass
threading.Thread(target=drain, daemon=True).start()
def faults():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_minflt + usage.ru_majflt
print("ready", flush=True)
for line in sys.stdin:
    command, first, count = line.split()
    first, count = int(first), int(count)
    if command == "fault":
        before = faults()
        for page in range(first, first + count):
            mapping[page * 4096] = mapping[page * 4096]
        print(faults() - before, flush=True)
        continue
    if command == "sendfile":
        sent = 0
        while sent < count:
            sent += os.sendfile(sender.fileno(), fd, first + sent, count - sent)
    elif command == "mmap+write":
        sender.sendall(memoryview(mapping)[first:first + count])
    elif command == "read+write":
        sender.sendall(os.pread(fd, count, first))
    print(count, flush=True)
"""


@pytest.fixture(scope="module")
def store():
    with store_nobody_can_read(segment_size="1m", messages=6000) as root:
        yield root


def _ask(holder: subprocess.Popen, command: str, first: int, count: int) -> int:
    holder.stdin.write(f"{command} {first} {count}\n")
    holder.stdin.flush()
    return int(holder.stdout.readline())


def _value(text: str, family: str, **labels: str) -> float:
    values = sample_values(text, family)
    return sum(value for key, value in values.items() if labels.items() <= dict(key).items())


@pytest.mark.requires_bpf
def test_faults_and_send_paths_of_a_holder_are_counted_as_it_made_them(store):
    """A process that maps the store's first CommitLog segment write-faults 64 pages it never touched: the
    commitlog's exception faults grow by at least 64 and at most by what the kernel counted for the whole
    process (getrusage). It then sends 256 KiB of the segment by sendfile, mmap+write and read+write: each
    path's bytes grow by exactly that, and the CPU copies by 0, 1 and 2 per byte."""
    segment = sorted((store / "commitlog").iterdir())[0]
    with (
        ready_child(_HOLDER, segment) as holder,
        running_exporter(
            store, "--ebpf", "--listen", "127.0.0.1:0", deadline_s=COMPILE_DEADLINE_S
        ) as exporter,
    ):
        _type, before = exporter.get()
        assert _value(before, "mqinspect_ebpf_probe_running") == 4, before
        process_faults = _ask(holder, "fault", 128, 64)
        sent = {
            path: _ask(holder, path, 512 * 1024, 256 * 1024)
            for path in ("sendfile", "mmap+write", "read+write")
        }
        _type, after = exporter.get()
        assert exporter.stop() == ExitStatus.OK

    def grew(family: str, **labels: str) -> float:
        return _value(after, family, **labels) - _value(before, family, **labels)

    faults = grew("mqinspect_store_page_faults_total", kind="commitlog", cause="exception")
    assert 64 <= faults <= process_faults, (faults, process_faults)
    assert grew("mqinspect_store_dirtied_bytes_total", kind="commitlog") >= 64 * PAGE
    for path, copies in (("sendfile", 0), ("mmap+write", 1), ("read+write", 2)):
        assert grew("mqinspect_store_send_bytes_total", path=path) == sent[path], path
        assert grew("mqinspect_store_send_cpu_copied_bytes_total", path=path) == copies * sent[path], path


@pytest.mark.requires_bpf
def test_counters_only_grow_across_scrapes_and_a_commitlog_roll(tmp_path):
    """The store is written (by this process: its holder) until its CommitLog has rolled twice since the first
    scrape: no counter series goes back between scrapes, and the commitlog's faults and dirtied bytes grow.
    The same scrape is OpenMetrics when asked, and promtool accepts it."""
    root = tmp_path / "store"
    with (
        store_being_written(root),
        running_exporter(
            root, "--ebpf", "--listen", "127.0.0.1:0", deadline_s=COMPILE_DEADLINE_S
        ) as exporter,
    ):
        scrapes = [exporter.get()[1]]

        def rolled_twice() -> bool:
            scrapes.append(exporter.get()[1])
            files = _value(scrapes[-1], "mqinspect_store_files", kind="commitlog")
            return files >= _value(scrapes[0], "mqinspect_store_files", kind="commitlog") + 2

        wait_for(rolled_twice, "the CommitLog to roll twice", timeout_s=60, poll_s=0.5)
        open_type, openmetrics = exporter.get(accept=OPENMETRICS)
    counters = [name for name in _families(scrapes[-1]) if name.endswith("_total")]
    assert {"mqinspect_store_page_faults_total", "mqinspect_store_send_bytes_total"} <= set(counters)
    for earlier, later in itertools.pairwise(scrapes):
        for name in counters:
            before, after = sample_values(earlier, name), sample_values(later, name)
            for labels, value in before.items():
                assert after.get(labels, value) >= value, (name, dict(labels), value, after.get(labels))
    for family in ("mqinspect_store_page_faults_total", "mqinspect_store_dirtied_bytes_total"):
        assert _value(scrapes[-1], family, kind="commitlog") > _value(scrapes[0], family, kind="commitlog")
    assert open_type.startswith("application/openmetrics-text")
    assert "# TYPE mqinspect_store_page_faults counter" in openmetrics
    assert "# UNIT mqinspect_store_send_bytes bytes" in openmetrics
    if shutil.which("promtool"):
        checked = subprocess.run(
            ["promtool", "check", "metrics"], input=scrapes[-1], capture_output=True, text=True
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr


def _families(exposition: str) -> set[str]:
    from prometheus_client.parser import text_string_to_metric_families

    return {sample.name for family in text_string_to_metric_families(exposition) for sample in family.samples}


@pytest.mark.requires_bpf
@pytest.mark.parametrize(("ending", "status"), [(signal.SIGTERM, ExitStatus.OK), (signal.SIGINT, 130)])
def test_the_probes_are_detached_when_it_stops(store, ending, status):
    segment = sorted((store / "commitlog").iterdir())[0]
    with (
        ready_child(_HOLDER, segment),
        running_exporter(
            store, "--ebpf", "--listen", "127.0.0.1:0", deadline_s=COMPILE_DEADLINE_S
        ) as exporter,
    ):
        held = programs_once_attached(exporter.process.pid)
        names = loaded_programs()
        assert all(names[number].startswith("mqi_") for number in held), names
        exporter.get()
        assert exporter.stop(ending) == status
    assert held.isdisjoint(loaded_programs())


@pytest.mark.requires_bpf
def test_sigterm_while_the_probes_compile_ends_it_with_0_and_leaves_nothing_attached(store):
    """A service manager stopping the exporter during its seconds of start-up: exit 0 as when it stops it
    serving, and no program of ours left loaded that no process holds (one that another session holds is
    that session's)."""
    segment = sorted((store / "commitlog").iterdir())[0]
    before = set(loaded_programs())
    with ready_child(_HOLDER, segment):
        process = subprocess.Popen(
            [sys.executable, "-m", "mqinspect", "export", str(store), "--ebpf", "--listen", "127.0.0.1:0"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        try:
            assert "compiling the eBPF probes" in process.stderr.readline()
            wait_for(lambda: _compiling(process.pid), "the exporter to load bcc", timeout_s=60, poll_s=0.01)
            process.send_signal(signal.SIGTERM)
            status = process.wait(timeout=COMPILE_DEADLINE_S)  # it detaches once the compile under way ends
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    said = process.stderr.read()
    assert status == ExitStatus.OK, said
    assert "serving metrics" not in said and "Traceback" not in said, said
    wait_for(lambda: not _left_behind(before), "the exporter's programs to be gone", timeout_s=5)


def _compiling(pid: int) -> bool:
    """Whether process `pid` has bcc's library mapped (it is compiling) without a BPF program loaded yet."""
    with contextlib.suppress(OSError):
        return "libbcc" in Path(f"/proc/{pid}/maps").read_text() and not programs_held_by(pid)
    return False


def _left_behind(before: set[int]) -> set[int]:
    """Programs of ours loaded since `before` that no live process holds (pinned, or a link outliving it)."""
    ours = {number for number, name in loaded_programs().items() if name.startswith(FUNCTION_PREFIX)}
    return (ours - before) - programs_held_by_anyone()


def test_without_bpf_privileges_ebpf_is_one_line_and_exit_3(store):
    result = mqinspect_as_nobody("export", str(store), "--ebpf", "--once")
    assert result.returncode == ExitStatus.MISSING_CAPABILITY, result.stderr
    said = [line for line in result.stderr.splitlines() if line.startswith("mqinspect:")]
    assert len(said) == 1 and "--ebpf: tracing needs root" in said[0] and "(fix: " in said[0], result.stderr
    assert result.stdout == ""


def test_without_ebpf_no_probe_family_is_exported(store):
    result = run_mqinspect("export", store, "--once")
    assert result.exit_code == 0, result.stderr
    assert "mqinspect_ebpf" not in result.stdout and "page_faults" not in result.stdout
