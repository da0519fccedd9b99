"""The one builder of generic events: process_kprobe, process_tracepoint, process_uprobe and
process_usdt dicts.

make_event_builder(hook) decides once per hook what depends only on the hook (names, message,
tags, which fields the event type has and in what order) and returns the function the pipeline
calls per record. The export line templates (events.genline) are cut from this builder's own
output, so the dict path and the line path cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tetragon.abi import events_h as L
from tetragon.events.generic_args import int_variant, with_label
from tetragon.jsontypes import Event
from tetragon.policy.hookinfo import HookInfo

# Kernel action id (ACTION_*) -> KprobeAction enum name.
ACTION_NAMES = {
    L.ACTION_POST: "KPROBE_ACTION_POST",
    L.ACTION_FOLLOWFD: "KPROBE_ACTION_FOLLOWFD",
    L.ACTION_SIGKILL: "KPROBE_ACTION_SIGKILL",
    L.ACTION_UNFOLLOWFD: "KPROBE_ACTION_UNFOLLOWFD",
    L.ACTION_OVERRIDE: "KPROBE_ACTION_OVERRIDE",
    L.ACTION_COPYFD: "KPROBE_ACTION_COPYFD",
    L.ACTION_GETURL: "KPROBE_ACTION_GETURL",
    L.ACTION_DNSLOOKUP: "KPROBE_ACTION_DNSLOOKUP",
    L.ACTION_NOPOST: "KPROBE_ACTION_NOPOST",
    L.ACTION_SIGNAL: "KPROBE_ACTION_SIGNAL",
    L.ACTION_TRACKSOCK: "KPROBE_ACTION_TRACKSOCK",
    L.ACTION_UNTRACKSOCK: "KPROBE_ACTION_UNTRACKSOCK",
    L.ACTION_NOTIFYENFORCER: "KPROBE_ACTION_NOTIFYENFORCER",
    L.ACTION_CLEANUPENFORCER: "KPROBE_ACTION_CLEANUPENFORCERNOTIFICATION",
    L.ACTION_SET: "KPROBE_ACTION_SET",
}

# the generic event types, in the order make_event_builder tells them apart
GENERIC_EVENT_KINDS = ("process_kprobe", "process_tracepoint", "process_uprobe", "process_usdt")

# builder(args, action_id, return_action_id, flags, ret, process, parent, ancestors, node_name, time):
# process / parent / ancestors are dicts, or orjson.Fragment for an event that is only serialized;
# `process` already carries the record's tid.
EventBuilder = Callable[[list[Event], int, int, int, int, Any, Any, "list[Any] | None", str, str], Event]
_action_name = ACTION_NAMES.get
_RETURNED = L.GEN_F_RETURN


def _present(*fields: tuple[str, Any]) -> Event:
    """The hook's constant fields that are set, in order, to be set in one go per event. Nothing
    downstream changes an event in place (redaction and field filters copy), so events of one hook
    may share the `tags` list."""
    return {key: value for key, value in fields if value}


def _constants(hook: HookInfo) -> tuple[Event, Event]:
    """The hook's constant fields before its arguments and the closing ones (before `ancestors`);
    kprobes and tracepoints have `policy_name` in between."""
    message, tags = ("message", hook.message), ("tags", list(hook.tags))
    if hook.event == "process_kprobe":
        return _present(("function_name", hook.function_name)), _present(message, tags)
    if hook.event == "process_tracepoint":
        return _present(("subsys", hook.subsys), ("event", hook.tp_event)), _present(message, tags)
    policy_name = ("policy_name", hook.policy_name)
    if hook.event == "process_usdt":
        probe = (("provider", hook.provider), ("name", hook.probe_name))
        return _present(("path", hook.path), *probe, policy_name, message), _present(tags)
    return _present(("path", hook.path), ("symbol", hook.symbol), policy_name, message), _present(tags)


def _loader_builder() -> EventBuilder:
    """process_loader (spec.loader): the record's two arguments are the mapped file's path and build
    id. Tetragon sends the event without a `time` (its GetEventsResponse has none). Its `process` is
    the thread group leader's; here `process.tid` is the mapping thread's, as on the other events."""

    def build(args: list[Event], *rest: Any) -> Event:
        # (action, return action, flags, ret) do not apply, nor time
        process, parent, ancestors, node_name = rest[4:8]
        body: Event = {}
        if process is not None:
            body["process"] = process
        for arg, key, variant in zip(args, ("path", "buildid"), ("string_arg", "bytes_arg"), strict=False):
            if arg.get(variant):
                body[key] = arg[variant]
        if parent is not None:
            body["parent"] = parent
        if ancestors:
            body["ancestors"] = ancestors
        return {"process_loader": body, "node_name": node_name}

    return build


def make_event_builder(hook: HookInfo) -> EventBuilder:
    """The builder of `hook`'s events (see the module docstring); a hook whose event is not a
    generic event type gets a builder that raises ValueError."""
    event = hook.event
    if event == "process_loader":
        return _loader_builder()
    if event not in GENERIC_EVENT_KINDS:

        def unknown(*_: Any) -> Event:
            raise ValueError(f"hook event {event!r} is not a generic event type")

        return unknown
    kprobe, tracepoint, uprobe, usdt = (event == kind for kind in GENERIC_EVENT_KINDS)
    uprobe = uprobe or usdt  # a usdt event is shaped as a uprobe's, without `offset`
    leading, closing = _constants(hook)
    policy_name = hook.policy_name
    return_arg = hook.return_arg if kprobe else None
    # a returned sock comes as a blob (index GEN_RET_INDEX), the last of the arguments in index order
    return_blob = return_arg is not None and return_arg.type == "sock"
    offset = str(hook.offset) if uprobe and hook.offset else None

    def build(
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
        body: Event = {}
        if process is not None:
            body["process"] = process
        if parent is not None:
            body["parent"] = parent
        if leading:
            body.update(leading)
        returned_blob = None
        if return_blob and flags & _RETURNED and args:
            args, returned_blob = args[:-1], args[-1]
        if args:
            body["args"] = args
        if kprobe:  # return, action, policy_name, return_action
            returned = flags & _RETURNED
            if returned_blob is not None:
                body["return"] = returned_blob
            elif returned and return_arg is not None:
                body["return"] = with_label(int_variant(ret, return_arg.type), return_arg)
            action = _action_name(action_id)
            if action:
                body["action"] = action
            if policy_name:
                body["policy_name"] = policy_name
            # Tetragon reports the kernel's return action on every process_kprobe; without a
            # return probe it is 0, ACTION_POST (pkg/grpc/tracing: kprobeAction(ReturnAction))
            return_action = _action_name(return_action_id if returned else L.ACTION_POST)
            if return_action:
                body["return_action"] = return_action
        elif tracepoint:  # policy_name, action
            if policy_name:
                body["policy_name"] = policy_name
            action = _action_name(action_id)
            if action:
                body["action"] = action
        if closing:
            body.update(closing)
        if ancestors:
            body["ancestors"] = ancestors
        if uprobe:  # offset and action come last
            if offset:
                body["offset"] = offset
            action = _action_name(action_id)
            if action:
                body["action"] = action
        return {event: body, "node_name": node_name, "time": time}

    return build
