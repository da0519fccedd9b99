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

import os
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.conftest import VENV_BIN
from tests.containerd_cri import (
    IMAGE,
    LOOP,
    POD_UID,
    needs_containerd,
    private_containerd,
    run_pod,
    start_container,
)
from tests.e2e.agentproc import AgentProcess, Event, body, free_port, kind, running_agent
from tetragon.k8s.cri import CriClient
from tetragon.k8s.gen.cri import api_pb2
from tetragon.timefmt import format_timestamp

pytestmark = needs_containerd

POD_NAME = "web-7d4b9c8f6-x2x9k"
LABELS = {"app": "web", "pod-template-hash": "7d4b9c8f6"}


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
        "--enable-policy-filter",
        "--metrics-server",
        f"127.0.0.1:{metrics_port}",
    )


@pytest.fixture(scope="module")
def container(cri: CriClient, sandbox: tuple[str, api_pb2.PodSandboxConfig], agent: AgentProcess) -> str:
    """The pod's first container, started after the agent: its first exec precedes the next relist."""
    return start_container(cri, sandbox, "nginx")


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
    # the events of the pod's processes are counted under its namespace, workload and name
    pod_lines = [
        line
        for line in text.splitlines()
        if line.startswith("tetragon_events_total{") and f'pod="{POD_NAME}"' in line
    ]
    assert any('namespace="shop"' in line and 'workload="web"' in line for line in pod_lines), pod_lines


EXECVE_POLICY = """\
apiVersion: cilium.io/v1alpha1
kind: {kind}
metadata:
  name: {name}{namespace}
spec:
  {selector}
  tracepoints:
  - subsystem: syscalls
    event: sys_enter_execve
"""


def _scoped_policy(tmp: Path, name: str, selector: str, kind: str = "TracingPolicy", ns: str = "") -> Path:
    path = tmp / f"{name}.yaml"
    namespace = f"\n  namespace: {ns}" if ns else ""
    path.write_text(EXECVE_POLICY.format(kind=kind, name=name, namespace=namespace, selector=selector))
    return path


def _tracepoints_of(agent: AgentProcess, policy: str) -> list[Event]:
    return [
        body(ev)
        for ev in agent.read_events()
        if kind(ev) == "process_tracepoint" and body(ev).get("policy_name") == policy
    ]


def test_pod_scoped_policies_filter_in_the_kernel_by_cgroup(
    agent: AgentProcess,
    cri: CriClient,
    sandbox: tuple[str, api_pb2.PodSandboxConfig],
    container: str,
    tmp_path: Path,
) -> None:
    """podSelector / containerSelector / TracingPolicyNamespaced: events from the selected containers
    only, none from the host or from a container the policy does not select; a container started
    after the policies is covered once the agent has seen it."""
    policies = {
        "pod-web": _scoped_policy(tmp_path, "pod-web", "podSelector:\n    matchLabels:\n      app: web"),
        "only-nginx": _scoped_policy(
            tmp_path,
            "only-nginx",
            "containerSelector:\n    matchExpressions:\n    - key: name\n      operator: In\n"
            "      values: [nginx]",
        ),
        "ns-default": _scoped_policy(tmp_path, "ns-default", "", "TracingPolicyNamespaced", "default"),
    }
    for path in policies.values():
        agent.tetra("tracingpolicy", "add", str(path))
    try:
        sidecar = start_container(cri, sandbox, "sidecar")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            subprocess.run(["/bin/true"], check=True)  # host execs: never in a scoped policy
            seen = {p: {e["process"].get("docker") for e in _tracepoints_of(agent, p)} for p in policies}
            if {container[:31], sidecar[:31]} <= seen["pod-web"] and container[:31] in seen["only-nginx"]:
                break
            time.sleep(0.5)
        time.sleep(2)  # more execs in both containers and on the host
        subprocess.run(["/bin/true"], check=True)
        seen = {p: {e["process"].get("docker") for e in _tracepoints_of(agent, p)} for p in policies}
        assert seen["pod-web"] == {container[:31], sidecar[:31]}
        assert seen["only-nginx"] == {container[:31]}
        assert seen["ns-default"] == set()  # the pod is in `shop`
        web = _tracepoints_of(agent, "pod-web")
        assert all(e["process"]["pod"]["name"] == POD_NAME for e in web)
        status = {p: agent.tetra("tracingpolicy", "list", "-o", "json").stdout for p in policies}
        assert (
            '"namespace": "default"' in status["ns-default"]
            or '"namespace":"default"' in status["ns-default"]
        )
        _check_policyfilter_dump(agent, container, sidecar)
    finally:
        for name in policies:
            agent.tetra("tracingpolicy", "delete", name, check=False)
            agent.tetra("tracingpolicy", "delete", name, "-n", "default", check=False)


