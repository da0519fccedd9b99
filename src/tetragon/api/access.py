"""Who may call the gRPC API: the peer's uid, found from the connection, against an access rule.

Tetragon lets anyone who can connect call anything; on a shared host that means any local user could
load an enforcement policy (Sigkill on root's processes) or read every user's command lines. Here:

* RPCs are read-only (events, health, version, policy list, debug get) or admin (everything that
  changes state). An RPC not listed as read-only is admin.
* uid 0 and the agent's own uid may call anything; `--server-allow-uids/-gids` add readers,
  `--server-admin-uids/-gids` add callers of every RPC. A gid matches the uid's groups in the user
  database (primary and supplementary).
* TCP from this host (loopback or not): the kernel's socket table (/proc/net/tcp{,6}) names the
  owner of the client's socket: the row whose local address:port is the peer's and whose remote
  port is the server's.
* Unix socket: the peer's SO_PEERCRED. gRPC does not expose it, so the agent accepts on the public
  path itself and relays to gRPC on a private socket, naming each relayed connection after the
  credentials (tetragon.api.relay). The public socket is 0666: the rule, not the file mode, decides.
* TCP beyond loopback: only with TLS and required client certificates (the server refuses to start
  otherwise); a peer elsewhere with a verified certificate may call anything, as with Tetragon.

Refused calls get PERMISSION_DENIED and one log line with the uid; nothing else happens
(tetragon.api.interceptor applies the rule; this module does not import grpc, so the command line
can build ServerOptions without waiting for it).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import pwd
import socket
import struct
import sys
from collections.abc import Iterable
from contextvars import ContextVar
from dataclasses import dataclass, field
from urllib.parse import unquote

__all__ = [
    "CALLER_UID",
    "READ_ONLY_RPCS",
    "AccessRule",
    "ServerOptions",
    "listen_error",
    "local_peer_uid",
    "tcp_client_uid",
]

log = logging.getLogger(__name__)

# the uid of the gRPC call being served, set by the interceptor (None: a remote TLS peer)
CALLER_UID: ContextVar[int | None] = ContextVar("tetragon_caller_uid", default=None)

READ_ONLY_RPCS = frozenset(
    {
        "GetEvents",
        "GetHealth",
        "GetVersion",
        "GetInfo",
        "ListDomains",
        "ListTracingPolicies",
        "GetDebug",
        "ListSensors",
        "GetStackTraceTree",
    }
)
_ESTABLISHED = "01"
# sock_diag (linux/sock_diag.h, linux/inet_diag.h): one socket looked up by its 4-tuple
_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST = 1
_NLMSG_ERROR = 2
_NLMSGHDR = struct.Struct("=IHHII")
_DIAG_REQ = struct.Struct("=BBBBI2s2s16s16sIII")  # family, protocol, ext, pad, states, then the sockid
_DIAG_UID_OFFSET = _NLMSGHDR.size + 4 + 48 + 12  # inet_diag_msg: 4 bytes, sockid, expires/rqueue/wqueue


@dataclass(frozen=True)
class AccessRule:
    read_uids: frozenset[int] = frozenset()
    read_gids: frozenset[int] = frozenset()
    admin_uids: frozenset[int] = frozenset()
    admin_gids: frozenset[int] = frozenset()

    def allows(self, uid: int, gids: Iterable[int], *, admin: bool) -> bool:
        if uid in (0, os.geteuid()) or uid in self.admin_uids:
            return True
        groups = set(gids)
        if groups & self.admin_gids:
            return True
        return not admin and (uid in self.read_uids or bool(groups & self.read_gids))

    @property
    def default(self) -> bool:
        return not (self.read_uids or self.read_gids or self.admin_uids or self.admin_gids)


@dataclass(frozen=True)
class ServerOptions:
    """The `--server-*` flags other than the address."""

    access: AccessRule = field(default_factory=AccessRule)
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_client_ca_files: tuple[str, ...] = ()
    max_event_streams: int = 256
    max_event_streams_per_peer: int = 32  # per uid, root exempt
    max_connections_per_peer: int = 64  # per uid on this host (root exempt), or per remote address
    max_connections: int = 1024

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert_file or self.tls_key_file)


def listen_error(address: str, options: ServerOptions) -> str | None:
    """Why the server must not listen on `address` with these options (None: it may)."""
    if not address or address.startswith("unix://"):
        return None
    if not options.tls:
        if not is_loopback_host(address.rpartition(":")[0]):
            return (
                f"--server-address {address} accepts connections from other hosts: it needs"
                " --server-tls-cert-file, --server-tls-key-file and --server-tls-client-ca-files"
                " (clients must present certificates); or listen on localhost:PORT or unix:///PATH"
            )
        return None
    if not (options.tls_cert_file and options.tls_key_file and options.tls_client_ca_files):
        return "TLS needs --server-tls-cert-file, --server-tls-key-file and --server-tls-client-ca-files"
    return None


def user_groups(uid: int) -> set[int]:
    """The uid's primary and supplementary groups from the user database (empty when unknown)."""
    try:
        entry = pwd.getpwuid(uid)
        return set(os.getgrouplist(entry.pw_name, entry.pw_gid))
    except (KeyError, OSError):
        return set()


