"""The agent's flags: one table of name, range check, default and help, from which the argparse parser,
its help text and the config-file validation are all made.

A bad value (on the command line or in a config file) is one line naming the flag, the value and what
is allowed; the exit status is 2.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

from tetragon import __version__
from tetragon.api.access import AccessRule, ServerOptions
from tetragon.cli import argtypes as t


@dataclass(frozen=True)
class Flag:
    dest: str
    parse: Callable[[str], Any]  # raises ValueError saying what is allowed
    default: Any
    help: str
    boolean: bool = False


_GIB = 1 << 30
_DAY = 86400.0

FLAGS: dict[str, Flag] = {
    "export-filename": Flag("export_filename", t.text, "", "JSON events file (empty: no file export)"),
    "export-file-max-size-mb": Flag(
        "export_file_max_size_mb", t.int_range(1, 1 << 20), 10, "rotate the export file at this size (MiB)"
    ),
    "export-file-max-backups": Flag(
        "export_file_max_backups", t.int_range(0, 100_000), 5, "rotated files to keep (0: all)"
    ),
    "export-file-compress": Flag("export_file_compress", t.boolean, False, "gzip rotated files", True),
    "export-file-rotation-interval": Flag(
        "export_file_rotation_interval",
        t.duration_range(60.0, 366 * _DAY, zero=True),
        0.0,
        "also rotate this often",
    ),
    "export-file-perm": Flag("export_file_perm", t.file_mode, 0o600, "export file mode (octal)"),
    "export-allowlist": Flag("export_allowlist", t.text, "", "JSON filters: export only matching events"),
    "export-denylist": Flag("export_denylist", t.text, "", "JSON filters: never export matching events"),
    "field-filters": Flag("field_filters", t.text, "", "JSON field filters for exported events"),
    "redaction-filters": Flag("redaction_filters", t.text, "", "JSON redaction filters"),
    "export-rate-limit": Flag(
        "export_rate_limit",
        t.int_range(0, (1 << 31) - 1, also=(-1,)),
        -1,
        "events per minute (-1: no limit, 0: export nothing)",
    ),
    "server-address": Flag(
        "server_address",
        t.server_address,
        "localhost:54321",
        "gRPC address: host:port, :port (all interfaces, needs TLS) or unix:///path; empty: off",
    ),
    "server-allow-uids": Flag(
        "server_allow_uids", t.id_list, [], "uids that may call the read-only gRPC RPCs (besides root)"
    ),
    "server-allow-gids": Flag(
        "server_allow_gids", t.id_list, [], "gids whose members may call the read-only gRPC RPCs"
    ),
    "server-admin-uids": Flag(
        "server_admin_uids", t.id_list, [], "uids that may call every gRPC RPC, policy changes too"
    ),
    "server-admin-gids": Flag(
        "server_admin_gids", t.id_list, [], "gids whose members may call every gRPC RPC"
    ),
    "server-tls-cert-file": Flag(
        "server_tls_cert_file", t.existing_file_or_empty, "", "TLS certificate of the gRPC server"
    ),
    "server-tls-key-file": Flag("server_tls_key_file", t.existing_file_or_empty, "", "its private key"),
    "server-tls-client-ca-files": Flag(
        "server_tls_client_ca_files",
        t.existing_files,
        [],
        "CA certificates that sign client certificates (TLS clients must present one)",
    ),
    "server-max-event-streams": Flag(
        "server_max_event_streams",
        t.int_range(1, 4096),
        256,
        "GetEvents streams open at once; more get RESOURCE_EXHAUSTED",
    ),
    "server-max-event-streams-per-peer": Flag(
        "server_max_event_streams_per_peer",
        t.int_range(1, 4096),
        32,
        "GetEvents streams one uid (root exempt) may hold; more get RESOURCE_EXHAUSTED",
    ),
    "server-max-connections-per-peer": Flag(
        "server_max_connections_per_peer",
        t.int_range(1, 65536),
        64,
        "TCP connections one uid (root exempt) or remote address may hold; more are closed",
    ),
    "server-max-connections": Flag(
        "server_max_connections", t.int_range(1, 1 << 20), 1024, "TCP connections held in total"
    ),
    "tracing-policy": Flag("tracing_policy", t.text, "", "TracingPolicy YAML file loaded at start"),
    "tracing-policy-dir": Flag(
        "tracing_policy_dir",
        t.directory_if_present,
        "/etc/tetragon/tetragon.tp.d",
        "load every policy (*.yaml, *.yml) in this directory at start",
    ),
    "tracing-policy-max-hooks": Flag(
        "tracing_policy_max_hooks",
        t.int_range(1, 10_000),
        128,
        "hooks (kprobes, tracepoints, uprobe targets) one policy may have; each holds ~24 fds and ~1 MB",
    ),
    "tracing-policies-max-hooks": Flag(
        "tracing_policies_max_hooks",
        t.int_range(1, 100_000),
        256,
        "hooks all loaded policies together may have; a policy passing it is refused before loading",
    ),
    "metrics-server": Flag(
        "metrics_server",
        t.host_port,
        "",
        "Prometheus address, e.g. localhost:2112 (:2112 listens on every interface); empty: off",
    ),
    "metrics-label-filter": Flag(
        "metrics_label_filter", t.text, "namespace,workload,pod,binary", "metric labels"
    ),
    "health-server-address": Flag(
        "health_server_address",
        t.host_port,
        ":6789",
        "grpc.health.v1 address, service 'liveness' (:6789 listens on every interface); empty: off",
    ),
    "health-server-interval": Flag(
        "health_server_interval", t.int_range(1, 86400), 10, "seconds between liveness re-evaluations"
    ),
    "enable-bpf-stats": Flag(
        "enable_bpf_stats",
        t.boolean,
        False,
        "turn on the kernel's BPF run-time statistics for tetragon_overhead_program_* (~40 ns per run)",
        True,
    ),
    "enable-process-cred": Flag(
        "enable_process_cred", t.boolean, False, "export capabilities and credentials", True
    ),
    "enable-process-ns": Flag("enable_process_ns", t.boolean, False, "export namespaces", True),
    "enable-ancestors": Flag(
        "enable_ancestors", t.comma_list, [], "event types with ancestors: base,kprobe,..."
    ),
    # Kubernetes: pods on events (k8s/enrich.py) and pod-scoped policies
    "enable-k8s-api": Flag(
        "enable_k8s_api", t.boolean, False, "pods of this node from the API server (pod on events)", True
    ),
    "k8s-kubeconfig-path": Flag(
        "k8s_kubeconfig_path", t.existing_file_or_empty, "", "kubeconfig (default: the pod's service account)"
    ),
    "enable-cri": Flag("enable_cri", t.boolean, False, "pods from the node's CRI runtime", True),
    "cri-endpoint": Flag(
        "cri_endpoint", t.text, "", "CRI socket, e.g. unix:///run/containerd/containerd.sock (default: found)"
    ),
    "deleted-pod-cache-size": Flag(
        "deleted_pod_cache_size", t.int_range(0, 1 << 20), 128, "deleted pods kept for late events"
    ),
    "event-cache-retries": Flag(
        "event_cache_retries",
        t.int_range(1, 10_000),
        15,
        "lookups of a held event's pod before it goes without",
    ),
    "event-cache-retry-delay": Flag(
        "event_cache_retry_delay",
        t.int_range(1, 3600),
        2,
        "seconds between two lookups of a held event's pod",
    ),
    "enable-policy-filter": Flag(
        "enable_policy_filter", t.boolean, False, "pod-scoped policies (podSelector, namespaced)", True
    ),
    "enable-policy-filter-cgroup-map": Flag(
        "enable_policy_filter_cgroup_map",
        t.boolean,
        False,
        "policy filter by cgroup id (always so here)",
        True,
    ),
    "enable-policy-filter-debug": Flag(
        "enable_policy_filter_debug", t.boolean, False, "log the policy filter's changes", True
    ),
    "keep-sensors-on-exit": Flag(
        "keep_sensors_on_exit",
        t.false_only("this agent does not pin its BPF programs"),
        False,
        "not supported",
    ),
    "enable-msg-handling-latency": Flag(
        "enable_msg_handling_latency",
        t.false_only("no per-message latency histogram in this agent"),
        False,
        "not supported",
    ),
    "process-cache-size": Flag(
        "process_cache_size", t.int_range(16, 1 << 24), 65536, "process cache capacity"
    ),
    "process-cache-gc-interval": Flag(
        "process_cache_gc_interval", t.duration_range(1.0, _DAY), 30.0, "process cache GC period"
    ),
    "rb-size": Flag(
        "rb_size",
        t.int_range(4096, _GIB, also=(0,)),
        0,
        "bytes of each event ring buffer, lifecycle and policy (0: 8 MiB), rounded up to a power of two",
    ),
    "procfs": Flag("procfs", t.procfs_dir, "/proc", "procfs mount to scan at start"),
    "btf": Flag("btf", t.btf_file, "", "kernel BTF file (default /sys/kernel/btf/vmlinux)"),
    "run-dir": Flag(
        "run_dir", t.writable_dir, "/var/run/tetragon", "where tetragon-info.json and tetragon.pid go"
    ),
    "log-level": Flag(
        "log_level",
        t.choice("trace", "debug", "info", "warn", "warning", "error", "fatal", "panic"),
        "info",
        "log level",
    ),
}
SERVER_OPTIONS = {f.dest for name, f in FLAGS.items() if name.startswith("server-")} - {"server_address"}
NOT_CONFIG = {"log_level", *SERVER_OPTIONS}  # flags that are not AgentConfig fields


def server_options(ns: argparse.Namespace) -> ServerOptions:
    # AccessRule's fields in order: readers (uids, gids), then admins (uids, gids)
    ids = ("allow_uids", "allow_gids", "admin_uids", "admin_gids")
    access = AccessRule(*(frozenset(getattr(ns, f"server_{name}")) for name in ids))
    tls = (ns.server_tls_cert_file, ns.server_tls_key_file, tuple(ns.server_tls_client_ca_files))
    limits = (
        ns.server_max_event_streams,
        ns.server_max_event_streams_per_peer,
        ns.server_max_connections_per_peer,
        ns.server_max_connections,
    )
    return ServerOptions(access, *tls, *limits)


def join_dash_values(argv: list[str]) -> list[str]:
    """`--flag -1s` -> `--flag=-1s`: argparse would take a value starting with '-' (other than a
    plain negative number) for an option and report a missing value instead of the bad one."""
    out: list[str] = []
    words = iter(argv)
    for word in words:
        flag = FLAGS.get(word.removeprefix("--")) if word.startswith("--") else None
        if flag is not None and not flag.boolean:
            value = next(words, None)
            if value is not None and value.startswith("-") and not value.startswith("--") and value != "-h":
                word = f"{word}={value}"
            elif value is not None:
                out.append(word)
                word = value
        out.append(word)
    return out


def check_value(name: str, value: str) -> Any:
    """The parsed value of `--name value`; ValueError with the one-line reason when not allowed."""
    flag = FLAGS[name]
    try:
        return flag.parse(value)
    except ValueError as exc:
        raise ValueError(f"--{name} {value!r}: not allowed; expected {exc}") from None


def _argparse_type(name: str) -> Callable[[str], Any]:
    def parse(value: str) -> Any:
        try:
            return check_value(name, value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc).removeprefix(f"--{name} ")) from None

    parse.__name__ = name
    return parse


def _boolean(value: str) -> bool:
    try:
        return bool(t.boolean(value))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value!r}: not allowed; expected {exc}") from None


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line, no usage dump: `tetragon: argument --flag: 'value': not allowed; expected ...`."""
        self.exit(2, f"{self.prog}: {message}\n")


