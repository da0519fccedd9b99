"""Loaded TracingPolicies: add, delete, enable/disable, mode, list; and hook lookup for decoding.

Called from gRPC threads and at start-up; the pipeline thread only calls `hook()`. A policy that
fails to parse, compile or load changes nothing: its half-loaded objects are closed and the other
policies keep running. Hook descriptions are kept after a policy is deleted (ids are never reused),
so records already in the ring buffer still become events.

Two locks: `_change` serialises the slow changes (loading and closing BPF objects, seconds for a
large policy); `_state` guards the table of policies and is held only to read or swap entries, so
`list()` (ListTracingPolicies, GetHealth) never waits behind a load or a delete. A sensor is taken
out of the table under `_state` before it is closed, so readers never touch a closed object.
Limits (hooks per policy, hooks in total, the fds they need) are checked after compiling, before
anything is loaded.
"""

from __future__ import annotations

import builtins
import dataclasses
import gc
import logging
import os
import resource
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tetragon.abi import generic_cfg_h as G
from tetragon.bpf.libbpf import BpfError
from tetragon.hostsetup import give_memory_back  # libbpf frees ~0.8 MB per closed hook object
from tetragon.k8s.policyfilter import PolicyFilter, check_pod_scope, needs_pod_filter, scope_handle
from tetragon.policy.errors import PolicyError
from tetragon.policy.hookinfo import HookInfo
from tetragon.policy.status import PolicyStatus

if TYPE_CHECKING:
    # imported on the first policy: the schema (pydantic) and compiler cost ~15 MB of RSS that an
    # agent without policies need not carry
    from tetragon.policy.compile import PolicyPlan
    from tetragon.policy.schema import ActionSelector, TracingPolicy
    from tetragon.sensors.generic import PolicySensor

log = logging.getLogger(__name__)

MODES = ("enforce", "monitor")
_KEPT_INFOS = 100_000
# measured: a kprobe hook holds its programs, links and ~12 maps; the agent keeps this many fds free
# for gRPC connections, the export file and procfs reads
FDS_PER_HOOK = 24
FD_RESERVE = 512
_LARGE_TEXT = 64 << 10
DEFAULT_MAX_HOOKS_PER_POLICY = 128
DEFAULT_MAX_HOOKS = 256
# what a parser, checker or compiler may raise on input nobody anticipated: still the policy's fault
_INPUT_ERRORS = (ValueError, TypeError, OverflowError, RecursionError, LookupError, OSError, struct.error)


@dataclass
class _Policy:
    id: int
    policy: TracingPolicy
    plan: PolicyPlan
    mode: str
    domain: str
    sensor: PolicySensor | None = None
    error: str = ""


