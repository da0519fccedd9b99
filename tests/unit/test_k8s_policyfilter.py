"""The policy filter's user-space half (k8s/policyfilter.py): which containers a pod-scoped policy
selects, their cgroup ids from a cgroup tree, and the policy's cgroup set kept equal to them. The
kernel half (the check in BPF) runs in tests/e2e/test_k8s_pods.py with real containers."""

from __future__ import annotations

import json
import logging
import os
import re
import struct
from dataclasses import replace
from pathlib import Path

import pytest

from tests.unit.test_k8s_pods import DATA, REPORT, WEB_INIT, WEB_NGINX
from tetragon.abi import podfilter_h
from tetragon.abi.podfilter_h import POD_FILTER_IN_POD
from tetragon.k8s.podinfo import PodInfo, pod_from_json
from tetragon.k8s.policyfilter import (
    PodScope,
    PolicyFilter,
    check_pod_scope,
    container_cgroups,
    image_repo,
    needs_pod_filter,
    selector_matches,
)
from tetragon.policy.errors import PolicyError
from tetragon.policy.load import parse_policy
from tetragon.policy.schema import LabelSelector

HEAD = "apiVersion: cilium.io/v1alpha1\nkind: {kind}\nmetadata:\n  name: p{ns}\nspec:\n"
BESTEFFORT = "kubepods.slice/kubepods-besteffort.slice"
WEB_SLICE = f"{BESTEFFORT}/kubepods-besteffort-pod0f8d5e4c_2b1e_4a8e_9f1e_3c5d2a7b6e10.slice"
HOOK = "  tracepoints:\n  - subsystem: syscalls\n    event: sys_enter_execve\n"


def _policy(spec: str, kind: str = "TracingPolicy", ns: str = "") -> object:
    return parse_policy(HEAD.format(kind=kind, ns=f"\n  namespace: {ns}" if ns else "") + spec + HOOK)


def _selector(doc: dict[str, object]) -> LabelSelector:
    return LabelSelector.model_validate(doc)


def _pods() -> list[PodInfo]:
    return [pod_from_json(item) for item in json.loads((DATA / "pods-list.json").read_text())["items"]]


class FakeSet:
    """A policy_cgroups map: cgroup id -> the policy's filter id (u32)."""

    def __init__(self) -> None:
        self.ids: set[int] = set()
        self.filter_ids: set[int] = set()

    def update(self, key: bytes, value: bytes) -> None:
        self.ids.add(struct.unpack("<Q", key)[0])
        self.filter_ids.add(struct.unpack("<I", value)[0])

    def delete(self, key: bytes) -> bool:
        self.ids.discard(struct.unpack("<Q", key)[0])
        return True


def test_label_selectors_follow_kubernetes() -> None:
    labels = {"app": "web", "tier": "front"}
    assert selector_matches(_selector({}), labels)  # empty: everything
    assert selector_matches(_selector({"matchLabels": {"app": "web"}}), labels)
    assert not selector_matches(_selector({"matchLabels": {"app": "db"}}), labels)
    expr = {"key": "tier", "operator": "In", "values": ["front", "edge"]}
    assert selector_matches(_selector({"matchExpressions": [expr]}), labels)
    assert not selector_matches(_selector({"matchExpressions": [{**expr, "operator": "NotIn"}]}), labels)
    assert selector_matches(
        _selector({"matchExpressions": [{"key": "x", "operator": "DoesNotExist"}]}), labels
    )
    assert not selector_matches(_selector({"matchExpressions": [{"key": "x", "operator": "Exists"}]}), labels)


def test_image_repo() -> None:
    assert image_repo("docker.io/library/nginx:1.27") == "docker.io/library/nginx"
    assert image_repo("registry:5000/team/app@sha256:" + "ab" * 32) == "registry:5000/team/app"
    assert image_repo("registry:5000/app") == "registry:5000/app"


def test_scopes_select_by_namespace_pod_labels_and_container() -> None:
    web, report = _pods()
    nginx = web.container(WEB_NGINX)
    assert nginx is not None
    by_pod = PodScope(pod_selector=_selector({"matchLabels": {"app": "web"}}))
    assert by_pod.selects(web, nginx) and not by_pod.selects(report, report.containers[0])
    by_repo = PodScope(container_selector=_selector({"matchLabels": {"repo": "docker.io/library/nginx"}}))
    assert by_repo.selects(web, nginx) and not by_repo.selects(report, report.containers[0])
    namespaced = PodScope(namespace="batch")
    assert namespaced.selects(report, report.containers[0]) and not namespaced.selects(web, nginx)


