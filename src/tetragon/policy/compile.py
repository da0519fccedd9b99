"""TracingPolicy → one kernel configuration (struct gen_hook_cfg) per hook, plus how to attach it.

The attach mechanism is chosen here and nowhere else; arguments, selectors and actions are encoded
the same way for every mechanism. On a kernel without kprobes, syscall kprobes are served by the
syscall tracepoints (`syscalls/sys_enter_X`, `sys_exit_X` for `return: true`) or, for syscall
lists, by `raw_syscalls/sys_enter` with an in-kernel set of syscall numbers. A hook this kernel or
this agent cannot serve raises PolicyError(kind="unsupported") naming the hook and what is missing.
"""

from __future__ import annotations

import ctypes
import ipaddress
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tetragon.bpf.features import missing_feature_message
from tetragon.policy import spec as S
from tetragon.policy import syscalls as SC
from tetragon.policy.errors import PolicyError
from tetragon.policy.hookinfo import ArgInfo, HookInfo
from tetragon.sensors import gencfg as G

log = logging.getLogger(__name__)

TRACEFS = Path("/sys/kernel/tracing")
OP_KPROBE, OP_TRACEPOINT, OP_UPROBE = 13, 14, 15
BUF_DEFAULT = 4096
BUF_MAX_DATA = 32768
STASH_RECORD_MAX = 16384
SYSCALL_ARG_OFF = 16  # syscalls/sys_enter_X and raw_syscalls/sys_enter: 8-byte arguments from here

INT_SIZES = {
    "int": (4, True),
    "int32": (4, True),
    "sint32": (4, True),
    "uint32": (4, False),
    "int16": (2, True),
    "sint16": (2, True),
    "uint16": (2, False),
    "int8": (1, True),
    "sint8": (1, True),
    "uint8": (1, False),
    "int64": (8, True),
    "sint64": (8, True),
    "long": (8, True),
    "uint64": (8, False),
    "ulong": (8, False),
    "size_t": (8, False),
    "capability": (4, True),
    "syscall64": (8, False),
    "kernel_cap_t": (8, False),
    "cap_inheritable": (8, False),
    "cap_permitted": (8, False),
    "cap_effective": (8, False),
    "bpf_cmd": (4, True),
}
SIGNED_TYPES = {t for t, (_, signed) in INT_SIZES.items() if signed}
STRING_TYPES = {
    "string",
    "filename",
    "data_loc",
    "fd",
    "file",
    "path",
    "linux_binprm",
    "char_buf",
    "char_iovec",
}
DIRFD_FIELDS = ("dfd", "olddfd", "newdfd", "dirfd", "fd")

FAMILIES = {"AF_UNSPEC": 0, "AF_UNIX": 1, "AF_LOCAL": 1, "AF_INET": 2, "AF_INET6": 10}
PROTOCOLS = {"IPPROTO_IP": 0, "IPPROTO_ICMP": 1, "IPPROTO_TCP": 6, "IPPROTO_UDP": 17, "IPPROTO_ICMPV6": 58}
PROTOCOLS.update({"IPPROTO_RAW": 255, "IPPROTO_SCTP": 132, "IPPROTO_MPTCP": 262})
TCP_STATES = {
    name: i
    for i, name in enumerate(
        [
            "",
            "TCP_ESTABLISHED",
            "TCP_SYN_SENT",
            "TCP_SYN_RECV",
            "TCP_FIN_WAIT1",
            "TCP_FIN_WAIT2",
            "TCP_TIME_WAIT",
            "TCP_CLOSE",
            "TCP_CLOSE_WAIT",
            "TCP_LAST_ACK",
            "TCP_LISTEN",
            "TCP_CLOSING",
            "TCP_NEW_SYN_RECV",
        ]
    )
    if name
}
NS_SLOTS = {name: i for i, name in enumerate(S.NAMESPACES)}
NET_OPS = {
    "SAddr",
    "DAddr",
    "NotSAddr",
    "NotDAddr",
    "SPort",
    "DPort",
    "NotSPort",
    "NotDPort",
    "SPortPriv",
    "NotSPortPriv",
    "DPortPriv",
    "NotDPortPriv",
    "Family",
    "Protocol",
    "State",
}
STR_OPS = {"Equal", "NotEqual", "In", "NotIn", "Prefix", "NotPrefix", "Postfix", "NotPostfix"}
INT_OPS = {
    "Equal",
    "NotEqual",
    "In",
    "NotIn",
    "GT",
    "LT",
    "Mask",
    "InMap",
    "NotInMap",
    "InRange",
    "NotInRange",
}
ENFORCING = {"Sigkill", "Signal", "NotifyEnforcer", "Override"}


@dataclass
class Field:
    name: str
    ctype: str
    offset: int
    size: int
    signed: bool


@dataclass
class Attach:
    kind: str  # "tracepoint" | "raw_tp" | "uprobe"
    program: str  # gen_tp | gen_tp_ret | gen_rawtp | gen_uprobe | gen_enforcer
    target: tuple[str, ...]  # (category, event) | (name,) | (path, symbol, offset)


@dataclass
class HookPlan:
    hook_id: int
    info: HookInfo
    cfg: G.HookCfg
    attach: list[Attach]
    inmap: list[tuple[int, int]] = field(default_factory=list)  # (map_id, value)
    sensor: str = "generic_tracepoint"
    syscall_list: bool = False
    user_actions: list[S.ActionSelector] = field(default_factory=list)  # GetUrl / DnsLookup per selector


