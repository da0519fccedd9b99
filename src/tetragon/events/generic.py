"""Generic (TracingPolicy) records: decoding `struct msg_generic` and building hook events.

A record (bpf/include/events.h) is a `msg_generic` header followed by `nargs` argument blobs, each a
`gen_arg` header and `len` payload bytes. The blob's kind says how to read the payload; the policy's
argument type (HookInfo.args, matched by the blob's index) says which KprobeArgument variant it becomes.
Events are dicts shaped like Tetragon's JSON export (see tetragon.api.convert).
"""

from __future__ import annotations

import base64
import ipaddress
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tetragon.abi import events_h as L
from tetragon.api.gen.tetragon import bpf_pb2
from tetragon.policy.hookinfo import ArgInfo, HookInfo
from tetragon.process.cache import with_tid
from tetragon.process.model import CAP_NAMES, cap_names, securebit_names

Event = dict[str, Any]

_U32 = (1 << 32) - 1
_U64 = (1 << 64) - 1

# Kernel action id (ACTION_*) -> KprobeAction enum name.
ACTION_NAMES = {
    L.ACTION_POST: "KPROBE_ACTION_POST",
    L.ACTION_FOLLOWFD: "KPROBE_ACTION_FOLLOWFD",
    L.ACTION_SIGKILL: "KPROBE_ACTION_SIGKILL",
    L.ACTION_UNFOLLOWFD: "KPROBE_ACTION_UNFOLLOWFD",
    L.ACTION_OVERRIDE: "KPROBE_ACTION_OVERRIDE",
    L.ACTION_COPYFD: "KPROBE_ACTION_COPYFD",
    L.ACTION_GETURL: "KPROBE_ACTION_GETURL",
    L.ACTION_DNSLOOKUP: "KPROBE_ACTION_DNSLOOKUP",
    L.ACTION_NOPOST: "KPROBE_ACTION_NOPOST",
    L.ACTION_SIGNAL: "KPROBE_ACTION_SIGNAL",
    L.ACTION_TRACKSOCK: "KPROBE_ACTION_TRACKSOCK",
    L.ACTION_UNTRACKSOCK: "KPROBE_ACTION_UNTRACKSOCK",
    L.ACTION_NOTIFYENFORCER: "KPROBE_ACTION_NOTIFYENFORCER",
    L.ACTION_CLEANUPENFORCER: "KPROBE_ACTION_CLEANUPENFORCERNOTIFICATION",
}

AF_UNIX, AF_INET, AF_INET6 = 1, 2, 10
FAMILY_NAMES = {
    0: "AF_UNSPEC",
    AF_UNIX: "AF_UNIX",
    AF_INET: "AF_INET",
    AF_INET6: "AF_INET6",
    16: "AF_NETLINK",
    17: "AF_PACKET",
    40: "AF_VSOCK",
    44: "AF_XDP",
}
SOCK_TYPE_NAMES = {
    1: "SOCK_STREAM",
    2: "SOCK_DGRAM",
    3: "SOCK_RAW",
    4: "SOCK_RDM",
    5: "SOCK_SEQPACKET",
    6: "SOCK_DCCP",
    10: "SOCK_PACKET",
}
PROTOCOL_NAMES = {
    1: "IPPROTO_ICMP",
    2: "IPPROTO_IGMP",
    4: "IPPROTO_IPIP",
    6: "IPPROTO_TCP",
    8: "IPPROTO_EGP",
    12: "IPPROTO_PUP",
    17: "IPPROTO_UDP",
    22: "IPPROTO_IDP",
    29: "IPPROTO_TP",
    33: "IPPROTO_DCCP",
    41: "IPPROTO_IPV6",
    46: "IPPROTO_RSVP",
    47: "IPPROTO_GRE",
    50: "IPPROTO_ESP",
    51: "IPPROTO_AH",
    58: "IPPROTO_ICMPV6",
    92: "IPPROTO_MTP",
    94: "IPPROTO_BEETPH",
    98: "IPPROTO_ENCAP",
    103: "IPPROTO_PIM",
    108: "IPPROTO_COMP",
    115: "IPPROTO_L2TP",
    132: "IPPROTO_SCTP",
    136: "IPPROTO_UDPLITE",
    137: "IPPROTO_MPLS",
    143: "IPPROTO_ETHERNET",
    255: "IPPROTO_RAW",
    262: "IPPROTO_MPTCP",
}
TCP_STATE_NAMES = {
    1: "TCP_ESTABLISHED",
    2: "TCP_SYN_SENT",
    3: "TCP_SYN_RECV",
    4: "TCP_FIN_WAIT1",
    5: "TCP_FIN_WAIT2",
    6: "TCP_TIME_WAIT",
    7: "TCP_CLOSE",
    8: "TCP_CLOSE_WAIT",
    9: "TCP_LAST_ACK",
    10: "TCP_LISTEN",
    11: "TCP_CLOSING",
    12: "TCP_NEW_SYN_RECV",
}

