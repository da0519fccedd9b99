"""Argument blobs of generic records rendered as Tetragon's KprobeArgument dicts.

What a blob becomes depends on its kind (how the kernel wrote the payload) and on the policy's
argument type (HookInfo.args, matched by the blob's index): an int of type "size_t" is a
`size_arg`, of type "capability" a `capability_arg`, and so on, as Tetragon renders them.
make_converter gives the pipeline one specialised function per (kind, argument).
"""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import Callable

from tetragon.abi import events_h as L
from tetragon.events.decode import GenericArg, unpack_i32
from tetragon.events.generic_args_kern import KERN_KINDS, kern_variant
from tetragon.events.generic_args_net import skb_variant
from tetragon.jsontypes import Event
from tetragon.policy.hookinfo import ArgInfo
from tetragon.process.model import CAP_NAMES, cap_names, securebit_names

_U32 = (1 << 32) - 1
_U64 = (1 << 64) - 1

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


def _signed(value: int, bits: int) -> int:
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def _bpf_cmd_name(value: int) -> str | None:
    # imported here: protobuf (~6 MB of RSS) loads only for a policy with a bpf_cmd argument
    from tetragon.api.gen.tetragon import bpf_pb2

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


# gen_cred's first fields, the ids, keep their names in the ProcessCredentials message
_CRED_IDS = L.GEN_CRED_FIELDS[:8]


def _cred_variant(arg: GenericArg) -> Event:
    if len(arg.payload) < L.GEN_CRED.size:
        return {"process_credentials_arg": {}}
    fields = L.GEN_CRED.unpack_from(arg.payload)
    creds: Event = dict(zip(_CRED_IDS, fields, strict=False))
    securebits, cap_p, cap_e, cap_i, ns_level, ns_uid, ns_gid, ns_inum = fields[len(_CRED_IDS) :]
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
    if kind in KERN_KINDS:
        return kern_variant(arg)
    if kind == L.GEN_KIND_SKB:
        return skb_variant(arg.payload, FAMILY_NAMES, PROTOCOL_NAMES)
    raise ValueError(f"unknown generic argument kind {kind}")


def with_label(variant: Event, info: ArgInfo) -> Event:
    """The variant with the policy argument's label, when it has one."""
    if info.label:
        variant["label"] = info.label
    return variant


# converter(buf, start, end, blob flags) -> the KprobeArgument of one blob's payload buf[start:end]
Converter = Callable[[bytes, int, int, int], Event]


def is_int32(kind: int, info: ArgInfo) -> bool:
    """An int blob rendered as `int_arg` from its low 32 bits, signed: the converters' common case."""
    return kind == L.GEN_KIND_INT and _SIGNED_BITS.get(info.type) == 32


def make_converter(kind: int, info: ArgInfo, index: int) -> Converter:
    """A converter equal to `with_label(arg_variant(GenericArg(kind, flags, index, payload), info), info)`,
    specialised for the common argument types."""
    label, typ = info.label, info.type
    if is_int32(kind, info):
        # the low 32 bits of the little-endian u64, signed
        if label:

            def int32_labelled(buf: bytes, start: int, end: int, flags: int) -> Event:
                return {"int_arg": unpack_i32(buf, start)[0] if end - start >= 8 else 0, "label": label}

            return int32_labelled

        def int32(buf: bytes, start: int, end: int, flags: int) -> Event:
            return {"int_arg": unpack_i32(buf, start)[0] if end - start >= 8 else 0}

        return int32
    if kind == L.GEN_KIND_INT:

        def integer(buf: bytes, start: int, end: int, flags: int) -> Event:
            value = int.from_bytes(buf[start : start + 8], "little") if end - start >= 8 else 0
            return with_label(int_variant(value, typ), info)

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
        return with_label(arg_variant(GenericArg(kind, flags, index, buf[start:end]), info), info)

    return other
