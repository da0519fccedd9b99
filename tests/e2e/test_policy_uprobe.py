"""Uprobe TracingPolicies on a real agent: a small C program with exported non-inlined functions.

`tg_probe_me(int a, const char *s, long b)` is called N times from a loop with a = i-2, s = "tg-arg-i"
(built on the stack, so its page is always present when the probe reads it) and b = ±(10^12 + i);
`tg_probe_other(int x)` is called after it with x = -i. Every event is predicted exactly.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import VENV_BIN
from tests.e2e.agentproc import AgentProcess, Event, body, is_exec_of, is_exit_of, kind, running_agent
from tests.e2e.test_policy_lifecycle import (
    added,
    assert_gone,
    bpf_ids,
    compile_c,
    fd_count,
    list_json,
    listed,
    one_error_line,
    without_stats,
)

PROBE_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int __attribute__((noinline)) tg_probe_me(int a, const char *s, long b)
{
    __asm__ volatile("" ::: "memory");
    return a + (int)b + s[0];
}

int __attribute__((noinline)) tg_probe_other(int x)
{
    __asm__ volatile("" ::: "memory");
    return x * 2;
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 1;
    char buf[64];
    long sum = 0;
    if (argc > 2 && strcmp(argv[2], "wait") == 0) {  /* a process that runs before the policy exists */
        char line[16];
        if (!fgets(line, sizeof line, stdin))
            return 2;
    }
    for (int i = 0; i < n; i++) {
        snprintf(buf, sizeof buf, "tg-arg-%d", i);
        sum += tg_probe_me(i - 2, buf, (i % 2 ? -1 : 1) * (1000000000000L + i));
        sum += tg_probe_other(-i);
    }
    printf("%ld\n", sum);
    return 0;
}
"""


def expected_me_args(i: int) -> list[dict]:
    b = (-1 if i % 2 else 1) * (1000000000000 + i)
    return [{"int_arg": i - 2}, {"string_arg": f"tg-arg-{i}"}, {"long_arg": str(b)}]


def uprobe_yaml(name: str, path: Path, hook: str, args: str = "", selectors: str = "") -> str:
    return (
        "apiVersion: cilium.io/v1alpha1\n"
        "kind: TracingPolicy\n"
        "metadata:\n"
        f"  name: {name}\n"
        "spec:\n"
        "  uprobes:\n"
        f'  - path: "{path}"\n'
        f"    {hook}\n"
        f"{args}{selectors}"
    )


ME_ARGS = (
    "    args:\n    - {index: 0, type: int}\n    - {index: 1, type: string}\n    - {index: 2, type: int64}\n"
)


@pytest.fixture(scope="module")
def prog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_c(PROBE_C, tmp_path_factory.mktemp("uprobe") / "tgprobe")


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory, prog: Path) -> Iterator[AgentProcess]:
    for a in running_agent(tmp_path_factory, "agent-uprobe"):
        # what the first policy load creates once per agent is not counted against a later policy
        f = a.tmp / "warmup.yaml"
        f.write_text(uprobe_yaml("warmup", prog, "symbols: [tg_probe_other]"))
        a.tetra("tracingpolicy", "add", str(f))
        a.tetra("tracingpolicy", "delete", "warmup")
        yield a


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _add(agent: AgentProcess, tmp: Path, text: str) -> None:
    f = tmp / f"{uuid.uuid4().hex[:8]}.yaml"
    f.write_text(text)
    res = agent.tetra("tracingpolicy", "add", str(f))
    assert res.stdout == f'tracing policy "{f}" added\n'


def run_prog(prog: Path, n: int) -> int:
    p = subprocess.Popen([str(prog), str(n)], stdout=subprocess.DEVNULL)
    assert p.wait(10) == 0
    return p.pid


def uprobe_events(agent: AgentProcess, prog: Path, pid: int, policy: str) -> list[Event]:
    """The policy's process_uprobe events of run `pid`, once its exit event is exported (same ring)."""
    agent.wait_for(is_exit_of(pid, str(prog)))
    return [
        ev
        for ev in agent.read_events()
        if kind(ev) == "process_uprobe"
        and body(ev)["process"]["pid"] == pid
        and body(ev)["policy_name"] == policy
    ]


