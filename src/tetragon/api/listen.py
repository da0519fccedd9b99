"""Listening for the gRPC server: TCP sockets and address checks, TLS credentials, stale unix sockets."""

from __future__ import annotations

import contextlib
import errno
import socket
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from tetragon.api.access import ServerOptions, listen_error
from tetragon.api.relay import PeerRelay

if TYPE_CHECKING:
    import grpc

__all__ = [
    "ServerStartError",
    "bind_tcp",
    "check_tcp_free",
    "listen_relay",
    "remove_stale_socket",
    "remove_unix_socket",
    "tls_credentials",
]


class ServerStartError(RuntimeError):
    """The server could not listen on its address."""


def tls_credentials(opts: ServerOptions, address: str) -> grpc.ServerCredentials | None:
    """TLS with required client certificates (None: plaintext, only allowed on loopback)."""
    error = listen_error(address, opts)
    if error is not None:
        raise ServerStartError(error)
    if not opts.tls:
        return None
    try:
        cert = Path(opts.tls_cert_file).read_bytes()
        key = Path(opts.tls_key_file).read_bytes()
        cas = b"".join(Path(f).read_bytes() for f in opts.tls_client_ca_files)
    except OSError as exc:
        raise ServerStartError(f"cannot read TLS file {exc.filename}: {exc.strerror}") from exc
    import grpc  # only with TLS: the agent imports grpcio when gRPC first starts otherwise

    return grpc.ssl_server_credentials([(key, cert)], root_certificates=cas, require_client_auth=True)


def remove_stale_socket(path: Path, address: str) -> None:
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ServerStartError(f"cannot listen on {address}: {path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(str(path))
    except OSError as exc:
        if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT):
            raise ServerStartError(f"cannot listen on {address}: {exc.strerror}") from exc
        path.unlink(missing_ok=True)  # nobody listens: a leftover of a previous run
        return
    finally:
        probe.close()
    raise ServerStartError(f"cannot listen on {address}: another server is listening on {path}")


def check_tcp_free(address: str) -> None:
    host_text, _, port_text = address.rpartition(":")
    host = host_text.strip("[]") or None
    try:
        port = int(port_text)
    except ValueError:
        raise ServerStartError(f"invalid server address {address!r}: bad port {port_text!r}") from None
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ServerStartError(f"cannot listen on {address}: {exc.strerror}") from exc
    for family, kind, proto, _, sockaddr in infos:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(sockaddr)
            except OSError as exc:
                if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                    raise ServerStartError(f"cannot listen on {address}: {exc.strerror}") from exc


def bind_tcp(address: str) -> tuple[list[socket.socket], int]:
    """Sockets bound to every address `host:port` resolves to (`:port`: every interface), not yet
    listening, and their port (the one the system picked for port 0)."""
    host_text, _, port_text = address.rpartition(":")
    host = host_text.strip("[]")
    if not port_text.isdigit() or int(port_text) > 65535:
        raise ServerStartError(f"invalid server address {address!r}: bad port {port_text!r}")
    port = int(port_text)
    try:
        if host:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        else:  # Tetragon's `:port`: every interface, IPv4 through the IPv6 socket
            infos = [(socket.AF_INET6, socket.SOCK_STREAM, 0, "", ("::", port, 0, 0))]
    except socket.gaierror as exc:
        raise ServerStartError(f"cannot listen on {address}: {exc.strerror}") from exc
    bound: list[socket.socket] = []
    seen: set[tuple[int, str]] = set()
    try:
        for family, kind, proto, _, sockaddr in infos:
            key = (int(family), str(sockaddr[0]))
            if key in seen:
                continue
            seen.add(key)
            sock = socket.socket(family, kind, proto)
            bound.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # not SO_REUSEPORT: busy is busy
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1 if host else 0)
            sock.bind((sockaddr[0], port, *sockaddr[2:]))
            port = port or sock.getsockname()[1]  # port 0: the others take the first one's
    except OSError as exc:
        for sock in bound:
            sock.close()
        raise ServerStartError(f"cannot listen on {address}: {exc.strerror}") from exc
    return bound, port


def listen_relay(relay: PeerRelay, address: str) -> tuple[int | None, tuple[Path, int] | None]:
    """Bind `address` (`host:port`, `:port` or `unix:///path`) for the relay: the TCP port, or the
    unix socket's path and inode (for remove_unix_socket)."""
    if address.startswith("unix://"):
        path = Path(address.removeprefix("unix://"))
        if not path.is_absolute():
            raise ServerStartError(f"invalid server address {address!r}: unix socket path must be absolute")
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_socket(path, address)
        try:
            relay.listen_unix(path)
        except OSError as exc:
            raise ServerStartError(f"cannot listen on {address}: {exc.strerror}") from exc
        return None, (path, path.stat().st_ino)
    if ":" not in address:
        raise ServerStartError(f"invalid server address {address!r}: expected host:port or unix:///path")
    listeners, port = bind_tcp(address)
    try:
        relay.listen_tcp(listeners, port)
    except OSError as exc:
        raise ServerStartError(f"cannot listen on {address}: {exc.strerror}") from exc
    return port, None


def remove_unix_socket(socket_file: tuple[Path, int] | None) -> None:
    """Remove the socket listen_relay made, unless a successor has replaced it."""
    if socket_file is None:
        return
    path, inode = socket_file
    with contextlib.suppress(FileNotFoundError):
        if path.stat().st_ino == inode:
            path.unlink()
