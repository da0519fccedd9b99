"""Operations against a real agent: the grpc.health.v1 liveness service as a Kubernetes probe asks it,
and `tetra debug dump processcache`."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import grpc
import orjson
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.conftest import VENV_BIN
from tests.e2e.agentproc import AgentProcess, free_port, running_agent

HEALTH_PORT = free_port()


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    yield from running_agent(
        tmp_path_factory,
        "agent-ops",
        "--health-server-address",
        f"127.0.0.1:{HEALTH_PORT}",
        "--health-server-interval",
        "1",
    )


def test_liveness_probe_is_serving(agent: AgentProcess) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{HEALTH_PORT}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        response = stub.Check(health_pb2.HealthCheckRequest(service="liveness"), timeout=5)
    assert response.status == health_pb2.HealthCheckResponse.SERVING


def _tetra(agent: AgentProcess, *args: str) -> list[dict[str, object]]:
    res = subprocess.run(
        [str(VENV_BIN / "tetra"), "--server-address", agent.server, *args], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    return [orjson.loads(line) for line in res.stdout.splitlines()]


def test_tetra_dumps_the_process_cache(agent: AgentProcess) -> None:
    processes = _tetra(agent, "debug", "dump", "processcache")
    by_pid = {p["process"]["pid"]: p for p in processes}  # type: ignore[index]
    me = by_pid[os.getpid()]  # seeded from /proc at start, still running
    assert me["color"] == "inUse" and me["refcnt"] >= 1  # type: ignore[operator]
    assert me["process"]["exec_id"]  # type: ignore[index]
    assert by_pid[1]["process"]["binary"]  # type: ignore[index]
    live = _tetra(agent, "dump", "processcache", "--skip-zero-refcnt")
    assert all(p["refcnt"] > 0 for p in live)  # type: ignore[operator]
    assert os.getpid() in {p["process"]["pid"] for p in live}  # type: ignore[index]
    leaked = _tetra(agent, "dump", "processcache", "--exclude-execve-map-processes")
    assert os.getpid() not in {p["process"]["pid"] for p in leaked}  # type: ignore[index]
