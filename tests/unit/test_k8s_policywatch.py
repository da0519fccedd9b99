"""TracingPolicy objects from the Kubernetes API into the policy manager (k8s/policywatch.py).

The watcher talks over real HTTP, with the official client, to an API double serving documents in the
API's JSON format (tests/data/k8s/tracingpolicies-*); the manager is the real PolicyManager (parse,
checks, compile, pod scope) with only its BPF load left out, as in test_sensors_manager.py: no API server
and no root here.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from kubernetes import client

from tests.k8s_apiserver import FakeApiServer, JsonHandler, eventually, local_api_client, serve_local
from tests.unit.test_k8s_pods import DATA
from tetragon.k8s.policyfilter import PolicyFilter
from tetragon.k8s.policyreport import PolicyEventReporter
from tetragon.k8s.policywatch import CrdWatcher, PolicyObjects
from tetragon.sensors.manager import PolicyManager

FEATURES = {"tracepoint": True, "raw_tp": True, "uprobe": True, "signal": True, "kprobe": False}


class FakeCrdServer:
    """Serves /apis/cilium.io/v1alpha1/<plural>: a list (then the relist after the first watch), and
    the recorded watch stream once (later watches stay open, empty, until their timeout)."""

    def __init__(self, lists: dict[str, list[dict[str, Any]]], watch: dict[str, list[str]]) -> None:
        self.lists = lists
        self.watch = watch
        self.queries: list[tuple[str, dict[str, list[str]]]] = []
        owner = self

        class Handler(JsonHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                plural = url.path.rsplit("/", 1)[-1]
                query = parse_qs(url.query)
                owner.queries.append((plural, query))
                if not url.path.startswith("/apis/cilium.io/v1alpha1/") or plural not in owner.lists:
                    self.send_error(404)
                elif query.get("watch") == ["true"]:
                    owner.stream(self, owner.watch.pop(plural, []), float(query["timeoutSeconds"][0]))
                else:
                    docs = owner.lists[plural]
                    self.send_json(200, docs.pop(0) if len(docs) > 1 else docs[0], close=True)

        self.server = serve_local(Handler)
        self.port = self.server.server_address[1]

    def stream(self, handler: BaseHTTPRequestHandler, lines: list[str], timeout: float) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.send_header("Connection", "close")
        handler.end_headers()
        for line in lines:
            data = (line + "\n").encode()
            handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            handler.wfile.flush()
        if not lines:
            time.sleep(min(timeout, 0.5))
        handler.wfile.write(b"0\r\n\r\n")

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _doc(name: str) -> Any:
    return json.loads((DATA / name).read_text())


@pytest.fixture
def manager(monkeypatch: pytest.MonkeyPatch) -> PolicyManager:
    monkeypatch.setattr(PolicyManager, "_load", lambda self, entry: None)  # no BPF in unit tests
    return PolicyManager(
        lambda: {}, FEATURES, pod_filter=PolicyFilter(lambda: [], cgroup_root="/sys/fs/cgroup")
    )


@pytest.fixture
def server() -> Iterator[FakeCrdServer]:
    srv = FakeCrdServer(
        {
            "tracingpolicies": [_doc("tracingpolicies-list.json"), _doc("tracingpolicies-relist.json")],
            "tracingpoliciesnamespaced": [_doc("tracingpoliciesnamespaced-list.json")],
        },
        {"tracingpolicies": (DATA / "tracingpolicies-watch.jsonl").read_text().splitlines()},
    )
    yield srv
    srv.stop()


def _loaded(manager: PolicyManager) -> dict[tuple[str, str], int]:
    return {(s.namespace, s.name): s.id for s in manager.list()}


def test_watch_applies_added_modified_deleted_and_relists(
    manager: PolicyManager, server: FakeCrdServer
) -> None:
    objects = PolicyObjects(manager)
    api = client.CustomObjectsApi(local_api_client(server.port))
    watchers = [
        CrdWatcher(api, kind, objects, watch_timeout=1, retry_delay=0.05)
        for kind in ("TracingPolicy", "TracingPolicyNamespaced")
    ]
    for w in watchers:
        w.start()
    try:
        # list → exec-a; watch: exec-b added then changed, exec-a status-only then deleted, bad-op
        # refused; 410 Gone → relist: exec-b (as changed) and exec-c, bad-op gone
        eventually(lambda: watchers[0].lists >= 2 and ("", "exec-c") in _loaded(manager), "the relist")
        eventually(lambda: ("web", "web-exec") in _loaded(manager), "the namespaced policy")
    finally:
        for w in watchers:
            w.stop()
    loaded = _loaded(manager)
    assert set(loaded) == {("", "exec-b"), ("", "exec-c"), ("web", "web-exec")}
    # exec-b was replaced once (its spec changed) and not reloaded by the relist of the same spec
    assert loaded[("", "exec-b")] < loaded[("", "exec-c")]
    spec = manager._policies[("exec-b", "")].policy.spec
    assert spec.tracepoints[0].event == "sched_process_exit"
    assert objects.errors == {}  # bad-op was deleted from the API by the relist
    watch_queries = [q for plural, q in server.queries if plural == "tracingpolicies" and "watch" in q]
    assert watch_queries[0]["resourceVersion"] == ["100"]
    assert watch_queries[1]["resourceVersion"] == ["300"]


def test_bad_object_is_reported_and_others_unaffected(manager: PolicyManager) -> None:
    objects = PolicyObjects(manager)
    lines = [json.loads(line) for line in (DATA / "tracingpolicies-watch.jsonl").read_text().splitlines()]
    objects.replace("TracingPolicy", _doc("tracingpolicies-list.json")["items"])
    ids = []
    for event in lines[:4]:  # up to ADDED bad-op
        objects.apply(event["type"], "TracingPolicy", event["object"])
        ids.append(dict(_loaded(manager)))
    assert ids[1] == ids[0]  # a status-only MODIFIED does not reload exec-a
    assert ids[2][("", "exec-b")] > ids[1][("", "exec-b")]  # a spec change replaces exec-b
    assert set(_loaded(manager)) == {("", "exec-a"), ("", "exec-b")}
    error = objects.error("TracingPolicy", "", "bad-op")
    assert error is not None and "Bogus" in error
    objects.apply("MODIFIED", "TracingPolicy", lines[3]["object"])  # the same bad spec: not retried
    objects.apply(lines[4]["type"], "TracingPolicy", lines[4]["object"])
    assert set(_loaded(manager)) == {("", "exec-b")}


def _bad_update(obj: dict[str, Any], version: str) -> dict[str, Any]:
    """The object with a spec the agent refuses (an operator that does not exist) at `version`."""
    bad = json.loads(json.dumps(obj))
    bad["metadata"].update(resourceVersion=version, generation=bad["metadata"]["generation"] + 1)
    bad["spec"]["tracepoints"][0]["selectors"] = [
        {"matchArgs": [{"index": 0, "operator": "Bogus", "values": ["1"]}]}
    ]
    return bad


@pytest.fixture
def apiserver() -> Iterator[FakeApiServer]:
    server = FakeApiServer()
    yield server
    server.stop()


def test_a_bad_update_keeps_the_loaded_version_and_is_posted_as_an_event(
    manager: PolicyManager, apiserver: FakeApiServer
) -> None:
    """The new spec is checked before the old one is unloaded: the old one never stops (same id, same
    spec); the error is a Warning Event on the object, as `kubectl describe` shows it."""
    reporter = PolicyEventReporter(client.CoreV1Api(local_api_client(apiserver.port)), "node1")
    objects = PolicyObjects(manager, reporter)
    exec_a = _doc("tracingpolicies-list.json")["items"][0]
    web = _doc("tracingpoliciesnamespaced-list.json")["items"][0]
    objects.replace("TracingPolicy", [exec_a])
    objects.replace("TracingPolicyNamespaced", [web])
    before = _loaded(manager)
    objects.apply("MODIFIED", "TracingPolicy", _bad_update(exec_a, "150"))
    assert _loaded(manager) == before  # not reloaded: its BPF programs never went away
    assert manager._policies[("exec-a", "")].policy.spec.tracepoints[0].selectors[0].match_args == []
    error = objects.error("TracingPolicy", "", "exec-a")
    assert error is not None and "Bogus" in error
    event = apiserver.posted[-1]
    assert event["involvedObject"] == {
        "apiVersion": "cilium.io/v1alpha1",
        "kind": "TracingPolicy",
        "name": "exec-a",
        "uid": exec_a["metadata"]["uid"],
        "resourceVersion": "150",
    }
    assert event["metadata"] == {"generateName": "exec-a.", "namespace": "default"}  # cluster-scoped
    assert (event["type"], event["reason"]) == ("Warning", "TracingPolicyUpdateRefused")
    assert event["message"] == f"node node1: {error}; the previous version stays loaded"
    assert (event["source"], event["reportingInstance"]) == (
        {"component": "tetragon", "host": "node1"},
        "node1",
    )
    # the same bad spec again (a relist) is not reported twice; a good update replaces the old one
    objects.apply("MODIFIED", "TracingPolicy", _bad_update(exec_a, "151"))
    assert len(apiserver.posted) == 1
    fixed = json.loads(json.dumps(exec_a))
    fixed["spec"]["tracepoints"][0]["event"] = "sched_process_exit"
    objects.apply("MODIFIED", "TracingPolicy", fixed)
    assert _loaded(manager)[("", "exec-a")] > before[("", "exec-a")]
    assert objects.error("TracingPolicy", "", "exec-a") is None
    # a namespaced object's Event is in its namespace; a new bad object was never loaded
    objects.apply("MODIFIED", "TracingPolicyNamespaced", _bad_update(web, "250"))
    assert apiserver.posted[-1]["metadata"]["namespace"] == "web"
    assert apiserver.posted[-1]["involvedObject"]["namespace"] == "web"
    assert ("web", "web-exec") in _loaded(manager)
    new_bad = _bad_update({**exec_a, "metadata": {**exec_a["metadata"], "name": "new-bad"}}, "160")
    objects.apply("ADDED", "TracingPolicy", new_bad)
    assert apiserver.posted[-1]["reason"] == "TracingPolicyRefused"
    assert not apiserver.posted[-1]["message"].endswith("stays loaded")
    assert ("", "new-bad") not in _loaded(manager)


def test_an_update_that_fails_to_load_brings_the_previous_version_back(
    manager: PolicyManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checked fine but refused by the kernel (the verifier, an attach): the old version is loaded again."""
    from tetragon.policy.errors import PolicyError

    objects = PolicyObjects(manager)
    exec_a = _doc("tracingpolicies-list.json")["items"][0]
    objects.replace("TracingPolicy", [exec_a])

    def load(self: PolicyManager, entry: Any) -> None:
        if entry.policy.spec.tracepoints[0].event == "sched_process_exit":
            raise PolicyError("sched_process_exit: attach failed")

    monkeypatch.setattr(PolicyManager, "_load", load)
    changed = json.loads(json.dumps(exec_a))
    changed["spec"]["tracepoints"][0]["event"] = "sched_process_exit"
    objects.apply("MODIFIED", "TracingPolicy", changed)
    assert manager._policies[("exec-a", "")].policy.spec.tracepoints[0].event == "sched_process_exec"
    assert "attach failed" in (objects.error("TracingPolicy", "", "exec-a") or "")


def test_an_unexpected_failure_of_one_object_does_not_stop_the_list(
    manager: PolicyManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fault that is no PolicyError (a bug of ours) is recorded for that object; the objects listed
    after it are still applied, and the watch does not fail into an endless relist."""
    items = _doc("tracingpolicies-list.json")["items"]
    first = items[0]["metadata"]["name"]
    add = manager.add

    def failing_add(text: str, **kw: Any) -> Any:
        if f'"name": "{first}"' in text:
            raise RuntimeError("injected")
        return add(text, **kw)

    monkeypatch.setattr(manager, "add", failing_add)
    objects = PolicyObjects(manager)
    second = json.loads(json.dumps(items[0]))
    second["metadata"]["name"] = "after-the-failure"
    objects.replace("TracingPolicy", [items[0], second])
    assert ("", "after-the-failure") in _loaded(manager)
    assert objects.error("TracingPolicy", "", first) == "internal error: injected"
