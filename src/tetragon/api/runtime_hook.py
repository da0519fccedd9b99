"""The agent's side of `RuntimeHook` (tetragon-oci-hook): a container announced before it runs.

The runtime runs the hook after the container's cgroup exists and before its process is exec'd, and
waits for it; so the cgroup put in the pod-scoped policies' sets here, before the answer, is filtered
in from the container's first instruction (without the hook, only once the pod source lists the
started container). The pod (namespace, labels) comes from the pod source (API watch or CRI), which
knows the pod before its containers; when it does not yet, it is asked to relist and waited for a
little. The sandbox ("pause") container and containers outside pods have nothing to select them.

Errors answer with a status and one line: INVALID_ARGUMENT (no cgroup or container id),
NOT_FOUND (no such cgroup under the cgroup v2 root), FAILED_PRECONDITION (the pod is unknown).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tetragon.k8s.cgroups import identity_from_cgroup
from tetragon.k8s.podinfo import ContainerInfo, PodInfo
from tetragon.ocihook.annotations import ContainerMeta
from tetragon.ocihook.request import SpecError, cgroup_path

if TYPE_CHECKING:
    import grpc

    from tetragon.api.gen.tetragon import tetragon_pb2
    from tetragon.k8s.policyfilter import PolicyFilter

log = logging.getLogger("tetragon")

POD_WAIT = 3.0  # seconds a hook waits for the pod source to list an unknown pod
_POD_POLL = 0.02


class HookError(Exception):
    """A refusal: `code` names its grpc.StatusCode (grpcio is imported only with gRPC running)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class AnnouncedContainer:
    """A CreateContainer request's container: fields first, the CRI annotations where they are empty."""

    cgroup_path: str
    container_id: str
    container_name: str
    image: str
    runtime: str
    pod_name: str
    pod_namespace: str
    pod_uid: str
    sandbox: bool

    @classmethod
    def of(cls, req: tetragon_pb2.CreateContainer) -> AnnouncedContainer:
        meta = ContainerMeta.of(dict(req.annotations))
        try:
            path = cgroup_path(req.cgroupsPath)
        except SpecError as exc:
            raise HookError("INVALID_ARGUMENT", f"createContainer.cgroupsPath: {exc}") from exc
        if not path:
            raise HookError("INVALID_ARGUMENT", "createContainer.cgroupsPath is empty")
        identity = identity_from_cgroup(path)
        return cls(
            cgroup_path=path,
            container_id=req.containerID or meta.container_id or (identity.id if identity else ""),
            container_name=req.containerName or meta.container_name,
            image=req.containerImage or meta.image,
            runtime=identity.runtime if identity else "",
            pod_name=req.podName or meta.pod_name,
            pod_namespace=req.podNamespace or meta.pod_namespace,
            pod_uid=req.podUID or meta.pod_uid,
            sandbox=meta.sandbox,
        )

    def container(self) -> ContainerInfo:
        return ContainerInfo(self.container_id, self.runtime, self.container_name, self.image, "")


class RuntimeHooks:
    """Answers RuntimeHook for an agent with (or without) the policy filter and a pod source."""

    def __init__(
        self,
        pod_filter: PolicyFilter | None,
        pod_by_uid: Callable[[str], PodInfo | None] | None = None,
        relist: Callable[[], None] | None = None,
        pod_wait: float = POD_WAIT,
    ) -> None:
        self.pod_filter = pod_filter
        self.pod_by_uid = pod_by_uid
        self.relist = relist
        self.pod_wait = pod_wait

    def create_container(self, req: tetragon_pb2.CreateContainer) -> str:
        """Puts the container's cgroup in the policies that select it; returns what was done."""
        announced = AnnouncedContainer.of(req)
        if announced.sandbox:
            return f"sandbox of pod {announced.pod_namespace}/{announced.pod_name}: nothing to filter"
        if self.pod_filter is None:
            return "no policy filter (--enable-policy-filter): nothing to do"
        cgroup_dir, cgroup_id = self._cgroup(announced.cgroup_path)
        if not announced.pod_uid:
            return f"cgroup {announced.cgroup_path} is no pod's container: no pod-scoped policy selects it"
        if not announced.container_id:
            raise HookError(
                "INVALID_ARGUMENT",
                f"no container id in the request, its annotations or cgroup {announced.cgroup_path}",
            )
        pod = self._pod(announced)
        policies = self.pod_filter.add_created_container(pod, announced.container(), cgroup_id, cgroup_dir)
        return (
            f"container {announced.container_name or announced.container_id} of pod "
            f"{pod.namespace}/{pod.name}: cgroup {cgroup_id} in {len(policies)} policies"
        )

    def _cgroup(self, path: str) -> tuple[str, int]:
        assert self.pod_filter is not None
        root = self.pod_filter.cgroup_root
        if not root:
            raise HookError("FAILED_PRECONDITION", "no cgroup v2 hierarchy mounted")
        directory = os.path.normpath(os.path.join(root, path.lstrip("/")))
        if directory != root and not directory.startswith(root.rstrip("/") + "/"):
            raise HookError("INVALID_ARGUMENT", f"cgroupsPath {path!r} leaves the cgroup root")
        try:
            return directory, os.stat(directory).st_ino
        except OSError as exc:
            raise HookError(
                "NOT_FOUND",
                f"cgroup {path}: {exc.strerror} under {root} (the hook must run at createRuntime, "
                "once the runtime has made the cgroup, on a cgroup v2 host)",
            ) from exc

    def _pod(self, announced: AnnouncedContainer) -> PodInfo:
        where = f"pod {announced.pod_namespace}/{announced.pod_name} (uid {announced.pod_uid})"
        if self.pod_by_uid is None:
            raise HookError("FAILED_PRECONDITION", f"{where}: the agent has no pod source")
        pod = self.pod_by_uid(announced.pod_uid)
        deadline = time.monotonic() + self.pod_wait
        if pod is None and self.relist is not None:
            self.relist()
        while pod is None and time.monotonic() < deadline:
            time.sleep(_POD_POLL)
            pod = self.pod_by_uid(announced.pod_uid)
        if pod is None:
            raise HookError(
                "FAILED_PRECONDITION",
                f"{where} is not known to the agent after {self.pod_wait:g}s: the container is covered "
                "once the pod source lists it",
            )
        return pod


def runtime_hook(
    hooks: RuntimeHooks | None, request: tetragon_pb2.RuntimeHookRequest, context: grpc.ServicerContext
) -> Any:
    """The RPC: the answer is sent only once the container is in the filters (or an error status)."""
    import grpc

    from tetragon.api.gen.tetragon import tetragon_pb2

    if request.WhichOneof("event") != "createContainer":
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, "RuntimeHookRequest: no createContainer event")
    if hooks is None:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "runtime hooks are not wired in this server")
    started = time.monotonic()
    try:
        done = hooks.create_container(request.createContainer)
    except HookError as exc:
        log.warning("runtime hook refused: %s", exc)
        context.abort(grpc.StatusCode[exc.code], str(exc))
    log.info("runtime hook: %s (%.0f ms)", done, (time.monotonic() - started) * 1000)
    return tetragon_pb2.RuntimeHookResponse()
