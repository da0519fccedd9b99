"""`tetragon-operator`: the cluster-wide companion of the agents (the chart's operator Deployment).

`tetragon-operator serve` takes Tetragon's operator flags. With `--leader-elect` its replicas elect
one leader on the Lease `tetragon-operator-resource-lock` (k8s/leader.py), and only the leader works.
Its work is to install the CRDs (`skip-crd-creation`, `skip-tracing-policy-crd`, `skip-pod-info-crd`,
`force-update-crds` in --config-dir): the TracingPolicy CRDs the agent's model generates, created or
brought up to date (k8s/crdinstall.py). Metrics are served on --metrics-bind-address.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
import uuid
from pathlib import Path

from kubernetes import client, config

from tetragon.cli.argtypes import go_bool, positive_duration
from tetragon.k8s.leader import LeaseElector

log = logging.getLogger("tetragon-operator")

LEASE_NAME = "tetragon-operator-resource-lock"
CONFIG_KEYS = ("skip-crd-creation", "skip-tracing-policy-crd", "skip-pod-info-crd", "force-update-crds")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tetragon-operator", description="Tetragon operator")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the operator")
    serve.add_argument("--config-dir", default="", help="directory of one-file-per-option configuration")
    serve.add_argument("--kube-config", default="", help="kubeconfig file (default: in-cluster)")
    serve.add_argument("--metrics-bind-address", default=":2113", help='Prometheus address ("0" or "": off)')
    serve.add_argument("--leader-elect", type=go_bool, nargs="?", const=True, default=False)
    serve.add_argument("--leader-election-namespace", default="", help="default: the pod's namespace")
    serve.add_argument("--leader-election-lease-duration", type=positive_duration, default=15.0)
    serve.add_argument("--leader-election-renew-deadline", type=positive_duration, default=5.0)
    serve.add_argument("--leader-election-retry-period", type=positive_duration, default=2.0)
    for key in CONFIG_KEYS:
        serve.add_argument(f"--{key}", type=go_bool, nargs="?", const=True, default=False)
    return parser


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Command line over --config-dir files (file name = option, content = value)."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.config_dir:
        from_files = []
        for path in sorted(Path(args.config_dir).iterdir()):
            if path.is_file() and not path.name.startswith("."):
                from_files.append(f"--{path.name}={path.read_text().strip()}")
        args = parser.parse_args(["serve", *from_files, *argv[1:]])
    return args


def identity() -> str:
    """This replica's name on the Lease: the pod name, else hostname plus a random suffix."""
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}_{uuid.uuid4()}"


def _api_client(kube_config: str) -> client.ApiClient:
    if kube_config:
        return config.new_client_from_config(config_file=kube_config)
    config.load_incluster_config()
    return client.ApiClient()


def _start_metrics(address: str) -> None:
    if address in ("", "0"):
        return
    from prometheus_client import start_http_server

    host, _, port = address.rpartition(":")
    start_http_server(int(port), addr=host or "0.0.0.0")


def crds_to_install(args: argparse.Namespace) -> list[str]:
    crds = [] if args.skip_crd_creation else ["TracingPolicy", "TracingPolicyNamespaced", "PodInfo"]
    if args.skip_tracing_policy_crd:
        crds = [c for c in crds if not c.startswith("TracingPolicy")]
    if args.skip_pod_info_crd:
        crds = [c for c in crds if c != "PodInfo"]
    return crds


def lead(args: argparse.Namespace) -> dict[str, str]:
    """The leader's work: the CRDs installed; what was done per kind."""
    from tetragon.k8s.crdinstall import install_crds

    crds = crds_to_install(args)
    log.info("leading; CRDs to install: %s", crds or "none")
    if not crds:
        return {}
    api = client.ApiextensionsV1Api(_api_client(args.kube_config))
    return install_crds(api, crds, args.force_update_crds)


def _lead_in_background(args: argparse.Namespace) -> None:
    """The leader's work off the elector's thread, which must keep renewing the lease meanwhile."""
    threading.Thread(target=lead, args=(args,), name="operator-lead", daemon=True).start()


def serve(args: argparse.Namespace, stop: threading.Event) -> int:
    _start_metrics(args.metrics_bind_address)
    if not args.leader_elect:
        _lead_in_background(args)
        stop.wait()
        return 0
    namespace = args.leader_election_namespace or os.environ.get("POD_NAMESPACE", "")
    if not namespace:
        raise SystemExit("tetragon-operator: --leader-election-namespace (or POD_NAMESPACE) is required")
    elector = LeaseElector(
        client.CoordinationV1Api(_api_client(args.kube_config)),
        LEASE_NAME,
        namespace,
        identity(),
        lease_duration=args.leader_election_lease_duration,
        renew_deadline=args.leader_election_renew_deadline,
        retry_period=args.leader_election_retry_period,
        on_started_leading=lambda: _lead_in_background(args),
        on_stopped_leading=lambda: log.info("no longer leading"),
    )
    elector.start()
    stop.wait()
    elector.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(sys.argv[1:] if argv is None else argv)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    return serve(args, stop)


if __name__ == "__main__":
    sys.exit(main())
