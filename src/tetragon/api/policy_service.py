"""The TracingPolicy RPCs of FineGuidanceSensors on top of a policy manager.

The manager is duck-typed (tetragon.policy.manager.PolicyManager):

    add(yaml_text, *, mode=None, domain="grpc") -> PolicyStatus
    delete(name, namespace="") -> None
    configure(name, namespace="", *, enable=None, mode=None) -> None    mode "enforce" | "monitor"
    list() -> list[PolicyStatus]

A PolicyError becomes a gRPC status picked by its `kind`, with its one-line message as details; any
other exception is logged and answered INTERNAL, and the server goes on serving. Manager calls may be
slow (they load BPF programs); they run on the gRPC worker thread of the call.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from typing import Any, NoReturn

import grpc

from tetragon.abi import generic_cfg_h as G
from tetragon.api.access import CALLER_UID, user_groups
from tetragon.api.gen.tetragon import sensors_pb2
from tetragon.policy.errors import PolicyError

__all__ = ["PolicyRpcs", "status_to_proto"]

log = logging.getLogger(__name__)

POLICY_UNSUPPORTED = "tracing policies are not supported yet"

_CODES = {
    "invalid": grpc.StatusCode.INVALID_ARGUMENT,
    "unsupported": grpc.StatusCode.FAILED_PRECONDITION,
    "not_found": grpc.StatusCode.NOT_FOUND,
    "exists": grpc.StatusCode.ALREADY_EXISTS,
}
_MODES = {  # ConfigureTracingPolicy's TracingPolicyMode -> the manager's mode
    sensors_pb2.TP_MODE_ENFORCE: "enforce",
    sensors_pb2.TP_MODE_MONITOR: "monitor",
}
_STATES = sensors_pb2.TracingPolicyState.DESCRIPTOR.values_by_name
_MODE_VALUES = sensors_pb2.TracingPolicyMode.DESCRIPTOR.values_by_name


def _enum_name(values: Any, prefix: str, name: str) -> str:
    """The canonical enum name for `TP_STATE_ENABLED` or `enabled`; the 0 value when unknown."""
    text = str(name or "").upper()
    for candidate in (text, prefix + text):
        if candidate in values:
            return candidate
    return prefix + "UNKNOWN"


def status_to_proto(status: Any) -> sensors_pb2.TracingPolicyStatus:
    """A PolicyStatus as TracingPolicyStatus (`filter_id` when the status carries one)."""
    return sensors_pb2.TracingPolicyStatus(
        id=int(status.id),
        name=status.name,
        namespace=status.namespace or "",
        info=status.info or "",
        sensors=list(status.sensors or ()),
        enabled=bool(status.enabled),
        filter_id=int(getattr(status, "filter_id", 0) or 0),
        error=status.error or "",
        state=_enum_name(_STATES, "TP_STATE_", status.state),
        kernel_memory_bytes=int(status.kernel_memory_bytes or 0),
        mode=_enum_name(_MODE_VALUES, "TP_MODE_", status.mode),
        domain=getattr(status, "domain", "") or "",
        stats=_stats(getattr(status, "counters", None)),
    )


def _stats(counters: Any) -> sensors_pb2.TracingPolicyStats | None:
    """The policy's kernel counters (gencfg GSTAT_* slots) as TracingPolicyStats; None when not loaded."""
    if counters is None:
        return None
    c = [int(v) for v in counters]
    return sensors_pb2.TracingPolicyStats(
        action_counters=sensors_pb2.TracingPolicyActionCounters(
            post=c[G.GSTAT_POSTED], signal=c[G.GSTAT_ENFORCED], monitor_signal=c[G.GSTAT_MONITORED]
        ),
        hook_counters=sensors_pb2.TracingPolicyHookCounters(
            calls=c[G.GSTAT_CALLS],
            filtered=c[G.GSTAT_FILTERED],
            lost=c[G.GSTAT_LOST],
            nopost=c[G.GSTAT_NOPOST],
            rate_limited=c[G.GSTAT_RATELIMITED],
        ),
    )


_MAX_DETAILS = 512


def _one_line(text: str) -> str:
    line = " ".join(str(text).split()) or "unknown error"
    return line if len(line) <= _MAX_DETAILS else line[: _MAX_DETAILS - 3] + "..."


