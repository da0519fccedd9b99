"""TracingPolicy lifecycle on a real agent: add, list, events, disable, enable, set-mode, delete.

Driven through the real `tetra` CLI and through raw gRPC. Every step is checked on the kernel side
too: the programs, links and maps a policy adds are found by id in the agent's /proc/<pid>/fdinfo and
in `bpftool prog|link show`, and must be gone once the policy is disabled or deleted. Bad input (raw
TCP garbage, bad YAML, unsupported hooks, duplicate or unknown names) gets one clear error line and
changes nothing else.

The workload is a small C program that calls getcwd(2) N times with buffer sizes BASE..BASE+N-1, so
every policy event is predictable to the byte.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from tests.conftest import VENV_BIN, require_bpf
from tests.e2e.agentproc import AgentProcess, Event, body, is_exec_of, is_exit_of, kind, running_agent
from tetragon.api.gen.tetragon import sensors_pb2, sensors_pb2_grpc

TETRAGON = str(VENV_BIN / "tetragon")
TRACEFS = Path("/sys/kernel/tracing")

WORK_C = r"""
#include <stdlib.h>
#include <unistd.h>
#include <sys/syscall.h>

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 1;
    long base = argc > 2 ? atol(argv[2]) : 1000;
    static char buf[8192];
    for (int i = 0; i < n; i++)
        syscall(SYS_getcwd, buf, (unsigned long)(base + i));
    return 0;
}
"""


# --- helpers shared with test_policy_uprobe.py -------------------------------------------------------


def compile_c(source: str, out: Path) -> Path:
    src = out.with_suffix(".c")
    src.write_text(source)
    subprocess.run(["gcc", "-O0", "-g", "-o", str(out), str(src)], check=True, capture_output=True)
    return out


@dataclass(frozen=True)
class BpfIds:
    progs: frozenset[int]
    links: frozenset[int]
    maps: frozenset[int]


def bpf_ids(pid: int) -> BpfIds:
    """prog, link and map ids held open by a process, from its fdinfo."""
    progs: set[int] = set()
    links: set[int] = set()
    maps: set[int] = set()
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            text = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
        except OSError:
            continue
        if m := re.search(r"^link_id:\s+(\d+)", text, re.M):
            links.add(int(m.group(1)))
        elif m := re.search(r"^prog_id:\s+(\d+)", text, re.M):
            progs.add(int(m.group(1)))
        elif m := re.search(r"^map_id:\s+(\d+)", text, re.M):
            maps.add(int(m.group(1)))
    return BpfIds(frozenset(progs), frozenset(links), frozenset(maps))


def live_ids(what: str) -> set[int]:
    """Ids of every BPF prog / link / map the kernel has, from `bpftool <what> show -j`."""
    res = subprocess.run(["bpftool", what, "show", "-j"], capture_output=True, text=True, check=True)
    return {int(item["id"]) for item in json.loads(res.stdout or "[]")}


def assert_gone(ids: BpfIds, timeout: float = 5.0) -> None:
    """None of these programs, links or maps exists any more in the kernel.

    The kernel frees a closed map or program after an RCU grace period / from a work queue, so they
    may stay visible for a moment after the agent closed its last fd (its fdinfo is exact at once).
    """
    deadline = time.monotonic() + timeout
    while True:
        left = BpfIds(
            frozenset(ids.progs & live_ids("prog")),
            frozenset(ids.links & live_ids("link")),
            frozenset(ids.maps & live_ids("map")),
        )
        if not (left.progs or left.links or left.maps):
            return
        assert time.monotonic() < deadline, f"still in the kernel after {timeout}s: {left}"
        time.sleep(0.05)


def added(before: BpfIds, after: BpfIds) -> BpfIds:
    return BpfIds(after.progs - before.progs, after.links - before.links, after.maps - before.maps)


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def list_json(agent: AgentProcess) -> list[dict]:
    res = agent.tetra("tracingpolicy", "list", "-o", "json")
    return list(json.loads(res.stdout).get("policies", []))


def listed(agent: AgentProcess, name: str) -> dict:
    found = [p for p in list_json(agent) if p["name"] == name]
    assert len(found) == 1, list_json(agent)
    return found[0]


def without_stats(statuses: list[dict]) -> list[dict]:
    """Policy statuses without their counters (which move with every event)."""
    return [{k: v for k, v in p.items() if k != "stats"} for p in statuses]


def one_error_line(res: subprocess.CompletedProcess[str]) -> str:
    """tetra failed with exit 1 and said so in exactly one line on stderr, nothing on stdout."""
    assert res.returncode == 1, (res.returncode, res.stdout, res.stderr)
    assert res.stdout == "", res.stdout
    assert "Traceback" not in res.stderr, res.stderr
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), res.stderr
    return lines[0]


def policy_yaml(name: str, binary: Path | str, call: str = "sys_getcwd", with_args: bool = True) -> str:
    args = "    args:\n    - index: 1\n      type: int64\n" if with_args else ""
    return (
        "apiVersion: cilium.io/v1alpha1\n"
        "kind: TracingPolicy\n"
        "metadata:\n"
        f"  name: {name}\n"
        "spec:\n"
        "  kprobes:\n"
        f"  - call: {call}\n"
        "    syscall: true\n"
        f"{args}"
        "    selectors:\n"
        "    - matchBinaries:\n"
        "      - operator: In\n"
        f'        values: ["{binary}"]\n'
    )


def wait_alive(agent: AgentProcess) -> None:
    assert agent.proc.poll() is None, agent.stderr()
    assert agent.tetra("status").stdout.startswith("Health Status:")


# --- fixtures ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_c(WORK_C, tmp_path_factory.mktemp("work") / "tgwork")


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory, work: Path) -> Iterator[AgentProcess]:
    for a in running_agent(tmp_path_factory, "agent-policy"):
        # one policy loaded and deleted first: what the first load creates once for the agent's lifetime
        # (libbpf's parsed kernel BTF, gRPC worker threads' epoll fds) is not counted against a policy
        f = a.tmp / "warmup.yaml"
        f.write_text(policy_yaml("warmup", work))
        a.tetra("tracingpolicy", "add", str(f))
        a.tetra("tracingpolicy", "delete", "warmup")
        yield a


class Workload:
    """Runs the getcwd workload; collects its exec/exit and the policy events of each run."""

    def __init__(self, agent: AgentProcess, binary: Path) -> None:
        self.agent = agent
        self.binary = binary

    def run(self, n: int, base: int) -> int:
        proc = subprocess.Popen([str(self.binary), str(n), str(base)])
        assert proc.wait(10) == 0
        return proc.pid

    def events(self, pid: int, policy: str) -> list[Event]:
        """The policy's process_kprobe events of run `pid`, once its exit event has been exported.

        Everything goes through one ring buffer, so a process's syscall events are read before its exit.
        """
        self.agent.wait_for(is_exit_of(pid, str(self.binary)))
        return [
            body(ev)
            for ev in self.agent.read_events()
            if kind(ev) == "process_kprobe"
            and body(ev)["process"]["pid"] == pid
            and body(ev)["policy_name"] == policy
        ]

    def assert_events(self, pid: int, policy: str, n: int, base: int) -> None:
        evs = self.events(pid, policy)
        assert [e["args"] for e in evs] == [[{"long_arg": str(base + i)}] for i in range(n)]
        for e in evs:
            assert e["function_name"] == "__x64_sys_getcwd"
            assert e["action"] == "KPROBE_ACTION_POST"
            assert e["process"]["binary"] == str(self.binary)
            assert e["process"]["pid"] == pid
            assert e["process"]["exec_id"] == body(self.agent.wait_for(is_exec_of(pid)))["process"]["exec_id"]


@pytest.fixture()
def workload(agent: AgentProcess, work: Path) -> Workload:
    return Workload(agent, work)


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# --- 1. lifecycle ------------------------------------------------------------------------------------


def test_lifecycle_through_tetra(agent: AgentProcess, workload: Workload, tmp_path: Path) -> None:
    pid = agent.proc.pid
    name = _unique("life")
    f = tmp_path / "policy.yaml"
    f.write_text(policy_yaml(name, workload.binary))
    base = bpf_ids(pid)

    res = agent.tetra("tracingpolicy", "add", str(f))
    assert res.stdout == f'tracing policy "{f}" added\n' and res.stderr == ""
    loaded = bpf_ids(pid)
    mine = added(base, loaded)
    assert len(mine.links) == 1 and len(mine.progs) == 1, mine  # one syscalls/sys_enter_getcwd hook
    assert loaded.progs >= base.progs and loaded.links == base.links | mine.links
    assert mine.links <= live_ids("link") and mine.progs <= live_ids("prog")

    status = listed(agent, name)
    assert status["state"] == "TP_STATE_ENABLED" and status["enabled"] is True
    assert status["mode"] == "TP_MODE_ENFORCE"
    assert status["sensors"] == ["generic_kprobe"]
    assert status["domain"] == "grpc"
    assert int(status["kernelMemoryBytes"]) > 0
    text = agent.tetra("tracingpolicy", "list").stdout.splitlines()
    assert text[0].split() == [
        "ID",
        "NAME",
        "STATE",
        "FILTERID",
        "NAMESPACE",
        "SENSORS",
        "KERNELMEMORY",
        "MODE",
    ]
    row = next(line.split() for line in text[1:] if line.split()[1] == name)
    assert row[0] == status["id"] and row[2:6] == ["enabled", "0", "(global)", "generic_kprobe"]
    assert row[-1] == "enforce" and re.fullmatch(r"\d+(\.\d\d)?", row[6]) and row[7].endswith("B")

    run = workload.run(3, 1000)
    workload.assert_events(run, name, 3, 1000)

    res = agent.tetra("tracingpolicy", "disable", name)
    assert res.stdout == f'tracing policy "{name}" disabled\n'
    assert bpf_ids(pid) == base
    assert_gone(mine)
    status = listed(agent, name)
    assert status["state"] == "TP_STATE_DISABLED" and "enabled" not in status
    assert "kernelMemoryBytes" not in status  # 0: nothing is loaded
    run = workload.run(3, 1100)
    assert workload.events(run, name) == []

    res = agent.tetra("tracingpolicy", "enable", name)
    assert res.stdout == f'tracing policy "{name}" enabled\n'
    again = added(base, bpf_ids(pid))
    assert len(again.links) == 1 and len(again.progs) == 1 and not (again.progs & mine.progs)
    assert listed(agent, name)["state"] == "TP_STATE_ENABLED"
    run = workload.run(2, 1200)
    workload.assert_events(run, name, 2, 1200)

    res = agent.tetra("tracingpolicy", "set-mode", name, "monitor")
    assert res.stdout == f'tracing policy "{name}" set to mode "monitor"\n'
    assert listed(agent, name)["mode"] == "TP_MODE_MONITOR"
    row = next(line.split() for line in agent.tetra("tp", "list").stdout.splitlines() if name in line)
    assert row[-1] == "monitor"
    run = workload.run(1, 1300)  # monitor mode still posts
    workload.assert_events(run, name, 1, 1300)
    agent.tetra("tracingpolicy", "set-mode", name, "enforce")
    assert listed(agent, name)["mode"] == "TP_MODE_ENFORCE"
    assert added(base, bpf_ids(pid)) == again  # a mode switch is a map write, nothing is reloaded

    res = agent.tetra("tracingpolicy", "delete", name)
    assert res.stdout == f'tracing policy "{name}" deleted\n'
    assert bpf_ids(pid) == base
    assert_gone(again)
    assert [p for p in list_json(agent) if p["name"] == name] == []
    wait_alive(agent)
    run = workload.run(2, 1400)
    assert workload.events(run, name) == []


def test_lifecycle_through_grpc(agent: AgentProcess, workload: Workload) -> None:
    pid = agent.proc.pid
    name = _unique("grpc")
    base = bpf_ids(pid)
    with grpc.insecure_channel(agent.server) as channel:
        stub = sensors_pb2_grpc.FineGuidanceSensorsStub(channel)

        def status() -> sensors_pb2.TracingPolicyStatus:
            found = [p for p in stub.ListTracingPolicies(sensors_pb2.ListTracingPoliciesRequest()).policies]
            mine = [p for p in found if p.name == name]
            assert len(mine) == 1, found
            return mine[0]

        assert (
            stub.AddTracingPolicy(
                sensors_pb2.AddTracingPolicyRequest(yaml=policy_yaml(name, workload.binary))
            )
            == sensors_pb2.AddTracingPolicyResponse()
        )
        mine = added(base, bpf_ids(pid))
        assert len(mine.links) == 1 and len(mine.progs) == 1
        st = status()
        assert st.id > 0 and st.namespace == "" and st.error == ""
        assert st.state == sensors_pb2.TP_STATE_ENABLED and st.enabled
        assert st.mode == sensors_pb2.TP_MODE_ENFORCE
        assert list(st.sensors) == ["generic_kprobe"]
        assert st.kernel_memory_bytes > 0
        workload.assert_events(workload.run(2, 2000), name, 2, 2000)

        stub.ConfigureTracingPolicy(sensors_pb2.ConfigureTracingPolicyRequest(name=name, enable=False))
        assert status().state == sensors_pb2.TP_STATE_DISABLED and status().kernel_memory_bytes == 0
        assert bpf_ids(pid) == base
        assert_gone(mine)
        assert workload.events(workload.run(2, 2100), name) == []

        stub.ConfigureTracingPolicy(sensors_pb2.ConfigureTracingPolicyRequest(name=name, enable=True))
        assert status().state == sensors_pb2.TP_STATE_ENABLED
        workload.assert_events(workload.run(1, 2200), name, 1, 2200)

        # the deprecated RPCs do the same
        stub.DisableTracingPolicy(sensors_pb2.DisableTracingPolicyRequest(name=name))
        assert status().state == sensors_pb2.TP_STATE_DISABLED
        assert bpf_ids(pid) == base
        assert workload.events(workload.run(1, 2300), name) == []
        stub.EnableTracingPolicy(sensors_pb2.EnableTracingPolicyRequest(name=name))
        assert status().state == sensors_pb2.TP_STATE_ENABLED
        workload.assert_events(workload.run(1, 2400), name, 1, 2400)

        stub.ConfigureTracingPolicy(
            sensors_pb2.ConfigureTracingPolicyRequest(name=name, mode=sensors_pb2.TP_MODE_MONITOR)
        )
        assert status().mode == sensors_pb2.TP_MODE_MONITOR
        assert status().state == sensors_pb2.TP_STATE_ENABLED
        stub.ConfigureTracingPolicy(
            sensors_pb2.ConfigureTracingPolicyRequest(
                name=name, mode=sensors_pb2.TP_MODE_ENFORCE, enable=False
            )
        )
        st = status()
        assert st.mode == sensors_pb2.TP_MODE_ENFORCE and st.state == sensors_pb2.TP_STATE_DISABLED
        stub.ConfigureTracingPolicy(sensors_pb2.ConfigureTracingPolicyRequest(name=name, enable=True))
        loaded = added(base, bpf_ids(pid))

        with pytest.raises(grpc.RpcError) as err:
            stub.ConfigureTracingPolicy(sensors_pb2.ConfigureTracingPolicyRequest(name=name, mode=7))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details() == "invalid mode 7: expected TP_MODE_ENFORCE or TP_MODE_MONITOR"

        assert (
            stub.DeleteTracingPolicy(sensors_pb2.DeleteTracingPolicyRequest(name=name))
            == sensors_pb2.DeleteTracingPolicyResponse()
        )
        assert bpf_ids(pid) == base
        assert_gone(loaded)
        names = [p.name for p in stub.ListTracingPolicies(sensors_pb2.ListTracingPoliciesRequest()).policies]
        assert name not in names
    wait_alive(agent)
    assert workload.events(workload.run(1, 2500), name) == []


def _syscalls_with_tracepoints(count: int) -> list[str]:
    candidates = [
        "getcwd", "getpid", "getppid", "getuid", "geteuid", "getgid", "getegid", "gettid", "newuname",
        "sysinfo", "times", "getpgrp", "getsid", "umask", "sched_yield", "getrusage", "getpriority",
        "alarm", "chdir", "fchdir", "access", "capget", "getpgid", "setpgid", "getgroups", "getresuid",
    ]  # fmt: skip
    have = [c for c in candidates if (TRACEFS / f"events/syscalls/sys_enter_{c}").is_dir()]
    assert len(have) >= count, have
    return have[:count]


def test_twenty_policies_added_and_deleted_leave_nothing(
    agent: AgentProcess, workload: Workload, tmp_path: Path
) -> None:
    pid = agent.proc.pid
    agent.tetra("tracingpolicy", "list")  # a first gRPC call: its lazily created server resources
    fds, base = fd_count(pid), bpf_ids(pid)
    prefix = _unique("many")
    calls = _syscalls_with_tracepoints(20)
    for call in calls:
        f = tmp_path / f"{call}.yaml"
        f.write_text(policy_yaml(f"{prefix}-{call}", workload.binary, f"sys_{call}", with_args=False))
        agent.tetra("tracingpolicy", "add", str(f))
    mine = added(base, bpf_ids(pid))
    assert len(mine.links) == 20 and len(mine.progs) == 20, mine
    statuses = [p for p in list_json(agent) if p["name"].startswith(prefix)]
    assert sorted(p["name"] for p in statuses) == sorted(f"{prefix}-{c}" for c in calls)
    assert all(p["state"] == "TP_STATE_ENABLED" and int(p["kernelMemoryBytes"]) > 0 for p in statuses)
    assert len({p["id"] for p in statuses}) == 20
    assert fd_count(pid) > fds
    # the getcwd policy of the twenty posts; the others see nothing of this workload
    run = workload.run(1, 3000)
    workload.events(run, f"{prefix}-getcwd")
    evs = [
        body(e)
        for e in agent.read_events()
        if kind(e) == "process_kprobe"
        and body(e)["policy_name"].startswith(prefix)
        and body(e)["process"]["pid"] == run
    ]
    assert [(e["policy_name"], e["function_name"]) for e in evs] == [(f"{prefix}-getcwd", "__x64_sys_getcwd")]

    for call in calls:
        res = agent.tetra("tracingpolicy", "delete", f"{prefix}-{call}")
        assert res.stdout == f'tracing policy "{prefix}-{call}" deleted\n'
    assert [p for p in list_json(agent) if p["name"].startswith(prefix)] == []
    assert fd_count(pid) == fds
    assert bpf_ids(pid) == base
    assert_gone(mine)
    wait_alive(agent)


# --- 2. bad input ------------------------------------------------------------------------------------

GARBAGE = [
    bytes(range(256)) * 8,
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\xff" * 64,  # HTTP/2 preface, then a frame that is not one
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x04\x01\x00\x00\x00\x00\x01" + b"\x00" * 4,
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 32,  # a TLS ClientHello start
]


def _send_garbage(address: str) -> list[socket.socket]:
    """Garbage on the gRPC port; returns one connection left open half-way (closed by the caller)."""
    host, port = address.rsplit(":", 1)
    for payload in GARBAGE:
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
            try:
                while s.recv(4096):
                    pass
            except (ConnectionResetError, TimeoutError):
                pass
    with socket.create_connection((host, int(port)), timeout=5):
        pass  # connect, say nothing, go away
    idle = socket.create_connection((host, int(port)), timeout=5)
    idle.sendall(b"PRI * HTTP/2.0\r\n")  # half a preface, then silence
    return [idle]


BAD_YAML = (
    "apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata:\n  name: x\nspec:\n"
    "  kprobes: [ {call: a\n"
)
KERNEL_FN = """\
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: kernel-fn
spec:
  kprobes:
  - call: security_file_open
    syscall: false
    args:
    - index: 0
      type: file
