"""A log file rotated the way Tetragon's lumberjack writer does it.

* The current file always has the configured name. When a write would make it larger than the
  maximum size, it is renamed to `<name>-<UTC time 2006-01-02T15-04-05.000><ext>` (ext = the last
  `.suffix` of the name, e.g. `tetragon-2024-01-02T03-04-05.678.log`) and a new file is started.
* After a rotation, backups beyond `max_backups` (0 = keep all) are removed, newest kept by the
  time in their name, and with `compress` the others are gzipped to `<backup>.gz` (via `.gz.tmp`,
  then the uncompressed backup is removed). This runs in a background thread, as lumberjack's mill
  goroutine does, so a rotation never stalls the event pipeline on gzip.
* New files get mode `perm` regardless of the umask (and the previous file's owner).
"""

from __future__ import annotations

import errno
import gzip
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

MEGABYTE = 1024 * 1024
DEFAULT_MAX_SIZE_MB = 100  # lumberjack's value when MaxSize is 0
_BACKUP_TIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}\.\d{3}$")


class WriteFailed(OSError):
    """A write that stopped after `written` bytes of the data were on disk."""

    def __init__(self, written: int, cause: OSError) -> None:
        super().__init__(cause.errno, cause.strerror)
        self.written = written
        self.cause = cause


