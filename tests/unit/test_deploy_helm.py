"""The Helm chart deploy/helm/tetragon: lints and renders with Helm's own engine, every rendered
manifest validates against the Kubernetes schemas, and the values mean what they mean in Tetragon's chart.

Helm's Go library comes from `helm-sdkpy` (installed with --ignore-requires-python: it declares Python
3.12 but works on 3.11). It has no `helm template`; its Install renders the chart and returns the
manifest, so the test installs into a minimal API server on 127.0.0.1 that answers discovery and
accepts every object it is sent.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.k8s_apiserver import JsonHandler, serve_local, write_kubeconfig

helm = pytest.importorskip("helm_sdkpy", reason="helm-sdkpy: pip install --ignore-requires-python helm-sdkpy")
kubernetes_validate = pytest.importorskip("kubernetes_validate")

CHART = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "tetragon"
NAMESPACE = "kube-system"
K8S_VERSION = "1.33.0"
_VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]
# group/version -> (plural, kind, namespaced): what the fake API server says it serves
RESOURCES = {
    "v1": [
        ("configmaps", "ConfigMap", True),
        ("services", "Service", True),
        ("serviceaccounts", "ServiceAccount", True),
        ("secrets", "Secret", True),
        ("namespaces", "Namespace", False),
    ],
    "apps/v1": [("daemonsets", "DaemonSet", True), ("deployments", "Deployment", True)],
    "rbac.authorization.k8s.io/v1": [
        ("clusterroles", "ClusterRole", False),
        ("clusterrolebindings", "ClusterRoleBinding", False),
        ("roles", "Role", True),
        ("rolebindings", "RoleBinding", True),
    ],
    "coordination.k8s.io/v1": [("leases", "Lease", True)],
    "apiextensions.k8s.io/v1": [("customresourcedefinitions", "CustomResourceDefinition", False)],
    "monitoring.coreos.com/v1": [("servicemonitors", "ServiceMonitor", True)],
}


def _resource_list(group_version: str) -> dict[str, Any]:
    resources = [
        {"name": plural, "singularName": "", "namespaced": namespaced, "kind": kind, "verbs": _VERBS}
        for plural, kind, namespaced in RESOURCES[group_version]
    ]
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }


def _group_list() -> dict[str, Any]:
    groups = []
    for group_version in RESOURCES:
        if "/" in group_version:
            group, version = group_version.split("/")
            entry = {"groupVersion": group_version, "version": version}
            groups.append({"name": group, "versions": [entry], "preferredVersion": entry})
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


CREATED_CRDS: list[dict[str, Any]] = []  # what Helm's install created from the chart's crds/


class _Handler(JsonHandler):
    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path = self.path.split("?")[0]
        major, minor, _ = K8S_VERSION.split(".")
        if path == "/version":
            self.send_json(200, {"major": major, "minor": minor, "gitVersion": f"v{K8S_VERSION}"})
        elif path == "/api":
            self.send_json(200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})
        elif path == "/api/v1":
            self.send_json(200, _resource_list("v1"))
        elif path == "/apis":
            self.send_json(200, _group_list())
        elif path.startswith("/apis/") and path.count("/") == 3 and path[6:] in RESOURCES:
            self.send_json(200, _resource_list(path[6:]))
        elif self.command == "GET" and "labelSelector=" in self.path:
            self.send_json(200, {"kind": "List", "apiVersion": "v1", "metadata": {}, "items": []})
        elif self.command in ("POST", "PUT"):
            # Helm stores its release record as a protobuf Secret; everything else arrives as JSON
            try:
                obj = json.loads(body)
            except ValueError:
                obj = {"kind": "Secret", "apiVersion": "v1", "metadata": {"name": "release"}}
            if obj.get("kind") == "CustomResourceDefinition":
                CREATED_CRDS.append(obj)
            self.send_json(201, obj)
        else:
            self.send_json(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404})

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer


@pytest.fixture(scope="module")
def kubeconfig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = serve_local(_Handler)
    yield str(write_kubeconfig(tmp_path_factory.mktemp("kube") / "config", server.server_address[1]))
    server.shutdown()
    server.server_close()


_RENDERED: dict[str, str] = {}


def render(kubeconfig: str, values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The chart's manifests as Helm renders them for an install with these values (each set once)."""
    key = json.dumps(values or {}, sort_keys=True)
    if key not in _RENDERED:
        config = helm.Configuration(namespace=NAMESPACE, kubeconfig=kubeconfig)
        release = asyncio.run(
            helm.Install(config).run("tetragon", str(CHART), values=values or {}, wait=False)
        )
        _RENDERED[key] = release["manifest"]
    return [doc for doc in yaml.safe_load_all(_RENDERED[key]) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in by_kind(docs, kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} rendered"
    return found[0]


def test_install_creates_the_crds(kubeconfig: str) -> None:
    from tetragon.k8s import crdgen
    from tetragon.k8s.crdinstall import as_stored

    render(kubeconfig)
    created = {crd["metadata"]["name"]: crd for crd in CREATED_CRDS}
    assert set(created) == {"tracingpolicies.cilium.io", "tracingpoliciesnamespaced.cilium.io"}
    # Helm sends the numbers as Go float64s, as the API server keeps them
    expected = crdgen.custom_resource_definition("TracingPolicy")
    assert as_stored(created["tracingpolicies.cilium.io"]) == as_stored(expected)


def test_agent_may_post_events_about_policies(kubeconfig: str) -> None:
    role = one(render(kubeconfig), "ClusterRole", "tetragon")
    assert {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]} in role["rules"]


