"""spec.loader -> one hook: process_loader events (path and build id of each executable file a process
maps), served as Tetragon serves them: a kprobe on perf_event_mmap_output, called for a dummy perf event
the agent opens on each CPU with mmap and build-id reporting on (bpf/include/generic/loader.h,
sensors/loader.py). Only mappings with a build id are reported, as in Tetragon.

A kernel without kprobes has no substitute: the mmap records of such a perf event could be read from
user space, but then every mapping of every process would cross into the agent to be filtered there,
which is not a kernel-side hook; the policy is refused, naming kprobes.
"""

from __future__ import annotations

from tetragon.abi import events_h as E
from tetragon.abi import generic_cfg_h as G
from tetragon.bpf.features import missing_feature_message
from tetragon.policy.compile.hooks import PolicySite
from tetragon.policy.compile.plan import Attach, HookPlan, unsupported
from tetragon.policy.hookinfo import ArgInfo, HookInfo

LOADER_FUNCTION = "perf_event_mmap_output"
BUILD_ID_MAX = 20  # BUILD_ID_SIZE_MAX


def compile_loader(site: PolicySite, hook_id: int) -> HookPlan:
    if not site.features.get("kprobe"):
        raise unsupported(
            f"spec.loader: process_loader events need a kprobe on {LOADER_FUNCTION}: "
            f"{missing_feature_message('kprobe')}"
        )
    cfg = G.HookCfg()
    cfg.policy_id, cfg.hook_id, cfg.mech, cfg.op = (
        site.policy_id,
        hook_id,
        G.MECH_LOADER,
        E.MSG_OP_GENERIC_KPROBE,
    )
    cfg.nargs = 2
    path, buildid = cfg.args[0], cfg.args[1]
    path.reader, path.off, path.size = G.RD_STR, 0, 8
    buildid.reader, buildid.off, buildid.size = G.RD_BUF, 1, 8
    buildid.has_size, buildid.size_off, buildid.max_data = 1, 2, BUILD_ID_MAX
    info = HookInfo(
        policy_name=site.policy.name,
        event="process_loader",
        args=(ArgInfo("string"), ArgInfo("char_buf")),
        policy_namespace=site.policy.namespace,
    )
    attach = [Attach("loader", "gen_loader", (LOADER_FUNCTION,))]
    return HookPlan(hook_id, info, cfg, attach, sensor="loader_sensor")
