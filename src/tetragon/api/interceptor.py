"""The gRPC server interceptor that applies tetragon.api.access's rule before any handler runs."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any

import grpc

from tetragon.api.access import (
    CALLER_UID,
    READ_ONLY_RPCS,
    AccessRule,
    user_groups,
)
from tetragon.api.relay import caller_from_peer

__all__ = ["AccessInterceptor"]

log = logging.getLogger(__name__)


class AccessInterceptor(grpc.ServerInterceptor):
    """Checks every call against `rule` before its handler runs (see the module docstring)."""

    def __init__(
        self,
        rule: AccessRule,
        relay_dir: str,
        *,
        tls: bool,
        streams_per_peer: int = 1 << 30,
    ) -> None:
        self.rule = rule
        self._tls = tls
        self._relay_dir = relay_dir  # the relay's client sockets are named here (tetragon.api.relay)
        self.streams_per_peer = streams_per_peer  # server-streaming calls one uid may hold (root exempt)
        self._streams: dict[int, int] = {}
        self._lock = threading.Lock()

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        handler = continuation(details)
        if handler is None:
            return None
        method = str(details.method).rpartition("/")[2]
        admin = method not in READ_ONLY_RPCS

        def guard(inner: Callable[..., Any]) -> Callable[..., Any]:
            def checked(request: Any, context: grpc.ServicerContext) -> Any:
                uid = self.check(context, method, admin)
                if handler.response_streaming and uid is not None:
                    self._take_stream(uid, method, context)
                token = CALLER_UID.set(uid)
                try:
                    return inner(request, context)
                finally:
                    CALLER_UID.reset(token)

            return checked

        for kind, make in (
            ("unary_unary", grpc.unary_unary_rpc_method_handler),
            ("unary_stream", grpc.unary_stream_rpc_method_handler),
            ("stream_unary", grpc.stream_unary_rpc_method_handler),
            ("stream_stream", grpc.stream_stream_rpc_method_handler),
        ):
            inner = getattr(handler, kind)
            if inner is not None:
                return make(
                    guard(inner),
                    request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer,
                )
        return handler

    def _take_stream(self, uid: int, method: str, context: grpc.ServicerContext) -> None:
        if uid in (0, os.geteuid()):
            return
        with self._lock:
            held = self._streams.get(uid, 0)
            if held >= self.streams_per_peer:
                log.warning("gRPC %s refused for uid %d: it has %d streams open", method, uid, held)
                context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"{method}: uid {uid} has {held} streams open (--server-max-event-streams-per-peer)",
                )
            self._streams[uid] = held + 1

        def release() -> None:
            with self._lock:
                left = self._streams.pop(uid, 1) - 1
                if left:
                    self._streams[uid] = left

        if not context.add_callback(release):  # the call has already ended
            release()

    def check(self, context: grpc.ServicerContext, method: str, admin: bool) -> int | None:
        """The caller's uid when it is known and allowed (None: a TLS client elsewhere); aborts the
        call with PERMISSION_DENIED otherwise."""
        peer = context.peer()
        caller = caller_from_peer(peer, self._relay_dir)
        uid = caller.uid if caller is not None else None
        if uid is None:
            if caller is not None and self._tls:
                return None  # a client elsewhere: only TLS with a verified client certificate gets here
            log.warning("gRPC %s refused for %s: cannot identify the caller's uid", method, peer)
            context.abort(grpc.StatusCode.PERMISSION_DENIED, f"{method}: cannot identify the caller's uid")
        assert caller is not None
        gids = user_groups(uid)
        if caller.gid is not None:
            gids.add(caller.gid)
        if not self.rule.allows(uid, gids, admin=admin):
            need = "--server-admin-uids/--server-admin-gids" if admin else "--server-allow-uids/-gids"
            who = f"pid {caller.pid}" if caller.pid is not None else "TCP"
            log.warning("gRPC %s refused for uid %d (%s): not allowed by %s", method, uid, who, need)
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED, f"{method}: uid {uid} is not allowed (see {need})"
            )
        return uid
