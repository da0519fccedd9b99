"""The words a TracingPolicy may use, and the limits Tetragon's CRD puts on it (spec §3).

Only names live here; the numbers the kernel side uses for them are in `tetragon.abi`.
"""

from __future__ import annotations

from tetragon.process.model import CAP_NAMES

API_VERSION = "cilium.io/v1alpha1"
KINDS = ("TracingPolicy", "TracingPolicyNamespaced")

# --- limits (spec §3.5) ---------------------------------------------------------------------------
MAX_SELECTORS = 5
MAX_ARGS = 5  # args + data per hook (EventConfigMaxArgs)
MAX_TAGS = 16
MAX_MESSAGE = 256
MAX_MATCH_PIDS_VALUES = 4
MAX_MATCH_ARGS = 5
MAX_MATCH_VALUES = 4  # numeric comparisons on integer arguments
MAX_PREFIX_LEN = 256
MAX_POSTFIX_LEN = 128
MAX_NAMESPACE_VALUES = 4
MAX_NAMESPACE_ENTRIES = 10
MAX_BINARY_ENTRIES = 1
MAX_ENFORCERS = 1
MAX_SIZE_ARG_INDEX = 15
MAX_RESOLVE_DEPTH = 10

# --- argument types ---------------------------------------------------------------------------------
# integer-valued types (matchArgs compares them as numbers); "auto" is resolved to one at compile time
_INT_TYPES = (
    "auto",
    "int",
    "sint8",
    "int8",
    "uint8",
    "sint16",
    "int16",
    "uint16",
    "uint32",
    "sint32",
    "int32",
    "ulong",
    "uint64",
    "size_t",
    "long",
    "sint64",
    "int64",
    "fd",
    "syscall64",
    "kernel_cap_t",
    "cap_inheritable",
    "cap_permitted",
    "cap_effective",
    "bpf_cmd",
)
INT_ARG_TYPES = frozenset(_INT_TYPES)
ARG_TYPES: tuple[str, ...] = (
    *_INT_TYPES,
    *[
        "char_buf",
        "char_iovec",
        "skb",
        "sock",
        "sockaddr",
        "socket",
        "sockaddr_un",
        "string",
        "file",
        "filename",
        "path",
        "nop",
        "bpf_attr",
        "perf_event",
        "bpf_map",
        "user_namespace",
        "capability",
        "kiocb",
        "iov_iter",
        "cred",
        "const_buf",
        "load_info",
        "module",
        "linux_binprm",
        "data_loc",
        "net_device",
        "dentry",
        "bpf_prog",
    ],
)

# --- operators and actions (canonical spellings, in Tetragon's order) --------------------------------
OPERATORS: tuple[str, ...] = (
    "GT",
    "LT",
    "Equal",
    "NotEqual",
    "In",
    "NotIn",
    "Prefix",
    "Postfix",
    "InMap",
    "NotInMap",
    "Mask",
    "SAddr",
    "DAddr",
    "SPort",
    "DPort",
    "Protocol",
    "NotSPort",
    "NotDPort",
    "SPortPriv",
    "NotSPortPriv",
    "DPortPriv",
    "NotDPortPriv",
    "NotSAddr",
    "NotDAddr",
    "NotPrefix",
    "NotPostfix",
    "Family",
    "State",
    "CapabilitiesGained",
    "InRange",
    "NotInRange",
    "SubString",
    "SubStringIgnCase",
    "CelExpr",
    "FileType",
    "NotFileType",
)
OPERATOR_ALIASES: dict[str, str] = {
    **{name: name for name in OPERATORS},
    "GreaterThan": "GT",
    "gt": "GT",
    "LessThan": "LT",
    "lt": "LT",
    "eq": "Equal",
    "neq": "NotEqual",
    "NotSportPriv": "NotSPortPriv",
}
# `Set` (USDT argument rewrite, Tetragon >1.4): only in usdts (validate.py), served by generic/usdt.h.
ACTIONS: tuple[str, ...] = (
    "Post",
    "FollowFD",
    "Sigkill",
    "UnfollowFD",
    "Override",
    "CopyFD",
    "GetUrl",
    "DnsLookup",
    "NoPost",
    "Signal",
    "TrackSock",
    "UntrackSock",
    "NotifyEnforcer",
    "CleanupEnforcerNotification",
    "Set",
)
USER_SPACE_ACTIONS = ("GetUrl", "DnsLookup")  # run by the agent when the kernel reports a match
BINARY_OPERATORS = ("In", "NotIn", "Prefix", "NotPrefix", "Postfix", "NotPostfix")

# --- namespaces, capabilities, lists, options -------------------------------------------------------
NAMESPACES = (
    "Uts",
    "Ipc",
    "Mnt",
    "Pid",
    "PidForChildren",
    "Net",
    "Time",
    "TimeForChildren",
    "Cgroup",
    "User",
)
# capability name -> bit, from the same table the events use (there bit 1 keeps Tetragon's
# "DAC_OVERRIDE" spelling; policies spell it CAP_DAC_OVERRIDE)
CAPABILITIES: dict[str, int] = {
    ("CAP_DAC_OVERRIDE" if name == "DAC_OVERRIDE" else name): bit for bit, name in enumerate(CAP_NAMES)
}
CAPABILITY_TYPES = ("Effective", "Inheritable", "Permitted")
LIST_TYPES = ("syscalls", "generated_syscalls", "generated_ftrace")
LIST_PREFIX = "list:"
POLICY_MODES = ("enforce", "monitor")
HOOK_SECTIONS = ("kprobes", "fentries", "tracepoints", "uprobes", "lsmhooks", "usdts")
