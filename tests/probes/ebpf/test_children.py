"""Following the processes a traced one starts (programs/scope.h, FOLLOW_CHILDREN: `trace ... -- COMMAND`): a
child is traced from its fork and counted as the kernel counts it (its own getrusage), a thread is no new
process, a followed child is taken out of the traced set when it exits, and without following (--pid) a child
is not traced."""

from __future__ import annotations

import json

import pytest
from support import ready_child

from probes.ebpf.faults import FaultsProbe
from probes.ebpf.scope import scalar
from probes.ebpf.session import TraceSession

# On "go": a thread of its own touches 300 pages (a thread is no new process), then a child process touches
# 1,000 and prints its pid and its faults by the kernel's count (getrusage: all of its life, from its fork);
# the parent passes that line on and prints "done" once the child has exited.
PARENT = """
import json, mmap, subprocess, sys, threading
CHILD = '''
import json, mmap, os, resource
m = mmap.mmap(-1, 1000 * mmap.PAGESIZE)
for offset in range(0, len(m), mmap.PAGESIZE): m[offset] = 1
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"child": os.getpid(), "faults": usage.ru_minflt + usage.ru_majflt}), flush=True)
'''
def touch():
    m = mmap.mmap(-1, 300 * mmap.PAGESIZE)
    for offset in range(0, len(m), mmap.PAGESIZE): m[offset] = 1
print("ready", flush=True)
sys.stdin.readline()
thread = threading.Thread(target=touch)
thread.start()
thread.join()
said = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, check=True).stdout
print(said.strip(), flush=True)
print("done", flush=True)
sys.stdin.readline()
"""


def _run_parent(follow_children: bool):
    """The parent traced (following its children or not) through one "go": its snapshot, the child's line,
    and the pids in the kernel's traced set (mqi_tgids) afterwards."""
    with ready_child(PARENT) as parent:
        probe = FaultsProbe([parent.pid], follow_children=follow_children)
        with TraceSession(probe) as session:
            parent.stdin.write("go\n")
            parent.stdin.flush()
            said = json.loads(parent.stdout.readline())
            assert parent.stdout.readline().strip() == "done"
            snapshot = session.snapshot()
            traced = {scalar(key) for key, _value in session._program.read("mqi_tgids")}  # the kernel's set
    return parent.pid, snapshot, said, traced


@pytest.mark.requires_bpf
def test_a_child_is_followed_from_its_fork_and_taken_out_when_it_exits():
    parent, snapshot, said, traced = _run_parent(follow_children=True)
    rows = {row.pid: row for row in snapshot.processes}
    assert said["child"] in rows, sorted(rows)
    # from its fork on: the kernel's own count, plus the few faults of its exit after its getrusage
    counted, kernel = rows[said["child"]].faults, said["faults"]
    assert 1000 <= kernel <= counted <= kernel + max(50, kernel // 20)
    assert snapshot.followed_pids == (said["child"],)  # the thread is the parent's, no process of its own
    assert rows[parent].faults >= 300  # the thread's faults are the parent's
    assert parent in traced and said["child"] not in traced  # exited: a process reusing its pid is not ours


@pytest.mark.requires_bpf
def test_without_following_a_child_is_not_traced():
    _parent, snapshot, said, _traced = _run_parent(follow_children=False)
    assert said["child"] not in {row.pid for row in snapshot.processes}
    assert snapshot.followed_pids == ()
