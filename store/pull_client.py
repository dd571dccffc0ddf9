"""PullClient: a consumer of a PullServer, in another process than the store (wire format: store.pull_server).

`PullClient` speaks the protocol: pulls (records decoded, kept raw, or only counted for throughput runs),
and commits and queries of consumer-group offsets, which the server keeps in the store's
config/consumerOffset.json. `GroupConsumer` is a consumer group member on one queue: it resumes from the
group's committed offset, follows next_begin_offset, and commits where it has got to, so a consumer that
restarts (or whose server restarts) continues exactly after the last committed message.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from enum import StrEnum

from store import codec
from store.errors import StoreError
from store.pull_server import (
    FRAME_LENGTH,
    CommitOffsetRequest,
    ErrorResponse,
    OffsetResponse,
    PullRequest,
    PullResponseHeader,
    QueryOffsetRequest,
    Request,
    Response,
    Status,
    decode_response_header,
    encode_request,
)
from store.transfer import SendPath

MAX_RESPONSE_HEADER_BYTES = 16 * 1024 * 1024  # a header of a million messages; anything bigger is not ours
_COUNTING_BUFFER_BYTES = 1 << 20


class BodyMode(StrEnum):
    DECODE = "decode"  # every record decoded with codec.decode_record
    RAW = "raw"  # the record bytes kept, not decoded
    COUNT = "count"  # the bytes counted and dropped: throughput runs measure the transfer, not Python


class PullFailed(StoreError):
    """The server answered with an error status (bad request, unknown queue, unsupported path...)."""

    def __init__(self, status: Status, message: str):
        super().__init__(f"{status.name}: {message}")
        self.status = status
        self.message = message


class ProtocolError(StoreError):
    """The server closed the connection, or sent something that is not a response to our request. The
    client closes its connection: nothing after it could be trusted."""


@dataclass(frozen=True)
class PulledMessage:
    queue_offset: int
    size_bytes: int
    data: memoryview | None  # the record as stored in the CommitLog (None in COUNT mode)
    record: codec.MessageRecord | None  # decoded (DECODE mode only)


@dataclass(frozen=True)
class PullResult:
    status: Status
    next_begin_offset: int
    min_offset: int
    max_offset: int
    path: SendPath | None  # the send path the server used
    messages: list[PulledMessage]
    body_bytes: int
    elapsed_s: float


class PullClient:
    """One connection to a PullServer; requests go one at a time. `with PullClient(address) as client:`."""

    def __init__(
        self,
        address: tuple[str, int],
        *,
        timeout_s: float = 10.0,
        body: BodyMode = BodyMode.DECODE,
    ):
        self.address = address
        self.timeout_s = timeout_s
        self.body = BodyMode(body)
        self._next_request_id = 1
        self._counting_buffer: memoryview | None = None
        self.sock: socket.socket | None = socket.create_connection(address, timeout=timeout_s)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def __enter__(self) -> PullClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    # ---- requests ---------------------------------------------------------------------------------------

    def pull(
        self,
        topic: str,
        queue_id: int,
        queue_offset: int,
        *,
        max_count: int = 32,
        max_bytes: int = 0,
        long_poll_ms: int = 0,
        path: SendPath | str | None = None,
    ) -> PullResult:
        """Up to `max_count` records (and `max_bytes`; 0: the server's limit) from `queue_offset`. With
        `long_poll_ms`, the server waits that long for a message when there is none yet."""
        started = time.perf_counter()
        request = PullRequest(
            self._take_request_id(),
            topic,
            queue_id,
            queue_offset,
            max_count,
            max_bytes,
            long_poll_ms,
            None if path is None else SendPath(path),
        )
        header = self._exchange(request, extra_wait_s=long_poll_ms / 1000)
        if not isinstance(header, PullResponseHeader):
            raise self._broken(f"a {type(header).__name__} in answer to a pull")
        messages = self._read_body(header)
        return PullResult(
            header.status,
            header.next_begin_offset,
            header.min_offset,
            header.max_offset,
            header.path,
            messages,
            header.body_length,
            time.perf_counter() - started,
        )

    def commit_offset(self, group: str, topic: str, queue_id: int, offset: int) -> int:
        """Commit `offset` (the next queue offset the group will consume) for the group on that queue."""
        request = CommitOffsetRequest(self._take_request_id(), group, topic, queue_id, offset)
        committed = self._offset_exchange(request)
        if committed != offset:
            raise self._broken(f"committed {offset}, the server says {committed}")
        return committed

    def query_offset(self, group: str, topic: str, queue_id: int) -> int | None:
        """The group's committed offset on that queue; None if it has none."""
        return self._offset_exchange(QueryOffsetRequest(self._take_request_id(), group, topic, queue_id))

    def _offset_exchange(self, request: Request) -> int | None:
        response = self._exchange(request)
        if not isinstance(response, OffsetResponse):
            raise self._broken(f"a {type(response).__name__} in answer to an offset request")
        return response.offset

    def _take_request_id(self) -> int:
        request_id, self._next_request_id = self._next_request_id, self._next_request_id + 1
        return request_id

    # ---- the exchange -------------------------------------------------------------------------------------

    def _exchange(self, request: Request, extra_wait_s: float = 0.0) -> Response:
        """Send `request` and read the response header; PullFailed for an error status."""
        sock = self._connected()
        sock.settimeout(self.timeout_s + extra_wait_s)
        try:
            sock.sendall(encode_request(request))
            (length,) = FRAME_LENGTH.unpack(self._receive(FRAME_LENGTH.size))
            if not 0 < length <= MAX_RESPONSE_HEADER_BYTES:
                raise self._broken(f"a response header of {length} bytes")
            response = decode_response_header(self._receive(length))
        except (OSError, ValueError) as error:
            raise self._broken(str(error) or type(error).__name__) from error
        if response.request_id not in (request.request_id, 0):
            raise self._broken(f"the response to request {response.request_id}, not {request.request_id}")
        if isinstance(response, ErrorResponse):
            if response.request_id == 0:  # the server could not read our frame and closes the connection
                self.close()
            raise PullFailed(response.status, response.message)
        return response

    def _read_body(self, header: PullResponseHeader) -> list[PulledMessage]:
        try:
            if self.body is BodyMode.COUNT:
                self._discard(header.body_length)
                return [PulledMessage(offset, size, None, None) for offset, size in header.entries]
            body = memoryview(self._receive(header.body_length))
        except OSError as error:
            raise self._broken(f"the body broke off: {error}") from error
        messages, position = [], 0
        for queue_offset, size in header.entries:
            data = body[position : position + size]
            record = self._decode(data, queue_offset) if self.body is BodyMode.DECODE else None
            messages.append(PulledMessage(queue_offset, size, data, record))
            position += size
        return messages

    def _decode(self, data: memoryview, queue_offset: int) -> codec.MessageRecord:
        record = codec.decode_record(data)
        if not isinstance(record, codec.MessageRecord):
            raise self._broken(f"queue offset {queue_offset} came as a BLANK record")
        return record

    def _receive(self, size: int) -> bytearray:
        buffer = bytearray(size)
        self._receive_into(memoryview(buffer))
        return buffer

    def _discard(self, size: int) -> None:
        if self._counting_buffer is None:
            self._counting_buffer = memoryview(bytearray(_COUNTING_BUFFER_BYTES))
        while size:
            size -= self._receive_into(self._counting_buffer[: min(size, _COUNTING_BUFFER_BYTES)])

    def _receive_into(self, view: memoryview) -> int:
        sock = self._connected()
        received = 0
        while received < len(view):
            got = sock.recv_into(view[received:])
            if got == 0:
                raise ConnectionResetError(
                    f"the server closed the connection {len(view) - received} bytes short"
                )
            received += got
        return received

    def _connected(self) -> socket.socket:
        if self.sock is None:
            raise ProtocolError(f"{self.address}: the connection is closed")
        return self.sock

    def _broken(self, reason: str) -> ProtocolError:
        self.close()
        return ProtocolError(f"{self.address}: {reason}")


class GroupConsumer:
    """A member of consumer group `group` on one queue, its position kept in the server's consumer offsets.

    `poll` pulls from the current offset and moves it to next_begin_offset (which also corrects an offset
    that retention overtook or that is past the end); `commit` stores it. Commit after processing what
    `poll` returned: a restart then resumes exactly after the last processed message (at-least-once when
    processing fails between the two).

    Retention deletes by age, whoever has yet to read (RocketMQ's fileReservedTime): a member that falls
    behind it is told OFFSET_TOO_SMALL and moves up to the queue's new minimum. `skipped` counts the messages
    it lost that way, so that offset moved = messages polled + skipped holds for every member."""

    def __init__(self, client: PullClient, group: str, topic: str, queue_id: int):
        self.client = client
        self.group = group
        self.topic = topic
        self.queue_id = queue_id
        self.offset: int | None = None
        self.skipped = 0

    def resume(self) -> int:
        """Take up the group's committed offset; from 0 when it has none (the server moves a consumer below
        the queue's minimum up to it)."""
        committed = self.client.query_offset(self.group, self.topic, self.queue_id)
        self.offset = 0 if committed is None else committed
        return self.offset

    def poll(
        self, max_count: int = 32, *, max_bytes: int = 0, long_poll_ms: int = 0, path: SendPath | None = None
    ) -> list[PulledMessage]:
        if self.offset is None:
            self.resume()
        assert self.offset is not None
        result = self.client.pull(
            self.topic,
            self.queue_id,
            self.offset,
            max_count=max_count,
            max_bytes=max_bytes,
            long_poll_ms=long_poll_ms,
            path=path,
        )
        if result.status is Status.OFFSET_TOO_SMALL:
            self.skipped += max(0, result.next_begin_offset - self.offset)
        self.offset = result.next_begin_offset
        return result.messages

    def commit(self) -> None:
        if self.offset is not None:
            self.client.commit_offset(self.group, self.topic, self.queue_id, self.offset)