# Tetragon's path-resolution flag string for a path that could not be walked to the root.
UNRESOLVED_PATH_COMPONENTS = "unresolvedPathComponents"

_SIGNED_BITS = {
    "int": 32,
    "int32": 32,
    "sint32": 32,
    "int16": 16,
    "sint16": 16,
    "int8": 8,
    "sint8": 8,
}
_UNSIGNED_BITS = {"uint32": 32, "uint16": 16, "uint8": 8}
_SIZE_TYPES = frozenset({"uint64", "ulong", "size_t", "u64"})
_LONG_TYPES = frozenset({"int64", "long", "sint64", "s64"})
_CAP_HEX_TYPES = frozenset({"kernel_cap_t", "cap_inheritable", "cap_permitted", "cap_effective"})
_FILE_TYPES = frozenset({"file", "fd", "kiocb"})
_PATH_TYPES = frozenset({"path", "dentry"})


@dataclass
class GenericArg:
    kind: int
    flags: int
    index: int
    payload: bytes


@dataclass
class GenericRecord:
    op: int
    flags_common: int
    size: int
    ktime: int
    pid: int
    tid: int
    policy_id: int
    hook_id: int
    action: int
    return_action: int
    selector: int
    flags: int
    ret: int
    args: list[GenericArg] = field(default_factory=list)
    func_id: int = 0  # syscall-list hooks: the syscall number (bit 31: ia32)


# --- decoding ------------------------------------------------------------------------------------


_GENERIC_OPS = frozenset((L.MSG_OP_GENERIC_KPROBE, L.MSG_OP_GENERIC_TRACEPOINT, L.MSG_OP_GENERIC_UPROBE))
_HEAD_SIZE = L.MSG_GENERIC.size
_unpack_head = L.MSG_GENERIC.unpack_from
_ARG_SIZE = L.GEN_ARG.size
_unpack_arg = L.GEN_ARG.unpack_from
_unpack_i32 = struct.Struct("<i").unpack_from

# The header as decode_header returns it: (op, flags_common, size, ktime, pid, tid, policy_id, hook_id,
# action, return_action, selector, nargs, flags, func_id, ret).
GenericHeader = tuple[int, int, int, int, int, int, int, int, int, int, int, int, int, int, int]


def decode_header(buf: bytes) -> GenericHeader:
    """The `msg_generic` header of a record; ValueError when it is short, `size` is out of range or
    the op is not a generic one."""
    if len(buf) < _HEAD_SIZE:
        raise ValueError(f"generic record of {len(buf)} bytes, header needs {_HEAD_SIZE}")
    head: GenericHeader = _unpack_head(buf)
    size = head[2]
    if size < _HEAD_SIZE or size > len(buf):
        raise ValueError(f"generic record size {size} outside [{_HEAD_SIZE}, {len(buf)}]")
    if head[0] not in _GENERIC_OPS:
        raise ValueError(f"op {head[0]} is not a generic record")
    return head


def decode_generic(record: memoryview | bytes) -> GenericRecord:
    """Decode one generic record; ValueError when it is short or its blobs overrun `size`."""
    buf = bytes(record)
    head = L.MSG_GENERIC
    decode_header(buf)
    (
        op,
        flags_common,
        size,
        ktime,
        pid,
        tid,
        policy_id,
        hook_id,
        action,
        return_action,
        selector,
        nargs,
        flags,
        func_id,
        ret,
    ) = head.unpack_from(buf)
    args: list[GenericArg] = []
    pos = head.size
    for i in range(nargs):
        if pos + L.GEN_ARG.size > size:
            raise ValueError(f"argument {i} header at {pos} overruns record size {size}")
        kind, aflags, index, length = L.GEN_ARG.unpack_from(buf, pos)
        pos += L.GEN_ARG.size
        if not L.GEN_KIND_INT <= kind <= L.GEN_KIND_CRED:
            raise ValueError(f"argument {i} has unknown kind {kind}")
        if pos + length > size:
            raise ValueError(f"argument {i} payload of {length} bytes overruns record size {size}")
        args.append(GenericArg(kind, aflags, index, buf[pos : pos + length]))
        pos += length
    return GenericRecord(
        op,
        flags_common,
        size,
        ktime,
        pid,
        tid,
        policy_id,
        hook_id,
        action,
        return_action,
        selector,
        flags,
        ret,
        args,
        func_id,
    )


