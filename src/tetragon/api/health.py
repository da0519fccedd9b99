"""`--health-server-address`: the standard gRPC health service (`grpc.health.v1.Health`) that
Kubernetes liveness probes (`grpc: {port: 6789, service: liveness}`) and `grpc_health_probe` ask.

As Tetragon's pkg/health: service `liveness` is SERVING while the agent's own health check
(the one GetHealth answers) reports every status HEALTH_STATUS_RUNNING, NOT_SERVING otherwise,
re-evaluated every `--health-server-interval` seconds. The service says nothing but that one word,
so it listens without access checks, on every interface for `:port` (docs/security.md).

gRPC's core keeps threads that wake several times a second, so, as the API server, the port is the
agent's own listener (tetragon.api.relay) and gRPC runs only while a probe is connected and
HEALTH_LINGER seconds after: a kubelet probing every 10 s finds it stopped between probes, and an
agent nobody probes has no gRPC thread at all. The status is evaluated when gRPC starts, then every
interval while it runs.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable
from concurrent import futures
from typing import TYPE_CHECKING, Any

from tetragon.api.listen import ServerStartError, bind_tcp
from tetragon.api.relay import PeerRelay

if TYPE_CHECKING:
    import grpc
    from grpc_health.v1 import health

__all__ = ["LIVENESS", "HealthServer", "serving_status"]

log = logging.getLogger(__name__)

LIVENESS = "liveness"
HEALTH_LINGER = 1.0  # seconds gRPC keeps running after the last probe's connection closed
# connections a probing peer (a remote address; local uids other than root's) may hold, and in all
_PER_PEER = 16
_TOTAL = 64
HealthCheck = Callable[[], list[tuple[str, str]]]


SERVING = 1  # grpc.health.v1 HealthCheckResponse.ServingStatus, without importing protobuf at start
NOT_SERVING = 2


def serving_status(statuses: list[tuple[str, str]]) -> int:
    """SERVING when there is a status and every one is HEALTH_STATUS_RUNNING (as GetHealth says)."""
    running = bool(statuses) and all(name == "HEALTH_STATUS_RUNNING" for name, _ in statuses)
    return SERVING if running else NOT_SERVING


def tcp_address(address: str) -> str:
    """Tetragon's `:port` is every interface; `host:port` and `[v6]:port` as given."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ServerStartError(f"invalid health server address {address!r}: expected [host]:port")
    return f"[::]:{port}" if not host else address


