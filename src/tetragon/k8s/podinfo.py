"""What the agent knows about a pod, built from the Kubernetes API's Pod JSON (or from CRI).

Field names follow Tetragon's `Pod`/`Container`/`Image` messages: `pod_json` gives the `pod` object
an event carries for a process in one of the pod's containers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from tetragon.k8s.cgroups import DOCKER_FIELD_LENGTH
from tetragon.process.model import quote_arguments

# A ReplicaSet named by its Deployment ("<deployment>-<pod-template-hash>"); a Job by its CronJob
# ("<cronjob>-<scheduled minutes>").
_CRONJOB_JOB = re.compile(r"^(.+)-\d{8,}$")


@dataclass(frozen=True, slots=True)
class ContainerInfo:
    """One container of a pod; `id` is the bare runtime id, `runtime` its prefix (`containerd`)."""

    id: str
    runtime: str
    name: str
    image: str
    image_id: str
    start_time: str = ""
    init: bool = False
    # the container's liveness/readiness exec probe commands (API pods only: CRI does not have them)
    exec_probes: tuple[tuple[str, ...], ...] = ()

    def maybe_exec_probe(self, binary: str, arguments: str) -> bool:
        """Whether a process (binary, Tetragon's quoted arguments) looks like one of the exec probes."""
        for command in self.exec_probes:
            first = command[0]
            if (binary == first or ("/" not in first and binary.rsplit("/", 1)[-1] == first)) and (
                arguments == quote_arguments(list(command[1:]))
            ):
                return True
        return False

    @property
    def full_id(self) -> str:
        """As Kubernetes reports it in containerStatuses: `containerd://<id>`."""
        return f"{self.runtime}://{self.id}" if self.runtime else self.id


@dataclass(frozen=True, slots=True)
class PodInfo:
    uid: str
    name: str
    namespace: str
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    workload: str = ""
    workload_kind: str = ""
    node_name: str = ""
    resource_version: str = ""
    containers: tuple[ContainerInfo, ...] = ()

    def container(self, container_id: str) -> ContainerInfo | None:
        """The container with this id, or whose id starts with it (Tetragon's 31-character `docker`)."""
        if not container_id:
            return None
        return next((c for c in self.containers if c.id.startswith(container_id)), None)

    def pod_json(
        self, container_id: str = "", pid: int | None = None, binary: str = "", arguments: str = ""
    ) -> dict[str, Any]:
        """The event's `pod` object (Tetragon's field names) for a process in one of the containers;
        `binary`/`arguments` are the process's, to tell an exec probe (`maybe_exec_probe`)."""
        out: dict[str, Any] = {"namespace": self.namespace, "name": self.name, "uid": self.uid}
        container = self.container(container_id)
        if container is not None:
            info: dict[str, Any] = {
                "id": container.full_id,
                "name": container.name,
                "image": {"id": container.image_id, "name": container.image},
            }
            if container.start_time:
                info["start_time"] = container.start_time
            if pid is not None:
                info["pid"] = pid
            if binary and container.maybe_exec_probe(binary, arguments):
                info["maybe_exec_probe"] = True
            out["container"] = info
        if self.labels:
            out["pod_labels"] = dict(self.labels)
        out["workload"] = self.workload
        out["workload_kind"] = self.workload_kind
        return out


def split_container_id(container_id: str) -> tuple[str, str]:
    """(`containerd`, `<id>`) of a containerStatuses id `containerd://<id>`; ("", "") when not set."""
    runtime, sep, bare = container_id.partition("://")
    return (runtime, bare) if sep else ("", "")


def workload_of(meta: dict[str, Any]) -> tuple[str, str]:
    """(workload, kind) of a pod from its controller owner, with Deployment/CronJob resolved by name."""
    owners = meta.get("ownerReferences") or []
    owner = next((o for o in owners if o.get("controller")), owners[0] if owners else None)
    if owner is None:
        return meta.get("name", ""), "Pod"
    kind, name = owner.get("kind", ""), owner.get("name", "")
    template_hash = (meta.get("labels") or {}).get("pod-template-hash", "")
    if kind == "ReplicaSet" and template_hash and name.endswith("-" + template_hash):
        return name[: -len(template_hash) - 1], "Deployment"
    match = _CRONJOB_JOB.match(name)
    if kind == "Job" and match:
        return match.group(1), "CronJob"
    return name, kind


def _exec_probes(spec: dict[str, Any]) -> tuple[tuple[str, ...], ...]:
    """The liveness and readiness exec commands of one container spec (Tetragon's getProbes)."""
    out = []
    for kind in ("livenessProbe", "readinessProbe"):
        command = ((spec.get(kind) or {}).get("exec") or {}).get("command") or []
        if command:
            out.append(tuple(str(word) for word in command))
    return tuple(out)


def _containers(
    statuses: list[dict[str, Any]], init: bool, specs: dict[str, dict[str, Any]] | None = None
) -> list[ContainerInfo]:
    out = []
    for status in statuses:
        runtime, bare = split_container_id(status.get("containerID", ""))
        if not bare:
            continue  # not started yet: no id to match events with
        running = (status.get("state") or {}).get("running") or {}
        out.append(
            ContainerInfo(
                id=bare,
                runtime=runtime,
                name=status.get("name", ""),
                image=status.get("image", ""),
                image_id=status.get("imageID", ""),
                start_time=running.get("startedAt", ""),
                init=init,
                exec_probes=_exec_probes((specs or {}).get(status.get("name", ""), {})),
            )
        )
    return out


def pod_from_json(obj: dict[str, Any]) -> PodInfo:
    """A PodInfo from a Pod object as the API server sends it (list item or watch event object)."""
    meta = obj.get("metadata") or {}
    status = obj.get("status") or {}
    workload, kind = workload_of(meta)
    specs = {c.get("name", ""): c for c in (obj.get("spec") or {}).get("containers") or []}
    containers = (
        _containers(status.get("initContainerStatuses") or [], init=True)
        + _containers(status.get("containerStatuses") or [], init=False, specs=specs)
        + _containers(status.get("ephemeralContainerStatuses") or [], init=False)
    )
    return PodInfo(
        uid=meta.get("uid", ""),
        name=meta.get("name", ""),
        namespace=meta.get("namespace", ""),
        labels=dict(meta.get("labels") or {}),
        annotations=dict(meta.get("annotations") or {}),
        workload=workload,
        workload_kind=kind,
        node_name=(obj.get("spec") or {}).get("nodeName", ""),
        resource_version=meta.get("resourceVersion", ""),
        containers=tuple(containers),
    )


def container_key(container_id: str) -> str:
    """The cache key of a container id: its first 31 characters, all that the `docker` field keeps."""
    return container_id[:DOCKER_FIELD_LENGTH]
