"""PolicyManager without the kernel: hooks are numbered once, by the compiler, and everything the
manager keys by hook (event descriptions, GetUrl / DnsLookup actions) uses that number."""

from __future__ import annotations

import sys

import pytest

from tetragon.sensors.manager import PolicyManager

FEATURES = {"tracepoint": True, "raw_tp": True, "uprobe": True, "signal": True, "kprobe": False}

# hook kinds whose compilation reads no tracefs format: syscall list, raw tracepoint, uprobes
POLICY = f"""
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: numbering
spec:
  lists:
  - {{name: dups, type: syscalls, values: [sys_dup]}}
  uprobes:
  - path: {sys.executable}
    symbols: [main, Py_Main]
    selectors:
    - matchActions: [{{action: DnsLookup, argFqdn: uprobe.example}}]
  tracepoints:
  - subsystem: sched
    event: sched_process_exec
    raw: true
    selectors:
    - matchActions: [{{action: Post}}]
    - matchActions: [{{action: GetUrl, argUrl: "http://tracepoint.example/"}}]
  kprobes:
  - call: "list:dups"
    selectors:
    - matchActions: [{{action: GetUrl, argUrl: "http://kprobe.example/"}}, {{action: Post}}]
"""


def test_user_actions_follow_the_compiled_hook_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(PolicyManager, "_load", lambda self, entry: None)  # no BPF in unit tests
    manager = PolicyManager(lambda: {}, FEATURES)
    status = manager.add(POLICY)
    plan = manager._policies[("numbering", "")].plan
    # the compiler's order: kprobes, tracepoints, uprobes (one hook per symbol), whatever the YAML order
    assert [(h.hook_id, h.cfg.hook_id, h.info.event) for h in plan.hooks] == [
        (0, 0, "process_kprobe"),
        (1, 1, "process_tracepoint"),
        (2, 2, "process_uprobe"),
        (3, 3, "process_uprobe"),
    ]
    want = {
        (0, 0): [("GetUrl", "http://kprobe.example/")],
        (1, 1): [("GetUrl", "http://tracepoint.example/")],
        (2, 0): [("DnsLookup", "uprobe.example")],
        (3, 0): [("DnsLookup", "uprobe.example")],
    }
    for hook in plan.hooks:
        described = manager.hook(status.id, hook.cfg.hook_id)
        assert described is not None
        assert (described.event, described.tp_event, described.symbol) == (
            hook.info.event,
            hook.info.tp_event,
            hook.info.symbol,
        )
        for selector in range(hook.cfg.nselectors):
            got = manager.actions(status.id, hook.cfg.hook_id, selector)
            assert [(a.action, a.arg_url or a.arg_fqdn) for a in got] == want.get(
                (hook.hook_id, selector), []
            )
    assert manager.actions(status.id, 4, 0) == []
