"""Shared fixtures: a real agent process, real workloads."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
VENV_BIN = Path(sys.executable).parent
IN_CI = os.environ.get("CI", "").lower() == "true"


def require_bpf() -> None:
    """In CI a test that needs BPF fails when it cannot run; elsewhere it skips."""
    reason = ""
    if os.geteuid() != 0:
        reason = "needs root to load BPF programs"
    elif not Path("/sys/kernel/btf/vmlinux").exists():
        reason = "kernel has no BTF"
    elif not (ROOT / "src/tetragon/_bpfobj/process.bpf.o").exists():
        reason = "BPF objects are not built (make -C bpf)"
    if reason:
        if IN_CI:
            pytest.fail(f"CI=true and {reason}")
        pytest.skip(reason)
