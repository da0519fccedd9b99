"""GetInfo (`tetra info`) and ListDomains (`tetra tracingpolicy domains`).

GetInfo describes the agent as Tetragon's does: version and name, the kernel features it probed
(`probes`), its configuration (`conf`: every AgentConfig field under its flag name, the value packed
in `google.protobuf.Any` as a wrapper of its type) and its build (`build.go_version` holds the Python
version that runs it: the field is Tetragon's name for the runtime). ListDomains lists the domains of
the loaded tracing policies: `static` for those from --tracing-policy / --tracing-policy-dir, `grpc`
for those added through the API, `k8s` for TracingPolicy objects of the CRD watch.
"""

from __future__ import annotations

import dataclasses
import logging
import platform
from typing import Any

from google.protobuf import any_pb2, wrappers_pb2

from tetragon.api.gen.tetragon import sensors_pb2

__all__ = ["agent_info", "policy_domains"]

log = logging.getLogger(__name__)

AGENT_NAME = "tetragon"


def _packed(value: Any) -> any_pb2.Any:
    wrapped: Any
    if isinstance(value, bool):
        wrapped = wrappers_pb2.BoolValue(value=value)
    elif isinstance(value, int):
        wrapped = wrappers_pb2.Int64Value(value=value)
    elif isinstance(value, float):
        wrapped = wrappers_pb2.DoubleValue(value=value)
    elif isinstance(value, list | tuple | set | frozenset):
        wrapped = wrappers_pb2.StringValue(value=",".join(str(v) for v in sorted(value, key=str)))
    else:
        wrapped = wrappers_pb2.StringValue(value=str(value))
    out = any_pb2.Any()
    out.Pack(wrapped)
    return out


def _conf(config: object | None) -> list[sensors_pb2.GetInfoResponse.ConfVal]:
    if config is None or not dataclasses.is_dataclass(config):
        return []
    out = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):  # grouped options (server options): their own fields
            continue
        key = f.name.replace("_", "-")  # the flag's name
        out.append(sensors_pb2.GetInfoResponse.ConfVal(key=key, value=_packed(value)))
    return out


def _probes() -> list[sensors_pb2.GetInfoResponse.Probe]:
    try:
        from tetragon.bpf.features import probe_features

        features = probe_features()  # measured once per process: the agent's own probe
    except Exception as exc:  # noqa: BLE001 - no BPF here (a test server): no probes to report
        log.debug("GetInfo without probes: %s", exc)
        return []
    return [
        sensors_pb2.GetInfoResponse.Probe(Name=name, Enabled=wrappers_pb2.BoolValue(value=enabled))
        for name, enabled in features.items()
    ]


def agent_info(version: str, config: object | None) -> sensors_pb2.GetInfoResponse:
    return sensors_pb2.GetInfoResponse(
        version=version,
        name=AGENT_NAME,
        probes=_probes(),
        conf=_conf(config),
        build=sensors_pb2.GetInfoResponse.BuildInfo(go_version=f"python{platform.python_version()}"),
    )


def policy_domains(policy_handler: object | None) -> sensors_pb2.ListDomainsResponse:
    lister = getattr(policy_handler, "list", None)
    statuses = lister() if callable(lister) else []
    domains = sorted({d for d in (getattr(st, "domain", "") for st in statuses) if d})
    return sensors_pb2.ListDomainsResponse(domains=domains)
