"""`tetra debug dump processcache` (also `tetra dump processcache`): the agent's process cache,
one ProcessInternal JSON object a line, through GetDebug(CONFIG_FLAG_DUMP_PROCESS_CACHE).
`tetra debug progs` (alias `top`): the agent's BPF programs with the kernel's run count and run time;
`tetra debug maps`: its BPF maps with their entries and kernel memory; `tetra debug dump execve`: the
kernel's process map (tg_execve_map), one JSON object a line; `tetra debug dump policyfilter`: the
pod-scoped policies' cgroup sets in Tetragon's layout. These four read locally (root) from the
agent process's BPF fds, as Tetragon's read its pinned programs and maps. `tetra debug enable-stats`:
the kernel's BPF run-time statistics on until Ctrl-C (or `--duration`), so that `progs` shows run time
of an agent started without --enable-bpf-stats."""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO, TypeVar

import orjson

from tetragon.api.convert import message_to_json
from tetragon.api.gen.tetragon import sensors_pb2
from tetragon.cli.tetra_client import CliError, call_once, write_line

__all__ = ["add_debug", "cmd_debug"]

_T = TypeVar("_T")
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
    execve = sub.add_parser("execve", help="dump the kernel's process map (tg_execve_map), JSON lines")
    add_globals(execve, True)
    _add_agent_pid(execve)
    pf = sub.add_parser("policyfilter", help="dump the pod-scoped policies' cgroup sets (policy filter)")
    add_globals(pf, True)
    _add_agent_pid(pf)


