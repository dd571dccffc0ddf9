"""Who the caller is, in the terms the probes care about: root, and the effective Linux capabilities."""

from __future__ import annotations

import os
from pathlib import Path

# Bit numbers from linux/capability.h.
CAPABILITY_BITS = {"CAP_FOWNER": 3, "CAP_IPC_LOCK": 14, "CAP_SYS_ADMIN": 21, "CAP_PERFMON": 38, "CAP_BPF": 39}


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
