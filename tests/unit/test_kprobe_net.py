"""Kernel functions' network argument types: how `skb`, `sockaddr` (kernel memory), `socket` and
`net_device` are read (their readers and comparisons) and how their blobs render as Tetragon renders
them (`skb_arg`, `sockaddr_arg`, `sock_arg`, `string_arg`), checked through protobuf too.

No BPF is loaded here (tests/vm/test_kprobe_net.py runs them in the guest): the kernel's features are
given as the feature probe would report them.
"""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path
from typing import Any

import pytest

from tetragon.abi import events_h as L
from tetragon.abi import generic_cfg_h as G
from tetragon.api.convert import event_to_proto, proto_to_event
from tetragon.events.decode import GenericArg, decode_generic_header
from tetragon.events.generic_args import arg_variant, with_label
from tetragon.events.genline import HookLines
from tetragon.events.render_plan import RenderPlan
from tetragon.policy.compile import compile_policy
from tetragon.policy.errors import PolicyError
from tetragon.policy.hookinfo import ArgInfo
from tetragon.policy.load import parse_policy

HOST = {"tracepoint": True, "raw_tp": True, "uprobe": True, "signal": True, "kprobe": False}
KPROBE = {**HOST, "kprobe": True, "fentry": True}
TRACEFS = Path(__file__).resolve().parents[1] / "data" / "tracefs"
# sock_arg of an IPv4 TCP sock neither bound nor connected
NEW_TCP_SOCK = {
    "family": "AF_INET",
    "type": "SOCK_STREAM",
    "protocol": "IPPROTO_TCP",
    "saddr": "0.0.0.0",
    "daddr": "0.0.0.0",
}


def _compile(body: str, features: dict[str, bool] = KPROBE):  # type: ignore[no-untyped-def]
    policy = parse_policy(
        f"apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata:\n  name: net\nspec:\n{body}"
    )
    return compile_policy(policy, 3, "enforce", features, tracefs=TRACEFS)


DNS_ONLY = """
  kprobes:
  - call: ip_output
    syscall: false
    args: [{index: 1, type: sock}, {index: 2, type: skb}]
    selectors:
    - matchArgs:
      - {index: 2, operator: Protocol, values: [IPPROTO_TCP, IPPROTO_UDP]}
      - {index: 2, operator: DPort, values: ["53"]}
      - {index: 2, operator: NotDAddr, values: ["127.0.0.53", "10.0.0.0/8", "fd00::/8"]}
      matchActions: [{action: Sigkill}]
"""


def test_skb_is_read_on_kernel_functions_and_compared_as_a_sock() -> None:
    cfg = _compile(DNS_ONLY).hooks[0].cfg
    assert [(cfg.args[i].reader, cfg.args[i].off) for i in range(cfg.nargs)] == [
        (G.RD_SOCK, 1),
        (G.RD_SKB, 2),
    ]
    sel = cfg.sel[0]
    proto, dport, daddr = sel.match[0], sel.match[1], sel.match[2]
    assert (proto.arg, proto.op, proto.cmp, proto.nvals) == (1, G.OP_PROTOCOL, G.CMP_SOCK, 2)
    assert list(proto.lo[:2]) == [6, 17]
    assert (dport.op, dport.nvals, dport.lo[0], dport.hi[0]) == (G.OP_DPORT, 1, 53, 53)
    assert (daddr.op, daddr.nvals) == (G.OP_NOTDADDR, 3)
    assert (daddr.fam[0], daddr.len[0], daddr.lo[0]) == (4, 32, int(ipaddress.IPv4Address("127.0.0.53")))
    assert (daddr.fam[1], daddr.len[1]) == (4, 8)
    assert (daddr.fam[2], daddr.len[2], daddr.lo[2]) == (6, 8, 0xFD00 << 48)


def test_socket_sockaddr_and_net_device_readers() -> None:
    body = """
  kprobes:
  - call: security_socket_connect
    syscall: false
    args: [{index: 0, type: socket}, {index: 1, type: sockaddr}, {index: 2, type: int}]
    selectors:
    - matchArgs:
      - {index: 0, operator: Protocol, values: [IPPROTO_TCP]}
      - {index: 1, operator: Family, values: [AF_INET, AF_INET6]}
      - {index: 1, operator: SAddr, values: ["192.168.1.1"]}
      - {index: 1, operator: SPort, values: ["80"]}
  - call: dev_hard_start_xmit
    syscall: false
    args: [{index: 1, type: net_device}]
    selectors:
    - matchArgs: [{index: 1, operator: Equal, values: [lo]}]
"""
    connect, xmit = (h.cfg for h in _compile(body).hooks)
    assert [connect.args[i].reader for i in range(3)] == [G.RD_SOCKET, G.RD_KSOCKADDR, G.RD_INT]
    assert [connect.sel[0].match[k].cmp for k in range(4)] == [G.CMP_SOCK] + [G.CMP_SOCKADDR] * 3
    assert (connect.sel[0].match[1].lo[0], connect.sel[0].match[1].lo[1]) == (2, 10)
    assert (xmit.args[0].reader, xmit.args[0].off) == (G.RD_NETDEV, 1)
    m = xmit.sel[0].match[0]
    assert (m.op, m.cmp, m.len[0], m.str[0].value) == (G.OP_EQ, G.CMP_STR, 2, b"lo")


