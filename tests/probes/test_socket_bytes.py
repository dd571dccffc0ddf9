"""TCP byte counters per socket (sock_diag) against ss, and the sockets a process holds against /proc."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys

import pytest
from support import AS_NOBODY, REPO

from probes.procfs import ProcessGone
from probes.socket_bytes import socket_inodes, tcp_socket_bytes


@pytest.fixture
def connection():
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    yield client, server
    for end in (client, server, listener):
        end.close()


def receive_exactly(receiver: socket.socket, count: int) -> None:
    received = 0
    while received < count:
        received += len(receiver.recv(1 << 20))


def ss_counters(port: int) -> dict[int, tuple[int, int]]:
    """{inode: (bytes_received, bytes_acked)} of the connections on `port`, as `ss -tine` prints them."""
    out = subprocess.run(
        ["ss", "-tineH", f"sport = :{port} or dport = :{port}"], capture_output=True, text=True, check=True
    ).stdout
    found = {}
    for entry in re.split(r"\n(?=\S)", out.strip()):
        inode = re.search(r"\bino:(\d+)", entry)
        received = re.search(r"\bbytes_received:(\d+)", entry)
        acked = re.search(r"\bbytes_acked:(\d+)", entry)
        if inode:
            found[int(inode.group(1))] = (
                int(received.group(1)) if received else 0,
                int(acked.group(1)) if acked else 0,
            )
    return found


def test_each_sockets_bytes_equal_what_ss_reports_and_what_was_sent(connection):
    client, server = connection
    client.sendall(bytes(300_000))
    receive_exactly(server, 300_000)
    server.sendall(bytes(4_321))
    receive_exactly(client, 4_321)
    table = tcp_socket_bytes()
    client_inode, server_inode = os.fstat(client.fileno()).st_ino, os.fstat(server.fileno()).st_ino
    assert table[server_inode].received_bytes == table[client_inode].acked_bytes - 1 == 300_000  # +1: the SYN
    assert table[client_inode].received_bytes == 4_321
    truth = ss_counters(client.getsockname()[1])
    for inode in (client_inode, server_inode):
        assert (table[inode].received_bytes, table[inode].acked_bytes) == truth[inode]
    assert tcp_socket_bytes({server_inode}) == {server_inode: table[server_inode]}  # only those asked for


def test_a_process_holds_the_sockets_its_descriptors_name(connection):
    client, server = connection
    held = socket_inodes(os.getpid())
    assert {os.fstat(client.fileno()).st_ino, os.fstat(server.fileno()).st_ino} <= held
    child = subprocess.Popen(["sleep", "30"])
    try:
        assert socket_inodes(child.pid) == frozenset()
    finally:
        child.kill()
        child.wait()
    with pytest.raises(ProcessGone):
        socket_inodes(child.pid)


@pytest.mark.requires_root
def test_another_users_descriptors_are_access_denied():
    script = (
        "import sys; from probes.socket_bytes import socket_inodes; from probes.errors import AccessDenied\n"
        "try:\n    socket_inodes(int(sys.argv[1]))\nexcept AccessDenied as error:\n    print(error)\n"
    )
    result = subprocess.run(
        [*AS_NOBODY, sys.executable, "-c", script, str(os.getpid())],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
    )
    assert "permission denied" in result.stdout and f"/proc/{os.getpid()}/fd" in result.stdout
