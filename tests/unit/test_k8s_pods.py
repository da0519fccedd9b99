"""The pod watcher against recorded API documents served over real HTTP from 127.0.0.1.

The official client talks to a small server that answers like the API server: the node's pod list,
then a watch stream (chunked JSON lines) held open until it times out; the server is stopped for an
outage and started again on the same port with what changed meanwhile.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.k8s_apiserver import (
    FakeApiServer,
    eventually,
    local_api_client,
)
from tetragon.k8s.podinfo import pod_from_json, split_container_id, workload_of
from tetragon.k8s.pods import PodCache, PodWatcher

DATA = Path(__file__).resolve().parents[1] / "data" / "k8s"
WEB_NGINX = "3f5c1e6a9b0d4e2f8a7c6b5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f"
WEB_INIT = "7e1d2c3b4a5f6e7d8c9b0a1f2e3d4c5b6a7f8e9d0c1b2a3f4e5d6c7b8a9f0e1d"
REPORT = "9d2e4b7a1c3f5e6d8b0a2c4e6f8a1b3d5c7e9f0a2b4c6d8e1f3a5b7c9d0e2f4a"
DEBUG = "c0ffee00112233445566778899aabbccddeeff00112233445566778899aabbcc"
API = "d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2"


def _api(port: int) -> client.CoreV1Api:
    return client.CoreV1Api(local_api_client(port))


def _load(name: str) -> Any:
    return json.loads((DATA / name).read_text())


@pytest.fixture
def apiserver() -> Iterator[FakeApiServer]:
    server = FakeApiServer()
    server.pod_list = _load("pods-list.json")
    yield server
    server.stop()


def test_pod_from_recorded_json() -> None:
    web, report = (pod_from_json(item) for item in _load("pods-list.json")["items"])
    assert (web.namespace, web.name, web.workload, web.workload_kind) == (
        "shop",
        "web-7d4b9c8f6-x2x9k",
        "web",
        "Deployment",
    )
    assert [(c.name, c.init, c.runtime) for c in web.containers] == [
        ("migrate", True, "containerd"),
        ("nginx", False, "containerd"),
    ]
    assert (report.workload, report.workload_kind) == ("report", "CronJob")
    assert web.pod_json(WEB_NGINX[:31], pid=1) == {
        "namespace": "shop",
        "name": "web-7d4b9c8f6-x2x9k",
        "uid": "0f8d5e4c-2b1e-4a8e-9f1e-3c5d2a7b6e10",
        "container": {
            "id": f"containerd://{WEB_NGINX}",
            "name": "nginx",
            "image": {
                "id": "docker.io/library/nginx@sha256:" + "ab" * 32,
                "name": "docker.io/library/nginx:1.27",
            },
            "start_time": "2026-12-07T09:15:04Z",
            "pid": 1,
        },
        "pod_labels": {"app": "web", "pod-template-hash": "7d4b9c8f6"},
        "workload": "web",
        "workload_kind": "Deployment",
    }
    assert workload_of({"name": "debug"}) == ("debug", "Pod")
    assert workload_of(
        {"name": "x", "ownerReferences": [{"kind": "DaemonSet", "name": "ds", "controller": True}]}
    ) == (
        "ds",
        "DaemonSet",
    )
    assert split_container_id("cri-o://abc") == ("cri-o", "abc")
    assert split_container_id("") == ("", "")


def test_cache_indexes_by_uid_and_container_prefix() -> None:
    cache = PodCache()
    cache.replace([pod_from_json(item) for item in _load("pods-list.json")["items"]])
    web = cache.by_container(WEB_NGINX[:31])
    assert web is not None and web.name == "web-7d4b9c8f6-x2x9k"
    assert cache.by_container(WEB_INIT) is web
    assert cache.by_uid(web.uid) is web
    assert cache.by_container(WEB_NGINX[:31] + "0") is None  # the rest of the id must match too
    cache.delete(web.uid)
    assert len(cache) == 1 and cache.by_uid(web.uid) is None
    # late events of a deleted pod's containers still find it, within the deleted-pods LRU
    assert cache.by_container(WEB_NGINX) is web


def test_deleted_pods_are_kept_in_a_bounded_lru() -> None:
    cache = PodCache(deleted_size=1)
    web, report = (pod_from_json(item) for item in _load("pods-list.json")["items"])
    cache.replace([web, report])
    cache.replace([report])  # web is gone from a relist: its two containers go to the LRU of one entry
    assert cache.by_container(WEB_NGINX) is web and cache.by_container(WEB_INIT) is None
    cache.delete(report.uid)
    assert cache.by_container(REPORT) is report and cache.by_container(WEB_NGINX) is None
    assert PodCache(deleted_size=0).by_container(REPORT) is None


def test_list_watch_outage_and_relist(apiserver: FakeApiServer) -> None:
    apiserver.watch_events = (DATA / "pods-watch.jsonl").read_text().splitlines()
    seen: list[tuple[str, str]] = []
    watcher = PodWatcher(
        _api(apiserver.port),
        "node1",
        watch_timeout=30,
        retry_delay=0.05,
        max_retry_delay=0.2,
        on_event=lambda kind, pod: seen.append((kind, pod.name)),
    )
    cache = watcher.cache
    watcher.start()
    try:
        assert watcher.synced.wait(10)
        # the watch: a pending pod, then its container starts; a label changes; a pod is deleted
        eventually(lambda: cache.by_uid("1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f") is None, "the DELETED event")
        assert seen == [
            ("ADDED", "debug"),
            ("MODIFIED", "debug"),
            ("MODIFIED", "web-7d4b9c8f6-x2x9k"),
            ("DELETED", "report-29420100-q8z7w"),
        ]
        debug = cache.by_container(DEBUG[:31])
        assert debug is not None and (debug.workload, debug.workload_kind) == ("debug", "Pod")
        web = cache.by_container(WEB_NGINX)
        assert web is not None and web.labels["version"] == "2"
        assert cache.by_uid("1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f") is None
        assert all(q.get("fieldSelector") == ["spec.nodeName=node1"] for q in apiserver.queries)
        watch_query = [q for q in apiserver.queries if q.get("watch") == ["true"]][0]
        assert watch_query["resourceVersion"] == ["1003"]

        # API outage: the server goes away; when it is back the watcher lists again
        port = apiserver.port
        apiserver.stop()
        time.sleep(0.3)
        assert len(cache) == 2  # what was known stays known during the outage
        back = FakeApiServer(port)
        try:
            back.pod_list = _load("pods-relist.json")
            eventually(lambda: cache.by_container(API) is not None, "the relist after the outage")
            assert cache.by_uid("2b3c4d5e-6f70-4812-9a3b-4c5d6e7f8091") is None  # deleted during the outage
            assert cache.by_container(DEBUG) is not None  # but its late events still find it
            assert {p.name for p in cache.pods()} == {"web-7d4b9c8f6-x2x9k", "api-5f6c7d8e9-m4n5p"}
            assert watcher.lists >= 2
            eventually(
                lambda: any(q.get("resourceVersion") == ["2002"] for q in back.queries), "the new watch"
            )
        finally:
            watcher.stop()
            back.stop()
    finally:
        watcher.stop()


def test_expired_watch_lists_again(apiserver: FakeApiServer) -> None:
    apiserver.watch_events = (DATA / "watch-expired.jsonl").read_text().splitlines()
    watcher = PodWatcher(_api(apiserver.port), "node1", watch_timeout=30, retry_delay=0.05)
    watcher.start()
    try:
        eventually(lambda: watcher.lists >= 3, "relists after 410 Gone")
        assert len(watcher.cache) == 2
    finally:
        watcher.stop()
