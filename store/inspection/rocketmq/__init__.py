"""RocketMQ-format stores, read-only: one module per `mqinspect store` inspection command (see
store.inspection), and `store_format.ROCKETMQ`, the format as the format-neutral inspection sees it."""
