"""`--export-rate-limit`: a token bucket of N events per minute with a burst of N (Go's
`rate.NewLimiter(rate.Every(time.Minute/N), N)`), plus the per-minute drop report that Tetragon
writes as a `rate_limit_info` event. N = 0 lets nothing through; N < 0 means no limiter at all.
"""

from __future__ import annotations

import time
from collections.abc import Callable

REPORT_INTERVAL = 60.0


class RateLimiter:
    def __init__(self, events_per_minute: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        if events_per_minute < 0:
            raise ValueError("a negative rate limit means no limiter; do not construct one")
        self._clock = clock
        self._burst = float(events_per_minute)
        self._per_second = events_per_minute / 60.0
        self._tokens = self._burst
        now = clock()
        self._last = now
        self._next_report = now + REPORT_INTERVAL
        self.dropped_since_report = 0
        self.dropped_total = 0

    def allow(self) -> bool:
        """Take one token; counts the event as dropped when there is none."""
        now = self._clock()
        tokens = self._tokens + (now - self._last) * self._per_second
        self._last = now
        if tokens > self._burst:
            tokens = self._burst
        if tokens >= 1.0:
            self._tokens = tokens - 1.0
            return True
        self._tokens = tokens
        self.dropped_since_report += 1
        self.dropped_total += 1
        return False

    def due_report(self) -> int:
        """When a report period has ended: the number of events dropped in it (may be 0), and the
        counter restarts. Before that: -1."""
        now = self._clock()
        if now < self._next_report:
            return -1
        while self._next_report <= now:
            self._next_report += REPORT_INTERVAL
        dropped, self.dropped_since_report = self.dropped_since_report, 0
        return dropped