class PolicyManager:
    def __init__(
        self,
        shared_maps: Callable[[], dict[str, int]],
        features: dict[str, bool],
        btf_path: str | None = None,
        *,
        max_hooks_per_policy: int = DEFAULT_MAX_HOOKS_PER_POLICY,
        max_hooks: int = DEFAULT_MAX_HOOKS,
        pod_filter: PolicyFilter | None = None,
    ) -> None:
        self._shared = shared_maps
        self.pod_filter = pod_filter  # scopes policies to pods (None: pod-scoped policies refused)
        self._features = features
        self._btf = btf_path
        self.max_hooks_per_policy = max_hooks_per_policy
        self.max_hooks = max_hooks
        self._change = threading.RLock()
        self._state = threading.Lock()
        self._policies: dict[tuple[str, str], _Policy] = {}
        self._next_id = 1
        # (policy_id, hook_id) -> HookInfo; read lock-free by the pipeline (dict reads are atomic)
        self._hooks: dict[tuple[int, int], HookInfo] = {}
        self._list_infos: dict[tuple[int, int, int], HookInfo] = {}
        self._actions: dict[tuple[int, int, int], list[ActionSelector]] = {}
        # bumped whenever hook infos are registered or forgotten: the pipeline's per-hook plans,
        # cached by (policy, hook, func) id, are dropped when it changes
        self.generation = 0

    # --- gRPC / CLI surface --------------------------------------------------------------------
    def add(
        self,
        yaml_text: str,
        *,
        mode: str | None = None,
        domain: str = "grpc",
        caller: tuple[int, set[int]] | None = None,
    ) -> PolicyStatus:
        """Parse, check, compile and load a policy. `caller` is the (uid, gids) of a non-root API
        caller: its uprobe paths must be reachable by that user (no file-existence oracle)."""
        try:
            return self._add(yaml_text, mode, domain, caller)
        except PolicyError:
            if len(yaml_text) > _LARGE_TEXT:  # the parse of a large refused document leaves garbage
                gc.collect()
                give_memory_back()
            raise

    def check(self, yaml_text: str) -> None:
        """Everything `add` checks (parse, validation, pod scope, compile) with nothing loaded: a
        Kubernetes object's update is checked before the version it replaces is unloaded."""
        policy, chosen = self._parse(yaml_text, None, None)
        self._compile(policy, 0, chosen)

    def _parse(
        self, yaml_text: str, mode: str | None, caller: tuple[int, set[int]] | None
    ) -> tuple[TracingPolicy, str]:
        from tetragon.policy.load import parse_policy
        from tetragon.policy.schema import policy_mode
        from tetragon.policy.validate import check_paths_reachable

        try:
            policy = parse_policy(yaml_text)
            chosen = mode or policy_mode(policy)
            if chosen not in MODES:
                raise PolicyError(f"invalid policy mode '{chosen}' (want enforce or monitor)")
            self._check_hook_count(_hook_count(policy), 0)
            check_pod_scope(policy, self.pod_filter)
            if caller is not None and caller[0] != 0:
                check_paths_reachable(policy, *caller)
        except _INPUT_ERRORS as exc:
            raise _input_error("policy", exc) from None
        return policy, chosen

    def _compile(self, policy: TracingPolicy, pid: int, mode: str) -> PolicyPlan:
        from tetragon.policy.compile import compile_policy

        try:
            return compile_policy(policy, pid, mode, self._features, btf_path=self._btf)
        except PolicyError as exc:
            raise _with_field(exc) from None
        except _INPUT_ERRORS as exc:
            raise _input_error(f"policy {policy.name}", exc, kind="unsupported") from None

    def _add(
        self, yaml_text: str, mode: str | None, domain: str, caller: tuple[int, set[int]] | None
    ) -> PolicyStatus:
        policy, chosen = self._parse(yaml_text, mode, caller)
        key = (policy.name, policy.namespace)
        with self._change:
            if key in self._policies:
                raise PolicyError(f"policy {policy.name!r} already exists", kind="exists")
            pid = self._next_id
            self._next_id += 1
            plan = self._compile(policy, pid, chosen)
            self._check_hook_count(len(plan.hooks), self._loaded_hooks())
            for w in plan.warnings:
                log.warning("policy %s: %s", policy.name, w)
            entry = _Policy(pid, policy, plan, chosen, domain)
            # the hooks fire as soon as they are attached: their records must find their HookInfo
            self._register_infos(entry)
            self._load(entry)
            with self._state:
                self._policies[key] = entry
            log.info("policy %s loaded (%d hooks, mode %s)", policy.name, len(plan.hooks), chosen)
            return self._status(entry)

    def delete(self, name: str, namespace: str = "") -> None:
        with self._change:
            with self._state:
                entry = self._policies.pop((name, namespace), None)
                if entry is None:
                    raise PolicyError(f"policy {name!r} not found", kind="not_found")
                sensor, entry.sensor = entry.sensor, None
            if sensor is not None:
                sensor.close()
                give_memory_back()
            log.info("policy %s deleted", name)

    def configure(
        self, name: str, namespace: str = "", *, enable: bool | None = None, mode: str | None = None
    ) -> None:
        with self._change:
            entry = self._policies.get((name, namespace))
            if entry is None:
                raise PolicyError(f"policy {name!r} not found", kind="not_found")
            if mode is not None:
                if mode not in MODES:
                    raise PolicyError(f"invalid policy mode '{mode}' (want enforce or monitor)")
                if mode != entry.mode:
                    from tetragon.policy.compile import compile_policy

                    # enforcement that needs a missing kernel feature is checked again for the new mode
                    plan = compile_policy(entry.policy, entry.id, mode, self._features, btf_path=self._btf)
                    entry.plan = plan
                    entry.mode = mode
                    if entry.sensor is not None:
                        entry.sensor.set_mode(mode)
            if enable is True and entry.sensor is None:
                self._check_hook_count(len(entry.plan.hooks), self._loaded_hooks())
                self._load(entry)
            elif enable is False and entry.sensor is not None:
                with self._state:
                    sensor, entry.sensor = entry.sensor, None
                sensor.close()
                give_memory_back()

    def list(self) -> list[PolicyStatus]:
        with self._state:
            return [self._status(e) for e in sorted(self._policies.values(), key=lambda e: e.id)]

    # --- pipeline surface --------------------------------------------------------------------------
    def hook(self, policy_id: int, hook_id: int, func_id: int = 0) -> HookInfo | None:
        info = self._hooks.get((policy_id, hook_id))
        if info is None or not {"syscall_list", "kernel_functions"} & info.extra.keys():
            return info
        key = (policy_id, hook_id, func_id)
        named = self._list_infos.get(key)
        if named is None and "kernel_functions" in info.extra:
            # a list of kernel functions: func_id is the function's position in it (the attach cookie)
            functions = info.extra["kernel_functions"].split(",")
            fn = functions[func_id] if func_id < len(functions) else str(func_id)
            named = dataclasses.replace(info, function_name=fn)
            self._list_infos[key] = named
        if named is None and "syscall_list" in info.extra:
            from tetragon.policy import syscalls as SC

            abi = "i386" if func_id & SC.COMPAT_BIT else "x64"
            nr = func_id & ~SC.COMPAT_BIT
            name = SC.syscall_name(nr, abi) or str(nr)
            fn = ("__ia32_sys_" if abi == "i386" else "__x64_sys_") + name
            named = dataclasses.replace(info, function_name=fn)
            self._list_infos[key] = named
        return named

    def actions(self, policy_id: int, hook_id: int, selector: int) -> builtins.list[ActionSelector]:
        return self._actions.get((policy_id, hook_id, selector), [])

    def counters(self) -> dict[str, builtins.list[int]]:
        with self._state:
            return {e.policy.name: e.sensor.stats() for e in self._policies.values() if e.sensor is not None}

    def sensors(self) -> builtins.list[tuple[str, str, PolicySensor]]:
        """(name, namespace, sensor) of each loaded policy: metrics read its BPF programs' counters."""
        with self._state:
            return [
                (e.policy.name, key[1], e.sensor) for key, e in self._policies.items() if e.sensor is not None
            ]

    def close(self) -> None:
        with self._change:
            with self._state:
                entries = builtins.list(self._policies.values())
                self._policies.clear()
                sensors = [e.sensor for e in entries if e.sensor is not None]
                for e in entries:
                    e.sensor = None
            for sensor in sensors:
                sensor.close()

    # --- internals --------------------------------------------------------------------------------
    def _load(self, entry: _Policy) -> None:
        from tetragon.sensors.generic import PolicySensor

        try:
            sensor = PolicySensor(
                [h for h in entry.plan.hooks],
                entry.plan.enforcer_syscalls,
                self._shared(),
                entry.mode,
                self._btf,
                scope_handle(self.pod_filter, entry.id, entry.policy),
            )
        except BpfError as exc:
            give_memory_back()
            raise PolicyError(
                f"policy {entry.policy.name}: cannot load into the kernel: {exc}", kind="unsupported"
            ) from exc
        except _INPUT_ERRORS as exc:  # ENAMETOOLONG, a path libbpf cannot encode, ...
            give_memory_back()
            raise _input_error(f"policy {entry.policy.name}: cannot load", exc, kind="unsupported") from None
        with self._state:
            entry.sensor = sensor
            entry.error = ""

    def _loaded_hooks(self) -> int:
        with self._state:
            return sum(len(e.plan.hooks) for e in self._policies.values() if e.sensor is not None)

    def _check_hook_count(self, hooks: int, loaded: int) -> None:
        """Refuse a policy whose hooks pass a limit, before any of them is loaded."""
        if hooks > self.max_hooks_per_policy:
            raise PolicyError(
                f"spec: {hooks} hooks, more than --tracing-policy-max-hooks {self.max_hooks_per_policy}"
            )
        if loaded + hooks > self.max_hooks:
            raise PolicyError(
                f"spec: {hooks} hooks with the {loaded} loaded pass --tracing-policies-max-hooks "
                f"{self.max_hooks}",
                kind="unsupported",
            )
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        free = soft - _open_fds() - FD_RESERVE
        if soft != resource.RLIM_INFINITY and hooks * FDS_PER_HOOK > free:
            raise PolicyError(
                f"spec: {hooks} hooks need ~{hooks * FDS_PER_HOOK} file descriptors, {max(free, 0)} are "
                f"free (RLIMIT_NOFILE {soft}, {FD_RESERVE} kept for the API)",
                kind="unsupported",
            )

    def _register_infos(self, entry: _Policy) -> None:
        if len(self._hooks) > _KEPT_INFOS:  # very long-lived agents: forget the oldest deleted ones
            live = {e.id for e in self._policies.values()}
            for key in [k for k in self._hooks if k[0] not in live][: _KEPT_INFOS // 2]:
                del self._hooks[key]
        for plan in entry.plan.hooks:
            # keyed by the compiler's hook number, the one the kernel records carry
            self._hooks[(entry.id, plan.hook_id)] = plan.info
            for selector, acts in plan.user_actions.items():
                self._actions[(entry.id, plan.hook_id, selector)] = acts
        self.generation += 1

    def _status(self, entry: _Policy) -> PolicyStatus:
        stats = entry.sensor.stats() if entry.sensor is not None else [0] * G.GSTAT_COUNT
        sensors = sorted({h.sensor for h in entry.plan.hooks})
        if entry.plan.enforcer_syscalls:
            sensors.append("enforcer")
        return PolicyStatus(
            id=entry.id,
            name=entry.policy.name,
            namespace=entry.policy.namespace,
            sensors=sensors,
            enabled=entry.sensor is not None,
            state="TP_STATE_ENABLED" if entry.sensor is not None else "TP_STATE_DISABLED",
            error=entry.error,
            mode="TP_MODE_MONITOR" if entry.mode == "monitor" else "TP_MODE_ENFORCE",
            kernel_memory_bytes=entry.sensor.memlock() if entry.sensor is not None else 0,
            domain=entry.domain,
            filter_id=entry.id if needs_pod_filter(entry.policy) else 0,
            npost=stats[G.GSTAT_POSTED],
            nenforce=stats[G.GSTAT_ENFORCED],
            nmonitor=stats[G.GSTAT_MONITORED],
            counters=stats if entry.sensor is not None else None,
        )


def _hook_count(policy: TracingPolicy) -> int:
    """How many hooks the compiler will make, at least: one per kprobe, tracepoint, uprobe target,
    LSM hook and the loader, and one per USDT (a USDT with several probe sites makes one hook each,
    known only once the binary is read)."""
    spec = policy.spec
    uprobes = sum(max(1, len(u.symbols) + len(u.offsets)) for u in spec.uprobes)
    others = len(spec.usdts) + len(spec.lsmhooks) + (1 if spec.loader else 0)
    return len(spec.kprobes) + len(spec.tracepoints) + uprobes + others


def _with_field(exc: PolicyError) -> PolicyError:
    """The compiler's whole-policy refusals named by the field they are about (every refusal says where)."""
    text = str(exc)
    if text.startswith(("spec", "kind", "metadata", "apiVersion", "policy")):
        return exc
    where = "kind" if text.startswith("TracingPolicyNamespaced") else "spec"
    return PolicyError(f"{where}: {text}", exc.kind)


def _open_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 0


def _input_error(what: str, exc: BaseException, kind: str = "invalid") -> PolicyError:
    """A one-line PolicyError for an exception a hostile policy provoked (logged in one line too)."""
    text = " ".join(str(exc).split())
    if len(text) > 200:
        text = text[:197] + "..."
    log.warning("%s refused: %s: %s", what, type(exc).__name__, text)
    return PolicyError(f"{what}: {type(exc).__name__}: {text}", kind=kind)


def policy_files(directory: str) -> list[Path]:
    """*.yaml / *.yml of a policy directory, sorted; a missing directory has none."""
    d = Path(directory)
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