def test_uprobe_symbol_with_args(agent: AgentProcess, prog: Path, tmp_path: Path) -> None:
    name = _name("up-args")
    base = bpf_ids(agent.proc.pid)
    _add(agent, tmp_path, uprobe_yaml(name, prog, "symbols: [tg_probe_me]", ME_ARGS))
    mine = added(base, bpf_ids(agent.proc.pid))
    assert len(mine.links) == 1 and len(mine.progs) == 1
    status = listed(agent, name)
    assert status["sensors"] == ["generic_uprobe"] and status["state"] == "TP_STATE_ENABLED"
    assert int(status["kernelMemoryBytes"]) > 0

    pid = run_prog(prog, 4)
    exec_id = body(agent.wait_for(is_exec_of(pid, str(prog))))["process"]["exec_id"]
    events = uprobe_events(agent, prog, pid, name)
    assert [body(e)["args"] for e in events] == [expected_me_args(i) for i in range(4)]
    for ev in events:
        b = body(ev)
        assert b["path"] == str(prog) and b["symbol"] == "tg_probe_me"
        assert b["policy_name"] == name and b["action"] == "KPROBE_ACTION_POST"
        assert "offset" not in b and "message" not in b
        p = b["process"]
        assert (p["pid"], p["binary"], p["arguments"], p["exec_id"]) == (pid, str(prog), "4", exec_id)
        assert b["parent"]["exec_id"] == p["parent_exec_id"]

    # the compact line of `tetra getevents -o compact` (events read from stdin)
    json_lines = "\n".join(
        line
        for line in agent.export.read_text().splitlines()  # type: ignore[union-attr]
        if '"process_uprobe"' in line and f'"policy_name":"{name}"' in line
    )
    res = subprocess.run(
        [str(VENV_BIN / "tetra"), "getevents", "-o", "compact"],
        input=json_lines + "\n",
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    node = events[0]["node_name"]
    assert res.stdout.splitlines() == [f"🕵️ uprobe  {node} {prog} {prog} tg_probe_me"] * 4

    agent.tetra("tracingpolicy", "delete", name)
    assert bpf_ids(agent.proc.pid) == base
    assert_gone(mine)
    pid = run_prog(prog, 2)
    assert uprobe_events(agent, prog, pid, name) == []


def test_uprobe_two_symbols_in_call_order(agent: AgentProcess, prog: Path, tmp_path: Path) -> None:
    name = _name("up-two")
    base = bpf_ids(agent.proc.pid)
    _add(
        agent,
        tmp_path,
        uprobe_yaml(
            name, prog, "symbols: [tg_probe_me, tg_probe_other]", "    args:\n    - {index: 0, type: int}\n"
        ),
    )
    mine = added(base, bpf_ids(agent.proc.pid))
    assert len(mine.links) == 2 and len(mine.progs) == 2
    pid = run_prog(prog, 3)
    got = [(body(e)["symbol"], body(e)["args"]) for e in uprobe_events(agent, prog, pid, name)]
    want = []
    for i in range(3):
        want += [("tg_probe_me", [{"int_arg": i - 2}]), ("tg_probe_other", [{"int_arg": -i}])]
    assert got == want
    agent.tetra("tracingpolicy", "delete", name)
    assert bpf_ids(agent.proc.pid) == base
    assert_gone(mine)


def symbol_file_offset(binary: Path, symbol: str) -> int:
    """File offset of a function: its address from `nm`, mapped through the LOAD program headers."""
    nm = subprocess.run(["nm", "--defined-only", str(binary)], capture_output=True, text=True, check=True)
    addr = next(int(line.split()[0], 16) for line in nm.stdout.splitlines() if line.split()[-1] == symbol)
    hdrs = subprocess.run(["readelf", "-lW", str(binary)], capture_output=True, text=True, check=True)
    for line in hdrs.stdout.splitlines():
        fields = line.split()
        if fields[:1] == ["LOAD"]:
            offset, vaddr, filesz = int(fields[1], 16), int(fields[2], 16), int(fields[4], 16)
            if vaddr <= addr < vaddr + filesz:
                return addr - vaddr + offset
    raise AssertionError(f"{symbol} is in no LOAD segment of {binary}")


def test_uprobe_offsets(agent: AgentProcess, prog: Path, tmp_path: Path) -> None:
    name = _name("up-off")
    off = symbol_file_offset(prog, "tg_probe_me")
    _add(agent, tmp_path, uprobe_yaml(name, prog, f"offsets: [{off:#x}]", ME_ARGS))
    pid = run_prog(prog, 2)
    events = [body(e) for e in uprobe_events(agent, prog, pid, name)]
    assert [e["args"] for e in events] == [expected_me_args(0), expected_me_args(1)]
    assert all(e["offset"] == str(off) and "symbol" not in e and e["path"] == str(prog) for e in events)
    agent.tetra("tracingpolicy", "delete", name)


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("{index: 0, operator: Equal, values: ['1']}", [3]),
        ("{index: 0, operator: Equal, values: ['-2', '2']}", [0, 4]),
        ("{index: 0, operator: NotEqual, values: ['-2', '-1', '0']}", [3, 4]),
        ("{index: 2, operator: Equal, values: ['-1000000000001']}", [1]),
        ("{index: 1, operator: Equal, values: ['tg-arg-2']}", [2]),
        ("{index: 1, operator: Prefix, values: ['tg-arg-4']}", [4]),
    ],
    ids=["int-equal", "int-equal-two", "int-notequal", "int64-equal", "string-equal", "string-prefix"],
)
def test_uprobe_match_args(
    agent: AgentProcess, prog: Path, tmp_path: Path, selector: str, expected: list[int]
) -> None:
    name = _name("up-sel")
    selectors = f"    selectors:\n    - matchArgs:\n      - {selector}\n"
    _add(agent, tmp_path, uprobe_yaml(name, prog, "symbols: [tg_probe_me]", ME_ARGS, selectors))
    pid = run_prog(prog, 5)
    assert [body(e)["args"] for e in uprobe_events(agent, prog, pid, name)] == [
        expected_me_args(i) for i in expected
    ]
    agent.tetra("tracingpolicy", "delete", name)


