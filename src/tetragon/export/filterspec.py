"""Validation of Tetragon `Filter` dicts and the pieces shared by the export filter modules:
JSON-lines decoding as Go's json.Decoder does it, field-name normalization, RE2 compilation,
EventType and CapabilitiesType names.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from typing import Any

from tetragon.export.labels import LabelSelectorError, parse_label_selector

EVENT_TYPES: dict[str, int] = {
    "UNDEF": 0,
    "PROCESS_EXEC": 1,
    "PROCESS_EXIT": 5,
    "PROCESS_KPROBE": 9,
    "PROCESS_TRACEPOINT": 10,
    "PROCESS_LOADER": 11,
    "PROCESS_UPROBE": 12,
    "PROCESS_THROTTLE": 27,
    "PROCESS_LSM": 28,
    "PROCESS_USDT": 29,
    "TEST": 40000,
    "RATE_LIMIT_INFO": 40001,
}
_EVENT_TYPE_BY_NUMBER = {num: name for name, num in EVENT_TYPES.items()}

# CapabilitiesType enum names; value 1 really is named DAC_OVERRIDE (no CAP_ prefix).
CAPABILITIES: tuple[str, ...] = (
    "CAP_CHOWN", "DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER",
    "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)  # fmt: skip
_CAP_SETS = ("permitted", "effective", "inheritable")
_CAP_MODES = ("any", "all", "exactly", "none")

REGEX_FIELDS = (
    "binary_regex", "pod_regex", "arguments_regex", "parent_binary_regex", "parent_arguments_regex",
    "container_id", "ancestor_binary_regex", "container_name_regex", "namespace_regex",
)  # fmt: skip
_STRING_LIST_FIELDS = ("namespace", "labels", "policy_names", "cel_expression")
_PID_FIELDS = ("pid", "pid_set")
_BOOL_FIELDS = ("health_check", "in_init_tree")
FILTER_FIELDS: tuple[str, ...] = (
    *REGEX_FIELDS, *_STRING_LIST_FIELDS, *_PID_FIELDS, *_BOOL_FIELDS, "event_set", "capabilities",
)  # fmt: skip


class FilterError(ValueError):
    """A filter that cannot be used; the message names the filter and field at fault."""


# ---------------------------------------------------------------------------------------------
# Parsing helpers shared by the export filter modules


def decode_json_objects(text: str, what: str) -> list[tuple[int, dict[str, Any]]]:
    """Decode a stream of JSON objects separated by any whitespace (or nothing), as Go's
    json.Decoder does. Returns (line number, object) pairs."""
    decoder = json.JSONDecoder()
    out: list[tuple[int, dict[str, Any]]] = []
    pos, end = 0, len(text)
    while True:
        while pos < end and text[pos] in " \t\r\n":
            pos += 1
        if pos >= end:
            return out
        line = text.count("\n", 0, pos) + 1
        try:
            obj, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            raise FilterError(f"{what} on line {e.lineno}: invalid JSON: {e.msg} (column {e.colno})") from e
        if not isinstance(obj, dict):
            raise FilterError(f"{what} on line {line}: expected a JSON object, got {type(obj).__name__}")
        out.append((line, obj))


def canonical_key(key: str) -> str:
    """Field names are matched case-insensitively (Go encoding/json); lowerCamelCase (protojson)
    is accepted as well."""
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", key).lower()


_POSIX_CLASSES = {
    "alnum": "0-9A-Za-z", "alpha": "A-Za-z", "ascii": "\\x00-\\x7f", "blank": "\\t ",
    "cntrl": "\\x00-\\x1f\\x7f", "digit": "0-9", "graph": "!-~", "lower": "a-z", "print": " -~",
    "punct": "!-/:-@\\[-`{-~", "space": "\\t\\n\\v\\f\\r ", "upper": "A-Z", "word": "0-9A-Za-z_",
    "xdigit": "0-9A-Fa-f",
}  # fmt: skip
_POSIX_RE = re.compile(r"\[:(\^?)([a-z]+):\]")


def checked_fields(raw: Any, where: str, known: Iterable[str]) -> Iterator[tuple[str, str, Any]]:
    """(canonical key, location for messages, value) of each set field of one JSON filter object.

    Rejects a non-object and unknown fields with a message naming them; skips null values.
    """
    if not isinstance(raw, dict):
        raise FilterError(f"{where}: expected a JSON object")
    names = sorted(known)
    for raw_key, value in raw.items():
        key = canonical_key(raw_key)
        if key not in names:
            raise FilterError(f"{where}: unknown field {raw_key!r} (known: {', '.join(names)})")
        if value is not None:
            yield key, f"{where}: field {key!r}", value


def compile_re2(pattern: str) -> re.Pattern[str]:
    """Compile an RE2 (Go regexp) pattern with Python's `re`, translating the RE2-only syntax that
    users write in practice: `\\z` and POSIX bracket classes. Raises re.error."""
    if "\\z" in pattern:
        pattern = re.sub(r"(?<!\\)((?:\\\\)*)\\z", r"\1\\Z", pattern)
    if "[:" in pattern:

        def posix(m: re.Match[str]) -> str:
            chars = _POSIX_CLASSES.get(m.group(2))
            if chars is None:
                raise re.error(f"unknown POSIX class [:{m.group(2)}:]")
            if m.group(1):
                raise re.error("negated POSIX classes are not supported")
            return chars

        pattern = _POSIX_RE.sub(posix, pattern)
    return re.compile(pattern)


# ---------------------------------------------------------------------------------------------
# Validation: raw dict (flag JSON, protojson or MessageToDict) -> normalized dict


def _string_list(where: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise FilterError(f"{where}: expected a list of strings, got {json.dumps(value)}")
    return list(value)


def _event_type_name(where: str, value: Any) -> str:
    if isinstance(value, bool):
        raise FilterError(f"{where}: invalid event type {json.dumps(value)}")
    if isinstance(value, int):
        name = _EVENT_TYPE_BY_NUMBER.get(value)
    elif isinstance(value, str):
        name = value if value in EVENT_TYPES else None
    else:
        name = None
    if name is None:
        known = ", ".join(n for n in EVENT_TYPES if n != "UNDEF")
        raise FilterError(f"{where}: unknown event type {json.dumps(value)} (known: {known})")
    return name


def normalize_event_set(where: str, value: Any) -> list[str]:
    if not isinstance(value, list):
        raise FilterError(f"{where}: expected a list of event type names, got {json.dumps(value)}")
    return [_event_type_name(where, v) for v in value]


def _cap_name(where: str, value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(CAPABILITIES):
        return CAPABILITIES[value]
    if isinstance(value, str):
        if value in CAPABILITIES:
            return value
        if value == "CAP_DAC_OVERRIDE":
            return "DAC_OVERRIDE"
    raise FilterError(f"{where}: unknown capability {json.dumps(value)}")


def _normalize_capabilities(where: str, value: Any) -> dict[str, dict[str, list[str]]]:
    if not isinstance(value, dict):
        raise FilterError(f"{where}: expected an object with permitted/effective/inheritable")
    out: dict[str, dict[str, list[str]]] = {}
    for raw_set, spec in value.items():
        cap_set = canonical_key(raw_set)
        if cap_set not in _CAP_SETS:
            raise FilterError(f"{where}: unknown capability set {raw_set!r} (use {', '.join(_CAP_SETS)})")
        if spec is None:
            continue
        if not isinstance(spec, dict):
            raise FilterError(f"{where}.{cap_set}: expected an object with one of {', '.join(_CAP_MODES)}")
        modes: dict[str, list[str]] = {}
        for raw_mode, caps in spec.items():
            mode = canonical_key(raw_mode)
            if mode not in _CAP_MODES:
                raise FilterError(f"{where}.{cap_set}: unknown match set {raw_mode!r}")
            if caps is None:
                continue
            if not isinstance(caps, list):
                raise FilterError(f"{where}.{cap_set}.{mode}: expected a list of capability names")
            if caps:  # an empty list is unpopulated in proto terms
                modes[mode] = [_cap_name(f"{where}.{cap_set}.{mode}", c) for c in caps]
        if len(modes) != 1:
            got = ", ".join(modes) if modes else "none"
            raise FilterError(
                f"{where}.{cap_set}: capability filter must define exactly one match set of "
                f"{', '.join(_CAP_MODES)} (got: {got})"
            )
        out[cap_set] = modes
    return out


def normalize_filter(
    raw: Any, where: str = "filter", *, enable_pid_set_filter: bool = True
) -> dict[str, Any]:
    """Validate one Filter and return it with canonical keys and enum names; `None` fields dropped."""
    out: dict[str, Any] = {}
    for key, at, value in checked_fields(raw, where, FILTER_FIELDS):
        if key in out:
            raise FilterError(f"{at} given twice")
        if key in REGEX_FIELDS:
            patterns = _string_list(at, value)
            for p in patterns:
                try:
                    compile_re2(p)
                except re.error as e:
                    raise FilterError(f"{at}: invalid regular expression {p!r}: {e}") from e
            out[key] = patterns
        elif key in _STRING_LIST_FIELDS:
            out[key] = _string_list(at, value)
            if key == "cel_expression":
                from tetragon.export.celfilter import compile_one  # it imports this module

                for expression in out[key]:
                    compile_one(expression)
            if key == "labels":
                for sel in out[key]:
                    try:
                        parse_label_selector(sel)
                    except LabelSelectorError as e:
                        raise FilterError(f"{at}: invalid label selector {sel!r}: {e}") from e
        elif key in _PID_FIELDS:
            if not isinstance(value, list) or not all(
                isinstance(p, int) and not isinstance(p, bool) and 0 <= p < 2**32 for p in value
            ):
                raise FilterError(f"{at}: expected a list of pids (unsigned 32-bit integers)")
            if key == "pid_set" and not enable_pid_set_filter:
                raise FilterError(
                    f"{at}: pidSet filters use a best-effort approach for tracking PIDs and are intended "
                    "for testing/development, not for production (pass --enable-pid-set-filter to ignore)"
                )
            out[key] = list(value)
        elif key in _BOOL_FIELDS:
            if isinstance(value, dict) and set(value) <= {"value"}:  # BoolValue written as a message
                value = value.get("value", False)
            if not isinstance(value, bool):
                raise FilterError(f"{at}: expected true or false, got {json.dumps(value)}")
            out[key] = value
        elif key == "event_set":
            out[key] = normalize_event_set(at, value)
        else:  # capabilities
            out[key] = _normalize_capabilities(at, value)
    return out


def parse_filter_lines(text: str, *, enable_pid_set_filter: bool = True) -> list[dict[str, Any]]:
    """Parse `--export-allowlist`/`--export-denylist` syntax: JSON objects, one per line (any
    whitespace or none between objects is accepted). Raises FilterError naming the line."""
    return [
        normalize_filter(obj, f"filter on line {line}", enable_pid_set_filter=enable_pid_set_filter)
        for line, obj in decode_json_objects(text, "filter")
    ]
