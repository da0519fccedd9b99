"""Policy events wait for their pod, end to end: real BPF, real containers, the pod from the API's watch.

A private containerd (tests/containerd_cri.py) runs two containers of a pod created through CRI; the
agent runs with --enable-k8s-api against the API double of tests/k8s_apiserver.py, whose pod list is
empty at first, so the agent does not know the pod when the containers start. The test decides when
the pod appears: it pushes the watch's ADDED naming only the first container. Until then the
`process_tracepoint` events of a policy on execve from both containers wait in the event cache; the
first container's leave with `pod` filled (also those made before the push), the second's leave
without it after the cache's retries and are counted as Tetragon counts them
(`tetragon_event_cache_fetch_failures_total{entry_type="pod_info",event_type="PROCESS_TRACEPOINT"}`).

The same agent watches TracingPolicy objects from the double: a bad update of a loaded one is refused
with a Warning Event posted on the object, and the loaded version keeps reporting.
"""

from __future__ import annotations

import copy
import json
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.containerd_cri import IMAGE, needs_containerd, private_containerd, run_pod, start_container
from tests.e2e.agentproc import AgentProcess, Event, body, free_port, kind, running_agent
from tests.k8s_apiserver import FakeApiServer, write_kubeconfig
from tetragon.k8s.cri import CriClient
from tetragon.k8s.gen.cri import api_pb2

pytestmark = needs_containerd

DATA = Path(__file__).resolve().parents[1] / "data" / "k8s"
POD_NAME = "held-5f6d7c8b9-q7r2s"
POD_UID = "7c2a4e6f-1b3d-4f5a-8c9e-0d2b4f6a8c1e"
RETRIES = 6  # x 1 s: how long an event of the never-known container waits
POLICY = """\
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: execs
spec:
  tracepoints:
  - subsystem: syscalls
    event: sys_enter_execve
"""


@pytest.fixture(scope="module")
def apiserver() -> Iterator[FakeApiServer]:
    server = FakeApiServer()
    server.pod_list = {"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "10"}}
    server.pod_list["items"] = []
    yield server
    server.stop()


@pytest.fixture(scope="module")
def metrics_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def agent(
    tmp_path_factory: pytest.TempPathFactory, apiserver: FakeApiServer, metrics_port: int
) -> Iterator[AgentProcess]:
    kubeconfig = write_kubeconfig(tmp_path_factory.mktemp("kube") / "config", apiserver.port)
    yield from running_agent(
        tmp_path_factory,
        "k8s-policy-events",
        "--enable-k8s-api",
        "--k8s-kubeconfig-path",
        str(kubeconfig),
        "--event-cache-retries",
        str(RETRIES),
        "--event-cache-retry-delay",
        "1",
        "--metrics-server",
        f"127.0.0.1:{metrics_port}",
    )


@pytest.fixture(scope="module")
def cri() -> Iterator[CriClient]:
    with private_containerd() as sock, CriClient(f"unix://{sock}", timeout=60) as client:
        yield client


def _pod_doc(container_id: str, cri: CriClient) -> dict[str, Any]:
    """The API's pod object for the pod, its one known container the first one (as a kubelet reports)."""
    doc: dict[str, Any] = copy.deepcopy(json.loads((DATA / "pods-list.json").read_text())["items"][0])
    doc["metadata"].update(
        name=POD_NAME, namespace="shop", uid=POD_UID, resourceVersion="20", generateName="held-5f6d7c8b9-"
    )
    doc["metadata"]["ownerReferences"][0]["name"] = "held-5f6d7c8b9"
    doc["metadata"]["labels"] = {"app": "held", "pod-template-hash": "5f6d7c8b9"}
    doc["spec"]["containers"][0]["image"] = IMAGE
    del doc["spec"]["initContainers"], doc["status"]["initContainerStatuses"]
    status = doc["status"]["containerStatuses"][0]
    status.update(image=IMAGE, imageID=cri.container_status(container_id).image_ref)
    status["containerID"] = f"containerd://{container_id}"
    return doc


def _of(events: list[Event], what: str, docker: str) -> list[Event]:
    """The bodies of the `what` events of the container, each with its event's wall time as `_at`."""
    return [
        {**body(e), "_at": _wall(e["time"])}
        for e in events
        if kind(e) == what and body(e)["process"].get("docker") == docker
    ]


def _wall(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _scrape(port: int) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()


def test_policy_events_wait_for_their_pod(
    agent: AgentProcess, apiserver: FakeApiServer, cri: CriClient, tmp_path: Path, metrics_port: int
) -> None:
    policy = tmp_path / "execs.yaml"
    policy.write_text(POLICY)
    agent.tetra("tracingpolicy", "add", str(policy))
    sandbox_id, config = run_pod(cri.stub, POD_NAME, {"app": "held"}, uid=POD_UID)
    try:
        known_id = start_container(cri, (sandbox_id, config), "nginx")
        known = known_id[:31]
        unknown = start_container(cri, (sandbox_id, config), "sidecar")[:31]
        # both loops exec `sleep 1` every second; none of their events may leave without the pod yet
        time.sleep(3)
        events = agent.read_events()
        for docker in (known, unknown):
            assert _of(events, "process_tracepoint", docker) == [], "a policy event left before its pod"
            assert _of(events, "process_exec", docker) == []
        entries = next(
            float(line.split()[1])
            for line in _scrape(metrics_port).splitlines()
            if line.startswith("tetragon_event_cache_entries ")
        )
        assert entries >= 4  # two execs and two execve tracepoints at least
        pushed = time.time()
        apiserver.push("ADDED", _pod_doc(known_id, cri))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            events = agent.read_events()
            after = [e for e in _of(events, "process_tracepoint", known) if e["_at"] > pushed + 1]
            if after and _of(events, "process_tracepoint", unknown):
                break
            time.sleep(0.3)
        tracepoints = _of(events, "process_tracepoint", known)
        assert tracepoints, "no policy event from the container"
        held = [e for e in tracepoints if e["_at"] < pushed]
        assert held, "no event from before the pod was known"
        for event in tracepoints:
            assert event["process"]["pod"]["name"] == POD_NAME, event
            assert event["process"]["pod"]["container"]["name"] == "nginx"
            assert list(event["process"]).index("pod") == list(event["process"]).index("docker") - 1
            assert event["parent"]["pod"]["namespace"] == "shop"
            assert event["policy_name"] == "execs"
        assert all(e["process"]["pod"]["name"] == POD_NAME for e in _of(events, "process_exec", known))
        # the other container is in no pod the API knows: its events leave without, after the retries
        never = _of(events, "process_tracepoint", unknown)
        assert never and all("pod" not in e["process"] for e in never)
        text = _scrape(metrics_port)
        failures = "tetragon_event_cache_fetch_failures_total"
        failures += '{entry_type="pod_info",event_type="PROCESS_TRACEPOINT"}'
        assert any(line.startswith(failures) and float(line.split()[1]) >= 1 for line in text.splitlines())
        # counted when they left, under the pod they left with
        counted = [line for line in text.splitlines() if line.startswith("tetragon_policy_events_total{")]
        assert any(f'pod="{POD_NAME}"' in line and 'policy="execs"' in line for line in counted), counted
    finally:
        agent.tetra("tracingpolicy", "delete", "execs", check=False)
        cri.stub.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=60)
        cri.stub.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=60)


