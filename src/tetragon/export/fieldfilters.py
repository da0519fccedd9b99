"""Tetragon field filters (`FieldFilter` in events.proto): keep or drop fields of event bodies.

Each filter has `event_set` (EventType names; empty = every type), `fields` (comma-separated dotted
paths relative to the event body, e.g. `process.binary,parent`), `action` (`INCLUDE`, the proto
default, or `EXCLUDE`) and `invert_event_set`. As in Tetragon the filters are applied one after the
other: an INCLUDE filter keeps only its fields (so any INCLUDE for a type makes everything else
excluded, and two INCLUDEs keep the intersection), an EXCLUDE filter removes its fields, whatever an
INCLUDE kept. Lists of messages (`ancestors`, `args`) are filtered element by element. Top-level keys
(`node_name`, `time`) are never touched. Filters without fields change nothing.

Events are never mutated: a filtered event is a new dict sharing unfiltered sub-objects with the
original, and an event no filter applies to is returned as the very same object.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from tetragon.export.filterspec import (
    FilterError,
    canonical_key,
    checked_fields,
    decode_json_objects,
    normalize_event_set,
)
from tetragon.jsontypes import Event

Mask = dict[str, "Mask"]  # {} = the whole subtree
_Op = tuple[bool, Mask]  # (is_include, mask)

FIELD_FILTER_KEYS = ("event_set", "fields", "action", "invert_event_set")
_ACTIONS = {"INCLUDE": "INCLUDE", "EXCLUDE": "EXCLUDE", 0: "INCLUDE", 1: "EXCLUDE"}


def _paths(where: str, value: Any) -> list[str]:
    if isinstance(value, dict) and set(value) <= {"paths"}:  # FieldMask written as a message
        value = value.get("paths", [])
    if isinstance(value, str):
        items = value.split(",")
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        items = list(value)
    else:
        raise FilterError(f"{where}: expected a comma-separated string of field paths")
    out = []
    for item in items:
        path = item.strip()
        if not path:
            continue
        segments = path.split(".")
        if any(not s for s in segments):
            raise FilterError(f"{where}: invalid field path {path!r}")
        out.append(".".join(canonical_key(s) for s in segments))
    return out


def normalize_field_filter(raw: Any, where: str = "field filter") -> dict[str, Any]:
    """Validate one FieldFilter; returns {event_set, fields (list of paths), action, invert_event_set}."""
    out: dict[str, Any] = {"event_set": [], "fields": [], "action": "INCLUDE", "invert_event_set": False}
    for key, at, value in checked_fields(raw, where, FIELD_FILTER_KEYS):
        if key == "event_set":
            out[key] = normalize_event_set(at, value)
        elif key == "fields":
            out[key] = _paths(at, value)
        elif key == "action":
            action = (
                _ACTIONS.get(value) if isinstance(value, str | int) and not isinstance(value, bool) else None
            )
            if action is None:
                raise FilterError(f"{at}: unknown action {json.dumps(value)} (use INCLUDE or EXCLUDE)")
            out[key] = action
        else:
            if isinstance(value, dict) and set(value) <= {"value"}:
                value = value.get("value", False)
            if not isinstance(value, bool):
                raise FilterError(f"{at}: expected true or false, got {json.dumps(value)}")
            out[key] = value
    return out


def parse_field_filter_lines(text: str) -> list[dict[str, Any]]:
    """Parse `--field-filters` syntax (JSON objects, one per line); raises FilterError."""
    return [
        normalize_field_filter(obj, f"field filter on line {line}")
        for line, obj in decode_json_objects(text, "field filter")
    ]


def _mask(paths: Iterable[str]) -> Mask:
    root: Mask = {}
    whole: set[tuple[str, ...]] = set()
    for path in paths:
        node = root
        segments = tuple(path.split("."))
        for depth, seg in enumerate(segments):
            if segments[: depth + 1] in whole:
                break  # an ancestor is already taken whole
            if depth == len(segments) - 1:
                node[seg] = {}
                whole.add(segments)
            else:
                node = node.setdefault(seg, {})
    return root


def _include(value: Any, mask: Mask) -> Any:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            sub = mask.get(k)
            if sub is not None:
                out[k] = _include(v, sub) if sub else v
        return out
    if isinstance(value, list):
        return [_include(item, mask) for item in value]
    return value


def _exclude(value: Any, mask: Mask) -> Any:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            sub = mask.get(k)
            if sub is None:
                out[k] = v
            elif sub:
                out[k] = _exclude(v, sub)
        return out
    if isinstance(value, list):
        return [_exclude(item, mask) for item in value]
    return value


def identity(event: Event) -> Event:
    return event


def compile_field_filters(filters: Iterable[dict[str, Any]]) -> Callable[[Event], Event]:
    """Compile FieldFilter dicts into `event -> event`; `identity` when there is nothing to do."""
    compiled: list[tuple[frozenset[str], bool, _Op]] = []
    for i, raw in enumerate(filters):
        f = normalize_field_filter(raw, f"field filter {i + 1}")
        if not f["fields"]:
            continue  # an empty FieldMask selects everything: include-all / exclude-nothing
        keys = frozenset(name.lower() for name in f["event_set"])
        compiled.append((keys, f["invert_event_set"], (f["action"] == "INCLUDE", _mask(f["fields"]))))
    if not compiled:
        return identity

    ops_by_type: dict[str, list[_Op]] = {}

    def ops_for(key: str) -> list[_Op]:
        ops = []
        for keys, invert, op in compiled:
            # Tetragon: with an event set, filter only matching types (or, inverted, only the others).
            if not keys or (key in keys) != invert:
                ops.append(op)
        ops_by_type[key] = ops
        return ops

    def apply(event: Event) -> Event:
        key = next(iter(event))
        ops = ops_by_type.get(key)
        if ops is None:
            ops = ops_for(key)
        if not ops:
            return event
        body = event[key]
        for is_include, mask in ops:
            body = _include(body, mask) if is_include else _exclude(body, mask)
        out = dict(event)
        out[key] = body
        return out

    return apply
