"""A process that reads a store the way a broker's consumers do, for the lease tests: it is the one that would
die of SIGBUS when another process truncates a segment under it.

    python lease_reader.py STORE_DIR get_messages|look_message_by_offset|hold_view

It opens the store (MessageStore, 1 MiB segments), fills three segments unless they are there, then prints one
JSON line {"ready": ..., "segments": [...], "pid": ...} and reads the first segment in a loop:

- get_messages: a batch from queue offset 0, every record's bytes copied out of the mapping (a user-space
  read), the views released;
- look_message_by_offset: the first record decoded (a user-space read of the mapping), its body touched;
- hold_view: once the first segment is leased, one batch from get_messages whose views it keeps, saying
  {"holding": count}; on a line on stdin
  it copies every byte of them (so a truncation that went ahead would be SIGBUS here), prints {"copied": n},
  releases them, and goes on as get_messages.

It ends when the store refuses with a StoreError, printing {"error": class name, "message": ...} and
exiting 0, or after READ_LIMIT_S with {"error": null}. Killed by a signal, it prints nothing more: the test
sees it in the exit status.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from store.config import StoreConfig
from store.errors import StoreError
from store.message_store import MessageStore
from store.workload import ProduceSpec, produce

SEGMENT_BYTES = 1 << 20
CONFIG = StoreConfig(
    mapped_file_size_commitlog=SEGMENT_BYTES,
    consume_queue_entries_per_file=10_000,
    max_hash_slot_num=64,
    max_index_num=8192,
)
TOPIC = "Leases"
BODY_BYTES = 4000
MESSAGES = 3 * SEGMENT_BYTES // BODY_BYTES  # a little under three segments: two full, sealed ones
READ_LIMIT_S = 60.0


def say(**fields) -> None:
    print(json.dumps(fields), flush=True)


def read_batch(store: MessageStore) -> int:
    copied = 0
    for found in store.get_messages(TOPIC, 0, 0, 64).messages:
        with found.data as data:
            copied += len(bytes(data))
    return copied


def look(store: MessageStore) -> int:
    record = store.look_message_by_offset(0)
    return len(bytes(record.body))


def hold_then_read(store: MessageStore) -> None:
    # Views taken before the segment is sealed would be of its writable mapping, which keeps it from being
    # leased until they are released: wait for the lease first.
    queue = store.commit_log.mapped_file_queue
    deadline = time.monotonic() + READ_LIMIT_S
    while queue.protections()[0].state != "leased" and time.monotonic() < deadline:
        time.sleep(0.01)
    kept = store.get_messages(TOPIC, 0, 0, 64).messages
    say(holding=len(kept))
    sys.stdin.readline()
    copied = sum(len(bytes(found.data)) for found in kept)
    for found in kept:
        found.data.release()
    say(copied=copied)


def main(directory: str, how: str) -> int:
    with MessageStore(Path(directory), CONFIG) as store:
        if store.commit_log.max_offset == 0:
            produce(store, ProduceSpec(TOPIC, count=MESSAGES, body_size_bytes=BODY_BYTES))
            store.flush()
        segments = [str(f.path) for f in store.commit_log.mapped_file_queue.mapped_files]
        say(ready=True, segments=segments, pid=os.getpid())
        if how == "hold_view":
            hold_then_read(store)
            how = "get_messages"
        read = read_batch if how == "get_messages" else look
        deadline = time.monotonic() + READ_LIMIT_S
        try:
            while time.monotonic() < deadline:
                read(store)
        except StoreError as error:
            say(error=type(error).__name__, message=str(error))
            return 0
        say(error=None)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
