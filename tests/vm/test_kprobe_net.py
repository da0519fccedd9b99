"""Runs inside the qemu guest (tests/vm/run_vm.py): the network argument types of kernel functions —
`skb` (IPv4 and IPv6), `sock`, `socket`, `sockaddr` from kernel memory and `net_device` — with the
network operators Tetragon's examples use on them (Protocol, DPort, SPort, DAddr, NotDAddr, Family,
CIDRs), through the real agent with one policy of several hooks (one agent start for the file).

Workloads are real sockets over the loopback device (UDP datagrams, a TCP connect, a DNS-style
datagram to port 53); each hook filters on a port of its own, so every event asserted here comes from
the workload the test ran, and each is checked field by field as Tetragon exports it.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.agentproc import AgentProcess, body, free_port
from tests.vm.guestagent import guest_agent, kprobe_of

pytestmark = pytest.mark.vm

P_UDP, P_UDP6, P_TCP, P_XMIT, P_TRACK, P_TRACK6 = (free_port() for _ in range(6))
MARK, PRIORITY = 66, 3
MARKER = Path(f"/tmp/kprobe-net-{uuid.uuid4().hex[:8]}")
UDP_LEN = 20 + 8 + 5  # IPv4 header, UDP header, b"hello"

POLICY = f"""apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: vm-kprobe-net
spec:
  kprobes:
  - call: ip_output
    syscall: false
    args: [{{index: 1, type: sock}}, {{index: 2, type: skb, label: datagram}}]
    selectors:
    - matchArgs:
      - {{index: 2, operator: Protocol, values: [IPPROTO_UDP]}}
      - {{index: 2, operator: DPort, values: ["{P_UDP}"]}}
      - {{index: 2, operator: DAddr, values: ["127.0.0.1/8"]}}
  - call: ip_output
    syscall: false
    args: [{{index: 2, type: skb}}]
    selectors:
    - matchArgs:
      - {{index: 2, operator: Protocol, values: [IPPROTO_TCP, IPPROTO_UDP]}}
      - {{index: 2, operator: DPort, values: ["53"]}}
      - {{index: 2, operator: NotDAddr, values: ["127.0.0.53"]}}
      matchActions: [{{action: Sigkill}}]
  - call: ip6_output
    syscall: false
    args: [{{index: 2, type: skb}}]
    selectors:
    - matchArgs:
      - {{index: 2, operator: Protocol, values: [IPPROTO_UDP]}}
      - {{index: 2, operator: DAddr, values: ["::1/128"]}}
      - {{index: 2, operator: DPort, values: ["{P_UDP6}"]}}
  - call: tcp_connect
    syscall: false
    args: [{{index: 0, type: sock}}]
    selectors:
    - matchArgs:
      - {{index: 0, operator: DAddr, values: ["127.0.0.1/8", "192.168.0.0/16"]}}
      - {{index: 0, operator: DPort, values: ["{P_TCP}"]}}
  - call: security_socket_connect
    syscall: false
    args: [{{index: 0, type: socket}}, {{index: 1, type: sockaddr}}, {{index: 2, type: int}}]
    selectors:
    - matchArgs:
      - {{index: 0, operator: Protocol, values: [IPPROTO_TCP]}}
      - {{index: 1, operator: Family, values: [AF_INET, AF_INET6]}}
      - {{index: 1, operator: SPort, values: ["{P_TCP}"]}}
  - call: dev_hard_start_xmit
    syscall: false
    args: [{{index: 0, type: skb}}, {{index: 1, type: net_device}}]
    selectors:
    - matchArgs:
      - {{index: 1, operator: Equal, values: [lo]}}
      - {{index: 0, operator: DPort, values: ["{P_XMIT}"]}}
  - call: sk_alloc
    syscall: false
    return: true
    args: [{{index: 1, type: int, label: family}}]
    returnArg: {{index: 0, type: sock}}
    returnArgAction: TrackSock
    selectors:
    - matchArgs: [{{index: 1, operator: Equal, values: ["2"]}}]
    - matchArgs: [{{index: 1, operator: Equal, values: ["10"]}}]
      matchActions: [{{action: NoPost}}]
  - call: __sk_free
    syscall: false
    args: [{{index: 0, type: sock}}]
    selectors:
    - matchActions: [{{action: UntrackSock, argSock: 0}}, {{action: NoPost}}]
  - call: sk_filter_trim_cap
    syscall: false
    args: [{{index: 0, type: sock}}, {{index: 1, type: skb}}]
    selectors:
    - matchArgs: [{{index: 1, operator: DPort, values: ["{P_TRACK}", "{P_TRACK6}"]}}]