def backup_time(epoch_seconds: float) -> str:
    ms = int(round(epoch_seconds * 1000))
    return time.strftime("%Y-%m-%dT%H-%M-%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}"


class RotatingFile:
    def __init__(
        self,
        path: str,
        *,
        max_size_mb: int,
        max_backups: int,
        compress: bool,
        perm: int,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.directory = os.path.dirname(os.path.abspath(path))
        base = os.path.basename(path)
        self._ext = os.path.splitext(base)[1]
        self._prefix = base[: len(base) - len(self._ext)] + "-"
        self.max_size_mb = max_size_mb
        self.max_backups = max_backups
        self.compress = compress
        self.perm = perm
        self._wall_clock = wall_clock
        self._fd: int | None = None
        self.size = 0
        self._mill_lock = threading.Lock()
        self._mill_pending = False
        self._mill_thread: threading.Thread | None = None

    @property
    def max_bytes(self) -> int:
        return (self.max_size_mb or DEFAULT_MAX_SIZE_MB) * MEGABYTE

    @property
    def is_open(self) -> bool:
        return self._fd is not None

    # -- opening -------------------------------------------------------------------------------

    def open(self) -> None:
        """Open the existing file for appending, or create it. Raises OSError."""
        if self._fd is not None:
            return
        os.makedirs(self.directory, mode=0o755, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, self.perm)
        try:
            os.fchmod(fd, self.perm)
        except OSError as e:  # not our file: keep its mode, but say so
            log.warning("export: cannot set mode %o on %s: %s", self.perm, self.path, e.strerror)
        self.size = os.fstat(fd).st_size
        self._fd = fd

    def _open_new(self, previous: os.stat_result | None) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, self.perm)
        try:
            os.fchmod(fd, self.perm)
            if previous is not None and (previous.st_uid, previous.st_gid) != (os.geteuid(), os.getegid()):
                os.fchown(fd, previous.st_uid, previous.st_gid)
        except OSError as e:
            log.warning("export: cannot set mode/owner of %s: %s", self.path, e.strerror)
        self._fd = fd
        self.size = 0

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    # -- writing -------------------------------------------------------------------------------

    def write(self, data: bytes | memoryview) -> None:
        """Write all of `data` (opening the file if needed); WriteFailed says how much got out."""
        written = 0
        try:
            if self._fd is None:
                self.open()
            assert self._fd is not None
            view = memoryview(data)
            while written < len(view):
                n = os.write(self._fd, view[written:])
                written += n
                self.size += n
        except OSError as e:
            raise WriteFailed(written, e) from e

    # -- rotation ------------------------------------------------------------------------------

    def backup_name(self) -> str:
        """A free backup path for now (bumped by a millisecond while one already exists)."""
        when = self._wall_clock()
        while True:
            name = os.path.join(self.directory, f"{self._prefix}{backup_time(when)}{self._ext}")
            if not os.path.lexists(name) and not os.path.lexists(name + ".gz"):
                return name
            when += 0.001

    def rotate(self) -> str | None:
        """Close, move the current file to a backup, start a new one; returns the backup path.
        Raises OSError (the file is then closed, and `write` reopens it)."""
        self.close()
        os.makedirs(self.directory, mode=0o755, exist_ok=True)
        backup: str | None = None
        try:
            previous: os.stat_result | None = os.stat(self.path)
        except FileNotFoundError:
            previous = None
        if previous is not None:
            backup = self.backup_name()
            os.rename(self.path, backup)
        self._open_new(previous)
        self._schedule_mill()
        return backup

    # -- backups -------------------------------------------------------------------------------

    def backups(self) -> list[tuple[str, str]]:
        """(timestamp, file name) of every backup, newest first."""
        found = []
        for name in os.listdir(self.directory):
            if not name.startswith(self._prefix):
                continue
            for ext in (self._ext, self._ext + ".gz"):
                if name.endswith(ext) and len(name) > len(self._prefix) + len(ext):
                    stamp = name[len(self._prefix) : len(name) - len(ext)]
                    if _BACKUP_TIME_RE.match(stamp):
                        found.append((stamp, name))
                        break
        found.sort(reverse=True)
        return found

    def mill(self) -> None:
        """Remove surplus backups and compress the rest (when enabled)."""
        if self.max_backups == 0 and not self.compress:
            return
        backups = self.backups()
        keep: list[str] = []
        if self.max_backups > 0:
            seen: set[str] = set()
            for stamp, name in backups:
                seen.add(stamp)  # x.log and x.log.gz count once
                if len(seen) > self.max_backups:
                    self._remove(name)
                else:
                    keep.append(name)
        else:
            keep = [name for _, name in backups]
        if self.compress:
            for name in keep:
                if not name.endswith(".gz"):
                    self._compress(os.path.join(self.directory, name))

    def _remove(self, name: str) -> None:
        try:
            os.remove(os.path.join(self.directory, name))
        except FileNotFoundError:
            pass
        except OSError as e:
            log.warning("export: cannot remove old export file %s: %s", name, e.strerror)

    def _compress(self, src: str) -> None:
        dst = src + ".gz"
        tmp = dst + ".tmp"
        try:
            st = os.stat(src)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, st.st_mode & 0o7777)
            with os.fdopen(fd, "wb") as raw:
                os.fchmod(raw.fileno(), st.st_mode & 0o7777)
                if (st.st_uid, st.st_gid) != (os.geteuid(), os.getegid()):
                    os.fchown(raw.fileno(), st.st_uid, st.st_gid)
                with (
                    open(src, "rb") as f,
                    gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as gz,
                ):
                    shutil.copyfileobj(f, gz, 1 << 20)
                raw.flush()
                os.fsync(raw.fileno())
            os.rename(tmp, dst)
            os.remove(src)
        except OSError as e:
            log.warning("export: cannot compress %s: %s", src, e.strerror or e)
            try:
                os.remove(tmp)
            except OSError as cleanup:
                if cleanup.errno != errno.ENOENT:
                    log.debug("export: cannot remove %s: %s", tmp, cleanup)

    def _schedule_mill(self) -> None:
        with self._mill_lock:
            self._mill_pending = True
            if self._mill_thread is not None:
                return
            self._mill_thread = threading.Thread(target=self._mill_loop, name="export-mill", daemon=True)
            self._mill_thread.start()

    def _mill_loop(self) -> None:
        while True:
            with self._mill_lock:
                if not self._mill_pending:
                    self._mill_thread = None
                    return
                self._mill_pending = False
            try:
                self.mill()
            except Exception:  # never let housekeeping kill anything; say what happened
                log.exception("export: cleaning up rotated export files failed")

    def wait_mill(self) -> None:
        """Block until background cleanup/compression is done."""
        while True:
            with self._mill_lock:
                thread = self._mill_thread
            if thread is None:
                return
            thread.join()