def test_chart_lints_clean() -> None:
    result = asyncio.run(helm.Lint(helm.Configuration(namespace=NAMESPACE)).run(str(CHART)))
    assert result["Errors"] is None
    # severities: 1 info, 2 warning, 3 error
    assert all(m["Severity"] < 2 for m in result["Messages"] or [])


VARIANTS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "everything-on": {
        "tetragon": {
            "prometheus": {"serviceMonitor": {"enabled": True}},
            "cri": {"enabled": True, "socketHostPath": "/run/containerd/containerd.sock"},
            "gops": {"enabled": True},
            "pprof": {"enabled": True},
            "processAncestors": {"enabled": "base,kprobe"},
            "extraArgs": {"log-level": "debug"},
            "debug": True,
        },
        "tetragonOperator": {
            "replicas": 3,
            "failoverLease": {"enabled": True},
            "prometheus": {"serviceMonitor": {"enabled": True}},
        },
        "extraHostPathMounts": [{"name": "btf", "mountPath": "/var/lib/btf", "hostPath": "/var/lib/btf"}],
    },
    "export-and-operator-off": {"export": {"mode": ""}, "tetragonOperator": {"enabled": False}},
    # an agent with capabilities instead of privileged mode
    "capabilities": {
        "tetragon": {
            "securityContext": {
                "privileged": False,
                "capabilities": {"add": ["SYS_ADMIN", "BPF", "PERFMON", "SYS_RESOURCE", "SYS_PTRACE"]},
            }
        }
    },
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_rendered_manifest_validates_against_the_kubernetes_schemas(
    kubeconfig: str, variant: str
) -> None:
    docs = render(kubeconfig, VARIANTS[variant])
    assert docs
    for doc in docs:
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # the Prometheus operator's CRD: not in the Kubernetes schemas
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_daemonset_defaults(kubeconfig: str) -> None:
    docs = render(kubeconfig)
    ds = one(docs, "DaemonSet", "tetragon")
    pod = ds["spec"]["template"]["spec"]
    assert pod["hostPID"] is True and pod["hostNetwork"] is True and pod["dnsPolicy"] == "Default"
    assert pod["tolerations"] == [{"operator": "Exists"}]
    assert "updateStrategy" not in ds["spec"]  # Tetragon's default: Kubernetes' own rolling update
    containers = {c["name"]: c for c in pod["containers"]}
    assert list(containers) == ["export-stdout", "tetragon"]
    agent = containers["tetragon"]
    assert agent["image"] == "localhost/tetragon-py:0.1.0"
    assert agent["securityContext"] == {"privileged": True}
    assert agent["args"] == ["--config-dir=/etc/tetragon/tetragon.conf.d/"]
    assert agent["livenessProbe"]["grpc"] == {"port": 6789, "service": "liveness"}
    mounts = {m["mountPath"]: m for m in agent["volumeMounts"]}
    assert mounts["/sys/fs/bpf"]["mountPropagation"] == "Bidirectional"
    assert {"/procRoot", "/sys/fs/cgroup", "/var/run/tetragon", "/var/log/tetragon"} <= set(mounts)
    sidecar = containers["export-stdout"]
    assert sidecar["image"] == "quay.io/cilium/hubble-export-stdout:v1.1.1"
    assert sidecar["command"] == ["hubble-export-stdout"]
    assert sidecar["args"] == ["/var/log/tetragon/tetragon.log"]
    assert [m["mountPath"] for m in sidecar["volumeMounts"]] == ["/var/log/tetragon"]
    assert one(docs, "Service", "tetragon")["spec"]["ports"][0]["port"] == 2112
    assert by_kind(docs, "ServiceMonitor") == []


