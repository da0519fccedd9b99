"""One selector -> struct gen_selector: its argument matches, process filters and actions.

Filters inside a selector are ANDed, selectors of a hook ORed; the kernel evaluates all of it.
`derive_masks` precomputes what the entry program reads before deciding the selectors.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tetragon.abi import generic_cfg_h as G
from tetragon.abi.events_h import GEN_ARGS_MAX
from tetragon.policy.compile.actions import ENFORCING, fill_actions
from tetragon.policy.compile.args_net import sock_action_args
from tetragon.policy.compile.matchargs import MatchCtx, fill_match, parse_int
from tetragon.policy.compile.plan import unsupported
from tetragon.policy.errors import PolicyError
from tetragon.policy.names import CAPABILITIES, CAPABILITY_TYPES, NAMESPACES
from tetragon.policy.schema import ArgSelector, Selector

NS_SLOTS = {name: i for i, name in enumerate(NAMESPACES)}  # events.h NS_* order
CAP_SETS = {name: i for i, name in enumerate(CAPABILITY_TYPES)}  # gen_match_caps.type


def fill_selector(
    ctx: MatchCtx,
    out: G.Selector,
    sel: Selector,
    arg_pos: Callable[[ArgSelector], int],
    arg_types: list[str],
    ret_type: str | None,
    mode: str,
    warn: list[str],
) -> None:
    where = ctx.where
    if sel.match_parent_binaries:
        raise unsupported(
            f"{where}: matchParentBinaries needs the parents map (--parents-map-enabled), not implemented"
        )
    if sel.match_workloads:
        raise unsupported(
            f"{where}: matchWorkloads needs Kubernetes pod information, not available in this agent"
        )
    if sel.match_data:
        raise unsupported(f"{where}: matchData (data arguments) is not supported")
    if sel.macros:
        raise unsupported(f"{where}: selector macros are not supported")
    _at_most(where, len(sel.match_args), G.GEN_MAX_MATCHARGS, "matchArgs per selector")
    for k, ma in enumerate(sel.match_args):
        pos = arg_pos(ma)
        fill_match(ctx, out.match[k], pos, arg_types[pos], ma)
    out.nmatch = len(sel.match_args)
    if sel.match_return_args:
        if ret_type is None:
            raise PolicyError(f"{where}: matchReturnArgs needs `return: true` and a returnArg")
        if len(sel.match_return_args) > 1:
            raise PolicyError(f"{where}: at most one matchReturnArgs entry per selector")
        m = out.match[G.GEN_MAX_MATCHARGS]
        fill_match(ctx, m, 0, ret_type, sel.match_return_args[0])
        m.arg = G.GEN_MATCH_RET
        if m.cmp not in (G.CMP_INT, G.CMP_UINT):
            raise PolicyError(f"{where}: matchReturnArgs compares integer return values only")
        out.has_ret = 1
    _at_most(where, len(sel.match_pids), G.GEN_MAX_PIDS, "matchPIDs entries per selector")
    for k, mp in enumerate(sel.match_pids):
        p = out.pids[k]
        p.op = G.OP_BY_NAME[mp.operator]
        p.flags = (G.PF_FOLLOW if mp.follow_forks else 0) | (G.PF_NSPID if mp.is_namespace_pid else 0)
        _at_most(where, len(mp.values), G.GEN_MAX_PIDVALS, "matchPIDs values")
        p.nvals = len(mp.values)
        for j, v in enumerate(mp.values):
            p.vals[j] = v
    out.npids = len(sel.match_pids)
    if sel.match_binaries:
        mb = sel.match_binaries[0]
        b = out.bin
        b.op = G.OP_BY_NAME[mb.operator]
        b.flags = G.PF_FOLLOW if mb.follow_children else 0
        _at_most(where, len(mb.values), G.GEN_MAX_BINVALS, "matchBinaries values")
        b.nvals = len(mb.values)
        for j, bv in enumerate(mb.values):
            raw = bv.encode()
            if len(raw) >= G.GEN_BIN_LEN:
                raise PolicyError(f"{where}: matchBinaries value longer than {G.GEN_BIN_LEN - 1} bytes")
            b.len[j] = len(raw)
            b.str[j].value = raw
        out.has_bin = 1
    _at_most(where, len(sel.match_namespaces), G.GEN_MAX_NS, "matchNamespaces entries")
    for k, mn in enumerate(sel.match_namespaces):
        n = out.ns[k]
        n.ns = NS_SLOTS[mn.namespace]
        n.op = G.OP_BY_NAME[mn.operator]
        _at_most(where, len(mn.values), G.GEN_MAX_NSVALS, "matchNamespaces values")
        n.nvals = len(mn.values)
        for j, nv in enumerate(mn.values):
            n.vals[j] = host_namespace(mn.namespace) if nv == "host_ns" else parse_int(nv)
    out.nns = len(sel.match_namespaces)
    _at_most(where, len(sel.match_capabilities), G.GEN_MAX_CAPS, "matchCapabilities entries")
    for k, mc in enumerate(sel.match_capabilities):
        c = out.caps[k]
        c.type = CAP_SETS[mc.type]
        c.op = G.OP_BY_NAME[mc.operator]
        c.isns = 1 if mc.is_namespace_capability else 0
        c.mask = _cap_mask(mc.values)
    out.ncaps = len(sel.match_capabilities)
    if sel.match_namespace_changes:
        if len(sel.match_namespace_changes) > 1:
            raise PolicyError(f"{where}: at most one matchNamespaceChanges entry")
        nc = sel.match_namespace_changes[0]
        out.ns_changes_op = G.OP_BY_NAME[nc.operator]
        out.ns_changes = sum(1 << NS_SLOTS[v] for v in nc.values)
    if sel.match_capability_changes:
        if len(sel.match_capability_changes) > 1:
            raise PolicyError(f"{where}: at most one matchCapabilityChanges entry")
        cc = sel.match_capability_changes[0]
        out.caps_changes_op = G.OP_BY_NAME[cc.operator]
        out.caps_changes = _cap_mask(cc.values)
    out.nactions = fill_actions(ctx, out.actions, sel.match_actions, mode, warn)
    if sel.match_return_actions and ret_type is None:
        raise PolicyError(f"{where}: matchReturnActions needs `return: true`")
    for a in sel.match_return_actions:
        if a.action in ENFORCING and a.action != "Override":
            raise unsupported(
                f"{where}: {a.action} as a return action would act after the call completed; use matchActions"
            )
    out.nret_actions = fill_actions(ctx, out.ret_actions, sel.match_return_actions, mode, warn)


def _at_most(where: str, count: int, limit: int, what: str) -> None:
    if count > limit:
        raise PolicyError(f"{where}: at most {limit} {what}")


def _cap_mask(values: list[str]) -> int:
    mask = 0
    for v in values:
        name = v.upper() if v.upper().startswith("CAP_") else "CAP_" + v.upper()
        mask |= 1 << CAPABILITIES[name]
    return mask


def host_namespace(name: str) -> int:
    """Inode of the host's namespace of this type (pid 1's, or the agent's where /proc/1 is hidden)."""
    proc_names = {
        "Uts": "uts",
        "Ipc": "ipc",
        "Mnt": "mnt",
        "Pid": "pid",
        "PidForChildren": "pid_for_children",
        "Net": "net",
        "Time": "time",
        "TimeForChildren": "time_for_children",
        "Cgroup": "cgroup",
        "User": "user",
    }
    for pid in ("1", "self"):
        try:
            link = Path(f"/proc/{pid}/ns/{proc_names[name]}").readlink()
            return int(str(link).split("[")[1].rstrip("]"))
        except (OSError, IndexError, ValueError):
            continue
    raise PolicyError(f"cannot read the host's {name} namespace")


def derive_masks(cfg: G.HookCfg) -> G.HookCfg:
    """Fill the fields the kernel derives nothing from at run time: `proc_sel` (selectors with a
    process filter) and `sel_args` (arguments read before the selectors are decided)."""
    proc_sel = 0
    sel_args = 0
    for s in range(cfg.nselectors):
        sel = cfg.sel[s]
        if sel.npids or sel.has_bin or sel.nns or sel.ncaps or sel.ns_changes_op or sel.caps_changes_op:
            proc_sel |= 1 << s
        for k in range(sel.nmatch):
            arg = sel.match[k].arg
            if arg < GEN_ARGS_MAX:
                sel_args |= 1 << arg
        sel_args |= sock_action_args(sel)
        if any(sel.actions[k].rate_limit_ns for k in range(sel.nactions)):
            sel_args = (1 << GEN_ARGS_MAX) - 1  # rateLimit keys on every argument's start
    cfg.proc_sel = proc_sel
    cfg.sel_args = sel_args & ((1 << cfg.nargs) - 1)
    return cfg
