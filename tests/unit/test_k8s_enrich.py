"""Pods on process events (k8s/enrich.py) from recorded Kubernetes API documents.

The pod source is the agent's own (`PodSource` with --enable-k8s-api and a kubeconfig) talking to the
recording server of test_k8s_pods.py over real HTTP; processes are made by the agent's ProcessEvents
from exec records whose cgroup leaf names a container of a recorded pod. No API server runs here: the
real-runtime side is tests/e2e/test_k8s_pods.py (containerd through CRI).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.k8s_apiserver import FakeApiServer, eventually, write_kubeconfig
from tests.unit.test_k8s_pods import DATA, DEBUG, WEB_NGINX
from tetragon.config import AgentConfig
from tetragon.jsontypes import Event
from tetragon.k8s.enrich import PodEnricher, PodSource
from tetragon.k8s.podinfo import pod_from_json
from tetragon.k8s.pods import PodCache
from tetragon.process.cache import ProcessCache
from tetragon.process.events import ProcessEvents, ProcessOptions
from tetragon.process.model import ExecInfo, ExitRecord

WEB_UID = "0f8d5e4c-2b1e-4a8e-9f1e-3c5d2a7b6e10"


def _exec(pid: int, container: str, ppid: int = 1, nspid: int = 7) -> ExecInfo:
    return ExecInfo(
        ktime=1_000_000 + pid,
        pid=pid,
        tid=pid,
        ppid=ppid,
        nspid=nspid,
        binary="/usr/sbin/nginx",
        argv=["nginx", "-g", "daemon off;"],
        cwd="/",
        cgroup_name=f"cri-containerd-{container}.scope" if container else "user.slice",
    )


def _processes(enricher: PodEnricher | None) -> ProcessEvents:
    options = ProcessOptions(node_name="node1", pod_of=enricher.pod_of if enricher is not None else None)
    events = ProcessEvents(enricher.processes if enricher is not None else ProcessCache(), options)
    events.seed_procfs([])
    return events


@pytest.fixture
def apiserver() -> Iterator[FakeApiServer]:
    server = FakeApiServer()
    server.pod_list = json.loads((DATA / "pods-list.json").read_text())
    server.watch_events = (DATA / "pods-watch.jsonl").read_text().splitlines()
    yield server
    server.stop()


def test_exec_in_a_pod_from_the_api_carries_it(apiserver: FakeApiServer, tmp_path: Path) -> None:
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", apiserver.port)
    config = AgentConfig(enable_k8s_api=True, k8s_kubeconfig_path=str(kubeconfig))
    source = PodSource(config, "node1", ProcessCache())
    source.start()
    try:
        events = _processes(source.enricher)
        process = events.on_exec(_exec(4242, WEB_NGINX))["process_exec"]["process"]
        assert process["docker"] == WEB_NGINX[:31]
        # exactly the pod test_k8s_pods checks field by field, with the pid inside the container
        expected, got = _web().pod_json(WEB_NGINX[:31], pid=7), dict(process["pod"])
        labels, listed = got.pop("pod_labels"), expected.pop("pod_labels")
        assert got == expected
        # the watch's MODIFIED (label version=2) may land before this exec: either state is right
        assert labels in (listed, {**listed, "version": "2"})
        assert process["pod"]["uid"] == WEB_UID and process["pod"]["container"]["pid"] == 7
        assert list(process)[list(process).index("pod") + 1] == "docker"
        # a pod the watch brings later (ADDED pending, then MODIFIED with its container started)
        eventually(lambda: source.cache.by_container(DEBUG) is not None, "the watched pod")
        debug = events.on_exec(_exec(4343, DEBUG))["process_exec"]["process"]
        assert (debug["pod"]["namespace"], debug["pod"]["name"]) == ("default", "debug")
        # a host process has neither
        host = events.on_exec(_exec(4444, ""))["process_exec"]["process"]
        assert "docker" not in host and "pod" not in host
    finally:
        source.stop()


def _enricher(retries: int = 3) -> tuple[PodEnricher, list[Event]]:
    out: list[Event] = []
    enricher = PodEnricher(PodCache(), ProcessCache(), retries=retries, retry_delay=0.0)
    enricher.sink = lambda event, policy_hook: out.append(event)
    return enricher, out


def _web() -> Any:
    return pod_from_json(json.loads((DATA / "pods-list.json").read_text())["items"][0])


def test_an_exec_before_its_pod_is_known_waits_and_gets_it() -> None:
    enricher, out = _enricher()
    events = _processes(enricher)
    shell = events.on_exec(_exec(100, WEB_NGINX, nspid=1))
    assert "pod" not in shell["process_exec"]["process"]
    assert enricher.hold(shell)
    child = events.on_exec(_exec(101, WEB_NGINX, ppid=100, nspid=2))
    assert enricher.hold(child)  # the same container, still unknown
    assert enricher.tick() == 0 and out == []  # a retry that finds nothing keeps them
    enricher.pods.upsert(_web())
    enricher.tick()
    assert [e["process_exec"]["process"]["pid"] for e in out] == [100, 101]  # in order
    first, second = (e["process_exec"] for e in out)
    assert first["process"]["pod"]["container"]["pid"] == 1
    assert second["process"]["pod"]["container"]["pid"] == 2
    assert second["parent"]["pod"]["name"] == "web-7d4b9c8f6-x2x9k"
    # the cache entries have it now: later events of the process carry it without waiting
    entry = enricher.processes.by_pid(101)
    assert entry is not None and entry.head["pod"]["container"]["pid"] == 2
    exit_event = events.on_exit(ExitRecord(2_000_000, 101, 101, 0))
    assert exit_event is not None and not enricher.hold(exit_event)
    assert exit_event["process_exit"]["process"]["pod"]["uid"] == WEB_UID
    _, stats = enricher.cache_stats()
    assert (stats.inserts, stats.resolved, stats.fetch_failures) == (2, 2, 0)


def test_an_exec_whose_pod_never_comes_goes_without_after_the_retries() -> None:
    enricher, out = _enricher(retries=3)
    events = _processes(enricher)
    exec_event = events.on_exec(_exec(200, DEBUG))
    assert enricher.hold(exec_event)
    for _ in range(5):
        enricher.tick()
    assert len(out) == 1 and "pod" not in out[0]["process_exec"]["process"]
    entries, stats = enricher.cache_stats()
    assert (entries, stats.fetch_retries, stats.fetch_failures) == (0, 2, 1)


def test_a_parent_whose_pod_came_meanwhile_is_filled_without_waiting() -> None:
    enricher, out = _enricher()
    events = _processes(enricher)
    assert enricher.hold(events.on_exec(_exec(300, WEB_NGINX, nspid=1)))
    enricher.pods.upsert(_web())  # the relist came between the shell's exec and its child's
    child = events.on_exec(_exec(301, WEB_NGINX, ppid=300, nspid=2))
    assert not enricher.hold(child)
    assert child["process_exec"]["parent"]["pod"]["container"]["pid"] == 1
    enricher.flush()
    assert out[0]["process_exec"]["process"]["pod"]["name"] == "web-7d4b9c8f6-x2x9k"


def _kprobe_event(process: dict[str, Any], parent: dict[str, Any]) -> Event:
    body = {"process": dict(process), "parent": dict(parent), "function_name": "security_file_open"}
    return {"process_kprobe": body, "node_name": "node1", "time": "2026-12-07T20:00:00Z"}


def test_a_policy_event_before_its_pod_is_known_waits_and_gets_it() -> None:
    """As Tetragon's event cache does for every event kind: a kprobe event of a process whose pod is not
    known yet waits, leaves with `pod` (process and parent) once the pod is known, with its hook."""
    enricher, _ = _enricher()
    out: list[tuple[Event, Any]] = []
    enricher.sink = lambda event, policy_hook: out.append((event, policy_hook))
    events = _processes(enricher)
    enricher.hold(events.on_exec(_exec(400, WEB_NGINX, nspid=1)))
    enricher.hold(events.on_exec(_exec(401, WEB_NGINX, ppid=400, nspid=2)))
    entry, parent = enricher.processes.by_pid(401), enricher.processes.by_pid(400)
    assert entry is not None and parent is not None
    waiting = enricher.awaits_pod(entry, parent)
    assert waiting == WEB_NGINX[:31]
    enricher.hold_policy_event(_kprobe_event(entry.to_dict(), parent.to_dict()), waiting, ("p", "kprobe:f"))
    enricher.tick()
    assert out == []
    enricher.pods.upsert(_web())
    enricher.tick()
    kinds = [(next(iter(e)), hook) for e, hook in out]
    assert kinds == [("process_exec", None), ("process_exec", None), ("process_kprobe", ("p", "kprobe:f"))]
    kprobe = out[2][0]["process_kprobe"]
    assert kprobe["process"]["pod"]["container"]["pid"] == 2
    assert kprobe["parent"]["pod"]["container"]["pid"] == 1
    assert list(kprobe["process"]).index("pod") == list(kprobe["process"]).index("docker") - 1
    # known now: the next policy event of the process waits for nothing
    assert enricher.awaits_pod(entry, parent) == ""


def test_a_policy_event_whose_pod_never_comes_is_counted_under_its_type() -> None:
    enricher, out = _enricher(retries=2)
    events = _processes(enricher)
    events.on_exec(_exec(500, DEBUG))  # its exec event is not taken in here: only the kprobe waits
    entry = enricher.processes.by_pid(500)
    assert entry is not None
    waiting = enricher.awaits_pod(entry, None)
    enricher.hold_policy_event(_kprobe_event(entry.to_dict(), {}), waiting, ("p", "kprobe:f"))
    for _ in range(3):
        enricher.tick()
    assert len(out) == 1 and "pod" not in out[0]["process_kprobe"]["process"]
    _, stats = enricher.cache_stats()
    assert stats.failures_by_type == {"PROCESS_KPROBE": 1} and stats.fetch_failures == 1
    # a host process (no container) never waits
    events.on_exec(_exec(501, ""))
    host = enricher.processes.by_pid(501)
    assert host is not None and enricher.awaits_pod(host, None) == ""


def test_flags_the_agent_takes_only_as_false_are_refused_in_one_line() -> None:
    from tetragon.cli.agent_flags import check_value

    assert check_value("keep-sensors-on-exit", "false") is False
    with pytest.raises(ValueError, match="expected false .this agent does not pin its BPF programs"):
        check_value("keep-sensors-on-exit", "true")
    with pytest.raises(ValueError, match="no per-message latency histogram"):
        check_value("enable-msg-handling-latency", "1")


def test_enable_cri_without_a_runtime_socket_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tetragon.config import AgentError
    from tetragon.k8s import enrich

    monkeypatch.setattr(enrich, "DEFAULT_CRI_ENDPOINTS", (f"unix://{tmp_path}/none.sock",))
    with pytest.raises(AgentError, match="--enable-cri: no --cri-endpoint given and no runtime socket"):
        enrich.pod_source(AgentConfig(enable_cri=True), "node1", ProcessCache())
    (tmp_path / "none.sock").touch()  # a runtime socket at a default path is taken
    assert enrich.cri_endpoint("") == f"unix://{tmp_path}/none.sock"
    given = AgentConfig(enable_cri=True, cri_endpoint=f"unix://{tmp_path}/c.sock")
    assert enrich.pod_source(given, "node1", ProcessCache()) is not None


def test_an_exec_probe_is_marked_maybe_exec_probe() -> None:
    """Tetragon's getProbes/maybeExecProbe: the liveness and readiness exec commands of the container."""
    item = json.loads((DATA / "pods-list.json").read_text())["items"][0]
    nginx = next(c for c in item["spec"]["containers"] if c["name"] == "nginx")
    nginx["livenessProbe"] = {"exec": {"command": ["cat", "/tmp/healthy"]}, "periodSeconds": 5}
    nginx["readinessProbe"] = {"exec": {"command": ["/bin/sh", "-c", "test -f /ready"]}}
    enricher, _ = _enricher()
    enricher.pods.upsert(pod_from_json(item))
    events = _processes(enricher)

    def container_of(binary: str, argv: list[str], pid: int) -> dict[str, Any]:
        info = _exec(pid, WEB_NGINX)
        info.binary, info.argv = binary, argv
        return dict(events.on_exec(info)["process_exec"]["process"]["pod"]["container"])

    liveness = container_of("/bin/cat", ["cat", "/tmp/healthy"], 500)
    assert liveness["maybe_exec_probe"] is True and list(liveness)[-1] == "maybe_exec_probe"
    assert container_of("/bin/sh", ["sh", "-c", "test -f /ready"], 501)["maybe_exec_probe"] is True
    assert "maybe_exec_probe" not in container_of("/bin/cat", ["cat", "/etc/passwd"], 502)
    assert "maybe_exec_probe" not in container_of("/usr/bin/sh", ["sh", "-c", "test -f /ready"], 503)


def test_pod_takes_its_place_in_the_process_message() -> None:
    """Process field 10: after auid, before docker (11), parent_exec_id (12) and what follows."""
    from tetragon.process.cache import with_pod

    pod = {"name": "p"}
    full = {"exec_id": "e", "auid": 1, "docker": "d", "parent_exec_id": "x", "refcnt": 1, "tid": 3}
    assert list(with_pod(full, pod)) == [
        "exec_id",
        "auid",
        "pod",
        "docker",
        "parent_exec_id",
        "refcnt",
        "tid",
    ]
    assert list(with_pod({"exec_id": "e", "auid": 1, "tid": 3}, pod)) == ["exec_id", "auid", "pod", "tid"]
    assert list(with_pod({"exec_id": "e"}, pod)) == ["exec_id", "pod"]
    replaced = with_pod({"exec_id": "e", "pod": {"name": "old"}, "docker": "d"}, pod)
    assert replaced == {"exec_id": "e", "pod": pod, "docker": "d"}
