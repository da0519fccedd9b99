"""Container identity from a cgroup path: which container (and pod) a process runs in.

Every runtime names its cgroups differently; this module knows the layouts users have:

- Kubernetes, systemd cgroup driver: ``/kubepods.slice/kubepods-besteffort.slice/
  kubepods-besteffort-pod<uid_with_underscores>.slice/cri-containerd-<id>.scope`` (``crio-<id>.scope``,
  ``docker-<id>.scope`` for the other runtimes; kind adds a ``kubelet.slice`` parent).
- Kubernetes, cgroupfs driver: ``/kubepods/besteffort/pod<uid>/<id>`` (the runtime is not in the path).
- containerd without Kubernetes (``ctr run``): ``/<containerd namespace>/<id>``, e.g. ``/default/c1``.
- Docker: ``/docker/<id>`` (cgroupfs) or ``/system.slice/docker-<id>.scope`` (systemd).
- Podman: ``/machine.slice/libpod-<id>.scope`` (possibly with a ``/container`` child),
  ``libpod-conmon-<id>.scope`` for its monitor, ``/libpod_parent/libpod-<id>`` (cgroupfs).
- systemd services and sessions (``/system.slice/sshd.service``, ``/init.scope``): no container.

Paths may come as cgroup v2 paths, as /proc/<pid>/cgroup lines of either version (``0::/...``,
``4:memory:/...``) or as the leaf name alone (what the BPF exec record carries); the pod uid is only
found when the parent directories are there.

Tetragon's ``docker`` field is the first 31 characters of an id that is at least 64 characters long
(shorter names such as ``c1`` are not taken for container ids); ``pod.container.id`` is the id with the
runtime prefix Kubernetes uses in ``containerStatuses[].containerID`` (``containerd://<64 hex>``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Tetragon: an id is a container id when at least this long; `docker` keeps the first 31 characters.
FULL_ID_LENGTH = 64
DOCKER_FIELD_LENGTH = 31

# Scope/directory prefix -> runtime name as Kubernetes spells it in containerID ("<runtime>://<id>").
_PREFIX_RUNTIME = {
    "cri-containerd": "containerd",
    "nerdctl": "containerd",
    "crio": "cri-o",
    "docker": "docker",
    "libpod": "podman",
}
_MONITOR_PREFIXES = {"crio-conmon": "cri-o", "libpod-conmon": "podman"}
# Parent directories that name the runtime of a bare "<id>" child (cgroupfs layouts).
_PARENT_RUNTIME = {"docker": "docker", "libpod_parent": "podman"}
_SYSTEMD_SUFFIXES = (".slice", ".scope", ".service", ".mount", ".socket", ".swap")
# containerd namespaces whose `/<namespace>/<name>` cgroups are taken for containers: any two-level
# path would match the shape, and other tools' groups (e.g. `/lxc/<name>`) must not.
CONTAINERD_NAMESPACES = frozenset({"default", "k8s.io", "moby", "buildkit"})

_HEX_ID = re.compile(r"[0-9a-f]{64}")
# pod<uid>: 36 characters with '-' (cgroupfs) or '_' (systemd), or a 32-hex static-pod hash.
_POD_UID = re.compile(
    r"pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}|[0-9a-f]{32})"
)
_PROC_LINE = re.compile(r"^\d+:[^:]*:(/.*)$")


@dataclass(frozen=True, slots=True)
class ContainerIdentity:
    """The container a cgroup belongs to.

    ``runtime`` is ``containerd``, ``cri-o``, ``docker``, ``podman`` or ``""`` when the layout does not
    say (Kubernetes' cgroupfs driver); ``monitor`` marks the runtime's per-container monitor (conmon),
    which runs in the pod but not in the container.
    """

    id: str
    runtime: str = ""
    pod_uid: str = ""
    monitor: bool = False

    @property
    def docker(self) -> str:
        """Tetragon's process ``docker`` field: 31 characters of a full-length id, else empty."""
        return self.id[:DOCKER_FIELD_LENGTH] if len(self.id) >= FULL_ID_LENGTH else ""

    @property
    def container_id(self) -> str:
        """``pod.container.id`` as Kubernetes reports it (``containerd://<id>``); bare id if unknown."""
        return f"{self.runtime}://{self.id}" if self.runtime else self.id


def _strip_proc_prefix(path: str) -> str:
    match = _PROC_LINE.match(path.strip())
    return match.group(1) if match else path.strip()


def _pod_uid(parts: list[str]) -> str:
    for part in reversed(parts):
        match = _POD_UID.search(part)
        if match and (part.startswith("pod") or "-pod" in part):
            return match.group(1).replace("_", "-")
    return ""


def _split_leaf(leaf: str) -> tuple[str, str, bool]:
    """(prefix, id, monitor) of one cgroup directory name; prefix "" for a bare id."""
    # runc's systemd-style cgroupsPath "slice:prefix:id" can appear verbatim as a directory name.
    fields = leaf.split(":")
    if len(fields) == 3:
        return fields[1], fields[2], False
    name = leaf.removesuffix(".scope")
    for prefix in _MONITOR_PREFIXES:
        if name.startswith(prefix + "-"):
            return prefix, name[len(prefix) + 1 :], True
    for prefix in _PREFIX_RUNTIME:
        if name.startswith(prefix + "-"):
            return prefix, name[len(prefix) + 1 :], False
    return "", name, False


def identity_from_cgroup(
    path: str, containerd_namespaces: frozenset[str] = CONTAINERD_NAMESPACES
) -> ContainerIdentity | None:
    """The container of a cgroup path (v1/v2 path, /proc/<pid>/cgroup line or leaf name), or None."""
    parts = [p for p in _strip_proc_prefix(path).split("/") if p]
    # Podman may put the container's processes in a "container" child of its scope.
    if len(parts) > 1 and parts[-1] == "container" and parts[-2].startswith("libpod-"):
        parts = parts[:-1]
    if not parts:
        return None
    prefix, cid, monitor = _split_leaf(parts[-1])
    # the "slice:prefix:id" form carries the pod's slice in the leaf itself
    pod_uid = _pod_uid([*parts[:-1], parts[-1].split(":")[0]] if ":" in parts[-1] else parts[:-1])
    if prefix:
        runtime = _MONITOR_PREFIXES.get(prefix) or _PREFIX_RUNTIME.get(prefix, "")
        if not cid or cid.endswith(_SYSTEMD_SUFFIXES):
            return None
        return ContainerIdentity(cid, runtime, pod_uid, monitor)
    if parts[-1].endswith(_SYSTEMD_SUFFIXES):
        return None
    # `ctr run` without Kubernetes: /<containerd namespace>/<container name>.
    if len(parts) == 2 and parts[0] in containerd_namespaces:
        return ContainerIdentity(cid, "containerd")
    if _HEX_ID.fullmatch(cid):
        parent = parts[-2] if len(parts) > 1 else ""
        return ContainerIdentity(cid, _PARENT_RUNTIME.get(parent, ""), pod_uid)
    return None


def identity_from_proc_cgroup(text: str) -> ContainerIdentity | None:
    """The container of a process from its whole /proc/<pid>/cgroup file (any line that names one)."""
    lines = [line for line in text.splitlines() if line.strip()]
    # The unified (v2) line first, then the v1 controllers in file order.
    lines.sort(key=lambda line: not line.startswith("0::"))
    for line in lines:
        identity = identity_from_cgroup(line)
        if identity is not None:
            return identity
    return None
