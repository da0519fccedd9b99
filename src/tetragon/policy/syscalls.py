"""Syscall names and numbers as Tetragon's policies use them (x86_64 host, x64 and i386 ABIs).

A policy names a syscall as `sys_openat` (the usual form: the agent adds the arch prefix), as the
bare `openat`, or with the kernel's wrapper prefix: `__x64_sys_openat` for the 64-bit ABI,
`__ia32_sys_dup` for the 32-bit compat ABI. Events report the prefixed wrapper name
(`function_name`). The numbers come from the kernel UAPI headers (see tools/gen_syscall_table.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from tetragon.policy.errors import PolicyError
from tetragon.policy.syscall_table import I386, X64

ABIS = ("x64", "i386")
# x86_64 syscalls newer than the generated table's headers (linux-libc-dev 6.1), from the kernel's
# arch/x86/entry/syscalls/syscall_64.tbl (6.17): kernels >= 6.6 have them (fchmodat2 is glibc 2.39's
# fchmodat with flags).
_X64_NEWER = {
    "cachestat": 451,
    "fchmodat2": 452,
    "map_shadow_stack": 453,
    "futex_wake": 454,
    "futex_wait": 455,
    "futex_requeue": 456,
    "statmount": 457,
    "listmount": 458,
    "lsm_get_self_attr": 459,
    "lsm_set_self_attr": 460,
    "lsm_list_modules": 461,
    "mseal": 462,
    "setxattrat": 463,
    "getxattrat": 464,
    "listxattrat": 465,
    "removexattrat": 466,
    "open_tree_attr": 467,
    "file_getattr": 468,
    "file_setattr": 469,
}
_TABLES: dict[str, dict[str, int]] = {"x64": {**_X64_NEWER, **X64}, "i386": I386}
# x86_64 syscalls whose kernel entry (symbol __x64_sys_X, tracepoint sys_enter_X) is not named as in
# the UAPI: `sys_newuname` is uname(2) (syscall_64.tbl: `63 common uname sys_newuname`).
_X64_ENTRY_NAMES = {"newuname": "uname", "newstat": "stat", "newfstat": "fstat", "newlstat": "lstat"}
_BY_NR: dict[str, dict[int, str]] = {abi: {nr: name for name, nr in t.items()} for abi, t in _TABLES.items()}
_PREFIXES: tuple[tuple[str, str], ...] = (("__x64_sys_", "x64"), ("__ia32_sys_", "i386"), ("sys_", "x64"))
# Bit that Tetragon's `syscall64` argument type sets on a 32-bit (compat) syscall number.
COMPAT_BIT = 1 << 31


@dataclass(frozen=True)
class Syscall:
    name: str  # bare name, e.g. "openat"
    abi: str  # "x64" or "i386"
    nr: int


def _table(abi: str) -> dict[str, int]:
    try:
        return _TABLES[abi]
    except KeyError:
        raise PolicyError(f"unknown syscall ABI '{abi}' (want x64 or i386)") from None


def parse_syscall(name: str) -> Syscall:
    """`sys_X`, bare `X` and `__x64_sys_X` are x64 syscalls; `__ia32_sys_X` is an i386 one."""
    bare, abi = name, "x64"
    for prefix, prefix_abi in _PREFIXES:
        if name.startswith(prefix):
            bare, abi = name[len(prefix) :], prefix_abi
            break
    nr = _TABLES[abi].get(bare)
    if nr is None and abi == "x64" and bare in _X64_ENTRY_NAMES:
        nr = _TABLES[abi][_X64_ENTRY_NAMES[bare]]
    if nr is None:
        raise PolicyError(f"unknown syscall '{name}'")
    return Syscall(bare, abi, nr)


def is_syscall(name: str) -> bool:
    try:
        parse_syscall(name)
    except PolicyError:
        return False
    return True


def function_name(sc: Syscall) -> str:
    """The kernel symbol a syscall kprobe attaches to, as reported in process_kprobe.function_name."""
    return f"__x64_sys_{sc.name}" if sc.abi == "x64" else f"__ia32_sys_{sc.name}"


def all_syscalls(abi: str = "x64") -> list[str]:
    """Bare names of every syscall of `abi`, by ascending number."""
    return [name for name, _ in sorted(_table(abi).items(), key=lambda kv: kv[1])]


def syscall_name(nr: int, abi: str = "x64") -> str | None:
    _table(abi)
    return _BY_NR[abi].get(nr)


def syscall64_value(sc: Syscall) -> int:
    """The value of Tetragon's `syscall64` argument type: the number, with bit 31 set for i386."""
    return sc.nr if sc.abi == "x64" else sc.nr | COMPAT_BIT


def has_tracepoint(name: str, tracefs: str = "/sys/kernel/tracing") -> bool:
    """Whether tracefs has `syscalls/sys_enter_<name>` (some x64 syscalls have none, e.g. rt_sigreturn).

    `name` is a bare syscall name; the `sys_`/`__x64_sys_` forms are accepted too.
    """
    bare = name
    for prefix, _ in _PREFIXES:
        if name.startswith(prefix):
            bare = name[len(prefix) :]
            break
    return os.path.isdir(os.path.join(tracefs, "events", "syscalls", f"sys_enter_{bare}"))
