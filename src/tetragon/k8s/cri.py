"""A client of the node's container runtime over the Kubernetes CRI API (runtime.v1 RuntimeService).

With Tetragon's `--enable-cri --cri-endpoint unix://...` the agent learns pods from the runtime itself:
a node whose API server is unreachable still names its pods. ListPodSandbox gives the pods (name,
namespace, uid, labels), ListContainers/ContainerStatus the containers and the sandbox each belongs to;
`pod_of_container` joins them by container id (full id, or the 31-character prefix of Tetragon's
`docker` field).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import grpc

from tetragon.k8s.gen.cri import api_pb2, api_pb2_grpc

# Labels the kubelet adds to sandboxes and containers for itself; they are not the pod's labels.
_KUBELET_LABEL_PREFIXES = ("io.kubernetes.pod.", "io.kubernetes.container.")


def grpc_target(endpoint: str) -> str:
    """A gRPC target from Tetragon's --cri-endpoint spelling (`unix:///run/...` or a bare socket path)."""
    if endpoint.startswith("/"):
        return f"unix://{endpoint}"
    return endpoint


def _user_labels(labels: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in labels.items() if not k.startswith(_KUBELET_LABEL_PREFIXES)}


@dataclass(frozen=True, slots=True)
class CriPod:
    """One pod sandbox as the runtime knows it."""

    sandbox_id: str
    name: str
    namespace: str
    uid: str
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    ready: bool = True


@dataclass(frozen=True, slots=True)
class CriContainer:
    """One container; `pid` (host pid of its first process) only from container_status."""

    id: str
    name: str
    sandbox_id: str
    image: str
    image_ref: str
    created_at_ns: int
    running: bool
    pid: int = 0
    started_at_ns: int = 0
    not_started: bool = False  # created, StartContainer not done yet: no start time to report


@dataclass(frozen=True, slots=True)
class ContainerPod:
    """A container with its pod and the runtime that runs it (`containerd`, `cri-o`, ...)."""

    container: CriContainer
    pod: CriPod
    runtime_name: str

    @property
    def container_id(self) -> str:
        """`pod.container.id` as Kubernetes reports it: `<runtime>://<id>`."""
        return f"{self.runtime_name}://{self.container.id}"


def _verbose_info(text: str) -> dict[str, object]:
    """The runtime's verbose ContainerStatus info (containerd: JSON with `pid`, `sandboxID`, ...)."""
    try:
        info = json.loads(text) if text else {}
    except ValueError:
        return {}
    return info if isinstance(info, dict) else {}


def _int(value: object) -> int:
    return value if isinstance(value, int) else 0


def _pod(item: api_pb2.PodSandbox) -> CriPod:
    return CriPod(
        sandbox_id=item.id,
        name=item.metadata.name,
        namespace=item.metadata.namespace,
        uid=item.metadata.uid,
        labels=_user_labels(dict(item.labels)),
        annotations=dict(item.annotations),
        ready=item.state == api_pb2.SANDBOX_READY,
    )


def _container(item: api_pb2.Container) -> CriContainer:
    return CriContainer(
        id=item.id,
        name=item.metadata.name,
        sandbox_id=item.pod_sandbox_id,
        image=item.image.image,
        image_ref=item.image_ref,
        created_at_ns=item.created_at,
        running=item.state == api_pb2.CONTAINER_RUNNING,
        not_started=item.state == api_pb2.CONTAINER_CREATED,
    )


class CriClient:
    """Blocking CRI RuntimeService client; one gRPC channel per instance."""

    def __init__(self, endpoint: str, timeout: float = 5.0) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self._channel = grpc.insecure_channel(grpc_target(endpoint))
        self._stub = api_pb2_grpc.RuntimeServiceStub(self._channel)
        self._runtime_name = ""

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> CriClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def stub(self) -> api_pb2_grpc.RuntimeServiceStub:
        """The raw RuntimeService stub, for calls this class has no method for."""
        return self._stub

    def runtime_name(self) -> str:
        """The runtime's name from Version (`containerd`, `cri-o`), the prefix of container ids."""
        if not self._runtime_name:
            reply = self._stub.Version(api_pb2.VersionRequest(version="v1"), timeout=self.timeout)
            self._runtime_name = reply.runtime_name
        return self._runtime_name

    def list_pods(self) -> list[CriPod]:
        reply = self._stub.ListPodSandbox(api_pb2.ListPodSandboxRequest(), timeout=self.timeout)
        return [_pod(item) for item in reply.items]

    def list_containers(self) -> list[CriContainer]:
        reply = self._stub.ListContainers(api_pb2.ListContainersRequest(), timeout=self.timeout)
        return [_container(item) for item in reply.containers]

    def container_status(self, container_id: str) -> CriContainer:
        """Status of one container, with its host pid from the runtime's verbose info when it has one."""
        request = api_pb2.ContainerStatusRequest(container_id=container_id, verbose=True)
        reply = self._stub.ContainerStatus(request, timeout=self.timeout)
        status = reply.status
        info = _verbose_info(reply.info.get("info", ""))
        return CriContainer(
            id=status.id,
            name=status.metadata.name,
            sandbox_id=str(info.get("sandboxID", "")),
            image=status.image.image,
            image_ref=status.image_ref,
            created_at_ns=status.created_at,
            running=status.state == api_pb2.CONTAINER_RUNNING,
            pid=_int(info.get("pid")),
            started_at_ns=status.started_at,
        )

    def pod_of_container(self, container_id: str) -> ContainerPod | None:
        """The pod of a container, by full id or by an id prefix (Tetragon's 31-character `docker`)."""
        if not container_id:
            return None
        container = next((c for c in self.list_containers() if c.id.startswith(container_id)), None)
        if container is None:
            return None
        pods = {p.sandbox_id: p for p in self.list_pods()}
        pod = pods.get(container.sandbox_id)
        if pod is None:
            return None
        return ContainerPod(container, pod, self.runtime_name())

    def all_container_pods(self) -> list[ContainerPod]:
        """Every container the runtime has, each with its pod (containers of unknown sandboxes left out)."""
        pods = {p.sandbox_id: p for p in self.list_pods()}
        runtime = self.runtime_name()
        containers = self.list_containers()
        return [ContainerPod(c, pods[c.sandbox_id], runtime) for c in containers if c.sandbox_id in pods]
