"""The mechanism for each hook kind, chosen here and nowhere else, and the hook's configuration.

Syscall kprobes are served by the syscall tracepoints on every kernel (`syscalls/sys_enter_X`,
`sys_exit_X` for `return: true`) or, for syscall lists, by `raw_syscalls/sys_enter` with an
in-kernel set of syscall numbers. Kprobes on kernel functions (one, or a list) are served by one
kprobe.multi link where the kernel has fprobe, else by a kprobe per function (kretprobes for
`return: true`), and refused where it has no kprobes. A kprobe with the Override action on a
`security_*` function is served by an fmod_ret program on it (it returns argError instead of calling
the function); Override on any other hook is refused in enforce mode (bpf_override_return is not
used). Tracepoints read their record (or, `raw: true`, the raw_tp slots); uprobes and kprobes read
registers. Arguments, selectors and actions are encoded the same way for every mechanism.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tetragon.abi import events_h as E
from tetragon.abi import generic_cfg_h as G
from tetragon.bpf.features import missing_feature_message
from tetragon.policy import syscalls as SC
from tetragon.policy.compile.actions import user_actions
from tetragon.policy.compile.args import (
    INT_SIZES,
    SIGNED_TYPES,
    TRACEFS,
    ArgSrc,
    fill_arg,
    ftrace_functions,
    record_src,
    resolve_type,
    syscall_src,
    tracepoint_format,
)
from tetragon.policy.compile.args_net import check_sock_actions, return_sock
from tetragon.policy.compile.matchargs import MatchCtx, syscall_value
from tetragon.policy.compile.plan import Attach, HookPlan, unsupported
from tetragon.policy.compile.resolve import BtfSource, HookResolve, ResolveRoot
from tetragon.policy.compile.selectors import derive_masks, fill_selector
from tetragon.policy.compile.stacks import check_stack_traces
from tetragon.policy.compile.traceable import TraceableFunctions
from tetragon.policy.errors import PolicyError
from tetragon.policy.hookinfo import ArgInfo, HookInfo
from tetragon.policy.names import LIST_PREFIX
from tetragon.policy.schema import (
    ArgSelector,
    KProbeArg,
    KProbeSpec,
    LsmHookSpec,
    TracepointSpec,
    TracingPolicy,
    UProbeSpec,
    UsdtSpec,
    find_list,
    option,
)

AnyHook = KProbeSpec | TracepointSpec | UProbeSpec | UsdtSpec | LsmHookSpec
UPROBE_ARGS = 6  # uprobe and kprobe arguments: the first six registers of the C calling convention


@dataclass
class PolicySite:
    """What every hook of one policy is compiled against."""

    policy: TracingPolicy
    policy_id: int
    mode: str
    features: dict[str, bool]
    tracefs: Path
    warnings: list[str] = field(default_factory=list)
    btf: BtfSource = field(default_factory=BtfSource)  # the kernel's BTF, read only for `resolve`
    traceable: TraceableFunctions = field(default_factory=lambda: TraceableFunctions(TRACEFS))


@dataclass
class _Mechanism:
    """How one hook is served: where its arguments are, what its records are, what to attach."""

    src: ArgSrc
    op: int  # MSG_OP_GENERIC_* of its records
    arg_pos: Callable[[ArgSelector], int]  # matchArgs entry -> position in the hook's args
    attach: list[Attach]
    sensor: str
    syscall: int = G.SYSCALL_NONE
    return_arg: KProbeArg | None = None
    syscall_ids: list[int] = field(default_factory=list)  # SYSCALL_LIST: gen_inmap entries of map id 0
    resolve_root: ResolveRoot = field(default_factory=ResolveRoot)  # where `resolve` paths start


def _overrides(hook: AnyHook) -> bool:
    return any(
        a.action == "Override" for s in hook.selectors for a in s.match_actions + s.match_return_actions
    )


def override_refusal(where: str, why: str) -> PolicyError:
    return unsupported(
        f"{where}: action Override in enforce mode is done with fmod_ret on a security_* kernel function "
        f"(a kprobe with syscall: false); {why}; this agent does not fail calls through bpf_override_return "
        "(error-injectable functions, syscalls); load the policy in monitor mode to report what it "
        "would override"
    )


def _plan(
    site: PolicySite, hook_id: int, hook: AnyHook, where: str, mech: _Mechanism, **info: Any
) -> HookPlan:
    if (
        site.mode == "enforce"
        and _overrides(hook)
        and not any(a.kind in ("fmod_ret", "lsm") for a in mech.attach)
    ):
        why = (
            f"{hook.call} is a syscall, served by its tracepoint"
            if isinstance(hook, KProbeSpec)
            else "this hook is no kprobe"
        )
        raise override_refusal(where, why)
    check_stack_traces(hook, info.get("event", ""), where)
    cfg = G.HookCfg()
    cfg.policy_id, cfg.hook_id, cfg.mech, cfg.op = site.policy_id, hook_id, mech.src.mech, mech.op
    if len(hook.args) > E.GEN_ARGS_MAX:
        raise PolicyError(f"{where}: at most {E.GEN_ARGS_MAX} arguments")
    types: list[str] = []
    infos: list[ArgInfo] = []
    resolved = HookResolve(site.btf, mech.resolve_root)
    for i, arg in enumerate(hook.args):
        t = resolve_type(arg, mech.src.field(arg.index), f"{where}.args[{i}]")
        t = resolved.arg_type(i, arg, t, f"{where}.args[{i}]")
        fill_arg(cfg.args[i], arg, t, mech.src, f"{where}.args[{i}]")
        resolved.place(i, cfg.args[i])
        types.append(t)
        infos.append(ArgInfo(type=t, label=arg.label, index=arg.index))
    cfg.nargs = len(hook.args)
    ret_info = None
    ret_type = None
    if mech.return_arg is not None:
        ret = mech.return_arg
        ret_type = ret.type if ret.type != "auto" else "int64"
        sock_ret = return_sock(ret_type, getattr(hook, "return_arg_action", None), mech.src.mech, where)
        if ret_type not in INT_SIZES and ret_type != "fd" and sock_ret is None:
            raise unsupported(f"{where}.returnArg: only integer return values are supported (got {ret_type})")
        cfg.ret_reader, cfg.ret_action = sock_ret or (0, 0)
        ret_info = ArgInfo(type=ret_type, label=ret.label, index=ret.index)
        cfg.has_return = 1
        cfg.ret_signed = 1 if ret_type in SIGNED_TYPES else 0
    if len(hook.selectors) > G.GEN_MAX_SELECTORS:
        raise PolicyError(f"{where}: at most {G.GEN_MAX_SELECTORS} selectors")
    ctx = MatchCtx(site.policy, where, [])

    def arg_pos(ma: ArgSelector) -> int:
        p = mech.arg_pos(ma)
        if types[p] == "nop":
            raise PolicyError(f"{ctx.where}: matchArgs on args[{p}], whose type nop is never read")
        return p

    for k, sel in enumerate(hook.selectors):
        ctx.where = f"{where}.selectors[{k}]"
        fill_selector(ctx, cfg.sel[k], sel, arg_pos, types, ret_type, site.mode, site.warnings)
    cfg.nselectors = len(hook.selectors)
    check_sock_actions(cfg, where)
    cfg.syscall = mech.syscall
    hook_info = HookInfo(
        policy_name=site.policy.name,
        message=hook.message,
        tags=tuple(hook.tags),
        args=tuple(infos),
        return_arg=ret_info,
        policy_namespace=site.policy.namespace,
        **info,
    )
    return HookPlan(
        hook_id,
        hook_info,
        derive_masks(cfg),
        mech.attach,
        [(0, v) for v in mech.syscall_ids] + ctx.inmap,
        mech.sensor,
        syscall_list=mech.syscall == G.SYSCALL_LIST,
        user_actions=user_actions(hook.selectors),
        rodata=resolved.rodata(),
        str_maps=ctx.str_maps,
    )


def _function_arg_pos(
    hook: KProbeSpec | UProbeSpec | UsdtSpec | LsmHookSpec, where: str
) -> Callable[[ArgSelector], int]:
    """matchArgs `index` names a function argument: its position among the hook's args."""

    def pos(ma: ArgSelector) -> int:
        if ma.args:
            if ma.args[0] >= len(hook.args):
                raise PolicyError(f"{where}: matchArgs args[{ma.args[0]}] is not one of the hook's args")
            return ma.args[0]
        for i, a in enumerate(hook.args):
            if a.index == ma.index:
                return i
        raise PolicyError(f"{where}: matchArgs index {ma.index} is not one of the hook's args")

    return pos


