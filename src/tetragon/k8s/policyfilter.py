"""The policy filter: policies scoped to pods, enforced in the kernel by cgroup id.

A TracingPolicyNamespaced applies to the containers of the pods of its namespace; `podSelector`
(over the pod's labels) and `containerSelector` (over the container's `name` and image `repo`) narrow
any policy further. Host processes match such a policy only when it also has `hostSelector: {}`
(Tetragon's matrix: the selected containers plus every process outside pods). Each scoped policy's
BPF objects share a `policy_cgroups` set (bpf/include/generic/podfilter.h); `PolicyFilter` keeps it
equal to the cgroup ids (inode numbers in the cgroup v2 hierarchy, what bpf_get_current_cgroup_id
returns) of the selected containers and their sub-cgroups, recomputed whenever the pod cache
changes. For a hostSelector policy the set also marks what is *not* outside pods (POD_FILTER_IN_POD):
the cgroups of every other known pod container and the kubelet's pod root cgroups, below which any
pod not known yet lives. The kernel runs the hook for a task whose nearest marked cgroup (its own or
an ancestor) is selected, or none of whose cgroups up to the root is marked.

A container is found in the cgroup tree by its id in the directory name (k8s.cgroups knows the
runtimes' layouts), so the same code serves pods from the API server and from CRI.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from tetragon.abi.podfilter_h import POD_FILTER_IN_POD
from tetragon.k8s.cgroups import identity_from_cgroup
from tetragon.k8s.podinfo import ContainerInfo, PodInfo
from tetragon.policy.errors import PolicyError

if TYPE_CHECKING:
    from tetragon.policy.schema import LabelSelector, TracingPolicy

log = logging.getLogger("tetragon")

_KEY = struct.Struct("<Q")  # a cgroup v2 id
_FILTER_ID = struct.Struct("<I")  # the value: the policy's filter id (tetra debug dump policyfilter)

# The cgroups the kubelet puts every pod under (cgroupfs driver, systemd driver, kind's nesting).
KUBEPODS_ROOTS = ("kubepods", "kubepods.slice", "kubelet.slice/kubelet-kubepods.slice")


class CgroupSet(Protocol):
    """The policy's `policy_cgroups` map (a libbpf Map)."""

    def update(self, key: bytes, value: bytes) -> None: ...

    def delete(self, key: bytes) -> bool: ...


def needs_pod_filter(policy: TracingPolicy) -> bool:
    sp = policy.spec
    return policy.namespaced or sp.pod_selector is not None or sp.container_selector is not None


def check_pod_scope(policy: TracingPolicy, pod_filter: PolicyFilter | None) -> None:
    """A policy scoped to pods is refused, in one line, by an agent that cannot scope it."""
    if not needs_pod_filter(policy):
        return
    # every refusal starts with the field path that makes the policy pod-scoped
    where = (
        "kind"
        if policy.namespaced
        else "spec.podSelector"
        if policy.spec.pod_selector is not None
        else "spec.containerSelector"
    )
    if pod_filter is None:
        raise PolicyError(
            "kind: TracingPolicyNamespaced needs the policy filter (--enable-policy-filter) and Kubernetes "
            "pod information (--enable-k8s-api or --enable-cri), which this agent was started without"
            if policy.namespaced
            else f"{where}: podSelector/containerSelector need Kubernetes pod information and the policy "
            "filter (--enable-policy-filter with --enable-k8s-api or --enable-cri), which this agent was "
            "started without",
            kind="unsupported",
        )
    if not pod_filter.cgroup_root:
        raise PolicyError(
            f"{where}: pod-scoped policies need a cgroup v2 hierarchy (no cgroup2 mount): the kernel names a "
            "task's cgroup by its v2 id",
            kind="unsupported",
        )


def selector_matches(selector: LabelSelector, labels: dict[str, str]) -> bool:
    """Kubernetes label-selector semantics: every matchLabels pair and every expression holds."""
    for key, value in selector.match_labels.items():
        if labels.get(key) != value:
            return False
    for expr in selector.match_expressions:
        present = expr.key in labels
        if expr.operator == "In" and not (present and labels[expr.key] in expr.values):
            return False
        if expr.operator == "NotIn" and present and labels[expr.key] in expr.values:
            return False
        if expr.operator == "Exists" and not present:
            return False
        if expr.operator == "DoesNotExist" and present:
            return False
    return True


def image_repo(image: str) -> str:
    """`registry/path` of `registry/path:tag` or `registry/path@sha256:...` (a port is kept)."""
    name = image.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > slash else name


