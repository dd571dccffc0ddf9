"""A demo Kafka consumer process: `python -m mqinspect.demo.kafka_consumer --port N --path PATH
--parent-pid PID --settings JSON`.

A member of consumer group `demo-<path>` on the demo topic's partition 0: it resumes from the group's
committed offset, long-polls the demo's Kafka broker (mqinspect.demo.kafka_broker) for whole batches sent by
its send path, reads their headers to count the records and find the next offset (the values are received
and dropped: the transfer is the point), jumps to the log start when retention deleted what it had not
fetched yet, and commits its offset every second (into `__consumer_offsets`). It announces `ready` once
connected and a `summary` (ConsumerSummary) when SIGTERM stops it.
"""

from __future__ import annotations

import json
import logging
import socket
import sys
import time

from mqinspect.demo.consumer import consumer_summary, run_consumer
from mqinspect.demo.kafka_broker import FETCH_HEADER
from mqinspect.demo.report import ConsumerSummary
from mqinspect.demo.settings import DemoSettings
from store.kafka.batches import LOG_OVERHEAD, V2_HEADER
from store.transfer import SendPath

log = logging.getLogger("mqinspect.demo.kafka_consumer")

COMMIT_EVERY_S = 1.0
BROKER_HOST = "127.0.0.1"
FETCH_MAX_BYTES = 1 << 20


class KafkaDemoConsumer:
    def __init__(self, port: int, path: SendPath, settings: DemoSettings):
        self.path = path
        self.settings = settings
        self.group = f"demo-{path.value}"
        self.sock = socket.create_connection((BROKER_HOST, port))
        self.buffer = bytearray(FETCH_MAX_BYTES + (1 << 20))
        _, committed = self._ask({"committed": self.group})
        self.resumed_offset = self.offset = max(committed, 0)
        self.pulls = self.messages = self.bytes_received = self.skipped = 0
        self.committed: int | None = None
        self.error: str | None = None
        self.started = time.monotonic()

    def _ask(self, request: dict) -> tuple[int, int]:
        self.sock.sendall(json.dumps(request).encode() + b"\n")
        header = self._receive(FETCH_HEADER.size)
        return FETCH_HEADER.unpack(header)

    def _receive(self, size: int) -> memoryview:
        view = memoryview(self.buffer)[:size]
        got = 0
        while got < size:
            count = self.sock.recv_into(view[got:], size - got)
            if not count:
                raise ConnectionError("the broker closed the connection")
            got += count
        return view

    def fetch(self) -> None:
        request = {"fetch": self.offset, "max_bytes": FETCH_MAX_BYTES, "path": self.path.value}
        length, log_start = self._ask(request)
        self.pulls += 1
        if length < 0:  # deleted by retention before we fetched it
            self.skipped += log_start - self.offset
            self.offset = log_start
            return
        data = self._receive(length)
        self.bytes_received += length
        position = 0
        while position + V2_HEADER.size <= length:
            fields = V2_HEADER.unpack_from(data, position)
            base_offset, batch_length, last_offset_delta, record_count = (
                fields[0],
                fields[1],
                fields[6],
                fields[12],
            )
            self.messages += record_count
            self.offset = base_offset + last_offset_delta + 1
            position += LOG_OVERHEAD + batch_length

    def run(self, should_stop) -> None:
        last_commit = time.monotonic()
        try:
            while not should_stop():
                self.fetch()
                if time.monotonic() - last_commit >= COMMIT_EVERY_S:
                    self._commit()
                    last_commit = time.monotonic()
            self._commit()
        except (OSError, ValueError) as error:  # the broker went away: say so in the summary
            log.warning("consumer on %s stopped: %s", self.path, error)
            self.error = str(error)
        finally:
            self.sock.close()

    def _commit(self) -> None:
        self._ask({"commit": self.offset, "group": self.group})
        self.committed = self.offset

    def summary(self) -> ConsumerSummary:
        return consumer_summary(self, self.skipped)


def main(argv: list[str] | None = None) -> int:
    return run_consumer(KafkaDemoConsumer, "mqinspect.demo.kafka_consumer", __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