@dataclass
class PolicyPlan:
    hooks: list[HookPlan]
    mode: str
    enforcer_syscalls: list[int] = field(default_factory=list)  # syscall64 values served by gen_enforcer
    warnings: list[str] = field(default_factory=list)


def unsupported(message: str) -> PolicyError:
    return PolicyError(message, kind="unsupported")


# --- tracefs ---------------------------------------------------------------------------------
_FIELD = re.compile(r"field:(?P<decl>[^;]+);\s*offset:(\d+);\s*size:(\d+);\s*signed:(\d+);")


def tracepoint_format(subsys: str, event: str, tracefs: Path = TRACEFS) -> list[Field]:
    """Fields of a tracepoint in format order, common_* fields included (Tetragon's arg index)."""
    path = tracefs / "events" / subsys / event / "format"
    try:
        text = path.read_text()
    except OSError as exc:
        raise unsupported(
            f"tracepoint {subsys}/{event} does not exist on this kernel ({path}: {exc.strerror})"
        ) from None
    fields = []
    for m in _FIELD.finditer(text):
        decl = m.group("decl").strip()
        name = decl.split()[-1]
        ctype = decl[: -len(name)].strip()
        if "[" in name:
            ctype += name[name.index("[") :]
            name = name[: name.index("[")]
        fields.append(Field(name, ctype, int(m.group(2)), int(m.group(3)), m.group(4) == "1"))
    return fields


# --- values ----------------------------------------------------------------------------------
def parse_int(text: str) -> int:
    t = text.strip()
    neg = t.startswith("-")
    body = t[1:] if neg else t
    try:
        if body.lower().startswith("0x"):
            v = int(body, 16)
        elif len(body) > 1 and body.startswith("0") and body.isdigit():
            v = int(body, 8)
        else:
            v = int(body, 10)
    except ValueError:
        raise PolicyError(f"'{text}' is not an integer") from None
    return -v if neg else v


def _u64(v: int) -> int:
    return v & 0xFFFFFFFFFFFFFFFF


def _named(text: str, table: dict[str, int], what: str) -> int:
    if text in table:
        return table[text]
    try:
        return parse_int(text)
    except PolicyError:
        raise PolicyError(f"unknown {what} '{text}'") from None


@dataclass
class _Ctx:
    policy: S.TracingPolicy
    where: str
    inmap: list[tuple[int, int]]
    next_map_id: int = 1


def _syscall_value(name: str) -> int:
    return SC.syscall64_value(SC.parse_syscall(name))


def _list_values(ctx: _Ctx, ref: str, arg_type: str) -> list[int]:
    lst = S.find_list(ctx.policy, ref)
    if lst.type == "generated_ftrace":
        raise unsupported(f"{ctx.where}: list '{lst.name}' (generated_ftrace) needs kprobes")
    names = S.resolve_list(ctx.policy, ref)
    return [_syscall_value(n) for n in names]


def _fill_int_match(ctx: _Ctx, m: G.Match, op: str, values: list[str], arg_type: str) -> None:
    m.op = G.OP[op]
    if op in ("InMap", "NotInMap"):
        m.map_id = ctx.next_map_id
        ctx.next_map_id += 1
        count = 0
        for v in values:
            if v.startswith(S.LIST_PREFIX):
                nums = _list_values(ctx, v, arg_type)
            elif ":" in v:
                lo, hi = (parse_int(x) for x in v.split(":", 1))
                if hi - lo > 65536:
                    raise PolicyError(f"{ctx.where}: range {v} is too large for InMap (at most 65536 values)")
                nums = list(range(lo, hi + 1))
            else:
                nums = [parse_int(v)]
            for n in nums:
                ctx.inmap.append((m.map_id, _u64(n)))
                count += 1
        if count > 4000:
            raise PolicyError(f"{ctx.where}: at most 4000 InMap values per hook")
        return
    if len(values) > G.GEN_MAX_VALUES:
        raise PolicyError(f"{ctx.where}: at most {G.GEN_MAX_VALUES} values for {op}")
    if op in ("GT", "LT") and len(values) != 1:
        raise PolicyError(f"{ctx.where}: {op} takes exactly one value")
    m.nvals = len(values)
    for j, v in enumerate(values):
        if op in ("InRange", "NotInRange"):
            if ":" not in v:
                raise PolicyError(f"{ctx.where}: {op} value '{v}' is not min:max")
            lo, hi = (parse_int(x) for x in v.split(":", 1))
            m.lo[j], m.hi[j] = _u64(lo), _u64(hi)
        elif arg_type == "syscall64" and not v.lstrip("-").isdigit() and not v.startswith("0x"):
            m.lo[j] = _syscall_value(v)
        else:
            m.lo[j] = _u64(parse_int(v))


def _fill_str_match(ctx: _Ctx, m: G.Match, op: str, values: list[str]) -> None:
    m.op = G.OP[op]
    if len(values) > G.GEN_MAX_VALUES:
        raise PolicyError(f"{ctx.where}: at most {G.GEN_MAX_VALUES} values for {op} on a string argument")
    m.nvals = len(values)
    limit = S.MAX_POSTFIX_LEN if "Postfix" in op else S.MAX_PREFIX_LEN
    for j, v in enumerate(values):
        raw = v.encode()
        if len(raw) > limit:
            raise PolicyError(f"{ctx.where}: {op} value longer than {limit} bytes")
        m.len[j] = len(raw)
        m.str[j].value = raw


