"""`tetragon-operator serve`: Tetragon's operator flags, its config directory, leader election."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.k8s_apiserver import JsonHandler, eventually, serve_local, write_kubeconfig
from tests.unit.test_k8s_leader import LEASE, NAMESPACE, LeaseServer
from tetragon.k8s import crdgen, operator_cli
from tetragon.k8s.crdinstall import as_stored, crd_name


def test_flags_as_the_chart_passes_them(tmp_path: Path) -> None:
    conf = tmp_path / "operator.conf.d"
    conf.mkdir()
    # the chart's operator ConfigMap, one file per key
    for key, value in {
        "skip-crd-creation": "false",
        "skip-pod-info-crd": "true",
        "skip-tracing-policy-crd": "false",
        "force-update-crds": "false",
    }.items():
        (conf / key).write_text(value)
    args = operator_cli.parse_args(
        [
            "serve",
            f"--config-dir={conf}",
            "--metrics-bind-address=:2113",
            "--leader-elect=true",
            "--leader-election-namespace=kube-system",
            "--leader-election-lease-duration=15s",
            "--leader-election-renew-deadline=5s",
            "--leader-election-retry-period=2s",
        ]
    )
    assert args.leader_elect is True and args.leader_election_namespace == "kube-system"
    assert (args.leader_election_lease_duration, args.leader_election_renew_deadline) == (15.0, 5.0)
    assert args.leader_election_retry_period == 2.0
    assert args.skip_pod_info_crd is True and args.skip_crd_creation is False
    with pytest.raises(SystemExit):
        operator_cli.parse_args(["serve", "--leader-election-lease-duration=soon"])


def test_serve_takes_the_lease_with_the_pod_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server = LeaseServer()
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", server.port)
    monkeypatch.setenv("POD_NAME", "tetragon-operator-5d9c7-abcde")
    monkeypatch.setenv("POD_NAMESPACE", NAMESPACE)
    args = operator_cli.parse_args(
        [
            "serve",
            f"--kube-config={kubeconfig}",
            "--metrics-bind-address=0",
            "--leader-elect",
            "--leader-election-lease-duration=3s",
            "--leader-election-renew-deadline=2s",
            "--leader-election-retry-period=0.1s",
        ]
    )
    stop = threading.Event()
    thread = threading.Thread(target=operator_cli.serve, args=(args, stop), daemon=True)
    thread.start()
    try:
        eventually(
            lambda: server.holder() == "tetragon-operator-5d9c7-abcde", "the operator holding the lease"
        )
        assert server.lease is not None and server.lease["metadata"]["name"] == LEASE
    finally:
        stop.set()
        thread.join(10)
        server.server.shutdown()
        server.server.server_close()
    assert server.holder() == ""  # released when the pod stops


class CrdServer:
    """The API's customresourcedefinitions endpoint: GET by name, POST, PUT with resourceVersion checks;
    it adds `conversion` to a stored spec, as the API server defaults it."""

    PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"

    def __init__(self) -> None:
        self.crds: dict[str, dict[str, Any]] = {}
        self.writes: list[tuple[str, str]] = []  # (method, name)
        owner = self

        class Handler(JsonHandler):
            def do_GET(self) -> None:
                name = urlsplit(self.path).path.removeprefix(CrdServer.PATH + "/")
                if name in owner.crds:
                    self.send_json(200, owner.crds[name])
                else:
                    self.send_status(404, "NotFound")

            def do_POST(self) -> None:
                crd = self._body()
                owner.store(crd, "1")
                owner.writes.append(("POST", crd["metadata"]["name"]))
                self.send_json(201, crd)

            def do_PUT(self) -> None:
                crd = self._body()
                name = crd["metadata"]["name"]
                current = owner.crds[name]["metadata"]["resourceVersion"]
                if crd["metadata"].get("resourceVersion") != current:
                    self.send_status(409, "Conflict")
                    return
                owner.store(crd, str(int(current) + 1))
                owner.writes.append(("PUT", name))
                self.send_json(200, crd)

            def _body(self) -> dict[str, Any]:
                return dict(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))

        self.server = serve_local(Handler)
        self.port = self.server.server_address[1]

    def store(self, crd: dict[str, Any], version: str) -> None:
        crd = as_stored(crd)  # JSONSchemaProps' numbers are float64
        crd["metadata"]["resourceVersion"] = version
        crd["spec"].setdefault("conversion", {"strategy": "None"})
        self.crds[crd["metadata"]["name"]] = crd

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_the_leader_installs_and_updates_the_crds(tmp_path: Path) -> None:
    server = CrdServer()
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", server.port)
    args = operator_cli.parse_args(["serve", f"--kube-config={kubeconfig}", "--skip-pod-info-crd"])
    names = [crd_name(kind) for kind in crdgen.KINDS]
    try:
        assert operator_cli.lead(args) == {"TracingPolicy": "created", "TracingPolicyNamespaced": "created"}
        for kind in crdgen.KINDS:
            ours = crdgen.custom_resource_definition(kind)["spec"]["versions"]
            assert server.crds[crd_name(kind)]["spec"]["versions"] == as_stored(ours)
        # a restart finds them current: nothing written
        assert set(operator_cli.lead(args).values()) == {"unchanged"}
        assert server.writes == [("POST", names[0]), ("POST", names[1])]
        # another schema (an older one of ours, or Tetragon's own) is replaced, from its resourceVersion
        server.crds[names[0]]["spec"]["versions"][0]["schema"] = {"openAPIV3Schema": {"type": "object"}}
        assert operator_cli.lead(args)["TracingPolicy"] == "updated"
        assert server.writes[-1] == ("PUT", names[0])
        assert server.crds[names[0]]["metadata"]["resourceVersion"] == "2"
        assert server.crds[names[0]]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["type"] == "object"
        assert (
            "spec" in server.crds[names[0]]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
        )
        # force-update-crds replaces even a current one; skip-crd-creation touches nothing
        forced = operator_cli.parse_args(["serve", f"--kube-config={kubeconfig}", "--force-update-crds"])
        done = operator_cli.lead(forced)
        assert done == {
            "TracingPolicy": "updated",
            "TracingPolicyNamespaced": "updated",
            "PodInfo": "not provided by this operator",
        }
        writes = len(server.writes)
        assert operator_cli.lead(operator_cli.parse_args(["serve", "--skip-crd-creation"])) == {}
        assert len(server.writes) == writes
    finally:
        server.stop()
