"""The agent's memory comes back after an exec burst (issue 15).

A burst of execs fills the process cache with exited processes; one process-cache collection after
they are all gone (a short --process-cache-gc-interval here, 30 s by default) the cache drops them,
rebuilds its tables, and the agent gives the freed heap back to the kernel. RSS must then be within
10 % of what it was before the burst. The workload is bench/storm.c (fork, exec /bin/true, wait);
CI sends 20,000 execs, bench/idle.py 100,000.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from tests.conftest import require_bpf, require_cc
from tests.e2e.agentproc import AgentProcess, body, kind, rss_mb

ROOT = Path(__file__).resolve().parents[2]
EXECS = int(os.environ.get("TETRAGON_BURST_EXECS", "20000"))
GC_INTERVAL = 2.0
RSS_RETURN = 1.10
BINARY = "/bin/true"


def _exits_of(agent: AgentProcess, binary: str) -> int:
    return sum(
        1
        for ev in agent.read_events()
        if kind(ev) == "process_exit" and body(ev)["process"].get("binary") == binary
    )


def test_rss_returns_after_an_exec_burst(tmp_path: Path) -> None:
    require_bpf()
    storm = tmp_path / "storm"
    subprocess.run([require_cc(), "-O2", "-o", str(storm), str(ROOT / "bench" / "storm.c")], check=True)
    agent = AgentProcess(tmp_path / "agent", "--process-cache-gc-interval", f"{GC_INTERVAL:g}s")
    try:
        agent.wait_ready()
        time.sleep(2 * GC_INTERVAL)  # the /proc scan's aftermath and its first collections
        pid = agent.proc.pid
        start = rss_mb(pid)
        subprocess.run([str(storm), str(EXECS), BINARY], check=True, capture_output=True)
        deadline = time.monotonic() + 120
        while _exits_of(agent, BINARY) < EXECS:  # drained: every exit of the burst exported
            assert time.monotonic() < deadline, f"{_exits_of(agent, BINARY)} of {EXECS} exits exported"
            time.sleep(0.5)
        peak = rss_mb(pid)
        # the last exits are collected one interval after they were handled, at the next tick
        deadline = time.monotonic() + 10 * GC_INTERVAL
        after = rss_mb(pid)
        while after > start * RSS_RETURN and time.monotonic() < deadline:
            time.sleep(GC_INTERVAL / 2)
            after = rss_mb(pid)
        assert agent.proc.poll() is None, agent.stderr()
        assert after <= start * RSS_RETURN, f"RSS {start:.1f} MB, {peak:.1f} drained, {after:.1f} after"
    finally:
        assert agent.stop() == 0, agent.stderr()