"""


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    with guest_agent(tmp_path_factory.mktemp("kprobe-net-agent"), POLICY) as agent:
        yield agent


def _run(code: str) -> tuple[subprocess.CompletedProcess[str], int]:
    """The child's result and its pid (the child prints nothing else than what `code` prints)."""
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    out, _ = child.communicate(timeout=120)
    return subprocess.CompletedProcess(child.args, child.returncode, out), child.pid


def _udp_sender(dest: str, port: int, family: str = "AF_INET") -> str:
    return (
        "import socket\n"
        f"s = socket.socket(socket.{family}, socket.SOCK_DGRAM)\n"
        f"s.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, {MARK})\n"
        f"s.setsockopt(socket.SOL_SOCKET, socket.SO_PRIORITY, {PRIORITY})\n"
        f"s.bind(({dest!r}, 0))\n"
        f"s.sendto(b'hello', ({dest!r}, {port}))\n"
        "print(s.getsockname()[1], flush=True)\n"
    )


def _without_cookie_and_hash(arg: dict[str, Any]) -> dict[str, Any]:
    """The kernel's socket cookie and packet hash are not the workload's to choose: checked for their
    type, then left out of the exact comparison."""
    variant, value = next(iter(arg.items()))
    if not isinstance(value, dict):
        return arg
    inner = dict(value)
    if "cookie" in inner:
        assert int(inner.pop("cookie")) > 0
    if "hash" in inner:
        assert isinstance(inner.pop("hash"), int)
    return {variant: inner, **{k: v for k, v in arg.items() if k == "label"}}


def test_udp_datagram_skb_and_sock_on_ip_output(agent: AgentProcess) -> None:
    result, pid = _run(_udp_sender("127.0.0.1", P_UDP))
    assert result.returncode == 0
    sport = int(result.stdout)
    ev = agent.wait_for(kprobe_of(pid, "ip_output"), timeout=60)
    b = body(ev)
    sock, skb = (_without_cookie_and_hash(a) for a in b["args"])
    assert sock == {
        "sock_arg": {
            "family": "AF_INET",
            "type": "SOCK_DGRAM",
            "protocol": "IPPROTO_UDP",
            "mark": MARK,
            "priority": PRIORITY,
            "saddr": "127.0.0.1",
            "daddr": "0.0.0.0",
            "sport": sport,
            "state": "TCP_CLOSE",
        }
    }
    assert skb == {
        "skb_arg": {
            "len": UDP_LEN,
            "priority": PRIORITY,
            "mark": MARK,
            "saddr": "127.0.0.1",
            "daddr": "127.0.0.1",
            "sport": sport,
            "dport": P_UDP,
            "proto": 17,
            "protocol": "IPPROTO_UDP",
            "family": "AF_INET",
        },
        "label": "datagram",
    }
    assert b["policy_name"] == "vm-kprobe-net"
    assert b["action"] == "KPROBE_ACTION_POST"
    assert b["process"]["binary"] in (sys.executable, str(Path(sys.executable).resolve()))


