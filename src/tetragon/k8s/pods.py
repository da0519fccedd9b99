"""The pods of this node, from the Kubernetes API: a list-then-watch with the official client.

`PodWatcher` lists the pods whose `spec.nodeName` is this node, then watches them from the list's
resourceVersion, applying ADDED/MODIFIED/DELETED to a `PodCache` indexed by pod uid and by container
id. When the watch ends (server timeout) it resumes from the last resourceVersion; when that version is
too old (410 Gone) or the API server is unreachable it lists again after a backoff, so the cache
converges after an outage and pods deleted meanwhile go away.

The client is used at the HTTP level (`_preload_content=False`): pods stay plain JSON dicts, which
are all `pod_from_json` needs, and watch ERROR events are handled here rather than by
`kubernetes.watch.Watch` (whose non-deserializing mode cannot read them).
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

from kubernetes import client, config
from kubernetes.watch.watch import iter_resp_lines

from tetragon.k8s.podinfo import PodInfo, container_key, pod_from_json

log = logging.getLogger(__name__)

HTTP_GONE = 410


class PodCache:
    """Pods by uid, and by container id (the 31-character key of Tetragon's `docker` field).

    Containers of deleted pods stay findable in an LRU of `deleted_size` entries (Tetragon's
    `deletedPodCacheSize`): a process's last events (its exit) often arrive after its pod is gone.
    """

    def __init__(self, deleted_size: int = 1024) -> None:
        self._lock = threading.Lock()
        self._by_uid: dict[str, PodInfo] = {}
        self._by_container: dict[str, str] = {}
        self._deleted: OrderedDict[str, PodInfo] = OrderedDict()
        self.deleted_size = deleted_size
        # called after every change, outside the lock (the policy filter recomputes its cgroup sets)
        self.on_change: list[Callable[[], None]] = []

    def __len__(self) -> int:
        return len(self._by_uid)

    def upsert(self, pod: PodInfo) -> None:
        with self._lock:
            self._drop(pod.uid, deleted=False)
            self._by_uid[pod.uid] = pod
            for container in pod.containers:
                key = container_key(container.id)
                self._by_container[key] = pod.uid
                self._deleted.pop(key, None)
        self._changed()

    def delete(self, uid: str) -> None:
        with self._lock:
            self._drop(uid, deleted=True)
        self._changed()

    def replace(self, pods: list[PodInfo]) -> None:
        """The result of a fresh list: everything not in it is gone."""
        with self._lock:
            listed = {p.uid for p in pods}
            for uid in [uid for uid in self._by_uid if uid not in listed]:
                self._drop(uid, deleted=True)
            for pod in pods:
                self._drop(pod.uid, deleted=False)
                self._by_uid[pod.uid] = pod
                for container in pod.containers:
                    self._by_container[container_key(container.id)] = pod.uid
        self._changed()

    def _changed(self) -> None:
        for listener in self.on_change:
            listener()

    def _drop(self, uid: str, deleted: bool) -> None:
        old = self._by_uid.pop(uid, None)
        if old is None:
            return
        for container in old.containers:
            key = container_key(container.id)
            if self._by_container.get(key) == uid:
                del self._by_container[key]
            if deleted and self.deleted_size > 0:
                self._deleted[key] = old
                self._deleted.move_to_end(key)
        while len(self._deleted) > self.deleted_size:
            self._deleted.popitem(last=False)

    def by_uid(self, uid: str) -> PodInfo | None:
        with self._lock:
            return self._by_uid.get(uid)

    def by_container(self, container_id: str) -> PodInfo | None:
        """The pod of a container, by full id or by the `docker` field's 31-character prefix; a
        recently deleted pod's too."""
        if not container_id:
            return None
        key = container_key(container_id)
        with self._lock:
            uid = self._by_container.get(key)
            pod = self._by_uid.get(uid) if uid else self._deleted.get(key)
        return pod if pod is not None and pod.container(container_id) is not None else None

    def pods(self) -> list[PodInfo]:
        with self._lock:
            return list(self._by_uid.values())


def core_api(kubeconfig: str = "") -> client.CoreV1Api:
    """A CoreV1Api from a kubeconfig file, or from the pod's service account when none is given."""
    if kubeconfig:
        return client.CoreV1Api(config.new_client_from_config(config_file=kubeconfig))
    config.load_incluster_config()
    return client.CoreV1Api()


def _interrupt(response: Any) -> None:
    """Wakes a thread blocked reading a watch stream: shutting the socket down ends its read (closing
    the response instead would wait for the reader's lock). The connection gives up its socket when the
    server said `Connection: close`; the http.client response under urllib3's still holds it then."""
    raw = getattr(getattr(getattr(response, "_fp", None), "fp", None), "raw", None)
    for sock in (getattr(getattr(response, "connection", None), "sock", None), getattr(raw, "_sock", None)):
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            return


class PodWatcher:
    """Keeps a PodCache current with this node's pods; `run` blocks, `start` runs it in a thread."""

    def __init__(
        self,
        api: client.CoreV1Api,
        node_name: str,
        cache: PodCache | None = None,
        *,
        watch_timeout: int = 300,
        retry_delay: float = 1.0,
        max_retry_delay: float = 30.0,
        on_event: Callable[[str, PodInfo], None] | None = None,
    ) -> None:
        self.api = api
        self.node_name = node_name
        self.cache = cache if cache is not None else PodCache()
        self.watch_timeout = watch_timeout
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        self.on_event = on_event
        self.synced = threading.Event()  # set after each successful list
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._response: Any = None
        self.lists = 0  # how many times the pods were listed (1 + relists after expiry/outage)

    @property
    def what(self) -> str:
        return f"pod watch of node {self.node_name}"

    @property
    def field_selector(self) -> str:
        return f"spec.nodeName={self.node_name}"

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="pod-watcher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        _interrupt(self._response)
        if self._thread is not None:
            self._thread.join(timeout)

    def run(self) -> None:
        delay = self.retry_delay
        while not self._stop.is_set():
            try:
                version = self._list()
                delay = self.retry_delay
                while not self._stop.is_set() and version:
                    version = self._watch(version)
            except Exception as err:  # API outage, broken stream, bad answer: list again later
                if self._stop.is_set():
                    break
                log.warning("%s failed, retrying in %.1fs: %s", self.what, delay, err)
                self._stop.wait(delay)
                delay = min(delay * 2, self.max_retry_delay)

    def _list(self) -> str:
        body = json.loads(self._request(_request_timeout=30).data)
        self.cache.replace([pod_from_json(item) for item in body.get("items") or []])
        self.lists += 1
        self.synced.set()
        return str((body.get("metadata") or {}).get("resourceVersion", ""))

    def _request(self, **kw: Any) -> Any:
        """The raw urllib3 response of a list or watch (typed by the client as the model it would build)."""
        return self.api.list_pod_for_all_namespaces(
            field_selector=self.field_selector, _preload_content=False, **kw
        )

    def _events(self, version: str) -> Iterator[dict[str, Any]]:
        response = self._request(
            watch=True,
            resource_version=version,
            allow_watch_bookmarks=True,
            timeout_seconds=self.watch_timeout,
            _request_timeout=(30, self.watch_timeout + 30),
        )
        self._response = response
        try:
            for line in iter_resp_lines(response):
                if line:
                    yield json.loads(line)
        finally:
            self._response = None
            response.release_conn()

    def _watch(self, version: str) -> str:
        """Applies one watch stream; returns the version to resume from, "" to list again."""
        for event in self._events(version):
            kind, obj = event.get("type", ""), event.get("object") or {}
            if kind == "ERROR":
                if obj.get("code") == HTTP_GONE:
                    return ""
                raise RuntimeError(f"watch error {obj.get('code')}: {obj.get('message', '')}")
            version = str((obj.get("metadata") or {}).get("resourceVersion", version))
            if kind != "BOOKMARK":
                self._apply(kind, obj)
            if self._stop.is_set():
                break
        return version

    def _apply(self, kind: str, obj: dict[str, Any]) -> None:
        pod = pod_from_json(obj)
        if kind == "DELETED":
            self.cache.delete(pod.uid)
        elif kind in ("ADDED", "MODIFIED"):
            self.cache.upsert(pod)
        if self.on_event is not None:
            self.on_event(kind, pod)
