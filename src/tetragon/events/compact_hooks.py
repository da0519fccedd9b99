"""Compact-format pieces for hook events: colors, kprobe lines by function, raw syscalls.

Argument access mirrors Go's generated getters: an absent argument or field reads as its zero value.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

from tetragon.events.goquote import quote_if_needed
from tetragon.jsontypes import Event

RED, GREEN, YELLOW, BLUE, MAGENTA, CYAN = "31", "32", "33", "34", "35", "36"
_ARCH_PREFIXES = ("__x64_", "__arm64_")
_CLONE_NS = {
    0: "any",
    0x2000000: "cgroup",
    0x8000000: "ipc",
    0x40000000: "net",
    0x20000: "mnt",
    0x20000000: "pid",
    0x80: "time",
    0x10000000: "user",
    0x4000000: "uts",
}


class Painter:
    """fatih/color semantics: wrap even empty strings when enabled."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __call__(self, code: str, text: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.enabled else text

    def label(self, emoji: str, name: str, code: str = BLUE) -> str:
        return self(code, f"{emoji} {name:<7}")


def tracepoint_line(body: Event, src: str, paint: Painter) -> str:
    subsys, name = body.get("subsys", ""), body.get("event", "")
    if f"{subsys}/{name}" == "raw_syscalls/sys_enter":
        return f"{paint.label('☎ ', 'syscall')} {src} {_raw_syscall(body.get('args') or [])}"
    return f"{paint.label('⁉️', 'tracepoint')} {src} {subsys} {name}"


def kprobe_line(body: Event, src: str, paint: Painter) -> str:
    function = body.get("function_name", "")
    name = function
    for prefix in _ARCH_PREFIXES:
        if function.startswith(prefix):
            name = function[len(prefix) :]
            break
    render = _KPROBES.get(name)
    if render is None:
        return f"{paint.label('❓', 'syscall')} {src} {function}"
    return render(body.get("args") or [], src, paint)


def _arg(args: list[Event], i: int) -> Event | None:
    return args[i] if len(args) > i else None


def _sub(arg: Event | None, key: str) -> Event:
    return (arg or {}).get(key) or {}


def _int(arg: Event | None, key: str) -> int:
    return int((arg or {}).get(key, 0))


def _file_path(arg: Event | None) -> str | None:
    if arg is None or "file_arg" not in arg:
        return None
    return quote_if_needed(arg["file_arg"].get("path", ""))


def _string(arg: Event | None) -> str:
    return quote_if_needed((arg or {}).get("string_arg", ""))


def _sock(arg: Event | None) -> str:
    s = _sub(arg, "sock_arg")
    return f"tcp {s.get('saddr', '')}:{s.get('sport', 0)} -> {s.get('daddr', '')}:{s.get('dport', 0)}"


def _rw(emoji: str, label: str) -> Callable[[list[Event], str, Painter], str]:
    def render(args: list[Event], src: str, paint: Painter) -> str:
        path = _file_path(_arg(args, 0))
        file = paint(CYAN, path) if path is not None else ""
        size = _arg(args, 2)
        count = paint(CYAN, f"{_int(size, 'size_arg')} bytes") if size is not None else ""
        return f"{paint.label(emoji, label)} {src} {file} {count}"

    return render


def _file_at(index: int, emoji: str, label: str) -> Callable[[list[Event], str, Painter], str]:
    def render(args: list[Event], src: str, paint: Painter) -> str:
        path = _file_path(_arg(args, index))
        return f"{paint.label(emoji, label)} {src} {paint(CYAN, path) if path is not None else ''}"

    return render


def _string_at(emoji: str, label: str) -> Callable[[list[Event], str, Painter], str]:
    def render(args: list[Event], src: str, paint: Painter) -> str:
        arg = _arg(args, 1)
        return f"{paint.label(emoji, label)} {src} {paint(CYAN, _string(arg)) if arg is not None else ''}"

    return render


def _two_strings(emoji: str, label: str) -> Callable[[list[Event], str, Painter], str]:
    def render(args: list[Event], src: str, paint: Painter) -> str:
        a, b = _arg(args, 0), _arg(args, 1)
        first = paint(CYAN, _string(a)) if a is not None else ""
        second = paint(CYAN, _string(b)) if b is not None else ""
        return f"{paint.label(emoji, label)} {src} {first} {second}"

    return render