def test_dns_to_an_unlisted_server_is_killed_the_listed_one_is_not(agent: AgentProcess) -> None:
    code = (
        "import socket\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "s.sendto(b'\\0' * 12, ('127.0.0.53', 53))\n"
        "print(s.getsockname()[1], flush=True)\n"
        "s.sendto(b'\\0' * 12, ('127.0.0.2', 53))\n"
        f"open({str(MARKER)!r}, 'w').close()\n"
    )
    result, pid = _run(code)
    assert result.returncode == -9
    assert not MARKER.exists()
    sport = int(result.stdout)
    ev = agent.wait_for(kprobe_of(pid, "ip_output"), timeout=60)
    b = body(ev)
    assert b["action"] == "KPROBE_ACTION_SIGKILL"
    assert [_without_cookie_and_hash(a) for a in b["args"]] == [
        {
            "skb_arg": {
                "len": 20 + 8 + 12,
                "saddr": "127.0.0.1",
                "daddr": "127.0.0.2",
                "sport": sport,
                "dport": 53,
                "proto": 17,
                "protocol": "IPPROTO_UDP",
                "family": "AF_INET",
            }
        }
    ]
    # the datagram to the listed server came first and matched no selector
    mine = [e for e in agent.read_events() if kprobe_of(pid, "ip_output")(e)]
    assert len(mine) == 1, mine


def test_ipv6_datagram_skb_on_ip6_output(agent: AgentProcess) -> None:
    result, pid = _run(_udp_sender("::1", P_UDP6, "AF_INET6"))
    assert result.returncode == 0
    sport = int(result.stdout)
    ev = agent.wait_for(kprobe_of(pid, "ip6_output"), timeout=60)
    assert [_without_cookie_and_hash(a) for a in body(ev)["args"]] == [
        {
            "skb_arg": {
                "len": 40 + 8 + 5,
                "priority": PRIORITY,
                "mark": MARK,
                "saddr": "::1",
                "daddr": "::1",
                "sport": sport,
                "dport": P_UDP6,
                "proto": 17,
                "protocol": "IPPROTO_UDP",
                "family": "AF_INET6",
            }
        }
    ]


def test_tcp_connect_sock_and_security_socket_connect_socket_sockaddr(agent: AgentProcess) -> None:
    with socket.create_server(("127.0.0.1", P_TCP)) as server:
        code = (
            "import socket\n"
            f"c = socket.create_connection(('127.0.0.1', {P_TCP}))\n"
            "print(c.getsockname()[1], flush=True)\n"
        )
        result, pid = _run(code)
        conn, _ = server.accept()
        conn.close()
    assert result.returncode == 0
    sport = int(result.stdout)
    ev = agent.wait_for(kprobe_of(pid, "security_socket_connect"), timeout=60)
    assert [_without_cookie_and_hash(a) for a in body(ev)["args"]] == [
        {
            "sock_arg": {
                "family": "AF_INET",
                "type": "SOCK_STREAM",
                "protocol": "IPPROTO_TCP",
                "saddr": "0.0.0.0",
                "daddr": "0.0.0.0",
                "state": "TCP_CLOSE",
            }
        },
        {"sockaddr_arg": {"family": "AF_INET", "addr": "127.0.0.1", "port": P_TCP}},
        {"int_arg": 16},
    ]
    ev = agent.wait_for(kprobe_of(pid, "tcp_connect"), timeout=60)
    assert [_without_cookie_and_hash(a) for a in body(ev)["args"]] == [
        {
            "sock_arg": {
                "family": "AF_INET",
                "type": "SOCK_STREAM",
                "protocol": "IPPROTO_TCP",
                "saddr": "127.0.0.1",
                "daddr": "127.0.0.1",
                "sport": sport,
                "dport": P_TCP,
                "state": "TCP_SYN_SENT",
            }
        }
    ]


