"""A return: true hook's stash map is as large as its records, and the policy's kernel memory says so.

The policy has the shape of Tetragon's openat_write.yaml (sys_openat, int/string/int, return: true).
Its gen_stash map (hash, no prealloc) has 48 + 4200-byte values and 256 entries
(src/tetragon/sensors/stash_size.py), read from the agent's own map fds; the policy's
`kernel_memory_bytes` stays under 2 MiB even as kernels before 6.4 count it (the ceiling: 256 x 4256 =
1.09 MB for the stash + what the other maps show here), where the old 4096 x 16432-byte map alone
showed 67.3 MB. The merged entry + return event still carries the whole path and the return value.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import yaml

from tests.e2e.agentproc import AgentProcess, running_agent
from tests.e2e.policyutil import policy, policy_status, wait_kprobe

BPF_MAP_TYPE_HASH, BPF_F_NO_PREALLOC = 1, 1
STASH_VALUE, STASH_ENTRIES = 4248, 256
MEMORY_BOUND = 2 << 20

# the shape of openat_write.yaml's hook: int, string, int with return: true
HOOK = {
    "call": "sys_openat",
    "syscall": True,
    "return": True,
    "args": [{"index": 0, "type": "int"}, {"index": 1, "type": "string"}, {"index": 2, "type": "int"}],
    "returnArg": {"index": 0, "type": "int"},
}


def policy_text(path: Path) -> str:
    selector = {"matchArgs": [{"index": 1, "operator": "Equal", "values": [str(path)]}]}
    spec = {"kprobes": [{**HOOK, "selectors": [selector]}]}
    doc = {"apiVersion": "cilium.io/v1alpha1", "kind": "TracingPolicy", "metadata": {"name": "stash-openat"}}
    return str(yaml.safe_dump({**doc, "spec": spec}, sort_keys=False))


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    yield from running_agent(tmp_path_factory, "stash-memory")


def agent_maps(pid: int) -> list[dict[str, int]]:
    """Every BPF map the agent holds, as its fdinfo describes it."""
    maps = []
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            text = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        if "map_type" in fields:
            keys = ("map_type", "key_size", "value_size", "max_entries", "map_flags", "map_id", "memlock")
            maps.append({k: int(fields[k].strip(), 0) for k in keys})
    return maps


def map_name(map_id: int) -> str:
    out = subprocess.run(["bpftool", "-j", "map", "show", "id", str(map_id)], capture_output=True, check=True)
    return str(orjson.loads(out.stdout)["name"])


def test_stash_sized_by_the_hook_records(agent: AgentProcess, tmp_path: Path) -> None:
    target = tmp_path / ("d" * 100) / "target"
    target.parent.mkdir()
    target.write_text("x")
    before = {m["map_id"] for m in agent_maps(agent.proc.pid)}
    with policy(agent, tmp_path, policy_text(target)) as name:
        new = [m for m in agent_maps(agent.proc.pid) if m["map_id"] not in before]
        stashes = [m for m in new if map_name(m["map_id"]) == "gen_stash"]
        assert len(stashes) == 1, new
        stash = stashes[0]
        assert (stash["map_type"], stash["map_flags"], stash["key_size"]) == (
            BPF_MAP_TYPE_HASH,
            BPF_F_NO_PREALLOC,
            8,
        )
        assert (stash["value_size"], stash["max_entries"]) == (STASH_VALUE, STASH_ENTRIES)
        memory = int(policy_status(agent, name)["kernelMemoryBytes"])
        assert 0 < memory < MEMORY_BOUND
        # exactly the maps the policy brought: none left out, none of the agent's counted
        unique = {m["map_id"]: m for m in new}.values()  # a map the agent holds by two fds counts once
        assert memory == sum(m["memlock"] for m in unique), sorted(
            (m["memlock"], map_name(m["map_id"])) for m in unique
        )

        fd = os.open(target, os.O_RDONLY)
        os.close(fd)
        ev = wait_kprobe(agent, name, lambda e: e["process"]["pid"] == os.getpid())
        assert ev["function_name"] == "__x64_sys_openat"
        assert [a.get("string_arg") for a in ev["args"]] == [None, str(target), None]
        assert ev["args"][0] == {"int_arg": -100}
        assert ev["return"] == {"int_arg": fd}
