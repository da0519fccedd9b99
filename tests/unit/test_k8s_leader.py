"""Leader election on a Lease, against an API server double on 127.0.0.1 that keeps one Lease
with resourceVersion checks (409 on a stale write), as the real one does."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from tests.k8s_apiserver import JsonHandler, eventually, local_api_client, serve_local
from tetragon.k8s.leader import LeaseElector

NAMESPACE = "kube-system"
LEASE = "tetragon-operator-resource-lock"
PATH = f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases"


class LeaseServer:
    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.version = 0
        self.down = False  # an outage: every request fails with 503
        self.lock = threading.Lock()
        owner = self

        class Handler(JsonHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                path = self.path.split("?")[0]
                with owner.lock:
                    if owner.down:
                        return self.send_status(503, "ServiceUnavailable")
                    if self.command == "GET" and path == f"{PATH}/{LEASE}" and owner.lease:
                        return self.send_json(200, owner.lease)
                    if self.command == "POST" and path == PATH:
                        if owner.lease is not None:
                            return self.send_status(409, "AlreadyExists")
                        return self.send_json(201, owner.store(body))
                    if self.command == "PUT" and path == f"{PATH}/{LEASE}":
                        current = owner.lease["metadata"]["resourceVersion"] if owner.lease else None
                        if body["metadata"].get("resourceVersion") != current:
                            return self.send_status(409, "Conflict")
                        return self.send_json(200, owner.store(body))
                return self.send_status(404, "NotFound")

            do_GET = do_POST = do_PUT = _handle

        self.server = serve_local(Handler)
        self.port = self.server.server_address[1]

    def store(self, obj: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        obj = {**obj, "kind": "Lease", "apiVersion": "coordination.k8s.io/v1"}
        obj["metadata"] = {**obj["metadata"], "resourceVersion": str(self.version)}
        self.lease = obj
        return obj

    def holder(self) -> str:
        with self.lock:
            return (self.lease or {}).get("spec", {}).get("holderIdentity") or ""

    def api(self) -> client.CoordinationV1Api:
        return client.CoordinationV1Api(local_api_client(self.port))


@pytest.fixture
def server() -> Iterator[LeaseServer]:
    srv = LeaseServer()
    yield srv
    srv.server.shutdown()
    srv.server.server_close()


def _elector(server: LeaseServer, identity: str, log: list[str]) -> LeaseElector:
    return LeaseElector(
        server.api(),
        LEASE,
        NAMESPACE,
        identity,
        lease_duration=0.8,
        renew_deadline=0.4,
        retry_period=0.1,
        on_started_leading=lambda: log.append(f"{identity} leads"),
        on_stopped_leading=lambda: log.append(f"{identity} stops"),
    )


def _leader_and_candidate(server: LeaseServer, log: list[str]) -> tuple[LeaseElector, LeaseElector]:
    """op-a leading, op-b trying meanwhile (and failing while op-a renews)."""
    a, b = _elector(server, "op-a", log), _elector(server, "op-b", log)
    a.start()
    eventually(a.leading.is_set, "op-a leading")
    b.start()
    time.sleep(0.5)
    return a, b


def test_one_leader_and_failover_after_a_crash(server: LeaseServer) -> None:
    log: list[str] = []
    a, b = _leader_and_candidate(server, log)
    assert not b.leading.is_set() and server.holder() == "op-a"
    assert server.lease is not None and server.lease["spec"]["leaseDurationSeconds"] == 1
    # a dies without releasing: b takes over once the record has not changed for the lease duration
    crashed = time.monotonic()
    a.stop(release=False)
    eventually(b.leading.is_set, "op-b taking over")
    assert time.monotonic() - crashed >= 0.8 - 0.1
    assert server.holder() == "op-b" and server.lease["spec"]["leaseTransitions"] == 1
    b.stop()
    assert server.holder() == ""  # released on a clean stop
    assert log == ["op-a leads", "op-a stops", "op-b leads", "op-b stops"]


def test_clean_stop_hands_over_at_once(server: LeaseServer) -> None:
    a, b = _leader_and_candidate(server, [])
    stopped = time.monotonic()
    a.stop()
    eventually(b.leading.is_set, "op-b taking over")
    assert time.monotonic() - stopped < 0.8  # no need to wait for the lease to expire
    b.stop()


def test_leader_steps_down_when_it_cannot_renew(server: LeaseServer) -> None:
    log: list[str] = []
    a = _elector(server, "op-a", log)
    a.start()
    eventually(a.leading.is_set, "op-a leading")
    server.down = True
    eventually(lambda: not a.leading.is_set(), "op-a stepping down")
    assert log == ["op-a leads", "op-a stops"]
    server.down = False
    eventually(a.leading.is_set, "op-a leading again")  # its own record: it may take it back
    a.stop()


def test_timings_must_be_ordered() -> None:
    with pytest.raises(ValueError):
        LeaseElector(client.CoordinationV1Api(), LEASE, NAMESPACE, "x", lease_duration=5, renew_deadline=5)
