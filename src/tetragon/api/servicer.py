"""The FineGuidanceSensors servicer behind tetragon.api.server.GrpcServer (imported when gRPC starts).

GetEvents streams what the pipeline publishes on the EventBus; every stream owns one bus
subscription (its own bounded queue), so a slow or vanished client only loses its own events.
Each stream applies the request's allow/deny lists and field filters to the event dicts before
converting them to protobuf. The TracingPolicy RPCs go to the server's `policy_handler`, a
PolicyManager, through tetragon.api.policy_service (UNIMPLEMENTED without one).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import json_format

from tetragon.api.convert import event_to_proto
from tetragon.api.debug import get_debug, set_debug
from tetragon.api.gen.tetragon import events_pb2, sensors_pb2, sensors_pb2_grpc, tetragon_pb2
from tetragon.api.info import agent_info, policy_domains
from tetragon.api.policy_service import POLICY_UNSUPPORTED, PolicyRpcs
from tetragon.api.runtime_hook import runtime_hook
from tetragon.export.fieldfilters import compile_field_filters
from tetragon.export.filters import compile_filters

if TYPE_CHECKING:
    from tetragon.api.server import GrpcServer
    from tetragon.events.bus import Subscription

__all__ = ["Servicer"]

log = logging.getLogger("tetragon.api.server")  # the server's log, as before the split

_POLL_SECONDS = 0.25  # how soon an open GetEvents stream notices the server is stopping
_TRIM_AFTER_BACKLOG = 1000  # events left queued for a stream that ended: worth a malloc_trim
_POLICY_RPCS = {  # RPC -> PolicyRpcs method
    "AddTracingPolicy": "add",
    "DeleteTracingPolicy": "delete",
    "ListTracingPolicies": "list",
    "ConfigureTracingPolicy": "configure",
    "EnableTracingPolicy": "enable",
    "DisableTracingPolicy": "disable",
}


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

    def rpc(servicer: Servicer, request: Any, context: grpc.ServicerContext) -> Any:
        return servicer._policy(method, request, context) or empty_response()

    rpc.__name__ = rpc.__qualname__ = method
    return rpc


def _deprecated_rpc(method: str) -> ServicerMethod:
    def rpc(servicer: Servicer, request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(grpc.StatusCode.UNKNOWN, f"{method} is deprecated")

    rpc.__name__ = rpc.__qualname__ = method
    return rpc


class Servicer(sensors_pb2_grpc.FineGuidanceSensorsServicer):
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
