"""Pods on events, end to end: real BPF, a real agent with `--enable-cri`, real containers.

A private containerd (tests/containerd_cri.py) runs a pod created through its CRI API, as the kubelet
would; the agent learns the pod from the same CRI socket (cgroup leaf of the exec record → container
id → ListContainers/ListPodSandbox). The container is started after the agent, so its first exec
comes before the agent knows the pod and waits in the event cache; a command run in it with ExecSync
must carry the exact `pod` Tetragon fills (namespace, name, uid, container id/name/image/start_time,
pid inside the container, labels, workload). The Kubernetes API side (--enable-k8s-api) has no API
server here: it is tested against recorded API streams in tests/unit/test_k8s_pods.py and
tests/unit/test_k8s_enrich.py.
"""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.containerd_cri import IMAGE, POD_UID, needs_containerd, private_containerd, run_pod
from tests.e2e.agentproc import AgentProcess, Event, body, free_port, kind, running_agent
from tetragon.k8s.cri import CriClient
from tetragon.k8s.gen.cri import api_pb2
from tetragon.timefmt import format_timestamp

pytestmark = needs_containerd

POD_NAME = "web-7d4b9c8f6-x2x9k"
LABELS = {"app": "web", "pod-template-hash": "7d4b9c8f6"}
LOOP = "while :; do /bin/sleep 1; done"  # a path: busybox runs a bare `sleep` without exec


@pytest.fixture(scope="module")
def containerd() -> Iterator[str]:
    with private_containerd() as sock:
        yield sock


@pytest.fixture(scope="module")
def cri(containerd: str) -> Iterator[CriClient]:
    with CriClient(f"unix://{containerd}", timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def sandbox(cri: CriClient) -> Iterator[tuple[str, api_pb2.PodSandboxConfig]]:
    sandbox_id, config = run_pod(cri.stub, POD_NAME, LABELS)
    try:
        yield sandbox_id, config
    finally:
        cri.stub.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=60)
        cri.stub.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=60)


@pytest.fixture(scope="module")
def metrics_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def agent(
    tmp_path_factory: pytest.TempPathFactory,
    containerd: str,
    sandbox: tuple[str, api_pb2.PodSandboxConfig],
    metrics_port: int,
) -> Iterator[AgentProcess]:
    yield from running_agent(
        tmp_path_factory,
        "k8s-agent",
        "--enable-cri",
        "--cri-endpoint",
        f"unix://{containerd}",
        "--event-cache-retry-delay",
        "1",
        "--metrics-server",
        f"127.0.0.1:{metrics_port}",
    )


@pytest.fixture(scope="module")
def container(cri: CriClient, sandbox: tuple[str, api_pb2.PodSandboxConfig], agent: AgentProcess) -> str:
    """The pod's one container, started after the agent: its first exec precedes the next relist."""
    sandbox_id, sandbox_config = sandbox
    config = api_pb2.ContainerConfig(
        metadata=api_pb2.ContainerMetadata(name="nginx"),
        image=api_pb2.ImageSpec(image=IMAGE),
        command=["/bin/sh", "-c", LOOP],
        labels={"io.kubernetes.container.name": "nginx"},
    )
    request = api_pb2.CreateContainerRequest(
        pod_sandbox_id=sandbox_id, config=config, sandbox_config=sandbox_config
    )
    created = cri.stub.CreateContainer(request, timeout=60)
    cri.stub.StartContainer(api_pb2.StartContainerRequest(container_id=created.container_id), timeout=60)
    return str(created.container_id)


def _exec_in(docker: str, binary: str, arguments: str) -> Callable[[Event], bool]:
    def pred(ev: Event) -> bool:
        if kind(ev) != "process_exec":
            return False
        p = body(ev)["process"]
        return bool(
            p.get("docker") == docker and p.get("binary") == binary and p.get("arguments") == arguments
        )

    return pred


def _pid_in_container(host_pid: int) -> int:
    """The innermost pid of a process (its pid in the container's pid namespace), from /proc."""
    for line in Path(f"/proc/{host_pid}/status").read_text().splitlines():
        if line.startswith("NSpid:"):
            return int(line.split()[-1])
    raise AssertionError(f"no NSpid for {host_pid}")


def _expected_pod(cri: CriClient, container_id: str, pid: int) -> dict[str, Any]:
    status = cri.container_status(container_id)
    started = status.started_at_ns - status.started_at_ns % 1_000_000_000
    return {
        "namespace": "shop",
        "name": POD_NAME,
        "uid": POD_UID,
        "container": {
            "id": f"containerd://{container_id}",
            "name": "nginx",
            "image": {"id": status.image_ref, "name": IMAGE},
            "start_time": format_timestamp(started),
            "pid": pid,
        },
        "pod_labels": LABELS,
        "workload": "web",
        "workload_kind": "Deployment",
    }


def test_first_exec_of_a_new_container_waits_for_its_pod(
    agent: AgentProcess, cri: CriClient, container: str
) -> None:
    docker = container[:31]
    # the container's command, exec'd before the agent had listed the container
    ev = agent.wait_for(_exec_in(docker, "/bin/sh", f'-c "{LOOP}"'), timeout=30)
    process = body(ev)["process"]
    main_pid = _pid_in_container(process["pid"])
    assert process["pod"] == _expected_pod(cri, container, main_pid)
    assert list(process).index("pod") == list(process).index("docker") - 1  # Tetragon's field order
    # its `sleep 1` children: the pod on the process and on the parent
    ev = agent.wait_for(_exec_in(docker, "/bin/sleep", "1"), timeout=30)
    assert body(ev)["process"]["pod"]["name"] == POD_NAME
    assert body(ev)["parent"]["pod"]["container"]["pid"] == main_pid


def test_exec_in_the_container_carries_the_exact_pod(
    agent: AgentProcess, cri: CriClient, container: str
) -> None:
    reply = cri.stub.ExecSync(
        api_pb2.ExecSyncRequest(container_id=container, cmd=["/bin/sh", "-c", "echo $$"], timeout=30),
        timeout=60,
    )
    assert reply.exit_code == 0, reply.stderr
    nspid = int(reply.stdout.decode().strip())  # the shell's pid inside the container
    ev = agent.wait_for(_exec_in(container[:31], "/bin/sh", '-c "echo $$"'), timeout=30)
    process = body(ev)["process"]
    assert process["docker"] == container[:31]
    assert process["pod"] == _expected_pod(cri, container, nspid)
    host_pid = process["pid"]
    exit_ev = agent.wait_for(
        lambda e: kind(e) == "process_exit" and body(e)["process"]["pid"] == host_pid, timeout=30
    )
    assert body(exit_ev)["process"]["pod"] == process["pod"]


def test_host_processes_carry_no_pod(agent: AgentProcess, container: str) -> None:
    for ev in agent.read_events():
        process = body(ev).get("process") or {}
        if "docker" not in process:
            assert "pod" not in process


def test_event_cache_metrics_count_the_held_events(
    agent: AgentProcess, container: str, metrics_port: int
) -> None:
    deadline = time.monotonic() + 10
    inserts = 0.0
    while time.monotonic() < deadline and not inserts:
        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
        for line in text.splitlines():
            if line.startswith("tetragon_event_cache_inserts_total "):
                inserts = float(line.split()[1])
        time.sleep(0.2)
    assert inserts >= 1  # at least the container's first exec waited for its pod
    assert "tetragon_event_cache_entries " in text
