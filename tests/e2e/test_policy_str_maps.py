"""String matchArgs with more values than fit inline, end to end: each such entry's values live in an
LPM trie of its own, reached through the hook object's gen_str_maps (ARRAY_OF_MAPS,
bpf/include/generic/strmaps.h). A real agent, policies added with `tetra`, real openat() calls of a
worker on files that exist; on this host sys_openat is served by the syscall tracepoints.

Every call a selector matches is checked as an event, field by field; every call it does not match
produces no event and is filtered in the kernel (`post` exact, `filtered` grown). The last call of each
phase is a matching one, waited for: the ring buffer is ordered, so an event of a non-matching call
would have been read before it. The policy's kernel memory is exactly the memlock of the maps it
brought, the tries included.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.agentproc import AgentProcess, running_agent
from tests.e2e.policyutil import Worker, counters, kprobe_events, policy, policy_status, wait_kprobe, worker
from tests.e2e.test_stash_memory import agent_maps, map_name

N = 40  # values per trie-held matchArgs entry (more than GEN_MAX_VALUES = 8)
OPENAT = {"call": "sys_openat", "syscall": True, "args": [{"index": 1, "type": "filename"}]}
BPF_MAP_TYPE_LPM_TRIE = 11


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    yield from running_agent(tmp_path_factory, "str-maps")


@pytest.fixture(scope="module")
def w() -> Iterator[Worker]:
    with worker() as wk:
        yield wk


def _policy(name: str, selectors: list[dict[str, Any]]) -> str:
    doc = {
        "apiVersion": "cilium.io/v1alpha1",
        "kind": "TracingPolicy",
        "metadata": {"name": name},
        "spec": {"kprobes": [{**OPENAT, "selectors": selectors}]},
    }
    return str(yaml.safe_dump(doc, sort_keys=False))


def _sel(w: Worker, *match: dict[str, Any], actions: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    sel: dict[str, Any] = {"matchPIDs": [{"operator": "In", "values": [w.pid]}], "matchArgs": list(match)}
    if actions:
        sel["matchActions"] = actions
    return sel


def _arg(op: str, values: list[str]) -> dict[str, Any]:
    return {"index": 1, "operator": op, "values": values}


def _open(w: Worker, path: Path) -> None:
    """The file exists; the worker opens it for reading and closes it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    fd = w.run(f"result = os.open({str(path)!r}, os.O_RDONLY); os.close(result)")
    assert fd >= 0


def _check(agent: AgentProcess, w: Worker, name: str, pos: list[Path], neg: list[Path]) -> None:
    """Opens the negatives then the positives; exactly the positives' events, in order, field by field."""
    before = counters(agent, name)
    for p in neg:
        _open(w, p)
    for p in pos:
        _open(w, p)
    wait_kprobe(agent, name, lambda e: e["args"] == [{"string_arg": str(pos[-1])}])
    events = kprobe_events(agent, name)
    assert [e["args"] for e in events] == [[{"string_arg": str(p)}] for p in pos]
    for e in events:
        assert e["process"]["pid"] == w.pid
        assert e["process"]["binary"] == sys.executable
        assert (e["function_name"], e["action"], e["policy_name"]) == (
            "__x64_sys_openat",
            "KPROBE_ACTION_POST",
            name,
        )
    after = counters(agent, name)
    assert after.post - before.post == len(pos)
    assert after.filtered - before.filtered >= len(neg)


