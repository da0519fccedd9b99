"""Policy events as Tetragon prints them, with a real agent (issue 14): return_action on every
process_kprobe, refcnt only on `process`, in_init_tree, and no event about the agent itself."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.agentproc import AgentProcess, body, kind, running_agent
from tests.e2e.policyutil import NR_MKDIRAT, Worker, wait_kprobe

POLICY = textwrap.dedent(
    """\
    apiVersion: cilium.io/v1alpha1
    kind: TracingPolicy
    metadata:
      name: mkdir-all
    spec:
      kprobes:
      - call: sys_mkdir
        syscall: true
        args:
        - index: 0
          type: filename
      - call: sys_mkdirat
        syscall: true
        args:
        - index: 1
          type: filename
    """
)


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    policy = tmp_path_factory.mktemp("policy") / "mkdir.yaml"
    policy.write_text(POLICY)
    # the agent's run directory (--run-dir) does not exist yet: the agent makes it at start
    yield from running_agent(tmp_path_factory, "fidelity", "--tracing-policy", str(policy))


def test_kprobe_event_fields(agent: AgentProcess, tmp_path: Path) -> None:
    w = Worker()
    try:
        target = tmp_path / "made"
        w.run(f"result = sc({NR_MKDIRAT}, -100, {str(target)!r}.encode(), 0o755)")
        ev = wait_kprobe(agent, "mkdir-all", lambda e: e.get("args") == [{"string_arg": str(target)}])
    finally:
        assert w.close() == 0
    # no return probe, yet Tetragon reports return_action, right after policy_name
    assert ev["return_action"] == "KPROBE_ACTION_POST"
    keys = list(ev)
    assert keys.index("policy_name") + 1 == keys.index("return_action")
    # the live refcnt on `process` (itself), none on `parent`; in_init_tree on both
    assert ev["process"]["refcnt"] >= 1
    assert "refcnt" not in ev["parent"]
    assert ev["process"]["in_init_tree"] is False and ev["parent"]["in_init_tree"] is False


def test_the_agent_does_not_report_itself(agent: AgentProcess, tmp_path: Path) -> None:
    """Tetragon creates its run files before loading policies: its own mkdir is never an event."""
    w = Worker()
    try:
        mark = tmp_path / "mark"
        w.run(f"result = sc({NR_MKDIRAT}, -100, {str(mark)!r}.encode(), 0o755)")
        wait_kprobe(agent, "mkdir-all", lambda e: e.get("args") == [{"string_arg": str(mark)}])
    finally:
        assert w.close() == 0
    assert (agent.tmp / "run" / "tetragon.pid").is_file()
    own = [
        e
        for e in agent.read_events()
        if kind(e) == "process_kprobe" and body(e)["process"]["pid"] == agent.proc.pid
    ]
    assert own == []
