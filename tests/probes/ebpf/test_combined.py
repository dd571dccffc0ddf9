"""Several probes in one BPF program (probes/ebpf/combined.py): the program text (no BPF needed), and with BPF
the dashboard's four probes combined on one workload, each against its own ground truth (perf stat for
faults, the pages written and /proc/PID/io for writeback, fincore for pagecache, the workload's own count of
its reads and writes for sendpath), one program per tracepoint, gone after the session.

Every probe test can also run through a combined program: MQINSPECT_COMBINED=1 (conftest.py).
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import pytest
from perf_stat import perf_stat_page_faults
from support import (
    fadvise_out,
    fincore_pages,
    loaded_programs,
    mqinspect_as_nobody,
    programs_held_by,
    ready_child,
)

from mqinspect.sampling.probe_set import ProbeSet
from mqinspect.sampling.snapshot import DASHBOARD_PROBES, ProbeState
from probes.ebpf.combined import CombinedProbe, ProbePart, combined_source
from probes.ebpf.loader import FUNCTION_PREFIX, render_program
from probes.ebpf.registry import PROBES, SENDPATH_SYSCALLS, probe_entry
from probes.ebpf.session import TraceSession
from probes.errors import ProbeError

PAGE = os.sysconf("SC_PAGE_SIZE")


def every_probe(pids: tuple[int, ...] = ()) -> list:
    return [entry.probe_class()(pids) for entry in PROBES]


def test_one_function_per_tracepoint_and_each_probes_maps_apart():
    combined = CombinedProbe(every_probe())
    attachments = combined.program.attachments
    tracepoints = [attachment.tracepoint for attachment in attachments]
    every = {tp for entry in PROBES for tp in entry.tracepoints}
    assert len(tracepoints) == len(set(tracepoints)) and set(tracepoints) == every
    functions = {attachment.tracepoint: attachment.function for attachment in attachments}
    assert all(function.startswith(FUNCTION_PREFIX) for function in functions.values())
    # tracepoints whose handlers are the same share one function (compiled once): sendpath's syscall exits
    exits = {functions[f"syscalls:sys_exit_{name}"] for name in SENDPATH_SYSCALLS}
    assert len(exits) == 1 and len(set(functions.values())) < len(functions)
    # a tracepoint is required when any probe needs it
    required = {tp for entry in PROBES for tp in entry.required}
    assert {a.tracepoint for a in attachments if a.required} == required

    text = render_program(combined.program, combined.parameters(), combined.sets())
    assert "#include" not in text
    assert text.count("BPF_HASH(mqi_tgids,") == 1  # the scope once
    assert text.count("BPF_ARRAY(mqi_half,") == 0  # each draining probe has its own halves
    for name in ("faults", "pagecache", "writeback"):
        totals = combined.source.renames[name]["mqi_totals"]
        assert totals == f"mqi_{name}_totals" and totals in text
    assert (
        combined.source.renames["pagecache"]["mqi_half"] != combined.source.renames["writeback"]["mqi_half"]
    )
    # the page-cache insertion's function calls the handler of each of its four probes once
    insertion = next(
        a.function for a in attachments if a.tracepoint == "filemap:mm_filemap_add_to_page_cache"
    )
    body = text.split(f"int {insertion}(", 1)[1].split("}", 1)[0]
    assert body.count("(args);") == 4


def test_a_probe_alone_gets_its_own_maps_under_its_names_and_the_shared_ones_unchanged():
    faults = probe_entry("faults").probe_class()()
    source = combined_source([ProbePart(faults.name, faults.program, faults.parameters())])
    renames = source.renames["faults"]
    assert "mqi_tgids" not in renames and "mqi_inodes" not in renames  # the shared headers' maps
    assert renames["mqi_fault_pages"] == "mqi_faults_fault_pages"
    assert source.probe_at_line(source.lines["faults"][0] + 5) == "faults"


def test_a_compile_error_is_traced_to_the_probe_whose_part_it_is_in():
    combined = CombinedProbe(every_probe())
    first, _last = combined.source.lines["writeback"]
    error = RuntimeError(f"x failed: /virtual/main.c:{first + 3}:7: error: use of undeclared identifier")
    assert combined.failed_probe(error) == "writeback"
    assert combined.failed_probe(RuntimeError("/virtual/main.c:1:1: error: x")) is None  # the dispatchers


def test_top_print_bpf_shows_the_dashboards_one_program_as_nobody_without_compiling():
    result = mqinspect_as_nobody("top", "--print-bpf", "--pid", str(os.getpid()))
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip().endswith("bcc not imported")
    text = result.stdout
    assert text.startswith("// the combined program of faults, pagecache, writeback, sendpath:")
    assert f"// map mqi_tgids is filled with: {os.getpid()}" in text
    tracepoints = {tp for name in DASHBOARD_PROBES for tp in probe_entry(name).tracepoints}
    attached_to = text.count("\nint mqi_") + sum(
        line.count(",") for line in text.splitlines() if line.startswith("/* attached to ")
    )
    assert attached_to == len(tracepoints)  # one function per tracepoint, or per tracepoints alike
    assert "mqi_syscalls_" not in text  # the dashboard does not run the syscalls probe


# Runs in the child: opens the two files and connects to the test's socket, says "ready"; on a line writes a
# byte to every page of the fresh file through a shared mapping and fsyncs it, says "written"; on a line
# reads the other file with read() and writes each chunk to the socket, and says how many reads and writes
# it made and of which descriptors.
WORKLOAD = r"""
import mmap, os, socket, sys
written_path, sent_path, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
written = os.open(written_path, os.O_RDWR)
source = os.open(sent_path, os.O_RDONLY)
sock = socket.create_connection(("127.0.0.1", port))
print("ready", flush=True)
sys.stdin.readline()
size = os.fstat(written).st_size
mapping = mmap.mmap(written, size, mmap.MAP_SHARED)
for offset in range(0, size, mmap.PAGESIZE):
    mapping[offset] = 1
