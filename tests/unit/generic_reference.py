"""Reference decoding and building of generic records, for tests only.

The agent renders generic records through per-hook plans (events.render_plan) and export-line
templates (events.genline); these are the plain, field-by-field versions the tests compare them
with: a whole-record decoder and the general event builder the agent started from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tetragon.abi import events_h as L
from tetragon.events.decode import GenericArg, decode_generic_header
from tetragon.events.generic_args import arg_variant, int_variant, with_label
from tetragon.events.generic_event import ACTION_NAMES, make_event_builder
from tetragon.jsontypes import Event
from tetragon.policy.hookinfo import ArgInfo, HookInfo
from tetragon.process.cache import with_tid


@dataclass
class GenericRecord:
    op: int
    flags_common: int
    size: int
    ktime: int
    pid: int
    tid: int
    policy_id: int
    hook_id: int
    action: int
    return_action: int
    selector: int
    flags: int
    ret: int
    args: list[GenericArg] = field(default_factory=list)
    func_id: int = 0  # syscall-list hooks: the syscall number (bit 31: ia32)


def decode_generic(record: memoryview | bytes) -> GenericRecord:
    """Decode one generic record; ValueError when it is short or its blobs overrun `size`."""
    buf = bytes(record)
    head = decode_generic_header(buf)
    args: list[GenericArg] = []
    pos = L.MSG_GENERIC.size
    for i in range(head.nargs):
        if pos + L.GEN_ARG.size > head.size:
            raise ValueError(f"argument {i} header at {pos} overruns record size {head.size}")
        kind, aflags, index, length = L.GEN_ARG.unpack_from(buf, pos)
        pos += L.GEN_ARG.size
        if not (L.GEN_KIND_INT <= kind <= L.GEN_KIND_CRED or kind == L.GEN_KIND_SKB):
            raise ValueError(f"argument {i} has unknown kind {kind}")
        if pos + length > head.size:
            raise ValueError(f"argument {i} payload of {length} bytes overruns record size {head.size}")
        args.append(GenericArg(kind, aflags, index, buf[pos : pos + length]))
        pos += length
    return GenericRecord(
        head.op,
        head.common_flags,
        head.size,
        head.ktime,
        head.pid,
        head.tid,
        head.policy_id,
        head.hook_id,
        head.action,
        head.return_action,
        head.selector,
        head.flags,
        head.ret,
        args,
        head.func_id,
    )


def build_args(rec: GenericRecord, hook: HookInfo) -> list[Event]:
    """The record's blobs as KprobeArguments, in the order of the hook's `args`."""
    out: list[Event] = []
    for arg in sorted(rec.args, key=lambda a: a.index):
        info = hook.args[arg.index] if arg.index < len(hook.args) else ArgInfo(type="")
        out.append(with_label(arg_variant(arg, info), info))
    return out


def build_generic_event(
    rec: GenericRecord,
    hook: HookInfo,
    process: Event | None,
    parent: Event | None,
    ancestors: list[Event] | None,
    node_name: str,
    time: str,
) -> Event:
    """A process_kprobe / process_tracepoint / process_uprobe / process_usdt event (per hook.event)
    from a record, made by the agent's event builder."""
    return make_event_builder(hook)(
        build_args(rec, hook),
        rec.action,
        rec.return_action,
        rec.flags,
        rec.ret,
        with_tid(process, rec.tid) if process is not None else None,
        parent,
        ancestors,
        node_name,
        time,
    )


def generic_event(
    hook: HookInfo,
    args: list[Event],
    action_id: int,
    return_action_id: int,
    flags: int,
    ret: int,
    process: Any,
    parent: Any,
    ancestors: list[Any] | None,
    node_name: str,
    time: str,
) -> Event:
    """The general builder, field by field in the order of each event type's message: the agent's
    per-hook builders (events.generic_event.make_event_builder) must give the same events."""
    body: Event = {}
    if process is not None:
        body["process"] = process
    if parent is not None:
        body["parent"] = parent
    action = ACTION_NAMES.get(action_id)
    tags = list(hook.tags)
    if hook.event == "process_kprobe":
        if hook.function_name:
            body["function_name"] = hook.function_name
        if args:
            body["args"] = args
        returned = bool(flags & L.GEN_F_RETURN)
        if returned and hook.return_arg is not None:
            body["return"] = with_label(int_variant(ret, hook.return_arg.type), hook.return_arg)
        if action:
            body["action"] = action
        if hook.policy_name:
            body["policy_name"] = hook.policy_name
        # every process_kprobe has one: KPROBE_ACTION_POST (kernel 0) when there was no return probe
        return_action = ACTION_NAMES.get(return_action_id if returned else L.ACTION_POST)
        if return_action:
            body["return_action"] = return_action
        if hook.message:
            body["message"] = hook.message
        if tags:
            body["tags"] = tags
    elif hook.event == "process_tracepoint":
        if hook.subsys:
            body["subsys"] = hook.subsys
        if hook.tp_event:
            body["event"] = hook.tp_event
        if args:
            body["args"] = args
        if hook.policy_name:
            body["policy_name"] = hook.policy_name
        if action:
            body["action"] = action
        if hook.message:
            body["message"] = hook.message
        if tags:
            body["tags"] = tags
    elif hook.event == "process_uprobe":
        if hook.path:
            body["path"] = hook.path
        if hook.symbol:
            body["symbol"] = hook.symbol
        if hook.policy_name:
            body["policy_name"] = hook.policy_name
        if hook.message:
            body["message"] = hook.message
        if args:
            body["args"] = args
        if tags:
            body["tags"] = tags
    elif hook.event == "process_usdt":
        for key, value in (
            ("path", hook.path),
            ("provider", hook.provider),
            ("name", hook.probe_name),
            ("policy_name", hook.policy_name),
            ("message", hook.message),
            ("args", args),
            ("tags", tags),
        ):
            if value:
                body[key] = value
    else:
        raise ValueError(f"hook event {hook.event!r} is not a generic event type")
    if ancestors:
        body["ancestors"] = ancestors
    if hook.event == "process_usdt" and action:
        body["action"] = action
    if hook.event == "process_uprobe":
        if hook.offset:
            body["offset"] = str(hook.offset)
        if action:
            body["action"] = action
    return {hook.event: body, "node_name": node_name, "time": time}
