"""The gRPC server against real clients: a real grpc server on a free port / unix socket, fed by a
real EventBus."""

from __future__ import annotations

import os
import socket
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import orjson
import pytest
from google.protobuf import field_mask_pb2

from tests.conftest import recorded_event_lines, tetragon_event_lines
from tetragon.api.convert import proto_to_event
from tetragon.api.gen.tetragon import events_pb2, sensors_pb2, sensors_pb2_grpc, tetragon_pb2
from tetragon.api.server import GrpcServer, ServerStartError
from tetragon.events.bus import EventBus


def exec_event(pid: int, binary: str = "/bin/true") -> dict[str, Any]:
    return {
        "process_exec": {"process": {"exec_id": f"e{pid}", "pid": pid, "binary": binary}},
        "node_name": "n",
    }


def exit_event(pid: int, binary: str = "/bin/true") -> dict[str, Any]:
    body = {"process": {"exec_id": f"e{pid}", "pid": pid, "binary": binary}, "signal": "SIGKILL"}
    return {"process_exit": body, "node_name": "n", "time": "2024-01-01T00:00:00Z"}


SERVER_VERSION = "v9.9.9"  # what the `server` fixture (conftest.py) reports


@pytest.fixture
def stub(server: GrpcServer) -> Iterator[sensors_pb2_grpc.FineGuidanceSensorsStub]:
    with grpc.insecure_channel(f"localhost:{server.port}") as channel:
        yield sensors_pb2_grpc.FineGuidanceSensorsStub(channel)


def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def collect(
    stub: sensors_pb2_grpc.FineGuidanceSensorsStub,
    bus: EventBus,
    request: events_pb2.GetEventsRequest,
    events: list[dict[str, Any]],
    sentinel: dict[str, Any],
) -> list[dict[str, Any]]:
    """Open a stream, publish `events` then `sentinel` (which must pass the filters), return what
    arrived before the sentinel."""
    before = bus.subscriber_count
    stream = stub.GetEvents(request, timeout=20)
    got: list[dict[str, Any]] = []
    done = threading.Event()

    def reader() -> None:
        for msg in stream:
            got.append(proto_to_event(msg))
            if got[-1] == sentinel:
                break
        done.set()

    threading.Thread(target=reader, daemon=True).start()
    wait_for(lambda: bus.subscriber_count > before)
    for event in [*events, sentinel]:
        bus.publish(event)
    assert done.wait(10), f"sentinel not received; got {got}"
    stream.cancel()
    wait_for(lambda: bus.subscriber_count == before)  # the server noticed and unsubscribed
    return got[:-1]


def _assert_stream_is_identical(stub: Any, bus: EventBus, lines: list[bytes]) -> None:
    events = [orjson.loads(line) for line in lines]
    got = collect(stub, bus, events_pb2.GetEventsRequest(), events, exec_event(1))
    assert [orjson.dumps(e) for e in got] == lines


def test_stream_is_identical_to_recorded_events(stub: Any, bus: EventBus) -> None:
    _assert_stream_is_identical(stub, bus, recorded_event_lines())


@pytest.mark.conformance
def test_stream_is_identical_to_published_events(stub: Any, bus: EventBus) -> None:
    _assert_stream_is_identical(stub, bus, tetragon_event_lines())


def test_allow_deny_and_field_filters(stub: Any, bus: EventBus) -> None:
    events = [exec_event(10, "/usr/bin/curl"), exit_event(10, "/usr/bin/curl"), exit_event(11, "/bin/ls")]
    allow = events_pb2.Filter(event_set=[events_pb2.PROCESS_EXIT])
    got = collect(stub, bus, events_pb2.GetEventsRequest(allow_list=[allow]), events, exit_event(99))
    assert got == events[1:]

    deny = events_pb2.Filter(binary_regex=["curl$"])
    got = collect(stub, bus, events_pb2.GetEventsRequest(deny_list=[deny]), events, exit_event(99))
    assert got == [events[2]]

    by_pid = events_pb2.Filter(pid=[11, 99])
    got = collect(stub, bus, events_pb2.GetEventsRequest(allow_list=[by_pid]), events, exit_event(99))
    assert got == [events[2]]

    drop = events_pb2.FieldFilter(
        fields=field_mask_pb2.FieldMask(paths=["process.exec_id", "signal"]), action=events_pb2.EXCLUDE
    )
    request = events_pb2.GetEventsRequest(allow_list=[allow], field_filters=[drop])
    got = collect(
        stub, bus, request, events[1:2], exit_event(99) | {"process_exit": {"process": {"pid": 99}}}
    )
    assert got == [{"process_exit": {"process": {"pid": 10, "binary": "/usr/bin/curl"}}} | _top(events[1])]