def test_agent_configuration_is_tetragons_flags(kubeconfig: str) -> None:
    config = one(render(kubeconfig), "ConfigMap", "tetragon-config")["data"]
    assert config["export-filename"] == "/var/log/tetragon/tetragon.log"
    assert config["export-allowlist"] == (
        '{"event_set":["PROCESS_EXEC", "PROCESS_EXIT", "PROCESS_KPROBE", "PROCESS_UPROBE", '
        '"PROCESS_TRACEPOINT", "PROCESS_LSM"]}'
    )
    assert config["export-denylist"] == '{"health_check":true}\n{"namespace":["", "cilium", "kube-system"]}'
    assert config["metrics-server"] == ":2112"
    assert config["server-address"] == "unix:///var/run/tetragon/tetragon.sock"
    assert config["health-server-address"] == ":6789"
    assert config["enable-k8s-api"] == "true" and config["enable-policy-filter"] == "true"
    assert (config["event-cache-retries"], config["event-cache-retry-delay"]) == ("15", "2")
    assert (config["process-cache-size"], config["export-rate-limit"]) == ("65536", "-1")
    assert "enable-cri" not in config


def test_operator_scheduling_defaults(kubeconfig: str) -> None:
    docs = render(kubeconfig)
    operator = one(docs, "Deployment", "tetragon-operator")
    spec = operator["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    pod = spec["template"]["spec"]
    assert "tolerations" not in pod
    assert pod["affinity"] == {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 100,
                    "podAffinityTerm": {
                        "topologyKey": "kubernetes.io/hostname",
                        "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "tetragon-operator"}},
                    },
                }
            ]
        }
    }
    # the anti-affinity selects the operator's own pods
    assert (
        pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0][
            "podAffinityTerm"
        ]["labelSelector"]["matchLabels"].items()
        <= spec["template"]["metadata"]["labels"].items()
    )
    container = pod["containers"][0]
    assert container["securityContext"]["runAsNonRoot"] is True
    assert not any(a.startswith("--leader-elect") for a in container["args"])
    assert by_kind(docs, "Role") == []
    config = one(docs, "ConfigMap", "tetragon-operator-config")["data"]
    assert config == {
        "skip-crd-creation": "false",
        "skip-pod-info-crd": "true",
        "skip-tracing-policy-crd": "false",
        "force-update-crds": "false",
    }


@pytest.mark.parametrize(
    ("lease_namespace", "expected"), [("", NAMESPACE), ("tetragon-leases", "tetragon-leases")]
)
def test_operator_failover_lease(kubeconfig: str, lease_namespace: str, expected: str) -> None:
    values = {
        "tetragonOperator": {"replicas": 2, "failoverLease": {"enabled": True, "namespace": lease_namespace}}
    }
    docs = render(kubeconfig, values)
    operator = one(docs, "Deployment", "tetragon-operator")
    assert operator["spec"]["replicas"] == 2
    args = operator["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[-5:] == [
        "--leader-elect=true",
        f"--leader-election-namespace={expected}",
        "--leader-election-lease-duration=15s",
        "--leader-election-renew-deadline=5s",
        "--leader-election-retry-period=2s",
    ]
    role = one(docs, "Role", "tetragon-operator-leader-election")
    assert role["metadata"]["namespace"] == expected
    assert role["rules"] == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "verbs": ["create", "get", "list", "watch", "update", "patch"],
        }
    ]
    binding = one(docs, "RoleBinding", "tetragon-operator-leader-election")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "tetragon-operator", "namespace": NAMESPACE}
    ]


def test_service_monitors_are_optional(kubeconfig: str) -> None:
    docs = render(kubeconfig, VARIANTS["everything-on"])
    monitors = {d["metadata"]["name"]: d for d in by_kind(docs, "ServiceMonitor")}
    assert set(monitors) == {"tetragon", "tetragon-operator"}
    assert monitors["tetragon"]["spec"]["endpoints"][0]["interval"] == "60s"
    assert monitors["tetragon"]["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "tetragon",
        "app.kubernetes.io/instance": "tetragon",
    }
    config = one(docs, "ConfigMap", "tetragon-config")["data"]
    assert config["cri-endpoint"] == "unix:///var/run/cri.sock"
    volumes = {
        v["name"]: v for v in one(docs, "DaemonSet", "tetragon")["spec"]["template"]["spec"]["volumes"]
    }
    assert volumes["cri-socket"]["hostPath"] == {"path": "/run/containerd/containerd.sock", "type": "Socket"}


