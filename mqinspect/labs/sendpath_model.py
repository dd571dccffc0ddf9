"""The textbook model of each send path, and the sentences that say where a measurement contradicts it.

The model is the one of the project's reference (page-cache-and-ebpf.md §3.1, TCP with a scatter-gather and
checksum-offloading NIC), with the DMA copies and mode switches of the classic accounts (Kafka's design docs:
"four copies and two system calls" for read+write; IBM's "Efficient data transfer through zero copy"):

    path                   syscalls/chunk  CPU copies/byte  DMA copies/byte  mode switches/chunk
    read+write             2               2                2                4
    mmap+write             1 (+ mmap)      1                2                2 (+ 2 for mmap)
    sendfile               1               0 (1 without SG) 2                2
    splice                 2               0                2                4 (file → pipe, pipe → socket)
    MSG_ZEROCOPY           1 (+ completion reads) 0         2                2
    O_DIRECT read+write    2               1                2                4

DMA copies: disk → page cache (O_DIRECT: disk → the user buffer) and socket buffer → NIC. Mode switches:
each system call enters and leaves the kernel once.

Pure: no I/O. The lab (mqinspect.labs.sendpath) measures; this module only compares.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from store.transfer import SendPath

# A measured ratio further than this from the model's is a contradiction (bytes are counted exactly; the
# margin covers O_DIRECT's block rounding and a chunk more or less).
RATIO_TOLERANCE = 0.05


@dataclass(frozen=True)
class PathModel:
    """What the textbook says one send path costs, per byte and per chunk."""

    path: SendPath
    label: str
    syscalls_per_chunk: int
    cpu_copies_per_byte: int
    dma_copies_per_byte: int
    mode_switches_per_chunk: int
    # What the sendpath probe should see on the sender, per payload byte, by syscall direction: it counts a
    # read-like call as kernel → user even where a device DMAs into the buffer (O_DIRECT), and a MSG_ZEROCOPY
    # send as user → kernel (it cannot see the flag).
    user_kernel_crossings_per_byte: int
    calls: str
    caveat: str


MODELS: dict[SendPath, PathModel] = {
    model.path: model
    for model in (
        PathModel(
            SendPath.READ_WRITE,
            "read+write",
            syscalls_per_chunk=2,
            cpu_copies_per_byte=2,
            dma_copies_per_byte=2,
            mode_switches_per_chunk=4,
            user_kernel_crossings_per_byte=2,
            calls="pread64 + sendto",
            caveat="page cache → user buffer → socket: two CPU copies (RocketMQ's default transferMsgByHeap)",
        ),
        PathModel(
            SendPath.MMAP_WRITE,
            "mmap+write",
            syscalls_per_chunk=1,
            cpu_copies_per_byte=1,
            dma_copies_per_byte=2,
            mode_switches_per_chunk=2,
            user_kernel_crossings_per_byte=1,
            calls="sendto from the mapping (+ mmap)",
            caveat="mapped page cache → socket: one CPU copy; a page not yet mapped faults inside the send",
        ),
        PathModel(
            SendPath.SENDFILE,
            "sendfile",
            syscalls_per_chunk=1,
            cpu_copies_per_byte=0,
            dma_copies_per_byte=2,
            mode_switches_per_chunk=2,
            user_kernel_crossings_per_byte=0,
            calls="sendfile",
            caveat="page references handed to the socket; 1 CPU copy without NIC scatter-gather/checksum "
            "offload or with TLS (Kafka turns sendfile off with SSL)",
        ),
        PathModel(
            SendPath.SPLICE,
            "splice",
            syscalls_per_chunk=2,
            cpu_copies_per_byte=0,
            dma_copies_per_byte=2,
            mode_switches_per_chunk=4,
            user_kernel_crossings_per_byte=0,
            calls="splice file → pipe, splice pipe → socket",
            caveat="sendfile's own mechanism made visible: page references through a pipe",
        ),
        PathModel(
            SendPath.ZEROCOPY,
            "MSG_ZEROCOPY",
            syscalls_per_chunk=1,
            cpu_copies_per_byte=0,
            dma_copies_per_byte=2,
            mode_switches_per_chunk=2,
            user_kernel_crossings_per_byte=1,
            calls="sendto(MSG_ZEROCOPY) + recvmsg(MSG_ERRQUEUE) completions",
            caveat="the NIC reads the pinned user pages; only worth it above ~10 KB per send "
            "(msg_zerocopy.rst); the kernel copies when the destination cannot take the pages",
        ),
        PathModel(
            SendPath.DIRECT_READ_WRITE,
            "O_DIRECT read+write",
            syscalls_per_chunk=2,
            cpu_copies_per_byte=1,
            dma_copies_per_byte=2,
            mode_switches_per_chunk=4,
            user_kernel_crossings_per_byte=2,
            calls="pread64 (O_DIRECT) + sendto",
            caveat="the disk DMAs into the user buffer (the probe still counts that pread64 as kernel → user "
            "bytes), then one CPU copy into the socket; the page cache is neither read nor filled",
        ),
    )
}

LABELS = {path: model.label for path, model in MODELS.items()}


# ---- statistics --------------------------------------------------------------------------------------------


def median_measured(values: Sequence[int | None]) -> int | None:
    """The median of integer counts as one of them (the lower middle), or None if any run lacks the count:
    a summary is never made of some runs' numbers and silently not others'."""
    if not values or any(value is None for value in values):
        return None
    return statistics.median_low(values)  # type: ignore[type-var]


def median_seconds(values: Sequence[float | None]) -> float | None:
    if not values or any(value is None for value in values):
        return None
    return round(statistics.median(values), 6)  # type: ignore[type-var]


def per_byte(moved: int | None, payload: int) -> float | None:
    return None if moved is None or payload <= 0 else round(moved / payload, 4)


# ---- contradictions ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PathEvidence:
    """The medians the findings are drawn from (None: not measured)."""

    path: SendPath
    payload_bytes: int
    sender_crossings_per_byte: float | None  # (kernel → user + user → kernel) / payload, sender
    receiver_copies_per_byte: float | None  # kernel → user / payload, receiver
    zerocopy_fell_back_to_copy: bool | None
    cached_pages_before: int | None
    cached_pages_after: int | None
    range_pages: int


def findings(evidence: PathEvidence) -> tuple[str, ...]:
    """One sentence for each way the measurement contradicts the model; none where it agrees."""
    model = MODELS[evidence.path]
    sentences = [
        sentence
        for sentence in (
            _zerocopy_fallback(model, evidence),
            _receiver_copies(model, evidence),
            _unexpected_crossings(model, evidence),
            _direct_filled_the_cache(model, evidence),
        )
        if sentence
    ]
    return tuple(sentences)


def _zerocopy_fallback(model: PathModel, evidence: PathEvidence) -> str | None:
    if model.path is not SendPath.ZEROCOPY or not evidence.zerocopy_fell_back_to_copy:
        return None
    return (
        "MSG_ZEROCOPY fell back to a copy: the completions carried SO_EE_CODE_ZEROCOPY_COPIED (packets "
        "looped onto a local destination have their payload copied), so the sender paid 1 CPU copy per byte, "
        "not 0."
    )


def _receiver_copies(model: PathModel, evidence: PathEvidence) -> str | None:
    copies = evidence.receiver_copies_per_byte
    if model.cpu_copies_per_byte != 0 or copies is None or copies < 1 - RATIO_TOLERANCE:
        return None
    return (
        f"Over loopback the receiver copies anyway: recvfrom moved {copies:.2f} × the payload kernel → user, "
        f"so end to end {model.label} costs at least 1 CPU copy per byte, not 0."
    )


def _unexpected_crossings(model: PathModel, evidence: PathEvidence) -> str | None:
    measured = evidence.sender_crossings_per_byte
    expected = model.user_kernel_crossings_per_byte
    if measured is None or abs(measured - expected) <= RATIO_TOLERANCE:
        return None
    return (
        f"The sender moved {measured:.2f} × the payload across the user/kernel boundary where the model "
        f"expects {expected}: {model.label} did not run as the model describes it here."
    )


def _direct_filled_the_cache(model: PathModel, evidence: PathEvidence) -> str | None:
    before, after = evidence.cached_pages_before, evidence.cached_pages_after
    if model.path is not SendPath.DIRECT_READ_WRITE or before is None or after is None or after <= before:
        return None
    return (
        f"O_DIRECT was to leave the page cache alone, but the source's cached pages went from {before} to "
        f"{after} of {evidence.range_pages}: something else read the file meanwhile."
    )


# Said once for the whole table: true of every path on this setup, so not a finding of one path.
GENERAL_NOTES = (
    "DMA copies are the model's: over loopback there is no NIC, and a source that is already in the page "
    "cache needs no disk read, so neither DMA happens here.",
    "The receiver's recvfrom copies every byte out of the socket buffer into user memory whatever the send "
    "path: zero-copy sending saves the sender's copies only.",
    "The copy columns count bytes by syscall direction (the eBPF sendpath probe on the "
    "syscalls:sys_enter/exit tracepoints): read-like calls move kernel → user, write-like calls "
    "user → kernel, sendfile and splice stay in the kernel. Descriptors 0-2 (the lab's control pipes) "
    "are left out.",
)
