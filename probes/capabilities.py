"""What this machine and this caller allow mqinspect to do, for `mqinspect doctor`.

Two steps: `gather_facts()` reads the system (and, unless quick, proves BPF by loading a program);
`evaluate()` turns the facts into checks without any I/O, so tests can fake any machine.
"""

from __future__ import annotations

import errno
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from probes.ebpf.registry import PROBES, ProbeEntry
from probes.ebpf.smoke import ProbeLoadResult, SmokeResult, load_all_probes, run_smoke
from probes.ebpf.tracepoints import present_tracepoints
from probes.kernel import kernel_version
from probes.privileges import can_trace, effective_capabilities, user_name
from probes.residency.cachestat import cachestat
from probes.residency.scan import ResidencyUnavailable, open_regular_file

CACHESTAT_MIN_KERNEL = (6, 5)
MINCORE_LIES_SINCE = (5, 2)
TRACEFS_MOUNTS = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))
# Files every system has, owned by root and written by nobody else: cachestat on one of them is the check
# `mqinspect cache` meets on another user's file (a store a root broker writes).
FOREIGN_FILE_CANDIDATES = ("/etc/passwd", "/etc/hostname", "/bin/sh")
TRACE_GROUP = "GROUP"  # placeholder in the fixes: the group of the users who may trace
TRACEFS_GROUP_FIX = (
    f"sudo mount -o remount,gid={TRACE_GROUP},mode=0750 /sys/kernel/tracing (tracefs readable by that group)"
)


class Status(StrEnum):
    OK = "ok"
    MISSING = "missing"
    DEGRADED = "degraded"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class CapabilityCheck:
    name: str
    status: Status
    detail: str
    needed_for: str
    fix: str = ""
    # False for what the product does without (kprobes, fentry) or only its tests use (perf, fincore).
    required: bool = True


@dataclass(frozen=True)
class DoctorReport:
    checks: list[CapabilityCheck]
    ok: bool


@dataclass(frozen=True)
class ToolFacts:
    path: str | None
    version: str | None = None
    works: bool = True
    error: str | None = None


@dataclass(frozen=True)
class CachestatTry:
    """cachestat on a file of another user that this caller may read but not write: `errno` None if it
    answered (EPERM: the kernel's rule, see `_check_cachestat`)."""

    path: str
    owner_uid: int
    errno: int | None


@dataclass(frozen=True)
class HostFacts:
    """Everything doctor needs to know, gathered once. Unit tests build these by hand."""

    kernel_release: str
    euid: int
    capabilities: frozenset[str] | None
    tracefs: Path | None
    bcc_version: str | None
    bcc_error: str | None
    headers_build: Path | None  # where /lib/modules/<release>/build resolves, None if absent
    tracepoints: frozenset[str] | None  # None: tracefs could not be read (it is root-only)
    kprobes: bool
    cachestat_errno: int | None  # None: it worked; 0: never tried
    lockdown: str | None
    memlock_soft_bytes: int | None  # None: unlimited
    tools: dict[str, ToolFacts] = field(default_factory=dict)
    # cachestat on another user's file; None: every candidate is this caller's or writable by it (root)
    cachestat_foreign: CachestatTry | None = None
    interpreter: str = "/usr/bin/python3"  # the real file behind sys.executable (a venv links to it)
    environment_bin: str = ".venv/bin"  # where this installation's commands are
    tracepoint_smoke: SmokeResult | None = None  # None: not attempted (quick, or impossible)
    fentry_smoke: SmokeResult | None = None
    probe_loads: dict[str, ProbeLoadResult] | None = None  # each registered probe loaded for real
    quick: bool = False


# --- gathering ------------------------------------------------------------------------------------------


