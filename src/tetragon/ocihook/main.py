"""`tetragon-oci-hook HOOK`: the command a runtime runs at a container's `createRuntime` hook.

Flags and defaults are those of Tetragon's hook (contrib/tetragon-rthooks), except for the failure
mode: Tetragon's hook fails the container (exit 1) when the agent cannot be told, unless the pod's
namespace is in `--fail-allow-namespaces` (default `kube-system`). Here a container is never held
back by default: the error is logged and the container starts (covered once the agent learns it from
the API or CRI, as without the hook). `--fail-allow-namespaces`, `--fail-allow-namespaces-regex` or
`--fail-cel-expr` turn on Tetragon's rule: fail unless the namespace is allowed / the expression is
false. Either way the agent is waited for at most `--grpc-timeout`.
"""

from __future__ import annotations

import argparse
import json
import logging
import logging.handlers
import os
import re
import sys
import time
from typing import Any

from tetragon.ocihook.annotations import NAMESPACE_KEYS, pod_namespace
from tetragon.ocihook.request import HookRequest, SpecError, hook_request, parse_state, to_proto
from tetragon.timefmt import parse_duration

DEFAULT_AGENT_ADDRESS = "unix:///var/run/cilium/tetragon/tetragon.sock"
DEFAULT_TIMEOUT = "10s"
WORK_HOOKS = ("createRuntime",)  # Tetragon's hook acts here; createContainer/poststop: nothing to do
LOG_MAX_BYTES = 50 * 1024 * 1024  # Tetragon's lumberjack settings: 50 MB, 3 backups
LOG_BACKUPS = 3

log = logging.getLogger("tetragon-oci-hook")


