"""Boots a stock Debian kernel under qemu (tests/vm/run_vm.py) and runs the in-guest tests there:
the hooks this host's kernel lacks (kprobes, fentry, BPF LSM, fmod_ret) and the base sensor and agent
on an older kernel than the one the BPF objects were built on.

One boot, about half a minute of emulated time. In CI the test fails when the VM cannot run; elsewhere
it skips when qemu or the kernel cannot be installed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import IN_CI, ROOT

RUNNER = ROOT / "tests/vm/run_vm.py"
GUEST_TESTS = ("tests/vm/test_in_guest.py", "tests/unit/test_features_host.py")
EXIT_UNAVAILABLE = 125
GUEST_TIMEOUT = 240


def _count_tests(path: Path) -> int:
    return len(re.findall(r"^def test_", path.read_text(), re.MULTILINE))


def test_guest_kernel_runs_the_vm_tests() -> None:
    if os.geteuid() != 0:
        if IN_CI:
            pytest.fail("CI=true and the VM tests need root (apt-get, BPF in the guest)")
        pytest.skip("the VM tests need root")
    command = [".venv/bin/python", "-m", "pytest", "-x", "-q", "-rs", "-p", "no:cacheprovider", *GUEST_TESTS]
    proc = subprocess.run(
        [sys.executable, str(RUNNER), "--timeout", str(GUEST_TIMEOUT), "--", *command],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=2 * GUEST_TIMEOUT + 120,  # one retry after a panic, plus preparing the kernel
    )
    output = proc.stdout + proc.stderr
    if proc.returncode == EXIT_UNAVAILABLE and not IN_CI:
        pytest.skip(f"the VM cannot run here: {proc.stderr.strip()[-500:]}")
    assert proc.returncode == 0, output[-8000:]
    # the guest really ran them: not deselected, not skipped away
    summary = re.search(r"(\d+) passed", output)
    assert summary, output[-4000:]
    assert int(summary.group(1)) >= _count_tests(ROOT / GUEST_TESTS[0]), output[-4000:]
    assert "TETRAGON_VM_EXIT=0" in output
