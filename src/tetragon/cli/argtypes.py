"""argparse value types shared by `tetragon` and `tetra`, with Go's flag semantics."""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Callable
from typing import Any

from tetragon.timefmt import parse_duration

_TRUE = {"1", "t", "true", "yes", "on"}
_FALSE = {"0", "f", "false", "no", "off"}


def go_bool(text: str) -> bool:
    """strconv.ParseBool's spellings (any case), plus yes/no/on/off."""
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"invalid boolean {text!r}")


def duration(text: str) -> float:
    """A Go duration in seconds (`30s`, `1m`); 0 allowed."""
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def positive_duration(text: str) -> float:
    seconds = duration(text)
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"duration must be positive: {text!r}")
    return seconds


# --- range-checked values for the agent's flag table (tetragon.cli.agent_flags) -----------------
# Each returns a parser `str -> value` that raises ValueError with what is allowed; the table turns
# that into one error line naming the flag and the value.

Parser = Callable[[str], Any]


def describe(parser: Parser) -> str:
    """What a parser accepts, for help texts ('' when it accepts any text)."""
    return str(getattr(parser, "allowed", ""))


def _allows(text: str) -> Callable[[Parser], Parser]:
    def mark(parser: Parser) -> Parser:
        parser.allowed = text  # type: ignore[attr-defined]
        return parser

    return mark


def text(value: str) -> str:
    return value


def comma_list(value: str) -> list[str]:
    return [x.strip() for x in value.split(",") if x.strip()]


@_allows("true or false (also 1/0, t/f, yes/no, on/off)")
def boolean(value: str) -> bool:
    try:
        return go_bool(value)
    except argparse.ArgumentTypeError:
        raise ValueError(describe(boolean)) from None


def false_only(reason: str) -> Parser:
    """A boolean flag this agent takes for compatibility but can only be false (`reason`: why)."""
    allowed = f"false ({reason})"

    def parse(value: str) -> bool:
        if boolean(value):
            raise ValueError(allowed)
        return False

    return _allows(allowed)(parse)


def int_range(low: int, high: int, *, also: tuple[int, ...] = ()) -> Parser:
    """An integer in low..high, or one of `also` (special values such as -1 = off)."""
    extra = "".join(f"{v} or " for v in also)
    allowed = f"an integer, {extra}{low}..{high}"

    def parse(value: str) -> int:
        try:
            number = int(value.strip(), 10)
        except ValueError:
            raise ValueError(allowed) from None
        if number in also or low <= number <= high:
            return number
        raise ValueError(allowed)

    return _allows(allowed)(parse)


def duration_range(low: float, high: float, *, zero: bool = False) -> Parser:
    """A Go duration between low and high seconds (or 0 when `zero`: off)."""
    allowed = f"a duration {'0 (off) or ' if zero else ''}{_seconds(low)}..{_seconds(high)}"

    def parse(value: str) -> float:
        try:
            seconds = parse_duration(value)
        except ValueError:
            raise ValueError(allowed) from None
        if (zero and seconds == 0) or low <= seconds <= high:
            return seconds
        raise ValueError(allowed)

    return _allows(allowed)(parse)


def _seconds(seconds: float) -> str:
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


@_allows("an octal file mode 0..777")
def file_mode(value: str) -> int:
    """An octal file mode without setuid/setgid/sticky bits: 0..777."""
    try:
        mode = int(value.strip(), 8)
    except ValueError:
        mode = -1
    if not 0 <= mode <= 0o777:
        raise ValueError("an octal file mode 0..777")
    return mode


def choice(*names: str) -> Parser:
    allowed = "one of " + ", ".join(names)

    def parse(value: str) -> str:
        if value.strip().lower() not in names:
            raise ValueError(allowed)
        return value.strip().lower()

    return _allows(allowed)(parse)


