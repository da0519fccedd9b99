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
    6: ("generic", "sent"),
    7: ("generic", "lost"),
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

# --- Generic (TracingPolicy) records ----------------------------------------------------------

MSG_OP_GENERIC_KPROBE = 13
MSG_OP_GENERIC_TRACEPOINT = 14
MSG_OP_GENERIC_UPROBE = 15
STAT_GENERIC_SENT = 6
STAT_GENERIC_LOST = 7

GEN_ARGS_MAX = 5
GEN_STRING_MAX = 4096
GEN_BYTES_MAX = 32768
GEN_BYTES_DEFAULT = 4096
GEN_RECORD_MAX = 65536

GEN_F_RETURN = 1 << 0
GEN_F_MONITOR = 1 << 1
GEN_F_ENFORCED = 1 << 2
GEN_F_COMPAT = 1 << 3
GEN_F_NOPOST = 1 << 4  # kernel-internal: a stashed entry whose return only runs returnArgAction

GEN_SELECTOR_NONE = 255  # msg_generic.selector of a hook without selectors
GEN_RET_INDEX = 255  # gen_arg.index of the return value's blob (a returnArg of type sock)

GEN_KIND_INT = 1
GEN_KIND_STR = 2
GEN_KIND_BYTES = 3
GEN_KIND_PATH = 4
GEN_KIND_SOCK = 5
GEN_KIND_SOCKADDR = 6
GEN_KIND_CRED = 7
GEN_KIND_SKB = 16

GEN_AF_TRUNC = 1 << 0
GEN_AF_ERR = 1 << 1

ACTION_POST = 0
ACTION_FOLLOWFD = 1
ACTION_SIGKILL = 2
ACTION_UNFOLLOWFD = 3
ACTION_OVERRIDE = 4
ACTION_COPYFD = 5
ACTION_GETURL = 6
ACTION_DNSLOOKUP = 7
ACTION_NOPOST = 8
ACTION_SIGNAL = 9
ACTION_TRACKSOCK = 10
ACTION_UNTRACKSOCK = 11
ACTION_NOTIFYENFORCER = 12
ACTION_CLEANUPENFORCER = 13

# struct msg_generic: common, pid, tid, policy_id, hook_id, action, return_action,
# selector, nargs, flags, pad, func_id, ret
MSG_GENERIC = struct.Struct("<BB2xIQ" + "6I" + "3Bx" + "I" + "q")
GENERIC_FIELDS = (
    ("common.op", "common.flags", "common.size", "common.ktime")
    + ("pid", "tid", "policy_id", "hook_id", "action", "return_action")
    + ("selector", "nargs", "flags", "func_id", "ret")
)

# struct gen_arg: kind, flags, index, pad, len
GEN_ARG = struct.Struct("<3BxI")
GEN_ARG_FIELDS = ("kind", "flags", "index", "len")

# struct gen_bytes: orig_size, pad
GEN_BYTES = struct.Struct("<I4x")
GEN_BYTES_FIELDS = ("orig_size",)

# struct gen_path: i_mode, f_flags
GEN_PATH = struct.Struct("<2I")
GEN_PATH_FIELDS = ("i_mode", "f_flags")

# struct gen_sock: family, type, protocol, state, pad, mark, priority, sport, dport, pad2, cookie,
# saddr[16], daddr[16]
GEN_SOCK = struct.Struct("<3HBx2I2H4xQ16s16s")
GEN_SOCK_FIELDS = (
    ("family", "type", "protocol", "state", "mark", "priority")
    + ("sport", "dport", "cookie")
    + ("saddr", "daddr")
)

# struct gen_sockaddr: family, port, pad, addr[16]
GEN_SOCKADDR = struct.Struct("<2H4x16s")
GEN_SOCKADDR_FIELDS = ("family", "port", "addr")

# struct gen_skb: a struct gen_sock (the packet's tuple), len, hash, secpath_len, secpath_olen
GEN_SKB = struct.Struct("<" + GEN_SOCK.format[1:] + "4I")
GEN_SKB_FIELDS = tuple(f"tuple.{f}" for f in GEN_SOCK_FIELDS) + ("len", "hash", "secpath_len", "secpath_olen")

# struct gen_cred: uid .. fsgid, securebits, pad, cap_permitted/effective/inheritable, userns_*
GEN_CRED = struct.Struct("<8II4x3Q4I")
GEN_CRED_FIELDS = (
    ("uid", "gid", "euid", "egid", "suid", "sgid", "fsuid", "fsgid", "securebits")
    + ("cap_permitted", "cap_effective", "cap_inheritable")
    + ("userns_level", "userns_uid", "userns_gid", "userns_inum")
)
