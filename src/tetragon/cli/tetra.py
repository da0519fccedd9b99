"""`tetra`: the command-line client of the agent's gRPC API (Tetragon-compatible).

    tetra getevents [-o json|compact] [filters...]    stream events (or filter JSON lines from stdin)
    tetra status                                     Health Status: <details>
    tetra version [-s]                               CLI version (and server version)
    tetra probe                                      kernel features this machine offers
    tetra tracingpolicy (tp) add|delete|enable|disable|set-mode|list|modify|generate
                                                     manage tracing policies

Errors are one line on stderr and a non-zero exit code; Ctrl-C exits quietly.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import stat
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, NoReturn, TextIO, TypeVar

import grpc
import yaml
from google.protobuf import field_mask_pb2, json_format

from tetragon import __version__
from tetragon.api.convert import dumps_event, event_to_proto, proto_to_event
from tetragon.api.gen.tetragon import events_pb2, sensors_pb2, sensors_pb2_grpc, tetragon_pb2
from tetragon.cli.argtypes import go_bool, positive_duration
from tetragon.events.compact import format_compact
from tetragon.events.goquote import go_quote
from tetragon.policy.modeyaml import set_policy_mode
from tetragon.policy.syscalls import all_syscalls

log = logging.getLogger("tetragon.cli.tetra")

INFO_FILE = Path("/var/run/tetragon/tetragon-info.json")
DEFAULT_ADDRESS = "localhost:54321"
MAX_RECV_BYTES = 10 * 1024 * 1024
_T = TypeVar("_T")


class CliError(Exception):
    """A failure reported as one line on stderr."""


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
    ge.add_argument("--host", action="store_true", help="also match host (non-pod) processes")
    ge.add_argument("--policy-names", action=_ListAction, default=[], metavar="NAMES")
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
    gen = leaf("generate", "print a generated tracing policy")
    gen.add_argument("kind", choices=GENERATE_KINDS, metavar="{" + "|".join(GENERATE_KINDS) + "}")
    gen.add_argument("-m", "--match-binary", default="", help="add this binary to a matchBinaries selector")


# --- gRPC plumbing -----------------------------------------------------------------------------


class Client:
    def __init__(self, address: str, timeout: float, retries: int) -> None:
        self.address = address
        self.timeout = timeout
        self.retries = retries
        self.channel = grpc.insecure_channel(
            address, options=[("grpc.max_receive_message_length", MAX_RECV_BYTES)]
        )
        self.stub = sensors_pb2_grpc.FineGuidanceSensorsStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def with_retries(self, call: Callable[[], _T]) -> _T:
        delay = 1.0
        for attempt in range(self.retries + 1):
            try:
                return call()
            except grpc.RpcError as exc:
                if _code(exc) != grpc.StatusCode.UNAVAILABLE or attempt == self.retries:
                    raise self.error(exc) from None
                log.debug("server unavailable (%s); retrying in %.0fs", _details(exc), delay)
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    def unary(self, method: str, request: Any) -> Any:
        return self.with_retries(lambda: getattr(self.stub, method)(request, timeout=self.timeout))

    def error(self, exc: grpc.RpcError) -> CliError:
        code = _code(exc)
        if code == grpc.StatusCode.UNAVAILABLE:
            return CliError(f"cannot connect to the server at {self.address}: {_details(exc)}")
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return CliError(f"the server at {self.address} did not answer within {self.timeout:g}s")
        name = code.name if code is not None else "UNKNOWN"
        return CliError(f"{name}: {_details(exc)}")


def _code(exc: grpc.RpcError) -> grpc.StatusCode | None:
    return exc.code() if isinstance(exc, grpc.Call) else None


def _details(exc: grpc.RpcError) -> str:
    return (exc.details() if isinstance(exc, grpc.Call) else None) or str(exc)


# --- getevents ---------------------------------------------------------------------------------


def build_request(args: argparse.Namespace) -> events_pb2.GetEventsRequest:
    """One allow-list Filter from the flags, plus include/exclude field filters, as tetra builds it."""
    flt = events_pb2.Filter(
        binary_regex=args.process,
        namespace=args.namespace + ([""] if args.host else []),
        pod_regex=args.pod,
        policy_names=args.policy_names,
    )
    for name in args.event_types:
        if name.upper() not in events_pb2.EventType.DESCRIPTOR.values_by_name or name.upper() == "UNDEF":
            raise CliError(f"invalid event type {name!r} (e.g. PROCESS_EXEC, PROCESS_KPROBE)")
        flt.event_set.append(events_pb2.EventType.Value(name.upper()))
    for pid in args.pid:
        if not pid.isdigit() or int(pid) > 0xFFFFFFFF:
            raise CliError(f"invalid pid {pid!r}")
        flt.pid.append(int(pid))
    request = events_pb2.GetEventsRequest()
    for paths, action in (
        (args.include_fields, events_pb2.INCLUDE),
        (args.exclude_fields, events_pb2.EXCLUDE),
    ):
        if paths:
            request.field_filters.append(
                events_pb2.FieldFilter(fields=field_mask_pb2.FieldMask(paths=paths), action=action)
            )
    if flt.ByteSize() > 0 or request.field_filters:
        request.allow_list.append(flt)
    return request


def _printer(args: argparse.Namespace, out: TextIO) -> Callable[[dict[str, Any]], None]:
    if args.output == "json":
        return lambda event: _write(out, dumps_event(event).decode())
    if args.color == "always":
        color = True
    elif args.color == "never":
        color = False
    else:  # fatih/color's rule: a terminal that is not dumb, and no NO_COLOR
        color = out.isatty() and os.environ.get("TERM") != "dumb" and "NO_COLOR" not in os.environ

    def compact(event: dict[str, Any]) -> None:
        text = format_compact(
            event,
            color=color,
            timestamps=args.timestamps,
            stack_traces=args.stack_traces,
            ima_hash=args.ima_hash,
        )
        if text is not None:
            _write(out, text)

    return compact


def _write(out: TextIO, line: str) -> None:
    out.write(line + "\n")
    out.flush()


def _stdin_is_data(stream: TextIO) -> bool:
    """Events come from stdin when it is a pipe or a file (`cat tetragon.log | tetra getevents`)."""
    try:
        mode = os.fstat(stream.fileno()).st_mode
    except (OSError, ValueError, AttributeError):
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISREG(mode)


def events_from_lines(lines: Iterable[str], request: events_pb2.GetEventsRequest) -> Iterator[dict[str, Any]]:
    """Tetragon JSON lines, filtered the way the server filters a GetEvents stream."""
    from tetragon.export.fieldfilters import compile_field_filters
    from tetragon.export.filters import compile_filters

    def dicts(items: Iterable[Any]) -> list[dict[str, Any]]:
        return [json_format.MessageToDict(m, preserving_proto_field_name=True) for m in items]

    allow = compile_filters(dicts(request.allow_list))
    shape = compile_field_filters(dicts(request.field_filters))
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            event = proto_to_event(event_to_proto(json.loads(line)))
        except (ValueError, json_format.ParseError) as exc:
            print(f"tetra: skipping stdin line {number}: not a Tetragon event ({exc})", file=sys.stderr)
            continue
        if allow(event):
            yield shape(event)


def _stream(client: Client, request: events_pb2.GetEventsRequest) -> Iterator[dict[str, Any]]:
    """GetEvents, reconnecting on UNAVAILABLE as often as --retries allows (the budget refills once
    events flow again)."""
    failures, delay = 0, 1.0
    while True:
        try:
            grpc.channel_ready_future(client.channel).result(timeout=client.timeout)
            for msg in client.stub.GetEvents(request):
                failures, delay = 0, 1.0
                yield proto_to_event(msg)
            return  # the server ended the stream (shutdown)
        except grpc.FutureTimeoutError:
            raise CliError(
                f"cannot connect to the server at {client.address} within {client.timeout:g}s"
            ) from None
        except grpc.RpcError as exc:
            if _code(exc) != grpc.StatusCode.UNAVAILABLE or failures >= client.retries:
                raise client.error(exc) from None
            failures += 1
            log.debug("stream interrupted (%s); reconnecting in %.0fs", _details(exc), delay)
            time.sleep(delay)
            delay *= 2


def cmd_getevents(args: argparse.Namespace, stdin: TextIO, stdout: TextIO) -> int:
    request = build_request(args)
    emit = _printer(args, stdout)
    if _stdin_is_data(stdin):
        for event in events_from_lines(stdin, request):
            emit(event)
        return 0
    client = _client(args)
    try:
        for event in _stream(client, request):
            emit(event)
    finally:
        client.close()
    return 0


# --- other commands ----------------------------------------------------------------------------


def _client(args: argparse.Namespace) -> Client:
    address = args.server_address or default_server_address()
    return Client(address, args.timeout, args.retries)


def cmd_status(args: argparse.Namespace, stdout: TextIO) -> int:
    client = _client(args)
    try:
        request = tetragon_pb2.GetHealthStatusRequest(event_set=[tetragon_pb2.HEALTH_STATUS_TYPE_STATUS])
        response = client.unary("GetHealth", request)
    finally:
        client.close()
    for status in response.health_status:
        _write(stdout, f"Health Status: {status.details}")
    return 0


def cmd_version(args: argparse.Namespace, stdout: TextIO) -> int:
    _write(stdout, f"CLI version: {__version__}")
    if args.server:
        client = _client(args)
        try:
            response = client.unary("GetVersion", sensors_pb2.GetVersionRequest())
        finally:
            client.close()
        _write(stdout, f"Server version: {response.version}")
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
        _write(stdout, f"{name}: {'true' if available else 'false'}")
    return 0


# --- tracingpolicy --------------------------------------------------------------------------------

GENERATE_KINDS = ("empty", "all-syscalls", "all-syscalls-list")
_MODES = {"enforce": sensors_pb2.TP_MODE_ENFORCE, "monitor": sensors_pb2.TP_MODE_MONITOR}
_KALLSYMS = Path("/proc/kallsyms")


def humanize_bytes(count: int) -> str:
    """Tetragon's HumanizeByteCount: decimal units, two digits (`4458824` -> `4.46 MB`)."""
    if count < 1000:
        return f"{count} B"
    div, exp, n = 1000, 0, count // 1000
    while n >= 1000:
        div *= 1000
        exp += 1
        n //= 1000
    return f"{count / div:.2f} {'kMGTPE'[exp]}B"


