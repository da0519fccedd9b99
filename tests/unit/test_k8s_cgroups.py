"""Container identity from cgroup paths: every runtime layout in tests/data/k8s/cgroup-paths.txt."""

from __future__ import annotations

from pathlib import Path

import pytest

from tetragon.k8s.cgroups import ContainerIdentity, identity_from_cgroup, identity_from_proc_cgroup

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "k8s" / "cgroup-paths.txt"


def _samples() -> list[tuple[str, ContainerIdentity | None]]:
    out: list[tuple[str, ContainerIdentity | None]] = []
    for line in SAMPLES.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        fields = [f.strip() for f in line.split(" | ")]
        if len(fields) == 1:
            out.append((fields[0], None))
            continue
        path, runtime, cid, pod_uid, *rest = (f if f != "-" else "" for f in fields)
        out.append((path, ContainerIdentity(cid, runtime, pod_uid, monitor=rest == ["monitor"])))
    return out


@pytest.mark.parametrize(("path", "expected"), _samples(), ids=lambda v: v if isinstance(v, str) else "")
def test_identity_of_every_sample(path: str, expected: ContainerIdentity | None) -> None:
    assert identity_from_cgroup(path) == expected


def test_samples_cover_every_runtime() -> None:
    runtimes = {e.runtime for _, e in _samples() if e is not None}
    assert runtimes == {"containerd", "cri-o", "docker", "podman", ""}
    assert sum(1 for _, e in _samples() if e is None) >= 10


def test_docker_field_is_31_characters_of_a_full_id() -> None:
    full = "3f5c1e6a9b0d4e2f8a7c6b5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f"
    ident = identity_from_cgroup(f"0::/system.slice/docker-{full}.scope")
    assert ident is not None
    assert ident.docker == full[:31]
    # Tetragon does not take short names for container ids: `ctr run ... c1` has no `docker` field.
    short = identity_from_cgroup("0::/default/c1")
    assert short is not None and short.id == "c1" and short.docker == ""


def test_container_id_carries_the_kubernetes_runtime_prefix() -> None:
    full = "9d2e4b7a1c3f5e6d8b0a2c4e6f8a1b3d5c7e9f0a2b4c6d8e1f3a5b7c9d0e2f4a"
    assert ContainerIdentity(full, "containerd").container_id == f"containerd://{full}"
    assert ContainerIdentity(full, "cri-o").container_id == f"cri-o://{full}"
    assert ContainerIdentity(full, "").container_id == full


def test_whole_proc_cgroup_file_v1_and_v2() -> None:
    full = "3f5c1e6a9b0d4e2f8a7c6b5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f"
    uid = "0f8d5e4c-2b1e-4a8e-9f1e-3c5d2a7b6e10"
    v1 = "\n".join(
        [
            "12:cpuset:/",
            f"11:pids:/kubepods/besteffort/pod{uid}/{full}",
            f"4:memory:/kubepods/besteffort/pod{uid}/{full}",
            "1:name=systemd:/",
            "0::/",
        ]
    )
    assert identity_from_proc_cgroup(v1) == ContainerIdentity(full, "", uid)
    assert identity_from_proc_cgroup("0::/system.slice/sshd.service\n") is None
    # this sandbox's own layout: v1 controllers at the root, a 32-hex group that is no container
    assert identity_from_proc_cgroup("4:memory:/process_api/b591bd17ef8993b5ad44f3782b6fd0b4\n0::/\n") is None


def test_other_containerd_namespaces_can_be_named() -> None:
    assert identity_from_cgroup("/lab/c2") is None
    assert identity_from_cgroup("/lab/c2", frozenset({"lab"})) == ContainerIdentity("c2", "containerd")
