"""tetragon-oci-hook end to end: real containerd (CRI) + runc run the hook, a real agent answers.

A private containerd has two runtimes: `runc`, whose base OCI spec registers tetragon-oci-hook at
`createRuntime` (as Tetragon's rthooks set-up does for containerd), and `plain`, without the hook. A
pod-scoped policy (podSelector app=web) watches `execve`. The first thing a container does is the
execve of its entry point by runc's init, in the container's cgroup: with the hook that call is
filtered in (the cgroup was put in the policy's set before runc went on); without it, it is missed
every time, since the agent learns a container from CRI only once it is running, which containerd
reports after that execve. The container's later execs are covered either way.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import VENV_BIN, require_bpf
from tests.containerd_cri import IMAGE, needs_containerd, private_containerd, run_pod
from tests.e2e.agentproc import AgentProcess, Event, body, free_port, kind
from tetragon.k8s.cri import CriClient
from tetragon.k8s.gen.cri import api_pb2

pytestmark = needs_containerd

HOOK = VENV_BIN / "tetragon-oci-hook"
LABELS = {"app": "web"}
LOOP = "while :; do /bin/sleep 1; done"
POLICY = "first-exec"
HOOKED_UID = "0f6e2a51-3c1b-4d7e-8a90-6b5c4d3e2f10"
PLAIN_UID = "9d8c7b6a-5e4f-4a3b-8c2d-1e0f9a8b7c6d"
POLICY_YAML = f"""\
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: {POLICY}
spec:
  podSelector:
    matchLabels:
      app: web
  tracepoints:
  - subsystem: syscalls
    event: sys_enter_execve
    args:
    - index: 5
      type: string
"""


def _base_spec(path: Path, hook_args: list[str]) -> None:
    """containerd's default spec with the hook at createRuntime (and no rlimits: this sandbox
    cannot raise them)."""
    spec = json.loads(subprocess.run(["ctr", "oci", "spec"], capture_output=True, check=True).stdout)
    spec["process"].pop("rlimits", None)
    spec["hooks"] = {"createRuntime": [{"path": str(HOOK), "args": [HOOK.name, *hook_args], "timeout": 30}]}
    path.write_text(json.dumps(spec))


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("oci-hook")


@pytest.fixture(scope="module")
def server() -> str:
    return f"127.0.0.1:{free_port()}"


@pytest.fixture(scope="module")
def cri(work: Path, server: str) -> Iterator[CriClient]:
    """A private containerd whose default runtime runs the hook (a client of its CRI API)."""
    spec = work / "hooked-spec.json"
    _base_spec(spec, ["createRuntime", "--grpc-address", server, "--log-fname", str(work / "hook.log")])
    runtimes = f"""[plugins."io.containerd.grpc.v1.cri".containerd]
  default_runtime_name = "runc"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
  base_runtime_spec = "{spec}"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.plain]
  runtime_type = "io.containerd.runc.v2"
