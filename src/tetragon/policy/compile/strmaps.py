"""String values of matchArgs -> the entries of a hook's string LPM tries (bpf/include/generic/strmatch.h).

Every Equal and Prefix value goes into gen_str_prefix as it is, every Postfix value reversed into
gen_str_postfix. An entry's value carries the bits of the matchArgs entries holding that string:
`equal` (exactly this string) and `prefix`, closed over the shorter stored strings that are prefixes
of it, because the kernel's lookup returns only the longest stored prefix of the argument.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from tetragon.policy.names import MAX_POSTFIX_LEN, MAX_PREFIX_LEN

EQUAL, PREFIX, POSTFIX = "equal", "prefix", "postfix"
MAX_STR_BITS = 64  # bits of struct str_val's masks: matchArgs entries on strings per hook


@dataclass(frozen=True)
class StrValue:
    """One value of a matchArgs entry on a string; `bit` names the entry (its gen_match.map_id)."""

    kind: str  # EQUAL | PREFIX | POSTFIX
    value: bytes
    bit: int


def _entries(values: list[StrValue], data_len: int) -> list[tuple[bytes, bytes]]:
    equal: dict[bytes, int] = {}
    prefix: dict[bytes, int] = {}
    for v in values:
        table = equal if v.kind == EQUAL else prefix
        table[v.value] = table.get(v.value, 0) | (1 << v.bit)
    out = []
    for s in sorted(equal.keys() | prefix.keys()):
        closed = 0
        for n in range(len(s) + 1):  # every stored prefix of s, s included
            closed |= prefix.get(s[:n], 0)
        key = struct.pack("<I", 8 * len(s)) + s.ljust(data_len, b"\0")
        out.append((key, struct.pack("<QQII", closed, equal.get(s, 0), len(s), 0)))
    return out


def prefix_map_entries(values: list[StrValue]) -> list[tuple[bytes, bytes]]:
    """(key, value) pairs of gen_str_prefix: the Equal and Prefix values."""
    return _entries([v for v in values if v.kind != POSTFIX], MAX_PREFIX_LEN)


def postfix_map_entries(values: list[StrValue]) -> list[tuple[bytes, bytes]]:
    """(key, value) pairs of gen_str_postfix: the Postfix values, reversed."""
    rev = [StrValue(PREFIX, v.value[::-1], v.bit) for v in values if v.kind == POSTFIX]
    return _entries(rev, MAX_POSTFIX_LEN)
