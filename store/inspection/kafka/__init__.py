"""Kafka log directories, read-only, through store.kafka: one module per `mqinspect store` inspection command
(`stat`, `segments`, `dump`, `verify`, `query`), and `store_format.KAFKA`, the format as the format-neutral
inspection sees it (a `log.dirs` root, a `topic-N` partition directory, or one `.log` segment file)."""
