"""Events waiting for their pod: Tetragon's event cache, for the `pod` part.

An event from a container whose pod is not known yet (the exec came before the watch told us about
the pod) is held here rather than sent without `pod`. Every `retry_delay` seconds the waiting events
are looked up again; one whose pod appears is sent with it, one still unknown after `retries`
attempts is sent without it (Tetragon's `--event-cache-retries` 15 and `--event-cache-retry-delay`
2s). The cache holds at most `max_entries` events: when full, the oldest is sent as it is, so nothing
is lost and memory stays bounded. `stats` counts what Tetragon's `tetragon_event_cache_*` metrics
count (inserts, fetch retries, fetch failures by event type, entries) plus the overflows.

The caller owns the thread: `process()` does one pass over the due entries and is meant to be called
from the agent's pipeline loop (or a timer).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from tetragon.k8s.podinfo import PodInfo

E = TypeVar("E")


@dataclass(slots=True)
class EventCacheStats:
    inserts: int = 0
    fetch_retries: int = 0  # lookups that found no pod and will be tried again
    fetch_failures: int = 0  # events sent without their pod after the last retry
    # the same by event type (Tetragon's `event_type` label: PROCESS_EXEC, PROCESS_KPROBE, ...)
    failures_by_type: dict[str, int] = field(default_factory=dict)
    overflows: int = 0  # events sent early because the cache was full
    resolved: int = 0  # events sent with the pod found on a retry


@dataclass(slots=True)
class _Pending(Generic[E]):
    event: E
    container_id: str
    due: float
    attempts: int = 0


class PodEventCache(Generic[E]):
    """Holds events until `lookup(container_id)` finds their pod, within a bounded budget."""

    def __init__(
        self,
        lookup: Callable[[str], PodInfo | None],
        emit: Callable[[E, PodInfo | None], None],
        *,
        retries: int = 15,
        retry_delay: float = 2.0,
        max_entries: int = 10000,
        clock: Callable[[], float] = time.monotonic,
        event_type: Callable[[E], str] = lambda event: "unknown",
    ) -> None:
        self.lookup = lookup
        self.emit = emit
        self.retries = retries
        self.retry_delay = retry_delay
        self.max_entries = max(1, max_entries)
        self.clock = clock
        self.event_type = event_type
        self.stats = EventCacheStats()
        self._lock = threading.Lock()
        self._pending: OrderedDict[int, _Pending[E]] = OrderedDict()
        self._next_key = 0

    def __len__(self) -> int:
        return len(self._pending)

    def resolve_or_hold(self, event: E, container_id: str) -> PodInfo | None:
        """The pod of the event's container now, or None after taking the event in (to be emitted
        later, with or without its pod). Events from no container need no pod: pass ""."""
        if not container_id:
            return None
        pod = self.lookup(container_id)
        if pod is None:
            self.add(event, container_id)
        return pod

    def add(self, event: E, container_id: str) -> None:
        overflow: _Pending[E] | None = None
        with self._lock:
            if len(self._pending) >= self.max_entries:
                _, overflow = self._pending.popitem(last=False)
                self.stats.overflows += 1
            self._pending[self._next_key] = _Pending(event, container_id, self.clock() + self.retry_delay)
            self._next_key += 1
            self.stats.inserts += 1
        if overflow is not None:
            self.emit(overflow.event, self.lookup(overflow.container_id))

    def process(self) -> int:
        """One pass over the entries that are due; returns how many events were emitted."""
        now = self.clock()
        out: list[tuple[E, PodInfo | None]] = []
        with self._lock:
            due = [(key, entry) for key, entry in self._pending.items() if entry.due <= now]
        for key, entry in due:
            pod = self.lookup(entry.container_id)
            entry.attempts += 1
            if pod is None and entry.attempts < self.retries:
                entry.due = now + self.retry_delay
                self.stats.fetch_retries += 1
                continue
            with self._lock:
                if self._pending.pop(key, None) is None:
                    continue
            if pod is None:
                self.stats.fetch_failures += 1
                kind = self.event_type(entry.event)
                self.stats.failures_by_type[kind] = self.stats.failures_by_type.get(kind, 0) + 1
            else:
                self.stats.resolved += 1
            out.append((entry.event, pod))
        for event, pod in out:
            self.emit(event, pod)
        return len(out)

    def flush(self) -> None:
        """Sends everything still waiting, with the pod where it is known by now (at shutdown)."""
        with self._lock:
            entries = list(self._pending.values())
            self._pending.clear()
        for entry in entries:
            self.emit(entry.event, self.lookup(entry.container_id))