mapping.flush()
os.fsync(written)
print("written", flush=True)
sys.stdin.readline()
reads = writes = sent = 0
while True:
    chunk = os.read(source, 131072)
    reads += 1
    if not chunk:
        break
    view = memoryview(chunk)
    while view:
        done = os.write(sock.fileno(), view)
        writes += 1
        sent += done
        view = view[done:]
print("sent", source, sock.fileno(), reads, writes, sent, flush=True)
sys.stdin.readline()
"""


def _step(child, expected: str) -> list[str]:
    child.stdin.write("go\n")
    child.stdin.flush()
    words = child.stdout.readline().split()
    assert words[0] == expected, words
    return words[1:]


def _within(measured: int, reference: int, fraction: float = 0.02) -> bool:
    return abs(measured - reference) <= max(2, fraction * reference)


@pytest.mark.requires_bpf
def test_the_dashboards_four_probes_in_one_program_each_agree_with_their_ground_truth(tmp_path: Path):
    written_pages, sent_pages = 2048, 4096
    written = tmp_path / "written.bin"
    with written.open("wb") as data:
        data.truncate(written_pages * PAGE)
    sent = tmp_path / "sent.bin"
    sent.write_bytes(os.urandom(sent_pages * PAGE))
    fadvise_out(sent)
    assert fincore_pages(sent) == 0
    listener = socket.create_server(("127.0.0.1", 0))
    received = []
    drain = threading.Thread(target=_drain, args=(listener, received), daemon=True)
    drain.start()
    with ready_child(WORKLOAD, written, sent, listener.getsockname()[1], stop_timeout_s=30) as child:
        probes = [probe_entry(name).probe_class()((child.pid,)) for name in DASHBOARD_PROBES]
        combined = CombinedProbe(probes)
        session = TraceSession(combined)
        with session:
            held = programs_held_by(os.getpid())
            names = {number: name for number, name in loaded_programs().items() if number in held}
            with perf_stat_page_faults(child.pid, tmp_path / "perf.out") as perf:
                _step(child, "written")
            first = session.snapshot()
            source_fd, socket_fd, reads, writes, sent_bytes = map(int, _step(child, "sent"))
            second = session.snapshot()
            attached = session.attached_tracepoints
        drain.join(10)
    listener.close()

    # one program per tracepoint (tracepoints that call the same handlers share one), named as ours, and
    # none left once the session closed
    assert len(attached) == len(set(attached))
    functions = {a.function for a in combined.program.attachments if a.tracepoint in attached}
    assert len(held) == len(functions) <= len(attached)
    assert all(name.startswith(FUNCTION_PREFIX) for name in names.values()) and len(names) == len(held)
    assert held.isdisjoint(loaded_programs())

    (perf_faults,) = perf
    faults = next(row for row in first["faults"].processes if row.pid == child.pid)
    print(f"perf stat page-faults {perf_faults}, traced {faults.faults}")
    assert _within(faults.faults, perf_faults)
    assert faults.faults == faults.proc_minor_faults + faults.proc_major_faults  # the kernel's own count

    writeback = first["writeback"]
    file = next(row for row in writeback.files if row.inode == written.stat().st_ino)
    (dirtier,) = writeback.processes
    print(f"writeback: dirtied {file.dirtied_pages}, written {file.written_pages} of {written_pages} pages")
    assert _within(file.dirtied_pages, written_pages) and _within(file.written_pages, written_pages)
    assert _within(dirtier.dirtied_pages, dirtier.proc_dirtied_pages)  # the kernel's own count

    pagecache = second["pagecache"]
    file = next(row for row in pagecache.files if row.inode == sent.stat().st_ino)
    resident = fincore_pages(sent)
    print(f"pagecache: added {file.added_pages} pages of the sent file, fincore {resident}")
    assert _within(file.added_pages, resident) and _within(resident, sent_pages)

    sendpath = second["sendpath"]
    (process,) = (row for row in sendpath.processes if row.pid == child.pid)
    fds = [row for row in sendpath.fds if row.pid == child.pid]
    socket_writes = sum(row.syscalls for row in fds if row.fd == socket_fd)
    file_reads = sum(row.syscalls for row in fds if row.fd == source_fd)
    print(f"sendpath: {file_reads}/{reads} reads, {socket_writes}/{writes} writes, {process.paths}")
    assert (file_reads, socket_writes) == (reads, writes)
    assert sent_bytes == sent_pages * PAGE == sum(len(chunk) for chunk in received)
    assert process.socket_bytes_from_user == sent_bytes == process.paths.read_write_bytes


def _drain(listener: socket.socket, received: list[bytes]) -> None:
    connection, _address = listener.accept()
    with connection:
        while chunk := connection.recv(1 << 20):
            received.append(chunk)
            if sum(map(len, received)) >= 4096 * PAGE:
                return


class FailingOnce:
    """A session factory whose first session fails to compile in the writeback probe's part."""

    def __init__(self):
        self.sessions = []

    def __call__(self, combined):
        session = _FakeCombinedSession(combined, fail=not self.sessions)
        self.sessions.append(session)
        return session