def _fill_net_match(ctx: _Ctx, m: G.Match, op: str, values: list[str]) -> None:
    m.op = G.OP[op]
    if op in ("SPortPriv", "NotSPortPriv", "DPortPriv", "NotDPortPriv"):
        return
    if len(values) > G.GEN_MAX_VALUES:
        raise PolicyError(f"{ctx.where}: at most {G.GEN_MAX_VALUES} values for {op}")
    m.nvals = len(values)
    for j, v in enumerate(values):
        if op in ("SAddr", "DAddr", "NotSAddr", "NotDAddr"):
            try:
                net = ipaddress.ip_network(v, strict=False)
            except ValueError:
                raise PolicyError(f"{ctx.where}: '{v}' is not an IP address or CIDR") from None
            m.len[j] = net.prefixlen
            raw = net.network_address.packed
            if net.version == 4:
                m.fam[j] = 4
                m.lo[j] = int.from_bytes(raw, "big")
            else:
                m.fam[j] = 6
                m.lo[j] = int.from_bytes(raw[:8], "big")
                m.hi[j] = int.from_bytes(raw[8:], "big")
        elif op in ("SPort", "DPort", "NotSPort", "NotDPort"):
            lo, _, hi = v.partition(":")
            m.lo[j] = parse_int(lo)
            m.hi[j] = parse_int(hi) if hi else m.lo[j]
        elif op == "Family":
            m.lo[j] = _named(v, FAMILIES, "address family")
        elif op == "Protocol":
            m.lo[j] = _named(v, PROTOCOLS, "protocol")
        else:
            m.lo[j] = _named(v, TCP_STATES, "TCP state")


def cmp_kind(arg_type: str) -> int:
    if arg_type == "sock":
        return G.CMP_SOCK
    if arg_type == "sockaddr":
        return G.CMP_SOCKADDR
    if arg_type in STRING_TYPES:
        return G.CMP_STR
    return G.CMP_INT if arg_type in SIGNED_TYPES or arg_type == "auto" else G.CMP_UINT


def _fill_match(ctx: _Ctx, m: G.Match, arg_pos: int, arg_type: str, sel: S.ArgSelector) -> None:
    op = sel.operator
    m.arg = arg_pos
    m.cmp = cmp_kind(arg_type)
    if m.cmp == G.CMP_STR:
        if op not in STR_OPS:
            raise PolicyError(f"{ctx.where}: operator {op} does not apply to a {arg_type} argument")
        _fill_str_match(ctx, m, op, sel.values)
    elif m.cmp in (G.CMP_SOCK, G.CMP_SOCKADDR):
        if op not in NET_OPS:
            raise PolicyError(f"{ctx.where}: operator {op} does not apply to a {arg_type} argument")
        _fill_net_match(ctx, m, op, sel.values)
    else:
        if op not in INT_OPS:
            raise PolicyError(
                f"{ctx.where}: operator {op} does not apply to an integer ({arg_type}) argument"
            )
        _fill_int_match(ctx, m, op, sel.values, arg_type)


# --- selectors -------------------------------------------------------------------------------
def _fill_actions(
    ctx: _Ctx, out: ctypes.Array[G.Action], acts: list[S.ActionSelector], mode: str, plan_warn: list[str]
) -> int:
    if len(acts) > G.GEN_MAX_ACTIONS:
        raise PolicyError(f"{ctx.where}: at most {G.GEN_MAX_ACTIONS} actions per selector")
    for k, a in enumerate(acts):
        name = a.action
        if name in ("TrackSock", "UntrackSock"):
            raise unsupported(
                f"{ctx.where}: action {name} needs socket tracking through kprobes, which this agent does "
                f"not have"
            )
        if a.kernel_stack_trace or a.user_stack_trace:
            raise unsupported(
                f"{ctx.where}: stack traces (kernelStackTrace/userStackTrace) are not supported"
            )
        if a.ima_hash:
            raise unsupported(f"{ctx.where}: imaHash needs BPF LSM hooks")
        if name in ("FollowFD", "UnfollowFD", "CopyFD"):
            plan_warn.append(
                f"{ctx.where}: action {name} is deprecated since Tetragon 1.4 and does nothing (fd "
                f"arguments resolve on their own)"
            )
        if name == "Override" and mode == "enforce":
            raise unsupported(
                f"{ctx.where}: action Override needs bpf_override_return (kprobes with "
                "CONFIG_BPF_KPROBE_OVERRIDE) or fmod_ret/BPF LSM, and this kernel has none of them; "
                "load the policy in monitor mode to report what it would override"
            )
        if name == "NotifyEnforcer":
            if not ctx.policy.spec.enforcers:
                raise PolicyError(f"{ctx.where}: NotifyEnforcer needs a spec.enforcers section")
            if a.arg_error and a.arg_sig != 9 and mode == "enforce":
                raise unsupported(
                    f"{ctx.where}: NotifyEnforcer with argError needs bpf_override_return or fmod_ret to "
                    f"fail "
                    "the call, which this kernel lacks (argSig: 9 works: a killed process never sees the "
                    "error)"
                )
        if name == "Signal" and not a.arg_sig:
            raise PolicyError(f"{ctx.where}: action Signal needs argSig")
        out[k].id = S.ACTION_IDS[name]
        out[k].arg_error = a.arg_error
        out[k].arg_sig = 9 if name == "Sigkill" else a.arg_sig
        out[k].rate_limit_ns = S.rate_limit_seconds(a.rate_limit) * 1_000_000_000
        out[k].scope = {"thread": G.RL_THREAD, "process": G.RL_PROCESS, "global": G.RL_GLOBAL}.get(
            a.rate_limit_scope or "thread", 0
        )
    return len(acts)