def _tabwrite(header: list[str], rows: list[list[str]]) -> list[str]:
    """Go's tabwriter (padding 3) for a header whose last cell is unterminated and rows whose cells
    all are: every row cell is padded, the header's last cell is not."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]
    if rows:
        widths.append(max(len(row[-1]) for row in rows))
    lines = ["".join(cell.ljust(w + 3) for cell, w in zip(header[:-1], widths, strict=False)) + header[-1]]
    lines.extend("".join(cell.ljust(w + 3) for cell, w in zip(row, widths, strict=True)) for row in rows)
    return lines


def format_policies(response: sensors_pb2.ListTracingPoliciesResponse) -> list[str]:
    """`tetra tracingpolicy list` text output, Tetragon v1.4 columns."""
    header = ["ID", "NAME", "STATE", "FILTERID", "NAMESPACE", "SENSORS", "KERNELMEMORY", "MODE"]
    rows = []
    for pol in response.policies:
        state = sensors_pb2.TracingPolicyState.DESCRIPTOR.values_by_number.get(pol.state)
        mode = sensors_pb2.TracingPolicyMode.DESCRIPTOR.values_by_number.get(pol.mode)
        rows.append(
            [
                str(pol.id),
                pol.name,
                state.name.lower().removeprefix("tp_state_") if state else str(pol.state),
                str(pol.filter_id),
                pol.namespace or "(global)",
                ",".join(pol.sensors),
                humanize_bytes(pol.kernel_memory_bytes),
                mode.name.lower().removeprefix("tp_mode_") if mode else str(pol.mode),
            ]
        )
    return _tabwrite(header, rows)


def _read_policy(path: str, mode: str) -> str:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise CliError(f"failed to read yaml file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise CliError(f"failed to read yaml file {path}: not UTF-8 text") from None
    if not mode:
        return text
    try:
        return set_policy_mode(text, mode)
    except ValueError as exc:
        raise CliError(f"failed to apply mode {go_quote(mode)} to yaml file {path}: {exc}") from None


def _policy_rpc(args: argparse.Namespace, method: str, request: Any, failure: str) -> Any:
    client = _client(args)
    try:
        return client.unary(method, request)
    except CliError as exc:
        raise CliError(f"{failure}: {exc}") from None
    finally:
        client.close()


def _configure(args: argparse.Namespace, failure: str, **fields: Any) -> None:
    request = sensors_pb2.ConfigureTracingPolicyRequest(name=args.name, namespace=args.namespace, **fields)
    _policy_rpc(args, "ConfigureTracingPolicy", request, failure)


def _kernel_syscalls() -> set[str] | None:
    """Bare names of the x64 syscalls this kernel has (`__x64_sys_*` in kallsyms); None if unknown."""
    try:
        with _KALLSYMS.open() as symbols:
            found = {
                line.split()[2].removeprefix("__x64_sys_")
                for line in symbols
                if "__x64_sys_" in line and line.split()[2].startswith("__x64_sys_")
            }
    except (OSError, IndexError):
        return None
    return found or None


def generate_policy(kind: str, match_binary: str = "") -> str:
    """`tetra tracingpolicy generate KIND` as YAML."""
    policy: dict[str, Any] = {
        "apiVersion": "cilium.io/v1alpha1",
        "kind": "TracingPolicy",
        "metadata": {"name": "empty" if kind == "empty" else "syscalls"},
        "spec": {},
    }
    if kind != "empty":
        available = _kernel_syscalls()
        names = [f"sys_{n}" for n in all_syscalls("x64") if available is None or n in available]

        def kprobe(call: str) -> dict[str, Any]:
            spec: dict[str, Any] = {"call": call, "syscall": True}
            if match_binary:
                spec["selectors"] = [{"matchBinaries": [{"operator": "In", "values": [match_binary]}]}]
            return spec

        if kind == "all-syscalls":
            policy["spec"]["kprobes"] = [kprobe(name) for name in names]
        else:
            policy["spec"]["lists"] = [{"name": "syscalls", "type": "syscalls", "values": names}]
            policy["spec"]["kprobes"] = [kprobe("list:syscalls")]
    text: str = yaml.safe_dump(policy, sort_keys=False, default_flow_style=False)
    return text


def cmd_tracingpolicy(args: argparse.Namespace, stdout: TextIO) -> int:
    command = args.tp_command
    if command == "generate":
        stdout.write(generate_policy(args.kind, args.match_binary))
    elif command == "modify":
        stdout.write(_read_policy(args.file, args.mode))  # without --mode: the file as it is
    elif command == "add":
        request = sensors_pb2.AddTracingPolicyRequest(yaml=_read_policy(args.file, args.mode))
        _policy_rpc(args, "AddTracingPolicy", request, "failed to add tracing policy")
        _write(stdout, f"tracing policy {go_quote(args.file)} added")
    elif command == "delete":
        request = sensors_pb2.DeleteTracingPolicyRequest(name=args.name, namespace=args.namespace)
        _policy_rpc(args, "DeleteTracingPolicy", request, "failed to delete tracing policy")
        _write(stdout, f"tracing policy {go_quote(args.name)} deleted")
    elif command in ("enable", "disable"):
        _configure(args, f"failed to {command} tracing policy", enable=command == "enable")
        _write(stdout, f"tracing policy {go_quote(args.name)} {command}d")
    elif command == "set-mode":
        if args.mode not in _MODES:
            raise CliError(f"invalid mode {go_quote(args.mode)}")
        _configure(args, f"failed set mode to {go_quote(args.mode)} tracing policy", mode=_MODES[args.mode])
        _write(stdout, f"tracing policy {go_quote(args.name)} set to mode {go_quote(args.mode)}")
    else:  # list
        if args.output not in ("text", "json"):
            raise CliError(f'invalid value for "output" flag: {args.output}')
        request = sensors_pb2.ListTracingPoliciesRequest()
        response = _policy_rpc(args, "ListTracingPolicies", request, "failed to list tracing policies")
        if args.output == "json":
            body = json_format.MessageToDict(response)
            _write(stdout, json.dumps(body, separators=(",", ":"), ensure_ascii=False))
        else:
            for line in format_policies(response):
                _write(stdout, line)
    stdout.flush()
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
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING, format="tetra: %(message)s")
    try:
        if args.command == "getevents":
            return cmd_getevents(args, sys.stdin, sys.stdout)
        if args.command == "status":
            return cmd_status(args, sys.stdout)
        if args.command == "version":
            return cmd_version(args, sys.stdout)
        if args.command in ("tracingpolicy", "tp"):
            return cmd_tracingpolicy(args, sys.stdout)
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
