"""USDT TracingPolicies (spec.usdts) on a real agent: tests/data/usdt_probes.c, built here, has probes
whose arguments are in a register, in memory and constants, one with a semaphore and one whose
argument a `Set` action rewrites. Every event is predicted exactly."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import VENV_BIN
from tests.e2e.agentproc import AgentProcess, Event, body, is_exec_of, is_exit_of, kind, running_agent
from tests.e2e.test_policy_lifecycle import added, assert_gone, bpf_ids, compile_c, listed, one_error_line
from tetragon.bpf.features import missing_feature_message, probe_features

SOURCE = Path(__file__).resolve().parents[1] / "data" / "usdt_probes.c"


def usdt_yaml(name: str, path: Path, probe: str, args: str = "", selectors: str = "") -> str:
    head = f"apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata:\n  name: {name}\nspec:\n"
    return (
        head + f'  usdts:\n  - path: "{path}"\n    provider: "tgtest"\n    name: "{probe}"\n{args}{selectors}'
    )


@pytest.fixture(scope="module")
def prog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_c(SOURCE.read_text(), tmp_path_factory.mktemp("usdt") / "usdt_probes")


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    yield from running_agent(tmp_path_factory, "agent-usdt")


def _add(agent: AgentProcess, tmp: Path, text: str) -> str:
    name = text.split("name: ", 1)[1].split("\n", 1)[0]
    f = tmp / f"{uuid.uuid4().hex[:8]}.yaml"
    f.write_text(text)
    res = agent.tetra("tracingpolicy", "add", str(f))
    assert res.stdout == f'tracing policy "{f}" added\n'
    return name


def run_pid(prog: Path, n: int) -> tuple[int, list[str]]:
    p = subprocess.Popen([str(prog), str(n)], stdout=subprocess.PIPE, text=True)
    out, _ = p.communicate(timeout=10)
    assert p.returncode == 0
    return p.pid, out.splitlines()


def usdt_events(agent: AgentProcess, prog: Path, pid: int, *policies: str) -> list[Event]:
    """The policies' process_usdt events of run `pid`, once its exit event is exported (same ring)."""
    agent.wait_for(is_exit_of(pid, str(prog)))
    return [
        ev
        for ev in agent.read_events()
        if kind(ev) == "process_usdt"
        and body(ev)["process"]["pid"] == pid
        and body(ev)["policy_name"] in policies
    ]


ARGS3 = (
    "    args:\n    - {index: 0, type: int32}\n    - {index: 1, type: int64}\n"
    "    - {index: 2, type: string}\n"
)


def test_usdt_args_in_register_memory_and_string(agent: AgentProcess, prog: Path, tmp_path: Path) -> None:
    base = bpf_ids(agent.proc.pid)
    name = _add(agent, tmp_path, usdt_yaml(f"usdt-args-{uuid.uuid4().hex[:6]}", prog, "args", ARGS3))
    mine = added(base, bpf_ids(agent.proc.pid))
    assert len(mine.links) == 1 and len(mine.progs) == 1
    status = listed(agent, name)
    assert status["sensors"] == ["generic_usdt"] and status["state"] == "TP_STATE_ENABLED"

    pid, _ = run_pid(prog, 3)
    exec_id = body(agent.wait_for(is_exec_of(pid, str(prog))))["process"]["exec_id"]
    events = usdt_events(agent, prog, pid, name)
    assert [body(e)["args"] for e in events] == [
        [{"int_arg": i - 2}, {"long_arg": str(-(10**12 + i))}, {"string_arg": f"tg-usdt-{i}"}]
        for i in range(3)
    ]
    for ev in events:
        b = body(ev)
        assert list(b) == ["process", "parent", "path", "provider", "name", "policy_name", "args", "action"]
        assert (b["path"], b["provider"], b["name"]) == (str(prog), "tgtest", "args")
        assert b["policy_name"] == name and b["action"] == "KPROBE_ACTION_POST"
        p = b["process"]
        assert (p["pid"], p["binary"], p["arguments"], p["exec_id"]) == (pid, str(prog), "3", exec_id)
        assert b["parent"]["exec_id"] == p["parent_exec_id"]

    # the compact line of `tetra getevents -o compact`, events read from stdin
    lines = [ln for ln in agent.export.read_text().splitlines() if '"process_usdt"' in ln and name in ln]  # type: ignore[union-attr]
    tetra = [str(VENV_BIN / "tetra"), "getevents", "-o", "compact"]
    res = subprocess.run(tetra, input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=30)
    node = events[0]["node_name"]
    assert res.stdout.splitlines() == [f"🕵️ usdt    {node} {prog} {prog} tgtest args"] * 3

    agent.tetra("tracingpolicy", "delete", name)
    assert bpf_ids(agent.proc.pid) == base
    assert_gone(mine)


