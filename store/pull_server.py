"""PullServer: consumers pull records from a MessageStore over TCP, each response body shipped by a send path.

A pull reads the ConsumeQueue from a queue offset (MessageStore.get_messages), then sends the records'
CommitLog bytes unchanged, by the send path the server or the request chose (store.transfer). Records are
contiguous in the CommitLog only within one segment and only where the queue's entries are adjacent; the
paths whose cost is per call (sendfile, splice, zerocopy) get each such run in one call, the copying paths
get one call per record, as RocketMQ's ManyMessageTransfer writes one mapped buffer per message.

Consumer offsets live in the store (config/consumerOffset.json): a consumer in another process commits
and queries them with requests of their own. The store's scheduler persists them every 5 s; the server
persists them once more when it shuts down.

Wire format (version 1). Every integer is big-endian; `str` is a u16 byte length and that many bytes of
UTF-8. A connection carries requests and responses in turn, matched by request id.

Request frame:

    u32  frame_length      bytes after this field, 14 .. 65 536
    u32  magic             0x4D515055 ("MQPU")
    u8   version           1
    u8   kind              1 PULL, 2 COMMIT_OFFSET, 3 QUERY_OFFSET
    u64  request_id        echoed in the response
    PULL:           str topic, i32 queue_id, i64 queue_offset, u32 max_count, u32 max_bytes (0: the server's
                    limit), u32 long_poll_timeout_ms (0: answer at once), u8 path_hint (0: the server's
                    default path, else a PATH_CODES value)
    COMMIT_OFFSET:  str group, str topic, i32 queue_id, i64 offset (the next queue offset to consume)
    QUERY_OFFSET:   str group, str topic, i32 queue_id

Response:

    u32  header_length     bytes after this field up to the end of the header; the body follows it
    u32  magic, u8 version, u8 kind (the request's; 0 when the request could not be read)
    u16  status            < 100: the kind's fields follow; >= 100 (an error): str message follows
    u64  request_id        (0 when the request could not be read)
    PULL:           i64 next_begin_offset, i64 min_offset, i64 max_offset, u8 path_code (the path used),
                    u32 message_count, message_count x (i64 queue_offset, u32 size), u64 body_length,
                    then body_length bytes: the records, in queue order, as they are in the CommitLog
    COMMIT_OFFSET:  i64 offset (as committed)
    QUERY_OFFSET:   i64 offset (-1: the group has no offset for that queue)

Statuses: 0 FOUND, 1 NO_NEW_MESSAGE (the offset is the queue's end), 2 NO_MESSAGE_IN_QUEUE,
3 OFFSET_TOO_SMALL and 4 OFFSET_OVERFLOW_BADLY (next_begin_offset says where to go), 10 OK; errors:
100 BAD_REQUEST, 101 UNKNOWN_QUEUE (no such topic or queue), 102 PATH_UNSUPPORTED, 103 SERVER_ERROR.

What the server does with bad peers, so that one cannot wedge it for others (a thread per connection):
- a frame whose magic is wrong, or whose length is absurd: an error response when the frame length is the
  problem, then the connection is closed (nothing after it can be trusted to be a frame);
- a well-framed request with bad fields (lengths past the frame, empty topic, unknown path, unknown topic):
  an error response, and the connection goes on;
- a peer that disconnects mid-frame, or sends part of a frame and then nothing for `request_timeout_s`:
  the connection is closed;
- a peer that stops reading its response: the send times out after `send_timeout_s` and it is dropped.

A segment truncated by another process under a response: a sealed segment is leased (store.lease), so the
truncation waits until the response's views are released (at most send_timeout_s more for a consumer that
stops reading), and later pulls get SERVER_ERROR (its records are no longer served). The active segment
cannot be leased: a send from its truncated mapping fails with EFAULT (RangeOutsideFile), as does
sendfile's short count; the response cannot be completed, so that consumer's connection is closed and
counted in `truncated_sources`. The server goes on serving the others.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import IntEnum
from types import MappingProxyType

from store.errors import StoreError
from store.mapped_file import MappedFile, SegmentRevokedError
from store.message_store import FoundMessage, GetResult, GetStatus, MessageStore
from store.transfer import (
    RUN_COALESCING_PATHS,
    PathUnsupported,
    PeerClosed,
    RangeOutsideFile,
    Sender,
    SendPath,
    TransferOptions,
    TransferResult,
    TransferStalled,
    timeval,
)

log = logging.getLogger(__name__)

MAGIC = 0x4D515055  # "MQPU"
VERSION = 1
MAX_REQUEST_BYTES = 64 * 1024
MAX_NAME_BYTES = 255  # RocketMQ caps topics at 127 characters and groups at 255

FRAME_LENGTH = struct.Struct(">I")
REQUEST_PREAMBLE = struct.Struct(">IBBQ")  # magic, version, kind, request_id
RESPONSE_PREAMBLE = struct.Struct(">IBBHQ")  # magic, version, kind, status, request_id
NAME_LENGTH = struct.Struct(">H")
PULL_FIELDS = struct.Struct(">iqIIIB")  # queue_id, queue_offset, max_count, max_bytes, long_poll_ms, path
QUEUE_ID = struct.Struct(">i")
OFFSET = struct.Struct(">q")
PULL_RESULT_FIELDS = struct.Struct(">qqqBI")  # next_begin, min, max offsets, path_code, message_count
TABLE_ENTRY = struct.Struct(">qI")  # queue_offset, size
BODY_LENGTH = struct.Struct(">Q")

PATH_CODES = MappingProxyType({path: code for code, path in enumerate(SendPath, start=1)})
PATHS_BY_CODE = MappingProxyType({code: path for path, code in PATH_CODES.items()})
DEFAULT_PATH_CODE = 0

_STOP_CHECK_INTERVAL_S = 0.25  # how often waiting threads (accept, long polls) look at the stop flag


class RequestKind(IntEnum):
    PULL = 1
    COMMIT_OFFSET = 2
    QUERY_OFFSET = 3


class Status(IntEnum):
    FOUND = 0
    NO_NEW_MESSAGE = 1
    NO_MESSAGE_IN_QUEUE = 2
    OFFSET_TOO_SMALL = 3
    OFFSET_OVERFLOW_BADLY = 4
    OK = 10
    BAD_REQUEST = 100
    UNKNOWN_QUEUE = 101
    PATH_UNSUPPORTED = 102
    SERVER_ERROR = 103

    @property
    def is_error(self) -> bool:
        return self >= 100


_STATUS_OF_GET = {
    GetStatus.FOUND: Status.FOUND,
    GetStatus.OFFSET_OVERFLOW_ONE: Status.NO_NEW_MESSAGE,
    GetStatus.NO_MESSAGE_IN_QUEUE: Status.NO_MESSAGE_IN_QUEUE,
    GetStatus.OFFSET_TOO_SMALL: Status.OFFSET_TOO_SMALL,
    GetStatus.OFFSET_OVERFLOW_BADLY: Status.OFFSET_OVERFLOW_BADLY,
}
_WORTH_WAITING = (GetStatus.OFFSET_OVERFLOW_ONE, GetStatus.NO_MESSAGE_IN_QUEUE)


class NonLoopbackBind(StoreError):
    """The server was asked to listen beyond loopback without allow_remote=True."""


class BadRequest(StoreError):
    """A request frame that is framed correctly but whose fields make no sense."""

    def __init__(self, reason: str, *, kind: int = 0, request_id: int = 0):
        super().__init__(reason)
        self.kind = kind
        self.request_id = request_id


class GarbageFrame(StoreError):
    """Bytes that are not a frame of this protocol: the connection cannot be trusted to resynchronise."""


# ---- requests -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PullRequest:
    request_id: int
    topic: str
    queue_id: int
    queue_offset: int
    max_count: int
    max_bytes: int = 0  # 0: the server's limit
    long_poll_timeout_ms: int = 0
    path: SendPath | None = None  # None: the server's default


@dataclass(frozen=True)
class CommitOffsetRequest:
    request_id: int
    group: str
    topic: str
    queue_id: int
    offset: int


@dataclass(frozen=True)
class QueryOffsetRequest:
    request_id: int
    group: str
    topic: str
    queue_id: int


Request = PullRequest | CommitOffsetRequest | QueryOffsetRequest


def encode_request(request: Request) -> bytes:
    """The whole frame, length prefix included."""
    if isinstance(request, PullRequest):
        kind = RequestKind.PULL
        path_code = DEFAULT_PATH_CODE if request.path is None else PATH_CODES[SendPath(request.path)]
        fields = _name(request.topic) + PULL_FIELDS.pack(
            request.queue_id,
            request.queue_offset,
            request.max_count,
            request.max_bytes,
            request.long_poll_timeout_ms,
            path_code,
        )
    elif isinstance(request, CommitOffsetRequest):
        kind = RequestKind.COMMIT_OFFSET
        fields = _name(request.group) + _name(request.topic)
        fields += QUEUE_ID.pack(request.queue_id) + OFFSET.pack(request.offset)
    else:
        kind = RequestKind.QUERY_OFFSET
        fields = _name(request.group) + _name(request.topic) + QUEUE_ID.pack(request.queue_id)
    body = REQUEST_PREAMBLE.pack(MAGIC, VERSION, kind, request.request_id) + fields
    return FRAME_LENGTH.pack(len(body)) + body


def _name(text: str) -> bytes:
    encoded = text.encode()
    if len(encoded) > MAX_NAME_BYTES:
        raise ValueError(f"{text[:40]!r}...: names are at most {MAX_NAME_BYTES} bytes of UTF-8")
    return NAME_LENGTH.pack(len(encoded)) + encoded


def check_frame_length(length: int) -> None:
    """GarbageFrame for a request frame length no sane client sends."""
    if not REQUEST_PREAMBLE.size <= length <= MAX_REQUEST_BYTES:
        raise GarbageFrame(
            f"a request frame of {length} bytes (from {REQUEST_PREAMBLE.size} to {MAX_REQUEST_BYTES})"
        )


def decode_request(frame: bytes) -> Request:
    """A request from a frame's bytes (after the length prefix). GarbageFrame when it is not this
    protocol at all, BadRequest when its fields are wrong (carrying the kind and request id if known)."""
    if len(frame) < REQUEST_PREAMBLE.size:
        raise GarbageFrame(f"a request frame of {len(frame)} bytes")
    magic, version, kind, request_id = REQUEST_PREAMBLE.unpack_from(frame)
    if magic != MAGIC:
        raise GarbageFrame(f"bad magic 0x{magic:08x}")
    if version != VERSION:
        raise BadRequest(f"protocol version {version} (this server speaks {VERSION})", request_id=request_id)
    fields = _FieldReader(frame, REQUEST_PREAMBLE.size, kind, request_id)
    if kind == RequestKind.PULL:
        return _decode_pull(fields, request_id)
    if kind == RequestKind.COMMIT_OFFSET:
        group, topic = fields.name("group"), fields.name("topic")
        (queue_id,), (offset,) = fields.unpack(QUEUE_ID), fields.unpack(OFFSET)
        fields.finish()
        fields.require(queue_id >= 0 and offset >= 0, "queue id and offset must not be negative")
        return CommitOffsetRequest(request_id, group, topic, queue_id, offset)
    if kind == RequestKind.QUERY_OFFSET:
        group, topic = fields.name("group"), fields.name("topic")
        (queue_id,) = fields.unpack(QUEUE_ID)
        fields.finish()
        fields.require(queue_id >= 0, "queue id must not be negative")
        return QueryOffsetRequest(request_id, group, topic, queue_id)
    raise BadRequest(f"unknown request kind {kind}", request_id=request_id)


def _decode_pull(fields: _FieldReader, request_id: int) -> PullRequest:
    topic = fields.name("topic")
    queue_id, queue_offset, max_count, max_bytes, long_poll_ms, path_code = fields.unpack(PULL_FIELDS)
    fields.finish()
    fields.require(queue_id >= 0 and queue_offset >= 0, "queue id and queue offset must not be negative")
    fields.require(max_count > 0, "max_count must be at least 1")
    fields.require(path_code == DEFAULT_PATH_CODE or path_code in PATHS_BY_CODE, f"unknown path {path_code}")
    path = PATHS_BY_CODE.get(path_code)
    return PullRequest(request_id, topic, queue_id, queue_offset, max_count, max_bytes, long_poll_ms, path)


class _FieldReader:
    """Reads a request's fields in order; every overrun or leftover is a BadRequest."""

    def __init__(self, frame: bytes, position: int, kind: int, request_id: int):
        self.frame = frame
        self.position = position
        self.kind = kind
        self.request_id = request_id

    def require(self, condition: bool, reason: str) -> None:
        if not condition:
            raise BadRequest(reason, kind=self.kind, request_id=self.request_id)

    def unpack(self, layout: struct.Struct) -> tuple:
        self.require(self.position + layout.size <= len(self.frame), "the frame ends inside a field")
        values = layout.unpack_from(self.frame, self.position)
        self.position += layout.size
        return values

    def name(self, what: str) -> str:
        (length,) = self.unpack(NAME_LENGTH)
        self.require(0 < length <= MAX_NAME_BYTES, f"a {what} of {length} bytes")
        self.require(self.position + length <= len(self.frame), f"the {what} runs past the frame")
        raw = self.frame[self.position : self.position + length]
        self.position += length
        try:
            return raw.decode()
        except UnicodeDecodeError:
            raise BadRequest(f"the {what} is not UTF-8", kind=self.kind, request_id=self.request_id) from None

    def finish(self) -> None:
        self.require(
            self.position == len(self.frame), f"{len(self.frame) - self.position} bytes after the fields"
        )


