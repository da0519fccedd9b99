"""String values of a matchArgs entry that do not fit inline -> the entries of its own LPM trie.

An entry with at most GEN_MAX_VALUES values keeps them in .rodata (gen_match.str), compared one by one
with bpf_strncmp; one with more gets a trie of its own (bpf/include/generic/strmaps.h), reached through
the hook object's gen_str_maps at index map_id - 1, which the sensor creates and fills
(sensors/strmaps.py). Equal and Prefix values are stored as they are, Postfix values reversed; each
entry's value is the stored string's length, which tells an Equal match from a shorter prefix.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

from tetragon.abi import generic_cfg_h as G
from tetragon.policy.errors import PolicyError
from tetragon.policy.names import MAX_PREFIX_LEN

STR_KEY_MAX = MAX_PREFIX_LEN  # struct str_key.data: the longest Prefix / Equal value
# Every value of a policy's trie-held entries counts against this, so that one policy cannot take an
# unbounded amount of kernel memory: a trie node holds its key and value (<= 300 bytes), so the cap
# bounds a policy's tries near 5 MB.
STR_MAP_VALUES_MAX = 16384


@dataclass(frozen=True)
class StrMap:
    """The values of one matchArgs entry kept in a trie: gen_str_maps[map_id - 1] of its hook."""

    postfix: bool  # Postfix / NotPostfix: stored reversed
    values: tuple[bytes, ...]

    def entries(self) -> list[tuple[bytes, bytes]]:
        """(key, value) pairs of the trie: struct str_key and the stored length, one per distinct value."""
        stored = sorted({v[::-1] if self.postfix else v for v in self.values})
        return [
            (struct.pack("<I", 8 * len(s)) + s.ljust(STR_KEY_MAX, b"\0"), struct.pack("<I", len(s)))
            for s in stored
        ]


def refuse_too_many_values(maps: Iterable[StrMap]) -> None:
    """A policy whose trie-held string values pass STR_MAP_VALUES_MAX is refused, in one line."""
    total = sum(len(m.values) for m in maps)
    if total > STR_MAP_VALUES_MAX:
        raise PolicyError(
            f"spec: {total} string values in matchArgs entries of more than {G.GEN_MAX_VALUES} values; "
            f"this agent takes at most {STR_MAP_VALUES_MAX} per policy (STR_MAP_VALUES_MAX, for their "
            "kernel memory)",
            kind="unsupported",
        )
