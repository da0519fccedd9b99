"""Events waiting for their pod: retries, the give-up budget, the size bound, and a pod that the watch
reports only after the first exec in it."""

from __future__ import annotations

from pathlib import Path

from tests.k8s_apiserver import FakeApiServer, eventually
from tests.unit.test_k8s_pods import DATA, DEBUG, WEB_NGINX, _api, _load
from tetragon.k8s.eventcache import PodEventCache
from tetragon.k8s.podinfo import PodInfo, pod_from_json
from tetragon.k8s.pods import PodCache, PodWatcher


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _cache(known: dict[str, PodInfo], clock: Clock, **kwargs: int) -> tuple[PodEventCache[str], list]:
    sent: list[tuple[str, str | None]] = []
    cache: PodEventCache[str] = PodEventCache(
        lambda cid: next((p for k, p in known.items() if k.startswith(cid)), None),
        lambda event, pod: sent.append((event, pod.name if pod else None)),
        retry_delay=2.0,
        clock=clock,
        **kwargs,
    )
    return cache, sent


def test_held_until_the_pod_is_known() -> None:
    web = pod_from_json(_load("pods-list.json")["items"][0])
    known: dict[str, PodInfo] = {}
    clock = Clock()
    cache, sent = _cache(known, clock, retries=15)
    assert cache.resolve_or_hold("exec-1", WEB_NGINX[:31]) is None
    assert len(cache) == 1 and cache.process() == 0  # not due yet
    clock.now += 2.0
    assert cache.process() == 0 and cache.stats.fetch_retries == 1
    known[WEB_NGINX] = web
    clock.now += 2.0
    assert cache.process() == 1
    assert sent == [("exec-1", "web-7d4b9c8f6-x2x9k")] and len(cache) == 0
    assert (cache.stats.inserts, cache.stats.resolved, cache.stats.fetch_failures) == (1, 1, 0)
    # once known, events pass straight through
    assert cache.resolve_or_hold("exec-2", WEB_NGINX[:31]) is web and len(cache) == 0
    # a host process has no container and waits for nothing
    assert cache.resolve_or_hold("exec-3", "") is None and len(cache) == 0


def test_sent_without_pod_after_the_last_retry() -> None:
    clock = Clock()
    cache, sent = _cache({}, clock, retries=3)
    cache.add("exec-1", DEBUG)
    for _ in range(2):
        clock.now += 2.0
        assert cache.process() == 0
    clock.now += 2.0
    assert cache.process() == 1
    assert sent == [("exec-1", None)]
    assert (cache.stats.fetch_retries, cache.stats.fetch_failures) == (2, 1)


def test_bounded_in_size_without_losing_events() -> None:
    clock = Clock()
    cache, sent = _cache({}, clock, max_entries=2)
    for n in range(3):
        cache.add(f"exec-{n}", DEBUG)
    assert sent == [("exec-0", None)] and len(cache) == 2 and cache.stats.overflows == 1
    cache.flush()
    assert [e for e, _ in sent] == ["exec-0", "exec-1", "exec-2"] and len(cache) == 0


def test_pod_seen_after_its_first_exec(tmp_path: Path) -> None:
    """The exec arrives while the watch has not yet reported the container; the event leaves the cache
    with its pod once the next watch stream (the server ends each after a second) brings it."""
    server = FakeApiServer()
    server.pod_list = _load("pods-list.json")
    pods = PodCache()
    watcher = PodWatcher(_api(server.port), "node1", pods, watch_timeout=1, retry_delay=0.05)
    sent: list[tuple[str, str | None]] = []
    cache: PodEventCache[str] = PodEventCache(
        pods.by_container,
        lambda e, pod: sent.append((e, pod.name if pod else None)),
        retries=200,  # 10 s of budget: the pod comes with the next watch stream, within a second
        retry_delay=0.05,
    )
    watcher.start()
    try:
        assert watcher.synced.wait(10)
        assert cache.resolve_or_hold("exec in debug", DEBUG[:31]) is None
        server.watch_events = (DATA / "pods-watch.jsonl").read_text().splitlines()
        eventually(lambda: cache.process() > 0 or bool(sent), "the held event to be sent")
        assert sent == [("exec in debug", "debug")]
        assert cache.stats.fetch_failures == 0
    finally:
        watcher.stop()
        server.stop()