class HealthServer:
    """grpc.health.v1 on its own listener; `start()` raises ServerStartError when it cannot listen."""

    def __init__(self, address: str, check: HealthCheck, interval: float = 10.0) -> None:
        self.address = address
        self.check = check
        self.interval = interval
        self.port: int | None = None
        self.status = NOT_SERVING
        self.servicer: health.HealthServicer | None = None  # made with gRPC, at a probe's connection
        self._relay: PeerRelay | None = None
        self._lock = threading.Lock()
        self._server: grpc.Server | None = None
        self._stop_updates = threading.Event()
        self._thread: threading.Thread | None = None

    def update(self) -> int:
        """Evaluate the check now and publish the result under `liveness` (and the server-wide "")."""
        try:
            status = serving_status(self.check())
        except Exception:  # a failing check is an unhealthy agent, never a dead health server
            log.exception("health check failed")
            status = NOT_SERVING
        self.status = status
        servicer = self.servicer
        if servicer is not None:
            servicer.set(LIVENESS, status)
            servicer.set("", status)
        return status

    def start(self) -> None:
        if self._relay is not None:
            raise RuntimeError("health server already started")
        tcp_address(self.address)  # a clear error for a malformed address
        listeners, port = bind_tcp(self.address)  # `:port`: every interface, IPv4 and IPv6
        relay = PeerRelay(
            per_peer=_PER_PEER,
            total=_TOTAL,
            start_backend=lambda: self._start_backend(relay),
            stop_backend=self._stop_backend,
            linger=HEALTH_LINGER,
        )
        try:
            relay.listen_tcp(listeners, port)
        except OSError as exc:
            relay.stop()
            raise ServerStartError(f"cannot listen on {self.address}: {exc.strerror}") from exc
        self.port = port
        self.update()
        relay.start()
        self._relay = relay
        log.info("gRPC health server listening on %s", self.address)

    @property
    def serving(self) -> bool:
        """Whether gRPC itself runs now (only while a probe is connected, and HEALTH_LINGER after)."""
        return self._server is not None

    def _start_backend(self, relay: PeerRelay) -> None:
        """gRPC on the relay's private socket, at a probe's connection; the status evaluated now."""
        import grpc  # grpcio and protobuf only once a probe comes (~20 MB of RSS)
        from grpc_health.v1 import health, health_pb2_grpc

        with self._lock:
            if self.servicer is None:
                self.servicer = health.HealthServicer()
            self.update()
            server = grpc.server(futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="health"))
            health_pb2_grpc.add_HealthServicer_to_server(self.servicer, server)
            if server.add_insecure_port(f"unix://{relay.backend_path}") == 0:
                raise RuntimeError(f"cannot listen on {relay.backend_path}")
            server.start()
            self._server = server
            self._stop_updates = stop = threading.Event()
            self._thread = threading.Thread(target=self._updates, args=(stop,), name="health", daemon=True)
            self._thread.start()

    def _updates(self, stop: threading.Event) -> None:
        while not stop.wait(self.interval):
            self.update()

    def _stop_backend(self, grace: float = 0.0) -> None:
        with self._lock:
            self._stop_updates.set()
            server, self._server = self._server, None
            thread, self._thread = self._thread, None
        if server is not None:
            server.stop(grace).wait(grace + 5.0)
        if thread is not None:
            thread.join(timeout=5)

    def stop(self, grace: float = 0.5) -> None:
        if self.servicer is not None:
            self.servicer.enter_graceful_shutdown()
        relay, self._relay = self._relay, None
        if relay is not None:
            relay.stop()  # stops gRPC if it runs, after closing the connections
        self._stop_backend(grace)


class RingBufferWatch:
    """Whether the agent stopped draining its ring buffer: between two samples at least `window`
    seconds apart, the kernel sent records (the sensor's counters grew) and the reader received
    none. A wedged drain loop is what a liveness probe exists to catch."""

    def __init__(self, window: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self.clock = clock
        self._lock = threading.Lock()
        self._reference: tuple[float, int, int] | None = None
        self._stalled = False

    def stalled(self, sent: int, received: int) -> bool:
        now = self.clock()
        with self._lock:
            if self._reference is None:
                self._reference = (now, sent, received)
                return False
            then, sent_then, received_then = self._reference
            if now - then >= self.window:
                self._stalled = sent > sent_then and received == received_then
                self._reference = (now, sent, received)
            return self._stalled


# one watch per sensor object, kept beside it rather than in the agent (weak: it goes with the sensor)
_WATCHES: weakref.WeakKeyDictionary[object, RingBufferWatch] = weakref.WeakKeyDictionary()


def agent_statuses(ready: bool, stopping: bool, sensor: Any) -> list[tuple[str, str]]:
    """What GetHealth (and so `liveness`) reports for the agent: RUNNING once started with its base
    sensor loaded and its ring buffer open and drained; STOPPED while shutting down; ERROR when the
    sensor or its ring buffer reader is gone, or the kernel sends records nobody reads; nothing
    before start-up has finished."""
    if not ready:
        return []
    if stopping:
        return [("HEALTH_STATUS_STOPPED", "stopping")]
    if sensor is None:
        return [("HEALTH_STATUS_ERROR", "base sensor not loaded")]
    reader = getattr(sensor, "reader", None)
    if reader is None:
        return [("HEALTH_STATUS_ERROR", "ring buffer not open")]
    sent = getattr(sensor, "sent", None)
    if sent is not None:
        watch = _WATCHES.setdefault(sensor, RingBufferWatch())
        if watch.stalled(sent(), reader.received):
            return [("HEALTH_STATUS_ERROR", "ring buffer not drained: the kernel sends, nothing is received")]
    return [("HEALTH_STATUS_RUNNING", "running")]
