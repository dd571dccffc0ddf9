"""The ways `mqinspect lab truncate` serves a file while another process truncates it, what the design
documents say each way does, and the sentence that says where this machine does otherwise.

The textbook (an early-2000s article on zero copy, repeated ever since; see the project's reference
truncation-and-leases.md): mmap + write halves the copies of read + write, but if another process truncates
the file, the sender's write from the mapping "is interrupted by SIGBUS", whose default action kills the
process; the right fix is a read lease (F_SETSIG, F_SETLEASE F_RDLCK), with which the truncating process
blocks until the holder releases it (at most lease-break-time) and the holder's write returns the bytes
written so far instead of a signal. sendfile and pread return short counts at the new end of the file.

Pure: no I/O. The lab (mqinspect.labs.truncate) measures; this module only compares.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class TruncateWay(StrEnum):
    READ_MAPPING = "read_mapping"
    WRITE_MAPPING = "write_mapping"
    SEND_MAPPING = "send_mapping"
    READ_MAPPING_LEASED = "read_mapping_leased"
    WRITE_MAPPING_LEASED = "write_mapping_leased"
    SENDFILE = "sendfile"
    SPLICE = "splice"
    PREAD_WRITE = "pread_write"


class Ending(StrEnum):
    SIGNAL = "signal"  # killed by a signal
    ERRNO = "errno"  # a call failed
    SHORT_COUNT = "short_count"  # fewer bytes than asked, then 0 at the new end of the file
    CLEAN_STOP = "clean_stop"  # stopped on the lease-break signal and released the lease
    UNDISTURBED = "undisturbed"  # sent to the end of its time without noticing the truncation
    FAILED = "failed"  # the lab could not run it (see the run's error)
    MIXED = "mixed"  # the runs of one way ended differently


@dataclass(frozen=True)
class WayModel:
    way: TruncateWay
    label: str
    mechanism: str  # what the sender does, chunk after chunk
    textbook: str  # what the design documents say happens when the file is truncated
    expected: Ending
    expected_signal: str | None  # for Ending.SIGNAL
    holder_waited_for: bool  # the textbook: the truncating process waits for the lease holder

    @property
    def call(self) -> str:
        return self.label.split(" ")[0]


MODELS: dict[TruncateWay, WayModel] = {
    model.way: model
    for model in (
        WayModel(
            TruncateWay.READ_MAPPING,
            "read of the mapping",
            "copies each chunk out of a read-only mapping in user space, then writes the copy",
            "a user-space read of a page past the new end of the file raises SIGBUS, which kills the process",
            Ending.SIGNAL,
            "SIGBUS",
            holder_waited_for=False,
        ),
        WayModel(
            TruncateWay.WRITE_MAPPING,
            "write from the mapping",
            "write(2) to the socket straight from a read-only mapping (mmap + write)",
            "the write is interrupted by SIGBUS, whose default action kills the process and dumps core",
            Ending.SIGNAL,
            "SIGBUS",
            holder_waited_for=False,
        ),
        WayModel(
            TruncateWay.SEND_MAPPING,
            "send from the mapping",
            "send(2) to the socket straight from a read-only mapping",
            "the send, like the write, is interrupted by SIGBUS, which kills the process",
            Ending.SIGNAL,
            "SIGBUS",
            holder_waited_for=False,
        ),
        WayModel(
            TruncateWay.READ_MAPPING_LEASED,
            "read of the mapping, leased",
            "as the read of the mapping, holding a read lease (F_SETSIG, F_SETLEASE F_RDLCK); on the "
            "lease-break signal it stops, unmaps and releases the lease",
            "the truncating process blocks until the holder releases the lease (at most lease-break-time); "
            "the holder is told by the signal and never gets SIGBUS",
            Ending.CLEAN_STOP,
            None,
            holder_waited_for=True,
        ),
        WayModel(
            TruncateWay.WRITE_MAPPING_LEASED,
            "write from the mapping, leased",
            "as the write from the mapping, holding a read lease; on the lease-break signal it stops, unmaps "
            "and releases the lease",
            "the truncating process blocks until the holder releases the lease (at most lease-break-time); "
            "the holder's write is interrupted and returns the bytes written so far: never SIGBUS",
            Ending.CLEAN_STOP,
            None,
            holder_waited_for=True,
        ),
        WayModel(
            TruncateWay.SENDFILE,
            "sendfile",
            "sendfile(2) from the file to the socket",
            "sendfile returns the bytes sent before the truncation (a short count), then 0 at the new end "
            "of the file: no signal",
            Ending.SHORT_COUNT,
            None,
            holder_waited_for=False,
        ),
        WayModel(
            TruncateWay.SPLICE,
            "splice",
            "splice(2) from the file into a pipe, then from the pipe to the socket",
            "splice, like sendfile, returns a short count, then 0 at the new end of the file: no signal",
            Ending.SHORT_COUNT,
            None,
            holder_waited_for=False,
        ),
        WayModel(
            TruncateWay.PREAD_WRITE,
            "pread + write",
            "pread(2) into a buffer, then write(2) of the buffer",
            "pread returns fewer bytes, then 0 at the new end of the file: no signal",
            Ending.SHORT_COUNT,
            None,
            holder_waited_for=False,
        ),
    )
}

# A holder that released at once keeps the truncating process waiting milliseconds; one that waited out
# most of lease-break-time did not release at all (the kernel broke the lease itself).
LEASE_TIMED_OUT_FRACTION = 0.9


@dataclass(frozen=True)
class Observed:
    """What the runs of one way did, for the comparison. None: not measured."""

    ending: Ending
    signal: str | None
    errno_name: str | None
    errno_text: str | None
    delivered_bytes: float | None  # median over the runs
    truncator_wait_s: float | None  # median
    truncator_blocked: bool  # some run's truncating process had not returned when the lab gave up on it
    lease_break_time_s: float | None
    kernel_release: str


def finding(model: WayModel, seen: Observed) -> str | None:
    """One sentence where the machine contradicts the textbook for this way; None where it agrees."""
    if seen.ending in (Ending.FAILED, Ending.MIXED):
        return None  # said elsewhere: a failed run has its error, mixed runs their endings
    if seen.ending is not model.expected or (
        model.expected is Ending.SIGNAL and seen.signal != model.expected_signal
    ):
        return _ending_contradiction(model, seen)
    if model.holder_waited_for:
        return _wait_contradiction(model, seen)
    return None


def _ending_contradiction(model: WayModel, seen: Observed) -> str:
    said = f"the textbook says that {model.textbook}"
    delivered = (
        "" if seen.delivered_bytes is None else f" after {seen.delivered_bytes:,.0f} bytes were delivered"
    )
    kernel = f"on kernel {seen.kernel_release}"
    if seen.ending is Ending.ERRNO and model.expected is Ending.SIGNAL:
        return (
            f"{model.label}: {said}; {kernel} the call failed with {seen.errno_name} ({seen.errno_text})"
            f"{delivered} and no signal was sent: the fault happens inside the kernel's copy, which returns "
            "an error instead."
        )
    return f"{model.label}: {said}; {kernel} it ended by {describe_ending(seen)}{delivered}."


def _wait_contradiction(model: WayModel, seen: Observed) -> str | None:
    limit = seen.lease_break_time_s
    if seen.truncator_blocked:
        return (
            f"{model.label}: the textbook says the truncating process waits until the holder releases the "
            "lease; here it was still blocked when the lab gave up on it."
        )
    if (
        limit is not None
        and seen.truncator_wait_s is not None
        and seen.truncator_wait_s >= LEASE_TIMED_OUT_FRACTION * limit
    ):
        return (
            f"{model.label}: the truncating process waited {seen.truncator_wait_s:.1f} s, about the whole "
            f"lease-break-time ({limit:g} s): the holder did not release, the kernel broke the lease itself."
        )
    return None


def describe_ending(seen: Observed) -> str:
    """'SIGBUS', 'EFAULT (Bad address)', 'a short count', ... for a sentence."""
    if seen.ending is Ending.SIGNAL:
        return seen.signal or "a signal"
    if seen.ending is Ending.ERRNO:
        return f"{seen.errno_name} ({seen.errno_text})"
    return {
        Ending.SHORT_COUNT: "a short count",
        Ending.CLEAN_STOP: "a clean stop on the lease-break signal",
        Ending.UNDISTURBED: "never noticing the truncation",
    }.get(seen.ending, seen.ending.value)


def agreement(model: WayModel, seen: Observed) -> str:
    """One sentence for a way that matches the textbook, with what was measured."""
    if model.holder_waited_for and seen.truncator_wait_s is not None:
        return (
            f"As the textbook says: the holder stopped on the lease-break signal and released the lease; the "
            f"truncating process waited {seen.truncator_wait_s * 1000:.1f} ms, not lease-break-time."
        )
    if seen.ending is Ending.SIGNAL:
        return f"As the textbook says: the process was killed by {seen.signal}."
    if seen.ending is Ending.SHORT_COUNT:
        return "As the textbook says: a short count, then 0 at the new end of the file, and no signal."
    return f"As the textbook says: {describe_ending(seen)}."
