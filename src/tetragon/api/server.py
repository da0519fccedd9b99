"""The agent's gRPC server: Tetragon's `tetragon.FineGuidanceSensors` service.

The RPCs are tetragon.api.servicer's. It and grpcio (~20 MB of RSS with its core library) are
imported when gRPC first starts, not with the agent: an agent nobody asks has neither.

Every call first goes through tetragon.api.interceptor: only allowed uids get further (see
docs/security.md). Each open stream holds one thread; at most `options.max_event_streams` are open
(RESOURCE_EXHAUSTED beyond) and the pool has _UNARY_THREADS more, so unary RPCs always find one.
The agent listens itself (tetragon.api.relay): it learns each caller at accept, caps connections
per peer and in total there, and runs gRPC on a private socket only while clients are connected.

Addresses: `host:port` (TCP, SO_REUSEPORT off so a busy port is an error, not a shared listener),
`:port` (every interface: TLS with client certificates required), or `unix:///abs/path.sock`
(served through tetragon.api.relay, which learns each caller's uid; a stale socket file is
replaced, a live one is refused); see tetragon.api.listen.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent import futures
from pathlib import Path
from typing import TYPE_CHECKING

from tetragon.api.access import ServerOptions, listen_error
from tetragon.api.listen import ServerStartError, listen_relay, remove_unix_socket, tls_credentials
from tetragon.api.relay import PeerRelay

__all__ = ["MAX_RECV_BYTES", "GrpcServer", "ServerStartError"]

if TYPE_CHECKING:
    import grpc

    from tetragon.api.debug import ProcessSource
    from tetragon.api.runtime_hook import RuntimeHooks
    from tetragon.events.bus import EventBus

log = logging.getLogger(__name__)

MAX_RECV_BYTES = 10 * 1024 * 1024
# gRPC runs only while clients are connected (tetragon.api.relay): it stops this long after the last
# one left, so a `tetra` command every few seconds does not restart it each time
BACKEND_LINGER = 30.0
_UNARY_THREADS = 16  # threads event streams never take: health and policy RPCs always get one
# Bounds on connections (gRPC Python has no working per-server connection cap): a connection that
# never completes the HTTP/2 handshake is dropped after 10 s, one without a call after 5 minutes.
_HANDSHAKE_MS = 10 * 1000
_IDLE_CONNECTION_MS = 5 * 60 * 1000
HealthCheck = Callable[[], list[tuple[str, str]]]


class GrpcServer:
    """FineGuidanceSensors on one address; `start()` raises ServerStartError when it cannot listen."""

    def __init__(
        self,
        bus: EventBus,
        address: str,
        *,
        version: str,
        health: HealthCheck | None = None,
        policy_handler: object | None = None,  # a PolicyManager (tetragon.sensors.manager)
        options: ServerOptions | None = None,
        process_cache: ProcessSource | None = None,  # for GetDebug's process-cache dump
        config: object | None = None,  # the AgentConfig GetInfo reports
    ) -> None:
        self.bus = bus
        self.config = config
        self.process_cache = process_cache
        self.address = address
        self.version = version
        self.health = health
        self.policy_handler = policy_handler
        self.runtime_hooks: RuntimeHooks | None = None  # the OCI hook's side (api/runtime_hook.py)
        self.stopping = threading.Event()
        self.port: int | None = None  # the bound TCP port (useful with host:0)
        self.options = options or ServerOptions()
        self.max_streams = self.options.max_event_streams
        self._streams = 0
        self._streams_lock = threading.Lock()
        self._relay: PeerRelay | None = None  # the listener; gRPC itself runs behind it
        self._credentials: grpc.ServerCredentials | None = None
        self._backend_lock = threading.Lock()
        self._server: grpc.Server | None = None
        self._executor: futures.ThreadPoolExecutor | None = None
        self._unix_socket: tuple[Path, int] | None = None  # path and inode, removed at stop

    def start(self) -> None:
        """Listen on the address; gRPC itself starts with the first connection (tetragon.api.relay)."""
        if self._relay is not None:
            raise RuntimeError("server already started")
        opts = self.options
        error = listen_error(self.address, opts)
        if error is not None:
            raise ServerStartError(error)
        self._credentials = tls_credentials(opts, self.address)
        relay = PeerRelay(
            per_peer=opts.max_connections_per_peer,
            total=opts.max_connections,
            start_backend=lambda: self._start_backend(relay),
            stop_backend=lambda: self._stop_backend(0),
            linger=BACKEND_LINGER,
        )
        try:
            self.port, self._unix_socket = listen_relay(relay, self.address)
        except BaseException:
            relay.stop()
            raise
        relay.start()
        self._relay = relay
        log.info("gRPC server listening on %s", self.address)

    def _start_backend(self, relay: PeerRelay) -> None:
        """The gRPC server on the relay's private socket (called by the relay at the first connection)."""
        opts = self.options
        with self._backend_lock:
            if self.stopping.is_set():
                raise RuntimeError("the server is stopping")
            import grpc

            from tetragon.api.gen.tetragon import sensors_pb2_grpc
            from tetragon.api.interceptor import AccessInterceptor
            from tetragon.api.servicer import Servicer

            # one thread per open event stream at most, plus threads only unary RPCs can use
            executor = futures.ThreadPoolExecutor(
                max_workers=self.max_streams + _UNARY_THREADS, thread_name_prefix="grpc"
            )
            server = grpc.server(
                executor,
                interceptors=[
                    AccessInterceptor(
                        opts.access,
                        relay.client_dir,
                        tls=opts.tls,
                        streams_per_peer=opts.max_event_streams_per_peer,
                    )
                ],
                options=[
                    ("grpc.max_receive_message_length", MAX_RECV_BYTES),
                    ("grpc.max_connection_idle_ms", _IDLE_CONNECTION_MS),
                    ("grpc.server_handshake_timeout_ms", _HANDSHAKE_MS),
                ],
            )
            sensors_pb2_grpc.add_FineGuidanceSensorsServicer_to_server(Servicer(self), server)
            backend = f"unix://{relay.backend_path}"
            creds = self._credentials
            port = (
                server.add_insecure_port(backend) if creds is None else server.add_secure_port(backend, creds)
            )
            if port == 0:
                executor.shutdown(wait=False)
                raise RuntimeError(f"cannot listen on {backend}")
            server.start()
            self._server, self._executor = server, executor

    def _stop_backend(self, grace: float) -> None:
        """Stop gRPC (its core's threads end with the last server); the listener stays."""
        with self._backend_lock:
            server, executor = self._server, self._executor
            self._server = self._executor = None
            if server is not None:
                server.stop(grace).wait(grace + 5.0)
            if executor is not None:
                executor.shutdown(wait=False)

    def stop(self, grace: float = 1.0) -> None:
        self.stopping.set()  # open GetEvents streams notice within a quarter second and end cleanly
        self._stop_backend(grace)  # calls in flight get `grace`; the relay still carries their replies
        relay, self._relay = self._relay, None
        if relay is not None:
            relay.stop()
        remove_unix_socket(self._unix_socket)
        self._unix_socket = None

    @property
    def connections(self) -> int:
        """Client connections open now (the relay's count, which its caps apply to)."""
        return self._relay.connections if self._relay is not None else 0

    @property
    def serving(self) -> bool:
        """Whether gRPC itself runs now (it does only while clients are connected, and a while after)."""
        return self._server is not None

    def take_stream_slot(self) -> bool:
        with self._streams_lock:
            if self._streams >= self.max_streams:
                return False
            self._streams += 1
            return True

    def release_stream_slot(self) -> None:
        with self._streams_lock:
            self._streams -= 1

    def __enter__(self) -> GrpcServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
