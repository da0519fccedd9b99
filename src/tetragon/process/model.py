"""Pieces of Tetragon's `Process` message built from kernel records: ids, flags, times, caps, ns.

Everything here is pure and typed; the process cache calls it, tests call it without root.
"""

from __future__ import annotations

import base64
import os
import socket
import time
from dataclasses import dataclass, field
from typing import NamedTuple

from tetragon.timefmt import format_timestamp

# CapabilitiesType enum names by bit number (Tetragon's quirk: bit 1 is "DAC_OVERRIDE").
CAP_NAMES = (
    "CAP_CHOWN",
    "DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
)

SECUREBITS = (
    (1, "SecBitNoRoot"),
    (2, "SecBitNoRootLocked"),
    (4, "SecBitNoSetUidFixup"),
    (8, "SecBitNoSetUidFixupLocked"),
    (16, "SecBitKeepCaps"),
    (32, "SecBitKeepCapsLocked"),
    (64, "SecBitNoCapAmbientRaise"),
    (128, "SecBitNoCapAmbientRaiseLocked"),
)

# Order of Tetragon's process flags string.
FLAG_ORDER = (
    "execve",
    "procFS",
    "errorEnvs",
    "truncArgs",
    "miss",
    "errorFilename",
    "errorArgs",
    "nocwd",
    "rootcwd",
    "errorCWD",
    "clone",
    "errorCgroupName",
    "errorCgroupID",
    "errorCgroupSubsysCgrp",
    "errorCgroupSubsys",
    "errorCgroups",
    "errorPathResolutionCwd",
    "dataFilename",
    "dataArgs",
    "inInitTree",
)
_FLAG_RANK = {name: i for i, name in enumerate(FLAG_ORDER)}

SIGNAL_NAMES = {
    1: "SIGHUP",
    2: "SIGINT",
    3: "SIGQUIT",
    4: "SIGILL",
    5: "SIGTRAP",
    6: "SIGABRT",
    7: "SIGBUS",
    8: "SIGFPE",
    9: "SIGKILL",
    10: "SIGUSR1",
    11: "SIGSEGV",
    12: "SIGUSR2",
    13: "SIGPIPE",
    14: "SIGALRM",
    15: "SIGTERM",
    16: "SIGSTKFLT",
    17: "SIGCHLD",
    18: "SIGCONT",
    19: "SIGSTOP",
    20: "SIGTSTP",
    21: "SIGTTIN",
    22: "SIGTTOU",
    23: "SIGURG",
    24: "SIGXCPU",
    25: "SIGXFSZ",
    26: "SIGVTALRM",
    27: "SIGPROF",
    28: "SIGWINCH",
    29: "SIGIO",
    30: "SIGPWR",
    31: "SIGSYS",
}


def node_name() -> str:
    """Tetragon's node name: HUBBLE_NODE_NAME, else NODE_NAME, else the host name."""
    return os.environ.get("HUBBLE_NODE_NAME") or os.environ.get("NODE_NAME") or socket.gethostname()


def exec_id(node: str, ktime: int, pid: int) -> str:
    return base64.b64encode(f"{node}:{ktime}:{pid}".encode()).decode()


def format_flags(flags: set[str] | list[str]) -> str:
    return " ".join(sorted(flags, key=_FLAG_RANK.__getitem__))


def cap_names(mask: int) -> list[str]:
    return [name for bit, name in enumerate(CAP_NAMES) if mask >> bit & 1]


def securebit_names(bits: int) -> list[str]:
    return [name for value, name in SECUREBITS if bits & value]


def exit_fields(exit_code: int) -> tuple[str, int]:
    """(signal name, status) of a kernel exit code, as Tetragon reports them."""
    sig = exit_code & 0x7F if exit_code & 0x80 else exit_code & 0xFF
    if sig:
        return SIGNAL_NAMES.get(sig, f"SIG{sig}" if sig < 32 else f"SIGRT{sig - 34}"), 0
    return "", (exit_code >> 8) & 0xFF


