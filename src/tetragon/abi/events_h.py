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
STAT_EXECVE_MAP_UPDATE_ERR, STAT_EXECVE_MAP_DELETE_ERR = 8, 9
STAT_COUNT = 10
STAT_NAMES = {
    STAT_EXEC_SENT: ("execve", "sent"),
    STAT_EXEC_LOST: ("execve", "lost"),
    STAT_EXIT_SENT: ("exit", "sent"),
    STAT_EXIT_LOST: ("exit", "lost"),
    STAT_CLONE_SENT: ("clone", "sent"),
    STAT_CLONE_LOST: ("clone", "lost"),
    6: ("generic", "sent"),
    7: ("generic", "lost"),
    STAT_EXECVE_MAP_UPDATE_ERR: ("execve_map", "update_error"),
    STAT_EXECVE_MAP_DELETE_ERR: ("execve_map", "delete_error"),
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
MSG_OP_GENERIC_LSM = 16
MSG_OP_GENERIC_USDT = 28
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
GEN_F_KSTACK = 1 << 5
GEN_F_USTACK = 1 << 6
GEN_F_IMA = 1 << 7

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
GEN_KIND_MODULE = 20
GEN_KIND_USERNS = 21
GEN_KIND_BPF_ATTR = 22
GEN_KIND_BPF_MAP = 23
GEN_KIND_PERF_EVENT = 24
GEN_KIND_KSTACK = 30
GEN_KIND_USTACK = 31
GEN_STACK_DEPTH = 127

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
ACTION_SET = 14

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

# kernel objects of kernel-function arguments (bpf/include/generic/readers_kern.h)
# struct gen_module: name[56], taints, sig_ok, pad
GEN_MODULE = struct.Struct("<56sQI4x")
GEN_MODULE_FIELDS = ("name", "taints", "sig_ok")

# struct gen_userns: level, uid, gid, inum
GEN_USERNS = struct.Struct("<i3I")
GEN_USERNS_FIELDS = ("level", "uid", "gid", "inum")

# struct gen_bpf_attr: prog_type, insn_cnt, name[16]
GEN_BPF_ATTR = struct.Struct("<2I16s")
GEN_BPF_ATTR_FIELDS = ("prog_type", "insn_cnt", "name")

# struct gen_bpf_map: map_type, key_size, value_size, max_entries, name[16]
GEN_BPF_MAP = struct.Struct("<4I16s")
GEN_BPF_MAP_FIELDS = ("map_type", "key_size", "value_size", "max_entries", "name")

GEN_KSYM_LEN = 128
# struct gen_perf_event: type, pad, config, probe_offset, kprobe_func[128]
GEN_PERF_EVENT = struct.Struct("<I4x2Q128s")
GEN_PERF_EVENT_FIELDS = ("type", "config", "probe_offset", "kprobe_func")

# every blob kind the kernel writes
GEN_KINDS = frozenset(
    (
        GEN_KIND_INT,
        GEN_KIND_STR,
        GEN_KIND_BYTES,
        GEN_KIND_PATH,
        GEN_KIND_SOCK,
        GEN_KIND_SOCKADDR,
        GEN_KIND_CRED,
        GEN_KIND_SKB,
    )
    + (GEN_KIND_MODULE, GEN_KIND_USERNS, GEN_KIND_BPF_ATTR, GEN_KIND_BPF_MAP, GEN_KIND_PERF_EVENT)
)

# struct gen_ima: algo, hash[64]
GEN_IMA = struct.Struct("<i64s")
GEN_IMA_FIELDS = ("algo", "hash")
