"""tetragon-oci-hook's parsing and failure mode (tetragon.ocihook), and the agent's side of
RuntimeHook (api/runtime_hook.py, PolicyFilter.add_created_container) over a real gRPC server and a
cgroup tree made of directories. With real containerd and runc: tests/e2e/test_oci_hook.py."""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from tests.conftest import VENV_BIN
from tetragon.api.gen.tetragon import tetragon_pb2
from tetragon.api.runtime_hook import RuntimeHooks
from tetragon.api.server import GrpcServer
from tetragon.events.bus import EventBus
from tetragon.k8s.podinfo import ContainerInfo, PodInfo
from tetragon.k8s.policyfilter import PodScope, PolicyFilter
from tetragon.ocihook.annotations import ContainerMeta, pod_namespace
from tetragon.ocihook.main import FailRule, build_parser, main
from tetragon.ocihook.request import (
    OciState,
    SpecError,
    cgroup_path,
    hook_request,
    parse_state,
    to_proto,
)
from tetragon.policy.schema import LabelSelector

CID = "3433a6bdc48ff7a86a4f248fb6b09d805f2228e117d5bb7cabd42b89b74b5c6d"
POD_UID = "0f6e2a51-3c1b-4d7e-8a90-6b5c4d3e2f10"
# what containerd 1.6's CRI plugin puts in a container's config.json (a pod's app container)
CONTAINERD = {
    "io.kubernetes.cri.container-type": "container",
    "io.kubernetes.cri.container-name": "main",
    "io.kubernetes.cri.image-name": "docker.io/library/nginx:1.27",
    "io.kubernetes.cri.sandbox-id": "c1f0" * 16,
    "io.kubernetes.cri.sandbox-name": "web-hooked",
    "io.kubernetes.cri.sandbox-namespace": "shop",
    "io.kubernetes.cri.sandbox-uid": POD_UID,
}
# CRI-O's keys for the same container
CRIO = {
    "io.kubernetes.cri-o.ContainerType": "container",
    "io.kubernetes.cri-o.ContainerID": CID,
    "io.kubernetes.cri-o.ImageName": "docker.io/library/nginx:1.27",
    "io.kubernetes.cri-o.SandboxID": "c1f0" * 16,
    "io.kubernetes.container.name": "main",
    "io.kubernetes.pod.name": "web-hooked",
    "io.kubernetes.pod.namespace": "shop",
    "io.kubernetes.pod.uid": POD_UID,
}


def test_annotations_of_containerd_and_crio_name_the_same_container() -> None:
    containerd, crio = ContainerMeta.of(CONTAINERD), ContainerMeta.of(CRIO)
    assert (containerd.pod_namespace, containerd.pod_name, containerd.pod_uid) == (
        "shop",
        "web-hooked",
        POD_UID,
    )
    assert (containerd.container_name, containerd.image) == ("main", "docker.io/library/nginx:1.27")
    assert containerd.sandbox_id == "c1f0" * 16 and not containerd.sandbox
    assert containerd.container_id == ""  # containerd: the id is the OCI state's
    assert crio == replace(containerd, container_id=CID)
    assert ContainerMeta.of({"io.kubernetes.cri.container-type": "sandbox"}).sandbox
    assert ContainerMeta.of({"io.kubernetes.cri-o.ContainerType": "sandbox"}).sandbox
    assert ContainerMeta.of({}) == ContainerMeta()  # ctr run / plain runc: nothing about a pod
    assert pod_namespace(CRIO) == "shop" and pod_namespace(CONTAINERD) == "shop"
    assert pod_namespace({}) is None


@pytest.mark.parametrize(
    ("cgroups_path", "path"),
    [
        (f"/kubepods/besteffort/pod{POD_UID}/{CID}", f"/kubepods/besteffort/pod{POD_UID}/{CID}"),
        ("default/c1", "/default/c1"),  # relative: below the cgroup root too
        (
            f"kubepods-besteffort-pod{POD_UID.replace('-', '_')}.slice:cri-containerd:{CID}",
            "/kubepods.slice/kubepods-besteffort.slice/"
            f"kubepods-besteffort-pod{POD_UID.replace('-', '_')}.slice/cri-containerd-{CID}.scope",
        ),
        ("system.slice:docker:abc", "/system.slice/docker-abc.scope"),
        ("-.slice:crio:abc", "/crio-abc.scope"),
        ("machine.slice:libpod:my.slice", "/machine.slice/my.slice"),
        ("", ""),
    ],
)
def test_cgroups_path_in_both_runc_forms(cgroups_path: str, path: str) -> None:
    assert cgroup_path(cgroups_path) == path


