"""Boots each stock Debian kernel of the matrix under qemu (tests/vm/run_vm.py, KERNEL_MATRIX in
tests/vm/guest_kernel.py) and runs the in-guest tests there: the hooks this host's kernel lacks
(kprobes, kprobe.multi where fprobe exists, fentry, BPF LSM, fmod_ret) and the base sensor and agent on
older kernels than the one the BPF objects were built on.

One test, and one boot, per kernel; the test id is the kernel's release and the test checks that the
guest's own `uname -r` says the same. About a minute of emulated time per kernel (docs/kernel-vm.md).
In CI the test fails when the VM cannot run; elsewhere it skips when qemu or the kernel cannot be
installed.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import IN_CI, ROOT
from tests.vm import run_vm
from tests.vm.guest_kernel import KERNEL_MATRIX, KernelPin, missing_package_message

RUNNER = ROOT / "tests/vm/run_vm.py"
# every in-guest test file, plus the host's feature-probe test, which must also hold in each guest
GUEST_TESTS = ("tests/vm", "tests/unit/test_features_host.py")
EXIT_UNAVAILABLE = 125
GUEST_TIMEOUT = 600  # an agent start per in-guest test file under TCG (docs/kernel-vm.md, Runtime)


def _count_guest_tests() -> int:
    return sum(
        len(re.findall(r"^def test_", path.read_text(), re.MULTILINE))
        for path in (ROOT / "tests/vm").glob("test_*.py")
    )


def _require_root() -> None:
    if os.geteuid() != 0:
        if IN_CI:
            pytest.fail("CI=true and the VM tests need root (apt-get, BPF in the guest)")
        pytest.skip("the VM tests need root")


@pytest.mark.parametrize("pin", KERNEL_MATRIX, ids=[pin.release for pin in KERNEL_MATRIX])
def test_guest_kernel_runs_the_vm_tests(
    pin: KernelPin, record_property: Callable[[str, object], None]
) -> None:
    _require_root()
    command = [".venv/bin/python", "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *GUEST_TESTS]
    runner = [sys.executable, str(RUNNER), "--kernel", pin.name, "--timeout", str(GUEST_TIMEOUT)]
    proc = subprocess.run(
        [*runner, "--", *command],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=2 * GUEST_TIMEOUT + 180,  # one retry after a boot panic, plus preparing the kernel
    )
    output = proc.stdout + proc.stderr
    if proc.returncode == EXIT_UNAVAILABLE and not IN_CI:
        pytest.skip(f"the VM cannot run kernel {pin.package} here: {proc.stderr.strip()[-500:]}")
    booted = re.findall(r"^TETRAGON_VM_READY .*\bkernel=(\S+)", output, re.MULTILINE)
    uname = booted[-1] if booted else "(guest never got ready)"
    record_property("guest_kernel", uname)
    head = f"guest kernel {uname} ({pin.package}), runner exit {proc.returncode}:\n"
    assert proc.returncode == 0, head + output[-8000:]
    assert uname == pin.release, head + output[-4000:]
    # the guest really ran them: not deselected, not skipped away
    summary = re.search(r"^(\d+) passed", output, re.MULTILINE)
    assert summary, head + output[-4000:]
    assert int(summary.group(1)) >= _count_guest_tests(), head + output[-4000:]
    assert not re.search(r"^\d+ passed.*\bskipped\b", output, re.MULTILINE), head + output[-4000:]
    assert "TETRAGON_VM_EXIT=0" in output


def test_a_vanished_kernel_pin_names_the_package_and_how_to_bump_it() -> None:
    """Debian drops old ABI numbers: the error must name the pin and a current package to bump to."""
    if not Path("/usr/bin/apt-cache").exists():
        pytest.skip("no apt-cache here")
    vanished = "linux-image-6.1.0-1-amd64-unsigned"
    message = missing_package_message(vanished)
    assert vanished in message
    assert "dropped" in message
    assert "KERNEL_MATRIX (tests/vm/guest_kernel.py)" in message
    assert re.search(r"e\.g\. linux-image-6\.1\.0-\d+-amd64-unsigned\.$", message), message


@pytest.mark.parametrize(
    ("boots", "expected_rc", "expected_boots"),
    [
        # the rare TCG oops while the second CPU comes up: booted once more
        ([run_vm._Boot(panicked=True, console_lines=40), run_vm._Boot(rc=0, ready_at=6.0)], 0, 2),
        # twice in a row: reported, not retried forever
        ([run_vm._Boot(panicked=True, console_lines=40)] * 2, run_vm.EXIT_CRASHED, 2),
        # after the guest was ready the code under test may be the cause: never retried
        ([run_vm._Boot(panicked=True, ready_at=6.0, console_lines=90)], run_vm.EXIT_CRASHED, 1),
    ],
)
def test_only_a_panic_during_boot_is_retried(
    monkeypatch: pytest.MonkeyPatch, boots: list[run_vm._Boot], expected_rc: int, expected_boots: int
) -> None:
    pending = list(boots)
    monkeypatch.setattr(run_vm, "ensure_host_tools", lambda: None)
    nowhere = Path("/nonexistent")
    pin = KERNEL_MATRIX[-1]
    guest = run_vm.GuestKernel(pin.package, pin.release, nowhere, nowhere, nowhere)
    monkeypatch.setattr(run_vm, "prepare_kernel", lambda package: guest)
    monkeypatch.setattr(run_vm, "_boot_once", lambda *args: pending.pop(0))
    assert run_vm.run_in_vm(["true"], kernel=pin.name, out=io.StringIO()) == expected_rc
    assert len(boots) - len(pending) == expected_boots
