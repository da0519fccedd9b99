"""Runs inside the qemu guest (tests/vm/run_vm.py): the Override action on security_* kernel functions,
served by an fmod_ret program on the function (the Debian kernels have no bpf_override_return).

One agent start: the enforce policy is given with --tracing-policy, the monitor one sits in the agent's
policy directory. Each hook filters on a directory of its own. Every test proves what happened to the
operation (it failed with the policy's error, or the process died, and nothing was made) and that a
file outside the directory is unaffected, then checks the event.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.agentproc import AgentProcess, body
from tests.vm.guestagent import guest_agent
from tests.vm.test_kprobe_functions import _kprobe_of  # the same event filter

pytestmark = pytest.mark.vm

BASE = Path(f"/tmp/override-vm-{uuid.uuid4().hex[:8]}")
DIRS = {name: BASE / name for name in ("deny", "link", "kill", "monitor", "free")}

ENFORCE = f"""apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: vm-override
spec:
  kprobes:
  - call: security_file_open
    syscall: false
    args: [{{index: 0, type: file}}]
    selectors:
    - matchArgs: [{{index: 0, operator: Prefix, values: ["{DIRS["deny"]}/"]}}]
      matchActions: [{{action: Override, argError: -13}}]
  - call: security_path_link
    syscall: false
    args: [{{index: 1, type: path}}]
    selectors:
    - matchArgs: [{{index: 1, operator: Prefix, values: ["{DIRS["link"]}"]}}]
      matchActions: [{{action: Override, argError: -1}}]
  - call: security_path_symlink
    syscall: false
    args: [{{index: 0, type: path}}]
    selectors:
    - matchArgs: [{{index: 0, operator: Prefix, values: ["{DIRS["kill"]}"]}}]
      matchActions: [{{action: Sigkill}}, {{action: Override, argError: -1}}]
"""

MONITOR = f"""apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: vm-override-monitor
spec:
  options: [{{name: policy-mode, value: monitor}}]
  kprobes:
  - call: security_file_open
    syscall: false
    args: [{{index: 0, type: file}}]
    selectors:
    - matchArgs: [{{index: 0, operator: Prefix, values: ["{DIRS["monitor"]}/"]}}]
      matchActions: [{{action: Override, argError: -13}}]
"""


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    for d in DIRS.values():
        d.mkdir(parents=True, exist_ok=True)
    for name in ("deny", "monitor", "free"):
        (DIRS[name] / "a.txt").write_text("x")
    tmp = tmp_path_factory.mktemp("override-agent")
    (tmp / "tp.d").mkdir()
    (tmp / "tp.d" / "monitor.yaml").write_text(MONITOR)
    with guest_agent(tmp, ENFORCE) as agent:
        yield agent


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


# prints the errno the call failed with, or 0
CALL = "import os\ntry:\n    {call}\n    print(0)\nexcept OSError as e:\n    print(e.errno)"


def _pid_and_errno(call: str) -> tuple[int, int]:
    out = _run("import os; print(os.getpid())\n" + CALL.format(call=call))
    assert out.returncode == 0, out.stderr
    pid, err = out.stdout.split()
    return int(pid), int(err)


def test_open_under_the_prefix_fails_with_the_policys_error(agent: AgentProcess) -> None:
    target = DIRS["deny"] / "a.txt"
    pid, err = _pid_and_errno(f"open({str(target)!r}).close()")
    assert err == errno.EACCES
    assert _pid_and_errno(f"open({str(DIRS['free'] / 'a.txt')!r}).close()")[1] == 0
    ev = agent.wait_for(_kprobe_of(pid, "security_file_open"), timeout=60)
    b = body(ev)
    assert b["action"] == "KPROBE_ACTION_OVERRIDE"
    assert b["policy_name"] == "vm-override"
    assert b["args"] == [{"file_arg": {"path": str(target), "permission": "-rw-r--r--"}}]
    assert "return" not in b


def test_hardlink_into_the_directory_is_not_made(agent: AgentProcess) -> None:
    source = DIRS["free"] / "a.txt"
    link = DIRS["link"] / "l"
    pid, err = _pid_and_errno(f"os.link({str(source)!r}, {str(link)!r})")
    assert err == errno.EPERM
    assert not os.path.lexists(link)
    other = DIRS["free"] / "l"
    assert _pid_and_errno(f"os.link({str(source)!r}, {str(other)!r})")[1] == 0
    assert other.stat().st_ino == source.stat().st_ino
    ev = agent.wait_for(_kprobe_of(pid, "security_path_link"), timeout=60)
    assert body(ev)["action"] == "KPROBE_ACTION_OVERRIDE"
    assert body(ev)["args"] == [{"path_arg": {"path": str(DIRS["link"]), "permission": "drwxr-xr-x"}}]


def test_sigkill_and_override_kill_the_caller_and_the_symlink_is_not_made(agent: AgentProcess) -> None:
    link = DIRS["kill"] / "s"
    child = subprocess.Popen([sys.executable, "-c", f"import os; os.symlink('/etc/passwd', {str(link)!r})"])
    assert child.wait(timeout=120) == -9
    assert not os.path.lexists(link)
    ev = agent.wait_for(_kprobe_of(child.pid, "security_path_symlink"), timeout=60)
    assert body(ev)["action"] == "KPROBE_ACTION_SIGKILL"
    assert body(ev)["args"] == [{"path_arg": {"path": str(DIRS["kill"]), "permission": "drwxr-xr-x"}}]


def test_monitor_mode_lets_the_call_happen_and_reports_it(agent: AgentProcess) -> None:
    target = DIRS["monitor"] / "a.txt"
    pid, err = _pid_and_errno(f"open({str(target)!r}).close()")
    assert err == 0
    ev = agent.wait_for(_kprobe_of(pid, "security_file_open"), timeout=60)
    assert body(ev)["action"] == "KPROBE_ACTION_OVERRIDE"
    assert body(ev)["policy_name"] == "vm-override-monitor"
    assert body(ev)["args"] == [{"file_arg": {"path": str(target), "permission": "-rw-r--r--"}}]


def test_each_hook_is_an_fmod_ret_program(agent: AgentProcess) -> None:
    out = subprocess.run(["bpftool", "prog", "show"], capture_output=True, text=True, check=True).stdout
    assert out.count("gen_fmodret") >= 4, out
