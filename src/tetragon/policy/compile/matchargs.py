"""matchArgs / matchReturnArgs values -> struct gen_match: numbers, strings, addresses, ports, sets.

How a value is compared follows from the argument's type (CMP_*); an operator that makes no sense
for that type is refused here, with the selector's path.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from tetragon.abi import generic_cfg_h as G
from tetragon.policy import syscalls as SC
from tetragon.policy.compile.args import cmp_kind
from tetragon.policy.compile.plan import unsupported
from tetragon.policy.compile.strmaps import StrMap
from tetragon.policy.errors import PolicyError
from tetragon.policy.names import LIST_PREFIX, MAX_POSTFIX_LEN, MAX_PREFIX_LEN
from tetragon.policy.schema import ArgSelector, TracingPolicy, find_list

INMAP_RANGE_MAX = 65536  # values one InMap range may expand to
INMAP_VALUES_MAX = 4000  # InMap values per hook

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
ADDR_OPS = ("SAddr", "DAddr", "NotSAddr", "NotDAddr")
PORT_OPS = ("SPort", "DPort", "NotSPort", "NotDPort")
PRIV_PORT_OPS = ("SPortPriv", "NotSPortPriv", "DPortPriv", "NotDPortPriv")  # compare against 1024: no values
NET_OPS = {*ADDR_OPS, *PORT_OPS, *PRIV_PORT_OPS, "Family", "Protocol", "State"}
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
class MatchCtx:
    policy: TracingPolicy
    where: str
    inmap: list[tuple[int, int]]
    next_map_id: int = 1
    str_maps: list[StrMap] = field(default_factory=list)  # the hook's gen_str_maps, in slot order


def syscall_value(name: str) -> int:
    return SC.syscall64_value(SC.parse_syscall(name))


def _list_values(ctx: MatchCtx, ref: str) -> list[int]:
    lst = find_list(ctx.policy, ref)
    if lst.type == "generated_ftrace":
        raise unsupported(f"{ctx.where}: list '{lst.name}' (generated_ftrace) needs kprobes")
    return [syscall_value(n) for n in lst.entries]


def _fill_int_match(ctx: MatchCtx, m: G.Match, op: str, values: list[str], arg_type: str) -> None:
    m.op = G.OP_BY_NAME[op]
    if op in ("InMap", "NotInMap"):
        m.map_id = ctx.next_map_id
        ctx.next_map_id += 1
        count = 0
        for v in values:
            if v.startswith(LIST_PREFIX):
                nums = _list_values(ctx, v)
            elif ":" in v:
                lo, hi = (parse_int(x) for x in v.split(":", 1))
                if hi - lo > INMAP_RANGE_MAX:
                    raise PolicyError(
                        f"{ctx.where}: range {v} is too large for InMap (at most {INMAP_RANGE_MAX} values)"
                    )
                nums = list(range(lo, hi + 1))
            else:
                nums = [parse_int(v)]
            for n in nums:
                ctx.inmap.append((m.map_id, _u64(n)))
                count += 1
        if count > INMAP_VALUES_MAX:
            raise PolicyError(f"{ctx.where}: at most {INMAP_VALUES_MAX} InMap values per hook")
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
            m.lo[j] = syscall_value(v)
        else:
            m.lo[j] = _u64(parse_int(v))


def _fill_str_match(ctx: MatchCtx, m: G.Match, op: str, values: list[str]) -> None:
    """Up to GEN_MAX_VALUES values inline (compared one by one), more in a trie of their own (strmaps.py)."""
    m.op = G.OP_BY_NAME[op]
    limit = MAX_POSTFIX_LEN if "Postfix" in op else MAX_PREFIX_LEN
    raws = [v.encode() for v in values]
    if any(len(raw) > limit for raw in raws):
        raise PolicyError(f"{ctx.where}: {op} value longer than {limit} bytes")
    if len(raws) > G.GEN_MAX_VALUES:
        ctx.str_maps.append(StrMap("Postfix" in op, tuple(raws)))
        m.map_id = len(ctx.str_maps)
        return
    m.nvals = len(raws)
    for j, raw in enumerate(raws):
        m.len[j] = len(raw)
        m.str[j].value = raw


def _fill_net_match(ctx: MatchCtx, m: G.Match, op: str, values: list[str]) -> None:
    m.op = G.OP_BY_NAME[op]
    if op in PRIV_PORT_OPS:
        return
    if len(values) > G.GEN_MAX_VALUES:
        raise PolicyError(f"{ctx.where}: at most {G.GEN_MAX_VALUES} values for {op}")
    m.nvals = len(values)
    for j, v in enumerate(values):
        if op in ADDR_OPS:
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
        elif op in PORT_OPS:
            lo, _, hi = v.partition(":")
            m.lo[j] = parse_int(lo)
            m.hi[j] = parse_int(hi) if hi else m.lo[j]
        elif op == "Family":
            m.lo[j] = _named(v, FAMILIES, "address family")
        elif op == "Protocol":
            m.lo[j] = _named(v, PROTOCOLS, "protocol")
        else:
            m.lo[j] = _named(v, TCP_STATES, "TCP state")


def fill_match(ctx: MatchCtx, m: G.Match, arg_pos: int, arg_type: str, sel: ArgSelector) -> None:
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
