"""Runs inside the qemu guest (tests/vm/run_vm.py): `resolve` (BTF field paths on hook arguments) on a
BPF LSM hook and on a kernel-function kprobe, through the real agent (one start for the file), with the
offsets taken from the guest kernel's own BTF.

The LSM hook is Tetragon's lsm_track_grandparent example (bprm_check_security, the exec's new mm's
owner's grandparent's comm) plus integer paths; the kprobe reads security_file_open's file through a
string, an integer and a uid path. Each expected value is read here from /proc or stat of the workload.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.agentproc import AgentProcess, Event, body, kind
from tests.vm.guestagent import guest_agent

pytestmark = pytest.mark.vm

BASE = Path(f"/tmp/resolve-vm-{uuid.uuid4().hex[:8]}")
TARGET = BASE / "resolve-target.txt"
SHELL = BASE / "resolve-sh"  # bash under a name of our own: its comm
NOBODY = ("/usr/bin/setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups")

POLICY = f"""apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: vm-resolve
spec:
  kprobes:
  - call: security_file_open
    syscall: false
    args:
    - {{index: 0, type: string, resolve: f_path.dentry.d_name.name}}
    - {{index: 0, type: uint64, resolve: f_inode.i_ino}}
    - {{index: 0, type: uint32, resolve: f_cred.uid.val}}
    - {{index: 0, type: file}}
    selectors:
    - matchArgs: [{{index: 0, operator: Equal, values: ["{TARGET.name}"]}}]
      matchBinaries: [{{operator: In, values: ["/usr/bin/cat"]}}]
  lsmhooks:
  - hook: bprm_check_security
    args:
    - {{index: 0, type: string, resolve: mm.owner.real_parent.real_parent.comm}}
    - {{index: 0, type: int, resolve: mm.owner.real_parent.tgid}}
    - {{index: 0, type: string, resolve: mm.owner.real_parent.comm}}
    selectors:
    - matchBinaries: [{{operator: In, values: ["/usr/bin/bash", "{SHELL}"]}}]
"""


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    BASE.mkdir(parents=True, exist_ok=True)
    TARGET.write_text("x\n")
    TARGET.chmod(0o644)
    if not SHELL.exists():
        SHELL.symlink_to("/usr/bin/bash")
    with guest_agent(tmp_path_factory.mktemp("resolve-agent"), POLICY) as agent:
        yield agent


def _of(event: str, pred: Callable[[Event], bool]) -> Callable[[Event], bool]:
    return lambda ev: kind(ev) == event and body(ev).get("policy_name") == "vm-resolve" and pred(body(ev))


def test_lsm_track_grandparent(agent: AgentProcess) -> None:
    """The exec's new mm is owned by the exec'ing task (the shell's child): its real parent is the
    shell, the shell's is this test's process."""
    shell = subprocess.Popen([str(SHELL), "-c", "/usr/bin/true; exit 0"])
    assert shell.wait(timeout=60) == 0
    try:
        b = body(agent.wait_for(_of("process_lsm", lambda b: b["parent"]["pid"] == shell.pid), timeout=60))
    except AssertionError:
        seen = [body(e) for e in agent.read_events() if kind(e) == "process_lsm"]
        raise AssertionError(f"shell {shell.pid}: no event of its child in {seen[-5:]}") from None
    assert b["function_name"] == "bprm_check_security"
    assert b["args"] == [
        {"string_arg": Path("/proc/self/comm").read_text().strip()},
        {"int_arg": shell.pid},
        {"string_arg": SHELL.name},
    ]


def test_kprobe_paths_through_a_file(agent: AgentProcess) -> None:
    child = subprocess.Popen([*NOBODY, "/usr/bin/cat", str(TARGET)], stdout=subprocess.PIPE)
    assert child.communicate(timeout=60)[0] == b"x\n" and child.returncode == 0
    ev = agent.wait_for(_of("process_kprobe", lambda b: b["process"]["pid"] == child.pid), timeout=60)
    b = body(ev)
    assert b["function_name"] == "security_file_open"
    assert b["args"] == [
        {"string_arg": TARGET.name},
        {"size_arg": str(os.stat(TARGET).st_ino)},
        {"uint_arg": 65534},
        {"file_arg": {"path": str(TARGET), "permission": "-rw-r--r--"}},
    ]