def _add_agent_pid(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pid", type=int, default=0, help="agent pid (default: from RUN_DIR/tetragon.pid)")
    parser.add_argument("--run-dir", default="/var/run/tetragon", help="the agent's --run-dir")


def add_debug(commands: Any, add_globals: AddGlobals) -> None:
    debug = commands.add_parser("debug", help="debug the agent")
    add_globals(debug, True)
    sub = debug.add_subparsers(dest="debug_command", required=True, metavar="COMMAND")
    dump = sub.add_parser("dump", help="dump the agent's internal state")
    add_globals(dump, True)
    _add_dump(dump, add_globals)
    progs = sub.add_parser("progs", aliases=["top"], help="the agent's BPF programs: runs and run time")
    add_globals(progs, True)
    _add_agent_pid(progs)
    maps = sub.add_parser("maps", help="the agent's BPF maps: entries, capacity, kernel memory")
    add_globals(maps, True)
    _add_agent_pid(maps)
    stats = sub.add_parser("enable-stats", help="BPF run-time statistics on until Ctrl-C (root)")
    add_globals(stats, True)
    stats.add_argument(
        "--duration", type=float, default=0.0, help="seconds to keep them on (0: until Ctrl-C)"
    )
    alias = commands.add_parser("dump", help="alias of 'debug dump'")
    add_globals(alias, True)
    _add_dump(alias, add_globals)


def _agent_pid(args: argparse.Namespace) -> int:
    if args.pid:
        return int(args.pid)
    try:
        return int((Path(args.run_dir) / "tetragon.pid").read_text().strip())
    except (OSError, ValueError) as exc:
        raise CliError(f"no agent pid in {args.run_dir}/tetragon.pid (use --pid): {exc}") from None


def _from_agent(args: argparse.Namespace, read: Callable[[int], _T], what: str) -> _T:
    """`read(agent pid)`, its OSError a one-line error naming `what` was read."""
    pid = _agent_pid(args)
    try:
        return read(pid)
    except OSError as exc:
        raise CliError(f"cannot read {what} of pid {pid}: {exc.strerror or exc}") from None


def cmd_progs(args: argparse.Namespace, stdout: TextIO) -> int:
    """One line per program, most run time first; run time counts only while BPF statistics are on
    (the agent's --enable-bpf-stats, or sysctl kernel.bpf_stats_enabled=1)."""
    from tetragon.metrics.bpfstats import programs_of_process

    programs = _from_agent(args, programs_of_process, "the BPF programs")
    write_line(stdout, f"{'ID':>7} {'RUNS':>12} {'TIME(ns)':>15} {'AVG(ns)':>9}  NAME")
    for p in sorted(programs, key=lambda p: (-p.run_time_ns, p.id)):
        avg = p.run_time_ns // p.run_cnt if p.run_cnt else 0
        write_line(stdout, f"{p.id:>7} {p.run_cnt:>12} {p.run_time_ns:>15} {avg:>9}  {p.name}")
    return 0


def cmd_maps(args: argparse.Namespace, stdout: TextIO) -> int:
    """One line per map, most kernel memory first, then the total."""
    from tetragon.metrics.bpfmaps import maps_of_process

    maps = _from_agent(args, maps_of_process, "the BPF maps")
    write_line(stdout, f"{'ID':>7} {'TYPE':<16} {'ENTRIES':>9} {'MAX':>9} {'MEMLOCK':>11}  NAME")
    for m in sorted(maps, key=lambda m: (-m.memlock, m.id)):
        write_line(
            stdout, f"{m.id:>7} {m.type:<16} {m.entries:>9} {m.max_entries:>9} {m.memlock:>11}  {m.name}"
        )
    write_line(stdout, f"{len(maps)} maps, {sum(m.memlock for m in maps)} bytes of kernel memory")
    return 0


def cmd_dump_execve(args: argparse.Namespace, stdout: TextIO) -> int:
    from tetragon.metrics.bpfmaps import execve_map_entries

    for e in _from_agent(args, execve_map_entries, "the process map"):
        write_line(stdout, orjson.dumps(dataclasses.asdict(e)).decode())
    return 0


def cmd_dump_policyfilter(args: argparse.Namespace, stdout: TextIO) -> int:
    """Tetragon's layout: the direct map (filter id: cgroup ids), then the reverse one (cgroup id:
    filter ids); `(empty)` for an empty one. Filter ids are `tetra tracingpolicy list`'s FILTERID column."""
    from tetragon.metrics.bpfmaps import policy_filter_entries

    direct = _from_agent(args, policy_filter_entries, "the policy filter")
    reverse: dict[int, set[int]] = {}
    for filter_id, cgroups in direct.items():
        for cgid in cgroups:
            reverse.setdefault(cgid, set()).add(filter_id)
    for title, table in (("Direct", direct), ("Reverse", reverse)):
        write_line(stdout, f"--- {title} Map ---")
        if not table:
            write_line(stdout, "(empty)")
        for key in sorted(table):
            write_line(stdout, f"{key}: {','.join(str(v) for v in sorted(table[key]))}")
    return 0


def cmd_enable_stats(args: argparse.Namespace, stdout: TextIO) -> int:
    """Holds the kernel's BPF_ENABLE_STATS fd until SIGINT/SIGTERM or --duration, then closes it (the
    kernel keeps counting only while some holder has one open)."""
    from tetragon.metrics.bpfstats import enable_run_time_stats

    try:
        fd = enable_run_time_stats()
    except OSError as exc:
        raise CliError(f"cannot enable BPF statistics: {exc.strerror or exc}") from None
    done = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: done.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        write_line(stdout, "BPF statistics enabled" + ("" if args.duration else "; Ctrl-C to stop"))
        stdout.flush()
        done.wait(args.duration or None)
    finally:
        os.close(fd)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    write_line(stdout, "BPF statistics disabled")
    return 0


def cmd_debug(args: argparse.Namespace, stdout: TextIO) -> int:
    if getattr(args, "debug_command", None) == "enable-stats":
        return cmd_enable_stats(args, stdout)
    if getattr(args, "debug_command", None) in ("progs", "top"):
        return cmd_progs(args, stdout)
    if getattr(args, "debug_command", None) == "maps":
        return cmd_maps(args, stdout)
    if getattr(args, "dump_command", None) == "execve":
        return cmd_dump_execve(args, stdout)
    if getattr(args, "dump_command", None) == "policyfilter":
        return cmd_dump_policyfilter(args, stdout)
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
