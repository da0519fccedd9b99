"""TracingPolicy and TracingPolicyNamespaced objects from the Kubernetes API, applied like file policies.

`PolicyObjects` decides: an ADDED object is added to the policy manager, a MODIFIED one whose spec
changed replaces it (a status-only change is ignored), a DELETED one is deleted; after a (re)list the
objects of that kind no longer listed are deleted. A bad object has its error logged, kept in
`errors` (by kind, namespace, name) and posted as a Kubernetes Event on the object (policyreport.py);
the others are unaffected. A bad update of a loaded object leaves its previous version loaded: the new
spec is checked before the old one is unloaded, and should it still fail to load, the old one is
loaded again. A namespaced object keeps its `metadata.namespace`, which the manager's pod filter
scopes it to.

`CrdWatcher` is `pods.PodWatcher`'s loop over one kind (cluster-wide, official client at the HTTP
level): list, then watch from the list's resourceVersion, resume after a server timeout, list again
after a 410 Gone or an outage, with a backoff.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any, Protocol

from kubernetes import client

from tetragon.k8s.crdgen import GROUP, KINDS, VERSION
from tetragon.k8s.pods import PodCache, PodWatcher, core_api
from tetragon.k8s.policyreport import PolicyEventReporter
from tetragon.policy.errors import PolicyError

log = logging.getLogger(__name__)

DOMAIN = "k8s"


class PolicyTarget(Protocol):
    """What of the policy manager (sensors/manager.py) the watch uses."""

    def add(self, yaml_text: str, *, domain: str = ...) -> Any: ...

    def check(self, yaml_text: str) -> None: ...

    def delete(self, name: str, namespace: str = "") -> None: ...


def _key(obj: dict[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


class PolicyObjects:
    """The policy objects of the API as applied to the manager."""

    def __init__(self, manager: PolicyTarget, reporter: PolicyEventReporter | None = None) -> None:
        self.manager = manager
        self.reporter = reporter
        self._lock = threading.Lock()
        # (kind, namespace, name) -> (spec as JSON, the document loaded)
        self.applied: dict[tuple[str, str, str], tuple[str, str]] = {}
        self.errors: dict[tuple[str, str, str], tuple[str, str]] = {}  # -> (spec, error)

    def apply(self, event: str, kind: str, obj: dict[str, Any]) -> None:
        key = (kind, *_key(obj))
        with self._lock:
            if event == "DELETED":
                self.errors.pop(key, None)
                if self.applied.pop(key, None) is not None:
                    self._delete(key)
            elif event in ("ADDED", "MODIFIED"):
                try:
                    self._upsert(key, obj)
                except Exception as exc:  # no PolicyError: a fault of ours, not of the object
                    # one object's failure must not stop the others of a list (nor make the watch
                    # relist forever): it is recorded and reported like a refusal
                    log.exception("%s %s: not applied", key[0], "/".join(p for p in key[1:] if p))
                    spec = json.dumps(obj.get("spec"), sort_keys=True, default=str)
                    self._refused(key, obj, spec, f"internal error: {exc}", key in self.applied)

    def replace(self, kind: str, objs: list[dict[str, Any]]) -> None:
        """After a list: the listed objects of `kind` are the truth."""
        listed = {(kind, *_key(obj)) for obj in objs}
        with self._lock:
            for key in [k for k in self.applied if k[0] == kind and k not in listed]:
                del self.applied[key]
                self._delete(key)
            for key in [k for k in self.errors if k[0] == kind and k not in listed]:
                del self.errors[key]
        for obj in objs:
            self.apply("ADDED", kind, obj)

    def _upsert(self, key: tuple[str, str, str], obj: dict[str, Any]) -> None:
        spec = json.dumps(obj.get("spec"), sort_keys=True)
        previous = self.applied.get(key)
        if previous is not None and previous[0] == spec:
            self.errors.pop(key, None)  # back to the loaded version (a status update, a relist)
            return
        if self.errors.get(key, ("", ""))[0] == spec:
            return  # the same refused spec again
        doc = {"apiVersion": obj.get("apiVersion", f"{GROUP}/{VERSION}"), "kind": key[0], **obj}
        doc.pop("status", None)
        text = json.dumps(doc)
        unloaded = False
        try:
            if previous is not None:
                self.manager.check(text)  # refused here: the loaded version never stops
                self._delete(key)
                unloaded = True
            self.manager.add(text, domain=DOMAIN)
        except PolicyError as err:
            kept = previous is not None
            if previous is not None and unloaded:  # checked, but failed to load: the old one goes back
                kept = self._reload(key, previous[1])
            self._refused(key, obj, spec, str(err), kept)
            return
        self.errors.pop(key, None)
        self.applied[key] = (spec, text)

    def _reload(self, key: tuple[str, str, str], text: str) -> bool:
        try:
            self.manager.add(text, domain=DOMAIN)
        except PolicyError as err:
            log.error("%s %s: the previous version failed to load again: %s", key[0], key[2], err)
            del self.applied[key]
            return False
        return True

    def _refused(
        self, key: tuple[str, str, str], obj: dict[str, Any], spec: str, error: str, kept: bool
    ) -> None:
        self.errors[key] = (spec, error)
        log.error("%s %s: %s", key[0], "/".join(p for p in key[1:] if p), error)
        if self.reporter is not None:
            self.reporter.refused(key[0], obj, error, kept)

    def error(self, kind: str, namespace: str, name: str) -> str | None:
        """The error of a refused object, or None."""
        entry = self.errors.get((kind, namespace, name))
        return entry[1] if entry else None

    def _delete(self, key: tuple[str, str, str]) -> None:
        try:
            self.manager.delete(key[2], key[1])
        except PolicyError as err:
            log.warning("%s %s: delete: %s", key[0], key[2], err)


class CrdWatcher(PodWatcher):
    """Keeps PolicyObjects current with one kind's objects: PodWatcher's list-then-watch loop over the
    custom objects API, cluster-wide; `start` runs it in a thread."""

    def __init__(self, api: client.CustomObjectsApi, kind: str, objects: PolicyObjects, **kw: Any) -> None:
        super().__init__(client.CoreV1Api(api.api_client), "", PodCache(), **kw)
        self.custom = api
        self.kind = kind
        self.plural = KINDS[kind][0]
        self.objects = objects

    @property
    def what(self) -> str:
        return f"{self.kind} watch"

    def _request(self, **kw: Any) -> Any:
        return self.custom.list_cluster_custom_object(
            GROUP, VERSION, self.plural, _preload_content=False, **kw
        )

    def _list(self) -> str:
        body = json.loads(self._request(_request_timeout=30).data)
        self.objects.replace(self.kind, list(body.get("items") or []))
        self.lists += 1
        self.synced.set()
        return str((body.get("metadata") or {}).get("resourceVersion", ""))

    def _apply(self, kind: str, obj: dict[str, Any]) -> None:
        self.objects.apply(kind, self.kind, obj)


def start_crd_watchers(kubeconfig: str, manager: PolicyTarget, node: str) -> list[CrdWatcher]:
    """With --enable-k8s-api: both kinds watched into `manager` (stop each watcher before the manager);
    refusals are posted as Events by this node."""
    core = core_api(kubeconfig)
    api = client.CustomObjectsApi(core.api_client)
    objects = PolicyObjects(manager, PolicyEventReporter(core, node))
    watchers = [CrdWatcher(api, kind, objects) for kind in KINDS]
    for watcher in watchers:
        watcher.start()
    return watchers
