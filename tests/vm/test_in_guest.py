"""Runs inside the qemu guest (tests/vm/run_vm.py), on each stock Debian kernel of the matrix (6.1,
6.12) with kprobes, BPF trampolines and BPF LSM, from the same checkout and venv as the host.

The feature probe must see what the host lacks, and what differs between the kernels (kprobe.multi
needs fprobe: 6.12 has it, 6.1 does not) must match what the running kernel itself shows. The base
sensor, built against the host's 6.18 BTF, must work unchanged on these older kernels: CO-RE, not a
rebuild, makes it portable.
"""

from __future__ import annotations

import os
import re
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.agentproc import AgentProcess, Event, body, kind
from tests.vm.guestagent import guest_agent
from tetragon.abi import events_h as layout
from tetragon.bpf.features import FEATURES, active_lsms, probe_features
from tetragon.bpf.libbpf import BpfObject
from tetragon.bpf.ringbuf import RingBufferReader
from tetragon.events.decode import decode_exec

pytestmark = pytest.mark.vm

ROOT = Path(__file__).resolve().parents[2]
PROCESS_OBJ = ROOT / "src/tetragon/_bpfobj/process.bpf.o"
BASE_PROGRAMS = ("tg_process_exec", "tg_process_fork", "tg_process_exit")


def _kernel_config() -> dict[str, str]:
    """The guest kernel's build config, from the package the runner booted (Debian has no config.gz)."""
    path = os.environ.get("TETRAGON_VM_KERNEL_CONFIG", "")
    assert path, "TETRAGON_VM_KERNEL_CONFIG is set by run_vm.py"
    config: dict[str, str] = {}
    for line in Path(path).read_text().splitlines():
        if line.startswith("CONFIG_") and "=" in line:
            key, value = line.split("=", 1)
            config[key] = value
    return config


def _kernel_has_function(name: str) -> bool:
    """Whether the running kernel was built with function `name` (kallsyms; root sees every symbol)."""
    symbols = Path("/proc/kallsyms").read_bytes()
    return (
        re.search(rb"^[0-9a-f]+ [tT] " + re.escape(name.encode()) + rb"$", symbols, re.MULTILINE) is not None
    )


def test_guest_is_the_booted_kernel() -> None:
    assert os.uname().release == os.environ["TETRAGON_VM_KERNEL_RELEASE"]
    assert "bpf" in active_lsms()


def test_probe_finds_kprobes_trampolines_and_lsm() -> None:
    features = probe_features()
    assert tuple(features) == FEATURES
    for name in ("kprobe", "fentry", "lsm", "fmodret"):
        assert features[name], f"{name} should work on this kernel"
    for name in ("tracepoint", "tp_btf", "raw_tp", "uprobe", "signal"):
        assert features[name], f"{name} should work on this kernel"


def test_probe_matches_what_this_kernel_was_built_with() -> None:
    """kprobe.multi is fprobe's (Debian 6.12 has it, 6.1 not); bpf_override_return needs
    CONFIG_BPF_KPROBE_OVERRIDE (no Debian kernel has it). The probe must agree with both the running
    kernel's own symbols and the config it was built from: a true on one kernel, a false on the other."""
    features = probe_features()
    config = _kernel_config()
    has_fprobe = _kernel_has_function("register_fprobe")
    assert has_fprobe == (config.get("CONFIG_FPROBE") == "y")
    assert features["kprobe_multi"] == has_fprobe, f"fprobe in this kernel: {has_fprobe}"
    has_override = _kernel_has_function("bpf_override_return")
    assert has_override == (config.get("CONFIG_BPF_KPROBE_OVERRIDE") == "y")
    assert features["override_return"] == has_override, f"bpf_override_return in this kernel: {has_override}"


def test_probe_leaves_nothing_attached() -> None:
    probe_features()
    out = subprocess.run(["bpftool", "link", "list"], capture_output=True, text=True, check=True).stdout
    assert "probe_" not in out


def test_base_sensor_object_reports_an_exec() -> None:
    with BpfObject(PROCESS_OBJ) as obj:
        obj.load()
        for program in BASE_PROGRAMS:
            obj.attach(program)
        reader = RingBufferReader(obj.map("tg_rb_events"))
        try:
            child = subprocess.Popen(["/bin/true", "guest-exec-marker"])
            assert child.wait() == 0
            records: list[bytes] = []
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                reader.drain(lambda rec: records.append(bytes(rec)))
                execs = [r for r in records if r[0] == layout.MSG_OP_EXECVE]
                if any(struct.unpack_from("<I", r, layout.MSG_COMMON.size)[0] == child.pid for r in execs):
                    break
                reader.wait(0.5)
        finally:
            reader.close()
    mine = [decode_exec(r) for r in execs if decode_exec(r).pid == child.pid]
    assert mine, f"no exec record for pid {child.pid} among {len(records)} records"
    info = mine[0]
    assert info.binary.endswith("/true")
    assert info.argv[-1:] == ["guest-exec-marker"]
    assert info.cwd == os.getcwd()


GUEST_POLICY = """apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: vm-guest-policy
spec:
  kprobes:
  - call: sys_setuid
    syscall: true
    args: [{index: 0, type: int}]
    selectors:
    - matchArgs: [{index: 0, operator: Equal, values: ["4242"]}]
  - call: sys_setgid
    syscall: true
    args: [{index: 0, type: int}]
    selectors:
    - matchArgs: [{index: 0, operator: Equal, values: ["4243"]}]
      matchActions: [{action: Sigkill}]
"""


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[AgentProcess]:
    with guest_agent(tmp_path, GUEST_POLICY) as a:
        yield a


def test_agent_exports_process_exec(agent: AgentProcess) -> None:
    marker = f"tetragon-vm-{uuid.uuid4().hex[:8]}"
    child = subprocess.Popen(["/bin/echo", marker], stdout=subprocess.DEVNULL)
    assert child.wait() == 0

    def is_marker_exec(ev: Event) -> bool:
        return kind(ev) == "process_exec" and body(ev)["process"]["pid"] == child.pid

    ev = agent.wait_for(is_marker_exec, timeout=60)
    process = body(ev)["process"]
    assert process["binary"].endswith("/echo")
    assert process["arguments"] == marker
    assert process["cwd"] == os.getcwd()


def test_policy_hooks_run_on_the_older_kernel(agent: AgentProcess) -> None:
    """The generic sensor (built on the host's 6.18 BTF) loads and filters in the kernel on 6.1 too."""
    setuid = subprocess.Popen([sys.executable, "-c", "import os; os.setuid(4241 + 1)"])
    assert setuid.wait() == 0
    ev = agent.wait_for(
        lambda e: kind(e) == "process_kprobe" and body(e)["process"]["pid"] == setuid.pid, timeout=60
    )
    assert body(ev)["function_name"] == "__x64_sys_setuid"
    assert body(ev)["args"] == [{"int_arg": 4242}]
    assert body(ev)["policy_name"] == "vm-guest-policy"
    killed = subprocess.Popen(
        [sys.executable, "-c", "import os; os.setgid(4243); open('/tmp/vm-not-killed', 'w')"]
    )
    assert killed.wait() == -9
    assert not Path("/tmp/vm-not-killed").exists()
    ev = agent.wait_for(
        lambda e: kind(e) == "process_kprobe" and body(e)["process"]["pid"] == killed.pid, timeout=60
    )
    assert body(ev)["action"] == "KPROBE_ACTION_SIGKILL"