# --- argument conversion -------------------------------------------------------------------------


def _signed(value: int, bits: int) -> int:
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def _bpf_cmd_name(value: int) -> str | None:
    try:
        return bpf_pb2.BpfCmd.Name(value)
    except ValueError:
        return None


def int_variant(value: int, typ: str) -> Event:
    """The KprobeArgument for an integer of TracingPolicy type `typ` (value: its raw 64 bits)."""
    value &= _U64
    if typ in _SIGNED_BITS:
        return {"int_arg": _signed(value, _SIGNED_BITS[typ])}
    if typ in _UNSIGNED_BITS:
        return {"uint_arg": value & ((1 << _UNSIGNED_BITS[typ]) - 1)}
    if typ in _SIZE_TYPES:
        return {"size_arg": str(value)}
    if typ in _LONG_TYPES:
        return {"long_arg": str(_signed(value, 64))}
    if typ == "capability":
        cap = _signed(value, 32)
        out: Event = {"value": cap}
        if 0 <= cap < len(CAP_NAMES):
            out["name"] = CAP_NAMES[cap]
        return {"capability_arg": out}
    if typ == "syscall64":
        number = value & _U32 & ~(1 << 31)
        syscall: Event = {"id": number} if number else {}  # a plain uint32: 0 (read) is left out
        syscall["abi"] = "i386" if value >> 31 & 1 else "x64"
        return {"syscall_id": syscall}
    if typ == "bpf_cmd":
        name = _bpf_cmd_name(value & _U32)
        if name is not None:
            return {"bpf_cmd_arg": name}
    if typ in _CAP_HEX_TYPES:
        return {f"{typ}_arg": f"{value:016x}"}
    return {"int_arg": _signed(value, 32)}


def file_permission(mode: int) -> str:
    """`ls -l` style type and permission string of an inode mode, e.g. -rw-r--r--."""
    kind = {
        0o100000: "-",
        0o040000: "d",
        0o120000: "l",
        0o020000: "c",
        0o060000: "b",
        0o010000: "p",
        0o140000: "s",
    }.get(mode & 0o170000, "?")
    chars = [kind] + [c if mode >> (8 - i) & 1 else "-" for i, c in enumerate("rwxrwxrwx")]
    for bit, pos, on in ((0o4000, 3, "s"), (0o2000, 6, "s"), (0o1000, 9, "t")):
        if mode & bit:
            chars[pos] = on if chars[pos] != "-" else on.upper()
    return "".join(chars)


def _ip_text(raw: bytes, family: int) -> str:
    if family == AF_INET6:
        return str(ipaddress.IPv6Address(raw[:16]))
    return str(ipaddress.IPv4Address(raw[:4]))


def _named(table: dict[int, str], value: int) -> str:
    return table.get(value, str(value))


def _path_variant(arg: GenericArg, typ: str) -> Event:
    data = arg.payload
    mode = 0
    path = ""
    if len(data) >= L.GEN_PATH.size:
        mode, _f_flags = L.GEN_PATH.unpack_from(data)
        path = data[L.GEN_PATH.size :].decode("utf-8", "replace")
    if typ not in _FILE_TYPES and typ not in _PATH_TYPES and typ != "linux_binprm":
        return {"string_arg": path}
    body: Event = {}
    if path:
        body["path"] = path
    if arg.flags & L.GEN_AF_TRUNC:
        body["flags"] = UNRESOLVED_PATH_COMPONENTS
    if mode:
        body["permission"] = file_permission(mode)
    if typ in _FILE_TYPES:
        return {"file_arg": body}
    if typ in _PATH_TYPES:
        return {"path_arg": body}
    return {"linux_binprm_arg": body}


