"""Agent configuration: flags, config directory precedence, Tetragon 1.4 flag forms."""

from __future__ import annotations

from pathlib import Path

import pytest

from tetragon.agent import AgentError
from tetragon.cli.agent import parse_config
from tetragon.timefmt import parse_duration


def test_defaults_match_tetragon() -> None:
    cfg, _ = parse_config([])
    assert cfg.server_address == "localhost:54321"
    assert cfg.export_filename == ""
    assert (cfg.export_file_max_size_mb, cfg.export_file_max_backups, cfg.export_file_perm) == (10, 5, 0o600)
    assert cfg.process_cache_size == 65536 and cfg.process_cache_gc_interval == 30.0
    assert cfg.enable_ancestors == [] and not cfg.enable_process_cred and not cfg.enable_process_ns


def test_flags_and_boolean_forms() -> None:
    cfg, _ = parse_config(
        [
            "--enable-process-cred",
            "--enable-process-ns=false",
            "--enable-ancestors",
            "base,kprobe",
            "--rb-size",
            "65536",
        ]
    )
    assert cfg.enable_process_cred is True and cfg.enable_process_ns is False
    assert cfg.enable_ancestors == ["base", "kprobe"]
    assert cfg.rb_size == 65536


def test_legacy_ancestors_flag() -> None:
    cfg, _ = parse_config(["--enable-process-ancestors"])
    assert cfg.enable_ancestors == ["base"]


def test_config_dir_is_overridden_by_the_command_line(tmp_path: Path) -> None:
    (tmp_path / "export-filename").write_text("/var/log/from-dir.log\n")
    (tmp_path / "process-cache-size").write_text("100")
    (tmp_path / "enable-process-cred").write_text("true")
    cfg, _ = parse_config(["--config-dir", str(tmp_path), "--process-cache-size", "200"])
    assert cfg.export_filename == "/var/log/from-dir.log"
    assert cfg.process_cache_size == 200
    assert cfg.enable_process_cred is True


def test_config_dir_unknown_option(tmp_path: Path) -> None:
    (tmp_path / "no-such-option").write_text("1")
    with pytest.raises(AgentError, match="no-such-option"):
        parse_config(["--config-dir", str(tmp_path)])


def test_go_durations() -> None:
    assert parse_duration("30s") == 30.0
    assert parse_duration("1m30s") == 90.0
    assert parse_duration("500ms") == 0.5
    assert parse_duration("2h") == 7200.0
    with pytest.raises(ValueError):
        parse_duration("10 parsecs")