def _bare(emoji: str, label: str) -> Callable[[list[Event], str, Painter], str]:
    return lambda args, src, paint: f"{paint.label(emoji, label)} {src}"


def _setuid(args: list[Event], src: str, paint: Painter) -> str:
    arg = _arg(args, 0)
    uid = paint(CYAN, str(_int(arg, "int_arg"))) if arg is not None else ""
    return f"{paint.label('🔑', 'setuid')} {src} {uid}"


def _setns(args: list[Event], src: str, paint: Painter) -> str:
    arg = _arg(args, 1)
    ns = _CLONE_NS.get(_int(arg, "int_arg"), "") if arg is not None else ""
    return f"{paint.label('🔧', 'setns')} {src} {ns}"


def _tcp(emoji: str, label: str) -> Callable[[list[Event], str, Painter], str]:
    def render(args: list[Event], src: str, paint: Painter) -> str:
        arg = _arg(args, 0)
        return f"{paint.label(emoji, label)} {src} {paint(CYAN, _sock(arg)) if arg is not None else ''}"

    return render


def _sendmsg(args: list[Event], src: str, paint: Painter) -> str:
    arg = _arg(args, 0)
    sock = paint(CYAN, _sock(arg)) if arg is not None else ""
    return f"{paint.label('📤', 'sendmsg')} {src} {sock} bytes {_int(_arg(args, 1), 'int_arg')}"


def _bpf_check(args: list[Event], src: str, paint: Painter) -> str:
    attr = ""
    if _arg(args, 0) is not None:
        a = _sub(args[0], "bpf_attr_arg")
        text = f"{a.get('ProgType', '')} {a.get('ProgName', '')} instruction count {a.get('InsnCnt', 0)}"
        attr = paint(CYAN, text)
    return f"{paint.label('🐝', 'bpf_load')} {src} {attr}"


def _perf_event(args: list[Event], src: str, paint: Painter) -> str:
    attr = ""
    if _arg(args, 0) is not None:
        p = _sub(args[0], "perf_event_arg")
        attr = paint(CYAN, f"{p.get('Type', '')} {p.get('KprobeFunc', '')}")
    return f"{paint.label('🐝', 'perf_event_alloc')} {src} {attr}"


def _bpf_map(args: list[Event], src: str, paint: Painter) -> str:
    attr = ""
    if _arg(args, 0) is not None:
        m = _sub(args[0], "bpf_map_arg")
        text = (
            f"{m.get('MapType', '')} {m.get('MapName', '')} key size {m.get('KeySize', 0)} "
            f"value size {m.get('ValueSize', 0)} max entries {m.get('MaxEntries', 0)}"
        )
        attr = paint(CYAN, text)
    return f"{paint.label('🗺', 'bpf_map_create')} {src} {attr}"


def _file_permission(args: list[Event], src: str, paint: Painter) -> str:
    label, attr = paint.label("❓", "security_file_permission"), ""
    if len(args) > 1:
        mask = _int(args[1], "int_arg")
        if mask == 0x02:
            label = paint.label("📝", "write")
        elif mask == 0x04:
            label = paint.label("📚", "read")
        attr = paint(CYAN, _file_path(args[0]) or "")
    return f"{label} {src} {attr}"


def _mmap_file(args: list[Event], src: str, paint: Painter) -> str:
    label, attr = paint.label("❓", "security_mmap_file"), ""
    if len(args) > 1:
        prot = _int(args[1], "uint_arg")
        tag = "mmap-" + "".join(c for bit, c in ((1, "r"), (2, "w"), (4, "x")) if prot & bit)
        label = paint.label("📝", tag)
        attr = paint(CYAN, _file_path(args[0]) or "")
    return f"{label} {src} {attr}"


def _truncate(function: str) -> Callable[[list[Event], str, Painter], str]:
    def render(args: list[Event], src: str, paint: Painter) -> str:
        label, attr = paint.label("❓", function), ""
        if _arg(args, 0) is not None:
            path = _sub(args[0], "path_arg").get("path") or _sub(args[0], "file_arg").get("path", "")
            attr = paint(CYAN, quote_if_needed(path))
            label = paint.label("📝", "truncate")
        return f"{label} {src} {attr}"

    return render


