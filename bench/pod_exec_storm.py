"""Exec storm inside a container with pod enrichment on (issue 11's benchmark).

A private containerd (tests/containerd_cri.py) runs a pod through its CRI API; bench/storm.c, built
static, runs N x (fork, execve /bin/true, waitpid) inside the pod's container (started with CRI
ExecSync, as `kubectl exec` would). Runs without and with the agent alternate. The agent runs with
`--enable-k8s-api` against the API double of tests/k8s_apiserver.py, whose pod list holds the real pod
(its real container id) among `--pods` recorded-shape pods of this node, so the agent knows that many
pods while it enriches. Printed: ratio of median walls (agent / none), the storm's exec and exit
events found in the export and how many carry the pod, events lost in the kernel, agent CPU seconds,
and the agent's peak RSS (VmHWM) with the pods known; bench/results/pod_exec_storm.json.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402

from bench.exec_storm import measure_agent, settle, storm_parser, storm_result, write_result  # noqa: E402
from tests.containerd_cri import IMAGE, private_containerd, run_pod, start_container  # noqa: E402
from tests.e2e.agentproc import AgentProcess  # noqa: E402
from tests.k8s_apiserver import FakeApiServer, write_kubeconfig  # noqa: E402
from tetragon.k8s.cri import CriClient  # noqa: E402
from tetragon.k8s.gen.cri import api_pb2  # noqa: E402

POD_NAME = "storm-6c9d8b7f5-k2m4p"
POD_UID = "2d4f6a8c-0e1b-4c3d-9e5f-7a9b1c3d5e7f"
RECORDED_POD = ROOT / "tests" / "data" / "k8s" / "pods-list.json"


def build_static_storm() -> Path:
    """storm.c as a static binary: the container's image holds busybox and nothing else."""
    out = BENCH / "build" / "storm-static"
    src = BENCH / "storm.c"
    if not out.exists() or out.stat().st_mtime < src.stat().st_mtime:
        out.parent.mkdir(exist_ok=True)
        subprocess.run([shutil.which("gcc") or "cc", "-O2", "-static", "-o", str(out), str(src)], check=True)
    return out


def container_pid(container_id: str) -> int:
    """A process of the container (its cgroup path names the id)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if container_id in (entry / "cgroup").read_text():
                    return int(entry.name)
            except OSError:
                continue
    raise RuntimeError(f"no process of container {container_id[:12]}")


def prepare_container(container_id: str, storm: Path) -> None:
    """The storm binary at /tmp/storm and /bin/true (busybox) in the container's own root."""
    root = Path(f"/proc/{container_pid(container_id)}/root")
    shutil.copy(storm, root / "tmp" / "storm")
    if not (root / "bin" / "true").is_symlink():
        (root / "bin" / "true").symlink_to("busybox")


def run_storm(cri: CriClient, container_id: str, n: int) -> float:
    settle()
    request = api_pb2.ExecSyncRequest(
        container_id=container_id, cmd=["/tmp/storm", str(n), "/bin/true"], timeout=3600
    )
    reply = cri.stub.ExecSync(request, timeout=3700)
    if reply.exit_code != 0:
        raise RuntimeError(f"storm failed in the container: {reply.stderr.decode()}")
    return float(reply.stdout.decode().strip())


def pod_list(container_id: str, pods: int) -> dict[str, Any]:
    """The node's pods as the API lists them: the storm's pod and `pods - 1` others."""
    template = json.loads(RECORDED_POD.read_text())["items"][0]
    items = []
    for i in range(pods):
        pod = copy.deepcopy(template)
        meta = pod["metadata"]
        if i == 0:
            meta.update(name=POD_NAME, uid=POD_UID, namespace="bench")
            pod["spec"]["containers"][0]["name"] = pod["status"]["containerStatuses"][0]["name"] = "storm"
            cid = container_id
        else:
            meta.update(name=f"web-{i:05d}", uid=str(uuid.UUID(int=i)), namespace=f"ns-{i % 50}")
            cid = f"{i:064x}"
        pod["spec"]["containers"][0]["image"] = IMAGE
        pod["status"]["containerStatuses"][0]["containerID"] = f"containerd://{cid}"
        pod["status"]["initContainerStatuses"][0]["containerID"] = f"containerd://{i + 1:063x}f"
        items.append(pod)
    return {"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": items}