class PolicyRpcs:
    """Request -> manager call -> response, for one servicer."""

    def __init__(self, get_manager: Callable[[], Any]) -> None:
        self._get_manager = get_manager

    def _call(self, context: grpc.ServicerContext, rpc: str, method: str, *args: Any, **kwargs: Any) -> Any:
        function = getattr(self._get_manager(), method, None)
        if function is None:
            _abort(context, grpc.StatusCode.UNIMPLEMENTED, POLICY_UNSUPPORTED)
        try:
            return function(*args, **kwargs)
        except PolicyError as exc:
            code = _CODES.get(exc.kind, grpc.StatusCode.INVALID_ARGUMENT)
            details = _one_line(str(exc))
        except Exception as exc:  # a bug in the engine must not take the server down
            # the innermost frames only: a RecursionError's full traceback is ~170 KB per call
            frames = "".join(traceback.format_exception(exc, limit=-8, chain=False))
            log.error("%s failed: %s", rpc, frames[-4000:])
            code, details = grpc.StatusCode.INTERNAL, _one_line(f"{rpc} failed: {type(exc).__name__}: {exc}")
        _abort(context, code, details)  # outside the except: abort raises

    def add(self, request: sensors_pb2.AddTracingPolicyRequest, context: grpc.ServicerContext) -> Any:
        uid = CALLER_UID.get()
        # root and unix-socket callers may name any path; others only what they could open themselves
        caller = {"caller": (uid, user_groups(uid))} if uid else {}
        self._call(context, "AddTracingPolicy", "add", request.yaml, domain="grpc", **caller)
        return sensors_pb2.AddTracingPolicyResponse()

    def delete(self, request: sensors_pb2.DeleteTracingPolicyRequest, context: grpc.ServicerContext) -> Any:
        self._call(context, "DeleteTracingPolicy", "delete", request.name, request.namespace)
        return sensors_pb2.DeleteTracingPolicyResponse()

    def list(self, request: sensors_pb2.ListTracingPoliciesRequest, context: grpc.ServicerContext) -> Any:
        statuses = self._call(context, "ListTracingPolicies", "list")
        try:
            policies = [status_to_proto(status) for status in statuses or ()]
        except Exception as exc:  # a malformed status (negative id, ...) from the engine
            log.exception("ListTracingPolicies: cannot convert a policy status")
            _abort(context, grpc.StatusCode.INTERNAL, _one_line(f"ListTracingPolicies failed: {exc}"))
        return sensors_pb2.ListTracingPoliciesResponse(policies=policies)

    def configure(
        self, request: sensors_pb2.ConfigureTracingPolicyRequest, context: grpc.ServicerContext
    ) -> Any:
        enable = request.enable if request.HasField("enable") else None
        mode = None
        if request.HasField("mode"):
            mode = _MODES.get(request.mode)
            if mode is None:
                value = sensors_pb2.TracingPolicyMode.DESCRIPTOR.values_by_number.get(request.mode)
                shown = value.name if value is not None else str(request.mode)
                _abort(
                    context,
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"invalid mode {shown}: expected TP_MODE_ENFORCE or TP_MODE_MONITOR",
                )
        self._call(
            context,
            "ConfigureTracingPolicy",
            "configure",
            request.name,
            request.namespace,
            enable=enable,
            mode=mode,
        )
        return sensors_pb2.ConfigureTracingPolicyResponse()

    def enable(self, request: sensors_pb2.EnableTracingPolicyRequest, context: grpc.ServicerContext) -> Any:
        self._call(context, "EnableTracingPolicy", "configure", request.name, request.namespace, enable=True)
        return sensors_pb2.EnableTracingPolicyResponse()

    def disable(self, request: sensors_pb2.DisableTracingPolicyRequest, context: grpc.ServicerContext) -> Any:
        self._call(
            context, "DisableTracingPolicy", "configure", request.name, request.namespace, enable=False
        )
        return sensors_pb2.DisableTracingPolicyResponse()


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, details: str) -> NoReturn:
    context.abort(code, details)
    raise AssertionError("context.abort returned")  # it raises; this keeps the type checkers honest