def gather_facts(*, quick: bool = False) -> HostFacts:
    release = os.uname().release
    capabilities = effective_capabilities()
    tracefs = _mounted_tracefs()
    bcc_version, bcc_error = _bcc_import()
    headers = _headers_build(release)
    attempt_bpf = not quick and bcc_version is not None and headers is not None and can_trace(capabilities)
    return HostFacts(
        kernel_release=release,
        euid=os.geteuid(),
        capabilities=capabilities,
        tracefs=tracefs,
        bcc_version=bcc_version,
        bcc_error=bcc_error,
        headers_build=headers,
        tracepoints=_readable_tracepoints(tracefs),
        kprobes=_kprobes_available(tracefs),
        cachestat_errno=_cachestat_errno(),
        lockdown=_lockdown_mode(),
        memlock_soft_bytes=_memlock_soft_limit(),
        tools=_tools(),
        cachestat_foreign=_cachestat_on_a_file_of_another_user(),
        interpreter=os.path.realpath(sys.executable),
        environment_bin=str(Path(sys.prefix) / "bin"),
        tracepoint_smoke=run_smoke("tracepoint") if attempt_bpf else None,
        fentry_smoke=run_smoke("fentry") if attempt_bpf else None,
        probe_loads={result.probe: result for result in load_all_probes()} if attempt_bpf else None,
        quick=quick,
    )


def _mounted_tracefs() -> Path | None:
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return None
    mounted = {Path(line.split()[1]) for line in mounts if line.split()[2:3] == ["tracefs"]}
    return next((path for path in TRACEFS_MOUNTS if path in mounted), None)


def _readable_tracepoints(tracefs: Path | None) -> frozenset[str] | None:
    if tracefs is None:
        return frozenset()
    try:
        return present_tracepoints(tracefs)
    except PermissionError:
        return None


def _bcc_import() -> tuple[str | None, str | None]:
    try:
        import bcc
    except Exception as exc:  # ImportError, or OSError when libbcc itself is missing
        return None, f"{type(exc).__name__}: {exc}"
    return getattr(bcc, "__version__", "unknown"), None


def _headers_build(release: str) -> Path | None:
    build = Path("/lib/modules") / release / "build"
    return build.resolve() if build.exists() else None


def _kprobes_available(tracefs: Path | None) -> bool:
    if Path("/sys/bus/event_source/devices/kprobe").exists():
        return True
    try:
        return bool(tracefs and (tracefs / "kprobe_events").exists())
    except PermissionError:
        return False


def _cachestat_errno() -> int | None:
    """Ask cachestat about a scratch file we just wrote; None means it answered."""
    with tempfile.TemporaryFile() as scratch:
        scratch.write(b"\0" * 4096)
        scratch.flush()
        try:
            cachestat(scratch.fileno())
        except OSError as error:
            return error.errno
    return None


def _cachestat_on_a_file_of_another_user() -> CachestatTry | None:
    """cachestat on the first candidate this caller neither owns nor may write, opened as `mqinspect cache`
    opens files (open_regular_file): the kernel may answer for the caller's own files and refuse this one."""
    for path in FOREIGN_FILE_CANDIDATES:
        try:
            fd = open_regular_file(path)
        except ResidencyUnavailable:
            continue
        try:
            owner = os.fstat(fd).st_uid
            if owner == os.geteuid() or os.access(f"/proc/self/fd/{fd}", os.W_OK, effective_ids=True):
                continue
            try:
                cachestat(fd)
            except OSError as error:
                return CachestatTry(path, owner, error.errno)
            return CachestatTry(path, owner, None)
        finally:
            os.close(fd)
    return None


def _lockdown_mode() -> str | None:
    try:
        text = Path("/sys/kernel/security/lockdown").read_text()
    except OSError:
        return None
    chosen = re.search(r"\[(\w+)\]", text)
    return chosen.group(1) if chosen else None


def _memlock_soft_limit() -> int | None:
    soft, _hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    return None if soft == resource.RLIM_INFINITY else soft


_TOOL_PROBES = {
    # tool: (version command, proof that it works here)
    "perf": (["perf", "--version"], ["perf", "stat", "-x,", "-e", "page-faults", "true"]),
    "fincore": (["fincore", "--version"], None),
    "vmtouch": (None, None),
    "strace": (["strace", "-V"], None),
    "bpftool": (["bpftool", "version"], None),
}


def _tools() -> dict[str, ToolFacts]:
    return {name: _tool(name, *commands) for name, commands in _TOOL_PROBES.items()}


