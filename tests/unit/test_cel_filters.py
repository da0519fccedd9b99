"""`Filter.cel_expression` end to end through gRPC and `tetra getevents --cel-expression`."""

from __future__ import annotations

import json

import grpc
import pytest

from tests.unit.test_tetra_cli import exec_event, exit_event, kprobe_event, run_tetra, stream_lines
from tetragon.api.gen.tetragon import events_pb2, sensors_pb2_grpc
from tetragon.api.server import GrpcServer
from tetragon.events.bus import EventBus

SERVER_VERSION = "v1.2.3-test"


def test_tetra_getevents_cel_expression_filters_server_side(server: GrpcServer, bus: EventBus) -> None:
    events = [exec_event(10, "/usr/bin/curl"), exit_event(10, "/usr/bin/curl"), kprobe_event(11)]
    sentinel = exec_event(12, "/usr/bin/wget")
    expr = "process_exec.process.binary.endsWith('curl') || process_exec.process.pid == 12"
    got = stream_lines(server, bus, ["--cel-expression", expr], [*events, sentinel], 2)
    assert [json.loads(g) for g in got] == [events[0], sentinel]


def test_a_bad_expression_is_invalid_argument(server: GrpcServer) -> None:
    with grpc.insecure_channel(f"localhost:{server.port}") as channel:
        stub = sensors_pb2_grpc.FineGuidanceSensorsStub(channel)
        request = events_pb2.GetEventsRequest(
            allow_list=[events_pb2.Filter(cel_expression=["process_exec.("])]
        )
        with pytest.raises(grpc.RpcError) as err:
            next(iter(stub.GetEvents(request, timeout=5)))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "invalid CEL expression 'process_exec.('" in err.value.details()


def test_tetra_reports_a_bad_expression_in_one_line() -> None:
    line = json.dumps(exec_event(1)) + "\n"
    out = run_tetra("getevents", "--cel-expression", "'curl'", stdin=line.encode())
    assert out.returncode == 1
    assert (
        out.stderr.startswith("Error: invalid filter: invalid CEL expression")
        and "must evaluate to a bool" in out.stderr
    )
    assert len(out.stderr.splitlines()) == 1
    out = run_tetra("getevents", "--cel-expression", "process_exec.process.pid == 1", stdin=line.encode())
    assert out.returncode == 0 and json.loads(out.stdout) == exec_event(1)