def test_syscall_sockaddr_stays_a_user_read() -> None:
    body = """
  kprobes:
  - call: sys_connect
    syscall: true
    args: [{index: 0, type: int}, {index: 1, type: sockaddr}]
"""
    cfg = _compile(body, HOST).hooks[0].cfg
    assert cfg.args[1].reader == G.RD_USOCKADDR


@pytest.mark.parametrize("typ", ["skb", "socket", "net_device"])
def test_kernel_only_types_are_refused_elsewhere(typ: str) -> None:
    body = f"""
  tracepoints:
  - subsystem: syscalls
    event: sys_enter_connect
    args: [{{index: 5, type: {typ}}}]
"""
    with pytest.raises(PolicyError, match=f"{typ} arguments are kernel pointers read on kernel functions"):
        _compile(body, HOST)


def test_network_operators_refused_on_a_net_device() -> None:
    body = """
  kprobes:
  - call: dev_hard_start_xmit
    syscall: false
    args: [{index: 1, type: net_device}]
    selectors:
    - matchArgs: [{index: 1, operator: DPort, values: ["53"]}]
"""
    with pytest.raises(PolicyError, match="operator DPort does not apply to a net_device argument"):
        _compile(body)


# --- rendering -------------------------------------------------------------------------------------


def _skb(family: int, saddr: str, daddr: str, proto: int, sport: int, dport: int, **extra: int) -> bytes:
    size = 16 if family == socket.AF_INET6 else 4
    raw_s = ipaddress.ip_address(saddr).packed.ljust(16, b"\0")[:16]
    raw_d = ipaddress.ip_address(daddr).packed.ljust(16, b"\0")[:16]
    assert len(ipaddress.ip_address(saddr).packed) == size
    return L.GEN_SKB.pack(
        family,
        0,
        proto,
        0,
        extra.get("mark", 0),
        extra.get("priority", 0),
        sport,
        dport,
        0,
        raw_s,
        raw_d,
        extra.get("len", 0),
        extra.get("hash", 0),
        extra.get("sp_len", 0),
        extra.get("sp_olen", 0),
    )


def _render(kind: int, payload: bytes, typ: str, label: str = "") -> dict[str, Any]:
    info = ArgInfo(type=typ, label=label)
    return with_label(arg_variant(GenericArg(kind, 0, 0, payload), info), info)


def _roundtrip(arg: dict[str, Any]) -> None:
    """As a KprobeArgument of a process_kprobe: protobuf parses it and prints it back identically."""
    event = {"process_kprobe": {"function_name": "ip_output", "args": [arg]}, "node_name": "n", "time": "t"}
    event["time"] = "2024-01-01T00:00:00Z"
    assert proto_to_event(event_to_proto(event)) == event


def test_skb_arg_ipv4_udp_every_field() -> None:
    payload = _skb(2, "127.0.0.1", "127.0.0.53", 17, 40000, 53, len=33, hash=7, mark=66, priority=3)
    arg = _render(L.GEN_KIND_SKB, payload, "skb")
    assert arg == {
        "skb_arg": {
            "hash": 7,
            "len": 33,
            "priority": 3,
            "mark": 66,
            "saddr": "127.0.0.1",
            "daddr": "127.0.0.53",
            "sport": 40000,
            "dport": 53,
            "proto": 17,
            "protocol": "IPPROTO_UDP",
            "family": "AF_INET",
        }
    }
    _roundtrip(arg)


def test_skb_arg_ipv6_tcp_secpath_and_zero_fields() -> None:
    payload = _skb(10, "::1", "fd00::2", 6, 1, 443, len=60, sp_len=1, sp_olen=2)
    arg = _render(L.GEN_KIND_SKB, payload, "skb")
    assert arg == {
        "skb_arg": {
            "len": 60,
            "saddr": "::1",
            "daddr": "fd00::2",
            "sport": 1,
            "dport": 443,
            "proto": 6,
            "sec_path_len": 1,
            "sec_path_olen": 2,
            "protocol": "IPPROTO_TCP",
            "family": "AF_INET6",
        }
    }
    _roundtrip(arg)


def test_skb_arg_without_a_network_header_and_short_payload() -> None:
    bare = _render(
        L.GEN_KIND_SKB, L.GEN_SKB.pack(0, 0, 0, 0, 0, 0, 0, 0, 0, bytes(16), bytes(16), 42, 0, 0, 0), "skb"
    )
    assert bare == {"skb_arg": {"len": 42}}
    assert _render(L.GEN_KIND_SKB, b"\0" * 8, "skb") == {"skb_arg": {}}


