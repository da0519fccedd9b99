"""Run one command inside a qemu guest that boots a stock Debian kernel with the host's / as its root.

    python tests/vm/run_vm.py [--timeout S] [--smp N] [--kernel NAME|PKG] [-- command ...]

Without a command it runs the in-guest test suite (`pytest -m vm tests/vm`) with the project's venv.
The guest is emulated (qemu TCG: this host's KVM cannot run stock kernels), sees the host's whole /
read-only through 9p with a tmpfs overlay for writes, and runs the command in the same directory
with the same Python. The command's output is streamed; the exit status is the command's, or:

    124  the guest did not finish within --timeout
    125  the VM is unavailable here (qemu not installable, kernel not downloadable, qemu does not start)
    126  the guest failed before reporting a status (kernel panic twice, setup error inside the guest)

--kernel names an entry of the kernel matrix (KERNEL_MATRIX in guest_kernel.py: 6.1, 6.12) or any
Debian linux-image-*-amd64-unsigned package. A kernel panic during boot (before the guest reports
ready) is retried once: TCG rarely trips over the kernel patching its own text while bringing up the
second CPU. A panic while the command runs is not retried: it may be the code under test.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

try:
    from tests.vm.guest_kernel import (
        KERNEL_MATRIX,
        GuestKernel,
        VmUnavailable,
        ensure_host_tools,
        kernel_pin,
        prepare_kernel,
    )
except ModuleNotFoundError:  # run as a script: tests/vm is sys.path[0]
    from guest_kernel import (  # type: ignore[no-redef]
        KERNEL_MATRIX,
        GuestKernel,
        VmUnavailable,
        ensure_host_tools,
        kernel_pin,
        prepare_kernel,
    )

ROOT = Path(__file__).resolve().parents[2]
STAGE2 = Path(__file__).resolve().parent / "guest_stage2.sh"
DEFAULT_COMMAND = (
    ".venv/bin/python",
    "-m",
    "pytest",
    "-m",
    "vm",
    "tests/vm",
    "-x",
    "-q",
    "-p",
    "no:cacheprovider",
)
# bpf must be in lsm= for BPF LSM; AppArmor/SELinux stay out: the host's policies are not loaded here
LSMS = "lockdown,capability,landlock,yama,bpf"
PASSED_ENV = ("CI", "LANG", "PYTEST_ADDOPTS")

EXIT_TIMEOUT = 124
EXIT_UNAVAILABLE = 125
EXIT_CRASHED = 126


@dataclass
class _Boot:
    """What one boot showed: the console is read by a thread while the main thread waits on qemu."""

    rc: int | None = None
    qemu_rc: int | None = None
    timed_out: bool = False
    panicked: bool = False
    setup_failed: bool = False
    console_lines: int = 0
    ready_at: float | None = None
    qemu_errors: list[str] = field(default_factory=list)


def run_in_vm(
    command: Sequence[str] = DEFAULT_COMMAND,
    *,
    cwd: Path = ROOT,
    timeout: float = 300.0,
    smp: int = 2,
    memory: str = "2G",
    kernel: str = KERNEL_MATRIX[0].name,
    out: TextIO = sys.stdout,
) -> int:
    """Boot, run `command` in `cwd` in the guest, return its exit status (or one of the EXIT_* codes).

    Raises VmUnavailable when the VM cannot be set up or qemu cannot start.
    """
    t0 = time.monotonic()
    pin = kernel_pin(kernel)
    ensure_host_tools()
    guest = prepare_kernel(pin.package)
    _say(out, f"kernel {guest.release} ({pin.package}), prepared in {time.monotonic() - t0:.1f}s")
    for attempt in (1, 2):
        boot = _boot_once(guest, command, cwd, timeout, smp, memory, out)
        if boot.rc is not None:
            return boot.rc
        if boot.timed_out:
            _say(out, f"guest did not finish within {timeout:.0f}s; killed")
            return EXIT_TIMEOUT
        if boot.console_lines == 0 and boot.qemu_rc:
            detail = "\n".join(boot.qemu_errors[-10:]) or "(no message)"
            raise VmUnavailable(f"qemu-system-x86_64 failed to start (exit {boot.qemu_rc}):\n{detail}")
        if boot.setup_failed:
            _say(out, "the guest could not set itself up (see its messages above)")
            break
        if boot.panicked and boot.ready_at is None and attempt == 1:
            _say(out, "guest kernel panicked during boot (the rare TCG oops); booting once more")
            continue
        if boot.panicked:
            _say(
                out,
                "guest kernel panicked" + (" again" if boot.ready_at is None else " while the command ran"),
            )
        break
    _say(out, "guest stopped without reporting an exit status")
    return EXIT_CRASHED


def _say(out: TextIO, message: str) -> None:
    print(f"[vm] {message}", file=out, flush=True)


def _guest_script(command: Sequence[str], cwd: Path, kernel: GuestKernel, out: TextIO) -> str:
    env = {name: os.environ[name] for name in PASSED_ENV if name in os.environ}
    env.update({k: v for k, v in os.environ.items() if k.startswith("TETRAGON_")})
    env.update(
        PATH=os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        HOME=os.environ.get("HOME", "/root"),
        PYTHONUNBUFFERED="1",
        # the guest console is a tty; colour only when our own output is one
        TERM=os.environ.get("TERM", "dumb") if out.isatty() else "dumb",
        TETRAGON_IN_VM="1",
        TETRAGON_VM_KERNEL_CONFIG=str(kernel.config),
        TETRAGON_VM_KERNEL_RELEASE=kernel.release,
    )
    lines = ["#!/bin/sh", f"cd {shlex.quote(str(cwd))} || exit {EXIT_CRASHED}"]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in sorted(env.items())]
    lines.append("exec " + shlex.join(command))
    return "\n".join(lines) + "\n"


def _qemu_argv(kernel: GuestKernel, run: Path, smp: int, memory: str) -> list[str]:
    append = " ".join(
        [
            "console=ttyS0",
            "quiet",
            "loglevel=3",
            "panic=-1",  # with -no-reboot: a panic ends qemu at once
            "oops=panic",  # an oops must not leave a half-dead guest until the timeout
            f"lsm={LSMS}",
            f"tetragon_vm.stage2={STAGE2}",
            f"tetragon_vm.run={run}",
        ]
    )
    return [
        "qemu-system-x86_64",
        "-accel", "tcg",
        "-cpu", "max",
        "-m", memory,
        "-smp", str(smp),
        "-nodefaults",
        "-display", "none",
        "-no-reboot",
        "-chardev", "stdio,id=con,signal=off",
        "-serial", "chardev:con",
        "-kernel", str(kernel.vmlinuz),
        "-initrd", str(kernel.initramfs),
        "-append", append,
        # qemu itself enforces read-only on the host's /
        "-fsdev", "local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap",
        "-device", "virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot",
        "-fsdev", f"local,id=out,path={run / 'out'},security_model=none",
        "-device", "virtio-9p-pci,fsdev=out,mount_tag=out",
    ]  # fmt: skip


def _boot_once(
    kernel: GuestKernel,
    command: Sequence[str],
    cwd: Path,
    timeout: float,
    smp: int,
    memory: str,
    out: TextIO,
) -> _Boot:
    boot = _Boot()
    # the guest reads cmd.sh through its view of the host's /, and writes the status to out/
    run = Path(tempfile.mkdtemp(prefix="tetragon-vm-", dir="/tmp"))
    try:
        (run / "out").mkdir()
        (run / "cmd.sh").write_text(_guest_script(command, cwd, kernel, out))
        argv = _qemu_argv(kernel, run, smp, memory)
        if shutil.which(argv[0]) is None:
            raise VmUnavailable(f"{argv[0]} is not installed")
        _say(out, f"booting: smp={smp} memory={memory} timeout={timeout:.0f}s")
        start = time.monotonic()
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert proc.stdout is not None and proc.stderr is not None
        readers = [
            threading.Thread(target=_read_console, args=(proc.stdout, boot, start, out), daemon=True),
            threading.Thread(target=_read_qemu_errors, args=(proc.stderr, boot, out), daemon=True),
        ]
        for reader in readers:
            reader.start()
        try:
            boot.qemu_rc = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            boot.timed_out = True
            proc.kill()
            proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        for reader in readers:
            reader.join(5)
        total = time.monotonic() - start
        rc_file = run / "out" / "rc"
        if not boot.timed_out and rc_file.exists():
            boot.rc = int(rc_file.read_text().strip())
        ready = f"guest ready after {boot.ready_at:.1f}s, " if boot.ready_at is not None else ""
        _say(out, f"{ready}qemu ran {total:.1f}s, guest status {boot.rc}")
        return boot
    finally:
        shutil.rmtree(run, ignore_errors=True)


def _read_console(stream: object, boot: _Boot, start: float, out: TextIO) -> None:
    for raw in stream:  # type: ignore[attr-defined]
        line = raw.decode(errors="replace").replace("\r", "").rstrip("\n")
        boot.console_lines += 1
        if "Kernel panic - not syncing" in line:
            boot.panicked = True
        elif line.startswith("TETRAGON_VM_SETUP_FAILED"):
            boot.setup_failed = True
        elif line.startswith("TETRAGON_VM_READY"):
            boot.ready_at = time.monotonic() - start
        print(line, file=out, flush=True)


def _read_qemu_errors(stream: object, boot: _Boot, out: TextIO) -> None:
    for raw in stream:  # type: ignore[attr-defined]
        line = raw.decode(errors="replace").rstrip()
        boot.qemu_errors.append(line)
        print(f"[qemu] {line}", file=out, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per boot (default 300)")
    parser.add_argument("--smp", type=int, default=2, help="guest CPUs (default 2)")
    parser.add_argument("--memory", default="2G", help="guest memory (default 2G)")
    parser.add_argument(
        "--kernel",
        "--kernel-package",
        default=KERNEL_MATRIX[0].name,
        help=f"a matrix kernel ({', '.join(pin.name for pin in KERNEL_MATRIX)}; default "
        f"{KERNEL_MATRIX[0].name}) or a linux-image-*-unsigned package",
    )
    parser.add_argument("--cwd", type=Path, default=ROOT, help="directory to run in (default: project)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="command to run (after --)")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    try:
        kernel_pin(args.kernel)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        return run_in_vm(
            command or DEFAULT_COMMAND,
            cwd=args.cwd.resolve(),
            timeout=args.timeout,
            smp=args.smp,
            memory=args.memory,
            kernel=args.kernel,
        )
    except VmUnavailable as exc:
        print(f"[vm] VM unavailable: {exc}", file=sys.stderr, flush=True)
        return EXIT_UNAVAILABLE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