def quote_arguments(argv: list[str]) -> str:
    """argv[1:] as Tetragon's ArgsDecoder joins it (pkg/process/args.go): an argument with a space is
    appended as ` "a b"`, with its leading space even when it comes first; any other argument is
    appended after one space, or starts the string while it is still empty (so empty leading
    arguments vanish, later ones leave two spaces)."""
    if argv and argv[0] and not any(" " in a for a in argv):
        return " ".join(argv)  # the usual case, identical to the loop below
    out = ""
    for a in argv:
        if " " in a:
            out += f' "{a}"'
        elif out:
            out += " " + a
        else:
            out = a
    return out


def container_id(cgroup_name: str) -> str:
    """The container id in a cgroup leaf name (docker-<id>.scope, cri-containerd-<id>.scope, <id>, ...)."""
    name = cgroup_name.removesuffix(".scope")
    tail = name.rsplit("-", 1)[-1].rsplit(":", 1)[-1]
    if len(tail) == 64 and all(c in "0123456789abcdef" for c in tail):
        return tail
    return ""


class Clock:
    """Converts kernel boot-time nanoseconds to RFC 3339 wall-clock strings.

    Every kernel time here is boot-based (the BPF programs read bpf_ktime_get_boot_ns, the /proc
    scan reads starttime, also since boot), so one offset converts them all. Tetragon converts an
    event's own ktime as CLOCK_MONOTONIC (pkg/ktime ToProto), which changes one thing only: the
    top-level `time` of the /proc scan's process_exec events, whose ktime is the boot-based starttime,
    lies after their `start_time` (converted as boot time) by the time the machine spent suspended.
    `monotonic_offset` reproduces that."""

    def __init__(self) -> None:
        self.refresh()

    def refresh(self) -> None:
        # boot-time + offset = wall-clock nanoseconds
        realtime = time.clock_gettime_ns(time.CLOCK_REALTIME)
        self.offset = realtime - time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        self.monotonic_offset = realtime - time.clock_gettime_ns(time.CLOCK_MONOTONIC)

    def wall_ns(self, ktime: int) -> int:
        return ktime + self.offset

    def rfc3339(self, ktime: int) -> str:
        return format_timestamp(ktime + self.offset)

    def rfc3339_as_monotonic(self, ktime: int) -> str:
        """`ktime` read as CLOCK_MONOTONIC nanoseconds, as Tetragon reads a procFS event's ktime."""
        return format_timestamp(ktime + self.monotonic_offset)


@dataclass(slots=True)
class ExecInfo:
    """What is known about one program image, from an exec record or from /proc."""

    ktime: int
    pid: int
    tid: int
    ppid: int
    nspid: int = 0
    uid: int = 0
    gid: int = 0
    euid: int = 0
    egid: int = 0
    suid: int = 0
    sgid: int = 0
    fsuid: int = 0
    fsgid: int = 0
    auid: int = 0xFFFFFFFF
    securebits: int = 0
    cap_permitted: int = 0
    cap_effective: int = 0
    cap_inheritable: int = 0
    ns: tuple[int, ...] = ()
    userns_level: int = 0
    userns_uid: int = 0
    userns_gid: int = 0
    binary: str = ""
    argv: list[str] = field(default_factory=list)
    cwd: str = ""
    cgroup_name: str = ""
    flags: set[str] = field(default_factory=set)
    privs: int = 0
    file_uid: int = 0
    file_gid: int = 0
    file_nlink: int = 1
    file_ino: int = 0
    exe: str = ""  # path of the executed file when it has no links left (memfd, deleted)
    kthread: bool = False  # a kernel thread found in /proc: cached, never exported


# pid and ktime of Tetragon's `<kernel>` process (procevents/proc_reader.go procKernel)
KERNEL_PID = 0
KERNEL_KTIME = 1


def kernel_info() -> ExecInfo:
    """Tetragon's `<kernel>` process: the parent of pid 1 and of kthreadd, and its own parent."""
    return ExecInfo(
        ktime=KERNEL_KTIME,
        pid=KERNEL_PID,
        tid=KERNEL_PID,
        ppid=KERNEL_PID,
        binary="<kernel>",
        flags={"procFS"},
    )


class CloneRecord(NamedTuple):
    """A new thread group (events.h msg_clone)."""

    ktime: int
    pid: int
    tid: int
    ppid: int
    nspid: int


class ExitRecord(NamedTuple):
    """The last thread of a group exited (events.h msg_exit)."""

    ktime: int
    pid: int
    tid: int
    exit_code: int
