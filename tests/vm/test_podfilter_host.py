"""Runs inside the qemu guest (tests/vm/run_vm.py): the policy filter's hostSelector check
(bpf/include/generic/podfilter.h: an ancestor walk with bpf_get_current_ancestor_cgroup_id) passes
the verifier of each guest kernel in every program type a pod-scoped policy can use, kprobes, LSM
hooks and fmod_ret included (the host's kernel has only tracepoints and uprobes for it; the events
themselves are checked there with a real pod: tests/e2e/test_k8s_pods.py). Loading only, no attach:
a fraction of a second per program."""

from __future__ import annotations

import pytest

from tetragon.abi import generic_cfg_h as G
from tetragon.sensors.generic import GenericObject

pytestmark = pytest.mark.vm

# program -> the kernel function it is loaded for (BTF-attached types need one); one program per
# helper-permission family (raw_tp/uprobe/kprobe.multi share the tracepoint's and kprobe's)
PROGRAMS = {"gen_tp": "", "gen_kprobe": "", "gen_lsm": "file_open", "gen_fmodret": "security_file_open"}


@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_the_host_selector_walk_loads(program: str) -> None:
    target = PROGRAMS[program]
    obj = GenericObject(
        {program},
        G.HookCfg(),
        {},
        None,
        False,
        False,
        [],
        {program: target} if target else None,
        pod_filter=True,
        pod_filter_host=True,
    )
    obj.close()
