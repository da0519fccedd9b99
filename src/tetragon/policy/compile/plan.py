"""What the compiler hands to the sensors: per hook, the kernel configuration and how to attach it."""

from __future__ import annotations

from dataclasses import dataclass, field

from tetragon.abi import generic_cfg_h as G
from tetragon.policy.compile.strmaps import StrMap
from tetragon.policy.errors import PolicyError
from tetragon.policy.hookinfo import HookInfo
from tetragon.policy.schema import ActionSelector


@dataclass
class Attach:
    kind: (
        str  # "tracepoint" | "raw_tp" | "uprobe" | "kprobe" | "kprobe_multi" | "fmod_ret" | "lsm" | "loader"
    )
    # gen_tp | gen_tp_ret | gen_rawtp | gen_uprobe | gen_enforcer | gen_kprobe | gen_kretprobe
    # | gen_kprobe_multi | gen_kretprobe_multi | gen_fmodret | gen_lsm | gen_lsm_ima_file | gen_lsm_ima_bprm
    # | gen_loader
    program: str
    # (category, event) | (name,) | (path, symbol, offset[, ref_ctr_offset]) | (function, cookie)
    # | (function, ...) | (function,) for fmod_ret and loader | (hook,) for lsm (bpf_lsm_<hook>)
    target: tuple[str, ...]


@dataclass
class HookPlan:
    """One hook, numbered by the compiler: `hook_id` is what its kernel records carry."""

    hook_id: int
    info: HookInfo
    cfg: G.HookCfg
    attach: list[Attach]
    inmap: list[tuple[int, int]] = field(default_factory=list)  # (map_id, value)
    sensor: str = "generic_tracepoint"
    syscall_list: bool = False
    # selector index -> its GetUrl / DnsLookup actions, run by the agent when a record names that selector
    user_actions: dict[int, list[ActionSelector]] = field(default_factory=dict)
    # more read-only data of the hook's object by variable name (USDT: usdt_args)
    rodata: dict[str, bytes] = field(default_factory=dict)
    # string matchArgs entries with more values than fit inline, by gen_str_maps slot (strmaps.py)
    str_maps: list[StrMap] = field(default_factory=list)


@dataclass
class PolicyPlan:
    hooks: list[HookPlan]
    mode: str
    enforcer_syscalls: list[int] = field(default_factory=list)  # syscall64 values served by gen_enforcer
    warnings: list[str] = field(default_factory=list)


def unsupported(message: str) -> PolicyError:
    """A valid policy this kernel or this agent cannot serve."""
    return PolicyError(message, kind="unsupported")
