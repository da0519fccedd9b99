"""A noisy policy cannot cost the agent a process's exec or exit (issue 13, section 4).

Process lifecycle records have their own ring, policy records another (bpf/include/ringbuf.h). A
policy matching a tight openat loop floods the small policy ring while the loop starts and reaps
children; every exec and exit is still exported with its exact pid and exit code, the process cache
keeps no live entry for a gone process, the drops are counted against the policy (equal to the
kernel's own count), and no lifecycle record is lost. The policy events that did arrive name the
process image that made them, which needs the reader's merge of the two rings (src/tetragon/bpf/ringbuf.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.e2e.agentproc import AgentProcess, Event, body, free_port, is_exit_of, kind, running_agent
from tests.e2e.policyutil import policy, policy_status, wait_until

RB_SIZE = 256 * 1024  # each ring: the policy ring holds ~1,700 of these records
CHILDREN = 20  # per round
OPENS = 400  # the loop's openat calls before each child
POLICY_NAME = "noisy-openat"

# Opens the target OPENS times, starts `sh` reading it once and exiting with a known code, waits; repeats.
FLOOD = textwrap.dedent(
    """\
    import json, os, subprocess, sys
    path, first = sys.argv[1], int(sys.argv[2])
    opens, children = 0, []
    for code in range(first, first + int(sys.argv[3])):
        for _ in range(int(sys.argv[4])):
            os.close(os.open(path, os.O_RDONLY))
            opens += 1
        child = subprocess.Popen(["/bin/sh", "-c", f"read x < {path}; exit {code}"])
        children.append([child.pid, child.wait()])
    print(json.dumps({"opens": opens, "children": children}))
    """
)


@pytest.fixture(scope="module")
def metrics_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def agent(tmp_path_factory: Any, metrics_port: int) -> Iterator[AgentProcess]:
    yield from running_agent(
        tmp_path_factory,
        "agent-lifecycle-ring",
        "--rb-size",
        str(RB_SIZE),
        "--metrics-server",
        f"127.0.0.1:{metrics_port}",
        "--process-cache-gc-interval",
        "1h",  # exited entries stay in the dump for the checks
    )


def _samples(port: int) -> dict[str, float]:
    """metric name with its labels as printed -> value."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("tetragon_"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def _missed(samples: dict[str, float], op: int) -> float:
    return samples.get(f'tetragon_bpf_missed_events_total{{error="EAGAIN",msg_op="{op}"}}', 0.0)


def _flood(target: Path, first: int, stopped: AgentProcess | None) -> tuple[int, dict[str, Any]]:
    """Runs the loop (with `stopped` stopped throughout, if given): (its pid, what it printed)."""
    if stopped is not None:
        os.kill(stopped.proc.pid, signal.SIGSTOP)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", FLOOD, str(target), str(first), str(CHILDREN), str(OPENS)],
            stdout=subprocess.PIPE,
        )
        out, _ = proc.communicate(timeout=120)
    finally:
        if stopped is not None:
            os.kill(stopped.proc.pid, signal.SIGCONT)
    assert proc.returncode == 0
    return proc.pid, json.loads(out)


