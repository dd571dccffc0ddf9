"""Read-only inspection of message-log stores: the snapshots behind `mqinspect store ...`.

Everything here opens files with pread only (never mmap) and never writes, so it is safe on a store that a
broker is writing, rolling or truncating at the same moment: a file that shrinks ends a read early, a file
that vanishes raises `StoreChanged`, and neither can raise SIGBUS. Every public function returns a frozen
dataclass snapshot; the CLI renders it and reads nothing itself.

- `log_format`: what one on-disk format provides (`LogFormat`), and the words every format shares.
- `formats`: the formats read (`FORMATS`), which one a path holds, and the inspection any format answers:
  `store_stat`, `list_segments`, `store_files` (residency and `trace --store` take a store's files from it).
- `rocketmq/`: RocketMQ-format stores, one module per command: `reading` (opening a store, walking the
  CommitLog, records at any offset), `record_views`, `store_stat`, `segments`, `dump`, `verify`, `query`,
  `cq`, and `store_format` (its LogFormat).

Offsets: a *physical offset* is a byte position in the whole CommitLog (what segment names encode), a
*queue offset* is an entry number in a ConsumeQueue, a *position* is a byte position inside one file.
"""
