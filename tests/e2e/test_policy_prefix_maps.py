"""String matchArgs with hundreds of values, end to end (Tetragon takes any number; the values live in
the hook's LPM tries, bpf/include/generic/strmatch.h): a real agent, policies added with `tetra`, and
real openat() calls of a worker on files that exist.

Every call a selector matches is checked as an event, field by field; every call it does not match
produces no event and is filtered in the kernel (`post` exact, `filtered` grown). The last call of each
phase is a matching one, waited for: the ring buffer is ordered, so an event of a non-matching call
would have been read before it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.agentproc import AgentProcess, running_agent
from tests.e2e.policyutil import Worker, counters, kprobe_events, policy, wait_kprobe, worker

N = 500  # values per matchArgs entry
OPENAT = {"call": "sys_openat", "syscall": True, "args": [{"index": 1, "type": "filename"}]}


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    yield from running_agent(tmp_path_factory, "prefix-maps")


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


def test_prefix_postfix_equal_with_500_values(agent: AgentProcess, w: Worker, tmp_path: Path) -> None:
    d = tmp_path / "m"
    selectors = [
        # the second value list overlaps the fourth selector's: the kernel's single longest-prefix
        # lookup must still answer for this selector
        _sel(w, _arg("Prefix", [f"{d}/pre{i:03d}/" for i in range(N)] + [f"{d}/ov/"])),
        _sel(w, _arg("Postfix", [f".s{i:03d}" for i in range(N)])),
        _sel(w, _arg("Equal", [f"{d}/eq{i:03d}" for i in range(N)])),
        # matched only here: no event (NoPost)
        _sel(w, _arg("Prefix", [f"{d}/ov/deep/", f"{d}/pre007"]), actions=[{"action": "NoPost"}]),
    ]
    with policy(agent, tmp_path, _policy("prefix-maps-500", selectors)) as name:
        pos = [
            d / "pre000/a",
            d / "pre499/b",
            d / "pre250/c/d",
            d / "pre007/x",  # longest stored prefix is pre007/, which holds selector 0 too
            d / "ov/deep/f",  # longest stored prefix is ov/deep/ (selector 3), ov/ is selector 0's
            d / "x.s000",
            d / "y/z.s499",
            d / "eq000",
            d / "eq499",
        ]
        neg = [
            d / "pre500/a",  # not in the list
            d / "pre49/a",  # shorter than every stored prefix it starts
            d / "pre0071/a",  # only selector 3 (NoPost)
            d / "x.s500",
            d / "x.s000.not",
            d / "eq000x",  # Equal is not Prefix
            d / "eq50",
        ]
        _check(agent, w, name, pos, neg)


def test_negated_operators_with_500_values(agent: AgentProcess, w: Worker, tmp_path: Path) -> None:
    d = tmp_path / "n"
    selectors = [
        _sel(w, _arg("Prefix", [f"{d}/np/"]), _arg("NotPrefix", [f"{d}/np/n{i:03d}" for i in range(N)])),
        _sel(w, _arg("Prefix", [f"{d}/npost/"]), _arg("NotPostfix", [f".t{i:03d}" for i in range(N)])),
        _sel(w, _arg("Prefix", [f"{d}/neq/"]), _arg("NotEqual", [f"{d}/neq/e{i:03d}" for i in range(N)])),
    ]
    with policy(agent, tmp_path, _policy("prefix-maps-not", selectors)) as name:
        pos = [
            d / "np/other",
            d / "np/n500",
            d / "npost/a.txt",
            d / "npost/a.t500",
            d / "neq/e500",
            d / "neq/e0",
        ]
        neg = [d / "np/n123x", d / "np/n499/f", d / "npost/a.t123", d / "npost/b.t000", d / "neq/e123"]
        _check(agent, w, name, pos, neg)
