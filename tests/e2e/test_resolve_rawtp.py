"""`resolve` end to end on this kernel: a raw tracepoint (sched_process_exec, whose arguments BTF types
as __bpf_trace_sched_process_exec's) with BTF field paths from its task_struct and linux_binprm
arguments, read in the kernel: a string (an array's address), an integer, a pointer read as a file, and
an integer typed by BTF (type auto)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.agentproc import AgentProcess, Event, body, kind, running_agent
from tests.e2e.policyutil import policy

POLICY = """apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: resolve-rawtp
spec:
  tracepoints:
  - subsystem: sched
    event: sched_process_exec
    raw: true
    args:
    - {index: 0, type: string, resolve: real_parent.comm}
    - {index: 0, type: int, resolve: real_parent.tgid}
    - {index: 2, type: file, resolve: file}
    - {index: 0, type: auto, resolve: cred.uid.val}
    - {index: 0, type: uint64, resolve: "real_parent.real_parent.comm[3]"}
    selectors:
    - matchArgs: [{index: 0, operator: Equal, values: [resolve-sh]}]
"""


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    yield from running_agent(tmp_path_factory, "resolve")


def test_resolve_paths_on_a_raw_tracepoint(agent: AgentProcess, tmp_path: Path) -> None:
    shell = tmp_path / "resolve-sh"
    os.symlink("/usr/bin/bash", shell)
    with policy(agent, tmp_path, POLICY) as name:
        # the shell (comm resolve-sh) forks and its child execs true: the child's real parent is the shell
        proc = subprocess.run([str(shell), "-c", "/usr/bin/true; exit 0"], check=True)
        assert proc.returncode == 0

        def of_true(ev: Event) -> bool:
            b = body(ev)
            return (
                kind(ev) == "process_tracepoint"
                and b.get("policy_name") == name
                and b["process"]["binary"] == "/usr/bin/true"
            )

        ev = body(agent.wait_for(of_true, timeout=10))
    args = ev["args"]
    assert ev["parent"]["binary"] == str(shell) or ev["parent"]["binary"] == "/usr/bin/bash", ev["parent"]
    assert args[0] == {"string_arg": "resolve-sh"}
    assert args[1] == {"int_arg": ev["parent"]["pid"]}
    assert args[2]["file_arg"]["path"] == "/usr/bin/true", args[2]
    assert args[3] == {"uint_arg": os.getuid()}
    # the 4th byte of the comm of this test's process (the shell's parent); a uint64 is a JSON string
    assert args[4] == {"size_arg": str(Path("/proc/self/comm").read_bytes()[3])}, args[4]