def test_usdt_constants_and_match_args(agent: AgentProcess, prog: Path, tmp_path: Path) -> None:
    consts = _add(
        agent,
        tmp_path,
        usdt_yaml(
            f"usdt-consts-{uuid.uuid4().hex[:6]}",
            prog,
            "consts",
            "    message: constants\n    tags: [usdt]\n"
            "    args:\n    - {index: 1, type: int32}\n    - {index: 0, type: int32}\n",
        ),
    )
    sel = (
        "    selectors:\n    - matchArgs:\n      - {index: 0, operator: Equal, values: ['0']}\n"
        "      - {index: 2, operator: Prefix, values: ['tg-usdt-']}\n"
    )
    matched = _add(agent, tmp_path, usdt_yaml(f"usdt-match-{uuid.uuid4().hex[:6]}", prog, "args", ARGS3, sel))
    pid, _ = run_pid(prog, 4)
    both = usdt_events(agent, prog, pid, consts, matched)
    got = [e for e in both if body(e)["policy_name"] == consts]
    assert [body(e)["args"] for e in got] == [[{"int_arg": -7}, {"int_arg": 42}]] * 4
    b = body(got[0])
    assert list(b) == [
        "process", "parent", "path", "provider", "name", "policy_name", "message", "args", "tags", "action"
    ]  # fmt: skip
    assert (b["message"], b["tags"]) == ("constants", ["usdt"])
    assert [body(e)["args"] for e in both if body(e)["policy_name"] == matched] == [
        [{"int_arg": 0}, {"long_arg": str(-(10**12 + 2))}, {"string_arg": "tg-usdt-2"}]
    ]
    agent.tetra("tracingpolicy", "delete", consts)
    agent.tetra("tracingpolicy", "delete", matched)


def test_usdt_semaphore_is_counted_while_attached(agent: AgentProcess, prog: Path, tmp_path: Path) -> None:
    _, out = run_pid(prog, 2)
    assert out[-1] == "gated 0"  # nobody attached: the program skips the probe
    name = _add(
        agent,
        tmp_path,
        usdt_yaml(
            f"usdt-gated-{uuid.uuid4().hex[:6]}", prog, "gated", "    args:\n    - {index: 0, type: int}\n"
        ),
    )
    pid, out = run_pid(prog, 3)
    assert out[-1] == "gated 3"
    assert [body(e)["args"] for e in usdt_events(agent, prog, pid, name)] == [
        [{"int_arg": i}] for i in range(3)
    ]
    agent.tetra("tracingpolicy", "delete", name)
    _, out = run_pid(prog, 2)
    assert out[-1] == "gated 0"  # detached: the kernel took its count back


def test_usdt_set_writes_the_argument(agent: AgentProcess, prog: Path, tmp_path: Path) -> None:
    """Set writes with bpf_probe_write_user; a kernel in lockdown refuses it, and so the policy."""
    sel = "    selectors:\n    - matchActions:\n      - {action: Set, argIndex: 0, argValue: 32}\n"
    text = usdt_yaml(
        f"usdt-set-{uuid.uuid4().hex[:6]}", prog, "setme", "    args:\n    - {index: 0, type: int32}\n", sel
    )
    if not probe_features()["probe_write_user"]:
        f = tmp_path / "set.yaml"
        f.write_text(text)
        line = one_error_line(agent.tetra("tracingpolicy", "add", str(f), check=False))
        assert "spec.usdts[0] (tgtest/setme).selectors[0]: action Set: " in line
        assert missing_feature_message("probe_write_user") in line
        _, out = run_pid(prog, 1)
        assert out[0] == "setme 7"
        return
    name = _add(agent, tmp_path, text)
    pid, out = run_pid(prog, 2)
    assert out[:2] == ["setme 32", "setme 32"]
    events = usdt_events(agent, prog, pid, name)
    # the event reports the value the probe passed, before Set wrote over it
    assert [(body(e)["args"], body(e)["action"]) for e in events] == [
        ([{"int_arg": 7}], "KPROBE_ACTION_SET"),
        ([{"int_arg": 8}], "KPROBE_ACTION_SET"),
    ]
    agent.tetra("tracingpolicy", "set-mode", name, "monitor")
    pid, out = run_pid(prog, 1)
    assert out[0] == "setme 7"  # monitor mode: reported, not written
    agent.tetra("tracingpolicy", "delete", name)


def test_usdt_refusals(agent: AgentProcess, prog: Path, tmp_path: Path) -> None:
    """A probe the binary does not have, a missing binary and Set on a register argument: one line each."""
    cases = [
        (usdt_yaml("usdt-none", prog, "nosuch"), "has no USDT probe tgtest:nosuch"),
        (
            usdt_yaml("usdt-nofile", tmp_path / "absent", "args"),
            f"usdt path {tmp_path / 'absent'} does not exist",
        ),
        (
            usdt_yaml(
                "usdt-setreg",
                prog,
                "args",
                "",
                "    selectors:\n    - matchActions:\n      - {action: Set, argIndex: 0, argValue: 1}\n",
            ),
            "Set argIndex 0: the probe passes that argument in a register",
        ),
    ]
    for text, want in cases:
        f = tmp_path / f"{uuid.uuid4().hex[:8]}.yaml"
        f.write_text(text)
        line = one_error_line(agent.tetra("tracingpolicy", "add", str(f), check=False))
        assert "spec.usdts[0] (tgtest/" in line and want in line
    assert agent.proc.poll() is None
