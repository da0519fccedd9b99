"""Who may call the gRPC API: the rule, the peer-uid lookup in /proc/net/tcp, and real calls from a
client with dropped credentials (uid 65534, needs root and setpriv)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from tetragon.api.access import AccessRule, ServerOptions, local_peer_uid, parse_peer, tcp_client_uid
from tetragon.api.gen.tetragon import events_pb2, sensors_pb2, sensors_pb2_grpc
from tetragon.api.server import GrpcServer, ServerStartError
from tetragon.events.bus import EventBus

NOBODY = 65534


def test_rule_default_is_root_and_the_agents_own_uid() -> None:
    rule = AccessRule()
    assert rule.default
    assert rule.allows(0, [], admin=True) and rule.allows(os.geteuid(), [], admin=True)
    assert not rule.allows(NOBODY, [NOBODY], admin=False) or os.geteuid() == NOBODY


def test_rule_readers_and_admins() -> None:
    rule = AccessRule(read_uids=frozenset({1000}), read_gids=frozenset({50}), admin_gids=frozenset({60}))
    assert rule.allows(1000, [], admin=False) and not rule.allows(1000, [], admin=True)
    assert rule.allows(2000, [50], admin=False) and not rule.allows(2000, [50], admin=True)
    assert rule.allows(3000, [7, 60], admin=True)
    assert not rule.allows(4000, [7], admin=False)


def test_parse_peer() -> None:
    assert parse_peer("ipv4:127.0.0.1:4242") == (socket.AF_INET, "127.0.0.1", 4242)
    assert parse_peer("ipv6:%5B::1%5D:53142") == (socket.AF_INET6, "::1", 53142)
    assert parse_peer("unix:") is None


TCP_TABLE = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:D431 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1
   1: 0100007F:D431 0100007F:1092 01 00000000:00000000 00:00000000 00000000     0        0 2 1
   2: 0100007F:1092 0100007F:D431 01 00000000:00000000 00:00000000 00000000  1000        0 3 1
   3: 0100007F:1093 0100007F:D431 01 00000000:00000000 00:00000000 00000000  1000        0 4 1
   4: 0100007F:1093 0100007F:0050 01 00000000:00000000 00:00000000 00000000  1001        0 5 1
"""


@pytest.mark.skipif(sys.byteorder != "little", reason="the sample table is little-endian")
def test_local_peer_uid_from_the_socket_table(tmp_path: Path) -> None:
    (tmp_path / "net").mkdir()
    (tmp_path / "net/tcp").write_text(TCP_TABLE)
    server_port = 0xD431
    assert local_peer_uid("ipv4:127.0.0.1:4242", server_port, str(tmp_path)) == 1000  # 0x1092
    assert local_peer_uid("ipv4:127.0.0.1:4243", server_port, str(tmp_path)) == 1000  # remote port decides
    assert local_peer_uid("ipv4:127.0.0.1:4244", server_port, str(tmp_path)) is None  # no such socket
    assert local_peer_uid("ipv4:10.0.0.1:4242", server_port, str(tmp_path)) is None  # not from this host


def test_local_peer_uid_of_a_real_connection() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        with socket.create_connection(listener.getsockname()) as client:
            host, port = client.getsockname()
            assert local_peer_uid(f"ipv4:{host}:{port}", listener.getsockname()[1]) == os.geteuid()