def test_prefix_postfix_equal_with_40_values(agent: AgentProcess, w: Worker, tmp_path: Path) -> None:
    d = tmp_path / "m"
    before = {m["map_id"] for m in agent_maps(agent.proc.pid)}
    selectors = [
        _sel(w, _arg("Prefix", [f"{d}/pre{i:02d}/" for i in range(N)])),
        _sel(w, _arg("Postfix", [f".s{i:02d}" for i in range(N)])),
        _sel(w, _arg("Equal", [f"{d}/eq{i:02d}" for i in range(N)])),
        # a few values stay inline, next to the tries, in the same hook
        _sel(w, _arg("Prefix", [f"{d}/inline/"])),
        # matched only here: no event (NoPost); pre07 is also a value of the first selector's trie
        _sel(
            w,
            _arg("Prefix", [f"{d}/nop{i:02d}/" for i in range(N)] + [f"{d}/pre07"]),
            actions=[{"action": "NoPost"}],
        ),
    ]
    with policy(agent, tmp_path, _policy("str-maps-40", selectors)) as name:
        new = {m["map_id"]: m for m in agent_maps(agent.proc.pid) if m["map_id"] not in before}
        tries = [m for m in new.values() if map_name(m["map_id"]) == "gen_str_vals"]
        assert sorted((m["map_type"], m["key_size"], m["value_size"], m["max_entries"]) for m in tries) == [
            (BPF_MAP_TYPE_LPM_TRIE, 260, 4, N),
            (BPF_MAP_TYPE_LPM_TRIE, 260, 4, N),
            (BPF_MAP_TYPE_LPM_TRIE, 260, 4, N),
            (BPF_MAP_TYPE_LPM_TRIE, 260, 4, N + 1),
        ]
        # exactly the maps the policy brought, its four tries included
        memory = int(policy_status(agent, name)["kernelMemoryBytes"])
        assert memory == sum(m["memlock"] for m in new.values())
        pos = [
            d / "pre00/a",
            d / "pre39/b",
            d / "pre25/c/d",
            d / "pre07/x",
            d / "x.s00",
            d / "y/z.s39",
            d / "eq00",
            d / "eq39",
            d / "inline/f",
        ]
        neg = [
            d / "pre40/a",  # not in the list
            d / "pre3/a",  # shorter than every stored prefix it starts
            d / "pre07x",  # only the NoPost selector's pre07
            d / "nop00/f",
            d / "x.s40",
            d / "x.s00.not",
            d / "eq00x",  # Equal is not Prefix
            d / "eq4",
            d / "inlinex",
        ]
        _check(agent, w, name, pos, neg)


def test_negated_operators_with_40_values(agent: AgentProcess, w: Worker, tmp_path: Path) -> None:
    d = tmp_path / "n"
    selectors = [
        _sel(w, _arg("Prefix", [f"{d}/np/"]), _arg("NotPrefix", [f"{d}/np/n{i:02d}" for i in range(N)])),
        _sel(w, _arg("Prefix", [f"{d}/npost/"]), _arg("NotPostfix", [f".t{i:02d}" for i in range(N)])),
        _sel(w, _arg("Prefix", [f"{d}/neq/"]), _arg("NotEqual", [f"{d}/neq/e{i:02d}" for i in range(N)])),
    ]
    with policy(agent, tmp_path, _policy("str-maps-not", selectors)) as name:
        pos = [
            d / "np/other",
            d / "np/n40",
            d / "npost/a.txt",
            d / "npost/a.t40",
            d / "neq/e40",
            d / "neq/e0",
        ]
        neg = [d / "np/n12x", d / "np/n39/f", d / "npost/a.t12", d / "npost/b.t00", d / "neq/e12"]
        _check(agent, w, name, pos, neg)


def test_values_past_the_policy_cap_are_refused(agent: AgentProcess, tmp_path: Path) -> None:
    values = [f"/cap/v{i:05d}" for i in range(8200)]
    text = _policy(
        "str-maps-cap", [{"matchArgs": [_arg("Prefix", values)]}, {"matchArgs": [_arg("Equal", values)]}]
    )
    path = tmp_path / "cap.yaml"
    path.write_text(text)
    out = agent.tetra("tracingpolicy", "add", str(path), check=False)
    assert out.returncode != 0
    line = out.stderr.strip()
    assert "\n" not in line
    assert (
        "spec: 16400 string values in matchArgs entries of more than 8 values; this agent takes at most "
        "16384 per policy (STR_MAP_VALUES_MAX, for their kernel memory)" in line
    ), line
