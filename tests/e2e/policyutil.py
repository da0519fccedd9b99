"""Helpers for TracingPolicy end-to-end tests: policies added with the real `tetra`, their kernel
counters, and workload processes that make exactly the system calls a test asks for."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.e2e.agentproc import AgentProcess, Event, body, kind

# x86-64 syscall numbers used by the workloads
NR_CONNECT, NR_SCHED_GETSCHEDULER, NR_OPENAT, NR_MKDIRAT = 42, 145, 257, 258

# A process that runs Python snippets sent as JSON lines on stdin and answers one JSON line each.
# It makes no system call of its own between commands except read()/write() on its pipes.
WORKER_SRC = textwrap.dedent(
    """\
    import ctypes, json, os, socket, sys
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long

    def sc(nr, *args):
        conv = [ctypes.c_long(a) if isinstance(a, int) else a for a in args]
        r = libc.syscall(ctypes.c_long(nr), *conv)
        return r if r != -1 else -ctypes.get_errno()

    for line in sys.stdin:
        ns = {"libc": libc, "sc": sc, "os": os, "socket": socket, "ctypes": ctypes}
        try:
            exec(json.loads(line), ns)
            out = {"ok": True, "result": ns.get("result")}
        except BaseException as exc:
            out = {"ok": False, "error": repr(exc)}
        sys.stdout.write(json.dumps(out) + "\\n")
        sys.stdout.flush()
    """
)


class Worker:
    """A long-lived Python process with a known pid that runs code on request."""

    def __init__(self, *prefix: str) -> None:
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, "-c", WORKER_SRC],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.pid = self.proc.pid
        self.run("result = 1")  # started: its own start-up calls are over

    def run(self, code: str) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(textwrap.dedent(code)) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.pid} died (rc {self.proc.poll()})")
        out = json.loads(line)
        if not out["ok"]:
            raise RuntimeError(f"worker {self.pid}: {out['error']}")
        return out["result"]

    def close(self) -> int:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        rc = self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return rc


@contextmanager
def worker(*prefix: str) -> Iterator[Worker]:
    w = Worker(*prefix)
    try:
        yield w
    finally:
        if w.proc.poll() is None:
            w.close()


def one_shot(code: str, *prefix: str) -> tuple[int, Any]:
    """Start a fresh worker (pid, result of code); it exits right after."""
    with worker(*prefix) as w:
        return w.pid, w.run(code)


@dataclass
class Counters:
    post: int
    signal: int
    monitor_signal: int
    calls: int
    filtered: int
    nopost: int
    rate_limited: int


def policy_status(agent: AgentProcess, name: str) -> dict[str, Any]:
    out = agent.tetra("tracingpolicy", "list", "-o", "json").stdout
    for pol in json.loads(out).get("policies", []):
        if pol["name"] == name:
            return dict(pol)
    raise AssertionError(f"policy {name} not listed: {out}")


def counters(agent: AgentProcess, name: str) -> Counters:
    """The policy's kernel counters as `tetra tracingpolicy list -o json` shows them."""
    stats = policy_status(agent, name)["stats"]
    act = stats.get("actionCounters", {})
    hook = stats.get("hookCounters", {})
    return Counters(
        post=int(act.get("post", 0)),
        signal=int(act.get("signal", 0)),
        monitor_signal=int(act.get("monitorSignal", 0)),
        calls=int(hook.get("calls", 0)),
        filtered=int(hook.get("filtered", 0)),
        nopost=int(hook.get("nopost", 0)),
        rate_limited=int(hook.get("rateLimited", 0)),
    )


@contextmanager
def policy(agent: AgentProcess, tmp: Path, text: str, *flags: str) -> Iterator[str]:
    """Add the policy (YAML text) with `tetra tracingpolicy add FILE`; delete it afterwards."""
    text = textwrap.dedent(text)
    name = next(line.split(":", 1)[1].strip() for line in text.splitlines() if "name:" in line)
    path = tmp / f"{name}.yaml"
    path.write_text(text)
    out = agent.tetra("tracingpolicy", "add", str(path), *flags)
    assert out.stdout == f'tracing policy "{path}" added\n', out
    try:
        yield name
    finally:
        agent.tetra("tracingpolicy", "delete", name)


def kprobe_events(agent: AgentProcess, policy_name: str) -> list[Event]:
    return [
        body(ev)
        for ev in agent.read_events()
        if kind(ev) == "process_kprobe" and body(ev).get("policy_name") == policy_name
    ]


def wait_kprobe(
    agent: AgentProcess, policy_name: str, pred: Callable[[Event], bool], timeout: float = 10.0
) -> Event:
    def match(ev: Event) -> bool:
        return kind(ev) == "process_kprobe" and body(ev).get("policy_name") == policy_name and pred(body(ev))

    return body(agent.wait_for(match, timeout))


def wait_until(pred: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)
