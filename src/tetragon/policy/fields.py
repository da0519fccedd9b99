"""Scalar field types of the TracingPolicy schema: each checks and normalises one value.

A failing check raises a PydanticCustomError, which `policy.load` reports with the field's path.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field
from pydantic_core import PydanticCustomError

from tetragon.policy.errors import PolicyError
from tetragon.policy.names import ACTIONS, ARG_TYPES, CAPABILITIES, NAMESPACES, OPERATOR_ALIASES, OPERATORS

_RATE_LIMIT = re.compile(r"^(\d+)([smhSMH]?)$")


# --- checks -------------------------------------------------------------------------------
def _fail(template: str, **ctx: Any) -> PydanticCustomError:
    return PydanticCustomError("policy", template, ctx)


def _canonical(
    what: str, table: dict[str, str], show: Iterable[str], fold: Callable[[str], str] = str
) -> Callable[[str], str]:
    """Accept the keys of `table` (after `fold`); return their canonical spelling."""
    shown = ", ".join(show)

    def check(value: str) -> str:
        canon = table.get(fold(value))
        if canon is None:
            raise _fail("unknown {what} '{value}' (one of: {choices})", what=what, value=value, choices=shown)
        return canon

    return check


def one_of(what: str, allowed: Iterable[str]) -> Callable[[str], str]:
    choices = tuple(allowed)
    return _canonical(what, {name: name for name in choices}, choices)


def _any_case(what: str, names: tuple[str, ...]) -> Callable[[str], str]:
    return _canonical(what, {name.lower(): name for name in names}, names, str.lower)


def _arg_type(value: str) -> str:
    if value not in ARG_TYPES:
        raise _fail("unknown argument type '{value}'", value=value)
    return value


def _capability(value: str) -> str:
    name = value.upper()
    if not name.startswith("CAP_"):
        name = "CAP_" + name
    if name not in CAPABILITIES:
        raise _fail("unknown capability '{value}'", value=value)
    return name


def _rate_limit(value: str) -> str:
    if not _RATE_LIMIT.match(value):
        raise _fail(
            "invalid rate limit '{value}' (want a number with optional s, m or h suffix)", value=value
        )
    return value


def _int_to_str(value: Any) -> Any:
    """YAML match values may be written as numbers; Tetragon's schema keeps them as strings."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


U32 = Annotated[int, Field(ge=0, le=2**32 - 1)]
U64 = Annotated[int, Field(ge=0, le=2**64 - 1)]
I32 = Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]
MatchValue = Annotated[str, BeforeValidator(_int_to_str, json_schema_input_type=int | str)]
ArgType = Annotated[str, AfterValidator(_arg_type)]
ArgOperator = Annotated[
    str, AfterValidator(_canonical("operator", OPERATOR_ALIASES, [*OPERATORS, "NotSportPriv"]))
]
InNotIn = Annotated[str, AfterValidator(one_of("operator", ("In", "NotIn")))]
ActionName = Annotated[str, AfterValidator(_any_case("action", ACTIONS))]
Capability = Annotated[str, AfterValidator(_capability)]
NamespaceChange = Annotated[str, AfterValidator(_any_case("namespace", NAMESPACES))]
RateLimit = Annotated[str, AfterValidator(_rate_limit)]


def rate_limit_seconds(value: str) -> int:
    """Seconds of an ActionSelector rateLimit (`5` = 5s, `1m`, `2h`); 0 when unset."""
    if not value:
        return 0
    m = _RATE_LIMIT.match(value)
    if m is None:
        raise PolicyError(f"invalid rate limit '{value}'")
    return int(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2).lower()]
