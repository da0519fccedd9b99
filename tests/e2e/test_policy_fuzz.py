"""Generated malformed and mutated TracingPolicies through a real agent's AddTracingPolicy.

A policy loaded first keeps producing its events throughout; every refusal is INVALID_ARGUMENT or
FAILED_PRECONDITION with one line naming where; no reply is INTERNAL, none takes over 5 s, the
agent logs no traceback, and its RSS comes back within 10 % afterwards. A hostile policy with
more hooks than --tracing-policy-max-hooks is refused before anything is loaded. The CI run sends
120 policies three times; bench/policy_fuzz.py sends 10,000 (`run_fuzz` is shared).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from tests.e2e.agentproc import AgentProcess, body, kind, rss_mb, running_agent
from tests.policy_mutations import FIELD_PATH, policies
from tetragon.api.gen.tetragon import sensors_pb2, sensors_pb2_grpc

KEEPER = """apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: fuzz-keeper
spec:
  tracepoints:
  - subsystem: syscalls
    event: sys_enter_getcwd
    args:
    - index: 6
      type: uint64
    selectors:
    - matchArgs:
      - index: 0
        operator: Equal
        values: ["424242"]
"""
REFUSALS = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION}
# a request over the server's 10 MB limit is refused by gRPC itself, before any handler can name a field
TOO_LARGE = "Received message larger than max"
SLOW_RPC = 5.0
RSS_RETURN = 1.10  # RSS after the third pass over the larger RSS after the first two
TRACEFS_SYSCALLS = "/sys/kernel/tracing/events/syscalls"
HEAD = "apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata:\n  name: {}\nspec:\n  tracepoints:\n"


@dataclass
class FuzzReport:
    sent: int = 0
    loaded: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    bad: list[str] = field(default_factory=list)  # INTERNAL, other codes, multi-line, no field path
    slowest: float = 0.0
    slow: list[str] = field(default_factory=list)


def keeper_event(agent: AgentProcess, timeout: float = 10.0) -> None:
    """Run getcwd(buf, 424242) and wait for the keeper policy's event of that call."""
    code = "import ctypes; ctypes.CDLL(None).syscall(79, ctypes.create_string_buffer(64), 424242)"
    subprocess.run([sys.executable, "-c", code], check=True)

    def match(ev: Any) -> bool:
        return kind(ev) == "process_tracepoint" and body(ev).get("policy_name") == "fuzz-keeper"

    seen = sum(1 for ev in agent.read_events() if match(ev))
    deadline = time.monotonic() + timeout
    while sum(1 for ev in agent.read_events() if match(ev)) == seen:
        assert time.monotonic() < deadline, "the keeper policy stopped producing events"
        time.sleep(0.2)
        subprocess.run([sys.executable, "-c", code], check=True)


def run_fuzz(stub: Any, seed: int, count: int) -> FuzzReport:
    """Send `count` generated policies; delete any that loaded. Returns what came back."""
    report = FuzzReport()
    for n, text in policies(seed, count):
        started = time.monotonic()
        try:
            stub.AddTracingPolicy(sensors_pb2.AddTracingPolicyRequest(yaml=text), timeout=60)
            code, details = grpc.StatusCode.OK, ""
        except grpc.RpcError as err:
            code, details = err.code(), err.details() or ""
        took = time.monotonic() - started
        report.sent += 1
        report.slowest = max(report.slowest, took)
        if took > SLOW_RPC:
            report.slow.append(f"#{n}: {took:.1f}s {code.name} {details[:120]}")
        if code == grpc.StatusCode.OK:
            report.loaded += 1
            delete_all_but(stub, {"fuzz-keeper"})  # the name may be a mutated one
            continue
        report.refused[code.name] = report.refused.get(code.name, 0) + 1
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED and details.startswith(TOO_LARGE):
            continue
        if code not in REFUSALS or "\n" in details or len(details) > 600 or not FIELD_PATH.search(details):
            report.bad.append(f"#{n}: {code.name} {details[:300]}")
    return report


