"""`Filter.cel_expression` (field 13): CEL expressions over the event, as Tetragon defines them.

Tetragon's CEL environment (pkg/filters/cel.go) declares one variable per event type, named by the
event's JSON key (`process_exec`, `process_kprobe`, ...) and holding that event's body with proto
field names; an expression must produce a bool. An event matches when one of the expressions is
true for it; an expression that fails on an event (it names another event type, or a field the
event does not carry) does not match it, as in Tetragon.

The library is `common-expression-language` (Rust, `cel`), chosen over the pure-Python
`cel-python` by bench/cel_filter.py (bench/results/cel_filter.json). It compiles without type
declarations, so two of Tetragon's compile-time checks are made here by a trial run over empty
event bodies: a name that is neither an event type nor a CEL function, and a result that is not a
bool, are errors when the filter is built (INVALID_ARGUMENT over gRPC). A result type the trial
cannot see (`process_exec.process.pid` fails on an empty body) is caught per event instead: a
non-bool result does not match. The Kubernetes `ip()` and
`cidr()` helpers of Tetragon's environment are not provided.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cel

from tetragon.export.filterspec import EVENT_TYPES, FilterError

__all__ = ["compile_cel"]

BodyPredicate = Callable[[dict[str, Any]], bool]
EVENT_KEYS = tuple(name.lower() for name in EVENT_TYPES if name != "UNDEF")
_UNDECLARED = "Undefined variable or function"


def _check(expression: str, program: Any) -> None:
    """Tetragon's compile-time checks, by a trial run over empty event bodies: declared names only,
    and a bool result (a missing field of an empty body is fine: events have their fields)."""
    try:
        result = program.execute(dict.fromkeys(EVENT_KEYS, {}))
    except Exception as exc:  # noqa: BLE001 - the Rust binding raises plain RuntimeError/TypeError
        if _UNDECLARED in str(exc):
            detail = str(exc).split(". Check that", 1)[0]
            raise FilterError(f"invalid CEL expression {expression!r}: {detail}") from None
        return
    if not isinstance(result, bool):
        raise FilterError(
            f"invalid CEL expression {expression!r}: it must evaluate to a bool, got {type(result).__name__}"
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
