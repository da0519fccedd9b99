"""What a container's OCI annotations say about it: the keys containerd's CRI plugin and CRI-O set.

containerd (pkg/cri/annotations) sets `io.kubernetes.cri.*` on every container it creates for the
kubelet; CRI-O sets `io.kubernetes.pod.*`, `io.kubernetes.container.name` and `io.kubernetes.cri-o.*`.
A container outside Kubernetes (`ctr run`, plain runc) has none of them. Both runtimes also create the
pod's sandbox ("pause") container, marked by its container type: it runs no workload.
"""

from __future__ import annotations

from dataclasses import dataclass

CONTAINERD_CONTAINER_TYPE = "io.kubernetes.cri.container-type"
CONTAINERD_CONTAINER_NAME = "io.kubernetes.cri.container-name"
CONTAINERD_IMAGE_NAME = "io.kubernetes.cri.image-name"
CONTAINERD_SANDBOX_ID = "io.kubernetes.cri.sandbox-id"
CONTAINERD_SANDBOX_NAME = "io.kubernetes.cri.sandbox-name"
CONTAINERD_SANDBOX_NAMESPACE = "io.kubernetes.cri.sandbox-namespace"
CONTAINERD_SANDBOX_UID = "io.kubernetes.cri.sandbox-uid"

CRIO_CONTAINER_TYPE = "io.kubernetes.cri-o.ContainerType"
CRIO_CONTAINER_ID = "io.kubernetes.cri-o.ContainerID"
CRIO_IMAGE_NAME = "io.kubernetes.cri-o.ImageName"
CRIO_SANDBOX_ID = "io.kubernetes.cri-o.SandboxID"
CRIO_CONTAINER_NAME = "io.kubernetes.container.name"
CRIO_POD_NAME = "io.kubernetes.pod.name"
CRIO_POD_NAMESPACE = "io.kubernetes.pod.namespace"
CRIO_POD_UID = "io.kubernetes.pod.uid"

SANDBOX_TYPE = "sandbox"
# Tetragon's --annotations-namespace-key default: where the pod's namespace is (CRI-O's, containerd's)
NAMESPACE_KEYS = (CRIO_POD_NAMESPACE, CONTAINERD_SANDBOX_NAMESPACE)


def _first(annotations: dict[str, str], *keys: str) -> str:
    return next((annotations[k] for k in keys if annotations.get(k)), "")


@dataclass(frozen=True, slots=True)
class ContainerMeta:
    """A container as its annotations describe it ("" where they do not say)."""

    container_id: str = ""  # CRI-O only: containerd's id is the OCI state's `id`
    container_name: str = ""
    image: str = ""
    pod_name: str = ""
    pod_namespace: str = ""
    pod_uid: str = ""
    sandbox_id: str = ""
    sandbox: bool = False  # the pod's pause container

    @classmethod
    def of(cls, annotations: dict[str, str]) -> ContainerMeta:
        return cls(
            container_id=_first(annotations, CRIO_CONTAINER_ID),
            container_name=_first(annotations, CONTAINERD_CONTAINER_NAME, CRIO_CONTAINER_NAME),
            image=_first(annotations, CONTAINERD_IMAGE_NAME, CRIO_IMAGE_NAME),
            pod_name=_first(annotations, CONTAINERD_SANDBOX_NAME, CRIO_POD_NAME),
            pod_namespace=_first(annotations, CONTAINERD_SANDBOX_NAMESPACE, CRIO_POD_NAMESPACE),
            pod_uid=_first(annotations, CONTAINERD_SANDBOX_UID, CRIO_POD_UID),
            sandbox_id=_first(annotations, CONTAINERD_SANDBOX_ID, CRIO_SANDBOX_ID),
            sandbox=_first(annotations, CONTAINERD_CONTAINER_TYPE, CRIO_CONTAINER_TYPE) == SANDBOX_TYPE,
        )


def pod_namespace(annotations: dict[str, str], keys: tuple[str, ...] = NAMESPACE_KEYS) -> str | None:
    """The pod's namespace under the first of `keys` present (None: not a pod's container)."""
    return next((annotations[k] for k in keys if k in annotations), None)
