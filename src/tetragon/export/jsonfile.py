"""The JSON file exporter (`--export-filename` and the `--export-file-*` / `--export-*` flags).

Per event (`write`, called by the pipeline thread): allow/deny filters, rate limit, redaction, field
filters, then one orjson line appended to an in-memory buffer. `write_line` takes a line the caller
serialized itself (the pipeline's fast path, only when `takes_lines`: no filter, redaction or field
filter is configured; the rate limit still applies). `flush()` (after each batch) writes
the buffer out, rotating by size, and does the time-based work: the rate-limit report
(`rate_limit_info` event) and `--export-file-rotation-interval` rotation. Call `flush()` at least
every second or so even when no events arrive, so those happen on time.

A failing disk (ENOSPC, EIO, ...) never raises out of `write`/`flush`: unwritten lines stay buffered
(up to `max_buffer_bytes`, 64 MiB; later events are then refused and counted in `failed_events`),
`write_errors` counts failed attempts, one warning is logged per error streak, and every `flush()`
retries. A partially written line is completed in the same file before any rotation.
"""

from __future__ import annotations

import datetime
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import orjson

from tetragon.export.fieldfilters import compile_field_filters, identity
from tetragon.export.filters import compile_allow_deny
from tetragon.export.ratelimit import RateLimiter
from tetragon.export.redaction import compile_redaction
from tetragon.export.rotation import RotatingFile, WriteFailed
from tetragon.jsontypes import Event
from tetragon.timefmt import format_timestamp

log = logging.getLogger(__name__)

DEFAULT_MAX_BUFFER_BYTES = 64 * 1024 * 1024
AUTO_FLUSH_BYTES = 1024 * 1024
_dumps = orjson.dumps
_APPEND_NEWLINE = orjson.OPT_APPEND_NEWLINE


class ExportError(Exception):
    """The export file cannot be used; the message says which path and why."""


