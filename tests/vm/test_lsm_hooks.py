"""Runs inside the qemu guest (tests/vm/run_vm.py): spec.lsmhooks served by BPF LSM programs (the guest
boots with `bpf` in lsm=), through the real agent with one policy shaped like Tetragon's lsm_file_open
and lsm_bprm_check examples (one agent start for the file).

Each selector filters on a path of its own, so every event asserted here comes from the workload the
test ran; each is checked field by field as Tetragon exports process_lsm. Override tests prove the
operation did not happen (the file was not opened, the program did not run) and which errno the
caller got; imaHash is checked against the file's own sha256.
"""

from __future__ import annotations

import errno
import hashlib
import re
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.agentproc import AgentProcess, Event, body, kind
from tests.vm.guestagent import guest_agent
from tests.vm.test_kprobe_override import _pid_and_errno  # the same workload: a call and its errno

pytestmark = pytest.mark.vm

BASE = Path(f"/tmp/lsm-vm-{uuid.uuid4().hex[:8]}")
DIRS = {name: BASE / name for name in ("deny", "kill", "exec", "free")}
PASSWD, SHADOW = BASE / "passwd", BASE / "shadow"
CAT = "/usr/bin/cat"
PYTHON = sys.executable  # the workload's interpreter, as exec names it (its binary)
DENIED_PROGRAM = BASE / "nop-lsm-vm"  # the lsm_bprm_check example's Postfix, with a name of our own
MARKER = BASE / "ran"
# more values than fit inline (8): the sleepable imaHash program reaches their LPM tries through
# gen_str_maps (ARRAY_OF_MAPS; bpf/include/generic/strmaps.h)
DECOYS = ", ".join(f'"{BASE}/decoy{i}/"' for i in range(9))

POLICY = f"""apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: vm-lsm
spec:
  lsmhooks:
  - hook: "file_open"
    args:
    - index: 0
      type: "file"
    selectors:
    - matchBinaries: [{{operator: In, values: ["{CAT}"]}}]
      matchArgs: [{{index: 0, operator: Equal, values: ["{PASSWD}", "{SHADOW}"]}}]
    - matchArgs: [{{index: 0, operator: Prefix, values: ["{DIRS["deny"]}/"]}}]
      matchActions: [{{action: Override, argError: -13}}]
    - matchArgs: [{{index: 0, operator: Prefix, values: ["{DIRS["kill"]}/"]}}]
      matchActions: [{{action: Sigkill}}]
  - hook: "bprm_check_security"
    message: "exec checked"
    tags: ["lsm", "exec"]
    args:
    - index: 0
      type: "linux_binprm"
    selectors:
    - matchBinaries: [{{operator: In, values: ["/usr/bin/bash", "{PYTHON}"]}}]
      matchArgs: [{{index: 0, operator: Postfix, values: ["/{DENIED_PROGRAM.name}", {DECOYS}]}}]
      matchActions:
      - action: Override
        argError: -1
      - action: Post
        imaHash: true
    - matchArgs: [{{index: 0, operator: Prefix, values: ["{DIRS["exec"]}/", {DECOYS}]}}]
      matchActions: [{{action: Post, imaHash: true}}]
"""

SCRIPT = f"#!/bin/sh\necho ran > {MARKER}\n"


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    for d in DIRS.values():
        d.mkdir(parents=True, exist_ok=True)
    for f in (PASSWD, SHADOW, DIRS["deny"] / "a.txt", DIRS["kill"] / "a.txt", DIRS["free"] / "a.txt"):
        f.write_text("x\n")
    for program in (DENIED_PROGRAM, DIRS["exec"] / "run.sh"):
        program.write_text(SCRIPT)
        program.chmod(0o755)
    with guest_agent(tmp_path_factory.mktemp("lsm-agent"), POLICY) as agent:
        yield agent


def _lsm_of(pid: int, hook: str) -> Callable[[Event], bool]:
    def pred(ev: Event) -> bool:
        return (
            kind(ev) == "process_lsm"
            and body(ev)["process"]["pid"] == pid
            and body(ev).get("function_name") == hook
        )

    return pred


