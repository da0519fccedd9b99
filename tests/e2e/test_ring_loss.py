"""A ring buffer too small for the load: losses are counted exactly, reported, and nothing else breaks."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

from tests.conftest import require_bpf
from tests.e2e.agentproc import AgentProcess, free_port

EXECS = 300
MISSED = re.compile(r'^tetragon_bpf_missed_events_total\{error="EAGAIN",msg_op="\d+"\} (\S+)$', re.M)
SHUTDOWN = re.compile(r"ring buffer: received (\d+) records, lost (\d+) \(kernel sent (\d+)\)")


def _metric(text: str, name: str) -> float:
    m = re.search(rf"^{name} (\S+)$", text, re.M)
    assert m, f"{name} not in metrics"
    return float(m.group(1))


def test_losses_are_counted_and_everything_submitted_is_received(tmp_path: Path) -> None:
    require_bpf()
    port = free_port()
    agent = AgentProcess(tmp_path, "--rb-size", "4096", "--metrics-server", f"127.0.0.1:{port}")
    agent.wait_ready()
    try:
        # the agent cannot drain while stopped: ~3 records of ~300 bytes per exec overflow 4 KiB
        os.kill(agent.proc.pid, signal.SIGSTOP)
        try:
            subprocess.run(["/bin/sh", "-c", f"for i in $(seq {EXECS}); do /bin/true; done"], check=True)
        finally:
            os.kill(agent.proc.pid, signal.SIGCONT)
        time.sleep(1.5)  # drained, and the once-a-second loss check ran
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    finally:
        assert agent.stop() == 0, agent.stderr()
    m = SHUTDOWN.search(agent.stderr())
    assert m, agent.stderr()
    received, lost, sent = (int(x) for x in m.groups())
    lost_metric = _metric(metrics, "tetragon_observer_ringbuf_events_lost_total")
    assert lost > 0 and 0 < lost_metric <= lost
    assert received == sent  # every record the kernel submitted reached the agent
    assert "ring buffer full" in agent.stderr()
    assert sum(float(v) for v in MISSED.findall(metrics)) == lost_metric
    # the events that did arrive are whole, and the agent went on working
    execs = [e for e in agent.read_events() if "process_exec" in e]
    trues = [e for e in execs if e["process_exec"]["process"]["binary"] == "/bin/true"]
    assert 0 < len(trues) < EXECS
