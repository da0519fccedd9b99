"""Connection caps for the gRPC server's TCP listener, per peer and in total.

gRPC Python gives no hook at accept time (and ignores grpc.max_allowed_incoming_connections), so a
thread looks at the kernel's socket tables once a second instead: every established connection to
the server's port, keyed by its peer (the uid owning the client socket when the client is on this
host, else the client's address). Connections beyond `per_peer` for one peer (root and the agent's
own uid exempt), or beyond `total` altogether (taken from the peers with the most), are shut down
on the server side; gRPC then sees the peer go and closes its end. So idle connections from one
user cannot use up the agent's file descriptors and lock out everyone else.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["ConnectionReaper", "server_connections"]

log = logging.getLogger(__name__)

_ESTABLISHED = "01"
_PERIOD = 1.0


@dataclass(frozen=True)
class Connection:
    peer: str  # "uid N" or "address HEX"
    inode: int
    uid: int | None


def server_connections(port: int, proc: str = "/proc") -> list[Connection]:
    """Established connections to local `port`, each with its peer (see the module docstring)."""
    client_uid: dict[str, int] = {}
    served: list[tuple[str, int]] = []  # (peer's address:port as printed, server socket inode)
    wanted = f":{port:04X}"
    for table in ("tcp", "tcp6"):
        try:
            with open(f"{proc}/net/{table}") as rows:
                next(rows, None)
                for row in rows:
                    cols = row.split()
                    if cols[3] != _ESTABLISHED:
                        continue
                    if cols[2].endswith(wanted):
                        client_uid[_normal(cols[1])] = int(cols[7])
                    if cols[1].endswith(wanted):
                        served.append((_normal(cols[2]), int(cols[9])))
        except FileNotFoundError:
            continue
    conns = []
    for remote, inode in served:
        uid = client_uid.get(remote)
        peer = f"uid {uid}" if uid is not None else f"address {remote.rpartition(':')[0]}"
        conns.append(Connection(peer, inode, uid))
    return conns


def _normal(address: str) -> str:
    """An IPv4-mapped IPv6 address as printed in tcp6 -> its IPv4 form as printed in tcp."""
    host, _, port = address.partition(":")
    if len(host) == 32 and host.startswith("0000000000000000FFFF0000"):
        host = host[24:]
    return f"{host}:{port}"


def _socket_fds() -> dict[int, int]:
    """This process's socket inodes -> fd."""
    fds: dict[int, int] = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue
        if target.startswith("socket:["):
            fds[int(target[8:-1])] = int(name)
    return fds


def _shut_down(fd: int, inode: int) -> bool:
    try:
        dup = os.dup(fd)
    except OSError:
        return False
    try:
        if os.fstat(dup).st_ino != inode:  # the fd was reused meanwhile
            return False
        with socket.socket(fileno=dup) as sock:
            dup = -1
            sock.shutdown(socket.SHUT_RDWR)
        return True
    except OSError:
        return False
    finally:
        if dup >= 0:
            os.close(dup)


def over_limits(conns: list[Connection], per_peer: int, total: int, exempt: set[int]) -> list[Connection]:
    """The connections to close: each peer's beyond per_peer, then the biggest peers' beyond total."""
    by_peer: dict[str, list[Connection]] = defaultdict(list)
    for conn in conns:
        by_peer[conn.peer].append(conn)
    doomed: list[Connection] = []
    for peer_conns in by_peer.values():
        if peer_conns[0].uid not in exempt and len(peer_conns) > per_peer:
            doomed += peer_conns[per_peer:]
            del peer_conns[per_peer:]
    remaining = sum(len(c) for c in by_peer.values())
    while remaining > total:
        biggest = max(by_peer.values(), key=len)
        doomed.append(biggest.pop())
        remaining -= 1
    return doomed


class ConnectionReaper:
    def __init__(self, port: Callable[[], int | None], *, per_peer: int, total: int) -> None:
        self._port = port
        self.per_peer = per_peer
        self.total = total
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="grpc-conn-cap", daemon=True)
        self.closed = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(_PERIOD):
            port = self._port()
            if port:
                self.enforce(port)

    def enforce(self, port: int) -> int:
        fds = _socket_fds()
        if len(fds) <= min(self.per_peer, self.total):
            return 0  # too few sockets to break a limit: skip reading the host's socket tables
        doomed = over_limits(server_connections(port), self.per_peer, self.total, {0, os.geteuid()})
        if not doomed:
            return 0
        closed: dict[str, int] = defaultdict(int)
        for conn in doomed:
            fd = fds.get(conn.inode)
            if fd is not None and _shut_down(fd, conn.inode):
                closed[conn.peer] += 1
        for peer, count in closed.items():
            log.warning(
                "gRPC: closed %d connections of %s (limits: %d per peer, %d in total)",
                count, peer, self.per_peer, self.total,
            )  # fmt: skip
        self.closed += sum(closed.values())
        return sum(closed.values())