class _FakeCombinedSession:
    def __init__(self, combined, fail):
        self.probe = combined
        self.fail = fail
        self.closed = False

    def open(self):
        if self.fail:
            line = self.probe.source.lines["writeback"][0] + 10
            raise ProbeError(f"failed to compile: /virtual/main.c:{line}:5: error: no member named 'x'")
        for name, probe in self.probe.probes.items():
            self.probe.views[name] = _View(probe.program)

    def snapshot(self):
        return {name: name for name in self.probe.probes}

    def close(self):
        self.closed = True


class _View:
    def __init__(self, spec):
        self.attached = tuple(attachment.tracepoint for attachment in spec.attachments)


def test_a_probe_whose_part_fails_to_compile_is_left_out_and_the_others_run():
    factory = FailingOnce()
    probes = ProbeSet((), None, session_factory=factory)
    probes.start(background=False)
    statuses = {status.name: status for status in probes.statuses()}
    assert statuses["writeback"].state == ProbeState.UNAVAILABLE
    assert "no member named 'x'" in statuses["writeback"].reason
    others = [name for name in DASHBOARD_PROBES if name != "writeback"]
    assert all(statuses[name].state == ProbeState.RUNNING for name in others)
    assert list(factory.sessions[1].probe.probes) == others  # compiled again without it
    assert set(probes.collect()) == set(others)
    probes.close()
    assert factory.sessions[1].closed
