"""StoreConfig: RocketMQ's MessageStoreConfig defaults; every size is overridable for small stores."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

GiB = 1 << 30
MiB = 1 << 20
OS_PAGE_SIZE = 4096
CQ_STORE_UNIT_SIZE = 20


class FlushDiskType(StrEnum):
    ASYNC = "async"
    SYNC = "sync"


class WarmupMode(StrEnum):
    NONE = "none"
    TOUCH = "touch"  # RocketMQ warmMappedFile: a 0 per page (msync every N pages with sync flush), mlock
    POPULATE = "populate"  # MADV_POPULATE_WRITE (Linux >= 5.14), one call instead of a fault per page


@dataclass(frozen=True)
class StoreConfig:
    mapped_file_size_commitlog: int = GiB
    consume_queue_entries_per_file: int = 300_000
    max_hash_slot_num: int = 5_000_000
    max_index_num: int = 5_000_000 * 4
    max_message_body_size: int = 4 * MiB
    max_properties_size: int = 32_767

    flush_disk_type: FlushDiskType = FlushDiskType.ASYNC
    flush_interval_commitlog_ms: int = 500
    flush_commitlog_least_pages: int = 4
    flush_commitlog_thorough_interval_ms: int = 10_000
    sync_flush_timeout_ms: int = 5_000
    flush_interval_consume_queue_ms: int = 1_000
    flush_consume_queue_least_pages: int = 2
    flush_consume_queue_thorough_interval_ms: int = 60_000
    checkpoint_flush_interval_ms: int = 1_000

    transient_store_pool_enable: bool = False
    transient_store_pool_size: int = 5
    commit_interval_commitlog_ms: int = 200
    commit_commitlog_least_pages: int = 4
    commit_commitlog_thorough_interval_ms: int = 200

    warmup: WarmupMode = WarmupMode.NONE
    flush_least_pages_when_warm_mapped_file: int = 1024 // 4 * 16  # 4096 pages = 16 MiB
    munlock_delay_ms: int = 6_000  # RocketMQ unlocks a full warmed file 6 s later

    file_reserved_hours: float = 72
    delete_when: str = "04"  # hours of day, ';'-separated
    disk_max_used_space_ratio: int = 75
    clean_file_forcibly_enable: bool = True
    destroy_mapped_file_interval_forcibly_ms: int = 120_000

    message_index_enable: bool = True
    check_crc_on_recover: bool = True
    # enabledAppendPropCRC (RocketMQ >= 5.2, off by default): each record ends its properties with `__CRC32#`,
    # a CRC32 over bytes [0, TOTALSIZE - 20) of the record as stored: every header field (QUEUEOFFSET,
    # PHYSICALOFFSET and STORETIMESTAMP included, filled in before the CRC), the body, the topic and the other
    # properties. Only its own 20 bytes are outside it. BODYCRC covers the body alone, so without this a
    # flipped header, topic or property byte decodes as a valid record; with it, verify and recovery find it.
    enabled_append_prop_crc: bool = False
    allocate_wait_timeout_ms: int = 5_000

    @property
    def mapped_file_size_consume_queue(self) -> int:
        return self.consume_queue_entries_per_file * CQ_STORE_UNIT_SIZE

    @property
    def index_file_size(self) -> int:
        return 40 + self.max_hash_slot_num * 4 + self.max_index_num * 20