def test_a_flooded_policy_ring_loses_no_exec_or_exit(
    agent: AgentProcess, tmp_path: Path, metrics_port: int
) -> None:
    noisy = tmp_path / "noisy"
    noisy.mkdir()
    target = noisy / "f"
    target.write_text("line\n")
    text = f"""\
    apiVersion: cilium.io/v1alpha1
    kind: TracingPolicy
    metadata:
      name: {POLICY_NAME}
    spec:
      tracepoints:
      - subsystem: syscalls
        event: sys_enter_openat
        args:
        - index: 6
          type: string
        selectors:
        - matchArgs:
          - index: 0
            operator: Prefix
            values: ["{noisy}/"]
    """
    with policy(agent, tmp_path, text):
        # round 1: the agent cannot drain (stopped), so the policy ring overflows for sure; round 2:
        # it drains while the loop runs, the two rings merged live
        floods = [_flood(target, 1, agent), _flood(target, 1 + CHILDREN, None)]
        expected_exits = {pid: 0 for pid, _ in floods}
        for _, out in floods:
            expected_exits.update({pid: code for pid, code in out["children"]})
        assert sorted(expected_exits.values()) == [0, 0, *range(1, 2 * CHILDREN + 1)]
        for pid in expected_exits:
            agent.wait_for(is_exit_of(pid), timeout=30)
        status = policy_status(agent, POLICY_NAME)
        hooks, actions = status["stats"]["hookCounters"], status["stats"]["actionCounters"]
        posted, lost = int(actions.get("post", 0)), int(hooks.get("lost", 0))

        def policy_events() -> list[Event]:
            return [
                body(ev)
                for ev in agent.read_events()
                if kind(ev) == "process_tracepoint" and body(ev).get("policy_name") == POLICY_NAME
            ]

        wait_until(lambda: len(policy_events()) == posted, timeout=30)
        samples = _samples(metrics_port)
        dump = agent.tetra("debug", "dump", "processcache").stdout.splitlines()
        stale = agent.tetra(
            "dump", "processcache", "--skip-zero-refcnt", "--exclude-execve-map-processes"
        ).stdout.splitlines()

    # every matching openat was either posted or counted lost against the policy, and the drops were real
    matching = sum(out["opens"] + len(out["children"]) for _, out in floods)
    assert posted + lost == matching, (posted, lost, matching)
    assert lost > 0
    # ... and they are the kernel's own count of policy records that found no room (one policy here)
    assert samples[f'tetragon_policy_events_lost_total{{policy="{POLICY_NAME}",policy_namespace=""}}'] == lost
    assert _missed(samples, 13) == lost
    # no lifecycle record was lost
    assert [_missed(samples, op) for op in (5, 7, 23)] == [0.0, 0.0, 0.0]

    events = agent.read_events()
    execs = {body(e)["process"]["pid"]: body(e) for e in events if kind(e) == "process_exec"}
    exits = {body(e)["process"]["pid"]: body(e) for e in events if kind(e) == "process_exit"}
    for pid, code in expected_exits.items():
        assert execs[pid]["process"]["binary"] == (sys.executable if code == 0 else "/bin/sh")
        exit_ = exits[pid]
        assert exit_["process"]["exec_id"] == execs[pid]["process"]["exec_id"]
        assert exit_.get("status", 0) == code and "signal" not in exit_
    # the events that arrived name the image that made the open: after its exec, before its exit
    arrived = policy_events()
    assert all("process" in e for e in arrived)  # every one found its process in the cache
    mine = [e for e in arrived if e["process"]["pid"] in expected_exits]
    assert len(mine) == posted
    for ev in mine:
        assert ev["process"]["exec_id"] == execs[ev["process"]["pid"]]["process"]["exec_id"]
        assert ev["args"] == [{"string_arg": str(target)}]
    assert {e["process"]["pid"] for e in mine} & {pid for pid, c in expected_exits.items() if c}  # some sh's
    # the cache holds the gone processes as gone: released, and no live entry the kernel does not know
    entries = {p["process"]["exec_id"]: p for p in map(orjson.loads, dump)}
    for pid in expected_exits:
        entry = entries[execs[pid]["process"]["exec_id"]]
        assert entry["refcnt"] == 0 and entry["refcnt_ops"]["process--"] == 1, entry
    live_gone = [p for p in map(orjson.loads, stale) if p["process"]["pid"] in expected_exits]
    assert live_gone == []


def test_each_ring_is_rb_size_bytes(agent: AgentProcess) -> None:
    _, *rows, _ = agent.tetra("debug", "maps", "--pid", str(agent.proc.pid)).stdout.splitlines()
    rings = {row.split()[-1]: row.split()[3] for row in rows if row.split()[1] == "ringbuf"}
    assert rings == {"tg_rb_events": str(RB_SIZE), "tg_rb_policy": str(RB_SIZE)}
