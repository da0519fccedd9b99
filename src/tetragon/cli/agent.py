"""`tetragon`: the agent. Flags are named as Tetragon's where the feature exists.

Configuration sources, lowest to highest precedence: /etc/tetragon/tetragon.yaml, the drop-in
directory /etc/tetragon/tetragon.conf.d/ (one file per flag, file name = flag name, content =
value), --config-dir, then the command line.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path
from typing import Any

import yaml

from tetragon import __version__
from tetragon.agent import Agent, AgentConfig, AgentError
from tetragon.cli.argtypes import duration, go_bool

CONFIG_FILE = Path("/etc/tetragon/tetragon.yaml")
CONFIG_DROPIN = Path("/etc/tetragon/tetragon.conf.d")


def _perm(text: str) -> int:
    try:
        return int(text, 8)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an octal file mode: {text!r}") from None


def _list(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


# flag name -> (dest, type, default, help)
FLAGS: dict[str, tuple[str, Any, Any, str]] = {
    "export-filename": ("export_filename", str, "", "JSON events file (empty: no file export)"),
    "export-file-max-size-mb": ("export_file_max_size_mb", int, 10, "rotate the export file at this size"),
    "export-file-max-backups": ("export_file_max_backups", int, 5, "rotated files to keep"),
    "export-file-compress": ("export_file_compress", go_bool, False, "gzip rotated files"),
    "export-file-rotation-interval": (
        "export_file_rotation_interval",
        duration,
        0.0,
        "also rotate this often",
    ),
    "export-file-perm": ("export_file_perm", _perm, 0o600, "export file mode (octal)"),
    "export-allowlist": ("export_allowlist", str, "", "JSON filters: export only matching events"),
    "export-denylist": ("export_denylist", str, "", "JSON filters: never export matching events"),
    "field-filters": ("field_filters", str, "", "JSON field filters for exported events"),
    "redaction-filters": ("redaction_filters", str, "", "JSON redaction filters"),
    "export-rate-limit": ("export_rate_limit", int, -1, "events per minute (-1: no limit)"),
    "server-address": ("server_address", str, "localhost:54321", "gRPC address (host:port or unix://path)"),
    "tracing-policy": ("tracing_policy", str, "", "TracingPolicy YAML file loaded at start"),
    "tracing-policy-dir": (
        "tracing_policy_dir",
        str,
        "/etc/tetragon/tetragon.tp.d",
        "load every policy (*.yaml, *.yml) in this directory at start",
    ),
    "metrics-server": ("metrics_server", str, "", "Prometheus address, e.g. :2112 (empty: off)"),
    "metrics-label-filter": ("metrics_label_filter", str, "namespace,workload,pod,binary", "metric labels"),
    "enable-process-cred": ("enable_process_cred", go_bool, False, "export capabilities and credentials"),
    "enable-process-ns": ("enable_process_ns", go_bool, False, "export namespaces"),
    "enable-ancestors": ("enable_ancestors", _list, [], "event types with ancestors: base,..."),
    "process-cache-size": ("process_cache_size", int, 65536, "process cache capacity"),
    "process-cache-gc-interval": ("process_cache_gc_interval", duration, 30.0, "process cache GC period"),
    "rb-size": ("rb_size", int, 0, "ring buffer bytes (0: 8 MiB), rounded up to a power of two"),
    "procfs": ("procfs", str, "/proc", "procfs mount to scan at start"),
    "btf": ("btf", str, "", "kernel BTF file (default /sys/kernel/btf/vmlinux)"),
    "run-dir": ("run_dir", str, "/var/run/tetragon", "where tetragon-info.json and tetragon.pid go"),
    "log-level": ("log_level", str, "info", "debug, info, warn or error"),
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tetragon", description="eBPF security observability agent")
    p.add_argument("--version", action="version", version=f"tetragon {__version__}")
    p.add_argument("--config-dir", default="", help="directory of one-file-per-flag configuration")
    for name, (dest, typ, default, help_text) in FLAGS.items():
        if typ is go_bool:
            # `--enable-process-cred` alone means true, as with Go's boolean flags
            p.add_argument(
                f"--{name}", dest=dest, type=typ, nargs="?", const=True, default=default, help=help_text
            )
        else:
            p.add_argument(f"--{name}", dest=dest, type=typ, default=default, help=help_text)
    # Tetragon 1.4 form of --enable-ancestors base
    p.add_argument(
        "--enable-process-ancestors",
        dest="legacy_ancestors",
        type=go_bool,
        nargs="?",
        const=True,
        default=False,
        help="deprecated: same as --enable-ancestors base",
    )
    sub = p.add_subparsers(dest="command")
    sub.add_parser("probe", help="print which BPF features this kernel supports")
    return p


def _config_argv(dirs: list[Path], yaml_file: Path) -> list[str]:
    """Flags from the YAML file and drop-in directories, as command-line words (lowest first)."""
    words: list[str] = []
    if yaml_file.is_file():
        data = yaml.safe_load(yaml_file.read_text()) or {}
        if not isinstance(data, dict):
            raise AgentError(f"{yaml_file}: expected a mapping of flag names to values")
        for key, value in data.items():
            words += _flag_words(str(key), value, str(yaml_file))
    for d in dirs:
        if not d.is_dir():
            continue
        for f in sorted(d.iterdir()):
            if f.is_file():
                words += _flag_words(f.name, f.read_text().strip(), str(f))
    return words


def _flag_words(key: str, value: Any, origin: str) -> list[str]:
    if key not in FLAGS:
        raise AgentError(f"{origin}: unknown option {key!r}")
    if isinstance(value, bool):
        value = "true" if value else "false"
    elif isinstance(value, list):
        value = ",".join(str(v) for v in value)
    return [f"--{key}", str(value)]


def parse_config(argv: list[str]) -> tuple[AgentConfig, argparse.Namespace]:
    parser = build_parser()
    cli = parser.parse_args(argv)
    dirs = [CONFIG_DROPIN] + ([Path(cli.config_dir)] if cli.config_dir else [])
    if cli.config_dir and not Path(cli.config_dir).is_dir():
        raise AgentError(f"--config-dir {cli.config_dir}: not a directory")
    # files first, command line last: argparse keeps the last value of a repeated flag
    ns = parser.parse_args(_config_argv(dirs, CONFIG_FILE) + argv)
    values = {dest: getattr(ns, dest) for dest, *_ in FLAGS.values() if dest != "log_level"}
    config = AgentConfig(**values)
    if ns.legacy_ancestors and "base" not in config.enable_ancestors:
        config.enable_ancestors = ["base", *config.enable_ancestors]
    return config, ns


def _probe() -> int:
    from tetragon.bpf.features import probe_features

    for name, ok in probe_features().items():
        print(f"{name}: {'true' if ok else 'false'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        config, ns = parse_config(args)
    except AgentError as exc:
        print(f"tetragon: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=getattr(logging, ns.log_level.upper().replace("WARN", "WARNING"), logging.INFO),
        format="time=%(asctime)s level=%(levelname)s msg=%(message)s",
    )
    if ns.command == "probe":
        return _probe()
    agent: Agent | None = None
    try:
        agent = Agent(config)
        stop = agent.stop

        def _on_signal(signum: int, frame: object) -> None:
            stop()

        signal.signal(signal.SIGINT, _on_signal)
        signal.signal(signal.SIGTERM, _on_signal)
        agent.start()
        agent.run()
        return 0
    except AgentError as exc:
        print(f"tetragon: {exc}", file=sys.stderr)
        return 1
    finally:
        if agent is not None:
            agent.close()
        logging.shutdown()


if __name__ == "__main__":
    sys.exit(main())