def _container_cgroup_ids(container: str) -> set[int]:
    """The cgroup v2 ids of the container's cgroup directory (the runtime names it after the id),
    found by walking the cgroup v2 file system (on a hybrid host not /sys/fs/cgroup itself), not
    through the agent."""
    mounts = [line.split() for line in Path("/proc/self/mounts").read_text().splitlines()]
    [cgroup2] = [m[1] for m in mounts if m[2] == "cgroup2"]
    found: set[int] = set()
    for root, dirs, _ in os.walk(cgroup2):
        for d in dirs:
            if container in d:
                found.add(os.stat(os.path.join(root, d)).st_ino)
    return found


def _check_policyfilter_dump(agent: AgentProcess, container: str, sidecar: str) -> None:
    """`tetra debug dump policyfilter`: each scoped policy's filter id (`tracingpolicy list`'s
    FILTERID) with the cgroup ids of the containers it selects, and the reverse map."""
    listed = orjson.loads(agent.tetra("tracingpolicy", "list", "-o", "json").stdout)["policies"]
    filter_id = {p["name"]: int(p.get("filterId", 0)) for p in listed}  # MessageToDict: camelCase
    assert 0 not in (filter_id["pod-web"], filter_id["only-nginx"], filter_id["ns-default"])
    nginx, side = _container_cgroup_ids(container), _container_cgroup_ids(sidecar)
    assert nginx and side and not nginx & side
    out = agent.tetra("debug", "dump", "policyfilter", "--pid", str(agent.proc.pid)).stdout.splitlines()
    split = out.index("--- Reverse Map ---")
    assert out[0] == "--- Direct Map ---"
    direct = {
        int(k): {int(v) for v in vs.split(",")} for k, vs in (line.split(": ") for line in out[1:split])
    }
    assert nginx | side <= direct[filter_id["pod-web"]]
    assert nginx <= direct[filter_id["only-nginx"]] and not side & direct[filter_id["only-nginx"]]
    assert filter_id["ns-default"] not in direct  # the pod is in `shop`: an empty set has no line
    reverse = {
        int(k): {int(v) for v in vs.split(",")} for k, vs in (line.split(": ") for line in out[split + 1 :])
    }
    for cgid in nginx:
        assert {filter_id["pod-web"], filter_id["only-nginx"]} <= reverse[cgid]


def test_tetra_getevents_filters_by_namespace_pod_and_container(agent: AgentProcess, container: str) -> None:
    """`tetra getevents` over the export file: the Kubernetes filters and compact `namespace/pod`."""
    assert agent.export is not None
    agent.wait_for(_exec_in(container[:31], "/bin/sleep", "1"), timeout=30)
    data = agent.export.read_bytes()

    def getevents(*flags: str) -> list[str]:
        cmd = [str(VENV_BIN / "tetra"), "getevents", "-o", "compact", "-e", "PROCESS_EXEC", *flags]
        out = subprocess.run(cmd, input=data, capture_output=True, timeout=60, check=True)
        return out.stdout.decode().splitlines()

    lines = getevents("--namespace", "shop", "--pod", "^web-", "--container-id", f"^{container[:12]}")
    assert f"🚀 process shop/{POD_NAME} /bin/sleep 1" in lines
    assert all(line.startswith(f"🚀 process shop/{POD_NAME} ") for line in lines)
    assert getevents("--namespace", "default", "--container-id", container[:12]) == []
    assert getevents("--pod", "^db-") == []
    host = getevents("--host")  # namespace "": processes outside pods only
    assert host and not any(f"shop/{POD_NAME}" in line for line in host)


def _container_cgroup_dir(container: str) -> Path:
    mounts = [line.split() for line in Path("/proc/self/mounts").read_text().splitlines()]
    [cgroup2] = [m[1] for m in mounts if m[2] == "cgroup2"]
    [found] = [Path(root) / d for root, dirs, _ in os.walk(cgroup2) for d in dirs if d.endswith(container)]
    return found


def _execve_tracepoints(events: list[Event], policy: str, exec_id: str) -> list[dict[str, Any]]:
    """The policy's execve events made by one process (its exec_id)."""
    return [
        body(ev)
        for ev in events
        if kind(ev) == "process_tracepoint"
        and body(ev).get("policy_name") == policy
        and body(ev)["process"]["exec_id"] == exec_id
    ]


