"""Listening for the gRPC server: TCP address checks, TLS credentials, stale unix sockets."""

from __future__ import annotations

import errno
import socket
import stat
from pathlib import Path

import grpc

from tetragon.api.access import ServerOptions, listen_error

__all__ = ["ServerStartError", "check_tcp_free", "remove_stale_socket", "tls_credentials"]


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
