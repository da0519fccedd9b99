"""The unix-socket API address: the agent accepts, learns the caller from SO_PEERCRED, and relays.

gRPC Python does not expose a unix peer's credentials, so gRPC itself listens on a private socket
in a 0700 directory only the agent (and root) can enter, and one thread here listens on the public
path. Each accepted connection's credentials (SO_PEERCRED: the connecting process's pid, uid, gid)
go into the name the relay binds its own client socket to before connecting to gRPC: gRPC's
`context.peer()` is then `unix:<private dir>/u<uid>.g<gid>.p<pid>.<n>`, which tetragon.api.interceptor
reads (peer_from_name). Nobody else can bind a name in that directory, so the name is trustworthy.

One thread serves every connection with a selector (no thread per connection); a connection beyond
`per_peer` for one uid (root and the agent's uid exempt) or beyond `total` is closed at accept. Bytes
are copied as they come with the sockets' own buffers as the only queue: when one side cannot take
more, the relay stops reading the other, so a slow client slows only its own connection.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import selectors
import shutil
import socket
import struct
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PeerCreds", "UnixPeerRelay", "peer_from_name"]

log = logging.getLogger(__name__)

_CHUNK = 256 * 1024
_CREDS = struct.Struct("3i")  # struct ucred: pid, uid, gid
_NAME = re.compile(r"u(\d+)\.g(\d+)\.p(\d+)\.\d+")
_REFUSAL_LOG_SECONDS = 10.0  # one log line per refused uid per this many seconds


@dataclass(frozen=True)
class PeerCreds:
    pid: int
    uid: int
    gid: int


def peer_from_name(peer: str, client_dir: str) -> PeerCreds | None:
    """The credentials encoded in a gRPC unix peer (`unix:<client_dir>/u0.g0.p1.2`); None when the
    peer is not one of the relay's client sockets."""
    path = peer.removeprefix("unix:")
    head, _, name = path.rpartition("/")
    match = _NAME.fullmatch(name)
    if not peer.startswith("unix:") or head != client_dir or match is None:
        return None
    uid, gid, pid = (int(g) for g in match.groups())
    return PeerCreds(pid, uid, gid)


class _Side:
    """One socket of a relayed connection; `pending` holds bytes read from the other side."""

    def __init__(self, sock: socket.socket, uid: int) -> None:
        self.sock = sock
        self.uid = uid
        self.pending = b""  # read from the peer side, not yet written to this socket
        self.read_eof = False  # this socket sends no more
        self.events = 0  # what the selector watches for
        self.closed = False
        self.peer: _Side = self


class UnixPeerRelay:
    """Listens on `public_path`, relays to gRPC on `backend_path` (see the module docstring)."""

    def __init__(self, public_path: Path, *, per_peer: int, total: int) -> None:
        self.public_path = public_path
        self.per_peer = per_peer
        self.total = total
        self.private_dir = Path(tempfile.mkdtemp(prefix="tetragon-grpc-"))  # 0700, ours
        self.backend_path = self.private_dir / "grpc.sock"
        self.client_dir = str(self.private_dir)
        self.refused = 0
        self._exempt = {0, os.geteuid()}
        self._per_uid: dict[int, int] = {}
        self._count = 0
        self._seq = 0
        self._refusal_logged: dict[int, float] = {}
        self._listener: socket.socket | None = None
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread = threading.Thread(target=self._run, name="grpc-relay", daemon=True)

    def listen(self, mode: int = 0o666) -> None:
        """Bind the public socket (`mode`: who may connect at all; the interceptor decides the rest)."""
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)  # born 0600, widened below once it is ours
        try:
            listener.bind(str(self.public_path))
        finally:
            os.umask(old_umask)
        os.chmod(self.public_path, mode)
        listener.listen(1024)
        listener.setblocking(False)
        self._listener = listener

    def start(self) -> None:
        assert self._listener is not None, "listen() first"
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._wake_r.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._thread.start()

    def stop(self) -> None:
        """Close every connection and the listener, remove the private directory."""
        if self._thread.is_alive():
            with contextlib.suppress(OSError):
                self._wake_w.send(b"x")
            self._thread.join(timeout=5)
        for key in list(self._selector.get_map().values()):
            with contextlib.suppress(OSError):
                key.fileobj.close()  # type: ignore[union-attr]
        self._selector.close()
        self._wake_w.close()
        if self._listener is not None:
            self._listener.close()
        shutil.rmtree(self.private_dir, ignore_errors=True)

    @property
    def connections(self) -> int:
        return self._count

    # --- the loop ------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            for key, events in self._selector.select():
                if key.fileobj is self._wake_r:
                    return
                if key.fileobj is self._listener:
                    self._accept()
                    continue
                side: _Side = key.data
                try:
                    if events & selectors.EVENT_WRITE:
                        self._flush(side)
                    if events & selectors.EVENT_READ and not side.closed:
                        self._read(side)
                except OSError:  # a send to a side that reset
                    self._close(side)

    def _accept(self) -> None:
        assert self._listener is not None
        for _ in range(64):  # a burst of connects: take several per wake-up
            try:
                client, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and the like: the connection waits in the backlog
                log.warning("gRPC relay: accept failed: %s", exc.strerror)
                return
            creds = PeerCreds(*_CREDS.unpack(client.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)))
            if not self._admit(creds.uid):
                client.close()
                continue
            try:
                backend = self._connect_backend(creds)
            except OSError as exc:
                log.warning("gRPC relay: cannot reach the gRPC server: %s", exc.strerror)
                client.close()
                self._release(creds.uid)
                continue
            client.setblocking(False)
            a, b = _Side(client, creds.uid), _Side(backend, creds.uid)
            a.peer, b.peer = b, a
            self._update(a)
            self._update(b)

    def _admit(self, uid: int) -> bool:
        held = self._per_uid.get(uid, 0)
        if self._count >= self.total or (uid not in self._exempt and held >= self.per_peer):
            self.refused += 1
            now = time.monotonic()
            if now - self._refusal_logged.get(uid, -_REFUSAL_LOG_SECONDS) >= _REFUSAL_LOG_SECONDS:
                self._refusal_logged[uid] = now
                log.warning(
                    "gRPC: refused a connection of uid %d (%d open; limits: %d per peer, %d in total)",
                    uid, held, self.per_peer, self.total,
                )  # fmt: skip
            return False
        self._per_uid[uid] = held + 1
        self._count += 1
        return True

    def _release(self, uid: int) -> None:
        self._count -= 1
        left = self._per_uid.pop(uid, 1) - 1
        if left:
            self._per_uid[uid] = left

    def _connect_backend(self, creds: PeerCreds) -> socket.socket:
        self._seq += 1
        name = self.private_dir / f"u{creds.uid}.g{creds.gid}.p{creds.pid}.{self._seq}"
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
        self._release(side.uid)
        for s in (side, side.peer):
            s.closed = True
            if s.events:
                self._selector.unregister(s.sock)
            s.sock.close()