CRD_POLICY: dict[str, Any] = {
    "apiVersion": "cilium.io/v1alpha1",
    "kind": "TracingPolicy",
    "metadata": {"name": "crd-execs", "uid": "3e5f7a9b-2c4d-4e6f-8a0b-1c3d5e7f9a2b", "resourceVersion": "30"},
    "spec": {"tracepoints": [{"subsystem": "syscalls", "event": "sys_enter_execve"}]},
}


def _policy_ids(agent: AgentProcess) -> dict[str, int]:
    listing = json.loads(agent.tetra("tracingpolicy", "list", "-o", "json").stdout)
    return {p["name"]: int(p["id"]) for p in listing.get("policies", [])}


def test_a_bad_crd_update_keeps_the_policy_running_and_reports_an_event(
    agent: AgentProcess, apiserver: FakeApiServer
) -> None:
    apiserver.push("ADDED", CRD_POLICY, "tracingpolicies")
    deadline = time.monotonic() + 30
    while "crd-execs" not in _policy_ids(agent):
        assert time.monotonic() < deadline, "the CRD policy was not loaded"
        time.sleep(0.2)
    loaded_id = _policy_ids(agent)["crd-execs"]
    bad = copy.deepcopy(CRD_POLICY)
    bad["metadata"]["resourceVersion"] = "31"
    bad["spec"]["tracepoints"][0]["selectors"] = [
        {"matchArgs": [{"index": 0, "operator": "Bogus", "values": ["1"]}]}
    ]
    apiserver.push("MODIFIED", bad, "tracingpolicies")
    deadline = time.monotonic() + 30
    while not apiserver.posted:
        assert time.monotonic() < deadline, "no Event about the refused update"
        time.sleep(0.2)
    refused_at = time.time()
    event = apiserver.posted[0]
    assert (event["reason"], event["type"]) == ("TracingPolicyUpdateRefused", "Warning")
    assert event["involvedObject"]["name"] == "crd-execs" and "Bogus" in event["message"]
    assert event["message"].endswith("the previous version stays loaded")
    # the same policy (never unloaded) keeps reporting execs made after the refusal
    assert _policy_ids(agent)["crd-execs"] == loaded_id
    deadline = time.monotonic() + 30
    while True:
        subprocess.run(["/bin/true"], check=True)
        events = agent.read_events()
        after = [
            e
            for e in events
            if kind(e) == "process_tracepoint"
            and body(e).get("policy_name") == "crd-execs"
            and _wall(e["time"]) > refused_at
        ]
        if after:
            break
        assert time.monotonic() < deadline, "the policy's events stopped after the bad update"
        time.sleep(0.2)
    apiserver.push("DELETED", bad, "tracingpolicies")
