"""A demo consumer process: `python -m mqinspect.demo.consumer --port N --path PATH --parent-pid PID`.

A member of consumer group `demo-<path>` on the demo topic: it resumes from the group's committed offset,
long-polls the broker's PullServer asking for its send path on every pull, counts what arrives (the bytes
are received and dropped: the transfer is the point, not Python decoding) and what retention deleted before
it could pull it, and commits its offset every second. It announces `ready` once connected and a `summary`
(ConsumerSummary) when SIGTERM stops it.
"""

from __future__ import annotations

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
        return consumer_summary(self, self.member.skipped)


def consumer_summary(consumer, skipped_messages: int) -> ConsumerSummary:
    """A demo consumer's own account (this module's, or the Kafka demo's: the same attributes)."""
    elapsed = time.monotonic() - consumer.started
    return ConsumerSummary(
        pid=os.getpid(),
        path=consumer.path,
        group=consumer.group,
        pulls=consumer.pulls,
        messages=consumer.messages,
        skipped_messages=skipped_messages,
        bytes_received=consumer.bytes_received,
        resumed_offset=consumer.resumed_offset,
        committed_offset=consumer.committed,
        elapsed_s=elapsed,
        bytes_per_s=consumer.bytes_received / elapsed if elapsed > 0 else None,
        error=consumer.error,
    )


def run_consumer(consumer_class, module: str, description: str | None, argv: list[str] | None) -> int:
    """A consumer child's life: its arguments, tied to the demo, ready, consuming until told to stop, its
    summary (for this module's consumers and the Kafka demo's)."""
    parser = child_parser(module, description)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", type=SendPath, required=True, choices=list(SendPath))
    args = parser.parse_args(argv)
    stop = start_child(args, f"demo-{args.path.value}")  # cut to 15 bytes: "demo-read_write" fits exactly
    consumer = consumer_class(args.port, args.path, args.settings)
    announce("ready", {"path": args.path.value})
    consumer.run(stop)
    announce("summary", consumer.summary())
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_consumer(DemoConsumer, "mqinspect.demo.consumer", __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
