"""The agent at rest: its drain loop sleeps until the kernel wakes it with a record, gRPC does not run
while no client is connected (the API's nor the health server's, which a probe starts for a second),
and the first event after a quiet spell is exported at once.

Wake-ups are counted as bench/idle.py counts them (voluntary + involuntary context switches from
/proc/<pid>/task/*/status), per thread. The base sensor sees every exec on the machine, so a window
is "at rest" only up to the records other processes cause: the bound allows a few wake-ups for each
event exported during the window.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.conftest import require_bpf
from tests.e2e.agentproc import AgentProcess, free_port, is_exec_of

WINDOW = 10.0
# the agent's wake-ups (every thread) in a window with no event: the drain loop's chores (a clock
# refresh every 10 s, the process cache's collection every 30 s) and a margin for records that make no
# export line (a fork without exec, a kernel thread). Before: the drain
# loop's 1 s back-off timer 10, gRPC's polling thread 50, its core's threads ~45, the connection
# reaper 10.
AT_REST = 8
PER_EVENT = 3  # a record wakes the loop, its batch wait and the empty drain after it may each count
QUIET_LINES = 4  # a window with at most this many export lines is quiet enough to stop looking
ATTEMPTS = 3
FIRST_EVENT_LATENCY = 1.0  # what the 1 s back-off allowed before; now the record wakes the agent
GRPC_CORE_THREADS = ("event_engine", "grpc_global", "lifeguard")
HEALTH_STOPPED = 10.0  # seconds for gRPC's threads to end after the probe (HEALTH_LINGER is 1 s)


def _wakeups(pid: int) -> dict[int, int]:
    """tid -> voluntary + involuntary context switches, for every thread of `pid`."""
    out: dict[int, int] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            status = (task / "status").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        out[int(task.name)] = sum(
            int(line.split(":")[1]) for line in status.splitlines() if "ctxt_switches:" in line
        )
    return out


def _export_lines(agent: AgentProcess) -> int:
    assert agent.export is not None
    return agent.export.read_bytes().count(b"\n") if agent.export.exists() else 0


@pytest.fixture
def quiet_agent(tmp_path: Path):  # type: ignore[no-untyped-def]
    require_bpf()
    # the health server on, as the agent's default `:6789` has it (a free port: agents of one run)
    agent = AgentProcess(tmp_path, "--health-server-address", f"127.0.0.1:{free_port()}")
    try:
        agent.wait_ready()
        time.sleep(3.0)  # start-up aftermath
        yield agent
    finally:
        assert agent.stop() == 0, agent.stderr()


def test_agent_at_rest_wakes_rarely(quiet_agent: AgentProcess) -> None:
    pid = quiet_agent.proc.pid
    windows = []
    for _ in range(ATTEMPTS):  # the quietest of a few windows: other processes' execs are events too
        lines0, before = _export_lines(quiet_agent), _wakeups(pid)
        time.sleep(WINDOW)
        after = _wakeups(pid)
        events = _export_lines(quiet_agent) - lines0
        windows.append((events, sum(n - before.get(tid, 0) for tid, n in after.items())))
        if events <= QUIET_LINES:
            break
    events, wakeups = min(windows)
    bound = AT_REST + PER_EVENT * events
    assert wakeups <= bound, f"{wakeups} wake-ups in {WINDOW:.0f} s with {events} events ({windows})"
    # gRPC's core threads (event_engine, grpc_global_timer, lifeguard) exist only while it serves
    assert not _grpc_threads(pid), _grpc_threads(pid)


def _grpc_threads(pid: int) -> set[str]:
    names = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            names.add((task / "comm").read_text().strip())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return {n for n in names if n.startswith((*GRPC_CORE_THREADS, "health"))}


def test_a_health_probe_runs_grpc_only_while_it_asks(quiet_agent: AgentProcess) -> None:
    pid = quiet_agent.proc.pid
    address = quiet_agent.args[quiet_agent.args.index("--health-server-address") + 1]
    assert not _grpc_threads(pid)
    with grpc.insecure_channel(address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="liveness"), timeout=10
        )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    deadline = time.monotonic() + HEALTH_STOPPED
    while _grpc_threads(pid):
        assert time.monotonic() < deadline, f"gRPC still runs after the probe: {_grpc_threads(pid)}"
        time.sleep(0.2)


def test_first_event_after_a_quiet_spell_is_exported_at_once(quiet_agent: AgentProcess) -> None:
    time.sleep(2.0)  # a quiet spell: the drain loop sleeps until a record comes
    t0 = time.monotonic()
    child = subprocess.Popen(["/bin/sleep", "0"])
    child.wait()
    quiet_agent.wait_for(is_exec_of(child.pid), timeout=FIRST_EVENT_LATENCY + 10)
    latency = time.monotonic() - t0
    # the export file write and this test's 50 ms polling on a loaded machine are in it too
    assert latency <= FIRST_EVENT_LATENCY, f"first event exported after {latency:.2f} s"
