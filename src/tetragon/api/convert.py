"""Conversion between the agent's event dicts and the `GetEventsResponse` protobuf.

The agent's internal event is a plain dict shaped exactly like one line of Tetragon's JSON export:
Go `protojson` with `UseProtoNames`, i.e. snake_case keys in .proto declaration order, 64-bit
integers as strings, enums by name, Timestamps as RFC 3339, wrappers as bare values (kept even when
0), maps with sorted keys and every unpopulated field left out.

`json_format.MessageToDict` is close but orders fields by number, not by declaration (they differ for
`KprobeArgument.label`, declared after the oneof), so `proto_to_event` walks the descriptors itself.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable
from typing import Any

import orjson
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from tetragon.api.gen.tetragon import events_pb2
from tetragon.jsontypes import Event
from tetragon.timefmt import format_timestamp as format_wall_ns

_Convert = Callable[[Any], Any]

__all__ = ["Event", "dumps_event", "event_to_proto", "message_to_json", "proto_to_event"]


def event_to_proto(event: Event) -> events_pb2.GetEventsResponse:
    """Parse a Tetragon-JSON event dict; unknown keys or wrong types raise json_format.ParseError."""
    return json_format.ParseDict(event, events_pb2.GetEventsResponse(), ignore_unknown_fields=False)


def proto_to_event(msg: events_pb2.GetEventsResponse) -> Event:
    """The dict Tetragon's JSON export would write for `msg`."""
    return message_to_json(msg)


def dumps_event(event: Event) -> bytes:
    """One compact JSON line (no trailing newline), byte-compatible with Tetragon's export."""
    return orjson.dumps(event)


def message_to_json(msg: Message) -> dict[str, Any]:
    """Go-protojson (UseProtoNames) form of any message, as an ordered dict."""
    out: dict[str, Any] = {}
    for name, has_presence, is_list, is_map, default, convert in _plan(msg.DESCRIPTOR):
        value = getattr(msg, name)
        if is_map:
            if value:
                out[name] = {_map_key(k): convert(value[k]) for k in sorted(value)}
        elif is_list:
            if value:
                out[name] = [convert(v) for v in value]
        elif has_presence:
            if msg.HasField(name):
                out[name] = convert(value)
        elif value != default or _is_negative_zero(value):
            out[name] = convert(value)
    return out


# --- per-descriptor plans ------------------------------------------------------------------------

_FieldPlan = tuple[str, bool, bool, bool, Any, _Convert]
_PLANS: dict[str, list[_FieldPlan]] = {}

INT64_TYPES = {
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED64,
    FieldDescriptor.TYPE_SFIXED64,
}


def _plan(desc: Descriptor) -> list[_FieldPlan]:
    plan = _PLANS.get(desc.full_name)
    if plan is None:
        plan = []
        for field in desc.fields:  # declaration order, like Go's order.IndexOrder
            is_map = _is_map(field)
            is_list = field.is_repeated and not is_map
            if is_map:
                convert = _converter(field.message_type.fields_by_name["value"])
                default: Any = None
            else:
                convert = _converter(field)
                default = None if is_list or field.has_presence else field.default_value
            plan.append((field.name, field.has_presence and not is_list, is_list, is_map, default, convert))
        _PLANS[desc.full_name] = plan
    return plan


def _is_map(field: FieldDescriptor) -> bool:
    return (
        field.type == FieldDescriptor.TYPE_MESSAGE
        and field.message_type.GetOptions().map_entry
        and field.is_repeated
    )


def _converter(field: FieldDescriptor) -> _Convert:
    ftype = field.type
    if ftype == FieldDescriptor.TYPE_MESSAGE:
        return _message_converter(field.message_type)
    if ftype == FieldDescriptor.TYPE_ENUM:
        enum = field.enum_type
        return lambda v: enum.values_by_number[v].name if v in enum.values_by_number else v
    if ftype in INT64_TYPES:
        return str
    if ftype == FieldDescriptor.TYPE_BYTES:
        return lambda v: base64.b64encode(v).decode("ascii")
    if ftype in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
        return _float
    return _identity


def _identity(value: Any) -> Any:
    return value


def _float(value: float) -> float | str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def _is_negative_zero(value: Any) -> bool:
    return isinstance(value, float) and value == 0.0 and math.copysign(1.0, value) < 0


def _map_key(key: Any) -> str:
    if isinstance(key, bool):
        return "true" if key else "false"
    return str(key)


# --- well-known types ----------------------------------------------------------------------------

_WRAPPERS = {
    "google.protobuf.DoubleValue",
    "google.protobuf.FloatValue",
    "google.protobuf.Int64Value",
    "google.protobuf.UInt64Value",
    "google.protobuf.Int32Value",
    "google.protobuf.UInt32Value",
    "google.protobuf.BoolValue",
    "google.protobuf.StringValue",
    "google.protobuf.BytesValue",
}


def _message_converter(desc: Descriptor) -> _Convert:
    name = desc.full_name
    if name in _WRAPPERS:
        inner = _converter(desc.fields_by_name["value"])
        return lambda m: inner(m.value)
    if name == "google.protobuf.Timestamp":
        return lambda m: format_timestamp(m.seconds, m.nanos)
    if name == "google.protobuf.Duration":
        return lambda m: format_duration(m.seconds, m.nanos)
    if name == "google.protobuf.FieldMask":
        return lambda m: ",".join(_lower_camel(p) for p in m.paths)
    if name.startswith("google.protobuf.") and name != "google.protobuf.Empty":
        # Any/Struct/Value/ListValue do not occur in Tetragon events; json_format knows them.
        return lambda m: json_format.MessageToDict(m, preserving_proto_field_name=True)
    return message_to_json


def _fraction(nanos: int) -> str:
    """Go protojson prints 0, 3, 6 or 9 fractional digits."""
    if nanos == 0:
        return ""
    if nanos % 1_000_000 == 0:
        return f".{nanos // 1_000_000:03d}"
    if nanos % 1_000 == 0:
        return f".{nanos // 1_000:06d}"
    return f".{nanos:09d}"


def format_timestamp(seconds: int, nanos: int) -> str:
    """RFC 3339 UTC text of a Timestamp, as Go protojson writes it."""
    return format_wall_ns(seconds * 1_000_000_000 + nanos)


def format_duration(seconds: int, nanos: int) -> str:
    sign = "-" if seconds < 0 or nanos < 0 else ""
    return f"{sign}{abs(seconds)}{_fraction(abs(nanos))}s"


def _lower_camel(path: str) -> str:
    head, *rest = path.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)