def _position_arg_pos(hook: TracepointSpec, where: str) -> Callable[[ArgSelector], int]:
    """matchArgs `index` is already a position in the hook's args (tracepoints)."""

    def pos(ma: ArgSelector) -> int:
        p = ma.args[0] if ma.args else (ma.index or 0)
        if p >= len(hook.args):
            raise PolicyError(f"{where}: matchArgs index {p} is not a position in the hook's args")
        return p

    return pos


def compile_kprobe(site: PolicySite, hook_id: int, hook: KProbeSpec, where: str) -> HookPlan:
    features, policy = site.features, site.policy
    if hook.data:
        raise unsupported(f"{where}: `data` arguments are not supported")
    is_list = hook.call.startswith(LIST_PREFIX)
    if is_list:
        lst = find_list(policy, hook.call)
        ftrace = lst.type == "generated_ftrace"
        syscall = lst.type in ("syscalls", "generated_syscalls") or (hook.syscall and not ftrace)
        if not syscall:
            if not (features.get("kprobe_multi") or features.get("kprobe")):
                what = "generated_ftrace list" if ftrace else "list"
                missing = missing_feature_message("kprobe")
                raise unsupported(f"{where}: call {hook.call} ({what} of kernel functions): {missing}")
            names = ftrace_functions(lst.pattern or "", site.tracefs, where) if ftrace else lst.entries
            return compile_kernel_function(site, hook_id, hook, where, names)
        names = lst.entries
    else:
        names = [hook.call]
        syscall = hook.syscall and SC.is_syscall(hook.call)
    if not syscall:
        return compile_kernel_function(site, hook_id, hook, where, names)
    if not features.get("tracepoint", True):
        raise unsupported(f"{where}: {missing_feature_message('tracepoint')}")
    if hook.return_ and hook.return_arg is None:
        raise PolicyError(f"{where}: return: true needs a returnArg")
    return_arg = hook.return_arg if hook.return_ else None
    info: dict[str, Any]
    if is_list:
        category, enter, exit_ = "raw_syscalls", "sys_enter", "sys_exit"
        src, kind, ids = syscall_src(None), G.SYSCALL_LIST, [syscall_value(n) for n in names]
        info = {"extra": {"syscall_list": hook.call}}
    else:
        sc = SC.parse_syscall(hook.call)
        if sc.abi != "x64":
            raise unsupported(
                f"{where}: {hook.call}: 32-bit syscalls have no per-syscall tracepoints; use a syscall list "
                f"(served by raw_syscalls)"
            )
        if not SC.has_tracepoint(sc.name, str(site.tracefs)):
            raise unsupported(
                f"{where}: {hook.call} has no syscalls/sys_enter_{sc.name} tracepoint on this kernel, and "
                f"{missing_feature_message('kprobe')}"
            )
        category, enter, exit_ = "syscalls", f"sys_enter_{sc.name}", f"sys_exit_{sc.name}"
        fields = tracepoint_format(category, enter, site.tracefs)
        src, kind, ids = syscall_src(fields), G.SYSCALL_ONE, []
        info = {"function_name": SC.function_name(sc)}
    att = [Attach("tracepoint", "gen_tp", (category, enter))]
    if return_arg is not None:
        att.append(Attach("tracepoint", "gen_tp_ret", (category, exit_)))
    pos = _function_arg_pos(hook, where)
    mech = _Mechanism(src, E.MSG_OP_GENERIC_KPROBE, pos, att, "generic_kprobe", kind, return_arg, ids)
    mech.resolve_root = ResolveRoot(why_not=f"{hook.call} is a syscall, served by its tracepoint")
    return _plan(site, hook_id, hook, where, mech, event="process_kprobe", **info)