def _top(event: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in event.items() if not k.startswith("process_")}


def test_invalid_filter_is_invalid_argument(stub: Any) -> None:
    request = events_pb2.GetEventsRequest(allow_list=[events_pb2.Filter(binary_regex=["(unclosed"])])
    with pytest.raises(grpc.RpcError) as err:
        next(iter(stub.GetEvents(request, timeout=5)))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_disconnecting_client_unsubscribes(stub: Any, bus: EventBus) -> None:
    stream = stub.GetEvents(events_pb2.GetEventsRequest())
    wait_for(lambda: bus.subscriber_count == 1)
    stream.cancel()
    wait_for(lambda: bus.subscriber_count == 0)


def test_unary_rpcs(stub: Any) -> None:
    assert stub.GetVersion(sensors_pb2.GetVersionRequest()).version == "v9.9.9"
    health = stub.GetHealth(tetragon_pb2.GetHealthStatusRequest()).health_status
    assert [(h.event, h.status, h.details) for h in health] == [
        (tetragon_pb2.HEALTH_STATUS_TYPE_STATUS, tetragon_pb2.HEALTH_STATUS_RUNNING, "running")
    ]
    with pytest.raises(grpc.RpcError) as err:
        stub.AddTracingPolicy(sensors_pb2.AddTracingPolicyRequest(yaml="x"))
    assert (err.value.code(), err.value.details()) == (
        grpc.StatusCode.UNIMPLEMENTED,
        "tracing policies are not supported yet",
    )
    for rpc, request in (
        ("ListSensors", sensors_pb2.ListSensorsRequest()),
        ("EnableSensor", sensors_pb2.EnableSensorRequest(name="x")),
        ("DisableSensor", sensors_pb2.DisableSensorRequest(name="x")),
        ("RemoveSensor", sensors_pb2.RemoveSensorRequest(name="x")),
    ):
        with pytest.raises(grpc.RpcError) as err:
            getattr(stub, rpc)(request)
        assert err.value.details() == f"{rpc} is deprecated"
    level = sensors_pb2.SetDebugRequest(
        flag=sensors_pb2.CONFIG_FLAG_LOG_LEVEL, level=sensors_pb2.LOG_LEVEL_DEBUG
    )
    assert stub.SetDebug(level).level == sensors_pb2.LOG_LEVEL_DEBUG
    assert stub.GetDebug(sensors_pb2.GetDebugRequest(flag=sensors_pb2.CONFIG_FLAG_LOG_LEVEL)).level == (
        sensors_pb2.LOG_LEVEL_DEBUG
    )


def test_policy_handler_and_health_callback(bus: EventBus) -> None:
    class Policies:
        def AddTracingPolicy(self, request: Any) -> None:  # noqa: N802
            raise ValueError("spec.kprobes[0].call: unknown function")

        def ListTracingPolicies(self, request: Any) -> Any:  # noqa: N802
            status = sensors_pb2.TracingPolicyStatus(name="p", state=sensors_pb2.TP_STATE_ENABLED)
            return sensors_pb2.ListTracingPoliciesResponse(policies=[status])

    health = [("HEALTH_STATUS_ERROR", "sensor base failed")]
    with (
        GrpcServer(bus, "localhost:0", version="x", policy_handler=Policies(), health=lambda: health) as srv,
        grpc.insecure_channel(f"localhost:{srv.port}") as channel,
    ):
        stub = sensors_pb2_grpc.FineGuidanceSensorsStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            stub.AddTracingPolicy(sensors_pb2.AddTracingPolicyRequest(yaml="x"))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "unknown function" in err.value.details()
        assert stub.ListTracingPolicies(sensors_pb2.ListTracingPoliciesRequest()).policies[0].name == "p"
        with pytest.raises(grpc.RpcError) as err:
            stub.DeleteTracingPolicy(sensors_pb2.DeleteTracingPolicyRequest(name="p"))
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
        status = stub.GetHealth(tetragon_pb2.GetHealthStatusRequest()).health_status[0]
        assert (status.status, status.details) == (tetragon_pb2.HEALTH_STATUS_ERROR, "sensor base failed")