# ---- responses ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PullResponseHeader:
    request_id: int
    status: Status
    next_begin_offset: int
    min_offset: int
    max_offset: int
    path: SendPath | None
    entries: tuple[tuple[int, int], ...]  # (queue_offset, size) per message, in body order
    body_length: int


@dataclass(frozen=True)
class OffsetResponse:
    request_id: int
    kind: RequestKind
    status: Status
    offset: int | None  # None: no offset committed


@dataclass(frozen=True)
class ErrorResponse:
    request_id: int
    kind: int
    status: Status
    message: str


Response = PullResponseHeader | OffsetResponse | ErrorResponse


def _framed(kind: int, status: Status, request_id: int, fields: bytes) -> bytes:
    header = RESPONSE_PREAMBLE.pack(MAGIC, VERSION, kind, status, request_id) + fields
    return FRAME_LENGTH.pack(len(header)) + header


def encode_pull_header(
    request_id: int,
    status: Status,
    next_begin_offset: int,
    min_offset: int,
    max_offset: int,
    path: SendPath,
    messages: list[FoundMessage],
) -> bytes:
    table = b"".join(TABLE_ENTRY.pack(found.queue_offset, found.size_bytes) for found in messages)
    fields = PULL_RESULT_FIELDS.pack(
        next_begin_offset, min_offset, max_offset, PATH_CODES[path], len(messages)
    )
    body_length = sum(found.size_bytes for found in messages)
    return _framed(RequestKind.PULL, status, request_id, fields + table + BODY_LENGTH.pack(body_length))


