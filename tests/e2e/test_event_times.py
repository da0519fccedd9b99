"""Event `time` against `process.start_time` as Tetragon sets them (issue 14), with a real agent.

Tetragon's top-level `time` is the ktime of the event's own record: for a process_exec its exec
program sets msg_common.ktime = process.ktime, so `time` and `start_time` are the same kernel time (its
two strings differ only by the jitter of converting that ktime twice); for a process_exit it is the
exit's ktime; for a policy event, the hook's. So a process that sleeps and then execs again gets a new
start_time (its new image's exec), and events later in its life carry their own times.

Bounds: the workload's sleeps are lower bounds on the gaps between kernel times (a sleep never ends
early); the upper bounds (10 s) only say the gap is that sleep and not, say, the agent's start. Wall
times computed here from a ktime use this process's REALTIME - BOOTTIME offset; the agent samples the
same offset every 10 s, so the two agree to NTP slew (<= 500 ppm, a few µs): 1 ms tolerance.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.agentproc import AgentProcess, body, is_exec_of, is_exit_of, kind, running_agent

POLICY = """\
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: times-getcwd
spec:
  kprobes:
  - call: sys_getcwd
    syscall: true
"""
MS = 1_000_000
S = 1_000_000_000


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    policy = tmp_path_factory.mktemp("times-policy") / "getcwd.yaml"
    policy.write_text(POLICY)
    yield from running_agent(tmp_path_factory, "agent-times", "--tracing-policy", str(policy))


def wall_ns(text: str) -> int:
    """A protojson timestamp (0, 3, 6 or 9 fraction digits) as Unix nanoseconds."""
    head, _, frac = text.removesuffix("Z").partition(".")
    secs = int(dt.datetime.fromisoformat(head).replace(tzinfo=dt.UTC).timestamp())
    return secs * S + int((frac or "0").ljust(9, "0"))


def ktime_of(exec_id: str) -> int:
    return int(base64.b64decode(exec_id).decode().split(":")[1])


def boot_offset() -> int:
    return time.clock_gettime_ns(time.CLOCK_REALTIME) - time.clock_gettime_ns(time.CLOCK_BOOTTIME)


def test_times_through_a_process_life(agent: AgentProcess) -> None:
    # sh forks and execs; 0.3 s later the same pid execs python (no fork), which calls getcwd 0.2 s
    # after its exec and exits 0.2 s after that
    code = "import os, time; time.sleep(0.2); os.getcwd(); time.sleep(0.2)"
    proc = subprocess.Popen(["/bin/sh", "-c", f"sleep 0.3; exec /usr/bin/python3 -c '{code}'"])
    assert proc.wait(timeout=30) == 0
    pid = proc.pid
    sh = agent.wait_for(is_exec_of(pid, "/bin/sh"))
    py = agent.wait_for(lambda e: is_exec_of(pid)(e) and body(e)["process"]["binary"] != "/bin/sh")
    exit_event = agent.wait_for(is_exit_of(pid))
    hook = agent.wait_for(
        lambda e: (
            kind(e) == "process_kprobe"
            and body(e)["policy_name"] == "times-getcwd"
            and body(e)["process"]["pid"] == pid
        )
    )
    offset = boot_offset()
    for exec_event in (sh, py):
        process = body(exec_event)["process"]
        # one kernel time: the exec's, which is also the ktime in the exec_id
        assert exec_event["time"] == process["start_time"]
        assert abs(wall_ns(exec_event["time"]) - (ktime_of(process["exec_id"]) + offset)) < MS
    sh_start, py_start = (wall_ns(body(e)["process"]["start_time"]) for e in (sh, py))
    assert 300 * MS <= py_start - sh_start < 10 * S  # the exec after the sleep: a new start_time
    assert body(py)["parent"]["exec_id"] == body(sh)["process"]["exec_id"]  # same pid, previous image
    # the policy event: its hook's time, 0.2 s into python's life; its process starts at python's exec
    assert body(hook)["process"]["start_time"] == body(py)["process"]["start_time"]
    assert 200 * MS <= wall_ns(hook["time"]) - py_start < 10 * S
    # the exit: its own ktime, in the body as at the top level, 0.2 s after the getcwd
    assert exit_event["time"] == body(exit_event)["time"]
    assert body(exit_event)["process"]["start_time"] == body(py)["process"]["start_time"]
    assert 200 * MS <= wall_ns(exit_event["time"]) - wall_ns(hook["time"]) < 10 * S


def test_procfs_event_time_is_its_ktime_read_as_monotonic(agent: AgentProcess) -> None:
    """The /proc scan's event for this test process: start_time is the boot-based starttime read as
    boot time; `time` reads the same number as monotonic, as Tetragon does, so it is later by the
    time the machine was suspended (boot - monotonic, 0 on a machine never suspended)."""
    me = agent.wait_for(lambda e: is_exec_of(os.getpid())(e) and "procFS" in body(e)["process"]["flags"])
    process = body(me)["process"]
    starttime_ticks = int(Path(f"/proc/{os.getpid()}/stat").read_text().rsplit(")", 1)[1].split()[19])
    ktime = starttime_ticks * (S // os.sysconf("SC_CLK_TCK"))
    assert ktime_of(process["exec_id"]) == ktime
    assert abs(wall_ns(process["start_time"]) - (ktime + boot_offset())) < MS
    asleep = time.clock_gettime_ns(time.CLOCK_BOOTTIME) - time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    assert abs(wall_ns(me["time"]) - wall_ns(process["start_time"]) - asleep) < MS
