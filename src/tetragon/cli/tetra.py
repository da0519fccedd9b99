"""`tetra`: the command-line client of the agent's gRPC API (Tetragon-compatible).

    tetra getevents [-o json|compact] [filters...]    stream events (or filter JSON lines from stdin)
    tetra status                                     Health Status: <details>
    tetra version [-s]                               CLI version (and server version)
    tetra probe                                      kernel features this machine offers
    tetra info                                       the agent's version, probes, configuration (GetInfo)
    tetra tracingpolicy (tp) add|delete|enable|disable|set-mode|list|modify|generate|domains
                                                     manage tracing policies
    tetra debug dump processcache [--skip-zero-refcnt] [--exclude-execve-map-processes]
                                                     the agent's process cache (alias: tetra dump)
    tetra debug progs [--pid PID]                    the agent's BPF programs: runs and run time (root)
    tetra debug maps [--pid PID]                     the agent's BPF maps: entries, kernel memory (root)
    tetra debug dump execve [--pid PID]              the kernel's process map, JSON lines (root)
    tetra debug enable-stats [--duration S]          BPF run-time statistics on until Ctrl-C (root)
    tetra processtree [--pid PID] [--html FILE]      the process tree from the cache, policy events marked

Errors are one line on stderr and a non-zero exit code; Ctrl-C exits quietly.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any, NoReturn, TextIO

from tetragon import __version__
from tetragon.api.gen.tetragon import sensors_pb2, tetragon_pb2
from tetragon.cli.argtypes import go_bool, positive_duration
from tetragon.cli.tetra_client import CliError, call_once, write_line
from tetragon.cli.tetra_debug import add_debug, cmd_debug
from tetragon.cli.tetra_getevents import cmd_getevents
from tetragon.cli.tetra_info import add_info, cmd_domains, cmd_info
from tetragon.cli.tetra_processtree import add_processtree, cmd_processtree
from tetragon.cli.tetra_tracingpolicy import GENERATE_KINDS, cmd_tracingpolicy

INFO_FILE = Path("/var/run/tetragon/tetragon-info.json")
DEFAULT_ADDRESS = "localhost:54321"


def default_server_address(info_file: Path = INFO_FILE) -> str:
    """`server_address` from the agent's info file, else localhost:54321."""
    try:
        address = json.loads(info_file.read_text()).get("server_address")
    except (OSError, ValueError, AttributeError):
        return DEFAULT_ADDRESS
    return address if isinstance(address, str) and address else DEFAULT_ADDRESS


# --- argument parsing ------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"Error: {message} (see '{self.prog} --help')\n")


class _ListAction(argparse.Action):
    """Cobra string-slice flags: repeatable and comma-separated."""

    def __call__(
        self, parser: argparse.ArgumentParser, ns: argparse.Namespace, values: Any, opt: Any = None
    ) -> None:
        items = list(getattr(ns, self.dest, None) or [])
        items.extend(v for v in str(values).split(",") if v != "")
        setattr(ns, self.dest, items)


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text!r}")
    return value


def _add_globals(parser: argparse.ArgumentParser, suppress: bool) -> None:
    default = (lambda value: argparse.SUPPRESS) if suppress else (lambda value: value)
    parser.add_argument("-d", "--debug", action="store_true", default=default(False), help="debug output")
    parser.add_argument(
        "--server-address",
        default=default(None),
        help="gRPC server address, host:port or unix:///path (default: from "
        f"{INFO_FILE}, else {DEFAULT_ADDRESS})",
    )
    parser.add_argument(
        "--timeout", type=positive_duration, default=default(30.0), help="connect/RPC timeout (30s)"
    )
    parser.add_argument("--retries", type=_non_negative, default=default(1), help="retries on UNAVAILABLE")
    parser.add_argument(
        "--max-recv-size",
        type=_non_negative,
        default=default(10 * 1024 * 1024),
        metavar="BYTES",
        help="largest response accepted (10 MiB; a large process cache dump may need more)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tetra", description="Tetragon CLI")
    _add_globals(parser, suppress=False)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")

    ge = commands.add_parser("getevents", help="print events")
    _add_globals(ge, suppress=True)
    ge.add_argument("-o", "--output", choices=("json", "compact"), default="json")
    ge.add_argument("--color", choices=("auto", "always", "never"), default="auto")
    ge.add_argument("-e", "--event-types", action=_ListAction, default=[], metavar="TYPES")
    ge.add_argument("--process", "--processes", action=_ListAction, default=[], metavar="REGEX")
    ge.add_argument("--pid", "--pids", action=_ListAction, default=[], metavar="PID")
    ge.add_argument("-n", "--namespace", "--namespaces", action=_ListAction, default=[], metavar="NS")
    ge.add_argument("--pod", "--pods", action=_ListAction, default=[], metavar="REGEX")
    ge.add_argument("--container-id", "--containers", action=_ListAction, default=[], metavar="REGEX")
    ge.add_argument("--host", action="store_true", help="also match host (non-pod) processes")
    ge.add_argument("--policy-names", action=_ListAction, default=[], metavar="NAMES")
    ge.add_argument(
        "--cel-expression",
        action="append",
        default=[],
        metavar="EXPR",
        help="CEL expression over the event, e.g. \"process_exec.process.binary == '/bin/true'\" "
        "(repeatable; not split at commas)",
    )
    ge.add_argument("--timestamps", action="store_true", help="prefix compact lines with the event time")
    ge.add_argument("--stack-traces", type=go_bool, nargs="?", const=True, default=True, metavar="BOOL")
    ge.add_argument("--ima-hash", type=go_bool, nargs="?", const=True, default=True, metavar="BOOL")
    ge.add_argument("-f", "--include-fields", action=_ListAction, default=[], metavar="FIELDS")
    ge.add_argument("-F", "--exclude-fields", action=_ListAction, default=[], metavar="FIELDS")

    st = commands.add_parser("status", help="print the agent's health")
    _add_globals(st, suppress=True)
    ve = commands.add_parser("version", help="print versions")
    _add_globals(ve, suppress=True)
    ve.add_argument("-s", "--server", action="store_true", help="also ask the server")
    pr = commands.add_parser("probe", help="probe the kernel features the agent can use")
    _add_globals(pr, suppress=True)
    _add_tracingpolicy(commands)
    add_debug(commands, _add_globals)
    add_info(commands, _add_globals)
    add_processtree(commands, _add_globals)
    return parser


