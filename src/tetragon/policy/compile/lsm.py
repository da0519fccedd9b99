"""spec.lsmhooks -> a BPF LSM program per hook (bpf/include/generic/lsm.h), as Tetragon does.

A hook `file_open` (Tetragon's names have no `security_` prefix; one given with it is accepted) is
served by an `lsm` program attached to the kernel's `bpf_lsm_file_open`. Its arguments are the hook's
u64 slots, read like a raw tracepoint's; selectors and actions are the generic ones, and Override's
argError is the hook's result, so the operation is denied. Its records become `process_lsm` events.

A Post with `imaHash: true` needs bpf_ima_file_hash, which only a sleepable program may call: such a
hook is served by `gen_lsm_ima_file` (hooks whose first argument is a `struct file *`) or
`gen_lsm_ima_bprm` (hooks whose first argument is the exec's `struct linux_binprm *`) instead; its
records wait per thread while the hash is computed (cfg.has_return), and the selectors that asked
for the hash are listed in gen_inmap (INMAP_IMA_SELECTORS).
"""

from __future__ import annotations

from tetragon.abi import events_h as E
from tetragon.abi import generic_cfg_h as G
from tetragon.bpf.features import missing_feature_message
from tetragon.policy.compile.args import ArgSrc
from tetragon.policy.compile.hooks import UPROBE_ARGS, PolicySite, _function_arg_pos, _Mechanism, _plan
from tetragon.policy.compile.plan import Attach, HookPlan, unsupported
from tetragon.policy.compile.resolve import ResolveRoot
from tetragon.policy.errors import PolicyError
from tetragon.policy.schema import LsmHookSpec

# LSM hooks whose first argument is the file whose IMA hash imaHash reports (the kernel's
# include/linux/lsm_hook_defs.h), and those whose first argument is the linux_binprm of an exec
IMA_FILE_HOOKS = frozenset(
    (
        "file_open",
        "file_permission",
        "file_post_open",
        "file_truncate",
        "file_ioctl",
        "file_lock",
        "file_fcntl",
        "file_receive",
        "file_set_fowner",
        "file_free_security",
        "mmap_file",
        "kernel_read_file",
        "kernel_post_read_file",
    )
)
IMA_BPRM_HOOKS = frozenset(
    (
        "bprm_check_security",
        "bprm_creds_for_exec",
        "bprm_creds_from_file",
        "bprm_committing_creds",
        "bprm_committed_creds",
    )
)


def lsm_hook_name(hook: str) -> str:
    """The LSM hook's name as Tetragon reports it in function_name: without `security_`."""
    return hook.removeprefix("security_")


def ima_selectors(hook: LsmHookSpec) -> list[int]:
    """Positions of the selectors with a Post action that asks for imaHash."""
    return [k for k, s in enumerate(hook.selectors) if any(a.ima_hash for a in s.match_actions)]


def ima_program(name: str, where: str) -> str:
    """The sleepable program that hashes hook `name`'s file; PolicyError when the hook has none."""
    if name in IMA_FILE_HOOKS:
        return "gen_lsm_ima_file"
    if name in IMA_BPRM_HOOKS:
        return "gen_lsm_ima_bprm"
    raise unsupported(
        f"{where}: imaHash hashes the file of an LSM hook whose first argument is a file or the exec's "
        f"linux_binprm (file_*, mmap_file, bprm_*); {name} has none"
    )


def _without_ima(hook: LsmHookSpec) -> LsmHookSpec:
    """The hook with imaHash cleared from its actions: the hash is the program's business, not an
    action flag (the shared action encoder refuses imaHash everywhere else)."""
    copy = hook.model_copy(deep=True)
    for sel in copy.selectors:
        for act in sel.match_actions:
            act.ima_hash = False
    return copy


def compile_lsm(site: PolicySite, hook_id: int, hook: LsmHookSpec, where: str) -> HookPlan:
    if not site.features.get("lsm"):
        raise unsupported(f"{where}: {missing_feature_message('lsm')}")
    name = lsm_hook_name(hook.hook)
    if not name:
        raise unsupported(f"{where}: hook names no LSM hook")
    for i, arg in enumerate(hook.args):
        if arg.index >= UPROBE_ARGS:
            raise unsupported(f"{where}.args[{i}]: LSM hook arguments are the first 6 (index 0-5)")
    for k, sel in enumerate(hook.selectors):
        for a in sel.match_actions:
            if a.action == "Override" and not -4095 <= a.arg_error <= -1:
                # the hook's result: the LSM framework takes [-MAX_ERRNO, 0], and 0 allows the operation
                raise PolicyError(
                    f"{where}.selectors[{k}]: Override's argError {a.arg_error} is no negative errno "
                    "(-4095 to -1), which an LSM hook must return to deny"
                )
    ima = ima_selectors(hook)
    if ima and not site.features.get("ima"):
        raise unsupported(f"{where}.selectors[{ima[0]}]: {missing_feature_message('ima')}")
    program = ima_program(name, where) if ima else "gen_lsm"
    src = ArgSrc(G.MECH_RAW_TP, False, lambda i: (i, 8, False))  # ctx is the hook's u64 args[]
    att = [Attach("lsm", program, (name,))]  # libbpf finds bpf_lsm_<name> in the kernel's BTF
    served = _without_ima(hook) if ima else hook
    mech = _Mechanism(src, E.MSG_OP_GENERIC_LSM, _function_arg_pos(served, where), att, "generic_lsm")
    mech.resolve_root = ResolveRoot(f"bpf_lsm_{name}")  # the hook's arguments as BTF types them
    plan = _plan(site, hook_id, served, where, mech, event="process_lsm", function_name=name)
    if ima:
        plan.cfg.has_return = 1  # the record waits in gen_stash while the hash is computed
        plan.inmap.extend((G.INMAP_IMA_SELECTORS, k) for k in ima)
    return plan
