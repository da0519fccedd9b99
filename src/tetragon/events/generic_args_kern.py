"""Kernel-object argument blobs of kernel functions (bpf/include/generic/readers_kern.h) rendered as
Tetragon renders them (pkg/grpc/tracing there): `module_arg`, `user_ns_arg`, `bpf_attr_arg`,
`bpf_map_arg` and `perf_event_arg` (the last three with CamelCase keys, as Tetragon's proto names them).
dentry, kiocb and iov_iter blobs are paths and bytes, rendered by events.generic_args.
"""

from __future__ import annotations

from tetragon.abi import events_h as L
from tetragon.events.decode import GenericArg
from tetragon.jsontypes import Event

# TaintedBitsType: bit number of module->taints (include/linux/panic.h TAINT_*) -> enum name
TAINT_NAMES = {
    0: "TAINT_PROPRIETARY_MODULE",
    1: "TAINT_FORCED_MODULE",
    2: "TAINT_FORCED_UNLOAD_MODULE",
    10: "TAINT_STAGED_MODULE",
    12: "TAINT_OUT_OF_TREE_MODULE",
    13: "TAINT_UNSIGNED_MODULE",
    15: "TAINT_KERNEL_LIVE_PATCH_MODULE",
    18: "TAINT_TEST_MODULE",
}

# include/uapi/linux/bpf.h enum bpf_prog_type / bpf_map_type, in order from 0
_PROG_TYPES = [
    "UNSPEC",
    "SOCKET_FILTER",
    "KPROBE",
    "SCHED_CLS",
    "SCHED_ACT",
    "TRACEPOINT",
    "XDP",
    "PERF_EVENT",
    "CGROUP_SKB",
    "CGROUP_SOCK",
    "LWT_IN",
    "LWT_OUT",
    "LWT_XMIT",
    "SOCK_OPS",
    "SK_SKB",
    "CGROUP_DEVICE",
    "SK_MSG",
    "RAW_TRACEPOINT",
    "CGROUP_SOCK_ADDR",
    "LWT_SEG6LOCAL",
    "LIRC_MODE2",
    "SK_REUSEPORT",
    "FLOW_DISSECTOR",
    "CGROUP_SYSCTL",
    "RAW_TRACEPOINT_WRITABLE",
    "CGROUP_SOCKOPT",
    "TRACING",
    "STRUCT_OPS",
    "EXT",
    "LSM",
    "SK_LOOKUP",
    "SYSCALL",
    "NETFILTER",
]
_MAP_TYPES = [
    "UNSPEC",
    "HASH",
    "ARRAY",
    "PROG_ARRAY",
    "PERF_EVENT_ARRAY",
    "PERCPU_HASH",
    "PERCPU_ARRAY",
    "STACK_TRACE",
    "CGROUP_ARRAY",
    "LRU_HASH",
    "LRU_PERCPU_HASH",
    "LPM_TRIE",
    "ARRAY_OF_MAPS",
    "HASH_OF_MAPS",
    "DEVMAP",
    "SOCKMAP",
    "CPUMAP",
    "XSKMAP",
    "SOCKHASH",
    "CGROUP_STORAGE",
    "REUSEPORT_SOCKARRAY",
    "PERCPU_CGROUP_STORAGE",
    "QUEUE",
    "STACK",
    "SK_STORAGE",
    "DEVMAP_HASH",
    "STRUCT_OPS",
    "RINGBUF",
    "INODE_STORAGE",
    "TASK_STORAGE",
    "BLOOM_FILTER",
    "USER_RINGBUF",
    "CGRP_STORAGE",
    "ARENA",
]
PROG_TYPE_NAMES = {i: f"BPF_PROG_TYPE_{n}" for i, n in enumerate(_PROG_TYPES)}
MAP_TYPE_NAMES = {i: f"BPF_MAP_TYPE_{n}" for i, n in enumerate(_MAP_TYPES)}
# include/uapi/linux/perf_event.h enum perf_type_id
PERF_TYPE_NAMES = {
    0: "PERF_TYPE_HARDWARE",
    1: "PERF_TYPE_SOFTWARE",
    2: "PERF_TYPE_TRACEPOINT",
    3: "PERF_TYPE_HW_CACHE",
    4: "PERF_TYPE_RAW",
    5: "PERF_TYPE_BREAKPOINT",
    6: "PERF_TYPE_MAX",
}
KERN_KINDS = frozenset(
    (L.GEN_KIND_MODULE, L.GEN_KIND_USERNS, L.GEN_KIND_BPF_ATTR, L.GEN_KIND_BPF_MAP, L.GEN_KIND_PERF_EVENT)
)


