"""Pods on events: the agent's side of `--enable-k8s-api` and `--enable-cri`.

`PodEnricher` keeps a PodCache current from one source (the API server's pod watch of this node, or,
without it, the node's CRI runtime polled, and polled at once when an unknown container shows up) and
gives a process in a container its `pod` when it is built (`pod_of`, called by process.events for
every exec with a container id). An event whose process (or parent) is in a container whose pod is not
known yet waits in the event cache, as in Tetragon: exec and exit events (`hold`) and policy events
(`awaits_pod`, then `hold_policy_event`). It is sent, with its pod when it appears or without it after
the last retry (counted under its event type), by `tick`, which the agent calls from its drain loop:
the pipeline thread is the only one that touches events and process entries.

When the pod is found late, the process's cache entry gets it too, so its later events (and its
forked children, which copy it) carry it.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tetragon.jsontypes import Event
from tetragon.k8s.eventcache import EventCacheStats, PodEventCache
from tetragon.k8s.podinfo import PodInfo
from tetragon.k8s.pods import PodCache
from tetragon.process.cache import ProcessCache, ProcessEntry, with_pod

if TYPE_CHECKING:
    from tetragon.config import AgentConfig

log = logging.getLogger("tetragon")

CRI_POLL_INTERVAL = 5.0
API_SYNC_WAIT = 5.0  # seconds the start-up waits for the first pod list before the /proc scan

PolicyHook = tuple[str, str]  # (policy, hook) a policy event is counted under
Held = tuple[Event, PolicyHook | None]  # an event in the cache, with its policy hook if it is a policy event


def _event_type(held: Held) -> str:
    """Tetragon's EventType name of a held event (its `event_type` metric label): PROCESS_KPROBE, ..."""
    return next(iter(held[0])).upper()


class PodEnricher:
    """Gives processes their pod from `pods`; holds the events whose pod is not known yet."""

    def __init__(
        self,
        pods: PodCache,
        processes: ProcessCache,
        *,
        retries: int = 15,
        retry_delay: float = 2.0,
        max_entries: int = 10000,
        poke: Callable[[], None] | None = None,
    ) -> None:
        self.pods = pods
        self.processes = processes
        self.poke = poke  # asks the source for a relist now (CRI), when a container is unknown
        # where released events go (the pipeline), with the (policy, hook) of a policy event
        self.sink: Callable[[Event, PolicyHook | None], None] | None = None
        self.event_cache: PodEventCache[Held] = PodEventCache(
            self.pods.by_container,
            self._release,
            retries=retries,
            retry_delay=retry_delay,
            max_entries=max_entries,
            event_type=_event_type,
        )
        # pid in the container of host pids whose pod was not known at exec: `pod.container.pid`
        # when it is found later (bounded like the event cache)
        self._nspid: OrderedDict[int, int] = OrderedDict()
        self._max_nspids = max(1, max_entries) * 2

    # --- called by process.events for every exec in a container ----------------------------------
    def pod_of(
        self, container_id: str, pid: int, nspid: int, binary: str = "", arguments: str = ""
    ) -> dict[str, Any] | None:
        pod = self.pods.by_container(container_id)
        if pod is None:
            self._nspid[pid] = nspid
            self._nspid.move_to_end(pid)
            if len(self._nspid) > self._max_nspids:
                self._nspid.popitem(last=False)
            if self.poke is not None:
                self.poke()
            return None
        return pod.pod_json(container_id, nspid, binary, arguments)

    # --- the pipeline's side -----------------------------------------------------------------------
    def hold(self, event: Event) -> bool:
        """Takes an exec/exit event whose process (or parent) is in a container of a pod not known
        yet; a pod known by now (the parent's exec was held, this one came after the relist) is
        filled in here."""
        body = event.get("process_exec") or event.get("process_exit")
        if body is None:
            return False
        waiting = ""
        for part in ("process", "parent"):
            process = body.get(part)
            if process is None or "pod" in process or not process.get("docker"):
                continue
            filled = self._with_pod(process)
            if filled is process:
                waiting = waiting or process["docker"]
            else:
                body[part] = filled
        if not waiting:
            return False
        self.event_cache.add((event, None), waiting)
        return True

    def awaits_pod(self, entry: ProcessEntry, parent: ProcessEntry | None) -> str:
        """For a policy event of `entry`: the container id whose pod its event must wait for, or "".
        A pod known by now is given to the entries here (their events then go out at once)."""
        waiting = ""
        for process in (entry, parent):
            if process is None:
                continue
            head = process.head
            docker = head.get("docker")
            if not docker or "pod" in head:
                continue
            pod = self.pods.by_container(docker)
            if pod is None:
                waiting = waiting or docker
                continue
            nspid = self._nspid.get(process.pid)
            process.set_pod(pod.pod_json(docker, nspid, head.get("binary", ""), head.get("arguments", "")))
        return waiting

    def hold_policy_event(self, event: Event, container_id: str, policy_hook: PolicyHook) -> None:
        """Takes a policy event (built as a dict) that `awaits_pod` said must wait for `container_id`."""
        self.event_cache.add((event, policy_hook), container_id)

    def tick(self) -> int:
        """Sends the held events that are due (with their pod, or without after the last retry)."""
        if not len(self.event_cache):
            return 0
        return self.event_cache.process()

    def flush(self) -> None:
        """At shutdown: everything still held goes out, with the pod where it is known by now."""
        self.event_cache.flush()

    def cache_stats(self) -> tuple[int, EventCacheStats]:
        return len(self.event_cache), self.event_cache.stats

    def _release(self, held: Held, pod: PodInfo | None) -> None:
        event, policy_hook = held
        if pod is not None:
            body = event[next(iter(event))]
            for part in ("process", "parent"):
                process = body.get(part)
                if process is not None and "pod" not in process:
                    body[part] = self._with_pod(process)
        if self.sink is not None:
            self.sink(event, policy_hook)

    def _with_pod(self, process: dict[str, Any]) -> dict[str, Any]:
        """The process with its pod when it is known now; its cache entry gets the pod too."""
        docker = process.get("docker", "")
        pod = self.pods.by_container(docker) if docker else None
        if pod is None:
            return process
        pid = process.get("pid", 0)
        binary, arguments = process.get("binary", ""), process.get("arguments", "")
        pod_json = pod.pod_json(docker, self._nspid.get(pid), binary, arguments)
        entry = self.processes.get(process.get("exec_id", ""))
        if entry is not None and "pod" not in entry.head:
            entry.set_pod(pod_json)
        return with_pod(process, pod_json)