def _add_tracingpolicy(commands: Any) -> None:
    tp = commands.add_parser("tracingpolicy", aliases=["tp"], help="manage tracing policies")
    _add_globals(tp, suppress=True)
    sub = tp.add_subparsers(dest="tp_command", required=True, parser_class=_Parser, metavar="COMMAND")

    def leaf(name: str, text: str, *, namespace: bool = False) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = sub.add_parser(name, help=text)
        _add_globals(parser, suppress=True)
        if namespace:
            parser.add_argument("-n", "--namespace", default="", help="namespace of the tracing policy")
        return parser

    add = leaf("add", "add a tracing policy")
    add.add_argument("file", metavar="FILE", help="policy YAML file")
    add.add_argument("-m", "--mode", default="", help="tracing policy mode (enforce|monitor)")
    for name, text in (
        ("delete", "delete a tracing policy"),
        ("enable", "enable a disabled tracing policy"),
        ("disable", "disable an enabled tracing policy"),
    ):
        leaf(name, text, namespace=True).add_argument("name", metavar="NAME")
    set_mode = leaf("set-mode", "set a tracing policy to monitor or enforce mode", namespace=True)
    set_mode.add_argument("name", metavar="NAME")
    set_mode.add_argument("mode", metavar="MODE", help="enforce or monitor")
    lst = leaf("list", "list loaded tracing policies")
    lst.add_argument("-o", "--output", default="text", help="output format: text or json")
    modify = leaf("modify", "print a tracing policy YAML file, modified")
    modify.add_argument("file", metavar="FILE", help="policy YAML file")
    modify.add_argument("-m", "--mode", default="", help="tracing policy mode (enforce|monitor)")
    leaf("domains", "list the domains of the loaded tracing policies")
    gen = leaf("generate", "print a generated tracing policy")
    gen.add_argument("kind", choices=GENERATE_KINDS, metavar="{" + "|".join(GENERATE_KINDS) + "}")
    gen.add_argument("-m", "--match-binary", default="", help="add this binary to a matchBinaries selector")


# --- status, version, probe ----------------------------------------------------------------------


def cmd_status(args: argparse.Namespace, stdout: TextIO) -> int:
    request = tetragon_pb2.GetHealthStatusRequest(event_set=[tetragon_pb2.HEALTH_STATUS_TYPE_STATUS])
    response = call_once(args, "GetHealth", request)
    for status in response.health_status:
        write_line(stdout, f"Health Status: {status.details}")
    return 0


def cmd_version(args: argparse.Namespace, stdout: TextIO) -> int:
    write_line(stdout, f"CLI version: {__version__}")
    if args.server:
        response = call_once(args, "GetVersion", sensors_pb2.GetVersionRequest())
        write_line(stdout, f"Server version: {response.version}")
    return 0


def cmd_probe(args: argparse.Namespace, stdout: TextIO) -> int:
    try:
        from tetragon.bpf.features import probe_features
    except ImportError as exc:
        raise CliError(f"feature probing is not available: {exc}") from None
    try:
        features = probe_features()
    except Exception as exc:  # BpfError, OSError: reported, not a traceback
        raise CliError(f"feature probe failed: {exc}") from None
    for name, available in features.items():
        write_line(stdout, f"{name}: {'true' if available else 'false'}")
    return 0


def _exit_on_interrupt(signum: int, frame: object) -> None:
    """Ctrl-C of the program: flush what was printed and leave at once. Unwinding instead tears
    down a gRPC channel mid-stream, which can keep interpreter shutdown waiting on its threads (a
    Ctrl-C that did not end `tetra getevents` was seen once in CI)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(130)


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # the program, not a caller in this process
        signal.signal(signal.SIGINT, _exit_on_interrupt)
    args = build_parser().parse_args(argv)
    args.server_address = args.server_address or default_server_address()
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING, format="tetra: %(message)s")
    try:
        if args.command == "getevents":
            return cmd_getevents(args, sys.stdin, sys.stdout)
        if args.command == "status":
            return cmd_status(args, sys.stdout)
        if args.command == "version":
            return cmd_version(args, sys.stdout)
        if args.command in ("tracingpolicy", "tp"):
            if args.tp_command == "domains":
                return cmd_domains(args, sys.stdout)
            return cmd_tracingpolicy(args, sys.stdout)
        if args.command == "info":
            return cmd_info(args, sys.stdout)
        if args.command in ("debug", "dump"):
            return cmd_debug(args, sys.stdout)
        if args.command == "processtree":
            return cmd_processtree(args, sys.stdout)
        return cmd_probe(args, sys.stdout)
    except CliError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`tetra getevents | head`); silence the flush at interpreter exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
