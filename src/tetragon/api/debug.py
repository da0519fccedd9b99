"""GetDebug's process-cache dump (`CONFIG_FLAG_DUMP_PROCESS_CACHE`, `tetra debug dump processcache`).

One `ProcessInternal` per cached process: the `Process` as events carry it, the GC `color` Tetragon
prints (`inUse` while referenced, `deletePending` once the refcount is zero and the entry waits for
the next collection), the refcount, and `refcnt_ops`. This cache counts references without keeping a
per-operation history, so `refcnt_ops` holds only our own key: `policy_event: 1` once a policy event
named the process (for `tetra processtree`; the proto and the map's type stay Tetragon's).

`exclude_execve_map_processes` leaves out the processes the kernel's execve map still holds, which
are the ones that have not exited (the BPF exit hook deletes the map entry): what remains is what
only user space remembers, the list one reads when looking for leaked entries.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from google.protobuf import json_format, wrappers_pb2

from tetragon.api.gen.tetragon import sensors_pb2, tetragon_pb2

__all__ = ["POLICY_EVENT_OP", "CachedProcess", "dump_process_cache"]

COLOR_IN_USE = "inUse"
COLOR_DELETE_PENDING = "deletePending"
POLICY_EVENT_OP = "policy_event"


class CachedProcess(Protocol):
    refcnt: int
    exited: bool
    policy_event: bool

    def to_dict(self) -> dict[str, object]: ...


class ProcessSource(Protocol):
    def entries(self) -> Iterable[CachedProcess]: ...


def process_internal(entry: CachedProcess) -> sensors_pb2.ProcessInternal:
    process = json_format.ParseDict(entry.to_dict(), tetragon_pb2.Process(), ignore_unknown_fields=True)
    refcnt = max(entry.refcnt, 0)
    return sensors_pb2.ProcessInternal(
        process=process,
        color=COLOR_IN_USE if refcnt > 0 else COLOR_DELETE_PENDING,
        refcnt=wrappers_pb2.UInt32Value(value=refcnt),
        refcnt_ops={POLICY_EVENT_OP: 1} if entry.policy_event else None,
    )


def dump_process_cache(
    cache: ProcessSource, args: sensors_pb2.DumpProcessCacheReqArgs
) -> sensors_pb2.DumpProcessCacheResArgs:
    out = sensors_pb2.DumpProcessCacheResArgs()
    for entry in cache.entries():
        if args.skip_zero_refcnt and entry.refcnt <= 0:
            continue
        if args.exclude_execve_map_processes and not entry.exited:
            continue
        out.processes.append(process_internal(entry))
    return out
