"""Fan-out of exported events to independent subscribers (gRPC streams).

The pipeline thread publishes each event once; every subscriber has its own bounded queue so a
slow or stuck client only loses its own events (counted in `dropped`), never the pipeline's.
"""

from __future__ import annotations

import queue
import threading

from tetragon.jsontypes import Event


class Subscription:
    def __init__(self, bus: EventBus, maxsize: int) -> None:
        self._bus = bus
        self._queue: queue.Queue[Event] = queue.Queue(maxsize=maxsize)
        self.dropped = 0
        self.closed = False

    def offer(self, event: Event) -> None:
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self.dropped += 1

    def get(self, timeout: float | None = None) -> Event | None:
        """Next event, or None when `timeout` passes first."""
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        self.closed = True
        self._bus.unsubscribe(self)


class EventBus:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subs: tuple[Subscription, ...] = ()
        # read by the pipeline for every event: a plain attribute, kept with _subs under the lock
        self.subscriber_count = 0

    def subscribe(self, maxsize: int = 10000) -> Subscription:
        sub = Subscription(self, maxsize)
        with self._lock:
            self._subs = (*self._subs, sub)
            self.subscriber_count = len(self._subs)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            self._subs = tuple(s for s in self._subs if s is not sub)
            self.subscriber_count = len(self._subs)

    def publish(self, event: Event) -> None:
        for sub in self._subs:  # tuple snapshot: no lock on the hot path
            sub.offer(event)