def _tool(name: str, version_cmd: list[str] | None, proof_cmd: list[str] | None) -> ToolFacts:
    path = shutil.which(name) or next(
        (str(Path(d) / name) for d in ("/usr/sbin", "/sbin") if (Path(d) / name).exists()), None
    )
    if path is None:
        return ToolFacts(None)
    version = _first_line([path, *version_cmd[1:]]) if version_cmd else None
    if proof_cmd is None:
        return ToolFacts(path, version)
    proof = subprocess.run([path, *proof_cmd[1:]], capture_output=True, text=True, timeout=30)
    error = None if proof.returncode == 0 else _first_nonempty(proof.stderr) or f"exit {proof.returncode}"
    return ToolFacts(path, version, proof.returncode == 0, error)


def _first_line(command: list[str]) -> str | None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return _first_nonempty(done.stdout + done.stderr)


def _first_nonempty(text: str) -> str | None:
    return next((line.strip() for line in text.splitlines() if line.strip()), None)


# --- evaluating -------------------------------------------------------------------------------------------


def evaluate(facts: HostFacts) -> DoctorReport:
    checks = [
        _check_kernel(facts),
        _check_privileges(facts),
        _check_tracefs(facts),
        _check_bcc(facts),
        _check_headers(facts),
        _check_bpf_load(facts),
        *(_check_probe(facts, probe) for probe in PROBES),
        _check_kprobes(facts),
        _check_fentry(facts),
        _check_cachestat(facts),
        _check_mincore(facts),
        _check_lockdown(facts),
        _check_memlock(facts),
        *(_check_tool(name, tool) for name, tool in facts.tools.items()),
    ]
    ok = not any(check.required and check.status in (Status.MISSING, Status.DEGRADED) for check in checks)
    return DoctorReport(checks, ok)


def run_doctor(*, quick: bool = False) -> DoctorReport:
    return evaluate(gather_facts(quick=quick))


def _is_root(facts: HostFacts) -> bool:
    return facts.euid == 0


def _check_kernel(facts: HostFacts) -> CapabilityCheck:
    version = kernel_version(facts.kernel_release)
    needed = "cachestat residency with dirty/writeback counts (>= 6.5); tracepoint probes"
    if version >= CACHESTAT_MIN_KERNEL:
        return CapabilityCheck("kernel", Status.OK, f"Linux {facts.kernel_release}", needed)
    return CapabilityCheck(
        "kernel",
        Status.DEGRADED,
        f"Linux {facts.kernel_release}: older than 6.5, so no cachestat; residency falls back to mincore "
        "(no dirty, writeback or eviction counts)",
        needed,
        "boot a kernel >= 6.5",
    )


def _check_privileges(facts: HostFacts) -> CapabilityCheck:
    needed = "eBPF probes (trace, top's event panels, lab copy counts); cache --lock beyond RLIMIT_MEMLOCK"
    caps = facts.capabilities
    held = ", ".join(sorted(caps)) if caps else "none of CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN"
    if can_trace(caps, facts.euid):
        who = "root" if _is_root(facts) else f"uid {facts.euid}"
        return CapabilityCheck("privileges", Status.OK, f"{who} with {held}", needed)
    return CapabilityCheck(
        "privileges",
        Status.MISSING,
        f"uid {facts.euid} holds {held}: BPF programs cannot be loaded",
        needed,
        bpf_without_root_fix(facts.interpreter, facts.environment_bin),
    )


def bpf_without_root_fix(interpreter: str, environment_bin: str) -> str:
    """sudo; or the capabilities on a copy of the interpreter that only one group may run. Never on the
    interpreter itself: every user of the system's python3 would hold CAP_BPF."""
    private = f"{environment_bin}/python-bpf"
    return (
        "run as root (sudo mqinspect ...); or, for the users of one group, put the capabilities on a private "
        f"copy of the interpreter, never on {interpreter} itself (every user runs it): "
        f"sudo install -o root -g {TRACE_GROUP} -m 0750 {interpreter} {private} && "
        f"sudo setcap cap_bpf,cap_perfmon+ep {private} && {TRACEFS_GROUP_FIX}; then run "
        f"{private} -m mqinspect ..."
    )


def _check_tracefs(facts: HostFacts) -> CapabilityCheck:
    needed = "eBPF tracepoint probes (tracepoints are found and attached through tracefs)"
    if facts.tracefs and facts.tracepoints is None:
        return CapabilityCheck(
            "tracefs",
            Status.MISSING,
            f"mounted at {facts.tracefs}, but readable by root only: the probes cannot find tracepoints",
            needed,
            f"run as root (sudo mqinspect ...), or {TRACEFS_GROUP_FIX}",
        )
    if facts.tracefs:
        return CapabilityCheck("tracefs", Status.OK, f"mounted at {facts.tracefs}", needed)
    return CapabilityCheck(
        "tracefs", Status.MISSING, "not mounted", needed, "sudo mount -t tracefs tracefs /sys/kernel/tracing"
    )


