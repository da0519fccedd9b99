"""GetDebug / SetDebug: the log level (`CONFIG_FLAG_LOG_LEVEL`) and the process-cache dump
(`CONFIG_FLAG_DUMP_PROCESS_CACHE`, `tetra debug dump processcache`).

One `ProcessInternal` per cached process: the `Process` as events carry it, the GC `color` Tetragon
prints (`inUse` while referenced, `deletePending` once the refcount is zero and the entry waits for
the next collection), the refcount, and `refcnt_ops`: the reference changes by operation
(`process++` when the entry is made, `process--` when the process exits or execs again, `parent++` /
`parent--` for each child's reference), counted by the cache as they happen.

`exclude_execve_map_processes` leaves out the processes the kernel's execve map still holds, which
are the ones that have not exited (the BPF exit hook deletes the map entry): what remains is what
only user space remembers, the list one reads when looking for leaked entries.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Protocol

import grpc
from google.protobuf import json_format, wrappers_pb2

from tetragon.api.gen.tetragon import sensors_pb2, tetragon_pb2

__all__ = ["CachedProcess", "dump_process_cache", "get_debug", "set_debug"]

COLOR_IN_USE = "inUse"
COLOR_DELETE_PENDING = "deletePending"


class CachedProcess(Protocol):
    refcnt: int
    exited: bool

    def to_dict(self) -> dict[str, object]: ...

    def refcnt_ops(self) -> dict[str, int]: ...


class ProcessSource(Protocol):
    def entries(self) -> Iterable[CachedProcess]: ...


def process_internal(entry: CachedProcess) -> sensors_pb2.ProcessInternal:
    process = json_format.ParseDict(entry.to_dict(), tetragon_pb2.Process(), ignore_unknown_fields=True)
    refcnt = max(entry.refcnt, 0)
    return sensors_pb2.ProcessInternal(
        process=process,
        color=COLOR_IN_USE if refcnt > 0 else COLOR_DELETE_PENDING,
        refcnt=wrappers_pb2.UInt32Value(value=refcnt),
        refcnt_ops=entry.refcnt_ops(),
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


LOG_LEVELS = {  # tetragon.LogLevel -> Python logging level
    sensors_pb2.LOG_LEVEL_PANIC: logging.CRITICAL,
    sensors_pb2.LOG_LEVEL_FATAL: logging.CRITICAL,
    sensors_pb2.LOG_LEVEL_ERROR: logging.ERROR,
    sensors_pb2.LOG_LEVEL_WARN: logging.WARNING,
    sensors_pb2.LOG_LEVEL_INFO: logging.INFO,
    sensors_pb2.LOG_LEVEL_DEBUG: logging.DEBUG,
    sensors_pb2.LOG_LEVEL_TRACE: logging.DEBUG,
}


def get_debug(
    request: sensors_pb2.GetDebugRequest, context: grpc.ServicerContext, cache: ProcessSource | None
) -> sensors_pb2.GetDebugResponse:
    if request.flag == sensors_pb2.CONFIG_FLAG_DUMP_PROCESS_CACHE:
        if cache is None:
            context.abort(grpc.StatusCode.UNAVAILABLE, "this server has no process cache")
        return sensors_pb2.GetDebugResponse(
            flag=request.flag, processes=dump_process_cache(cache, request.dump)
        )
    if request.flag != sensors_pb2.CONFIG_FLAG_LOG_LEVEL:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"unknown debug flag {request.flag}")
    level = logging.getLogger("tetragon").getEffectiveLevel()
    name = min((k for k, v in LOG_LEVELS.items() if v == level), default=sensors_pb2.LOG_LEVEL_INFO)
    return sensors_pb2.GetDebugResponse(flag=request.flag, level=name)


def set_debug(
    request: sensors_pb2.SetDebugRequest, context: grpc.ServicerContext
) -> sensors_pb2.SetDebugResponse:
    if request.flag != sensors_pb2.CONFIG_FLAG_LOG_LEVEL or request.level not in LOG_LEVELS:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, "only CONFIG_FLAG_LOG_LEVEL can be set")
    logging.getLogger("tetragon").setLevel(LOG_LEVELS[request.level])
    return sensors_pb2.SetDebugResponse(flag=request.flag, level=request.level)
