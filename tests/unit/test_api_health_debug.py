"""The grpc.health.v1 server (asked by the standard health client, as a Kubernetes probe does) and
GetDebug's process-cache dump, against real gRPC servers on free ports."""

from __future__ import annotations

import socket

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tetragon.api.gen.tetragon import sensors_pb2, sensors_pb2_grpc
from tetragon.api.health import HealthServer, RingBufferWatch, agent_statuses, serving_status, tcp_address
from tetragon.api.listen import ServerStartError
from tetragon.api.server import GrpcServer
from tetragon.events.bus import EventBus
from tetragon.process.cache import ProcessCache, ProcessEntry

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _probe(port: int, service: str = "liveness") -> int:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status


def test_liveness_follows_the_agent_health_check() -> None:
    statuses = [("HEALTH_STATUS_RUNNING", "running")]
    server = HealthServer(f"127.0.0.1:{_free_port()}", lambda: list(statuses), interval=3600)
    server.start()
    try:
        assert server.port is not None
        assert _probe(server.port) == SERVING
        assert _probe(server.port, "") == SERVING
        statuses[:] = [("HEALTH_STATUS_ERROR", "ring buffer not open")]
        assert server.update() == NOT_SERVING
        assert _probe(server.port) == NOT_SERVING
        with pytest.raises(grpc.RpcError) as err:
            _probe(server.port, "readiness")
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        server.stop()


def test_a_failing_check_is_not_serving_and_a_busy_port_is_a_clear_error() -> None:
    def broken() -> list[tuple[str, str]]:
        raise RuntimeError("boom")

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ServerStartError, match=f"127.0.0.1:{port}"):
            HealthServer(f"127.0.0.1:{port}", broken).start()
    server = HealthServer(f"127.0.0.1:{_free_port()}", broken, interval=3600)
    server.start()
    try:
        assert server.port is not None and _probe(server.port) == NOT_SERVING
    finally:
        server.stop()


def test_status_rules() -> None:
    assert serving_status([]) == NOT_SERVING
    assert serving_status([("HEALTH_STATUS_RUNNING", "running")]) == SERVING
    assert tcp_address(":6789") == "[::]:6789"
    assert tcp_address("localhost:6789") == "localhost:6789"
    with pytest.raises(ServerStartError):
        tcp_address("6789")

    class Sensor:
        reader: object | None = object()

    assert agent_statuses(False, False, Sensor()) == []
    assert agent_statuses(True, False, Sensor()) == [("HEALTH_STATUS_RUNNING", "running")]
    assert agent_statuses(True, True, Sensor())[0][0] == "HEALTH_STATUS_STOPPED"
    assert agent_statuses(True, False, None)[0][0] == "HEALTH_STATUS_ERROR"
    closed = Sensor()
    closed.reader = None
    assert agent_statuses(True, False, closed) == [("HEALTH_STATUS_ERROR", "ring buffer not open")]


def test_a_ring_buffer_nobody_drains_is_an_error() -> None:
    now = [0.0]
    watch = RingBufferWatch(window=5.0, clock=lambda: now[0])
    assert not watch.stalled(100, 50)
    now[0] = 1.0
    assert not watch.stalled(200, 50)  # too soon to tell
    now[0] = 6.0
    assert watch.stalled(300, 50)  # the kernel sent 200 records in 6 s, none received
    now[0] = 7.0
    assert watch.stalled(300, 60)  # the verdict holds until the next full window
    now[0] = 12.0
    assert not watch.stalled(300, 60)  # idle: nothing sent, nothing to receive
    now[0] = 18.0
    assert not watch.stalled(400, 160)

    class Reader:
        received = 0

    class Sensor:
        reader = Reader()
        sent_count = 0

        def sent(self) -> int:
            return self.sent_count

    sensor = Sensor()
    assert agent_statuses(True, False, sensor) == [("HEALTH_STATUS_RUNNING", "running")]


def _entry(pid: int, refcnt: int, exited: bool) -> ProcessEntry:
    exec_id = f"exec:{pid}"
    head = {"exec_id": exec_id, "pid": pid, "uid": 0, "binary": f"/bin/p{pid}", "flags": "execve"}
    return ProcessEntry(exec_id, pid, pid, "", head, refcnt=refcnt, exited=exited)


