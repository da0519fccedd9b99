"""Every agent flag is range-checked at parse time: a bad value is one line naming the flag, the value
and what is allowed, exit 2; values from config files go through the same check."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tetragon.agent import AgentError
from tetragon.cli.agent import main, parse_config
from tetragon.cli.agent_flags import FLAGS, check_value
from tetragon.export.jsonfile import ExportError, JsonFileExporter

# flag -> values that must be refused (at least one per flag that takes a checked value)
BAD_VALUES: dict[str, list[str]] = {
    "export-file-max-size-mb": ["-1", "0", "ten", "99999999999"],
    "export-file-max-backups": ["-1", "x"],
    "export-file-compress": ["maybe"],
    "export-file-rotation-interval": ["1ns", "-1s", "1s", "forever"],
    "export-file-perm": ["7777", "-1", "77777777", "rw", "8"],
    "export-rate-limit": ["-5", "-2", "1.5"],
    "server-address": ["localhost:99999", "localhost:0", "localhost", "unix://relative.sock", "[::1:80"],
    "server-allow-uids": ["root", "-1", "4294967295"],
    "server-allow-gids": ["wheel"],
    "server-admin-uids": ["1,x"],
    "server-admin-gids": ["-5"],
    "server-tls-cert-file": ["/nonexistent.pem"],
    "server-tls-key-file": ["/nonexistent.key"],
    "server-tls-client-ca-files": ["/nonexistent.pem", "/etc/hostname,/nonexistent.pem"],
    "server-max-event-streams": ["0", "-1", "100000"],
    "server-max-event-streams-per-peer": ["0"],
    "server-max-connections-per-peer": ["0", "-1"],
    "server-max-connections": ["0", "many"],
    "tracing-policy-dir": ["/etc/hostname"],
    "metrics-server": ["localhost", "localhost:0", ":99999"],
    "health-server-address": ["localhost", ":0", ":99999"],
    "health-server-interval": ["0", "-1", "10s"],
    "enable-bpf-stats": ["sometimes"],
    "enable-process-cred": ["2"],
    "enable-process-ns": ["nope"],
    "process-cache-size": ["0", "-1", "1"],
    "tracing-policy-max-hooks": ["0", "-1", "10001", "many"],
    "tracing-policies-max-hooks": ["0", "-5", "100001"],
    "process-cache-gc-interval": ["0", "-1s", "10ms"],
    "rb-size": ["-1", "1099511627776", "100"],
    "procfs": ["/nonexistent", "/dev/null", "/etc"],
    "btf": ["/etc/hostname"],
    "run-dir": ["/etc/hostname"],
    "log-level": ["bogus", ""],
    "enable-k8s-api": ["yes please"],
    "k8s-kubeconfig-path": ["/nonexistent/kubeconfig"],
    "enable-cri": ["2"],
    "deleted-pod-cache-size": ["-1", "x"],
    "event-cache-retries": ["0", "-1"],
    "event-cache-retry-delay": ["0", "2s"],
    "enable-policy-filter": ["maybe"],
    "enable-policy-filter-cgroup-map": ["maybe"],
    "enable-policy-filter-debug": ["maybe"],
    "keep-sensors-on-exit": ["true"],
    "enable-msg-handling-latency": ["true"],
}
FREE_TEXT = {  # flags whose value is checked later, where it is used (with its own one-line error)
    "export-filename",
    "export-allowlist",
    "export-denylist",
    "field-filters",
    "redaction-filters",
    "tracing-policy",
    "metrics-label-filter",
    "enable-ancestors",
    "cri-endpoint",
}
CASES = [(flag, value) for flag, values in BAD_VALUES.items() for value in values]


def test_every_flag_is_covered() -> None:
    assert set(FLAGS) == set(BAD_VALUES) | FREE_TEXT


@pytest.mark.parametrize(("flag", "value"), CASES, ids=[f"{f}={v}" for f, v in CASES])
def test_bad_value_is_one_line_exit_2(flag: str, value: str, capsys: pytest.CaptureFixture[str]) -> None:
    if value.startswith("/etc/") and not os.path.exists(value.split(",")[0]):
        pytest.skip(f"{value} missing on this machine")
    with pytest.raises(SystemExit) as exc:
        main([f"--{flag}", value, "probe"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert f"--{flag}" in lines[0] and repr(value) in lines[0] and "expected " in lines[0], lines[0]


@pytest.mark.parametrize(("flag", "value"), CASES[::3], ids=[f"{f}={v}" for f, v in CASES[::3]])
def test_bad_value_in_config_dir(
    flag: str, value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if value.startswith("/etc/") and not os.path.exists(value.split(",")[0]):
        pytest.skip(f"{value} missing on this machine")
    (tmp_path / flag).write_text(value)
    with pytest.raises(AgentError, match=f"{tmp_path / flag}: --{flag} {value!r}: not allowed"):
        parse_config(["--config-dir", str(tmp_path)])
    assert main(["--config-dir", str(tmp_path), "probe"]) == 2
    assert len(capsys.readouterr().err.splitlines()) == 1


@pytest.mark.parametrize(
    ("flag", "value", "expected"),
    [
        ("server-address", "[::1]:54411", "[::1]:54411"),
        ("server-address", "unix:///run/t.sock", "unix:///run/t.sock"),
        ("server-address", "", ""),
        ("metrics-server", "localhost:2112", "localhost:2112"),
        ("metrics-server", ":2112", ":2112"),
        ("export-file-perm", "640", 0o640),
        ("export-file-perm", "0", 0),
        ("export-file-rotation-interval", "0", 0.0),
        ("export-file-rotation-interval", "1h", 3600.0),
        ("export-rate-limit", "-1", -1),
        ("export-rate-limit", "0", 0),
        ("process-cache-gc-interval", "1s", 1.0),
        ("rb-size", "0", 0),
        ("rb-size", "5000", 5000),
        ("log-level", "WARN", "warn"),
    ],
)
def test_good_values(flag: str, value: str, expected: object) -> None:
    _, ns = parse_config([f"--{flag}", value])
    assert getattr(ns, FLAGS[flag].dest) == expected


def test_all_interfaces_need_tls(tmp_path: Path) -> None:
    assert check_value("server-address", ":54411") == ":54411"  # Tetragon's form parses...
    with pytest.raises(
        AgentError, match="accepts connections from other hosts: it needs --server-tls-cert-file"
    ):
        parse_config(["--server-address", ":54411"])  # ...but plaintext beyond loopback is refused
    for name in ("cert", "key", "ca"):
        (tmp_path / name).write_text("")
    tls = ["--server-tls-cert-file", str(tmp_path / "cert"), "--server-tls-key-file", str(tmp_path / "key")]
    with pytest.raises(AgentError, match="--server-tls-client-ca-files"):
        parse_config(["--server-address", ":54411", *tls])
    cfg, _ = parse_config(
        ["--server-address", ":54411", *tls, "--server-tls-client-ca-files", str(tmp_path / "ca")]
    )
    assert cfg.server_options is not None and cfg.server_options.tls_client_ca_files == (
        str(tmp_path / "ca"),
    )


def test_uid_rules_apply_to_tcp_and_unix_addresses() -> None:
    cfg, _ = parse_config(["--server-address", "unix:///run/t.sock", "--server-allow-uids", "1000"])
    assert cfg.server_options is not None and cfg.server_options.access.read_uids == {1000}
    cfg, _ = parse_config(["--server-allow-uids", "1000,1001", "--server-admin-gids", "10"])
    assert cfg.server_options is not None
    assert cfg.server_options.access.read_uids == {1000, 1001} and cfg.server_options.access.admin_gids == {
        10
    }


def test_negative_value_given_as_a_separate_word(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--process-cache-gc-interval", "-1s"])
    assert "'-1s'" in capsys.readouterr().err
    cfg, _ = parse_config(["--export-rate-limit", "-1", "--rb-size", "8192"])
    assert (cfg.export_rate_limit, cfg.rb_size) == (-1, 8192)


def test_missing_policy_dir_is_empty(tmp_path: Path) -> None:
    cfg, _ = parse_config(["--tracing-policy-dir", str(tmp_path / "none")])
    assert cfg.tracing_policy_dir == str(tmp_path / "none")


def test_help_lists_what_is_allowed(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "an octal file mode 0..777" in out and "default '600'" in out
    assert "an integer, 0 or 4096..1073741824" in out


def test_exporter_refuses_special_mode_bits(tmp_path: Path) -> None:
    for perm in (0o7777, 0o4755, -1):
        with pytest.raises(ExportError, match="outside 0..0o777"):
            JsonFileExporter(str(tmp_path / "x.log"), perm=perm)


def test_server_limits_reach_the_server_options() -> None:
    cfg, _ = parse_config(
        [
            "--server-max-event-streams", "11",
            "--server-max-event-streams-per-peer", "12",
            "--server-max-connections-per-peer", "13",
            "--server-max-connections", "14",
        ]
    )  # fmt: skip
    opts = cfg.server_options
    assert opts is not None
    assert (opts.max_event_streams, opts.max_event_streams_per_peer) == (11, 12)
    assert (opts.max_connections_per_peer, opts.max_connections) == (13, 14)
    assert opts.tls_cert_file == opts.tls_key_file == "" and opts.tls_client_ca_files == ()