def encode_offset_response(kind: RequestKind, request_id: int, offset: int | None) -> bytes:
    return _framed(kind, Status.OK, request_id, OFFSET.pack(-1 if offset is None else offset))


def encode_error(kind: int, request_id: int, status: Status, message: str) -> bytes:
    encoded = message.encode()[:1000]
    return _framed(kind, status, request_id, NAME_LENGTH.pack(len(encoded)) + encoded)


def decode_response_header(header: bytes) -> Response:
    """A response header (the bytes after its length prefix). Raises ValueError when it is malformed."""
    magic, version, kind, status_code, request_id = RESPONSE_PREAMBLE.unpack_from(header)
    if magic != MAGIC or version != VERSION:
        raise ValueError(f"not a version {VERSION} response (magic 0x{magic:08x}, version {version})")
    status = Status(status_code)
    position = RESPONSE_PREAMBLE.size
    if status.is_error:
        (length,) = NAME_LENGTH.unpack_from(header, position)
        message = header[position + NAME_LENGTH.size : position + NAME_LENGTH.size + length]
        return ErrorResponse(request_id, kind, status, message.decode(errors="replace"))
    if kind == RequestKind.PULL:
        return _decode_pull_header(header, position, request_id, status)
    (offset,) = OFFSET.unpack_from(header, position)
    return OffsetResponse(request_id, RequestKind(kind), status, None if offset < 0 else offset)


