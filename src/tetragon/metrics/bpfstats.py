"""The agent's BPF programs as the kernel accounts them: run time and run count per program
(`tetragon_overhead_program_seconds_total` / `_runs_total`) and recursion misses
(`tetragon_missed_prog_probes_total`), summed per policy.

The programs are the agent's own open program fds (/proc/self/fd); each one's counters come from
bpf_obj_get_info_by_fd (struct bpf_prog_info), which also lists the maps the program uses: a
program using one of a policy's own maps (PolicySensor.policy_maps) belongs to that policy, any
other one to the base sensor, `__base__` as Tetragon names it. The kernel only counts run time
while statistics are on (`--enable-bpf-stats`: BPF_ENABLE_STATS for the agent's lifetime, ~40 ns per
program run; or sysctl kernel.bpf_stats_enabled=1); otherwise run time and count stay 0.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger(__name__)

BASE_POLICY = "__base__"
_BPF_STATS_RUN_TIME = 0


class _ProgInfo(ctypes.Structure):
    """struct bpf_prog_info (include/uapi/linux/bpf.h) up to recursion_misses (Linux 5.12+); the
    kernel fills what it has and reports the length it wrote."""

    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("tag", ctypes.c_uint8 * 8),
        ("jited_prog_len", ctypes.c_uint32),
        ("xlated_prog_len", ctypes.c_uint32),
        ("jited_prog_insns", ctypes.c_uint64),
        ("xlated_prog_insns", ctypes.c_uint64),
        ("load_time", ctypes.c_uint64),
        ("created_by_uid", ctypes.c_uint32),
        ("nr_map_ids", ctypes.c_uint32),
        ("map_ids", ctypes.c_uint64),
        ("name", ctypes.c_char * 16),
        ("ifindex", ctypes.c_uint32),
        ("gpl_compatible", ctypes.c_uint32),
        ("netns_dev", ctypes.c_uint64),
        ("netns_ino", ctypes.c_uint64),
        ("nr_jited_ksyms", ctypes.c_uint32),
        ("nr_jited_func_lens", ctypes.c_uint32),
        ("jited_ksyms", ctypes.c_uint64),
        ("jited_func_lens", ctypes.c_uint64),
        ("btf_id", ctypes.c_uint32),
        ("func_info_rec_size", ctypes.c_uint32),
        ("func_info", ctypes.c_uint64),
        ("nr_func_info", ctypes.c_uint32),
        ("nr_line_info", ctypes.c_uint32),
        ("line_info", ctypes.c_uint64),
        ("jited_line_info", ctypes.c_uint64),
        ("nr_jited_line_info", ctypes.c_uint32),
        ("line_info_rec_size", ctypes.c_uint32),
        ("jited_line_info_rec_size", ctypes.c_uint32),
        ("nr_prog_tags", ctypes.c_uint32),
        ("prog_tags", ctypes.c_uint64),
        ("run_time_ns", ctypes.c_uint64),
        ("run_cnt", ctypes.c_uint64),
        ("recursion_misses", ctypes.c_uint64),
    ]


class _MapInfo(ctypes.Structure):
    """struct bpf_map_info, its leading fields."""

    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("key_size", ctypes.c_uint32),
        ("value_size", ctypes.c_uint32),
        ("max_entries", ctypes.c_uint32),
        ("map_flags", ctypes.c_uint32),
        ("name", ctypes.c_char * 16),
    ]


# The agent's maps Tetragon reports in tetragon_map_entries / tetragon_map_capacity, under
# Tetragon's names for them.
REPORTED_MAPS = {"tg_execve_map": "execve_map"}


def _map_entries(fd: int, key_size: int, limit: int) -> int:
    lb = _lib()
    key = ctypes.create_string_buffer(key_size)
    next_key = ctypes.create_string_buffer(key_size)
    count, current = 0, None
    while count <= limit and lb.bpf_map_get_next_key(fd, current, next_key) == 0:
        count += 1
        ctypes.memmove(key, next_key, key_size)
        current = key
    return count


def map_occupancy() -> dict[str, tuple[int, int]]:
    """Tetragon map name -> (entries, capacity) for REPORTED_MAPS among this process's map fds."""
    out: dict[str, tuple[int, int]] = {}
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if _fd_kind(fd) != "anon_inode:bpf-map":
            continue
        info = _MapInfo()
        size = ctypes.c_uint32(ctypes.sizeof(info))
        if _lib().bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size)) != 0:
            continue
        reported = REPORTED_MAPS.get(info.name.decode(errors="replace"))
        if reported is None or reported in out:
            continue
        out[reported] = (_map_entries(fd, info.key_size, info.max_entries), info.max_entries)
    return out


@dataclass(frozen=True)
class ProgramStats:
    id: int
    name: str
    run_time_ns: int
    run_cnt: int
    recursion_misses: int
    map_ids: frozenset[int]


class PolicySensors(Protocol):
    def sensors(self) -> Iterable[tuple[str, str, object]]: ...


