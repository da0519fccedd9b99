"""What the agent asks of the host before it starts: privileges, scheduling, malloc, namespaces."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path

from tetragon.process import procfs

log = logging.getLogger("tetragon")


class HostError(Exception):
    """The host cannot run the agent as it is; the message names what is missing."""


def check_btf(path: str) -> None:
    """CO-RE needs the running kernel's BTF."""
    if not os.access(path, os.R_OK):
        raise HostError(
            f"kernel BTF not found at {path}: tetragon needs a kernel built with CONFIG_DEBUG_INFO_BTF=y"
            " (or --btf pointing to a BTF file for this kernel)"
        )


def check_privileges() -> None:
    """Root, or CAP_BPF + CAP_PERFMON + CAP_SYS_ADMIN, is needed to load and attach the sensors."""
    if os.geteuid() == 0:
        return
    need = {21: "CAP_SYS_ADMIN", 38: "CAP_PERFMON", 39: "CAP_BPF"}
    eff = 0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                eff = int(line.split()[1], 16)
    missing = [name for bit, name in need.items() if not eff >> bit & 1]
    if missing:
        raise HostError(
            "tetragon needs root (or CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN) to load BPF programs; missing: "
            + ", ".join(missing)
        )


def host_namespaces(proc: str) -> tuple[int, ...]:
    """Namespaces of pid 1; where those are unreadable (a sandboxed agent), the agent's own."""
    init = procfs.read_process(Path(proc), 1)
    own = procfs.read_process(Path(proc), os.getpid())
    init_ns = init.ns if init is not None else ()
    own_ns = own.ns if own is not None else ()
    if not init_ns:
        return own_ns
    return tuple(i or (own_ns[n] if n < len(own_ns) else 0) for n, i in enumerate(init_ns))


def batch_scheduling() -> None:
    """SCHED_BATCH for the agent (threads started later inherit it).

    The pipeline drains in batches on a timer, so it never needs to preempt the workload it
    watches when it wakes up; with the normal policy it does, and on an exec storm that showed as
    ~3 % of the workload's wall time (bench/sched_batch_ab.py). Under CPU pressure a batch task
    keeps its normal share.
    """
    try:
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    except OSError as exc:  # not fatal: only the overhead on the workload changes
        log.debug("cannot use SCHED_BATCH: %s", exc)


# glibc mallopt parameters
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
# Heap arenas for all threads together. glibc gives each thread that allocates its own arena (up to
# 8 per CPU), and the gRPC worker threads that parse hostile policies each kept their own high-water
# mark of fragments: 120 mutated policies twice grew RSS 85 -> 139 MB, 83 -> 105 MB with 2 arenas.
# The pipeline thread makes nearly all per-event allocations, so sharing costs it little contention.
_ARENAS = 2


def tune_malloc() -> None:
    """Keep freed heap memory instead of returning it to the kernel after every batch.

    The pipeline holds about a megabyte of exported lines (orjson output, mostly > 512 bytes so
    from malloc, not pymalloc) until the batch is flushed, then frees it all; with glibc's default
    128 KiB trim threshold the heap top is given back each time and the next batch page-faults it in
    again, which cost ~2 us per event. A 32 MiB trim threshold (and 4 MiB mmap threshold, so the
    joined batch comes from the heap too) only keeps memory the agent already used; what a burst
    or a large policy left free is given back by `give_memory_back` once it is over. Called before
    any thread starts, so the arena cap holds for all of them.
    """
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc: nothing to tune
        return
    mallopt(_M_TRIM_THRESHOLD, 32 << 20)
    mallopt(_M_MMAP_THRESHOLD, 4 << 20)
    mallopt(_M_ARENA_MAX, _ARENAS)


def give_memory_back() -> None:
    """Return every whole free page of the heaps to the kernel (glibc's malloc_trim(0)).

    glibc keeps freed memory below the trim threshold at a heap's top, and all of it in the middle
    of a heap, so without this the agent's RSS would stay at its largest burst or policy. Costs
    about a millisecond: called after work that freed much (a process-cache collection that dropped
    entries, a policy's delete or refusal), not per event.
    """
    with contextlib.suppress(OSError, AttributeError):  # AttributeError: not glibc
        import ctypes

        ctypes.CDLL(None).malloc_trim(0)


def write_run_files(run: Path, server_address: str) -> None:
    """tetragon-info.json (where `tetra` finds the server) and tetragon.pid, before policies load."""
    with contextlib.suppress(OSError):
        if not run.is_dir():  # Tetragon does not mkdir an existing directory
            run.mkdir(parents=True, exist_ok=True)
        (run / "tetragon-info.json").write_text(json.dumps({"server_address": server_address}))
        (run / "tetragon.pid").write_text(f"{os.getpid()}\n")
