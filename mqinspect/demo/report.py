"""What the demo measured, as plain dataclasses: each child's own account of its work, how each child ended,
and the final report of a run without the dashboard (the live view plus the lab summaries)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from mqinspect.demo.settings import DemoSettings
from store.config import WarmupMode
from store.transfer import SendPath


@dataclass(frozen=True)
class SegmentWarmup:
    """How the broker's allocation service warmed one CommitLog segment (MappedFile.warm)."""

    segment: str
    mode: WarmupMode
    pages: int
    elapsed_s: float
    locked: bool


@dataclass(frozen=True)
class PathServed:
    """What the pull server sent by one send path, by its own count (PullServer.counters)."""

    path: SendPath
    requests: int
    messages: int
    bytes_sent: int
    transfer_calls: int
    syscalls: dict[str, int]
    send_s: float

    @classmethod
    def from_counts(cls, path: SendPath, counts: Any) -> PathServed:
        """From a server's counters of one path (requests, messages, bytes_sent, transfer_calls,
        syscalls, send_s): the pull server's, or the Kafka demo's fetch server's."""
        return cls(
            path,
            counts.requests,
            counts.messages,
            counts.bytes_sent,
            counts.transfer_calls,
            dict(counts.syscalls),
            counts.send_s,
        )


@dataclass(frozen=True)
class BrokerSummary:
    """The broker's own account: what its producer thread put, what retention deleted, how segments were
    warmed, and what the pull server sent per path."""

    pid: int
    port: int
    topic: str
    produced_messages: int
    produced_bytes: int
    produce_elapsed_s: float
    produce_bytes_per_s: float | None
    put_latency_max_us: float | None
    put_latency_p99_us_worst_window: float | None  # the worst p99 over windows of PRODUCE_WINDOW_PUTS puts
    page_cache_busy_puts: int | None  # None: not a RocketMQ broker (Kafka has no such refusal)
    segments_written: int  # distinct CommitLog segments the producer wrote into
    segments_deleted: int  # by retention (fileReservedTime)
    segments_at_end: int
    commitlog_min_offset: int
    commitlog_max_offset: int
    warmups: tuple[SegmentWarmup, ...]
    served: tuple[PathServed, ...]
    shutdown_problems: tuple[str, ...]

    @classmethod
    def from_jsonable(cls, data: dict[str, Any]) -> BrokerSummary:
        fields = dict(data)
        warmups = tuple(
            SegmentWarmup(**{**item, "mode": WarmupMode(item["mode"])}) for item in fields.pop("warmups")
        )
        served = tuple(
            PathServed(**{**item, "path": SendPath(item["path"])}) for item in fields.pop("served")
        )
        problems = tuple(fields.pop("shutdown_problems"))
        return cls(**fields, warmups=warmups, served=served, shutdown_problems=problems)


@dataclass(frozen=True)
class ConsumerSummary:
    """One consumer process's own account: a group member pulling through one send path."""

    pid: int
    path: SendPath
    group: str
    pulls: int
    messages: int
    skipped_messages: int  # deleted by retention before the group pulled them (OFFSET_TOO_SMALL)
    bytes_received: int
    resumed_offset: int  # the group's committed offset it started from (0: none yet)
    committed_offset: int | None
    elapsed_s: float
    bytes_per_s: float | None
    error: str | None  # why it stopped early, if it did

    @classmethod
    def from_jsonable(cls, data: dict[str, Any]) -> ConsumerSummary:
        return cls(**{**data, "path": SendPath(data["path"])})


@dataclass(frozen=True)
class ChildExit:
    """How one child process ended."""

    role: str  # "broker" or "consumer:<path>"
    pid: int
    exit_code: int | None  # None: still running (never after DemoWorkload.stop); negative: killed by signal
    killed: bool  # did not stop within the grace period after SIGTERM, so it got SIGKILL
    reported: bool  # sent its summary before ending
    log_tail: str | None  # the end of its log when it failed


@dataclass(frozen=True)
class WorkloadOutcome:
    store_dir: Path
    store_kept: bool
    ran_s: float
    broker: BrokerSummary | None  # None when the broker could not report (see children)
    consumers: tuple[ConsumerSummary, ...]
    children: tuple[ChildExit, ...]

    @property
    def clean_exit(self) -> bool:
        return all(child.exit_code == 0 and not child.killed for child in self.children)


class SectionKind(StrEnum):
    LIVE = "live"  # a TopSnapshot
    WARMUP_LAB = "warmup_lab"
    SENDPATH_LAB = "sendpath_lab"


@dataclass(frozen=True)
class Section:
    """One part of the final report: what was measured, or why it could not be."""

    kind: SectionKind
    title: str
    data: Any | None
    unavailable: str | None = None  # "reason; fix: ..." when data is None


@dataclass(frozen=True)
class DemoReport:
    """The final report of `mqinspect demo --no-ui`: the workload, the live view sampled at its end, and
    short lab runs measuring the claims that the live view illustrates."""

    settings: DemoSettings
    workload: WorkloadOutcome
    live: Section  # TopSnapshot: the `mqinspect top --once` view of the running workload
    labs: tuple[Section, ...]  # the warm-up and send-path lab reports
