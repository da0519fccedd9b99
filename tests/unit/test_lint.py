"""The code base stays formatted and linted with ruff and type-checked with mypy (part of `make test`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUFF = Path(sys.executable).parent / "ruff"


def test_ruff_check() -> None:
    res = subprocess.run(
        [str(RUFF), "check", "src", "tests", "bench"], cwd=ROOT, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_ruff_format() -> None:
    res = subprocess.run(
        [str(RUFF), "format", "--check", "src", "tests", "bench"], cwd=ROOT, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_mypy() -> None:
    mypy = Path(sys.executable).parent / "mypy"
    res = subprocess.run([str(mypy)], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