# where --enable-cri looks when --cri-endpoint is not given (Tetragon's pkg/cri defaults)
DEFAULT_CRI_ENDPOINTS = (
    "unix:///run/containerd/containerd.sock",
    "unix:///run/crio/crio.sock",
    "unix:///var/run/cri-dockerd.sock",
)


def cri_endpoint(configured: str) -> str:
    """--cri-endpoint, or the first default runtime socket present; "" when there is none."""
    if configured:
        return configured
    return next((e for e in DEFAULT_CRI_ENDPOINTS if os.path.exists(e.removeprefix("unix://"))), "")


class PodSource:
    """The thread that fills the PodCache (a CRI poller or an API pod watcher), and its enricher."""

    def __init__(self, config: AgentConfig, node_name: str, processes: ProcessCache) -> None:
        self.cache = PodCache(config.deleted_pod_cache_size)
        self.config = config
        self.node_name = node_name
        self.enricher = PodEnricher(
            self.cache,
            processes,
            retries=config.event_cache_retries,
            retry_delay=config.event_cache_retry_delay,
            poke=self.poke,
        )
        self._poller: Any = None
        self._watcher: Any = None

    def start(self) -> None:
        """Starts the source; the first pod list is waited for (briefly) so start-up events find pods."""
        cfg = self.config
        if cfg.enable_k8s_api:
            from tetragon.k8s.pods import PodWatcher, core_api

            self._watcher = PodWatcher(core_api(cfg.k8s_kubeconfig_path), self.node_name, self.cache)
            self._watcher.start()
            if not self._watcher.synced.wait(API_SYNC_WAIT):
                log.warning("no pod list from the API server yet: events wait in the event cache")
            return
        from tetragon.k8s.cri import CriClient
        from tetragon.k8s.cripods import CriPodPoller

        endpoint = cri_endpoint(cfg.cri_endpoint)
        self._poller = CriPodPoller(CriClient(endpoint), self.cache, CRI_POLL_INTERVAL)
        try:
            self._poller.refresh()
        except Exception as err:  # the runtime may come up later: the poller keeps trying
            log.warning("listing pods from %s failed: %s", endpoint, err)
        self._poller.start()

    def poke(self) -> None:
        if self._poller is not None:
            self._poller.poke()

    def stop(self) -> None:
        for worker in (self._watcher, self._poller):
            if worker is not None:
                worker.stop()
        if self._poller is not None:
            self._poller.cri.close()


def check_pod_flags(config: AgentConfig) -> None:
    """Start-up refusals of the Kubernetes flags, one line each."""
    from tetragon.config import AgentError

    if config.enable_cri and not config.enable_k8s_api and not cri_endpoint(config.cri_endpoint):
        raise AgentError(
            "--enable-cri: no --cri-endpoint given and no runtime socket found at "
            + ", ".join(DEFAULT_CRI_ENDPOINTS)
        )


def pod_source(config: AgentConfig, node_name: str, processes: ProcessCache) -> PodSource | None:
    """The pod source of this configuration, or None without --enable-k8s-api and --enable-cri."""
    if not (config.enable_k8s_api or config.enable_cri):
        return None
    check_pod_flags(config)
    return PodSource(config, node_name, processes)
