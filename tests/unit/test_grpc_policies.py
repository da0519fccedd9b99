"""The TracingPolicy RPCs of the real GrpcServer, on top of an in-memory fake PolicyManager."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest
import yaml

from tetragon.api.gen.tetragon import sensors_pb2, sensors_pb2_grpc
from tetragon.api.server import GrpcServer
from tetragon.events.bus import EventBus
from tetragon.policy.errors import PolicyError
from tetragon.policy.status import PolicyStatus

POLICY = """\
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: {name}
spec:
  kprobes:
  - call: fd_install
    syscall: false
"""


class FakeManager:
    """The PolicyManager interface, in memory. Policy names steer failures: `boom` raises a plain
    exception, `old-kernel` is unsupported; a YAML that does not parse is invalid."""

    def __init__(self) -> None:
        self.policies: dict[tuple[str, str], PolicyStatus] = {}
        self.calls: list[tuple[Any, ...]] = []
        self.next_id = 1

    def add(self, yaml_text: str, *, mode: str | None = None, domain: str = "grpc") -> PolicyStatus:
        self.calls.append(("add", mode, domain))
        try:
            doc = yaml.safe_load(yaml_text)
            name = doc["metadata"]["name"]
        except (yaml.YAMLError, TypeError, KeyError) as exc:
            raise PolicyError(f"invalid policy:\n{exc}", "invalid") from None
        if name == "boom":
            raise RuntimeError("engine bug")
        if name == "old-kernel":
            raise PolicyError("kprobe fd_install: this kernel lacks kprobe_multi", "unsupported")
        namespace = (
            doc["metadata"].get("namespace", "") if doc.get("kind") == "TracingPolicyNamespaced" else ""
        )
        if (namespace, name) in self.policies:
            raise PolicyError(f"policy {name} already exists", "exists")
        options = {o["name"]: o["value"] for o in (doc.get("spec") or {}).get("options") or []}
        policy_mode = mode or options.get("policy-mode", "enforce")
        status = PolicyStatus(
            id=self.next_id,
            name=name,
            namespace=namespace,
            sensors=["generic_kprobe"],
            mode=f"TP_MODE_{policy_mode.upper()}",
            kernel_memory_bytes=1_234_567,
            domain=domain,
        )
        self.next_id += 1
        self.policies[(namespace, name)] = status
        return status

    def _get(self, name: str, namespace: str) -> PolicyStatus:
        try:
            return self.policies[(namespace, name)]
        except KeyError:
            raise PolicyError(f"policy {name} not found", "not_found") from None

    def delete(self, name: str, namespace: str = "") -> None:
        self.calls.append(("delete", name, namespace))
        self._get(name, namespace)
        del self.policies[(namespace, name)]

    def configure(
        self, name: str, namespace: str = "", *, enable: bool | None = None, mode: str | None = None
    ) -> None:
        self.calls.append(("configure", name, namespace, enable, mode))
        status = self._get(name, namespace)
        if enable is not None:
            status.enabled = enable
            status.state = "TP_STATE_ENABLED" if enable else "TP_STATE_DISABLED"
        if mode is not None:
            status.mode = f"TP_MODE_{mode.upper()}"

    def list(self) -> list[PolicyStatus]:
        self.calls.append(("list",))
        return list(self.policies.values())


@pytest.fixture
def manager() -> FakeManager:
    return FakeManager()


@pytest.fixture
def policy_server(bus: EventBus, manager: FakeManager) -> Iterator[GrpcServer]:
    srv = GrpcServer(bus, "localhost:0", version="v0.0.0-test", policy_handler=manager)
    srv.start()
    yield srv
    srv.stop(grace=0.5)


@pytest.fixture
def channel(policy_server: GrpcServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"localhost:{policy_server.port}") as ch:
        yield ch


@pytest.fixture
def stub(channel: grpc.Channel) -> Any:
    return sensors_pb2_grpc.FineGuidanceSensorsStub(channel)


def rpc_error(call: Any, request: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        call(request)
    return err.value


def add(stub: Any, name: str) -> None:
    stub.AddTracingPolicy(sensors_pb2.AddTracingPolicyRequest(yaml=POLICY.format(name=name)))


def test_add_list_delete(stub: Any, manager: FakeManager) -> None:
    assert stub.ListTracingPolicies(sensors_pb2.ListTracingPoliciesRequest()).policies == []
    response = stub.AddTracingPolicy(sensors_pb2.AddTracingPolicyRequest(yaml=POLICY.format(name="fd")))
    assert response == sensors_pb2.AddTracingPolicyResponse()
    assert manager.calls[-1] == ("add", None, "grpc")
    [pol] = stub.ListTracingPolicies(sensors_pb2.ListTracingPoliciesRequest()).policies
    assert pol == sensors_pb2.TracingPolicyStatus(
        id=1,
        name="fd",
        sensors=["generic_kprobe"],
        enabled=True,
        state=sensors_pb2.TP_STATE_ENABLED,
        kernel_memory_bytes=1_234_567,
        mode=sensors_pb2.TP_MODE_ENFORCE,
        domain="grpc",
    )
    stub.DeleteTracingPolicy(sensors_pb2.DeleteTracingPolicyRequest(name="fd"))
    assert manager.calls[-1] == ("delete", "fd", "")
    assert stub.ListTracingPolicies(sensors_pb2.ListTracingPoliciesRequest()).policies == []


def test_status_fields_and_enums_on_the_wire(stub: Any, manager: FakeManager) -> None:
    manager.policies[("ns1", "p")] = PolicyStatus(
        id=7,
        name="p",
        namespace="ns1",
        info="some info",
        sensors=["generic_kprobe", "generic_tracepoint"],
        enabled=False,
        state="TP_STATE_LOAD_ERROR",
        error="attach failed",
        mode="TP_MODE_MONITOR",
        kernel_memory_bytes=4096,
        domain="static",
    )
    manager.policies[("ns1", "p")].filter_id = 3  # type: ignore[attr-defined]  # optional attribute
    response = stub.ListTracingPolicies(sensors_pb2.ListTracingPoliciesRequest())
    wire = sensors_pb2.ListTracingPoliciesResponse.FromString(response.SerializeToString())
    [pol] = wire.policies
    numbers = {field.number: value for field, value in pol.ListFields()}
    assert numbers == {
        1: 7,
        2: "p",
        3: "ns1",
        4: "some info",
        5: ["generic_kprobe", "generic_tracepoint"],
        7: 3,
        8: "attach failed",
        9: 3,  # TP_STATE_LOAD_ERROR
        10: 4096,
        11: 2,  # TP_MODE_MONITOR
        13: "static",
    }
    assert sensors_pb2.TracingPolicyState.Name(pol.state) == "TP_STATE_LOAD_ERROR"
    assert sensors_pb2.TracingPolicyMode.Name(pol.mode) == "TP_MODE_MONITOR"


@pytest.mark.parametrize(
    ("state", "mode", "want_state", "want_mode"),
    [
        ("TP_STATE_DISABLED", "TP_MODE_ENFORCE", sensors_pb2.TP_STATE_DISABLED, sensors_pb2.TP_MODE_ENFORCE),
        ("enabled", "monitor", sensors_pb2.TP_STATE_ENABLED, sensors_pb2.TP_MODE_MONITOR),
        (
            "TP_STATE_ERROR",
            "TP_MODE_MONITOR_ONLY",
            sensors_pb2.TP_STATE_ERROR,
            sensors_pb2.TP_MODE_MONITOR_ONLY,
        ),
        ("no-such-state", "", sensors_pb2.TP_STATE_UNKNOWN, sensors_pb2.TP_MODE_UNKNOWN),
    ],
)
def test_state_and_mode_names(
    stub: Any, manager: FakeManager, state: str, mode: str, want_state: int, want_mode: int
) -> None:
    manager.policies[("", "p")] = PolicyStatus(id=1, name="p", state=state, mode=mode)
    [pol] = stub.ListTracingPolicies(sensors_pb2.ListTracingPoliciesRequest()).policies
    assert (pol.state, pol.mode) == (want_state, want_mode)


def test_configure_enable_disable(stub: Any, manager: FakeManager) -> None:
    add(stub, "p")
    req = sensors_pb2.ConfigureTracingPolicyRequest
    stub.ConfigureTracingPolicy(req(name="p", enable=False))
    assert manager.calls[-1] == ("configure", "p", "", False, None)
    stub.ConfigureTracingPolicy(req(name="p", mode=sensors_pb2.TP_MODE_MONITOR))
    assert manager.calls[-1] == ("configure", "p", "", None, "monitor")
    stub.ConfigureTracingPolicy(req(name="p", enable=True, mode=sensors_pb2.TP_MODE_ENFORCE))
    assert manager.calls[-1] == ("configure", "p", "", True, "enforce")
    stub.ConfigureTracingPolicy(req(name="p"))
    assert manager.calls[-1] == ("configure", "p", "", None, None)

    stub.DisableTracingPolicy(sensors_pb2.DisableTracingPolicyRequest(name="p"))
    assert manager.calls[-1] == ("configure", "p", "", False, None)
    [pol] = stub.ListTracingPolicies(sensors_pb2.ListTracingPoliciesRequest()).policies
    assert (pol.state, pol.enabled) == (sensors_pb2.TP_STATE_DISABLED, False)
    stub.EnableTracingPolicy(sensors_pb2.EnableTracingPolicyRequest(name="p"))
    assert manager.calls[-1] == ("configure", "p", "", True, None)
    [pol] = stub.ListTracingPolicies(sensors_pb2.ListTracingPoliciesRequest()).policies
    assert (pol.state, pol.enabled) == (sensors_pb2.TP_STATE_ENABLED, True)


@pytest.mark.parametrize("mode", [sensors_pb2.TP_MODE_UNKNOWN, sensors_pb2.TP_MODE_MONITOR_ONLY, 99])
def test_configure_rejects_other_modes(stub: Any, manager: FakeManager, mode: int) -> None:
    add(stub, "p")
    err = rpc_error(
        stub.ConfigureTracingPolicy, sensors_pb2.ConfigureTracingPolicyRequest(name="p", mode=mode)
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "invalid mode" in err.details()
    assert manager.calls[-1][0] == "add"  # the manager was not asked


def test_error_kinds_map_to_status_codes(stub: Any) -> None:
    err = rpc_error(stub.AddTracingPolicy, sensors_pb2.AddTracingPolicyRequest(yaml="metadata: ["))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details().startswith("invalid policy: ") and "\n" not in err.details()

    err = rpc_error(
        stub.AddTracingPolicy, sensors_pb2.AddTracingPolicyRequest(yaml=POLICY.format(name="old-kernel"))
    )
    assert (err.code(), err.details()) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "kprobe fd_install: this kernel lacks kprobe_multi",
    )

    add(stub, "p")
    err = rpc_error(stub.AddTracingPolicy, sensors_pb2.AddTracingPolicyRequest(yaml=POLICY.format(name="p")))
    assert (err.code(), err.details()) == (grpc.StatusCode.ALREADY_EXISTS, "policy p already exists")

    for call, request in (
        (stub.DeleteTracingPolicy, sensors_pb2.DeleteTracingPolicyRequest(name="p", namespace="other")),
        (stub.DeleteTracingPolicy, sensors_pb2.DeleteTracingPolicyRequest(name="nope")),
        (stub.ConfigureTracingPolicy, sensors_pb2.ConfigureTracingPolicyRequest(name="nope", enable=True)),
        (stub.EnableTracingPolicy, sensors_pb2.EnableTracingPolicyRequest(name="nope")),
        (stub.DisableTracingPolicy, sensors_pb2.DisableTracingPolicyRequest(name="nope")),
    ):
        err = rpc_error(call, request)
        assert err.code() == grpc.StatusCode.NOT_FOUND, request
        assert err.details().endswith("not found")


def test_engine_failure_is_internal_and_server_keeps_serving(stub: Any) -> None:
    err = rpc_error(
        stub.AddTracingPolicy, sensors_pb2.AddTracingPolicyRequest(yaml=POLICY.format(name="boom"))
    )
    assert err.code() == grpc.StatusCode.INTERNAL
    assert err.details() == "AddTracingPolicy failed: RuntimeError: engine bug"
    add(stub, "after")
    assert [p.name for p in stub.ListTracingPolicies(sensors_pb2.ListTracingPoliciesRequest()).policies] == [
        "after"
    ]


def test_malformed_status_from_engine_is_internal(stub: Any, manager: FakeManager) -> None:
    manager.policies[("", "bad")] = PolicyStatus(id=-1, name="bad")  # uint64 cannot hold it
    err = rpc_error(stub.ListTracingPolicies, sensors_pb2.ListTracingPoliciesRequest())
    assert err.code() == grpc.StatusCode.INTERNAL
    del manager.policies[("", "bad")]
    assert stub.ListTracingPolicies(sensors_pb2.ListTracingPoliciesRequest()).policies == []


def test_garbage_requests_do_not_stop_the_server(stub: Any, channel: grpc.Channel) -> None:
    for method in ("AddTracingPolicy", "ConfigureTracingPolicy", "ListTracingPolicies"):
        raw = channel.unary_unary(f"/tetragon.FineGuidanceSensors/{method}")
        with pytest.raises(grpc.RpcError) as err:
            raw(b"\xff\xff\xff\xff garbage", timeout=5)
        assert err.value.code() != grpc.StatusCode.OK
    bad_yaml = "\x00\x01: [\n\t{"
    err = rpc_error(stub.AddTracingPolicy, sensors_pb2.AddTracingPolicyRequest(yaml=bad_yaml))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    add(stub, "still-alive")
    assert len(stub.ListTracingPolicies(sensors_pb2.ListTracingPoliciesRequest()).policies) == 1


def test_manager_without_a_method_is_unimplemented(bus: EventBus) -> None:
    class ListOnly:
        def list(self) -> list[PolicyStatus]:
            return [PolicyStatus(id=1, name="only")]

    with (
        GrpcServer(bus, "localhost:0", version="x", policy_handler=ListOnly()) as srv,
        grpc.insecure_channel(f"localhost:{srv.port}") as channel,
    ):
        stub = sensors_pb2_grpc.FineGuidanceSensorsStub(channel)
        assert stub.ListTracingPolicies(sensors_pb2.ListTracingPoliciesRequest()).policies[0].name == "only"
        err = rpc_error(stub.DeleteTracingPolicy, sensors_pb2.DeleteTracingPolicyRequest(name="only"))
        assert (err.code(), err.details()) == (
            grpc.StatusCode.UNIMPLEMENTED,
            "tracing policies are not supported yet",
        )


def test_policy_engine_is_imported_on_first_policy_only() -> None:
    """The schema and compiler (pydantic, the syscall table: ~15 MB of RSS) are not loaded by an
    agent that has no policy (PolicyManager imports them in add()), nor the CEL library by one whose
    filters use no cel_expression, nor the Kubernetes client."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import tetragon.agent, tetragon.api.server, tetragon.cli.agent, tetragon.sensors.manager\n"
        "import tetragon.export.filters, tetragon.api.health\n"
        "heavy = ('pydantic', 'tetragon.policy.schema', 'tetragon.policy.compile',\n"
        "         'tetragon.policy.syscall_table', 'cel', 'kubernetes')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