@dataclass(frozen=True, slots=True)
class PodScope:
    """Which containers a policy runs for."""

    namespace: str = ""  # a TracingPolicyNamespaced's namespace; "" for a cluster-wide policy
    pod_selector: LabelSelector | None = None
    container_selector: LabelSelector | None = None
    host: bool = False  # hostSelector: {}: also every process outside pods

    @classmethod
    def of(cls, policy: TracingPolicy) -> PodScope:
        sp = policy.spec
        namespace = policy.namespace if policy.namespaced else ""
        # validation leaves hostSelector null or {}, and null in a TracingPolicyNamespaced
        return cls(namespace, sp.pod_selector, sp.container_selector, sp.host_selector is not None)

    def selects(self, pod: PodInfo, container: ContainerInfo) -> bool:
        if self.namespace and pod.namespace != self.namespace:
            return False
        if self.pod_selector is not None and not selector_matches(self.pod_selector, pod.labels):
            return False
        if self.container_selector is not None:
            labels = {"name": container.name, "repo": image_repo(container.image)}
            if not selector_matches(self.container_selector, labels):
                return False
        return True


@dataclass
class _Scoped:
    scope: PodScope
    cgroups: CgroupSet
    marks: dict[int, int] = field(default_factory=dict)  # cgroup id -> filter id or POD_FILTER_IN_POD

    def write(self, want: dict[int, int]) -> None:
        for cgid, mark in want.items():
            if self.marks.get(cgid) != mark:
                self.cgroups.update(_KEY.pack(cgid), _FILTER_ID.pack(mark))
        for cgid in self.marks.keys() - want.keys():
            self.cgroups.delete(_KEY.pack(cgid))
        self.marks = want

    def mark(self, cgid: int, mark: int) -> None:
        if self.marks.get(cgid) != mark:
            self.cgroups.update(_KEY.pack(cgid), _FILTER_ID.pack(mark))
            self.marks[cgid] = mark

    @property
    def ids(self) -> set[int]:
        """The selected cgroups (what `tetra debug dump policyfilter` shows)."""
        return {cgid for cgid, mark in self.marks.items() if mark != POD_FILTER_IN_POD}


@dataclass(frozen=True)
class _Created:
    """A container the runtime announced (OCI hook) before the pod source lists it."""

    pod: PodInfo
    container: ContainerInfo
    cgroup_id: int
    cgroup_dir: str


def cgroup2_root(mounts: str = "/proc/self/mounts") -> str:
    """Where the cgroup v2 hierarchy is mounted ("" when it is not)."""
    try:
        with open(mounts) as f:
            for line in f:
                fields = line.split()
                if len(fields) > 2 and fields[2] == "cgroup2":
                    return fields[1]
    except OSError:
        pass
    return ""


def container_cgroups(root: str) -> dict[str, set[int]]:
    """Container id -> cgroup ids of its cgroup and every cgroup below it, from the v2 tree."""
    out: dict[str, set[int]] = {}
    owner: dict[str, str] = {}  # directory -> container id, for the sub-cgroups of a container
    for dirpath, _dirs, _files in os.walk(root):
        container = owner.get(os.path.dirname(dirpath), "")
        if not container:
            identity = identity_from_cgroup(dirpath[len(root) :] or "/")
            container = identity.id if identity is not None and not identity.monitor else ""
        if not container:
            continue
        owner[dirpath] = container
        try:
            out.setdefault(container, set()).add(os.stat(dirpath).st_ino)
        except OSError:  # removed while walking
            continue
    return out


def kubepods_cgroups(root: str) -> set[int]:
    """The cgroup ids of the kubelet's pod roots that exist under `root` (none without a kubelet)."""
    out = set()
    for rel in KUBEPODS_ROOTS:
        try:
            out.add(os.stat(os.path.join(root, rel)).st_ino)
        except OSError:
            continue
    return out