def _decode_pull_header(header: bytes, position: int, request_id: int, status: Status) -> PullResponseHeader:
    next_begin, minimum, maximum, path_code, count = PULL_RESULT_FIELDS.unpack_from(header, position)
    position += PULL_RESULT_FIELDS.size
    expected = position + count * TABLE_ENTRY.size + BODY_LENGTH.size
    if len(header) != expected:
        raise ValueError(f"a pull header of {len(header)} bytes for {count} messages (expected {expected})")
    entries = tuple(TABLE_ENTRY.iter_unpack(header[position : position + count * TABLE_ENTRY.size]))
    (body_length,) = BODY_LENGTH.unpack_from(header, position + count * TABLE_ENTRY.size)
    if body_length != sum(size for _offset, size in entries):
        raise ValueError(f"body_length {body_length} disagrees with the message sizes")
    path = PATHS_BY_CODE.get(path_code)
    return PullResponseHeader(request_id, status, next_begin, minimum, maximum, path, entries, body_length)


# ---- configuration and counters ------------------------------------------------------------------------


@dataclass(frozen=True)
class PullServerConfig:
    host: str = "127.0.0.1"
    port: int = 0  # 0: any free port (see PullServer.address)
    default_path: SendPath = SendPath.MMAP_WRITE  # RocketMQ's own
    allow_remote: bool = False  # listening beyond loopback must be asked for
    max_connections: int = 64
    send_timeout_s: float = 10.0  # a peer that takes nothing for this long is dropped
    request_timeout_s: float = 5.0  # the rest of a frame must arrive within this once it has begun
    idle_timeout_s: float = 300.0  # a connection without requests for this long is closed
    max_messages_per_pull: int = 1024
    max_bytes_per_pull: int = 64 * 1024 * 1024
    max_long_poll_s: float = 30.0
    chunk_bytes: int = 256 * 1024
    pipe_bytes: int = 1 << 20

    def __post_init__(self) -> None:
        object.__setattr__(self, "default_path", SendPath(self.default_path))  # "sendfile" works too
        if min(self.send_timeout_s, self.request_timeout_s, self.idle_timeout_s) <= 0:
            raise ValueError("timeouts must be positive: a peer must never be able to hold a thread forever")
        if min(self.max_connections, self.max_messages_per_pull, self.max_bytes_per_pull) <= 0:
            raise ValueError("limits must be positive")