def _shell_exec(agent: AgentProcess, pid: int) -> dict[str, Any]:
    """The process_exec of the shell a test started (not of the /bin/true it execs next, same pid)."""
    return body(
        agent.wait_for(
            lambda ev: (
                kind(ev) == "process_exec"
                and body(ev)["process"]["pid"] == pid
                and body(ev)["process"]["binary"] != "/bin/true"
            ),
            timeout=30,
        )
    )["process"]


def _loaded(agent: AgentProcess, policy: str, container: str) -> None:
    """The policy's set is filled: the container's loop shows up in its events."""
    agent.wait_for(
        lambda ev: (
            kind(ev) == "process_tracepoint"
            and body(ev).get("policy_name") == policy
            and body(ev)["process"].get("docker") == container[:31]
        ),
        timeout=30,
    )


def test_host_selector_adds_the_host_processes_to_a_pod_scoped_policy(
    agent: AgentProcess, container: str, tmp_path: Path
) -> None:
    """`hostSelector: {}` with a podSelector: the selected pod's processes and every process outside
    pods, decided in the kernel. A host shell's execve reaches the two hostSelector policies (with its
    exact process and no pod) and not the podSelector-only one; the pod's processes reach the policies
    that select it and not `other-and-host`, whose pod is not there; a shell moved into a sub-cgroup of
    the container made after the agent last looked is in the pod (the kernel finds the container's
    cgroup among its ancestors), not on the host."""
    web = "podSelector:\n    matchLabels:\n      app: web"
    other = "podSelector:\n    matchLabels:\n      app: other"
    policies = {
        "web-and-host": _scoped_policy(tmp_path, "web-and-host", web + "\n  hostSelector: {}"),
        "other-and-host": _scoped_policy(tmp_path, "other-and-host", other + "\n  hostSelector: {}"),
        "web-only": _scoped_policy(tmp_path, "web-only", web),
    }
    for path in policies.values():
        agent.tetra("tracingpolicy", "add", str(path))
    sub = _container_cgroup_dir(container) / "hostsel-sub"
    try:
        _loaded(agent, "web-and-host", container)
        _loaded(agent, "web-only", container)
        marker = f"hostsel-{os.getpid()}"
        host = subprocess.Popen(["/bin/sh", "-c", f"exec /bin/true {marker}"])
        assert host.wait(timeout=10) == 0
        sub.mkdir()
        moved = subprocess.Popen(
            ["/bin/sh", "-c", f"echo $$ > {sub}/cgroup.procs && exec /bin/true {marker}"]
        )
        assert moved.wait(timeout=10) == 0
        host_sh, moved_sh = _shell_exec(agent, host.pid), _shell_exec(agent, moved.pid)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            events = agent.read_events()
            if _execve_tracepoints(events, "other-and-host", host_sh["exec_id"]) and _execve_tracepoints(
                events, "web-and-host", moved_sh["exec_id"]
            ):
                break
            time.sleep(0.5)
        time.sleep(2)  # more execs in the container's loop
        events = agent.read_events()

        # the host shell's execve of /bin/true, with the shell's exact process and no pod
        for name in ("web-and-host", "other-and-host"):
            [event] = _execve_tracepoints(events, name, host_sh["exec_id"])
            assert (event["subsys"], event["event"]) == ("syscalls", "sys_enter_execve")
            fields = ("pid", "binary", "arguments", "exec_id", "uid")
            assert {k: event["process"].get(k) for k in fields} == {k: host_sh.get(k) for k in fields}
            assert host_sh["pid"] == host.pid and marker in host_sh["arguments"]
            assert "pod" not in event["process"] and "docker" not in event["process"]
        assert _execve_tracepoints(events, "web-only", host_sh["exec_id"]) == []

        # the pod's processes: in the policies that select the pod, not in other-and-host
        def dockers(name: str) -> set[str]:
            return {
                body(ev)["process"].get("docker", "")
                for ev in events
                if kind(ev) == "process_tracepoint" and body(ev).get("policy_name") == name
            }

        assert container[:31] in dockers("web-and-host") and container[:31] in dockers("web-only")
        assert "" not in dockers("web-only")  # no host process without hostSelector
        assert container[:31] not in dockers("other-and-host")
        other_pods = [
            ev
            for ev in events
            if body(ev).get("policy_name") == "other-and-host" and "pod" in body(ev)["process"]
        ]
        assert other_pods == []

        # the moved shell's execve, from the container's new sub-cgroup: in the pod, not on the host
        [event] = _execve_tracepoints(events, "web-and-host", moved_sh["exec_id"])
        assert event["process"]["pid"] == moved.pid
        assert _execve_tracepoints(events, "other-and-host", moved_sh["exec_id"]) == []
    finally:
        if sub.exists():
            sub.rmdir()
        for name in policies:
            agent.tetra("tracingpolicy", "delete", name, check=False)