def _fill_selector(
    ctx: _Ctx,
    out: G.Selector,
    sel: S.Selector,
    arg_pos: Callable[[S.ArgSelector], int],
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
    if len(sel.match_args) > G.GEN_MAX_MATCHARGS:
        raise PolicyError(f"{where}: at most {G.GEN_MAX_MATCHARGS} matchArgs per selector")
    for k, ma in enumerate(sel.match_args):
        pos = arg_pos(ma)
        _fill_match(ctx, out.match[k], pos, arg_types[pos], ma)
    out.nmatch = len(sel.match_args)
    if sel.match_return_args:
        if ret_type is None:
            raise PolicyError(f"{where}: matchReturnArgs needs `return: true` and a returnArg")
        if len(sel.match_return_args) > 1:
            raise PolicyError(f"{where}: at most one matchReturnArgs entry per selector")
        m = out.match[G.GEN_MAX_MATCHARGS]
        _fill_match(ctx, m, 0, ret_type, sel.match_return_args[0])
        m.arg = G.GEN_MATCH_RET
        if m.cmp not in (G.CMP_INT, G.CMP_UINT):
            raise PolicyError(f"{where}: matchReturnArgs compares integer return values only")
        out.has_ret = 1
    if len(sel.match_pids) > G.GEN_MAX_PIDS:
        raise PolicyError(f"{where}: at most {G.GEN_MAX_PIDS} matchPIDs entries per selector")
    for k, mp in enumerate(sel.match_pids):
        p = out.pids[k]
        p.op = G.OP[mp.operator]
        p.flags = (G.PF_FOLLOW if mp.follow_forks else 0) | (G.PF_NSPID if mp.is_namespace_pid else 0)
        if len(mp.values) > G.GEN_MAX_PIDVALS:
            raise PolicyError(f"{where}: at most {G.GEN_MAX_PIDVALS} matchPIDs values")
        p.nvals = len(mp.values)
        for j, v in enumerate(mp.values):
            p.vals[j] = v
    out.npids = len(sel.match_pids)
    if sel.match_binaries:
        mb = sel.match_binaries[0]
        b = out.bin
        b.op = {"In": G.OP["In"], "NotIn": G.OP["NotIn"]}.get(mb.operator, G.OP.get(mb.operator, 0))
        b.flags = G.PF_FOLLOW if mb.follow_children else 0
        if len(mb.values) > G.GEN_MAX_BINVALS:
            raise PolicyError(f"{where}: at most {G.GEN_MAX_BINVALS} matchBinaries values")
        b.nvals = len(mb.values)
        for j, bv in enumerate(mb.values):
            raw = bv.encode()
            if len(raw) >= G.GEN_BIN_LEN:
                raise PolicyError(f"{where}: matchBinaries value longer than {G.GEN_BIN_LEN - 1} bytes")
            b.len[j] = len(raw)
            b.str[j].value = raw
        out.has_bin = 1
    if len(sel.match_namespaces) > G.GEN_MAX_NS:
        raise PolicyError(f"{where}: at most {G.GEN_MAX_NS} matchNamespaces entries")
    for k, mn in enumerate(sel.match_namespaces):
        n = out.ns[k]
        n.ns = NS_SLOTS[mn.namespace]
        n.op = G.OP[mn.operator]
        if len(mn.values) > G.GEN_MAX_NSVALS:
            raise PolicyError(f"{where}: at most {G.GEN_MAX_NSVALS} matchNamespaces values")
        n.nvals = len(mn.values)
        for j, nv in enumerate(mn.values):
            n.vals[j] = host_namespace(mn.namespace) if nv == "host_ns" else parse_int(nv)
    out.nns = len(sel.match_namespaces)
    if len(sel.match_capabilities) > G.GEN_MAX_CAPS:
        raise PolicyError(f"{where}: at most {G.GEN_MAX_CAPS} matchCapabilities entries")
    for k, mc in enumerate(sel.match_capabilities):
        c = out.caps[k]
        c.type = {"Effective": 0, "Inheritable": 1, "Permitted": 2}[mc.type]
        c.op = G.OP[mc.operator]
        c.isns = 1 if mc.is_namespace_capability else 0
        c.mask = _cap_mask(mc.values)
    out.ncaps = len(sel.match_capabilities)
    if sel.match_namespace_changes:
        if len(sel.match_namespace_changes) > 1:
            raise PolicyError(f"{where}: at most one matchNamespaceChanges entry")
        nc = sel.match_namespace_changes[0]
        out.ns_changes_op = G.OP[nc.operator]
        out.ns_changes = sum(1 << NS_SLOTS[v] for v in nc.values)
    if sel.match_capability_changes:
        if len(sel.match_capability_changes) > 1:
            raise PolicyError(f"{where}: at most one matchCapabilityChanges entry")
        cc = sel.match_capability_changes[0]
        out.caps_changes_op = G.OP[cc.operator]
        out.caps_changes = _cap_mask(cc.values)
    out.nactions = _fill_actions(ctx, out.actions, sel.match_actions, mode, warn)
    if sel.match_return_actions and ret_type is None:
        raise PolicyError(f"{where}: matchReturnActions needs `return: true`")
    for a in sel.match_return_actions:
        if a.action in ENFORCING and a.action != "Override":
            raise unsupported(
                f"{where}: {a.action} as a return action would act after the call completed; use matchActions"
            )
    out.nret_actions = _fill_actions(ctx, out.ret_actions, sel.match_return_actions, mode, warn)


def _cap_mask(values: list[str]) -> int:
    mask = 0
    for v in values:
        name = v.upper() if v.upper().startswith("CAP_") else "CAP_" + v.upper()
        mask |= 1 << S.CAPABILITIES[name]
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


# --- arguments -------------------------------------------------------------------------------
@dataclass
class _ArgSrc:
    """Where a hook's raw argument i lives, for the chosen mechanism."""

    mech: int
    user_memory: bool  # pointers in arguments are user pointers (syscalls, uprobes)
    off: Callable[[int], tuple[int, int, bool]]  # index -> (off, size, signed) of the raw value
    field: Callable[[int], Field | None] = lambda i: None
    dirfd: Callable[[int], int | None] = lambda i: None  # index -> raw location of its dirfd


def _resolve_type(arg: S.KProbeArg, fld: Field | None, where: str) -> str:
    t = arg.type
    if t != "auto":
        return t
    if fld is None:
        return "int"
    if fld.ctype.startswith("__data_loc"):
        return "data_loc"
    if "char *" in fld.ctype or "char*" in fld.ctype:
        return "string"
    if "*" in fld.ctype or "[" in fld.ctype:
        raise PolicyError(
            f"{where}: type auto cannot read field {fld.name} ({fld.ctype}); give the argument a type"
        )
    return (
        {1: "int8", 2: "int16", 4: "int32", 8: "int64"}[fld.size]
        if fld.signed
        else {
            1: "uint8",
            2: "uint16",
            4: "uint32",
            8: "uint64",
        }[fld.size]
    )


def _fill_arg(out: G.ArgCfg, arg: S.KProbeArg, t: str, src: _ArgSrc, where: str) -> None:
    off, size, signed = src.off(arg.index)
    out.off, out.size, out.is_signed = off, size, 1 if signed else 0
    if arg.resolve:
        raise unsupported(f"{where}: `resolve` (BTF field paths) is not supported")
    if arg.return_copy and t not in ("char_buf",):
        raise PolicyError(f"{where}: returnCopy applies to char_buf arguments")
    if t in INT_SIZES:
        out.reader = G.RD_SYSCALL64 if t == "syscall64" else G.RD_INT
        isize, isigned = INT_SIZES[t]
        # registers and raw_tp slots are 8 bytes: an `int` is their low 4, sign-extended before matching
        if src.mech != G.MECH_TRACEPOINT or size >= isize:
            out.size, out.is_signed = isize, 1 if isigned else 0
        else:
            out.is_signed = 1 if isigned else 0
        return
    if t == "fd":
        out.reader, out.size, out.is_signed = G.RD_FD, min(size, 4) or 4, 1
        return
    if t in ("string", "data_loc", "filename"):
        if t == "data_loc":
            out.reader = G.RD_DATALOC
        elif t == "filename" and src.user_memory:
            out.reader = G.RD_FILENAME
            d = src.dirfd(arg.index)
            if d is not None:
                out.has_dirfd, out.dirfd_off = 1, d
        else:
            out.reader = G.RD_USTR if src.user_memory else G.RD_KSTR
        return
    if t in ("char_buf", "char_iovec"):
        if not src.user_memory:
            raise unsupported(f"{where}: {t} arguments are read from user memory (syscalls, uprobes) only")
        out.reader = G.RD_UBUF if t == "char_buf" else G.RD_IOVEC
        out.max_data = BUF_MAX_DATA if arg.max_data else BUF_DEFAULT
        if arg.size_arg_index:
            out.has_size = 1
            out.size_off = src.off(arg.size_arg_index - 1)[0]
        out.return_copy = 1 if arg.return_copy else 0
        return
    if t == "sock":
        out.reader = G.RD_SOCK_FD if src.user_memory else G.RD_SOCK
        return
    if t == "sockaddr":
        if not src.user_memory:
            raise unsupported(f"{where}: sockaddr arguments are read from user memory (syscalls) only")
        out.reader = G.RD_USOCKADDR
        return
    kernel_ptr = {"file": G.RD_FILE, "path": G.RD_PATH, "linux_binprm": G.RD_BINPRM, "cred": G.RD_CRED}
    if t in kernel_ptr:
        if src.user_memory:
            raise PolicyError(
                f"{where}: a {t} argument is a kernel pointer; a syscall or uprobe argument cannot be one"
            )
        out.reader = kernel_ptr[t]
        return
    raise unsupported(f"{where}: argument type {t} is not supported by this agent")


# --- hooks -----------------------------------------------------------------------------------
def _build(
    policy: S.TracingPolicy,
    policy_id: int,
    hook_id: int,
    hook: S.KProbeSpec | S.TracepointSpec | S.UProbeSpec,
    where: str,
    src: _ArgSrc,
    op: int,
    arg_pos: Callable[[S.ArgSelector], int],
    return_arg: S.KProbeArg | None,
    mode: str,
    warn: list[str],
) -> tuple[G.HookCfg, list[ArgInfo], ArgInfo | None, list[tuple[int, int]]]:
    cfg = G.HookCfg()
    cfg.policy_id, cfg.hook_id, cfg.mech, cfg.op = policy_id, hook_id, src.mech, op
    if len(hook.args) > G.GEN_ARGS_MAX:
        raise PolicyError(f"{where}: at most {G.GEN_ARGS_MAX} arguments")
    types: list[str] = []
    infos: list[ArgInfo] = []
    for i, arg in enumerate(hook.args):
        t = _resolve_type(arg, src.field(arg.index), f"{where}.args[{i}]")
        _fill_arg(cfg.args[i], arg, t, src, f"{where}.args[{i}]")
        types.append(t)
        infos.append(ArgInfo(type=t, label=arg.label, index=arg.index))
    cfg.nargs = len(hook.args)
    ret_info = None
    ret_type = None
    if return_arg is not None:
        ret_type = return_arg.type if return_arg.type != "auto" else "int64"
        if ret_type not in INT_SIZES and ret_type != "fd":
            raise unsupported(f"{where}.returnArg: only integer return values are supported (got {ret_type})")
        ret_info = ArgInfo(type=ret_type, label=return_arg.label, index=return_arg.index)
        cfg.has_return = 1
        cfg.ret_signed = 1 if ret_type in SIGNED_TYPES else 0
    if len(hook.selectors) > G.GEN_MAX_SELECTORS:
        raise PolicyError(f"{where}: at most {G.GEN_MAX_SELECTORS} selectors")
    ctx = _Ctx(policy, where, [])
    for k, sel in enumerate(hook.selectors):
        ctx.where = f"{where}.selectors[{k}]"
        _fill_selector(ctx, cfg.sel[k], sel, arg_pos, types, ret_type, mode, warn)
    cfg.nselectors = len(hook.selectors)
    return G.finish(cfg), infos, ret_info, ctx.inmap


def _kprobe_arg_pos(hook: S.KProbeSpec | S.UProbeSpec, where: str) -> Callable[[S.ArgSelector], int]:
    def pos(ma: S.ArgSelector) -> int:
        if ma.args:
            if ma.args[0] >= len(hook.args):
                raise PolicyError(f"{where}: matchArgs args[{ma.args[0]}] is not one of the hook's args")
            return ma.args[0]
        for i, a in enumerate(hook.args):
            if a.index == ma.index:
                return i
        raise PolicyError(f"{where}: matchArgs index {ma.index} is not one of the hook's args")

    return pos


def _tp_arg_pos(hook: S.TracepointSpec, where: str) -> Callable[[S.ArgSelector], int]:
    def pos(ma: S.ArgSelector) -> int:
        p = ma.args[0] if ma.args else (ma.index or 0)
        if p >= len(hook.args):
            raise PolicyError(f"{where}: matchArgs index {p} is not a position in the hook's args")
        return p

    return pos


def _syscall_src(fields: list[Field] | None) -> _ArgSrc:
    def off(i: int) -> tuple[int, int, bool]:
        return SYSCALL_ARG_OFF + 8 * i, 8, False

    def fld(i: int) -> Field | None:
        if fields is None:
            return None
        args = [f for f in fields if not f.name.startswith("common_") and f.name != "__syscall_nr"]
        return args[i] if i < len(args) else None

    def dirfd(i: int) -> int | None:
        if fields is None:
            return None
        args = [f for f in fields if not f.name.startswith("common_") and f.name != "__syscall_nr"]
        if 0 < i < len(args) and args[i - 1].name in DIRFD_FIELDS:
            return SYSCALL_ARG_OFF + 8 * (i - 1)
        return None

    return _ArgSrc(G.MECH_TRACEPOINT, True, off, fld, dirfd)


def compile_kprobe(
    policy: S.TracingPolicy,
    policy_id: int,
    hook_id: int,
    hook: S.KProbeSpec,
    where: str,
    mode: str,
    features: dict[str, bool],
    warn: list[str],
    tracefs: Path = TRACEFS,
) -> HookPlan:
    if hook.data:
        raise unsupported(f"{where}: `data` arguments are not supported")
    is_list = hook.call.startswith(S.LIST_PREFIX)
    if is_list:
        lst = S.find_list(policy, hook.call)
        if lst.type == "generated_ftrace":
            raise unsupported(
                f"{where}: call {hook.call} (generated_ftrace list of kernel functions): "
                f"{missing_feature_message('kprobe')}"
                if not features.get("kprobe")
                else f"{where}: kprobes on kernel functions are not implemented yet"
            )
        names = S.resolve_list(policy, hook.call)
        syscall = lst.type in ("syscalls", "generated_syscalls") or hook.syscall
    else:
        names = [hook.call]
        syscall = hook.syscall and SC.is_syscall(hook.call)
    if not syscall:
        if features.get("kprobe"):
            raise unsupported(
                f"{where}: kprobe on kernel function {hook.call}: kprobe hooks on kernel functions are "
                f"not implemented yet (syscall kprobes are served by tracepoints)"
            )
        raise unsupported(
            f"{where}: kprobe on kernel function {hook.call}: {missing_feature_message('kprobe')}"
        )
    if not features.get("tracepoint", True):
        raise unsupported(f"{where}: {missing_feature_message('tracepoint')}")
    return_arg = hook.return_arg if hook.return_ else None
    if hook.return_ and hook.return_arg is None:
        raise PolicyError(f"{where}: return: true needs a returnArg")
    if is_list:
        src = _syscall_src(None)
        cfg, infos, ret_info, inmap = _build(
            policy,
            policy_id,
            hook_id,
            hook,
            where,
            src,
            OP_KPROBE,
            _kprobe_arg_pos(hook, where),
            return_arg,
            mode,
            warn,
        )
        cfg.syscall = 2
        ids = [_syscall_value(n) for n in names]
        inmap = [(0, v) for v in ids] + inmap
        att = [Attach("tracepoint", "gen_tp", ("raw_syscalls", "sys_enter"))]
        if return_arg is not None:
            att.append(Attach("tracepoint", "gen_tp_ret", ("raw_syscalls", "sys_exit")))
        info = HookInfo(
            policy_name=policy.name,
            event="process_kprobe",
            function_name="",
            message=hook.message,
            tags=tuple(hook.tags),
            args=tuple(infos),
            return_arg=ret_info,
            policy_namespace=policy.namespace,
            extra={"syscall_list": hook.call},
        )
        return HookPlan(hook_id, info, cfg, att, inmap, "generic_kprobe", syscall_list=True)
    sc = SC.parse_syscall(hook.call)
    if sc.abi != "x64":
        raise unsupported(
            f"{where}: {hook.call}: 32-bit syscalls have no per-syscall tracepoints; use a syscall list "
            f"(served by raw_syscalls)"
        )
    if not SC.has_tracepoint(sc.name, str(tracefs)):
        raise unsupported(
            f"{where}: {hook.call} has no syscalls/sys_enter_{sc.name} tracepoint on this kernel, and "
            f"{missing_feature_message('kprobe')}"
        )
    fields = tracepoint_format("syscalls", f"sys_enter_{sc.name}", tracefs)
    src = _syscall_src(fields)
    cfg, infos, ret_info, inmap = _build(
        policy,
        policy_id,
        hook_id,
        hook,
        where,
        src,
        OP_KPROBE,
        _kprobe_arg_pos(hook, where),
        return_arg,
        mode,
        warn,
    )
    cfg.syscall = 1
    att = [Attach("tracepoint", "gen_tp", ("syscalls", f"sys_enter_{sc.name}"))]
    if return_arg is not None:
        att.append(Attach("tracepoint", "gen_tp_ret", ("syscalls", f"sys_exit_{sc.name}")))
    info = HookInfo(
        policy_name=policy.name,
        event="process_kprobe",
        function_name=SC.function_name(sc),
        message=hook.message,
        tags=tuple(hook.tags),
        args=tuple(infos),
        return_arg=ret_info,
        policy_namespace=policy.namespace,
    )
    return HookPlan(hook_id, info, cfg, att, inmap, "generic_kprobe")


def compile_tracepoint(
    policy: S.TracingPolicy,
    policy_id: int,
    hook_id: int,
    hook: S.TracepointSpec,
    where: str,
    mode: str,
    features: dict[str, bool],
    warn: list[str],
    tracefs: Path = TRACEFS,
) -> HookPlan:
    if hook.raw:
        if not features.get("raw_tp", True):
            raise unsupported(f"{where}: {missing_feature_message('raw_tp')}")
        src = _ArgSrc(G.MECH_RAW_TP, False, lambda i: (i, 8, False))
        cfg, infos, _, inmap = _build(
            policy,
            policy_id,
            hook_id,
            hook,
            where,
            src,
            OP_TRACEPOINT,
            _tp_arg_pos(hook, where),
            None,
            mode,
            warn,
        )
        att = [Attach("raw_tp", "gen_rawtp", (hook.event,))]
    else:
        if not features.get("tracepoint", True):
            raise unsupported(f"{where}: {missing_feature_message('tracepoint')}")
        fields = tracepoint_format(hook.subsystem, hook.event, tracefs)
        syscall_tp = hook.subsystem in ("syscalls", "raw_syscalls")

        def off(i: int) -> tuple[int, int, bool]:
            if i >= len(fields):
                raise PolicyError(
                    f"{where}: argument index {i} is past the last field of {hook.subsystem}/{hook.event} "
                    f"({len(fields) - 1})"
                )
            f = fields[i]
            return f.offset, min(f.size, 8), f.signed

        def fld(i: int) -> Field | None:
            return fields[i] if i < len(fields) else None

        def dirfd(i: int) -> int | None:
            if 0 < i < len(fields) and fields[i - 1].name in DIRFD_FIELDS:
                return fields[i - 1].offset
            return None

        src = _ArgSrc(G.MECH_TRACEPOINT, syscall_tp, off, fld, dirfd)
        cfg, infos, _, inmap = _build(
            policy,
            policy_id,
            hook_id,
            hook,
            where,
            src,
            OP_TRACEPOINT,
            _tp_arg_pos(hook, where),
            None,
            mode,
            warn,
        )
        cfg.syscall = 1 if syscall_tp else 0
        att = [Attach("tracepoint", "gen_tp", (hook.subsystem, hook.event))]
    info = HookInfo(
        policy_name=policy.name,
        event="process_tracepoint",
        subsys=hook.subsystem,
        tp_event=hook.event,
        message=hook.message,
        tags=tuple(hook.tags),
        args=tuple(infos),
        policy_namespace=policy.namespace,
    )
    return HookPlan(hook_id, info, cfg, att, inmap, "generic_tracepoint")


def compile_uprobe(
    policy: S.TracingPolicy,
    policy_id: int,
    hook_id: int,
    hook: S.UProbeSpec,
    where: str,
    mode: str,
    features: dict[str, bool],
    warn: list[str],
    symbol: str,
    offset: int,
) -> HookPlan:
    if not features.get("uprobe", True):
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
    src = _ArgSrc(G.MECH_UPROBE, True, lambda i: (i, 8, False))
    for i, arg in enumerate(hook.args):
        if arg.index > 5:
            raise PolicyError(f"{where}.args[{i}]: uprobe arguments are the first 6 (index 0-5)")
    cfg, infos, _, inmap = _build(
        policy,
        policy_id,
        hook_id,
        hook,
        where,
        src,
        OP_UPROBE,
        _kprobe_arg_pos(hook, where),
        None,
        mode,
        warn,
    )
    att = [Attach("uprobe", "gen_uprobe", (hook.path, symbol, str(offset)))]
    info = HookInfo(
        policy_name=policy.name,
        event="process_uprobe",
        path=hook.path,
        symbol=symbol,
        offset=offset if not symbol else 0,
        message=hook.message,
        tags=tuple(hook.tags),
        args=tuple(infos),
        policy_namespace=policy.namespace,
    )
    return HookPlan(hook_id, info, cfg, att, inmap, "generic_uprobe")


def compile_policy(
    policy: S.TracingPolicy, policy_id: int, mode: str, features: dict[str, bool], tracefs: Path = TRACEFS
) -> PolicyPlan:
    """Every hook of the policy, or the first reason it cannot be served (PolicyError)."""
    sp = policy.spec
    warn: list[str] = []
    if policy.namespaced:
        raise unsupported(
            "TracingPolicyNamespaced needs the policy filter (--enable-policy-filter) and Kubernetes pod "
            "information, which this agent does not have"
        )
    if sp.pod_selector is not None or sp.container_selector is not None:
        raise unsupported(
            "podSelector/containerSelector need Kubernetes pod information, which this agent does not have"
        )
    if sp.lsmhooks:
        feat = "lsm"
        raise unsupported(
            f"spec.lsmhooks[0] (hook {sp.lsmhooks[0].hook}): "
            + (
                missing_feature_message(feat)
                if not features.get(feat)
                else "LSM hooks are not implemented yet"
            )
        )
    if sp.fentries:
        raise unsupported(
            f"spec.fentries[0] (call {sp.fentries[0].call}): "
            + (
                missing_feature_message("fentry")
                if not features.get("fentry")
                else "fentry hooks are not implemented yet"
            )
        )
    if sp.usdts:
        raise unsupported(
            f"spec.usdts[0] ({sp.usdts[0].provider}/{sp.usdts[0].name}): USDT probes are not supported by "
            f"this agent"
        )
    if sp.loader:
        raise unsupported(
            f"spec.loader: process_loader events need kprobes on perf_event_mmap_output: "
            f"{missing_feature_message('kprobe')}"
        )
    hooks: list[HookPlan] = []
    hid = 0
    for i, kp in enumerate(sp.kprobes):
        hooks.append(
            compile_kprobe(
                policy, policy_id, hid, kp, f"spec.kprobes[{i}] ({kp.call})", mode, features, warn, tracefs
            )
        )
        hid += 1
    for i, tp in enumerate(sp.tracepoints):
        hooks.append(
            compile_tracepoint(
                policy,
                policy_id,
                hid,
                tp,
                f"spec.tracepoints[{i}] ({tp.subsystem}/{tp.event})",
                mode,
                features,
                warn,
                tracefs,
            )
        )
        hid += 1
    for i, up in enumerate(sp.uprobes):
        targets = [(s, 0) for s in up.symbols] + [("", o) for o in up.offsets]
        if not targets:
            raise PolicyError(f"spec.uprobes[{i}]: give symbols or offsets")
        for sym, off in targets:
            hooks.append(
                compile_uprobe(
                    policy,
                    policy_id,
                    hid,
                    up,
                    f"spec.uprobes[{i}] ({up.path}:{sym or hex(off)})",
                    mode,
                    features,
                    warn,
                    sym,
                    off,
                )
            )
            hid += 1
    enforcer: list[int] = []
    if sp.enforcers:
        for call in sp.enforcers[0].calls:
            names = S.resolve_list(policy, call) if call.startswith(S.LIST_PREFIX) else [call]
            enforcer.extend(_syscall_value(n) for n in names)
        if not features.get("signal", True):
            raise unsupported(f"spec.enforcers: {missing_feature_message('signal')}")
    for h in hooks:
        for k in range(h.cfg.nselectors):
            for a in range(h.cfg.sel[k].nactions):
                if h.cfg.sel[k].actions[a].id in (2, 9, 12) and not features.get("signal", True):
                    raise unsupported(f"hook {h.hook_id}: {missing_feature_message('signal')}")
    if not hooks:
        raise PolicyError("the policy has no hook this agent can load (kprobes, tracepoints or uprobes)")
    return PolicyPlan(hooks, mode, enforcer, warn)
