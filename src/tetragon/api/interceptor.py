"""The gRPC server interceptor that applies tetragon.api.access's rule before any handler runs."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import grpc

from tetragon.api.access import READ_ONLY_RPCS, AccessRule, local_peer_uid, parse_peer, user_groups

__all__ = ["AccessInterceptor"]

log = logging.getLogger(__name__)


class AccessInterceptor(grpc.ServerInterceptor):
    """Checks every call against `rule` before its handler runs (see the module docstring)."""

    def __init__(self, rule: AccessRule, server_port: Callable[[], int | None], *, tls: bool) -> None:
        self.rule = rule
        self._server_port = server_port
        self._tls = tls

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        handler = continuation(details)
        if handler is None:
            return None
        method = str(details.method).rpartition("/")[2]
        admin = method not in READ_ONLY_RPCS

        def guard(inner: Callable[..., Any]) -> Callable[..., Any]:
            def checked(request: Any, context: grpc.ServicerContext) -> Any:
                self.check(context, method, admin)
                return inner(request, context)

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

    def check(self, context: grpc.ServicerContext, method: str, admin: bool) -> None:
        peer = context.peer()
        if peer.startswith("unix:"):
            return  # the socket file is 0600, owned by the agent: only its uid and root connect
        port = self._server_port()
        uid = local_peer_uid(peer, port) if port else None
        if uid is None:
            if self._tls and parse_peer(peer) is not None:
                return  # a client elsewhere: only TLS with a verified client certificate gets here
            log.warning("gRPC %s refused for %s: cannot identify the caller's uid", method, peer)
            context.abort(grpc.StatusCode.PERMISSION_DENIED, f"{method}: cannot identify the caller's uid")
        if not self.rule.allows(uid, user_groups(uid), admin=admin):
            need = "--server-admin-uids/--server-admin-gids" if admin else "--server-allow-uids/-gids"
            log.warning("gRPC %s refused for uid %d (%s): not allowed by %s", method, uid, peer, need)
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED, f"{method}: uid {uid} is not allowed (see {need})"
            )