def test_policies_are_refused_in_one_line_without_the_filter() -> None:
    with pytest.raises(PolicyError, match="podSelector/containerSelector need Kubernetes pod information"):
        check_pod_scope(_policy("  podSelector:\n    matchLabels:\n      app: web\n"), None)  # type: ignore[arg-type]
    with pytest.raises(
        PolicyError, match=r"TracingPolicyNamespaced needs the policy filter \(--enable-policy"
    ):
        check_pod_scope(_policy("", "TracingPolicyNamespaced", "shop"), None)  # type: ignore[arg-type]
    check_pod_scope(_policy(""), None)  # type: ignore[arg-type]  # not scoped: nothing to check
    no_v2 = PolicyFilter(list, cgroup_root="")
    with pytest.raises(PolicyError, match="need a cgroup v2 hierarchy"):
        check_pod_scope(_policy("", "TracingPolicyNamespaced", "shop"), no_v2)  # type: ignore[arg-type]


def test_host_selector_with_pod_selectors_loads_and_needs_the_pod_source() -> None:
    """Tetragon's matrix: pod/container selectors with `hostSelector: {}` mean the selected containers
    plus every process outside pods. Such a policy loads where pods are known; without a pod source
    (no --enable-k8s-api/--enable-cri: no Kubernetes) it is refused in one line like any pod-scoped
    policy, since "outside pods" cannot be told apart from "in an unselected pod". hostSelector alone
    narrows nothing: not pod-scoped, it loads anywhere."""
    pod_filter = PolicyFilter(list, cgroup_root="/sys/fs/cgroup")
    for selector in (
        "podSelector:\n    matchLabels:\n      app: web\n",
        "containerSelector:\n    matchLabels: {}\n",
    ):
        policy = _policy(f"  hostSelector: {{}}\n  {selector}")
        check_pod_scope(policy, pod_filter)  # type: ignore[arg-type]
        assert PodScope.of(policy).host  # type: ignore[arg-type]
        with pytest.raises(PolicyError) as exc:
            check_pod_scope(policy, None)  # type: ignore[arg-type]
        assert str(exc.value).startswith("spec.") and "\n" not in str(exc.value)
        assert "need Kubernetes pod information and the policy filter" in str(exc.value)
    assert not PodScope.of(_policy("  podSelector: {}\n")).host  # type: ignore[arg-type]
    host_only = _policy("  hostSelector: {}\n")
    assert not needs_pod_filter(host_only)  # type: ignore[arg-type]
    check_pod_scope(host_only, None)  # type: ignore[arg-type]


class MarkMap:
    """A policy_cgroups map as the kernel reads it: cgroup id -> filter id or POD_FILTER_IN_POD."""

    def __init__(self) -> None:
        self.marks: dict[int, int] = {}

    def update(self, key: bytes, value: bytes) -> None:
        self.marks[struct.unpack("<Q", key)[0]] = struct.unpack("<I", value)[0]

    def delete(self, key: bytes) -> bool:
        return self.marks.pop(struct.unpack("<Q", key)[0], None) is not None


def test_podfilter_header_defines_match_the_abi_module() -> None:
    header = (Path(__file__).resolve().parents[2] / "bpf/include/generic/podfilter.h").read_text()
    defines = dict(re.findall(r"#define (POD_FILTER_\w+) (\d+)", header))
    assert defines == {"POD_FILTER_IN_POD": "0", "POD_FILTER_MAX_DEPTH": "16"}
    assert {k: int(v) for k, v in defines.items()} == {k: getattr(podfilter_h, k) for k in defines}


def _tree(root: Path) -> dict[str, int]:
    """Cgroup directories of both Kubernetes drivers and of a host service; name -> inode."""
    dirs = {
        "nginx": f"{WEB_SLICE}/cri-containerd-{WEB_NGINX}.scope",
        "nginx-sub": f"{WEB_SLICE}/cri-containerd-{WEB_NGINX}.scope/worker",
        "init": f"kubepods/besteffort/pod0f8d5e4c-2b1e-4a8e-9f1e-3c5d2a7b6e10/{WEB_INIT}",
        "report": f"kubepods/burstable/pod1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f/{REPORT}",
        "sshd": "system.slice/sshd.service",
    }
    out = {}
    for name, rel in dirs.items():
        (root / rel).mkdir(parents=True, exist_ok=True)
        out[name] = os.stat(root / rel).st_ino
    return out


def test_cgroup_ids_of_containers_from_the_tree(tmp_path: Path) -> None:
    ino = _tree(tmp_path)
    found = container_cgroups(str(tmp_path))
    assert found[WEB_NGINX] == {ino["nginx"], ino["nginx-sub"]}  # and the cgroups below it
    assert found[WEB_INIT] == {ino["init"]} and found[REPORT] == {ino["report"]}
    assert ino["sshd"] not in set().union(*found.values())