@pytest.mark.parametrize("family, host", [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")])
def test_tcp_client_uid_asks_the_kernel_for_one_socket(family: int, host: str) -> None:
    try:
        listener = socket.socket(family)
        listener.bind((host, 0))
    except OSError:
        pytest.skip(f"no {host} here")
    with listener:
        listener.listen()
        with socket.create_connection(listener.getsockname()[:2]):
            served, client = listener.accept()
            with served:
                server = served.getsockname()[:2]
                assert tcp_client_uid(family, client[:2], server) == os.geteuid()
                assert tcp_client_uid(family, (host, 1), server) is None  # no such client socket


def test_non_loopback_address_needs_tls(bus: EventBus) -> None:
    with pytest.raises(ServerStartError, match="--server-tls-cert-file"):
        GrpcServer(bus, ":0", version="x").start()


def test_unix_socket_takes_uid_rules(bus: EventBus, tmp_path: Path) -> None:
    """The relay learns a unix peer's uid (SO_PEERCRED), so the rules apply there too."""
    options = ServerOptions(access=AccessRule(read_uids=frozenset({NOBODY})))
    srv = GrpcServer(bus, f"unix://{tmp_path}/s.sock", version="x", options=options)
    srv.start()
    try:
        assert (tmp_path / "s.sock").stat().st_mode & 0o777 == 0o666  # the rule decides, not the mode
    finally:
        srv.stop(0.5)
    assert not (tmp_path / "s.sock").exists()


# --- real calls with dropped credentials ---------------------------------------------------------


class RecordingPolicies:
    """A policy handler answering by RPC name; records every call that reached it."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def AddTracingPolicy(self, request: Any) -> Any:  # noqa: N802
        self.calls.append("add")
        return sensors_pb2.AddTracingPolicyResponse()

    def ListTracingPolicies(self, request: Any) -> Any:  # noqa: N802
        self.calls.append("list")
        return sensors_pb2.ListTracingPoliciesResponse()


CLIENT = """
import json, sys, grpc
from tetragon.api.gen.tetragon import events_pb2, sensors_pb2 as s, sensors_pb2_grpc, tetragon_pb2
stub = sensors_pb2_grpc.FineGuidanceSensorsStub(grpc.insecure_channel(sys.argv[1]))
debug = s.SetDebugRequest(flag=s.CONFIG_FLAG_LOG_LEVEL, level=s.LOG_LEVEL_INFO)
calls = {
    "GetVersion": lambda: stub.GetVersion(s.GetVersionRequest(), timeout=5),
    "GetHealth": lambda: stub.GetHealth(tetragon_pb2.GetHealthStatusRequest(), timeout=5),
    "ListTracingPolicies": lambda: stub.ListTracingPolicies(s.ListTracingPoliciesRequest(), timeout=5),
    "AddTracingPolicy": lambda: stub.AddTracingPolicy(s.AddTracingPolicyRequest(yaml="x"), timeout=5),
    "SetDebug": lambda: stub.SetDebug(debug, timeout=5),
    "GetEvents": lambda: next(stub.GetEvents(events_pb2.GetEventsRequest(), timeout=1)),
}
out = {}
for name, call in calls.items():
    try:
        call()
        out[name] = "OK"
    except grpc.RpcError as e:
        out[name] = e.code().name
print(json.dumps(out))
"""


def call_all_as(uid: int, address: str) -> dict[str, str]:
    res = subprocess.run(
        [
            "setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
            sys.executable, "-c", CLIENT, address,
        ],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    return dict(json.loads(res.stdout))


@pytest.fixture
def as_root() -> None:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run a client as another uid")


@pytest.fixture(params=["tcp", "unix"])
def kind(request: pytest.FixtureRequest) -> Iterator[str]:
    """The server's address kind; for unix, a socket path uid 65534 can reach."""
    if request.param == "tcp":
        yield "localhost:0"
        return
    shared = Path(tempfile.mkdtemp(prefix="tg-api-"))
    shared.chmod(0o755)
    try:
        yield f"unix://{shared}/api.sock"
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def serve(
    bus: EventBus, policies: RecordingPolicies, address: str, options: ServerOptions | None = None
) -> GrpcServer:
    srv = GrpcServer(bus, address, version="x", policy_handler=policies, options=options)
    srv.start()
    return srv


def client_address(srv: GrpcServer, host: str = "localhost") -> str:
    return srv.address if srv.address.startswith("unix://") else f"{host}:{srv.port}"


@pytest.fixture
def policies() -> Iterator[RecordingPolicies]:
    yield RecordingPolicies()


def test_nobody_is_refused_everything(
    as_root: None, bus: EventBus, policies: RecordingPolicies, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    srv = serve(bus, policies, kind)
    try:
        got = call_all_as(NOBODY, client_address(srv))
    finally:
        srv.stop(0.5)
    assert set(got.values()) == {"PERMISSION_DENIED"}, got
    assert policies.calls == []  # nothing reached the policy handler
    assert f"AddTracingPolicy refused for uid {NOBODY}" in caplog.text


def test_root_may_call_everything(
    as_root: None, bus: EventBus, policies: RecordingPolicies, kind: str
) -> None:
    srv = serve(bus, policies, kind)
    try:
        got = call_all_as(0, client_address(srv, "127.0.0.1"))
    finally:
        srv.stop(0.5)
    assert got["AddTracingPolicy"] == "OK" and got["ListTracingPolicies"] == "OK" and got["SetDebug"] == "OK"
    assert got["GetEvents"] == "DEADLINE_EXCEEDED"  # allowed: no event within its 1 s deadline
    assert policies.calls == ["list", "add"]


def test_allowed_uid_may_read_but_not_change(
    as_root: None, bus: EventBus, policies: RecordingPolicies, kind: str
) -> None:
    srv = serve(bus, policies, kind, ServerOptions(access=AccessRule(read_uids=frozenset({NOBODY}))))
    try:
        got = call_all_as(NOBODY, client_address(srv))
    finally:
        srv.stop(0.5)
    assert got["GetVersion"] == got["GetHealth"] == got["ListTracingPolicies"] == "OK", got
    assert got["GetEvents"] == "DEADLINE_EXCEEDED"
    assert got["AddTracingPolicy"] == got["SetDebug"] == "PERMISSION_DENIED"
    assert policies.calls == ["list"]


def test_admin_uid_may_change(as_root: None, bus: EventBus, policies: RecordingPolicies, kind: str) -> None:
    srv = serve(bus, policies, kind, ServerOptions(access=AccessRule(admin_uids=frozenset({NOBODY}))))
    try:
        got = call_all_as(NOBODY, client_address(srv))
    finally:
        srv.stop(0.5)
    assert got["AddTracingPolicy"] == "OK" and got["GetVersion"] == "OK", got


def test_unused_import_guard() -> None:
    assert events_pb2 and sensors_pb2_grpc and grpc  # the client script imports the same modules


STREAMS_CLIENT = """
import sys, grpc
from tetragon.api.gen.tetragon import events_pb2, sensors_pb2_grpc
channel = grpc.insecure_channel(sys.argv[1])
stub = sensors_pb2_grpc.FineGuidanceSensorsStub(channel)
calls = [stub.GetEvents(events_pb2.GetEventsRequest(), timeout=3) for _ in range(3)]
for call in calls:
    try:
        next(call)
        print("EVENT")
    except grpc.RpcError as e:
        print(e.code().name)
"""


def test_one_uids_streams_are_capped(
    as_root: None, bus: EventBus, policies: RecordingPolicies, kind: str
) -> None:
    access = AccessRule(read_uids=frozenset({NOBODY}))
    srv = serve(bus, policies, kind, ServerOptions(access=access, max_event_streams_per_peer=2))
    try:
        res = subprocess.run(
            ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
             sys.executable, "-c", STREAMS_CLIENT, client_address(srv)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    finally:
        srv.stop(0.5)
    assert res.returncode == 0, res.stderr
    assert sorted(res.stdout.split()) == ["DEADLINE_EXCEEDED", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED"]
