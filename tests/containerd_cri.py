"""A private containerd with its CRI plugin, for tests with real containers (started and stopped here).

containerd runs with private --root/--state/--address and a config whose sandbox image is an image
built here (an OCI layout tar holding busybox-static), imported into the `k8s.io` namespace. Pods get
host networking (no CNI plugin needed) and no hostname. `make setup` installs containerd and
busybox-static.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tetragon.k8s.cri import CriClient
from tetragon.k8s.gen.cri import api_pb2

IMAGE = "localhost/tetragon-test-busybox:latest"
BUSYBOX = Path("/bin/busybox")
POD_UID = "5b0c3e1a-7d24-4f6b-9a8e-2c1d0f3b4a59"
LOOP = "while :; do /bin/sleep 1; done"  # a path: busybox runs a bare `sleep` without exec


def _static_busybox() -> bool:
    """The image's only binary must run without a libc in the image: busybox-static, not busybox."""
    try:
        head = BUSYBOX.read_bytes()[:4096]
    except OSError:
        return False
    return head.startswith(b"\x7fELF") and b"ld-linux" not in head


needs_containerd = pytest.mark.skipif(
    os.geteuid() != 0
    or shutil.which("containerd") is None
    or shutil.which("ctr") is None
    or not _static_busybox(),
    reason="needs root and Debian's containerd and busybox-static (make setup installs them)",
)


def _add(tf: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    tf.addfile(info, io.BytesIO(data))


def _blob(tf: tarfile.TarFile, data: bytes) -> dict[str, object]:
    digest = hashlib.sha256(data).hexdigest()
    _add(tf, f"blobs/sha256/{digest}", data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def _layer() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as layer:
        for directory in ("bin", "tmp", "proc", "sys", "dev", "etc"):
            info = tarfile.TarInfo(directory)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            layer.addfile(info)
        _add(layer, "bin/busybox", BUSYBOX.read_bytes(), 0o755)
        for applet in ("sh", "sleep", "cat"):
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type = tarfile.SYMTYPE
            info.linkname = "busybox"
            layer.addfile(info)
    return buf.getvalue()


def build_image(path: Path) -> None:
    """An OCI image layout tar: one layer with busybox-static; its default command stays up (sandbox)."""
    with tarfile.open(path, "w") as tf:
        layer = _layer()
        layer_desc = _blob(tf, layer)
        config = {
            "architecture": "amd64",
            "os": "linux",
            "config": {
                "Entrypoint": ["/bin/sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done"],
                "Env": ["PATH=/bin"],
            },
            "rootfs": {"type": "layers", "diff_ids": [layer_desc["digest"]]},
        }
        config_desc = _blob(tf, json.dumps(config).encode())
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config_desc},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", **layer_desc}],
        }
        manifest_desc = _blob(tf, json.dumps(manifest).encode())
        index = {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    **manifest_desc,
                    "annotations": {
                        "io.containerd.image.name": IMAGE,
                        "org.opencontainers.image.ref.name": "latest",
                    },
                }
            ],
        }
        _add(tf, "index.json", json.dumps(index).encode())
        _add(tf, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')


def _containerd_config(base: Path, extra: str = "") -> str:
    return f"""version = 2
root = "{base}/root"
state = "{base}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "{base}/c.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{IMAGE}"
  restrict_oom_score_adj = true
{extra}"""


def _processes_of(base: Path) -> list[int]:
    """Pids of the shims this containerd started (their command line names its socket)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"containerd-shim" in cmdline and str(base).encode() in cmdline:
            pids.append(int(entry.name))
    return pids


def _unmount_under(base: Path) -> None:
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    for mount in sorted((m for m in mounts if m.startswith(str(base))), reverse=True):
        subprocess.run(["umount", "-l", mount], check=False)


@contextmanager
def private_containerd(extra_config: str = "") -> Iterator[str]:
    """A private containerd with the CRI plugin and the test image; yields its socket path.
    `extra_config`: more TOML for its config (e.g. runtimes with a base_runtime_spec)."""
    # a short directory: the socket path must fit in sun_path (108 bytes)
    base = Path(tempfile.mkdtemp(prefix="tg-ctd-"))
    (base / "config.toml").write_text(_containerd_config(base, extra_config))
    build_image(base / "image.tar")
    sock = base / "c.sock"
    log = (base / "containerd.log").open("wb")
    proc = subprocess.Popen(["containerd", "--config", str(base / "config.toml")], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 20
        while not sock.exists():
            assert proc.poll() is None, (base / "containerd.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "containerd did not create its socket"
            time.sleep(0.1)
        subprocess.run(
            ["ctr", "-a", str(sock), "-n", "k8s.io", "images", "import", str(base / "image.tar")],
            check=True,
            capture_output=True,
        )
        yield str(sock)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for pid in _processes_of(base):
            os.kill(pid, signal.SIGKILL)
        log.close()
        _unmount_under(base)
        shutil.rmtree(base, ignore_errors=True)


def run_pod(
    stub: object,
    name: str,
    labels: dict[str, str],
    uid: str = POD_UID,
    namespace: str = "shop",
    runtime_handler: str = "",
) -> tuple[str, api_pb2.PodSandboxConfig]:
    """A pod sandbox through CRI, as the kubelet would make it (host network, no CNI), run by the
    runtime named `runtime_handler` in containerd's config (its default runtime when "")."""
    config = api_pb2.PodSandboxConfig(
        metadata=api_pb2.PodSandboxMetadata(name=name, uid=uid, namespace=namespace, attempt=0),
        labels={**labels, "io.kubernetes.pod.name": name},
        linux=api_pb2.LinuxPodSandboxConfig(
            cgroup_parent=f"/kubepods/besteffort/pod{uid}",
            security_context=api_pb2.LinuxSandboxSecurityContext(
                namespace_options=api_pb2.NamespaceOption(network=api_pb2.NODE)
            ),
        ),
    )
    request = api_pb2.RunPodSandboxRequest(config=config, runtime_handler=runtime_handler)
    reply = stub.RunPodSandbox(request, timeout=60)  # type: ignore[attr-defined]
    return reply.pod_sandbox_id, config


def start_container(cri: CriClient, sandbox: tuple[str, api_pb2.PodSandboxConfig], name: str) -> str:
    """A container of the pod running LOOP, through CRI as the kubelet starts one."""
    sandbox_id, sandbox_config = sandbox
    config = api_pb2.ContainerConfig(
        metadata=api_pb2.ContainerMetadata(name=name),
        image=api_pb2.ImageSpec(image=IMAGE),
        command=["/bin/sh", "-c", LOOP],
        labels={"io.kubernetes.container.name": name},
    )
    request = api_pb2.CreateContainerRequest(
        pod_sandbox_id=sandbox_id, config=config, sandbox_config=sandbox_config
    )
    created = cri.stub.CreateContainer(request, timeout=60)
    cri.stub.StartContainer(api_pb2.StartContainerRequest(container_id=created.container_id), timeout=60)
    return str(created.container_id)