class _JsonLines(logging.Formatter):
    """One JSON object a line (Tetragon's hook logs with slog's JSON handler)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "msg": record.getMessage(),
        }
        line.update(getattr(record, "fields", {}))
        return json.dumps(line, sort_keys=False)


def _list(values: list[str] | None) -> list[str]:
    """Repeated and comma-separated flag values, as kong reads a []string flag."""
    return [v for value in values or () for v in value.split(",") if v]


def default_log_file() -> str:
    here = os.path.dirname(os.path.realpath(sys.argv[0])) if sys.argv and sys.argv[0] else "."
    return os.path.join(here, "tetragon-oci-hook.log")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tetragon-oci-hook",
        description="OCI runtime hook: tells the Tetragon agent about a container before it runs.",
    )
    p.add_argument("hook", help="the hook stage the runtime runs this at (createRuntime does the work)")
    p.add_argument("--grpc-address", default=DEFAULT_AGENT_ADDRESS, help="the agent's gRPC address")
    p.add_argument(
        "--grpc-timeout", default=DEFAULT_TIMEOUT, help="the longest wait for the agent (Go duration)"
    )
    p.add_argument(
        "--log-fname", default="", help="log file (default: tetragon-oci-hook.log beside the hook)"
    )
    p.add_argument("--log-level", default="info", help="debug, info, warn or error")
    p.add_argument("--disable-grpc", action="store_true", help="log the request instead of sending it")
    p.add_argument(
        "--annotations-namespace-key",
        action="append",
        help=f"runtime annotation keys holding the pod's namespace (default: {','.join(NAMESPACE_KEYS)})",
    )
    p.add_argument("--fail-cel-expr", default="", help="CEL over `annotations`: true fails the container")
    p.add_argument(
        "--fail-allow-namespaces",
        action="append",
        help="fail containers the agent could not be told about, except in these namespaces",
    )
    p.add_argument(
        "--fail-allow-namespaces-regex",
        action="append",
        help="as --fail-allow-namespaces, for namespaces matching these RE2 patterns (substring match)",
    )
    return p


def _setup_log(path: str, level: str) -> None:
    try:
        handler: logging.Handler = logging.handlers.RotatingFileHandler(
            path, maxBytes=LOG_MAX_BYTES, backupCount=LOG_BACKUPS
        )
    except OSError as exc:  # a log that cannot be written must not fail the container
        print(
            f"tetragon-oci-hook: cannot open log {path}: {exc.strerror}; logging to stderr", file=sys.stderr
        )
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonLines())
    log.handlers[:] = [handler]
    log.propagate = False
    name = {"warn": "WARNING", "warning": "WARNING"}.get(level.lower(), level.upper())
    log.setLevel(name if name in ("DEBUG", "INFO", "WARNING", "ERROR") else "INFO")


def _info(
    msg: str, fields: dict[str, object] | None = None, *, level: int = logging.INFO, **extra: object
) -> None:
    log.log(level, msg, extra={"fields": {**(fields or {}), **extra}})


class FailRule:
    """Whether a container the agent could not be told about must fail (see the module's doc)."""

    def __init__(self, opts: argparse.Namespace) -> None:
        self.namespace_keys = tuple(_list(opts.annotations_namespace_key)) or NAMESPACE_KEYS
        self.allow = _list(opts.fail_allow_namespaces)
        self.patterns = [re.compile(p) for p in opts.fail_allow_namespaces_regex or ()]
        self.program: Any = None
        if opts.fail_cel_expr:
            import cel

            self.program = cel.compile(opts.fail_cel_expr)  # ValueError when it does not compile

    @property
    def fail_open(self) -> bool:
        return self.program is None and not self.allow and not self.patterns

    def should_fail(self, annotations: dict[str, str]) -> bool:
        if self.program is not None:
            import cel

            ctx = cel.Context()
            ctx.add_variable("annotations", annotations)
            ctx.add_variable("annotations_namespace_keys", list(self.namespace_keys))
            try:
                return self.program.execute(ctx) is True
            except Exception as exc:  # Tetragon: an expression that cannot run fails the container
                _info("fail-cel-expr did not evaluate", level=logging.WARNING, error=str(exc))
                return True
        if self.fail_open:
            return False
        for key in self.namespace_keys:
            namespace = annotations.get(key)
            if namespace is not None and (
                namespace in self.allow or any(p.search(namespace) for p in self.patterns)
            ):
                return False
        return True


def agent_target(address: str) -> str:
    """A gRPC target from the agent's address (`unix:///path`, a bare socket path or `host:port`)."""
    return f"unix://{address}" if address.startswith("/") else address


def send(req: HookRequest, address: str, timeout: float) -> None:
    """The RuntimeHook call; raises grpc.RpcError (UNAVAILABLE at once when nothing listens)."""
    import grpc

    from tetragon.api.gen.tetragon import sensors_pb2_grpc

    with grpc.insecure_channel(agent_target(address)) as channel:
        sensors_pb2_grpc.FineGuidanceSensorsStub(channel).RuntimeHook(to_proto(req), timeout=timeout)


def create_runtime(opts: argparse.Namespace, rule: FailRule, stdin: str, cwd: str) -> int:
    """Tell the agent about the container; 0 unless it could not be told and `rule` says fail."""
    started = time.monotonic()
    annotations: dict[str, str] = {}
    try:
        state = parse_state(stdin)
        annotations = dict(state.annotations)
        req = hook_request(state, cwd)
        annotations = req.annotations
    except SpecError as exc:
        return _failed(rule, annotations, f"no request for the agent: {exc}")
    fields: dict[str, object] = {
        "req-cgroups": req.cgroups_path,
        "req-containerID": req.container_id,
        "req-containerName": req.meta.container_name,
        "req-podName": req.meta.pod_name,
        "req-podNamespace": req.meta.pod_namespace,
    }
    if opts.disable_grpc:
        _info("gRPC was disabled, so will not be contacting the agent", fields)
        return 0
    try:
        send(req, opts.grpc_address, parse_duration(opts.grpc_timeout))
    except Exception as exc:  # grpc.RpcError: the agent is down, slow or said no
        detail = getattr(exc, "details", lambda: None)() or str(exc)
        code = getattr(exc, "code", lambda: None)()
        _info("hook request to the agent failed", fields, level=logging.WARNING, error=detail, code=str(code))
        return _failed(rule, annotations, f"{opts.grpc_address}: {detail}")
    _info("hook request to agent succeeded", fields, seconds=round(time.monotonic() - started, 3))
    return 0


def _failed(rule: FailRule, annotations: dict[str, str], error: str) -> int:
    if rule.should_fail(annotations):
        _info("failing container", level=logging.WARNING, error=error, namespace=pod_namespace(annotations))
        print(f"failing container: {error}. Check the hook's log for more", file=sys.stderr)
        return 1
    _info("container starts without the agent knowing it (fail-open)", level=logging.WARNING, error=error)
    return 0


def main(argv: list[str] | None = None) -> int:
    opts = build_parser().parse_args(argv)
    _setup_log(opts.log_fname or default_log_file(), opts.log_level)
    try:
        parse_duration(opts.grpc_timeout)
        rule = FailRule(opts)
    except (ValueError, re.error) as exc:
        _info("bad flags, bailing out", level=logging.ERROR, error=str(exc))
        print(f"tetragon-oci-hook: {exc}", file=sys.stderr)
        return 1
    if opts.hook not in WORK_HOOKS:
        if opts.hook not in ("createContainer", "startContainer", "poststart", "poststop", "prestart"):
            _info("hook called with unknown hook", level=logging.WARNING, hook=opts.hook)
        return 0
    stdin = "" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.read()
    return create_runtime(opts, rule, stdin, os.getcwd())


if __name__ == "__main__":
    sys.exit(main())