@pytest.mark.parametrize(
    "bad", ["abc", "a:b", "kubepods:cri-containerd:abc", "a--b.slice:x:y", "-a.slice:x:y"]
)
def test_cgroups_path_that_names_no_cgroup(bad: str) -> None:
    with pytest.raises(SpecError, match="cgroupsPath"):
        cgroup_path(bad)


def test_oci_state_from_stdin() -> None:
    text = json.dumps(
        {"ociVersion": "1.0.2", "id": CID, "status": "creating", "pid": 42, "bundle": "/b", "annotations": {}}
    )
    assert parse_state(text) == OciState(CID, "/b", 42, {})
    assert parse_state("") == OciState()
    with pytest.raises(SpecError, match="not JSON"):
        parse_state("{")
    with pytest.raises(SpecError, match="not a JSON object"):
        parse_state("[]")


def _bundle(directory: Path, annotations: dict[str, str], cgroups: str = "") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    spec = {
        "root": {"path": "rootfs"},
        "linux": {"cgroupsPath": cgroups or f"/kubepods/besteffort/pod{POD_UID}/{CID}"},
        "annotations": annotations,
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid"]}],
    }
    (directory / "config.json").write_text(json.dumps(spec))
    return directory


def test_request_from_the_bundle_of_the_state(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path / "bundle", CONTAINERD)
    req = hook_request(OciState(CID, str(bundle)), cwd="/nonexistent")
    assert req.cgroups_path == f"/kubepods/besteffort/pod{POD_UID}/{CID}"
    assert req.root_dir == str(bundle / "rootfs")
    assert req.container_id == CID  # containerd: the state's id (not in its annotations)
    msg = to_proto(req)
    assert msg.WhichOneof("event") == "createContainer"
    create = msg.createContainer
    assert (create.containerName, create.podName, create.podNamespace, create.podUID) == (
        "main",
        "web-hooked",
        "shop",
        POD_UID,
    )
    assert create.containerImage == "docker.io/library/nginx:1.27"
    assert dict(create.annotations) == CONTAINERD
    assert [(m.destination, m.type, m.source, list(m.options)) for m in create.mounts] == [
        ("/proc", "proc", "proc", ["nosuid"])
    ]


@pytest.mark.parametrize("layout", ["createContainer", "crio"])
def test_request_from_the_working_directory_as_tetragons_hook_looks(tmp_path: Path, layout: str) -> None:
    """No bundle in the state: config.json one level up (containerd, createContainer stage) or in
    ../userdata (CRI-O)."""
    where = tmp_path / "bundle" if layout == "createContainer" else tmp_path / "userdata"
    _bundle(where, CRIO)
    (where / "rootfs").mkdir()
    (tmp_path / "cwd").mkdir()
    req = hook_request(OciState(), cwd=str(tmp_path / "cwd") if layout == "crio" else str(where / "rootfs"))
    assert req.container_id == CID  # CRI-O: from its annotation
    assert req.meta.pod_name == "web-hooked"


def test_request_refused_without_config_or_cgroup(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="no config.json"):
        hook_request(OciState(bundle=str(tmp_path)), cwd=str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"linux": {}}))
    with pytest.raises(SpecError, match="no linux.cgroupsPath"):
        hook_request(OciState(bundle=str(tmp_path)), cwd=str(tmp_path))


def test_field_numbers_are_tetragons() -> None:
    fields = {f.name: f.number for f in tetragon_pb2.CreateContainer.DESCRIPTOR.fields}
    assert fields == {
        "cgroupsPath": 1,
        "rootDir": 2,
        "annotations": 3,
        "containerName": 4,
        "containerID": 5,
        "podName": 6,
        "podUID": 7,
        "podNamespace": 8,
        "containerImage": 9,
        "mounts": 10,
    }
    assert tetragon_pb2.RuntimeHookRequest.DESCRIPTOR.fields_by_name["createContainer"].number == 1