def _kernel_function_attach(features: dict[str, bool], names: list[str], has_return: bool) -> list[Attach]:
    """The cheapest mechanism this kernel has for kernel functions `names`, returns first (an entry
    stashed before its return program is attached would never complete); [] when it has none."""
    if features.get("kprobe_multi"):
        entry = [Attach("kprobe_multi", "gen_kprobe_multi", tuple(names))]
        ret = [Attach("kprobe_multi", "gen_kretprobe_multi", tuple(names))]
    elif features.get("kprobe"):
        # the attach cookie is the function's position in the list, as kprobe.multi's are
        entry = [Attach("kprobe", "gen_kprobe", (n, str(k))) for k, n in enumerate(names)]
        ret = [Attach("kprobe", "gen_kretprobe", (n, str(k))) for k, n in enumerate(names)]
    else:
        return []
    return (ret if has_return else []) + entry


def _override_by_fmodret(site: PolicySite, hook: KProbeSpec, where: str, names: list[str]) -> list[Attach]:
    """The fmod_ret program serving a kprobe with Override, in either mode (so that switching to enforce
    needs no reload); [] when there is no Override, or in monitor mode when fmod_ret cannot serve it."""
    if not _overrides(hook):
        return []
    why = ""
    if hook.call.startswith(LIST_PREFIX) or len(names) != 1:
        why = f"{hook.call} is a list of functions (one fmod_ret program serves one function)"
    elif not names[0].startswith("security_"):
        why = f"{names[0]} is not a security_* function"
    elif hook.return_:
        why = "Override acts before the call, so it cannot be combined with return: true"
    elif not site.features.get("fmodret"):
        why = missing_feature_message("fmodret")
    if not why:
        return [Attach("fmod_ret", "gen_fmodret", (names[0],))]
    if site.mode == "enforce":
        raise override_refusal(where, why)
    return []