@dataclass(frozen=True)
class PathCounters:
    requests: int
    messages: int
    bytes_sent: int  # record bytes (bodies), not headers
    transfer_calls: int  # Sender.send calls: runs for the coalescing paths, records for the others
    syscalls: MappingProxyType[str, int]  # as each TransferResult counted them
    send_s: float


@dataclass(frozen=True)
class PullServerCounters:
    """A snapshot for the dashboard."""

    paths: MappingProxyType[SendPath, PathCounters]
    connections_active: int
    connections_accepted: int = 0
    connections_refused: int = 0  # over max_connections
    requests: int = 0
    bad_requests: int = 0  # answered with an error status (bad fields, unknown queue); the connection went on
    garbage_closes: int = 0  # not our protocol, or an absurd frame length: closed
    disconnects_mid_frame: int = 0
    slow_requests: int = 0  # a frame begun and not finished within request_timeout_s: closed
    stalled_peers: int = 0  # stopped reading a response: dropped after send_timeout_s
    peers_gone: int = 0  # closed or reset while we were sending
    truncated_sources: int = 0  # a segment shrank (or was revoked) under a response: its connection closed
    long_polls: int = 0
    offset_commits: int = 0
    offset_queries: int = 0


_EVENTS = frozenset(PullServerCounters.__dataclass_fields__) - {"paths", "connections_active"}


@dataclass
class _PathTally:
    requests: int = 0
    messages: int = 0
    bytes_sent: int = 0
    transfer_calls: int = 0
    syscalls: Counter[str] = field(default_factory=Counter)
    send_s: float = 0.0

    def add(self, messages: int, results: list[TransferResult]) -> None:
        self.requests += 1
        self.messages += messages
        self.transfer_calls += len(results)
        for result in results:
            self.bytes_sent += result.bytes_sent
            self.send_s += result.elapsed_s
            self.syscalls.update(result.syscalls)

    def frozen(self) -> PathCounters:
        syscalls = MappingProxyType(dict(self.syscalls))
        return PathCounters(
            self.requests, self.messages, self.bytes_sent, self.transfer_calls, syscalls, self.send_s
        )


