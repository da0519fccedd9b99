"""The policy manager's hook count before compiling (src/tetragon/sensors/manager.py): every section
that makes hooks counts, so --tracing-policy-max-hooks refuses a policy before anything is read or
loaded."""

from __future__ import annotations

from tetragon.policy.load import parse_policy
from tetragon.sensors.manager import _hook_count


def test_every_hook_section_counts() -> None:
    text = """apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: count
spec:
  loader: true
  kprobes: [{call: sys_openat, syscall: true}, {call: sys_close, syscall: true}]
  tracepoints: [{subsystem: syscalls, event: sys_enter_openat}]
  uprobes: [{path: /bin/true, symbols: [main, exit]}, {path: /bin/true, offsets: [16]}]
  usdts: [{path: /bin/true, provider: p, name: n}]
  lsmhooks: [{hook: file_open}, {hook: bprm_check_security}]
"""
    # 2 kprobes + 1 tracepoint + 3 uprobe targets + 1 usdt + 2 lsm hooks + the loader
    assert _hook_count(parse_policy(text)) == 10