def test_get_debug_dumps_the_process_cache() -> None:
    cache = ProcessCache(64)
    for entry in (_entry(10, 2, False), _entry(11, 0, True), _entry(12, 1, True)):
        cache.add(entry)
    with (
        GrpcServer(EventBus(), "localhost:0", version="x", process_cache=cache) as srv,
        grpc.insecure_channel(f"localhost:{srv.port}") as channel,
    ):
        stub = sensors_pb2_grpc.FineGuidanceSensorsStub(channel)

        def dump(**args: bool) -> list[tuple[int, str, int]]:
            request = sensors_pb2.GetDebugRequest(
                flag=sensors_pb2.CONFIG_FLAG_DUMP_PROCESS_CACHE,
                dump=sensors_pb2.DumpProcessCacheReqArgs(**args),
            )
            response = stub.GetDebug(request)
            assert response.flag == sensors_pb2.CONFIG_FLAG_DUMP_PROCESS_CACHE
            return sorted(
                (p.process.pid.value, p.color, p.refcnt.value) for p in response.processes.processes
            )

        assert dump() == [(10, "inUse", 2), (11, "deletePending", 0), (12, "inUse", 1)]
        assert dump(skip_zero_refcnt=True) == [(10, "inUse", 2), (12, "inUse", 1)]
        assert dump(exclude_execve_map_processes=True) == [(11, "deletePending", 0), (12, "inUse", 1)]
        assert dump(skip_zero_refcnt=True, exclude_execve_map_processes=True) == [(12, "inUse", 1)]


def test_get_debug_without_a_cache_is_unavailable() -> None:
    with (
        GrpcServer(EventBus(), "localhost:0", version="x") as srv,
        grpc.insecure_channel(f"localhost:{srv.port}") as channel,
    ):
        stub = sensors_pb2_grpc.FineGuidanceSensorsStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            stub.GetDebug(sensors_pb2.GetDebugRequest(flag=sensors_pb2.CONFIG_FLAG_DUMP_PROCESS_CACHE))
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_get_info_and_list_domains(monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import dataclass

    from google.protobuf import wrappers_pb2

    from tetragon.bpf import features
    from tetragon.config import AgentConfig

    @dataclass
    class Status:
        domain: str

    class Policies:
        def list(self) -> list[Status]:
            return [Status("static"), Status("grpc"), Status("static")]

    monkeypatch.setattr(features, "probe_features", lambda: {"kprobe": True, "lsm": False})
    config = AgentConfig(export_filename="/tmp/x.log", export_file_max_backups=3)
    with (
        GrpcServer(
            EventBus(), "localhost:0", version="1.2.3", config=config, policy_handler=Policies()
        ) as srv,
        grpc.insecure_channel(f"localhost:{srv.port}") as channel,
    ):
        stub = sensors_pb2_grpc.FineGuidanceSensorsStub(channel)
        info = stub.GetInfo(sensors_pb2.GetInfoRequest())
        assert (info.version, info.name) == ("1.2.3", "tetragon")
        assert [(p.Name, p.Enabled.value) for p in info.probes] == [("kprobe", True), ("lsm", False)]
        conf = {c.key: c.value for c in info.conf}
        name, backups = wrappers_pb2.StringValue(), wrappers_pb2.Int64Value()
        assert conf["export-filename"].Unpack(name) and name.value == "/tmp/x.log"
        assert conf["export-file-max-backups"].Unpack(backups) and backups.value == 3
        assert info.build.go_version.startswith("python3.")
        assert list(stub.ListDomains(sensors_pb2.ListDomainsRequest()).domains) == ["grpc", "static"]
    with (
        GrpcServer(EventBus(), "localhost:0", version="x") as srv,
        grpc.insecure_channel(f"localhost:{srv.port}") as channel,
    ):
        stub = sensors_pb2_grpc.FineGuidanceSensorsStub(channel)
        assert list(stub.ListDomains(sensors_pb2.ListDomainsRequest()).domains) == []
        assert list(stub.GetInfo(sensors_pb2.GetInfoRequest()).conf) == []


def test_serving_numbers_are_grpc_health_v1s() -> None:
    from tetragon.api import health as health_module

    assert health_module.SERVING == SERVING
    assert health_module.NOT_SERVING == NOT_SERVING
