"""Leader election on a coordination.k8s.io/v1 Lease, with the official client.

The operator's replicas (`tetragonOperator.replicas` with `failoverLease.enabled`) each run a
`LeaseElector`; one holds the Lease and works, the others wait. The rules are client-go's:

- a Lease is free when it has no holder, or when its record (holder, renewTime) has not changed for
  `lease_duration` as measured on this replica's own monotonic clock (so clock skew between nodes
  does not matter);
- the leader renews every `retry_period`; if no renewal succeeds for `renew_deadline` it stops
  leading (it may have been partitioned away, and someone else may already hold the Lease);
- every write carries the resourceVersion read just before, so two replicas racing for a free Lease
  cannot both win (the API server answers 409 to the second);
- a replica that stops cleanly releases the Lease (empty holder), so a successor need not wait.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable

from kubernetes import client
from kubernetes.client.rest import ApiException

log = logging.getLogger(__name__)

HTTP_NOT_FOUND = 404
HTTP_CONFLICT = 409


def _now() -> dt.datetime:
    """Now, for a MicroTime field: the client writes isoformat(), which drops the fraction when it is
    zero, and the API server wants exactly six digits."""
    now = dt.datetime.now(dt.UTC)
    return now.replace(microsecond=now.microsecond or 1)


class LeaseElector:
    """Acquires and keeps one Lease; `run` blocks until `stop`, calling back on gaining/losing it."""

    def __init__(
        self,
        api: client.CoordinationV1Api,
        name: str,
        namespace: str,
        identity: str,
        *,
        lease_duration: float = 15.0,
        renew_deadline: float = 5.0,
        retry_period: float = 2.0,
        on_started_leading: Callable[[], None] | None = None,
        on_stopped_leading: Callable[[], None] | None = None,
    ) -> None:
        if not lease_duration > renew_deadline > retry_period > 0:
            raise ValueError("need lease_duration > renew_deadline > retry_period > 0")
        self.api = api
        self.name = name
        self.namespace = namespace
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.on_started_leading = on_started_leading
        self.on_stopped_leading = on_stopped_leading
        self.leading = threading.Event()
        self._stop = threading.Event()
        self._release_on_stop = True
        self._observed: tuple[str, str] | None = None
        self._observed_at = 0.0
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name=f"lease-{self.identity}", daemon=True)
        self._thread.start()

    def stop(self, release: bool = True, timeout: float = 5.0) -> None:
        """Stops electing; the leader gives the Lease up unless `release` is False (as a crash would)."""
        self._release_on_stop = release
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def run(self) -> None:
        while not self._stop.is_set():
            if self.try_acquire_or_renew():
                self._lead()
            else:
                self._stop.wait(self.retry_period)

    def _lead(self) -> None:
        self.leading.set()
        log.info("%s leads %s/%s", self.identity, self.namespace, self.name)
        if self.on_started_leading is not None:
            self.on_started_leading()
        last_renewal = time.monotonic()
        while not self._stop.wait(self.retry_period):
            if self.try_acquire_or_renew():
                last_renewal = time.monotonic()
            elif time.monotonic() - last_renewal >= self.renew_deadline:
                log.warning(
                    "%s could not renew %s/%s: no longer leading", self.identity, self.namespace, self.name
                )
                break
        self.leading.clear()
        if self._stop.is_set() and self._release_on_stop:
            self._release()
        if self.on_stopped_leading is not None:
            self.on_stopped_leading()

    def _expired(self, lease: client.V1Lease) -> bool:
        spec = lease.spec or client.V1LeaseSpec()
        record = (spec.holder_identity or "", str(spec.renew_time))
        now = time.monotonic()
        if record != self._observed:
            self._observed, self._observed_at = record, now
        return not spec.holder_identity or now - self._observed_at >= self.lease_duration

    def try_acquire_or_renew(self) -> bool:
        """One attempt: True if this replica holds the Lease afterwards."""
        try:
            lease = self.api.read_namespaced_lease(
                self.name, self.namespace, _request_timeout=self.renew_deadline
            )
        except ApiException as err:
            if err.status != HTTP_NOT_FOUND:
                log.debug("reading lease %s/%s: %s", self.namespace, self.name, err)
                return False
            return self._create()
        except Exception as err:  # API unreachable
            log.debug("reading lease %s/%s: %s", self.namespace, self.name, err)
            return False
        spec = lease.spec or client.V1LeaseSpec()
        holder = spec.holder_identity or ""
        if holder != self.identity and not self._expired(lease):
            return False
        now = _now()
        if holder != self.identity:
            spec.acquire_time = now
            spec.lease_transitions = (spec.lease_transitions or 0) + 1
        spec.holder_identity = self.identity
        spec.lease_duration_seconds = max(1, round(self.lease_duration))
        spec.renew_time = now
        lease.spec = spec
        return self._replace(lease)

    def _create(self) -> bool:
        now = _now()
        lease = client.V1Lease(
            metadata=client.V1ObjectMeta(name=self.name, namespace=self.namespace),
            spec=client.V1LeaseSpec(
                holder_identity=self.identity,
                lease_duration_seconds=max(1, round(self.lease_duration)),
                acquire_time=now,
                renew_time=now,
                lease_transitions=0,
            ),
        )
        try:
            self.api.create_namespaced_lease(self.namespace, lease, _request_timeout=self.renew_deadline)
        except Exception as err:  # 409: another replica created it first
            log.debug("creating lease %s/%s: %s", self.namespace, self.name, err)
            return False
        return True

    def _replace(self, lease: client.V1Lease) -> bool:
        try:
            self.api.replace_namespaced_lease(
                self.name, self.namespace, lease, _request_timeout=self.renew_deadline
            )
        except Exception as err:  # 409: the Lease changed since it was read
            log.debug("updating lease %s/%s: %s", self.namespace, self.name, err)
            return False
        return True

    def _release(self) -> None:
        try:
            lease = self.api.read_namespaced_lease(
                self.name, self.namespace, _request_timeout=self.renew_deadline
            )
        except Exception:
            return
        spec = lease.spec or client.V1LeaseSpec()
        if spec.holder_identity != self.identity:
            return
        spec.holder_identity = None
        spec.lease_duration_seconds = 1
        spec.renew_time = _now()
        lease.spec = spec
        if self._replace(lease):
            log.info("%s released %s/%s", self.identity, self.namespace, self.name)