def _check_bcc(facts: HostFacts) -> CapabilityCheck:
    needed = "eBPF probes (bcc compiles and loads them)"
    if facts.bcc_version:
        return CapabilityCheck("bcc", Status.OK, f"bcc {facts.bcc_version} importable", needed)
    return CapabilityCheck(
        "bcc",
        Status.MISSING,
        f"cannot import bcc ({facts.bcc_error})",
        needed,
        "sudo apt-get install python3-bpfcc bpfcc-tools, and use a venv made with "
        "`/usr/bin/python3 -m venv --system-site-packages` (make test does both)",
    )


def _check_headers(facts: HostFacts) -> CapabilityCheck:
    needed = "eBPF probes (bcc compiles against kernel headers)"
    modules = f"/lib/modules/{facts.kernel_release}"
    if facts.headers_build:
        return CapabilityCheck(
            "kernel-headers", Status.OK, f"{modules}/build -> {facts.headers_build}", needed
        )
    return CapabilityCheck(
        "kernel-headers",
        Status.MISSING,
        f"{modules}/build does not exist: bcc fails with 'Unable to find kernel headers'",
        needed,
        "scripts/bootstrap (installs Debian's headers and links them there)",
    )


def _check_bpf_load(facts: HostFacts) -> CapabilityCheck:
    needed = "eBPF probes (proved by compiling, attaching and detaching a tracepoint program)"
    smoke = facts.tracepoint_smoke
    if smoke is None:
        if facts.quick:
            return CapabilityCheck("bpf-load", Status.SKIPPED, "not attempted (--quick)", needed)
        return CapabilityCheck(
            "bpf-load",
            Status.MISSING,
            "not attempted: " + _bpf_prerequisite_gap(facts),
            needed,
            "fix the checks above (privileges, bcc, kernel-headers)",
        )
    if smoke.loaded:
        return CapabilityCheck(
            "bpf-load",
            Status.OK,
            f"tracepoint program compiled, attached and detached in {smoke.seconds:.2f} s",
            needed,
        )
    return CapabilityCheck(
        "bpf-load",
        Status.MISSING,
        f"a tracepoint program failed to load: {smoke.error}",
        needed,
        "run `sudo mqinspect --debug doctor`; check kernel-headers and lockdown",
    )


def _bpf_prerequisite_gap(facts: HostFacts) -> str:
    gaps = []
    if not can_trace(facts.capabilities, facts.euid):
        gaps.append("no BPF privileges")
    if not facts.bcc_version:
        gaps.append("bcc missing")
    if not facts.headers_build:
        gaps.append("kernel headers missing")
    return ", ".join(gaps) or "unknown"


def _check_probe(facts: HostFacts, probe: ProbeEntry) -> CapabilityCheck:
    """One row per probe: its tracepoints are present, and (when privileged) its program really loads."""
    name = f"probe:{probe.name}"
    needed = f"`mqinspect trace {probe.name}`"
    if not facts.tracefs:
        return CapabilityCheck(
            name,
            Status.MISSING,
            "tracefs not mounted, cannot list tracepoints",
            needed,
            "sudo mount -t tracefs tracefs /sys/kernel/tracing",
        )
    if facts.tracepoints is None:
        return CapabilityCheck(
            name,
            Status.MISSING,
            "cannot list tracepoints: tracefs is readable by root only",
            needed,
            f"run as root (sudo mqinspect doctor), or {TRACEFS_GROUP_FIX}",
        )
    lacking = [tp for tp in probe.required if tp not in facts.tracepoints]
    if lacking:
        return CapabilityCheck(
            name,
            Status.MISSING,
            "lacks " + ", ".join(lacking),
            needed,
            "boot a kernel that has these tracepoints",
        )
    lacking_optional = [tp for tp in probe.optional if tp not in facts.tracepoints]
    present = len(probe.required) + len(probe.optional) - len(lacking_optional)
    tracepoints = f"{present} tracepoints present" + (
        f", lacks optional {', '.join(lacking_optional)}" if lacking_optional else ""
    )
    return _probe_load_verdict(facts, probe.name, name, needed, tracepoints, bool(lacking_optional))


