"""Runs inside the qemu guest (tests/vm/run_vm.py): kprobes and kretprobes on kernel functions, served
by kprobe.multi where the kernel has fprobe (Debian 6.12) and by one kprobe per function elsewhere
(Debian 6.1), through the real agent with one policy of several hooks (one agent start for the file).

Each hook filters on a directory of its own, so every event asserted here comes from the workload the
test ran, and each is checked field by field as Tetragon exports it.
"""

from __future__ import annotations

import base64
import mmap
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.agentproc import AgentProcess, Event, body, kind
from tests.vm.guestagent import guest_agent
from tetragon.bpf.features import probe_features

pytestmark = pytest.mark.vm

BASE = Path(f"/tmp/kprobe-vm-{uuid.uuid4().hex[:8]}")
DIRS = {name: BASE / name for name in ("open", "ret", "kill", "mmap", "name", "list", "write")}
SETPRIV = "/usr/bin/setpriv"
KILL_TARGET = DIRS["kill"] / "c.txt"
XATTR = f"user.{BASE.name}"

POLICY = f"""apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: vm-kprobes
spec:
  lists:
  - name: chfns
    type: generated_ftrace
    pattern: "^security_path_ch(mod|own)$"
  kprobes:
  - call: security_file_open
    syscall: false
    args: [{{index: 0, type: file}}]
    selectors:
    - matchArgs: [{{index: 0, operator: Prefix, values: ["{DIRS["open"]}/"]}}]
  - call: "list:chfns"
    syscall: false
    args: [{{index: 0, type: path}}]
    selectors:
    - matchArgs: [{{index: 0, operator: Prefix, values: ["{DIRS["list"]}/"]}}]
  - call: security_file_open
    syscall: false
    return: true
    args: [{{index: 0, type: file}}]
    returnArg: {{index: 0, type: int}}
    selectors:
    - matchArgs: [{{index: 0, operator: Prefix, values: ["{DIRS["ret"]}/"]}}]
  - call: security_file_open
    syscall: false
    args: [{{index: 0, type: file}}]
    selectors:
    - matchArgs: [{{index: 0, operator: Prefix, values: ["{DIRS["kill"]}/"]}}]
      matchActions: [{{action: Sigkill}}]
  - call: security_mmap_file
    syscall: false
    args:
    - {{index: 0, type: file}}
    - {{index: 1, type: uint32}}
    - {{index: 2, type: nop}}
    selectors:
    - matchArgs: [{{index: 0, operator: Prefix, values: ["{DIRS["mmap"]}/"]}}]
  - call: fd_install
    syscall: false
    args: [{{index: 0, type: int}}, {{index: 1, type: file}}]
    selectors:
    - matchArgs: [{{index: 1, operator: Prefix, values: ["{DIRS["open"]}/"]}}]
  - call: do_filp_open
    syscall: false
    args: [{{index: 0, type: int}}, {{index: 1, type: filename}}]
    selectors:
    - matchArgs: [{{index: 1, operator: Prefix, values: ["{DIRS["name"]}/"]}}]
  - call: vfs_getxattr
    syscall: false
    args: [{{index: 2, type: string}}]
    selectors:
    - matchArgs: [{{index: 2, operator: Equal, values: ["{XATTR}"]}}]
  - call: vfs_write
    syscall: false
    args:
    - {{index: 0, type: file}}
    - {{index: 1, type: char_buf, sizeArgIndex: 3}}
    - {{index: 2, type: size_t}}
    selectors:
    - matchArgs: [{{index: 0, operator: Prefix, values: ["{DIRS["write"]}/"]}}]
  - call: commit_creds
    syscall: false
    args: [{{index: 0, type: cred}}]
    selectors:
    - matchBinaries: [{{operator: In, values: ["{SETPRIV}"]}}]
"""


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    for d in DIRS.values():
        d.mkdir(parents=True, exist_ok=True)
    KILL_TARGET.write_text("x")  # before the agent: whoever opens it once the hook is attached dies
    with guest_agent(tmp_path_factory.mktemp("kprobe-agent"), POLICY) as agent:
        yield agent


def _kprobe_of(pid: int, function: str) -> Callable[[Event], bool]:
    def pred(ev: Event) -> bool:
        return (
            kind(ev) == "process_kprobe"
            and body(ev)["process"]["pid"] == pid
            and body(ev).get("function_name") == function
        )

    return pred


def _run(code: str) -> subprocess.Popen[bytes]:
    child = subprocess.Popen([sys.executable, "-c", code])
    child.wait()
    return child


def test_each_function_is_served_by_the_kernels_mechanism(agent: AgentProcess) -> None:
    """kprobe.multi links on a kernel with fprobe, plain kprobes (perf links) on one without."""
    out = subprocess.run(["bpftool", "link", "show"], capture_output=True, text=True, check=True).stdout
    if probe_features()["kprobe_multi"]:
        assert out.count("kprobe_multi") >= 10, out  # 10 hooks (one a list: one link), one with its return
    else:
        assert "kprobe_multi" not in out, out
        assert out.count("perf_event") >= 12, out  # a kprobe per function: the list's two, the return


def test_file_argument_and_fd_install(agent: AgentProcess) -> None:
    target = DIRS["open"] / "a.txt"
    target.write_text("x")
    os.chmod(target, 0o640)
    child = _run(f"import os; fd = os.open({str(target)!r}, os.O_RDONLY); print(fd, flush=True)")
    assert child.returncode == 0
    ev = agent.wait_for(_kprobe_of(child.pid, "security_file_open"), timeout=60)
    b = body(ev)
    assert b["args"] == [{"file_arg": {"path": str(target), "permission": "-rw-r-----"}}]
    assert b["policy_name"] == "vm-kprobes"
    assert b["action"] == "KPROBE_ACTION_POST"
    assert b["process"]["binary"] in (sys.executable, os.path.realpath(sys.executable))
    assert "return" not in b
    ev = agent.wait_for(_kprobe_of(child.pid, "fd_install"), timeout=60)
    args = body(ev)["args"]
    assert args[1] == {"file_arg": {"path": str(target), "permission": "-rw-r-----"}}
    assert list(args[0]) == ["int_arg"] and args[0]["int_arg"] >= 3