def count_events(export: Path, docker: str) -> dict[str, int]:
    """The storm's /bin/true execs and exits in the export (no rotation: one file), and those with `pod`."""
    counts = {"execs": 0, "exits": 0, "execs_with_pod": 0, "exits_with_pod": 0}
    if not export.exists():
        return counts
    for line in export.read_bytes().splitlines():
        event = orjson.loads(line)
        kind = "execs" if "process_exec" in event else "exits" if "process_exit" in event else ""
        if not kind:
            continue
        process = event["process_" + kind[:-1]]["process"]
        if process.get("docker") == docker and process.get("binary") == "/bin/true":
            counts[kind] += 1
            counts[kind + "_with_pod"] += process.get("pod", {}).get("name") == POD_NAME
    return counts


def agent_run(cri: CriClient, container_id: str, n: int, tmp: Path, kubeconfig: Path) -> dict[str, Any]:
    agent = AgentProcess(tmp, "--enable-k8s-api", "--k8s-kubeconfig-path", str(kubeconfig))
    return measure_agent(
        agent,
        lambda: run_storm(cri, container_id, n),
        lambda export: count_events(export, container_id[:31]),
        n,
    )


def main() -> int:
    ap = storm_parser("pod_exec_storm", __doc__)
    ap.add_argument("--pods", type=int, default=1000, help="pods of the node the agent knows")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("pod_exec_storm: needs root", file=sys.stderr)
        return 1
    storm = build_static_storm()
    base: list[float] = []
    runs: list[dict[str, Any]] = []
    apiserver = FakeApiServer()
    with private_containerd() as sock, CriClient(f"unix://{sock}", timeout=60) as cri:
        sandbox = run_pod(cri.stub, POD_NAME, {"app": "storm"}, uid=POD_UID, namespace="bench")
        try:
            container_id = start_container(cri, sandbox, "storm")
            prepare_container(container_id, storm)
            apiserver.pod_list = pod_list(container_id, max(1, args.pods))
            run_storm(cri, container_id, min(args.n, 500))  # warm caches
            with tempfile.TemporaryDirectory(prefix="tg-bench-") as tmpdir:
                kubeconfig = write_kubeconfig(Path(tmpdir) / "kubeconfig", apiserver.port)
                for rep in range(args.reps):
                    order = ("base", "agent") if rep % 2 == 0 else ("agent", "base")
                    for cond in order:
                        if cond == "base":
                            base.append(run_storm(cri, container_id, args.n))
                            print(f"rep {rep} base  {base[-1]:.3f}s", flush=True)
                            continue
                        r = agent_run(cri, container_id, args.n, Path(tmpdir) / f"rep{rep}", kubeconfig)
                        runs.append(r)
                        print(
                            f"rep {rep} agent {r['wall']:.3f}s execs {r['execs']}/{args.n}"
                            f" (pod {r['execs_with_pod']}) exits {r['exits']}/{args.n}"
                            f" (pod {r['exits_with_pod']}) lost {r['lost']} cpu {r['agent_cpu_s']:.2f}s"
                            f" rss {r['peak_rss_mb']:.1f}MB",
                            flush=True,
                        )
        finally:
            cri.stub.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=sandbox[0]), timeout=60)
            cri.stub.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=sandbox[0]), timeout=60)
            apiserver.stop()
    result = storm_result("pod_exec_storm", args.n, base, runs, pods_known=args.pods)
    with_pod = result["events_with_pod_per_run"] = [r["execs_with_pod"] + r["exits_with_pod"] for r in runs]
    write_result(result, Path(args.out), f" ({min(with_pod)} with the pod)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