def test_max_receive_size_is_10_mib(stub: Any) -> None:
    with pytest.raises(grpc.RpcError) as err:
        stub.AddTracingPolicy(sensors_pb2.AddTracingPolicyRequest(yaml="x" * (10 * 1024 * 1024 + 1)))
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_port_in_use_raises_clear_error(bus: EventBus) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        address = f"127.0.0.1:{busy.getsockname()[1]}"
        with pytest.raises(ServerStartError, match=address):
            GrpcServer(bus, address, version="x").start()


def test_unix_socket_mode_stale_and_live(bus: EventBus, tmp_path: Path) -> None:
    path = tmp_path / "tetragon.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # leaves a socket file nobody listens on
    srv = GrpcServer(bus, f"unix://{path}", version="u1")
    srv.start()
    try:
        assert (
            stat.S_IMODE(os.stat(path).st_mode) == 0o666
        )  # the access rule decides who may call (SO_PEERCRED through the relay)
        with grpc.insecure_channel(f"unix://{path}") as channel:
            stub = sensors_pb2_grpc.FineGuidanceSensorsStub(channel)
            assert stub.GetVersion(sensors_pb2.GetVersionRequest(), timeout=5).version == "u1"
        with pytest.raises(ServerStartError, match="another server is listening"):
            GrpcServer(bus, f"unix://{path}", version="u2").start()
    finally:
        srv.stop(grace=0.1)
    assert not path.exists()
    regular = tmp_path / "file.sock"
    regular.write_text("not a socket")
    with pytest.raises(ServerStartError, match="not a socket"):
        GrpcServer(bus, f"unix://{regular}", version="x").start()


def _garbage(family: int, address: Any) -> None:
    payloads = [
        os.urandom(65536),
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + os.urandom(4096),  # valid preface, broken frames
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\x00\x00\x04\x08\x00\x00\x00\x00\x00" * 1000,
    ]
    for payload in payloads:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(2)
            s.connect(address)
            try:
                s.sendall(payload)
                s.recv(1024)
            except OSError:
                pass  # the server may reset us; that is the point
    half = socket.socket(family, socket.SOCK_STREAM)  # a client that connects and never speaks
    half.connect(address)
    half.close()


def test_garbage_on_the_socket_does_not_affect_other_clients(bus: EventBus, tmp_path: Path) -> None:
    path = tmp_path / "g.sock"
    with GrpcServer(bus, "localhost:0", version="x") as tcp, GrpcServer(bus, f"unix://{path}", version="x"):
        with grpc.insecure_channel(f"localhost:{tcp.port}") as channel:
            stub = sensors_pb2_grpc.FineGuidanceSensorsStub(channel)
            early = stub.GetEvents(events_pb2.GetEventsRequest(), timeout=30)  # open before the garbage
            wait_for(lambda: bus.subscriber_count == 1)
            _garbage(socket.AF_INET, ("127.0.0.1", tcp.port))
            _garbage(socket.AF_UNIX, str(path))
            bus.publish(exec_event(5))
            assert proto_to_event(next(early)) == exec_event(5)
            early.cancel()
            wait_for(lambda: bus.subscriber_count == 0)
            got = collect(stub, bus, events_pb2.GetEventsRequest(), [exec_event(6)], exec_event(7))
            assert got == [exec_event(6)]
        with grpc.insecure_channel(f"unix://{path}") as channel:
            unix_stub = sensors_pb2_grpc.FineGuidanceSensorsStub(channel)
            assert unix_stub.GetVersion(sensors_pb2.GetVersionRequest(), timeout=5).version == "x"


def test_stop_ends_open_streams(bus: EventBus) -> None:
    srv = GrpcServer(bus, "localhost:0", version="x")
    srv.start()
    with grpc.insecure_channel(f"localhost:{srv.port}") as channel:
        stream = sensors_pb2_grpc.FineGuidanceSensorsStub(channel).GetEvents(events_pb2.GetEventsRequest())
        wait_for(lambda: bus.subscriber_count == 1)
        started = time.monotonic()
        srv.stop(grace=2.0)
        assert list(stream) == []  # ended cleanly, well inside the grace period
        assert time.monotonic() - started < 2.0
    assert bus.subscriber_count == 0