def _bytes_variant(arg: GenericArg) -> Event:
    data = arg.payload
    if len(data) < L.GEN_BYTES.size:
        return {"bytes_arg": ""}
    (orig_size,) = L.GEN_BYTES.unpack_from(data)
    raw = data[L.GEN_BYTES.size :]
    text = base64.b64encode(raw).decode("ascii")
    if orig_size <= len(raw):
        return {"bytes_arg": text}
    truncated: Event = {"bytes_arg": text} if text else {}
    truncated["orig_size"] = str(orig_size)
    return {"truncated_bytes_arg": truncated}


def _sock_variant(arg: GenericArg) -> Event:
    if len(arg.payload) < L.GEN_SOCK.size:
        return {"sock_arg": {}}
    family, typ, proto, state, mark, prio, sport, dport, cookie, saddr, daddr = L.GEN_SOCK.unpack_from(
        arg.payload
    )
    body: Event = {}
    if family:
        body["family"] = _named(FAMILY_NAMES, family)
    if typ:
        body["type"] = _named(SOCK_TYPE_NAMES, typ)
    if proto:
        body["protocol"] = _named(PROTOCOL_NAMES, proto)
    if mark:
        body["mark"] = mark
    if prio:
        body["priority"] = prio
    if family in (AF_INET, AF_INET6):
        body["saddr"] = _ip_text(saddr, family)
        body["daddr"] = _ip_text(daddr, family)
    if sport:
        body["sport"] = sport
    if dport:
        body["dport"] = dport
    if cookie:
        body["cookie"] = str(cookie)
    if state:
        body["state"] = _named(TCP_STATE_NAMES, state)
    return {"sock_arg": body}


def _sockaddr_variant(arg: GenericArg) -> Event:
    if len(arg.payload) < L.GEN_SOCKADDR.size:
        return {"sockaddr_arg": {}}
    family, port, addr = L.GEN_SOCKADDR.unpack_from(arg.payload)
    body: Event = {}
    if family:
        body["family"] = _named(FAMILY_NAMES, family)
    if family in (AF_INET, AF_INET6):
        body["addr"] = _ip_text(addr, family)
        if port:
            body["port"] = port
    return {"sockaddr_arg": body}


def _cred_variant(arg: GenericArg) -> Event:
    if len(arg.payload) < L.GEN_CRED.size:
        return {"process_credentials_arg": {}}
    (
        uid,
        gid,
        euid,
        egid,
        suid,
        sgid,
        fsuid,
        fsgid,
        securebits,
        cap_p,
        cap_e,
        cap_i,
        ns_level,
        ns_uid,
        ns_gid,
        ns_inum,
    ) = L.GEN_CRED.unpack_from(arg.payload)
    creds: Event = {
        "uid": uid,
        "gid": gid,
        "euid": euid,
        "egid": egid,
        "suid": suid,
        "sgid": sgid,
        "fsuid": fsuid,
        "fsgid": fsgid,
    }
    bits = securebit_names(securebits)
    if bits:
        creds["securebits"] = bits
    caps: Event = {}
    for key, mask in (("permitted", cap_p), ("effective", cap_e), ("inheritable", cap_i)):
        names = cap_names(mask)
        if names:
            caps[key] = names
    creds["caps"] = caps
    user_ns: Event = {"level": _signed(ns_level, 32), "uid": ns_uid, "gid": ns_gid}
    if ns_inum:
        ns: Event = {"inum": ns_inum}
        if ns_level == 0:
            ns["is_host"] = True
        user_ns["ns"] = ns
    creds["user_ns"] = user_ns
    return {"process_credentials_arg": creds}


def arg_variant(arg: GenericArg, info: ArgInfo) -> Event:
    """One KprobeArgument (without label) from a blob and the policy's argument type."""
    kind, typ = arg.kind, info.type
    if kind == L.GEN_KIND_INT:
        if len(arg.payload) < 8:
            return int_variant(0, typ)
        return int_variant(int.from_bytes(arg.payload[:8], "little"), typ)
    if kind == L.GEN_KIND_STR:
        return {"string_arg": arg.payload.decode("utf-8", "replace")}
    if kind == L.GEN_KIND_BYTES:
        return _bytes_variant(arg)
    if kind == L.GEN_KIND_PATH:
        return _path_variant(arg, typ)
    if kind == L.GEN_KIND_SOCK:
        return _sock_variant(arg)
    if kind == L.GEN_KIND_SOCKADDR:
        return _sockaddr_variant(arg)
    if kind == L.GEN_KIND_CRED:
        return _cred_variant(arg)
    raise ValueError(f"unknown generic argument kind {kind}")