def _help(flag: Flag) -> str:
    default = flag.default
    if isinstance(default, bool):
        default = str(default).lower()
    elif flag.parse is t.file_mode:
        default = f"{default:o}"
    elif isinstance(default, list):
        default = ",".join(default)
    elif isinstance(default, float):  # durations
        default = f"{default:g}s"
    allowed = t.describe(flag.parse)
    return f"{flag.help} (default {default!r}{'; ' + allowed if allowed else ''})".replace("%", "%%")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="tetragon", description="eBPF security observability agent")
    p.add_argument("--version", action="version", version=f"tetragon {__version__}")
    p.add_argument("--config-dir", default="", help="directory of one-file-per-flag configuration")
    for name, flag in FLAGS.items():
        kind = _argparse_type(name)
        if flag.boolean:
            # `--enable-process-cred` alone means true, as with Go's boolean flags
            p.add_argument(
                f"--{name}", dest=flag.dest, type=kind, nargs="?", const=True, default=flag.default,
                help=_help(flag),
            )  # fmt: skip
        else:
            p.add_argument(f"--{name}", dest=flag.dest, type=kind, default=flag.default, help=_help(flag))
    # Tetragon 1.4 form of --enable-ancestors base
    p.add_argument(
        "--enable-process-ancestors",
        dest="legacy_ancestors",
        type=_boolean,
        nargs="?",
        const=True,
        default=False,
        help="deprecated: same as --enable-ancestors base",
    )
    sub = p.add_subparsers(dest="command")
    sub.add_parser("probe", help="print which BPF features this kernel supports")
    return p
