"""`Filter.cel_expression` (field 13): CEL expressions over the event, as Tetragon defines them.

Tetragon's CEL environment (pkg/filters/cel.go) declares one variable per event type, named by the
event's JSON key (`process_exec`, `process_kprobe`, ...) and holding that event's body with proto
field names; an expression must produce a bool. An event matches when one of the expressions is
true for it; an expression that fails on an event (it names another event type, or a field the
event does not carry) does not match it, as in Tetragon.

The library is `common-expression-language` (Rust, `cel`), chosen over the pure-Python
`cel-python` by bench/cel_filter.py (bench/results/cel_filter.json). It compiles without type
declarations, so two of Tetragon's compile-time checks are made here by trial runs over a body of
each event type with every field set (from the proto descriptors): a name that is neither an event
type nor a CEL function, and a result that is not a bool, are errors when the filter is built
(INVALID_ARGUMENT over gRPC). A field name the event type does not have is not caught here (maps
and messages look the same in JSON): it simply never matches. The Kubernetes `ip()` and
`cidr()` helpers of Tetragon's environment are not provided: using one is an undeclared reference.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import cel
from google.protobuf.descriptor import Descriptor

from tetragon.api.convert import INT64_TYPES
from tetragon.api.gen.tetragon import events_pb2
from tetragon.export.filterspec import EVENT_TYPES, FilterError

__all__ = ["compile_cel"]

BodyPredicate = Callable[[dict[str, Any]], bool]
EVENT_KEYS = tuple(name.lower() for name in EVENT_TYPES if name != "UNDEF")
_UNDECLARED_RE = re.compile(r"Undefined variable or function: '([^']*)'")


_JSON_STRING_TYPES = {  # well-known messages protobuf JSON writes as strings
    "google.protobuf.Timestamp",
    "google.protobuf.Duration",
    "google.protobuf.FieldMask",
}
_WRAPPER_DEFAULTS = {
    "google.protobuf.BoolValue": False,
    "google.protobuf.StringValue": "",
    "google.protobuf.BytesValue": "",
    "google.protobuf.DoubleValue": 0.0,
    "google.protobuf.FloatValue": 0.0,
}


def _skeleton(desc: Descriptor, depth: int = 0) -> dict[str, Any]:
    """An event body with every field of the message set to a value of its JSON type (lists of one
    element, maps empty, recursion cut at depth 4): the trial input of the result-type check."""
    out: dict[str, Any] = {}
    for field in desc.fields:
        value: Any
        if field.message_type is not None:
            name = field.message_type.full_name
            if field.message_type.GetOptions().map_entry:
                out[field.name] = {}
                continue
            if name in _JSON_STRING_TYPES:
                value = ""
            elif name.startswith("google.protobuf.") and name.endswith("Value"):
                value = _WRAPPER_DEFAULTS.get(name, 0)
            elif depth >= 4:
                continue
            else:
                value = _skeleton(field.message_type, depth + 1)
        elif field.enum_type is not None:
            value = field.enum_type.values[0].name
        elif field.type in (field.TYPE_STRING, field.TYPE_BYTES) or field.type in INT64_TYPES:
            value = ""  # 64-bit integers are JSON strings
        elif field.type == field.TYPE_BOOL:
            value = False
        elif field.type in (field.TYPE_DOUBLE, field.TYPE_FLOAT):
            value = 0.0
        else:
            value = 0
        out[field.name] = [value] if field.is_repeated else value
    return out


_TRIAL_EVENTS: dict[str, dict[str, Any]] = {}


def _trial_events() -> dict[str, dict[str, Any]]:
    if not _TRIAL_EVENTS:
        event = events_pb2.GetEventsResponse.DESCRIPTOR.oneofs_by_name["event"]
        _TRIAL_EVENTS.update({f.name: _skeleton(f.message_type) for f in event.fields})
    return _TRIAL_EVENTS


def _check(expression: str, program: Any) -> None:
    """Tetragon's compile-time checks, by trial runs over each event type with every field set:
    declared names only, and a bool result. A trial that fails otherwise (a map key or list index
    the skeleton lacks) proves nothing and is not an error."""
    for key, body in _trial_events().items():
        try:
            result = program.execute({key: body})
        except Exception as exc:  # noqa: BLE001 - the Rust binding raises plain RuntimeError/TypeError
            undeclared = _UNDECLARED_RE.search(str(exc))
            if undeclared is not None and undeclared.group(1) not in EVENT_KEYS:
                raise FilterError(
                    f"invalid CEL expression {expression!r}: undeclared reference to {undeclared.group(1)!r}"
                ) from None
            continue
        if not isinstance(result, bool):
            raise FilterError(
                f"invalid CEL expression {expression!r}: it must evaluate to a bool, "
                f"got {type(result).__name__}"
            )


def compile_one(expression: str) -> Any:
    try:
        program = cel.compile(expression)
    except (ValueError, RuntimeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise FilterError(f"invalid CEL expression {expression!r}: {first}") from None
    _check(expression, program)
    return program


def compile_cel(expressions: list[str]) -> Callable[[str, dict[str, Any]], bool]:
    """A predicate over (event key, event body): true when one expression is true."""
    programs = [compile_one(e) for e in expressions]

    def match(key: str, body: dict[str, Any]) -> bool:
        context = {key: body}
        for program in programs:
            try:
                if program.execute(context) is True:
                    return True
            except Exception:  # noqa: BLE001, S112 - an expression that fails on an event does not match it
                continue
        return False

    return match
