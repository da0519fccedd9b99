"""The API's listener: the agent accepts, learns who connected, and relays to gRPC on a private socket.

gRPC Python tells a handler neither a unix peer's credentials nor anything at accept time, so the
agent listens on the API address itself (unix path or TCP) and gRPC only on a private unix socket in
a 0700 directory that only the agent (and root) can enter. At accept the relay learns the caller:

* unix socket: SO_PEERCRED (the connecting process's pid, uid and gid);
* TCP from this host: the owner of the client's socket, asked of the kernel for that one socket
  (sock_diag, tetragon.api.access.tcp_client_uid);
* TCP from elsewhere: nobody in particular (only TLS with a client certificate lets it call).

and binds its own client socket to a name that says so before connecting to gRPC: `u<uid>.g<gid>.
p<pid>.<n>`, `t<uid>.<n>` or `r.<n>`. gRPC's `context.peer()` is then `unix:<private dir>/<name>`,
which tetragon.api.interceptor reads (caller_from_peer). Nobody else can bind a name in that
directory, so the name is trustworthy.

One thread serves every connection with a selector (no thread per connection). A connection beyond
`per_peer` for one peer (a uid, root and the agent's uid exempt; or a remote address) or beyond
`total` is closed at accept. Bytes are copied as they come with the sockets' own buffers as the only
queue: when one side cannot take more, the relay stops reading the other, so a slow client slows
only its own connection.

gRPC's core keeps ~8 threads that wake several times a second, so it runs only while someone is
connected: `start_backend` is called before the first connection is relayed, `stop_backend` once the
last one has been gone for `linger` seconds (after which gRPC's threads end).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import selectors
import shutil
import socket
import stat
import struct
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tetragon.api.access import local_peer_uid, tcp_client_uid

__all__ = ["Caller", "PeerRelay", "caller_from_peer"]

log = logging.getLogger(__name__)

_CHUNK = 256 * 1024
_CREDS = struct.Struct("3i")  # struct ucred: pid, uid, gid
_NAME = re.compile(r"u(\d+)\.g(\d+)\.p(\d+)\.\d+|t(\d+)\.\d+|(r)\.\d+")
_REFUSAL_LOG_SECONDS = 10.0  # one log line per refused peer per this many seconds


@dataclass(frozen=True)
class Caller:
    """Who is at the other end of a relayed connection (uid None: a client elsewhere)."""

    uid: int | None
    gid: int | None = None
    pid: int | None = None

    def name(self, seq: int) -> str:
        if self.uid is None:
            return f"r.{seq}"
        if self.pid is None:
            return f"t{self.uid}.{seq}"
        return f"u{self.uid}.g{self.gid}.p{self.pid}.{seq}"


def caller_from_peer(peer: str, client_dir: str) -> Caller | None:
    """The caller a gRPC peer (`unix:<client_dir>/u0.g0.p1.2`) names; None when the peer is not one
    of the relay's client sockets."""
    head, _, name = peer.removeprefix("unix:").rpartition("/")
    match = _NAME.fullmatch(name)
    if not peer.startswith("unix:") or head != client_dir or match is None:
        return None
    uid, gid, pid, tcp_uid, remote = match.groups()
    if remote:
        return Caller(None)
    if tcp_uid is not None:
        return Caller(int(tcp_uid))
    return Caller(int(uid), int(gid), int(pid))


class _Side:
    """One socket of a relayed connection; `pending` holds bytes read from the other side."""

    def __init__(self, sock: socket.socket, peer_key: str) -> None:
        self.sock = sock
        self.peer_key = peer_key  # what the connection caps count it under
        self.pending = b""  # read from the peer side, not yet written to this socket
        self.read_eof = False  # this socket sends no more
        self.events = 0  # what the selector watches for
        self.closed = False
        self.peer: _Side = self


_reserved_dirs: list[Path] = []
_reserved_lock = threading.Lock()


_DIR_PREFIX = "tetragon-grpc-"
_DIR_NAME = re.compile(_DIR_PREFIX + r"(\d+)-")


def _new_private_dir() -> Path:
    _remove_orphaned_dirs()
    return Path(tempfile.mkdtemp(prefix=f"{_DIR_PREFIX}{os.getpid()}-"))  # 0700, ours


def _remove_orphaned_dirs(tmp: str | None = None) -> list[Path]:
    """Private directories an agent killed with SIGKILL left behind: ours (same owner), named after
    a pid that no longer runs. A directory whose pid runs again under another program is left."""
    removed: list[Path] = []
    base = Path(tmp or tempfile.gettempdir())
    try:
        entries = list(base.iterdir())
    except OSError:
        return removed
    for entry in entries:
        m = _DIR_NAME.match(entry.name)
        if m is None or Path(f"/proc/{m.group(1)}").exists():
            continue
        try:
            st = entry.lstat()
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid():
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def reserve_private_dirs(count: int) -> None:
    """Make the next `count` relays' private directories now (the API's and the health server's):
    the agent calls this with its run files, before policies load, so that no policy reports the
    agent's own mkdir (both servers start after them)."""
    with _reserved_lock:
        while len(_reserved_dirs) < count:
            _reserved_dirs.append(_new_private_dir())


