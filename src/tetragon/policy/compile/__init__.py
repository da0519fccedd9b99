"""TracingPolicy -> PolicyPlan: one kernel configuration (struct gen_hook_cfg) per hook, plus how to
attach it. A pure function of the validated policy, the kernel's features and its tracefs formats.

Hooks are numbered here, once, in spec order (kprobes, tracepoints, each uprobe target, usdts, the
loader, then lsmhooks): the number is what the hook's kernel records carry and what the sensors look
the hook up by. A hook this kernel or this agent cannot serve raises PolicyError(kind="unsupported")
naming the hook and what is missing.
"""

from __future__ import annotations

from pathlib import Path

from tetragon.bpf.features import missing_feature_message
from tetragon.policy.compile.actions import SIGNALLING
from tetragon.policy.compile.args import TRACEFS
from tetragon.policy.compile.args_kern import kernel_function_missing
from tetragon.policy.compile.hooks import PolicySite, compile_kprobe, compile_tracepoint, compile_uprobe
from tetragon.policy.compile.loader import compile_loader
from tetragon.policy.compile.lsm import compile_lsm
from tetragon.policy.compile.matchargs import parse_int, syscall_value
from tetragon.policy.compile.plan import Attach, HookPlan, PolicyPlan, unsupported
from tetragon.policy.compile.resolve import BtfSource
from tetragon.policy.compile.strmaps import refuse_too_many_values
from tetragon.policy.compile.traceable import TraceableFunctions, refuse_untraceable
from tetragon.policy.compile.usdt import compile_usdts
from tetragon.policy.errors import PolicyError
from tetragon.policy.names import LIST_PREFIX
from tetragon.policy.resolve_btf import DEFAULT_BTF
from tetragon.policy.schema import TracingPolicy, resolve_list

__all__ = ["TRACEFS", "Attach", "HookPlan", "PolicyPlan", "compile_policy", "parse_int"]


def _not_yet(where: str, feature: str, features: dict[str, bool], what: str) -> PolicyError:
    """A hook kind this agent does not serve: name the missing kernel feature first, if it is missing."""
    if not features.get(feature):
        return unsupported(f"{where}: {missing_feature_message(feature)}")
    return unsupported(f"{where}: {what} are not implemented yet")


def _refuse_unserved_sections(policy: TracingPolicy, features: dict[str, bool]) -> None:
    sp = policy.spec
    # TracingPolicyNamespaced, podSelector, containerSelector: the policy filter's (sensors.manager
    # checks that the agent has one, k8s/policyfilter.py)
    if sp.fentries:
        raise _not_yet(f"spec.fentries[0] (call {sp.fentries[0].call})", "fentry", features, "fentry hooks")


def compile_policy(
    policy: TracingPolicy,
    policy_id: int,
    mode: str,
    features: dict[str, bool],
    tracefs: Path = TRACEFS,
    btf_path: str | None = None,
) -> PolicyPlan:
    """Every hook of the policy, or the first reason it cannot be served (PolicyError). `btf_path`: the
    kernel's BTF (default /sys/kernel/btf/vmlinux), read only for arguments with `resolve`."""
    sp = policy.spec
    _refuse_unserved_sections(policy, features)
    btf, traceable = BtfSource(btf_path or DEFAULT_BTF), TraceableFunctions(tracefs)
    site = PolicySite(policy, policy_id, mode, features, tracefs, btf=btf, traceable=traceable)
    hooks: list[HookPlan] = []
    for i, kp in enumerate(sp.kprobes):
        missing = kp.ignore and kp.ignore.call_not_found
        if missing and kernel_function_missing(kp.call, features, tracefs, syscall=bool(kp.syscall)):
            site.warnings.append(
                f"spec.kprobes[{i}]: {kp.call} is not a traceable kernel function here: ignored"
            )
            continue
        hooks.append(compile_kprobe(site, len(hooks), kp, f"spec.kprobes[{i}] ({kp.call})"))
        # a kernel function this kernel cannot attach: refused now, naming it, not by libbpf's attach
        refuse_untraceable(site.traceable, site.btf, hooks[-1].attach, f"spec.kprobes[{i}] ({kp.call})")
    for i, tp in enumerate(sp.tracepoints):
        where = f"spec.tracepoints[{i}] ({tp.subsystem}/{tp.event})"
        hooks.append(compile_tracepoint(site, len(hooks), tp, where))
    for i, up in enumerate(sp.uprobes):
        targets = [(s, 0) for s in up.symbols] + [("", o) for o in up.offsets]
        if not targets:
            raise PolicyError(f"spec.uprobes[{i}]: give symbols or offsets")
        for sym, off in targets:
            where = f"spec.uprobes[{i}] ({up.path}:{sym or hex(off)})"
            hooks.append(compile_uprobe(site, len(hooks), up, where, sym, off))
    hooks.extend(compile_usdts(site, len(hooks)))
    if sp.loader:
        hooks.append(compile_loader(site, len(hooks)))
    for i, lsm in enumerate(sp.lsmhooks):
        hooks.append(compile_lsm(site, len(hooks), lsm, f"spec.lsmhooks[{i}] (hook {lsm.hook})"))
    enforcer: list[int] = []
    if sp.enforcers:
        for call in sp.enforcers[0].calls:
            names = resolve_list(policy, call) if call.startswith(LIST_PREFIX) else [call]
            enforcer.extend(syscall_value(n) for n in names)
        if not features.get("signal", True):
            raise unsupported(f"spec.enforcers: {missing_feature_message('signal')}")
    for h in hooks:
        for k in range(h.cfg.nselectors):
            for a in range(h.cfg.sel[k].nactions):
                if h.cfg.sel[k].actions[a].id in SIGNALLING and not features.get("signal", True):
                    raise unsupported(f"hook {h.hook_id}: {missing_feature_message('signal')}")
    refuse_too_many_values(m for h in hooks for m in h.str_maps)
    if not hooks:
        raise PolicyError(
            "the policy has no hook this agent can load "
            "(kprobes, tracepoints, uprobes, usdts, lsmhooks or loader)"
        )
    return PolicyPlan(hooks, mode, enforcer, site.warnings)