def _with_label(variant: Event, info: ArgInfo) -> Event:
    if info.label:
        variant["label"] = info.label
    return variant


def build_args(rec: GenericRecord, hook: HookInfo) -> list[Event]:
    """The record's blobs as KprobeArguments, in the order of the hook's `args`."""
    out: list[Event] = []
    for arg in sorted(rec.args, key=lambda a: a.index):
        info = hook.args[arg.index] if arg.index < len(hook.args) else ArgInfo(type="")
        out.append(_with_label(arg_variant(arg, info), info))
    return out


# --- events --------------------------------------------------------------------------------------


def _action(kernel_id: int) -> str | None:
    return ACTION_NAMES.get(kernel_id)


def build_generic_event(
    rec: GenericRecord,
    hook: HookInfo,
    process: Event | None,
    parent: Event | None,
    ancestors: list[Event] | None,
    node_name: str,
    time: str,
) -> Event:
    """A process_kprobe / process_tracepoint / process_uprobe event (per hook.event) from a record."""
    return generic_event(
        hook,
        build_args(rec, hook),
        rec.action,
        rec.return_action,
        rec.flags,
        rec.ret,
        with_tid(process, rec.tid) if process is not None else None,
        parent,
        ancestors,
        node_name,
        time,
    )


def generic_event(
    hook: HookInfo,
    args: list[Event],
    action_id: int,
    return_action_id: int,
    flags: int,
    ret: int,
    process: Any,
    parent: Any,
    ancestors: list[Any] | None,
    node_name: str,
    time: str,
) -> Event:
    """The event of build_generic_event from its parts: `process` already carries the record's tid.
    process / parent / ancestors are dicts, or orjson.Fragment for an event only serialized."""
    body: Event = {}
    if process is not None:
        body["process"] = process
    if parent is not None:
        body["parent"] = parent
    action = _action(action_id)
    tags = list(hook.tags)
    if hook.event == "process_kprobe":
        if hook.function_name:
            body["function_name"] = hook.function_name
        if args:
            body["args"] = args
        returned = bool(flags & L.GEN_F_RETURN)
        if returned and hook.return_arg is not None:
            body["return"] = _with_label(int_variant(ret, hook.return_arg.type), hook.return_arg)
        if action:
            body["action"] = action
        if hook.policy_name:
            body["policy_name"] = hook.policy_name
        return_action = _action(return_action_id) if returned else None
        if return_action:
            body["return_action"] = return_action
        if hook.message:
            body["message"] = hook.message
        if tags:
            body["tags"] = tags
    elif hook.event == "process_tracepoint":
        if hook.subsys:
            body["subsys"] = hook.subsys
        if hook.tp_event:
            body["event"] = hook.tp_event
        if args:
            body["args"] = args
        if hook.policy_name:
            body["policy_name"] = hook.policy_name
        if action:
            body["action"] = action
        if hook.message:
            body["message"] = hook.message
        if tags:
            body["tags"] = tags
    elif hook.event == "process_uprobe":
        if hook.path:
            body["path"] = hook.path
        if hook.symbol:
            body["symbol"] = hook.symbol
        if hook.policy_name:
            body["policy_name"] = hook.policy_name
        if hook.message:
            body["message"] = hook.message
        if args:
            body["args"] = args
        if tags:
            body["tags"] = tags
    else:
        raise ValueError(f"hook event {hook.event!r} is not a generic event type")
    if ancestors:
        body["ancestors"] = ancestors
    if hook.event == "process_uprobe":
        if hook.offset:
            body["offset"] = str(hook.offset)
        if action:
            body["action"] = action
    return {hook.event: body, "node_name": node_name, "time": time}


# --- per-hook plans (the agent's hot path) -------------------------------------------------------

# converter(buf, start, end, blob flags) -> the KprobeArgument of one blob's payload buf[start:end]
Converter = Callable[[bytes, int, int, int], Event]


