"""process_lsm events (spec.lsmhooks): the builder, in tetragon.ProcessLsm's field order, and the
imaHash a record may end with (bpf/include/events.h struct gen_ima, flag GEN_F_IMA).

The builder has the signature of events.generic_event's, so the render plan, the export-line
templates and the pipeline treat LSM hooks like the other generic hooks. A record with an IMA hash
takes the dict path (its line has no template), and add_ima_hash appends `ima_hash` last, where the
proto puts it.
"""

from __future__ import annotations

from typing import Any

from tetragon.abi import events_h as L
from tetragon.events.generic_event import ACTION_NAMES, EventBuilder
from tetragon.jsontypes import Event
from tetragon.policy.hookinfo import HookInfo

# the kernel's enum hash_algo -> (name, digest bytes), as Tetragon names them (pkg/grpc/tracing)
IMA_ALGOS: dict[int, tuple[str, int]] = {
    1: ("md5", 16),
    2: ("sha1", 20),
    4: ("sha256", 32),
    6: ("sha512", 64),
    13: ("wp512", 64),
    17: ("sm3", 32),
}
_action_name = ACTION_NAMES.get


def make_lsm_builder(hook: HookInfo) -> EventBuilder:
    """The builder of `hook`'s process_lsm events: process, parent, function_name, policy_name,
    message, args, action, tags, ancestors (ima_hash is added by add_ima_hash); unset fields are
    left out, as protojson leaves out empty ones."""
    constants = (
        ("function_name", hook.function_name),
        ("policy_name", hook.policy_name),
        ("message", hook.message),
    )
    tags = list(hook.tags)

    def build(
        args: list[Event],
        action_id: int,
        _return_action: int,  # LSM hooks have no return probe
        _flags: int,
        _ret: int,
        proc: Any,
        parent_proc: Any,
        ancestor_procs: list[Any] | None,
        node: str,
        stamp: str,
    ) -> Event:
        fields = (
            ("process", proc),
            ("parent", parent_proc),
            *constants,
            ("args", args),
            ("action", _action_name(action_id)),
            ("tags", tags),
            ("ancestors", ancestor_procs),
        )
        return {"process_lsm": {k: v for k, v in fields if v}, "node_name": node, "time": stamp}

    return build


def ima_hash(buf: bytes, size: int) -> str | None:
    """`<algo>:<hex>` of the gen_ima that ends a GEN_F_IMA record of `size` bytes; None when the
    kernel reported an error or an algorithm Tetragon does not name."""
    start = size - L.GEN_IMA.size
    if start < L.MSG_GENERIC.size:
        raise ValueError(f"GEN_F_IMA record of {size} bytes has no room for its hash")
    algo, digest = L.GEN_IMA.unpack_from(buf, start)
    known = IMA_ALGOS.get(algo)
    if known is None:
        return None
    name, length = known
    return f"{name}:{digest[:length].hex()}"


def add_ima_hash(event: Event, buf: bytes, size: int) -> None:
    """Appends the record's IMA hash to a process_lsm event (its last field)."""
    value = ima_hash(buf, size)
    body = event.get("process_lsm")
    if value is not None and body is not None:
        body["ima_hash"] = value
