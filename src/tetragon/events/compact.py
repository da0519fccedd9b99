"""Tetragon's compact one-line event format (`tetra getevents -o compact`).

Works on the Tetragon-JSON event dict (see tetragon.api.convert), so 64-bit integers arrive as
strings and unset fields are simply absent (Go's zero values are used in their place).

Faithful to Tetragon's encoder, including its quirks:
* user-controlled strings (binary, arguments, paths, user-space symbols, host name) are printed
  Go-quoted when they contain a space or a non-printable character; kernel names, enums, Kubernetes
  names and addresses are printed as they are;
* the `🛑 CAP_SYS_ADMIN` trailer tests list *indices* of the effective set, and with colors on the
  (empty, colored) trailer still pads every line towards column 120.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable

from tetragon.events.compact_hooks import BLUE, CYAN, GREEN, MAGENTA, RED, YELLOW, Painter
from tetragon.events.compact_hooks import kprobe_line as _kprobe
from tetragon.events.compact_hooks import tracepoint_line as _tracepoint
from tetragon.events.goquote import go_quote, quote_if_needed
from tetragon.jsontypes import Event

__all__ = ["format_compact", "go_quote", "quote_if_needed"]

_CAPS_PAD = 120
_CAP_SYS_ADMIN_INDEX = 21
_IMA_BINPRM_HOOKS = {
    "bprm_check_security",
    "bprm_committed_creds",
    "bprm_committing_creds",
    "bprm_creds_for_exec",
    "bprm_creds_from_file",
}
_IMA_FILE_HOOKS = {"file_ioctl", "file_lock", "file_open", "file_post_open", "file_receive", "mmap_file"}


def format_compact(
    event: Event,
    *,
    color: bool = False,
    timestamps: bool = False,
    stack_traces: bool = False,
    ima_hash: bool = False,
) -> str | None:
    """The compact text for `event` (possibly several lines), or None for events it cannot show."""
    paint = Painter(color)
    line = _event_line(event, paint)
    if line is None:
        return None
    if timestamps:
        line = f"{_compact_time(event.get('time'))} {line}"
    extra = ""
    if stack_traces and "process_kprobe" in event:
        extra += _stack_traces(event["process_kprobe"], paint)
    if ima_hash and "process_lsm" in event:
        extra += _ima_hash(event["process_lsm"], paint)
    if not extra:
        return line
    # The caller adds the final newline; a color reset that followed it moves in front of it.
    if extra.endswith("\n\x1b[0m"):
        extra = extra[:-5] + "\x1b[0m"
    return f"{line}\n{extra.removesuffix(chr(10))}"


def _event_line(event: Event, paint: Painter) -> str | None:
    if "test" in event:
        return "TEST EVENT"
    if "process_throttle" in event:
        return _throttle(event["process_throttle"], paint)
    for key, render in _RENDERERS.items():
        body = event.get(key)
        if body is None:
            continue
        process = body.get("process")
        if process is None:
            return None
        source, caps = _process_info(event.get("node_name", ""), process, paint)
        return _with_caps(render(body, source, paint), caps)
    return None


def _process_info(node: str, process: Event, paint: Painter) -> tuple[str, str]:
    pod = process.get("pod")
    if pod is not None:
        where = paint(GREEN, f"{pod.get('namespace', '')}/{pod.get('name', '')}")
    else:
        where = paint(GREEN, quote_if_needed(node))
    binary = paint(MAGENTA, quote_if_needed(process.get("binary", "")))
    effective = (process.get("cap") or {}).get("effective") or []
    trailer = "🛑 CAP_SYS_ADMIN" if len(effective) > _CAP_SYS_ADMIN_INDEX else ""
    return f"{where} {binary}", paint(MAGENTA, trailer)


def _with_caps(line: str, caps: str) -> str:
    if not caps:
        return line
    padding = max(_CAPS_PAD - len(line.encode()), 0)
    return f"{line} {caps:>{padding}}"


def _args_of(process: Event, paint: Painter) -> str:
    return paint(CYAN, quote_if_needed(process.get("arguments", "")))


def _exec(body: Event, src: str, paint: Painter) -> str:
    return f"{paint.label('🚀', 'process')} {src} {_args_of(body['process'], paint)}"


def _exit(body: Event, src: str, paint: Painter) -> str:
    status = body.get("signal") or str(body.get("status", 0))
    return f"{paint.label('💥', 'exit')} {src} {_args_of(body['process'], paint)} {paint(RED, status)}"


def _loader(body: Event, src: str, paint: Painter) -> str:
    buildid = body.get("buildid", "")
    hexid = _b64_to_hex(buildid) + " " if buildid else ""
    path = paint(YELLOW, quote_if_needed(body.get("path", "")))
    return f"{paint.label('🧬', 'loader')} {src} {hexid}{path}"


def _uprobe(body: Event, src: str, paint: Painter) -> str:
    path, symbol = quote_if_needed(body.get("path", "")), quote_if_needed(body.get("symbol", ""))
    return f"{paint.label('🕵️', 'uprobe')} {src} {path} {symbol}"


def _usdt(body: Event, src: str, paint: Painter) -> str:
    parts = (quote_if_needed(body.get(k, "")) for k in ("path", "provider", "name"))
    return f"{paint.label('🕵️', 'usdt')} {src} {' '.join(parts)}"


def _lsm(body: Event, src: str, paint: Painter) -> str:
    return f"{paint.label('🔒', 'LSM')} {src} {body.get('function_name', '')}"


_RENDERERS: dict[str, Callable[[Event, str, Painter], str]] = {
    "process_exec": _exec,
    "process_exit": _exit,
    "process_loader": _loader,
    "process_kprobe": _kprobe,
    "process_tracepoint": _tracepoint,
    "process_uprobe": _uprobe,
    "process_lsm": _lsm,
    "process_usdt": _usdt,
}


def _throttle(body: Event, paint: Painter) -> str:
    kind = body.get("type", "THROTTLE_UNKNOWN")
    state = {"THROTTLE_START": paint(RED, "START"), "THROTTLE_STOP": paint(GREEN, "STOP ")}.get(kind, "")
    return f"{paint.label('🧬', 'throttle', RED)} {state} {quote_if_needed(body.get('cgroup', ''))}"


# --- timestamps, stack traces, IMA hashes -------------------------------------------------------

_RFC3339 = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?Z$")


def _compact_time(value: str | None) -> str:
    match = _RFC3339.match(value or "")
    if match is None:
        return "1970-01-01T00:00:00.000000000Z"
    return f"{match.group(1)}.{(match.group(2) or '').ljust(9, '0')}Z"


def _stack_traces(body: Event, paint: Painter) -> str:
    out = ""
    kernel = body.get("kernel_stack_trace") or []
    if kernel:
        out += "Kernel:\n"
        for frame in kernel:
            out += paint(GREEN, f"   0x{int(frame.get('address', 0)):x}:")
            out += paint(BLUE, f" {frame.get('symbol', '')}") + "+"
            out += paint(YELLOW, f"0x{int(frame.get('offset', 0)):x}\n")
    user = body.get("user_stack_trace") or []
    if user:
        out += "User:\n"
        for frame in user:
            out += paint(GREEN, f"   0x{int(frame.get('address', 0)):x}:")
            if frame.get("symbol"):
                out += paint(BLUE, f" {quote_if_needed(frame['symbol'])}")
            module = quote_if_needed(frame.get("module", ""))
            out += paint(YELLOW, f" ({module}+0x{int(frame.get('offset', 0)):x})\n")
    return out


def _ima_hash(body: Event, paint: Painter) -> str:
    digest, hook = body.get("ima_hash", ""), body.get("function_name", "")
    if not digest:
        return ""
    args = body.get("args") or []
    first: Event = args[0] if args else {}
    if hook in _IMA_BINPRM_HOOKS:
        path = (first.get("linux_binprm_arg") or {}).get("path", "")
    elif hook in _IMA_FILE_HOOKS:
        path = (first.get("file_arg") or {}).get("path", "")
    else:
        path = ""
    if not path:
        return ""
    return paint(GREEN, f"   {quote_if_needed(path)}") + paint(BLUE, f" {digest}\n")


def _b64_to_hex(value: str) -> str:
    return base64.b64decode(value).hex()
