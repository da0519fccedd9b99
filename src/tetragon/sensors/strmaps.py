"""A hook object's string tries (bpf/include/generic/strmaps.h): one LPM trie per matchArgs entry whose
values do not fit inline, created here after the object is loaded, filled, and put in the object's
gen_str_maps (ARRAY_OF_MAPS) at the entry's slot before any program is attached.

The agent keeps each trie's fd until the object closes, so the policy's kernel memory counts them
(their memlock in /proc/self/fdinfo) like the object's own maps.
"""

from __future__ import annotations

import struct

from tetragon.bpf.libbpf import BpfObject, CreatedMap
from tetragon.policy.compile.strmaps import STR_KEY_MAX, StrMap

BPF_MAP_TYPE_LPM_TRIE = 11
BPF_F_NO_PREALLOC = 1  # required of an LPM trie; the same flags as struct str_values, as the kernel checks
OUTER = "gen_str_maps"


def size_outer(obj: BpfObject, maps: list[StrMap]) -> None:
    """Before load: one slot per trie (a map cannot have 0 entries)."""
    obj.map(OUTER).set_max_entries(max(1, len(maps)))


def fill_str_maps(obj: BpfObject, maps: list[StrMap]) -> list[CreatedMap]:
    """After load: the tries, filled and in their slots. On error the ones made are closed."""
    made: list[CreatedMap] = []
    outer = obj.map(OUTER)
    try:
        for slot, values in enumerate(maps):
            rows = values.entries()
            trie = CreatedMap(
                BPF_MAP_TYPE_LPM_TRIE, "gen_str_vals", 4 + STR_KEY_MAX, 4, len(rows), BPF_F_NO_PREALLOC
            )
            made.append(trie)
            for key, value in rows:
                trie.update(key, value)
            outer.update(struct.pack("<I", slot), struct.pack("<I", trie.fd))
    except BaseException:
        for trie in made:
            trie.close()
        raise
    return made
