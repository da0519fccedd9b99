"""The CRI client against a real containerd with its CRI plugin (tests/containerd_cri.py).

A pod is created through CRI (host network, so no CNI; no hostname), one container is started in it,
and the client must name its pod from the container id, including the 31-character `docker` field
taken from the container's own cgroup.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.containerd_cri import IMAGE, POD_UID, needs_containerd, private_containerd, run_pod
from tetragon.k8s.cgroups import identity_from_proc_cgroup
from tetragon.k8s.cri import CriClient, grpc_target
from tetragon.k8s.cripods import CriPodPoller, workload_from_labels
from tetragon.k8s.gen.cri import api_pb2


@pytest.fixture(scope="module")
def containerd() -> Iterator[str]:
    with private_containerd() as sock:
        yield sock


def test_grpc_target_from_cri_endpoint() -> None:
    assert grpc_target("unix:///run/containerd/containerd.sock") == "unix:///run/containerd/containerd.sock"
    assert grpc_target("/run/crio/crio.sock") == "unix:///run/crio/crio.sock"


def test_workload_from_the_labels_controllers_set() -> None:
    assert workload_from_labels("web-7d4b9c8f6-x2x9k", {"pod-template-hash": "7d4b9c8f6"}) == (
        "web",
        "Deployment",
    )
    assert workload_from_labels("db-0", {"statefulset.kubernetes.io/pod-name": "db-0"}) == (
        "db",
        "StatefulSet",
    )
    daemon = {"controller-revision-hash": "5c7d9", "pod-template-generation": "1"}
    assert workload_from_labels("tetragon-x8k2p", daemon) == ("tetragon", "DaemonSet")
    cron = {"job-name": "report-29420100"}
    assert workload_from_labels("report-29420100-q8z7w", cron) == ("report", "CronJob")
    assert workload_from_labels("migrate-q8z7w", {"job-name": "migrate"}) == ("migrate", "Job")
    assert workload_from_labels("debug", {"run": "debug"}) == ("debug", "Pod")


@needs_containerd
def test_pod_of_a_container_started_through_cri(containerd: str) -> None:
    with CriClient(f"unix://{containerd}", timeout=60) as cri:
        assert cri.runtime_name() == "containerd"
        stub = cri.stub
        labels = {"app": "web", "pod-template-hash": "7d4b9c8f6"}
        sandbox_id, sandbox_config = run_pod(stub, "web-7d4b9c8f6-x2x9k", labels)
        try:
            container_config = api_pb2.ContainerConfig(
                metadata=api_pb2.ContainerMetadata(name="nginx"),
                image=api_pb2.ImageSpec(image=IMAGE),
                command=["/bin/sh", "-c", "while :; do sleep 1; done"],
                labels={"io.kubernetes.container.name": "nginx"},
            )
            created = stub.CreateContainer(
                api_pb2.CreateContainerRequest(
                    pod_sandbox_id=sandbox_id, config=container_config, sandbox_config=sandbox_config
                ),
                timeout=60,
            )
            stub.StartContainer(api_pb2.StartContainerRequest(container_id=created.container_id), timeout=60)

            pods = {p.sandbox_id: p for p in cri.list_pods()}
            pod = pods[sandbox_id]
            assert (pod.name, pod.namespace, pod.uid) == ("web-7d4b9c8f6-x2x9k", "shop", POD_UID)
            assert pod.labels == labels  # the kubelet's own labels left out

            status = cri.container_status(created.container_id)
            assert status.name == "nginx" and status.running and status.pid > 0
            assert status.sandbox_id == sandbox_id

            # the container's own cgroup names it: the path an event's process would carry
            identity = identity_from_proc_cgroup(Path(f"/proc/{status.pid}/cgroup").read_text())
            assert identity is not None
            assert identity.id == created.container_id and identity.pod_uid == POD_UID
            found = cri.pod_of_container(identity.docker)
            assert found is not None
            assert found.pod.name == "web-7d4b9c8f6-x2x9k" and found.container.name == "nginx"
            assert found.container_id == f"containerd://{created.container_id}"
            assert [cp.container.id for cp in cri.all_container_pods()] == [created.container_id]
            assert cri.pod_of_container("0" * 31) is None

            # the same, as PodInfo in a PodCache: what events are enriched from without an API server
            poller = CriPodPoller(cri)
            poller.refresh()
            info = poller.cache.by_container(identity.docker)
            assert info is not None
            assert (info.name, info.namespace, info.uid) == ("web-7d4b9c8f6-x2x9k", "shop", POD_UID)
            assert (info.workload, info.workload_kind) == ("web", "Deployment")
            event_pod = info.pod_json(identity.docker)
            assert event_pod["container"]["id"] == f"containerd://{created.container_id}"
            assert event_pod["container"]["name"] == "nginx"
            assert event_pod["container"]["image"]["name"] == IMAGE
            assert event_pod["container"]["start_time"].endswith("Z")
        finally:
            stub.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=60)
            stub.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=60)
        assert cri.list_pods() == []