def test_socket_is_a_sock_arg_and_net_device_a_string_arg() -> None:
    sock = L.GEN_SOCK.pack(2, 1, 6, 7, 0, 0, 0, 0, 0, socket.inet_aton("0.0.0.0") + bytes(12), bytes(16))
    assert _render(L.GEN_KIND_SOCK, sock, "socket", "conn") == {
        "sock_arg": {**NEW_TCP_SOCK, "state": "TCP_CLOSE"},
        "label": "conn",
    }
    assert _render(L.GEN_KIND_STR, b"lo", "net_device") == {"string_arg": "lo"}


# --- socket tracking -------------------------------------------------------------------------------
TCP_ACCEPT_LIKE = """
  kprobes:
  - call: sk_alloc
    syscall: false
    return: true
    args: [{index: 1, type: int, label: family}]
    returnArg: {index: 0, type: sock}
    returnArgAction: TrackSock
    selectors:
    - matchArgs: [{index: 1, operator: Equal, values: ["2"]}]
      matchActions: [{action: NoPost}]
  - call: __sk_free
    syscall: false
    args: [{index: 0, type: int}, {index: 1, type: sock}]
    selectors:
    - matchActions: [{action: UntrackSock, argSock: 1}]
  - call: security_socket_connect
    syscall: false
    args: [{index: 0, type: socket}]
    selectors:
    - matchActions: [{action: TrackSock}]
"""


def test_socket_tracking_configuration() -> None:
    alloc, free, connect = (h.cfg for h in _compile(TCP_ACCEPT_LIKE).hooks)
    assert (alloc.has_return, alloc.ret_reader, alloc.ret_action) == (1, G.RD_SOCK, L.ACTION_TRACKSOCK)
    assert (alloc.sel[0].actions[0].id, alloc.sel_args) == (L.ACTION_NOPOST, 0b1)
    # the sock UntrackSock keys on is read before the actions run, the other argument only after
    assert (free.sel[0].actions[0].id, free.sel[0].actions[0].arg_sock, free.sel_args) == (
        L.ACTION_UNTRACKSOCK,
        1,
        0b10,
    )
    assert (free.ret_reader, free.ret_action) == (0, 0)
    assert (connect.args[0].reader, connect.sel[0].actions[0].id, connect.sel_args) == (
        G.RD_SOCKET,
        L.ACTION_TRACKSOCK,
        0b1,
    )


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (
            "  kprobes:\n  - call: sys_connect\n    syscall: true\n    args: [{index: 0, type: sock}]\n"
            "    selectors: [{matchActions: [{action: TrackSock}]}]\n",
            "argSock 0 is not a sock or socket argument of a kernel function",
        ),
        (
            "  kprobes:\n  - call: tcp_close\n    syscall: false\n    args: [{index: 0, type: sock}]\n"
            "    selectors: [{matchActions: [{action: UntrackSock, argSock: 2}]}]\n",
            "argSock 2 is not a sock or socket argument",
        ),
        (
            "  kprobes:\n  - call: sk_alloc\n    syscall: false\n    return: true\n"
            "    returnArg: {index: 0, type: int}\n    returnArgAction: TrackSock\n",
            "TrackSock needs a returnArg of type sock",
        ),
        (
            "  kprobes:\n  - call: sk_alloc\n    syscall: false\n"
            "    returnArg: {index: 0, type: sock}\n    returnArgAction: TrackSock\n",
            "returnArgAction: requires return: true",
        ),
    ],
)
def test_socket_tracking_refusals(body: str, needle: str) -> None:
    features = HOST if "syscall: true" in body else KPROBE
    with pytest.raises(PolicyError, match=needle):
        _compile(body, features)


def test_a_returned_sock_is_the_events_return() -> None:
    hook = _compile(TCP_ACCEPT_LIKE).hooks[0].info
    plan = RenderPlan(hook)
    sock = L.GEN_SOCK.pack(2, 1, 6, 0, 0, 0, 0, 0, 0, bytes(16), bytes(16))
    blobs = [
        L.GEN_ARG.pack(L.GEN_KIND_INT, 0, 0, 8) + (2).to_bytes(8, "little"),
        L.GEN_ARG.pack(L.GEN_KIND_SOCK, 0, L.GEN_RET_INDEX, len(sock)) + sock,
    ]
    body = b"".join(blobs)
    size = L.MSG_GENERIC.size + len(body)
    raw = L.MSG_GENERIC.pack(
        L.MSG_OP_GENERIC_KPROBE, 0, size, 1, 42, 42, 3, 0, 0, 0, 0, 2, L.GEN_F_RETURN, 0, 0xFFFF8880
    )
    raw += body
    args = plan.args(raw, 2, size)
    event = plan.event_builder(args, 0, 0, L.GEN_F_RETURN, 0xFFFF8880, None, None, None, "n", "t")
    kprobe = event["process_kprobe"]
    assert kprobe["args"] == [{"int_arg": 2, "label": "family"}]
    assert kprobe["return"] == {"sock_arg": NEW_TCP_SOCK}
    # the export line path leaves such hooks to the dict path
    assert HookLines(plan, "n").line(raw, decode_generic_header(raw), None, None, b"t") is None
