"""Python view of bpf/include/events.h. tests/unit/test_layout.py checks it against the C compiler."""

from __future__ import annotations

import struct

MSG_OP_EXECVE = 5
MSG_OP_EXIT = 7
MSG_OP_CLONE = 23

EXEC_FILENAME_MAX = 4096
EXEC_ARGS_MAX = 8192
EXEC_CWD_MAX = 4096
EXEC_CGROUP_MAX = 256
EXEC_EXE_MAX = 1024

EXEC_F_TRUNC_ARGS = 1 << 0
EXEC_F_TRUNC_FILENAME = 1 << 1
EXEC_F_ERR_ARGS = 1 << 2
EXEC_F_ERR_CWD = 1 << 3
EXEC_F_TRUNC_CWD = 1 << 4
EXEC_F_ERR_CGROUP = 1 << 5

EXEC_PRIV_FILE_CAP = 1 << 0
EXEC_PRIV_SETUID = 1 << 1
EXEC_PRIV_SETGID = 1 << 2

NS_USER = 9  # slot of the user namespace in msg_exec.ns (events.h NS_USER)
NS_NAMES = (
    "uts",
    "ipc",
    "mnt",
    "pid",
    "pid_for_children",
    "net",
    "time",
    "time_for_children",
    "cgroup",
    "user",
)

STAT_EXEC_SENT, STAT_EXEC_LOST, STAT_EXIT_SENT, STAT_EXIT_LOST, STAT_CLONE_SENT, STAT_CLONE_LOST = range(6)
STAT_COUNT = 8
STAT_NAMES = {
    STAT_EXEC_SENT: ("execve", "sent"),
    STAT_EXEC_LOST: ("execve", "lost"),
    STAT_EXIT_SENT: ("exit", "sent"),
    STAT_EXIT_LOST: ("exit", "lost"),
    STAT_CLONE_SENT: ("clone", "sent"),
    STAT_CLONE_LOST: ("clone", "lost"),
}

# struct msg_common: op, flags, pad[2], size, ktime
MSG_COMMON = struct.Struct("<BB2xIQ")

# struct msg_exec, field for field (names in EXEC_FIELDS)
MSG_EXEC = struct.Struct(
    "<BB2xIQ" + "4I" + "8I" + "2I" + "3Q" + "10I" + "3I" + "2I" + "3I" + "Q" + "Q" + "I" + "5H" + "2x"
)
EXEC_FIELDS = (
    ("common.op", "common.flags", "common.size", "common.ktime")
    + ("pid", "tid", "ppid", "nspid")
    + ("uid", "gid", "euid", "egid", "suid", "sgid", "fsuid", "fsgid")
    + ("auid", "securebits")
    + ("cap_permitted", "cap_effective", "cap_inheritable")
    + tuple(f"ns[{i}]" for i in range(10))
    + ("userns_level", "userns_uid", "userns_gid")
    + ("flags", "privs")
    + ("file_uid", "file_gid", "file_nlink")
    + ("file_ino", "cgroup_id", "argc")
    + ("filename_len", "args_len", "cwd_len", "cgroup_len", "exe_len")
)

# struct msg_clone: common, pid, tid, ppid, nspid
MSG_CLONE = struct.Struct("<BB2xIQ4I")
CLONE_FIELDS = ("common.op", "common.flags", "common.size", "common.ktime", "pid", "tid", "ppid", "nspid")

# struct msg_exit: common, pid, tid, exit_code, pad
MSG_EXIT = struct.Struct("<BB2xIQ3I4x")
EXIT_FIELDS = ("common.op", "common.flags", "common.size", "common.ktime", "pid", "tid", "exit_code")
