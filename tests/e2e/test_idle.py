"""The agent at rest: its drain timer backs off, and the first event after a quiet spell still comes.

The base sensor sees every exec on the machine, so a window is "at rest" only up to the records
other processes cause: the bound allows a few wake-ups for each event exported during the window.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import require_bpf
from tests.e2e.agentproc import AgentProcess, is_exec_of
from tetragon.agent import DRAIN_BACKOFF_CAP

WINDOW = 10.0
# before the back-off the 50 ms timer alone woke the agent ~200 times in 10 s, whatever happened
MAX_WAKEUPS = 100
# a window counts as at rest while other processes cause at most this many export lines (exec and
# exit events) in it; each quiet spell between them costs up to 6 timer steps back to the cap
MAX_FOREIGN_LINES = 100
ATTEMPTS = 3


def _wakeups(pid: int) -> int:
    """Voluntary + involuntary context switches of every thread of `pid`."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            status = (task / "status").read_text()
        except FileNotFoundError:
            continue
        total += sum(int(line.split(":")[1]) for line in status.splitlines() if "ctxt_switches:" in line)
    return total


def _export_lines(agent: AgentProcess) -> int:
    assert agent.export is not None
    return agent.export.read_bytes().count(b"\n") if agent.export.exists() else 0


@pytest.fixture
def quiet_agent(tmp_path: Path):  # type: ignore[no-untyped-def]
    require_bpf()
    agent = AgentProcess(tmp_path, "--server-address", "")  # gRPC's own threads are not ours to tune
    try:
        agent.wait_ready()
        time.sleep(3.0)  # start-up aftermath; the timer reaches its cap 1.55 s after the last record
        yield agent
    finally:
        assert agent.stop() == 0, agent.stderr()


def test_agent_at_rest_wakes_rarely(quiet_agent: AgentProcess) -> None:
    pid = quiet_agent.proc.pid
    seen = []
    for _ in range(ATTEMPTS):
        lines0, wakeups0 = _export_lines(quiet_agent), _wakeups(pid)
        time.sleep(WINDOW)
        wakeups = _wakeups(pid) - wakeups0
        events = _export_lines(quiet_agent) - lines0
        if events <= MAX_FOREIGN_LINES:
            assert wakeups <= MAX_WAKEUPS, f"{wakeups} wake-ups in {WINDOW:.0f} s with {events} events"
            return
        seen.append((wakeups, events))
    pytest.skip(f"machine too busy for a window at rest: (wake-ups, events) {seen}")


def test_first_event_after_a_quiet_spell_is_exported_within_the_cap(quiet_agent: AgentProcess) -> None:
    t0 = time.monotonic()
    child = subprocess.Popen(["/bin/sleep", "0"])
    child.wait()
    quiet_agent.wait_for(is_exec_of(child.pid), timeout=DRAIN_BACKOFF_CAP + 10)
    latency = time.monotonic() - t0
    # the cap, plus the export file write and this test's 50 ms polling on a loaded machine
    assert latency <= DRAIN_BACKOFF_CAP + 1.0, f"first event exported after {latency:.2f} s"
