"""The unix-socket relay (tetragon.api.relay): events stream through it whole and in order, the
peer name it gives gRPC carries the caller's credentials, and connections are capped at accept."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tests.unit.test_grpc_server import collect, exec_event, wait_for
from tetragon.api import server as server_module
from tetragon.api.access import ServerOptions
from tetragon.api.gen.tetragon import events_pb2, sensors_pb2, sensors_pb2_grpc
from tetragon.api.relay import Caller, caller_from_peer
from tetragon.api.server import GrpcServer
from tetragon.events.bus import EventBus

NOBODY = 65534


def test_peer_names_are_read_only_from_the_relays_directory() -> None:
    callers = [Caller(1000, 100, 42), Caller(1000), Caller(None)]
    for caller in callers:
        assert caller_from_peer(f"unix:/tmp/tg-x/{caller.name(7)}", "/tmp/tg-x") == caller
    assert [c.name(7) for c in callers] == ["u1000.g100.p42.7", "t1000.7", "r.7"]
    assert caller_from_peer("unix:/tmp/other/u0.g0.p1.1", "/tmp/tg-x") is None  # not the relay's socket
    assert caller_from_peer("unix:/tmp/tg-x/grpc.sock", "/tmp/tg-x") is None
    assert caller_from_peer("unix:/tmp/tg-x/u0.g0.p1.1/../x", "/tmp/tg-x") is None
    assert caller_from_peer("ipv4:127.0.0.1:1", "/tmp/tg-x") is None


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory uid 65534 can reach (pytest's tmp dirs are root-only)."""
    path = Path(tempfile.mkdtemp(prefix="tg-relay-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_thousands_of_events_stream_through_whole_and_in_order(bus: EventBus, shared_dir: Path) -> None:
    srv = GrpcServer(bus, f"unix://{shared_dir}/api.sock", version="x")
    srv.start()
    try:
        with grpc.insecure_channel(srv.address) as channel:
            stub = sensors_pb2_grpc.FineGuidanceSensorsStub(channel)
            events = [exec_event(pid) for pid in range(1000, 6000)]
            got = collect(stub, bus, events_pb2.GetEventsRequest(), events, exec_event(1))
        assert got == events
    finally:
        srv.stop(0.5)
    assert not list(shared_dir.iterdir())  # the public socket is gone with the server


CONNECT = """
import socket, sys, time
socks = []
for _ in range(int(sys.argv[2])):
    s = socket.socket(socket.AF_UNIX)
    s.connect(sys.argv[1])
    s.settimeout(2)
    socks.append(s)
closed = 0
for s in socks:
    try:
        s.sendall(b"PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n")  # a client preface: gRPC keeps it open
        closed += s.recv(1) == b""
    except (BrokenPipeError, ConnectionResetError):
        closed += 1
    except TimeoutError:
        pass
print(closed)
"""


def test_one_uids_connections_are_capped_at_accept(
    bus: EventBus, shared_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to connect as another uid")
    options = ServerOptions(max_connections_per_peer=3)
    srv = GrpcServer(bus, f"unix://{shared_dir}/api.sock", version="x", options=options)
    srv.start()
    try:
        res = subprocess.run(
            ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
             sys.executable, "-c", CONNECT, str(shared_dir / "api.sock"), "5"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert res.returncode == 0, res.stderr
        assert int(res.stdout) == 2  # the 4th and 5th were closed at once; 3 stay open
        assert f"closed a new connection of uid {NOBODY} at accept" in caplog.text
        with grpc.insecure_channel(srv.address) as channel:  # root is not limited by nobody's cap
            stub = sensors_pb2_grpc.FineGuidanceSensorsStub(channel)
            assert collect(stub, bus, events_pb2.GetEventsRequest(), [], exec_event(2)) == []
    finally:
        srv.stop(0.5)


def test_grpc_runs_only_while_clients_are_connected(
    bus: EventBus, shared_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server_module, "BACKEND_LINGER", 0.5)
    srv = GrpcServer(bus, "localhost:0", version="v1")
    srv.start()
    try:
        assert not srv.serving  # listening, but gRPC (and its core's threads) not started
        for _ in range(2):  # and again after it stopped
            with grpc.insecure_channel(f"localhost:{srv.port}") as channel:
                stub = sensors_pb2_grpc.FineGuidanceSensorsStub(channel)
                assert stub.GetVersion(sensors_pb2.GetVersionRequest(), timeout=5).version == "v1"
                assert srv.serving
            wait_for(lambda: not srv.serving, timeout=10)
    finally:
        srv.stop(0.5)


def test_private_dirs_of_killed_agents_are_removed(tmp_path: Path) -> None:
    from tetragon.api.relay import _remove_orphaned_dirs

    dead = tmp_path / "tetragon-grpc-999999999-abc"  # above any pid_max: that agent is gone
    alive = tmp_path / f"tetragon-grpc-{os.getpid()}-def"
    other = tmp_path / "tetragon-grpc-xyz"  # not named after a pid: not ours to judge
    for d in (dead, alive, other):
        d.mkdir()
        (d / "grpc.sock").write_bytes(b"")
    assert _remove_orphaned_dirs(str(tmp_path)) == [dead]
    assert not dead.exists() and alive.exists() and other.exists()