def _probe_load_verdict(
    facts: HostFacts, probe: str, name: str, needed: str, tracepoints: str, degraded: bool
) -> CapabilityCheck:
    load = (facts.probe_loads or {}).get(probe)
    if load is not None and not load.loaded:
        return CapabilityCheck(
            name,
            Status.MISSING,
            f"{tracepoints}; its program failed to load: {load.error}",
            needed,
            "run `sudo mqinspect --debug doctor`; check kernel-headers",
        )
    if load is not None:
        detail = f"{tracepoints}; program loaded and detached in {load.seconds:.2f} s"
    elif facts.probe_loads is None:
        reason = "--quick" if facts.quick else _bpf_prerequisite_gap(facts)
        detail = f"{tracepoints}; program not test-loaded ({reason})"
    else:  # the load test ran, but not for this probe
        detail = f"{tracepoints}; program not test-loaded"
    status = Status.DEGRADED if degraded else Status.OK
    fix = "none needed: the probe runs without them" if degraded else ""
    return CapabilityCheck(name, status, detail, needed, fix)


def _check_kprobes(facts: HostFacts) -> CapabilityCheck:
    needed = "nothing: mqinspect uses stable tracepoints only (bcc's cachestat/cachetop/filetop need kprobes)"
    if facts.kprobes:
        return CapabilityCheck("kprobes", Status.OK, "available", needed, required=False)
    return CapabilityCheck(
        "kprobes", Status.MISSING, "not available (CONFIG_KPROBES off)", needed, required=False
    )


def _check_fentry(facts: HostFacts) -> CapabilityCheck:
    needed = "nothing: mqinspect uses stable tracepoints only"
    smoke = facts.fentry_smoke
    if smoke is None:
        reason = "--quick" if facts.quick else _bpf_prerequisite_gap(facts)
        return CapabilityCheck("fentry", Status.SKIPPED, f"not attempted ({reason})", needed, required=False)
    if smoke.loaded:
        return CapabilityCheck("fentry", Status.OK, "a kfunc program loaded", needed, required=False)
    # bcc words every EPERM as "Need super-user privileges", even for root; say what actually happened.
    refused = "super-user" in (smoke.error or "") and can_trace(facts.capabilities, facts.euid)
    detail = (
        "the kernel refuses fentry/kfunc programs (EPERM) even with BPF privileges"
        if refused
        else (f"a kfunc program failed to load: {smoke.error}")
    )
    return CapabilityCheck("fentry", Status.MISSING, detail, needed, required=False)


def _check_cachestat(facts: HostFacts) -> CapabilityCheck:
    """Both calls `mqinspect cache` makes: on the caller's own file, and on a file of another user. The kernel
    answers for a file the caller opened for writing, owns (or has CAP_FOWNER for), or may write
    (`can_do_cachestat`, mm/filemap.c; the rule mincore follows since 5.2) and refuses the rest with EPERM."""
    needed = "`mqinspect cache` and the dashboard: cached, dirty, writeback and evicted pages of store files"
    code = facts.cachestat_errno
    if code == errno.ENOSYS:
        return CapabilityCheck(
            "cachestat",
            Status.DEGRADED,
            "ENOSYS: the kernel has no cachestat; mincore is used (residency only)",
            needed,
            "boot a kernel >= 6.5",
        )
    if code is not None:
        return CapabilityCheck(
            "cachestat",
            Status.DEGRADED,
            f"refused even on a file of this caller: {os.strerror(code)} (seccomp?); mincore is used",
            needed,
            "run as root, outside the sandbox that filters the syscall",
        )
    foreign = facts.cachestat_foreign
    if foreign is None:
        return CapabilityCheck(
            "cachestat",
            Status.OK,
            "syscall 451 answers for any file: this caller owns or may write every file tried (root)",
            needed,
        )
    owner = user_name(foreign.owner_uid)
    if foreign.errno is None:
        return CapabilityCheck(
            "cachestat",
            Status.OK,
            f"syscall 451 answers, also for files of other users (tried {foreign.path}, owned by {owner})",
            needed,
        )
    return CapabilityCheck(
        "cachestat",
        Status.DEGRADED,
        f"answers for this caller's own files only: refused ({errno.errorcode.get(foreign.errno, '?')}) on "
        f"{foreign.path} (owned by {owner}), as on any file it may read but not write, such as a store "
        "a root broker writes; `mqinspect cache` shows those unavailable",
        needed,
        "run as root (sudo mqinspect ...), or as the owner of the store's files",
    )


