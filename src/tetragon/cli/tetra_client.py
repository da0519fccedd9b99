"""The gRPC side of `tetra`: one connection to the agent, retries on UNAVAILABLE, and gRPC failures
turned into one-line errors."""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable
from typing import Any, TextIO, TypeVar

import grpc

from tetragon.api.gen.tetragon import sensors_pb2_grpc

log = logging.getLogger("tetragon.cli.tetra")

MAX_RECV_BYTES = 10 * 1024 * 1024
_T = TypeVar("_T")


class CliError(Exception):
    """A failure reported as one line on stderr."""


class Client:
    def __init__(self, address: str, timeout: float, retries: int) -> None:
        self.address = address
        self.timeout = timeout
        self.retries = retries
        self.channel = grpc.insecure_channel(
            address, options=[("grpc.max_receive_message_length", MAX_RECV_BYTES)]
        )
        self.stub = sensors_pb2_grpc.FineGuidanceSensorsStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def with_retries(self, call: Callable[[], _T]) -> _T:
        delay = 1.0
        for attempt in range(self.retries + 1):
            try:
                return call()
            except grpc.RpcError as exc:
                if rpc_code(exc) != grpc.StatusCode.UNAVAILABLE or attempt == self.retries:
                    raise self.error(exc) from None
                log.debug("server unavailable (%s); retrying in %.0fs", rpc_details(exc), delay)
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    def unary(self, method: str, request: Any) -> Any:
        return self.with_retries(lambda: getattr(self.stub, method)(request, timeout=self.timeout))

    def error(self, exc: grpc.RpcError) -> CliError:
        code = rpc_code(exc)
        if code == grpc.StatusCode.UNAVAILABLE:
            return CliError(f"cannot connect to the server at {self.address}: {rpc_details(exc)}")
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return CliError(f"the server at {self.address} did not answer within {self.timeout:g}s")
        name = code.name if code is not None else "UNKNOWN"
        return CliError(f"{name}: {rpc_details(exc)}")


def rpc_code(exc: grpc.RpcError) -> grpc.StatusCode | None:
    return exc.code() if isinstance(exc, grpc.Call) else None


def rpc_details(exc: grpc.RpcError) -> str:
    return (exc.details() if isinstance(exc, grpc.Call) else None) or str(exc)


def connect(args: argparse.Namespace) -> Client:
    """A client for the global flags (`--server-address`, resolved by `tetra.main`, `--timeout`,
    `--retries`)."""
    return Client(args.server_address, args.timeout, args.retries)


def call_once(args: argparse.Namespace, method: str, request: Any) -> Any:
    """One unary RPC on a connection of its own."""
    client = connect(args)
    try:
        return client.unary(method, request)
    finally:
        client.close()


def write_line(out: TextIO, line: str) -> None:
    out.write(line + "\n")
    out.flush()