def compile_kernel_function(
    site: PolicySite, hook_id: int, hook: KProbeSpec, where: str, names: list[str]
) -> HookPlan:
    """Kprobes on kernel functions `names` (`hook.call`, or the functions of its list): one kprobe.multi
    link where the kernel has fprobe, else a kprobe per function (fentry, for kernels with trampolines
    but no kprobes, is not implemented yet). A list's records name their function by position."""
    if hook.return_ and hook.return_arg is None:
        raise PolicyError(f"{where}: return: true needs a returnArg")
    return_arg = hook.return_arg if hook.return_ else None
    if not names:
        raise PolicyError(f"{where}: the list {hook.call} names no kernel function")
    features = site.features
    if (option(site.policy, "disable-kprobe-multi") or "").lower() in ("1", "t", "true"):
        features = {**features, "kprobe_multi": False}  # Tetragon's option: a kprobe per function
    fmodret = _override_by_fmodret(site, hook, where, names)
    att = fmodret or _kernel_function_attach(features, names, return_arg is not None)
    if not att:
        extra = (
            " (serving kernel functions with fentry instead is not implemented yet)"
            if site.features.get("fentry")
            else ""
        )
        raise unsupported(
            f"{where}: kprobe on kernel function {hook.call}: {missing_feature_message('kprobe')}{extra}"
        )
    src = ArgSrc(G.MECH_KPROBE, False, lambda i: (i, 8, False))
    for i, arg in enumerate(hook.args):
        if arg.index >= UPROBE_ARGS:
            raise unsupported(f"{where}.args[{i}]: kernel function arguments are the first 6 (index 0-5)")
    pos = _function_arg_pos(hook, where)
    mech = _Mechanism(src, E.MSG_OP_GENERIC_KPROBE, pos, att, "generic_kprobe", return_arg=return_arg)
    if not hook.call.startswith(LIST_PREFIX):
        mech.resolve_root = ResolveRoot(hook.call)
        plan = _plan(site, hook_id, hook, where, mech, event="process_kprobe", function_name=hook.call)
        if fmodret:
            plan.cfg.mech = G.MECH_RAW_TP  # fmod_ret's ctx is u64 args[], like a raw tracepoint's
        return plan
    mech.resolve_root = ResolveRoot(why_not=f"{hook.call} is a list of functions, each with its own types")
    info = {"kernel_functions": ",".join(names)}
    plan = _plan(site, hook_id, hook, where, mech, event="process_kprobe", function_name=names[0], extra=info)
    plan.cfg.func_cookie = 1
    return plan