def test_net_device_name_and_skb_on_dev_hard_start_xmit(agent: AgentProcess) -> None:
    result, pid = _run(_udp_sender("127.0.0.1", P_XMIT))
    assert result.returncode == 0
    sport = int(result.stdout)
    ev = agent.wait_for(kprobe_of(pid, "dev_hard_start_xmit"), timeout=60)
    skb, dev = (_without_cookie_and_hash(a) for a in body(ev)["args"])
    assert dev == {"string_arg": "lo"}
    assert skb == {
        "skb_arg": {
            "len": 14 + UDP_LEN,  # the loopback device's Ethernet header is on by now
            "priority": PRIORITY,
            "mark": MARK,
            "saddr": "127.0.0.1",
            "daddr": "127.0.0.1",
            "sport": sport,
            "dport": P_XMIT,
            "proto": 17,
            "protocol": "IPPROTO_UDP",
            "family": "AF_INET",
        }
    }


@pytest.mark.parametrize(
    ("family", "addr", "port"), [("AF_INET", "127.0.0.1", P_TRACK), ("AF_INET6", "::1", P_TRACK6)]
)
def test_a_tracked_sock_attributes_the_receive_path_to_its_owner(
    agent: AgentProcess, family: str, addr: str, port: int
) -> None:
    """TrackSock on sk_alloc's returned sock (posted for AF_INET; NoPost for AF_INET6, as tcp-listen.yaml
    does, and tracked all the same): the datagram another process sends is filtered on the receiving
    sock (sk_filter_trim_cap) in the sender's context, and reported as the receiver's."""
    receiver = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import socket\n"
            f"s = socket.socket(socket.{family}, socket.SOCK_DGRAM)\n"
            f"s.bind(({addr!r}, {port}))\n"
            "print('ready', flush=True)\n"
            "s.recv(16)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert receiver.stdout is not None and receiver.stdout.readline() == "ready\n"
    sender, sender_pid = _run(
        "import socket\n"
        f"s = socket.socket(socket.{family}, socket.SOCK_DGRAM)\n"
        f"s.sendto(b'hello', ({addr!r}, {port}))\n"
        "print(s.getsockname()[1], flush=True)\n"
    )
    assert sender.returncode == 0 and receiver.wait(timeout=60) == 0
    sport = int(sender.stdout)
    ev = agent.wait_for(kprobe_of(receiver.pid, "sk_filter_trim_cap"), timeout=60)
    b = body(ev)
    assert b["process"]["tid"] == receiver.pid
    v6 = family == "AF_INET6"
    sock, skb = (_without_cookie_and_hash(a) for a in b["args"])
    assert sock == {
        "sock_arg": {
            "family": family,
            "type": "SOCK_DGRAM",
            "protocol": "IPPROTO_UDP",
            "saddr": addr,
            "daddr": "::" if v6 else "0.0.0.0",
            "sport": port,
            "state": "TCP_CLOSE",
        }
    }
    assert skb == {
        "skb_arg": {
            "len": 8 + 5,  # the UDP header and the payload: the IP header is pulled by now
            "saddr": addr,
            "daddr": addr,
            "sport": sport,
            "dport": port,
            "proto": 17,
            "protocol": "IPPROTO_UDP",
            "family": family,
        }
    }
    events = agent.read_events()
    assert not any(kprobe_of(sender_pid, "sk_filter_trim_cap")(e) for e in events)
    if v6:  # NoPost: tracked, not reported
        assert not any(kprobe_of(receiver.pid, "sk_alloc")(e) for e in events)
        return
    b = body(agent.wait_for(kprobe_of(receiver.pid, "sk_alloc"), timeout=60))
    assert b["args"] == [{"int_arg": 2, "label": "family"}]
    assert _without_cookie_and_hash(b["return"]) == {
        "sock_arg": {"family": "AF_INET", "saddr": "0.0.0.0", "daddr": "0.0.0.0"}
    }
    assert b["return_action"] == "KPROBE_ACTION_POST"