def is_loopback_host(host: str) -> bool:
    """Whether every address `host` names is a loopback address ('' = every interface: no)."""
    host = host.strip("[]")
    if not host:
        return False
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


def parse_peer(peer: str) -> tuple[int, str, int] | None:
    """gRPC's `ipv4:127.0.0.1:4242` / `ipv6:%5B::1%5D:4242` -> (family, address, port)."""
    kind, _, rest = unquote(peer).partition(":")
    host, _, port = rest.rpartition(":")
    if kind not in ("ipv4", "ipv6") or not port.isdigit():
        return None
    family = socket.AF_INET if kind == "ipv4" else socket.AF_INET6
    return family, host.strip("[]").split("%")[0], int(port)


def _proc_hex(family: int, address: str) -> str:
    """An address as /proc/net/tcp{,6} prints it: each 32-bit word in host byte order, in hex."""
    packed = socket.inet_pton(family, address)
    words = (int.from_bytes(packed[i : i + 4], sys.byteorder) for i in range(0, len(packed), 4))
    return "".join(f"{w:08X}" for w in words)


def local_peer_uid(peer: str, server_port: int, proc: str = "/proc") -> int | None:
    """The uid owning the client end of a TCP connection from this host (any of its addresses, in
    the agent's network namespace); None when the client is elsewhere, or when two sockets have that
    local address with different owners."""
    parsed = parse_peer(peer)
    if parsed is None:
        return None
    family, address, port = parsed
    # a client may use an IPv6 socket for an IPv4 peer (gRPC does): then its row is in tcp6, mapped
    try:
        wanted = {
            ("tcp6" if family == socket.AF_INET6 else "tcp", f"{_proc_hex(family, address)}:{port:04X}")
        }
        if family == socket.AF_INET:
            wanted.add(("tcp6", f"{_proc_hex(socket.AF_INET6, '::ffff:' + address)}:{port:04X}"))
    except (OSError, ValueError):  # not an address gRPC would print: nobody we can name
        return None
    remote_port = f":{server_port:04X}"
    uids: set[int] = set()
    for table in sorted({t for t, _ in wanted}):
        locals_ = {local for t, local in wanted if t == table}
        try:
            with open(f"{proc}/net/{table}") as rows:
                next(rows, None)
                for row in rows:
                    cols = row.split()
                    if cols[1] in locals_ and cols[2].endswith(remote_port) and cols[3] == _ESTABLISHED:
                        uids.add(int(cols[7]))
        except FileNotFoundError:  # no IPv6 in this kernel
            continue
        except OSError as exc:
            log.warning("cannot read %s/net/%s to identify a gRPC peer: %s", proc, table, exc.strerror)
            return None
    return uids.pop() if len(uids) == 1 else None


def tcp_client_uid(family: int, client: tuple[str, int], server: tuple[str, int]) -> int | None:
    """The uid owning the client end of an established TCP connection from this host (the agent's
    network namespace), asked of the kernel for that one socket (sock_diag); None when there is no
    such socket here (the client is elsewhere)."""
    packed = [socket.inet_pton(family, host).ljust(16, b"\0") for host in (client[0], server[0])]
    body = _DIAG_REQ.pack(
        family, socket.IPPROTO_TCP, 0, 0, 0xFFFFFFFF,
        client[1].to_bytes(2, "big"), server[1].to_bytes(2, "big"), packed[0], packed[1],
        0, 0xFFFFFFFF, 0xFFFFFFFF,
    )  # fmt: skip
    header = _NLMSGHDR.pack(_NLMSGHDR.size + len(body), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST, 1, 0)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as nl:
        nl.settimeout(1.0)
        nl.send(header + body)
        reply = nl.recv(4096)
    _, kind, _, _, _ = _NLMSGHDR.unpack_from(reply)
    if kind == _NLMSG_ERROR or len(reply) < _DIAG_UID_OFFSET + 4:
        return None  # ENOENT: not a socket of this host
    return int(struct.unpack_from("=I", reply, _DIAG_UID_OFFSET)[0])
