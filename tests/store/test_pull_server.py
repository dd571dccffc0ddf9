"""The pull server and client over real loopback sockets and a real store: every send path delivers the
records the store holds; long polling answers as soon as a message arrives; a peer that stops reading,
one that leaves mid-frame and malformed requests are each dealt with while another client is served; and
consumer offsets survive a restart so that a consumer resumes exactly where it committed."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support import expire_all_but_the_last_segment

from store import codec, transfer
from store.config import StoreConfig
from store.consumer_offsets import consumer_offset_path, load_consumer_offsets
from store.message_store import MessageStore
from store.pull_client import BodyMode, GroupConsumer, ProtocolError, PullClient, PullFailed
from store.pull_server import (
    FRAME_LENGTH,
    MAGIC,
    REQUEST_PREAMBLE,
    NonLoopbackBind,
    PullRequest,
    PullServer,
    PullServerConfig,
    RequestKind,
    Status,
    decode_response_header,
    encode_request,
)
from store.transfer import RUN_COALESCING_PATHS, SendPath
from store.workload import ProduceSpec, produce

TOPIC = "Orders"
MESSAGES = 2000
BODY_BYTES = 500
STORE_CONFIG = StoreConfig(
    mapped_file_size_commitlog=256 * 1024,  # several segments, so runs break at segment ends
    consume_queue_entries_per_file=500,
    max_hash_slot_num=64,
    max_index_num=8192,
)
WAIT_LIMIT_S = 10
LONG_POLL_MS = 30_000  # the server's max_long_poll_s


@pytest.fixture
def store(tmp_path: Path) -> Iterator[MessageStore]:
    with MessageStore(tmp_path / "store", STORE_CONFIG) as store:
        fill(store, MESSAGES)
        yield store


def fill(store: MessageStore, count: int, body_bytes: int = BODY_BYTES) -> None:
    produce(store, ProduceSpec(TOPIC, count=count, body_size_bytes=body_bytes, tags="TagA"))
    assert store.wait_dispatched(store.commit_log.max_offset, WAIT_LIMIT_S)


def stored_records(store: MessageStore, first: int = 0) -> list[tuple[int, bytes]]:
    """(queue offset, record bytes) of every message from `first`, straight from the store."""
    result = store.get_messages(TOPIC, 0, first, 1 << 20, 1 << 40)
    return [(found.queue_offset, bytes(found.data)) for found in result.messages]


@pytest.fixture
def serve(store: MessageStore) -> Iterator[Callable[..., PullServer]]:
    """Starts a PullServer on the store (options are PullServerConfig fields); shut down at the end."""
    servers: list[PullServer] = []

    def start(**options) -> PullServer:
        servers.append(PullServer(store, PullServerConfig(**options)).start())
        return servers[-1]

    yield start
    for server in servers:
        server.shutdown()


def pull_everything(client: PullClient, path: SendPath | None = None, batch: int = 300) -> list:
    messages, offset = [], 0
    for _ in range(MESSAGES):  # bounded: each round takes at least one message or ends
        result = client.pull(TOPIC, 0, offset, max_count=batch, path=path)
        if not result.messages:
            assert result.status is Status.NO_NEW_MESSAGE
            return messages
        messages.extend(result.messages)
        offset = result.next_begin_offset
    raise AssertionError("the pulls never reached the end of the queue")


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_LIMIT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.02)


# ---- every path -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", list(SendPath))
def test_each_path_delivers_the_records_the_store_holds(store: MessageStore, serve, path: SendPath):
    server = serve()
    with PullClient(server.address) as client:
        pulled = pull_everything(client, path)
    assert [(m.queue_offset, bytes(m.data)) for m in pulled] == stored_records(store)
    assert [bytes(m.record.body) for m in pulled[:2]] == [
        bytes(codec.decode_record(data).body) for _offset, data in stored_records(store)[:2]
    ]
    assert all(m.record.queue_offset == m.queue_offset for m in pulled)
    counters = server.counters().paths[path]
    assert counters.messages == MESSAGES
    assert counters.bytes_sent == sum(m.size_bytes for m in pulled)
    if path in RUN_COALESCING_PATHS:  # one call per run of adjacent records, at most one run per segment
        segments = len(store.commit_log.mapped_file_queue.mapped_files)
        assert counters.transfer_calls <= counters.requests + segments
    else:
        assert counters.transfer_calls == MESSAGES


def test_the_server_default_path_serves_requests_without_a_path_hint(store: MessageStore, serve):
    server = serve(default_path=SendPath.SENDFILE)
    with PullClient(server.address, body=BodyMode.COUNT) as client:
        result = client.pull(TOPIC, 0, 0, max_count=100)
    assert result.path is SendPath.SENDFILE
    assert [(m.queue_offset, m.data) for m in result.messages] == [(n, None) for n in range(100)]
    assert result.body_bytes == sum(len(data) for _offset, data in stored_records(store)[:100])


def test_a_pull_outside_the_queue_says_where_to_go(store: MessageStore, serve):
    server = serve()
    with PullClient(server.address) as client:
        past_end = client.pull(TOPIC, 0, MESSAGES + 50)
        at_end = client.pull(TOPIC, 0, MESSAGES)
    assert (past_end.status, past_end.next_begin_offset) == (Status.OFFSET_OVERFLOW_BADLY, MESSAGES)
    assert (at_end.status, at_end.next_begin_offset, at_end.messages) == (Status.NO_NEW_MESSAGE, MESSAGES, [])


# ---- long polling ---------------------------------------------------------------------------------------


def test_a_long_poll_returns_as_soon_as_a_message_is_put(store: MessageStore, serve):
    server = serve()
    answered: list = []

    def long_poll() -> None:
        with PullClient(server.address) as client:
            answered.append(client.pull(TOPIC, 0, MESSAGES, long_poll_ms=LONG_POLL_MS))
            answered.append(time.monotonic())

    poller = threading.Thread(target=long_poll)
    poller.start()
    wait_until(lambda: server.counters().long_polls == 1, "the pull is waiting")
    put_at = time.monotonic()
    fill(store, 1)
    poller.join(LONG_POLL_MS / 1000)
    result, answered_at = answered
    assert result.status is Status.FOUND
    assert [m.queue_offset for m in result.messages] == [MESSAGES]
    # Woken by the put, not by the timeout: half the timeout leaves a loaded machine all the slack it needs.
    assert answered_at - put_at < LONG_POLL_MS / 1000 / 2


def test_a_long_poll_without_news_ends_at_its_timeout(store: MessageStore, serve):
    server = serve()
    with PullClient(server.address) as client:
        began = time.monotonic()
        result = client.pull(TOPIC, 0, MESSAGES, long_poll_ms=400)
    assert result.status is Status.NO_NEW_MESSAGE
    assert 0.4 <= time.monotonic() - began < WAIT_LIMIT_S  # at the timeout, not never


# ---- misbehaving peers ------------------------------------------------------------------------------------


def raw_connection(server: PullServer, receive_buffer_bytes: int | None = None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if receive_buffer_bytes is not None:  # before connecting, so that the window stays small
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer_bytes)
    sock.settimeout(WAIT_LIMIT_S)
    sock.connect(server.address)
    return sock


def read_response(sock: socket.socket):
    (length,) = FRAME_LENGTH.unpack(receive_exactly(sock, FRAME_LENGTH.size))
    return decode_response_header(receive_exactly(sock, length))


def receive_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, "the server closed the connection"
        data += chunk
    return data


def closed_by_server(sock: socket.socket) -> bool:
    """True when the server closes the connection (whatever it sent before) within the socket timeout."""
    try:
        for _ in range(1000):
            if sock.recv(1 << 20) == b"":
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return False


def served_normally(server: PullServer) -> None:
    with PullClient(server.address) as client:
        assert len(pull_everything(client, batch=1000)) == MESSAGES


@pytest.mark.parametrize("path", [SendPath.MMAP_WRITE, SendPath.SENDFILE])
def test_a_peer_that_stops_reading_is_dropped_while_another_is_served(serve, path: SendPath):
    server = serve(send_timeout_s=0.5, default_path=path)
    with raw_connection(server, receive_buffer_bytes=16 * 1024) as idle_reader:
        # 32 pulls (~18 MB of answers) queued at once and never read: far beyond the socket buffers.
        request = PullRequest(1, TOPIC, 0, 0, max_count=MESSAGES)
        idle_reader.sendall(encode_request(request) * 32)
        served_normally(server)
        wait_until(lambda: server.counters().stalled_peers == 1, "the idle reader is dropped")
    served_normally(server)
    wait_until(lambda: server.counters().connections_active == 0, "every connection is forgotten")


def test_a_peer_that_disconnects_mid_frame_is_cleaned_up(serve):
    server = serve()
    frame = encode_request(PullRequest(7, TOPIC, 0, 0, max_count=10))
    with raw_connection(server) as leaver:
        leaver.sendall(frame[: len(frame) // 2])
    served_normally(server)
    wait_until(lambda: server.counters().disconnects_mid_frame == 1, "the half frame is noticed")
    wait_until(lambda: server.counters().connections_active == 0, "the connection is forgotten")


def test_a_peer_that_stops_mid_frame_is_closed_after_the_request_timeout(serve):
    server = serve(request_timeout_s=0.3)
    frame = encode_request(PullRequest(7, TOPIC, 0, 0, max_count=10))
    with raw_connection(server) as dawdler:
        dawdler.sendall(frame[:5])
        served_normally(server)
        assert closed_by_server(dawdler)
    assert server.counters().slow_requests == 1


def test_a_frame_with_a_wrong_magic_is_closed_without_an_answer(serve):
    server = serve()
    with raw_connection(server) as stranger:
        stranger.sendall(FRAME_LENGTH.pack(20) + b"\xde\xad\xbe\xef" + bytes(16))
        assert stranger.recv(1024) == b""
    served_normally(server)
    assert server.counters().garbage_closes == 1


def test_another_protocol_is_told_off_and_closed(serve):
    server = serve()
    with raw_connection(server) as browser:
        browser.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")  # "GET " read as a length: absurd
        assert read_response(browser).status is Status.BAD_REQUEST
        assert closed_by_server(browser)
    served_normally(server)
    assert server.counters().garbage_closes == 1


def test_an_absurd_frame_length_is_answered_then_closed(serve):
    server = serve()
    with raw_connection(server) as liar:
        liar.sendall(FRAME_LENGTH.pack(0xFFFF_FFF0) + REQUEST_PREAMBLE.pack(MAGIC, 1, RequestKind.PULL, 9))
        answer = read_response(liar)
        assert (answer.status, answer.request_id) == (Status.BAD_REQUEST, 0)
        assert closed_by_server(liar)
    served_normally(server)


def test_bad_fields_get_an_error_and_the_connection_goes_on(serve):
    server = serve()
    good = encode_request(PullRequest(3, TOPIC, 0, 0, max_count=5))
    preamble = REQUEST_PREAMBLE.pack(MAGIC, 1, RequestKind.PULL, 2)
    topic_past_the_frame = preamble + struct.pack(">H", 5000) + b"Orders"
    unknown_path = bytearray(good)
    unknown_path[-1] = 99
    with raw_connection(server) as sloppy:
        sloppy.sendall(FRAME_LENGTH.pack(len(topic_past_the_frame)) + topic_past_the_frame)
        answer = read_response(sloppy)
        assert (answer.status, answer.request_id) == (Status.BAD_REQUEST, 2)
        sloppy.sendall(bytes(unknown_path))
        assert read_response(sloppy).status is Status.BAD_REQUEST
        sloppy.sendall(good)
        answer = read_response(sloppy)
        assert (answer.status, answer.request_id, len(answer.entries)) == (Status.FOUND, 3, 5)
    assert server.counters().bad_requests == 2


def test_an_unknown_topic_is_an_error_and_the_client_goes_on(serve):
    server = serve()
    with PullClient(server.address) as client:
        with pytest.raises(PullFailed) as failed:
            client.pull("NoSuchTopic", 0, 0)
        assert failed.value.status is Status.UNKNOWN_QUEUE
        assert len(pull_everything(client)) == MESSAGES


def test_a_path_the_filesystem_refuses_is_an_error_and_the_client_goes_on(serve, monkeypatch):
    def refuse(source, identity):
        raise transfer.DirectIOUnsupported(f"{source}: this filesystem refuses O_DIRECT")

    monkeypatch.setattr(transfer._DirectFiles, "_open_direct", staticmethod(refuse))  # as procfs would
    server = serve()
    with PullClient(server.address) as client:
        with pytest.raises(PullFailed) as failed:
            client.pull(TOPIC, 0, 0, path=SendPath.DIRECT_READ_WRITE)
        assert failed.value.status is Status.PATH_UNSUPPORTED
        assert "O_DIRECT" in failed.value.message
        assert len(pull_everything(client, SendPath.SENDFILE)) == MESSAGES


def test_connections_beyond_the_limit_are_refused(serve):
    server = serve(max_connections=1)
    with PullClient(server.address) as client:
        client.pull(TOPIC, 0, 0, max_count=1)  # its connection is registered by now
        with raw_connection(server) as extra:
            assert closed_by_server(extra)
        assert len(pull_everything(client)) == MESSAGES
    assert server.counters().connections_refused == 1


def test_a_client_whose_server_goes_away_gets_a_protocol_error(serve):
    server = serve()
    with PullClient(server.address) as client:
        client.pull(TOPIC, 0, 0, max_count=1)
        server.shutdown()
        with pytest.raises(ProtocolError):
            client.pull(TOPIC, 0, 1, max_count=1)


def test_shutdown_is_prompt_with_idle_and_long_polling_clients(serve):
    server = serve()
    with PullClient(server.address), PullClient(server.address) as poller:
        failures: list[Exception] = []

        def long_poll() -> None:
            try:
                poller.pull(TOPIC, 0, MESSAGES, long_poll_ms=20_000)
            except ProtocolError as error:
                failures.append(error)

        thread = threading.Thread(target=long_poll)
        thread.start()
        wait_until(lambda: server.counters().long_polls == 1, "the pull is waiting")
        began = time.monotonic()
        server.shutdown()
        assert time.monotonic() - began < 2.0
        thread.join(WAIT_LIMIT_S)
    assert server.counters().connections_active == 0


def test_only_loopback_unless_remote_is_allowed(store: MessageStore):
    with pytest.raises(NonLoopbackBind, match="allow_remote"):
        PullServer(store, PullServerConfig(host="0.0.0.0"))
    PullServer(store, PullServerConfig(host="0.0.0.0", allow_remote=True))  # not started: loopback only here
    PullServer(store, PullServerConfig(host="::1"))


# ---- consumer offsets -------------------------------------------------------------------------------------


def test_offsets_survive_a_restart_and_the_consumer_resumes_exactly(tmp_path: Path):
    root = tmp_path / "store"
    processed: list[tuple[int, bytes]] = []
    with MessageStore(root, STORE_CONFIG) as store:
        fill(store, MESSAGES)
        expected = stored_records(store)
        with PullServer(store) as server, PullClient(server.address) as client:
            consumer = GroupConsumer(client, "billing", TOPIC, 0)
            assert consumer.resume() == 0  # nothing committed yet
            for _ in range(3):
                processed.extend((m.queue_offset, bytes(m.data)) for m in consumer.poll(max_count=250))
                consumer.commit()
            committed = consumer.offset
        # The server persisted on shutdown, while the store is still running.
        assert load_consumer_offsets(consumer_offset_path(root)).get(TOPIC, "billing", 0) == committed
    with (
        MessageStore(root, STORE_CONFIG) as store,
        PullServer(store) as server,
        PullClient(server.address) as client,
    ):
        consumer = GroupConsumer(client, "billing", TOPIC, 0)
        assert consumer.resume() == committed == 750
        for _ in range(MESSAGES):
            batch = consumer.poll(max_count=400)
            if not batch:
                break
            processed.extend((m.queue_offset, bytes(m.data)) for m in batch)
            consumer.commit()
        assert client.query_offset("billing", TOPIC, 0) == MESSAGES
        assert client.query_offset("nobody", TOPIC, 0) is None
    assert processed == expected  # every message once, in order: no duplicates, no gaps


def test_a_member_that_retention_overtook_moves_to_the_new_minimum_and_counts_what_it_lost(
    store: MessageStore, serve
):
    """Retention deletes by age, not by what a group has read. A member behind it is moved up to the queue's
    new minimum, and `skipped` says how many messages it lost: offset moved = polled + skipped."""
    physical_of = {
        found.queue_offset: found.physical_offset
        for found in store.get_messages(TOPIC, 0, 0, 1 << 20, 1 << 40).messages
    }
    server = serve()
    with PullClient(server.address) as client:
        member = GroupConsumer(client, "slow", TOPIC, 0)
        assert member.resume() == 0
        polled = len(member.poll(max_count=10))
        assert member.offset == polled == 10 and member.skipped == 0

        new_minimum = expire_all_but_the_last_segment(store)
        lost = sum(1 for offset, physical in physical_of.items() if offset >= 10 and physical < new_minimum)
        assert lost > 0

        assert member.poll(max_count=5) == []  # OFFSET_TOO_SMALL: nothing, and where the queue begins now
        assert member.skipped == lost and member.offset == 10 + lost
        resumed = member.poll(max_count=5)
        assert [message.queue_offset for message in resumed] == list(range(10 + lost, 15 + lost))
        assert physical_of[resumed[0].queue_offset] >= new_minimum
        assert member.offset == polled + len(resumed) + member.skipped
