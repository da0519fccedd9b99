"""The API under load: event streams are capped (RESOURCE_EXHAUSTED beyond the cap), unary RPCs keep
threads of their own, and a stream that ends leaves no backlog behind."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from tetragon.api.access import ServerOptions
from tetragon.api.gen.tetragon import events_pb2, sensors_pb2, sensors_pb2_grpc, tetragon_pb2
from tetragon.api.server import GrpcServer
from tetragon.events.bus import EventBus, Subscription

CAP = 4


def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


@pytest.fixture
def capped(bus: EventBus) -> Iterator[GrpcServer]:
    srv = GrpcServer(bus, "localhost:0", version="x", options=ServerOptions(max_event_streams=CAP))
    srv.start()
    yield srv
    srv.stop(0.5)


def open_stream(channel: grpc.Channel) -> Any:
    stub = sensors_pb2_grpc.FineGuidanceSensorsStub(channel)
    return stub.GetEvents(events_pb2.GetEventsRequest())


def test_streams_beyond_the_cap_are_refused_and_unary_rpcs_still_answer(
    capped: GrpcServer, bus: EventBus
) -> None:
    with grpc.insecure_channel(f"localhost:{capped.port}") as channel:
        stub = sensors_pb2_grpc.FineGuidanceSensorsStub(channel)
        streams = [open_stream(channel) for _ in range(CAP)]
        wait_for(lambda: bus.subscriber_count == CAP)
        with pytest.raises(grpc.RpcError) as exc:
            next(open_stream(channel))
        assert exc.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "--server-max-event-streams" in str(exc.value.details())
        started = time.monotonic()
        for _ in range(20):
            stub.GetHealth(tetragon_pb2.GetHealthStatusRequest(), timeout=2)
            stub.GetVersion(sensors_pb2.GetVersionRequest(), timeout=2)
        assert time.monotonic() - started < 5
        # a slot comes back when a stream ends
        streams.pop().cancel()
        wait_for(lambda: bus.subscriber_count == CAP - 1)
        again = open_stream(channel)
        wait_for(lambda: bus.subscriber_count == CAP)
        bus.publish({"process_exec": {"process": {"pid": 7, "binary": "/bin/x"}}, "node_name": "n"})
        assert next(again).process_exec.process.pid.value == 7
        for s in [*streams, again]:
            s.cancel()
        wait_for(lambda: bus.subscriber_count == 0)


def test_many_streams_get_events_while_unary_rpcs_stay_fast(bus: EventBus) -> None:
    count = 100
    srv = GrpcServer(bus, "localhost:0", version="x")
    srv.start()
    received = [0] * count
    channels = [grpc.insecure_channel(f"localhost:{srv.port}") for _ in range(count)]
    streams = [open_stream(ch) for ch in channels]

    def read(i: int) -> None:
        try:
            for _ in streams[i]:
                received[i] += 1
        except grpc.RpcError:
            pass

    readers = [threading.Thread(target=read, args=(i,), daemon=True) for i in range(count)]
    try:
        for t in readers:
            t.start()
        wait_for(lambda: bus.subscriber_count == count, timeout=30)
        stub = sensors_pb2_grpc.FineGuidanceSensorsStub(channels[0])
        started = time.monotonic()
        stub.GetHealth(tetragon_pb2.GetHealthStatusRequest(), timeout=5)
        assert time.monotonic() - started < 2
        bus.publish({"process_exec": {"process": {"pid": 1, "binary": "/bin/x"}}, "node_name": "n"})
        wait_for(lambda: all(received), timeout=30)
    finally:
        for s in streams:
            s.cancel()
        for ch in channels:
            ch.close()
        srv.stop(0.5)


def test_an_ended_stream_keeps_no_backlog(server: GrpcServer, bus: EventBus) -> None:
    subs: list[Subscription] = []
    subscribe = bus.subscribe

    def recording_subscribe(maxsize: int = 10000) -> Subscription:
        sub = subscribe(maxsize)
        subs.append(sub)
        return sub

    bus.subscribe = recording_subscribe  # type: ignore[method-assign]
    with grpc.insecure_channel(f"localhost:{server.port}") as channel:
        stream = open_stream(channel)  # never read: a stalled client
        wait_for(lambda: bus.subscriber_count == 1)
        for pid in range(3000):
            bus.publish({"process_exec": {"process": {"pid": pid, "binary": "/bin/x"}}, "node_name": "n"})
        stream.cancel()
        wait_for(lambda: bus.subscriber_count == 0)
    wait_for(lambda: subs[0].get(timeout=0) is None)


def rss_mib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024
    raise AssertionError("no VmRSS")


def test_a_stalled_readers_memory_is_returned_when_it_goes(server: GrpcServer, bus: EventBus) -> None:
    with grpc.insecure_channel(f"localhost:{server.port}") as channel:
        stream = open_stream(channel)  # never read
        wait_for(lambda: bus.subscriber_count == 1)
        before = rss_mib()
        for pid in range(10000):  # the queue's bound: ~4 KiB each, ~40 MiB held for this client
            bus.publish(
                {"process_exec": {"process": {"pid": pid, "arguments": f"{pid:08d}" * 500}}, "node_name": "n"}
            )
        stalled = rss_mib()
        assert stalled - before > 20
        stream.cancel()
        wait_for(lambda: bus.subscriber_count == 0)
    wait_for(lambda: rss_mib() - before < (stalled - before) / 2)


# --- connection caps ------------------------------------------------------------------------------


def _closed_by_server(sock: socket.socket) -> bool:
    """Whether the server closed `sock` (reading past what it sent, e.g. its HTTP/2 settings)."""
    sock.setblocking(False)
    try:
        while sock.recv(65536):
            pass
        return True
    except BlockingIOError:
        return False
    except OSError:
        return True


def test_connections_beyond_the_total_are_closed(bus: EventBus) -> None:
    srv = GrpcServer(bus, "localhost:0", version="x", options=ServerOptions(max_connections=4))
    srv.start()
    idle = [socket.create_connection(("127.0.0.1", srv.port or 0)) for _ in range(10)]
    try:
        wait_for(lambda: sum(_closed_by_server(s) for s in idle) >= 6)
        time.sleep(1.5)  # and no more than that
        assert sum(_closed_by_server(s) for s in idle) == 6
        for s in idle:
            s.close()
        wait_for(lambda: srv.connections == 0)  # the caps count what the relay has seen close
        with grpc.insecure_channel(f"localhost:{srv.port}") as channel:
            stub = sensors_pb2_grpc.FineGuidanceSensorsStub(channel)
            assert stub.GetVersion(sensors_pb2.GetVersionRequest(), timeout=5).version == "x"
    finally:
        srv.stop(0.5)


# `python -c HOLDER PORT COUNT SECONDS`: hold COUNT idle connections, then print how many the server closed
HOLDER = """
import socket, sys, time
held = []
for _ in range(int(sys.argv[2])):
    try:
        held.append(socket.create_connection(("127.0.0.1", int(sys.argv[1]))))
    except OSError:
        break
print("open", flush=True)
time.sleep(float(sys.argv[3]))
closed = 0
for s in held:
    s.setblocking(False)
    try:
        while s.recv(65536):  # the server's HTTP/2 settings, then end of file when it closed
            pass
        closed += 1
    except BlockingIOError:
        pass
print(closed, flush=True)
"""


def test_one_users_connections_are_capped(bus: EventBus) -> None:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run a client as another uid")
    srv = GrpcServer(bus, "localhost:0", version="x", options=ServerOptions(max_connections_per_peer=8))
    srv.start()
    try:
        res = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
             sys.executable, "-c", HOLDER, str(srv.port), "20", "4"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert res.returncode == 0, res.stderr
        assert res.stdout.split() == ["open", "12"]
        # root's connections are exempt and keep working meanwhile
        with grpc.insecure_channel(f"localhost:{srv.port}") as channel:
            stub = sensors_pb2_grpc.FineGuidanceSensorsStub(channel)
            assert stub.GetVersion(sensors_pb2.GetVersionRequest(), timeout=5).version == "x"
    finally:
        srv.stop(0.5)
