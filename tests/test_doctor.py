"""`mqinspect doctor`: each check's verdict on faked machines, the JSON contract, and real runs as root and
as an unprivileged user."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support import mqinspect_as_nobody
from typer.testing import CliRunner

from mqinspect.cli.app import app
from probes.capabilities import CachestatTry, HostFacts, Status, ToolFacts, evaluate, kernel_version
from probes.ebpf.registry import all_tracepoints
from probes.ebpf.smoke import ProbeLoadResult, SmokeResult

ALL_TRACEPOINTS = all_tracepoints()
ROOT_CAPS = frozenset({"CAP_FOWNER", "CAP_IPC_LOCK", "CAP_SYS_ADMIN", "CAP_PERFMON", "CAP_BPF"})

# This project's machines, as machine.md describes them: everything but kprobes and fentry.
HEALTHY = HostFacts(
    kernel_release="6.18.44-fc",
    euid=0,
    capabilities=ROOT_CAPS,
    tracefs=Path("/sys/kernel/tracing"),
    bcc_version="0.26.0",
    bcc_error=None,
    headers_build=Path("/usr/src/linux-headers-6.1.0-56-amd64"),
    tracepoints=ALL_TRACEPOINTS,
    kprobes=False,
    cachestat_errno=None,
    lockdown="integrity",
    memlock_soft_bytes=8 << 20,
    tools={"perf": ToolFacts("/usr/bin/perf", "perf version 6.1"), "fincore": ToolFacts("/usr/bin/fincore")},
    tracepoint_smoke=SmokeResult(True, 0.7, None),
    fentry_smoke=SmokeResult(False, 0.5, "Exception: Need super-user privileges to run"),
    probe_loads={"faults": ProbeLoadResult("faults", True, 0.9, None)},
)


def checks_of(facts: HostFacts) -> dict:
    return {check.name: check for check in evaluate(facts).checks}


def test_healthy_machine_is_ok_with_kprobes_and_fentry_not_needed():
    report = evaluate(HEALTHY)
    assert report.ok
    checks = checks_of(HEALTHY)
    assert checks["kprobes"].status is Status.MISSING and not checks["kprobes"].required
    assert checks["fentry"].status is Status.MISSING and not checks["fentry"].required
    assert "refuses" in checks["fentry"].detail  # not bcc's misleading "need super-user"
    others = [c for c in report.checks if c.name not in ("kprobes", "fentry")]
    assert all(c.status is Status.OK for c in others), [c for c in others if c.status is not Status.OK]


def test_unprivileged_user_lacks_privileges_and_bpf_and_is_not_ok():
    facts = dataclasses.replace(
        HEALTHY,
        euid=1000,
        capabilities=frozenset(),
        tracepoint_smoke=None,
        fentry_smoke=None,
        tracepoints=None,
    )
    checks = checks_of(facts)
    assert checks["privileges"].status is Status.MISSING and "setcap" in checks["privileges"].fix
    assert checks["bpf-load"].status is Status.MISSING and "no BPF privileges" in checks["bpf-load"].detail
    assert checks["probe:faults"].status is Status.MISSING
    assert checks["mincore"].status is Status.DEGRADED and "untrusted" in checks["mincore"].detail
    assert checks["memlock"].status is Status.DEGRADED
    assert not evaluate(facts).ok


def test_cap_bpf_and_perfmon_suffice_without_root():
    facts = dataclasses.replace(HEALTHY, euid=1000, capabilities=frozenset({"CAP_BPF", "CAP_PERFMON"}))
    assert checks_of(facts)["privileges"].status is Status.OK


def test_bpf_without_root_is_granted_on_a_private_interpreter_never_on_the_system_one():
    facts = dataclasses.replace(
        HEALTHY,
        euid=1000,
        capabilities=frozenset(),
        interpreter="/usr/bin/python3.11",
        environment_bin="/srv/mqinspect/.venv/bin",
    )
    fix = checks_of(facts)["privileges"].fix
    assert fix.startswith("run as root (sudo mqinspect ...)")
    private = "/srv/mqinspect/.venv/bin/python-bpf"
    assert f"sudo install -o root -g GROUP -m 0750 /usr/bin/python3.11 {private}" in fix
    assert f"sudo setcap cap_bpf,cap_perfmon+ep {private}" in fix
    assert "setcap cap_bpf,cap_perfmon+ep /usr/bin/python3" not in fix and "which python3" not in fix
    # the private interpreter's users must read tracefs too (it is root's only)
    assert "mount -o remount,gid=GROUP,mode=0750 /sys/kernel/tracing" in fix


@pytest.mark.parametrize(
    ("tried", "status", "said"),
    [
        (None, Status.OK, "for any file"),
        (CachestatTry("/etc/passwd", 0, None), Status.OK, "also for files of other users"),
        (CachestatTry("/etc/passwd", 0, errno.EPERM), Status.DEGRADED, "refused (EPERM) on /etc/passwd"),
    ],
    ids=["root", "another-users-file-answers", "another-users-file-refused"],
)
def test_cachestat_is_judged_on_a_file_of_another_user_as_cache_meets_it(tried, status, said):
    check = checks_of(dataclasses.replace(HEALTHY, cachestat_foreign=tried))["cachestat"]
    assert check.status is status and said in check.detail
    if status is Status.DEGRADED:
        assert "owned by root" in check.detail and "root" in check.fix


def test_old_kernel_without_cachestat_is_degraded():
    facts = dataclasses.replace(HEALTHY, kernel_release="6.1.0-18-amd64", cachestat_errno=38)
    checks = checks_of(facts)
    assert checks["kernel"].status is Status.DEGRADED and "6.5" in checks["kernel"].fix
    assert checks["cachestat"].status is Status.DEGRADED and "ENOSYS" in checks["cachestat"].detail
    assert not evaluate(facts).ok


def test_missing_bcc_and_headers_say_how_to_fix():
    facts = dataclasses.replace(
        HEALTHY,
        bcc_version=None,
        bcc_error="ModuleNotFoundError: No module named 'bcc'",
        headers_build=None,
        tracepoint_smoke=None,
        fentry_smoke=None,
    )
    checks = checks_of(facts)
    assert "python3-bpfcc" in checks["bcc"].fix
    assert "bootstrap" in checks["kernel-headers"].fix
    assert (
        "bcc missing" in checks["bpf-load"].detail and "kernel headers missing" in checks["bpf-load"].detail
    )


def test_a_missing_tracepoint_is_named_under_its_probe():
    facts = dataclasses.replace(HEALTHY, tracepoints=ALL_TRACEPOINTS - {"writeback:balance_dirty_pages"})
    checks = checks_of(facts)
    assert checks["probe:writeback"].status is Status.MISSING
    assert "writeback:balance_dirty_pages" in checks["probe:writeback"].detail
    assert checks["probe:faults"].status is Status.OK


def test_a_probe_whose_program_fails_to_load_is_missing_with_the_error():
    failed = {"faults": ProbeLoadResult("faults", False, 0.4, "Exception: Failed to compile BPF module")}
    checks = checks_of(dataclasses.replace(HEALTHY, probe_loads=failed))
    assert checks["probe:faults"].status is Status.MISSING
    assert "Failed to compile BPF module" in checks["probe:faults"].detail
    assert "loaded and detached" in checks_of(HEALTHY)["probe:faults"].detail
    assert not evaluate(dataclasses.replace(HEALTHY, probe_loads=failed)).ok


def test_a_missing_optional_tracepoint_degrades_without_failing():
    facts = dataclasses.replace(HEALTHY, tracepoints=ALL_TRACEPOINTS - {"readahead:page_cache_sync_ra"})
    assert checks_of(facts)["probe:pagecache"].status is Status.DEGRADED


def test_quick_skips_the_load_test_and_stays_ok():
    facts = dataclasses.replace(
        HEALTHY, quick=True, tracepoint_smoke=None, fentry_smoke=None, probe_loads=None
    )
    assert checks_of(facts)["bpf-load"].status is Status.SKIPPED
    assert "not test-loaded (--quick)" in checks_of(facts)["probe:faults"].detail
    assert evaluate(facts).ok


def test_lockdown_and_memlock_verdicts():
    assert (
        checks_of(dataclasses.replace(HEALTHY, lockdown="confidentiality"))["lockdown"].status
        is Status.DEGRADED
    )
    assert checks_of(dataclasses.replace(HEALTHY, lockdown=None))["lockdown"].status is Status.SKIPPED
    limited = dataclasses.replace(HEALTHY, capabilities=ROOT_CAPS - {"CAP_IPC_LOCK"})
    assert checks_of(limited)["memlock"].status is Status.DEGRADED
    assert checks_of(dataclasses.replace(limited, memlock_soft_bytes=None))["memlock"].status is Status.OK


def test_test_tools_never_decide_the_verdict():
    facts = dataclasses.replace(HEALTHY, tools={"perf": ToolFacts(None), "fincore": ToolFacts(None)})
    assert checks_of(facts)["perf"].status is Status.MISSING
    assert evaluate(facts).ok


def test_kernel_version_parsing():
    assert kernel_version("6.18.44-fc-v669") == (6, 18, 44)
    assert kernel_version("6.5.0-rc1") == (6, 5, 0)
    assert kernel_version("5.10") == (5, 10, 0)


# --- real runs ------------------------------------------------------------------------------------------


@pytest.mark.requires_bpf
def test_real_doctor_json_contract_and_exit_0_on_this_kind_of_machine():
    result = CliRunner().invoke(app, ["doctor", "--format", "json"])
    report = json.loads(result.stdout)
    assert set(report) == {"checks", "ok"}
    for check in report["checks"]:
        assert {"name", "status", "detail", "needed_for", "fix"} <= set(check)
        assert check["status"] in ("ok", "missing", "degraded", "skipped")
    by_name = {check["name"]: check for check in report["checks"]}
    assert by_name["bpf-load"]["status"] == "ok", by_name["bpf-load"]
    assert "program loaded and detached" in by_name["probe:faults"]["detail"]
    assert report["ok"] is True, [c for c in report["checks"] if c["status"] != "ok"]
    assert result.exit_code == 0


@pytest.mark.requires_root
def test_unprivileged_user_gets_exit_3_and_the_fix_without_a_traceback():
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("needs setpriv (util-linux)")
    done = subprocess.run(
        [
            setpriv,
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "--inh-caps=-all",
            sys.executable,
            "-m",
            "mqinspect",
            "doctor",
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        cwd="/",
        env={**os.environ, "HOME": "/"},
        check=False,
    )
    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stderr
    checks = {check["name"]: check for check in json.loads(done.stdout)["checks"]}
    assert checks["privileges"]["status"] == "missing"
    assert "sudo" in checks["privileges"]["fix"]
    assert checks["bpf-load"]["status"] == "missing"


@pytest.mark.requires_root
def test_as_nobody_doctor_and_cache_agree_on_cachestat_for_a_root_file(tmp_path: Path):
    """`doctor` used to say "cachestat ok" (it tried a file of its own) while `cache` of a root broker's file
    said "cachestat refused (EPERM)"."""
    doctor = mqinspect_as_nobody("doctor", "--quick", "--format", "json")
    checks = {check["name"]: check for check in json.loads(doctor.stdout)["checks"]}
    cache = mqinspect_as_nobody("cache", "--format", "json", os.path.realpath("/etc/passwd"))
    (measured,) = json.loads(cache.stdout)["files"]
    assert "cachestat refused (EPERM)" in measured["notes"]["source"]
    assert checks["cachestat"]["status"] == "degraded"
    assert "refused (EPERM)" in checks["cachestat"]["detail"] and "root" in checks["cachestat"]["fix"]


@pytest.mark.requires_root
def test_a_user_granted_bpf_learns_that_tracefs_must_be_readable_too():
    done = mqinspect_as_nobody("doctor", "--quick", "--format", "json", capabilities=("bpf", "perfmon"))
    checks = {check["name"]: check for check in json.loads(done.stdout)["checks"]}
    assert checks["privileges"]["status"] == "ok"
    assert checks["tracefs"]["status"] == "missing" and "readable by root only" in checks["tracefs"]["detail"]
    assert "mount -o remount,gid=GROUP,mode=0750 /sys/kernel/tracing" in checks["tracefs"]["fix"]
    assert done.returncode == 3
