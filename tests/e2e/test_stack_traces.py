"""Post's kernelStackTrace / userStackTrace end to end on this kernel: a syscall kprobe (served by its
tracepoint here, a process_kprobe event) whose record carries both stacks, symbolized by the agent from
/proc/kallsyms and the worker's own mappings and libc's ELF symbols."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.agentproc import AgentProcess, running_agent
from tests.e2e.policyutil import policy, wait_kprobe, worker


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    yield from running_agent(tmp_path_factory, "stacks")


def _policy(target: Path) -> str:
    return f"""apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: stacks-{target.name}
spec:
  kprobes:
  - call: sys_mkdirat
    syscall: true
    args: [{{index: 1, type: string}}]
    selectors:
    - matchArgs: [{{index: 1, operator: Equal, values: ["{target}"]}}]
      matchActions: [{{action: Post, kernelStackTrace: true, userStackTrace: true}}]
"""


def test_kernel_and_user_stacks_of_a_syscall(agent: AgentProcess, tmp_path: Path) -> None:
    target = tmp_path / "made-here"
    with policy(agent, tmp_path, _policy(target)) as name, worker() as w:
        assert w.run(f"result = libc.mkdirat(-100, {str(target).encode()!r}, 0o755)") == 0
        libc = next(
            line.split()[-1]
            for line in Path(f"/proc/{w.pid}/maps").read_text().splitlines()
            if "/libc.so" in line or "/libc-" in line
        )
        ev = wait_kprobe(agent, name, lambda e: e.get("args") == [{"string_arg": str(target)}])
        assert ev["process"]["pid"] == w.pid
        keys = list(ev)
        assert keys.index("action") < keys.index("kernel_stack_trace") < keys.index("policy_name")
        assert keys.index("return_action") < keys.index("user_stack_trace") == len(keys) - 1
        kernel = ev["kernel_stack_trace"]
        # the tracepoint fires on the way into the syscall: its entry code is on the stack, by name
        assert all(set(f) <= {"offset", "symbol"} and f["symbol"] for f in kernel), kernel
        assert "do_syscall_64" in [f["symbol"] for f in kernel], kernel
        user = ev["user_stack_trace"]
        # innermost first: the syscall instruction inside libc's mkdirat. Its callers are found by frame
        # pointers, which Debian's libc and libffi do not keep: what follows may be noise, as for Tetragon
        assert user[0]["symbol"] == "mkdirat" and user[0]["module"] == libc, user
        assert int(user[0]["offset"]) > 0


def test_stacks_of_a_return_hook_wait_in_the_stash_with_the_arguments(
    agent: AgentProcess, tmp_path: Path
) -> None:
    """return: true: the entry record, stacks included, waits per thread for the syscall's exit. With
    an integer argument only, the stash is sized for ~100 bytes unless it counts the stack blobs too
    (then every record was lost)."""
    text = f"""apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: stacks-return
spec:
  kprobes:
  - call: sys_mkdirat
    syscall: true
    return: true
    returnArg: {{index: 0, type: int}}
    args: [{{index: 2, type: int}}]
    selectors:
    - matchArgs: [{{index: 2, operator: Equal, values: ["{0o751}"]}}]
      matchActions: [{{action: Post, kernelStackTrace: true, userStackTrace: true}}]
"""
    target = tmp_path / "made-with-return"
    with policy(agent, tmp_path, text) as name, worker() as w:
        assert w.run(f"result = libc.mkdirat(-100, {str(target).encode()!r}, 0o751)") == 0
        ev = wait_kprobe(agent, name, lambda e: e.get("args") == [{"int_arg": 0o751}])
        assert ev["process"]["pid"] == w.pid and ev["return"] == {"int_arg": 0}
        assert "do_syscall_64" in [f["symbol"] for f in ev["kernel_stack_trace"]]
        assert ev["user_stack_trace"][0]["symbol"] == "mkdirat"