def _lib() -> ctypes.CDLL:
    from tetragon.bpf.libbpf_bindings import lib

    return lib()


def _fd_kind(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


def _fdinfo_value(fd: int, key: str) -> int | None:
    try:
        with open(f"/proc/self/fdinfo/{fd}") as f:
            for line in f:
                name, _, value = line.partition(":")
                if name == key:
                    return int(value.strip())
    except (OSError, ValueError):
        return None
    return None


def program_stats(fd: int) -> ProgramStats | None:
    lb = _lib()
    info = _ProgInfo()
    size = ctypes.c_uint32(ctypes.sizeof(info))
    if lb.bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size)) != 0:
        return None
    ids = (ctypes.c_uint32 * max(info.nr_map_ids, 1))()
    second = _ProgInfo(nr_map_ids=info.nr_map_ids, map_ids=ctypes.addressof(ids))
    size = ctypes.c_uint32(ctypes.sizeof(second))
    if info.nr_map_ids and lb.bpf_obj_get_info_by_fd(fd, ctypes.byref(second), ctypes.byref(size)) == 0:
        map_ids = frozenset(ids[: min(second.nr_map_ids, info.nr_map_ids)])
    else:
        map_ids = frozenset()
    return ProgramStats(
        info.id,
        info.name.decode(errors="replace"),
        info.run_time_ns,
        info.run_cnt,
        info.recursion_misses,
        map_ids,
    )


def own_programs() -> list[ProgramStats]:
    """Every BPF program this process holds open, once per program id."""
    seen: dict[int, ProgramStats] = {}
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if _fd_kind(fd) != "anon_inode:bpf-prog":
            continue
        with contextlib.suppress(OSError):
            stats = program_stats(fd)
            if stats is not None:
                seen.setdefault(stats.id, stats)
    return list(seen.values())


def programs_of_process(pid: int) -> list[ProgramStats]:
    """The BPF programs another process (the agent) holds open, by id (needs root, as
    `tetra debug progs` does): each is opened by its id to read its info."""
    ids: set[int] = set()
    for name in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/fd/{name}") != "anon_inode:bpf-prog":
                continue
            with open(f"/proc/{pid}/fdinfo/{name}") as f:
                for line in f:
                    if line.startswith("prog_id:"):
                        ids.add(int(line.split(":", 1)[1]))
    out = []
    for prog_id in sorted(ids):
        fd = _lib().bpf_prog_get_fd_by_id(prog_id)
        if fd < 0:
            continue
        try:
            stats = program_stats(fd)
        finally:
            os.close(fd)
        if stats is not None:
            out.append(stats)
    return out


def map_id(fd: int) -> int | None:
    return _fdinfo_value(fd, "map_id")


# (policy, policy namespace, sensor, section) -> [seconds, runs, recursion misses]
Totals = dict[tuple[str, str, str, str], list[float]]


def per_policy(programs: Iterable[ProgramStats], policies: Iterable[tuple[str, str, object]]) -> Totals:
    """Counters per (policy, namespace, sensor, program name); `section` is the program's name."""
    owners: dict[int, tuple[str, str]] = {}
    for name, namespace, sensor in policies:
        for fd in getattr(sensor, "policy_maps", {}).values():
            mid = map_id(fd)
            if mid is not None:
                owners[mid] = (name, namespace)
    totals: Totals = {}
    for prog in programs:
        policy = next((owners[m] for m in prog.map_ids if m in owners), None)
        key = (
            (*policy, "generic_sensor", prog.name) if policy else (BASE_POLICY, "", "base_sensor", prog.name)
        )
        row = totals.setdefault(key, [0.0, 0.0, 0.0])
        row[0] += prog.run_time_ns / 1e9
        row[1] += prog.run_cnt
        row[2] += prog.recursion_misses
    return totals


def enable_run_time_stats() -> int:
    """BPF_ENABLE_STATS(BPF_STATS_RUN_TIME): the kernel counts every program's runs and run time for as
    long as the returned fd is open; raises OSError when the kernel refuses."""
    fd = int(_lib().bpf_enable_stats(_BPF_STATS_RUN_TIME))
    if fd < 0:
        raise OSError(-fd, os.strerror(-fd))
    return fd


class BpfProgramStats:
    """Scrape-time source of the per-policy program counters (AgentMetrics.watch_bpf_programs)."""

    def __init__(self, policies: Callable[[], PolicySensors | None], enable_stats: bool = False) -> None:
        self._policies = policies
        self._stats_fd: int | None = None
        if enable_stats:
            try:
                self._stats_fd = enable_run_time_stats()
            except OSError as exc:
                log.warning("--enable-bpf-stats: the kernel refused BPF_ENABLE_STATS: %s", exc.strerror)

    def totals(self) -> Totals:
        manager = self._policies()
        sensors = list(manager.sensors()) if manager is not None and hasattr(manager, "sensors") else []
        return per_policy(own_programs(), sensors)

    def close(self) -> None:
        fd, self._stats_fd = self._stats_fd, None
        if fd is not None:
            os.close(fd)
