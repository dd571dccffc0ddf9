"""Kafka's on-disk log format, read-only (as store.codec is RocketMQ's): a pure library, no terminal.

Every file is read with pread (store.safe_read.PreadFile), never mmap; bad input is a `Finding` (file,
byte position, kind, message), never a traceback. Everything decoded is a frozen dataclass.

- `batches`: `LogReader(path, start=, max_bytes=)` iterates a `.log`'s entries (`RecordBatch` for v2,
  `LegacyMessage` for v0/v1) and findings, reading nothing past the budget; `decode_batch_header` decodes
  one entry from bytes.
- `records`: `decode_records(entry)` decodes a batch's records when asked, by column (`DecodedRecords`:
  offsets, timestamps, keys, values, headers, sizes; `.records` gives `Record` objects); control records
  (`decode_control_record`: transaction markers, LEADER_CHANGE, snapshot header/footer, KRaft records);
  `record_findings` checks the records against their batch (offsets increasing, the last the header's).
- `compression`: gzip, snappy (raw and xerial), lz4 (and Kafka's pre-0.10 framing), zstd.
- `indexes`, `snapshots`, `checkpoints`: `.index`, `.timeindex`, `.txnindex`, producer snapshots, the
  checkpoint, properties and JSON files; `files.read_kafka_file(path)` picks the reader by name.
- `layout`: names: 20-digit base offsets, suffixes (.deleted/.cleaned/.swap), `topic-N` directories.
- `consumer_offsets`, `cluster_metadata`: the records of `__consumer_offsets` and `__cluster_metadata`.
- `writer`: writes partition directories and log dirs as a broker does (tests, benchmarks, the demo).
"""
