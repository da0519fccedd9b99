"""Runs inside the qemu guest: every one of Tetragon's example policies, unchanged, through
`tetra tracingpolicy add`, as tests/vm/examples_matrix.py says for this kernel: it loads and its
workload produces the expected event, or it is refused with a one-line error naming what is missing.

One agent for the file. `tetra` runs in this process (its main(), the same code as the command): a
new Python per call would cost seconds each under TCG. The agent serves gRPC on a unix socket, so the
client's own connections never reach the tcp_connect examples' Sigkill.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from tests.conftest import conformance_params, tetragon_examples
from tests.e2e.agentproc import AgentProcess, Event, body, is_exit_of, kind
from tests.vm.examples_matrix import ROWS, TEST_NET, TW_C, Loads, Refused, row_for
from tetragon.cli import tetra

pytestmark = [pytest.mark.vm, pytest.mark.conformance]

KERNEL = re.match(r"\d+\.\d+", os.environ.get("TETRAGON_VM_KERNEL_RELEASE", "0.0"))
SERIES = KERNEL.group(0) if KERNEL else "0.0"
EVENT_TIMEOUT = 30.0  # the emulated CPU on a busy host
# openat_write.yaml on 6.1 (which charges a hash map at its ceiling): the return stash's 256 x 4256 B
# (1.09 MB) plus the hook's other maps (0.32 MB there, 0.57 MB as 6.12 counts them); measured 1.41 MB,
# and 67.66 MB before the stash was sized from the hook's records. Since the network types every policy
# also has tg_socktrack (32768 x 16 B at its ceiling there): measured 2,461,696 B
OPENAT_WRITE_MEMORY_BOUND = 3 << 20


def example_files() -> list[str]:
    root = tetragon_examples("policies")
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.y*ml"))


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AgentProcess, Path, Path]]:
    tmp = tmp_path_factory.mktemp("matrix")
    tw = tmp / "tw"
    (tmp / "tw.c").write_text(TW_C)
    subprocess.run(["gcc", "-O1", "-o", str(tw), str(tmp / "tw.c")], check=True)
    (tmp / "f").write_text("f\n")
    subprocess.run(["/usr/bin/ip", "addr", "add", f"{TEST_NET}/32", "dev", "lo"], check=True)
    agent = AgentProcess(tmp / "agent", "--rb-size", str(64 << 20), server=f"unix://{tmp}/tetragon.sock")
    try:
        agent.wait_ready(timeout=180)
        # the agent's first answer can take long on a busy host: wait for it (tetra gives up at 30 s)
        deadline = time.monotonic() + 180
        while run_tetra(agent, "tracingpolicy", "list")[0] != 0:
            assert time.monotonic() < deadline, agent.stderr()[-4000:]
        yield agent, tmp, tw
    finally:
        assert agent.stop(timeout=60) == 0, agent.stderr()[-4000:]


def run_tetra(agent: AgentProcess, *args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = tetra.main(["--server-address", agent.server, *args])
    return rc, out.getvalue(), err.getvalue()


def policies(agent: AgentProcess) -> list[dict[str, Any]]:
    rc, out, err = run_tetra(agent, "tracingpolicy", "list", "-o", "json")
    assert rc == 0, err
    return list(orjson.loads(out).get("policies", []))


def field(ev: Event, path: str) -> Any:
    value: Any = ev
    for part in path.split("."):
        if isinstance(value, list):
            value = value[int(part)] if int(part) < len(value) else None
        elif isinstance(value, dict):
            value = value.get(part)
        else:
            return None
    return value


def fill(value: Any, subst: dict[str, str]) -> Any:
    if isinstance(value, str):
        for key, repl in subst.items():
            value = value.replace("{" + key + "}", repl)
    return value


def of_workload(row: Loads, name: str, pid: int, expected: dict[str, Any]) -> Any:
    def pred(ev: Event) -> bool:
        if kind(ev) != row.kind:
            return False
        b = body(ev)
        # process_loader events name no policy (as Tetragon's)
        if b.get("policy_name", name) != name or pid not in (field(b, "process.pid"), field(b, "parent.pid")):
            return False
        return all(field(b, k) == v for k, v in expected.items())

    return pred


def test_the_table_has_every_example_once() -> None:
    assert sorted(ROWS) == example_files()
    assert len(ROWS) == 71


@pytest.mark.parametrize("example", conformance_params(sorted(ROWS)))
def test_example(env: tuple[AgentProcess, Path, Path], example: str) -> None:
    agent, tmp, tw = env
    row = row_for(example, SERIES)
    path = tetragon_examples("policies", example)
    rc, out, err = run_tetra(agent, "tracingpolicy", "add", str(path), *getattr(row, "flags", ()))
    if isinstance(row, Refused):
        assert (rc, out) == (1, ""), (out, err)
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: failed to add tracing policy: "), err
        for fragment in row.fragments:
            assert fragment in lines[0]
        return
    assert (rc, out.strip()) == (0, f'tracing policy "{path}" added'), err
    name = yaml.safe_load(path.read_text())["metadata"]["name"]
    added = [p for p in policies(agent) if p["name"] == name]
    assert len(added) == 1 and added[0]["state"] == "TP_STATE_ENABLED", added
    try:
        if example.endswith("openat_write.yaml") and SERIES == "6.1":
            assert 0 < int(added[0]["kernelMemoryBytes"]) < OPENAT_WRITE_MEMORY_BOUND
        comm = Path("/proc/self/comm").read_text().strip()
        check_workload(agent, row, name, {"tmp": str(tmp), "tw": str(tw), "comm": comm})
    finally:
        rc, _, err = run_tetra(agent, "tracingpolicy", "delete", name)
        assert rc == 0, err


def check_workload(agent: AgentProcess, row: Loads, name: str, subst: dict[str, str]) -> None:
    for cmd in row.setup:
        subprocess.run([fill(a, subst) for a in cmd], check=True)
    argv = [fill(a, subst) for a in row.argv]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=60)
    subst = {**subst, "pid": str(proc.pid)}
    ran = f"{argv}: exit {proc.returncode}, stdout {out[-300:]!r}, stderr {err[-500:]!r}"
    if row.event is None:
        agent.wait_for(is_exit_of(proc.pid), timeout=EVENT_TIMEOUT)
        time.sleep(0.5)
        seen = [body(e) for e in agent.read_events() if of_workload(row, name, proc.pid, {})(e)]
        assert seen == [], f"{row.why}: yet {seen}"
        assert proc.returncode == row.returncode, ran
        return
    expected = {k: fill(v, subst) for k, v in row.event.items()}
    try:
        agent.wait_for(of_workload(row, name, proc.pid, expected), timeout=EVENT_TIMEOUT)
    except AssertionError:
        near = [body(e) for e in agent.read_events() if of_workload(row, name, proc.pid, {})(e)]
        raise AssertionError(
            f"{ran}\nno event with {expected}; the workload's events: {near[-5:]}\n"
            f"agent: {agent.stderr()[-1500:]}"
        ) from None
    assert proc.returncode == row.returncode, ran