def make_converter(kind: int, info: ArgInfo, index: int) -> Converter:
    """A converter equal to `_with_label(arg_variant(GenericArg(kind, flags, index, payload), info), info)`,
    specialised for the common argument types."""
    label, typ = info.label, info.type
    if kind == L.GEN_KIND_INT and _SIGNED_BITS.get(typ) == 32:
        # the low 32 bits of the little-endian u64, signed
        if label:

            def int32_labelled(buf: bytes, start: int, end: int, flags: int) -> Event:
                return {"int_arg": _unpack_i32(buf, start)[0] if end - start >= 8 else 0, "label": label}

            return int32_labelled

        def int32(buf: bytes, start: int, end: int, flags: int) -> Event:
            return {"int_arg": _unpack_i32(buf, start)[0] if end - start >= 8 else 0}

        return int32
    if kind == L.GEN_KIND_INT:

        def integer(buf: bytes, start: int, end: int, flags: int) -> Event:
            value = int.from_bytes(buf[start : start + 8], "little") if end - start >= 8 else 0
            return _with_label(int_variant(value, typ), info)

        return integer
    if kind == L.GEN_KIND_STR:
        if label:

            def string_labelled(buf: bytes, start: int, end: int, flags: int) -> Event:
                return {"string_arg": buf[start:end].decode("utf-8", "replace"), "label": label}

            return string_labelled

        def string(buf: bytes, start: int, end: int, flags: int) -> Event:
            return {"string_arg": buf[start:end].decode("utf-8", "replace")}

        return string

    def other(buf: bytes, start: int, end: int, flags: int) -> Event:
        return _with_label(arg_variant(GenericArg(kind, flags, index, buf[start:end]), info), info)

    return other


# builder(args, action_id, return_action_id, flags, ret, process, parent, ancestors, node_name, time)
EventBuilder = Callable[[list[Event], int, int, int, int, Any, Any, "list[Any] | None", str, str], Event]


def make_event_builder(hook: HookInfo) -> EventBuilder:
    """generic_event for one hook, with what depends only on the hook decided once (kprobes; the
    other event types call generic_event)."""
    if hook.event != "process_kprobe":

        def general(
            args: list[Event],
            action_id: int,
            return_action_id: int,
            flags: int,
            ret: int,
            process: Any,
            parent: Any,
            ancestors: list[Any] | None,
            node_name: str,
            time: str,
        ) -> Event:
            return generic_event(
                hook,
                args,
                action_id,
                return_action_id,
                flags,
                ret,
                process,
                parent,
                ancestors,
                node_name,
                time,
            )

        return general

    function_name, policy_name, message = hook.function_name, hook.policy_name, hook.message
    tags, return_arg = hook.tags, hook.return_arg
    action_names = ACTION_NAMES
    returned_flag = L.GEN_F_RETURN

    def kprobe(
        args: list[Event],
        action_id: int,
        return_action_id: int,
        flags: int,
        ret: int,
        process: Any,
        parent: Any,
        ancestors: list[Any] | None,
        node_name: str,
        time: str,
    ) -> Event:
        body: Event = {}
        if process is not None:
            body["process"] = process
        if parent is not None:
            body["parent"] = parent
        if function_name:
            body["function_name"] = function_name
        if args:
            body["args"] = args
        returned = flags & returned_flag
        if returned and return_arg is not None:
            body["return"] = _with_label(int_variant(ret, return_arg.type), return_arg)
        action = action_names.get(action_id)
        if action:
            body["action"] = action
        if policy_name:
            body["policy_name"] = policy_name
        if returned:
            return_action = action_names.get(return_action_id)
            if return_action:
                body["return_action"] = return_action
        if message:
            body["message"] = message
        if tags:
            body["tags"] = list(tags)
        if ancestors:
            body["ancestors"] = ancestors
        return {"process_kprobe": body, "node_name": node_name, "time": time}

    return kprobe


