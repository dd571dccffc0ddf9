"""A demo consumer process: `python -m mqinspect.demo.consumer --port N --path PATH --parent-pid PID`.

A member of consumer group `demo-<path>` on the demo topic: it resumes from the group's committed offset,
long-polls the broker's PullServer asking for its send path on every pull, counts what arrives (the bytes
are received and dropped: the transfer is the point, not Python decoding) and what retention deleted before
it could pull it, and commits its offset every second. It announces `ready` once connected and a `summary`
(ConsumerSummary) when SIGTERM stops it.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

from mqinspect.demo.child import announce, child_parser, start_child
from mqinspect.demo.report import ConsumerSummary
from mqinspect.demo.settings import DemoSettings
from store.errors import StoreError
from store.pull_client import BodyMode, GroupConsumer, PullClient
from store.transfer import SendPath

log = logging.getLogger("mqinspect.demo.consumer")

COMMIT_EVERY_S = 1.0
BROKER_HOST = "127.0.0.1"


class DemoConsumer:
    def __init__(self, port: int, path: SendPath, settings: DemoSettings):
        self.path = path
        self.settings = settings
        self.group = f"demo-{path.value}"
        self.client = PullClient((BROKER_HOST, port), body=BodyMode.COUNT)
        self.member = GroupConsumer(self.client, self.group, settings.topic, 0)
        self.resumed_offset = self.member.resume()
        self.pulls = self.messages = self.bytes_received = 0
        self.committed: int | None = None
        self.error: str | None = None
        self.started = time.monotonic()

    def run(self, should_stop) -> None:
        last_commit = time.monotonic()
        try:
            while not should_stop():
                batch = self.member.poll(
                    self.settings.pull_batch, long_poll_ms=self.settings.long_poll_ms, path=self.path
                )
                self.pulls += 1
                self.messages += len(batch)
                self.bytes_received += sum(message.size_bytes for message in batch)
                if time.monotonic() - last_commit >= COMMIT_EVERY_S:
                    self._commit()
                    last_commit = time.monotonic()
            self._commit()
        except (StoreError, OSError) as error:  # the broker went away or refused: say so in the summary
            log.warning("consumer on %s stopped: %s", self.path, error)
            self.error = str(error)
        finally:
            self.client.close()

    def _commit(self) -> None:
        self.member.commit()
        self.committed = self.member.offset

    def summary(self) -> ConsumerSummary:
        elapsed = time.monotonic() - self.started
        return ConsumerSummary(
            pid=os.getpid(),
            path=self.path,
            group=self.group,
            pulls=self.pulls,
            messages=self.messages,
            skipped_messages=self.member.skipped,
            bytes_received=self.bytes_received,
            resumed_offset=self.resumed_offset,
            committed_offset=self.committed,
            elapsed_s=elapsed,
            bytes_per_s=self.bytes_received / elapsed if elapsed > 0 else None,
            error=self.error,
        )


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = child_parser("mqinspect.demo.consumer", __doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", type=SendPath, required=True, choices=list(SendPath))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    stop = start_child(args, f"demo-{args.path.value}")  # cut to 15 bytes: "demo-read_write" fits exactly
    consumer = DemoConsumer(args.port, args.path, args.settings)
    announce("ready", {"path": args.path.value})
    consumer.run(stop)
    announce("summary", consumer.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
