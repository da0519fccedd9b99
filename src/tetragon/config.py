"""The agent's configuration (every `tetragon` flag, Tetragon's defaults) and start-up errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tetragon.api.access import ServerOptions

RUN_DIR = Path("/var/run/tetragon")
# event kinds --enable-ancestors takes ("base": process_exec / process_exit)
ANCESTOR_KINDS = frozenset(("base", "kprobe", "tracepoint", "uprobe", "lsm", "usdt", "loader"))


class AgentError(Exception):
    """A start-up problem the user can fix; printed as one line, exit code 1."""


@dataclass
class AgentConfig:
    export_filename: str = ""
    export_file_max_size_mb: int = 10
    export_file_max_backups: int = 5
    export_file_compress: bool = False
    export_file_rotation_interval: float = 0.0
    export_file_perm: int = 0o600
    export_allowlist: str = ""
    export_denylist: str = ""
    field_filters: str = ""
    redaction_filters: str = ""
    export_rate_limit: int = -1
    server_address: str = "localhost:54321"
    metrics_server: str = ""
    metrics_label_filter: str = "namespace,workload,pod,binary"
    enable_process_cred: bool = False
    enable_process_ns: bool = False
    enable_ancestors: list[str] = field(default_factory=list)
    process_cache_size: int = 65536
    process_cache_gc_interval: float = 30.0
    rb_size: int = 0
    procfs: str = "/proc"
    btf: str = ""
    drain_interval: float = 0.05
    run_dir: str = str(RUN_DIR)
    tracing_policy: str = ""  # one policy file loaded at start (domain "static")
    tracing_policy_dir: str = "/etc/tetragon/tetragon.tp.d"  # every *.yaml / *.yml in it, sorted
    tracing_policy_max_hooks: int = 128  # per policy
    tracing_policies_max_hooks: int = 256  # all loaded policies together
    server_options: ServerOptions | None = None  # the --server-* flags but the address (None: defaults)
    health_server_address: str = ""  # grpc.health.v1 (`liveness`); the CLI's default is :6789
    health_server_interval: int = 10
    enable_bpf_stats: bool = False
    # Kubernetes (k8s/enrich.py): pods from the API server's watch of this node, or from the CRI runtime
    enable_k8s_api: bool = False
    k8s_kubeconfig_path: str = ""
    enable_cri: bool = False
    cri_endpoint: str = ""
    deleted_pod_cache_size: int = 128
    event_cache_retries: int = 15
    event_cache_retry_delay: int = 2  # seconds
    enable_policy_filter: bool = False
    enable_policy_filter_cgroup_map: bool = False
    enable_policy_filter_debug: bool = False
    keep_sensors_on_exit: bool = False
    enable_msg_handling_latency: bool = False


def check_ancestors(kinds: list[str]) -> None:
    """--enable-ancestors: known kinds only, and "base" with any other."""
    unknown = set(kinds) - ANCESTOR_KINDS
    if unknown:
        raise AgentError(f"--enable-ancestors: unknown event type(s) {', '.join(sorted(unknown))}")
    if kinds and "base" not in kinds:
        raise AgentError("--enable-ancestors: 'base' is required when other types are given")
