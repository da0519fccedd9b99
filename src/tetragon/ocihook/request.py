"""The `RuntimeHook` request for a container being created, from what the runtime gives a hook.

The runtime writes the container's OCI state (`{"ociVersion", "id", "status", "pid", "bundle",
"annotations"}`) on the hook's stdin and runs it in the bundle directory; the bundle's config.json
has the cgroup (`linux.cgroupsPath`), the root filesystem, the mounts and the annotations the CRI
runtime set. CRI-O keeps config.json in the bundle's `userdata/`; containerd's createContainer stage
runs one level below the bundle, hence Tetragon's list of places to look.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tetragon.ocihook.annotations import ContainerMeta

# Tetragon's oci-hook: relative to the hook's working directory
CONFIG_PLACES = ("config.json", "../config.json", "../userdata/config.json")


class SpecError(Exception):
    """The runtime's state or the container's config.json cannot be used (one line)."""


@dataclass(frozen=True)
class OciState:
    container_id: str = ""
    bundle: str = ""
    pid: int = 0
    annotations: dict[str, str] = field(default_factory=dict)


def parse_state(text: str) -> OciState:
    """The OCI state JSON a runtime writes on a hook's stdin ("" when it wrote none)."""
    if not text.strip():
        return OciState()
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise SpecError(f"the OCI state on stdin is not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise SpecError("the OCI state on stdin is not a JSON object")
    pid = doc.get("pid")
    return OciState(
        container_id=str(doc.get("id") or ""),
        bundle=str(doc.get("bundle") or ""),
        pid=pid if isinstance(pid, int) else 0,
        annotations=_strings(doc.get("annotations")),
    )


def _strings(value: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def find_config(state: OciState, cwd: str) -> Path:
    """The container's config.json: in the state's bundle, else where Tetragon's hook looks."""
    places = [Path(state.bundle, "config.json")] if state.bundle else []
    places += [Path(cwd, p) for p in CONFIG_PLACES]
    for place in places:
        if place.is_file():
            return place
    raise SpecError("no config.json in " + ", ".join(str(p) for p in places))


def load_spec(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except OSError as exc:
        raise SpecError(f"{path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise SpecError(f"{path}: not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise SpecError(f"{path}: not a JSON object")
    return doc


def expand_slice(slice_name: str) -> str:
    """systemd's nesting of a slice name: `a-b-c.slice` -> `/a.slice/a-b.slice/a-b-c.slice` (runc)."""
    if not slice_name.endswith(".slice") or "/" in slice_name:
        raise SpecError(f"cgroupsPath slice {slice_name!r} is not a systemd slice name")
    name = slice_name.removesuffix(".slice")
    if name == "-":
        return "/"
    if not name or name.startswith("-") or name.endswith("-") or "--" in name:
        raise SpecError(f"cgroupsPath slice {slice_name!r} is not a systemd slice name")
    parts = name.split("-")
    return "/" + "/".join("-".join(parts[: i + 1]) + ".slice" for i in range(len(parts)))


def cgroup_path(cgroups_path: str) -> str:
    """The cgroup's path below the cgroup root, from `linux.cgroupsPath` (runc's cgroupfs form
    `/a/b`, or the systemd driver's `slice:prefix:name`)."""
    if not cgroups_path:
        return ""
    if "/" in cgroups_path:
        return cgroups_path if cgroups_path.startswith("/") else "/" + cgroups_path
    parts = cgroups_path.split(":")
    if len(parts) != 3:
        raise SpecError(f"cgroupsPath {cgroups_path!r} is neither a path nor slice:prefix:name")
    slice_name, prefix, name = parts
    parent = expand_slice(slice_name or "system.slice")
    leaf = name if name.endswith(".slice") else f"{prefix}-{name}.scope"
    return os.path.join(parent, leaf)


def root_dir(spec: dict[str, Any], bundle: str) -> str:
    root = (spec.get("root") or {}).get("path", "")
    if not isinstance(root, str) or not root:
        return bundle
    return root if os.path.isabs(root) or not bundle else os.path.join(bundle, root)


@dataclass(frozen=True)
class HookRequest:
    """The fields of Tetragon's `CreateContainer` message, as the hook fills them."""

    cgroups_path: str
    root_dir: str
    annotations: dict[str, str]
    meta: ContainerMeta
    container_id: str
    mounts: tuple[dict[str, Any], ...] = ()


def hook_request(state: OciState, cwd: str) -> HookRequest:
    """What to tell the agent about the container being created (SpecError when nothing usable)."""
    config = find_config(state, cwd)
    spec = load_spec(config)
    annotations = {**_strings(spec.get("annotations")), **state.annotations}
    linux = spec.get("linux") or {}
    cgroups = cgroup_path(str(linux.get("cgroupsPath") or "")) if isinstance(linux, dict) else ""
    if not cgroups:
        raise SpecError(f"{config}: no linux.cgroupsPath: the container's cgroup cannot be named")
    meta = ContainerMeta.of(annotations)
    mounts = tuple(m for m in spec.get("mounts") or () if isinstance(m, dict))
    return HookRequest(
        cgroups_path=cgroups,
        root_dir=root_dir(spec, state.bundle or str(config.parent)),
        annotations=annotations,
        meta=meta,
        container_id=meta.container_id or state.container_id,
        mounts=mounts,
    )


def to_proto(req: HookRequest) -> Any:
    """The RuntimeHookRequest message (protobuf imported here: the parsing above needs none)."""
    from tetragon.api.gen.tetragon import tetragon_pb2

    meta = req.meta
    create = tetragon_pb2.CreateContainer(
        cgroupsPath=req.cgroups_path,
        rootDir=req.root_dir,
        annotations=req.annotations,
        containerName=meta.container_name,
        containerID=req.container_id,
        podName=meta.pod_name,
        podUID=meta.pod_uid,
        podNamespace=meta.pod_namespace,
        containerImage=meta.image,
        mounts=[
            tetragon_pb2.Mount(
                destination=str(m.get("destination", "")),
                type=str(m.get("type", "")),
                source=str(m.get("source", "")),
                options=[str(o) for o in m.get("options") or ()],
            )
            for m in req.mounts
        ],
    )
    return tetragon_pb2.RuntimeHookRequest(createContainer=create)