class PolicyFilter:
    """The scoped policies' cgroup sets, kept current with `pods()` (call `refresh` on changes)."""

    def __init__(
        self, pods: Callable[[], list[PodInfo]], cgroup_root: str | None = None, debug: bool = False
    ) -> None:
        self.pods = pods
        # --enable-policy-filter-debug: every change of a policy's cgroup set at INFO, not DEBUG
        self._change_level = logging.INFO if debug else logging.DEBUG
        self.cgroup_root = cgroup2_root() if cgroup_root is None else cgroup_root
        self._lock = threading.Lock()
        self._policies: dict[int, _Scoped] = {}
        self._created: dict[str, _Created] = {}  # container id -> announced, not listed yet

    def attach(self, policy_id: int, scope: PodScope, cgroups: CgroupSet) -> None:
        """A scoped policy's set, filled now with the containers it selects."""
        with self._lock:
            self._policies[policy_id] = _Scoped(scope, cgroups)
            self._sync(container_cgroups(self.cgroup_root))

    def detach(self, policy_id: int) -> None:
        """Before the policy's objects close: its set is not written any more."""
        with self._lock:
            self._policies.pop(policy_id, None)

    def refresh(self) -> None:
        with self._lock:
            if self._policies:
                self._sync(container_cgroups(self.cgroup_root))

    def cgroup_ids(self, policy_id: int) -> set[int]:
        with self._lock:
            scoped = self._policies.get(policy_id)
            return set(scoped.ids) if scoped is not None else set()

    def add_created_container(
        self, pod: PodInfo, container: ContainerInfo, cgroup_id: int, cgroup_dir: str
    ) -> list[int]:
        """A container being created (the OCI hook, before its first instruction): its cgroup joins
        the sets of the policies that select it now, and stays there until the pod source lists the
        container (then it is found by the tree walk) or the cgroup is gone. Returns those policies."""
        with self._lock:
            self._created[container.id] = _Created(pod, container, cgroup_id, cgroup_dir)
            self._created_now(self.pods())
            selected = []
            for policy_id, scoped in self._policies.items():
                chosen = scoped.scope.selects(pod, container)
                if chosen or scoped.scope.host:  # a hostSelector policy marks the others as in a pod
                    mark = policy_id if chosen else POD_FILTER_IN_POD
                    scoped.mark(cgroup_id, mark)
                if chosen:
                    selected.append(policy_id)
            return selected

    def _created_now(self, pods: list[PodInfo]) -> list[_Created]:
        """The announced containers still waiting for the pod source, each with its pod as the pod
        source knows it by now (labels may have changed); the others are forgotten."""
        listed = {c.id for pod in pods for c in pod.containers}
        by_uid = {pod.uid: pod for pod in pods}
        waiting = []
        for cid, created in list(self._created.items()):
            if cid in listed or not os.path.isdir(created.cgroup_dir):
                del self._created[cid]
            else:
                pod = by_uid.get(created.pod.uid, created.pod)
                waiting.append(_Created(pod, created.container, created.cgroup_id, created.cgroup_dir))
        return waiting

    def _sync(self, by_container: dict[str, set[int]]) -> None:
        pods = self.pods()
        created = self._created_now(pods)
        in_pods: set[int] = set()  # every known pod container's cgroups and the pod roots
        if any(scoped.scope.host for scoped in self._policies.values()):
            in_pods = {c.cgroup_id for c in created} | kubepods_cgroups(self.cgroup_root)
            for pod in pods:
                for container in pod.containers:
                    in_pods |= by_container.get(container.id, set())
        for policy_id, scoped in self._policies.items():
            want = {c.cgroup_id for c in created if scoped.scope.selects(c.pod, c.container)}
            for pod in pods:
                for container in pod.containers:
                    if scoped.scope.selects(pod, container):
                        want |= by_container.get(container.id, set())
            marks = dict.fromkeys(in_pods - want, POD_FILTER_IN_POD) if scoped.scope.host else {}
            marks.update(dict.fromkeys(want, policy_id))
            had = scoped.ids
            scoped.write(marks)
            if want != had:
                log.log(
                    self._change_level,
                    "policy %d runs for %d cgroups (+%s -%s)",
                    policy_id,
                    len(want),
                    sorted(want - had),
                    sorted(had - want),
                )


class PolicyScopeHandle:
    """One loaded policy's place in the filter: its set is filled as soon as the policy's first BPF
    object has created it (before any hook is attached) and forgotten before the objects close."""

    def __init__(self, pod_filter: PolicyFilter, policy_id: int, scope: PodScope) -> None:
        self.pod_filter = pod_filter
        self.policy_id = policy_id
        self.scope = scope

    def attach(self, cgroups: CgroupSet) -> None:
        self.pod_filter.attach(self.policy_id, self.scope, cgroups)

    def detach(self) -> None:
        self.pod_filter.detach(self.policy_id)


def scope_handle(
    pod_filter: PolicyFilter | None, policy_id: int, policy: TracingPolicy
) -> PolicyScopeHandle | None:
    """The handle a scoped policy's sensor fills its cgroup set through; None for other policies."""
    if pod_filter is None or not needs_pod_filter(policy):
        return None
    return PolicyScopeHandle(pod_filter, policy_id, PodScope.of(policy))
