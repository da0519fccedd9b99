"""`tetragon`: the agent. Flags are named as Tetragon's where the feature exists; their table (range
checks, defaults, help) is tetragon.cli.agent_flags.

Configuration sources, lowest to highest precedence: /etc/tetragon/tetragon.yaml, the drop-in
directory /etc/tetragon/tetragon.conf.d/ (one file per flag, file name = flag name, content =
value), --config-dir, then the command line.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import resource
import signal
import sys
from pathlib import Path
from typing import Any

import yaml

from tetragon.agent import Agent, AgentConfig, AgentError
from tetragon.api.access import listen_error
from tetragon.cli.agent_flags import (
    FLAGS,
    NOT_CONFIG,
    build_parser,
    check_value,
    join_dash_values,
    server_options,
)

CONFIG_FILE = Path("/etc/tetragon/tetragon.yaml")
CONFIG_DROPIN = Path("/etc/tetragon/tetragon.conf.d")
_LOG_LEVELS = {  # --log-level (logrus names) -> logging level
    "trace": logging.DEBUG,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "fatal": logging.CRITICAL,
    "panic": logging.CRITICAL,
}


def _config_argv(dirs: list[Path], yaml_file: Path) -> list[str]:
    """Flags from the YAML file and drop-in directories, as command-line words (lowest first)."""
    words: list[str] = []
    if yaml_file.is_file():
        try:
            data = yaml.safe_load(yaml_file.read_text()) or {}
        except (OSError, UnicodeError, yaml.YAMLError) as exc:
            raise AgentError(f"{yaml_file}: {str(exc).splitlines()[0]}") from None
        if not isinstance(data, dict):
            raise AgentError(f"{yaml_file}: expected a mapping of flag names to values")
        for key, value in data.items():
            words += _flag_words(str(key), value, str(yaml_file))
    for d in dirs:
        if not d.is_dir():
            continue
        for f in sorted(d.iterdir()):
            if f.is_file():
                try:
                    value = f.read_text().strip()
                except (OSError, UnicodeError) as exc:
                    raise AgentError(f"{f}: {exc}") from None
                words += _flag_words(f.name, value, str(f))
    return words


def _flag_words(key: str, value: Any, origin: str) -> list[str]:
    """`--key value`, checked here so that a bad value is reported with the file it came from."""
    if key not in FLAGS:
        raise AgentError(f"{origin}: unknown option {key!r}")
    if isinstance(value, bool):
        value = "true" if value else "false"
    elif isinstance(value, list):
        value = ",".join(str(v) for v in value)
    try:
        check_value(key, str(value))
    except ValueError as exc:
        raise AgentError(f"{origin}: {exc}") from None
    return [f"--{key}", str(value)]


def parse_config(argv: list[str]) -> tuple[AgentConfig, argparse.Namespace]:
    parser = build_parser()
    argv = join_dash_values(argv)
    cli = parser.parse_args(argv)
    dirs = [CONFIG_DROPIN] + ([Path(cli.config_dir)] if cli.config_dir else [])
    if cli.config_dir and not Path(cli.config_dir).is_dir():
        raise AgentError(f"--config-dir {cli.config_dir}: not a directory")
    # files first, command line last: argparse keeps the last value of a repeated flag
    ns = parser.parse_args(_config_argv(dirs, CONFIG_FILE) + argv)
    values = {f.dest: getattr(ns, f.dest) for f in FLAGS.values() if f.dest not in NOT_CONFIG}
    options = server_options(ns)
    error = listen_error(ns.server_address, options)
    if error is not None:  # refused before anything is loaded
        raise AgentError(error)
    config = AgentConfig(**values, server_options=options)
    if ns.legacy_ancestors and "base" not in config.enable_ancestors:
        config.enable_ancestors = ["base", *config.enable_ancestors]
    return config, ns


def _probe() -> int:
    from tetragon.bpf.features import probe_features

    for name, ok in probe_features().items():
        print(f"{name}: {'true' if ok else 'false'}")
    return 0


def _raise_fd_limit() -> None:
    """Soft RLIMIT_NOFILE up to the hard limit, as Go (so Tetragon) does at start: every hook holds
    ~20 fds and every gRPC client one, and 1024 runs out long before memory does."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        config, ns = parse_config(args)
    except AgentError as exc:
        print(f"tetragon: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=_LOG_LEVELS[ns.log_level],
        format="time=%(asctime)s level=%(levelname)s msg=%(message)s",
    )
    if ns.command == "probe":
        return _probe()
    _raise_fd_limit()
    if (
        config.tracing_policy_dir != FLAGS["tracing-policy-dir"].default
        and not Path(config.tracing_policy_dir).exists()
    ):
        logging.getLogger("tetragon").warning(
            "--tracing-policy-dir %s does not exist: no policies are loaded from it",
            config.tracing_policy_dir,
        )
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
