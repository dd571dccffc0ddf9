"""The sendpath probe. Without root: the path classification rule, descriptor naming from /proc/PID/fd,
socket addresses, one interval assembled from canned map contents on this process's real descriptors, the
summary's re-classification, and --print-bpf. With BPF: sendpath_workload.py sends 64 MiB over loopback by
each path while the probe and `strace -c -f -p` watch the same sender, and the bytes per direction and the
syscall counts are held against the path model and strace."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
from rich.console import Console
from support import loaded_programs, mqinspect_as_nobody, programs_held_by, strace_summary
from typer.testing import CliRunner

from mqinspect.cli import trace
from mqinspect.cli.app import app
from mqinspect.errors import ExitStatus
from mqinspect.render.trace import VIEWS
from probes.ebpf.inodes import _socket_address, read_fd_target
from probes.ebpf.loader import FUNCTION_PREFIX
from probes.ebpf.sendpath import (
    PROGRAM,
    SYSCALLS,
    SendpathProbe,
    SendpathSnapshot,
    _Counts,
    _process_row,
    _snapshot,
    combine_snapshots,
    send_paths,
)
from probes.ebpf.session import TraceSession
from probes.ebpf.tracepoints import PROBES

REPO = Path(__file__).resolve().parents[2]
WORKLOAD = Path(__file__).with_name("sendpath_workload.py")
TRACE_SENDPATH = [sys.executable, "-m", "mqinspect", "trace", "sendpath"]
FILE_BYTES = 64 << 20
CHUNK_BYTES = 64 << 10
# strace names the x86_64 sendfile syscall "sendfile"; its tracepoint is sys_enter_sendfile64.
STRACE_NAMES = {"sendfile": "sendfile64"}
runner = CliRunner()


# --- the program and the registry ------------------------------------------------------------------------


def test_every_tracepoint_of_the_registry_is_attached_with_a_function_of_the_source():
    (registered,) = (probe for probe in PROBES if probe.probe == "sendpath")
    assert {a.tracepoint for a in PROGRAM.attachments if a.required} == set(registered.required)
    assert {a.tracepoint for a in PROGRAM.attachments if not a.required} == set(registered.optional)
    source = PROGRAM.source_path.read_text()
    for attachment in PROGRAM.attachments:
        assert attachment.function.startswith(FUNCTION_PREFIX) and len(attachment.function) <= 15
        assert f"int {attachment.function}(" in source
    for number, name in enumerate(SYSCALLS):  # every syscall id the program uses is defined
        assert f"SYSCALL_{name.upper()}" in source
        assert f"-DSYSCALL_{name.upper()}={number}" in SendpathProbe().parameters().cflags()


# --- the classification rule -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("file_read", "socket_written", "expected"),
    [
        (100, 100, (100, 0)),  # read, then written: read+write
        (0, 100, (0, 100)),  # written without a read: mmap+write
        (40, 100, (40, 60)),  # partly both
        (500, 100, (100, 0)),  # reads beyond the socket writes (a log scan) do not count as sends
    ],
)
def test_socket_writes_are_read_write_up_to_the_file_reads_and_mmap_write_beyond(
    file_read, socket_written, expected
):
    paths = send_paths(_Counts(file_bytes_to_user=file_read, socket_bytes_from_user=socket_written))
    assert (paths.read_write_bytes, paths.mmap_write_bytes) == expected


# --- descriptors ------------------------------------------------------------------------------------------


def test_descriptors_are_named_by_kind_and_a_closed_one_is_unknown(tmp_path: Path):
    path = tmp_path / "segment"
    path.write_bytes(b"x")
    pid = os.getpid()
    pipe_out, pipe_in = os.pipe()
    left, right = socket.socketpair()
    with path.open("rb") as opened, left, right:
        file = read_fd_target(pid, opened.fileno(), {})
        assert (file.kind, file.name, file.in_store) == ("file", str(path), False)
        assert read_fd_target(pid, left.fileno(), {}).kind == "socket"
        reading, writing = read_fd_target(pid, pipe_out, {}), read_fd_target(pid, pipe_in, {})
        assert (reading.kind, reading.write_only, reading.name.endswith("(read end)")) == (
            "pipe",
            False,
            True,
        )
        assert (writing.kind, writing.write_only, writing.name.endswith("(write end)")) == (
            "pipe",
            True,
            True,
        )
        os.close(pipe_out)
        os.close(pipe_in)
        assert read_fd_target(pid, pipe_in, {}).kind == "unknown"


def test_proc_net_addresses_read_as_ip_and_port():
    assert _socket_address("0100007F:1F90") == "127.0.0.1:8080"
    assert _socket_address("00000000000000000000000001000000:0016") == "[::1]:22"
    assert _socket_address("0000000000000000FFFF00000100007F:1F90") == "127.0.0.1:8080"


# --- one interval from canned map contents -----------------------------------------------------------------


class CannedProgram:
    """Stands in for a LoadedProgram: read() answers from canned map contents."""

    def __init__(self, maps: dict[str, list], attached: tuple[str, ...] = ()):
        self.maps = maps
        self.attached = attached
        self.deleted: list[tuple[str, tuple]] = []

    def read(self, name):
        return list(self.maps.get(name, []))

    def delete(self, name, key):
        self.deleted.append((name, key))


def _traffic(syscall: str, fd: int, calls: int, moved: int, source_fd: int = -1, faults: int = 0):
    key = SimpleNamespace(tgid=os.getpid(), syscall=SYSCALLS.index(syscall), fd=fd, source_fd=source_fd)
    return key, SimpleNamespace(calls=calls, errors=0, bytes=moved, faults=faults)


def _sockets(sent: int, copied: int = 0, passes: int = 0):
    value = SimpleNamespace(sent_bytes=sent, copied_to_user_bytes=copied, tcp_sendmsg_passes=passes)
    return SimpleNamespace(value=os.getpid()), value


def test_an_interval_adds_up_per_descriptor_and_classifies_per_process(tmp_path: Path):
    path = tmp_path / "segment"
    path.write_bytes(b"\0" * 4096)
    left, right = socket.socketpair()
    pipe_out, pipe_in = os.pipe()
    with path.open("rb") as segment, left, right:
        file_fd, socket_fd = segment.fileno(), left.fileno()
        probe = SendpathProbe([os.getpid()])
        program = CannedProgram({}, attached=("sock:sock_send_length", "skb:skb_copy_datagram_iovec"))
        probe.start(program)
        program.maps = {
            "mqi_traffic": [
                _traffic("read", file_fd, 10, 1000),
                _traffic("sendto", socket_fd, 20, 3000, faults=7),  # 1000 read+write, 2000 mmap+write
                _traffic("sendfile64", socket_fd, 5, 4000, source_fd=file_fd),
                _traffic("splice", pipe_in, 2, 500, source_fd=file_fd),  # file -> pipe: in kernel
                _traffic("splice", socket_fd, 2, 500, source_fd=pipe_out),
                _traffic("vmsplice", pipe_in, 1, 64),  # into a pipe: page references, no copy
            ],
            "mqi_sockets": [_sockets(sent=8000)],
        }
        snapshot = probe.collect(program, 1.0)
        os.close(pipe_out)
        os.close(pipe_in)
    assert (snapshot.syscalls, snapshot.mode_switches) == (40, 80)
    assert snapshot.bytes_kernel_to_user == 1000 and snapshot.bytes_user_to_kernel == 3000
    assert snapshot.bytes_in_kernel == 4000 + 500 + 500 + 64
    paths = snapshot.paths
    assert (paths.read_write_bytes, paths.mmap_write_bytes, paths.sendfile_bytes, paths.splice_bytes) == (
        1000,
        2000,
        4000,
        500,
    )
    assert snapshot.bytes_to_sockets == 7500
    assert snapshot.cpu_copies_per_socket_byte == pytest.approx((2 * 1000 + 2000) / 7500, abs=1e-4)
    assert snapshot.socket_bytes_sent == 8000 and snapshot.socket_bytes_copied_to_user == 0
    assert snapshot.tcp_sendmsg_passes is None  # its tracepoint was not attached
    (process,) = snapshot.processes
    assert process.main_path == "sendfile" and process.faults_in_syscalls == 7
    sendfile = next(row for row in snapshot.fds if row.per_syscall[0].syscall == "sendfile64")
    assert (sendfile.fd_kind, sendfile.source_kind, sendfile.source_name) == ("socket", "file", str(path))
    assert sendfile.bytes_in_kernel == 4000 and sendfile.mode_switches == 10


def test_with_a_store_only_reads_of_its_segments_are_the_file_side_of_read_write(tmp_path: Path):
    root = tmp_path / "store"
    (root / "commitlog").mkdir(parents=True)
    (root / "consumequeue").mkdir()
    segment_path = root / "commitlog" / f"{0:020d}"
    segment_path.write_bytes(b"\0" * 4096)
    config = tmp_path / "broker.conf"
    config.write_bytes(b"x" * 4096)
    left, right = socket.socketpair()
    with segment_path.open("rb") as segment, config.open("rb") as other, left, right:
        program = CannedProgram(
            {
                "mqi_traffic": [
                    _traffic("pread64", segment.fileno(), 1, 1000),
                    _traffic("read", other.fileno(), 1, 4000),  # not the store's: not a send source
                    _traffic("writev", left.fileno(), 1, 3000),
                ]
            }
        )
        snapshot = SendpathProbe([os.getpid()], store=root).collect(program, 1.0)
    assert (snapshot.paths.read_write_bytes, snapshot.paths.mmap_write_bytes) == (1000, 2000)
    names = {row.fd_name for row in snapshot.fds}
    assert "commitlog/00000000000000000000" in names and str(config) in names


def _interval(**counts) -> SendpathSnapshot:
    """A snapshot of one process with the given byte tallies (through the probe's own row builder)."""
    row = _process_row(7, "broker", _Counts(**counts), dict.fromkeys(("socket_bytes_sent",), 0))
    return _snapshot(
        kind="interval",
        interval_s=1.0,
        pids=(7,),
        store=None,
        lost_records=0,
        processes=(row,),
        fds=(),
        exited_pids=(),
        socket_fields=frozenset({"socket_bytes_sent"}),
    )


def test_the_summary_classifies_the_sessions_bytes_not_the_sum_of_interval_classes():
    first = _interval(syscalls=1, file_bytes_to_user=100, bytes_kernel_to_user=100)  # the read...
    second = _interval(syscalls=1, socket_bytes_from_user=100, bytes_user_to_kernel=100)  # ...sent later
    assert second.paths.mmap_write_bytes == 100  # seen alone, the write had no matching read
    summary = combine_snapshots(combine_snapshots(None, first), second)
    assert summary.kind == "summary" and summary.interval_s == 2.0 and summary.syscalls == 2
    assert (summary.paths.read_write_bytes, summary.paths.mmap_write_bytes) == (100, 0)
    assert summary.cpu_copies_per_socket_byte == 2.0
    assert summary.socket_bytes_sent == 0 and summary.tcp_sendmsg_passes is None


def test_the_table_draws_an_interval():
    snapshot = _interval(syscalls=2, file_bytes_to_user=100, socket_bytes_from_user=100)
    console = Console(width=80, record=True, file=io.StringIO())
    console.print(VIEWS["sendpath"].table(snapshot, "title"))
    text = console.export_text()
    assert "read+write 100B" in text and "CPU copies per socket byte 2.00" in text


# --- --print-bpf and privileges ---------------------------------------------------------------------------


@pytest.fixture
def no_session(monkeypatch):
    def refuse(*_args, **_kwargs):
        raise AssertionError("a session was opened")

    monkeypatch.setattr(trace, "TraceSession", refuse)


def test_print_bpf_prints_the_program_without_a_session(no_session):
    result = runner.invoke(app, ["trace", "sendpath", "--pid", str(os.getpid()), "--print-bpf"])
    assert result.exit_code == 0, result.stderr
    assert "//   -DFILTER_TGIDS=1" in result.stdout and "//   -DSYSCALL_SENDFILE64=6" in result.stdout
    assert f"// map mqi_tgids is filled with: {os.getpid()}" in result.stdout
    assert "int mqi_sys_exit(struct tracepoint__syscalls__sys_exit_read *args)" in result.stdout


def test_a_pid_that_does_not_exist_is_bad_input(no_session):
    result = runner.invoke(app, ["trace", "sendpath", "--pid", str(2**22 + 1)])
    assert result.exit_code == ExitStatus.BAD_INPUT and "--pid" in result.stderr


@pytest.mark.requires_root
def test_print_bpf_works_as_nobody_and_tracing_as_nobody_is_exit_3():
    printed = mqinspect_as_nobody("trace", "sendpath", "--pid", "1", "--print-bpf")
    assert printed.returncode == 0, printed.stderr
    assert "int mqi_sendfile_e(" in printed.stdout and "bcc not imported" in printed.stderr
    refused = mqinspect_as_nobody("trace", "sendpath", "--pid", "1", "--count", "1")
    assert refused.returncode == ExitStatus.MISSING_CAPABILITY
    (error,) = [line for line in refused.stderr.splitlines() if line.startswith("mqinspect: error:")]
    assert "root" in error and "fix:" in error and "mqinspect doctor" in error


# --- with BPF: 64 MiB by each path, beside strace ------------------------------------------------------


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sendpath") / "segment.bin"
    with path.open("wb") as data:
        for _ in range(FILE_BYTES // (1 << 20)):
            data.write(os.urandom(1 << 20))
    return path


@dataclass
class Sender:
    process: subprocess.Popen
    pid: int

    def start_sending(self) -> None:
        os.kill(self.pid, signal.SIGUSR1)

    def finish(self) -> int:
        """The receiver's byte count, once the sender has exited (successfully)."""
        word, received = self.process.stdout.readline().split()
        assert word == "received"
        assert self.process.wait(timeout=60) == 0
        return int(received)


@contextlib.contextmanager
def paused_sender(path_name: str, data: Path) -> Iterator[Sender]:
    process = subprocess.Popen(
        [sys.executable, str(WORKLOAD), path_name, str(data), "--chunk-bytes", str(CHUNK_BYTES)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        word, sender_pid, _receiver_pid = process.stdout.readline().split()
        assert word == "ready"
        yield Sender(process, int(sender_pid))
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


@contextlib.contextmanager
def strace_counts(pid: int, output: Path) -> Iterator[dict[str, tuple[int, int]]]:
    """`strace -c -f -p PID` from when it has attached until the process exits: {syscall: (calls, errors)}
    under the tracepoint's syscall name, filled in after the block."""
    strace = subprocess.Popen(
        ["strace", "-c", "-f", "-p", str(pid), "-o", str(output)], stderr=subprocess.PIPE, text=True
    )
    counts: dict[str, tuple[int, int]] = {}
    try:
        assert "attached" in strace.stderr.readline()
        yield counts
    finally:
        strace.wait(timeout=60)  # it ends when the traced process does
    counts.update(parse_strace_summary(output.read_text()))


def parse_strace_summary(text: str) -> dict[str, tuple[int, int]]:
    """strace's summary by the probe's names (sendfile is sendfile64 to the tracepoint)."""
    return {STRACE_NAMES.get(name, name): counts for name, counts in strace_summary(text).items()}


def test_the_strace_summary_parser_reads_calls_and_errors():
    text = (
        "% time     seconds  usecs/call     calls    errors syscall\n"
        "------ ----------- ----------- --------- --------- ----------------\n"
        " 54.15    0.019868          19      1024           sendfile\n"
        "  0.13    0.000047          23         2         1 read\n"
        "100.00    0.036689          35      1026         1 total\n"
    )
    assert parse_strace_summary(text) == {"sendfile64": (1024, 0), "read": (2, 1)}


# Bytes of the sender per direction, as multiples of the file: (kernel->user, user->kernel, in kernel).
EXPECTED_MULTIPLES = {
    "sendfile": (0, 0, 1),
    "read+write": (1, 1, 0),
    "mmap+write": (0, 1, 0),
    "splice": (0, 0, 2),  # file -> pipe, then pipe -> socket: two moves of page references
}
EXPECTED_COPIES = {"sendfile": 0.0, "read+write": 2.0, "mmap+write": 1.0, "splice": 0.0}


@pytest.mark.requires_bpf
@pytest.mark.parametrize("path_name", list(EXPECTED_MULTIPLES))
def test_each_path_moves_its_bytes_the_way_the_path_model_says_and_counts_agree_with_strace(
    path_name: str, data_file: Path, tmp_path: Path
):
    with (
        paused_sender(path_name, data_file) as sender,
        TraceSession(SendpathProbe([sender.pid])) as session,
    ):
        with strace_counts(sender.pid, tmp_path / "strace.out") as straced:
            sender.start_sending()
            assert sender.finish() == FILE_BYTES
        snapshot = session.snapshot()  # the sender has exited: its counts are final
    (process,) = snapshot.processes
    moved = (process.bytes_kernel_to_user, process.bytes_user_to_kernel, process.bytes_in_kernel)
    print(f"{path_name}: kernel->user, user->kernel, in kernel = {moved}; strace {straced}")
    assert moved == tuple(multiple * FILE_BYTES for multiple in EXPECTED_MULTIPLES[path_name])
    assert process.main_path == path_name and process.bytes_to_sockets == FILE_BYTES
    assert process.cpu_copies_per_socket_byte == EXPECTED_COPIES[path_name]
    assert process.socket_bytes_sent == FILE_BYTES  # the socket layer agrees with the syscalls
    assert snapshot.exited_pids == (sender.pid,)

    traced = {entry.syscall: (entry.calls, entry.errors) for entry in process.per_syscall}
    assert {name: traced.get(name, (0, 0)) for name in SYSCALLS} == {
        name: straced.get(name, (0, 0)) for name in SYSCALLS
    }
    assert process.syscalls == sum(straced.get(name, (0, 0))[0] for name in SYSCALLS) > 0
    assert process.mode_switches == 2 * process.syscalls


@pytest.mark.requires_bpf
def test_sigterm_mid_session_prints_the_summary_exits_130_and_unloads(data_file: Path):
    with paused_sender("read+write", data_file) as sender:
        session = subprocess.Popen(  # --follow: the session outlives the sender, until SIGTERM
            [*TRACE_SENDPATH, "--pid", str(sender.pid), "--follow", "--interval", "0.2", "--format", "jsonl"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        first = json.loads(session.stdout.readline())  # attached, and one interval has ended
        held = programs_held_by(session.pid)
        loaded_while_running = loaded_programs()
        sender.start_sending()
        sender.finish()
        session.send_signal(signal.SIGTERM)
        rest, errors = session.communicate(timeout=30)
    assert session.returncode == 130, errors
    lines = [first, *map(json.loads, rest.splitlines())]
    summary = lines[-1]
    assert summary["kind"] == "summary" and summary["pids"] == [sender.pid]
    assert summary["bytes_kernel_to_user"] == summary["bytes_user_to_kernel"] == FILE_BYTES
    assert summary["syscalls"] == sum(line["syscalls"] for line in lines[:-1])
    for key in ("interval_s", "bytes_in_kernel", "mode_switches", "cpu_copies_per_socket_byte", "paths"):
        assert key in first
    assert errors.startswith(f"Tracing send-path syscalls of pid {sender.pid}, per descriptor, every 0.2 s.")
    assert f"mqinspect: pid {sender.pid} exited; the session goes on" in errors
    # Others may run sessions at the same time: only this session's own programs must be gone.
    assert held and all(name.startswith(FUNCTION_PREFIX) for name in map(loaded_while_running.get, held))
    assert held.isdisjoint(loaded_programs())