_KPROBES: dict[str, Callable[[list[Event], str, Painter], str]] = {
    "sys_write": _rw("📝", "write"),
    "sys_read": _rw("📚", "read"),
    "fd_install": _file_at(1, "📬", "open"),
    "sys_openat": _string_at("📬️", "openat"),
    "sys_open": _string_at("📬️", "open"),
    "sys_close": _file_at(0, "📪", "close"),
    "sys_mount": _two_strings("💾", "mount"),
    "sys_setuid": _setuid,
    "sys_clock_settime": _bare("⏰", "clock_settime"),
    "sys_pivot_root": _two_strings("💾", "pivot_root"),
    "proc_exec_connector": _bare("🔧", "proc_exec_connector"),
    "sys_setns": _setns,
    "tcp_connect": _tcp("🔌", "connect"),
    "tcp_close": _tcp("🧹", "close"),
    "tcp_sendmsg": _sendmsg,
    "bpf_check": _bpf_check,
    "security_perf_event_alloc": _perf_event,
    "security_bpf_map_alloc": _bpf_map,
    "security_bpf_map_create": _bpf_map,
    "security_file_permission": _file_permission,
    "security_mmap_file": _mmap_file,
    "security_path_truncate": _truncate("security_path_truncate"),
    "security_file_truncate": _truncate("security_file_truncate"),
}


# --- raw_syscalls/sys_enter --------------------------------------------------------------------


_DEFAULT_ABI = "x64"
_UNISTD = {
    "x64": ("/usr/include/x86_64-linux-gnu/asm/unistd_64.h", "/usr/include/asm/unistd_64.h"),
    "i386": ("/usr/include/x86_64-linux-gnu/asm/unistd_32.h", "/usr/include/asm/unistd_32.h"),
}
_TRACEFS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
_FORMAT_FIELD = re.compile(r"^\s*field:(.+?)\s*;\s*offset:", re.MULTILINE)


@lru_cache(maxsize=4)
def _syscall_names(abi: str = _DEFAULT_ABI) -> dict[int, str]:
    """Syscall numbers of an ABI, from the kernel UAPI header when it is installed."""
    names: dict[int, str] = {}
    for header in _UNISTD.get(abi, ()):
        try:
            text = Path(header).read_text()
        except OSError:
            continue
        for match in re.finditer(r"^#define __NR(?:3264)?_(\w+)\s+(\d+)\s*$", text, re.MULTILINE):
            names[int(match.group(2))] = match.group(1)
        break
    return names


@lru_cache(maxsize=512)
def _syscall_args(name: str) -> tuple[tuple[str, str], ...] | None:
    """(type, name) of a syscall's arguments, from its sys_enter tracepoint format; None if unknown."""
    for root in _TRACEFS:
        try:
            text = Path(f"{root}/events/syscalls/sys_enter_{name}/format").read_text()
        except OSError:
            continue
        fields = [m.group(1) for m in _FORMAT_FIELD.finditer(text)]
        if "int __syscall_nr" in fields:
            fields = fields[fields.index("int __syscall_nr") + 1 :]
        out = []
        for decl in fields:
            typ, _, arg = decl.rpartition(" ")
            out.append((typ, arg))
        return tuple(out)
    return None


def _raw_syscall(args: list[Event]) -> str:
    """Tetragon's rawSyscallEnter: `name(type arg=value, ...)` from the id and the size_arg values."""
    first = _arg(args, 0) or {}
    abi = _DEFAULT_ABI
    if "long_arg" in first:
        number = int(first["long_arg"])
    elif "syscall_id" in first:
        number = int(first["syscall_id"].get("id", 0))
        abi = first["syscall_id"].get("abi", "")
    else:
        number = -1
    name = _syscall_names(abi).get(number)
    if name is None:
        return "unknown"
    if abi != _DEFAULT_ABI:
        name = f"{abi}/{name}"
    sys_args = _syscall_args(name)
    if sys_args is None:
        return name
    parts = []
    for i, (typ, arg_name) in enumerate(sys_args, start=1):
        value, pointer = "?", False
        arg = _arg(args, i)
        if arg is not None and "size_arg" in arg:
            pointer = typ.endswith("*")
            value = f"0x{int(arg['size_arg']):x}" if pointer else str(int(arg["size_arg"]))
        parts.append(f"{typ}{arg_name}={value}" if pointer else f"{typ} {arg_name}={value}")
    return f"{name}({', '.join(parts)})"
