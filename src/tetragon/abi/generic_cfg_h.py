"""Python view of bpf/include/generic_cfg.h: its #defines and its structs as ctypes.

The hook configuration is written byte for byte into a generic object's .rodata;
tests/unit/test_gencfg_layout.py compiles the header and checks sizes, offsets and values agree.
"""

from __future__ import annotations

import ctypes

from tetragon.abi.events_h import GEN_ARGS_MAX, NS_NAMES

GEN_MAX_SELECTORS = 5
GEN_MAX_MATCHARGS = 5
GEN_MAX_VALUES = 8
GEN_STRVAL_LEN = 264
GEN_MAX_PIDS = 4
GEN_MAX_PIDVALS = 4
GEN_MAX_BINVALS = 8
GEN_BIN_LEN = 256
GEN_MAX_NS = 10
GEN_MAX_NSVALS = 4
GEN_MAX_CAPS = 3
GEN_MAX_ACTIONS = 4
GEN_MATCH_RET = 255
INMAP_IMA_SELECTORS = 65535  # gen_inmap set: selectors whose Post has imaHash (LSM hooks)
GEN_ANCESTOR_DEPTH = 16

MECH_TRACEPOINT, MECH_RAW_TP, MECH_UPROBE, MECH_KPROBE, MECH_USDT, MECH_LOADER = 1, 2, 3, 4, 5, 6

# gen_hook_cfg.syscall (generic.bpf.c compares the literals): not a syscall hook, one syscall's
# tracepoints, or raw_syscalls filtered by the syscall numbers in gen_inmap (map id 0)
SYSCALL_NONE, SYSCALL_ONE, SYSCALL_LIST = 0, 1, 2

RD_INT = 1
RD_USTR = 2
RD_KSTR = 3
RD_DATALOC = 4
RD_FILENAME = 5
RD_FD = 6
RD_FILE = 7
RD_PATH = 8
RD_BINPRM = 9
RD_UBUF = 10
RD_IOVEC = 11
RD_SOCK_FD = 12
RD_SOCK = 13
RD_USOCKADDR = 14
RD_CRED = 15
RD_SYSCALL64 = 16
RD_DENTRY = 17
RD_CUR_CRED = 18
RD_STR = 19  # kernel function `string`: at a user or kernel pointer
RD_KFILENAME = 20  # kernel struct filename *: its name
RD_BUF = 21  # kernel function `char_buf`: at a user or kernel pointer, size as RD_UBUF
RD_SKB = 40  # kernel struct sk_buff * (kernel functions' network types: 40 and up)
RD_KSOCKADDR = 41  # struct sockaddr * in kernel memory
RD_SOCKET = 42  # kernel struct socket *: its struct sock
RD_NETDEV = 43  # kernel struct net_device *: its name
# kernel objects of kernel-function arguments (generic/readers_kern.h); RD_DENTRY is one of them
RD_KERN_FIRST = 60
RD_MODULE = 60
RD_LOAD_INFO = 61
RD_USER_NS = 62
RD_KIOCB = 63
RD_IOV_ITER = 64
RD_BPF_ATTR = 65
RD_BPF_MAP = 66
RD_PERF_EVENT = 67

# comparison operators: the header's OP_* (Tetragon's kernel numbering)
OP_GT = 1
OP_LT = 2
OP_EQ = 3
OP_NEQ = 4
OP_IN = 5
OP_NOTIN = 6
OP_PREFIX = 8
OP_POSTFIX = 9
OP_INMAP = 10
OP_NOTINMAP = 11
OP_MASK = 12
OP_SADDR = 13
OP_DADDR = 14
OP_SPORT = 15
OP_DPORT = 16
OP_PROTOCOL = 17
OP_NOTSPORT = 18
OP_NOTDPORT = 19
OP_SPORTPRIV = 20
OP_NOTSPORTPRIV = 21
OP_DPORTPRIV = 22
OP_NOTDPORTPRIV = 23
OP_NOTSADDR = 24
OP_NOTDADDR = 25
OP_NOTPREFIX = 26
OP_NOTPOSTFIX = 27
OP_FAMILY = 28
OP_STATE = 29
OP_INRANGE = 31
OP_NOTINRANGE = 32

# TracingPolicy operator name (canonical spelling) -> OP_*, for the operators the kernel side implements
OP_BY_NAME: dict[str, int] = {
    "GT": OP_GT,
    "LT": OP_LT,
    "Equal": OP_EQ,
    "NotEqual": OP_NEQ,
    "In": OP_IN,
    "NotIn": OP_NOTIN,
    "Prefix": OP_PREFIX,
    "Postfix": OP_POSTFIX,
    "InMap": OP_INMAP,
    "NotInMap": OP_NOTINMAP,
    "Mask": OP_MASK,
    "SAddr": OP_SADDR,
    "DAddr": OP_DADDR,
    "SPort": OP_SPORT,
    "DPort": OP_DPORT,
    "Protocol": OP_PROTOCOL,
    "NotSPort": OP_NOTSPORT,
    "NotDPort": OP_NOTDPORT,
    "SPortPriv": OP_SPORTPRIV,
    "NotSPortPriv": OP_NOTSPORTPRIV,
    "DPortPriv": OP_DPORTPRIV,
    "NotDPortPriv": OP_NOTDPORTPRIV,
    "NotSAddr": OP_NOTSADDR,
    "NotDAddr": OP_NOTDADDR,
    "NotPrefix": OP_NOTPREFIX,
    "NotPostfix": OP_NOTPOSTFIX,
    "Family": OP_FAMILY,
    "State": OP_STATE,
    "InRange": OP_INRANGE,
    "NotInRange": OP_NOTINRANGE,
}

