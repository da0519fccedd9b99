"""What the running kernel lets the agent hook, measured by loading and attaching tiny programs.

Every mechanism is tested the only way that cannot lie: the matching program of bpf/probe.bpf.c is
loaded on its own and attached for an instant, then detached and freed. Config files and version
numbers are not consulted, because kernels differ in ways they do not show (a kprobe program type
that loads on a kernel without kprobes, BPF LSM compiled in but left out of `lsm=`, kprobe.multi
without fprobe, trampolines refused by a hypervisor's lockdown).
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
from pathlib import Path

from tetragon.bpf.libbpf import BpfError, BpfObject

log = logging.getLogger(__name__)

FEATURES: tuple[str, ...] = (
    "tracepoint",
    "tp_btf",
    "raw_tp",
    "uprobe",
    "kprobe",
    "kprobe_multi",
    "fentry",
    "lsm",
    "ima",
    "signal",
    "override_return",
    "fmodret",
    "probe_write_user",
)

PROBE_OBJECT = Path(__file__).resolve().parent.parent / "_bpfobj" / "probe.bpf.o"
TRACEFS = Path("/sys/kernel/tracing")
SECURITYFS = Path("/sys/kernel/security")

_MESSAGES: dict[str, str] = {
    "tracepoint": "this kernel cannot attach BPF to tracepoints (CONFIG_PERF_EVENTS, tracefs); "
    "tracepoint hooks can use raw tracepoints (raw: true) instead",
    "tp_btf": "this kernel has no BTF tracepoints (tp_btf: kernel >= 5.5, CONFIG_DEBUG_INFO_BTF); "
    "tracepoint hooks can use raw or perf tracepoints instead",
    "raw_tp": "this kernel has no raw tracepoints for BPF (kernel >= 4.17); "
    "tracepoint hooks can use perf tracepoints instead",
    "uprobe": "this kernel has no uprobes (CONFIG_UPROBE_EVENTS); "
    "user-space functions cannot be hooked, trace the syscalls they make with tracepoints instead",
    "kprobe": "this kernel has no kprobes (CONFIG_KPROBES); syscall hooks can use tracepoints instead",
    "kprobe_multi": "this kernel has no kprobe.multi links (CONFIG_FPROBE, kernel >= 5.18); "
    "kprobes are attached with one link per function instead",
    "fentry": "this kernel refuses BPF trampolines (fentry/fexit: CONFIG_DEBUG_INFO_BTF, "
    "CONFIG_FUNCTION_TRACER, kernel >= 5.5); kernel function hooks can use kprobes instead",
    "lsm": "BPF LSM is not active (CONFIG_BPF_LSM and `bpf` in the lsm= boot parameter); "
    "LSM hooks can be observed with kprobes on the security_* functions instead",
    "ima": "IMA is not active (CONFIG_IMA; /sys/kernel/security/ima) or BPF LSM is not: "
    "bpf_ima_file_hash cannot hash files; a Post without imaHash still reports the file instead",
    "signal": "this kernel has no bpf_send_signal (kernel >= 5.3); "
    "Sigkill/Signal actions are unavailable, use Post to report the event instead",
    "override_return": "this kernel has no bpf_override_return (CONFIG_BPF_KPROBE_OVERRIDE, "
    "CONFIG_FUNCTION_ERROR_INJECTION); Override on security_* functions can use fmod_ret instead",
    "fmodret": "this kernel refuses fmod_ret programs (BPF trampolines, kernel >= 5.7, "
    "CONFIG_DEBUG_INFO_BTF, CONFIG_FUNCTION_TRACER), which Override on security_* functions needs",
    "probe_write_user": "this kernel refuses bpf_probe_write_user (kernel lockdown: "
    "/sys/kernel/security/lockdown is integrity or confidentiality)",
}

_cache: dict[str, bool] | None = None
_cache_lock = threading.Lock()


def probe_features() -> dict[str, bool]:
    """Feature name → usable, in FEATURES order. Measured once per process, then cached.

    Raises BpfError when the probe object has not been built (`make -C bpf`).
    """
    global _cache
    with _cache_lock:
        if _cache is None:
            _cache = _probe_all()
        return dict(_cache)


def missing_feature_message(feature: str) -> str:
    """One line for a user: which kernel feature is missing and what to use instead."""
    try:
        return _MESSAGES[feature]
    except KeyError:
        raise ValueError(f"unknown BPF feature {feature!r}; known: {', '.join(FEATURES)}") from None


def active_lsms() -> list[str]:
    """The kernel's active LSMs in call order, from securityfs (empty when it cannot be read)."""
    try:
        text = (SECURITYFS / "lsm").read_text()
    except OSError:
        return []
    return [name for name in text.strip().split(",") if name]


def ima_active() -> bool:
    """Whether IMA is initialized (CONFIG_IMA, not disabled at boot): its securityfs directory."""
    return (SECURITYFS / "ima").is_dir()


def _probe_all() -> dict[str, bool]:
    if not PROBE_OBJECT.exists():
        raise BpfError(f"BPF object {PROBE_OBJECT} is missing: build it with `make -C bpf`")
    # libbpf resolves perf tracepoints through tracefs; the lsm list lives in securityfs
    _ensure_mounted("tracefs", TRACEFS, "events")
    _ensure_mounted("securityfs", SECURITYFS, "lsm")
    results = {feature: False if feature == "ima" else _loads_and_attaches(feature) for feature in FEATURES}
    lsms = active_lsms()
    # an lsm program loads and attaches even when BPF LSM is not in lsm=, but is then never called
    if results["lsm"] and "bpf" not in lsms:
        log.debug("feature lsm: program attaches, but bpf is not an active LSM")
        results["lsm"] = False
    # bpf_ima_file_hash (sleepable BPF LSM programs) hashes nothing unless IMA runs: it has its
    # securityfs directory then (an `ima` entry in the lsm list only since 6.9)
    results["ima"] = results["lsm"] and ima_active()
    return results


def _loads_and_attaches(feature: str) -> bool:
    program = f"probe_{feature}"
    try:
        with BpfObject(PROBE_OBJECT) as obj:
            obj.only_programs({program})
            obj.load()
            obj.attach(program).close()
    except BpfError as exc:
        log.debug("feature %s unavailable: %s", feature, exc)
        return False
    return True


def _ensure_mounted(fstype: str, target: Path, marker: str) -> None:
    """Mount a kernel pseudo filesystem at its usual place when it is missing, as Tetragon does."""
    if (target / marker).exists() or os.geteuid() != 0 or not target.is_dir():
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
    if libc.mount(b"none", str(target).encode(), fstype.encode(), 0, None) != 0:
        err = ctypes.get_errno()
        log.debug("cannot mount %s at %s: %s", fstype, target, os.strerror(err))
    else:
        log.info("mounted %s at %s", fstype, target)
