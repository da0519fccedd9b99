"""The agent's gRPC server: Tetragon's `tetragon.FineGuidanceSensors` service.

GetEvents streams what the pipeline publishes on the EventBus; every stream owns one bus
subscription (its own bounded queue), so a slow or vanished client only loses its own events.
Each stream applies the request's allow/deny lists and field filters to the event dicts before
converting them to protobuf. The TracingPolicy RPCs go to `policy_handler`, a PolicyManager, through
tetragon.api.policy_service (UNIMPLEMENTED without one).

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

import contextlib
import ctypes
import logging
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import json_format

from tetragon.api.access import ServerOptions, listen_error
from tetragon.api.convert import event_to_proto
from tetragon.api.debug import ProcessSource, get_debug, set_debug
from tetragon.api.gen.tetragon import events_pb2, sensors_pb2, sensors_pb2_grpc, tetragon_pb2
from tetragon.api.info import agent_info, policy_domains
from tetragon.api.interceptor import AccessInterceptor
from tetragon.api.listen import ServerStartError, listen_relay, remove_unix_socket, tls_credentials
from tetragon.api.policy_service import POLICY_UNSUPPORTED, PolicyRpcs
from tetragon.api.relay import PeerRelay
from tetragon.api.runtime_hook import RuntimeHooks, runtime_hook
from tetragon.events.bus import EventBus
from tetragon.export.fieldfilters import compile_field_filters
from tetragon.export.filters import compile_filters

__all__ = ["MAX_RECV_BYTES", "GrpcServer", "ServerStartError"]

if TYPE_CHECKING:
    from tetragon.events.bus import Subscription

log = logging.getLogger(__name__)

MAX_RECV_BYTES = 10 * 1024 * 1024
_POLL_SECONDS = 0.25
_TRIM_AFTER_BACKLOG = 1000  # events left queued for a stream that ended: worth a malloc_trim
# gRPC runs only while clients are connected (tetragon.api.relay): it stops this long after the last
# one left, so a `tetra` command every few seconds does not restart it each time
BACKEND_LINGER = 30.0
_UNARY_THREADS = 16  # threads event streams never take: health and policy RPCs always get one
# Bounds on connections (gRPC Python has no working per-server connection cap): a connection that
# never completes the HTTP/2 handshake is dropped after 10 s, one without a call after 5 minutes.
_HANDSHAKE_MS = 10 * 1000
_IDLE_CONNECTION_MS = 5 * 60 * 1000
_POLICY_RPCS = {  # RPC -> PolicyRpcs method
    "AddTracingPolicy": "add",
    "DeleteTracingPolicy": "delete",
    "ListTracingPolicies": "list",
    "ConfigureTracingPolicy": "configure",
    "EnableTracingPolicy": "enable",
    "DisableTracingPolicy": "disable",
}
HealthCheck = Callable[[], list[tuple[str, str]]]


def _drain(sub: Subscription) -> int:
    count = 0
    while sub.get(timeout=0) is not None:
        count += 1
    return count


def _return_freed_memory() -> None:
    """Give the heap a stalled reader's backlog occupied back to the kernel (glibc keeps freed
    memory below the agent's 32 MiB trim threshold, and in the middle of its heaps, otherwise)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)


def _filter_dicts(filters: Any) -> list[dict[str, Any]]:
    return [json_format.MessageToDict(f, preserving_proto_field_name=True) for f in filters]


ServicerMethod = Callable[[Any, Any, grpc.ServicerContext], Any]


def _policy_rpc(method: str, empty_response: Callable[[], Any]) -> ServicerMethod:
    """A TracingPolicy RPC answered by the policy handler (an empty response when it returns None)."""

    def rpc(servicer: _Servicer, request: Any, context: grpc.ServicerContext) -> Any:
        return servicer._policy(method, request, context) or empty_response()

    rpc.__name__ = rpc.__qualname__ = method
    return rpc