def compile_tracepoint(site: PolicySite, hook_id: int, hook: TracepointSpec, where: str) -> HookPlan:
    pos = _position_arg_pos(hook, where)
    op, sensor = E.MSG_OP_GENERIC_TRACEPOINT, "generic_tracepoint"
    if hook.raw:
        if not site.features.get("raw_tp", True):
            raise unsupported(f"{where}: {missing_feature_message('raw_tp')}")
        att = [Attach("raw_tp", "gen_rawtp", (hook.event,))]
        mech = _Mechanism(ArgSrc(G.MECH_RAW_TP, False, lambda i: (i, 8, False)), op, pos, att, sensor)
        # the raw tracepoint's arguments are __bpf_trace_<event>'s after its first (the data pointer)
        mech.resolve_root = ResolveRoot(f"__bpf_trace_{hook.event}", 1)
    else:
        if not site.features.get("tracepoint", True):
            raise unsupported(f"{where}: {missing_feature_message('tracepoint')}")
        fields = tracepoint_format(hook.subsystem, hook.event, site.tracefs)
        src = record_src(fields, hook.subsystem, hook.event, where)
        att = [Attach("tracepoint", "gen_tp", (hook.subsystem, hook.event))]
        syscall = G.SYSCALL_ONE if src.user_memory else G.SYSCALL_NONE
        mech = _Mechanism(src, op, pos, att, sensor, syscall)
        mech.resolve_root = ResolveRoot(why_not="a tracepoint's record has no BTF type (raw: true has)")
    info = {"event": "process_tracepoint", "subsys": hook.subsystem, "tp_event": hook.event}
    return _plan(site, hook_id, hook, where, mech, **info)


def compile_uprobe(
    site: PolicySite, hook_id: int, hook: UProbeSpec, where: str, symbol: str, offset: int
) -> HookPlan:
    if not site.features.get("uprobe", True):
        raise unsupported(f"{where}: {missing_feature_message('uprobe')}")
    if (
        hook.data
        or hook.return_
        or hook.addrs
        or hook.ref_ctr_offsets
        or hook.binary_digests
        or hook.btf_path
    ):
        raise unsupported(
            f"{where}: uprobe data/return/addrs/refCtrOffsets/binaryDigests/btfPath are not supported"
        )
    if not Path(hook.path).exists():
        raise PolicyError(f"{where}: uprobe path {hook.path} does not exist")
    for i, arg in enumerate(hook.args):
        if arg.index >= UPROBE_ARGS:
            raise PolicyError(f"{where}.args[{i}]: uprobe arguments are the first 6 (index 0-5)")
    src = ArgSrc(G.MECH_UPROBE, True, lambda i: (i, 8, False))
    att = [Attach("uprobe", "gen_uprobe", (hook.path, symbol, str(offset)))]
    mech = _Mechanism(src, E.MSG_OP_GENERIC_UPROBE, _function_arg_pos(hook, where), att, "generic_uprobe")
    info = {
        "event": "process_uprobe",
        "path": hook.path,
        "symbol": symbol,
        "offset": offset if not symbol else 0,
    }
    return _plan(site, hook_id, hook, where, mech, **info)
