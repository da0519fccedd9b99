"""Kernel-object argument types of kernel functions (bpf/include/generic/readers_kern.h): which reader
each uses. Only a kernel function passes these objects, so any other hook refuses them. And
`ignore: callNotFound`, which policies hooking functions that only some kernels have (bpf.yaml) use."""

from __future__ import annotations

from pathlib import Path

from tetragon.abi import generic_cfg_h as G
from tetragon.policy.compile.plan import unsupported
from tetragon.policy.names import LIST_PREFIX
from tetragon.policy.schema import KProbeArg
from tetragon.policy.syscalls import is_syscall

KERN_OBJ_READERS = {
    "dentry": G.RD_DENTRY,
    "module": G.RD_MODULE,
    "load_info": G.RD_LOAD_INFO,
    "user_namespace": G.RD_USER_NS,
    "kiocb": G.RD_KIOCB,
    "iov_iter": G.RD_IOV_ITER,
    "bpf_attr": G.RD_BPF_ATTR,
    "bpf_map": G.RD_BPF_MAP,
    "perf_event": G.RD_PERF_EVENT,
}
# their payload compares as a path in matchArgs (Equal, Prefix, Postfix, ...)
KERN_PATH_TYPES = frozenset({"dentry", "kiocb"})


def fill_kern_obj_arg(out: G.ArgCfg, arg: KProbeArg, t: str, mech: int, max_data: int, where: str) -> None:
    """Configure argument `out` of type `t`, one of KERN_OBJ_READERS."""
    if mech != G.MECH_KPROBE:
        raise unsupported(
            f"{where}: a {t} argument is a kernel object: only kernel functions (kprobes) pass one"
        )
    out.reader = KERN_OBJ_READERS[t]
    if t == "iov_iter":
        out.max_data = max_data


def kernel_function_missing(
    call: str, features: dict[str, bool], tracefs: Path, syscall: bool = False
) -> bool:
    """`ignore: callNotFound`: the kernel has kprobes but `call` is none of its traceable functions (a
    kernel without kprobes keeps the hook, so that the policy is refused for the missing kprobes). A
    syscall hook (`sys_openat`, served by the syscall's tracepoint) is never missing: its traceable
    function has the arch prefix (`__x64_sys_openat`), never the bare name. Other names are functions."""
    if syscall and is_syscall(call):
        return False
    if not features.get("kprobe") or call.startswith(LIST_PREFIX):
        return False
    try:
        text = (tracefs / "available_filter_functions").read_text()
    except OSError:
        return False
    return not any(line.split(" ", 1)[0] == call for line in text.splitlines())
