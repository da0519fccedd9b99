"""Generic sensors: one BPF object per TracingPolicy hook, plus the policy's enforcer.

Every object is bpf/generic.bpf.c with the hook's configuration in .rodata and only the programs its
mechanism needs. The event ring buffers, the base sensor's counters and tg_execve_map are reused from
the base sensor (same fds), and `policy_conf` / `tg_enforcer` / `tg_socktrack` are shared by all
objects of one policy, so one write switches the whole policy between enforce and monitor and a sock
one hook tracks is known to the others.
"""

from __future__ import annotations

import logging
import os
import struct
from pathlib import Path
from typing import TYPE_CHECKING

from tetragon.abi import generic_cfg_h as G
from tetragon.bpf.libbpf import BpfError, BpfObject, CreatedMap, num_possible_cpus
from tetragon.policy.compile.args_net import tracks_socks
from tetragon.policy.compile.plan import HookPlan
from tetragon.policy.compile.strmaps import StrMap
from tetragon.sensors.loader import start_mmap_reporting
from tetragon.sensors.stash_size import stash_sizing
from tetragon.sensors.strmaps import fill_str_maps, size_outer

if TYPE_CHECKING:
    from tetragon.k8s.policyfilter import PolicyScopeHandle as PodScopeHandle

log = logging.getLogger(__name__)

OBJ = Path(__file__).resolve().parent.parent / "_bpfobj" / "generic.bpf.o"
SHARED_MAPS = ("tg_rb_events", "tg_rb_policy", "tg_stats", "tg_execve_map")
POLICY_MAPS = ("policy_conf", "tg_enforcer", "policy_cgroups", "tg_socktrack")
# programs that complete an entry stashed by the hook's entry program (attached before it)
RETURN_PROGRAMS = frozenset({"gen_tp_ret", "gen_kretprobe", "gen_kretprobe_multi"})
# attach kinds whose kernel function (fmod_ret: security_*, lsm: the hook, libbpf adds bpf_lsm_) is set
# before load
BTF_ATTACHED = frozenset({"fmod_ret", "lsm"})