def _named(table: dict[int, str], value: int) -> str:
    """Tetragon's name of a kernel enum value, its decimal digits when it has none."""
    return table.get(value, str(value))


def _cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def tainted(taints: int) -> list[str]:
    """The TaintedBitsType names of a module's taint bits, lowest bit first (bits without a name left out)."""
    return [name for bit, name in sorted(TAINT_NAMES.items()) if taints >> bit & 1]


def user_ns(level: int, uid: int, gid: int, inum: int) -> Event:
    """A UserNamespace message (level, uid and gid are wrappers: written even when 0); the initial
    namespace (level 0) is the host's."""
    ns: Event = {"inum": inum} if inum else {}
    if level == 0:
        ns["is_host"] = True
    return {"level": level, "uid": uid, "gid": gid, "ns": ns}


def kern_variant(arg: GenericArg) -> Event:
    """The KprobeArgument of a kernel-object blob (kind in KERN_KINDS), without its label."""
    kind, data = arg.kind, arg.payload
    if kind == L.GEN_KIND_MODULE:
        if len(data) < L.GEN_MODULE.size:
            return {"module_arg": {}}
        name, taints, sig_ok = L.GEN_MODULE.unpack_from(data)
        module: Event = {"name": _cstr(name)} if _cstr(name) else {}
        module["signature_ok"] = bool(sig_ok)  # a BoolValue: written even when false
        names = tainted(taints)
        if names:
            module["tainted"] = names
        return {"module_arg": module}
    if kind == L.GEN_KIND_USERNS:
        if len(data) < L.GEN_USERNS.size:
            return {"user_ns_arg": {}}
        return {"user_ns_arg": user_ns(*L.GEN_USERNS.unpack_from(data))}
    if kind == L.GEN_KIND_BPF_ATTR:
        if len(data) < L.GEN_BPF_ATTR.size:
            return {"bpf_attr_arg": {}}
        prog_type, insn_cnt, name = L.GEN_BPF_ATTR.unpack_from(data)
        attr: Event = {"ProgType": _named(PROG_TYPE_NAMES, prog_type)}
        if insn_cnt:
            attr["InsnCnt"] = insn_cnt
        if _cstr(name):
            attr["ProgName"] = _cstr(name)
        return {"bpf_attr_arg": attr}
    if kind == L.GEN_KIND_BPF_MAP:
        if len(data) < L.GEN_BPF_MAP.size:
            return {"bpf_map_arg": {}}
        map_type, key_size, value_size, max_entries, name = L.GEN_BPF_MAP.unpack_from(data)
        bpf_map: Event = {"MapType": _named(MAP_TYPE_NAMES, map_type)}
        for key, value in (("KeySize", key_size), ("ValueSize", value_size), ("MaxEntries", max_entries)):
            if value:
                bpf_map[key] = value
        if _cstr(name):
            bpf_map["MapName"] = _cstr(name)
        return {"bpf_map_arg": bpf_map}
    if kind == L.GEN_KIND_PERF_EVENT:
        if len(data) < L.GEN_PERF_EVENT.size:
            return {"perf_event_arg": {}}
        typ, config, probe_offset, func = L.GEN_PERF_EVENT.unpack_from(data)
        event: Event = {}
        if _cstr(func):
            event["KprobeFunc"] = _cstr(func)
        event["Type"] = _named(PERF_TYPE_NAMES, typ)
        if config:
            event["Config"] = str(config)  # uint64: a JSON string, as protojson writes it
        if probe_offset:
            event["ProbeOffset"] = str(probe_offset)
        return {"perf_event_arg": event}
    raise ValueError(f"blob kind {kind} is not a kernel object")