"""
WRONG_TYPES = """\
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: wrong-types
spec:
  kprobes:
  - call: sys_getcwd
    args:
    - index: one
      type: int64
"""
UNKNOWN_TYPE = """\
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: unknown-type
spec:
  kprobes:
  - call: sys_getcwd
    args:
    - index: 1
      type: no_such_type
"""


ADD_FAILED = "Error: failed to add tracing policy"


def test_bad_input_changes_nothing(agent: AgentProcess, workload: Workload, tmp_path: Path) -> None:
    pid = agent.proc.pid
    keeper = _unique("keeper")
    f = tmp_path / "keeper.yaml"
    f.write_text(policy_yaml(keeper, workload.binary))
    agent.tetra("tracingpolicy", "add", str(f))
    before_list = list_json(agent)
    before_ids = bpf_ids(pid)
    fds = fd_count(pid)

    # a workload runs all the time the bad input arrives
    pids: list[int] = []
    stop = threading.Event()

    def loop() -> None:
        base = 5000
        while not stop.is_set() or len(pids) < 5:
            pids.append(workload.run(2, base))
            base += 10
            time.sleep(0.02)

    runner = threading.Thread(target=loop)
    runner.start()
    idle: list[socket.socket] = []
    try:
        idle = _send_garbage(agent.server)

        def add(text: str, fname: str) -> str:
            p = tmp_path / fname
            p.write_bytes(text.encode() if isinstance(text, str) else text)
            return one_error_line(agent.tetra("tracingpolicy", "add", str(p), check=False))

        line = add(BAD_YAML, "bad.yaml")
        assert line.startswith("Error: failed to add tracing policy: INVALID_ARGUMENT: invalid YAML: ")
        assert "(line 7, column 1)" in line
        line = add("garbage\x00\x01", "nul.yaml")
        assert line.startswith("Error: failed to add tracing policy: INVALID_ARGUMENT: invalid YAML: ")
        line = add("- 1\n", "list.yaml")
        assert line == f"{ADD_FAILED}: INVALID_ARGUMENT: policy must be a YAML mapping, got a list"
        line = add(KERNEL_FN, "kernel.yaml")
        assert line == (
            "Error: failed to add tracing policy: FAILED_PRECONDITION: spec.kprobes[0] (security_file_open): "
            "kprobe on kernel function security_file_open: this kernel has no kprobes (CONFIG_KPROBES); "
            "syscall hooks can use tracepoints instead"
        )
        line = add(WRONG_TYPES, "types.yaml")
        assert line == (
            "Error: failed to add tracing policy: INVALID_ARGUMENT: spec.kprobes[0].args[0].index: "
            "expected an integer, got string 'one'"
        )
        line = add(UNKNOWN_TYPE, "type.yaml")
        assert line.startswith(
            "Error: failed to add tracing policy: INVALID_ARGUMENT: spec.kprobes[0].args[0].type"
        )
        assert "no_such_type" in line
        line = one_error_line(agent.tetra("tracingpolicy", "add", str(f), check=False))
        assert (
            line == f"Error: failed to add tracing policy: ALREADY_EXISTS: policy '{keeper}' already exists"
        )
        line = one_error_line(
            agent.tetra("tracingpolicy", "add", str(tmp_path / "missing.yaml"), check=False)
        )
        assert (
            line == f"Error: failed to read yaml file {tmp_path / 'missing.yaml'}: No such file or directory"
        )
        for verb, failure in (
            ("delete", "failed to delete tracing policy"),
            ("enable", "failed to enable tracing policy"),
            ("disable", "failed to disable tracing policy"),
        ):
            line = one_error_line(agent.tetra("tracingpolicy", verb, "no-such-policy", check=False))
            assert line == f"Error: {failure}: NOT_FOUND: policy 'no-such-policy' not found"
        line = one_error_line(
            agent.tetra("tracingpolicy", "set-mode", "no-such-policy", "monitor", check=False)
        )
        assert line == (
            'Error: failed set mode to "monitor" tracing policy: '
            "NOT_FOUND: policy 'no-such-policy' not found"
        )
        line = one_error_line(agent.tetra("tracingpolicy", "set-mode", keeper, "bogus", check=False))
        assert line == 'Error: invalid mode "bogus"'

        # the same through raw gRPC: status codes and one-line details
        with grpc.insecure_channel(agent.server) as channel:
            stub = sensors_pb2_grpc.FineGuidanceSensorsStub(channel)
            for request, code in (
                (
                    sensors_pb2.AddTracingPolicyRequest(yaml="\x00\x01garbage"),
                    grpc.StatusCode.INVALID_ARGUMENT,
                ),
                (sensors_pb2.AddTracingPolicyRequest(yaml=""), grpc.StatusCode.INVALID_ARGUMENT),
                (sensors_pb2.AddTracingPolicyRequest(yaml=KERNEL_FN), grpc.StatusCode.FAILED_PRECONDITION),
                (sensors_pb2.AddTracingPolicyRequest(yaml=f.read_text()), grpc.StatusCode.ALREADY_EXISTS),
            ):
                with pytest.raises(grpc.RpcError) as err:
                    stub.AddTracingPolicy(request)
                assert err.value.code() == code, err.value.details()
                assert err.value.details() and "\n" not in err.value.details()
            with pytest.raises(grpc.RpcError) as err:
                stub.DeleteTracingPolicy(sensors_pb2.DeleteTracingPolicyRequest(name="no-such-policy"))
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
            assert err.value.details() == "policy 'no-such-policy' not found"
        idle += _send_garbage(agent.server)
    finally:
        stop.set()
        runner.join(120)
        for s in idle:
            s.close()

    assert not runner.is_alive()
    wait_alive(agent)
    assert without_stats(list_json(agent)) == without_stats(before_list)
    assert bpf_ids(pid) == before_ids
    assert fd_count(pid) == fds
    # every run of the workload, before, during and after the bad input: exec, exit, both syscalls
    assert len(pids) >= 5
    for i, run in enumerate(pids):
        agent.wait_for(is_exec_of(run, str(workload.binary)))
        workload.assert_events(run, keeper, 2, 5000 + 10 * i)
    after = workload.run(2, 9000)
    workload.assert_events(after, keeper, 2, 9000)
    agent.tetra("tracingpolicy", "delete", keeper)


# --- 3. policies given at start ----------------------------------------------------------------------


def _start(tmp: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TETRAGON, "--server-address", "", "--run-dir", str(tmp / "run"), *flags],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_tracing_policy_file_at_start(tmp_path: Path, work: Path) -> None:
    require_bpf()
    f = tmp_path / "start.yaml"
    f.write_text(policy_yaml("from-file", work))
    agent = AgentProcess(tmp_path / "a", "--tracing-policy", str(f))
    try:
        agent.wait_ready()
        status = listed(agent, "from-file")
        assert status["state"] == "TP_STATE_ENABLED" and status["domain"] == "static"
        assert int(status["kernelMemoryBytes"]) > 0
        wl = Workload(agent, work)
        wl.assert_events(wl.run(3, 4000), "from-file", 3, 4000)
        # a policy loaded at start is managed like any other
        agent.tetra("tracingpolicy", "delete", "from-file")
        assert list_json(agent) == []
        assert wl.events(wl.run(1, 4100), "from-file") == []
    finally:
        assert agent.stop() == 0, agent.stderr()
    assert "Traceback" not in agent.stderr()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (BAD_YAML, "invalid YAML: "),
        (KERNEL_FN, "this kernel has no kprobes (CONFIG_KPROBES)"),
        (WRONG_TYPES, "spec.kprobes[0].args[0].index: expected an integer, got string 'one'"),
        (None, "No such file or directory"),
    ],
    ids=["malformed", "kernel-function", "wrong-types", "missing"],
)
def test_bad_tracing_policy_file_at_start_exits_1(tmp_path: Path, content: str | None, expected: str) -> None:
    require_bpf()
    f = tmp_path / "bad policy.yaml"
    if content is not None:
        f.write_text(content)
    res = _start(tmp_path, "--tracing-policy-dir", str(tmp_path / "none"), "--tracing-policy", str(f))
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr
    errors = [
        line for line in res.stderr.splitlines() if line.startswith("tetragon:") or "error" in line.lower()
    ]
    assert len(errors) == 1, res.stderr
    assert f"--tracing-policy {f}: " in errors[0] and expected in errors[0], errors[0]


def test_tracing_policy_dir_loads_good_logs_bad(tmp_path: Path, work: Path) -> None:
    require_bpf()
    d = tmp_path / "tp.d"
    d.mkdir()
    (d / "10-good.yaml").write_text(policy_yaml("dir-good", work))
    (d / "20-bad.yaml").write_text(KERNEL_FN)
    (d / "30-also-good.yml").write_text(policy_yaml("dir-good-too", work, with_args=False))
    (d / "40-broken.yaml").write_text(BAD_YAML)
    (d / "README.txt").write_text("not a policy")
    agent = AgentProcess(tmp_path / "a", "--tracing-policy-dir", str(d))
    try:
        agent.wait_ready()
        statuses = list_json(agent)
        assert [(p["name"], p["state"], p["domain"]) for p in statuses] == [
            ("dir-good", "TP_STATE_ENABLED", "static"),
            ("dir-good-too", "TP_STATE_ENABLED", "static"),
        ]
        logged = [line for line in agent.stderr().splitlines() if "not loaded" in line]
        assert len(logged) == 2, agent.stderr()
        assert f"policy file {d / '20-bad.yaml'} not loaded: " in logged[0]
        assert "kprobe on kernel function security_file_open" in logged[0]
        assert f"policy file {d / '40-broken.yaml'} not loaded: invalid YAML" in logged[1]
        assert "level=ERROR" in logged[0] and "level=ERROR" in logged[1]
        wl = Workload(agent, work)
        run = wl.run(2, 4500)
        wl.assert_events(run, "dir-good", 2, 4500)
        assert [e.get("args") for e in wl.events(run, "dir-good-too")] == [None, None]  # no args: none shown
    finally:
        assert agent.stop() == 0, agent.stderr()
    assert "Traceback" not in agent.stderr()


def test_agent_exits_cleanly_with_policies_loaded(tmp_path: Path, work: Path) -> None:
    """Shutdown with live policies detaches them too (ids checked after the agent is gone)."""
    require_bpf()
    agent = AgentProcess(tmp_path)
    try:
        agent.wait_ready()
        base = bpf_ids(agent.proc.pid)
        f = tmp_path / "p.yaml"
        f.write_text(policy_yaml("at-exit", work))
        agent.tetra("tracingpolicy", "add", str(f))
        everything = bpf_ids(agent.proc.pid)
        assert added(base, everything).links
    finally:
        assert agent.stop() == 0, agent.stderr()
    assert_gone(everything)