class JsonFileExporter:
    def __init__(
        self,
        path: str,
        *,
        max_size_mb: int = 10,
        max_backups: int = 5,
        compress: bool = False,
        rotation_interval: float = 0,
        perm: int = 0o600,
        allow: list[dict[str, Any]] | None = None,
        deny: list[dict[str, Any]] | None = None,
        field_filters: list[dict[str, Any]] | Callable[[Event], Event] | None = None,
        redaction: list[dict[str, Any]] | Callable[[Event], Event] | None = None,
        rate_limit: int = -1,
        node_name: str = "",
        max_buffer_bytes: int = DEFAULT_MAX_BUFFER_BYTES,
        clock: Callable[[], float] = time.monotonic,
        wall_clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        """`allow`/`deny` are Filter dicts; `field_filters`/`redaction` are FieldFilter/RedactionFilter
        dicts or already compiled `event -> event` callables. FilterError when a filter is invalid,
        ExportError when the file cannot be created or opened."""
        if not path:
            raise ExportError("export filename is empty")
        if rotation_interval < 0:
            raise ExportError(
                f"frequency '{rotation_interval}s' at which to rotate JSON export files is negative"
            )
        if os.path.isdir(path):
            raise ExportError(f"export file {path} is a directory")
        if not 0 <= perm <= 0o777:  # no setuid/setgid/sticky bits on a file of everyone's events
            raise ExportError(f"export file mode {perm:#o} is outside 0..0o777")
        self.path = path
        self.node_name = node_name
        self.rotation_interval = float(rotation_interval)
        self.max_buffer_bytes = max_buffer_bytes
        self._clock = clock
        self._wall_clock_ns = wall_clock_ns
        self._allowed = compile_allow_deny(allow or [], deny or [])
        self._redact = redaction if callable(redaction) else compile_redaction(redaction or [])
        fields = field_filters if callable(field_filters) else compile_field_filters(field_filters or [])
        self._field_filter: Callable[[Event], Event] | None = None if fields is identity else fields
        self._limiter = RateLimiter(rate_limit, clock=clock) if rate_limit >= 0 else None
        # Whether `write_line` may be used: no allow/deny list, redaction or field filter looks at
        # events (the rate limit, which does not, is applied by write_line too).
        self.takes_lines = self._allowed is None and self._redact is None and self._field_filter is None
        self._file = RotatingFile(
            path,
            max_size_mb=max_size_mb,
            max_backups=max_backups,
            compress=compress,
            perm=perm,
            wall_clock=lambda: wall_clock_ns() / 1e9,
        )
        directory = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(directory, mode=0o755, exist_ok=True)
        except OSError as e:
            raise ExportError(
                f"cannot create directory {directory} for export file {path}: {e.strerror or e}"
            ) from e
        try:
            self._file.open()
        except OSError as e:
            raise ExportError(f"cannot open export file {path}: {e.strerror or e}") from e
        self._next_rotation = clock() + self.rotation_interval if self.rotation_interval > 0 else 0.0

        self._buf: list[bytes] = []
        self._buf_bytes = 0
        self._tail = b""  # rest of a line partially written: must go to the current file first
        self._failing = False
        self._refusing = False
        self._closed = False
        self._stamp_prefix = ""
        self._stamp_seconds = 0.0

        self.exported_events = 0
        self.exported_bytes = 0
        self.last_exported_timestamp = 0.0
        self.write_errors = 0
        self.failed_events = 0

    # -- counters ------------------------------------------------------------------------------

    @property
    def ratelimit_dropped(self) -> int:
        return self._limiter.dropped_total if self._limiter is not None else 0

    @property
    def buffered_bytes(self) -> int:
        return self._buf_bytes + len(self._tail)

    # -- per event -----------------------------------------------------------------------------

    def write(self, event: Event) -> bool:
        """Filter and buffer one event; returns whether it will be written."""
        allowed = self._allowed
        if allowed is not None and not allowed(event):
            return False
        if self._limiter is not None and not self._limiter.allow():
            return False
        if self._redact is not None:
            event = self._redact(event)
        if self._field_filter is not None:
            event = self._field_filter(event)
        try:
            line = _dumps(event, option=_APPEND_NEWLINE)
        except orjson.JSONEncodeError as e:
            self.failed_events += 1
            log.warning("export: cannot encode %s event: %s", next(iter(event), "?"), e)
            return False
        return self._append(line, self._seconds_of(event.get("time")))

    def write_line(self, line: bytes, seconds: float) -> bool:
        """Buffer one event already serialized as `write` would (orjson, newline appended);
        `seconds` is the whole seconds of its `time` (Unix time). Only when `takes_lines`: filters,
        redaction and field filters are not applied."""
        if self._limiter is not None and not self._limiter.allow():
            return False
        return self._append(line, seconds)

    def _append(self, line: bytes, seconds: float) -> bool:
        size = len(line)
        if self._buf_bytes + len(self._tail) + size > self.max_buffer_bytes:
            self._refuse()
            return False
        self._buf.append(line)
        self._buf_bytes += size
        self.exported_events += 1
        self.last_exported_timestamp = seconds
        if self._buf_bytes >= AUTO_FLUSH_BYTES and not self._failing:
            self.flush()
        return True

    def _seconds_of(self, stamp: Any) -> float:
        """Tetragon exports the whole seconds of the event's time; parsed once per second."""
        if stamp.__class__ is str and stamp[:19] == self._stamp_prefix:
            return self._stamp_seconds
        seconds = self._wall_clock_ns() // 1_000_000_000
        if isinstance(stamp, str) and len(stamp) >= 19:
            self._stamp_prefix = stamp[:19]
            try:
                when = datetime.datetime.fromisoformat(self._stamp_prefix).replace(tzinfo=datetime.UTC)
                seconds = int(when.timestamp())
            except ValueError:
                self._stamp_prefix = ""
        self._stamp_seconds = float(seconds)
        return self._stamp_seconds

    def _refuse(self) -> None:
        self.failed_events += 1
        if not self._refusing:
            self._refusing = True
            log.warning(
                "export: %d bytes are waiting to be written to %s; dropping events until writes succeed",
                self.buffered_bytes,
                self.path,
            )

    # -- per batch -----------------------------------------------------------------------------

    def flush(self) -> None:
        """Write buffered lines out; also the rate-limit report and interval rotation when due."""
        if self._closed:
            return
        if self._limiter is not None:
            dropped = self._limiter.due_report()
            if dropped > 0:
                report = self._rate_limit_info(dropped)
                if self.buffered_bytes + len(report) <= self.max_buffer_bytes:
                    self._buf.append(report)
                    self._buf_bytes += len(report)
        self._drain()
        if self._next_rotation and not self._failing and self._clock() >= self._next_rotation:
            self._next_rotation = self._clock() + self.rotation_interval
            log.info("Rotating JSON logs export file %s", self.path)
            try:
                self._file.rotate()
            except OSError as e:
                self._write_failed(e)

    def _rate_limit_info(self, dropped: int) -> bytes:
        event: Event = {"rate_limit_info": {"number_of_dropped_process_events": str(dropped)}}
        if self.node_name:
            event["node_name"] = self.node_name
        event["time"] = format_timestamp(self._wall_clock_ns())
        return orjson.dumps(event, option=orjson.OPT_APPEND_NEWLINE)

    def _drain(self) -> None:
        f = self._file
        try:
            if self._tail:
                tail = self._tail
                try:
                    f.write(tail)
                except WriteFailed as e:
                    self._tail = tail[e.written :]
                    self.exported_bytes += e.written
                    raise
                self._tail = b""
                self.exported_bytes += len(tail)
            buf = self._buf
            while buf:
                if not f.is_open:
                    f.open()
                room = f.max_bytes - f.size
                if self._buf_bytes <= room:
                    count, size = len(buf), self._buf_bytes
                else:
                    count, size = 0, 0
                    for line in buf:
                        if size + len(line) > room:
                            break
                        size += len(line)
                        count += 1
                    if count == 0:
                        if f.size > 0:
                            f.rotate()
                            continue
                        count, size = 1, len(buf[0])  # a line bigger than a whole file: alone
                self._write_lines(count, size)
        except OSError as e:
            self._write_failed(e)
            return
        if self._failing:
            log.warning(
                "export: writing to %s works again after %d failed attempts", self.path, self.write_errors
            )
        self._failing = False
        self._refusing = False

    def _write_lines(self, count: int, size: int) -> None:
        buf = self._buf
        data = buf[0] if count == 1 else b"".join(buf[:count])
        try:
            self._file.write(data)
        except WriteFailed as e:
            # Keep exactly what is not on disk: the rest of the line cut in the middle, then the
            # untouched lines.
            done, consumed, i = e.written, 0, 0
            while i < count and consumed + len(buf[i]) <= done:
                consumed += len(buf[i])
                i += 1
            if i < count and done > consumed:
                self._tail = buf[i][done - consumed :]
                i += 1
            del buf[:i]
            self._buf_bytes = sum(len(line) for line in buf)
            self.exported_bytes += done
            raise
        del buf[:count]
        self._buf_bytes -= size
        self.exported_bytes += size

    def _write_failed(self, e: OSError) -> None:
        self.write_errors += 1
        if not self._failing:
            self._failing = True
            log.warning(
                "export: cannot write to %s: %s; keeping %d bytes buffered and retrying",
                self.path,
                e.strerror or e,
                self.buffered_bytes,
            )

    # -- control -------------------------------------------------------------------------------

    def rotate(self) -> None:
        """Write what is buffered, then rotate now (as lumberjack's Rotate)."""
        self._drain()
        try:
            self._file.rotate()
        except OSError as e:
            self._write_failed(e)

    def wait_background(self) -> None:
        """Wait for backup cleanup/compression started by rotations."""
        self._file.wait_mill()

    def close(self) -> None:
        """Flush (a last attempt) and close; lines that still cannot be written are reported."""
        if self._closed:
            return
        self.flush()
        self._closed = True
        if self.buffered_bytes:
            log.error(
                "export: %d bytes (%d events) could not be written to %s and are lost",
                self.buffered_bytes,
                len(self._buf) + (1 if self._tail else 0),
                self.path,
            )
        self._file.close()
        self._file.wait_mill()

    def __enter__(self) -> JsonFileExporter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
