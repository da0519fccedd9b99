"""The BPF maps a process (the agent) holds open, read from outside it (root), for `tetra debug maps`,
`tetra debug dump execve` and `tetra debug dump policyfilter`: each map is found by the ids in
/proc/<pid>/fdinfo and opened by id, as `bpftool map` does; Tetragon's tetra reads its pinned maps.

`memlock` is the kernel's charge for the map (fdinfo `memlock:`), the figure Tetragon's
`tetra debug maps` sums; `entries` counts the keys of hash-like maps (arrays always hold max_entries).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Iterator
from dataclasses import dataclass

from tetragon.abi import generic_cfg_h as G
from tetragon.abi.podfilter_h import POD_FILTER_IN_POD
from tetragon.metrics.bpfstats import _lib, _map_entries, _MapInfo

__all__ = [
    "ExecveEntry",
    "MapSummary",
    "execve_map_entries",
    "maps_of_process",
    "open_map",
    "policy_filter_entries",
]

# enum bpf_map_type (include/uapi/linux/bpf.h), the kinds this agent creates and a few more
MAP_TYPES = {
    1: "hash",
    2: "array",
    3: "prog_array",
    4: "perf_event_array",
    5: "percpu_hash",
    6: "percpu_array",
    9: "lru_hash",
    10: "lru_percpu_hash",
    12: "array_of_maps",
    13: "hash_of_maps",
    27: "ringbuf",
}
_ARRAYS = {2, 3, 4, 6, 12, 27}
EXECVE_MAP = "tg_execve_map"
POLICY_CGROUPS_MAP = "policy_cgroups"


@dataclass(frozen=True)
class MapSummary:
    id: int
    name: str
    type: str
    key_size: int
    value_size: int
    max_entries: int
    entries: int
    memlock: int  # bytes


@dataclass(frozen=True)
class ExecveEntry:
    """One tg_execve_map entry: what the kernel side knows of a process."""

    pid: int
    ppid: int
    exec_pid: int  # the process whose exec this image comes from (itself unless forked)
    nspid: int
    binary: str
    cap_effective: int


def _map_fdinfo(pid: int) -> dict[int, int]:
    """map id -> memlock bytes, for the BPF maps `pid` holds open."""
    out: dict[int, int] = {}
    for name in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError, ValueError):
            if os.readlink(f"/proc/{pid}/fd/{name}") != "anon_inode:bpf-map":
                continue
            fields: dict[str, str] = {}
            with open(f"/proc/{pid}/fdinfo/{name}") as f:
                for line in f:
                    key, _, value = line.partition(":")
                    fields[key] = value.strip()
            out[int(fields["map_id"])] = int(fields.get("memlock", "0"))
    return out


def _info(fd: int) -> _MapInfo | None:
    info = _MapInfo()
    size = ctypes.c_uint32(ctypes.sizeof(info))
    if _lib().bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size)) != 0:
        return None
    return info


@contextlib.contextmanager
def open_map(map_id: int) -> Iterator[int]:
    fd = _lib().bpf_map_get_fd_by_id(map_id)
    if fd < 0:
        raise OSError(ctypes.get_errno() or 2, f"cannot open BPF map id {map_id}")
    try:
        yield fd
    finally:
        os.close(fd)


def maps_of_process(pid: int) -> list[MapSummary]:
    """The maps `pid` holds, by id; raises OSError when its /proc entries cannot be read."""
    out = []
    for map_id, memlock in sorted(_map_fdinfo(pid).items()):
        with contextlib.suppress(OSError), open_map(map_id) as fd:
            info = _info(fd)
            if info is None:
                continue
            entries = (
                info.max_entries
                if info.type in _ARRAYS
                else _map_entries(fd, info.key_size, info.max_entries)
            )
            out.append(
                MapSummary(
                    id=info.id,
                    name=info.name.decode(errors="replace"),
                    type=MAP_TYPES.get(info.type, str(info.type)),
                    key_size=info.key_size,
                    value_size=info.value_size,
                    max_entries=info.max_entries,
                    entries=entries,
                    memlock=memlock,
                )
            )
    return out


def _map_items(fd: int, key_size: int, value_size: int, limit: int) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) of a hash-like map, at most `limit`; a key deleted while walking is skipped."""
    lb = _lib()
    key, next_key = ctypes.create_string_buffer(key_size), ctypes.create_string_buffer(key_size)
    value = ctypes.create_string_buffer(value_size)
    current = None
    for _ in range(limit):
        if lb.bpf_map_get_next_key(fd, current, next_key) != 0:
            break
        ctypes.memmove(key, next_key, key_size)
        current = key
        if lb.bpf_map_lookup_elem(fd, key, value) == 0:
            yield key.raw, value.raw


def _named_maps(pid: int, name: str) -> list[MapSummary]:
    return [m for m in maps_of_process(pid) if m.name == name]


def execve_map_entries(pid: int) -> list[ExecveEntry]:
    """The entries of the agent's tg_execve_map, by pid."""
    summary = next(iter(_named_maps(pid, EXECVE_MAP)), None)
    if summary is None:
        raise OSError(2, f"pid {pid} holds no {EXECVE_MAP}")
    out = []
    with open_map(summary.id) as fd:
        for key, raw in _map_items(fd, summary.key_size, summary.value_size, summary.max_entries):
            value = G.GenProc.from_buffer_copy(raw)
            binary = bytes(value.bin[: min(value.bin_len, G.GEN_BIN_LEN)]).decode(errors="replace")
            pid_ = int.from_bytes(key, "little")
            out.append(
                ExecveEntry(pid_, value.ppid, value.exec_pid, value.nspid, binary, value.cap_effective)
            )
    return sorted(out, key=lambda e: e.pid)


def policy_filter_entries(pid: int) -> dict[int, set[int]]:
    """The pod-scoped policies' cgroup sets (each policy's `policy_cgroups`, bpf/include/generic/
    podfilter.h): filter id -> cgroup v2 ids. A policy whose set is empty has no entry to name it; the
    other pods' cgroups a hostSelector policy marks (POD_FILTER_IN_POD) are not in its set."""
    out: dict[int, set[int]] = {}
    for summary in _named_maps(pid, POLICY_CGROUPS_MAP):
        with open_map(summary.id) as fd:
            for key, value in _map_items(fd, summary.key_size, summary.value_size, summary.max_entries):
                filter_id = int.from_bytes(value, "little")
                if filter_id != POD_FILTER_IN_POD:
                    out.setdefault(filter_id, set()).add(int.from_bytes(key, "little"))
    return out