class _Counters:
    """What connection threads report, behind one lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: Counter[str] = Counter()
        self._paths: dict[SendPath, _PathTally] = {}

    def add(self, event: str) -> None:
        if event not in _EVENTS:
            raise ValueError(f"no counter named {event!r}")
        with self._lock:
            self._events[event] += 1

    def add_pull(self, path: SendPath, messages: int, results: list[TransferResult]) -> None:
        with self._lock:
            self._paths.setdefault(path, _PathTally()).add(messages, results)

    def snapshot(self, active: int) -> PullServerCounters:
        with self._lock:
            paths = MappingProxyType({path: tally.frozen() for path, tally in self._paths.items()})
            return PullServerCounters(paths, active, **self._events)


# ---- the server -----------------------------------------------------------------------------------------


class PullServer:
    """Serves pulls and consumer offsets of one running MessageStore. `with PullServer(store) as server:`."""

    def __init__(self, store: MessageStore, config: PullServerConfig | None = None):
        self.store = store
        self.config = config or PullServerConfig()
        _require_loopback(self.config.host, self.config.allow_remote)
        self.stopping = threading.Event()
        self._counters = _Counters()
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._connections: set[_Connection] = set()
        self._connections_lock = threading.Lock()

    def start(self) -> PullServer:
        family = socket.AF_INET6 if ":" in self.config.host else socket.AF_INET
        self._listener = socket.create_server((self.config.host, self.config.port), family=family, backlog=64)
        self._listener.settimeout(_STOP_CHECK_INTERVAL_S)  # accept wakes up to see the stop flag
        self._accept_thread = threading.Thread(target=self._accept_loop, name="PullServerAccept", daemon=True)
        self._accept_thread.start()
        log.info("pull server on %s:%d, default path %s", *self.address[:2], self.config.default_path)
        return self

    @property
    def address(self) -> tuple[str, int]:
        if self._listener is None:
            raise StoreError("the pull server is not started")
        host, port = self._listener.getsockname()[:2]
        return host, port

    def counters(self) -> PullServerCounters:
        with self._connections_lock:
            active = len(self._connections)
        return self._counters.snapshot(active)

    def shutdown(self, timeout_s: float = 5.0) -> None:
        """Stop accepting, close every connection (a response being sent is cut), wait for the connection
        threads, and persist the consumer offsets."""
        if self.stopping.is_set():
            return
        self.stopping.set()
        if self._accept_thread is not None:
            self._accept_thread.join(timeout_s)
        if self._listener is not None:
            self._listener.close()
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            connection.interrupt()
        deadline = time.monotonic() + timeout_s
        for connection in connections:
            connection.thread.join(max(0.0, deadline - time.monotonic()))
        try:
            self.store.persist_consumer_offsets()
        except (StoreError, OSError) as error:
            log.warning("consumer offsets not persisted at shutdown: %s", error)

    def __enter__(self) -> PullServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self.stopping.is_set():
            try:
                sock, peer = self._listener.accept()
            except TimeoutError:
                continue
            except OSError as error:
                if not self.stopping.is_set():
                    log.warning("accept failed: %s", error)
                    time.sleep(_STOP_CHECK_INTERVAL_S)  # e.g. EMFILE: do not spin
                continue
            self._admit(sock, peer)

    def _admit(self, sock: socket.socket, peer: tuple) -> None:
        with self._connections_lock:
            if len(self._connections) >= self.config.max_connections:
                self._counters.add("connections_refused")
                sock.close()
                return
            connection = _Connection(self, sock, peer)
            self._connections.add(connection)
        self._counters.add("connections_accepted")
        connection.thread.start()

    def _forget(self, connection: _Connection) -> None:
        with self._connections_lock:
            self._connections.discard(connection)


def _require_loopback(host: str, allow_remote: bool) -> None:
    if allow_remote:
        return
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)}
    except socket.gaierror as error:
        raise NonLoopbackBind(f"cannot resolve {host!r}: {error}") from error
    outside = sorted(a for a in addresses if not ipaddress.ip_address(a.split("%")[0]).is_loopback)
    if outside:
        raise NonLoopbackBind(
            f"{host!r} is not a loopback address ({', '.join(outside)}); pass allow_remote=True to serve "
            "other machines"
        )


class _Disconnected(Exception):
    """The peer closed the connection in the middle of a frame."""


class _SlowRequest(Exception):
    """A frame began and did not finish within request_timeout_s."""


@dataclass
class _Piece:
    """What one Sender.send call ships: one record, or a run of records contiguous in one segment."""

    physical_offset: int
    length: int
    messages: list[FoundMessage]

    @property
    def end(self) -> int:
        return self.physical_offset + self.length


class _Connection:
    """One client's thread: read a request, answer it, until the peer leaves or misbehaves."""

    def __init__(self, server: PullServer, sock: socket.socket, peer: tuple):
        self.server = server
        self.sock = sock
        self.peer = peer
        self.thread = threading.Thread(target=self._run, name=f"PullConnection-{peer[1]}", daemon=True)
        self.sender: Sender | None = None  # made by the connection's thread, which alone uses it

    def interrupt(self) -> None:
        """Wake the thread from any blocking call: its receives and sends fail, and it closes up."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    # ---- the loop ---------------------------------------------------------------------------------------

    def _run(self) -> None:
        config, counters = self.server.config, self.server._counters
        options = TransferOptions(config.chunk_bytes, config.pipe_bytes, config.send_timeout_s)
        try:
            with self.sock, Sender(self.sock, options) as sender:
                self.sender = sender
                self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval(config.request_timeout_s))
                self._serve()
        except _Disconnected:
            counters.add("disconnects_mid_frame")
        except _SlowRequest:
            counters.add("slow_requests")
        except GarbageFrame as error:
            counters.add("garbage_closes")
            log.info("%s: closing: %s", self.peer, error)
        except TransferStalled as error:
            counters.add("stalled_peers")
            log.info("%s: dropped: %s", self.peer, error)
        except RangeOutsideFile as error:
            counters.add("truncated_sources")
            log.warning("%s: closing, the response cannot be completed: %s", self.peer, error)
        except (PeerClosed, ConnectionError) as error:
            counters.add("peers_gone")
            log.debug("%s: gone: %s", self.peer, error)
        except OSError as error:
            if not self.server.stopping.is_set():
                log.warning("%s: connection failed: %s", self.peer, error)
        except Exception:
            log.exception("%s: connection failed", self.peer)
        finally:
            self.server._forget(self)

    def _serve(self) -> None:
        counters = self.server._counters
        while not self.server.stopping.is_set():
            frame = self._read_frame()
            if frame is None:
                return
            counters.add("requests")
            try:
                request = decode_request(frame)
            except BadRequest as error:
                counters.add("bad_requests")
                self.sender.send_bytes(
                    encode_error(error.kind, error.request_id, Status.BAD_REQUEST, str(error))
                )
                continue
            self._answer(request)

    def _answer(self, request: Request) -> None:
        store, counters = self.server.store, self.server._counters
        if isinstance(request, PullRequest):
            self._pull(request)
        elif isinstance(request, CommitOffsetRequest):
            store.commit_consumer_offset(request.group, request.topic, request.queue_id, request.offset)
            counters.add("offset_commits")
            self.sender.send_bytes(
                encode_offset_response(RequestKind.COMMIT_OFFSET, request.request_id, request.offset)
            )
        else:
            offset = store.consumer_offsets.get(request.topic, request.group, request.queue_id)
            counters.add("offset_queries")
            self.sender.send_bytes(
                encode_offset_response(RequestKind.QUERY_OFFSET, request.request_id, offset)
            )

    # ---- frames -------------------------------------------------------------------------------------------

    def _read_frame(self) -> bytes | None:
        """The next request frame (without its length), or None when the peer left between frames, stayed
        idle past idle_timeout_s, or the server is stopping."""
        head = self._receive(FRAME_LENGTH.size, between_frames=True)
        if head is None:
            return None
        (length,) = FRAME_LENGTH.unpack(head)
        try:
            check_frame_length(length)
        except GarbageFrame:
            # The frame cannot be skipped safely, but the peer may be ours with a bug: say why first.
            with contextlib.suppress(OSError, PeerClosed, TransferStalled):
                message = f"a request frame of {length} bytes; at most {MAX_REQUEST_BYTES}"
                self.sender.send_bytes(encode_error(0, 0, Status.BAD_REQUEST, message))
            raise
        return self._receive(length, between_frames=False)

    def _receive(self, size: int, *, between_frames: bool) -> bytes | None:
        buffer = bytearray(size)
        view = memoryview(buffer)
        received, idle_s = 0, 0.0
        wait_s = self.server.config.request_timeout_s
        while received < size:
            try:
                got = self.sock.recv_into(view[received:])
            except BlockingIOError:  # SO_RCVTIMEO passed
                if received or not between_frames:
                    raise _SlowRequest() from None
                idle_s += wait_s
                if idle_s >= self.server.config.idle_timeout_s or self.server.stopping.is_set():
                    return None
                continue
            if got == 0:
                if received == 0 and between_frames:
                    return None
                raise _Disconnected()
            received += got
        return bytes(buffer)

    # ---- pulls --------------------------------------------------------------------------------------------

    def _pull(self, request: PullRequest) -> None:
        path = request.path or self.server.config.default_path
        result = self._get_messages(request)
        if result is None:
            return
        messages = result.messages
        try:
            with self._segments_held(messages, path) as (sendable, pieces):
                try:
                    self._prepare(path, pieces)
                except PathUnsupported as error:
                    self._answer_error(request, Status.PATH_UNSUPPORTED, str(error))
                    return
                status = _STATUS_OF_GET[result.status]
                next_begin = sendable[-1].queue_offset + 1 if sendable else result.next_begin_offset
                if messages and not sendable:
                    status, next_begin = Status.NO_NEW_MESSAGE, request.queue_offset
                header = encode_pull_header(
                    request.request_id,
                    status,
                    next_begin,
                    result.min_offset,
                    result.max_offset,
                    path,
                    sendable,
                )
                self.sender.send_bytes(header, more=bool(pieces))
                results = [self._send_piece(path, mapped_file, piece) for mapped_file, piece in pieces]
                self.server._counters.add_pull(path, len(sendable), results)
        finally:
            for found in messages:
                found.data.release()

    def _get_messages(self, request: PullRequest) -> GetResult | None:
        """get_messages, long-polling when the queue has nothing new yet; None after an error answer."""
        result = self._read_queue(request)
        if result is None:
            return None
        if result.status in _WORTH_WAITING and request.long_poll_timeout_ms > 0:
            self.server._counters.add("long_polls")
            timeout_s = min(request.long_poll_timeout_ms / 1000, self.server.config.max_long_poll_s)
            if self._wait_for_arrival(request, timeout_s):
                result = self._read_queue(request)
        return result

    def _read_queue(self, request: PullRequest) -> GetResult | None:
        config = self.server.config
        max_count = min(request.max_count, config.max_messages_per_pull)
        max_bytes = min(request.max_bytes or config.max_bytes_per_pull, config.max_bytes_per_pull)
        try:
            result = self.server.store.get_messages(
                request.topic, request.queue_id, request.queue_offset, max_count, max_bytes
            )
        except StoreError as error:  # the store shut down, or a segment closed under the read
            self._answer_error(request, Status.SERVER_ERROR, str(error))
            return None
        if result.status is GetStatus.NO_MATCHED_LOGIC_QUEUE:
            self.server._counters.add("bad_requests")
            message = f"no queue {request.queue_id} of topic {request.topic!r}"
            self._answer_error(request, Status.UNKNOWN_QUEUE, message)
            return None
        return result

    def _answer_error(self, request: PullRequest, status: Status, message: str) -> None:
        self.sender.send_bytes(encode_error(RequestKind.PULL, request.request_id, status, message))

    def _wait_for_arrival(self, request: PullRequest, timeout_s: float) -> bool:
        """Wait until the queue holds a message at the requested offset (the dispatcher wakes us as soon as
        it has appended one); the wait is sliced so that a shutdown is noticed."""
        store, stopping = self.server.store, self.server.stopping

        def arrived() -> bool:
            queue = store.consume_queues.find(request.topic, request.queue_id)
            return queue is not None and queue.max_offset_in_queue > request.queue_offset

        deadline = time.monotonic() + timeout_s
        while not arrived():
            remaining = deadline - time.monotonic()
            if remaining <= 0 or stopping.is_set():
                return False
            store.dispatcher.wait_for_arrival(
                min(remaining, _STOP_CHECK_INTERVAL_S), lambda: arrived() or stopping.is_set()
            )
        return True

    @contextlib.contextmanager
    def _segments_held(
        self, messages: list[FoundMessage], path: SendPath
    ) -> Iterator[tuple[list[FoundMessage], list[tuple[MappedFile, _Piece]]]]:
        """The pieces to send, each with its segment held so that retention cannot delete it meanwhile.

        A segment that is already being destroyed cuts the response short before its first record: the
        header promises exactly what the body will carry."""
        pieces = _pieces(messages, coalesce=path in RUN_COALESCING_PATHS)
        find = self.server.store.commit_log.mapped_file_queue.find_by_offset
        held: dict[int, MappedFile] = {}
        placed: list[tuple[MappedFile, _Piece]] = []
        try:
            for piece in pieces:
                mapped_file = find(piece.physical_offset)
                if mapped_file is None:
                    break
                if id(mapped_file) not in held:
                    if not mapped_file.hold():
                        break
                    held[id(mapped_file)] = mapped_file
                placed.append((mapped_file, piece))
            sendable = [found for _file, piece in placed for found in piece.messages]
            yield sendable, placed
        finally:
            for mapped_file in held.values():
                mapped_file.release()

    def _prepare(self, path: SendPath, pieces: list[tuple[MappedFile, _Piece]]) -> None:
        for mapped_file in {id(f): f for f, _piece in pieces}.values():
            self.sender.prepare(path, mapped_file.fileno())
        if not pieces:
            self.sender.prepare(path)

    def _send_piece(self, path: SendPath, mapped_file: MappedFile, piece: _Piece) -> TransferResult:
        position = piece.physical_offset - mapped_file.file_from_offset
        if path not in (SendPath.MMAP_WRITE, SendPath.ZEROCOPY):
            return self.sender.send(path, mapped_file.fileno(), position, piece.length)
        if len(piece.messages) == 1:  # the record's own view of the segment's mapping
            return self.sender.send(path, None, position, piece.length, mapped=piece.messages[0].data)
        try:
            run_view = mapped_file.select(position, piece.length)
        except SegmentRevokedError as error:  # revoked since get_messages: the header promised these bytes
            raise RangeOutsideFile(str(error), path=path) from error
        if run_view is None:  # cannot happen for records get_messages just read; never send a short body
            raise StoreError(f"{mapped_file.path}: [{position}, +{piece.length}) is not readable")
        with run_view:
            return self.sender.send(path, None, position, piece.length, mapped=run_view)


def _pieces(messages: list[FoundMessage], coalesce: bool) -> list[_Piece]:
    """One piece per record, or, when coalescing, per run of records that follow each other in the log
    (a record never straddles segments and each segment ends with a BLANK, so a run stays in one)."""
    pieces: list[_Piece] = []
    for found in messages:
        last = pieces[-1] if pieces else None
        if coalesce and last is not None and last.end == found.physical_offset:
            last.length += found.size_bytes
            last.messages.append(found)
        else:
            pieces.append(_Piece(found.physical_offset, found.size_bytes, [found]))
    return pieces
