"""`tetra getevents`: the agent's event stream (or Tetragon JSON lines on stdin), filtered by the
flags the way the server filters a GetEvents stream, printed as JSON or compact lines."""

from __future__ import annotations

import argparse
import json
import logging
import os
import stat
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TextIO

import grpc
from google.protobuf import field_mask_pb2, json_format

from tetragon.api.convert import dumps_event, event_to_proto, proto_to_event
from tetragon.api.gen.tetragon import events_pb2
from tetragon.cli.tetra_client import Client, CliError, connect, rpc_code, rpc_details, write_line
from tetragon.events.compact import format_compact

log = logging.getLogger("tetragon.cli.tetra")


def build_request(args: argparse.Namespace) -> events_pb2.GetEventsRequest:
    """One allow-list Filter from the flags, plus include/exclude field filters, as tetra builds it."""
    flt = events_pb2.Filter(
        binary_regex=args.process,
        namespace=args.namespace + ([""] if args.host else []),
        pod_regex=args.pod,
        container_id=args.container_id,
        policy_names=args.policy_names,
        cel_expression=args.cel_expression,
    )
    for name in args.event_types:
        if name.upper() not in events_pb2.EventType.DESCRIPTOR.values_by_name or name.upper() == "UNDEF":
            raise CliError(f"invalid event type {name!r} (e.g. PROCESS_EXEC, PROCESS_KPROBE)")
        flt.event_set.append(events_pb2.EventType.Value(name.upper()))
    for pid in args.pid:
        if not pid.isdigit() or int(pid) > 0xFFFFFFFF:
            raise CliError(f"invalid pid {pid!r}")
        flt.pid.append(int(pid))
    request = events_pb2.GetEventsRequest()
    for paths, action in (
        (args.include_fields, events_pb2.INCLUDE),
        (args.exclude_fields, events_pb2.EXCLUDE),
    ):
        if paths:
            request.field_filters.append(
                events_pb2.FieldFilter(fields=field_mask_pb2.FieldMask(paths=paths), action=action)
            )
    if flt.ByteSize() > 0 or request.field_filters:
        request.allow_list.append(flt)
    return request


def _printer(args: argparse.Namespace, out: TextIO) -> Callable[[dict[str, Any]], None]:
    if args.output == "json":
        return lambda event: write_line(out, dumps_event(event).decode())
    if args.color == "always":
        color = True
    elif args.color == "never":
        color = False
    else:  # fatih/color's rule: a terminal that is not dumb, and no NO_COLOR
        color = out.isatty() and os.environ.get("TERM") != "dumb" and "NO_COLOR" not in os.environ

    def compact(event: dict[str, Any]) -> None:
        text = format_compact(
            event,
            color=color,
            timestamps=args.timestamps,
            stack_traces=args.stack_traces,
            ima_hash=args.ima_hash,
        )
        if text is not None:
            write_line(out, text)

    return compact


def _stdin_is_data(stream: TextIO) -> bool:
    """Events come from stdin when it is a pipe or a file (`cat tetragon.log | tetra getevents`)."""
    try:
        mode = os.fstat(stream.fileno()).st_mode
    except (OSError, ValueError, AttributeError):
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISREG(mode)


def events_from_lines(lines: Iterable[str], request: events_pb2.GetEventsRequest) -> Iterator[dict[str, Any]]:
    """Tetragon JSON lines, filtered the way the server filters a GetEvents stream."""
    from tetragon.export.fieldfilters import compile_field_filters
    from tetragon.export.filters import compile_filters

    def dicts(items: Iterable[Any]) -> list[dict[str, Any]]:
        return [json_format.MessageToDict(m, preserving_proto_field_name=True) for m in items]

    try:
        allow = compile_filters(dicts(request.allow_list))
    except ValueError as exc:  # FilterError: a bad regex or CEL expression
        raise CliError(f"invalid filter: {exc}") from None
    shape = compile_field_filters(dicts(request.field_filters))
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            event = proto_to_event(event_to_proto(json.loads(line)))
        except (ValueError, json_format.ParseError) as exc:
            print(f"tetra: skipping stdin line {number}: not a Tetragon event ({exc})", file=sys.stderr)
            continue
        if allow(event):
            yield shape(event)


def _stream(client: Client, request: events_pb2.GetEventsRequest) -> Iterator[dict[str, Any]]:
    """GetEvents, reconnecting on UNAVAILABLE as often as --retries allows (the budget refills once
    events flow again)."""
    failures, delay = 0, 1.0
    while True:
        try:
            grpc.channel_ready_future(client.channel).result(timeout=client.timeout)
            for msg in client.stub.GetEvents(request):
                failures, delay = 0, 1.0
                yield proto_to_event(msg)
            return  # the server ended the stream (shutdown)
        except grpc.FutureTimeoutError:
            raise CliError(
                f"cannot connect to the server at {client.address} within {client.timeout:g}s"
            ) from None
        except grpc.RpcError as exc:
            if rpc_code(exc) != grpc.StatusCode.UNAVAILABLE or failures >= client.retries:
                raise client.error(exc) from None
            failures += 1
            log.debug("stream interrupted (%s); reconnecting in %.0fs", rpc_details(exc), delay)
            time.sleep(delay)
            delay *= 2


def cmd_getevents(args: argparse.Namespace, stdin: TextIO, stdout: TextIO) -> int:
    request = build_request(args)
    emit = _printer(args, stdout)
    if _stdin_is_data(stdin):
        for event in events_from_lines(stdin, request):
            emit(event)
        return 0
    client = connect(args)
    try:
        for event in _stream(client, request):
            emit(event)
    finally:
        client.close()
    return 0
