"""The real agent inside the guest, with one policy file: started, waited for, stopped cleanly."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

from tests.e2e.agentproc import AgentProcess, Event, body, kind


@contextlib.contextmanager
def guest_agent(tmp: Path, policy: str) -> Iterator[AgentProcess]:
    path = tmp / "policy.yaml"
    path.write_text(policy)
    agent = AgentProcess(tmp, "--tracing-policy", str(path), server="")
    try:
        agent.wait_ready(timeout=180)  # the emulated CPU is ~25x slower at Python imports
        yield agent
    finally:
        assert agent.stop(timeout=60) == 0, agent.stderr()


def kprobe_of(
    pid: int, function: str, extra: Callable[[Event], bool] = lambda e: True
) -> Callable[[Event], bool]:
    """A `process_kprobe` of `function` by `pid` (and whatever `extra` asks of the event)."""

    def pred(ev: Event) -> bool:
        return (
            kind(ev) == "process_kprobe"
            and body(ev)["process"]["pid"] == pid
            and body(ev).get("function_name") == function
            and extra(ev)
        )

    return pred
