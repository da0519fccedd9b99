"""`tetra debug dump processcache` (also `tetra dump processcache`): the agent's process cache,
one ProcessInternal JSON object a line, through GetDebug(CONFIG_FLAG_DUMP_PROCESS_CACHE)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any, TextIO

import orjson

from tetragon.api.convert import message_to_json
from tetragon.api.gen.tetragon import sensors_pb2
from tetragon.cli.tetra_client import CliError, call_once, write_line

__all__ = ["add_debug", "cmd_debug"]

AddGlobals = Callable[[argparse.ArgumentParser, bool], None]


def _add_dump(parent: Any, add_globals: AddGlobals) -> None:
    sub = parent.add_subparsers(dest="dump_command", required=True, metavar="COMMAND")
    pc = sub.add_parser("processcache", help="dump the agent's process cache (ProcessInternal JSON lines)")
    add_globals(pc, True)
    pc.add_argument("--skip-zero-refcnt", action="store_true", help="leave out processes with refcnt 0")
    pc.add_argument(
        "--exclude-execve-map-processes",
        action="store_true",
        help="leave out processes the kernel's execve map still holds",
    )


def add_debug(commands: Any, add_globals: AddGlobals) -> None:
    debug = commands.add_parser("debug", help="debug the agent")
    add_globals(debug, True)
    sub = debug.add_subparsers(dest="debug_command", required=True, metavar="COMMAND")
    dump = sub.add_parser("dump", help="dump the agent's internal state")
    add_globals(dump, True)
    _add_dump(dump, add_globals)
    alias = commands.add_parser("dump", help="alias of 'debug dump'")
    add_globals(alias, True)
    _add_dump(alias, add_globals)


def cmd_debug(args: argparse.Namespace, stdout: TextIO) -> int:
    if getattr(args, "dump_command", None) != "processcache":
        raise CliError("unknown debug command")
    request = sensors_pb2.GetDebugRequest(
        flag=sensors_pb2.CONFIG_FLAG_DUMP_PROCESS_CACHE,
        dump=sensors_pb2.DumpProcessCacheReqArgs(
            skip_zero_refcnt=args.skip_zero_refcnt,
            exclude_execve_map_processes=args.exclude_execve_map_processes,
        ),
    )
    response = call_once(args, "GetDebug", request)
    for process in response.processes.processes:
        write_line(stdout, orjson.dumps(message_to_json(process)).decode())
    return 0