CMP_INT, CMP_UINT, CMP_STR, CMP_SOCK, CMP_SOCKADDR = 1, 2, 3, 4, 5
PF_FOLLOW, PF_NSPID = 1, 2
STACK_KERNEL = 1  # Post kernelStackTrace
STACK_USER = 2  # Post userStackTrace
RL_THREAD, RL_PROCESS, RL_GLOBAL = 0, 1, 2
POLICY_MODE_ENFORCE, POLICY_MODE_MONITOR = 0, 1

GSTAT_CALLS = 0
GSTAT_FILTERED = 1
GSTAT_POSTED = 2
GSTAT_LOST = 3
GSTAT_NOPOST = 4
GSTAT_ENFORCED = 5
GSTAT_MONITORED = 6
GSTAT_RATELIMITED = 7
GSTAT_COUNT = 8

_u8, _u16, _u32, _s32, _u64 = (
    ctypes.c_uint8,
    ctypes.c_uint16,
    ctypes.c_uint32,
    ctypes.c_int32,
    ctypes.c_uint64,
)


class ArgCfg(ctypes.Structure):
    _fields_ = [
        ("reader", _u8),
        ("size", _u8),
        ("is_signed", _u8),
        ("has_size", _u8),
        ("has_dirfd", _u8),
        ("return_copy", _u8),
        ("off", _u16),
        ("size_off", _u16),
        ("dirfd_off", _u16),
        ("max_data", _u32),
    ]


class Match(ctypes.Structure):
    _fields_ = [
        ("arg", _u8),
        ("op", _u8),
        ("cmp", _u8),
        ("nvals", _u8),
        ("map_id", _u32),
        ("lo", _u64 * GEN_MAX_VALUES),
        ("hi", _u64 * GEN_MAX_VALUES),
        ("len", _u16 * GEN_MAX_VALUES),
        ("fam", _u8 * GEN_MAX_VALUES),
        ("str", (ctypes.c_char * GEN_STRVAL_LEN) * GEN_MAX_VALUES),
    ]


class MatchPid(ctypes.Structure):
    _fields_ = [("op", _u8), ("flags", _u8), ("nvals", _u8), ("pad", _u8), ("vals", _u32 * GEN_MAX_PIDVALS)]


class MatchBin(ctypes.Structure):
    _fields_ = [
        ("op", _u8),
        ("flags", _u8),
        ("nvals", _u8),
        ("pad", _u8),
        ("len", _u16 * GEN_MAX_BINVALS),
        ("str", (ctypes.c_char * GEN_STRVAL_LEN) * GEN_MAX_BINVALS),
    ]


class MatchNs(ctypes.Structure):
    _fields_ = [("ns", _u8), ("op", _u8), ("nvals", _u8), ("pad", _u8), ("vals", _u32 * GEN_MAX_NSVALS)]


class MatchCaps(ctypes.Structure):
    _fields_ = [("type", _u8), ("op", _u8), ("isns", _u8), ("pad", _u8 * 5), ("mask", _u64)]


class Action(ctypes.Structure):
    _fields_ = [
        ("id", _u8),
        ("scope", _u8),
        ("stack", _u8),
        ("pad", _u8),
        ("arg_error", _s32),
        ("arg_sig", _u32),
        ("arg_sock", _u32),
        ("rate_limit_ns", _u64),
    ]


class Selector(ctypes.Structure):
    _fields_ = [
        ("nmatch", _u8),
        ("has_ret", _u8),
        ("npids", _u8),
        ("has_bin", _u8),
        ("nns", _u8),
        ("ncaps", _u8),
        ("nactions", _u8),
        ("nret_actions", _u8),
        ("ns_changes_op", _u8),
        ("caps_changes_op", _u8),
        ("ns_changes", _u16),
        ("pad", _u32),
        ("caps_changes", _u64),
        ("match", Match * (GEN_MAX_MATCHARGS + 1)),
        ("pids", MatchPid * GEN_MAX_PIDS),
        ("bin", MatchBin),
        ("ns", MatchNs * GEN_MAX_NS),
        ("caps", MatchCaps * GEN_MAX_CAPS),
        ("actions", Action * GEN_MAX_ACTIONS),
        ("ret_actions", Action * GEN_MAX_ACTIONS),
    ]


class HookCfg(ctypes.Structure):
    _fields_ = [
        ("policy_id", _u32),
        ("hook_id", _u32),
        ("mech", _u8),
        ("op", _u8),
        ("nargs", _u8),
        ("nselectors", _u8),
        ("has_return", _u8),
        ("ret_signed", _u8),
        ("syscall", _u8),
        ("func_cookie", _u8),
        ("proc_sel", _u8),
        ("sel_args", _u8),
        ("ret_reader", _u8),
        ("ret_action", _u8),
        ("args", ArgCfg * GEN_ARGS_MAX),
        ("sel", Selector * GEN_MAX_SELECTORS),
    ]


class PolicyConf(ctypes.Structure):
    _fields_ = [("mode", _u32), ("pad", _u32)]


# struct gen_proc (tg_execve_map value)
class GenProc(ctypes.Structure):
    _fields_ = [
        ("ppid", _u32),
        ("exec_pid", _u32),
        ("nspid", _u32),
        ("exec_nspid", _u32),
        ("ns", _u32 * len(NS_NAMES)),
        ("cap_effective", _u64),
        ("bin_len", _u16),
        ("pad", _u16 * 3),
        ("bin", ctypes.c_char * GEN_BIN_LEN),
    ]
