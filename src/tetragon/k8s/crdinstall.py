"""The operator's CRD installation: the TracingPolicy CRDs of crdgen.py, created or brought up to date.

As Tetragon's operator does at start (its leader, with `skip-crd-creation` false): a CRD that is missing
is created; one that is there is replaced when its spec is not ours (an older schema, or Tetragon's
own) or with `force-update-crds`, and left alone otherwise, so restarts cost one GET per CRD. The
chart's `crds/` directory holds the same files (Helm creates them on the first install and never
updates them: keeping them current is this module's job).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tetragon.k8s.crdgen import GROUP, KINDS, custom_resource_definition

log = logging.getLogger(__name__)

HTTP_NOT_FOUND = 404


def crd_name(kind: str) -> str:
    return f"{KINDS[kind][0]}.{GROUP}"


def install_crd(api: client.ApiextensionsV1Api, kind: str, force_update: bool = False) -> str:
    """Creates or updates the CRD of `kind`; returns what was done: created, updated or unchanged."""
    # plain dicts in and raw JSON out: the client serializes a dict as it would its model (typed as the model)
    ours: Any = custom_resource_definition(kind)
    name = crd_name(kind)
    try:
        response: Any = api.read_custom_resource_definition(name, _preload_content=False, _request_timeout=30)
    except ApiException as err:
        if err.status != HTTP_NOT_FOUND:
            raise
        api.create_custom_resource_definition(ours, _request_timeout=30)
        return "created"
    installed = json.loads(response.data)
    if not force_update and _same_spec(installed.get("spec") or {}, ours["spec"]):
        return "unchanged"
    replacement: Any = {**ours, "metadata": {**ours["metadata"], **_kept_metadata(installed)}}
    api.replace_custom_resource_definition(name, replacement, _request_timeout=30)
    return "updated"


def install_crds(
    api: client.ApiextensionsV1Api, kinds: list[str], force_update: bool = False
) -> dict[str, str]:
    """Each kind's outcome (created/updated/unchanged, or the error, logged): one failure does not stop
    the others."""
    done: dict[str, str] = {}
    for kind in kinds:
        if kind not in KINDS:
            done[kind] = "not provided by this operator"  # PodInfo: the agent does not use it
            log.warning("CRD %s: not provided by this operator", kind)
            continue
        try:
            done[kind] = install_crd(api, kind, force_update)
        except Exception as err:
            done[kind] = f"error: {err}"
            log.error("CRD %s: %s", crd_name(kind), err)
            continue
        log.info("CRD %s %s", crd_name(kind), done[kind])
    return done


def as_stored(node: Any) -> Any:
    """A schema with its numbers as the API server keeps them: JSONSchemaProps' `maximum`/`minimum` are
    float64, so 2**64 - 1 comes back as 1.8446744073709552e19."""
    return json.loads(json.dumps(node), parse_int=float)


def _same_spec(installed: dict[str, Any], ours: dict[str, Any]) -> bool:
    """Our spec's fields as the API server returns them (it adds defaults, such as `conversion`)."""
    return all(as_stored(installed.get(key)) == as_stored(value) for key, value in ours.items())


def _kept_metadata(installed: dict[str, Any]) -> dict[str, Any]:
    """What a replace must carry over: the resourceVersion it replaces (optimistic concurrency)."""
    version = (installed.get("metadata") or {}).get("resourceVersion")
    return {"resourceVersion": version} if version else {}