def _rule(*flags: str) -> FailRule:
    return FailRule(build_parser().parse_args(["createRuntime", *flags]))


def test_fail_rule_is_open_by_default_and_tetragons_when_asked() -> None:
    shop, system = CONTAINERD, {**CONTAINERD, "io.kubernetes.cri.sandbox-namespace": "kube-system"}
    assert not _rule().should_fail(shop) and not _rule().should_fail({})
    allow = _rule("--fail-allow-namespaces", "kube-system,tetragon")
    assert allow.should_fail(shop) and not allow.should_fail(system)
    assert allow.should_fail({})  # no namespace: not a pod Tetragon's rule lets through
    pattern = _rule("--fail-allow-namespaces-regex", "^sh")
    assert not pattern.should_fail(shop) and pattern.should_fail(system)
    expr = _rule("--fail-cel-expr", 'annotations["io.kubernetes.cri.sandbox-namespace"] == "shop"')
    assert expr.should_fail(shop) and not expr.should_fail(system)
    assert expr.should_fail({})  # the expression cannot run: fail, as Tetragon
    keys = _rule("--fail-allow-namespaces", "shop", "--annotations-namespace-key", "my.ns")
    assert keys.should_fail(shop) and not keys.should_fail({"my.ns": "shop"})


def _run_hook(tmp_path: Path, stdin: str, *flags: str) -> tuple[int, list[dict[str, object]], float]:
    log = tmp_path / "hook.log"
    started = time.monotonic()
    proc = subprocess.run(
        [str(VENV_BIN / "tetragon-oci-hook"), "createRuntime", "--log-fname", str(log), *flags],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return proc.returncode, lines, time.monotonic() - started


def _state(bundle: Path) -> str:
    return json.dumps(
        {"ociVersion": "1.0.2", "id": CID, "status": "creating", "pid": 1, "bundle": str(bundle)}
    )


def test_agent_down_the_container_starts_logged(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path / "b", CONTAINERD)
    down = ["--grpc-address", f"unix://{tmp_path}/nobody.sock"]
    code, log, _ = _run_hook(tmp_path, _state(bundle), *down)
    assert code == 0
    assert [r["msg"] for r in log] == [
        "hook request to the agent failed",
        "container starts without the agent knowing it (fail-open)",
    ]
    assert log[0]["code"] == "StatusCode.UNAVAILABLE" and log[0]["req-containerID"] == CID
    code, log, _ = _run_hook(tmp_path, _state(bundle), *down, "--fail-allow-namespaces", "kube-system")
    assert code == 1 and log[-1]["msg"] == "failing container" and log[-1]["namespace"] == "shop"


def test_a_hung_agent_holds_the_container_only_for_the_timeout(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path / "b", CONTAINERD)
    with socket.socket() as silent:  # accepts connections (the kernel does) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        flags = ["--grpc-address", f"127.0.0.1:{port}", "--grpc-timeout", "500ms"]
        code, log, took = _run_hook(tmp_path, _state(bundle), *flags)
    assert code == 0 and log[0]["code"] == "StatusCode.DEADLINE_EXCEEDED"
    assert took < 10


def test_unknown_stages_do_nothing_and_bad_flags_fail(tmp_path: Path) -> None:
    log = str(tmp_path / "h.log")
    assert main(["poststop", "--log-fname", log]) == 0
    assert main(["createRuntime", "--log-fname", log, "--grpc-timeout", "soon"]) == 1
    assert main(["createRuntime", "--log-fname", log, "--fail-cel-expr", "1 +"]) == 1


class FakeSet:
    """A policy_cgroups map: cgroup id -> 1."""

    def __init__(self) -> None:
        self.ids: set[int] = set()

    def update(self, key: bytes, value: bytes) -> None:
        self.ids.add(struct.unpack("<Q", key)[0])

    def delete(self, key: bytes) -> bool:
        self.ids.discard(struct.unpack("<Q", key)[0])
        return True


WEB = PodInfo(uid=POD_UID, name="web-hooked", namespace="shop", labels={"app": "web"})


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[tuple[GrpcServer, PolicyFilter, list[PodInfo], FakeSet, FakeSet]]:
    """A gRPC server with RuntimeHook over a policy filter whose cgroup root is a directory tree;
    two policies: podSelector app=web, and namespace `other`."""
    root = tmp_path / "cgroup"
    root.mkdir()
    pods: list[PodInfo] = []
    pod_filter = PolicyFilter(lambda: list(pods), cgroup_root=str(root))
    web, other = FakeSet(), FakeSet()
    pod_filter.attach(
        1, PodScope(pod_selector=LabelSelector.model_validate({"matchLabels": {"app": "web"}})), web
    )
    pod_filter.attach(2, PodScope(namespace="other"), other)
    server = GrpcServer(EventBus(), "127.0.0.1:0", version="test")
    by_uid = lambda uid: next((p for p in pods if p.uid == uid), None)  # noqa: E731
    server.runtime_hooks = RuntimeHooks(pod_filter, by_uid, relist=lambda: pods.append(WEB), pod_wait=0.5)
    with server:
        yield server, pod_filter, pods, web, other


def test_the_agent_puts_the_cgroup_in_the_selecting_policies_before_answering(
    tmp_path: Path, agent: tuple[GrpcServer, PolicyFilter, list[PodInfo], FakeSet, FakeSet]
) -> None:
    server, pod_filter, pods, web, other = agent
    cgroup = tmp_path / "cgroup" / "kubepods" / "besteffort" / f"pod{POD_UID}" / CID
    cgroup.mkdir(parents=True)
    bundle = _bundle(tmp_path / "b", CONTAINERD)
    code, log, _ = _run_hook(tmp_path, _state(bundle), "--grpc-address", f"127.0.0.1:{server.port}")
    assert code == 0 and log[-1]["msg"] == "hook request to agent succeeded", log
    assert web.ids == {os.stat(cgroup).st_ino} and other.ids == set()  # the pod was found by a relist
    # the pod source does not list the (not yet started) container: the cgroup stays
    pod_filter.refresh()
    assert web.ids == {os.stat(cgroup).st_ino}
    # listed now: the tree walk finds it (by its id in the directory name), nothing changes
    pods[:] = [replace(WEB, containers=(ContainerInfo(CID, "containerd", "main", "", ""),))]
    pod_filter.refresh()
    assert web.ids == {os.stat(cgroup).st_ino}
    pods[:] = []
    cgroup.rmdir()
    pod_filter.refresh()
    assert web.ids == set()


def test_the_agents_errors(
    tmp_path: Path, agent: tuple[GrpcServer, PolicyFilter, list[PodInfo], FakeSet, FakeSet]
) -> None:
    server, pod_filter, _pods, web, _other = agent
    address = ["--grpc-address", f"127.0.0.1:{server.port}"]
    bundle = _bundle(tmp_path / "b", CONTAINERD)
    code, log, _ = _run_hook(tmp_path, _state(bundle), *address)  # no such cgroup
    assert code == 0 and log[0]["code"] == "StatusCode.NOT_FOUND", log
    assert f"cgroup /kubepods/besteffort/pod{POD_UID}/{CID}: No such file or directory" in str(
        log[0]["error"]
    )
    escape = _bundle(tmp_path / "e", CONTAINERD, cgroups="/../../etc")
    code, log, _ = _run_hook(tmp_path / "e", _state(escape), *address)
    assert log[0]["code"] == "StatusCode.INVALID_ARGUMENT" and "leaves the cgroup root" in str(
        log[0]["error"]
    )
    # a pod nobody lists (the relist adds web, not this one)
    stranger = {**CONTAINERD, "io.kubernetes.cri.sandbox-uid": "1" * 32}
    (tmp_path / "cgroup" / "kubepods" / "besteffort" / f"pod{POD_UID}" / CID).mkdir(parents=True)
    bundle = _bundle(tmp_path / "s", stranger)
    code, log, _ = _run_hook(tmp_path / "s", _state(bundle), *address)
    assert log[0]["code"] == "StatusCode.FAILED_PRECONDITION" and "not known to the agent" in str(
        log[0]["error"]
    )
    # the pod's sandbox: answered at once, nothing to filter
    sandbox = _bundle(tmp_path / "p", {**CONTAINERD, "io.kubernetes.cri.container-type": "sandbox"})
    code, log, _ = _run_hook(tmp_path / "p", _state(sandbox), *address)
    assert log[-1]["msg"] == "hook request to agent succeeded" and web.ids == set()
