"""A refused TracingPolicy object's error where its author looks: a Kubernetes Event on the object.

Tetragon's TracingPolicy CRDs have no `status` subresource, so the agent cannot write a state there;
`kubectl describe tracingpolicy NAME` (and `kubectl get events`) shows the Events whose
`involvedObject` is the policy. Each node's agent reports its own refusal (`source.host`,
`reportingInstance`): a policy may load on one kernel and be refused on another. Events of a
cluster-scoped object live in the `default` namespace, as the API server's own do.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from kubernetes import client

from tetragon.k8s.crdgen import GROUP, VERSION

log = logging.getLogger(__name__)

COMPONENT = "tetragon"
REFUSED = "TracingPolicyRefused"  # a new object: not loaded
UPDATE_REFUSED = "TracingPolicyUpdateRefused"  # a changed object: its previous version stays loaded


def policy_event(kind: str, obj: dict[str, Any], reason: str, message: str, node: str) -> dict[str, Any]:
    """The core/v1 Event (a Warning) about policy object `obj` of `kind`."""
    meta = obj.get("metadata") or {}
    name = str(meta.get("name") or "")
    namespace = str(meta.get("namespace") or "")
    involved = {"apiVersion": f"{GROUP}/{VERSION}", "kind": kind, "name": name}
    if namespace:
        involved["namespace"] = namespace
    for key in ("uid", "resourceVersion"):
        if meta.get(key):
            involved[key] = str(meta[key])
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{name}.", "namespace": namespace or "default"},
        "involvedObject": involved,
        "reason": reason,
        "message": message,
        "type": "Warning",
        "source": {"component": COMPONENT, "host": node},
        "reportingComponent": COMPONENT,
        "reportingInstance": node,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }


class PolicyEventReporter:
    """Posts policy Events through the official client; a failure to post is logged, never raised."""

    def __init__(self, api: client.CoreV1Api, node: str) -> None:
        self.api = api
        self.node = node

    def refused(self, kind: str, obj: dict[str, Any], error: str, kept_previous: bool) -> None:
        reason = UPDATE_REFUSED if kept_previous else REFUSED
        after = "; the previous version stays loaded" if kept_previous else ""
        # a plain dict: the client serializes it as it would its model (typed as the model)
        event: Any = policy_event(kind, obj, reason, f"node {self.node}: {error}{after}", self.node)
        try:
            self.api.create_namespaced_event(event["metadata"]["namespace"], event, _request_timeout=10)
        except Exception as err:  # the API may be down: the error is in the log and in `errors`
            name = event["involvedObject"]["name"]
            log.warning("could not post the Event about %s %s: %s", kind, name, err)