def _deprecated_rpc(method: str) -> ServicerMethod:
    def rpc(servicer: _Servicer, request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(grpc.StatusCode.UNKNOWN, f"{method} is deprecated")

    rpc.__name__ = rpc.__qualname__ = method
    return rpc


class _Servicer(sensors_pb2_grpc.FineGuidanceSensorsServicer):
    def __init__(self, owner: GrpcServer) -> None:
        self._owner = owner
        self._policies = PolicyRpcs(lambda: owner.policy_handler)

    # --- events ---------------------------------------------------------------------------------

    def GetEvents(  # noqa: N802 (gRPC method name)
        self, request: events_pb2.GetEventsRequest, context: grpc.ServicerContext
    ) -> Iterator[events_pb2.GetEventsResponse]:
        try:
            allow = compile_filters(_filter_dicts(request.allow_list)) if request.allow_list else None
            deny = compile_filters(_filter_dicts(request.deny_list)) if request.deny_list else None
            shape = compile_field_filters(_filter_dicts(request.field_filters))
        except ValueError as exc:  # FilterError, bad FieldMask paths
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"invalid filter: {exc}")
        owner = self._owner
        if not owner.take_stream_slot():
            log.warning("GetEvents refused for %s: %d event streams open", context.peer(), owner.max_streams)
            context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"too many event streams open ({owner.max_streams}, --server-max-event-streams)",
            )
        if not context.add_callback(owner.release_stream_slot):  # the RPC has already ended
            owner.release_stream_slot()
            return
        sub = owner.bus.subscribe()
        context.add_callback(sub.close)  # runs when the client goes away or the RPC ends
        try:
            while not owner.stopping.is_set() and context.is_active():
                event = sub.get(timeout=_POLL_SECONDS)
                if event is None:
                    continue
                if (allow is not None and not allow(event)) or (deny is not None and deny(event)):
                    continue
                try:
                    msg = event_to_proto(shape(event))
                except json_format.ParseError as exc:
                    log.warning("dropping event that does not fit GetEventsResponse: %s", exc)
                    continue
                yield msg
        finally:
            sub.close()
            backlog = _drain(sub)  # the RPC's context (and so `sub`) may outlive this generator
            if sub.dropped:
                log.info("GetEvents stream ended; %d events dropped for a slow client", sub.dropped)
            if backlog >= _TRIM_AFTER_BACKLOG:
                _return_freed_memory()

    def GetHealth(  # noqa: N802
        self, request: tetragon_pb2.GetHealthStatusRequest, context: grpc.ServicerContext
    ) -> tetragon_pb2.GetHealthStatusResponse:
        results = self._owner.health() if self._owner.health else [("HEALTH_STATUS_RUNNING", "running")]
        statuses = []
        for name, details in results:
            values = tetragon_pb2.HealthStatusResult.DESCRIPTOR.values_by_name
            status = values[name].number if name in values else tetragon_pb2.HEALTH_STATUS_UNDEF
            statuses.append(
                tetragon_pb2.HealthStatus(
                    event=tetragon_pb2.HEALTH_STATUS_TYPE_STATUS, status=status, details=details
                )
            )
        return tetragon_pb2.GetHealthStatusResponse(health_status=statuses)

    def GetVersion(  # noqa: N802
        self, request: sensors_pb2.GetVersionRequest, context: grpc.ServicerContext
    ) -> sensors_pb2.GetVersionResponse:
        return sensors_pb2.GetVersionResponse(version=self._owner.version)

    # --- tracing policies -----------------------------------------------------------------------

    def _policy(self, method: str, request: Any, context: grpc.ServicerContext) -> Any:
        handler = self._owner.policy_handler
        if handler is None:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, POLICY_UNSUPPORTED)
        legacy = getattr(handler, method, None)
        if legacy is not None:  # an older handler that answers RPCs by name with protobuf messages
            try:
                return legacy(request)
            except LookupError as exc:
                context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
            except ValueError as exc:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        return getattr(self._policies, _POLICY_RPCS[method])(request, context)

    AddTracingPolicy = _policy_rpc("AddTracingPolicy", sensors_pb2.AddTracingPolicyResponse)
    DeleteTracingPolicy = _policy_rpc("DeleteTracingPolicy", sensors_pb2.DeleteTracingPolicyResponse)
    ListTracingPolicies = _policy_rpc("ListTracingPolicies", sensors_pb2.ListTracingPoliciesResponse)
    ConfigureTracingPolicy = _policy_rpc("ConfigureTracingPolicy", sensors_pb2.ConfigureTracingPolicyResponse)
    EnableTracingPolicy = _policy_rpc("EnableTracingPolicy", sensors_pb2.EnableTracingPolicyResponse)
    DisableTracingPolicy = _policy_rpc("DisableTracingPolicy", sensors_pb2.DisableTracingPolicyResponse)

    # --- removed in Tetragon 1.4: the RPCs stay, the answer is an error -------------------------

    ListSensors = _deprecated_rpc("ListSensors")
    EnableSensor = _deprecated_rpc("EnableSensor")
    DisableSensor = _deprecated_rpc("DisableSensor")
    RemoveSensor = _deprecated_rpc("RemoveSensor")

    # --- debug --------------------------------------------------------------------------------

    def GetDebug(  # noqa: N802
        self, request: sensors_pb2.GetDebugRequest, context: grpc.ServicerContext
    ) -> sensors_pb2.GetDebugResponse:
        return get_debug(request, context, self._owner.process_cache)

    def SetDebug(  # noqa: N802
        self, request: sensors_pb2.SetDebugRequest, context: grpc.ServicerContext
    ) -> sensors_pb2.SetDebugResponse:
        return set_debug(request, context)

    # --- agent description ----------------------------------------------------------------------

    def GetInfo(  # noqa: N802
        self, request: sensors_pb2.GetInfoRequest, context: grpc.ServicerContext
    ) -> sensors_pb2.GetInfoResponse:
        return agent_info(self._owner.version, self._owner.config)

    def ListDomains(  # noqa: N802
        self, request: sensors_pb2.ListDomainsRequest, context: grpc.ServicerContext
    ) -> sensors_pb2.ListDomainsResponse:
        return policy_domains(self._owner.policy_handler)

    def RuntimeHook(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        return runtime_hook(self._owner.runtime_hooks, request, context)


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
            sensors_pb2_grpc.add_FineGuidanceSensorsServicer_to_server(_Servicer(self), server)
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
        self.stopping.set()  # open GetEvents streams notice within _POLL_SECONDS and end cleanly
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