def _sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def test_file_open_by_the_listed_binary_is_reported(agent: AgentProcess) -> None:
    """lsm_file_open.yaml's shape: cat opening one of the listed files is reported; another binary
    opening it, and cat opening another file, are not."""
    other_pid, err = _pid_and_errno(f"open({str(PASSWD)!r}).close()")
    assert err == 0
    child = subprocess.Popen([CAT, str(PASSWD), str(DIRS["free"] / "a.txt")], stdout=subprocess.PIPE)
    assert child.communicate(timeout=60)[0] == b"x\nx\n" and child.returncode == 0
    ev = agent.wait_for(_lsm_of(child.pid, "file_open"), timeout=60)
    b = body(ev)
    assert list(b) == ["process", "parent", "function_name", "policy_name", "args", "action"]
    assert b["process"]["binary"] == CAT
    assert b["function_name"] == "file_open"
    assert b["policy_name"] == "vm-lsm"
    assert b["args"] == [{"file_arg": {"path": str(PASSWD), "permission": "-rw-r--r--"}}]
    assert b["action"] == "KPROBE_ACTION_POST"
    # the other opener's record was in the ring before cat's: it would have been read by now. A file
    # on overlayfs (the guest's /tmp) is opened twice, the overlay's file and the real one behind it,
    # and both opens pass through the hook: cat's events are all this one.
    mine = [body(e) for e in agent.read_events() if kind(e) == "process_lsm"]
    theirs = [b for b in mine if b["process"]["pid"] in (other_pid, child.pid)]
    assert 1 <= len(theirs) <= 2 and all(t == b for t in theirs), theirs


def test_override_denies_the_open_with_the_policys_error(agent: AgentProcess) -> None:
    denied, free = DIRS["deny"] / "a.txt", DIRS["free"] / "a.txt"
    calls = {path: _pid_and_errno(f"open({str(path)!r}).close()") for path in (denied, free)}
    assert [err for _, err in calls.values()] == [errno.EACCES, 0]
    b = body(agent.wait_for(_lsm_of(calls[denied][0], "file_open"), timeout=60))
    assert (b["action"], b["policy_name"]) == ("KPROBE_ACTION_OVERRIDE", "vm-lsm")
    assert (b["process"]["binary"], b["args"]) == (
        PYTHON,
        [{"file_arg": {"path": str(denied), "permission": "-rw-r--r--"}}],
    )


def test_sigkill_kills_the_opener(agent: AgentProcess) -> None:
    target = DIRS["kill"] / "a.txt"
    child = subprocess.Popen([sys.executable, "-c", f"open({str(target)!r}).read(); print('survived')"])
    assert child.wait(timeout=120) == -9
    ev = agent.wait_for(_lsm_of(child.pid, "file_open"), timeout=60)
    assert body(ev)["action"] == "KPROBE_ACTION_SIGKILL"
    assert body(ev)["args"] == [{"file_arg": {"path": str(target), "permission": "-rw-r--r--"}}]


def test_override_denies_the_exec_and_reports_its_ima_hash(agent: AgentProcess) -> None:
    """lsm_bprm_check.yaml's shape: the program is not run, execve fails with EPERM (argError -1),
    and the event carries the program's IMA hash."""
    MARKER.unlink(missing_ok=True)
    pid, err = _pid_and_errno(f"os.execv({str(DENIED_PROGRAM)!r}, [{str(DENIED_PROGRAM)!r}])")
    assert err == errno.EPERM
    assert not MARKER.exists()
    ev = agent.wait_for(_lsm_of(pid, "bprm_check_security"), timeout=60)
    b = body(ev)
    assert list(b) == [
        "process",
        "parent",
        "function_name",
        "policy_name",
        "message",
        "args",
        "action",
        "tags",
        "ima_hash",
    ]
    assert b["message"] == "exec checked"
    assert b["tags"] == ["lsm", "exec"]
    assert b["args"] == [{"linux_binprm_arg": {"path": str(DENIED_PROGRAM), "permission": "-rwxr-xr-x"}}]
    assert b["action"] == "KPROBE_ACTION_OVERRIDE"
    assert b["ima_hash"] == _sha256(DENIED_PROGRAM)


def test_allowed_exec_runs_and_reports_its_ima_hash(agent: AgentProcess) -> None:
    program = DIRS["exec"] / "run.sh"
    MARKER.unlink(missing_ok=True)
    child = subprocess.Popen([str(program)])
    assert child.wait(timeout=60) == 0 and MARKER.read_text() == "ran\n"
    ev = agent.wait_for(_lsm_of(child.pid, "bprm_check_security"), timeout=60)
    b = body(ev)
    assert b["action"] == "KPROBE_ACTION_POST"
    assert b["args"] == [{"linux_binprm_arg": {"path": str(program), "permission": "-rwxr-xr-x"}}]
    assert b["ima_hash"] == _sha256(program)


def test_each_hook_is_a_bpf_lsm_program(agent: AgentProcess) -> None:
    out = subprocess.run(["bpftool", "prog", "show"], capture_output=True, text=True, check=True).stdout
    assert re.search(r"\blsm\s+name gen_lsm\s", out), out
    assert re.search(r"\blsm\s+name gen_lsm_ima_bpr", out), out  # names are cut to 15 characters
