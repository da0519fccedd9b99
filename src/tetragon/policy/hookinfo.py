"""What the agent keeps about each loaded hook to turn its kernel records into Tetragon events.

The kernel record (bpf/include/events.h, struct msg_generic) names its hook by (policy_id,
hook_id); everything else an event needs that the record does not carry lives here.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ArgInfo:
    """One entry of a hook's `args` (or its `returnArg`), `auto` already resolved to a concrete type."""

    type: str  # TracingPolicy arg type: "int", "uint64", "string", "char_buf", "fd", "sock", ...
    label: str = ""
    index: int = 0  # the YAML `index` (function argument position / tracepoint field index)


@dataclass(frozen=True)
class HookInfo:
    policy_name: str
    # "process_kprobe" | "process_tracepoint" | "process_uprobe" | "process_usdt" | "process_lsm" |
    # "process_loader"
    event: str
    function_name: str = ""  # process_kprobe: as Tetragon reports it, e.g. "__x64_sys_openat"
    subsys: str = ""  # process_tracepoint
    tp_event: str = ""  # process_tracepoint
    path: str = ""  # process_uprobe, process_usdt
    symbol: str = ""  # process_uprobe
    offset: int = 0  # process_uprobe, when the hook was given by offset
    provider: str = ""  # process_usdt
    probe_name: str = ""  # process_usdt: the probe's `name`
    message: str = ""
    tags: tuple[str, ...] = ()
    args: tuple[ArgInfo, ...] = ()
    return_arg: ArgInfo | None = None
    policy_namespace: str = ""
    extra: dict[str, str] = field(default_factory=dict)