def test_uprobe_on_a_process_already_running(agent: AgentProcess, prog: Path, tmp_path: Path) -> None:
    """A uprobe added while the binary runs fires in that process too (the kernel patches live mappings)."""
    name = _name("up-live")
    proc = subprocess.Popen(
        [str(prog), "2", "wait"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
    )
    try:
        agent.wait_for(is_exec_of(proc.pid, str(prog)))
        _add(agent, tmp_path, uprobe_yaml(name, prog, "symbols: [tg_probe_me]", ME_ARGS))
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.close()
        assert proc.wait(10) == 0
    finally:
        proc.kill()
        proc.wait()
    events = uprobe_events(agent, prog, proc.pid, name)
    assert [body(e)["args"] for e in events] == [expected_me_args(0), expected_me_args(1)]
    assert all(body(e)["process"]["arguments"] == "2 wait" for e in events)
    agent.tetra("tracingpolicy", "delete", name)


def test_uprobe_errors_are_clear_and_change_nothing(agent: AgentProcess, prog: Path, tmp_path: Path) -> None:
    pid = agent.proc.pid
    before = without_stats(list_json(agent))
    ids, fds = bpf_ids(pid), fd_count(pid)

    def add(text: str) -> str:
        f = tmp_path / f"{uuid.uuid4().hex[:8]}.yaml"
        f.write_text(text)
        return one_error_line(agent.tetra("tracingpolicy", "add", str(f), check=False))

    prefix = "Error: failed to add tracing policy: "
    line = add(uprobe_yaml("up-nosym", prog, "symbols: [tg_no_such_symbol]", ME_ARGS))
    assert line.startswith(
        f"{prefix}FAILED_PRECONDITION: policy up-nosym: cannot load into the kernel: "
        f"cannot attach gen_uprobe to uprobe {prog}:tg_no_such_symbol "
    )
    assert f"failed to find symbol 'tg_no_such_symbol' in '{prog}'" in line
    # the first symbol attaches, the second fails: the first is rolled back
    line = add(uprobe_yaml("up-half", prog, "symbols: [tg_probe_me, tg_no_such_symbol]", ME_ARGS))
    assert line.startswith(f"{prefix}FAILED_PRECONDITION: policy up-half: cannot load into the kernel: ")
    assert "tg_no_such_symbol" in line
    missing = tmp_path / "no-such-binary"
    line = add(uprobe_yaml("up-nofile", missing, "symbols: [tg_probe_me]", ME_ARGS))
    assert line == (
        f"{prefix}INVALID_ARGUMENT: spec.uprobes[0] ({missing}:tg_probe_me): "
        f"uprobe path {missing} does not exist"
    )
    line = add(
        uprobe_yaml("up-noarg", prog, "symbols: [tg_probe_me]", "    args:\n    - {index: 6, type: int}\n")
    )
    assert line == (
        f"{prefix}INVALID_ARGUMENT: spec.uprobes[0] ({prog}:tg_probe_me).args[0]: "
        "uprobe arguments are the first 6 (index 0-5)"
    )
    line = add(uprobe_yaml("up-nothing", prog, "symbols: []"))
    assert line == f"{prefix}INVALID_ARGUMENT: spec.uprobes[0]: give symbols or offsets"

    assert without_stats(list_json(agent)) == before
    assert bpf_ids(pid) == ids
    assert fd_count(pid) == fds
    assert agent.proc.poll() is None
    # and uprobes still work afterwards
    name = _name("up-after")
    _add(agent, tmp_path, uprobe_yaml(name, prog, "symbols: [tg_probe_other]"))
    run = run_prog(prog, 1)
    assert [body(e)["symbol"] for e in uprobe_events(agent, prog, run, name)] == ["tg_probe_other"]
    agent.tetra("tracingpolicy", "delete", name)
    assert bpf_ids(pid) == ids
    assert fd_count(pid) == fds