def test_kretprobe_reports_the_return_value(agent: AgentProcess) -> None:
    target = DIRS["ret"] / "b.txt"
    target.write_text("x")
    child = _run(f"open({str(target)!r}).close()")
    assert child.returncode == 0
    ev = agent.wait_for(_kprobe_of(child.pid, "security_file_open"), timeout=60)
    b = body(ev)
    assert b["args"] == [{"file_arg": {"path": str(target), "permission": "-rw-r--r--"}}]
    assert b["return"] == {"int_arg": 0}
    assert b["action"] == "KPROBE_ACTION_POST"


def test_sigkill_on_a_kernel_function_kills_the_caller(agent: AgentProcess) -> None:
    target = KILL_TARGET
    after = DIRS["open"] / "not-reached"
    child = _run(f"open({str(target)!r}).close(); open({str(after)!r}, 'w').close()")
    assert child.returncode == -9
    assert not after.exists()
    ev = agent.wait_for(_kprobe_of(child.pid, "security_file_open"), timeout=60)
    assert body(ev)["action"] == "KPROBE_ACTION_SIGKILL"
    assert body(ev)["args"] == [{"file_arg": {"path": str(target), "permission": "-rw-r--r--"}}]


def test_nop_keeps_positions_and_is_not_reported(agent: AgentProcess) -> None:
    target = DIRS["mmap"] / "d.bin"
    target.write_bytes(b"\0" * 4096)
    with open(target, "rb") as f:
        m = mmap.mmap(f.fileno(), 4096, prot=mmap.PROT_READ)
        m.close()
    ev = agent.wait_for(_kprobe_of(os.getpid(), "security_mmap_file"), timeout=60)
    assert body(ev)["args"] == [
        {"file_arg": {"path": str(target), "permission": "-rw-r--r--"}},
        {"uint_arg": mmap.PROT_READ},
    ]


def test_cred_argument_of_commit_creds(agent: AgentProcess) -> None:
    child = subprocess.Popen([SETPRIV, "--reuid", "4244", "--regid", "4245", "--clear-groups", "/bin/true"])
    assert child.wait() == 0
    ev = agent.wait_for(
        lambda e: (
            _kprobe_of(child.pid, "commit_creds")(e)
            and body(e)["args"][0]["process_credentials_arg"]["uid"] == 4244
        ),
        timeout=60,
    )
    creds = body(ev)["args"][0]["process_credentials_arg"]
    assert (creds["uid"], creds["euid"], creds["suid"], creds["fsuid"]) == (4244,) * 4
    assert body(ev)["process"]["binary"] == SETPRIV
    assert body(ev)["policy_name"] == "vm-kprobes"


def test_filename_argument_is_the_kernels_struct_filename(agent: AgentProcess) -> None:
    target = DIRS["name"] / "e.txt"
    child = _run(f"open({str(target)!r}, 'w').close()")
    assert child.returncode == 0 and target.exists()
    ev = agent.wait_for(_kprobe_of(child.pid, "do_filp_open"), timeout=60)
    # the name as the caller gave it (struct filename), and AT_FDCWD
    assert body(ev)["args"] == [{"int_arg": -100}, {"string_arg": str(target)}]


def test_string_argument_from_kernel_memory(agent: AgentProcess) -> None:
    target = DIRS["name"] / "f.txt"
    target.write_text("x")
    child = _run(f"import os\ntry: os.getxattr({str(target)!r}, {XATTR!r})\nexcept OSError: pass")
    assert child.returncode == 0
    ev = agent.wait_for(_kprobe_of(child.pid, "vfs_getxattr"), timeout=60)
    assert body(ev)["args"] == [{"string_arg": XATTR}]


def test_a_generated_ftrace_list_names_each_event_by_its_function(agent: AgentProcess) -> None:
    target = DIRS["list"] / "g.txt"
    target.write_text("x")
    child = _run(f"import os; os.chmod({str(target)!r}, 0o600); os.chown({str(target)!r}, 0, 0)")
    assert child.returncode == 0
    ev = agent.wait_for(_kprobe_of(child.pid, "security_path_chmod"), timeout=60)
    assert body(ev)["args"] == [{"path_arg": {"path": str(target), "permission": "-rw-r--r--"}}]
    ev = agent.wait_for(_kprobe_of(child.pid, "security_path_chown"), timeout=60)
    assert body(ev)["args"] == [{"path_arg": {"path": str(target), "permission": "-rw-------"}}]
    assert body(ev)["policy_name"] == "vm-kprobes"


def test_char_buf_of_a_kernel_function_with_its_size_argument(agent: AgentProcess) -> None:
    target = DIRS["write"] / "h.txt"
    child = _run(
        f"import os; fd = os.open({str(target)!r}, os.O_WRONLY | os.O_CREAT, 0o644); os.write(fd, b'kprobe!')"
    )
    assert child.returncode == 0
    ev = agent.wait_for(_kprobe_of(child.pid, "vfs_write"), timeout=60)
    assert body(ev)["args"] == [
        {"file_arg": {"path": str(target), "permission": "-rw-r--r--"}},
        {"bytes_arg": base64.b64encode(b"kprobe!").decode()},
        {"size_arg": "7"},
    ]
