"""`tetragon-operator serve`: Tetragon's operator flags, its config directory, leader election."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tests.k8s_apiserver import eventually, write_kubeconfig
from tests.unit.test_k8s_leader import LEASE, NAMESPACE, LeaseServer
from tetragon.k8s import operator_cli


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
