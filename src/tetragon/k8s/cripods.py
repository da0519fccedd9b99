"""Pods from the node's container runtime alone (Tetragon's `--enable-cri`), into the same PodCache.

Without an API server the runtime still knows each pod's name, namespace, uid and labels (the
kubelet hands them over in RunPodSandbox) and each container's id, name, image and start. The
workload is not in CRI; it is read from the labels the controllers put on their pods
(`pod-template-hash` for a Deployment's ReplicaSet, `controller-revision-hash` +
`pod-template-generation` for a DaemonSet, `statefulset.kubernetes.io/pod-name`, `job-name`), which
gives the names the API's owner references would.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import replace

import grpc

from tetragon.k8s.cri import CriClient, CriContainer, CriPod
from tetragon.k8s.podinfo import ContainerInfo, PodInfo, workload_of
from tetragon.k8s.pods import PodCache
from tetragon.timefmt import format_timestamp

log = logging.getLogger(__name__)

MIN_RELIST_GAP = 0.1  # seconds between two relists, however often the poller is poked


def _drop_suffix(name: str, parts: int = 1) -> str:
    return name.rsplit("-", parts)[0] if name.count("-") >= parts else name


def workload_from_labels(name: str, labels: dict[str, str]) -> tuple[str, str]:
    """(workload, kind) of a pod known only by its name and labels."""
    template_hash = labels.get("pod-template-hash", "")
    if template_hash and f"-{template_hash}-" in name:
        replica_set = name[: name.rindex(f"-{template_hash}-") + len(template_hash) + 1]
        meta = {
            "name": name,
            "labels": labels,
            "ownerReferences": [{"kind": "ReplicaSet", "name": replica_set}],
        }
        return workload_of(meta)
    if "statefulset.kubernetes.io/pod-name" in labels:
        return _drop_suffix(name), "StatefulSet"
    if "controller-revision-hash" in labels and "pod-template-generation" in labels:
        return _drop_suffix(name), "DaemonSet"
    job = labels.get("batch.kubernetes.io/job-name") or labels.get("job-name")
    if job:
        return workload_of({"name": name, "ownerReferences": [{"kind": "Job", "name": job}]})
    return name, "Pod"


def _container(container: CriContainer, runtime: str) -> ContainerInfo:
    started = container.started_at_ns or container.created_at_ns
    started -= started % 1_000_000_000  # whole seconds, as Kubernetes' containerStatuses startedAt
    return ContainerInfo(
        id=container.id,
        runtime=runtime,
        name=container.name,
        image=container.image,
        image_id=container.image_ref,
        start_time=format_timestamp(started) if started else "",
    )


def pod_from_cri(pod: CriPod, containers: list[CriContainer], runtime: str) -> PodInfo:
    workload, kind = workload_from_labels(pod.name, pod.labels)
    return PodInfo(
        uid=pod.uid,
        name=pod.name,
        namespace=pod.namespace,
        labels=dict(pod.labels),
        annotations=dict(pod.annotations),
        workload=workload,
        workload_kind=kind,
        containers=tuple(_container(c, runtime) for c in containers),
    )


def _with_start_times(cri: CriClient, containers: list[CriContainer], started: dict[str, int]) -> None:
    """Each running container's start (ContainerStatus: ListContainers has only the creation), asked
    once per container; `started` keeps them between relists and forgets the containers gone."""
    for i, container in enumerate(containers):
        if container.running and container.id not in started:
            try:
                started[container.id] = cri.container_status(container.id).started_at_ns
            except grpc.RpcError as err:  # removed meanwhile: the creation time stands in
                log.debug("status of container %s: %s", container.id, err)
                continue
        if container.id in started:
            containers[i] = replace(container, started_at_ns=started[container.id])
    live = {c.id for c in containers}
    for gone in [cid for cid in started if cid not in live]:
        del started[gone]


def pods_from_cri(cri: CriClient, started: dict[str, int] | None = None) -> list[PodInfo]:
    """Every pod the runtime runs, with its containers (`started`: start times known so far)."""
    runtime = cri.runtime_name()
    by_sandbox: dict[str, list[CriContainer]] = {}
    containers = cri.list_containers()
    if started is not None:
        _with_start_times(cri, containers, started)
    for container in containers:
        if container.not_started:
            continue  # its first exec waits until it runs and has its start time (a relist away)
        by_sandbox.setdefault(container.sandbox_id, []).append(container)
    return [pod_from_cri(p, by_sandbox.get(p.sandbox_id, []), runtime) for p in cri.list_pods()]


class CriPodPoller:
    """Refreshes a PodCache from the runtime every `interval` seconds (a relist each time)."""

    def __init__(self, cri: CriClient, cache: PodCache | None = None, interval: float = 5.0) -> None:
        self.cri = cri
        self.cache = cache if cache is not None else PodCache()
        self.interval = interval
        self.synced = threading.Event()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._started: dict[str, int] = {}  # container id -> start (ns), asked once per container
        self._thread: threading.Thread | None = None

    def refresh(self) -> None:
        self.cache.replace(pods_from_cri(self.cri, self._started))
        self.synced.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="cri-pods", daemon=True)
        self._thread.start()

    def poke(self) -> None:
        """Relist now rather than at the next interval (a container nobody knows has shown up)."""
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh()
            except Exception as err:  # runtime restarting: keep what is known, try again
                log.warning("listing pods from %s failed: %s", self.cri.endpoint, err)
            self._wake.wait(self.interval)
            self._wake.clear()
            self._stop.wait(MIN_RELIST_GAP)  # pokes from an exec storm coalesce
