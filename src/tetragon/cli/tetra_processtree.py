"""`tetra processtree`: the agent's process cache as a tree, with exec ids, in the terminal or as a
self-contained HTML page (tetra_processtree_html.py).

The tree comes from one GetDebug(CONFIG_FLAG_DUMP_PROCESS_CACHE): each cached process hangs under
the process its `parent_exec_id` names; a process whose parent is not cached is a root. Processes
that a policy event named carry `refcnt_ops["policy_event"]` in the dump (api/debug.py) and are
marked `[policy event]` (red on a terminal). By default only referenced processes are asked for
(`--skip-zero-refcnt`): the live tree, with exited parents kept while a child still lives.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from tetragon.api.debug import COLOR_DELETE_PENDING, POLICY_EVENT_OP
from tetragon.api.gen.tetragon import sensors_pb2
from tetragon.cli.tetra_client import CliError, call_once

__all__ = ["ProcessNode", "add_processtree", "build_forest", "cmd_processtree", "text_lines"]

ARGUMENTS_SHOWN = 80  # characters of `arguments` on a terminal line; the HTML page shows them whole
_RED, _RESET = "\x1b[31m", "\x1b[0m"
# C0 and C1 control characters and DEL, shown escaped: a process's arguments are whatever it was
# given (a `bash -c` script spans lines; an attacker's argv may hold terminal escapes), and one
# process must stay one line that cannot repaint the terminal
_ESCAPED = {c: repr(chr(c))[1:-1] for c in (*range(0x20), *range(0x7F, 0xA0))}


@dataclass
class ProcessNode:
    exec_id: str
    parent_exec_id: str
    pid: int
    binary: str
    arguments: str
    start_time: str
    refcnt: int
    exited: bool  # refcount zero: waiting for the cache's next collection (only with --all)
    policy_event: bool
    children: list[ProcessNode] = field(default_factory=list)

    @classmethod
    def from_internal(cls, internal: sensors_pb2.ProcessInternal) -> ProcessNode:
        p = internal.process
        return cls(
            exec_id=p.exec_id,
            parent_exec_id=p.parent_exec_id,
            pid=p.pid.value,
            binary=p.binary,
            arguments=p.arguments,
            start_time=p.start_time.ToJsonString() if p.HasField("start_time") else "",
            refcnt=internal.refcnt.value,
            exited=internal.color == COLOR_DELETE_PENDING,
            policy_event=internal.refcnt_ops.get(POLICY_EVENT_OP, 0) > 0,
        )

    def walk(self) -> Iterator[ProcessNode]:
        """This node and its descendants, parents before children, siblings in order (no
        recursion: a process chain can be deeper than Python's stack)."""
        stack = [self]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(reversed(node.children))


def _order(node: ProcessNode) -> tuple[str, int, str]:
    return (node.start_time, node.pid, node.exec_id)


def build_forest(nodes: Iterable[ProcessNode]) -> list[ProcessNode]:
    """The roots, each with its descendants, children oldest first."""
    by_exec = {n.exec_id: n for n in nodes}
    roots: list[ProcessNode] = []
    for node in by_exec.values():
        parent = by_exec.get(node.parent_exec_id)
        if parent is None or parent is node:
            roots.append(node)
        else:
            parent.children.append(node)
    for node in by_exec.values():
        node.children.sort(key=_order)
    roots.sort(key=_order)
    return roots


def select(roots: list[ProcessNode], pid: int, policy_only: bool) -> list[ProcessNode]:
    """The subtree of `pid`'s process (the live one when the cache also holds an exited image), and
    with `policy_only` only the branches that lead to a process with a policy event."""
    if pid:
        found = [n for root in roots for n in root.walk() if n.pid == pid]
        if not found:
            raise CliError(f"no process with pid {pid} in the agent's process cache")
        roots = [max(found, key=lambda n: (not n.exited, n.start_time))]
    if policy_only:
        roots = [root for root in roots if _prune(root)]
    return roots


def _prune(root: ProcessNode) -> bool:
    """Keep under `root` only what leads to a policy event; whether anything is left."""
    order = list(root.walk())
    kept: set[int] = set()
    for node in reversed(order):  # children before their parent
        node.children = [c for c in node.children if id(c) in kept]
        if node.children or node.policy_event:
            kept.add(id(node))
    return id(root) in kept


def label(node: ProcessNode, width: int | None = ARGUMENTS_SHOWN) -> str:
    arguments = node.arguments
    if width is not None and len(arguments) > width:
        arguments = arguments[: width - 1] + "…"
    command = f"{node.binary} {arguments}" if arguments else node.binary
    return f"{command.translate(_ESCAPED)} pid={node.pid} exec_id={node.exec_id}"


def text_lines(
    roots: list[ProcessNode], color: bool = False, width: int | None = ARGUMENTS_SHOWN
) -> Iterator[str]:
    """The tree drawn with box characters, one process a line, arguments cut at `width`."""
    stack: list[tuple[ProcessNode, str, str]] = [(root, "", "") for root in reversed(roots)]
    while stack:
        node, lead, indent = stack.pop()
        marks = (" [exited]" if node.exited else "") + (" [policy event]" if node.policy_event else "")
        line = label(node, width) + marks
        if color and node.policy_event:
            line = _RED + line + _RESET
        yield lead + line
        last = len(node.children) - 1
        for i, child in reversed(list(enumerate(node.children))):
            stack.append(
                (
                    child,
                    indent + ("└── " if i == last else "├── "),
                    indent + ("    " if i == last else "│   "),
                )
            )


def add_processtree(commands: Any, add_globals: Any) -> None:
    pt = commands.add_parser("processtree", help="the agent's process tree, in the terminal or as HTML")
    add_globals(pt, True)
    pt.add_argument("-o", "--output", choices=("text", "html"), default="text", help="text (default) or html")
    pt.add_argument("--html", metavar="FILE", default="", help="write the HTML page to FILE")
    pt.add_argument("--pid", type=int, default=0, help="only the subtree of this pid's process")
    pt.add_argument(
        "--policy-events",
        action="store_true",
        help="only the branches leading to processes with policy events",
    )
    pt.add_argument("--all", action="store_true", help="also exited processes waiting for collection")
    pt.add_argument("--color", choices=("auto", "always", "never"), default="auto")
    pt.add_argument(
        "--full", action="store_true", help=f"arguments whole (cut at {ARGUMENTS_SHOWN} by default)"
    )


def cmd_processtree(args: argparse.Namespace, stdout: TextIO) -> int:
    request = sensors_pb2.GetDebugRequest(
        flag=sensors_pb2.CONFIG_FLAG_DUMP_PROCESS_CACHE,
        dump=sensors_pb2.DumpProcessCacheReqArgs(skip_zero_refcnt=not args.all),
    )
    response = call_once(args, "GetDebug", request)
    nodes = [ProcessNode.from_internal(p) for p in response.processes.processes]
    roots = select(build_forest(nodes), args.pid, args.policy_events)
    if args.html or args.output == "html":
        from tetragon.cli.tetra_processtree_html import render_html

        page = render_html(roots, args.server_address)
        if not args.html:
            stdout.write(page)
            return 0
        try:
            Path(args.html).write_text(page, encoding="utf-8")
        except OSError as exc:
            raise CliError(f"cannot write {args.html}: {exc.strerror}") from None
        return 0
    color = args.color == "always" or (args.color == "auto" and stdout is sys.stdout and stdout.isatty())
    width = None if args.full else ARGUMENTS_SHOWN
    stdout.writelines(line + "\n" for line in text_lines(roots, color, width))
    stdout.flush()
    return 0
