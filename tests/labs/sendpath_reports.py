"""A sendpath lab report built without running the lab: one canned sendfile run and no BPF, as a user without
root gets it. The lab tests and the units convention test draw it."""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType

from mqinspect.labs.sendpath import (
    SCHEMA,
    LabSource,
    PathRun,
    ProcessUsage,
    SendpathLabReport,
    Unavailable,
    summarize_path,
)
from mqinspect.labs.sendpath_model import GENERAL_NOTES
from store.transfer import SendPath

PAYLOAD = 4 << 20
PAGES = PAYLOAD // 4096
NO_BPF = Unavailable("tracing needs root, or CAP_BPF and CAP_PERFMON", "run as root (sudo mqinspect ...)")


def canned_run(path: SendPath) -> PathRun:
    usage = ProcessUsage(0.001, 0.01, 3, 1)
    return PathRun(
        path=path,
        run=1,
        bytes_sent=PAYLOAD,
        bytes_received=PAYLOAD,
        send_s=0.002,
        delivery_s=0.004,
        throughput_bytes_per_s=PAYLOAD / 0.004,
        sender_usage=usage,
        receiver_usage=usage,
        sender_syscalls=MappingProxyType({"sendfile": 16}),
        receiver_syscalls=MappingProxyType({"recvfrom": 40}),
        sender_copies=None,
        receiver_copies=None,
        probe_lost_records=None,
        zerocopy_fell_back_to_copy=None,
        zerocopy_notifications=None,
        cached_pages_before=PAGES,
        cached_pages_after=PAGES,
        evicted_before=False,
    )


def report_without_bpf(directory: Path) -> tuple[SendpathLabReport, Unavailable]:
    """The report of one sendfile run of PAYLOAD bytes from a file in `directory`, its copies unavailable
    (returned with the reason and fix given)."""
    source = LabSource(directory / "0", directory, True, 0, PAYLOAD, PAYLOAD * 2, 1024, PAGES, 4096)
    result = summarize_path(SendPath.SENDFILE, [canned_run(SendPath.SENDFILE)], None, source)
    report = SendpathLabReport(
        SCHEMA, PAYLOAD, 1, "hot", 256 << 10, "127.0.0.1", source, 1, 2, "6.18", "probe", NO_BPF, "rusage",
        "cachestat", (result,), GENERAL_NOTES, 0.0, 1.0,
    )  # fmt: skip
    return report, NO_BPF
