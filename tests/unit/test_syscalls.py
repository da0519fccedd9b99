"""Syscall names and numbers: the generated table and the name forms Tetragon policies use."""

from __future__ import annotations

import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from tetragon.policy import syscall_table
from tetragon.policy.errors import PolicyError
from tetragon.policy.syscalls import (
    Syscall,
    all_syscalls,
    function_name,
    has_tracepoint,
    is_syscall,
    parse_syscall,
    syscall64_value,
    syscall_name,
)

ROOT = Path(__file__).resolve().parents[2]
HEADERS = Path("/usr/include/x86_64-linux-gnu/asm")


@pytest.mark.parametrize(
    ("abi", "name", "nr"),
    [
        ("x64", "read", 0),
        ("x64", "dup", 32),
        ("x64", "dup2", 33),
        ("x64", "execve", 59),
        ("x64", "openat", 257),
        ("x64", "linkat", 265),
        ("i386", "exit", 1),
        ("i386", "execve", 11),
        ("i386", "dup", 41),
        ("i386", "dup2", 63),
        ("i386", "openat", 295),
    ],
)
def test_known_numbers(abi: str, name: str, nr: int) -> None:
    table = syscall_table.X64 if abi == "x64" else syscall_table.I386
    assert table[name] == nr
    assert syscall_name(nr, abi) == name


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("openat", Syscall("openat", "x64", 257)),
        ("sys_openat", Syscall("openat", "x64", 257)),
        ("__x64_sys_openat", Syscall("openat", "x64", 257)),
        ("__ia32_sys_dup", Syscall("dup", "i386", 41)),
        ("sys_dup2", Syscall("dup2", "x64", 33)),
        ("sysinfo", Syscall("sysinfo", "x64", 99)),  # starts with "sys" but not "sys_"
    ],
)
def test_parse_forms(text: str, expected: Syscall) -> None:
    assert parse_syscall(text) == expected
    assert is_syscall(text)


@pytest.mark.parametrize(
    "text", ["xyz", "sys_xyz", "__x64_sys_", "__ia32_sys_openat2x", "", "__arm64_sys_openat"]
)
def test_parse_unknown(text: str) -> None:
    with pytest.raises(PolicyError) as exc:
        parse_syscall(text)
    assert str(exc.value) == f"unknown syscall '{text}'"
    assert exc.value.kind == "invalid"
    assert not is_syscall(text)


def test_i386_only_syscall_is_not_x64() -> None:
    # waitpid exists only in the 32-bit ABI
    assert parse_syscall("__ia32_sys_waitpid").nr == 7
    with pytest.raises(PolicyError):
        parse_syscall("sys_waitpid")


def test_function_name_and_syscall64() -> None:
    openat = parse_syscall("sys_openat")
    dup32 = parse_syscall("__ia32_sys_dup")
    assert function_name(openat) == "__x64_sys_openat"
    assert function_name(dup32) == "__ia32_sys_dup"
    assert syscall64_value(openat) == 257
    assert syscall64_value(dup32) == 41 | (1 << 31) == 0x80000029


def test_all_syscalls_sorted_by_number() -> None:
    names = all_syscalls()
    assert names[:3] == ["read", "write", "open"]
    nrs = [parse_syscall(n).nr for n in names]
    assert nrs == sorted(nrs)
    # the generated table plus the syscalls newer than its headers (fchmodat2 = 452, ...)
    assert set(names) - set(syscall_table.X64) == {n for n in names if parse_syscall(n).nr > 450}
    assert set(syscall_table.X64) < set(names) and "fchmodat2" in names
    assert all_syscalls("i386")[:2] == ["restart_syscall", "exit"]
    with pytest.raises(PolicyError):
        all_syscalls("arm64")
    assert syscall_name(100000) is None


def test_has_tracepoint(tmp_path: Path) -> None:
    (tmp_path / "events" / "syscalls" / "sys_enter_openat").mkdir(parents=True)
    assert has_tracepoint("openat", str(tmp_path))
    assert has_tracepoint("sys_openat", str(tmp_path))
    assert not has_tracepoint("dup", str(tmp_path))


@pytest.mark.skipif(not HEADERS.joinpath("unistd_64.h").exists(), reason="kernel UAPI headers not installed")
def test_generated_table_is_current(tmp_path: Path) -> None:
    out = tmp_path / "table.py"
    subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gen_syscall_table.py"), "--out", str(out)],
        check=True,
        capture_output=True,
    )
    # names and numbers, not the text: the header comment names the linux-libc-dev version, which Debian
    # bumps without changing any number
    generated = runpy.run_path(str(out))
    assert generated["X64"] == syscall_table.X64
    assert generated["I386"] == syscall_table.I386