def _check_mincore(facts: HostFacts) -> CapabilityCheck:
    needed = "per-page residency maps (cache --map), and residency where cachestat is missing"
    lies = kernel_version(facts.kernel_release) >= MINCORE_LIES_SINCE
    trusted_everywhere = _is_root(facts) or "CAP_FOWNER" in (facts.capabilities or ())
    if not lies:
        return CapabilityCheck("mincore", Status.OK, "kernel < 5.2: mincore reports real residency", needed)
    if trusted_everywhere:
        return CapabilityCheck(
            "mincore",
            Status.OK,
            "trusted: since 5.2 mincore fakes residency for files the caller cannot write, but this caller "
            "may write any file (root/CAP_FOWNER)",
            needed,
        )
    return CapabilityCheck(
        "mincore",
        Status.DEGRADED,
        "since 5.2 mincore reports every page resident for files you may not write; such results are marked "
        "untrusted",
        needed,
        "run as root, or inspect files you own",
    )


def _check_lockdown(facts: HostFacts) -> CapabilityCheck:
    needed = "eBPF probes (lockdown=confidentiality forbids reading kernel memory from BPF)"
    mode = facts.lockdown
    if mode is None:
        return CapabilityCheck(
            "lockdown",
            Status.SKIPPED,
            "mode unknown: securityfs not mounted",
            needed,
            "sudo mount -t securityfs securityfs /sys/kernel/security",
        )
    if mode == "confidentiality":
        return CapabilityCheck(
            "lockdown",
            Status.DEGRADED,
            "confidentiality: BPF may not read kernel memory",
            needed,
            "boot with lockdown=integrity or none",
        )
    return CapabilityCheck("lockdown", Status.OK, f"{mode}: tracepoint probes are unaffected", needed)


def _check_memlock(facts: HostFacts) -> CapabilityCheck:
    needed = "warm-up's mlock and `cache --lock` (pinning pages in memory)"
    limit = facts.memlock_soft_bytes
    shown = "unlimited" if limit is None else f"{limit // 1024} KiB"
    if limit is None or "CAP_IPC_LOCK" in (facts.capabilities or ()):
        lifted = "" if limit is None else ", lifted by CAP_IPC_LOCK"
        return CapabilityCheck("memlock", Status.OK, f"RLIMIT_MEMLOCK {shown}{lifted}", needed)
    return CapabilityCheck(
        "memlock",
        Status.DEGRADED,
        f"RLIMIT_MEMLOCK {shown}: mlock beyond it fails",
        needed,
        "ulimit -l unlimited (or memlock in /etc/security/limits.conf), or run as root",
    )


_TOOL_USES = {
    "perf": "tests and labs cross-check fault counts with perf stat",
    "fincore": "tests cross-check residency with fincore",
    "vmtouch": "tests cross-check residency with vmtouch",
    "strace": "tests and labs cross-check syscall counts with strace -c",
    "bpftool": "tests check that no BPF program is left loaded",
}
_TOOL_PACKAGES = {
    "perf": "linux-perf",
    "fincore": "util-linux-extra",
    "vmtouch": "vmtouch",
    "strace": "strace",
    "bpftool": "bpftool",
}


def _check_tool(name: str, tool: ToolFacts) -> CapabilityCheck:
    needed = _TOOL_USES.get(name, "tests")
    fix = f"sudo apt-get install {_TOOL_PACKAGES.get(name, name)}"
    if tool.path is None:
        return CapabilityCheck(name, Status.MISSING, "not installed", needed, fix, required=False)
    if not tool.works:
        return CapabilityCheck(
            name, Status.DEGRADED, f"{tool.path} fails here: {tool.error}", needed, fix, required=False
        )
    return CapabilityCheck(name, Status.OK, tool.version or tool.path, needed, required=False)