def delete_all_but(stub: Any, keep: set[str]) -> None:
    listed = stub.ListTracingPolicies(sensors_pb2.ListTracingPoliciesRequest(), timeout=10)
    for policy in listed.policies:
        if policy.name not in keep:
            request = sensors_pb2.DeleteTracingPolicyRequest(name=policy.name, namespace=policy.namespace)
            stub.DeleteTracingPolicy(request, timeout=60)


@pytest.fixture(scope="module")
def agent(tmp_path_factory: Any) -> Iterator[AgentProcess]:
    yield from running_agent(tmp_path_factory, "fuzz", "--tracing-policy-max-hooks", "64")


@pytest.fixture(scope="module")
def stub(agent: AgentProcess) -> Any:
    return sensors_pb2_grpc.FineGuidanceSensorsStub(grpc.insecure_channel(agent.server))


def test_generated_policies_are_refused_cleanly_and_the_agent_keeps_working(
    agent: AgentProcess, stub: Any
) -> None:
    stub.AddTracingPolicy(sensors_pb2.AddTracingPolicyRequest(yaml=KEEPER), timeout=30)
    keeper_event(agent)
    # the same policies three times: the first pass imports what is used on first use and reaches the
    # heap's high-water mark (its largest documents); the last must not grow it (no leak). Where the
    # first pass leaves RSS depends on which pymalloc arenas its survivors pin: 89-103 MB over runs of
    # the same seed, settling at 99-110 MB after the second, so the baseline is the larger of both
    seed = int(os.environ.get("TETRAGON_FUZZ_SEED", "13"))
    first = run_fuzz(stub, seed=seed, count=120)
    baseline = rss_mb(agent.proc.pid)
    second = run_fuzz(stub, seed=seed, count=120)
    baseline = max(baseline, rss_mb(agent.proc.pid))
    report = run_fuzz(stub, seed=seed, count=120)
    assert first.bad == [] and second.bad == [], (first.bad + second.bad)[:10]
    assert agent.proc.poll() is None, agent.stderr()
    assert report.bad == [], report.bad[:10]
    assert report.slow == [], report.slow
    assert "Traceback" not in agent.stderr()
    assert sum(report.refused.values()) > report.sent // 2, report
    after = rss_mb(agent.proc.pid)
    # was 25 %: the gRPC threads that parse policies each kept a glibc arena of fragments (+11 % on
    # the second pass in CI); the agent now caps the arenas at 2 (hostsetup.tune_malloc)
    assert after <= baseline * RSS_RETURN, (baseline, after)
    keeper_event(agent)


def test_too_many_hooks_are_refused_before_loading_and_list_stays_quick(
    agent: AgentProcess, stub: Any
) -> None:
    hooks = "".join("  - subsystem: syscalls\n    event: sys_enter_getcwd\n" for _ in range(65))
    text = HEAD.format("wide")
    fds = len(os.listdir(f"/proc/{agent.proc.pid}/fd"))
    with pytest.raises(grpc.RpcError) as info:
        stub.AddTracingPolicy(sensors_pb2.AddTracingPolicyRequest(yaml=text + hooks), timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == "spec: 65 hooks, more than --tracing-policy-max-hooks 64"
    assert len(os.listdir(f"/proc/{agent.proc.pid}/fd")) <= fds + 2


def test_list_answers_while_a_large_policy_loads(agent: AgentProcess, stub: Any) -> None:
    events = sorted(
        e for e in os.listdir("/sys/kernel/tracing/events/syscalls") if e.startswith("sys_enter_")
    )
    hooks = "".join(f"  - subsystem: syscalls\n    event: {e}\n" for e in events[:60])
    text = HEAD.format("large")
    slowest = 0.0
    done = threading.Event()

    def add() -> None:
        try:
            stub.AddTracingPolicy(sensors_pb2.AddTracingPolicyRequest(yaml=text + hooks), timeout=120)
        finally:
            done.set()

    adder = threading.Thread(target=add)
    adder.start()
    while not done.is_set():
        started = time.monotonic()
        stub.ListTracingPolicies(sensors_pb2.ListTracingPoliciesRequest(), timeout=10)
        slowest = max(slowest, time.monotonic() - started)
        time.sleep(0.05)
    adder.join()
    stub.DeleteTracingPolicy(sensors_pb2.DeleteTracingPolicyRequest(name="large"), timeout=120)
    assert slowest < 2.0
