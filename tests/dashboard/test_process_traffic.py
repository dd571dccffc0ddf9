"""The processes panel's TCP columns: a consumer that reads with recv(2) (nothing in rchar) shows the bytes
it received and sent, exactly as the sender's own count says; without the right to read a process's
descriptors the columns are unavailable with the reason."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest
from support import mqinspect_as_nobody

from mqinspect.sampling.process_reader import ProcessReader
from probes.socket_bytes import tcp_socket_bytes

RECEIVED, SENT = 3_000_000, 250_000
CONSUMER = """
import os, socket, sys
connection = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
print(os.fstat(connection.fileno()).st_ino, flush=True)
sys.stdin.readline()  # the test took its baseline
received = 0
while received < int(sys.argv[2]):
    received += len(connection.recv(1 << 16))
connection.sendall(bytes(int(sys.argv[3])))
print(received, flush=True)
sys.stdin.readline()
"""


def wait_for(condition, what: str, timeout_s: float = 10.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def receive_exactly(receiver: socket.socket, count: int) -> None:
    received = 0
    while received < count:
        received += len(receiver.recv(1 << 20))


def test_a_recv_consumer_shows_its_tcp_bytes_while_rchar_misses_them():
    listener = socket.create_server(("127.0.0.1", 0))
    consumer = subprocess.Popen(
        [sys.executable, "-c", CONSUMER, str(listener.getsockname()[1]), str(RECEIVED), str(SENT)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        inode = int(consumer.stdout.readline())
        server, _ = listener.accept()
        reader = ProcessReader((consumer.pid,))
        reader.baseline()
        consumer.stdin.write("go\n")
        consumer.stdin.flush()
        server.sendall(bytes(RECEIVED))
        assert int(consumer.stdout.readline()) == RECEIVED
        receive_exactly(server, SENT)
        # its sent bytes count once the test's ACK has reached the consumer's socket
        wait_for(lambda: tcp_socket_bytes()[inode].acked_bytes - 1 >= SENT, "the consumer's ACKs")
        (view,) = reader.read(2.0, {})
        assert view.tcp_received_bytes_per_s * 2.0 == RECEIVED
        assert view.tcp_acked_bytes_per_s * 2.0 == SENT
        assert view.rchar_bytes_per_s * 2.0 < RECEIVED / 100  # recv(2) is not in /proc/PID/io's rchar
        assert "tcp_received_bytes_per_s" not in view.unavailable
    finally:
        consumer.kill()
        consumer.wait()
        listener.close()


def test_the_first_interval_of_a_process_has_no_rate_yet():
    reader = ProcessReader((os.getpid(),))
    (view,) = reader.read(1.0, {})  # no baseline taken
    assert view.tcp_received_bytes_per_s is None
    assert "first interval" in view.unavailable["tcp_received_bytes_per_s"]


@pytest.mark.requires_root
def test_without_access_to_its_descriptors_a_process_has_no_tcp_figures_and_says_why():
    result = mqinspect_as_nobody(
        "top", "--once", "--format", "json", "--no-ebpf", "--interval", "0.2", "--pid", str(os.getpid())
    )
    assert result.returncode == 0, result.stderr
    (process,) = json.loads(result.stdout)["processes"]
    assert process["tcp_received_bytes_per_s"] is None and process["tcp_acked_bytes_per_s"] is None
    reason = process["unavailable"]["tcp_received_bytes_per_s"]
    assert "permission denied" in reason and f"/proc/{os.getpid()}/fd" in reason