def test_a_policys_set_follows_the_pods(tmp_path: Path) -> None:
    ino = _tree(tmp_path)
    pods = _pods()
    pod_filter = PolicyFilter(lambda: pods, cgroup_root=str(tmp_path))
    web_set, batch_set = FakeSet(), FakeSet()
    pod_filter.attach(1, PodScope(pod_selector=_selector({"matchLabels": {"app": "web"}})), web_set)
    pod_filter.attach(2, PodScope(namespace="batch"), batch_set)
    assert web_set.ids == {ino["nginx"], ino["nginx-sub"], ino["init"]}
    assert batch_set.ids == {ino["report"]}
    assert (web_set.filter_ids, batch_set.filter_ids) == (
        {1},
        {2},
    )  # what `tetra debug dump policyfilter` shows
    pods = pods[:1]  # the report pod is gone
    pod_filter.refresh()
    assert batch_set.ids == set() and pod_filter.cgroup_ids(2) == set()
    pod_filter.detach(1)
    pods = []
    pod_filter.refresh()
    assert web_set.ids == {ino["nginx"], ino["nginx-sub"], ino["init"]}  # detached: not written any more


def test_policy_filter_debug_logs_every_change_at_info(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """--enable-policy-filter-debug: which cgroups joined and left a policy's set, at INFO."""
    ino = _tree(tmp_path)
    pods = _pods()
    pod_filter = PolicyFilter(lambda: pods, cgroup_root=str(tmp_path), debug=True)
    with caplog.at_level(logging.INFO, logger="tetragon"):
        pod_filter.attach(2, PodScope(namespace="batch"), FakeSet())
        pods = []
        pod_filter.refresh()
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert lines == [
        f"policy 2 runs for 1 cgroups (+[{ino['report']}] -[])",
        f"policy 2 runs for 0 cgroups (+[] -[{ino['report']}])",
    ]


def test_a_host_policys_set_marks_every_other_pod_and_the_pod_roots(tmp_path: Path) -> None:
    """hostSelector: {}: the selected containers' cgroups carry the filter id; the other known pods'
    containers and the kubelet's pod roots carry POD_FILTER_IN_POD, so the kernel tells a host
    process (nothing marked up to the root) from one in a pod it must not trace, known or not yet.
    A policy without hostSelector in the same filter still holds its selected cgroups only."""
    ino = _tree(tmp_path)
    roots = {os.stat(tmp_path / d).st_ino for d in ("kubepods", "kubepods.slice")}
    pods = _pods()
    pod_filter = PolicyFilter(lambda: pods, cgroup_root=str(tmp_path))
    web = _selector({"matchLabels": {"app": "web"}})
    with_host, pods_only = MarkMap(), MarkMap()
    pod_filter.attach(1, PodScope(pod_selector=web, host=True), with_host)
    pod_filter.attach(2, PodScope(pod_selector=web), pods_only)
    selected = {ino["nginx"], ino["nginx-sub"], ino["init"]}
    assert with_host.marks == {
        **dict.fromkeys(selected, 1),
        ino["report"]: POD_FILTER_IN_POD,
        **dict.fromkeys(roots, POD_FILTER_IN_POD),
    }
    assert pods_only.marks == dict.fromkeys(selected, 2)
    assert pod_filter.cgroup_ids(1) == selected  # what `tetra debug dump policyfilter` shows
    assert ino["sshd"] not in with_host.marks  # a host service: unmarked, so the policy runs there

    # a container announced by the OCI hook before the pod source lists it
    web_pod, report_pod = pods
    newcomer = replace(report_pod.containers[0], id="e" * 64, name="late")
    late_dir = tmp_path / "kubepods/burstable/pod1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f" / newcomer.id
    late_dir.mkdir()
    late = os.stat(late_dir).st_ino
    assert pod_filter.add_created_container(report_pod, newcomer, late, str(late_dir)) == []
    assert with_host.marks[late] == POD_FILTER_IN_POD and late not in pods_only.marks
    assert pod_filter.add_created_container(web_pod, newcomer, late, str(late_dir)) == [1, 2]
    assert with_host.marks[late] == 1 and pods_only.marks[late] == 2

    pods = pods[:1]  # the report pod is gone; what stays under the pod roots is still in a pod
    late_dir.rmdir()
    pod_filter.refresh()
    assert with_host.marks == {**dict.fromkeys(selected, 1), **dict.fromkeys(roots, POD_FILTER_IN_POD)}
    assert pods_only.marks == dict.fromkeys(selected, 2)