def test_agent_with_capabilities_instead_of_privileged(kubeconfig: str) -> None:
    daemonset = one(render(kubeconfig, VARIANTS["capabilities"]), "DaemonSet", "tetragon")
    pod = daemonset["spec"]["template"]["spec"]
    agent = next(c for c in pod["containers"] if c["name"] == "tetragon")
    assert agent["securityContext"] == VARIANTS["capabilities"]["tetragon"]["securityContext"]
    assert pod["hostPID"] is True


def test_sidecar_and_operator_can_be_turned_off(kubeconfig: str) -> None:
    docs = render(kubeconfig, VARIANTS["export-and-operator-off"])
    pod = one(docs, "DaemonSet", "tetragon")["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["tetragon"]
    assert by_kind(docs, "Deployment") == []


# Value paths and defaults of Tetragon's chart (interface facts): the same names mean the same here.
TETRAGON_DEFAULTS = {
    "tolerations": [{"operator": "Exists"}],
    "updateStrategy": {},
    "dnsPolicy": "Default",
    "exportDirectory": "/var/log/tetragon",
    "hostNetwork": True,
    "tetragon.exportFilename": "tetragon.log",
    "tetragon.exportFilePerm": "600",
    "tetragon.exportFileMaxSizeMB": 10,
    "tetragon.exportFileMaxBackups": 5,
    "tetragon.exportRateLimit": -1,
    "tetragon.enableK8sAPI": True,
    "tetragon.enablePolicyFilter": True,
    "tetragon.processCacheSize": 65536,
    "tetragon.prometheus.port": 2112,
    "tetragon.prometheus.metricsLabelFilter": "namespace,workload,pod,binary",
    "tetragon.prometheus.serviceMonitor.enabled": False,
    "tetragon.grpc.address": "unix:///var/run/tetragon/tetragon.sock",
    "tetragon.healthGrpc.port": 6789,
    "tetragon.eventCacheRetries": 15,
    "tetragon.eventCacheRetryDelay": 2,
    "tetragon.cri.enabled": False,
    "tetragon.securityContext": {"privileged": True},
    "tetragonOperator.replicas": 1,
    "tetragonOperator.failoverLease.enabled": False,
    "tetragonOperator.failoverLease.namespace": "",
    "tetragonOperator.failoverLease.leaseDuration": "15s",
    "tetragonOperator.failoverLease.leaseRenewDeadline": "5s",
    "tetragonOperator.failoverLease.leaseRetryPeriod": "2s",
    "tetragonOperator.tolerations": [],
    "tetragonOperator.strategy.rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    "tetragonOperator.prometheus.port": 2113,
    "export.mode": "stdout",
    "export.filenames": ["tetragon.log"],
    "export.stdout.image.repository": "quay.io/cilium/hubble-export-stdout",
    "crds.installMethod": "operator",
}


@pytest.mark.parametrize("path", list(TETRAGON_DEFAULTS))
def test_values_keep_tetragons_names_and_defaults(path: str) -> None:
    value: Any = yaml.safe_load((CHART / "values.yaml").read_text())
    for key in path.split("."):
        value = value[key]
    assert value == TETRAGON_DEFAULTS[path]


# Flags of the chart's Kubernetes integration (pod association, policy filter, event cache): the
# agent takes them with the chart's values (test_agent_flags checks the refusals of the others).
KUBERNETES_AGENT_FLAGS = {
    "deleted-pod-cache-size",
    "enable-k8s-api",
    "enable-msg-handling-latency",
    "enable-policy-filter",
    "enable-policy-filter-cgroup-map",
    "enable-policy-filter-debug",
    "event-cache-retries",
    "event-cache-retry-delay",
    "keep-sensors-on-exit",
}


def test_agent_takes_every_option_of_the_default_configmap(kubeconfig: str) -> None:
    from tetragon.cli.agent import build_parser

    known = {o[2:] for action in build_parser()._actions for o in action.option_strings if o.startswith("--")}
    config = one(render(kubeconfig), "ConfigMap", "tetragon-config")["data"]
    assert set(config) - known == set()


def test_the_agent_accepts_the_charts_kubernetes_values(kubeconfig: str) -> None:
    from tetragon.cli.agent_flags import check_value

    config = one(render(kubeconfig), "ConfigMap", "tetragon-config")["data"]
    assert set(config) >= KUBERNETES_AGENT_FLAGS
    parsed = {name: check_value(name, config[name]) for name in KUBERNETES_AGENT_FLAGS}
    assert parsed["enable-k8s-api"] is True and parsed["enable-policy-filter"] is True
    assert (parsed["event-cache-retries"], parsed["event-cache-retry-delay"]) == (15, 2)
    assert parsed["deleted-pod-cache-size"] == 1024