"""
    with private_containerd(runtimes) as sock, CriClient(f"unix://{sock}", timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def agent(work: Path, server: str, cri: CriClient) -> Iterator[AgentProcess]:
    require_bpf()
    flags = ["--enable-cri", "--cri-endpoint", cri.endpoint, "--enable-policy-filter"]
    agent = AgentProcess(work / "agent", *flags, server=server)
    try:
        agent.wait_ready()
        policy = work / f"{POLICY}.yaml"
        policy.write_text(POLICY_YAML)
        agent.tetra("tracingpolicy", "add", str(policy))
        yield agent
    finally:
        assert agent.stop() == 0, agent.stderr()


def _pod_with_container(cri: CriClient, name: str, uid: str, runtime: str) -> tuple[str, str]:
    """(sandbox id, container id): a pod labelled app=web, then its container started through CRI."""
    sandbox_id, sandbox_config = run_pod(cri.stub, name, LABELS, uid=uid, runtime_handler=runtime)
    config = api_pb2.ContainerConfig(
        metadata=api_pb2.ContainerMetadata(name="main"),
        image=api_pb2.ImageSpec(image=IMAGE),
        command=["/bin/sh", "-c", LOOP],
    )
    request = api_pb2.CreateContainerRequest(
        pod_sandbox_id=sandbox_id, config=config, sandbox_config=sandbox_config
    )
    container_id = str(cri.stub.CreateContainer(request, timeout=60).container_id)
    cri.stub.StartContainer(api_pb2.StartContainerRequest(container_id=container_id), timeout=60)
    return sandbox_id, container_id


def _remove_pod(cri: CriClient, sandbox_id: str) -> None:
    cri.stub.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=60)
    cri.stub.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=60)


def _entry_point_pid(agent: AgentProcess, container_id: str) -> int:
    """Host pid of the container's entry point, from its exec event."""

    def pred(ev: Event) -> bool:
        process = body(ev).get("process") or {}
        return (
            kind(ev) == "process_exec"
            and process.get("docker") == container_id[:31]
            and process.get("binary") == "/bin/sh"
            and process.get("arguments") == f'-c "{LOOP}"'
        )

    return int(body(agent.wait_for(pred, timeout=30))["process"]["pid"])


def _execve_calls(agent: AgentProcess) -> list[Event]:
    return [
        body(ev)
        for ev in agent.read_events()
        if kind(ev) == "process_tracepoint" and body(ev).get("policy_name") == POLICY
    ]


def _entry_point_execve(calls: list[Event], pid: int) -> list[Event]:
    """The execve of the entry point itself: made by runc's init, which becomes the entry point."""
    return [c for c in calls if c["process"]["pid"] == pid and c.get("args") == [{"string_arg": "/bin/sh"}]]


def test_hooked_container_is_covered_from_its_first_execve(
    agent: AgentProcess, cri: CriClient, work: Path
) -> None:
    sandbox_id, container_id = _pod_with_container(cri, "web-hooked", HOOKED_UID, "runc")
    try:
        pid = _entry_point_pid(agent, container_id)
        deadline = time.monotonic() + 30
        while not _entry_point_execve(_execve_calls(agent), pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        first = _entry_point_execve(_execve_calls(agent), pid)
        assert len(first) == 1, [c for c in _execve_calls(agent) if c["process"]["pid"] == pid]
        call = first[0]
        assert call["subsys"] == "syscalls" and call["event"] == "sys_enter_execve"
        assert call["policy_name"] == POLICY
        # the hook ran for the sandbox and the container, and the agent answered both
        log = [json.loads(line) for line in (work / "hook.log").read_text().splitlines()]
        done = [r for r in log if r["msg"] == "hook request to agent succeeded"]
        assert any(r["req-containerID"] == container_id for r in done), log
        ours = next(r for r in done if r["req-containerID"] == container_id)
        assert (ours["req-podName"], ours["req-podNamespace"], ours["req-containerName"]) == (
            "web-hooked",
            "shop",
            "main",
        )
        assert "runtime hook: container main of pod shop/web-hooked: cgroup" in agent.stderr()
        assert "in 1 policies" in agent.stderr()
    finally:
        _remove_pod(cri, sandbox_id)


def test_container_without_the_hook_misses_its_first_execve(agent: AgentProcess, cri: CriClient) -> None:
    sandbox_id, container_id = _pod_with_container(cri, "web-plain", PLAIN_UID, "plain")
    try:
        pid = _entry_point_pid(agent, container_id)

        def covered_later() -> bool:  # its `sleep 1` loop, once the agent has listed the container
            return any(c["process"].get("docker") == container_id[:31] for c in _execve_calls(agent))

        deadline = time.monotonic() + 30
        while not covered_later() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert covered_later(), "the policy selects the pod: its container's later execs are seen"
        assert _entry_point_execve(_execve_calls(agent), pid) == []
    finally:
        _remove_pod(cri, sandbox_id)
