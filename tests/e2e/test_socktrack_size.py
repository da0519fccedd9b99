"""tg_socktrack (the policy's tracked socks) is created at its ceiling only for a policy that tracks
socks (TrackSock / UntrackSock, returnArgAction); any other policy gets one entry, and its kernel
memory in `tetra tracingpolicy list` no longer carries the 32768-entry hash (its bucket array alone is
hundreds of kB, and kernels before 6.4 charge the whole ceiling)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.e2e.agentproc import AgentProcess, running_agent
from tests.e2e.policyutil import policy, policy_status
from tests.e2e.test_stash_memory import agent_maps, map_name

SOCKTRACK_CEILING = 32768  # bpf/include/generic/readers_net.h
HOOK = {
    "call": "sys_connect",
    "syscall": True,
    "args": [{"index": 0, "type": "sock"}, {"index": 1, "type": "sockaddr"}],
}


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    yield from running_agent(tmp_path_factory, "socktrack-size")


def test_policy_without_sock_tracking_has_a_one_entry_socktrack(agent: AgentProcess, tmp_path: Path) -> None:
    doc = {
        "apiVersion": "cilium.io/v1alpha1",
        "kind": "TracingPolicy",
        "metadata": {"name": "no-socktrack"},
        "spec": {"kprobes": [HOOK]},
    }
    before = {m["map_id"] for m in agent_maps(agent.proc.pid)}
    with policy(agent, tmp_path, str(yaml.safe_dump(doc, sort_keys=False))) as name:
        # by map id: the agent holds a shared map through more than one fd
        new = list({m["map_id"]: m for m in agent_maps(agent.proc.pid) if m["map_id"] not in before}.values())
        tracks = [m for m in new if map_name(m["map_id"]) == "tg_socktrack"]
        assert len(tracks) == 1, new
        memory = int(policy_status(agent, name)["kernelMemoryBytes"])
        assert tracks[0]["max_entries"] == 1
        # measured on 6.18: 912 B (the ceiling's: 525,184 B), the policy 1,033,640 B (was 1,557,912)
        assert tracks[0]["memlock"] < 16 << 10
        assert 0 < memory <= sum(m["memlock"] for m in new)
