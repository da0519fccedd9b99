"""Time text as Tetragon writes and reads it: Go durations and protojson timestamps."""

from __future__ import annotations

import datetime as _dt
import re

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_duration(text: str) -> float:
    """Seconds in a Go duration (`30s`, `1m30s`, `1.5h`, `-2m`, `0`); raises ValueError as Go would."""
    s = text.strip()
    body = s[1:] if s[:1] in ("+", "-") else s
    sign = -1.0 if s[:1] == "-" else 1.0
    if body == "0":
        return 0.0
    pos = 0
    total = 0.0
    for m in _PART.finditer(body):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if not body or pos != len(body):
        raise ValueError(f"invalid duration {text!r} (examples: 30s, 1m30s, 500ms)")
    return sign * total


_last_second: tuple[int, str] = (-1, "")


def format_timestamp(wall_ns: int) -> str:
    """protojson Timestamp: UTC, fraction of 0, 3, 6 or 9 digits."""
    secs, nanos = divmod(wall_ns, 1_000_000_000)
    global _last_second
    cached_secs, base = _last_second  # one tuple: threads never see a half-updated pair
    if cached_secs != secs:  # events come in bursts within one second: format it once
        base = _dt.datetime.fromtimestamp(secs, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _last_second = (secs, base)
    if nanos % 1000:  # the common case for kernel times: all nine digits
        return base + "." + str(nanos).zfill(9) + "Z"
    if nanos == 0:
        return base + "Z"
    if nanos % 1_000_000 == 0:
        return f"{base}.{nanos // 1_000_000:03d}Z"
    return f"{base}.{nanos // 1000:06d}Z"


class WallStamps:
    """`format_timestamp(wall).encode()` for a stream of times that mostly share their second (a
    batch of events): the second's text is kept and only the nanoseconds are formatted.
    `seconds` is the whole Unix seconds of the last time stamped."""

    __slots__ = ("_start", "_text", "seconds")

    def __init__(self) -> None:
        self._start = -(1 << 62)  # first nanosecond of the kept second
        self._text = ""  # "YYYY-MM-DDTHH:MM:SS."
        self.seconds = 0.0

    def stamp(self, wall: int) -> bytes:
        frac = wall - self._start
        if 0 <= frac < 1_000_000_000 and frac % 1000:  # nine digits: the common case
            return (self._text + str(frac).zfill(9) + "Z").encode()
        text = format_timestamp(wall)
        self._start = wall - wall % 1_000_000_000
        self._text = text[:19] + "."  # text may end in "Z" there (a whole second)
        self.seconds = float(wall // 1_000_000_000)
        return text.encode()
