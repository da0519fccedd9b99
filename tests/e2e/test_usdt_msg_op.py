"""USDT records are their own message op, as Tetragon numbers it (MSG_OP_GENERIC_USDT = 28): the
agent's tetragon_msg_op_total counts them under msg_op="28", not under the uprobe op (15)."""

from __future__ import annotations

import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.agentproc import AgentProcess, free_port, running_agent
from tests.e2e.test_policy_lifecycle import compile_c
from tests.e2e.test_policy_usdt import ARGS3, SOURCE, _add, run_pid, usdt_events, usdt_yaml

METRICS_PORT = free_port()


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    yield from running_agent(tmp_path_factory, "usdt-msg-op", "--metrics-server", f"127.0.0.1:{METRICS_PORT}")


def msg_ops() -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=10).read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith('tetragon_msg_op_total{msg_op="'):
            out[line.split('"')[1]] = float(line.rsplit(" ", 1)[1])
    return out


def test_usdt_records_count_under_their_own_op(agent: AgentProcess, tmp_path: Path) -> None:
    prog = compile_c(SOURCE.read_text(), tmp_path / "usdt_probes")
    name = _add(agent, tmp_path, usdt_yaml(f"usdt-op-{uuid.uuid4().hex[:6]}", prog, "args", ARGS3))
    before = msg_ops()
    pid, _ = run_pid(prog, 3)
    assert len(usdt_events(agent, prog, pid, name)) == 3
    after = msg_ops()
    assert after["28"] - before.get("28", 0) == 3
    assert after.get("15", 0) == before.get("15", 0)
    agent.tetra("tracingpolicy", "delete", name)
