"""Who the caller is, in the terms the probes care about: root, the effective Linux capabilities, and which
other processes' /proc files it may read."""

from __future__ import annotations

import os
import pwd
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# Bit numbers from linux/capability.h.
CAPABILITY_BITS = {
    "CAP_DAC_OVERRIDE": 1,
    "CAP_FOWNER": 3,
    "CAP_IPC_LOCK": 14,
    "CAP_SYS_PTRACE": 19,
    "CAP_SYS_ADMIN": 21,
    "CAP_PERFMON": 38,
    "CAP_BPF": 39,
}
# What lets a caller read another user's /proc/PID/maps, smaps and fd (the kernel's ptrace read check).
PROC_ACCESS_FIX = "run as root or with CAP_SYS_PTRACE"
PROCESSES_NAMED = 3


def effective_capabilities(proc_root: Path = Path("/proc"), pid: str = "self") -> frozenset[str] | None:
    """The named capabilities in the process's effective set, or None when /proc does not say."""
    try:
        status = (proc_root / pid / "status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("CapEff:"):
            mask = int(line.split()[1], 16)
            return frozenset(name for name, bit in CAPABILITY_BITS.items() if mask >> bit & 1)
    return None


def can_trace(capabilities: frozenset[str] | None, euid: int | None = None) -> bool:
    """Whether BPF tracepoint programs can be loaded: root with CAP_SYS_ADMIN, or CAP_BPF plus CAP_PERFMON."""
    if capabilities is None:
        return (os.geteuid() if euid is None else euid) == 0
    return "CAP_SYS_ADMIN" in capabilities or {"CAP_BPF", "CAP_PERFMON"} <= capabilities


@dataclass(frozen=True)
class OtherProcess:
    """A process whose private /proc files (maps, smaps, fd) this caller could not read, described by the
    files every user may read: its name, its owner, its mlocked memory (VmLck) and its resident file pages
    (RssFile: a broker's mapped segments), None where unknown.

    The kernel lets a caller read another process's maps when both run as the same user, or the caller has
    CAP_SYS_PTRACE (root; CAP_PERFMON is enough for maps and smaps on this kernel), and the target is
    dumpable and holds no capability the caller lacks. So a process of another user is refused for want of
    privilege (root would read it), and one of the caller's own user is refused whatever the caller does."""

    pid: int
    comm: str | None
    owner_uid: int | None
    locked_bytes: int | None
    rss_file_bytes: int | None = None

    @property
    def owner(self) -> str | None:
        return None if self.owner_uid is None else user_name(self.owner_uid)

    @property
    def of_another_user(self) -> bool:
        """Whether it runs as another user than the caller: more privilege would make it readable."""
        return self.owner_uid != os.geteuid()


def other_process(pid: int, proc_root: Path = Path("/proc")) -> OtherProcess | None:
    """What anyone may read of process `pid`; None when it has exited."""
    # Imported here, not above: the residency probes import this module for its capability check alone,
    # and the /proc readers would add ~10 ms to the start-up of `mqinspect cache`.
    from probes.procfs import ProcessGone, read_process_status

    directory = proc_root / str(pid)
    try:
        owner_uid = directory.stat().st_uid
        comm = (directory / "comm").read_text(errors="replace").strip() or None
        status = read_process_status(pid, proc_root)
    except (ProcessGone, FileNotFoundError, ProcessLookupError):
        return None
    except OSError:
        return OtherProcess(pid, None, None, None)
    return OtherProcess(pid, comm, owner_uid, status.vm_lck_bytes, status.rss_file_bytes)


def user_name(uid: int) -> str:
    """The name of user `uid`, or "uid N" when the system has none."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def describe_processes(processes: Sequence[OtherProcess], limit: int = PROCESSES_NAMED) -> str:
    """ "pid 9664 (python3, owned by root)", or the first `limit` of several and how many more."""
    named = ", ".join(_describe(process) for process in processes[:limit])
    hidden = len(processes) - limit
    prefix = "pid " if len(processes) == 1 else "pids "
    return prefix + named + (f" and {hidden} more" if hidden > 0 else "")


def _describe(process: OtherProcess) -> str:
    details = [detail for detail in (process.comm, process.owner and f"owned by {process.owner}") if detail]
    return f"{process.pid} ({', '.join(details)})" if details else str(process.pid)