def map_memlock(fd: int) -> int:
    """Kernel memory charged to a map or program fd, from /proc/self/fdinfo."""
    try:
        with open(f"/proc/self/fdinfo/{fd}") as f:
            for line in f:
                if line.startswith("memlock:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class GenericObject:
    """One loaded generic.bpf.o: its programs attached as the plan says."""

    def __init__(
        self,
        programs: set[str],
        cfg: G.HookCfg,
        shared: dict[str, int],
        btf_path: str | None,
        has_return: bool,
        has_ratelimit: bool,
        inmap: list[tuple[int, int]],
        btf_targets: dict[str, str] | None = None,
        pod_filter: bool = False,
        rodata: dict[str, bytes] | None = None,
        track_socks: bool = True,
        pod_filter_host: bool = False,
        str_maps: list[StrMap] | None = None,
    ) -> None:
        self.obj = BpfObject(OBJ, btf_path=btf_path)
        self.perf_fds: list[int] = []  # spec.loader's dummy perf events (sensors/loader.py)
        self.str_tries: list[CreatedMap] = []  # the inner maps of gen_str_maps (sensors/strmaps.py)
        try:
            self.obj.only_programs(programs)
            for program, function in (btf_targets or {}).items():
                self.obj.set_attach_target(program, function)
            self._reused = frozenset(shared)  # counted by their owners, not in memlock()
            for name, fd in shared.items():
                self.obj.map(name).reuse_fd(fd)
            if not track_socks and "tg_socktrack" not in shared:  # nothing of the policy tracks a sock
                self.obj.map("tg_socktrack").set_max_entries(1)
            stash = self.obj.map("gen_stash")
            if has_return:
                data_max, value_size, entries = stash_sizing(cfg)
                stash.set_value_size(value_size)
                stash.set_max_entries(entries)
                self.obj.set_global(".rodata", "stash_data_max", data_max.to_bytes(4, "little"))
            else:
                stash.set_max_entries(1)
            if not has_ratelimit:
                self.obj.map("gen_ratelimit").set_max_entries(1)
            self.obj.map("gen_inmap").set_max_entries(max(1, len(inmap)))
            size_outer(self.obj, str_maps or [])
            self.obj.map("gen_heap").set_max_entries(num_possible_cpus())
            self.obj.set_global(".rodata", "cfg", bytes(cfg))
            if pod_filter:  # a pod-scoped policy: only the cgroups of policy_cgroups (k8s/policyfilter.py)
                self.obj.set_global(".rodata", "pod_filter", struct.pack("<I", 1))
            if pod_filter_host:  # hostSelector: {}: also every process outside pods
                self.obj.set_global(".rodata", "pod_filter_host", struct.pack("<I", 1))
            for name, data in (rodata or {}).items():
                self.obj.set_global(".rodata", name, data)
            self.obj.load()
            inm = self.obj.map("gen_inmap")
            for map_id, value in inmap:
                inm.update(struct.pack("<IIQ", map_id, 0, value), b"\x01")
            self.str_tries = fill_str_maps(self.obj, str_maps or [])
        except BaseException:
            self.obj.close()
            raise

    def map_fd(self, name: str) -> int:
        return self.obj.map(name).fd

    def stats(self) -> list[int]:
        m = self.obj.map("gen_stats")
        out = []
        for slot in range(G.GSTAT_COUNT):
            out.append(sum(struct.unpack("<Q", v)[0] for v in m.lookup_percpu(struct.pack("<I", slot))))
        # the entry program counts filtered calls in its per-CPU scratch (first 8 bytes of each slot)
        heap = self.obj.map("gen_heap")
        for cpu in range(heap.max_entries):
            value = heap.lookup(struct.pack("<I", cpu))
            if value is not None:
                out[G.GSTAT_FILTERED] += struct.unpack_from("<Q", value)[0]
        return out

    def memlock(self) -> int:
        """Memory of this object's own maps: every map of the object but the agent's shared ones and
        the policy's (counted once, by their owners), so that a map a header adds is never left out."""
        total = 0
        for name in self.obj.map_names():
            if name in self._reused or name in SHARED_MAPS or name in POLICY_MAPS:
                continue
            try:
                total += map_memlock(self.obj.map(name).fd)
            except BpfError:  # not created (autocreate off)
                continue
        return total + sum(map_memlock(trie.fd) for trie in self.str_tries)

    def close(self) -> None:
        self.obj.close()
        for trie in self.str_tries:
            trie.close()
        self.str_tries = []
        for fd in self.perf_fds:
            os.close(fd)
        self.perf_fds = []


class PolicySensor:
    """All objects of one policy; close() detaches and frees every one of them."""

    def __init__(
        self,
        plans: list[HookPlan],
        enforcer_syscalls: list[int],
        shared: dict[str, int],
        mode: str,
        btf_path: str | None = None,
        pod_scope: PodScopeHandle | None = None,
    ) -> None:
        self.objects: list[GenericObject] = []
        self.policy_maps: dict[str, int] = {}
        self.pod_scope = pod_scope
        self.track_socks = any(tracks_socks(plan.cfg) for plan in plans)
        try:
            for plan in plans:
                self._load_hook(plan, shared, btf_path)
            if enforcer_syscalls:
                obj = GenericObject(
                    {"gen_enforcer"},
                    G.HookCfg(),
                    {**shared, **self.policy_maps},
                    btf_path,
                    False,
                    False,
                    [(0, v) for v in enforcer_syscalls],
                    track_socks=self.track_socks,
                )
                self.objects.append(obj)
                obj.obj.attach_tracepoint("gen_enforcer", "raw_syscalls", "sys_exit")
            self.set_mode(mode)
        except BaseException:
            self.close()
            raise

    def _load_hook(self, plan: HookPlan, shared: dict[str, int], btf_path: str | None) -> None:
        cfg = plan.cfg
        has_rl = any(
            cfg.sel[s].actions[a].rate_limit_ns
            for s in range(cfg.nselectors)
            for a in range(cfg.sel[s].nactions)
        )
        obj = GenericObject(
            {a.program for a in plan.attach},
            cfg,
            {**shared, **self.policy_maps},
            btf_path,
            bool(cfg.has_return),
            has_rl,
            plan.inmap,
            {a.program: a.target[0] for a in plan.attach if a.kind in BTF_ATTACHED},
            self.pod_scope is not None,
            plan.rodata,
            track_socks=self.track_socks,
            pod_filter_host=self.pod_scope is not None and self.pod_scope.scope.host,
            str_maps=plan.str_maps,
        )
        self.objects.append(obj)
        if not self.policy_maps:
            # the first object creates the policy's shared maps; the others reuse them
            self.policy_maps = {name: os.dup(obj.map_fd(name)) for name in POLICY_MAPS}
            if self.pod_scope is not None:  # the selected containers' cgroups, before any attach
                self.pod_scope.attach(obj.obj.map("policy_cgroups"))
        # exits first: an entry stashed before its exit program is attached would never complete
        for att in sorted(plan.attach, key=lambda a: a.program not in RETURN_PROGRAMS):
            if att.kind == "tracepoint":
                obj.obj.attach_tracepoint(att.program, att.target[0], att.target[1])
            elif att.kind == "raw_tp":
                obj.obj.attach_raw_tracepoint(att.program, att.target[0])
            elif att.kind == "kprobe":
                cookie = int(att.target[1]) if len(att.target) > 1 else 0
                obj.obj.attach_kprobe(att.program, att.target[0], att.program in RETURN_PROGRAMS, cookie)
            elif att.kind == "kprobe_multi":
                obj.obj.attach_kprobe_multi(att.program, list(att.target), att.program in RETURN_PROGRAMS)
            elif att.kind == "loader":
                obj.perf_fds = start_mmap_reporting(obj.obj)
                obj.obj.attach_kprobe(att.program, att.target[0])
            elif att.kind in BTF_ATTACHED:
                obj.obj.attach(att.program)  # its target function was set before load
            else:
                ref_ctr = int(att.target[3]) if len(att.target) > 3 else 0  # a USDT probe's semaphore
                obj.obj.attach_uprobe(
                    att.program, att.target[0], att.target[1], int(att.target[2]), ref_ctr=ref_ctr
                )

    def set_mode(self, mode: str) -> None:
        if not self.objects:
            return
        value = G.POLICY_MODE_MONITOR if mode == "monitor" else G.POLICY_MODE_ENFORCE
        self.objects[0].obj.map("policy_conf").update(struct.pack("<I", 0), struct.pack("<II", value, 0))

    def stats(self) -> list[int]:
        total = [0] * G.GSTAT_COUNT
        for obj in self.objects:
            for i, v in enumerate(obj.stats()):
                total[i] += v
        # the kernel does not count calls (one map update less per call): every call ends in
        # exactly one of these outcomes
        total[G.GSTAT_CALLS] = (
            total[G.GSTAT_FILTERED] + total[G.GSTAT_POSTED] + total[G.GSTAT_LOST] + total[G.GSTAT_NOPOST]
        )
        return total

    def memlock(self) -> int:
        return sum(o.memlock() for o in self.objects) + sum(
            map_memlock(fd) for fd in self.policy_maps.values()
        )

    def close(self) -> None:
        if self.pod_scope is not None:  # its set is written through the first object's map
            self.pod_scope.detach()
        for obj in reversed(self.objects):
            obj.close()
        self.objects.clear()
        for fd in self.policy_maps.values():
            os.close(fd)
        self.policy_maps.clear()