class HookPlan:
    """What the pipeline precomputes per hook: argument converters per (blob kind, index), the
    tetragon_policy_events_total labels, the --enable-ancestors kind and the user-space actions."""

    __slots__ = (
        "hook",
        "event",
        "policy_hook",
        "ancestors_kind",
        "user_actions",
        "event_builder",
        "lines",
        "_converters",
        "_layout",
    )

    def __init__(self, hook: HookInfo) -> None:
        self.hook = hook
        self.event = hook.event
        if hook.event == "process_kprobe":
            hook_name = f"kprobe:{hook.function_name}"
        elif hook.event == "process_tracepoint":
            hook_name = f"tracepoint:{hook.subsys}:{hook.tp_event}"
        else:
            hook_name = f"uprobe:{hook.path}:{hook.symbol}"
        self.policy_hook = (hook.policy_name, hook_name)
        self.ancestors_kind = hook.event.removeprefix("process_")
        self.event_builder = make_event_builder(hook)
        self.lines: Any = None  # the agent's events.genline.HookLines, made on first use
        self.user_actions: dict[int, list[Any]] = {}  # selector -> GetUrl / DnsLookup actions (the agent's)
        self._converters: dict[tuple[int, int], Converter] = {}
        # per blob of the last record's layout: (kind, index, converter, position in index order)
        self._layout: tuple[tuple[int, int, Converter, int], ...] = ()

    def args(self, buf: bytes, nargs: int, size: int) -> list[Event]:
        """build_args(decode_generic(buf), hook) for a record whose header decode_header checked:
        the same ValueErrors for blobs that are malformed or overrun `size`.

        Records of one hook nearly always carry the same blobs in the same order (not necessarily
        the index order: the kernel may write the arguments its selectors compare first), so the
        last layout seen — per blob its kind, index, converter and place in the index order — is
        kept and checked blob by blob; any other record takes the general path and is learnt."""
        out = convert_by_layout(self._layout, buf, nargs, size)
        return out if out is not None else self._args_learning(buf, nargs, size)

    def _args_learning(self, buf: bytes, nargs: int, size: int) -> list[Event]:
        """Validate every blob, convert them in index order and remember this record's layout."""
        blobs: list[tuple[int, int, int, int, int]] = []  # kind, flags, index, start, end
        pos = _HEAD_SIZE
        for i in range(nargs):
            if pos + _ARG_SIZE > size:
                raise ValueError(f"argument {i} header at {pos} overruns record size {size}")
            kind, aflags, index, length = _unpack_arg(buf, pos)
            pos += _ARG_SIZE
            if not L.GEN_KIND_INT <= kind <= L.GEN_KIND_CRED:
                raise ValueError(f"argument {i} has unknown kind {kind}")
            if pos + length > size:
                raise ValueError(f"argument {i} payload of {length} bytes overruns record size {size}")
            blobs.append((kind, aflags, index, pos, pos + length))
            pos += length
        # stable, like sorted(rec.args, key=index)
        order = sorted(range(nargs), key=lambda k: blobs[k][2])
        places = [0] * nargs
        for place, k in enumerate(order):
            places[k] = place
        self._layout = tuple(
            (kind, index, self._converter(kind, index), places[k])
            for k, (kind, _, index, _, _) in enumerate(blobs)
        )
        out = []
        for k in order:
            kind, aflags, index, start, end = blobs[k]
            out.append(self._converter(kind, index)(buf, start, end, aflags))
        return out

    def arg_info(self, index: int) -> ArgInfo:
        """The hook's argument at `index`; a blob of an index the hook does not have is untyped."""
        args = self.hook.args
        return args[index] if index < len(args) else ArgInfo(type="")

    def _converter(self, kind: int, index: int) -> Converter:
        conv = self._converters.get((kind, index))
        if conv is None:
            conv = self._converters[(kind, index)] = make_converter(kind, self.arg_info(index), index)
        return conv


# per blob of a record layout: (kind, index, converter, position in index order)
Layout = tuple[tuple[int, int, Callable[[bytes, int, int, int], Any], int], ...]


def convert_by_layout(layout: Layout, buf: bytes, nargs: int, size: int) -> list[Any] | None:
    """The record's blobs converted into their places when they are exactly `layout` (kinds,
    indexes, in order, within `size`); None otherwise, for the caller's validating path."""
    if len(layout) != nargs:
        return None
    out: list[Any] = [None] * nargs
    pos = _HEAD_SIZE
    for want_kind, want_index, conv, place in layout:
        if pos + _ARG_SIZE > size:
            return None
        kind, aflags, index, length = _unpack_arg(buf, pos)
        if kind != want_kind or index != want_index:
            return None
        pos += _ARG_SIZE
        end = pos + length
        if end > size:
            return None
        out[place] = conv(buf, pos, end, aflags)
        pos = end
    return out
