"""The agent's gRPC server: Tetragon's `tetragon.FineGuidanceSensors` service.

GetEvents streams what the pipeline publishes on the EventBus; every stream owns one bus
subscription (its own bounded queue), so a slow or vanished client only loses its own events.
Each stream applies the request's allow/deny lists and field filters to the event dicts before
converting them to protobuf. The TracingPolicy RPCs go to `policy_handler`, a PolicyManager, through
tetragon.api.policy_service (UNIMPLEMENTED without one).

Addresses: `host:port` (TCP, SO_REUSEPORT off so a busy port is an error, not a shared listener) or
`unix:///abs/path.sock` (created 0600; a stale socket file is replaced, a live one is refused).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import stat
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format

from tetragon.api.convert import event_to_proto
from tetragon.api.gen.tetragon import events_pb2, sensors_pb2, sensors_pb2_grpc, tetragon_pb2
from tetragon.api.policy_service import POLICY_UNSUPPORTED, PolicyRpcs
from tetragon.events.bus import EventBus
from tetragon.export.fieldfilters import compile_field_filters
from tetragon.export.filters import compile_filters

__all__ = ["MAX_RECV_BYTES", "GrpcServer", "ServerStartError"]

log = logging.getLogger(__name__)

MAX_RECV_BYTES = 10 * 1024 * 1024
_POLL_SECONDS = 0.25
_POLICY_RPCS = {  # RPC -> PolicyRpcs method
    "AddTracingPolicy": "add",
    "DeleteTracingPolicy": "delete",
    "ListTracingPolicies": "list",
    "ConfigureTracingPolicy": "configure",
    "EnableTracingPolicy": "enable",
    "DisableTracingPolicy": "disable",
}
_LOG_LEVELS = {  # tetragon.LogLevel -> Python logging level
    sensors_pb2.LOG_LEVEL_PANIC: logging.CRITICAL,
    sensors_pb2.LOG_LEVEL_FATAL: logging.CRITICAL,
    sensors_pb2.LOG_LEVEL_ERROR: logging.ERROR,
    sensors_pb2.LOG_LEVEL_WARN: logging.WARNING,
    sensors_pb2.LOG_LEVEL_INFO: logging.INFO,
    sensors_pb2.LOG_LEVEL_DEBUG: logging.DEBUG,
    sensors_pb2.LOG_LEVEL_TRACE: logging.DEBUG,
}

HealthCheck = Callable[[], list[tuple[str, str]]]


class ServerStartError(RuntimeError):
    """The server could not listen on its address."""


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
            if sub.dropped:
                log.info("GetEvents stream ended; %d events dropped for a slow client", sub.dropped)

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
        if request.flag != sensors_pb2.CONFIG_FLAG_LOG_LEVEL:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, "process cache dump is not supported yet")
        level = logging.getLogger("tetragon").getEffectiveLevel()
        name = min((k for k, v in _LOG_LEVELS.items() if v == level), default=sensors_pb2.LOG_LEVEL_INFO)
        return sensors_pb2.GetDebugResponse(flag=request.flag, level=name)

    def SetDebug(  # noqa: N802
        self, request: sensors_pb2.SetDebugRequest, context: grpc.ServicerContext
    ) -> sensors_pb2.SetDebugResponse:
        if request.flag != sensors_pb2.CONFIG_FLAG_LOG_LEVEL or request.level not in _LOG_LEVELS:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "only CONFIG_FLAG_LOG_LEVEL can be set")
        logging.getLogger("tetragon").setLevel(_LOG_LEVELS[request.level])
        return sensors_pb2.SetDebugResponse(flag=request.flag, level=request.level)

    def RuntimeHook(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "runtime hooks are not supported yet")


class GrpcServer:
    """FineGuidanceSensors on one address; `start()` raises ServerStartError when it cannot listen."""

    def __init__(
        self,
        bus: EventBus,
        address: str,
        *,
        version: str,
        health: HealthCheck | None = None,
        policy_handler: object | None = None,  # a PolicyManager (tetragon.policy.manager)
        max_workers: int = 32,
    ) -> None:
        self.bus = bus
        self.address = address
        self.version = version
        self.health = health
        self.policy_handler = policy_handler
        self.stopping = threading.Event()
        self.port: int | None = None  # the bound TCP port (useful with host:0)
        self._max_workers = max_workers
        self._server: grpc.Server | None = None
        self._unix_path: Path | None = None
        self._unix_inode: int | None = None

    def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("server already started")
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=self._max_workers, thread_name_prefix="grpc"),
            options=[
                ("grpc.max_receive_message_length", MAX_RECV_BYTES),
                ("grpc.so_reuseport", 0),
            ],
        )
        sensors_pb2_grpc.add_FineGuidanceSensorsServicer_to_server(_Servicer(self), server)
        if self.address.startswith("unix://"):
            self._bind_unix(server, self.address.removeprefix("unix://"))
        else:
            self._bind_tcp(server, self.address)
        server.start()
        self._server = server
        log.info("gRPC server listening on %s", self.address)

    def stop(self, grace: float = 1.0) -> None:
        self.stopping.set()  # open GetEvents streams notice within _POLL_SECONDS and end cleanly
        server, self._server = self._server, None
        if server is not None:
            server.stop(grace).wait(grace + 5.0)
        self._remove_unix_socket()

    def __enter__(self) -> GrpcServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- listening -----------------------------------------------------------------------------

    def _bind_tcp(self, server: grpc.Server, address: str) -> None:
        if ":" not in address:
            raise ServerStartError(f"invalid server address {address!r}: expected host:port or unix:///path")
        _check_tcp_free(address)  # a clean error instead of grpc core's bind log line
        try:
            port = server.add_insecure_port(address)
        except RuntimeError as exc:
            raise ServerStartError(f"cannot listen on {address}: address in use or unavailable") from exc
        if port == 0:
            raise ServerStartError(f"cannot listen on {address}: address in use or unavailable")
        self.port = port

    def _bind_unix(self, server: grpc.Server, raw_path: str) -> None:
        path = Path(raw_path)
        if not path.is_absolute():
            raise ServerStartError(
                f"invalid server address {self.address!r}: unix socket path must be absolute"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_socket(path, self.address)
        old_umask = os.umask(0o177)  # the socket is born 0600: no window where others may connect
        try:
            port = server.add_insecure_port(f"unix://{path}")
        except RuntimeError as exc:
            raise ServerStartError(f"cannot listen on {self.address}: {exc}") from exc
        finally:
            os.umask(old_umask)
        if port == 0:
            raise ServerStartError(f"cannot listen on {self.address}")
        os.chmod(path, 0o600)
        self._unix_path, self._unix_inode = path, path.stat().st_ino

    def _remove_unix_socket(self) -> None:
        path, inode = self._unix_path, self._unix_inode
        self._unix_path = self._unix_inode = None
        if path is None:
            return
        with contextlib.suppress(FileNotFoundError):
            if path.stat().st_ino == inode:  # still ours, not a successor's
                path.unlink()


def _remove_stale_socket(path: Path, address: str) -> None:
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ServerStartError(f"cannot listen on {address}: {path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(str(path))
    except OSError as exc:
        if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT):
            raise ServerStartError(f"cannot listen on {address}: {exc.strerror}") from exc
        path.unlink(missing_ok=True)  # nobody listens: a leftover of a previous run
        return
    finally:
        probe.close()
    raise ServerStartError(f"cannot listen on {address}: another server is listening on {path}")


def _check_tcp_free(address: str) -> None:
    host_text, _, port_text = address.rpartition(":")
    host = host_text.strip("[]") or None
    try:
        port = int(port_text)
    except ValueError:
        raise ServerStartError(f"invalid server address {address!r}: bad port {port_text!r}") from None
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ServerStartError(f"cannot listen on {address}: {exc.strerror}") from exc
    for family, kind, proto, _, sockaddr in infos:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(sockaddr)
            except OSError as exc:
                if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                    raise ServerStartError(f"cannot listen on {address}: {exc.strerror}") from exc