@_allows("comma-separated numeric ids 0..4294967294")
def id_list(value: str) -> list[int]:
    """Comma-separated uids or gids (numbers 0..4294967294)."""
    ids = []
    for word in (w.strip() for w in value.split(",")):
        if not word:
            continue
        if not word.isdigit() or int(word) > 0xFFFFFFFE:
            raise ValueError("comma-separated numeric ids 0..4294967294")
        ids.append(int(word))
    return ids


@_allows("host:port, :port or [ipv6]:port with port 1..65535 (empty: off)")
def host_port(value: str) -> str:
    """`host:port`, `:port` (every interface) or `[v6]:port`, port 1..65535; '' = off."""
    if value == "":
        return value
    allowed = "host:port, :port or [ipv6]:port with port 1..65535 (empty: off)"
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(allowed)
    if host.startswith("[") != host.endswith("]") or any(c.isspace() for c in host):
        raise ValueError(allowed)
    return value


@_allows("host:port, :port or [ipv6]:port with port 1..65535, unix:///absolute/path, or empty (off)")
def server_address(value: str) -> str:
    """host_port, or `unix:///absolute/path`."""
    if value.startswith("unix://"):
        if not value.removeprefix("unix://").startswith("/"):
            raise ValueError("unix:///absolute/path")
        return value
    try:
        return host_port(value)
    except ValueError:
        raise ValueError(
            "host:port, :port or [ipv6]:port with port 1..65535, unix:///absolute/path, or empty (off)"
        ) from None


@_allows("an existing file (or empty)")
def existing_file_or_empty(value: str) -> str:
    if value and not os.path.isfile(value):
        raise ValueError("an existing file (or empty)")
    return value


@_allows("comma-separated existing files")
def existing_files(value: str) -> list[str]:
    files = comma_list(value)
    if not all(os.path.isfile(f) for f in files):
        raise ValueError(describe(existing_files))
    return files


@_allows("a directory (a missing one is read as empty), not a file")
def directory_if_present(value: str) -> str:
    """A directory, or a path where nothing is yet (read as empty); never a file."""
    if os.path.exists(value) and not os.path.isdir(value):
        raise ValueError("a directory (a missing one is read as empty), not a file")
    return value


@_allows("a procfs mount (a directory with self/stat), e.g. /proc")
def procfs_dir(value: str) -> str:
    if not os.path.isfile(os.path.join(value, "self", "stat")):
        raise ValueError("a procfs mount (a directory with self/stat), e.g. /proc")
    return value


_BTF_MAGIC = (b"\x9f\xeb", b"\xeb\x9f", b"\x7fELF")  # raw BTF (either byte order) or an ELF with .BTF


@_allows("a BTF file (raw BTF, e.g. /sys/kernel/btf/vmlinux, or an ELF file with .BTF)")
def btf_file(value: str) -> str:
    """A raw BTF or ELF file. A missing path is left to the agent, which explains what BTF it needs."""
    if not value or not os.path.exists(value):
        return value
    try:
        with open(value, "rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise ValueError(f"a readable BTF file ({exc.strerror})") from None
    if not magic.startswith(_BTF_MAGIC):
        raise ValueError("a BTF file (raw BTF, e.g. /sys/kernel/btf/vmlinux, or an ELF file with .BTF)")
    return value


@_allows("a writable directory")
def writable_dir(value: str) -> str:
    """A directory the agent can create (if missing) and write a file in.

    Only tried as root (creating the directory, as the agent would): an unprivileged agent stops
    earlier, at the privilege check, with a clearer reason than this one."""
    if not value:
        raise ValueError(describe(writable_dir))
    if os.path.exists(value) and not os.path.isdir(value):
        raise ValueError("a writable directory, not a file")
    if os.geteuid() != 0:
        return value
    try:
        os.makedirs(value, exist_ok=True)
        with tempfile.TemporaryFile(dir=value):
            pass
    except OSError as exc:
        raise ValueError(f"a writable directory ({exc.strerror or exc})") from None
    return value