def _take_private_dir() -> Path:
    with _reserved_lock:
        if _reserved_dirs:
            return _reserved_dirs.pop(0)
    return _new_private_dir()


class PeerRelay:
    """The public listeners and the relay to gRPC on `backend_path` (see the module docstring)."""

    def __init__(
        self,
        *,
        per_peer: int,
        total: int,
        start_backend: Callable[[], None],
        stop_backend: Callable[[], None],
        linger: float = 30.0,
    ) -> None:
        self.per_peer = per_peer
        self.total = total
        self.linger = linger
        self.private_dir = _take_private_dir()
        self.backend_path = self.private_dir / "grpc.sock"
        self.client_dir = str(self.private_dir)
        self.refused = 0
        self.backend_up = False
        self._start_backend = start_backend
        self._stop_backend = stop_backend
        self._idle_since: float | None = time.monotonic()
        self._exempt = {f"uid {uid}" for uid in (0, os.geteuid())}
        self._per_peer: dict[str, int] = {}
        self._count = 0
        self._sides: set[_Side] = set()  # both sockets of every relayed connection
        self._seq = 0
        self._refusal_logged: dict[str, float] = {}
        self._listeners: list[socket.socket] = []
        self._tcp_port = 0
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread = threading.Thread(target=self._run, name="grpc-relay", daemon=True)

    def listen_unix(self, path: Path, mode: int = 0o666) -> None:
        """Listen on `path` (`mode`: who may connect at all; the access rule decides the rest)."""
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)  # born 0600, widened below once it is ours
        try:
            listener.bind(str(path))
        except OSError:
            listener.close()
            raise
        finally:
            os.umask(old_umask)
        os.chmod(path, mode)
        self._add_listener(listener)

    def listen_tcp(self, listeners: list[socket.socket], port: int) -> None:
        """Serve bound TCP sockets (tetragon.api.listen.bind_tcp) of local `port`."""
        self._tcp_port = port
        for listener in listeners:
            self._add_listener(listener)

    def _add_listener(self, listener: socket.socket) -> None:
        listener.listen(1024)
        listener.setblocking(False)
        self._listeners.append(listener)

    def start(self) -> None:
        for listener in self._listeners:
            self._selector.register(listener, selectors.EVENT_READ, None)
        self._wake_r.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._thread.start()

    def stop(self) -> None:
        """Close every connection and listener, stop gRPC if it runs, remove the private directory."""
        if self._thread.is_alive():
            with contextlib.suppress(OSError):
                self._wake_w.send(b"x")
            self._thread.join(timeout=5)
        for side in list(self._sides):
            side.sock.close()
        for listener in self._listeners:
            listener.close()
        self._selector.close()
        self._wake_w.close()
        self._wake_r.close()
        if self.backend_up:
            self.backend_up = False
            self._stop_backend()
        shutil.rmtree(self.private_dir, ignore_errors=True)

    @property
    def connections(self) -> int:
        return self._count

    # --- the loop ------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            timeout = None  # nothing to do until someone connects: no wake-ups at rest
            if self.backend_up and self._idle_since is not None:
                timeout = max(0.0, self._idle_since + self.linger - time.monotonic())
            ready = self._selector.select(timeout)
            for key, events in ready:
                if key.fileobj is self._wake_r:
                    return
                if key.data is None:
                    self._accept(key.fileobj)  # type: ignore[arg-type]
                    continue
                side: _Side = key.data
                try:
                    if events & selectors.EVENT_WRITE:
                        self._flush(side)
                    if events & selectors.EVENT_READ and not side.closed:
                        self._read(side)
                except OSError:  # a send to a side that reset
                    self._close(side)
                except Exception:  # a bug here must cost one connection, never the API
                    log.exception("gRPC relay: closing a connection after an error")
                    self._close(side)
            idle = self._idle_since
            if not ready and self.backend_up and idle is not None and time.monotonic() >= idle + self.linger:
                self.backend_up = False
                self._stop_backend()

    def _caller(self, client: socket.socket) -> Caller:
        if client.family == socket.AF_UNIX:
            pid, uid, gid = _CREDS.unpack(client.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
            return Caller(uid, gid, pid)
        family, (host, port), server = client.family, client.getpeername()[:2], client.getsockname()[:2]
        if family == socket.AF_INET6 and host.startswith("::ffff:") and "." in host:
            family, host, server = socket.AF_INET, host[7:], (server[0].removeprefix("::ffff:"), server[1])
        try:
            uid = tcp_client_uid(family, (host, port), server)
        except ValueError:  # an address with a scope: a link-local peer, elsewhere
            return Caller(None)
        except OSError:
            uid = None
        if uid is None:  # elsewhere, or no inet_diag in this kernel (same ENOENT): the socket table
            peer = f"ipv4:{host}:{port}" if family == socket.AF_INET else f"ipv6:[{host}]:{port}"
            uid = local_peer_uid(peer, self._tcp_port)
        return Caller(uid)

    def _accept(self, listener: socket.socket) -> None:
        for _ in range(64):  # a burst of connects: take several per wake-up
            try:
                client, address = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and the like: the connection waits in the backlog
                log.warning("gRPC: accept failed: %s", exc.strerror)
                return
            try:
                caller = self._caller(client)
            except OSError:  # gone already
                client.close()
                continue
            key = f"uid {caller.uid}" if caller.uid is not None else f"address {address[0]}"
            if not self._admit(key):
                client.close()
                continue
            try:
                backend = self._connect_backend(caller)
            except Exception as exc:
                log.warning("gRPC: cannot reach the gRPC server: %s", exc)
                client.close()
                self._release(key)
                continue
            client.setblocking(False)
            a, b = _Side(client, key), _Side(backend, key)
            a.peer, b.peer = b, a
            self._sides.update((a, b))
            self._update(a)
            self._update(b)

    def _admit(self, key: str) -> bool:
        held = self._per_peer.get(key, 0)
        if self._count >= self.total or (key not in self._exempt and held >= self.per_peer):
            self.refused += 1
            now = time.monotonic()
            if now - self._refusal_logged.get(key, -_REFUSAL_LOG_SECONDS) >= _REFUSAL_LOG_SECONDS:
                self._refusal_logged[key] = now
                log.warning(
                    "gRPC: closed a new connection of %s at accept (%d open, %d in total; limits: %d per"
                    " peer, %d in total)", key, held, self._count, self.per_peer, self.total,
                )  # fmt: skip
            return False
        self._per_peer[key] = held + 1
        self._count += 1
        self._idle_since = None
        return True

    def _release(self, key: str) -> None:
        self._count -= 1
        left = self._per_peer.pop(key, 1) - 1
        if left:
            self._per_peer[key] = left
        if not self._count:
            self._idle_since = time.monotonic()

    def _connect_backend(self, caller: Caller) -> socket.socket:
        if not self.backend_up:
            self._start_backend()
            self.backend_up = True
        self._seq += 1
        name = self.private_dir / caller.name(self._seq)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(name))
            sock.settimeout(1.0)  # a local listener: immediate unless its backlog is full
            sock.connect(str(self.backend_path))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        finally:
            with contextlib.suppress(FileNotFoundError):
                name.unlink()  # the connection keeps its name; the file is not needed any more
        return sock

    # --- copying -------------------------------------------------------------------------------

    def _read(self, side: _Side) -> None:
        try:
            data = side.sock.recv(_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # reset by the client or gRPC: the connection is over
            self._close(side)
            return
        peer = side.peer
        if data:
            peer.pending = data
            self._flush(peer)
            return
        side.read_eof = True
        if peer.read_eof:
            self._close(side)
            return
        if not peer.pending:
            with contextlib.suppress(OSError):
                peer.sock.shutdown(socket.SHUT_WR)
        self._update(side)

    def _flush(self, side: _Side) -> None:
        """Write what waits for `side`; while some is left, the other side is not read."""
        if side.pending:
            try:
                sent = side.sock.send(side.pending)
            except (BlockingIOError, InterruptedError):
                sent = 0
            side.pending = side.pending[sent:]
            if not side.pending and side.peer.read_eof:
                with contextlib.suppress(OSError):
                    side.sock.shutdown(socket.SHUT_WR)
        self._update(side)
        self._update(side.peer)

    def _update(self, side: _Side) -> None:
        if side.closed:
            return
        events = 0
        if not side.read_eof and not side.peer.pending:
            events |= selectors.EVENT_READ
        if side.pending:
            events |= selectors.EVENT_WRITE
        if events == side.events:
            return
        if not side.events:
            self._selector.register(side.sock, events, side)
        elif not events:
            self._selector.unregister(side.sock)
        else:
            self._selector.modify(side.sock, events, side)
        side.events = events

    def _close(self, side: _Side) -> None:
        if side.closed:
            return
        self._release(side.peer_key)
        for s in (side, side.peer):
            self._sides.discard(s)
            s.closed = True
            if s.events:
                self._selector.unregister(s.sock)
            s.sock.close()
