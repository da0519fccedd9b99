"""`tetra tracingpolicy` (`tetra tp`): add, delete, enable, disable, set-mode and list policies on the
agent; modify and generate policy YAML locally."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, TextIO

import yaml
from google.protobuf import json_format

from tetragon.api.gen.tetragon import sensors_pb2
from tetragon.cli.tetra_client import CliError, call_once, write_line
from tetragon.events.goquote import go_quote
from tetragon.policy.modeyaml import set_policy_mode
from tetragon.policy.syscalls import all_syscalls

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
    try:
        return call_once(args, method, request)
    except CliError as exc:
        raise CliError(f"{failure}: {exc}") from None


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
        write_line(stdout, f"tracing policy {go_quote(args.file)} added")
    elif command == "delete":
        request = sensors_pb2.DeleteTracingPolicyRequest(name=args.name, namespace=args.namespace)
        _policy_rpc(args, "DeleteTracingPolicy", request, "failed to delete tracing policy")
        write_line(stdout, f"tracing policy {go_quote(args.name)} deleted")
    elif command in ("enable", "disable"):
        _configure(args, f"failed to {command} tracing policy", enable=command == "enable")
        write_line(stdout, f"tracing policy {go_quote(args.name)} {command}d")
    elif command == "set-mode":
        if args.mode not in _MODES:
            raise CliError(f"invalid mode {go_quote(args.mode)}")
        _configure(args, f"failed set mode to {go_quote(args.mode)} tracing policy", mode=_MODES[args.mode])
        write_line(stdout, f"tracing policy {go_quote(args.name)} set to mode {go_quote(args.mode)}")
    else:  # list
        if args.output not in ("text", "json"):
            raise CliError(f'invalid value for "output" flag: {args.output}')
        request = sensors_pb2.ListTracingPoliciesRequest()
        response = _policy_rpc(args, "ListTracingPolicies", request, "failed to list tracing policies")
        if args.output == "json":
            body = json_format.MessageToDict(response)
            write_line(stdout, json.dumps(body, separators=(",", ":"), ensure_ascii=False))
        else:
            for line in format_policies(response):
                write_line(stdout, line)
    stdout.flush()
    return 0
